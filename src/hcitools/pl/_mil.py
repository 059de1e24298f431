"""Plots of MIL training (losses, task weights) and attention."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import HCI_KEYS, MODULE_KEYS
from .._validate import _preview, check_anndata, check_bool, check_int, check_obs_keys, check_str


def _new_axes(ax, figsize):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def _history(model) -> dict:
    history = getattr(model, "history", None)
    if not isinstance(history, dict) or not history:
        raise ValueError("`model` has no training history; train it first (`model.train()`).")
    return history


def _series(history: dict, key: str) -> pd.Series:
    """One history entry as a float Series indexed by epoch (scvi-tools keeps a one-column DataFrame per key)."""
    entry = history[key]
    return (entry[key] if isinstance(entry, pd.DataFrame) else pd.Series(entry)).astype(float)


def training_history(
    model,
    *,
    keys: Sequence[str] = ("train_loss", "validation_loss"),
    metric: str = "validation_mean_auroc",
    terms: Sequence[str] = (MODULE_KEYS.PRIOR_LOSS, MODULE_KEYS.ADVERSARIAL_LOSS),
    ax=None,
    return_fig: bool = False,
):
    """Per-epoch losses and the early-stopping metric of a trained model, with the kept epoch marked.

    The terms added to the loss outside the task weighting (the task-prior loss, the adversarial branch's
    domain cross-entropy) are drawn dashed when the history holds them.

    Parameters
    ----------
    model
        A trained model with ``history`` (e.g. :class:`hcitools.model.MoMIL`); a ``best_epoch`` attribute, when
        set, is marked with a vertical line.
    keys
        History entries drawn on the left axis (entries the history lacks are skipped).
    metric
        History entry drawn on a right axis (``None`` for none), e.g. ``"validation_auroc_<assay>"``.
    terms
        History entries of the training-only loss terms, drawn dashed on the left axis when present (default
        ``prior_loss`` and ``adversarial_loss``; ``()`` for none). The adversarial loss is the domain
        classifier's cross-entropy; it rises as the shared representation forgets the batch.
    ax
        Matplotlib Axes to draw on; a new figure when ``None``.
    return_fig
        Return the Figure instead of the Axes.

    Returns
    -------
    The Axes, or the Figure when ``return_fig=True``.
    """
    for name, value in (("keys", keys), ("terms", terms)):
        if isinstance(value, str) or not all(isinstance(k, str) for k in value):
            raise TypeError(
                f"`{name}` must be a list of history entry names, e.g. ['train_loss'], got {value!r}."
            )
    check_str(metric, "metric", allow_none=True)
    check_bool(return_fig, "return_fig")
    history = _history(model)
    present = [k for k in keys if k in history]
    extra = [k for k in terms if k in history and k not in present]
    if not present and (metric is None or metric not in history):
        raise KeyError(f"None of {[*keys, metric]} is in the history; it holds {sorted(history)}.")
    fig, ax = _new_axes(ax, (5, 3.2))
    for k in present:
        s = _series(history, k)
        ax.plot(s.index, s.to_numpy(), label=k)
    for k in extra:
        s = _series(history, k)
        ax.plot(s.index, s.to_numpy(), linestyle="--", label=f"{k} (training)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    handles, labels = ax.get_legend_handles_labels()
    if metric is not None and metric in history:
        right = ax.twinx()
        s = _series(history, metric)
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


def _attention_column(adata: AnnData, *, assay: str, key: str, assays: Sequence[str] | None) -> np.ndarray:
    """One assay's attention (n_obs floats) from ``obsm[key]`` (a DataFrame, or an array named by ``assays``)."""
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
    return att[:, names.index(assay)]


def _relative_attention(adata: AnnData, att: np.ndarray, bag_key: str) -> np.ndarray:
    """Attention × bag size (1 = uniform attention within the bag)."""
    bags = adata.obs[bag_key].astype(str).to_numpy()
    return att * pd.Series(bags).map(pd.Series(bags).value_counts()).to_numpy()


