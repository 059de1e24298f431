"""Per-assay evaluation of predicted activity probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from .._utils import warn
from .._validate import _preview, check_binary_frame, check_frame

#: Below this many observed positives (or negatives) an assay's AUROC / AUPRC is flagged as unreliable.
MIN_CLASS_SIZE = 5


def common_assays(
    tables: dict[str, pd.DataFrame], assays: Sequence[str] | None, *, fix: str = ""
) -> tuple[list[str], pd.Index]:
    """The assays (columns) and row ids shared by every table of ``tables`` (argument name → frame).

    ``assays=None`` takes the columns of the first table that every table has. Raises a ValueError when no row
    or no assay is shared, and a KeyError naming the tables that lack a requested assay.
    """
    names, frames = list(tables), list(tables.values())
    args = ", ".join(f"`{n}`" for n in names)
    rows = frames[0].index
    for f in frames[1:]:
        rows = rows.intersection(f.index)
    if len(rows) == 0:
        raise ValueError(
            f"{args} share no row ids (e.g. {_preview(frames[0].index, 3)} vs {_preview(frames[-1].index, 3)}); "
            "align them on the same compound or bag ids."
        )
    if assays is None:
        assays = [a for a in frames[0].columns if all(a in f.columns for f in frames[1:])]
        if not assays:
            cols = "; ".join(f"`{n}` has {_preview(f.columns, 4)}" for n, f in tables.items())
            raise ValueError(
                f"{args} share no assay (column): {cols}. Name the columns by assay in each table"
                + (f" {fix}" if fix else ".")
            )
        return list(assays), rows
    if isinstance(assays, str) or not isinstance(assays, Sequence | pd.Index | np.ndarray):
        raise TypeError(f"`assays` must be a list of assay names or None, got {assays!r}.")
    assays = list(assays)
    if not assays:
        raise ValueError("`assays` is empty; pass assay names or `assays=None` (every shared assay).")
    for n, f in tables.items():
        missing = [a for a in assays if a not in f.columns]
        if missing:
            raise KeyError(
                f"Assays {_preview(missing)} (argument `assays`) are missing from `{n}`; its columns are "
                f"{_preview(f.columns, 8)}."
            )
    return assays, rows


def warn_small_classes(counts: pd.DataFrame, *, min_n: int = MIN_CLASS_SIZE) -> None:
    """One warning naming the assays (rows of ``counts``, columns ``n_pos``/``n_neg``) with fewer than ``min_n``
    positives or negatives, whose metrics are therefore unreliable."""
    small = counts.index[((counts["n_pos"] < min_n) | (counts["n_neg"] < min_n)).to_numpy()]
    if len(small):
        detail = ", ".join(
            f"{a!r} ({int(counts.loc[a, 'n_pos'])} pos / {int(counts.loc[a, 'n_neg'])} neg)"
            for a in small[:5]
        )
        more = f" and {len(small) - 5} more" if len(small) > 5 else ""
        warn(
            f"{len(small)} assays have fewer than {min_n} observed positives or negatives: {detail}{more}. Their "
            "AUROC / AUPRC rest on a handful of compounds and are unreliable (NaN with a single class); read them "
            "with their n_pos / n_neg, or leave them out.",
            UserWarning,
        )


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

    Raises
    ------
    TypeError
        If a table is not a DataFrame or holds non-numbers.
    ValueError
        If the tables share no row id or no assay, or ``labels`` holds values other than 1 / 0 / NaN.
    KeyError
        If an assay of ``assays`` is missing from a table.

    Warns
    -----
    UserWarning
        Once, naming the assays with fewer than 5 observed positives or negatives.

    Examples
    --------
    >>> import pandas as pd
    >>> from hcitools.tl import evaluate_assays
    >>> pred = pd.DataFrame({"a": [0.9, 0.2, 0.6]}, index=["c1", "c2", "c3"])
    >>> lab = pd.DataFrame({"a": [1.0, 0.0, float("nan")]}, index=["c1", "c2", "c3"])
    >>> float(evaluate_assays(pred, lab).loc["a", "auroc"])
    1.0
    """
    check_frame(predictions, "predictions")
    check_binary_frame(labels, "labels")
    assays, common = common_assays({"predictions": predictions, "labels": labels}, assays)
    scores = predictions.loc[common, assays]
    try:
        scores = scores.to_numpy(dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`predictions` must hold numbers (scores or probabilities): {err}") from err
    y_all = labels.loc[common, assays].to_numpy(dtype=float)
    rows = {}
    for j, a in enumerate(assays):
        y, s = y_all[:, j], scores[:, j]
        keep = ~np.isnan(y) & ~np.isnan(s)
        y, s = y[keep], s[keep]
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        if n_pos and n_neg:
            rows[a] = (roc_auc_score(y, s), average_precision_score(y, s), n_pos, n_neg)
        else:
            rows[a] = (np.nan, np.nan, n_pos, n_neg)
    out = pd.DataFrame.from_dict(rows, orient="index", columns=["auroc", "auprc", "n_pos", "n_neg"])
    warn_small_classes(out)
    mean = out[["auroc", "auprc"]].mean(skipna=True)
    out.loc["macro mean"] = [mean["auroc"], mean["auprc"], out["n_pos"].sum(), out["n_neg"].sum()]
    out[["n_pos", "n_neg"]] = out[["n_pos", "n_neg"]].astype(int)
    return out
