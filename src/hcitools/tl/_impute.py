"""``ht.tl.impute_labels``: conformal label imputation (001 §2.3), and the threshold rules it shares with the
pseudo-labels of thesis 000 (Algorithms 2–4, :class:`hcitools.train.PseudoLabels`).

The rules are a few lines of numpy (``np.quantile``); no library implements this particular confidence rule
(it is conformal in spirit: thresholds calibrated on held-out, correctly classified wells), hence by hand.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._utils import check_free_keys, log_written, logger, warn
from .._validate import _preview, check_anndata, check_choice, check_real, check_str

#: A probability at or above this classifies as positive (000 Alg. 3; 001's "correctly classified").
DECISION = 0.5
#: Provenance codes of ``obsm[f"{key_added}_round"]``: observed, missing; k ≥ 1 = imputed in round k.
OBSERVED, MISSING = 0, -1
ROUND_SUFFIX = "_round"


def percentiles(p: float, alpha: float, primary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The quantile levels of the positive and negative thresholds of each assay (001 §2.3).

    ``p`` / ``1 − p`` for primary assays, the stricter ``p + α`` / ``1 − p − α`` for secondary ones (clipped
    to [0, 1]).

    Examples
    --------
    >>> q_pos, q_neg = percentiles(0.9, 0.05, np.array([True, False]))
    >>> q_pos.round(2).tolist(), q_neg.round(2).tolist()
    ([0.9, 0.95], [0.1, 0.05])
    """
    primary = np.asarray(primary, bool)
    q_pos = np.where(primary, p, min(1.0, p + alpha))
    q_neg = np.where(primary, 1.0 - p, max(0.0, 1.0 - p - alpha))
    return q_pos.astype(float), q_neg.astype(float)


