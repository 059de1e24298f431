"""Plots of per-assay performance."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._validate import _preview, check_bool, check_columns, check_frame, check_real, check_str


def assay_performance(
    results: pd.DataFrame,
    *,
    metric: str = "auroc",
    methods: list[str] | None = None,
    primary_assays: list[str] | None = None,
    chance: float | None = 0.5,
    ax=None,
    return_fig: bool = False,
):
    """Grouped bar chart of a metric per assay, one bar per method.

    Parameters
    ----------
    results
        Tidy table with columns ``assay``, ``method`` and ``metric`` (e.g. the ``"results"`` table that the
        demo and :func:`hcitools.tl.evaluate_assays` produce, stacked over methods).
    metric
        Column to plot.
    methods
        Methods to show, in this order (default: all, in order of appearance).
    primary_assays
        Assays to mark with a ``*`` in the tick labels.
    chance
        Draw a dashed line at this value (``None`` for none).
    ax
        Matplotlib Axes to draw on; a new figure when ``None``.
    return_fig
        Return the Figure instead of the Axes.

    Returns
    -------
    The Axes, or the Figure when ``return_fig=True``.
    """
    import matplotlib.pyplot as plt

    check_frame(results, "results", what="tidy: columns 'assay', 'method' and the metric")
    check_str(metric, "metric")
    check_real(chance, "chance", allow_none=True)
    check_bool(return_fig, "return_fig")
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
    table = results.pivot_table(index="assay", columns="method", values=metric, sort=False)
    table = table[methods]
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(table) + 2), 3.5))
    else:
        fig = ax.figure
    width = 0.8 / len(methods)
    x = np.arange(len(table))
    for i, m in enumerate(methods):
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, table[m].to_numpy(), width, label=m)
    primary = set(primary_assays or [])
    ax.set_xticks(x, [f"{a}*" if a in primary else str(a) for a in table.index], rotation=60, ha="right")
    ax.set_ylabel(metric.upper() if metric.islower() else metric)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1)
    ax.legend(frameon=False, fontsize="small")
    fig.tight_layout()
    return fig if return_fig else ax
