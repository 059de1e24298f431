"""Writing an AnnData whose ``X`` is produced block by block (never held whole in memory).

anndata writes whole arrays; here the metadata (obs, var, obsm, uns) are written by anndata and ``X`` is then
created as an HDF5 dataset with anndata's dense-array encoding and filled in row blocks, so that
``anndata.read_h5ad(path, backed="r")`` opens it like any file anndata wrote.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import numpy as np
from anndata import AnnData

from .._validate import check_str


def check_out_path(path, *, overwrite: bool, arg: str = "path") -> str:
    """``path`` as a str ending in ``.h5ad``; refuse an existing file unless ``overwrite``."""
    path = os.fspath(path) if isinstance(path, os.PathLike) else path
    check_str(path, arg)
    if not path.endswith(".h5ad"):
        raise ValueError(f"`{arg}` must be an .h5ad file path, got {path!r}.")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(
            f"{path!r} exists (argument `{arg}`); pass another path or `overwrite=True` to replace it."
        )
    return path


def write_h5ad_blocks(
    path: str,
    skeleton: AnnData,
    *,
    n_features: int,
    dtype,
    blocks: Iterable[tuple[int, np.ndarray]] | Callable[[], Iterable[tuple[int, np.ndarray]]],
) -> AnnData:
    """Write ``skeleton`` (no ``X``) to ``path`` and fill ``X`` (n_obs × ``n_features``) from ``(start, block)`` pairs.

    Returns the file opened with ``backed="r"``. A failure removes the partly written file.
    """
    import anndata as ad
    import h5py

    n = skeleton.n_obs
    try:
        skeleton.write_h5ad(path)
        with h5py.File(path, "a") as f:
            # contiguous (not chunked): a bag is then read as one slice of the file, without decompressing or
            # caching whole chunks of other bags' rows
            dset = f.create_dataset("X", shape=(n, n_features), dtype=dtype)
            dset.attrs["encoding-type"] = "array"
            dset.attrs["encoding-version"] = "0.2.0"
            for start, block in blocks() if callable(blocks) else blocks:
                dset[start : start + len(block)] = block
    except BaseException:
        if os.path.exists(path):
            os.remove(path)
        raise
    return ad.read_h5ad(path, backed="r")