def correct_thresholds(
    prob: np.ndarray, labels: np.ndarray, q_pos: np.ndarray, q_neg: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-task thresholds from the correctly classified entries (000 Alg. 3, 001 §2.3).

    For task *t*: ``th_pos[t]`` = the ``q_pos[t]`` quantile of the probabilities of observed positives with
    probability ≥ 0.5; ``th_neg[t]`` = the ``q_neg[t]`` quantile of those of observed negatives with probability
    < 0.5 (``numpy.quantile``, linear interpolation). NaN where a task has no correct entry of that class.

    Parameters
    ----------
    prob, labels
        n × T probabilities and labels (1 / 0 / NaN) of the validation entries.
    q_pos, q_neg
        T quantile levels (:func:`percentiles`).

    Returns
    -------
    ``(th_pos, th_neg, n_correct_pos, n_correct_neg)``, each of length T.
    """
    prob, labels = np.asarray(prob, float), np.asarray(labels, float)
    T = prob.shape[1]
    th_pos, th_neg = np.full(T, np.nan), np.full(T, np.nan)
    n_pos, n_neg = np.zeros(T, int), np.zeros(T, int)
    for t in range(T):  # T quantiles over ragged subsets: one call each
        pos = prob[(labels[:, t] == 1) & (prob[:, t] >= DECISION), t]
        neg = prob[(labels[:, t] == 0) & (prob[:, t] < DECISION), t]
        n_pos[t], n_neg[t] = len(pos), len(neg)
        if len(pos):
            th_pos[t] = np.quantile(pos, q_pos[t])
        if len(neg):
            th_neg[t] = np.quantile(neg, q_neg[t])
    return th_pos, th_neg, n_pos, n_neg


def apply_thresholds(
    prob: np.ndarray, labels: np.ndarray, th_pos: np.ndarray, th_neg: np.ndarray
) -> np.ndarray:
    """New labels of the missing entries (000 Alg. 2): 1 where ``prob ≥ th_pos``, 0 where ``prob ≤ th_neg``,
    NaN otherwise (and where a threshold is NaN); observed entries are returned as NaN (never relabelled).

    Examples
    --------
    >>> apply_thresholds(np.array([[0.95, 0.5, 0.02]]), np.array([[np.nan, np.nan, 1.0]]),
    ...                  np.array([0.9, 0.9, 0.9]), np.array([0.1, 0.1, 0.1])).tolist()
    [[1.0, nan, nan]]
    """
    prob, labels = np.asarray(prob, float), np.asarray(labels, float)
    new = np.full(prob.shape, np.nan)
    missing = np.isnan(labels)
    new[missing & (prob >= th_pos[None])] = 1.0
    new[missing & (prob <= th_neg[None])] = 0.0
    return new


def emphasised(th_pos: np.ndarray, th_neg: np.ndarray, key: np.ndarray, emphasis: tuple[float, float]):
    """000 Alg. 4: thresholds of the tasks outside ``key`` scaled by ``α_pos`` (positive) and ``α_neg``
    (negative); with α_pos > 1 and α_neg < 1 they get fewer pseudo-labels. Key tasks keep theirs."""
    a_pos, a_neg = emphasis
    key = np.asarray(key, bool)
    return np.where(key, th_pos, a_pos * th_pos), np.where(key, th_neg, a_neg * th_neg)


def check_truth_key(adata: AnnData, truth_key: str | None, assays) -> None:
    """``adata.obsm[truth_key]`` (complete true labels, e.g. a simulator's) exists and holds every assay."""
    if truth_key is None:
        return
    if truth_key not in adata.obsm:
        raise KeyError(f"adata.obsm has no {truth_key!r} (argument `truth_key`).")
    lacking = [a for a in assays if a not in adata.obsm[truth_key].columns]
    if lacking:
        raise ValueError(
            f"adata.obsm[{truth_key!r}] lacks the assays {_preview(lacking)} (argument `truth_key`)."
        )


def _unit_frames(adata: AnnData, model) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, pd.Series, str]:
    """Probabilities and labels per labelling unit (compounds with ``group_key``, else bags), the bag → unit map
    and the unit of every instance."""
    s = model._setup
    bag_key, labels_key, group_key = s["bag_key"], s["labels_key"], s["group_key"]
    bags = adata.obs[bag_key].astype(str).to_numpy()
    prob = model.predict(adata)
    prob.index = prob.index.astype(str)
    labels = adata.obsm[labels_key][model.assays].groupby(bags, sort=False).first()
    if group_key is None:
        unit_of_bag = pd.Series(prob.index, index=prob.index)
        inst_unit = pd.Series(bags, index=adata.obs_names)
        unit = "bag"
    else:
        group = adata.obs[group_key].astype(str).groupby(bags, sort=False).first()
        unit_of_bag = group.loc[prob.index]
        inst_unit = pd.Series(adata.obs[group_key].astype(str).to_numpy(), index=adata.obs_names)
        unit = "compound"
    unit_prob = prob.groupby(unit_of_bag.to_numpy(), sort=False).mean()
    unit_labels = labels.loc[prob.index].groupby(unit_of_bag.to_numpy(), sort=False).first()
    return unit_prob, unit_labels.loc[unit_prob.index], unit_of_bag, inst_unit, unit


def impute_labels(
    adata: AnnData,
    model,
    *,
    method: str = "conformal",
    p: float = 0.9,
    alpha: float = 0.05,
    primary_assays: Sequence[str] | None = None,
    key_added: str = "assays_imputed",
    truth_key: str | None = None,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Conformal label imputation (001 §2.3): confident predictions of a trained MIL model become labels.

    For each assay, the model's probabilities on its **validation** units are taken where it classifies them
    correctly (observed positives with probability ≥ 0.5, observed negatives below); the positive threshold is
    their ``p``-th percentile among the positives, the negative one the ``(1 − p)``-th among the negatives
    (stricter ``p + α`` / ``1 − p − α`` for secondary assays, so that they do not swamp the primary ones).
    Unlabelled entries of the **training** units at or above the positive threshold become 1, at or below the
    negative one 0. Validation labels are never changed; units outside the model's split (e.g. a test fold) are
    never read for thresholds nor imputed.

    The unit is the one labels belong to: the compound when the model was set up with ``group_key`` (its score
    is the mean probability over its wells, as at inference, and its label goes to all its wells; labels are
    constant within compounds), else the bag (well). 001 states the rule on wells, with labels per well.

    Self-training: set up and train a new model on ``labels_key=key_added`` and call this again with the same
    ``key_added``; the next round keeps the labels imputed so far and fills more (``ht.tl.momil(...,
    impute="conformal", rounds=k)`` does this within each cross-validation fold).

    Parameters
    ----------
    adata
        The model's training AnnData (or one holding the same bags and labels).
    model
        A trained MIL model (e.g. :class:`hcitools.model.MoMIL`); its last ``train`` defines the split.
    method
        ``"conformal"``.
    p
        Percentile level in (0.5, 1) (0.9 in 001).
    alpha
        Extra strictness for secondary assays (0.05 in 001).
    primary_assays
        Assays with the plain thresholds; default the model's ``primary_assays`` (all assays when it has none).
    key_added
        obsm key of the imputed labels (see Returns). The user's labels are never overwritten: ``key_added`` may
        not be the labels the model was trained on unless those are an earlier round's output (a self-training
        round).
    truth_key
        obsm key of complete true labels (e.g. ``"assays_true"`` of :func:`hcitools.datasets.synthetic_hci`)
        to score the imputed labels against; never used to impute.
    overwrite
        Replace an existing ``key_added`` (a first round).

    Returns
    -------
    The round's per-assay table (below). Writes:

    - ``obsm[key_added]``: DataFrame like the model's labels (instances × assays): observed labels plus
      imputed ones;
    - ``obsm[f"{key_added}_round"]``: int DataFrame of provenance: 0 = observed, k ≥ 1 = imputed in round k,
      −1 = still missing;
    - ``uns[key_added]``: ``table`` (one row per round and assay: ``round``, ``assay``, ``primary``, ``q_pos``,
      ``q_neg``, ``th_pos``, ``th_neg``, ``n_correct_pos``, ``n_correct_neg``, ``n_unlabelled``,
      ``n_added_pos``, ``n_added_neg``, ``n_added``, and with ``truth_key`` ``n_correct_added`` and
      ``accuracy``: the fraction of the imputed labels that are true) and ``params``.

    Examples
    --------
    >>> import hcitools as ht
    >>> adata = ht.datasets.synthetic_hci(n_compounds=60, n_assays=3, n_primary=1, n_features=8, seed=0)
    >>> ht.model.MoMIL.setup_anndata(adata, group_key="compound")
    >>> model = ht.model.MoMIL(adata, n_hidden=8, n_head_hidden=8)
    >>> model.train(max_epochs=2, enable_progress_bar=False)
    >>> table = ht.tl.impute_labels(adata, model, truth_key="assays_true")
    >>> sorted(adata.obsm["assays_imputed_round"].stack().unique().tolist())[:2]
    [-1, 0]
    """
    # 1. validate everything
    if hasattr(adata, "mod") and not isinstance(adata, AnnData):
        raise TypeError(
            "`adata` is a MuData: `impute_labels` writes imputed labels per instance into an AnnData's obsm. "
            "Convert with `adata = ht.pp.from_mudata(mdata)`, set up and train the model on it, then impute; or "
            "use `ht.tl.momil(mdata, impute='conformal')`, which does this per fold."
        )
    check_anndata(adata)
    check_choice(method, "method", ["conformal"])
    p = check_real(p, "p", min=0.5, max=1, min_inclusive=False, max_inclusive=False)
    alpha = check_real(alpha, "alpha", min=0, max=1 - p, max_inclusive=False)
    key_added = check_str(key_added, "key_added")
    truth_key = check_str(truth_key, "truth_key", allow_none=True)
    split = getattr(model, "split_bags", None)
    if not isinstance(split, dict) or not getattr(model, "is_trained_", False):
        raise ValueError(
            "`model` must be a MIL model trained in this session (call `model.train(...)` first; a loaded model "
            "does not keep its split)."
        )
    s = model._setup
    if "labels_key" not in s:  # registered with setup_mudata: labels live in the compound modality
        raise ValueError(
            "`model` was set up with `setup_mudata`; `impute_labels` needs a model set up with `setup_anndata` "
            "on an AnnData with obsm labels (convert with `ht.pp.from_mudata`), or use "
            "`ht.tl.momil(mdata, impute='conformal')`."
        )
    labels_key, bag_key = s["labels_key"], s["bag_key"]
    round_key = f"{key_added}{ROUND_SUFFIX}"
    continuing = labels_key == key_added
    if continuing and round_key not in adata.obsm:
        raise ValueError(
            f"The model was trained on adata.obsm[{key_added!r}], which is not an imputation (no "
            f"adata.obsm[{round_key!r}]): `key_added` would overwrite the training labels; choose another key."
        )
    if not continuing:
        check_free_keys(adata, {"obsm": key_added}, overwrite=overwrite)
        check_free_keys(adata, {"obsm": round_key, "uns": key_added}, overwrite=overwrite)
    if labels_key not in adata.obsm:
        raise KeyError(
            f"adata.obsm has no {labels_key!r}, the labels the model was trained on (argument `adata`)."
        )
    if bag_key not in adata.obs:
        raise KeyError(f"adata.obs has no {bag_key!r}, the model's `bag_key` (argument `adata`).")
    known = set(adata.obs[bag_key].astype(str))
    missing = [b for b in split["validation"] + split["train"] if b not in known]
    if missing:
        raise ValueError(
            f"`adata` lacks bags of the model's training split ({_preview(missing)}); pass the model's training data."
        )
    assays = list(model.assays)
    if primary_assays is None:
        primary_assays = list(model.primary_assays or assays)
    primary_assays = [primary_assays] if isinstance(primary_assays, str) else [str(a) for a in primary_assays]
    unknown = [a for a in primary_assays if a not in assays]
    if unknown:
        raise ValueError(
            f"`primary_assays` {_preview(unknown)} are not assays of the model ({_preview(assays)})."
        )
    check_truth_key(adata, truth_key, assays)
    if not split["validation"]:
        raise ValueError("The model was trained without validation bags: conformal thresholds need them.")

    # 2. compute (nothing written yet)
    unit_prob, unit_labels, unit_of_bag, inst_unit, unit = _unit_frames(adata, model)
    val_units = pd.unique(unit_of_bag.loc[split["validation"]].to_numpy())
    train_units = pd.unique(unit_of_bag.loc[split["train"]].to_numpy())
    train_units = train_units[
        ~np.isin(train_units, val_units)
    ]  # a unit with validation bags is never imputed
    primary = np.isin(assays, primary_assays)
    q_pos, q_neg = percentiles(p, alpha, primary)
    th_pos, th_neg, n_cpos, n_cneg = correct_thresholds(
        unit_prob.loc[val_units].to_numpy(), unit_labels.loc[val_units].to_numpy(), q_pos, q_neg
    )
    tr_labels = unit_labels.loc[train_units].to_numpy(dtype=float)
    new = apply_thresholds(unit_prob.loc[train_units].to_numpy(), tr_labels, th_pos, th_neg)
    frame = adata.obsm[labels_key]
    if continuing:
        prov = adata.obsm[round_key][assays].to_numpy().copy()
        round_ = int(prov.max(initial=0)) + 1
    else:
        prov = np.where(frame[assays].isna().to_numpy(), MISSING, OBSERVED)
        round_ = 1
    imputed = pd.DataFrame(new, index=train_units, columns=assays)
    rows = inst_unit.isin(train_units).to_numpy()
    inst_new = np.full((adata.n_obs, len(assays)), np.nan)
    inst_new[rows] = imputed.loc[inst_unit.to_numpy()[rows]].to_numpy()
    add = ~np.isnan(inst_new)
    labels_out = frame.copy()
    values = np.array(labels_out[assays].to_numpy(dtype=float), copy=True)  # pandas 3: read-only views
    values[add] = inst_new[add]
    labels_out[assays] = values
    prov[add] = round_
    table = pd.DataFrame(
        {
            "round": round_, "assay": assays, "primary": primary, "unit": unit, "q_pos": q_pos, "q_neg": q_neg,
            "th_pos": th_pos, "th_neg": th_neg, "n_correct_pos": n_cpos, "n_correct_neg": n_cneg,
            "n_unlabelled": np.isnan(tr_labels).sum(0), "n_added_pos": (new == 1).sum(0),
            "n_added_neg": (new == 0).sum(0),
        }
    )  # fmt: skip
    table["n_added"] = table["n_added_pos"] + table["n_added_neg"]
    if truth_key is not None:
        truth = adata.obsm[truth_key][assays].groupby(inst_unit.to_numpy(), sort=False).first()
        truth = truth.loc[train_units].to_numpy(dtype=float)
        done = ~np.isnan(new)
        table["n_correct_added"] = ((new == truth) & done).sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            table["accuracy"] = table["n_correct_added"] / table["n_added"].where(table["n_added"] > 0)
    previous = adata.uns.get(key_added, {}).get("table") if continuing else None
    full = table if previous is None else pd.concat([pd.DataFrame(previous), table], ignore_index=True)

    # 3. write
    adata.obsm[key_added] = labels_out
    adata.obsm[round_key] = pd.DataFrame(prov.astype(np.int64), index=adata.obs_names, columns=assays)
    adata.uns[key_added] = {
        "table": full,
        "params": {"method": method, "p": float(p), "alpha": float(alpha), "primary_assays": primary_assays,
                   "labels_key": labels_key if not continuing else adata.uns.get(key_added, {}).get("params", {}).get("labels_key", labels_key),
                   "unit": unit, "truth_key": truth_key},
    }  # fmt: skip
    n_added = int(table["n_added"].sum())
    if n_added == 0:
        warn(
            f"Round {round_} imputed no label: no unlabelled training {unit} passed the thresholds (see "
            f"adata.uns[{key_added!r}]['table'])."
        )
    acc = ""
    if truth_key is not None and n_added:
        acc = f", {table['n_correct_added'].sum() / n_added:.1%} of them true"
    logger.info(
        f"impute_labels round {round_}: {n_added} labels added to {len(train_units)} training {unit}s{acc}"
    )
    log_written("adata", [f"obsm[{key_added!r}]", f"obsm[{round_key!r}]", f"uns[{key_added!r}]"])
    return table
