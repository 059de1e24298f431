"""Phenotypic activity: replicate retrieval of compounds against negative controls (mAP, via copairs)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import HCI_KEYS
from .._utils import check_free_keys, import_optional, log_written, logger
from .._validate import check_anndata, check_controls, get_rep


def phenotypic_activity(
    adata: AnnData,
    *,
    compound_key: str = HCI_KEYS.COMPOUND,
    control_value: Any = HCI_KEYS.CONTROL_VALUE,
    rep_key: str | None = None,
    distance: str = "cosine",
    null_size: int = 10_000,
    threshold: float = 0.05,
    seed: int = 0,
    key_added: str = "phenotypic_activity",
    overwrite: bool = False,
    progress: bool = False,
) -> pd.DataFrame:
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
    overwrite
        Replace an existing ``uns[key_added]``.
    progress
        Show copairs' progress bars.

    Returns
    -------
    DataFrame, one row per compound: ``mean_average_precision``, ``p_value``, ``corrected_p_value``,
    ``below_corrected_p``. Also written to ``uns[key_added]["per_compound"]``, with the overall mean mAP and the
    fraction retrieved in ``uns[key_added]["summary"]``.

    Examples
    --------
    >>> import hcitools as ht
    >>> plate = ht.datasets.lincs_plate()  # doctest: +SKIP
    >>> ht.pp.normalize_plates(plate, control_value="DMSO")  # doctest: +SKIP
    >>> res = ht.tl.phenotypic_activity(plate, control_value="DMSO")  # doctest: +SKIP
    """
    check_anndata(adata)
    is_ctrl = check_controls(adata, compound_key, control_value, plate_key=None)
    X = get_rep(adata, rep_key=rep_key)
    check_free_keys(adata, {"uns": key_added}, overwrite=overwrite)
    import_optional("copairs", "phenotypic_activity")
    from copairs import map as cmap
    from copairs.matching import assign_reference_index

    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
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
    adata.uns[key_added] = {"per_compound": per_compound, "summary": summary}
    logger.info(
        f"mean mAP {summary['mean_map']:.3f}; {summary['fraction_retrieved']:.1%} of {len(per_compound)} compounds "
        f"retrieved against {control_value!r} (q < {threshold})"
    )
    log_written("adata", [f"uns[{key_added!r}]"])
    return per_compound
