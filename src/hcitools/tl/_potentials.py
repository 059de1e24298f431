"""``ht.tl.task_potentials``: the single-task cross-validated AUROC of every assay (AMTL's task potentials)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pandas as pd
from anndata import AnnData

from .._constants import HCI_KEYS
from .._utils import check_free_keys, log_written, logger
from .._validate import check_anndata, check_str
from ._momil import momil

_FIXED = ("method", "copy", "key_added", "overwrite")


def task_potentials(
    adata: AnnData,
    *,
    primary_assays: Sequence[str] | None = None,
    fold_key: str = HCI_KEYS.FOLD,
    bag_key: str = HCI_KEYS.WELL,
    labels_key: str = HCI_KEYS.ASSAYS,
    group_key: str = HCI_KEYS.COMPOUND,
    rep_key: str | None = None,
    batch_key: str | None = None,
    seed: int = 0,
    train_kwargs: dict[str, Any] | None = None,
    key_added: str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    **model_kwargs,
) -> pd.Series:
    """Task potentials: the single-task cross-validated compound AUROC of each assay.

    The potential ``p_t`` of AMTL (000 §3.3.4; ``model.train(weighting="amtl", weighting_kwargs={"potentials":
    ...})``, :class:`hcitools.train.AMTLWeighting`) is what a task reaches on its own. It is measured by
    :func:`hcitools.tl.momil` with ``method="stl"``: one single-assay MoMIL per assay, trained over the compound
    folds of ``obs[fold_key]`` (3-1-1 rotations, early stopping and model selection on the validation fold),
    scored on the test-fold compounds (each compound predicted once, by a model that never saw it).

    Parameters
    ----------
    adata
        Instances with folds in ``obs[fold_key]`` (:func:`hcitools.pp.split_compounds`) and labels in
        ``obsm[labels_key]``.
    primary_assays
        Assays to measure (one single-task model each); default: every assay of ``obsm[labels_key]``. AMTL
        gives the assays without a potential the fixed target ``p``.
    fold_key, bag_key, labels_key, group_key, rep_key, batch_key, seed, train_kwargs, progress
        As in :func:`hcitools.tl.momil`.
    key_added
        None (default): nothing is written into ``adata``. A name: keep the single-task cross-validation there
        (see Returns).
    overwrite
        Replace existing fields of ``key_added``.
    **model_kwargs
        Passed to every single-task model (e.g. ``n_hidden=64``), as in :func:`hcitools.tl.momil`.

    Returns
    -------
    Series of potentials (AUROC in [0, 1]) indexed by assay (``primary_assays``, in their order, or every
    assay), named ``"potential"``; NaN for an assay whose test-fold compounds hold a single observed class.
    With ``key_added``, also writes what :func:`hcitools.tl.momil` writes for ``method="stl"``:
    ``uns[key_added]`` (``predictions``, ``evaluation``, ``params``, plus ``potentials``: this Series) and
    ``obsm[f"{key_added}_attention"]``. Without it, ``adata`` is left as it was.

    Examples
    --------
    >>> import hcitools as ht
    >>> adata = ht.datasets.synthetic_hci(n_compounds=40, n_assays=3, n_primary=1, n_features=6, label_density=0.5, seed=0)
    >>> ht.pp.split_compounds(adata, method="group", group_key="scaffold", n_folds=3, seed=0)
    >>> potentials = ht.tl.task_potentials(
    ...     adata, primary_assays=["assay_00"], train_kwargs={"max_epochs": 2}, n_hidden=4, n_head_hidden=4, progress=False
    ... )
    >>> list(potentials.index)
    ['assay_00']

    Then, e.g., ``model.train(weighting="amtl", weighting_kwargs={"potentials": potentials})``.
    """
    check_anndata(adata)
    fixed = sorted(set(_FIXED) & set(model_kwargs))
    if fixed:
        raise TypeError(f"`task_potentials` runs `ht.tl.momil(method='stl')` itself; it takes no {fixed}.")
    key_added = check_str(key_added, "key_added", allow_none=True)
    if key_added is not None:
        check_free_keys(adata, {"uns": key_added, "obsm": f"{key_added}_attention"}, overwrite=overwrite)
    options = {
        "primary_assays": primary_assays, "fold_key": fold_key, "bag_key": bag_key, "labels_key": labels_key,
        "group_key": group_key, "rep_key": rep_key, "batch_key": batch_key, "seed": seed,
        "train_kwargs": train_kwargs, "progress": progress, **model_kwargs,
    }  # fmt: skip
    if key_added is not None:
        momil(adata, method="stl", key_added=key_added, overwrite=overwrite, **options)
        result = adata.uns[key_added]
    elif adata.is_view:  # writing into a view would turn it into a copy of its own: work on a copy outright
        copied = momil(adata, method="stl", key_added="task_potentials", copy=True, **options)
        result = copied.uns["task_potentials"]
    else:  # under a fresh key, removed again whatever happens
        key = f"_task_potentials_{uuid.uuid4().hex[:8]}"
        try:
            momil(adata, method="stl", key_added=key, **options)
            result = adata.uns[key]
        finally:
            adata.uns.pop(key, None)
            if f"{key}_attention" in adata.obsm:
                del adata.obsm[f"{key}_attention"]
    potentials = _potentials_from(result)
    if key_added is not None:
        adata.uns[key_added]["potentials"] = potentials
        log_written("adata", [f"uns[{key_added!r}]['potentials']"])
    undefined = potentials.index[potentials.isna()].tolist()
    logger.info(
        f"task potentials (single-task cross-validated AUROC) of {len(potentials)} assays, mean "
        f"{potentials.mean():.3f}" + (f"; undefined (a single class) for {undefined}" if undefined else "")
    )
    return potentials


def _potentials_from(result: dict) -> pd.Series:
    """The per-assay AUROC of the single-task models from the results of ``ht.tl.momil(method="stl")``."""
    ev = result["evaluation"]
    assays = list(result["predictions"].columns)
    rows = ev[ev["method"] == "stl"].set_index("assay")
    potentials = rows["auroc"].reindex(assays).astype(float)
    potentials.index = pd.Index([str(a) for a in assays], name="assay")
    return potentials.rename("potential")
