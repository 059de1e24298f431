"""Attention MIL layers whose T task heads run as one batched tensor operation.

Bags arrive padded: instances ``x`` of shape B × N × D with a boolean ``mask`` B × N (True = real instance).
Padding never receives attention and never changes a result. Every head of every task is computed at once
through weights shaped T × in × out (:class:`TaskLinear`), so 200 assays cost one larger matmul rather than a
Python loop over 200 modules.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over ``dim`` restricted to ``mask``; masked entries get exactly 0.

    Every slice must hold at least one unmasked entry (an empty bag is rejected before it gets here).
    """
    logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, dim=dim).masked_fill(~mask, 0.0)


def weighted_sum(weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Σ_k w_k x_k over the instance axis: ``weights`` … × N, ``x`` … × N × h → … × h.

    A broadcast product and a sum: we measured it (forward and backward) at 2.7× the speed of the equivalent
    batched matmul of (1 × N) by (N × h) matrices, one per bag and task, which BLAS runs poorly at this size.
    """
    return (weights.unsqueeze(-1) * x).sum(-2)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the instance axis (dim 1) of ``x`` (B × N × D), counting only instances where ``mask``."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


class TaskLinear(nn.Module):
    """T independent linear maps applied as one matrix product.

    Tensors are task-major: a shared input B × N × in (or M × in) gives T × B × N × out through a single GEMM
    against the weights laid out in × (T · out); a task-specific input T × B × N × in gives T × B × N × out
    through one batched matmul (``torch.bmm``) over tasks. Each task's weights are initialised like
    :class:`torch.nn.Linear`.
    """

    def __init__(self, n_tasks: int, n_in: int, n_out: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_tasks, n_in, n_out))
        self.bias = nn.Parameter(torch.empty(n_tasks, n_out)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.weight.shape[1])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def chunks(self, size: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """The weights of consecutive blocks of ``size`` tasks, as (weight, bias) views.

        Made with one :func:`torch.split` per parameter, so backward assembles each gradient once (indexing the
        parameter per block would allocate and zero a full-size gradient per block).
        """
        weights = self.weight.split(size)
        biases = self.bias.split(size) if self.bias is not None else [None] * len(weights)
        return list(zip(weights, biases, strict=True))

    def forward(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """Apply the T maps to ``x``; ``shared=True`` when ``x`` has no task axis."""
        return task_linear(x, self.weight, self.bias, shared=shared)


def task_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, shared: bool = False
) -> torch.Tensor:
    """T linear maps (``weight``: T × in × out, ``bias``: T × out) in one product; see :class:`TaskLinear`.

    ``shared=True``: ``x`` is ... × in, the same for all tasks (one GEMM against in × (T · out)); otherwise
    ``x`` is T × ... × in (one ``torch.bmm`` over tasks). Returns T × ... × out.
    """
    T, n_in, n_out = weight.shape
    # the bias is added inside the product (addmm / baddbmm): one pass over the output instead of two
    if shared:
        lead = x.shape[:-1]
        w = weight.permute(1, 0, 2).reshape(n_in, T * n_out)
        x2 = x.reshape(-1, n_in)
        flat = x2 @ w if bias is None else torch.addmm(bias.reshape(1, T * n_out), x2, w)
        return flat.reshape(-1, T, n_out).transpose(0, 1).reshape(T, *lead, n_out)
    lead = x.shape[1:-1]
    x3 = x.reshape(T, -1, n_in)
    out = torch.bmm(x3, weight) if bias is None else torch.baddbmm(bias[:, None, :], x3, weight)
    return out.reshape(T, *lead, n_out)


#: Resolution of the CPU dropout probability: the mask compares 16-bit random lanes with a threshold.
_DROPOUT_LEVELS = 2**16


class Dropout(nn.Module):
    """Inverted dropout (as :class:`torch.nn.Dropout`) whose CPU mask is cut from 64-bit random words.

    On CPU, torch draws one Mersenne-Twister number per element, for ``torch.rand`` as for dropout's
    ``bernoulli_`` (which is ~4× slower still); with 200 assays that was a quarter of a training step. Here one
    64-bit draw (``random_``) gives four 16-bit lanes, each compared with ``round(p · 2¹⁶)``: a quarter of the
    draws, for a drop probability ``p`` rounded to a multiple of 2⁻¹⁶ (kept elements are scaled by the exact
    ``1 / (1 − p_rounded)``, so the expectation is preserved). This masking is written here because torch offers
    no cheaper Bernoulli sampler on CPU. On other devices this is :func:`torch.nn.functional.dropout`. Seeded
    through torch's generator like any dropout.

    Parameters
    ----------
    p
        Probability of zeroing an element, in [0, 1).
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}.")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        threshold = round(self.p * _DROPOUT_LEVELS)
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
        # int16 lanes are uniform on [−2¹⁵, 2¹⁵): keep where lane − (−2¹⁵) ≥ threshold
        keep = words.view(torch.int16)[:n].view(x.shape) >= threshold - _DROPOUT_LEVELS // 2
        return x * (keep * (_DROPOUT_LEVELS / (_DROPOUT_LEVELS - threshold)))

    def extra_repr(self) -> str:
        return f"p={self.p}"


