"""Plots of per-assay performance: bars with n and bootstrap intervals, and a heatmap across methods."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from .._validate import (
    _preview,
    check_binary_frame,
    check_bool,
    check_columns,
    check_frame,
    check_int,
    check_real,
    check_str,
)

#: Summary rows of :func:`hcitools.tl.evaluate_assays` and :func:`hcitools.tl.momil`: drawn as lines, never as bars.
SUMMARY_ROWS = ("macro mean", "primary mean")


def _check_results(results, metric: str, methods) -> tuple[pd.DataFrame, list[str]]:
    check_frame(results, "results", what="tidy: columns 'assay', 'method' and the metric")
    check_str(metric, "metric")
    check_columns(results, "`results`", ["assay", "method"])
    check_columns(results, "`results`", [metric], arg="metric")
    if results.empty:
        raise ValueError("`results` is empty; there is nothing to plot.")
    if not pd.api.types.is_numeric_dtype(results[metric]):
        raise TypeError(
            f"results[{metric!r}] (argument `metric`) must be numeric, got dtype {results[metric].dtype}."
        )
    if isinstance(methods, str):
        raise TypeError(f"`methods` must be a list of method names or None, got the string {methods!r}.")
    known = list(pd.unique(results["method"]))
    methods = list(methods) if methods is not None else known
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise ValueError(
            f"`methods` must name methods of results['method'] ({_preview(known)}); got {_preview(unknown or methods)}."
        )
    return results, methods


def _split_summary(results: pd.DataFrame, metric: str, methods: list[str]):
    """(assays × methods values, summary rows × methods values, per-assay n text or None) in a stable order: the
    assays in order of first appearance, summary rows apart."""
    is_summary = results["assay"].astype(str).isin(SUMMARY_ROWS).to_numpy()
    data, summary = results[~is_summary], results[is_summary]
    if data.empty:
        raise ValueError(f"`results` holds only summary rows ({_preview(SUMMARY_ROWS)}); no assay to plot.")
    dup = data.duplicated(subset=["assay", "method"])
    if dup.any():
        raise ValueError(
            f"`results` has {int(dup.sum())} duplicated (assay, method) rows, e.g. "
            f"{data.loc[dup, ['assay', 'method']].iloc[0].to_dict()}; one row per assay and method."
        )
    assays = list(pd.unique(data["assay"]))
    table = data.pivot(index="assay", columns="method", values=metric).reindex(index=assays, columns=methods)
    means = summary.pivot_table(index="assay", columns="method", values=metric, sort=False)
    means = means.reindex(columns=methods)
    n_text = None
    if {"n_pos", "n_neg"} <= set(results.columns):
        first = data.drop_duplicates("assay").set_index("assay").loc[assays]
        n_text = [f"{int(p)}/{int(q)}" for p, q in zip(first["n_pos"], first["n_neg"], strict=True)]
    return table, means, n_text


def bootstrap_auroc_intervals(
    predictions: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Percentile bootstrap intervals of the AUROC per assay (compounds resampled with replacement).

    Resamples holding a single class are skipped. The resampled AUROCs are computed for all resamples at once
    from ranks (the identity :func:`hcitools.tl.compare_methods` uses).

    Parameters
    ----------
    predictions
        Scores, rows = compounds, columns = assays.
    labels
        1 / 0 / NaN labels of the same rows.
    n_boot
        Number of resamples.
    ci
        Coverage of the interval (e.g. 0.95).
    seed
        Seed of the resampling.

    Returns
    -------
    DataFrame per assay: ``low``, ``high``, ``n_pos``, ``n_neg`` (NaN bounds for an assay with one class).
    """
    from ..tl._compare import _resampled_auroc

    check_frame(predictions, "predictions")
    check_binary_frame(labels, "labels")
    n_boot = check_int(n_boot, "n_boot", min=10)
    ci = check_real(ci, "ci", min=0, max=1, min_inclusive=False, max_inclusive=False)
    check_int(seed, "seed", min=0)
    rng = np.random.default_rng(seed)
    rows = {}
    common = predictions.index.intersection(labels.index)
    for assay in predictions.columns:
        if assay not in labels.columns:
            continue
        y = labels.loc[common, assay].to_numpy(float)
        s = predictions.loc[common, assay].to_numpy(float)
        keep = ~(np.isnan(y) | np.isnan(s))
        y, s = y[keep], s[keep]
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        if not (n_pos and n_neg):
            rows[assay] = (np.nan, np.nan, n_pos, n_neg)
            continue
        idx = rng.integers(0, len(y), size=(n_boot, len(y)))
        yi = y[idx]
        valid = (yi.sum(1) > 0) & (yi.sum(1) < len(y))
        aucs = _resampled_auroc(yi[valid], s[idx[valid]])
        lo, hi = np.quantile(aucs, [(1 - ci) / 2, 1 - (1 - ci) / 2]) if len(aucs) else (np.nan, np.nan)
        rows[assay] = (float(lo), float(hi), n_pos, n_neg)
    return pd.DataFrame.from_dict(rows, orient="index", columns=["low", "high", "n_pos", "n_neg"])


