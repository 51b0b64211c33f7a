"""Ray for the commands that can spread their work over a cluster (``--engine ray`` of curation
and of indexing), started one way for all of them: on the cluster of ``RAY_ADDRESS`` when it is
set, else on a local Ray started for the call. Only a Ray this call started is shut down after
it, so a caller that initialised Ray itself keeps it. Ray is an optional extra: it is imported
when a command asks for it, and its absence is a one-line error naming the extra."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from vislang.errors import ConfigError


@contextmanager
def ray_session(cpus: int) -> Iterator[ModuleType]:
    """The ``ray`` module, initialised for the ``with`` block. ``cpus`` sizes a local Ray (at
    least one CPU); a cluster given by ``RAY_ADDRESS``, or a Ray already running, keeps its own."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray (pip install 'vislang[ray]')") from None
    started = not ray.is_initialized()
    if started:
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=max(1, cpus), include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()
