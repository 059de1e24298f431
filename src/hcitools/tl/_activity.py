"""Phenotypic activity: replicate retrieval of compounds against negative controls (mAP, via copairs)."""

from __future__ import annotations

from typing import Any

import pandas as pd
from anndata import AnnData

from .._constants import HCI_KEYS
from .._utils import check_free_keys, import_optional, log_written, logger, to_dense
from .._validate import (
    check_anndata,
    check_bool,
    check_controls,
    check_int,
    check_real,
    check_str,
    check_writable,
    get_rep,
)
from ..pp._aggregate import check_one_row_per_well


def phenotypic_activity(
    adata: AnnData,
    *,
    compound_key: str = HCI_KEYS.COMPOUND,
    control_value: Any = HCI_KEYS.CONTROL_VALUE,
    bag_key: str | None = HCI_KEYS.WELL,
    rep_key: str | None = None,
    distance: str = "cosine",
    null_size: int = 10_000,
    threshold: float = 0.05,
    seed: int = 0,
    key_added: str = "phenotypic_activity",
    inplace: bool = True,
    copy: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> pd.DataFrame | AnnData | None:
    """Mean average precision (mAP) of retrieving each compound's replicate profiles against controls.

    For every non-control profile (a well), its replicates (the other wells of the same compound, e.g. its
    other doses) are positives and the control wells (e.g. DMSO) are negatives; average precision ranks them by
    ``distance``. Per compound, the mean over its wells is the mAP; a permutation null gives p-values, corrected
    by Benjamini–Hochberg. Computed with :mod:`copairs` (``average_precision`` and ``mean_average_precision``),
    the reference implementation of the JUMP consortium.

    Parameters
    ----------
    adata
        One row per well (aggregate instances first with :func:`hcitools.pp.aggregate`).
    compound_key
        obs column with compound ids.
    control_value
        Value of ``obs[compound_key]`` marking the negative controls.
    bag_key
        obs column with the (plate-qualified) well ids. Crop- or cell-level data (several rows per well) is
        refused, since crops of one well would count as replicates of each other; ``None`` skips the check.
    rep_key
        obsm key of the profiles; ``None`` uses ``X``.
    distance
        copairs distance: ``"cosine"``, ``"euclidean"``, ``"correlation"``, ….
    null_size
        Size of the permutation null per compound.
    threshold
        FDR level for ``below_corrected_p``.
    seed
        Seed of the permutation null.
    key_added
        uns key to write.
    inplace
        scanpy's rule for a function whose output is a table: ``True`` writes the results into
        ``adata.uns[key_added]`` and returns ``None``; ``False`` returns the per-compound table and writes nothing.
    copy
        Write the results into a copy of ``adata`` and return the copy (``adata`` is left untouched); cannot be
        combined with ``inplace=False``.
    overwrite
        Replace an existing ``uns[key_added]``.
    progress
        Show copairs' progress bars.

    Returns
    -------
    With ``inplace=True`` (default): ``None``; with ``copy=True``: the modified copy. Both write
    ``uns[key_added]``, a dict with ``"per_compound"`` (DataFrame, one row per compound:
    ``mean_average_precision``, ``p_value``, ``corrected_p_value``, ``below_corrected_p``) and ``"summary"``
    (overall mean mAP, fraction retrieved, parameters). With ``inplace=False``: the ``per_compound`` DataFrame,
    and nothing is written.

    Examples
    --------
    >>> import hcitools as ht
    >>> plate = ht.datasets.lincs_plate()  # doctest: +SKIP
    >>> ht.pp.normalize_plates(plate, control_value="DMSO")  # doctest: +SKIP
    >>> ht.tl.phenotypic_activity(plate, control_value="DMSO")  # doctest: +SKIP
    >>> plate.uns["phenotypic_activity"]["per_compound"].head()  # doctest: +SKIP
    >>> table = ht.tl.phenotypic_activity(plate, control_value="DMSO", inplace=False)  # doctest: +SKIP
    """
    check_anndata(adata)
    check_str(compound_key, "compound_key")
    check_str(bag_key, "bag_key", allow_none=True)
    check_str(rep_key, "rep_key", allow_none=True)
    check_str(key_added, "key_added")
    if not callable(distance):
        check_str(distance, "distance")
    null_size = check_int(null_size, "null_size", min=1)
    threshold = check_real(threshold, "threshold", min=0, max=1, min_inclusive=False, max_inclusive=False)
    seed = check_int(seed, "seed", min=0)
    for name, value in (
        ("inplace", inplace),
        ("copy", copy),
        ("overwrite", overwrite),
        ("progress", progress),
    ):
        check_bool(value, name)
    if copy and not inplace:
        raise ValueError(
            "`copy=True` returns a copy holding the results and `inplace=False` returns only the table; pass one."
        )
    check_one_row_per_well(adata, bag_key, function="phenotypic_activity")
    is_ctrl = check_controls(adata, compound_key, control_value, plate_key=None)
    if is_ctrl.all():
        raise ValueError(
            f"Every row is a control ({compound_key} == {control_value!r}); there is nothing to score."
        )
    X = get_rep(adata, rep_key=rep_key)
    if inplace:
        check_free_keys(adata, {"uns": key_added}, overwrite=overwrite)
    import_optional("copairs", "phenotypic_activity")
    from copairs import compute as ccompute
    from copairs import map as cmap
    from copairs.matching import assign_reference_index

    try:
        if isinstance(distance, str) and hasattr(ccompute, "get_similarity_fn"):
            ccompute.get_similarity_fn(distance, progress_bar=False)
    except ValueError as err:
        raise ValueError(
            f"`distance` must be a copairs distance such as 'cosine', 'euclidean' or 'correlation', got "
            f"{distance!r}."
        ) from err
    if copy:
        check_writable(adata, "a copy")

    X = to_dense(X)
    meta = pd.DataFrame({"compound": adata.obs[compound_key].astype(str).to_numpy(), "is_control": is_ctrl})
    meta = assign_reference_index(meta, "is_control", reference_col="reference_index", default_value=-1)
    ap = cmap.average_precision(
        meta,
        X,
        pos_sameby=["compound", "reference_index"],
        pos_diffby=[],
        neg_sameby=[],
        neg_diffby=["compound", "reference_index"],
        distance=distance,
        progress_bar=progress,
    )
    ap = ap[~ap["is_control"].astype(bool)]
    maps = cmap.mean_average_precision(
        ap, sameby=["compound"], null_size=null_size, threshold=threshold, seed=seed, progress_bar=progress
    )
    per_compound = maps.set_index("compound")[
        ["mean_average_precision", "p_value", "corrected_p_value", "below_corrected_p"]
    ]
    per_compound.index.name = None
    summary = {
        "mean_map": float(per_compound["mean_average_precision"].mean()),
        "fraction_retrieved": float(per_compound["below_corrected_p"].mean()),
        "n_compounds": len(per_compound),
        "distance": distance,
        "null_size": null_size,
        "threshold": threshold,
        "seed": seed,
    }
    logger.info(
        f"mean mAP {summary['mean_map']:.3f}; {summary['fraction_retrieved']:.1%} of {len(per_compound)} compounds "
        f"retrieved against {control_value!r} (q < {threshold})"
    )
    if not inplace:
        return per_compound
    target = adata.copy() if copy else adata
    target.uns[key_added] = {"per_compound": per_compound, "summary": summary}
    log_written("adata", [f"uns[{key_added!r}]"])
    return target if copy else None
