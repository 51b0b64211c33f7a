"""vislang: learn vision models from language supervision — curate, train, evaluate, adapt, use."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load", "__version__"]


def load(path: Any, device: Any = "cpu", image_size: int | None = None) -> tuple:
    """(model, tokenizer, preprocess) of a vislang checkpoint or run directory; see :func:`vislang.api.load`.

    Imported lazily so that ``vislang --help`` does not pay for importing torch.
    """
    from vislang.api import load as _load

    return _load(path, device, image_size)
