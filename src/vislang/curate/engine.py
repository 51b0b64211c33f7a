"""Running one function over the files of a pool: a local process pool or a Ray cluster.

Every curation stage is a per-file function that writes its outputs next to the others and
returns a small JSON-able summary; the engine only decides where the calls run. Because the
functions' results depend on their inputs alone (seeded draws are hashes of ids), both engines
write the same files.

``ray``: Ray Data maps the function over the list of files (one row per file) on the cluster
given by ``RAY_ADDRESS``, or on a local Ray started for the call; the files must be visible to
every node at the same paths (a shared file system).
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from vislang.cluster import ray_session
from vislang.errors import ConfigError

ENGINES = ("local", "ray")


def _call(job: tuple[Callable[..., dict], dict]) -> dict:
    fn, kwargs = job
    return fn(**kwargs)


def run_tasks(
    fn: Callable[..., dict], tasks: list[dict[str, Any]], engine: str = "local", processes: int = 1, fork: bool = True
) -> list[dict]:
    """``fn(**task)`` for every task, results in task order. ``fork=False`` starts fresh worker
    processes instead (for stages that run a model: forking a process whose PyTorch has run
    threads can hang the children)."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r} (choose {' or '.join(ENGINES)})")
    if engine == "ray":
        return _run_ray(fn, tasks, processes)
    if processes <= 1 or len(tasks) <= 1:
        return [fn(**task) for task in tasks]
    # fork shares what the parent built (an automaton over 500k entries) without copying it
    method = "fork" if fork and "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(min(processes, len(tasks)), mp_context=multiprocessing.get_context(method)) as pool:
        return list(pool.map(_call, [(fn, task) for task in tasks]))


def _run_ray(fn: Callable[..., dict], tasks: list[dict[str, Any]], processes: int) -> list[dict]:
    with ray_session(processes) as ray:
        rows = ray.data.from_items([{"index": i, "task": json.dumps(t)} for i, t in enumerate(tasks)])

        def apply(row: dict) -> dict:
            return {"index": row["index"], "result": json.dumps(fn(**json.loads(row["task"])))}

        out = rows.map(apply, concurrency=max(1, processes)).take_all()
    results = sorted(out, key=lambda r: r["index"])
    return [json.loads(r["result"]) for r in results]
