"""Training plan of the MIL classifiers: AdamW + cosine annealing, per-assay validation AUROC."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from scvi.train import LoudEarlyStopping
from sklearn.metrics import roc_auc_score

from .._constants import MIL_KEYS, MODULE_KEYS
from .._utils import logger
from ._weighting import TaskWeighting, make_weighting

VAL_MEAN_AUROC = "validation_mean_auroc"


def per_task_auroc(prob: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """AUROC per task over observed labels (scikit-learn); NaN where a task has a single observed class.

    With ``groups`` (e.g. compounds), bag probabilities are first averaged per group.
    """
    if groups is not None:
        prob = pd.DataFrame(prob).groupby(groups).mean().to_numpy()
        labels = pd.DataFrame(labels).groupby(groups).first().to_numpy()
    out = np.full(prob.shape[1], np.nan)
    for t in range(prob.shape[1]):
        y = labels[:, t]
        keep = ~np.isnan(y)
        if keep.any() and 0 < y[keep].sum() < keep.sum():
            out[t] = roc_auc_score(y[keep], prob[keep, t])
    return out


class MILTrainingPlan(pl.LightningModule):
    """Optimisation and metrics of MIL classifiers (a Lightning module used as scvi-tools' training plan).

    scvi-tools' :class:`~scvi.train.TrainingPlan` logs ELBO terms; a classifier needs task metrics instead. The
    module's loss returns the undetached per-task losses and the number of observed labels per task; this plan
    combines them through a task-weighting strategy (:mod:`hcitools.train._weighting`) and logs, per epoch,
    ``train_loss`` (the combined loss), ``task_loss_<assay>`` (NaN in an epoch without labels of the assay),
    ``task_weight_<assay>``, ``validation_loss``, and after each validation epoch ``validation_auroc_<assay>``
    (NaN when the validation bags hold a single observed class of the assay) and ``validation_mean_auroc`` (mean
    over the finite AUROCs of ``primary_assays``, 0.5 when there is none; the early-stopping monitor).

    Under data-parallel training (Lightning's DDP strategies) each process validates a shard of the validation
    bags. The probabilities, labels and bag indices of all shards are gathered, bags that the distributed
    sampler repeated to even out the shards are counted once, and every process computes the AUROC of the whole
    validation set, so that early stopping and model selection agree across processes. Losses are averaged
    across processes.

    Parameters
    ----------
    module
        A :class:`~hcitools.module.MILModuleBase`.
    assays
        Assay names (columns of the labels).
    primary_assays
        Assays whose mean validation AUROC selects the model (default: all).
    lr, weight_decay
        AdamW parameters.
    max_epochs
        Period of the cosine annealing schedule.
    bag_groups
        Group (compound) of every bag, indexed by bag index (``batch["bag_index"]``), i.e. an array over all bags
        of the data, not only the validation bags; validation probabilities are averaged per group before AUROC.
        None evaluates bags.
    pos_weight
        T weights of the positive class in the BCE (e.g. ``n_neg / n_pos`` of the training bags), or None.
    weighting
        A name of ``hcitools.train._weighting.WEIGHTINGS`` (``"equal"``) or a
        :class:`~hcitools.train.TaskWeighting`.
    weighting_kwargs
        Keyword arguments of the strategy named by ``weighting``.
    """

    def __init__(
        self,
        module,
        *,
        assays: Sequence[str],
        primary_assays: Sequence[str] | None = None,
        lr: float = 1e-4,
        weight_decay: float = 5e-4,
        max_epochs: int = 100,
        bag_groups: np.ndarray | None = None,
        pos_weight: torch.Tensor | None = None,
        weighting: str | TaskWeighting = "equal",
        weighting_kwargs: dict | None = None,
    ):
        super().__init__()
        self.module = module
        self.assays = list(assays)
        primary = list(primary_assays) if primary_assays is not None else self.assays
        self.primary_index = np.array([self.assays.index(a) for a in primary])
        self.lr, self.weight_decay, self.max_epochs = lr, weight_decay, max_epochs
        self.bag_groups = None if bag_groups is None else np.asarray(bag_groups)
        self.weighting = make_weighting(weighting, len(self.assays), weighting_kwargs)
        self.register_buffer(
            "pos_weight", None if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float32)
        )
        self._val_prob: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []
        self._val_bags: list[torch.Tensor] = []
        self._reset_task_sums()

    def _reset_task_sums(self) -> None:
        self._task_sums: torch.Tensor | None = None  # 3 × T: loss sum, weight sum, batches with labels

    def forward(self, batch):
        return self.module(batch, loss_kwargs={"pos_weight": self.pos_weight})

    def on_train_start(self):
        # queries and ``load`` leave the module in eval mode, which Lightning keeps for submodules
        self.module.train()

    def _step(self, batch) -> tuple:
        inference, _, out = self(batch)
        task_loss = out.extra_metrics[MODULE_KEYS.TASK_LOSS]
        task_count = out.extra_metrics[MODULE_KEYS.TASK_COUNT]
        loss, weights = self.weighting(task_loss, task_count)
        return inference, loss, task_loss, task_count, weights.detach(), out.n_obs_minibatch

    def training_step(self, batch, batch_idx):
        _, loss, task_loss, task_count, weights, n = self._step(batch)
        observed = (task_count > 0).to(task_loss.dtype)
        sums = torch.stack([task_loss.detach() * observed, weights * observed, observed])
        self._task_sums = sums if self._task_sums is None else self._task_sums + sums
        self.log(
            "train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True
        )
        return loss

    def on_train_epoch_end(self):
        sums, self._task_sums = self._task_sums, None
        if sums is None:
            return
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        n = sums[2]
        mean = torch.where(n > 0, sums[:2] / n.clamp_min(1), torch.full_like(sums[:2], float("nan")))
        mean = mean.cpu().numpy()
        log = {"on_epoch": True, "sync_dist": False}  # reduced above: the same value in every process
        for t, name in enumerate(self.assays):
            self.log(f"task_loss_{name}", float(mean[0, t]), **log)
            self.log(f"task_weight_{name}", float(mean[1, t]), **log)

    def validation_step(self, batch, batch_idx):
        inference, loss, *_, n = self._step(batch)
        self.log("validation_loss", loss, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        self._val_prob.append(torch.sigmoid(inference[MODULE_KEYS.LOGITS]).detach().float())
        self._val_labels.append(batch[MIL_KEYS.LABELS].detach())
        self._val_bags.append(batch[MIL_KEYS.BAG_INDEX].detach())

    def _gather_rows(self, parts: list[torch.Tensor], empty: torch.Tensor) -> torch.Tensor:
        """Concatenate this process's ``parts`` and, in distributed runs, the rows of every other process.

        ``self.all_gather`` needs equal shapes on all processes; shards are padded to the longest and cut back.
        ``empty`` (zero rows) stands in for a process without validation batches.
        """
        local = torch.cat(parts) if parts else empty
        if self.trainer.world_size == 1:
            return local
        with warnings.catch_warnings():
            # Lightning gathers through torch.distributed.nn.functional, deprecated in recent torch
            warnings.filterwarnings("ignore", message=".*all_gather is deprecated", category=FutureWarning)
            counts = self.all_gather(torch.tensor(len(local), device=local.device)).reshape(-1).tolist()
            pad = local.new_zeros((max(counts) - len(local), *local.shape[1:]))
            gathered = self.all_gather(torch.cat([local, pad]))
        return torch.cat([rows[:n] for rows, n in zip(gathered, counts, strict=True)])

    def _validation_outputs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Probabilities, labels and indices of the validation bags of the epoch, from all processes, one row
        per bag, sorted by bag index (the order of the validation loader in a single process)."""
        n_tasks = len(self.assays)
        prob = self._gather_rows(self._val_prob, torch.zeros(0, n_tasks, device=self.device))
        labels = self._gather_rows(self._val_labels, torch.zeros(0, n_tasks, device=self.device))
        bags = self._gather_rows(self._val_bags, torch.zeros(0, dtype=torch.long, device=self.device))
        self._val_prob, self._val_labels, self._val_bags = [], [], []
        # DistributedSampler repeats bags so that every process gets as many: keep each bag once
        bags, first = np.unique(bags.cpu().numpy(), return_index=True)
        return prob.cpu().numpy()[first], labels.cpu().numpy()[first], bags

    def on_validation_epoch_end(self):
        prob, labels, bags = self._validation_outputs()
        if len(bags) == 0:
            return
        groups = self.bag_groups[bags] if self.bag_groups is not None else None
        auroc = per_task_auroc(prob, labels, groups)
        if not self.trainer.sanity_checking:
            self.weighting.on_validation_epoch_end(auroc)
        # Every process holds the same values; syncing them with "max" is exact (a mean need not be) and tells
        # Lightning that they are valid across processes. Without distributed training it is a no-op.
        log = {"sync_dist": True, "reduce_fx": "max"}
        for name, value in zip(self.assays, auroc, strict=True):  # NaN: a single observed class this epoch
            self.log(f"validation_auroc_{name}", float(value), **log)
        primary = auroc[self.primary_index]
        mean = float(np.nanmean(primary)) if np.isfinite(primary).any() else 0.5
        self.log(VAL_MEAN_AUROC, mean, prog_bar=True, **log)

    def configure_optimizers(self):
        params = [p for p in self.module.parameters() if p.requires_grad]
        params += [p for p in self.weighting.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.max_epochs))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


class EarlyStopping(LoudEarlyStopping):
    """scvi-tools' :class:`~scvi.train.LoudEarlyStopping` (early stopping with ``warmup_epochs``) whose reason for
    stopping goes to the ``"hcitools"`` logger (shown at ``ht.settings.verbosity = "info"``) instead of ``print``."""

    def teardown(self, trainer, pl_module, stage=None) -> None:
        if self.early_stopping_reason is not None:
            logger.info(self.early_stopping_reason)


class RestoreBestWeights(pl.Callback):
    """Keep a copy of the module's weights at the best value of ``monitor`` and restore them when training ends.

    Lightning's EarlyStopping stops but does not roll back, and scvi-tools' checkpointing writes whole models to
    disk; this keeps the best state in memory. In distributed runs the decision of process 0 is broadcast, so
    that every process keeps (and restores) the weights of the same epoch.
    """

    def __init__(self, monitor: str = VAL_MEAN_AUROC, mode: str = "max"):
        super().__init__()
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.state: dict | None = None

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if trainer.world_size > 1:
            better = trainer.strategy.broadcast(better, src=0)
        if better:
            self.best, self.best_epoch = value, trainer.current_epoch
            self.state = copy.deepcopy(
                {k: v.detach().cpu() for k, v in pl_module.module.state_dict().items()}
            )

    def on_train_end(self, trainer, pl_module):
        if self.state is not None:
            pl_module.module.load_state_dict(self.state)
