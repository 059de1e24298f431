"""Thesis 000's scheduled pseudo-labels (Algorithms 1–4) as a Lightning callback.

After ``warmup`` epochs on the observed labels, every ``every`` epochs the callback runs the module over the
validation bags, recomputes the per-assay thresholds from the correctly classified ones
(:func:`hcitools.tl._impute.correct_thresholds`, 000 Alg. 3), runs it over the training bags and refreshes the
pseudo-labels of their unlabelled entries (Alg. 2; Alg. 4 with emphasis factors for non-key assays). The labels
the training plan uses are replaced by one n_bags × T tensor on the module's device
(``MILTrainingPlan.labels_override``), gathered per batch by bag index: no per-bag Python loop in the step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from .._constants import MODULE_KEYS
from .._validate import _preview, check_int, check_real

_KEYS = ("warmup", "every", "percentile", "emphasis", "key_assays")


def check_pseudo_labels(options: Any, assays: Sequence[str], primary_assays: Sequence[str] | None) -> dict:
    """The options of ``model.train(pseudo_labels=...)``, checked, with defaults filled in."""
    if not isinstance(options, dict):
        raise TypeError(
            f"`pseudo_labels` must be a dict (e.g. dict(warmup=10, every=5)) or None, got {type(options).__name__}."
        )
    unknown = sorted(set(options) - set(_KEYS))
    if unknown:
        raise ValueError(f"`pseudo_labels` takes the keys {list(_KEYS)}; unknown: {unknown}.")
    warmup = check_int(options.get("warmup", 10), "pseudo_labels['warmup']", min=0)
    every = check_int(options.get("every", 5), "pseudo_labels['every']", min=1)
    percentile = check_real(
        options.get("percentile", 0.9), "pseudo_labels['percentile']", min=0.5, max=1, min_inclusive=False
    )
    emphasis = options.get("emphasis", (1.0, 1.0))
    if not isinstance(emphasis, Sequence) or isinstance(emphasis, str) or len(emphasis) != 2:
        raise TypeError(f"`pseudo_labels['emphasis']` must be a pair (α_pos, α_neg), got {emphasis!r}.")
    a_pos = check_real(emphasis[0], "pseudo_labels['emphasis'][0] (α_pos)", min=1)
    a_neg = check_real(emphasis[1], "pseudo_labels['emphasis'][1] (α_neg)", min=0, max=1)
    key = options.get("key_assays", primary_assays)
    key = list(assays) if key is None else [key] if isinstance(key, str) else [str(a) for a in key]
    missing = [a for a in key if a not in assays]
    if missing:
        raise ValueError(
            f"`pseudo_labels['key_assays']` {_preview(missing)} are not assays of the model ({_preview(assays)})."
        )
    return {
        "warmup": warmup,
        "every": every,
        "percentile": percentile,
        "emphasis": (a_pos, a_neg),
        "key_assays": key,
    }


class PseudoLabels(pl.Callback):
    """Refresh pseudo-labels of the unlabelled training entries on a schedule (000 Algorithms 1–4).

    Parameters
    ----------
    splitter
        The :class:`~hcitools.dataloaders.BagDataSplitter` of the run (its ``include_unlabelled`` must be True,
        so that bags without any observed label are trained on once they have pseudo-labels).
    warmup
        Epochs on the observed labels only; the first thresholds are computed at the end of epoch ``warmup``
        (counted from 1) and used from the next epoch on.
    every
        Epochs between refreshes (f_pseudo).
    percentile
        Positive threshold: this quantile of the validation probabilities of correctly classified positives;
        negative threshold: the ``1 − percentile`` quantile of those of correctly classified negatives.
    emphasis
        ``(α_pos, α_neg)``: the thresholds of assays outside ``key_assays`` are multiplied by these (Alg. 4).
    key_assays
        Assays with the plain thresholds.

    Notes
    -----
    Logs per epoch (into ``model.history``) ``pseudo_labels_pos`` and ``pseudo_labels_neg`` (entries holding a
    pseudo-label in that epoch) and ``pseudo_pos_<assay>`` / ``pseudo_neg_<assay>``. ``thresholds`` keeps the
    last (th_pos, th_neg) and ``refreshed`` the epochs (0-based) after which they were recomputed.
    """

    def __init__(self, splitter, *, warmup, every, percentile, emphasis, key_assays):
        super().__init__()
        self.splitter = splitter
        self.warmup, self.every, self.percentile = int(warmup), int(every), float(percentile)
        self.emphasis = tuple(float(a) for a in emphasis)
        self.key_assays = list(key_assays)
        self.thresholds: tuple[np.ndarray, np.ndarray] | None = None
        self.refreshed: list[int] = []
        self._counts = None

    @torch.no_grad()
    def _probabilities(self, pl_module, bags: np.ndarray) -> torch.Tensor:
        from ..dataloaders import bag_loader

        module = pl_module.module
        was_training = module.training
        module.eval()
        out = []
        for batch in bag_loader(self.splitter.data, bags, batch_size=self.splitter.batch_size):
            batch = {k: v.to(pl_module.device) for k, v in batch.items()}
            res = module.inference(
                **module._get_inference_input(batch)
            )  # every input the module reads (M4: positions)
            out.append(torch.sigmoid(res[MODULE_KEYS.LOGITS]).float())
        module.train(was_training)
        return torch.cat(out)

    def refresh(self, pl_module) -> None:
        """Recompute the thresholds on the validation bags and the pseudo-labels of the training bags."""
        from ..tl._impute import apply_thresholds, correct_thresholds, emphasised

        data, assays = self.splitter.data, pl_module.assays
        val, train = self.splitter.val_idx, self.splitter.loader_train_idx
        q_pos = np.full(len(assays), self.percentile)
        q_neg = np.full(len(assays), 1.0 - self.percentile)
        prob_val = self._probabilities(pl_module, val).cpu().numpy()
        th_pos, th_neg, *_ = correct_thresholds(prob_val, data.labels[val].numpy(), q_pos, q_neg)
        th_pos, th_neg = emphasised(th_pos, th_neg, np.isin(assays, self.key_assays), self.emphasis)
        self.thresholds = (th_pos, th_neg)
        prob_train = self._probabilities(pl_module, train).cpu().numpy()
        observed = data.labels[train].numpy()
        new = apply_thresholds(prob_train, observed, th_pos, th_neg)  # from the observed labels (Alg. 2)
        labels = data.labels.clone()
        merged = np.where(np.isnan(new), observed, new)
        labels[torch.as_tensor(train)] = torch.as_tensor(merged, dtype=labels.dtype)
        pl_module.labels_override = labels.to(pl_module.device)
        self._counts = ((new == 1).sum(0), (new == 0).sum(0))

    def on_train_epoch_end(self, trainer, pl_module):
        counts = self._counts or (np.zeros(len(pl_module.assays), int), np.zeros(len(pl_module.assays), int))
        # counts of the labels this epoch trained with (0 before the first refresh)
        pl_module.log("pseudo_labels_pos", float(counts[0].sum()), on_epoch=True)
        pl_module.log("pseudo_labels_neg", float(counts[1].sum()), on_epoch=True)
        for name, n_pos, n_neg in zip(pl_module.assays, counts[0], counts[1], strict=True):
            pl_module.log(f"pseudo_pos_{name}", float(n_pos), on_epoch=True)
            pl_module.log(f"pseudo_neg_{name}", float(n_neg), on_epoch=True)
        epoch = trainer.current_epoch + 1  # epochs done
        if epoch >= self.warmup and (epoch - self.warmup) % self.every == 0 and self.splitter.n_val:
            self.refresh(pl_module)
            self.refreshed.append(trainer.current_epoch)

    def on_train_end(self, trainer, pl_module):
        pl_module.labels_override = None
