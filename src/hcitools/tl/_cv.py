"""The one cross-validation runner of the MIL methods (3-1-1 rotations over compound folds).

Methods are looked up by name in ``MIL_METHODS``; adding a method is one entry there. Each fold trains on a
minimal AnnData that holds only what the model reads (embeddings, bag / group / batch / fold columns, labels),
predicts a minimal test AnnData without labels, and releases the fold's scvi-tools managers, so memory does not
grow with the number of folds (scvi-tools keeps every registered AnnData in class-level stores).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._utils import logger, progress_bar, warn


@dataclass(frozen=True)
class MILMethod:
    """A MIL method of the runner: a model class (by import path), whether it trains one model per assay, and
    fixed keyword arguments of the model (e.g. which torchmil model)."""

    model: str
    single_task: bool = False
    model_kwargs: dict = field(default_factory=dict)

    @property
    def model_class(self):
        module, name = self.model.rsplit(".", 1)
        return getattr(importlib.import_module(module), name)


#: MIL methods by name (``ht.tl.momil(method=...)``).
MIL_METHODS: dict[str, MILMethod] = {
    "momil": MILMethod("hcitools.model.MoMIL"),
    "stl": MILMethod("hcitools.model.MoMIL", single_task=True),
    "mean_mlp": MILMethod("hcitools.model.MeanMLP"),
    "multilabel_mil": MILMethod("hcitools.model.MultiLabelMIL"),
    "m4": MILMethod("hcitools.model.M4"),
    # 002's single-task baselines through torchmil (``pip install 'hcitools[baselines]'``), one model per assay
    **{
        f"torchmil_{name}": MILMethod(
            "hcitools.model.TorchMIL", single_task=True, model_kwargs={"model": name}
        )
        for name in ("abmil", "dsmil", "dtfd", "transmil", "mean", "max")
    },
}


def get_method(method: str) -> MILMethod:
    """The method registered under ``method``, or a ValueError naming the known ones."""
    if not isinstance(method, str) or method not in MIL_METHODS:
        raise ValueError(f"`method` must be one of {sorted(MIL_METHODS)}, got {method!r}.")
    return MIL_METHODS[method]


def minimal_adata(
    adata: AnnData, rows: np.ndarray, setup: dict, extra_obs: Sequence[str] = (), labels: bool = True
):
    """A new AnnData of ``rows`` holding only what a MIL model reads (no other obs, obsm, layers or uns).

    With ``rep_key`` the embeddings are in ``obsm`` and ``X`` is an all-zero sparse column (AnnData needs a shape;
    nothing is allocated).
    """
    aux = setup.get("aux_keys") or []
    aux = [aux] if isinstance(aux, str) else list(aux)
    keys = [setup["bag_key"], setup.get("group_key"), setup.get("batch_key"), *aux, *extra_obs]
    obs = adata.obs.iloc[rows][list(dict.fromkeys(k for k in keys if k is not None))].copy()
    obsm, layers, var = {}, {}, None
    if setup.get("rep_key") is not None:
        rep = adata.obsm[setup["rep_key"]]
        obsm[setup["rep_key"]] = rep.iloc[rows].copy() if isinstance(rep, pd.DataFrame) else rep[rows]
        X = sparse.csr_matrix((len(rows), 1), dtype=np.float32)
    else:
        var = adata.var[[]].copy()  # the feature names, which queries check
        X = (adata.layers[setup["layer"]] if setup.get("layer") else adata.X)[rows]
        if setup.get("layer"):
            layers[setup["layer"]] = X
            X = sparse.csr_matrix((len(rows), adata.n_vars), dtype=np.float32)
    if labels:
        obsm[setup["labels_key"]] = adata.obsm[setup["labels_key"]].iloc[rows].copy()
    return AnnData(X=X, obs=obs, var=var, obsm=obsm, layers=layers)


def release(model) -> None:
    """Drop every scvi-tools manager of ``model`` (its training data's and its queries').

    ``deregister_manager()`` clears all but the model's current one; scvi-tools has no public call for that one,
    so it is removed from the two stores here.
    """
    model.deregister_manager()
    if model.adata_manager is not None:
        type(model)._setup_adata_manager_store.pop(model.adata_manager.adata_uuid, None)
    type(model)._per_instance_manager_store.pop(model.id, None)


def _fold_progress(bar, label: str):
    """A Lightning callback that writes the current fit's epoch into the postfix of the runner's one bar
    (built here, not at import: ``import hcitools.tl`` does not import Lightning)."""
    import lightning.pytorch as pl

    class FoldProgress(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            auroc = trainer.callback_metrics.get("validation_mean_auroc")
            extra = f", validation AUROC {float(auroc):.3f}" if auroc is not None else ""
            bar.set_postfix_str(f"{label}: epoch {trainer.current_epoch + 1}/{trainer.max_epochs}{extra}")

    return FoldProgress()


#: obsm key of the imputed labels inside a fold's training AnnData (self-training, ``impute="conformal"``).
IMPUTED_KEY = "_assays_imputed"


def _fit_fold(
    Model, train: AnnData, test: AnnData, *, setup, model_kwargs, train_kwargs, fold_key, val_fold, primary,
    impute=None, impute_kwargs=None,
):  # fmt: skip
    """Train on ``train`` (validation on ``val_fold``) and predict ``test``. With ``impute="conformal"``,
    self-training: ``impute_kwargs["rounds"]`` times, impute labels of the training folds from this fold's
    validation (:func:`hcitools.tl.impute_labels`), then set up and train a new model on them; the test AnnData
    is only predicted, by the last model. Returns the imputation table of the rounds (or None) as well."""
    from ._impute import impute_labels

    Model.setup_anndata(train, **setup)
    model = Model(train, primary_assays=primary, **model_kwargs)
    options = dict(impute_kwargs or {})
    rounds = int(options.pop("rounds", 1)) if impute else 0
    per_round = []  # test predictions of every round's model (round 0: before any imputation)
    try:
        model.train(validation_key=fold_key, validation_values=[val_fold], **train_kwargs)
        for _ in range(rounds):
            per_round.append(model.predict(test))
            impute_labels(train, model, method=impute, key_added=IMPUTED_KEY, overwrite=True, **options)
            release(model)
            Model.setup_anndata(train, **{**setup, "labels_key": IMPUTED_KEY})
            model = Model(train, primary_assays=primary, **model_kwargs)
            model.train(validation_key=fold_key, validation_values=[val_fold], **train_kwargs)
        table = train.uns[IMPUTED_KEY]["table"] if rounds else None
        pred = model.predict(test)
        return pred, model.get_attention(test), model.assays, (table, [*per_round, pred] if rounds else [])
    finally:
        release(model)


class _Notes:
    """Warnings and notes of the folds, re-issued once per call (naming the folds) from the user's line."""

    def __init__(self):
        self.notes: dict[str, list] = {}

    def add(self, message: str, fold) -> None:
        self.notes.setdefault(message, []).append(fold)

    def record(self, caught, fold) -> None:
        for w in caught:
            self.add(str(w.message), fold)

    def emit(self) -> None:
        for message, folds in self.notes.items():
            warn(f"{message} (test folds {sorted(set(folds))})")


