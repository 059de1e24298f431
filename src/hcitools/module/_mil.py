"""MIL modules (scvi-tools ``BaseModuleClass``): MoMIL, mean-pooled MLP and multi-label MIL."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn

from .._constants import MIL_KEYS, MODULE_KEYS
from ..nn import Dropout, MultiTaskAttentionHeads, MultiTaskDSMILHeads, masked_mean

LOSS_REDUCTIONS = ("assay_mean", "label_sum")


def masked_bce(
    logits: torch.Tensor,
    labels: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
    reduction: str = "assay_mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task binary cross-entropy over observed labels only (NaN = not measured).

    Parameters
    ----------
    logits, labels
        B × T.
    pos_weight
        T weights of the positive class (``n_neg / n_pos`` of the training bags), or None.
    reduction
        ``"assay_mean"``: each task's loss is the mean BCE over the bags where it is observed, so every assay
        counts the same whatever its number of labels. ``"label_sum"``: the MoMIL paper's objective (001, eq. 2),
        the sum of BCE over every observed label; per batch it is divided by the number of bags B, so a task's
        loss is its sum over observed labels / B and the learning rate does not depend on the batch size.

    Returns
    -------
    ``(task_loss, task_count)``: T undetached per-task losses (0 for a task without observed label in the batch)
    and T counts of observed labels. A NaN label contributes exactly zero loss and gradient.
    """
    observed = ~torch.isnan(labels)
    target = torch.nan_to_num(labels, nan=0.0)
    bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction="none")
    bce = torch.where(observed, bce, torch.zeros_like(bce))
    count = observed.sum(0)
    if reduction == "assay_mean":
        task_loss = bce.sum(0) / count.clamp_min(1)
    elif reduction == "label_sum":
        task_loss = bce.sum(0) / max(1, logits.shape[0])
    else:
        raise ValueError(f"`loss_reduction` must be one of {LOSS_REDUCTIONS}, got {reduction!r}.")
    return task_loss, count


