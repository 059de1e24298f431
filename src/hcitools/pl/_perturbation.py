"""Plots of perturbation predictions: mean-expression regression, metrics beside baselines, ranks, dose–response."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import PERTURBATION_KEYS
from .._utils import to_dense
from .._validate import _preview, check_anndata, check_bool, check_int, check_obs_keys, check_str
from ._mil import _new_axes

#: Baselines drawn in grey beside the models (names of :func:`hcitools.tl.predict_baseline`).
_BASELINES = ("identity", "mean_shift", "scgen")
#: Metrics :func:`perturbation_metrics` draws by default (those present in the results, in this order).
_DEFAULT_METRICS = (
    "r2_all", "r2_top100", "r2_shift", "deg_jaccard", "euclidean", "edistance", "wasserstein", "wasserstein_pot",
    "mmd", "mean_pairwise",
)  # fmt: skip


def _mean_expression(name: str, adata: Any) -> np.ndarray:
    if not isinstance(adata, AnnData):
        raise TypeError(f"`{name}` must be an AnnData (cells × genes), got {type(adata).__name__}.")
    if adata.n_obs == 0:
        raise ValueError(f"`{name}` holds no cells.")
    return to_dense(adata.X, np.float64).mean(0)


def _r2(x: np.ndarray, y: np.ndarray) -> float:
    """Squared Pearson correlation (scGen's ``reg_mean_plot`` R²), NaN for a constant profile."""
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1] ** 2)


def perturbation_regression(
    pred: AnnData,
    stim: AnnData,
    *,
    ctrl: AnnData | None = None,
    genes: Sequence[str] | None = None,
    n_degs: int = 100,
    n_labels: int = 10,
    ax=None,
    return_fig: bool = False,
):
    """Predicted against real mean expression per gene (scGen's ``reg_mean_plot``), top DEGs labelled.

    Every gene is a point (x: its mean over the real perturbed cells, y: over the predicted cells); the top
    ``n_degs`` DEGs of the real perturbed cells against the controls (:func:`hcitools.tl.top_degs`, t-test, up
    and down) are coloured and the first ``n_labels`` named. The title gives R² (squared Pearson correlation of
    the means, as scGen) over all genes and over the DEGs.

    Parameters
    ----------
    pred
        Predicted perturbed cells (e.g. from :func:`hcitools.tl.mtae` or :meth:`hcitools.model.MTAe.predict`).
    stim
        Real perturbed cells (same genes, same order).
    ctrl
        Real control cells: the DEGs are ranked against them. Without ``ctrl`` (and ``genes``) no gene is
        highlighted and the title gives R² over all genes only.
    genes
        Genes to highlight and label instead of the top DEGs (in this order).
    n_degs
        Number of top DEGs highlighted (and used for the second R²).
    n_labels
        Number of highlighted genes named (0 for none).
    ax
        Matplotlib Axes to draw on; a new figure when ``None``.
    return_fig
        Return the Figure instead of the Axes.

    Returns
    -------
    The Axes, or the Figure when ``return_fig=True``. Nothing is written.
    """
    mp, ms = _mean_expression("pred", pred), _mean_expression("stim", stim)
    if not pred.var_names.equals(stim.var_names):
        raise ValueError(
            "`pred` and `stim` must have the same genes in the same order (var_names); subset them alike, e.g. "
            "`pred = pred[:, stim.var_names].copy()`."
        )
    check_int(n_degs, "n_degs", min=1)
    check_int(n_labels, "n_labels", min=0)
    check_bool(return_fig, "return_fig")
    names = list(map(str, stim.var_names))
    if genes is not None:
        if isinstance(genes, str) or not isinstance(genes, Sequence | pd.Index | np.ndarray):
            raise TypeError(
                f"`genes` must be a list of gene names, got {genes!r}; for one gene pass [{genes!r}]."
            )
        unknown = [g for g in genes if g not in set(names)]
        if unknown:
            raise KeyError(f"Genes {_preview(unknown)} (argument `genes`) are not in stim.var_names.")
        degs = list(map(str, genes))
    elif ctrl is not None:
        if not isinstance(ctrl, AnnData) or not ctrl.var_names.equals(stim.var_names):
            raise ValueError("`ctrl` must be an AnnData with the genes of `stim`, in the same order.")
        from ..tl import top_degs

        degs = top_degs(stim, ctrl, n=min(n_degs, stim.n_vars), direction="both")
    else:
        degs = []
    index = {g: i for i, g in enumerate(names)}
    idx = np.array([index[g] for g in degs], dtype=np.int64)
    fig, ax = _new_axes(ax, (4.2, 4.0))
    ax.scatter(
        ms, mp, s=6, color="lightgrey", label=f"all genes (n={len(names)})", rasterized=len(names) > 2000
    )
    title = f"R² all genes = {_r2(ms, mp):.3f}"
    if len(idx):
        ax.scatter(ms[idx], mp[idx], s=10, color="C3", label=f"top DEGs (n={len(idx)})")
        title += f"\nR² top {len(idx)} DEGs = {_r2(ms[idx], mp[idx]):.3f}"
        for g in degs[:n_labels]:
            ax.annotate(
                g, (ms[index[g]], mp[index[g]]), fontsize="x-small", xytext=(2, 2), textcoords="offset points"
            )
    lo, hi = float(min(ms.min(), mp.min())), float(max(ms.max(), mp.max()))
    ax.plot([lo, hi], [lo, hi], color="black", linestyle="--", linewidth=0.8)
    ax.set_xlabel(f"real mean expression (n={stim.n_obs} cells)")
    ax.set_ylabel(f"predicted mean expression (n={pred.n_obs} cells)")
    ax.set_title(title, fontsize="medium")
    ax.legend(frameon=False, fontsize="small", loc="upper left")
    fig.tight_layout()
    return fig if return_fig else ax


