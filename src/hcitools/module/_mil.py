"""MIL modules (scvi-tools ``BaseModuleClass``): MoMIL, mean-pooled MLP and multi-label MIL."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn

from .._constants import MIL_KEYS, MODULE_KEYS
from ..nn import Dropout, GradientReversal, MultiTaskAttentionHeads, MultiTaskDSMILHeads, masked_mean

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


def task_prior_loss(
    bag_embedding: torch.Tensor, affinity: torch.Tensor, task_weight: torch.Tensor
) -> torch.Tensor:
    """The task-prior loss of thesis 000 §3.3.5 (without λ), averaged over bags.

    Per bag, with e (T × h) the per-task bag embeddings, E = e eᵀ and
    L = (1/T²) Σ_ij v_i (c_ij − E_ij)².

    Parameters
    ----------
    bag_embedding
        B × T × h.
    affinity
        T × T task-affinity matrix c.
    task_weight
        T weights v (0.9 for key tasks, 0.1 otherwise in the thesis).

    Returns
    -------
    A scalar (the mean over the B bags).
    """
    n_tasks = bag_embedding.shape[1]
    gram = bag_embedding @ bag_embedding.transpose(1, 2)  # B × T × T
    sq = (affinity[None] - gram) ** 2 * task_weight[None, :, None]
    return sq.sum((1, 2)).mean() / n_tasks**2


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
    n_batches
        Number of batches (plates) of the adversarial branch; 0 (default) builds none. With ``n_batches > 0``, a
        gradient-reversal layer (:class:`~hcitools.nn.GradientReversal`) then a linear domain classifier
        predict each bag's batch code (``tensors["batch"]``) from the shared bag representation
        (``MODULE_KEYS.BAG_REPRESENTATION``); its cross-entropy is ``extra_metrics["adversarial_loss"]``, added to
        ``loss`` outside the task weighting. The reversal multiplies the gradient reaching the representation by
        −``adversarial_weight`` (a ``loss`` keyword; Ganin & Lempitsky's λ). The training plan fits the classifier
        with its own optimiser, unscaled (several steps per batch on the detached representation,
        :meth:`discriminator_loss`), so that it keeps up with the encoder.
    discriminator_hidden
        0 (default): the domain classifier is linear (003's linear extra branch; the plate probes of
        :func:`hcitools.tl.probe_concepts` are linear too); > 0: an MLP with one ReLU hidden layer of this width.
    n_aux
        Number of auxiliary concepts (e.g. cell count) regressed linearly from the shared bag representation; 0
        (default) builds none. Targets (``tensors["aux"]``, raw) are standardised with the buffers ``aux_mean`` /
        ``aux_std`` (set from the training bags by the model); the K per-concept MSEs are appended to the
        per-task loss vector, so the task weighting sees T + K tasks.
    """

    output_kinds: ClassVar[dict[str, str]] = {
        MODULE_KEYS.LOGITS: "bag",
        MODULE_KEYS.ATTENTION: "bag_task_instance",
        MODULE_KEYS.BAG_EMBEDDING: "bag",
        MODULE_KEYS.INSTANCE_EMBEDDING: "bag_instance",
        MODULE_KEYS.BAG_REPRESENTATION: "bag",
    }

    def __init__(
        self,
        n_tasks: int,
        loss_reduction: str = "assay_mean",
        n_batches: int = 0,
        n_aux: int = 0,
        discriminator_hidden: int = 0,
    ):
        super().__init__()
        if loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"`loss_reduction` must be one of {LOSS_REDUCTIONS}, got {loss_reduction!r}.")
        self.n_tasks = n_tasks
        self.loss_reduction = loss_reduction
        self.n_batches = int(n_batches)
        self.n_aux = int(n_aux)
        self.discriminator_hidden = int(discriminator_hidden or 0)

    def _build_branches(self, n_representation: int) -> None:
        """Build the adversarial and auxiliary branches on a shared bag representation of this width (only the
        branches asked for: a module without them has the state dict of earlier versions)."""
        if self.n_batches > 0:
            k = self.discriminator_hidden
            self.domain_classifier = (
                nn.Linear(n_representation, self.n_batches)
                if k <= 0
                else nn.Sequential(nn.Linear(n_representation, k), nn.ReLU(), nn.Linear(k, self.n_batches))
            )
        if self.n_aux > 0:
            self.aux_regressor = nn.Linear(n_representation, self.n_aux)
            self.register_buffer("aux_mean", torch.zeros(self.n_aux))
            self.register_buffer("aux_std", torch.ones(self.n_aux))

    def set_aux_scale(self, mean, std) -> None:
        """Set the standardisation of the aux targets (means and standard deviations of the training bags)."""
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean.shape != (self.n_aux,) or std.shape != (self.n_aux,):
            raise ValueError(f"`mean` and `std` must hold {self.n_aux} values each.")
        self.aux_mean.copy_(mean)
        self.aux_std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def adversarial_loss(
        self, inference_outputs: dict, batch: torch.Tensor, weight: float = 1.0
    ) -> torch.Tensor:
        """Cross-entropy of the domain classifier on the gradient-reversed bag representation."""
        rep = GradientReversal.apply(inference_outputs[MODULE_KEYS.BAG_REPRESENTATION], float(weight))
        return F.cross_entropy(self.domain_classifier(rep), batch.long().reshape(-1))

    def discriminator_loss(self, representation: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the domain classifier on a detached bag representation (its own update step: no
        gradient reaches the encoder)."""
        return F.cross_entropy(self.domain_classifier(representation.detach()), batch.long().reshape(-1))

    def aux_losses(self, inference_outputs: dict, aux: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K per-concept MSEs on standardised targets (non-finite targets are skipped) and their counts."""
        pred = self.aux_regressor(inference_outputs[MODULE_KEYS.BAG_REPRESENTATION])
        target = (aux.to(pred.dtype) - self.aux_mean) / self.aux_std
        observed = torch.isfinite(target)
        sq = torch.where(observed, (pred - torch.nan_to_num(target)) ** 2, torch.zeros_like(pred))
        count = observed.sum(0)
        return sq.sum(0) / count.clamp_min(1), count

    def prior_loss(self, inference_outputs: dict) -> torch.Tensor | None:
        """The task-prior loss (λ included), or None for a module without one."""
        return None

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
        self,
        tensors,
        inference_outputs,
        generative_outputs,
        pos_weight: torch.Tensor | None = None,
        adversarial_weight: float = 1.0,
    ) -> LossOutput:
        """Loss terms of a batch.

        ``loss`` is the plain sum of the per-task losses (the ``"equal"`` weighting) plus the adversarial and prior
        terms; the training plan recombines ``extra_metrics[MODULE_KEYS.TASK_LOSS]`` (undetached, T assays then
        the K aux concepts) with ``extra_metrics[MODULE_KEYS.TASK_COUNT]`` (observed labels per task) through its
        task-weighting strategy and adds ``extra_metrics[MODULE_KEYS.ADVERSARIAL_LOSS]`` and
        ``[MODULE_KEYS.PRIOR_LOSS]`` (undetached scalars, present only for the branches the module has) outside
        the weighting.
        """
        labels = tensors[MIL_KEYS.LABELS]
        task_loss, count = self.task_losses(inference_outputs, labels, pos_weight)
        extra = {}
        if self.n_aux > 0:
            if MIL_KEYS.AUX not in tensors:
                raise KeyError(
                    "The module has aux branches but the batch holds no `aux` (register `aux_keys`)."
                )
            aux_loss, aux_count = self.aux_losses(inference_outputs, tensors[MIL_KEYS.AUX])
            task_loss = torch.cat([task_loss, aux_loss])
            count = torch.cat([count, aux_count.to(count.dtype)])
        total = task_loss[count > 0].sum()
        if self.n_batches > 0:
            if MIL_KEYS.BATCH not in tensors:
                raise KeyError("The module has an adversarial branch but the batch holds no batch codes.")
            adv = self.adversarial_loss(inference_outputs, tensors[MIL_KEYS.BATCH], adversarial_weight)
            extra[MODULE_KEYS.ADVERSARIAL_LOSS] = adv
            total = total + adv
        prior = self.prior_loss(inference_outputs)
        if prior is not None:
            extra[MODULE_KEYS.PRIOR_LOSS] = prior
            total = total + prior
        return LossOutput(
            loss=total,
            n_obs_minibatch=labels.shape[0],
            extra_metrics={MODULE_KEYS.TASK_LOSS: task_loss, MODULE_KEYS.TASK_COUNT: count, **extra},
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
    n_batches, n_aux, discriminator_hidden
        Adversarial and auxiliary branches (see :class:`MILModuleBase`) on the mean projected instance of each bag.
    task_affinity
        T × T task-affinity matrix c (nested lists or a tensor) of the task-prior loss, or None (no prior loss).
    prior_weight
        λ of the prior loss; 0 (default) turns it off.
    prior_task_weight
        The T weights v of the prior loss (default 0.1 each).

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
        n_batches: int = 0,
        n_aux: int = 0,
        task_affinity=None,
        prior_weight: float = 0.0,
        prior_task_weight=None,
        discriminator_hidden: int = 0,
    ):
        super().__init__(n_tasks, loss_reduction, n_batches, n_aux, discriminator_hidden)
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
        self._build_branches(n_hidden)
        self.prior_weight = float(prior_weight)
        if task_affinity is not None and self.prior_weight > 0:
            c = torch.as_tensor(task_affinity, dtype=torch.float32)
            if c.shape != (n_tasks, n_tasks):
                raise ValueError(f"`task_affinity` must be {n_tasks} × {n_tasks}, got {tuple(c.shape)}.")
            v = (
                torch.full((n_tasks,), 0.1)
                if prior_task_weight is None
                else torch.as_tensor(prior_task_weight)
            )
            self.register_buffer("task_affinity", c)
            self.register_buffer("prior_task_weight", v.to(torch.float32).reshape(n_tasks))

    def pool(self, x, mask):
        h = self.projector(x)
        out = self.heads(h, mask)
        out[MODULE_KEYS.INSTANCE_EMBEDDING] = h
        out[MODULE_KEYS.BAG_REPRESENTATION] = masked_mean(h, mask)
        return out

    def prior_loss(self, inference_outputs):
        if not hasattr(self, "task_affinity"):
            return None
        e = inference_outputs[MODULE_KEYS.BAG_EMBEDDING]
        return self.prior_weight * task_prior_loss(e, self.task_affinity, self.prior_task_weight)

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
        n_batches: int = 0,
        n_aux: int = 0,
    ):
        super().__init__(n_tasks, loss_reduction, n_batches, n_aux)
        self.mlp = nn.Sequential(nn.Linear(n_input, n_hidden), nn.ReLU(), Dropout(dropout))
        self.classifier = nn.Linear(n_hidden, n_tasks)
        self._build_branches(n_hidden)

    def pool(self, x, mask):
        z = self.mlp(masked_mean(x, mask))
        attention = mask.to(x.dtype) / mask.sum(1, keepdim=True).clamp_min(1)
        return {
            MODULE_KEYS.LOGITS: self.classifier(z),
            MODULE_KEYS.ATTENTION: attention[:, None, :].expand(-1, self.n_tasks, -1),
            MODULE_KEYS.BAG_EMBEDDING: z[:, None, :].expand(-1, self.n_tasks, -1),
            MODULE_KEYS.INSTANCE_EMBEDDING: x,
            MODULE_KEYS.BAG_REPRESENTATION: z,
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
        n_batches: int = 0,
        n_aux: int = 0,
    ):
        super().__init__(n_tasks, loss_reduction, n_batches, n_aux)
        self.projector = _projector(n_input, n_hidden, dropout)
        self.attention = MultiTaskAttentionHeads(1, n_hidden, n_head_hidden, gated=True)
        self.classifier = nn.Linear(n_head_hidden, n_tasks)
        self._build_branches(n_hidden)

    def pool(self, x, mask):
        h = self.projector(x)
        out = self.attention(h, mask)
        z = out[MODULE_KEYS.BAG_EMBEDDING][:, 0]  # B × h
        return {
            MODULE_KEYS.LOGITS: self.classifier(z),
            MODULE_KEYS.ATTENTION: out[MODULE_KEYS.ATTENTION].expand(-1, self.n_tasks, -1),
            MODULE_KEYS.BAG_EMBEDDING: z[:, None, :].expand(-1, self.n_tasks, -1),
            MODULE_KEYS.INSTANCE_EMBEDDING: h,
            MODULE_KEYS.BAG_REPRESENTATION: masked_mean(h, mask),
        }
