"""Plots of M4 (002): gate weights per assay and expert, and per-assay AUROC of several methods on a radar."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from anndata import AnnData

from .._validate import _preview, check_bool, check_columns, check_str

#: Summary rows of :func:`hcitools.tl.momil`'s evaluation tables (never drawn as assays).
SUMMARY_ROWS = ("macro mean", "primary mean")


def gate_weights(
    model,
    adata: AnnData | None = None,
    *,
    cmap: str = "viridis",
    annotate: bool = True,
    ax=None,
    return_fig: bool = False,
):
    """Heatmap of the mean gate weight of every expert for every assay (M4's gates, 002 §3.3.2).

    Parameters
    ----------
    model
        A trained :class:`~hcitools.model.M4`.
    adata
        Instances whose bags are averaged (default: the model's training AnnData).
    cmap
        Matplotlib colour map.
    annotate
        Write each cell's value.
    ax
        Matplotlib Axes to draw on; a new figure when ``None``.
    return_fig
        Return the Figure instead of the Axes.

    Returns
    -------
    The Axes (rows = assays, columns = experts; weights averaged over bags and proxy segments, so each row sums
    to 1; the number of bags in the title), or the Figure when ``return_fig=True``.
    """
    import matplotlib.pyplot as plt

    check_bool(annotate, "annotate")
    check_bool(return_fig, "return_fig")
    check_str(cmap, "cmap")
    if not hasattr(model, "get_gate_weights"):
        raise TypeError(f"`model` must be an M4 model (with gate weights), got {type(model).__name__}.")
    weights = model.get_gate_weights(adata)  # n_bags × T × P × E
    mean = weights.mean(axis=(0, 2))
    n_assays, n_experts = mean.shape
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n_experts, 1.0 + 0.35 * n_assays))
    else:
        fig = ax.figure
    image = ax.imshow(mean, cmap=cmap, vmin=0, vmax=max(1.0 / n_experts, float(mean.max())), aspect="auto")
    ax.set_xticks(np.arange(n_experts), [str(e) for e in range(n_experts)])
    ax.set_yticks(np.arange(n_assays), [str(a) for a in model.assays])
    ax.set_xlabel("expert")
    ax.set_title(f"mean gate weight (n = {weights.shape[0]} bags)", fontsize="medium")
    if annotate:
        for t in range(n_assays):
            for e in range(n_experts):
                ax.text(e, t, f"{mean[t, e]:.2f}", ha="center", va="center", fontsize="x-small", color="w")
    fig.colorbar(image, ax=ax, fraction=0.05)
    return fig if return_fig else ax


def _tidy(results, metric: str) -> pd.DataFrame:
    """``results`` as a table assay × method of ``metric`` (summary rows dropped)."""
    if isinstance(results, Mapping):  # method name → evaluation table (or a ``uns[key]`` dict holding one)
        parts = []
        for name, table in results.items():
            table = table["evaluation"] if isinstance(table, Mapping) else table
            if not isinstance(table, pd.DataFrame):
                raise TypeError(
                    f"`results[{name!r}]` must be an evaluation DataFrame or a `uns[key]` dict of ht.tl.momil, got "
                    f"{type(table).__name__}."
                )
            table = table if "assay" in table.columns else table.rename_axis("assay").reset_index()
            check_columns(table, f"`results[{name!r}]`", ["assay"])
            check_columns(table, f"`results[{name!r}]`", [metric], arg="metric")
            if (
                "method" in table.columns
            ):  # a ht.tl.momil table: the model's rows, not the bag-size baseline's
                table = table[table["method"] != "bag_size"]
                if table["method"].nunique() > 1:
                    raise ValueError(
                        f"`results[{name!r}]` holds several methods ({_preview(pd.unique(table['method']))}); pass "
                        "one evaluation table per method."
                    )
            parts.append(table[["assay", metric]].assign(method=str(name)))
        results = pd.concat(parts, ignore_index=True)
    if not isinstance(results, pd.DataFrame):
        raise TypeError(
            "`results` must be a tidy DataFrame (columns 'assay', 'method' and the metric, e.g. stacked "
            "`uns[key]['evaluation']` tables of ht.tl.momil), a wide DataFrame (assays × methods) or a dict method "
            f"→ evaluation table; got {type(results).__name__}."
        )
    if "method" in results.columns:
        check_columns(results, "`results`", ["assay"])
        check_columns(results, "`results`", [metric], arg="metric")
        wide = results.pivot_table(index="assay", columns="method", values=metric, sort=False)
    else:
        wide = results
    wide = wide.loc[[a for a in wide.index if str(a) not in SUMMARY_ROWS]]
    try:
        return wide.astype(float)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`results` must hold numbers ({metric}) per assay and method: {err}") from err


def assay_radar(
    results,
    *,
    metric: str = "auroc",
    methods: list[str] | None = None,
    ax=None,
    return_fig: bool = False,
):
    """Per-assay metric of several methods on one radar chart (002 Fig. 3), with each method's mean in the legend.

    Parameters
    ----------
    results
        A tidy table with columns ``assay``, ``method`` and ``metric`` (e.g. the ``uns[key]["evaluation"]``
        tables of :func:`hcitools.tl.momil`, stacked with :func:`pandas.concat`), a dict method name → evaluation
        table (or ``uns[key]`` dict), or a wide table (rows = assays, columns = methods). The summary rows
        ``"macro mean"`` / ``"primary mean"`` are not drawn.
    metric
        Column to draw (tidy tables).
    methods
        Methods to draw, in this order (default: all, in order of appearance).
    ax
        A polar Matplotlib Axes to draw on; a new figure when ``None``.
    return_fig
        Return the Figure instead of the Axes.

    Returns
    -------
    The Axes (one spoke per assay, at least 3; legend: method, mean over its assays and the number of assays),
    or the Figure when ``return_fig=True``.
    """
    import matplotlib.pyplot as plt

    check_str(metric, "metric")
    check_bool(return_fig, "return_fig")
    wide = _tidy(results, metric)
    known = [str(m) for m in wide.columns]
    wide.columns = known
    if isinstance(methods, str):
        raise TypeError(f"`methods` must be a list of method names or None, got the string {methods!r}.")
    methods = known if methods is None else [str(m) for m in methods]
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise ValueError(
            f"`methods` must name methods of `results` ({_preview(known)}); got {_preview(unknown or methods)}."
        )
    wide = wide[methods].dropna(how="all")
    if len(wide) < 3:
        raise ValueError(f"A radar needs at least 3 assays with a {metric}; `results` has {len(wide)}.")
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 5), subplot_kw={"projection": "polar"})
    else:
        fig = ax.figure
        if getattr(ax, "name", None) != "polar":
            raise ValueError(
                "`ax` must be a polar Axes, e.g. `plt.subplots(subplot_kw={'projection': 'polar'})`."
            )
    angles = np.linspace(0, 2 * np.pi, len(wide), endpoint=False)
    closed = np.append(angles, angles[0])
    for m in methods:
        values = wide[m].to_numpy()
        n = int(np.isfinite(values).sum())
        ax.plot(
            closed,
            np.append(values, values[0]),
            marker="o",
            markersize=3,
            label=f"{m} ({np.nanmean(values):.3f}, n={n})",
        )
        ax.fill(closed, np.append(values, values[0]), alpha=0.08)
    ax.set_xticks(angles, [str(a) for a in wide.index], fontsize="small")
    ax.set_ylim(min(0.5, float(np.nanmin(wide.to_numpy())) - 0.05), 1.0)
    ax.legend(
        loc="upper left", bbox_to_anchor=(1.05, 1.0), frameon=False, fontsize="small", title=f"mean {metric}"
    )
    return fig if return_fig else ax