# ------------------------------------------------------------------------------------------------- metrics
def _tidy_results(results: Any) -> pd.DataFrame:
    """``results`` as a tidy table (model, metric, value, experiment columns)."""
    if isinstance(results, Mapping):
        bad = [k for k, v in results.items() if not isinstance(v, pd.Series)]
        if bad or not results:
            raise TypeError(
                "`results` as a dict must map model names to evaluate_perturbation's Series, e.g. "
                f"{{'MTAe': ht.tl.evaluate_perturbation(...)}}; got {_preview(bad or ['(empty)'])}."
            )
        return pd.DataFrame(
            [{"model": str(k), "metric": m, "value": v} for k, s in results.items() for m, v in s.items()]
        )
    if not isinstance(results, pd.DataFrame):
        raise TypeError(
            "`results` must be the tidy table of benchmark_perturbation / tl.mtae (columns model, metric, value), "
            f"a DataFrame models × metrics or a dict of Series, got {type(results).__name__}."
        )
    if results.empty:
        raise ValueError("`results` is empty; there is nothing to plot.")
    if {"model", "metric", "value"} <= set(results.columns):
        return results
    wide = results.copy()
    wide.index = wide.index.astype(str)
    wide.index.name = "model"
    return wide.reset_index().melt(id_vars="model", var_name="metric", value_name="value")


def _higher_is_better(metric: str) -> bool | None:
    from ..tl._perturbation_eval import _direction

    try:
        return _direction(metric)
    except ValueError:
        return None


