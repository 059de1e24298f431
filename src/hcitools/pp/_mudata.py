"""Converters between the two layouts of an HCI screen: AnnData with ``obsm["assays"]`` and MuData."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import HCI_KEYS
from .._utils import log_written
from .._validate import (
    _preview,
    check_anndata,
    check_constant_within,
    check_labels,
    check_obs_keys,
    check_str,
)

#: obs columns moved to the compound modality by default when they are constant within compounds.
COMPOUND_COLUMNS = ("scaffold", "smiles", "SMILES", "inchikey", "InChIKey")


def to_mudata(
    adata: AnnData,
    *,
    labels_key: str = HCI_KEYS.ASSAYS,
    compound_key: str = HCI_KEYS.COMPOUND,
    instance_mod: str = "crops",
    label_mod: str = "compounds",
    compound_obs: Sequence[str] | None = None,
    assay_var: pd.DataFrame | None = None,
):
    """Convert a screen from the ``obsm[labels_key]`` layout (labels on every instance) to a MuData.

    Parameters
    ----------
    adata
        Instances (crops) with per-instance labels in ``obsm[labels_key]`` (constant within compounds) and the
        compound of each instance in ``obs[compound_key]``. In memory.
    labels_key
        obsm key of the labels (DataFrame n_obs × assays of 1 / 0 / NaN).
    compound_key
        obs column with the compound of each instance; its values become the ``obs_names`` of the label modality.
    instance_mod, label_mod
        Names of the two modalities.
    compound_obs
        obs columns copied to the label modality's ``obs`` (each must be constant within compounds); default:
        those of ``scaffold``, ``smiles``, ``SMILES``, ``inchikey``, ``InChIKey`` that are present and constant.
    assay_var
        Assay metadata (e.g. a primary flag, target genes, assay type), indexed by assay name; becomes the label
        modality's ``var`` (reindexed to the assays; missing assays get NaN).

    Returns
    -------
    A :class:`~mudata.MuData` with ``mod[instance_mod]``: the instances (``X``, ``obs``, ``var``, ``layers``,
    ``uns`` and every ``obsm`` entry except the labels; ``X`` and the arrays are shared with ``adata``, not
    copied) and ``mod[label_mod]``: compounds × assays, ``X`` float32 1 / 0 / NaN (one row per compound, also
    for compounds without any label, e.g. DMSO), ``obs`` the ``compound_obs`` columns, ``var`` the
    ``assay_var``. ``adata`` is not modified. Set a model up on it with
    :meth:`hcitools.model.MoMIL.setup_mudata`; :func:`from_mudata` converts back.

    Examples
    --------
    >>> import hcitools as ht
    >>> adata = ht.datasets.synthetic_hci(n_compounds=10, seed=0)
    >>> mdata = ht.pp.to_mudata(adata)
    >>> mdata["compounds"].shape == (adata.obs["compound"].nunique(), adata.obsm["assays"].shape[1])
    True
    """
    import mudata

    check_anndata(adata)
    for name, value in (("labels_key", labels_key), ("compound_key", compound_key)):
        check_str(value, name)
    for name, value in (("instance_mod", instance_mod), ("label_mod", label_mod)):
        check_str(value, name)
    if instance_mod == label_mod:
        raise ValueError(f"`instance_mod` and `label_mod` must differ, both are {instance_mod!r}.")
    if adata.isbacked:
        raise ValueError(
            "`adata` is backed; to_mudata shares its arrays with the new MuData. Load it first "
            "(`adata.to_memory()`), or build the MuData from the backed instance AnnData and a compounds × assays "
            "AnnData yourself: `mudata.MuData({'crops': crops, 'compounds': compounds})`."
        )
    check_obs_keys(adata, {"compound_key": compound_key})
    labels = check_labels(adata, labels_key, None)
    compounds = adata.obs[compound_key].astype(str).to_numpy()
    check_constant_within(
        labels,
        compounds,
        what=f"adata.obsm[{labels_key!r}] (argument `labels_key`)",
        group_what=f"compounds of adata.obs[{compound_key!r}] (argument `compound_key`)",
        fix="Labels belong to compounds: assign them per compound with `ht.pp.assign_labels`.",
    )
    if compound_obs is None:
        compound_obs = [
            c
            for c in COMPOUND_COLUMNS
            if c in adata.obs and (adata.obs[c].astype(str).groupby(compounds).nunique() <= 1).all()
        ]
    else:
        compound_obs = [compound_obs] if isinstance(compound_obs, str) else list(compound_obs)
        missing = [c for c in compound_obs if c not in adata.obs]
        if missing:
            raise KeyError(f"adata.obs has no columns {missing} (argument `compound_obs`).")
        for c in compound_obs:
            check_constant_within(
                adata.obs[c],
                compounds,
                what=f"adata.obs[{c!r}] (argument `compound_obs`)",
                group_what=f"compounds of adata.obs[{compound_key!r}]",
                fix="Only compound-level columns (SMILES, scaffold) belong to the compound modality.",
            )
    assays = [str(c) for c in labels.columns]
    if assay_var is not None:
        if not isinstance(assay_var, pd.DataFrame):
            raise TypeError(
                f"`assay_var` must be a DataFrame indexed by assay, got {type(assay_var).__name__}."
            )
        unknown = [a for a in assay_var.index.astype(str) if a not in set(assays)]
        if unknown:
            raise ValueError(f"`assay_var` has rows for assays that are not labels: {_preview(unknown)}.")
        var = assay_var.copy()
        var.index = var.index.astype(str)
        var = var.reindex(assays)
    else:
        var = pd.DataFrame(index=pd.Index(assays))
    first = pd.Series(np.arange(adata.n_obs)).groupby(compounds, sort=True).first()
    table = labels.to_numpy(dtype=np.float32)[first.to_numpy()]
    obs = adata.obs.iloc[first.to_numpy()][compound_obs].copy()
    obs.index = pd.Index(first.index.astype(str))
    label_ad = AnnData(X=table, obs=obs, var=var)
    crops = AnnData(
        X=adata.X,
        obs=adata.obs.copy(),
        var=adata.var.copy(),
        uns=dict(adata.uns),
        obsm={k: v for k, v in adata.obsm.items() if k != labels_key},
        layers=dict(adata.layers),
    )
    clash = crops.obs_names.intersection(label_ad.obs_names)
    if len(clash):
        raise ValueError(
            f"Instance names and compound names overlap ({_preview(clash)}); MuData would pair them as one "
            "observation. Rename the instances (e.g. `adata.obs_names = 'crop_' + adata.obs_names`)."
        )
    mdata = mudata.MuData({instance_mod: crops, label_mod: label_ad})
    log_written(
        "mdata",
        [f"mod[{instance_mod!r}]", f"mod[{label_mod!r}] ({label_ad.n_obs} compounds × {len(assays)} assays)"],
    )
    return mdata


def from_mudata(
    mdata,
    *,
    instance_mod: str = "crops",
    label_mod: str = "compounds",
    label_key: str = HCI_KEYS.COMPOUND,
    labels_key: str = HCI_KEYS.ASSAYS,
) -> AnnData:
    """Convert a MuData screen (:func:`to_mudata`) back to one AnnData with labels on every instance.

    Parameters
    ----------
    mdata
        MuData with an instance modality and a label modality (rows × assays).
    instance_mod, label_mod
        Names of the two modalities.
    label_key
        obs column of the instances whose values index the label modality's ``obs_names``.
    labels_key
        obsm key to write the labels to.

    Returns
    -------
    A copy of the instance modality with ``obsm[labels_key]``: DataFrame n_obs × assays (float32; NaN for
    instances whose ``label_key`` has no row). ``mdata`` is not modified. This materialises the labels per
    instance (n_obs × assays × 4 bytes): the MuData layout avoids that.
    """
    if not hasattr(mdata, "mod"):
        raise TypeError(f"`mdata` must be a MuData, got {type(mdata).__name__}.")
    for name, mod in (("instance_mod", instance_mod), ("label_mod", label_mod)):
        if mod not in mdata.mod:
            raise KeyError(
                f"The MuData has no modality {mod!r} (argument `{name}`); it has {list(mdata.mod)}."
            )
    crops, labels = mdata.mod[instance_mod], mdata.mod[label_mod]
    check_obs_keys(crops, {"label_key": label_key})
    if labels_key in crops.obsm:
        raise ValueError(
            f"mdata.mod[{instance_mod!r}].obsm[{labels_key!r}] exists already; pass another `labels_key`."
        )
    rows = pd.Index(labels.obs_names.astype(str)).get_indexer(crops.obs[label_key].astype(str).to_numpy())
    X = np.asarray(labels.X.toarray() if hasattr(labels.X, "toarray") else labels.X, dtype=np.float32)
    table = np.vstack([X, np.full((1, X.shape[1]), np.nan, np.float32)])
    out = crops.to_memory() if crops.isbacked else crops.copy()
    out.obsm[labels_key] = pd.DataFrame(
        table[np.where(rows >= 0, rows, len(table) - 1)],
        index=out.obs_names,
        columns=labels.var_names.astype(str),
    )
    return out
