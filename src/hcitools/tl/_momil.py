"""``ht.tl.momil``: cross-validated MIL models over compound folds, written into the AnnData."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import HCI_KEYS
from .._utils import check_free_keys, log_written, logger, progress_bar_default, quiet_loggers, warnings_once
from .._validate import (
    check_anndata,
    check_bool,
    check_choice,
    check_constant_within,
    check_int,
    check_labels,
    check_obs_keys,
    check_real,
    check_str,
    validate_hci,
)
from ._cv import cross_validate, get_method
from ._evaluate import evaluate_assays
from ._impute import check_truth_key


def bag_size_baseline(
    adata: AnnData, *, bag_key: str = HCI_KEYS.WELL, group_key: str = HCI_KEYS.COMPOUND
) -> pd.Series:
    """Baseline activity score per compound from cell count alone: minus the mean number of instances per bag.

    Toxic or cytostatic compounds leave fewer cells, so fewer instances score as more active; a model should beat
    this. The sign is fixed in advance (never chosen on the labels).

    Parameters
    ----------
    adata
        Instances.
    bag_key
        obs column with bags (wells).
    group_key
        obs column with compounds.

    Returns
    -------
    Series indexed by compound: −(mean instances per bag). Nothing is written into ``adata``.
    """
    check_anndata(adata)
    check_obs_keys(adata, {"bag_key": bag_key, "group_key": group_key})
    check_constant_within(
        adata.obs[group_key],
        adata.obs[bag_key].to_numpy(),
        what=f"adata.obs[{group_key!r}] (argument `group_key`)",
        group_what=f"bags of adata.obs[{bag_key!r}]",
        fix="A bag (well) belongs to one compound.",
    )
    bags = adata.obs[bag_key].astype(str).to_numpy()
    sizes = adata.obs.groupby(bags).size()
    group = adata.obs[group_key].astype(str).groupby(bags).first()
    return -sizes.groupby(group.loc[sizes.index].to_numpy()).mean()


def _check_kwargs(Model, model_kwargs: dict, train_kwargs: dict | None) -> None:
    """Refuse keyword arguments the model class does not take, before any fold is trained."""
    taken = set(inspect.signature(Model.__init__).parameters) - {"self", "adata", "primary_assays"}
    train_args = set(inspect.signature(Model.train).parameters) - {"self", "trainer_kwargs"}
    for name in model_kwargs:
        if name in taken:
            continue
        if name in train_args:
            raise TypeError(
                f"`{name}` is an argument of `model.train`; pass it as `train_kwargs={{{name!r}: ...}}`."
            )
        raise TypeError(
            f"{Model.__name__} takes no argument `{name}` (passed through `**model_kwargs`); it takes "
            f"{sorted(taken)}."
        )
    fixed = {"validation_key", "validation_values"} & set(train_kwargs or {})
    if fixed:
        raise TypeError(
            f"`ht.tl.momil` validates on the fold after the test fold itself; `train_kwargs` cannot set {sorted(fixed)}."
        )


def _evaluate_with_primary(
    pred: pd.DataFrame, labels: pd.DataFrame, primary: list[str] | None
) -> pd.DataFrame:
    """:func:`evaluate_assays`, plus a ``"primary mean"`` row (mean over ``primary``) when primary assays are
    given and are not all the assays."""
    ev = evaluate_assays(pred, labels)
    primary = [a for a in (primary or []) if a in ev.index]
    if primary and len(primary) < len(ev) - 1:
        ev.loc["primary mean"] = evaluate_assays(pred, labels, assays=primary).loc["macro mean"]
        ev[["n_pos", "n_neg"]] = ev[["n_pos", "n_neg"]].astype(int)
    return ev


def _check_impute_kwargs(impute_kwargs, impute) -> dict:
    """``p`` and ``alpha`` of the imputation (checked like :func:`hcitools.tl.impute_labels` checks them)."""
    if impute_kwargs is None:
        return {}
    if not isinstance(impute_kwargs, dict):
        raise TypeError(
            f"`impute_kwargs` must be a dict like {{'p': 0.9, 'alpha': 0.05}}, got {impute_kwargs!r}."
        )
    if impute is None:
        raise ValueError("`impute_kwargs` needs `impute='conformal'`.")
    unknown = sorted(set(impute_kwargs) - {"p", "alpha"})
    if unknown:
        raise ValueError(f"`impute_kwargs` takes 'p' and 'alpha'; unknown: {unknown}.")
    p = check_real(
        impute_kwargs.get("p", 0.9),
        "impute_kwargs['p']",
        min=0.5,
        max=1,
        min_inclusive=False,
        max_inclusive=False,
    )
    alpha = check_real(
        impute_kwargs.get("alpha", 0.05), "impute_kwargs['alpha']", min=0, max=1 - p, max_inclusive=False
    )
    return {"p": p, "alpha": alpha}


def momil(
    adata: AnnData,
    *,
    fold_key: str = HCI_KEYS.FOLD,
    bag_key: str = HCI_KEYS.WELL,
    labels_key: str = HCI_KEYS.ASSAYS,
    group_key: str = HCI_KEYS.COMPOUND,
    method: str = "momil",
    key_added: str = "momil",
    seed: int = 0,
    rep_key: str | None = None,
    batch_key: str | None = None,
    aux_keys: str | Sequence[str] | None = None,
    primary_assays: Sequence[str] | None = None,
    train_kwargs: dict[str, Any] | None = None,
    overwrite: bool = False,
    copy: bool = False,
    progress: bool | None = None,
    impute: Literal["conformal"] | None = None,
    rounds: int = 1,
    impute_kwargs: dict[str, Any] | None = None,
    truth_key: str | None = None,
    instance_mod: str = "crops",
    label_mod: str = "compounds",
    **model_kwargs,
) -> AnnData | None:
    """Cross-validate a MIL model over compound folds (3-1-1 rotations) and write test predictions.

    For each rotation of :func:`hcitools.pp.fold_rotations` (test fold *i*, validation fold *i + 1*, training on
    the other three), the model is trained on the training folds with early stopping and model selection on the
    validation fold, then predicts the bags of the test fold; bag probabilities are averaged per compound. Every
    compound is predicted once, by the model that never saw it. Instances with a negative fold (e.g. DMSO from
    :func:`hcitools.pp.split_compounds`) are not used.

    Parameters
    ----------
    adata
        Instances with folds in ``obs[fold_key]`` and labels in ``obsm[labels_key]``; or a MuData screen
        (:func:`hcitools.pp.to_mudata`: instances in ``mod[instance_mod]``, labels once per compound in
        ``mod[label_mod]``, indexed by ``obs[group_key]``), whose folds are then fitted on the same per-instance
        layout (each fold's training AnnData is an in-memory copy either way).
    fold_key
        obs column of integer folds 0 … K−1 (constant within compounds).
    bag_key, labels_key, group_key, rep_key, batch_key, aux_keys
        As in :meth:`hcitools.model.MoMIL.setup_anndata`.
    method
        ``"momil"`` (multi-task), ``"stl"`` (one single-assay MoMIL per primary assay, or per assay when
        ``primary_assays`` is None), ``"mean_mlp"``, ``"multilabel_mil"``, ``"m4"`` (:class:`~hcitools.model.M4`)
        or one of 002's single-task baselines through torchmil (:class:`~hcitools.model.TorchMIL`, one model
        per assay; ``pip install 'hcitools[baselines]'``): ``"torchmil_abmil"``, ``"torchmil_dsmil"``,
        ``"torchmil_dtfd"``, ``"torchmil_transmil"``, ``"torchmil_mean"``, ``"torchmil_max"``. The registry
        is ``hcitools.tl._cv.MIL_METHODS``.
    key_added
        Where to write results (see Returns).
    seed
        Seed of every model.
    primary_assays
        Assays for model selection (default: all).
    train_kwargs
        Passed to ``model.train`` (e.g. ``{"max_epochs": 50, "lr": 1e-3}``).
    overwrite
        Replace existing result keys.
    copy
        Return a copy with the results instead of writing into ``adata``.
    instance_mod, label_mod
        The modalities of a MuData ``adata``.
    progress
        One progress bar over the fits (folds, and assays for ``"stl"``) with the current fit's epoch; ``None``
        follows ``ht.settings.verbosity`` (shown unless ``"error"``). The fits' own bars stay off unless
        ``train_kwargs={"enable_progress_bar": True}``.
    impute
        ``"conformal"``: self-training with conformal label imputation (001 §2.3) within each rotation: train,
        impute labels of the training folds from thresholds on the validation fold
        (:func:`hcitools.tl.impute_labels`; primary assays get ``p``, the others the stricter ``p + α``), train a
        new model on observed + imputed labels, ``rounds`` times; the last model predicts the test fold, which
        is never read. None: off.
    rounds
        Self-training rounds (imputation + retraining) with ``impute``.
    impute_kwargs
        ``p`` and ``alpha`` of :func:`hcitools.tl.impute_labels` (defaults 0.9 and 0.05).
    truth_key
        obsm key of complete true labels (e.g. ``"assays_true"`` of :func:`hcitools.datasets.synthetic_hci`):
        the imputed labels are scored against it (column ``accuracy`` of the imputation table); never a model
        input.
    **model_kwargs
        Passed to the model (e.g. ``head="dsmil"``, ``n_hidden=64``); checked against the model class of
        ``method`` before any training.

    Returns
    -------
    ``None``, or a copy when ``copy=True``. Writes:

    - ``uns[key_added]``: ``predictions`` (compounds × assays, test-fold probabilities), ``evaluation`` (per-assay
      AUROC / AUPRC / counts from :func:`evaluate_assays`, for the model and for the bag-size baseline, column
      ``method``; rows ``"macro mean"`` over all assays and, with ``primary_assays``, ``"primary mean"``),
      ``params``, and with ``impute`` ``imputation`` (one row per test fold, round and assay: thresholds,
      labels added and, with ``truth_key``, their accuracy; see :func:`hcitools.tl.impute_labels`) and
      ``round_evaluation`` (per round, 0 = before any imputation: the test-fold macro-mean and primary-mean
      compound AUROC of that round's models; the last round is the ``evaluation`` above);
    - ``obsm[f"{key_added}_attention"]``: n_obs × n_assays attention of each instance in its test fold (NaN for
      unused instances).

    With a MuData, ``uns[key_added]`` goes to ``mdata.uns`` and the attention to
    ``mdata.mod[instance_mod].obsm``.
    """
    if hasattr(adata, "mod") and not isinstance(adata, AnnData):
        given = dict(locals())
        skip = ("adata", "model_kwargs", "instance_mod", "label_mod", "copy")
        args = {k: v for k, v in given.items() if k not in skip}
        return _momil_mudata(adata, instance_mod, label_mod, copy=copy, args=args, model_kwargs=model_kwargs)
    check_anndata(adata)
    spec = get_method(method)
    seed = check_int(seed, "seed", min=0, max=2**32 - 1)
    copy = check_bool(copy, "copy")
    overwrite = check_bool(overwrite, "overwrite")
    progress = check_bool(progress, "progress", allow_none=True)
    key_added = check_str(key_added, "key_added")
    if train_kwargs is not None and not isinstance(train_kwargs, dict):
        raise TypeError(
            f"`train_kwargs` must be a dict of `model.train` arguments (or None), got {type(train_kwargs).__name__}, "
            "e.g. `train_kwargs={'max_epochs': 50}`."
        )
    validate_hci(
        adata,
        plate_key=batch_key,
        bag_key=bag_key,
        compound_key=group_key,
        rep_key=rep_key,
        labels_key=labels_key,
        arg_names={"plate_key": "batch_key", "compound_key": "group_key"},
    )
    check_obs_keys(adata, {"fold_key": fold_key})
    labels = check_labels(adata, labels_key, bag_key)
    att_key = f"{key_added}_attention"
    check_free_keys(adata, {"uns": key_added, "obsm": att_key}, overwrite=overwrite)
    folds = adata.obs[fold_key].to_numpy()
    if not np.issubdtype(folds.dtype, np.integer):
        raise TypeError(f"adata.obs[{fold_key!r}] must hold integer folds (from `ht.pp.split_compounds`).")
    from ..pp import check_folds

    check_folds(adata, compound_key=group_key, fold_key=fold_key)
    n_folds = int(folds.max()) + 1
    assays = [str(c) for c in labels.columns]
    compounds = adata.obs[group_key].astype(str).to_numpy()
    check_constant_within(
        labels,
        compounds,
        what=f"adata.obsm[{labels_key!r}] (argument `labels_key`)",
        group_what=f"compounds of adata.obs[{group_key!r}] (argument `group_key`)",
        fix="Labels belong to compounds: assign them per compound with `ht.pp.assign_labels`.",
    )
    by_cpd = labels.groupby(compounds)
    if primary_assays is not None:
        primary_assays = [str(a) for a in primary_assays]
        unknown = [a for a in primary_assays if a not in assays]
        if unknown or not primary_assays:
            raise ValueError(
                f"`primary_assays` must name assays of adata.obsm[{labels_key!r}]; unknown: {unknown or '(empty)'}. "
                f"Assays are {assays[:10]}{' …' if len(assays) > 10 else ''}."
            )
    _check_kwargs(spec.model_class, model_kwargs, train_kwargs)
    impute = check_choice(impute, "impute", [None, "conformal"])
    rounds = check_int(rounds, "rounds", min=1)
    impute_kwargs = _check_impute_kwargs(impute_kwargs, impute)
    truth_key = check_str(truth_key, "truth_key", allow_none=True)
    check_truth_key(adata, truth_key, assays)
    out_assays = list(primary_assays) if (spec.single_task and primary_assays) else assays
    setup = {
        "bag_key": bag_key,
        "labels_key": labels_key,
        "rep_key": rep_key,
        "batch_key": batch_key,
        "aux_keys": aux_keys,
        "group_key": group_key,
    }
    train_kwargs = {"seed": seed, **(train_kwargs or {})}
    imputation: list = []
    round_predictions: dict = {}
    with quiet_loggers("scvi", "lightning.pytorch", "lightning.fabric"):
        bag_pred, attention = cross_validate(
            adata,
            method=method,
            fold_key=fold_key,
            setup=setup,
            assays=assays,
            primary=primary_assays,
            model_kwargs=model_kwargs,
            train_kwargs=train_kwargs,
            progress=progress_bar_default(progress),
            impute=impute,
            impute_kwargs={**impute_kwargs, "rounds": rounds} if impute else None,
            truth_key=truth_key,
            imputation=imputation,
            round_predictions=round_predictions,
        )
    bags = adata.obs[bag_key].astype(str)
    bag_group = adata.obs[group_key].astype(str).groupby(bags.to_numpy()).first()
    predictions = bag_pred.groupby(bag_group.loc[bag_pred.index].to_numpy()).mean()
    cpd_labels = by_cpd.first().loc[predictions.index]
    size = bag_size_baseline(adata, bag_key=bag_key, group_key=group_key).loc[predictions.index]
    # like for like: the baseline is scored on exactly the (compound, assay) pairs the model predicted
    baseline = pd.DataFrame({a: size.to_numpy() for a in out_assays}, index=predictions.index)
    baseline = baseline.where(predictions.notna())
    with warnings_once():  # both methods are scored on the same pairs: their small-n warnings are the same
        evaluation = pd.concat(
            [
                _evaluate_with_primary(predictions, cpd_labels, primary_assays).assign(method=method),
                _evaluate_with_primary(baseline, cpd_labels, primary_assays).assign(method="bag_size"),
            ]
        )
    evaluation.index.name = "assay"
    evaluation = evaluation.reset_index()
    target = adata.copy() if copy else adata
    target.uns[key_added] = {
        "predictions": predictions,
        "evaluation": evaluation,
        "params": {
            "method": method, "fold_key": fold_key, "bag_key": bag_key, "labels_key": labels_key, "group_key": group_key,
            "seed": seed, "n_folds": n_folds, "primary_assays": list(primary_assays or []),
            "model_kwargs": {k: v for k, v in model_kwargs.items() if isinstance(v, (int, float, str, bool))},
            "train_kwargs": {k: v for k, v in train_kwargs.items() if isinstance(v, (int, float, str, bool))},
        },
    }  # fmt: skip
    if impute:
        target.uns[key_added]["imputation"] = (
            pd.concat(imputation, ignore_index=True) if imputation else pd.DataFrame()
        )
        target.uns[key_added]["params"].update(impute=impute, rounds=rounds, **impute_kwargs)
        rows = []
        with warnings_once():
            for r, bag_pred_r in sorted(round_predictions.items()):
                cpd_pred = bag_pred_r.groupby(bag_group.loc[bag_pred_r.index].to_numpy()).mean()
                ev = _evaluate_with_primary(cpd_pred.loc[predictions.index], cpd_labels, primary_assays)
                row = {"round": r, "macro mean auroc": ev.loc["macro mean", "auroc"]}
                if primary_assays:  # all assays primary: no "primary mean" row, the macro mean is theirs
                    row["primary mean auroc"] = ev.loc[
                        "primary mean" if "primary mean" in ev.index else "macro mean", "auroc"
                    ]
                rows.append(row)
        target.uns[key_added]["round_evaluation"] = pd.DataFrame(rows)
    target.obsm[att_key] = pd.DataFrame(attention, index=adata.obs_names, columns=out_assays)
    mean = evaluation[evaluation["assay"] == "macro mean"].set_index("method")["auroc"]
    logger.info(
        f"{method}: macro-mean compound AUROC {mean.get(method, np.nan):.3f} (bag-size baseline {mean.get('bag_size', np.nan):.3f})"
    )
    log_written("adata", [f"uns[{key_added!r}]", f"obsm[{att_key!r}]"])
    return target if copy else None


def _momil_mudata(mdata, instance_mod: str, label_mod: str, *, copy: bool, args: dict, model_kwargs: dict):
    """:func:`momil` on a MuData screen: run on its per-instance form, write the results into the MuData."""
    from ..pp import from_mudata

    copy = check_bool(copy, "copy")
    key_added = check_str(args["key_added"], "key_added")
    flat = from_mudata(
        mdata,
        instance_mod=instance_mod,
        label_mod=label_mod,
        label_key=args["group_key"],
        labels_key=args["labels_key"],
    )
    att_key = f"{key_added}_attention"
    check_free_keys(mdata.mod[instance_mod], {"obsm": att_key}, overwrite=args["overwrite"])
    if not args["overwrite"] and key_added in mdata.uns:
        raise ValueError(
            f"mdata.uns[{key_added!r}] exists already; results are never overwritten silently. Pass another "
            "`key_added=` or `overwrite=True`."
        )
    momil(flat, **args, copy=False, **model_kwargs)
    target = mdata.copy() if copy else mdata
    target.uns[key_added] = flat.uns[key_added]
    target.mod[instance_mod].obsm[att_key] = flat.obsm[att_key]
    log_written("mdata", [f"uns[{key_added!r}]", f"mod[{instance_mod!r}].obsm[{att_key!r}]"])
    return target if copy else None
