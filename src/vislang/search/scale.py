"""Running an index job: one process, the ranks of ``torchrun``, or Ray tasks; then the faiss
index and the manifest.

Every engine splits the same parts the same way (share ``r`` of ``n`` embeds the parts ``p``
with ``p % n == r``, see :func:`vislang.search.build.embed_share`), so the output does not depend
on the engine. Under ``torchrun`` (``RANK`` / ``WORLD_SIZE`` set) the ranks agree through gloo
collectives: a rank whose input fails stops all of them with its message instead of leaving the
others waiting at a barrier. With ``--engine ray`` the shares run as Ray Data tasks on the
cluster of ``RAY_ADDRESS`` or on a local Ray started for the job (as curation's engine does);
every node must see the sources and the output directory at the same paths. Building the faiss
index reads all parts and is done once, by rank 0 or the driver, after every share finished.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from vislang.api import load
from vislang.cluster import ray_session
from vislang.errors import ConfigError, DataError, VislangError
from vislang.search import layout
from vislang.search.ann import build_indexes
from vislang.search.build import (
    IndexOptions,
    check_job,
    embed_share,
    job_identity,
    missing_parts,
    start_job,
    summarise,
)
from vislang.search.items import Items, open_items
from vislang.search.quantize import check_quantize, quantize_int8

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class IndexJob:
    """One ``vislang index`` command: what to embed, with which model, where, and how."""

    model: str
    sources: list[str]
    out: Path
    options: IndexOptions = IndexOptions()
    image_column: str = "image"
    caption_column: str | None = None
    overwrite: bool = False
    faiss: dict = field(default_factory=dict)  # build_indexes' options (kind, nlist, pq_m, hnsw_m, ...)

    def open(self) -> tuple[Items, dict]:
        """The job's items and identity."""
        items = open_items(self.sources, self.image_column, self.caption_column)
        columns = {"image": self.image_column, "caption": self.caption_column}
        return items, job_identity(self.model, items, self.options, columns)


def torchrun_world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside it."""
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError("RANK and WORLD_SIZE must be integers (as torchrun sets them)") from None


def open_model(job: IndexJob) -> tuple:
    """(model in eval mode, tokenizer, preprocess) of the job."""
    options = job.options
    check_quantize(options.quantize, options.device, options.precision)
    model, tokenizer, preprocess = load(job.model, options.device)
    if isinstance(model, torch.nn.Module):
        model.eval()
    if options.quantize == "int8":
        model = quantize_int8(model)
    return model, tokenizer, preprocess


def embed(job: IndexJob, items: Items, rank: int, world: int, loaded: tuple | None = None) -> dict:
    """Embed share ``rank`` of ``world`` (with the model ``loaded`` already, or loading it)."""
    model, tokenizer, preprocess = loaded or open_model(job)
    return embed_share(model, tokenizer, preprocess, items, job.out, job.options, rank, world)


def finish(job: IndexJob, identity: dict, positions: int) -> dict:
    """The faiss indexes over all parts, then the manifest (last: its presence means done)."""
    missing = missing_parts(job.out, positions, job.options.part_size)
    if missing:
        raise DataError(f"{job.out}: part {missing[0]} was not written ({len(missing)} missing); rerun to finish")
    manifest = {
        "job": identity,
        "model": identity["model"],
        "sources": identity["sources"],
        "part_size": job.options.part_size,
        "parts": -(-positions // job.options.part_size),
        "positions": positions,
        "thumbnails": identity["thumbnail_size"] is not None,
        **summarise(job.out),
    }
    manifest["faiss"] = build_indexes(job.out, **job.faiss)
    layout.write_manifest(job.out, manifest)
    return manifest


def run_index(job: IndexJob, engine: str = "local", tasks: int = 2) -> dict | None:
    """Run the whole job; the manifest, or None on ranks other than 0."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r} (choose {' or '.join(ENGINES)})")
    check_quantize(job.options.quantize, job.options.device, job.options.precision)  # before anything is written
    rank, world = torchrun_world()
    if world > 1:
        if engine == "ray":
            raise ConfigError("--engine ray runs its own tasks; start it with python, not torchrun")
        return _run_ranks(job, rank, world)
    items, identity = job.open()
    check_job(job.out, identity, job.overwrite)
    loaded = open_model(job) if engine == "local" else None  # a model that does not open writes nothing
    start_job(job.out, identity, job.overwrite)
    if engine == "ray":
        positions = max(s["positions"] for s in _run_ray(job, tasks))
    else:
        positions = embed(job, items, 0, 1, loaded)["positions"]
    return finish(job, identity, positions)


def _agree(failure: VislangError | None) -> None:
    """Every rank learns whether any rank failed; the failing rank raises its own error."""
    import torch.distributed as dist

    failed = torch.tensor([0 if failure is None else 1])
    dist.all_reduce(failed, op=dist.ReduceOp.MAX)
    if failure is not None:
        raise failure
    if failed.item():
        raise DataError("stopped: another rank of the index job failed (its message is in its log)")


def _run_ranks(job: IndexJob, rank: int, world: int) -> dict | None:
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    device = torch.device(job.options.device)
    if device.type == "cuda" and device.index is None:  # one GPU per rank
        job = replace(job, options=replace(job.options, device=f"cuda:{os.environ.get('LOCAL_RANK', '0')}"))
    try:
        failure, items, identity, loaded = None, None, {}, None
        try:
            items, identity = job.open()
            check_job(job.out, identity, job.overwrite)
            loaded = open_model(job)
        except VislangError as error:
            failure = error
        _agree(failure)
        if rank == 0:
            start_job(job.out, identity, job.overwrite)
        dist.barrier()
        try:
            positions = torch.tensor([embed(job, items, rank, world, loaded)["positions"]])
        except VislangError as error:
            failure, positions = error, torch.tensor([0])
        _agree(failure)
        dist.all_reduce(positions, op=dist.ReduceOp.MAX)  # streams: every rank read them to the end
        manifest = None
        try:
            manifest = finish(job, identity, int(positions.item())) if rank == 0 else None
        except VislangError as error:
            failure = error
        _agree(failure)  # the other ranks wait for rank 0's faiss build: none leaves while it works
        return manifest
    finally:
        dist.destroy_process_group()


def _run_ray(job: IndexJob, tasks: int) -> list[dict]:
    """Each of ``tasks`` Ray tasks embeds its share (it loads the model and opens the sources
    itself); their summaries."""
    gpus = 1 if torch.device(job.options.device).type == "cuda" else 0
    with ray_session(tasks) as ray:
        ray.data.DataContext.get_current().enable_progress_bars = not job.options.quiet
        shares = ray.data.from_items([{"share": r} for r in range(tasks)], override_num_blocks=tasks)

        def apply(row: dict) -> dict:
            try:
                items, _ = job.open()
                summary = embed(job, items, int(row["share"]), tasks)
            except VislangError as error:  # the driver reports it as one line, not Ray's traceback
                return {"share": row["share"], "positions": 0, "written": 0, "error": str(error)}
            return {
                "share": row["share"],
                "positions": summary["positions"],
                "written": summary["written"],
                "error": "",
            }

        out = shares.map(apply, concurrency=tasks, num_cpus=1, num_gpus=gpus).take_all()
    failed = [r["error"] for r in out if r["error"]]
    if failed:
        raise DataError(failed[0])
    return sorted(out, key=lambda r: r["share"])
