"""Test helpers shared by hcitools' test suite (and usable by downstream tests): "a failed call changed nothing"."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from ._utils import to_dense


def snapshot(adata: AnnData) -> dict[str, Any]:
    """Everything a failed call must leave as it was: X, obs (values and dtypes), obsm (keys, values, dtypes),
    uns and layers keys, var, shape."""
    obsm = {}
    for k, v in adata.obsm.items():
        obsm[k] = v.copy(deep=True) if isinstance(v, pd.DataFrame) else np.array(to_dense(v), copy=True)
    return {
        "X": None if adata.X is None else np.array(to_dense(adata.X), copy=True),
        "obs": adata.obs.copy(deep=True),
        "obsm": obsm,
        "uns": sorted(adata.uns.keys(), key=repr),
        "var": adata.var.copy(deep=True),
        "layers": sorted(adata.layers.keys(), key=repr),
        "shape": adata.shape,
    }


def assert_unchanged(before: dict[str, Any], adata: AnnData) -> None:
    """Assert that ``adata`` still matches a :func:`snapshot` taken before a call."""
    after = snapshot(adata)
    assert after["shape"] == before["shape"]
    np.testing.assert_array_equal(after["X"], before["X"])
    pd.testing.assert_frame_equal(after["obs"], before["obs"])  # values and dtypes
    assert list(after["obsm"]) == list(before["obsm"])
    for k, v in before["obsm"].items():
        if isinstance(v, pd.DataFrame):
            pd.testing.assert_frame_equal(after["obsm"][k], v)
        else:
            assert after["obsm"][k].dtype == v.dtype, k
            np.testing.assert_array_equal(after["obsm"][k], v)
    assert after["uns"] == before["uns"]
    pd.testing.assert_frame_equal(after["var"], before["var"])
    assert after["layers"] == before["layers"]
