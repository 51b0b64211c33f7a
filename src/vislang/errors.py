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


def first_line(error: BaseException) -> str:
    """An exception's first message line, or its type's name when the message is empty (an
    empty file makes some readers raise without a message)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
