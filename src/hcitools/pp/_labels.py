"""Compound × assay activity labels attached to instances."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import HCI_KEYS
from .._utils import check_free_keys, log_written, logger
from .._validate import (
    check_anndata,
    check_binary_frame,
    check_bool,
    check_columns,
    check_frame,
    check_labels,
    check_obs_keys,
    check_str,
)


def labels_from_lists(
    table: pd.DataFrame, *, compound_col: str, labels_col: str, sep: str = "|", missing: Any = np.nan
) -> pd.DataFrame:
    """Turn a column of delimited label lists (e.g. JUMP's ``target_list``) into a compound × label matrix.

    Parameters
    ----------
    table
        One row per compound (duplicated compounds must carry the same list).
    compound_col
        Column with compound ids.
    labels_col
        Column with ``sep``-separated labels, e.g. ``"EGFR|ERBB2"``.
    sep
        Separator.
    missing
        Value for every label of a compound whose list is empty or missing (default NaN: not measured).

    Returns
    -------
    DataFrame compounds × labels holding 1.0 where the compound lists the label and 0.0 elsewhere (a
    closed-world reading: unlisted targets count as negatives), ``missing`` for compounds without a list.

    Examples
    --------
    >>> import pandas as pd
    >>> from hcitools.pp import labels_from_lists
    >>> t = pd.DataFrame({"cpd": ["a", "b"], "targets": ["EGFR|KIT", "KIT"]})
    >>> labels_from_lists(t, compound_col="cpd", labels_col="targets").loc["b"].tolist()
    [0.0, 1.0]
    """
    check_frame(table, "table", what="one row per compound")
    check_str(compound_col, "compound_col")
    check_str(labels_col, "labels_col")
    check_str(sep, "sep")
    if not sep:
        raise ValueError("`sep` must be a non-empty string, e.g. `sep='|'`.")
    check_columns(table, "`table`", [compound_col], arg="compound_col")
    check_columns(table, "`table`", [labels_col], arg="labels_col")
    sub = table[[compound_col, labels_col]].dropna(subset=[compound_col]).drop_duplicates()
    if sub[compound_col].duplicated().any():
        dup = sub.loc[sub[compound_col].duplicated(), compound_col].tolist()[:5]
        raise ValueError(f"Compounds {dup} appear with different label lists in `table`.")
    lists = sub.set_index(compound_col)[labels_col]
    has = lists.notna() & (lists.astype(str).str.strip() != "")
    dummies = lists[has].astype(str).str.get_dummies(sep=sep).astype(float)
    out = dummies.reindex(lists.index)
    out.loc[~has.to_numpy()] = missing
    out.index.name = None
    return out


def _to_wide(labels: pd.DataFrame, compound_key: str) -> pd.DataFrame:
    """Accept a wide compound × assay frame or a long (compound, assay, label) table; return wide."""
    cols = set(labels.columns)
    if {"assay", "label"} <= cols and (compound_key in cols or "compound" in cols):
        ccol = compound_key if compound_key in cols else "compound"
        dup = labels.duplicated([ccol, "assay"], keep=False)
        if dup.any():
            conflicts = labels[dup].groupby([ccol, "assay"])["label"].nunique()
            if (conflicts > 1).any():
                raise ValueError(
                    f"The long label table gives conflicting labels for {int((conflicts > 1).sum())} "
                    f"(compound, assay) pairs, e.g. {conflicts.index[conflicts > 1][0]}. Resolve them first."
                )
        return labels.drop_duplicates([ccol, "assay"]).pivot(index=ccol, columns="assay", values="label")
    return labels


def assign_labels(
    adata: AnnData,
    labels: pd.DataFrame,
    *,
    compound_key: str = HCI_KEYS.COMPOUND,
    key_added: str = HCI_KEYS.ASSAYS,
    strict: bool = False,
    overwrite: bool = False,
    copy: bool = False,
) -> AnnData | None:
    """Copy compound × assay activity labels onto every instance of each compound.

    Parameters
    ----------
    adata
        One row per instance (or well).
    labels
        Either a wide DataFrame (index = compound ids, columns = assays, values 1 / 0 / NaN; booleans are
        accepted), or a long table with columns ``compound`` (or ``compound_key``), ``assay`` and ``label``.
    compound_key
        obs column with compound ids that match the labels' compound ids.
    key_added
        obsm key to write.
    strict
        Raise if some labelled compounds are absent from ``adata`` (otherwise they are counted and logged).
    overwrite
        Replace an existing ``obsm[key_added]`` / ``uns[key_added]``.
    copy
        Return a modified copy.

    Returns
    -------
    ``None``, or a copy when ``copy=True``. Writes:

    - ``obsm[key_added]``: DataFrame n_obs × n_assays (float 1 / 0 / NaN = not measured); compounds without
      labels (e.g. DMSO) get NaN;
    - ``uns[key_added]``: ``coverage`` (per assay: observed fraction of the compounds in ``adata``, positives,
      negatives) and ``n_unmatched`` (labelled compounds absent from ``adata``).

    Examples
    --------
    >>> import pandas as pd, hcitools as ht
    >>> adata = ht.datasets.synthetic_hci(n_compounds=10, seed=0)
    >>> labels = pd.DataFrame({"tox": [1.0, 0.0]}, index=["cpd_0000", "cpd_0001"])
    >>> ht.pp.assign_labels(adata, labels, key_added="tox_labels")
    >>> int(adata.uns["tox_labels"]["coverage"].loc["tox", "n_pos"])
    1
    """
    check_anndata(adata)
    check_str(compound_key, "compound_key")
    check_str(key_added, "key_added")
    for name, value in (("strict", strict), ("overwrite", overwrite), ("copy", copy)):
        check_bool(value, name)
    check_obs_keys(adata, {"compound_key": compound_key})
    check_frame(labels, "labels", what="compounds × assays, or a long table of compound, assay, label")
    if labels.empty:
        raise ValueError(f"`labels` is empty (shape {labels.shape}); pass compound × assay labels.")
    check_free_keys(adata, {"obsm": key_added, "uns": key_added}, overwrite=overwrite)
    wide = _to_wide(labels, compound_key).copy()  # never rename the caller's frame
    if wide.shape[1] == 0:
        raise ValueError("`labels` has no assay columns.")
    if wide.index.duplicated().any():
        raise ValueError(
            f"`labels` has duplicated compounds: {wide.index[wide.index.duplicated()][:5].tolist()}."
        )
    wide.index = wide.index.astype(str)
    wide.columns = wide.columns.astype(str)
    try:
        wide = wide.astype(float)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`labels` must hold 1 / 0 / NaN (or booleans): {err}") from err
    check_binary_frame(wide, "labels")
    compounds = adata.obs[compound_key].astype(str)
    present = set(compounds)
    unmatched = [c for c in wide.index if c not in present]
    if unmatched and strict:
        raise ValueError(
            f"{len(unmatched)} labelled compounds are absent from adata.obs[{compound_key!r}] (e.g. "
            f"{unmatched[:5]}). Check the compound ids, or pass `strict=False` to ignore them."
        )
    per_obs = wide.reindex(compounds.to_numpy())
    per_obs.index = adata.obs_names
    per_obs.columns.name = None
    check_labels(adata, key_added, bag_key=None, labels=per_obs)
    matched = wide.loc[wide.index.isin(present)].reindex(pd.unique(compounds))
    coverage = pd.DataFrame(
        {
            "observed_fraction": matched.notna().mean(),
            "n_pos": (matched == 1).sum(),
            "n_neg": (matched == 0).sum(),
        }
    )
    if not (coverage["n_pos"] + coverage["n_neg"]).any():
        raise ValueError(
            f"No labelled compound matches adata.obs[{compound_key!r}] (labels index e.g. {wide.index[:3].tolist()}, "
            f"obs e.g. {list(pd.unique(compounds))[:3]}). Check `compound_key` and the compound ids."
        )
    target = adata.copy() if copy else adata
    target.obsm[key_added] = per_obs
    target.uns[key_added] = {"coverage": coverage, "n_unmatched": len(unmatched)}
    logger.info(
        f"labels for {wide.shape[1]} assays; {len(unmatched)} labelled compounds not in adata\n"
        + coverage.to_string(float_format=lambda v: f"{v:.3f}", max_rows=20)
    )
    log_written("adata", [f"obsm[{key_added!r}]", f"uns[{key_added!r}]"])
    return target if copy else None
