"""hcitools: multi-task learning on drug-screening data held in AnnData / MuData.

Submodules are imported lazily so that ``import hcitools as ht`` stays fast and does not
import torch, scvi-tools or pertpy until a model or a tool that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_SUBMODULES = ("pp", "tl", "pl", "model", "datasets", "module", "nn", "train", "dataloaders")
__all__ = ["__version__", "settings", *_SUBMODULES]

from ._settings import settings  # noqa: E402  (light: no heavy imports)

if TYPE_CHECKING:  # pragma: no cover
    from . import datasets, model, pl, pp, tl  # noqa: F401


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'hcitools' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
