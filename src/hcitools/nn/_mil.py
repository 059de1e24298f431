"""Attention MIL layers whose T task heads run as one batched tensor operation.

Bags arrive padded: instances ``x`` of shape B × N × D with a boolean ``mask`` B × N (True = real instance).
Padding never receives attention and never changes a result. Every head of every task is computed at once
through weights shaped T × in × out (:class:`TaskLinear`), so 200 assays cost one larger matmul rather than a
Python loop over 200 modules.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over ``dim`` restricted to ``mask``; masked entries get exactly 0.

    Every slice must hold at least one unmasked entry (an empty bag is rejected before it gets here).
    """
    logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, dim=dim).masked_fill(~mask, 0.0)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the instance axis (dim 1) of ``x`` (B × N × D), counting only instances where ``mask``."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


class TaskLinear(nn.Module):
    """T independent linear maps applied in one einsum.

    Input B × N × in (shared by all tasks) or B × T × N × in (task-specific); output B × T × N × out.
    Each task's weights are initialised like :class:`torch.nn.Linear`.
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = (
            torch.einsum("bni,tio->btno", x, self.weight)
            if x.dim() == 3
            else torch.einsum("btni,tio->btno", x, self.weight)
        )
        if self.bias is not None:
            out = out + self.bias[None, :, None, :]
        return out


class MultiTaskAttentionHeads(nn.Module):
    """One (gated) attention MIL head per task: projector γ_t, attention β_t, classifier α_t.

    ABMIL: a_k = softmax_k(w_tᵀ tanh(V_t h_k)); gated: a_k = softmax_k(w_tᵀ(tanh(V_t h_k) ⊙ sigmoid(U_t h_k)));
    bag vector z_t = Σ_k a_k h_k; logit_t = α_tᵀ z_t + b_t (Ilse et al., 2018).

    Parameters
    ----------
    n_tasks
        Number of tasks T.
    n_input
        Dimension of the (shared, projected) instance features.
    n_hidden
        Dimension h of each task's projected instances.
    n_attention
        Dimension of the attention network.
    gated
        Gated attention (Ilse et al.) instead of plain tanh attention.
    dropout
        Dropout on the task-projected instances.
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
        n_attention = n_attention or n_hidden
        self.project = TaskLinear(n_tasks, n_input, n_hidden)
        self.attention_v = TaskLinear(n_tasks, n_hidden, n_attention)
        self.attention_u = TaskLinear(n_tasks, n_hidden, n_attention) if gated else None
        self.attention_w = TaskLinear(n_tasks, n_attention, 1)
        self.classifier = TaskLinear(n_tasks, n_hidden, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """``h``: B × N × n_input; returns ``logits`` B × T, ``attention`` B × T × N, ``bag_embedding`` B × T × h."""
        H = self.dropout(torch.relu(self.project(h)))  # B × T × N × h
        A = torch.tanh(self.attention_v(H))
        if self.attention_u is not None:
            A = A * torch.sigmoid(self.attention_u(H))
        scores = self.attention_w(A).squeeze(-1)  # B × T × N
        attention = masked_softmax(scores, mask[:, None, :])
        z = torch.einsum("btn,btnh->bth", attention, H)
        logits = self.classifier(z.unsqueeze(2)).squeeze(-1).squeeze(-1)  # B × T
        return {"logits": logits, "attention": attention, "bag_embedding": z}


class MultiTaskDSMILHeads(nn.Module):
    """One DSMIL head per task (Li et al., 2021): instance classifier + attention to the critical instance.

    The instance classifier scores every instance; the top-scoring one is the critical instance; attention is
    the masked softmax of ⟨q(h_k), q(h_crit)⟩ / √d_q; the bag score is a linear map of Σ_k a_k v(h_k); the
    output logit is the mean of the critical instance's score and the bag score.
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
        self.dropout = nn.Dropout(dropout)
        self.scale = 1.0 / math.sqrt(n_attention)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        H = self.dropout(torch.relu(self.project(h)))  # B × T × N × h
        inst = (
            self.instance_classifier(H).squeeze(-1).masked_fill(~mask[:, None, :], float("-inf"))
        )  # B × T × N
        max_score, crit = inst.max(dim=-1)  # B × T
        Q = torch.tanh(self.query(H))  # B × T × N × q
        q_crit = torch.gather(Q, 2, crit[:, :, None, None].expand(-1, -1, 1, Q.shape[-1]))  # B × T × 1 × q
        scores = (Q * q_crit).sum(-1) * self.scale
        attention = masked_softmax(scores, mask[:, None, :])
        z = torch.einsum("btn,btnh->bth", attention, self.value(H))
        bag_score = self.bag_classifier(z.unsqueeze(2)).squeeze(-1).squeeze(-1)
        return {"logits": 0.5 * (max_score + bag_score), "attention": attention, "bag_embedding": z}
