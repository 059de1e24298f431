"""User-facing model classes built on scvi-tools (:mod:`hcitools.model`).

Imported on first use, so that ``import hcitools`` does not import torch or scvi-tools.
"""

from __future__ import annotations

import importlib

_MODELS = {
    "M4": "._m4",
    "MoMIL": "._momil",
    "MeanMLP": "._baselines",
    "MultiLabelMIL": "._baselines",
    "MILModelBase": "._mil_base",
    "MTAe": "._mtae",
    "TorchMIL": "._torchmil",
}
__all__ = ["M4", "MTAe", "MeanMLP", "MoMIL", "MultiLabelMIL", "TorchMIL"]


def __getattr__(name: str):
    if name in _MODELS:
        obj = getattr(importlib.import_module(_MODELS[name], __name__), name)
        globals()[name] = obj
        return obj
    raise AttributeError(f"module 'hcitools.model' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