#: Largest task-block activation (elements) computed at once on CPU; ``None`` computes all tasks in one block.
#: On CPU, tensors of hundreds of MB are mapped and zeroed afresh on every step, which costs more than the
#: arithmetic; blocks of tasks keep every intermediate tensor small enough for the allocator to reuse memory
#: (we measured 2**18–2**20 fastest, 2**22 and up slower). Accelerators (CUDA, MPS) cache their memory and run
#: best with all tasks in one kernel, so there every task is always in a single block.
TASK_BLOCK_ELEMENTS: int | None = 2**20


def _block_size(n_tasks: int, n_rows: int, width: int, device: torch.device) -> int:
    """Tasks per block: all of them off CPU (or with ``TASK_BLOCK_ELEMENTS=None``); on CPU, enough that a
    block's T_b × n_rows × width activation stays under ``TASK_BLOCK_ELEMENTS``."""
    if device.type != "cpu" or TASK_BLOCK_ELEMENTS is None:
        return max(1, n_tasks)
    return max(1, TASK_BLOCK_ELEMENTS // max(1, n_rows * width))


def _forward_in_blocks(heads: nn.Module, layers: tuple, h: torch.Tensor, mask: torch.Tensor, width: int):
    """Run ``heads._forward_block`` on consecutive blocks of tasks (views of the ``layers``' weights) and
    concatenate the outputs along the task axis (dim 1)."""
    size = _block_size(layers[0].weight.shape[0], h.shape[0] * h.shape[1], width, h.device)
    blocks = zip(*(layer.chunks(size) for layer in layers), strict=True)
    parts = [heads._forward_block(h, mask, *block) for block in blocks]
    return {k: torch.cat([p[k] for p in parts], dim=1) for k in parts[0]}


class MultiTaskAttentionHeads(nn.Module):
    """One (gated) attention MIL head per task: projector γ_t, attention β_t, classifier α_t.

    ABMIL: a_k = softmax_k(w_tᵀ tanh(V_t h_k)); gated: a_k = softmax_k(w_tᵀ(tanh(V_t h_k) ⊙ sigmoid(U_t h_k)));
    bag vector z_t = Σ_k a_k h_k; logit_t = α_tᵀ z_t + b_t (Ilse et al., 2018). V_t and U_t are computed in one
    batched product.

    Parameters
    ----------
    n_tasks
        Number of tasks T.
    n_input
        Dimension of the (shared, projected) instance features.
    n_hidden
        Dimension h of each task's projected instances.
    n_attention
        Dimension of the attention network (default h).
    gated
        Gated attention (Ilse et al.) instead of plain tanh attention.
    dropout
        Dropout on the task-projected instances (0 by default: with many tasks it is the costliest operation;
        MoMIL regularises with dropout in its shared projector).
    """

    def __init__(
        self,
        n_tasks: int,
        n_input: int,
        n_hidden: int,
        n_attention: int | None = None,
        gated: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.n_attention = n_attention or n_hidden
        self.gated = gated
        self.project = TaskLinear(n_tasks, n_input, n_hidden)
        self.attention_vu = TaskLinear(n_tasks, n_hidden, self.n_attention * (2 if gated else 1))
        self.attention_w = TaskLinear(n_tasks, self.n_attention, 1)
        self.classifier = TaskLinear(n_tasks, n_hidden, 1)
        self.dropout = Dropout(dropout)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """``h``: B × N × n_input; returns ``logits`` B × T, ``attention`` B × T × N, ``bag_embedding`` B × T × h.

        On CPU, tasks are processed in blocks (all tasks of a block in one batched product; see
        ``TASK_BLOCK_ELEMENTS``); on accelerators all tasks run at once.
        """
        layers = (self.project, self.attention_vu, self.attention_w, self.classifier)
        return _forward_in_blocks(self, layers, h, mask, 2 * self.n_attention)

    def _forward_block(
        self, h, mask, project, attention_vu, attention_w, classifier
    ) -> dict[str, torch.Tensor]:
        H = self.dropout(torch.relu(task_linear(h, *project, shared=True)))  # T × B × N × h
        VU = task_linear(H, *attention_vu)
        if self.gated:
            V, U = VU.split(self.n_attention, dim=-1)  # split, not slicing: no zero-filled gradients
            A = torch.tanh(V) * torch.sigmoid(U)
        else:
            A = torch.tanh(VU)
        scores = task_linear(A, *attention_w).squeeze(-1)  # T × B × N
        attention = masked_softmax(scores, mask[None])
        z = weighted_sum(attention, H)  # T × B × h
        logits = task_linear(z, *classifier).squeeze(-1)  # T × B
        return {
            "logits": logits.T,
            "attention": attention.permute(1, 0, 2),
            "bag_embedding": z.transpose(0, 1),
        }


class MultiTaskDSMILHeads(nn.Module):
    """One DSMIL head per task (Li et al., 2021): instance classifier + attention to the critical instance.

    The instance classifier scores every instance; the top-scoring one is the critical instance; attention is
    the masked softmax of ⟨q(h_k), q(h_crit)⟩ / √d_q; the bag score is a linear map of Σ_k a_k v(h_k). Returns
    both streams, ``instance_logits`` (the critical instance's score) and ``bag_logits``, which DSMIL trains with
    a loss each, and their mean as the prediction ``logits``.
    """

    def __init__(
        self, n_tasks: int, n_input: int, n_hidden: int, n_attention: int | None = None, dropout: float = 0.0
    ):
        super().__init__()
        n_attention = n_attention or n_hidden
        self.project = TaskLinear(n_tasks, n_input, n_hidden)
        self.instance_classifier = TaskLinear(n_tasks, n_hidden, 1)
        self.query = TaskLinear(n_tasks, n_hidden, n_attention)
        self.value = TaskLinear(n_tasks, n_hidden, n_hidden)
        self.bag_classifier = TaskLinear(n_tasks, n_hidden, 1)
        self.dropout = Dropout(dropout)
        self.scale = 1.0 / math.sqrt(n_attention)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """``h``: B × N × n_input; returns ``logits``, ``instance_logits``, ``bag_logits`` (B × T), ``attention``
        (B × T × N) and ``bag_embedding`` (B × T × h)."""
        layers = (self.project, self.instance_classifier, self.query, self.value, self.bag_classifier)
        return _forward_in_blocks(self, layers, h, mask, 2 * self.value.weight.shape[2])

    def _forward_block(
        self, h, mask, project, instance_classifier, query, value, bag_classifier
    ) -> dict[str, torch.Tensor]:
        H = self.dropout(torch.relu(task_linear(h, *project, shared=True)))  # T × B × N × h
        # the query on its own product: its output is contiguous, so tanh runs vectorised (we measured tanh at
        # half speed on a column slice of a wider product); the value and the instance score in one product, its
        # width padded with zero columns to a multiple of 8 (we measured BLAS at half speed on 65 or 129 columns)
        Q = torch.tanh(task_linear(H, *query))  # T × B × N × q
        widths = [value[0].shape[-1], 1]
        weights, biases = [value[0], instance_classifier[0]], [value[1], instance_classifier[1]]
        pad = -sum(widths) % 8
        if pad:
            weights.append(H.new_zeros(H.shape[0], H.shape[-1], pad))
            biases.append(H.new_zeros(H.shape[0], pad))
            widths.append(pad)
        V, inst, *_ = task_linear(H, torch.cat(weights, dim=-1), torch.cat(biases, dim=-1)).split(
            widths, dim=-1
        )
        inst = inst.squeeze(-1).masked_fill(~mask[None], float("-inf"))  # T × B × N
        max_score, crit = inst.max(dim=-1)  # T × B
        q_crit = torch.gather(Q, 2, crit[:, :, None, None].expand(-1, -1, 1, Q.shape[-1]))  # T × B × 1 × q
        scores = (Q * q_crit).sum(-1) * self.scale
        attention = masked_softmax(scores, mask[None])
        z = weighted_sum(attention, V)  # T × B × h
        bag_score = task_linear(z, *bag_classifier).squeeze(-1)
        return {
            "logits": (0.5 * (max_score + bag_score)).T,
            "instance_logits": max_score.T,
            "bag_logits": bag_score.T,
            "attention": attention.permute(1, 0, 2),
            "bag_embedding": z.transpose(0, 1),
        }
