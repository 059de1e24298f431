"""Aggregation of instances to wells or compounds."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy.stats import rankdata

from .._constants import HCI_KEYS
from .._utils import logger, to_dense, warn
from .._validate import (
    _preview,
    check_anndata,
    check_choice,
    check_labels,
    check_obs_keys,
    check_str,
    get_rep,
)

_HOWS = ("mean", "median", "modz")


def check_one_row_per_well(adata: AnnData, bag_key: str | None, *, function: str) -> None:
    """Raise if a well of ``obs[bag_key]`` has several rows: crop- or cell-level data given to a well-level tool.

    ``bag_key=None`` skips the check. The message names the fix (:func:`aggregate`).
    """
    if bag_key is None:
        return
    check_obs_keys(adata, {"bag_key": bag_key})
    counts = adata.obs[bag_key].astype(str).value_counts()
    multi = counts[counts.to_numpy() > 1]
    if len(multi):
        raise ValueError(
            f"`{function}` is defined on wells (one row per well), but {len(multi)} wells of "
            f"adata.obs[{bag_key!r}] (argument `bag_key`) hold several rows (e.g. {_preview(multi.index, 3)}, "
            f"up to {int(multi.max())} rows): this looks like crop- or cell-level data. Aggregate it first: "
            f"`wells = ht.pp.aggregate(adata, by={bag_key!r})`. If these ids are well positions that repeat on each "
            "plate, build plate-qualified ids with `ht.pp.make_bag_key`; `bag_key=None` skips this check."
        )


def _warn_wells_across_plates(adata: AnnData, by: str, plate_key: str | None) -> None:
    """Warn when ``by`` names wells (``"well…"``) and one of its ids occurs on several plates: wells pooled."""
    if plate_key is None or plate_key == by or plate_key not in adata.obs.columns or "well" not in by.lower():
        return
    pairs = pd.DataFrame(
        {"g": adata.obs[by].to_numpy(), "p": adata.obs[plate_key].to_numpy()}
    ).drop_duplicates()
    pooled = pd.unique(pairs["g"][pairs["g"].duplicated()])
    if len(pooled):
        warn(
            f"aggregate(by={by!r}) pools wells of different plates: {len(pooled)} ids of adata.obs[{by!r}] occur on "
            f"several plates of adata.obs[{plate_key!r}] (e.g. {_preview(pooled, 3)}), so each group mixes "
            f"unrelated wells. Aggregate by plate-qualified well ids: `by={HCI_KEYS.WELL!r}`, built by "
            f"`ht.pp.make_bag_key(adata, plate_key={plate_key!r}, well_key={by!r})`. Pass `plate_key=None` if "
            "pooling across plates is intended.",
            UserWarning,
        )


def _constant_columns(obs: pd.DataFrame, by: str) -> pd.DataFrame:
    """obs columns that take one value (NaN counted as a value) within every group, one row per group."""
    obs = obs.reset_index(drop=True)  # an index named like a column would make `by` ambiguous
    grouped = obs.groupby(by, observed=True, sort=False)
    nun = grouped.nunique(dropna=False)
    keep = [c for c in nun.columns if (nun[c] <= 1).all()]
    first = grouped[keep].first() if keep else pd.DataFrame(index=nun.index)
    for c in keep:
        if isinstance(obs[c].dtype, pd.CategoricalDtype):
            first[c] = pd.Categorical(first[c], categories=obs[c].cat.categories).remove_unused_categories()
    return first


def _modz(X: np.ndarray, codes: np.ndarray, n_groups: int, min_weight: float = 0.01) -> np.ndarray:
    """Moderated z-score (modz) consensus per group, as in cmapPy / pycytominer.

    Replicates are weighted by the sum of their Spearman correlations with the other replicates of the group
    (weights clipped below at ``min_weight``, then normalised). Written here because pycytominer is not a
    dependency and its modz works on DataFrames one group at a time.
    """
    out = np.empty((n_groups, X.shape[1]))
    for g in range(n_groups):
        rows = X[codes == g]
        if len(rows) < 3:  # with one or two replicates all weights are equal
            out[g] = rows.mean(axis=0)
            continue
        ranks = rankdata(rows, axis=1)
        corr = np.corrcoef(ranks)
        np.fill_diagonal(corr, 0.0)
        w = np.clip(corr.sum(axis=1) / (len(rows) - 1), min_weight, None)
        out[g] = (w / w.sum()) @ rows
    return out


def aggregate(
    adata: AnnData,
    *,
    by: str = HCI_KEYS.WELL,
    how: Literal["mean", "median", "modz"] = "mean",
    rep_key: str | None = None,
    labels_key: str | None = HCI_KEYS.ASSAYS,
    plate_key: str | None = HCI_KEYS.PLATE,
) -> AnnData:
    """Aggregate instances (crops, cells) to groups such as wells or compounds.

    Mean and median use :func:`scanpy.get.aggregate`; ``"modz"`` is the moderated z-score consensus of
    replicates (weights from Spearman correlations between a group's rows), used to build compound profiles
    from well profiles.

    Parameters
    ----------
    adata
        One row per instance (or per well, to aggregate wells to compounds).
    by
        obs column defining the groups (``"well"``, ``"compound"``, …).
    how
        ``"mean"``, ``"median"`` or ``"modz"``.
    rep_key
        obsm key of the features; ``None`` uses ``X``.
    labels_key
        obsm key of assay labels to carry over (taken per group when constant within every group;
        dropped with a log message otherwise); ``None`` skips. The default ``"assays"`` is carried over when
        present; a key passed explicitly must exist (a KeyError names it otherwise).
    plate_key
        obs column with plate ids, used only to warn when ``by`` names wells (e.g. ``"well_position"``) whose
        ids repeat across plates, so that one group would pool wells of different plates; ``None`` (or a
        missing column) skips the check.

    Returns
    -------
    A new AnnData with one row per group (index = group id, in order of first appearance):

    - ``X``: aggregated features (float32); ``var`` is kept when the features were ``X``;
    - ``obs``: ``by``, ``n_instances`` (rows aggregated into the group), and every obs column that is constant within each group;
    - ``obsm[labels_key]``: the labels, when constant within groups;
    - ``uns["aggregate"]``: ``by``, ``how``, ``rep_key`` and the mapping back to instances
      (``instance_obs_names`` and their ``instance_group``).

    Examples
    --------
    >>> import hcitools as ht
    >>> adata = ht.datasets.synthetic_hci(n_compounds=20, seed=0)
    >>> wells = ht.pp.aggregate(adata, by="well")
    >>> int(wells.obs["n_instances"].iloc[0])
    8
    """
    check_anndata(adata)
    check_str(by, "by")
    check_str(labels_key, "labels_key", allow_none=True)
    check_str(plate_key, "plate_key", allow_none=True)
    check_obs_keys(adata, {"by": by})
    check_choice(how, "how", _HOWS)
    X = get_rep(adata, rep_key=rep_key)
    if labels_key is not None and labels_key not in adata.obsm and labels_key != HCI_KEYS.ASSAYS:
        raise KeyError(
            f"adata.obsm has no key {labels_key!r} (argument `labels_key`). Available keys: "
            f"{_preview(adata.obsm.keys(), 12)}. Pass the obsm key of the labels, or `labels_key=None` to carry "
            "none over."
        )
    labels = (
        check_labels(adata, labels_key, bag_key=None)
        if labels_key is not None and labels_key in adata.obsm
        else None
    )
    _warn_wells_across_plates(adata, by, plate_key)
    groups = adata.obs[by].astype(str).to_numpy()
    codes, uniques = pd.factorize(groups)
    n_groups = len(uniques)
    if how == "modz":
        Xa = _modz(to_dense(X, np.float64), codes, n_groups)
    else:
        import scanpy as sc

        tmp = AnnData(X=X if rep_key is None else np.zeros((adata.n_obs, 1), np.float32))
        if rep_key is not None:
            tmp.obsm["rep"] = to_dense(X)
        tmp.obs["group"] = pd.Categorical(groups, categories=list(uniques))
        res = sc.get.aggregate(tmp, by="group", func=how, obsm="rep" if rep_key is not None else None)
        Xa = to_dense(res.layers[how])[res.obs_names.get_indexer(list(uniques))]
    obs_const = _constant_columns(adata.obs.assign(**{by: groups}), by).reindex(list(uniques))
    obs_const[by] = list(uniques)
    obs_const = obs_const.drop(columns=["n_instances"], errors="ignore")  # re-counted for the new groups
    obs_const.insert(0, "n_instances", np.bincount(codes, minlength=n_groups))
    obs_const.index = pd.Index(list(uniques), name=None)
    if rep_key is None:
        var = adata.var.copy()
    else:
        var = pd.DataFrame(index=[f"{rep_key}_{j}" for j in range(Xa.shape[1])])
    out = AnnData(np.asarray(Xa, dtype=np.float32), obs=obs_const, var=var)
    if labels is not None:
        lab = pd.DataFrame(labels.to_numpy(dtype=float), columns=labels.columns)
        enc = lab.fillna(2.0).assign(_g=codes)
        if (enc.groupby("_g").nunique() <= 1).all().all():
            first = lab.groupby(codes).first().reindex(range(n_groups))
            first.index = out.obs_names
            out.obsm[labels_key] = first
        else:
            logger.info(f"labels in obsm[{labels_key!r}] vary within groups of {by!r}; not carried over")
    out.uns["aggregate"] = {
        "by": by,
        "how": how,
        "rep_key": rep_key,
        "instance_obs_names": np.asarray(adata.obs_names, dtype=str),
        "instance_group": groups.astype(str),
    }
    logger.info(f"aggregated {adata.n_obs} instances to {n_groups} groups of {by!r} ({how})")
    return out