def attention(
    adata: AnnData,
    *,
    assay: str,
    key: str = "momil_attention",
    groupby: str,
    bag_key: str = HCI_KEYS.WELL,
    assays: Sequence[str] | None = None,
    bins: int | None = None,
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
        obs column that groups the instances: categorical, boolean, string or integer with at most
        ``MAX_GROUPS`` (12) values. Boxes follow the column's category order (sorted values otherwise), the
        same in every run. A numeric column with more values (e.g. a float score) raises unless ``bins`` is given.
    bag_key
        obs column with bags (to compute bag sizes).
    assays
        Column names of ``obsm[key]`` when it is an array (default: the columns of ``obsm["assays"]``).
    bins
        Bin a numeric ``groupby`` into this many quantile bins (:func:`pandas.qcut`) first.
    ax
        Matplotlib Axes to draw on; a new figure when ``None``.
    return_fig
        Return the Figure instead of the Axes.

    Returns
    -------
    The Axes, or the Figure when ``return_fig=True``. Each tick label gives the number of instances in its
    box. Instances with NaN attention (not scored), or a missing group, are left out.
    """
    check_anndata(adata)
    for name, value in (("assay", assay), ("key", key), ("groupby", groupby), ("bag_key", bag_key)):
        check_str(value, name)
    check_bool(return_fig, "return_fig")
    check_obs_keys(adata, {"groupby": groupby, "bag_key": bag_key})
    att = _attention_column(adata, assay=assay, key=key, assays=assays)
    rel = _relative_attention(adata, att, bag_key)
    groups, levels = _groups(adata.obs[groupby], groupby, bins)
    keep = np.isfinite(rel) & (groups >= 0)
    if not keep.any():
        raise ValueError(f"adata.obsm[{key!r}] holds no attention for {assay!r} (all NaN).")
    present = [i for i in range(len(levels)) if (keep & (groups == i)).any()]
    fig, ax = _new_axes(ax, (max(3.0, 1.0 + 0.8 * len(present)), 3.2))
    ax.boxplot([rel[keep & (groups == i)] for i in present], showfliers=False)
    ax.set_xticks(
        np.arange(1, len(present) + 1),
        [f"{levels[i]}\n(n={int((keep & (groups == i)).sum())})" for i in present],
    )
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel(groupby)
    ax.set_ylabel(f"attention × bag size ({assay})")
    fig.tight_layout()
    return fig if return_fig else ax


#: Most groups :func:`attention` draws from an unbinned numeric column.
MAX_GROUPS = 12


def _groups(column: pd.Series, name: str, bins: int | None) -> tuple[np.ndarray, list[str]]:
    """Group codes (−1 for missing) and labels of ``column`` in a stable order: the category order of a
    categorical, sorted values otherwise; a numeric column binned into ``bins`` quantile bins."""
    bins = check_int(bins, "bins", min=2, allow_none=True)
    if bins is not None:
        if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            raise TypeError(f"`bins` bins a numeric `groupby`; adata.obs[{name!r}] has dtype {column.dtype}.")
        column = pd.qcut(column, bins, duplicates="drop")
    elif (
        pd.api.types.is_numeric_dtype(column)
        and not pd.api.types.is_bool_dtype(column)
        and column.nunique() > MAX_GROUPS
    ):
        raise ValueError(
            f"adata.obs[{name!r}] (argument `groupby`) is numeric with {column.nunique()} distinct values: one box "
            f"each would draw {column.nunique()} boxes. Pass `bins=5` to bin it into quantiles, or group by a "
            "categorical column."
        )
    cat = column if isinstance(column.dtype, pd.CategoricalDtype) else column.astype("category")
    if not isinstance(column.dtype, pd.CategoricalDtype) and cat.nunique() > MAX_GROUPS * 5:
        raise ValueError(
            f"adata.obs[{name!r}] (argument `groupby`) has {cat.nunique()} distinct values; group by a column with "
            "few categories."
        )
    return cat.cat.codes.to_numpy(), [str(c) for c in cat.cat.categories]


_WEIGHT_PREFIX = "task_weight_"


def task_weights(
    model,
    *,
    assays: Sequence[str] | None = None,
    ax=None,
    return_fig: bool = False,
):
    """Per-epoch task weights of a trained model, one line per assay, the primary assays highlighted.

    The weights are those the task-weighting strategy (``model.train(weighting=...)``) gave each assay,
    averaged over the epoch's training batches in which the assay had an observed label (an assay absent from a
    batch gets no weight there). Primary assays (``model.primary_assays``) are drawn in colour and named in the
    legend (every assay, when the model has no primary assays); the other assays in thin grey (one legend entry,
    with their number); auxiliary concepts (``aux_<key>``) in dashed grey.

    Parameters
    ----------
    model
        A trained model whose ``history`` holds ``task_weight_<assay>`` (e.g. :class:`hcitools.model.MoMIL`).
    assays
        Assays (or ``aux_<key>`` concepts) to draw, in this order; default: every task with weights in the
        history (the model's assays in their order, then auxiliary concepts).
    ax
        Matplotlib Axes to draw on; a new figure when ``None``.
    return_fig
        Return the Figure instead of the Axes.

    Returns
    -------
    The Axes, or the Figure when ``return_fig=True``. Epochs at which an assay had no label at all (NaN
    weight) are gaps in its line.
    """
    check_bool(return_fig, "return_fig")
    history = _history(model)
    logged = [k[len(_WEIGHT_PREFIX) :] for k in history if k.startswith(_WEIGHT_PREFIX)]
    if not logged:
        raise KeyError(
            f"The history holds no task weights ({_WEIGHT_PREFIX}<assay>); it holds {_preview(sorted(history), 8)}. "
            "Train the model again with this version of hcitools."
        )
    if assays is None:
        model_assays = [str(a) for a in (getattr(model, "assays", None) or [])]
        assays = [a for a in model_assays if a in logged] + [a for a in logged if a not in model_assays]
    else:
        if isinstance(assays, str) or not all(isinstance(a, str) for a in assays):
            raise TypeError(f"`assays` must be a list of assay names, e.g. ['assay_01'], got {assays!r}.")
        assays = list(dict.fromkeys(assays))
        missing = [a for a in assays if a not in logged]
        if missing:
            raise KeyError(
                f"The history has no task weights of {_preview(missing)} (argument `assays`); it has weights of "
                f"{_preview(logged, 8)}."
            )
        if not assays:
            raise ValueError("`assays` is empty; pass assay names or None for all.")
    primary_assays = getattr(model, "primary_assays", None)
    # no primary assays designated: every assay is a target, every one drawn in colour
    primary = (
        {a for a in assays if not a.startswith("aux_")} if primary_assays is None else set(primary_assays)
    )
    import matplotlib as mpl

    colours = mpl.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    fig, ax = _new_axes(ax, (5, 3.2))
    handles, labels, n_other, i_primary = [], [], 0, 0
    other_handle = None
    for a in assays:
        s = _series(history, f"{_WEIGHT_PREFIX}{a}")
        if a in primary:
            (line,) = ax.plot(
                s.index, s.to_numpy(), color=colours[i_primary % len(colours)], linewidth=2.2, zorder=3
            )
            i_primary += 1
            handles.append(line)
            labels.append(a)
        elif a.startswith("aux_"):
            (line,) = ax.plot(s.index, s.to_numpy(), color="grey", linestyle="--", linewidth=1.2, zorder=2)
            handles.append(line)
            labels.append(a)
        else:
            (line,) = ax.plot(s.index, s.to_numpy(), color="lightgrey", linewidth=1.0, zorder=1)
            n_other += 1
            other_handle = line
    if other_handle is not None:
        handles.append(other_handle)
        labels.append(f"other assays (n={n_other})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("task weight")
    ax.set_title(f"task weights of {len(assays)} tasks ({i_primary} primary)", fontsize="medium")
    ax.legend(handles, labels, frameon=False, fontsize="small")
    fig.tight_layout()
    return fig if return_fig else ax