class MILModuleBase(BaseModuleClass):
    """Shared plumbing of the MIL modules: ``inference`` pools padded bags, ``loss`` is a per-task masked BCE.

    A subclass implements :meth:`pool` and declares its outputs in ``output_kinds`` (name → kind), so that the
    model's queries return whatever the module produces without edits to the model class. Kinds:
    ``"bag"`` (B × …, one row per bag), ``"bag_task_instance"`` (B × T × N, e.g. attention; returned per instance),
    ``"bag_instance"`` (B × N × …, e.g. instance embeddings; returned per instance).

    Parameters
    ----------
    n_tasks
        Number of tasks (assays) T.
    loss_reduction
        See :func:`masked_bce`.
    """

    output_kinds: ClassVar[dict[str, str]] = {
        MODULE_KEYS.LOGITS: "bag",
        MODULE_KEYS.ATTENTION: "bag_task_instance",
        MODULE_KEYS.BAG_EMBEDDING: "bag",
        MODULE_KEYS.INSTANCE_EMBEDDING: "bag_instance",
    }

    def __init__(self, n_tasks: int, loss_reduction: str = "assay_mean"):
        super().__init__()
        if loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"`loss_reduction` must be one of {LOSS_REDUCTIONS}, got {loss_reduction!r}.")
        self.n_tasks = n_tasks
        self.loss_reduction = loss_reduction

    def _get_inference_input(self, tensors: dict[str, torch.Tensor], **kwargs) -> dict[str, torch.Tensor]:
        return {"x": tensors[MIL_KEYS.X], "mask": tensors[MIL_KEYS.MASK]}

    def _get_generative_input(self, tensors, inference_outputs, **kwargs) -> dict:
        return {}

    def generative(self, **kwargs) -> dict:
        """MIL models have no generative part."""
        return {}

    def pool(
        self, x: torch.Tensor, mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    @auto_move_data
    def inference(self, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pool padded bags (``x``: B × N × D, ``mask``: B × N); returns the outputs of ``output_kinds``."""
        return self.pool(x, mask)

    def task_losses(
        self, inference_outputs: dict, labels: torch.Tensor, pos_weight: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-task losses and counts of observed labels (see :func:`masked_bce`)."""
        return masked_bce(inference_outputs[MODULE_KEYS.LOGITS], labels, pos_weight, self.loss_reduction)

    def loss(
        self, tensors, inference_outputs, generative_outputs, pos_weight: torch.Tensor | None = None
    ) -> LossOutput:
        """Loss terms of a batch.

        ``loss`` is the plain sum of the per-task losses (the ``"equal"`` weighting); the training plan recombines
        ``extra_metrics[MODULE_KEYS.TASK_LOSS]`` (undetached, T) with ``extra_metrics[MODULE_KEYS.TASK_COUNT]``
        (observed labels per task) through its task-weighting strategy.
        """
        labels = tensors[MIL_KEYS.LABELS]
        task_loss, count = self.task_losses(inference_outputs, labels, pos_weight)
        return LossOutput(
            loss=task_loss[count > 0].sum(),
            n_obs_minibatch=labels.shape[0],
            extra_metrics={MODULE_KEYS.TASK_LOSS: task_loss, MODULE_KEYS.TASK_COUNT: count},
        )


def _projector(n_input: int, n_hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_input, n_hidden), nn.ReLU(), Dropout(dropout))


class MoMILModule(MILModuleBase):
    """MoMIL: a shared projector F_φ (D → d) then one MIL head per assay, all heads in one batched operation.

    Parameters
    ----------
    n_input
        Instance feature dimension D.
    n_tasks
        Number of assays T.
    head
        ``"dsmil"``, ``"gated_abmil"`` or ``"abmil"``.
    n_hidden
        Shared projector dimension d.
    n_head_hidden
        Per-assay head dimension h.
    dropout
        Dropout after the shared projector and on each head's projected instances.
    loss_reduction
        ``"assay_mean"`` or ``"label_sum"`` (see :func:`masked_bce`).

    Notes
    -----
    With DSMIL heads the module also outputs both streams (``MODULE_KEYS.INSTANCE_LOGITS``, the max-instance
    score, and ``MODULE_KEYS.BAG_LOGITS``), each trained with its own BCE: a task's loss is
    0.5 · BCE(max-instance) + 0.5 · BCE(bag), as in DSMIL's reference code; the prediction (``logits``) is the mean
    of the two logits.
    """

    def __init__(
        self,
        n_input: int,
        n_tasks: int,
        *,
        head: str = "dsmil",
        n_hidden: int = 128,
        n_head_hidden: int = 64,
        dropout: float = 0.5,
        loss_reduction: str = "assay_mean",
    ):
        super().__init__(n_tasks, loss_reduction)
        self.head = head
        self.projector = _projector(n_input, n_hidden, dropout)
        if head in ("gated_abmil", "abmil"):
            self.heads = MultiTaskAttentionHeads(
                n_tasks, n_hidden, n_head_hidden, gated=head == "gated_abmil", dropout=dropout
            )
        elif head == "dsmil":
            self.heads = MultiTaskDSMILHeads(n_tasks, n_hidden, n_head_hidden, dropout=dropout)
            self.output_kinds = {
                **MILModuleBase.output_kinds,
                MODULE_KEYS.INSTANCE_LOGITS: "bag",
                MODULE_KEYS.BAG_LOGITS: "bag",
            }
        else:
            raise ValueError(f"`head` must be 'dsmil', 'gated_abmil' or 'abmil', got {head!r}.")

    def pool(self, x, mask):
        h = self.projector(x)
        out = self.heads(h, mask)
        out[MODULE_KEYS.INSTANCE_EMBEDDING] = h
        return out

    def task_losses(self, inference_outputs, labels, pos_weight=None):
        if self.head != "dsmil":
            return super().task_losses(inference_outputs, labels, pos_weight)
        inst, count = masked_bce(
            inference_outputs[MODULE_KEYS.INSTANCE_LOGITS], labels, pos_weight, self.loss_reduction
        )
        bag, _ = masked_bce(
            inference_outputs[MODULE_KEYS.BAG_LOGITS], labels, pos_weight, self.loss_reduction
        )
        return 0.5 * inst + 0.5 * bag, count


class MeanMLPModule(MILModuleBase):
    """Baseline: mean-pool the instances of each bag, then an MLP with T outputs (uniform attention)."""

    def __init__(
        self,
        n_input: int,
        n_tasks: int,
        *,
        n_hidden: int = 128,
        dropout: float = 0.5,
        loss_reduction: str = "assay_mean",
    ):
        super().__init__(n_tasks, loss_reduction)
        self.mlp = nn.Sequential(nn.Linear(n_input, n_hidden), nn.ReLU(), Dropout(dropout))
        self.classifier = nn.Linear(n_hidden, n_tasks)

    def pool(self, x, mask):
        z = self.mlp(masked_mean(x, mask))
        attention = mask.to(x.dtype) / mask.sum(1, keepdim=True).clamp_min(1)
        return {
            MODULE_KEYS.LOGITS: self.classifier(z),
            MODULE_KEYS.ATTENTION: attention[:, None, :].expand(-1, self.n_tasks, -1),
            MODULE_KEYS.BAG_EMBEDDING: z[:, None, :].expand(-1, self.n_tasks, -1),
            MODULE_KEYS.INSTANCE_EMBEDDING: x,
        }


class MultiLabelMILModule(MILModuleBase):
    """Baseline: one gated-attention MIL network with T outputs and a single objective (shared attention)."""

    def __init__(
        self,
        n_input: int,
        n_tasks: int,
        *,
        n_hidden: int = 128,
        n_head_hidden: int = 64,
        dropout: float = 0.5,
        loss_reduction: str = "assay_mean",
    ):
        super().__init__(n_tasks, loss_reduction)
        self.projector = _projector(n_input, n_hidden, dropout)
        self.attention = MultiTaskAttentionHeads(1, n_hidden, n_head_hidden, gated=True)
        self.classifier = nn.Linear(n_head_hidden, n_tasks)

    def pool(self, x, mask):
        h = self.projector(x)
        out = self.attention(h, mask)
        z = out[MODULE_KEYS.BAG_EMBEDDING][:, 0]  # B × h
        return {
            MODULE_KEYS.LOGITS: self.classifier(z),
            MODULE_KEYS.ATTENTION: out[MODULE_KEYS.ATTENTION].expand(-1, self.n_tasks, -1),
            MODULE_KEYS.BAG_EMBEDDING: z[:, None, :].expand(-1, self.n_tasks, -1),
            MODULE_KEYS.INSTANCE_EMBEDDING: h,
        }
