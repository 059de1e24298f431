"""Bag (well) keys that are unique across plates."""

from __future__ import annotations

from anndata import AnnData

from .._constants import HCI_KEYS
from .._utils import check_free_keys, log_written
from .._validate import _preview, check_anndata, check_bool, check_obs_keys, check_str


def make_bag_key(
    adata: AnnData,
    *,
    plate_key: str = HCI_KEYS.PLATE,
    well_key: str = HCI_KEYS.WELL_POSITION,
    key_added: str = HCI_KEYS.WELL,
    sep: str = "_",
    overwrite: bool = False,
    copy: bool = False,
) -> AnnData | None:
    """Build the well id, unique across plates, from a plate column and a per-plate well-position column.

    In hcitools a *well* (``obs["well"]``, the default ``bag_key`` of every function) is one well of one plate,
    e.g. ``"plate0_A01"``; the per-plate position (``"A01"``, which repeats on every plate) is
    ``obs["well_position"]``. This joins them: ``"<plate><sep><well_position>"``.

    Parameters
    ----------
    adata
        One row per instance.
    plate_key
        obs column with the plate id.
    well_key
        obs column with the well position within its plate (e.g. ``"A01"``).
    key_added
        obs column to write; the default ``"well"`` is where every function looks for wells (``bag_key``).
    sep
        Separator between plate and well position.
    overwrite
        Replace ``obs[key_added]`` if it exists (e.g. a ``"well"`` column that holds per-plate positions: pass
        ``well_key="well", overwrite=True``).
    copy
        Return a modified copy instead of writing in place.

    Returns
    -------
    ``None``, or a copy when ``copy=True``. Writes ``adata.obs[key_added]`` (categorical).

    Raises
    ------
    ValueError
        If ``obs[key_added]`` exists (without ``overwrite=True``), or two different (plate, position) pairs give one
        id (a ``sep`` inside the names); nothing is written then.

    Examples
    --------
    >>> import hcitools as ht
    >>> adata = ht.datasets.synthetic_hci(n_compounds=10, seed=0)
    >>> ht.pp.make_bag_key(adata, key_added="well_id")  # from obs["plate"] and obs["well_position"]
    >>> bool((adata.obs["well_id"].astype(str) == adata.obs["well"].astype(str)).all())
    True
    """
    check_anndata(adata)
    for name, value in (
        ("plate_key", plate_key),
        ("well_key", well_key),
        ("key_added", key_added),
        ("sep", sep),
    ):
        check_str(value, name)
    check_bool(overwrite, "overwrite")
    check_bool(copy, "copy")
    check_obs_keys(adata, {"plate_key": plate_key, "well_key": well_key})
    check_free_keys(adata, {"obs": key_added}, overwrite=overwrite)
    plate = adata.obs[plate_key].astype(str)
    position = adata.obs[well_key].astype(str)
    bag = plate + sep + position
    pairs = (plate.to_frame("p").assign(w=position.to_numpy(), b=bag.to_numpy())).drop_duplicates()
    clash = pairs["b"][pairs["b"].duplicated()]
    if len(clash):
        raise ValueError(
            f"Different (plate, well position) pairs give the same id with `sep={sep!r}`: {_preview(clash.unique())}. "
            "Pass a `sep` that occurs in no plate or well name, e.g. `sep='|'`."
        )
    target = adata.copy() if copy else adata
    target.obs[key_added] = bag.astype("category")
    log_written("adata", [f"obs[{key_added!r}]"])
    return target if copy else None


def sort_by_bag(
    adata: AnnData,
    *,
    bag_key: str = HCI_KEYS.WELL,
    path: str,
    overwrite: bool = False,
    chunk_rows: int = 8192,
) -> AnnData:
    """Write a copy of ``adata`` whose rows are sorted by bag, so that every bag is one contiguous row block.

    The out-of-core data path (models trained or queried on an AnnData opened with ``backed="r"``) reads each bag
    as one slice of the file; a file whose bags are scattered is refused and points here. ``X`` is copied in
    blocks of ``chunk_rows`` output rows (each block reads its source rows in file order), so memory stays
    O(``chunk_rows`` × features) plus the in-memory ``obs`` / ``obsm`` (which backed AnnData hold in memory
    anyway).

    Parameters
    ----------
    adata
        Instances, in memory or backed.
    bag_key
        obs column with the bag (well) ids; bags are ordered by id (the order of the models' ``predict``), the
        instances of a bag keep their order.
    path
        ``.h5ad`` file to write.
    overwrite
        Replace an existing file at ``path``.
    chunk_rows
        Rows copied at a time.

    Returns
    -------
    The sorted copy, opened with ``anndata.read_h5ad(path, backed="r")``: ``X`` (dense float, on disk), ``obs``,
    ``var``, ``obsm`` and ``uns`` reordered. Layers, ``obsp`` and ``varm`` are not copied. ``adata`` is not
    modified.

    Examples
    --------
    >>> import hcitools as ht, tempfile, os
    >>> adata = ht.datasets.synthetic_hci(n_compounds=10, seed=0)
    >>> shuffled = adata[::-1].copy()
    >>> path = os.path.join(tempfile.mkdtemp(), "sorted.h5ad")
    >>> backed = ht.pp.sort_by_bag(shuffled, bag_key="well", path=path)
    >>> bool(backed.obs["well"].astype(str).is_monotonic_increasing)
    True
    """
    import numpy as np
    import pandas as pd

    from .._utils import to_dense, warn
    from .._validate import check_int
    from ._disk import check_out_path, write_h5ad_blocks

    check_anndata(adata)
    check_str(bag_key, "bag_key")
    check_obs_keys(adata, {"bag_key": bag_key})
    check_bool(overwrite, "overwrite")
    chunk_rows = check_int(chunk_rows, "chunk_rows", min=1)
    path = check_out_path(path, overwrite=overwrite)
    if adata.X is None:
        raise ValueError("adata.X is empty (None); sort_by_bag copies X.")
    codes, _ = pd.factorize(adata.obs[bag_key], sort=True)
    order = np.argsort(codes, kind="stable")
    # (a backed AnnData of anndata ≥ 0.13 lists X as the layer None)
    dropped = [
        name
        for name in ("layers", "obsp", "varm")
        if [k for k in getattr(adata, name).keys() if k is not None]
    ]
    if dropped:
        warn(f"sort_by_bag does not copy {dropped} (only X, obs, var, obsm and uns).")
    obs = adata.obs.iloc[order].copy()
    obsm = {
        k: (v.iloc[order] if isinstance(v, pd.DataFrame) else np.asarray(v)[order])
        for k, v in adata.obsm.items()
    }
    skeleton = AnnData(obs=obs, var=adata.var.copy(), uns=dict(adata.uns), obsm=obsm)
    X = adata.X
    dtype = np.float64 if X.dtype == np.float64 else np.float32

    def blocks():
        for start in range(0, len(order), chunk_rows):
            src = order[start : start + chunk_rows]
            inc = np.sort(src)  # h5py reads increasing indices; put the rows back in output order after
            block = to_dense(X[inc], dtype)
            yield start, block[np.searchsorted(inc, src)]

    out = write_h5ad_blocks(path, skeleton, n_features=adata.n_vars, dtype=dtype, blocks=blocks)
    log_written(path, ["X", "obs", "var", "obsm", "uns"])
    return out
