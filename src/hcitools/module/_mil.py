"""MIL modules (scvi-tools ``BaseModuleClass``): MoMIL, mean-pooled MLP and multi-label MIL."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn

from .._constants import MIL_KEYS
from ..nn import Dropout, MultiTaskAttentionHeads, MultiTaskDSMILHeads, masked_mean


def masked_bce(
    logits: torch.Tensor,
    labels: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
    task_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary cross-entropy over observed labels only (NaN = unobserved).

    Per task: mean BCE over the bags where the label is observed; tasks without any observed label in the batch
    contribute nothing. The loss is the (optionally weighted) sum over tasks. Returns (loss, per-task losses).
    """
    observed = ~torch.isnan(labels)
    target = torch.nan_to_num(labels, nan=0.0)
    bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction="none")
    bce = bce * observed
    count = observed.sum(0)
    per_task = bce.sum(0) / count.clamp_min(1)
    if task_weight is not None:
        per_task = per_task * task_weight
    return per_task[count > 0].sum(), per_task


class MILModuleBase(BaseModuleClass):
    """Shared plumbing: inference pools bags into logits; loss is masked BCE."""

    def __init__(self, n_tasks: int):
        super().__init__()
        self.n_tasks = n_tasks
        self.register_buffer("pos_weight", torch.ones(n_tasks))
        self.use_pos_weight = False

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
        """Pool padded bags: returns ``logits`` (B × T), ``attention`` (B × T × N), ``bag_embedding``, ``instance_embedding``."""
        return self.pool(x, mask)

    def loss(
        self, tensors, inference_outputs, generative_outputs, task_weight: torch.Tensor | None = None
    ) -> LossOutput:
        logits = inference_outputs["logits"]
        labels = tensors[MIL_KEYS.LABELS]
        pw = self.pos_weight if self.use_pos_weight else None
        loss, per_task = masked_bce(logits, labels, pos_weight=pw, task_weight=task_weight)
        return LossOutput(
            loss=loss, n_obs_minibatch=logits.shape[0], extra_metrics={"per_task_loss": per_task.detach()}
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
        ``"gated_abmil"``, ``"abmil"`` or ``"dsmil"``.
    n_hidden
        Shared projector dimension d.
    n_head_hidden
        Per-assay head dimension h.
    dropout
        Dropout after the shared projector and on each head's projected instances.
    """

    def __init__(
        self,
        n_input: int,
        n_tasks: int,
        *,
        head: str = "gated_abmil",
        n_hidden: int = 128,
        n_head_hidden: int = 64,
        dropout: float = 0.5,
    ):
        super().__init__(n_tasks)
        self.projector = _projector(n_input, n_hidden, dropout)
        if head in ("gated_abmil", "abmil"):
            self.heads = MultiTaskAttentionHeads(
                n_tasks, n_hidden, n_head_hidden, gated=head == "gated_abmil", dropout=dropout
            )
        elif head == "dsmil":
            self.heads = MultiTaskDSMILHeads(n_tasks, n_hidden, n_head_hidden, dropout=dropout)
        else:
            raise ValueError(f"`head` must be 'gated_abmil', 'abmil' or 'dsmil', got {head!r}.")

    def pool(self, x, mask):
        h = self.projector(x)
        out = self.heads(h, mask)
        out["instance_embedding"] = h
        return out


class MeanMLPModule(MILModuleBase):
    """Baseline: mean-pool the instances of each bag, then an MLP with T outputs (uniform attention)."""

    def __init__(self, n_input: int, n_tasks: int, *, n_hidden: int = 128, dropout: float = 0.5, **kwargs):
        super().__init__(n_tasks)
        self.mlp = nn.Sequential(nn.Linear(n_input, n_hidden), nn.ReLU(), Dropout(dropout))
        self.classifier = nn.Linear(n_hidden, n_tasks)

    def pool(self, x, mask):
        z = self.mlp(masked_mean(x, mask))
        attention = mask.to(x.dtype) / mask.sum(1, keepdim=True).clamp_min(1)
        return {
            "logits": self.classifier(z),
            "attention": attention[:, None, :].expand(-1, self.n_tasks, -1),
            "bag_embedding": z[:, None, :].expand(-1, self.n_tasks, -1),
            "instance_embedding": x,
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
        **kwargs,
    ):
        super().__init__(n_tasks)
        self.projector = _projector(n_input, n_hidden, dropout)
        self.attention = MultiTaskAttentionHeads(1, n_hidden, n_head_hidden, gated=True)
        self.classifier = nn.Linear(n_head_hidden, n_tasks)

    def pool(self, x, mask):
        h = self.projector(x)
        out = self.attention(h, mask)
        z = out["bag_embedding"][:, 0]  # B × h
        return {
            "logits": self.classifier(z),
            "attention": out["attention"].expand(-1, self.n_tasks, -1),
            "bag_embedding": z[:, None, :].expand(-1, self.n_tasks, -1),
            "instance_embedding": h,
        }
