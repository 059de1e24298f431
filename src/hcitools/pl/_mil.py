"""Plots of MIL training and attention."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import HCI_KEYS
from .._validate import check_anndata, check_bool, check_obs_keys, check_str


def _new_axes(ax, figsize):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def training_history(
    model,
    *,
    keys: Sequence[str] = ("train_loss", "validation_loss"),
    metric: str = "validation_mean_auroc",
    ax=None,
    return_fig: bool = False,
):
    """Per-epoch losses and the early-stopping metric of a trained model, with the kept epoch marked.

    Parameters
    ----------
    model
        A trained model with ``history`` (e.g. :class:`hcitools.model.MoMIL`); a ``best_epoch`` attribute, when
        set, is marked with a vertical line.
    keys
        History entries drawn on the left axis (entries the history lacks are skipped).
    metric
        History entry drawn on a right axis (``None`` for none), e.g. ``"validation_auroc_<assay>"``.
    ax
        Matplotlib Axes to draw on; a new figure when ``None``.
    return_fig
        Return the Figure instead of the Axes.

    Returns
    -------
    The Axes, or the Figure when ``return_fig=True``.
    """
    if isinstance(keys, str) or not all(isinstance(k, str) for k in keys):
        raise TypeError(f"`keys` must be a list of history entry names, e.g. ['train_loss'], got {keys!r}.")
    check_str(metric, "metric", allow_none=True)
    check_bool(return_fig, "return_fig")
    history = getattr(model, "history", None)
    if not isinstance(history, dict) or not history:
        raise ValueError("`model` has no training history; train it first (`model.train()`).")
    present = [k for k in keys if k in history]
    if not present and (metric is None or metric not in history):
        raise KeyError(f"None of {[*keys, metric]} is in the history; it holds {sorted(history)}.")
    fig, ax = _new_axes(ax, (5, 3.2))
    for k in present:
        s = history[k][k].astype(float)
        ax.plot(s.index, s.to_numpy(), label=k)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    handles, labels = ax.get_legend_handles_labels()
    if metric is not None and metric in history:
        right = ax.twinx()
        s = history[metric][metric].astype(float)
        (line,) = right.plot(s.index, s.to_numpy(), color="black", label=metric)
        right.set_ylabel(metric.replace("_", " "))
        handles.append(line)
        labels.append(metric)
    best = getattr(model, "best_epoch", None)
    if best is not None:
        handles.append(ax.axvline(best, color="grey", linestyle=":", linewidth=1))
        labels.append(f"kept epoch ({best})")
    ax.legend(handles, labels, frameon=False, fontsize="small")
    fig.tight_layout()
    return fig if return_fig else ax


def attention(
    adata: AnnData,
    *,
    assay: str,
    key: str = "momil_attention",
    groupby: str,
    bag_key: str = HCI_KEYS.WELL,
    assays: Sequence[str] | None = None,
    ax=None,
    return_fig: bool = False,
):
    """Distribution of relative attention (attention × bag size; 1 = uniform) per group of instances.

    Checks what attention picks out: e.g. ``groupby="responder"`` on a simulated screen, or a cell-state
    annotation on real data. Attention is made comparable across bags of different sizes by multiplying it by
    the bag's number of instances.

    Parameters
    ----------
    adata
        Instances with attention in ``obsm[key]`` (e.g. from :func:`hcitools.tl.momil`, or an array from
        :meth:`hcitools.model.MoMIL.get_attention` stored there).
    assay
        The assay whose attention to show: a column of ``obsm[key]`` when it is a DataFrame, else a name in
        ``assays``.
    key
        obsm key of the n_obs × n_assays attention.
    groupby
        obs column that groups the instances (categorical or boolean).
    bag_key
        obs column with bags (to compute bag sizes).
    assays
        Column names of ``obsm[key]`` when it is an array (default: the columns of ``obsm["assays"]``).
    ax
        Matplotlib Axes to draw on; a new figure when ``None``.
    return_fig
        Return the Figure instead of the Axes.

    Returns
    -------
    The Axes, or the Figure when ``return_fig=True``. Instances with NaN attention (not scored) are left out.
    """
    check_anndata(adata)
    for name, value in (("assay", assay), ("key", key), ("groupby", groupby), ("bag_key", bag_key)):
        check_str(value, name)
    check_bool(return_fig, "return_fig")
    check_obs_keys(adata, {"groupby": groupby, "bag_key": bag_key})
    if key not in adata.obsm:
        raise KeyError(
            f"adata.obsm has no {key!r} (argument `key`); its keys are {sorted(adata.obsm.keys())}. Run "
            "`ht.tl.momil` or store attention there."
        )
    att = adata.obsm[key]
    if isinstance(att, pd.DataFrame):
        names = list(att.columns)
        att = att.to_numpy(dtype=float)
    else:
        if assays is None:
            assays = list(adata.obsm[HCI_KEYS.ASSAYS].columns) if HCI_KEYS.ASSAYS in adata.obsm else None
        if assays is None or len(assays) != np.shape(att)[1]:
            raise ValueError(f"Pass `assays`, the {np.shape(att)[1]} column names of adata.obsm[{key!r}].")
        names = list(assays)
        att = np.asarray(att, dtype=float)
    if assay not in names:
        raise KeyError(f"Assay {assay!r} is not among the attention columns {names} (argument `assay`).")
    bags = adata.obs[bag_key].astype(str).to_numpy()
    sizes = pd.Series(bags).map(pd.Series(bags).value_counts()).to_numpy()
    rel = att[:, names.index(assay)] * sizes
    groups = adata.obs[groupby].astype(str).to_numpy()
    keep = np.isfinite(rel)
    if not keep.any():
        raise ValueError(f"adata.obsm[{key!r}] holds no attention for {assay!r} (all NaN).")
    levels = list(pd.unique(groups[keep]))
    fig, ax = _new_axes(ax, (max(3.0, 1.0 + 0.8 * len(levels)), 3.2))
    ax.boxplot([rel[keep & (groups == g)] for g in levels], showfliers=False)
    ax.set_xticks(np.arange(1, len(levels) + 1), levels)
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel(groupby)
    ax.set_ylabel(f"attention × bag size ({assay})")
    fig.tight_layout()
    return fig if return_fig else ax
