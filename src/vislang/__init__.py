"""vislang: learn vision models from language supervision — curate, train, evaluate, adapt, use."""

from vislang.api import load

__version__ = "0.1.0"
__all__ = ["load", "__version__"]
