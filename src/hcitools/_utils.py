"""Small shared helpers: key-collision checks, logging of written fields, optional imports."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
from anndata import AnnData
from scipy import sparse

# Library-safe logging: a NullHandler and propagation to the application's handlers (no handler of our own).
logger = logging.getLogger("hcitools")
logger.addHandler(logging.NullHandler())

_EXTRAS = {"rdkit": "chem", "copairs": "eval", "pertpy": None, "ot": None}


def import_optional(module: str, purpose: str) -> Any:
    """Import an optional dependency, raising an ImportError that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        dist = {"ot": "pot"}.get(module, module)
        extra = _EXTRAS.get(module)
        hint = f"pip install 'hcitools[{extra}]'" if extra else f"pip install {dist}"
        raise ImportError(f"{purpose} needs the package {dist!r}, which is not installed: {hint}") from err


def find_stack_level() -> int:
    """The ``stacklevel`` that attributes a warning to the first frame outside hcitools (the user's code).

    Written here because the standard library has no such helper (pandas keeps a private one); counting frames
    by hand at each call site breaks as soon as a function is called through another one.
    """
    import inspect
    import os

    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = inspect.currentframe(), 0
    try:
        while frame is not None:
            filename = os.path.abspath(frame.f_code.co_filename)
            if not filename.startswith(package + os.sep):
                break
            frame, level = frame.f_back, level + 1
    finally:
        del frame
    return max(level, 1)


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the user's line that called into hcitools (never to our internals)."""
    import warnings

    # find_stack_level counts from its own frame, warnings.warn from its caller (this one): the same number
    warnings.warn(message, category, stacklevel=find_stack_level())


def to_dense(X: Any, dtype: Any = None) -> np.ndarray:
    """A dense ndarray of ``X`` (scipy sparse, numpy, backed or array-like), optionally cast to ``dtype``.

    The one dense conversion of the package; it copies only when it must (sparse input or a dtype change).
    """
    X = X.toarray() if sparse.issparse(X) or hasattr(X, "toarray") else np.asarray(X)
    return X if dtype is None else X.astype(dtype, copy=False)


def check_free_keys(adata: AnnData, where: Mapping[str, str | None], *, overwrite: bool = False) -> None:
    """Raise if results would overwrite existing fields, e.g. ``{"obsm": "X_momil", "uns": "momil"}``.

    ``where`` maps an attribute (``obs``, ``obsm``, ``uns``, ``var``, ``layers``) to a key; ``None`` is skipped.
    """
    if overwrite:
        return
    for attr, key in where.items():
        if key is None:
            continue
        container = getattr(adata, attr)
        present = key in container.columns if attr in ("obs", "var") else key in container
        if present:
            raise ValueError(
                f"adata.{attr}[{key!r}] exists already; results are never overwritten silently. Pass another "
                f"`key_added=`, delete the field (`del adata.{attr}[{key!r}]`), or pass `overwrite=True`."
            )


def log_written(adata_name: str, fields: list[str]) -> None:
    """Log where results were written, in scanpy's style."""
    if fields:
        logger.info("    added\n" + "\n".join(f"    {adata_name}.{f}" for f in fields))


@contextmanager
def quiet_loggers(*names: str, level: int = logging.WARNING):
    """Temporarily raise the level of the named loggers (e.g. scvi-tools' or Lightning's notes)."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)


#: Loggers of the libraries below us whose notes (device banners, tips, setup notes) stay quiet below "info".
THIRD_PARTY_LOGGERS = ("lightning.pytorch", "lightning.fabric", "scvi")


@contextmanager
def third_party_quiet():
    """Quiet Lightning's and scvi-tools' notes unless ``ht.settings.verbosity`` is ``"info"`` or above."""
    from ._settings import settings

    if not settings.quiet:
        yield
        return
    with quiet_loggers(*THIRD_PARTY_LOGGERS):
        yield


def progress_bar_default(enable_progress_bar: bool | None) -> bool:
    """``enable_progress_bar=None`` follows ``ht.settings``: bars unless the verbosity is ``"error"``."""
    from ._settings import settings

    if enable_progress_bar is None:
        return settings.progress_bars
    if not isinstance(enable_progress_bar, bool):
        raise TypeError(f"`enable_progress_bar` must be True, False or None, got {enable_progress_bar!r}.")
    return enable_progress_bar


@contextmanager
def warnings_once():
    """Re-issue the UserWarnings raised inside once each (the first of a message), from the user's line; a tool
    that scores several tables on the same data would otherwise repeat the same warning."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    seen = set()
    for w in caught:
        if issubclass(w.category, UserWarning) and str(w.message) not in seen:
            seen.add(str(w.message))
            warn(str(w.message), w.category)
        elif not issubclass(w.category, UserWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def progress_bar(*args, **kwargs):
    """A tqdm progress bar: Jupyter's widget bar when ipywidgets is installed, the text bar otherwise.

    As Lightning does: ``tqdm.auto`` without ipywidgets warns in Jupyter and falls back anyway.
    """
    import importlib.util

    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm(*args, **kwargs)
