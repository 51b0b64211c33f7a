"""Run logging: ``metrics.jsonl`` (one JSON object per logged step), ``log.txt`` (the console
lines), TensorBoard events and a progress bar. On resume, lines past the resumed step are dropped so the log reads as one run."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tqdm import tqdm

from vislang.files import read_jsonl


class RunLogger:
    def __init__(
        self,
        run_dir: Path,
        total_steps: int,
        start_step: int,
        tensorboard: bool = True,
        quiet: bool = False,
        files: bool = True,
    ) -> None:
        """``files=False`` (ranks other than 0): nothing is written, nothing is shown."""
        self.files = files
        self.path = run_dir / "metrics.jsonl"
        self.text_path = run_dir / "log.txt"  # every line written to the console, kept across resumes
        if files:
            _truncate_after(self.path, start_step)
        self.writer = None
        if tensorboard and files:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)
        self.bar = tqdm(total=total_steps, initial=start_step, disable=quiet, dynamic_ncols=True, unit="step")

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.files:
            return
        record = {"step": step, **{k: (v if math.isfinite(v) else str(v)) for k, v in values.items()}}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def progress(self, steps: int, postfix: dict[str, str]) -> None:
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(steps)

    def write(self, message: str) -> None:
        if not self.files:
            return
        self.bar.write(message)
        with self.text_path.open("a") as handle:
            handle.write(message + "\n")

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


def _truncate_after(path: Path, step: int) -> None:
    """Keep the records up to ``step`` (a resumed run rewrites what came after; a torn last line
    of a killed run is dropped). A run starting at step 0 keeps none: its step-0 evaluation
    (fine-tuning's "before") is written afresh."""
    if not path.exists():
        return
    kept = [record for record in read_jsonl(path) if record.get("step", 0) <= step] if step > 0 else []
    path.write_text("".join(json.dumps(record) + "\n" for record in kept))
