"""The run directory: one run at a time, nothing of an earlier run overwritten, and a resume that
continues exactly the run it names.

A run holds an OS lock on ``RUN/.lock`` from before its first write to its end: a POSIX record
lock (``fcntl.lockf``), which belongs to the process alone, so the data-loader workers it forks
do not hold it after a SIGKILL of their parent (a ``flock`` would stay held by them). The kernel
drops the lock when the process dies, however it dies, so a killed run never leaves a stale
lock; a second run on the same directory stops with one line. Holding the lock,
a starting run removes the temporary files that a killed writer left behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Any

from vislang.checkpoint import CHECKPOINT_TEMP, list_checkpoints, load_latest_readable
from vislang.config import legacy
from vislang.errors import ConfigError
from vislang.experiment import RunConfig, to_yaml


class RunDirLock:
    """An exclusive lock on a run directory for as long as the run lives."""

    def __init__(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / ".lock"
        self.handle = open(self.path, "a+")  # noqa: SIM115 - held open for the run's lifetime
        try:
            fcntl.lockf(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            self.handle.seek(0)
            owner = self.handle.read().strip() or "another process"
            self.handle.close()
            raise ConfigError(
                f"{run_dir} is in use by another run ({owner}); wait for it to end or choose another --out"
            ) from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"pid {os.getpid()}\n")
        self.handle.flush()

    def release(self) -> None:
        if not self.handle.closed:
            fcntl.lockf(self.handle, fcntl.LOCK_UN)
            self.handle.close()


def remove_temp_files(run_dir: Path) -> list[Path]:
    """Delete the partial checkpoints a killed writer left (``.step_N.pt.tmp-PID``)."""
    folder = run_dir / "checkpoints"
    found = sorted(folder.glob(CHECKPOINT_TEMP)) if folder.is_dir() else []
    for path in found:
        path.unlink(missing_ok=True)
    return found


def _first_difference(saved: Any, wanted: Any, key: str = "") -> str | None:
    if isinstance(saved, dict) and isinstance(wanted, dict):
        for name in list(wanted) + [k for k in saved if k not in wanted]:
            found = _first_difference(saved.get(name), wanted.get(name), f"{key}.{name}" if key else name)
            if found:
                return found
        return None
    return None if saved == wanted else f"{key} (saved {saved!r}, given {wanted!r})"


def prepare_run_dir(cfg: RunConfig, run_dir: Path, resume: bool) -> tuple[RunDirLock, dict | None]:
    """Lock the directory, clean up after a killed run and check the request against what is
    there; write ``config.yaml``. Returns the lock and, when resuming, the checkpoint to resume.
    Nothing is written before every check has passed."""
    lock = RunDirLock(run_dir)
    try:
        remove_temp_files(run_dir)
        checkpoints = list_checkpoints(run_dir / "checkpoints")
        checkpoint = None
        if resume:
            if not checkpoints:
                raise ConfigError(f"--resume: {run_dir} holds no checkpoint to continue; start it without --resume")
            checkpoint = load_latest_readable(run_dir / "checkpoints")
            saved = RunConfig.model_validate(legacy.upgrade(checkpoint["config"])).model_dump(mode="json")
            different = _first_difference(saved, cfg.model_dump(mode="json"))
            if different:
                raise ConfigError(f"--resume: the config differs from the run's checkpoint at {different}")
        elif checkpoints:
            raise ConfigError(
                f"{run_dir} already holds checkpoints; pass --resume to continue it or choose another --out"
            )
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
    except BaseException:
        lock.release()
        raise
    return lock, checkpoint
