"""FiLM conditioning (Perez et al., 2018): feature-wise affine maps generated from a condition vector."""

from __future__ import annotations

import torch
from torch import nn


class FiLM(nn.Module):
    """FiLM(x) = γ(c) ⊙ x + β(c), with γ and β linear in the condition vector ``c`` (e.g. one-hot).

    γ is parameterised as 1 + Δγ with Δγ and β initialised at 0, so that an untrained FiLM is the identity.

    Parameters
    ----------
    n_conditions
        Length of the condition vector.
    n_features
        Width of the modulated layer.
    """

    def __init__(self, n_conditions: int, n_features: int):
        super().__init__()
        self.gamma = nn.Linear(n_conditions, n_features)
        self.beta = nn.Linear(n_conditions, n_features)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.gamma, self.beta):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return (1.0 + self.gamma(condition)) * x + self.beta(condition)


class GradientReversal(torch.autograd.Function):
    """Identity forward; multiplies the gradient by −``weight`` backward (Ganin & Lempitsky, 2015)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.weight * grad, None