def perturbation_metrics(
    results: pd.DataFrame | Mapping[str, pd.Series],
    *,
    metrics: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    ncols: int = 4,
    ax=None,
    return_fig: bool = False,
):
    """One panel per metric: bars per model (mean ± SD over experiments), the baselines in grey, the ceiling dashed.

    Parameters
    ----------
    results
        The tidy table of :func:`hcitools.tl.benchmark_perturbation` or ``uns[key]["evaluation"]`` of
        :func:`hcitools.tl.mtae` (columns ``model``, ``metric``, ``value`` and experiment columns such as
        ``cell_type`` and ``seed``); or a DataFrame models × metrics; or a dict model → Series of
        :func:`hcitools.tl.evaluate_perturbation`. Rows of the model ``"ceiling (split half)"`` are drawn as a
        dashed line, not a bar.
    metrics
        Metrics to draw, one panel each (default: those of ``r2_all``, ``r2_top100``, ``r2_shift``,
        ``deg_jaccard`` and the distances that ``results`` holds).
    models
        Models (and baselines) to draw, in this order (default: models in order of appearance, then baselines).
    ncols
        Panels per row.
    ax
        One Axes per metric (a sequence), or one Axes for one metric; a new figure when ``None``.
    return_fig
        Return the Figure instead of the Axes.

    Returns
    -------
    The array of Axes (one per metric), or the Figure when ``return_fig=True``. An undefined value (NaN, e.g.
    ``r2_shift`` of the identity baseline) has no bar and is marked "n/a". The x label gives the number of
    experiments (cell types × seeds) behind each mean.
    """
    import matplotlib.pyplot as plt

    from ..tl._perturbation_eval import CEILING

    tidy = _tidy_results(results)
    check_int(ncols, "ncols", min=1)
    check_bool(return_fig, "return_fig")
    if not pd.api.types.is_numeric_dtype(tidy["value"]):
        raise TypeError("The values of `results` must be numeric.")
    present = list(dict.fromkeys(tidy["metric"].astype(str)))
    if metrics is None:
        metrics = [m for m in _DEFAULT_METRICS if m in present] or [
            m for m in present if not m.endswith("_sd")
        ]
    else:
        if isinstance(metrics, str):
            raise TypeError(f"`metrics` must be a list of metric names, got the string {metrics!r}.")
        metrics = list(metrics)
        missing = [m for m in metrics if m not in present]
        if missing or not metrics:
            raise KeyError(
                f"Metrics {_preview(missing or ['(empty)'])} (argument `metrics`) are not in `results`; it holds "
                f"{_preview(present, 12)}."
            )
    names = list(dict.fromkeys(tidy["model"].astype(str)))
    ceiling_in = CEILING in names
    names = [n for n in names if n != CEILING]
    if models is None:
        models = [n for n in names if n not in _BASELINES] + [n for n in _BASELINES if n in names]
    else:
        if isinstance(models, str):
            raise TypeError(f"`models` must be a list of model names, got the string {models!r}.")
        models = list(models)
        unknown = [m for m in models if m not in names]
        if unknown or not models:
            raise KeyError(
                f"Models {_preview(unknown or ['(empty)'])} (argument `models`) are not in `results`; it holds "
                f"{_preview(names, 12)}."
            )
    tidy = tidy.assign(model=tidy["model"].astype(str), metric=tidy["metric"].astype(str))
    grouped = tidy.groupby(["model", "metric"])["value"]
    mean = grouped.agg(lambda v: v.mean(skipna=False)).unstack("metric")
    sd = grouped.std().unstack("metric")
    n = grouped.size().unstack("metric")
    if ax is None:
        nrows = -(-len(metrics) // ncols)
        cols = min(ncols, len(metrics))
        fig, axes = plt.subplots(nrows, cols, figsize=(2.6 * cols + 0.4, 2.8 * nrows + 0.6), squeeze=False)
        axes = axes.ravel()
        for extra in axes[len(metrics) :]:
            extra.set_visible(False)
        axes = axes[: len(metrics)]
    else:
        axes = np.atleast_1d(np.asarray(ax, dtype=object)).ravel()
        if len(axes) != len(metrics):
            raise ValueError(
                f"`ax` must hold one Axes per metric ({len(metrics)}: {_preview(metrics)}), got {len(axes)}."
            )
        fig = axes[0].figure
    colours = [f"C{i % 10}" for i in range(len(models))]
    x = np.arange(len(models))
    for a, metric in zip(axes, metrics, strict=True):
        values = mean[metric].reindex(models).to_numpy(dtype=float)
        errs = (
            sd[metric].reindex(models).to_numpy(dtype=float) if metric in sd else np.full(len(models), np.nan)
        )
        counts = n[metric].reindex(models).fillna(0).astype(int).to_numpy()
        bar_colours = ["lightgrey" if m in _BASELINES else c for m, c in zip(models, colours, strict=True)]
        a.bar(x, np.nan_to_num(values), color=bar_colours, edgecolor="black", linewidth=0.5,
              yerr=np.where(counts > 1, np.nan_to_num(errs), 0.0) if (counts > 1).any() else None, capsize=2)  # fmt: skip
        for i, v in enumerate(values):
            if not np.isfinite(v):
                a.text(i, 0, "n/a", ha="center", va="bottom", fontsize="x-small")
        if (
            ceiling_in
            and metric in mean.columns
            and CEILING in mean.index
            and np.isfinite(mean.loc[CEILING, metric])
        ):
            a.axhline(mean.loc[CEILING, metric], color="black", linestyle="--", linewidth=1, label="ceiling")
        better = _higher_is_better(metric)
        arrow = "" if better is None else (" (↑ better)" if better else " (↓ better)")
        a.set_title(metric + arrow, fontsize="medium")
        a.set_xticks(x, models, rotation=60, ha="right", fontsize="small")
        k = sorted(set(counts[counts > 0].tolist()))
        a.set_xlabel(f"n = {k[0] if len(k) == 1 else _preview(k)} experiments" + (", mean ± SD" if max(k, default=0) > 1 else ""),
                     fontsize="x-small")  # fmt: skip
    if ceiling_in:
        axes[0].legend(frameon=False, fontsize="x-small", loc="lower right")
    fig.tight_layout()
    return fig if return_fig else axes


def rank_heatmap(ranked: pd.DataFrame, *, annotate: bool = True, ax=None, return_fig: bool = False):
    """Heatmap of :func:`hcitools.tl.rank_models`' scaled per-metric scores (0 = best, 1 = worst), best model on top.

    Parameters
    ----------
    ranked
        The output of :func:`hcitools.tl.rank_models` (its ``attrs["metrics"]`` name the columns drawn).
    annotate
        Write each scaled score in its cell, and the total score and rank beside the rows.
    ax
        Matplotlib Axes to draw on; a new figure when ``None``.
    return_fig
        Return the Figure instead of the Axes.

    Returns
    -------
    The Axes, or the Figure when ``return_fig=True``. The title says whether the winner stays the winner when
    any one metric is left out (``attrs["winner_stable"]``).
    """
    import matplotlib.pyplot as plt

    if not isinstance(ranked, pd.DataFrame) or "score" not in ranked.columns:
        raise TypeError(
            "`ranked` must be the DataFrame of ht.tl.rank_models (with a `score` column), got "
            f"{type(ranked).__name__}."
        )
    check_bool(annotate, "annotate")
    check_bool(return_fig, "return_fig")
    metrics = list(ranked.attrs.get("metrics") or [])
    if not metrics:
        metrics = [c for c in ranked.columns if c not in ("score", "rank", "rank_average", "rank_by_average")]
    table = ranked.sort_values("score", kind="stable")[metrics].astype(float)
    fig, ax = _new_axes(ax, (1.0 + 0.6 * len(metrics) + 1.2, 0.9 + 0.35 * len(table)))
    image = ax.imshow(table.to_numpy(), cmap="viridis_r", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(np.arange(len(metrics)), metrics, rotation=60, ha="right", fontsize="small")
    labels = [
        f"{m}  ({ranked.loc[m, 'score']:.2f}, #{int(ranked.loc[m, 'rank'])})" if annotate else str(m)
        for m in table.index
    ]
    ax.set_yticks(np.arange(len(table)), labels, fontsize="small")
    if annotate:
        for i in range(table.shape[0]):
            for j in range(table.shape[1]):
                v = table.iat[i, j]
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize="xx-small",
                        color="white" if v > 0.5 else "black")  # fmt: skip
    stable = ranked.attrs.get("winner_stable")
    title = "scaled score per metric (0 = best)"
    if stable is not None:
        title += f"\nwinner stable leaving one metric out: {'yes' if stable else 'no'}"
    ax.set_title(title, fontsize="medium")
    plt.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    fig.tight_layout()
    return fig if return_fig else ax


# ------------------------------------------------------------------------------------------------- doses
def _dose_means(adata: AnnData, idx: np.ndarray, doses: np.ndarray, control: np.ndarray):
    X = to_dense(adata.X[:, idx], np.float64)
    base = X[control].mean(0)
    levels = np.unique(doses[~control])
    mean = np.stack([X[(doses == d) & ~control].mean(0) - base for d in levels])
    sem = np.stack(
        [
            X[(doses == d) & ~control].std(0, ddof=1) / np.sqrt(max(1, ((doses == d) & ~control).sum()))
            for d in levels
        ]
    )
    counts = np.array([int(((doses == d) & ~control).sum()) for d in levels])
    return levels, mean, np.nan_to_num(sem), counts


def dose_response(
    adata: AnnData,
    *,
    genes: Sequence[str] | None = None,
    n_genes: int = 6,
    dose_key: str = "dose",
    condition_key: str = PERTURBATION_KEYS.CONDITION,
    control_value: Any = PERTURBATION_KEYS.CONTROL_VALUE,
    cell_type_key: str = PERTURBATION_KEYS.CELL_TYPE,
    cell_type: Any = None,
    pred: AnnData | None = None,
    ax=None,
    return_fig: bool = False,
):
    """Mean change from the controls of responding genes at each dose (mean ± SEM), optionally with predictions.

    Parameters
    ----------
    adata
        Cells × genes (log-normalised) with doses in ``obs[dose_key]`` (numbers; controls are the cells with
        ``obs[condition_key] == control_value``), e.g. :func:`hcitools.datasets.synthetic_perturbation`.
    genes
        Genes to draw (default: the ``n_genes`` top DEGs, up or down, of the highest dose against the controls,
        :func:`hcitools.tl.top_degs`).
    n_genes
        Number of genes drawn when ``genes`` is None.
    dose_key, condition_key, control_value, cell_type_key
        obs columns and the control value.
    cell_type
        Only this cell type's cells (default: all cells, pooled; pass one cell type when cell types respond
        differently).
    pred
        Predicted cells with the same genes, ``obs[dose_key]`` and ``obs[cell_type_key]`` (e.g. MTAe's
        predictions at each dose): drawn dashed, as the change from the real controls.
    ax
        Matplotlib Axes to draw on; a new figure when ``None``.
    return_fig
        Return the Figure instead of the Axes.

    Returns
    -------
    The Axes, or the Figure when ``return_fig=True``; the x tick labels give the number of cells per dose.
    Nothing is written.
    """
    check_anndata(adata)
    for name, value in (
        ("dose_key", dose_key),
        ("condition_key", condition_key),
        ("cell_type_key", cell_type_key),
    ):
        check_str(value, name)
    check_int(n_genes, "n_genes", min=1)
    check_bool(return_fig, "return_fig")
    check_obs_keys(
        adata, {"dose_key": dose_key, "condition_key": condition_key, "cell_type_key": cell_type_key}
    )
    if not pd.api.types.is_numeric_dtype(adata.obs[dose_key]):
        raise TypeError(f"adata.obs[{dose_key!r}] (argument `dose_key`) must hold numeric doses, got dtype "
                        f"{adata.obs[dose_key].dtype}.")  # fmt: skip
    if cell_type is not None:
        keep = (adata.obs[cell_type_key] == cell_type).to_numpy()
        if not keep.any():
            raise ValueError(f"`cell_type` {cell_type!r} is not in adata.obs[{cell_type_key!r}] "
                             f"({_preview(pd.unique(adata.obs[cell_type_key]))}).")  # fmt: skip
        adata = adata[keep]
    control = (adata.obs[condition_key] == control_value).to_numpy()
    doses = adata.obs[dose_key].to_numpy(dtype=float)
    if not control.any() or len(np.unique(doses[~control])) < 2:
        raise ValueError(
            f"dose_response needs control cells (adata.obs[{condition_key!r}] == {control_value!r}) and at least two "
            f"doses in adata.obs[{dose_key!r}]; found {int(control.sum())} controls and doses "
            f"{_preview(np.unique(doses[~control]))}."
        )
    names = list(map(str, adata.var_names))
    if genes is None:
        from ..tl import top_degs

        top = np.unique(doses[~control]).max()
        genes = top_degs(adata[(doses == top) & ~control], adata[control], n=min(n_genes, adata.n_vars),
                         direction="both")  # fmt: skip
    else:
        if isinstance(genes, str):
            raise TypeError(
                f"`genes` must be a list of gene names, got the string {genes!r}; pass [{genes!r}]."
            )
        unknown = [g for g in genes if g not in set(names)]
        if unknown or not len(genes):
            raise KeyError(
                f"Genes {_preview(unknown or ['(empty)'])} (argument `genes`) are not in adata.var_names."
            )
    idx = np.array([names.index(g) for g in genes], dtype=np.int64)
    levels, mean, sem, counts = _dose_means(adata, idx, doses, control)
    fig, ax = _new_axes(ax, (4.6, 3.4))
    for j, g in enumerate(genes):
        ax.errorbar(
            levels, mean[:, j], yerr=sem[:, j], marker="o", color=f"C{j % 10}", capsize=2, label=str(g)
        )
    if pred is not None:
        check_anndata(pred, "pred")
        if not pred.var_names.equals(adata.var_names):
            raise ValueError("`pred` must have the genes of `adata`, in the same order (var_names).")
        check_obs_keys(pred, {"dose_key": dose_key})
        if cell_type is not None:
            check_obs_keys(pred, {"cell_type_key": cell_type_key})
            pred = pred[(pred.obs[cell_type_key] == cell_type).to_numpy()]
        X = to_dense(pred.X[:, idx], np.float64)
        base = to_dense(adata.X[:, idx], np.float64)[control].mean(0)
        pd_doses = pred.obs[dose_key].to_numpy(dtype=float)
        plevels = np.unique(pd_doses[pd_doses > 0])
        pmean = np.stack([X[pd_doses == d].mean(0) - base for d in plevels]) if len(plevels) else None
        if pmean is not None:
            for j in range(len(genes)):
                ax.plot(plevels, pmean[:, j], linestyle="--", marker="x", color=f"C{j % 10}")
            ax.plot([], [], linestyle="--", marker="x", color="grey", label="predicted")
    if (levels > 0).all():
        ax.set_xscale("log")
    ax.set_xticks(levels, [f"{d:g}\n(n={c})" for d, c in zip(levels, counts, strict=True)], fontsize="small")
    ax.minorticks_off()
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel(dose_key)
    ax.set_ylabel(f"mean change from control (n={int(control.sum())})")
    if cell_type is not None:
        ax.set_title(str(cell_type), fontsize="medium")
    ax.legend(frameon=False, fontsize="x-small", bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig if return_fig else ax