def assay_performance(
    results: pd.DataFrame,
    *,
    metric: str = "auroc",
    methods: list[str] | None = None,
    primary_assays: list[str] | None = None,
    chance: float | None = 0.5,
    predictions: Mapping[str, pd.DataFrame] | None = None,
    labels: pd.DataFrame | None = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    ax=None,
    return_fig: bool = False,
):
    """Grouped bar chart of a metric per assay, one bar per method, with n and bootstrap intervals.

    Summary rows (``"macro mean"``, ``"primary mean"``) are not assays: they are drawn as horizontal lines in
    each method's colour (named in the legend), never as bars. Each assay's tick label carries its observed
    positives / negatives (``n_pos`` / ``n_neg`` columns, when present). With ``predictions`` and ``labels``,
    each AUROC bar gets its percentile bootstrap interval (:func:`bootstrap_auroc_intervals`). The legend sits
    outside the axes, so it covers no bar. Assays keep the order of their first appearance in ``results``.

    Parameters
    ----------
    results
        Tidy table with columns ``assay``, ``method`` and ``metric`` (e.g. ``uns["momil"]["evaluation"]`` of
        :func:`hcitools.tl.momil`, or :func:`hcitools.tl.evaluate_assays` tables stacked over methods).
    metric
        Column to plot.
    methods
        Methods to show, in this order (default: all, in order of appearance).
    primary_assays
        Assays to mark with a ``*`` in the tick labels.
    chance
        Draw a dashed grey line at this value (``None`` for none).
    predictions
        Method → scores (compounds × assays) of the methods drawn, for bootstrap intervals of the AUROC (only
        with ``metric="auroc"``); methods without predictions get no interval.
    labels
        1 / 0 / NaN labels (compounds × assays) for the bootstrap.
    n_boot, ci, seed
        Resamples, coverage and seed of the bootstrap.
    ax
        Matplotlib Axes to draw on; a new figure when ``None``.
    return_fig
        Return the Figure instead of the Axes.

    Returns
    -------
    The Axes, or the Figure when ``return_fig=True``.
    """
    import matplotlib.pyplot as plt

    results, methods = _check_results(results, metric, methods)
    check_real(chance, "chance", allow_none=True)
    check_bool(return_fig, "return_fig")
    intervals: dict[str, pd.DataFrame] = {}
    if predictions is not None or labels is not None:
        if predictions is None or labels is None:
            raise ValueError("Pass both `predictions` and `labels` for bootstrap intervals (or neither).")
        if metric != "auroc":
            raise ValueError(f"Bootstrap intervals are computed for the AUROC; `metric` is {metric!r}.")
        if not isinstance(predictions, Mapping):
            raise TypeError(
                f"`predictions` must be a dict method → scores (compounds × assays), got {type(predictions).__name__}."
            )
        unknown = [m for m in predictions if m not in methods]
        if unknown:
            raise ValueError(
                f"`predictions` names methods {_preview(unknown)} that are not drawn ({_preview(methods)})."
            )
        intervals = {
            m: bootstrap_auroc_intervals(p, labels, n_boot=n_boot, ci=ci, seed=seed)
            for m, p in predictions.items()
        }
    table, means, n_text = _split_summary(results, metric, methods)
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(table) + 2.5), 3.6))
    else:
        fig = ax.figure
    width = 0.8 / len(methods)
    x = np.arange(len(table))
    for i, m in enumerate(methods):
        values = table[m].to_numpy(dtype=float)
        yerr = None
        if m in intervals:
            iv = intervals[m].reindex(table.index)
            yerr = np.vstack([values - iv["low"].to_numpy(), iv["high"].to_numpy() - values])
            yerr = np.nan_to_num(np.clip(yerr, 0, None))
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, np.nan_to_num(values), width, yerr=yerr, capsize=2,
               label=m, color=f"C{i % 10}", error_kw={"linewidth": 0.8})  # fmt: skip
        for row, style in zip(means.index, ("--", ":", "-."), strict=False):
            if np.isfinite(means.loc[row, m]):
                ax.axhline(means.loc[row, m], color=f"C{i % 10}", linestyle=style, linewidth=1,
                           label=f"{m}: {row} {means.loc[row, m]:.2f}")  # fmt: skip
    primary = set(primary_assays or [])
    ticks = [f"{a}*" if a in primary else str(a) for a in table.index]
    if n_text is not None:
        ticks = [f"{t}\n{n}" for t, n in zip(ticks, n_text, strict=True)]
    ax.set_xticks(x, ticks, rotation=60, ha="right", fontsize="small")
    if n_text is not None:
        ax.set_xlabel("assay (n positives / negatives)", fontsize="small")
    label = metric.upper() if metric.islower() else metric
    if intervals:
        label += f" ({ci:.0%} bootstrap CI)"
    ax.set_ylabel(label)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1)
    ax.legend(frameon=False, fontsize="small", bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig if return_fig else ax


def assay_heatmap(
    results: pd.DataFrame,
    *,
    metric: str = "auroc",
    methods: list[str] | None = None,
    vmin: float | None = 0.5,
    vmax: float | None = 1.0,
    ax=None,
    return_fig: bool = False,
):
    """Heatmap of a metric per assay (rows) and method (columns), values written in the cells.

    Summary rows (``"macro mean"``, ``"primary mean"``) are not drawn as assays: their values go into the column
    labels. Row labels carry each assay's n positives / negatives when ``results`` has ``n_pos`` / ``n_neg``.

    Parameters
    ----------
    results
        Tidy table with columns ``assay``, ``method`` and ``metric`` (as :func:`assay_performance`).
    metric
        Column to plot.
    methods
        Methods (columns), in this order (default: all, in order of appearance).
    vmin, vmax
        Colour scale limits (``None``: the data's).
    ax
        Matplotlib Axes to draw on; a new figure when ``None``.
    return_fig
        Return the Figure instead of the Axes.

    Returns
    -------
    The Axes, or the Figure when ``return_fig=True``. Missing values (NaN) are blank cells marked "n/a".
    """
    import matplotlib.pyplot as plt

    results, methods = _check_results(results, metric, methods)
    check_real(vmin, "vmin", allow_none=True)
    check_real(vmax, "vmax", allow_none=True)
    check_bool(return_fig, "return_fig")
    table, means, n_text = _split_summary(results, metric, methods)
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.6 + 0.9 * len(methods), 1.0 + 0.32 * len(table)))
    else:
        fig = ax.figure
    values = table.to_numpy(dtype=float)
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    cols = []
    for m in methods:
        extra = "".join(
            f"\n{row} {means.loc[row, m]:.2f}" for row in means.index if np.isfinite(means.loc[row, m])
        )
        cols.append(f"{m}{extra}")
    ax.set_xticks(np.arange(len(methods)), cols, rotation=45, ha="right", fontsize="small")
    rows = [str(a) for a in table.index]
    if n_text is not None:
        rows = [f"{a} ({n})" for a, n in zip(rows, n_text, strict=True)]
    ax.set_yticks(np.arange(len(rows)), rows, fontsize="small")
    lo = np.nanmin(values) if vmin is None else vmin
    hi = np.nanmax(values) if vmax is None else vmax
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            text = "n/a" if not np.isfinite(v) else f"{v:.2f}"
            dark = np.isfinite(v) and v < lo + 0.5 * (hi - lo)
            ax.text(
                j, i, text, ha="center", va="center", fontsize="x-small", color="white" if dark else "black"
            )
    label = metric.upper() if metric.islower() else metric
    plt.colorbar(image, ax=ax, fraction=0.05, pad=0.02, label=label)
    if n_text is not None:
        ax.set_ylabel("assay (n positives / negatives)", fontsize="small")
    fig.tight_layout()
    return fig if return_fig else ax
