"""Training plan of the MIL classifiers: AdamW + cosine annealing, per-assay validation AUROC."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from .._constants import MIL_KEYS

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

    scvi-tools' :class:`~scvi.train.TrainingPlan` logs ELBO terms; a classifier needs task metrics instead, so
    this plan logs ``train_loss`` per epoch and, after each validation epoch, ``validation_auroc_<assay>`` and
    ``validation_mean_auroc`` (mean over ``primary_assays``, the early-stopping monitor).

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
    val_groups
        Group (compound) of each validation bag, in validation-loader order; bag probabilities are averaged per
        group before AUROC. None evaluates bags.
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
        val_groups: np.ndarray | None = None,
    ):
        super().__init__()
        self.module = module
        self.assays = list(assays)
        primary = list(primary_assays) if primary_assays is not None else self.assays
        self.primary_index = np.array([self.assays.index(a) for a in primary])
        self.lr, self.weight_decay, self.max_epochs = lr, weight_decay, max_epochs
        self.val_groups = val_groups
        self._val_prob: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []

    def forward(self, batch):
        return self.module(batch)

    def training_step(self, batch, batch_idx):
        _, _, loss = self.module(batch)
        self.log(
            "train_loss",
            loss.loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=loss.n_obs_minibatch,
        )
        return loss.loss

    def validation_step(self, batch, batch_idx):
        inference, _, loss = self.module(batch)
        self.log("validation_loss", loss.loss, on_step=False, on_epoch=True, batch_size=loss.n_obs_minibatch)
        self._val_prob.append(torch.sigmoid(inference["logits"]).detach().cpu())
        self._val_labels.append(batch[MIL_KEYS.LABELS].detach().cpu())

    def on_validation_epoch_end(self):
        if not self._val_prob:
            return
        prob = torch.cat(self._val_prob).numpy()
        labels = torch.cat(self._val_labels).numpy()
        self._val_prob, self._val_labels = [], []
        auroc = per_task_auroc(prob, labels, self.val_groups)
        for name, value in zip(self.assays, auroc, strict=True):
            if np.isfinite(value):
                self.log(f"validation_auroc_{name}", float(value))
        primary = auroc[self.primary_index]
        mean = float(np.nanmean(primary)) if np.isfinite(primary).any() else 0.5
        self.log(VAL_MEAN_AUROC, mean, prog_bar=True)

    def configure_optimizers(self):
        params = [p for p in self.module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.max_epochs))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


class RestoreBestWeights(pl.Callback):
    """Keep a copy of the module's weights at the best value of ``monitor`` and restore them when training ends.

    Lightning's EarlyStopping stops but does not roll back, and scvi-tools' checkpointing writes whole models to
    disk; this keeps the best state in memory.
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
        if better:
            self.best, self.best_epoch = value, trainer.current_epoch
            self.state = copy.deepcopy(
                {k: v.detach().cpu() for k, v in pl_module.module.state_dict().items()}
            )

    def on_train_end(self, trainer, pl_module):
        if self.state is not None:
            pl_module.module.load_state_dict(self.state)
