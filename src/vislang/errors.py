"""Errors that the CLI reports as one line (no traceback) with a non-zero exit."""


class VislangError(Exception):
    """A problem with the user's input: config, paths, data or checkpoints."""


class ConfigError(VislangError):
    pass


class DataError(VislangError):
    pass


class CheckpointError(VislangError):
    pass


class TrainingDiverged(VislangError):
    """The loss became NaN or infinite; the message names the step."""
