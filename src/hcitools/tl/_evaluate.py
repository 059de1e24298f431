"""Per-assay evaluation of predicted activity probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score


def evaluate_assays(
    predictions: pd.DataFrame, labels: pd.DataFrame, *, assays: Sequence[str] | None = None
) -> pd.DataFrame:
    """AUROC and AUPRC per assay over the observed labels, with the macro mean.

    Parameters
    ----------
    predictions
        Scores or probabilities, rows = compounds (or bags), columns = assays.
    labels
        1 / 0 / NaN labels with the same kind of rows; aligned on the index and the columns. NaN (not measured)
        entries are ignored.
    assays
        Assays to evaluate (default: every column of ``predictions`` that ``labels`` has).

    Returns
    -------
    DataFrame with one row per assay and a last row ``"macro mean"``; columns ``auroc``, ``auprc``
    (scikit-learn's ``roc_auc_score`` and ``average_precision_score``), ``n_pos``, ``n_neg``. An assay whose
    observed labels hold a single class is reported with NaN metrics (and left out of the mean), not an error.

    Examples
    --------
    >>> import pandas as pd
    >>> from hcitools.tl import evaluate_assays
    >>> pred = pd.DataFrame({"a": [0.9, 0.2, 0.6]}, index=["c1", "c2", "c3"])
    >>> lab = pd.DataFrame({"a": [1.0, 0.0, float("nan")]}, index=["c1", "c2", "c3"])
    >>> float(evaluate_assays(pred, lab).loc["a", "auroc"])
    1.0
    """
    if not isinstance(predictions, pd.DataFrame) or not isinstance(labels, pd.DataFrame):
        raise TypeError(
            "`predictions` and `labels` must be pandas DataFrames (rows = compounds, columns = assays)."
        )
    common = predictions.index.intersection(labels.index)
    if len(common) == 0:
        raise ValueError(
            "`predictions` and `labels` share no row ids; align them on the same compound or bag ids."
        )
    if assays is None:
        assays = [a for a in predictions.columns if a in labels.columns]
    missing = [a for a in assays if a not in predictions.columns or a not in labels.columns]
    if missing:
        raise KeyError(f"Assays {missing[:5]} are missing from `predictions` or `labels`.")
    rows = {}
    for a in assays:
        y = labels.loc[common, a].to_numpy(dtype=float)
        s = predictions.loc[common, a].to_numpy(dtype=float)
        keep = ~np.isnan(y) & ~np.isnan(s)
        y, s = y[keep], s[keep]
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        if n_pos and n_neg:
            rows[a] = (roc_auc_score(y, s), average_precision_score(y, s), n_pos, n_neg)
        else:
            rows[a] = (np.nan, np.nan, n_pos, n_neg)
    out = pd.DataFrame.from_dict(rows, orient="index", columns=["auroc", "auprc", "n_pos", "n_neg"])
    mean = out[["auroc", "auprc"]].mean(skipna=True)
    out.loc["macro mean"] = [mean["auroc"], mean["auprc"], out["n_pos"].sum(), out["n_neg"].sum()]
    out[["n_pos", "n_neg"]] = out[["n_pos", "n_neg"]].astype(int)
    return out
