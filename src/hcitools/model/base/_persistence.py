"""Saved models hold primitives only, with a format version (CONVENTIONS: "Persisted models").

scvi-tools' ``save`` pickles every attribute whose name ends with ``_``. Its own ``history_`` is a dict of
DataFrames and ``train_indices_`` / ``validation_indices_`` are arrays over the training data: pickled as they are,
a saved model carries pandas and numpy objects whose pickles need not load across releases, and index arrays the
size of the data. Here they are saved as plain lists and dicts, and restored as DataFrames on use.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

#: Version of the saved attributes of hcitools' models; ``load`` refuses a newer one.
FORMAT_VERSION = 1

_DROPPED = ("train_indices_", "validation_indices_", "test_indices_")


def _primitive(value: Any) -> Any:
    """``value`` as Python primitives (dict / list / str / int / float / bool / None)."""
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str | int) else k: _primitive(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_primitive(v) for v in value]
    if isinstance(value, np.ndarray):
        return _primitive(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.DataFrame):
        return {
            "__dataframe__": True,
            "index": _primitive(list(value.index)),
            "columns": _primitive(value.to_dict("list")),
        }
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    raise TypeError(f"cannot save an attribute value of type {type(value).__name__} as a primitive")


def history_to_primitive(history: dict | None) -> dict | None:
    """``{metric: DataFrame}`` → ``{metric: {"index": [...], "columns": {name: [...]}}}``."""
    if not isinstance(history, dict):
        return history
    return {k: _primitive(v) for k, v in history.items()}


def history_to_frames(history: dict | None) -> dict | None:
    """Inverse of :func:`history_to_primitive`; DataFrames are passed through."""
    if not isinstance(history, dict):
        return history
    out = {}
    for key, value in history.items():
        if isinstance(value, dict) and value.get("__dataframe__"):
            frame = pd.DataFrame(value["columns"], index=pd.Index(value["index"], name="epoch"))
            out[key] = frame.apply(pd.to_numeric, errors="coerce")
        else:
            out[key] = value
    return out


class PersistenceMixin:
    """Mixin for scvi-tools model classes: primitive, versioned saved attributes.

    - ``format_version_`` (an int) is saved with the model; ``load`` refuses files written by a newer version.
    - ``history_`` is saved as lists (``model.history`` always returns DataFrames).
    - scvi-tools' index arrays over the training data (``train_indices_`` …) are not saved.
    - Any other saved ``*_`` attribute must be a primitive (a TypeError names it otherwise).
    """

    format_version_: int = FORMAT_VERSION

    @property
    def history(self) -> dict[str, pd.DataFrame] | None:
        """Per-epoch training history: a dict of DataFrames (one per logged metric), indexed by epoch."""
        self.history_ = history_to_frames(self.history_)
        return self.history_

    def _get_user_attributes(self):
        attributes = super()._get_user_attributes()
        out = []
        for name, value in attributes:
            if not name.endswith("_") or name in ("registry_",):
                out.append((name, value))
                continue
            if name in _DROPPED:
                continue
            if name == "history_":
                value = history_to_primitive(value)
            else:
                try:
                    value = _primitive(value)
                except TypeError as err:
                    raise TypeError(f"model attribute `{name}`: {err}") from err
            out.append((name, value))
        if not any(name == "format_version_" for name, _ in out):
            out.append(("format_version_", FORMAT_VERSION))
        return out

    @classmethod
    def load(cls, dir_path: str, adata=None, **kwargs):
        """Load a saved model (see :meth:`scvi.model.base.BaseModelClass.load`).

        Parameters
        ----------
        dir_path
            Directory written by ``model.save``.
        adata
            Data to attach (e.g. unlabelled query data); categories and features are mapped by name through the
            registered fields. ``None`` attaches none: pass data to the query methods.
        **kwargs
            Passed to scvi-tools' ``load`` (e.g. ``accelerator``, ``device``, ``prefix``).
        """
        import os

        prefix = kwargs.get("prefix") or ""
        # scvi-tools' file name (SAVE_KEYS.MODEL_FNAME, not public API); without this check, a directory without a
        # model gets scvi-tools' message about "<v0.15 legacy" files
        path = os.path.join(str(dir_path), f"{prefix}model.pt")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"No saved hcitools model in {str(dir_path)!r} (argument `dir_path`): {path!r} does not exist. "
                "Pass the directory given to `model.save(dir_path)`."
            )
        import warnings

        from ..._utils import quiet_loggers

        with quiet_loggers("scvi"), warnings.catch_warnings():
            # scvi-tools' notes on a local file ("already downloaded") and on loading without data (intended here)
            warnings.filterwarnings("ignore", message="Save path contains no saved anndata")
            model = super().load(dir_path, adata=adata, **kwargs)
        version = getattr(model, "format_version_", None)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(
                f"{dir_path!r} was saved in model format {version!r}; this hcitools reads formats up to "
                f"{FORMAT_VERSION}. Upgrade hcitools to load it."
            )
        model.history_ = history_to_frames(model.history_)
        return model
