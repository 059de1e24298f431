"""Registered fields of the MIL models (scvi-tools ``scvi.data.fields``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scvi.data.fields import CategoricalObsField, NumericalJointObsField, ObsmField


class BagIdField(CategoricalObsField):
    """Ids that are new on every AnnData (bags, compounds, plates), registered as integer codes.

    scvi-tools' :class:`~scvi.data.fields.CategoricalObsField` keeps the category names in the registry and maps
    query data onto them; bag and compound ids of query data are new by nature, and keeping the training data's
    ids in the registry would store them in every saved model. This field registers the codes of
    ``pd.factorize(obs[key], sort=True)`` into ``obs["_scvi_<registry_key>"]`` (as scvi-tools' field does) and
    keeps only the number of ids; the names are read back from ``obs[key]`` (:meth:`names`).
    """

    N_CATEGORIES_KEY = "n_categories"

    def register_field(self, adata: AnnData) -> dict:
        self.validate_field(adata)
        codes, _ = pd.factorize(adata.obs[self._original_attr_key], sort=True)
        adata.obs[self.attr_key] = codes.astype(np.int64)
        return {self.ORIGINAL_ATTR_KEY: self._original_attr_key, self.N_CATEGORIES_KEY: int(codes.max()) + 1}

    def transfer_field(self, state_registry: dict, adata_target: AnnData, **kwargs) -> dict:
        return self.register_field(adata_target)

    def get_summary_stats(self, state_registry: dict) -> dict:
        return {self.count_stat_key: state_registry[self.N_CATEGORIES_KEY]}

    def view_state_registry(self, state_registry: dict):
        return None

    def names(self, adata: AnnData) -> np.ndarray:
        """The ids in code order (code ``i`` is ``names[i]``)."""
        return np.asarray(pd.factorize(adata.obs[self._original_attr_key], sort=True)[1]).astype(str)


class LabelsField(ObsmField):
    """Assay labels: ``obsm[labels_key]``, a DataFrame n_obs × n_assays of 1 / 0 / NaN (not measured).

    scvi-tools' categorical fields reject NaN; here NaN is the "not measured" code. The registry keeps the assay
    names (column names, strings). On query data (``load(..., adata=query)``, or a query method given new data)
    the labels are never read: the query may lack them or hold other assays, and the assays stay the model's.
    """

    def transfer_field(self, state_registry: dict, adata_target: AnnData, **kwargs) -> dict:
        return {self.COLUMN_NAMES_KEY: list(state_registry[self.COLUMN_NAMES_KEY])}

    def register_field(self, adata: AnnData) -> dict:
        state = super().register_field(adata)
        state[self.COLUMN_NAMES_KEY] = [str(c) for c in state[self.COLUMN_NAMES_KEY]]
        return state


#: Empty cells between the fields of view of a bag on its grid: the half-width of the largest M4 convolution
#: (k = 7), so crops of different fields of view never share a convolution window.
GRID_GAP = 3


def grid_positions(obs: pd.DataFrame, bag_key: str, grid_keys: list[str]) -> np.ndarray:
    """Each instance's (row, column) on its bag's grid, from obs columns ``grid_keys``.

    ``grid_keys`` ends with two integer columns (row and column of the crop within its field of view, e.g.
    ``tile_row`` / ``tile_col`` of :func:`hcitools.pp.tile_images`); any columns before them name the field of
    view (e.g. ``fov``). The fields of view of a bag (sorted) are laid out row by row on a ⌈√F⌉-wide layout of
    blocks, each block as large as the bag's largest row and column index, separated by ``GRID_GAP`` empty cells.
    A bag's grid depends on its own instances only.

    Returns
    -------
    int64 array n_obs × 2. Raises a KeyError for a missing column, a TypeError / ValueError for a row or column
    that is not a non-negative integer, and a ValueError when two instances of a bag share a position.
    """
    missing = [k for k in grid_keys if k not in obs]
    if missing:
        raise KeyError(
            f"adata.obs has no columns {missing} (argument `grid_keys`). Available columns: "
            f"{list(obs.columns)[:12]}."
        )
    *block_keys, row_key, col_key = grid_keys
    coords = []
    for key in (row_key, col_key):
        col = obs[key]
        what = f"adata.obs[{key!r}] (argument `grid_keys`)"
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise TypeError(
                f"{what} must hold integer tile positions (e.g. `tile_row`), got dtype {col.dtype}."
            )
        values = col.to_numpy(dtype=float)
        if not np.isfinite(values).all() or (values < 0).any() or (values != np.round(values)).any():
            raise ValueError(f"{what} must hold integers ≥ 0 (tile positions), with no NaN.")
        coords.append(values.astype(np.int64))
    row, col = coords
    bags = pd.Series(pd.factorize(obs[bag_key])[0], index=obs.index)
    if block_keys:
        block = pd.Series(
            pd.MultiIndex.from_frame(obs[block_keys].astype(str)).factorize(sort=True)[0], index=obs.index
        )
        block = (block.groupby(bags).rank(method="dense") - 1).to_numpy(dtype=np.int64)
    else:
        block = np.zeros(len(obs), np.int64)
    key = pd.DataFrame({"bag": bags.to_numpy(), "block": block, "row": row, "col": col})
    dup = key.duplicated()
    if dup.any():
        first = obs.index[np.flatnonzero(dup.to_numpy())[0]]
        raise ValueError(
            f"Two instances of a bag share a grid position (argument `grid_keys`={list(grid_keys)}), e.g. obs "
            f"{first!r}: name the field of view too (e.g. grid_keys=['fov', 'tile_row', 'tile_col'])."
        )
    per_bag = key.groupby("bag")
    n_blocks = per_bag["block"].transform("max").to_numpy() + 1
    height = per_bag["row"].transform("max").to_numpy() + 1 + GRID_GAP
    width = per_bag["col"].transform("max").to_numpy() + 1 + GRID_GAP
    per_line = np.ceil(np.sqrt(n_blocks)).astype(np.int64)
    out_row = (block // per_line) * height + row
    out_col = (block % per_line) * width + col
    return np.stack([out_row, out_col], axis=1).astype(np.int64)


class GridField(NumericalJointObsField):
    """Grid positions of the instances (M4's ``grid_keys``): obs columns turned into (row, column) per instance.

    Registration writes the positions of :func:`grid_positions` into ``obsm["_scvi_grid"]`` (columns
    ``grid_row`` and ``grid_col``) and keeps the source columns in the registry; query data are laid out afresh
    from their own columns (which they must have).
    """

    def __init__(self, registry_key: str, attr_keys: list[str], bag_key: str):
        super().__init__(registry_key, list(attr_keys))
        self.bag_key = bag_key

    def register_field(self, adata: AnnData) -> dict:
        self.validate_field(adata)
        pos = grid_positions(adata.obs, self.bag_key, self.attr_keys)
        adata.obsm[self.attr_key] = pd.DataFrame(pos, index=adata.obs_names, columns=["grid_row", "grid_col"])
        return {self.COLUMNS_KEY: np.asarray(self.attr_keys)}

    def transfer_field(self, state_registry: dict, adata_target: AnnData, **kwargs) -> dict:
        return self.register_field(adata_target)