def cross_validate(
    adata: AnnData,
    *,
    method: str,
    fold_key: str,
    setup: dict,
    assays: list[str],
    primary: list[str] | None,
    model_kwargs: dict,
    train_kwargs: dict,
    progress: bool = True,
    impute: str | None = None,
    impute_kwargs: dict | None = None,
    truth_key: str | None = None,
    imputation: list | None = None,
    round_predictions: dict | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Train and predict every 3-1-1 rotation of the folds in ``adata.obs[fold_key]``.

    For rotation *i* (test fold *i*, validation fold *i + 1*, training on the others; see
    :func:`hcitools.pp.fold_rotations`), the method trains with early stopping and model selection on the
    validation fold and predicts the bags of the test fold. Assays with a single observed class in a rotation's
    training folds are not predicted there (NaN). The fits' warnings are issued once per call, naming the test
    folds; one progress bar (``progress``) follows the fits, with the epoch of the current one. Arguments are
    checked by the caller (:func:`hcitools.tl.momil`).

    ``impute="conformal"`` self-trains within each rotation (``impute_kwargs``: ``rounds``, ``p``, ``alpha``,
    ``primary_assays``): labels of the training folds are imputed from the validation fold only; the test fold is
    never in the training AnnData. ``truth_key`` (complete true labels) is copied into the training AnnData to
    score the imputed labels, never read by a model. The per-round tables, with a ``test_fold`` column, are
    appended to ``imputation``; the test-fold bag predictions of each round's model (round 0: before any
    imputation) are written into ``round_predictions`` (round → bags × output assays).

    Returns
    -------
    ``(bag predictions, attention)``: bags × output assays (test-fold probabilities, each bag predicted once) and
    n_obs × output assays (NaN for instances outside the test folds). The output assays are ``primary`` for a
    single-task method with primary assays, else ``assays``.
    """
    import warnings

    from ..pp import fold_rotations

    spec = get_method(method)
    Model = spec.model_class
    fixed = sorted(set(spec.model_kwargs) & set(model_kwargs))
    if fixed:
        raise TypeError(f"method={method!r} sets {fixed} itself; do not pass them.")
    model_kwargs = {**spec.model_kwargs, **model_kwargs}
    folds = adata.obs[fold_key].to_numpy()
    out_assays = list(primary) if (spec.single_task and primary) else list(assays)
    attention = np.full((adata.n_obs, len(out_assays)), np.nan, dtype=np.float32)
    bag_key, labels_key = setup["bag_key"], setup["labels_key"]
    rotations = list(fold_rotations(int(folds.max()) + 1))
    test_bags = pd.unique(adata.obs[bag_key].astype(str).to_numpy()[folds >= 0])
    predictions = pd.DataFrame(np.nan, index=pd.Index(test_bags), columns=out_assays)
    notes = _Notes()
    n_fits = len(rotations) * (len(out_assays) if spec.single_task else 1)
    # one bar for the whole call; the fits' own bars are off unless asked for
    train_kwargs = {"enable_progress_bar": False, **train_kwargs}
    bar = progress_bar(total=n_fits, desc=f"{method} cross-validation", unit="fit", disable=not progress)
    for rot in rotations:
        logger.info(
            f"{method}: test fold {rot.test}, validation fold {rot.validation}, training folds {list(rot.train)}"
        )
        train_rows = np.flatnonzero(np.isin(folds, [*rot.train, rot.validation]))
        test_rows = np.flatnonzero(folds == rot.test)
        train = minimal_adata(adata, train_rows, setup, extra_obs=[fold_key])
        if truth_key is not None:
            train.obsm[truth_key] = adata.obsm[truth_key].iloc[train_rows].copy()
        test = minimal_adata(adata, test_rows, setup, labels=False)
        labels = train.obsm[labels_key]
        per_bag = labels.groupby(train.obs[bag_key].astype(str).to_numpy()).first()
        learnable = [a for a in assays if (per_bag[a] == 1).any() and (per_bag[a] == 0).any()]
        for assay in sorted(set(assays) - set(learnable)):
            notes.add(
                f"assay {assay!r} has a single observed class in the training folds: not predicted there",
                rot.test,
            )
        fits = [[a] for a in out_assays] if spec.single_task else [learnable]
        for fit_assays in fits:
            label = f"test fold {rot.test}" + (f", {fit_assays[0]}" if spec.single_task else "")
            bar.set_postfix_str(label)
            if not set(fit_assays) & set(learnable):
                bar.update()
                continue
            train.obsm[labels_key] = labels[fit_assays]
            if spec.single_task:
                primary_fit = None
            else:
                primary_fit = [a for a in primary if a in learnable] if primary else None
                if primary and not primary_fit:
                    notes.add(
                        "no primary assay has both classes in the training folds: selecting on all assays",
                        rot.test,
                    )
            kwargs = {
                **train_kwargs,
                "callbacks": [*train_kwargs.get("callbacks", []), _fold_progress(bar, label)],
            }
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                options = dict(impute_kwargs or {})
                if impute:
                    options.setdefault("primary_assays", primary_fit or None)
                    options["truth_key"] = truth_key
                pred, att, model_assays, (table, per_round) = _fit_fold(
                    Model, train, test, setup=setup, model_kwargs=model_kwargs, train_kwargs=kwargs,
                    fold_key=fold_key, val_fold=rot.validation, primary=primary_fit or None,
                    impute=impute, impute_kwargs=options,
                )  # fmt: skip
                for key in (IMPUTED_KEY, f"{IMPUTED_KEY}_round"):
                    train.obsm.pop(key, None)
                train.uns.pop(IMPUTED_KEY, None)
            if table is not None and imputation is not None:
                imputation.append(table.assign(test_fold=rot.test, fit=label))
            if round_predictions is not None:
                for r, p in enumerate(per_round):
                    frame = round_predictions.setdefault(
                        r, pd.DataFrame(np.nan, index=predictions.index, columns=out_assays)
                    )
                    cols = [a for a in p.columns if a in frame.columns]
                    frame.loc[p.index, cols] = p[cols].to_numpy()
            notes.record([w for w in caught if issubclass(w.category, UserWarning)], rot.test)
            for w in caught:  # anything else (deprecations …) as it came
                if not issubclass(w.category, UserWarning):
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            columns = [a for a in model_assays if a in predictions.columns]
            predictions.loc[pred.index, columns] = pred[columns].to_numpy()
            att = pd.DataFrame(att, columns=model_assays).reindex(columns=out_assays)
            keep = att.notna().any(axis=0).to_numpy()
            attention[np.ix_(test_rows, np.flatnonzero(keep))] = att.loc[:, keep].to_numpy()
            bar.update()
    bar.close()
    notes.emit()
    return predictions, attention
