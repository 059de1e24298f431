"""Non-MIL baselines evaluated over the same compound folds as the MIL models."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import HCI_KEYS
from .._utils import logger, to_dense
from .._validate import check_anndata, check_int, check_labels, check_obs_keys, check_real, check_str, get_rep
from ..pp._aggregate import check_one_row_per_well
from ..pp._split import fold_rotations


def _check_folds_column(adata: AnnData, fold_key: str) -> tuple[np.ndarray, int]:
    """The integer folds of ``obs[fold_key]`` (-1 = in no fold) and their number; at least 3 non-empty folds."""
    check_obs_keys(adata, {"fold_key": fold_key})
    folds = adata.obs[fold_key].to_numpy()
    if not np.issubdtype(folds.dtype, np.integer):
        raise TypeError(
            f"adata.obs[{fold_key!r}] (argument `fold_key`) must hold integer folds (-1 = in no fold), got dtype "
            f"{folds.dtype}. Make them with `ht.pp.split_compounds`."
        )
    n_folds = int(folds.max()) + 1
    present = np.unique(folds[folds >= 0])
    if (folds < -1).any() or n_folds < 3 or len(present) != n_folds:
        raise ValueError(
            f"adata.obs[{fold_key!r}] (argument `fold_key`) must number its folds 0 … n-1 (n ≥ 3: train, "
            f"validation, test) and -1 for rows in no fold; it holds {np.unique(folds).tolist()[:12]}. Make the "
            "folds with `ht.pp.split_compounds`."
        )
    return folds, n_folds


def pooled_logistic_regression(
    adata: AnnData,
    *,
    labels_key: str = HCI_KEYS.ASSAYS,
    fold_key: str = HCI_KEYS.FOLD,
    bag_key: str | None = HCI_KEYS.WELL,
    rep_key: str | None = None,
    Cs: Sequence[float] = (0.01, 0.1, 1.0),
    max_iter: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Baseline: per assay, an L2 logistic regression on mean-pooled wells, over the 3-1-1 fold rotations.

    For every rotation of :func:`hcitools.pp.fold_rotations` (test fold *i*, validation fold *i + 1*, train on the
    others) and every assay, scikit-learn's :class:`~sklearn.linear_model.LogisticRegression`
    (``class_weight="balanced"``) is fitted on the training folds' wells with an observed label, for each ``C`` in
    ``Cs``; :class:`~sklearn.model_selection.GridSearchCV` over a
    :class:`~sklearn.model_selection.PredefinedSplit` picks the ``C`` with the highest AUROC on the validation
    fold, and the model fitted on the training folds with that ``C`` (not refitted on the validation fold, as the
    MIL models train on the training folds only) predicts the test fold. The test fold's labels are never read.
    When the validation fold holds a single class of an assay, ``C`` cannot be selected and the smallest ``C``
    (the strongest regularisation) is used.

    Parameters
    ----------
    adata
        One row per well: e.g. ``ht.pp.aggregate(adata, by="well")`` of a normalised screen.
    labels_key
        obsm key of the 1 / 0 / NaN assay labels (NaN: not measured, never used).
    fold_key
        obs column of integer folds from :func:`hcitools.pp.split_compounds` (``-1``: in no fold, e.g. DMSO; such
        wells are neither trained on nor predicted).
    bag_key
        obs column with the well ids: crop-level data (several rows per well) is refused; ``None`` skips the check.
    rep_key
        obsm key of the features; ``None`` uses ``X``.
    Cs
        Inverse regularisation strengths to choose from.
    max_iter
        Iterations of the solver.
    seed
        ``random_state`` of the solver.

    Returns
    -------
    DataFrame wells × assays (index ``adata.obs_names``, columns the assays of ``obsm[labels_key]``): each well's
    predicted probability of activity from the rotation in which its fold is the test fold; NaN for wells in no
    fold and for (fold, assay) pairs whose training folds hold a single class. Nothing is written into ``adata``;
    average per compound to evaluate at compound level (``pred.groupby(adata.obs["compound"]).mean()``).

    Examples
    --------
    >>> import hcitools as ht
    >>> adata = ht.datasets.synthetic_hci(n_compounds=60, n_assays=3, n_primary=2, n_features=8, seed=0)
    >>> ht.pp.normalize_plates(adata)
    >>> ht.pp.split_compounds(adata, method="group", group_key="scaffold", seed=0)
    >>> wells = ht.pp.aggregate(adata, by="well")
    >>> pred = ht.tl.pooled_logistic_regression(wells)
    >>> pred.shape == (wells.n_obs, 3)
    True
    """
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, PredefinedSplit

    check_anndata(adata)
    check_str(labels_key, "labels_key")
    check_str(fold_key, "fold_key")
    check_str(bag_key, "bag_key", allow_none=True)
    check_str(rep_key, "rep_key", allow_none=True)
    if isinstance(Cs, str) or not isinstance(Cs, Sequence | np.ndarray):
        raise TypeError(f"`Cs` must be a list of positive numbers, e.g. `Cs=(0.01, 0.1, 1.0)`, got {Cs!r}.")
    Cs = [check_real(c, "Cs", min=0, min_inclusive=False) for c in Cs]
    if not Cs:
        raise ValueError("`Cs` is empty; pass positive numbers, e.g. `Cs=(0.01, 0.1, 1.0)`.")
    max_iter = check_int(max_iter, "max_iter", min=1)
    seed = check_int(seed, "seed", min=0)
    check_one_row_per_well(adata, bag_key, function="pooled_logistic_regression")
    labels = check_labels(adata, labels_key, bag_key=None)
    folds, n_folds = _check_folds_column(adata, fold_key)
    X = to_dense(get_rep(adata, rep_key=rep_key), np.float64)
    Y = labels.to_numpy(dtype=float)
    base = LogisticRegression(class_weight="balanced", max_iter=max_iter, random_state=seed)
    pred = np.full(Y.shape, np.nan)
    n_fallback = 0
    for rot in fold_rotations(n_folds):
        train, val, test = np.isin(folds, rot.train), folds == rot.validation, folds == rot.test
        for j in range(Y.shape[1]):
            y = Y[:, j]
            tr, va = train & ~np.isnan(y), val & ~np.isnan(y)
            if len(np.unique(y[tr])) < 2:
                continue
            if len(np.unique(y[va])) == 2:
                rows = tr | va
                # PredefinedSplit: -1 = always in training, 0 = the one validation split; the test fold is not passed
                split = PredefinedSplit(np.where(va[rows], 0, -1))
                search = GridSearchCV(base, {"C": Cs}, scoring="roc_auc", cv=split, refit=False)
                C = search.fit(X[rows], y[rows]).best_params_["C"]
            else:
                C, n_fallback = min(Cs), n_fallback + 1
            clf = clone(base).set_params(C=C).fit(X[tr], y[tr])
            pred[test, j] = clf.predict_proba(X[test])[:, 1]
    if n_fallback:
        logger.info(
            f"{n_fallback} (rotation, assay) pairs had a single class in the validation fold; used C={min(Cs)}"
        )
    return pd.DataFrame(pred, index=adata.obs_names.copy(), columns=labels.columns.copy())
