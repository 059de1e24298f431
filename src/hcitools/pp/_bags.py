"""Bag (well) keys that are unique across plates."""

from __future__ import annotations

from anndata import AnnData

from .._constants import HCI_KEYS
from .._utils import check_free_keys, log_written
from .._validate import check_anndata, check_obs_keys


def make_bag_key(
    adata: AnnData,
    *,
    plate_key: str = HCI_KEYS.PLATE,
    well_key: str = HCI_KEYS.WELL,
    key_added: str = "bag",
    sep: str = "_",
    overwrite: bool = False,
    copy: bool = False,
) -> AnnData | None:
    """Build a bag id unique across plates from a plate column and a per-plate well column.

    Plate readers name wells ``A01`` … ``P24`` on every plate, so a well id alone does not identify a bag.
    This joins them: ``"<plate><sep><well>"``.

    Parameters
    ----------
    adata
        One row per instance.
    plate_key
        obs column with the plate id.
    well_key
        obs column with the well id within its plate (e.g. ``"A01"``).
    key_added
        obs column to write; pass it as ``bag_key`` to later functions.
    sep
        Separator between plate and well.
    overwrite
        Replace ``obs[key_added]`` if it exists (it may be ``well_key`` itself).
    copy
        Return a modified copy instead of writing in place.

    Returns
    -------
    ``None``, or a copy when ``copy=True``. Writes ``adata.obs[key_added]`` (categorical).

    Examples
    --------
    >>> import hcitools as ht
    >>> adata = ht.datasets.synthetic_hci(n_compounds=10, seed=0)
    >>> ht.pp.make_bag_key(adata, well_key="well_position", key_added="bag")
    >>> bool((adata.obs["bag"].astype(str) == adata.obs["well"].astype(str)).all())
    True
    """
    check_anndata(adata)
    check_obs_keys(adata, {"plate_key": plate_key, "well_key": well_key})
    check_free_keys(adata, {"obs": key_added}, overwrite=overwrite)
    target = adata.copy() if copy else adata
    bag = target.obs[plate_key].astype(str) + sep + target.obs[well_key].astype(str)
    target.obs[key_added] = bag.astype("category")
    log_written("adata", [f"obs[{key_added!r}]"])
    return target if copy else None
