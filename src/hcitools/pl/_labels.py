"""Plots of label imputation and assay selection."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._validate import _preview, check_bool, check_columns


def _table(data, key: str, default_key: str, what: str) -> pd.DataFrame:
    """The table of an AnnData's ``uns[key]`` (``"table"``, or ``"imputation"`` of ``ht.tl.momil``) or a
    DataFrame given directly."""
    if isinstance(data, pd.DataFrame):
        return data
    from anndata import AnnData

    if not isinstance(data, AnnData):
        raise TypeError(f"`data` must be an AnnData or a DataFrame ({what}), got {type(data).__name__}.")
    key = key or default_key
    if key not in data.uns:
        raise KeyError(f"adata.uns has no {key!r} (argument `key`); run the tool first.")
    entry = data.uns[key]
    for name in ("imputation", "table"):
        if isinstance(entry, dict) and name in entry:
            return pd.DataFrame(entry[name])
    raise ValueError(f"adata.uns[{key!r}] holds no 'table' or 'imputation' ({what}).")


def imputation(data, *, key: str | None = None, ax=None, return_fig: bool = False):
    """Thresholds and labels added per assay and round of a conformal imputation.

    Two panels: the positive and negative thresholds of each assay (points, one per round; averaged over
    cross-validation folds, bars = their range), and the labels added (stacked positive / negative) per assay
    and round, with the accuracy against the truth printed above the bars when known.

    Parameters
    ----------
    data
        An AnnData after :func:`hcitools.tl.impute_labels` (``uns[key]["table"]``, default key
        ``"assays_imputed"``) or :func:`hcitools.tl.momil` with ``impute`` (``uns[key]["imputation"]``), or the
        table itself.
    key
        uns key.
    ax
        Not supported (the figure has two panels): must be None.
    return_fig
        Return the Figure instead of the Axes.

    Returns
    -------
    The two Axes, or the Figure when ``return_fig=True``.
    """
    import matplotlib.pyplot as plt

    check_bool(return_fig, "return_fig")
    if ax is not None:
        raise ValueError("`imputation` draws two panels: pass `ax=None`.")
    table = _table(data, key, "assays_imputed", "an imputation table")
    check_columns(
        table, "the imputation table", ["round", "assay", "th_pos", "th_neg", "n_added_pos", "n_added_neg"]
    )
    if table.empty:
        raise ValueError("The imputation table is empty; there is nothing to plot.")
    assays = list(pd.unique(table["assay"]))
    rounds = sorted(pd.unique(table["round"]))
    agg = {"th_pos": ["mean", "min", "max"], "th_neg": ["mean", "min", "max"], "n_added_pos": "sum",
           "n_added_neg": "sum"}  # fmt: skip
    has_truth = "n_correct_added" in table
    if has_truth:
        agg["n_correct_added"] = "sum"
    g = table.groupby(["assay", "round"], sort=False).agg(agg)
    fig, (ax_th, ax_n) = plt.subplots(
        2, 1, figsize=(max(5, 0.9 * len(assays) * len(rounds) + 2), 6), sharex=True
    )
    x = np.arange(len(assays))
    width = 0.8 / len(rounds)
    for i, r in enumerate(rounds):
        xs = x - 0.4 + width * (i + 0.5)
        part = g.xs(r, level="round").reindex(assays)
        for col, marker in (("th_pos", "^"), ("th_neg", "v")):
            mean, lo, hi = part[(col, "mean")], part[(col, "min")], part[(col, "max")]
            ax_th.errorbar(xs, mean, yerr=[mean - lo, hi - mean], fmt=marker, color=f"C{i}", capsize=2,
                           label=f"round {r}: {'positive' if col == 'th_pos' else 'negative'}")  # fmt: skip
        pos, neg = part[("n_added_pos", "sum")].fillna(0), part[("n_added_neg", "sum")].fillna(0)
        ax_n.bar(xs, pos, width, color=f"C{i}", label=f"round {r}: positive")
        ax_n.bar(xs, neg, width, bottom=pos, color=f"C{i}", alpha=0.45, label=f"round {r}: negative")
        if has_truth:
            n = pos + neg
            for xi, ni, ci in zip(xs, n, part[("n_correct_added", "sum")].fillna(0), strict=True):
                if ni > 0:
                    ax_n.text(xi, ni, f"{ci / ni:.0%}", ha="center", va="bottom", fontsize=7)
    ax_th.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax_th.set_ylim(0, 1)
    ax_th.set_ylabel("threshold (probability)")
    ax_th.legend(fontsize=7, ncol=2, frameon=False)
    ax_n.set_ylabel("labels added" + (" (% true above)" if has_truth else ""))
    ax_n.set_xticks(x, assays, rotation=45, ha="right")
    ax_n.legend(fontsize=7, ncol=2, frameon=False)
    fig.tight_layout()
    return fig if return_fig else (ax_th, ax_n)


def assay_selection(data, *, key: str = "select_assays", ax=None, return_fig: bool = False):
    """The step table of :func:`hcitools.tl.select_assays` as a figure: one row per secondary assay, its single-assay
    validation AUROC and its influence on each primary relative to the primary's self-influence, coloured by
    the step at which it was dropped (or kept).

    Parameters
    ----------
    data
        An AnnData after :func:`hcitools.tl.select_assays` (``uns[key]``), or its ``table``.
    key
        uns key.
    ax
        Matplotlib Axes to draw on; a new figure when None.
    return_fig
        Return the Figure instead of the Axes.

    Returns
    -------
    The Axes, or the Figure when ``return_fig=True``.
    """
    import matplotlib.pyplot as plt

    check_bool(return_fig, "return_fig")
    self_inf = None
    if not isinstance(data, pd.DataFrame) and key in getattr(data, "uns", {}):
        self_inf = data.uns[key].get("self_influence")
    table = _table(data, key, "select_assays", "a select_assays table")
    check_columns(
        table, "the select_assays table", ["assay", "validation_auroc", "similar", "performant", "kept"]
    )
    if table.empty:
        raise ValueError("The select_assays table is empty (no secondary assay); there is nothing to plot.")
    inf_cols = [c for c in table.columns if c.startswith("influence_")]
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 0.35 * len(table) + 1.5))
    else:
        fig = ax.figure
    y = np.arange(len(table))[::-1]
    step = np.where(~table["similar"].astype(bool), "dropped: similarity",
                    np.where(~table["performant"].astype(bool), "dropped: performance",
                             np.where(table["kept"].astype(bool), "kept", "dropped: influence")))  # fmt: skip
    colours = {
        "dropped: similarity": "lightgrey",
        "dropped: performance": "C1",
        "dropped: influence": "C3",
        "kept": "C2",
    }
    for name, colour in colours.items():
        m = step == name
        if m.any():
            ax.barh(
                y[m], table["validation_auroc"].fillna(0).to_numpy()[m], color=colour, label=name, height=0.6
            )
    for j, col in enumerate(inf_cols):
        rel = table[col].to_numpy(dtype=float)
        if self_inf is not None and col[len("influence_") :] in self_inf:
            rel = rel / float(self_inf[col[len("influence_") :]])
        ax.scatter(rel, y, marker="D", s=18, color=f"C{4 + j}", zorder=3,
                   label=f"influence on {col[len('influence_'):]}" + (" / self" if self_inf is not None else ""))  # fmt: skip
    params = data.uns[key].get("params", {}) if self_inf is not None else {}
    if "th_perf" in params:
        ax.axvline(params["th_perf"], color="C1", ls="--", lw=0.8)
        ax.axvline(params["th_inf"], color="C3", ls=":", lw=0.8)
    ax.set_yticks(y, table["assay"].astype(str))
    ax.set_xlabel("single-assay validation AUROC (bars); relative influence (diamonds)")
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    if len(inf_cols) == 0:
        ax.set_title(f"no primary influence columns in {_preview(table.columns, 3)}", fontsize=8)
    return fig if return_fig else ax
