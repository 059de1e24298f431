"""Shared user API of the MIL models (scvi-tools ``BaseModelClass``): setup, training, queries."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scipy.special import expit
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import LayerField, ObsmField
from scvi.model.base import BaseModelClass
from scvi.train import TrainRunner

from .._constants import HCI_KEYS, MIL_KEYS, MODULE_KEYS
from .._utils import progress_bar_default, quiet_loggers, third_party_quiet
from .._validate import _preview, check_constant_within, check_labels, validate_hci
from ..dataloaders import BagData, BagDataSplitter, bag_loader
from ..train import MILTrainingPlan, RestoreBestWeights
from ..train._mil_plan import VAL_MEAN_AUROC, EarlyStopping, per_task_auroc
from ..train._run import history_file_dir, run_training, seed_and_reset
from ..train._weighting import TaskWeighting, make_weighting
from .base import BagIdField, LabelsField, PersistenceMixin

logger = logging.getLogger("hcitools")


def _check_assays_learnable(labels: pd.DataFrame, bags: np.ndarray) -> None:
    """Every assay needs observed positive and negative bags."""
    per_bag = labels.groupby(bags, sort=False).first()
    n_pos, n_neg = (per_bag == 1).sum(), (per_bag == 0).sum()
    empty = list(labels.columns[(n_pos + n_neg) == 0])
    single = list(labels.columns[((n_pos == 0) | (n_neg == 0)) & ((n_pos + n_neg) > 0)])
    if empty or single:
        parts = []
        if empty:
            parts.append(f"assays without any observed label: {_preview(empty)}")
        if single:
            parts.append(f"assays with a single observed class: {_preview(single)}")
        raise ValueError(
            "Every assay needs observed positive and negative bags to be learned and evaluated; "
            + "; ".join(parts)
            + ". Drop them, e.g. `adata.obsm['assays'] = adata.obsm['assays'].drop(columns=[...])`."
        )


def _check_strategy(trainer) -> None:
    """Single-device and data-parallel (DDP) training only: the training plan gathers validation outputs and
    :class:`~hcitools.train.RestoreBestWeights` copies whole state dicts, which sharded strategies do not have."""
    from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, SingleDeviceStrategy, XLAStrategy

    strategy = trainer.strategy
    if isinstance(strategy, SingleDeviceStrategy):
        return
    if isinstance(strategy, DDPStrategy) and not isinstance(strategy, DeepSpeedStrategy | XLAStrategy):
        return
    raise ValueError(
        f"MIL models train on a single device or with Lightning's DDP strategies ('ddp', 'ddp_spawn', "
        f"'ddp_notebook', or a DDPStrategy); got {type(strategy).__name__} (argument `strategy`)."
    )


def _best_epoch_from_history(history: dict | None, n_before: int) -> int | None:
    """Epoch (of the last training run) with the best validation mean AUROC; the first one on ties, like
    :class:`~hcitools.train.RestoreBestWeights`."""
    if not isinstance(history, dict) or VAL_MEAN_AUROC not in history:
        return None
    values = history[VAL_MEAN_AUROC][VAL_MEAN_AUROC].to_numpy(dtype=float)[n_before:]
    return int(np.argmax(values)) if len(values) else None


def _check_train_args(
    *, validation_key, validation_values, validation_size, max_instances, **numbers
) -> list | None:
    """Check the arguments of ``train`` before anything runs; return ``validation_values`` as a list."""
    rules = {
        "max_epochs": (lambda v: _is_int(v) and v >= 1, "an integer ≥ 1"),
        "warmup_epochs": (lambda v: _is_int(v) and v >= 0, "an integer ≥ 0"),
        "patience": (lambda v: _is_int(v) and v >= 1, "an integer ≥ 1"),
        "batch_size": (lambda v: _is_int(v) and v >= 1, "an integer ≥ 1 (bags per batch)"),
        "lr": (lambda v: _is_real(v) and v > 0, "a number > 0"),
        "weight_decay": (lambda v: _is_real(v) and v >= 0, "a number ≥ 0"),
    }
    for name, value in numbers.items():
        ok, what = rules[name]
        if not ok(value):
            raise ValueError(f"`{name}` must be {what}, got {value!r}.")
    if max_instances is not None and not (_is_int(max_instances) and max_instances >= 1):
        raise ValueError(f"`max_instances` must be None (off) or an integer ≥ 1, got {max_instances!r}.")
    if validation_key is None:
        if validation_values is not None:
            raise ValueError(
                "`validation_values` needs `validation_key`, the obs column they are values of "
                "(e.g. validation_key='fold', validation_values=[3])."
            )
        if not (_is_real(validation_size) and 0 <= validation_size < 1):
            raise ValueError(f"`validation_size` must be in [0, 1), got {validation_size!r}.")
        return None
    if validation_values is None:
        raise ValueError("`validation_key` needs `validation_values`, the values that mark validation bags.")
    if isinstance(validation_values, str | bytes) or np.ndim(validation_values) == 0:
        return [validation_values]  # a single value
    return list(validation_values)


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and np.isfinite(value)
    )


class MILModelBase(PersistenceMixin, BaseModelClass):
    """Base of the MIL models: bags of instances in, per-assay probabilities out.

    Subclasses set ``_module_cls`` and pass the keyword arguments of their module to :meth:`_init_mil`. The
    training slots (:meth:`_make_data_splitter`, :meth:`_make_training_plan`, :meth:`_make_callbacks`) are what
    a subclass overrides to change how it trains, rather than :meth:`train` itself.
    """

    _module_cls = None
    _data_splitter_cls = BagDataSplitter
    _training_plan_cls = MILTrainingPlan
    _train_runner_cls = TrainRunner

    # ------------------------------------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        *,
        bag_key: str = HCI_KEYS.WELL,
        labels_key: str = HCI_KEYS.ASSAYS,
        rep_key: str | None = None,
        layer: str | None = None,
        batch_key: str | None = None,
        group_key: str | None = None,
        **kwargs,
    ) -> None:
        """Validate and register an instance AnnData for MIL models.

        Parameters
        ----------
        adata
            One row per instance (crop or cell).
        bag_key
            obs column with the bag (well) id, unique across plates (see :func:`hcitools.pp.make_bag_key`).
        labels_key
            obsm key of the labels: DataFrame n_obs × n_assays of 1 / 0 / NaN (not measured), constant
            within a bag (and within a group, with ``group_key``). Every assay needs observed positives and
            negatives.
        rep_key
            obsm key of the instance embeddings; ``None`` uses ``X`` (or ``layer``).
        layer
            Layer with the embeddings, instead of ``X``.
        batch_key
            obs column with the plate (batch); bags must be unique across it.
        group_key
            obs column grouping bags, e.g. ``"compound"``: enables ``predict(level="compound")`` and
            compound-level validation AUROC. Must be constant within each bag.

        Notes
        -----
        Registers with scvi-tools' :class:`~scvi.data.AnnDataManager`: the embeddings (``LayerField`` or
        ``ObsmField``), the labels (:class:`~hcitools.model.base.LabelsField`, NaN = not measured) and the bag,
        group and batch ids (:class:`~hcitools.model.base.BagIdField`). The user's columns are read as they are
        (nothing is recast); like every scvi-tools model, registration writes the integer codes of the ids into
        ``adata.obs["_scvi_bag"]`` (``"_scvi_group"``, ``"_scvi_batch"``) and the registration ids into
        ``adata.uns["_scvi_uuid"]`` and ``adata.uns["_scvi_manager_uuid"]``. Only these documented arguments are
        stored in the registry (and in a saved model).
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        # A model loaded onto query data (``load(..., adata=query)``) or given new data only predicts: the query
        # needs no labels (a test set may even hold a single observed class), plates or groups.
        query = kwargs.get("source_registry") is not None
        validate_hci(
            adata,
            plate_key=batch_key if not query or (batch_key in adata.obs) else None,
            bag_key=bag_key,
            compound_key=None if query else group_key,
            rep_key=rep_key,
            layer=layer,
            labels_key=None,
        )
        bags = adata.obs[bag_key].to_numpy()
        if not query:
            labels = check_labels(adata, labels_key, bag_key)
            _check_assays_learnable(labels, bags)
        if group_key is not None and group_key in adata.obs:
            check_constant_within(
                adata.obs[group_key],
                bags,
                what=f"adata.obs[{group_key!r}] (argument `group_key`)",
                group_what=f"bags of adata.obs[{bag_key!r}]",
                fix="A bag (well) belongs to one group (compound).",
            )
            if not query:
                check_constant_within(
                    labels,
                    adata.obs[group_key].to_numpy(),
                    what=f"adata.obsm[{labels_key!r}] (argument `labels_key`)",
                    group_what=f"groups of adata.obs[{group_key!r}] (argument `group_key`)",
                    fix="Labels belong to compounds: assign them per compound with `ht.pp.assign_labels`.",
                )
        x_field = (
            ObsmField(REGISTRY_KEYS.X_KEY, rep_key, correct_data_format=False)
            if rep_key is not None
            else LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False, correct_data_format=False)
        )
        fields = [
            x_field,
            LabelsField(MIL_KEYS.LABELS_REGISTRY, labels_key, correct_data_format=False),
            BagIdField(MIL_KEYS.BAG_REGISTRY, bag_key),
        ]
        if group_key is not None:
            fields.append(BagIdField(MIL_KEYS.GROUP_REGISTRY, group_key))
        if batch_key is not None:
            fields.append(BagIdField(MIL_KEYS.BATCH_REGISTRY, batch_key))
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        with quiet_loggers("scvi"):  # its "Using column names" note would print on every setup
            adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    # ------------------------------------------------------------------------------------------------ init
    def _init_mil(self, primary_assays: Sequence[str] | None, module_kwargs: dict[str, Any]) -> None:
        """Check the model's arguments and build its module from the registry (works with or without data)."""
        for name in ("n_hidden", "n_head_hidden"):
            if name in module_kwargs and not (_is_int(module_kwargs[name]) and module_kwargs[name] >= 1):
                raise ValueError(f"`{name}` must be an integer ≥ 1, got {module_kwargs[name]!r}.")
        dropout = module_kwargs.get("dropout", 0.0)
        if not (_is_real(dropout) and 0 <= dropout < 1):
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}.")
        fields = self.registry_["field_registries"]
        self.assays = [str(c) for c in fields[MIL_KEYS.LABELS_REGISTRY]["state_registry"]["column_names"]]
        if primary_assays is not None:
            if isinstance(primary_assays, str):
                primary_assays = [primary_assays]
            primary_assays = [str(a) for a in primary_assays]
            unknown = [a for a in primary_assays if a not in self.assays]
            if unknown or not primary_assays:
                raise ValueError(
                    f"`primary_assays` {unknown or '(empty)'} are not assays of the labels; assays are "
                    f"{_preview(self.assays)}."
                )
        self.primary_assays = primary_assays
        self.n_input = len(fields[REGISTRY_KEYS.X_KEY]["state_registry"]["column_names"])
        self.module = self._module_cls(self.n_input, len(self.assays), **module_kwargs)
        self._model_summary_string = (
            f"{type(self).__name__}: {len(self.assays)} assays, {self.n_input}-d instances, "
            + ", ".join(f"{k}={v}" for k, v in module_kwargs.items())
        )

    @property
    def _setup(self) -> dict:
        return self.registry_["setup_args"]

    @property
    def best_epoch(self) -> int | None:
        """Epoch (of the last ``train``) whose weights were kept; ``None`` without model selection."""
        return getattr(self, "best_epoch_", None)

    @property
    def use_pos_weight(self) -> bool:
        """Whether the last ``train`` weighted positives by ``n_neg / n_pos`` (``train(pos_weight=True)``)."""
        return bool((getattr(self, "train_params_", None) or {}).get("pos_weight", False))

    # ------------------------------------------------------------------------------------------------ data
    @property
    def features(self) -> list[str] | None:
        """Names of the features the model was trained on (``var_names``, or the columns of a DataFrame in
        ``obsm[rep_key]``); ``None`` for unnamed array embeddings."""
        names = [
            str(v)
            for v in self.registry_["field_registries"][REGISTRY_KEYS.X_KEY]["state_registry"]["column_names"]
        ]
        unnamed = self._setup["rep_key"] is not None and names == [str(i) for i in range(len(names))]
        return None if unnamed else names

    def _query_features(self, adata: AnnData) -> tuple[list[str] | None, str]:
        rep_key = self._setup["rep_key"]
        if rep_key is None:
            return [str(v) for v in adata.var_names], "adata.var_names"
        rep = adata.obsm[rep_key] if rep_key in adata.obsm else None
        names = [str(c) for c in rep.columns] if isinstance(rep, pd.DataFrame) else None
        return names, f"adata.obsm[{rep_key!r}].columns"

    def _check_features(self, adata: AnnData) -> None:
        """Refuse query data whose features differ from the model's by name or order (not only by width)."""
        expected = self.features
        given, where = self._query_features(adata)
        if expected is None or given is None or given == expected:
            return  # unnamed embeddings: the width is checked on transfer
        if len(given) == len(expected) and set(given) == set(expected):
            fix = "they hold the model's features in another order: reorder them by name with `adata = model.align_features(adata)`"
        else:
            missing = [f for f in expected if f not in set(given)]
            fix = (
                f"the model's features {_preview(missing)} are missing"
                if missing
                else "they hold other features"
            )
        raise ValueError(
            f"{where} do not match the features the model was trained on ({len(expected)}, e.g. "
            f"{_preview(expected, 3)}): {fix}. Predictions on other features would be silently wrong."
        )

    def align_features(self, adata: AnnData) -> AnnData:
        """``adata`` with its features reordered by name to the model's (``model.features``).

        Parameters
        ----------
        adata
            Instances holding every feature of the model (by name), in any order; extra features are dropped.

        Returns
        -------
        A view of ``adata`` with the model's ``var_names`` in order, or (embeddings in ``obsm[rep_key]``) a copy
        whose ``obsm[rep_key]`` DataFrame has the model's columns in order. ``adata`` is not modified.
        """
        expected = self.features
        given, where = self._query_features(adata)
        if expected is None or given is None:
            raise ValueError(f"{where} or the model's features are unnamed: nothing to align by name.")
        missing = [f for f in expected if f not in set(given)]
        if missing:
            raise ValueError(
                f"{where} lack the model's features {_preview(missing)}; they cannot be aligned."
            )
        if self._setup["rep_key"] is None:
            return adata[:, expected]
        out = adata.copy()
        out.obsm[self._setup["rep_key"]] = adata.obsm[self._setup["rep_key"]][expected]
        return out

    def _manager_for(self, adata: AnnData | None):
        """The AnnDataManager of ``adata`` (default: the model's data), transferring the fields onto new data."""
        if adata is None or adata is self.adata:
            if self.adata is None:
                raise ValueError(
                    "The model has no data attached (it was loaded without `adata`); pass `adata=` the instances."
                )
            return self.adata_manager
        if not isinstance(adata, AnnData):
            raise TypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
        self._check_features(adata)
        with quiet_loggers("scvi"):  # its "attempting to transfer AnnData setup" note on every query
            adata = self._validate_anndata(adata)
        return self.get_anndata_manager(adata, required=True)

    def _bag_data(self, adata: AnnData | None = None, *, labels: bool = False) -> BagData:
        """Bags of ``adata`` (default: the training AnnData) from its registered fields."""
        return BagData.from_manager(self._manager_for(adata), labels=labels)

    # ------------------------------------------------------------------------------------------------ train
    def _check_training_data(self) -> None:
        """The attached data can train the model: labels of every assay of the model, each learnable."""
        if self.adata is None:
            raise ValueError(
                "The model has no data attached (loaded without `adata`): load it with labelled data to train."
            )
        s = self._setup
        labels = check_labels(self.adata, s["labels_key"], s["bag_key"])
        missing = [a for a in self.assays if a not in labels.columns]
        if missing:
            raise ValueError(
                f"adata.obsm[{s['labels_key']!r}] lacks the assays {_preview(missing)} of the model; training "
                "needs labels of every assay the model predicts."
            )
        _check_assays_learnable(labels[self.assays], self.adata.obs[s["bag_key"]].to_numpy())

    def _make_data_splitter(self, **kwargs) -> BagDataSplitter:
        """Training slot: the bag-level splitter, built from the model's AnnDataManager."""
        return self._data_splitter_cls(self.adata_manager, **kwargs)

    def _make_training_plan(
        self, splitter: BagDataSplitter, *, pos_weight: bool, **kwargs
    ) -> MILTrainingPlan:
        """Training slot: the plan; ``pos_weight=True`` gives it ``n_neg / n_pos`` of the training bags."""
        return self._training_plan_cls(
            self.module,
            assays=self.assays,
            primary_assays=self.primary_assays,
            bag_groups=splitter.data.groups,
            pos_weight=splitter.pos_weight() if pos_weight else None,
            **kwargs,
        )

    def _make_callbacks(
        self, splitter: BagDataSplitter, plan: MILTrainingPlan, *, patience: int, warmup_epochs: int
    ) -> tuple[list, RestoreBestWeights | None]:
        """Training slot: early stopping and best-weight restoring on the validation mean AUROC, when the
        validation bags can measure it (a primary assay with both classes); else none (and a warning)."""
        val_labels = splitter.data.labels[splitter.val_idx].numpy()
        val_groups = splitter.data.groups[splitter.val_idx] if splitter.data.groups is not None else None
        evaluable = splitter.n_val > 0 and bool(
            np.isfinite(per_task_auroc(np.zeros_like(val_labels), val_labels, val_groups))[
                plan.primary_index
            ].any()
        )
        if not evaluable:
            return [], None
        best = RestoreBestWeights(VAL_MEAN_AUROC, "max")
        # our own callback rather than scvi-tools' `early_stopping=True`, which it turns off under DDP
        stop = EarlyStopping(
            monitor=VAL_MEAN_AUROC, min_delta=0.0, patience=patience, mode="max", warmup_epochs=warmup_epochs
        )
        return [best, stop], best

    def train(
        self,
        max_epochs: int = 100,
        *,
        warmup_epochs: int = 20,
        patience: int = 10,
        lr: float = 1e-4,
        weight_decay: float = 5e-4,
        batch_size: int = 256,
        validation_size: float = 0.2,
        validation_key: str | None = None,
        validation_values: Sequence[Any] | None = None,
        seed: int = 0,
        accelerator: str = "auto",
        devices: int | str = "auto",
        pos_weight: bool = False,
        weighting: str | TaskWeighting = "equal",
        weighting_kwargs: dict | None = None,
        max_instances: int | None = None,
        group_by_size: bool = False,
        enable_progress_bar: bool | None = None,
        **trainer_kwargs,
    ) -> None:
        """Train with AdamW and cosine annealing; early stopping on validation AUROC; best weights restored.

        Every argument is checked before anything changes: a call that raises leaves the model (weights, seed,
        history) as it was.

        Parameters
        ----------
        max_epochs
            Maximum number of epochs (also the cosine period).
        warmup_epochs
            Epochs before early stopping may trigger.
        patience
            Validation epochs without improvement of the mean AUROC over ``primary_assays`` before stopping.
        lr, weight_decay
            AdamW parameters.
        batch_size
            Bags per batch.
        validation_size
            Fraction of bags held out at random for validation (ignored with ``validation_key``). With
            ``group_key`` registered, whole groups are held out (that fraction of the compounds, with all their
            bags), so replicate wells of a compound are never on both sides.
        validation_key, validation_values
            Take the validation bags from a user column instead (e.g. ``validation_key="fold"``,
            ``validation_values=[3]``, or a single value ``3``); constant within bags. Bags with other values are
            trained on.
        seed
            Seeds the initial weights (before the first training), the split, the batch order, subsampling and
            dropout.
        accelerator, devices
            Lightning's; ``"auto"`` uses a GPU when present.
        pos_weight
            Weight positives by ``n_neg / n_pos`` per assay in the BCE, from the observed training labels (held
            by the training plan, not the module).
        weighting
            How per-assay losses are combined: a name of ``hcitools.train.WEIGHTINGS`` (``"equal"``: their sum
            over the assays observed in the batch) or a :class:`~hcitools.train.TaskWeighting` instance.
        weighting_kwargs
            Keyword arguments of the strategy named by ``weighting``.
        max_instances
            Randomly subsample training bags larger than this (off by default; never in validation or queries).
        group_by_size
            Batch training bags of similar size together (shuffled, then sorted by size within windows of 50
            batches; ``hcitools.dataloaders.SizeGroupedSampler``). Cuts the padding of very ragged bags
            (e.g. cells per well); off by default because batches then correlate with bag size, which can carry
            label information (toxic compounds leave fewer cells).
        enable_progress_bar
            Show Lightning's progress bar; ``None`` follows ``ht.settings.verbosity`` (shown unless ``"error"``).
            Lightning's device banners and tips show only at verbosity ``"info"`` and above.
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer` (e.g. ``strategy="ddp"``, see Notes). Early stopping is set
            up here (``patience``, ``warmup_epochs``); scvi-tools' ``early_stopping*`` arguments are refused.

        Notes
        -----
        ``model.history`` holds per-epoch ``train_loss``, ``task_loss_<assay>``, ``task_weight_<assay>``,
        ``validation_loss``, ``validation_auroc_<assay>`` and ``validation_mean_auroc``; ``model.best_epoch`` the
        epoch whose weights were kept. Both are saved with the model.

        **Multi-GPU / multi-node.** Lightning's data-parallel strategies are supported, e.g.
        ``accelerator="gpu", devices=4, strategy="ddp"`` (``accelerator="cpu"`` with the gloo backend works too).
        Each process trains on its shard of the training bags (``batch_size`` counts bags per process) and
        validates a shard of the validation bags; the validation outputs of all processes are gathered and the
        AUROC is computed on the whole validation set (bags repeated by the distributed sampler are counted
        once, groups are matched by bag), so early stopping and the restored best weights agree across
        processes. The losses in the history are averaged across processes.

        - ``strategy="ddp"`` (recommended; multi-node with ``num_nodes``, or processes started by ``torchrun`` or
          SLURM): unless a cluster launcher started the processes, Lightning re-runs the calling *script*
          (``sys.argv``) once per additional process, so call ``train`` from a script under
          ``if __name__ == "__main__":``, not from Jupyter (Lightning refuses) or from a test runner such as
          pytest (which would be re-run). Every process continues the script after ``train`` with the restored
          best weights and the same ``model.history`` and ``model.best_epoch``, so write outputs from one
          process only (e.g. ``if model.trainer.is_global_zero:``).
        - ``strategy="ddp_spawn"`` (scripts, under ``if __name__ == "__main__":``; the model and its AnnData are
          pickled to each child process) and ``"ddp_fork"`` / ``"ddp_notebook"`` (Jupyter; CPU, or CUDA not yet
          initialised): training runs in child processes; the calling process gets the restored best weights of
          process 0, the history (through the history file of scvi-tools' logger, written here into a temporary
          directory, hence lost with a custom ``logger``) and ``best_epoch`` (read off the history).

        Sharded strategies (FSDP, DeepSpeed) and multi-device XLA are not supported and raise a ValueError.
        """
        # 1. validate everything (nothing changes before this block has passed)
        _check_train_args(
            max_epochs=max_epochs,
            warmup_epochs=warmup_epochs,
            patience=patience,
            lr=lr,
            weight_decay=weight_decay,
            batch_size=batch_size,
            validation_size=validation_size,
            validation_key=validation_key,
            validation_values=validation_values,
            max_instances=max_instances,
        )
        refused = sorted(k for k in trainer_kwargs if k.startswith("early_stopping"))
        if refused:
            raise TypeError(
                f"`train` sets up early stopping on {VAL_MEAN_AUROC!r} itself; use `patience` and "
                f"`warmup_epochs` (patience=max_epochs never stops) instead of {refused}."
            )
        if not isinstance(pos_weight, bool | np.bool_):
            raise TypeError(f"`pos_weight` must be True or False, got {pos_weight!r}.")
        make_weighting(weighting, len(self.assays), weighting_kwargs)  # checks the name, instance and kwargs
        enable_progress_bar = progress_bar_default(enable_progress_bar)
        self._check_training_data()
        splitter = self._make_data_splitter(
            validation_size=validation_size,
            validation_key=validation_key,
            validation_values=validation_values,
            batch_size=batch_size,
            seed=seed,
            max_instances=max_instances,
            group_by_size=group_by_size,
        )
        plan = self._make_training_plan(
            splitter,
            pos_weight=bool(pos_weight),
            lr=lr,
            weight_decay=weight_decay,
            max_epochs=max_epochs,
            weighting=weighting,
            weighting_kwargs=weighting_kwargs,
        )
        callbacks, best = self._make_callbacks(splitter, plan, patience=patience, warmup_epochs=warmup_epochs)
        callbacks = list(trainer_kwargs.pop("callbacks", [])) + callbacks
        trainer_kwargs.setdefault("log_every_n_steps", 1)
        if best is not None:
            trainer_kwargs["check_val_every_n_epoch"] = 1
        elif splitter.n_val:
            trainer_kwargs.setdefault("check_val_every_n_epoch", 1)
        # 2. train
        if best is None:
            warnings.warn(
                "The validation bags hold no primary assay with both classes observed: training runs all "
                f"{max_epochs} epochs without early stopping or model selection.",
                UserWarning,
                stacklevel=2,
            )
        history = self.history  # DataFrames (saved models hold lists), which scvi-tools appends to
        n_before = (
            len(history[VAL_MEAN_AUROC]) if isinstance(history, dict) and VAL_MEAN_AUROC in history else 0
        )
        with (
            history_file_dir(trainer_kwargs) as trainer_kwargs,
            warnings.catch_warnings(),
            third_party_quiet(),
        ):
            # scvi-tools turns off its own early stopping under DDP; ours is a plain callback and stays on
            warnings.filterwarnings("ignore", message="early_stopping was automatically disabled")
            runner = self._train_runner_cls(
                self,
                training_plan=plan,
                data_splitter=splitter,
                max_epochs=max_epochs,
                accelerator=accelerator,
                devices=devices,
                callbacks=callbacks,
                enable_progress_bar=enable_progress_bar,
                **trainer_kwargs,
            )
            _check_strategy(runner.trainer)
            seed_and_reset(self, seed)
            self.module.train()  # queries and `load` leave it in eval mode, which Lightning would keep
            run_training(self, runner)
        # with a spawn-based strategy the callback ran in child processes: read the best epoch off the history
        self.best_epoch_ = best.best_epoch if best is not None else None
        if self.best_epoch_ is None and best is not None:
            self.best_epoch_ = _best_epoch_from_history(self.history_, n_before)
            if self.best_epoch_ is None:
                warnings.warn(
                    "Training ran in child processes and left no history in this process (a custom `logger` "
                    "replaces the history file of scvi-tools' logger): `model.history` and `model.best_epoch` "
                    "are unavailable; the model holds the restored best weights. Use strategy='ddp' or no "
                    "`logger` to get them.",
                    UserWarning,
                    stacklevel=2,
                )
        self.train_params_ = {
            "max_epochs": int(max_epochs),
            "warmup_epochs": int(warmup_epochs),
            "patience": int(patience),
            "lr": float(lr),
            "weight_decay": float(weight_decay),
            "batch_size": int(batch_size),
            "seed": int(seed),
            "pos_weight": bool(pos_weight),
            "weighting": weighting if isinstance(weighting, str) else type(weighting).__name__,
        }

    # ------------------------------------------------------------------------------------------------ queries
    @torch.inference_mode()
    def _run(
        self, adata: AnnData | None, batch_size: int, keys: Sequence[str]
    ) -> tuple[BagData, dict[str, Any]]:
        """Run the module over every bag; collect the outputs ``keys`` by their kind (``module.output_kinds``)."""
        if not (_is_int(batch_size) and batch_size >= 1):
            raise ValueError(
                f"`batch_size` must be an integer ≥ 1 (bags per forward pass), got {batch_size!r}."
            )
        kinds = self.module.output_kinds
        unknown = [k for k in keys if k not in kinds]
        if unknown:
            raise ValueError(f"The module has no outputs {unknown}; it declares {sorted(kinds)}.")
        self._check_if_trained(warn=True)
        data = self._bag_data(adata)
        self.module.eval()
        out: dict[str, list] = {k: [] for k in keys}
        for batch in bag_loader(data, np.arange(data.n_bags), batch_size=batch_size):
            res = self.module.inference(batch[MIL_KEYS.X], batch[MIL_KEYS.MASK])
            mask = batch[MIL_KEYS.MASK]
            for key in keys:
                value, kind = res[key], kinds[key]
                if kind == "bag":
                    out[key].append(value.float().cpu().numpy())
                elif kind == "bag_task_instance":  # B × T × N → per bag N_b × T
                    out[key].extend(a[:, m].T.float().cpu().numpy() for a, m in zip(value, mask, strict=True))
                else:  # "bag_instance": B × N × … → per bag N_b × …
                    out[key].extend(e[m].float().cpu().numpy() for e, m in zip(value, mask, strict=True))
        return data, {k: np.concatenate(v) if kinds[k] == "bag" else v for k, v in out.items()}

    @staticmethod
    def _unsort(data: BagData, per_bag_rows: list[np.ndarray]) -> np.ndarray:
        stacked = np.concatenate(per_bag_rows)
        out = np.empty_like(stacked)
        out[data.order] = stacked
        return out

    def get_module_outputs(
        self, adata: AnnData | None = None, *, keys: Sequence[str] | None = None, batch_size: int = 256
    ) -> dict[str, np.ndarray]:
        """Any output the module declares (``model.module.output_kinds``), e.g. gates or several attention maps.

        Parameters
        ----------
        adata
            Instances (same representation as at setup); default the training AnnData. Labels are not needed.
        keys
            Output names (default: all); see :data:`hcitools._constants.MODULE_KEYS`.
        batch_size
            Bags per forward pass.

        Returns
        -------
        dict name → ndarray: per-bag outputs with one row per bag (in the order of :meth:`predict`), per-instance
        outputs with one row per instance (following ``adata.obs_names``). Nothing is written into ``adata``.
        """
        keys = (
            list(self.module.output_kinds)
            if keys is None
            else [keys]
            if isinstance(keys, str)
            else list(keys)
        )
        data, out = self._run(adata, batch_size, keys)
        return {
            k: v if self.module.output_kinds[k] == "bag" else self._unsort(data, v) for k, v in out.items()
        }

    def predict(
        self,
        adata: AnnData | None = None,
        *,
        level: Literal["bag", "compound"] = "bag",
        batch_size: int = 256,
    ) -> pd.DataFrame:
        """Activity probabilities per bag, or per compound (mean over its bags; needs ``group_key``).

        Parameters
        ----------
        adata
            Instances to predict (same representation and feature names as at setup); default the training
            AnnData. Labels are not needed.
        level
            ``"bag"`` or ``"compound"``.
        batch_size
            Bags per forward pass.

        Returns
        -------
        DataFrame, rows = bags (sorted by id) or groups, columns = assays. Nothing is written into ``adata``
        (scvi-tools' registration of new data adds ``obs["_scvi_*"]`` codes and ``uns["_scvi_*"]`` ids).
        """
        if level not in ("bag", "compound"):
            raise ValueError(f"`level` must be 'bag' or 'compound', got {level!r}.")
        group_key = self._setup["group_key"]
        if level == "compound":
            if group_key is None:
                raise ValueError(
                    "`level='compound'` needs `group_key` at setup_anndata (e.g. group_key='compound')."
                )
            if adata is not None and group_key not in adata.obs:
                raise KeyError(
                    f"`level='compound'` averages bags per adata.obs[{group_key!r}] (the `group_key` of "
                    "setup_anndata), which `adata` lacks."
                )
        data, out = self._run(adata, batch_size, [MODULE_KEYS.LOGITS])
        prob = expit(out[MODULE_KEYS.LOGITS])
        pred = pd.DataFrame(prob, index=pd.Index(data.bag_names, name=None), columns=self.assays)
        if level == "compound":
            pred = pred.groupby(data.groups, sort=False).mean()
        return pred

    def get_attention(self, adata: AnnData | None = None, *, batch_size: int = 256) -> np.ndarray:
        """Attention of every instance for every assay; within each bag, each assay's attention sums to 1.

        Parameters
        ----------
        adata
            Instances (same representation as at setup); default the training AnnData. Labels are not needed.
        batch_size
            Bags per forward pass.

        Returns
        -------
        ndarray n_obs × n_assays, rows following ``adata.obs_names``, columns ``model.assays``. Nothing is written
        into ``adata`` (:func:`hcitools.tl.momil` stores it in ``obsm``).
        """
        return self.get_module_outputs(adata, keys=[MODULE_KEYS.ATTENTION], batch_size=batch_size)[
            MODULE_KEYS.ATTENTION
        ]

    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        *,
        level: Literal["bag", "instance", "assay"] = "bag",
        batch_size: int = 256,
    ) -> np.ndarray:
        """Learned representations.

        Parameters
        ----------
        adata
            Instances (default: the training AnnData).
        level
            ``"instance"``: the shared projection of every instance (n_obs × d, rows follow ``adata``);
            ``"bag"``: the mean of the projected instances of each bag (n_bags × d, rows in the order of
            ``predict``); ``"assay"``: each assay's attention-pooled bag embedding (n_bags × T × h). Baselines
            without a projector (:class:`~hcitools.model.MeanMLP`) return their inputs at ``"instance"``.
        batch_size
            Bags per forward pass.

        Returns
        -------
        ndarray as above. Nothing is written into ``adata``.
        """
        if level not in ("bag", "instance", "assay"):
            raise ValueError(f"`level` must be 'bag', 'instance' or 'assay', got {level!r}.")
        if level == "assay":
            return self.get_module_outputs(adata, keys=[MODULE_KEYS.BAG_EMBEDDING], batch_size=batch_size)[
                MODULE_KEYS.BAG_EMBEDDING
            ]
        data, out = self._run(adata, batch_size, [MODULE_KEYS.INSTANCE_EMBEDDING])
        per_bag = out[MODULE_KEYS.INSTANCE_EMBEDDING]
        if level == "instance":
            return self._unsort(data, per_bag)
        return np.stack([e.mean(axis=0) for e in per_bag])
