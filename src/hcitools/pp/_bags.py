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
