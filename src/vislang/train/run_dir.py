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
from vislang.errors import ConfigError, first_line
from vislang.experiment import RunConfig, to_yaml
from vislang.restore import saved_config


class RunDirLock:
    """An exclusive lock on a run directory for as long as the run lives."""

    # A POSIX lock does not stop a second lock in its own process, so the runs of this process are
    # kept here too (the process's own state, as the kernel's locks are).
    _held: set[Path] = set()

    def __init__(self, run_dir: Path) -> None:
        self.path = (run_dir / ".lock").resolve()
        if self.path in RunDirLock._held:
            raise ConfigError(f"{run_dir} is in use by another run of this process; choose another --out")
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.path, "a+")  # noqa: SIM115 - held open for the run's lifetime
        except OSError as error:
            raise ConfigError(f"{run_dir}: cannot be used as a run directory ({first_line(error)})") from None
        try:
            fcntl.lockf(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EACCES, errno.EAGAIN):
                self.handle.close()
                raise ConfigError(f"{run_dir}: cannot lock the run directory ({first_line(error)})") from None
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
        RunDirLock._held.add(self.path)

    def release(self) -> None:
        RunDirLock._held.discard(self.path)
        if not self.handle.closed:
            fcntl.lockf(self.handle, fcntl.LOCK_UN)
            self.handle.close()


def remove_temp_files(run_dir: Path) -> None:
    """Delete the partial checkpoints a killed writer left (``.step_N.pt.tmp-PID``)."""
    folder = run_dir / "checkpoints"
    for path in folder.glob(CHECKPOINT_TEMP) if folder.is_dir() else []:
        path.unlink(missing_ok=True)


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
    Besides the lock file and the removal of a killed writer's temporary files, nothing is
    written before every check has passed."""
    lock = RunDirLock(run_dir)
    try:
        remove_temp_files(run_dir)
        checkpoints = list_checkpoints(run_dir / "checkpoints")
        checkpoint = None
        if resume:
            if not checkpoints:
                raise ConfigError(f"--resume: {run_dir} holds no checkpoint to continue; start it without --resume")
            checkpoint = load_latest_readable(run_dir / "checkpoints")
            saved = saved_config(checkpoint, run_dir / "checkpoints").model_dump(mode="json")
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
