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
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import LayerField, ObsmField
from scvi.model.base import BaseModelClass
from scvi.train import LoudEarlyStopping, TrainRunner

from .._constants import HCI_KEYS, MIL_KEYS
from .._utils import quiet_loggers
from .._validate import _preview, check_labels, get_rep, validate_hci
from ..dataloaders import BagData, BagDataSplitter, bag_loader
from ..train import MILTrainingPlan, RestoreBestWeights
from ..train._mil_plan import VAL_MEAN_AUROC, per_task_auroc
from ..train._run import history_file_dir, run_training, seed_and_reset

logger = logging.getLogger("hcitools")


class _LabelsField(ObsmField):
    """The labels (``obsm[labels_key]``). Transferred onto query data (``load(..., adata=query)``) without being
    read: a model only predicts there, so the query may lack labels or hold other assays; the assays stay those
    the model was trained on (the source registry's column names)."""

    def transfer_field(self, state_registry: dict, adata_target: AnnData, **kwargs) -> dict:
        return {self.COLUMN_NAMES_KEY: list(state_registry[self.COLUMN_NAMES_KEY])}


def _check_assays_learnable(labels: pd.DataFrame, bags: np.ndarray) -> None:
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


class MILModelBase(BaseModelClass):
    """Base of the MIL models: bags of instances in, per-assay probabilities out.

    Subclasses set ``_module_cls`` and the keyword arguments their module takes.
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
            within a bag. Every assay needs observed positives and negatives.
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
        Registers the embeddings and the labels with scvi-tools' AnnDataManager; the obs columns named
        here are read as they are (nothing is recast or written into ``adata.obs``).
        """
        validate_hci(
            adata,
            plate_key=batch_key,
            bag_key=bag_key,
            compound_key=group_key,
            rep_key=rep_key,
            layer=layer,
            labels_key=None,
        )
        # A model loaded onto query data (``load(..., adata=query)``) only predicts: the query needs no labels,
        # and a test set may well hold a single observed class of some assay.
        query = kwargs.get("source_registry") is not None
        if not query or labels_key in adata.obsm:
            labels = check_labels(adata, labels_key, bag_key)
            if not query:
                _check_assays_learnable(labels, adata.obs[bag_key].to_numpy())
        if group_key is not None:
            n = adata.obs[group_key].groupby(adata.obs[bag_key].to_numpy()).nunique()
            if (n > 1).any():
                raise ValueError(
                    f"adata.obs[{group_key!r}] (argument `group_key`) varies within bags of {bag_key!r}, e.g. "
                    f"{_preview(n.index[n > 1])}; a bag (well) belongs to one group (compound)."
                )
        setup_method_args = cls._get_setup_method_args(**locals())
        x_field = (
            ObsmField(REGISTRY_KEYS.X_KEY, rep_key)
            if rep_key is not None
            else LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False)
        )
        fields = [x_field, _LabelsField(MIL_KEYS.LABELS_REGISTRY, labels_key)]
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        with quiet_loggers("scvi"):  # its "Using column names" note would print on every setup
            adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    # ------------------------------------------------------------------------------------------------ init
    def _init_mil(
        self, adata: AnnData, primary_assays: Sequence[str] | None, module_kwargs: dict[str, Any]
    ) -> None:
        for name in ("n_hidden", "n_head_hidden"):
            if name in module_kwargs and not (_is_int(module_kwargs[name]) and module_kwargs[name] >= 1):
                raise ValueError(f"`{name}` must be an integer ≥ 1, got {module_kwargs[name]!r}.")
        dropout = module_kwargs.get("dropout", 0.0)
        if not (_is_real(dropout) and 0 <= dropout < 1):
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}.")
        state = self.adata_manager.get_state_registry(MIL_KEYS.LABELS_REGISTRY)
        self.assays = [str(c) for c in state[_LabelsField.COLUMN_NAMES_KEY]]
        if primary_assays is not None:
            primary_assays = [str(a) for a in primary_assays]
            unknown = [a for a in primary_assays if a not in self.assays]
            if unknown:
                raise ValueError(
                    f"`primary_assays` {unknown} are not assays of the labels; assays are {_preview(self.assays)}."
                )
        self.primary_assays = primary_assays
        X = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        self.n_input = X.shape[1]
        self.module = self._module_cls(self.n_input, len(self.assays), **module_kwargs)
        self._model_summary_string = (
            f"{type(self).__name__}: {len(self.assays)} assays, {self.n_input}-d instances, "
            + ", ".join(f"{k}={v}" for k, v in module_kwargs.items())
        )

    @property
    def _setup(self) -> dict:
        return self.adata_manager.registry["setup_args"]

    # ------------------------------------------------------------------------------------------------ data
    def _bag_data(self, adata: AnnData | None = None, *, require_labels: bool = False) -> BagData:
        """Bags of ``adata`` (default: the training AnnData) with the registered representation."""
        s = self._setup
        if adata is None or adata is self.adata:
            adata = self.adata
            X = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        else:
            validate_hci(
                adata,
                plate_key=None,
                bag_key=s["bag_key"],
                compound_key=None,
                rep_key=s["rep_key"],
                layer=s["layer"],
            )
            X = get_rep(adata, rep_key=s["rep_key"], layer=s["layer"])
            if X.shape[1] != self.n_input:
                raise ValueError(
                    f"`adata` has {X.shape[1]}-d instances; the model was set up with {self.n_input}-d."
                )
        X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
        labels = None
        if require_labels:  # training; queries never read labels
            lab = check_labels(adata, s["labels_key"], s["bag_key"])
            missing = [a for a in self.assays if a not in lab.columns]
            if missing:
                raise ValueError(
                    f"adata.obsm[{s['labels_key']!r}] lacks the assays {_preview(missing)} of the model."
                )
            labels = lab[self.assays].to_numpy(np.float32)
        groups = (
            adata.obs[s["group_key"]].astype(str).to_numpy()
            if s["group_key"] and s["group_key"] in adata.obs
            else None
        )
        return BagData.from_arrays(
            X, adata.obs[s["bag_key"]].astype(str).to_numpy(), labels, len(self.assays), groups
        )

    # ------------------------------------------------------------------------------------------------ train
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
        max_instances: int | None = None,
        group_by_size: bool = False,
        enable_progress_bar: bool = True,
        **trainer_kwargs,
    ) -> None:
        """Train with AdamW and cosine annealing; early stopping on validation AUROC; best weights restored.

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
            Seeds the weight initialisation (the module is re-initialised before its first training), the
            split, the batch order, subsampling and dropout (through ``lightning.seed_everything``).
        accelerator, devices
            Lightning's; ``"auto"`` uses a GPU when present.
        pos_weight
            Weight positives of each assay by n_neg / n_pos of its observed training labels.
        max_instances
            Randomly subsample training bags larger than this (off by default; never in validation or queries).
        group_by_size
            Batch training bags of similar size together (shuffled, then sorted by size within windows of 50
            batches; ``hcitools.dataloaders.SizeGroupedSampler``). Cuts the padding of very ragged bags
            (e.g. cells per well); off by default because batches then correlate with bag size, which can carry
            label information (toxic compounds leave fewer cells).
        enable_progress_bar
            Show Lightning's progress bar.
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer` (e.g. ``strategy="ddp"``, see Notes). Early stopping is set
            up here (``patience``, ``warmup_epochs``); scvi-tools' ``early_stopping*`` arguments are refused.

        Notes
        -----
        ``model.history`` holds per-epoch ``train_loss``, ``validation_loss``, ``validation_auroc_<assay>`` and
        ``validation_mean_auroc``; ``model.best_epoch`` the epoch whose weights were kept.

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
        validation_values = _check_train_args(
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
        seed_and_reset(self, seed)
        data = self._bag_data(require_labels=True)
        val_bags = None
        if validation_key is not None:
            col = self.adata.obs[validation_key] if validation_key in self.adata.obs else None
            if col is None:
                raise KeyError(f"adata.obs has no column {validation_key!r} (argument `validation_key`).")
            per_bag = col.to_numpy()[data.order[data.starts]]
            val_bags = np.isin(per_bag, list(validation_values))
            n_per_bag = col.groupby(self.adata.obs[self._setup["bag_key"]].to_numpy()).nunique()
            if (n_per_bag > 1).any():
                raise ValueError(
                    f"adata.obs[{validation_key!r}] varies within bags; validation is split by bag."
                )
            if not val_bags.any():
                raise ValueError(f"No bag has adata.obs[{validation_key!r}] in {list(validation_values)}.")
        splitter = self._data_splitter_cls(
            data,
            validation_size=validation_size,
            validation_bags=val_bags,
            batch_size=batch_size,
            seed=seed,
            max_instances=max_instances,
            group_by_size=group_by_size,
        )
        train_labels = data.labels[splitter.train_idx].numpy()
        n_pos = (train_labels == 1).sum(0)
        n_neg = (train_labels == 0).sum(0)
        self.module.pos_weight.copy_(
            torch.as_tensor(np.where(n_pos > 0, n_neg / np.maximum(n_pos, 1), 1.0), dtype=torch.float32)
        )
        self.module.use_pos_weight = pos_weight
        val_groups = data.groups[splitter.val_idx] if data.groups is not None else None
        plan = self._training_plan_cls(
            self.module,
            assays=self.assays,
            primary_assays=self.primary_assays,
            lr=lr,
            weight_decay=weight_decay,
            max_epochs=max_epochs,
            bag_groups=data.groups,
        )
        val_labels = data.labels[splitter.val_idx].numpy()
        primary = plan.primary_index
        evaluable = (
            np.isfinite(per_task_auroc(np.zeros_like(val_labels), val_labels, val_groups))[primary].any()
            if splitter.n_val
            else False
        )
        callbacks = list(trainer_kwargs.pop("callbacks", []))
        trainer_kwargs.setdefault("log_every_n_steps", 1)
        best = RestoreBestWeights(VAL_MEAN_AUROC, "max")
        if evaluable:
            # our own callback rather than scvi-tools' `early_stopping=True`, which it turns off under DDP
            early_stopping = LoudEarlyStopping(
                monitor=VAL_MEAN_AUROC,
                min_delta=0.0,
                patience=patience,
                mode="max",
                warmup_epochs=warmup_epochs,
            )
            callbacks += [best, early_stopping]
            trainer_kwargs["check_val_every_n_epoch"] = 1
        else:
            warnings.warn(
                "The validation bags hold no primary assay with both classes observed: training runs all "
                f"{max_epochs} epochs without early stopping or model selection.",
                UserWarning,
                stacklevel=2,
            )
            if splitter.n_val:
                trainer_kwargs.setdefault("check_val_every_n_epoch", 1)
        history = self.history_ if isinstance(self.history_, dict) else {}
        n_before = len(history[VAL_MEAN_AUROC]) if VAL_MEAN_AUROC in history else 0
        with history_file_dir(trainer_kwargs) as trainer_kwargs, warnings.catch_warnings():
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
            run_training(self, runner)
        # with a spawn-based strategy the callback ran in child processes: read the best epoch off the history
        self.best_epoch = best.best_epoch
        if self.best_epoch is None and evaluable:
            self.best_epoch = _best_epoch_from_history(self.history_, n_before)
            if self.best_epoch is None:
                warnings.warn(
                    "Training ran in child processes and left no history in this process (a custom `logger` "
                    "replaces the history file of scvi-tools' logger): `model.history` and `model.best_epoch` "
                    "are unavailable; the model holds the restored best weights. Use strategy='ddp' or no "
                    "`logger` to get them.",
                    UserWarning,
                    stacklevel=2,
                )
        self.train_params_ = {
            "max_epochs": max_epochs,
            "warmup_epochs": warmup_epochs,
            "patience": patience,
            "lr": lr,
            "weight_decay": weight_decay,
            "batch_size": batch_size,
            "seed": seed,
            "pos_weight": pos_weight,
        }

    # ------------------------------------------------------------------------------------------------ queries
    @torch.inference_mode()
    def _run(self, adata: AnnData | None, batch_size: int) -> tuple[BagData, dict[str, np.ndarray]]:
        self._check_if_trained(warn=True)
        data = self._bag_data(adata)
        self.module.eval()
        out: dict[str, list] = {
            "prob": [],
            "attention": [],
            "bag_embedding": [],
            "instance_embedding": [],
            "mask": [],
        }
        for batch in bag_loader(data, np.arange(data.n_bags), batch_size=batch_size):
            res = self.module.inference(batch[MIL_KEYS.X], batch[MIL_KEYS.MASK])
            mask = batch[MIL_KEYS.MASK]
            out["prob"].append(torch.sigmoid(res["logits"]).cpu().numpy())
            out["attention"].append(
                [a[:, m].T.cpu().numpy() for a, m in zip(res["attention"], mask, strict=True)]
            )
            out["bag_embedding"].append(res["bag_embedding"].cpu().numpy())
            out["instance_embedding"].append(
                [e[m].cpu().numpy() for e, m in zip(res["instance_embedding"], mask, strict=True)]
            )
        return data, {
            "prob": np.concatenate(out["prob"]),
            "attention": [a for part in out["attention"] for a in part],
            "bag_embedding": np.concatenate(out["bag_embedding"]),
            "instance_embedding": [e for part in out["instance_embedding"] for e in part],
        }

    def _unsort(self, data: BagData, per_bag_rows: list[np.ndarray]) -> np.ndarray:
        stacked = np.concatenate(per_bag_rows)
        out = np.empty_like(stacked)
        out[data.order] = stacked
        return out

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
            Instances to predict (same representation as at setup); default the training AnnData. Labels are
            not needed.
        level
            ``"bag"`` or ``"compound"``.
        batch_size
            Bags per forward pass.

        Returns
        -------
        DataFrame, rows = bags (or groups), columns = assays. Nothing is written into ``adata``.
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
        data, out = self._run(adata, batch_size)
        pred = pd.DataFrame(out["prob"], index=pd.Index(data.bag_names, name=None), columns=self.assays)
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
        data, out = self._run(adata, batch_size)
        return self._unsort(data, out["attention"])

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
        data, out = self._run(adata, batch_size)
        if level == "instance":
            return self._unsort(data, out["instance_embedding"])
        if level == "bag":
            return np.stack([e.mean(axis=0) for e in out["instance_embedding"]])
        return out["bag_embedding"]
