"""M4: multi-proxy multi-gate mixture of experts for multi-task MIL (Li et al., 002 §3.3; SPECS §7).

E experts (MP-AMIL) pool every bag into one vector each; per task, a gate mixes the experts (one softmax over
experts per proxy segment with ``"mp_gate"``, one per task with ``"mmoe"``); a tower MLP per task gives the logit.
All experts run as one batched pass (weights with a leading expert axis, grouped convolutions), all gates and
towers as one batched pass over tasks; nothing loops over bags, experts or tasks in Python.

Grid. Each bag is laid out on its own grid: row by row on ⌈√N_b⌉ columns (N_b its number of instances), or at
the positions given by the model's ``grid_keys``. The grids of a batch are zero-padded to the largest one.
Since every cell a bag does not occupy is zero and only one convolution touches the grid, a bag's output does
not depend on the other bags of its batch nor on its padding. Unlike TransMIL's squaring (002 follows it), empty
cells are zeros, not copies of the bag's first instances.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from scvi.module.base import auto_move_data
from torch import nn

from .._constants import MIL_KEYS, MODULE_KEYS
from ..nn import Dropout, TaskLinear, masked_mean, masked_softmax
from ._mil import MILModuleBase

#: Kernel of each proxy (channel segment) of an MP-AMIL expert: identity (None), then depthwise-separable
#: convolutions of kernel 3, 5 and 7 (002 Algorithm 1). ``n_proxies`` takes the first ones.
PROXY_KERNELS = (None, 3, 5, 7)
EXPERTS = ("mp_amil", "amil")
GATES = ("mp_gate", "mmoe")


class ExpertSeparableConv(nn.Module):
    """One depthwise-separable convolution per expert, all experts in one grouped convolution.

    Input and output B × (E · c) × H × W, channels laid out expert-major (expert e holds channels e·c … e·c + c−1).
    A depthwise k × k convolution (one filter per channel, zero padding k // 2, stride 1: the grid keeps its size)
    then a pointwise 1 × 1 convolution within each expert (``groups=E``). Each expert's filters are drawn
    independently (initialised like :class:`torch.nn.Conv2d`).

    002's Algorithm 1 gives k = 5 and 7 a padding of 1 and strides 2 and 3, which would shrink the grid and could
    not be concatenated back onto the N instances; "same" padding and stride 1 are used here.
    """

    def __init__(self, n_experts: int, n_channels: int, kernel_size: int):
        super().__init__()
        self.n_experts, self.n_channels, self.kernel_size = n_experts, n_channels, kernel_size
        width = n_experts * n_channels
        self.depthwise_weight = nn.Parameter(torch.empty(width, 1, kernel_size, kernel_size))
        self.depthwise_bias = nn.Parameter(torch.empty(width))
        self.pointwise_weight = nn.Parameter(torch.empty(width, n_channels, 1, 1))
        self.pointwise_bias = nn.Parameter(torch.empty(width))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for weight, bias in (
            (self.depthwise_weight, self.depthwise_bias),
            (self.pointwise_weight, self.pointwise_bias),
        ):
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # torch.nn.Conv2d's initialisation
            fan_in = weight.shape[1] * weight.shape[2] * weight.shape[3]
            nn.init.uniform_(bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        width = self.n_experts * self.n_channels
        out = F.conv2d(
            grid, self.depthwise_weight, self.depthwise_bias, padding=self.kernel_size // 2, groups=width
        )
        return F.conv2d(out, self.pointwise_weight, self.pointwise_bias, groups=self.n_experts)


def row_major_positions(mask: torch.Tensor) -> torch.Tensor:
    """(row, column) of each instance on its bag's own ⌈√N_b⌉-wide grid, in instance order (B × N × 2; 0 on
    padding). Depends on each bag's own size only, not on the batch's largest bag."""
    mask = mask.bool()
    rank = (mask.long().cumsum(1) - 1).clamp_min(0)
    n = mask.sum(1, keepdim=True)
    side = torch.sqrt(n.double()).floor().long()
    side = side + (side * side < n).long()  # ⌈√n⌉ in integers
    pos = torch.stack([rank // side.clamp_min(1), rank % side.clamp_min(1)], dim=-1)
    return pos * mask[..., None]


class MultiProxyExperts(nn.Module):
    """E attention-MIL experts, MP-AMIL (multi-proxy) or plain gated AMIL, computed as one batched pass.

    MP-AMIL (002 Algorithm 1): FC + ReLU on every instance → instances on the bag's grid → channels split into
    ``n_proxies`` segments → identity / depthwise-separable convolution k = 3 / 5 / 7 → concatenated → gated
    attention pooling (Ilse et al.) → one bag vector per expert. ``conv=False`` (plain AMIL experts, the paper's
    ablation) keeps every segment as it is.

    Parameters
    ----------
    n_experts, n_input, n_hidden, n_attention
        E, the instance dimension D, the expert dimension d (divisible by ``n_proxies``) and the attention
        dimension.
    n_proxies
        Channel segments P (1–4).
    conv
        Convolution proxies (MP-AMIL) or none (AMIL).
    dropout
        Dropout on the experts' instance features.
    """

    def __init__(
        self,
        n_experts: int,
        n_input: int,
        n_hidden: int,
        n_attention: int,
        n_proxies: int,
        conv: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        if n_hidden % n_proxies:
            raise ValueError(f"`n_hidden` ({n_hidden}) must be divisible by `n_proxies` ({n_proxies}).")
        self.n_experts, self.n_hidden, self.n_proxies = n_experts, n_hidden, n_proxies
        self.n_attention = n_attention
        self.segment = n_hidden // n_proxies
        self.fc = TaskLinear(n_experts, n_input, n_hidden)
        kernels = [k for k in PROXY_KERNELS[:n_proxies] if k is not None] if conv else []
        self.convs = nn.ModuleList(ExpertSeparableConv(n_experts, self.segment, k) for k in kernels)
        self.attention_vu = TaskLinear(n_experts, n_hidden, 2 * n_attention)
        self.attention_w = TaskLinear(n_experts, n_attention, 1)
        self.dropout = Dropout(dropout)

    def _multi_proxy(self, h: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Apply the convolution proxies to the last segments of ``h`` (E × B × N × d) on the bags' grids."""
        E, B, N, _ = h.shape
        c, n_conv = self.segment, len(self.convs)
        positions = positions.long() * mask[..., None]
        height = int(positions[..., 0].max()) + 1
        width = int(positions[..., 1].max()) + 1
        cells = height * width
        flat = (positions[..., 0] * width + positions[..., 1]).masked_fill(~mask, cells)  # B × N
        # the instance in each cell (N = empty): a gather, deterministic and differentiable
        inverse = torch.full((B, cells + 1), N, dtype=torch.long, device=h.device)
        inverse.scatter_(1, flat, torch.arange(N, device=h.device).expand(B, N).contiguous())
        inverse = inverse[:, :cells]
        # conv segments, laid out proxy-major then expert: B × N × (n_conv · E · c)
        segs = h[..., c * (self.n_proxies - n_conv) :].reshape(E, B, N, n_conv, c)
        segs = segs.permute(1, 2, 3, 0, 4).reshape(B, N, n_conv * E * c)
        segs = torch.cat([segs, segs.new_zeros(B, 1, segs.shape[-1])], dim=1)
        grid = torch.gather(segs, 1, inverse[..., None].expand(-1, -1, segs.shape[-1]))  # B × HW × C
        grid = grid.transpose(1, 2).reshape(B, n_conv, E * c, height, width)
        back = flat.clamp_max(cells - 1)  # padding reads any cell; attention ignores it
        outs = []
        for i, conv in enumerate(self.convs):  # one grouped convolution per kernel size (≤ 3)
            out = conv(grid[:, i]).reshape(B, E * c, cells)
            out = torch.gather(out, 2, back[:, None, :].expand(-1, E * c, -1))  # B × (E · c) × N
            outs.append(out.reshape(B, E, c, N).permute(1, 0, 3, 2))  # E × B × N × c
        return torch.cat([h[..., : c * (self.n_proxies - n_conv)], *outs], dim=-1)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x``: B × N × D, ``mask``: B × N, ``positions``: B × N × 2 or None (row-major on ⌈√N_b⌉ columns).

        Returns the bag vectors E × B × d, the attention E × B × N and the instance features E × B × N × d.
        """
        mask = mask.bool()
        h = self.dropout(torch.relu(self.fc(x, shared=True)))  # E × B × N × d
        h = h * mask[None, ..., None].to(h.dtype)  # padding is zero on the grid
        if len(self.convs):
            h = self._multi_proxy(h, mask, row_major_positions(mask) if positions is None else positions)
        V, U = self.attention_vu(h).split(self.n_attention, dim=-1)
        scores = self.attention_w(torch.tanh(V) * torch.sigmoid(U)).squeeze(-1)  # E × B × N
        attention = masked_softmax(scores, mask[None])
        z = torch.matmul(attention.unsqueeze(-2), h).squeeze(-2)  # E × B × d
        return z, attention, h


class MultiProxyGates(nn.Module):
    """One gate per task from the mean raw instance of each bag: FC + ReLU, then softmax(es) over experts.

    ``multi_proxy=True`` (MP-Gate, 002 eqs. 9–13): the hidden vector is split into P segments, each with its own
    FC + softmax over the E experts; ``False`` (MMoE): one FC + softmax per task, the same for every segment.

    Returns B × T × P × E gate weights, summing to 1 over experts.
    """

    def __init__(
        self, n_tasks: int, n_input: int, n_hidden: int, n_experts: int, n_proxies: int, multi_proxy: bool
    ):
        super().__init__()
        if multi_proxy and n_hidden % n_proxies:
            raise ValueError(f"`n_gate_hidden` ({n_hidden}) must be divisible by `n_proxies` ({n_proxies}).")
        self.n_tasks, self.n_proxies, self.multi_proxy = n_tasks, n_proxies, multi_proxy
        self.hidden = TaskLinear(n_tasks, n_input, n_hidden)
        if multi_proxy:
            self.out = TaskLinear(n_tasks * n_proxies, n_hidden // n_proxies, n_experts)
        else:
            self.out = TaskLinear(n_tasks, n_hidden, n_experts)

    def forward(self, x_mean: torch.Tensor) -> torch.Tensor:
        T, P, B = self.n_tasks, self.n_proxies, x_mean.shape[0]
        h = torch.relu(self.hidden(x_mean, shared=True))  # T × B × g
        if self.multi_proxy:
            h = h.reshape(T, B, P, -1).permute(0, 2, 1, 3).reshape(T * P, B, -1)
            logits = self.out(h).reshape(T, P, B, -1).permute(2, 0, 1, 3)  # B × T × P × E
        else:
            logits = self.out(h).permute(1, 0, 2)[:, :, None, :].expand(-1, -1, P, -1)
        return torch.softmax(logits, dim=-1)


class M4Module(MILModuleBase):
    """M4: E MP-AMIL experts, a (multi-proxy) gate and a tower MLP per task.

    Per task t and proxy segment s, the tower input is Σ_e G[t, s, e] · z_e[s] (002 eq. 14 per segment), the
    segment s of expert e's bag vector weighted by the gate; the tower (FC + ReLU + dropout + FC) gives the
    logit. Outputs (``output_kinds``): ``logits`` (B × T), ``attention`` (B × T × N: per task, the experts'
    attention weighted by the task's gate averaged over segments; sums to 1 per bag and task),
    ``expert_attention`` (B × E × N), ``gate_weights`` (B × T × P × E), ``bag_embedding`` (B × T × d, the tower
    inputs), ``instance_embedding`` (B × N × E·d, the experts' multi-proxy instance features) and
    ``bag_representation`` (B × E·d, the experts' bag vectors, which the adversarial / aux branches read).

    Parameters
    ----------
    n_input, n_tasks
        Instance dimension D and number of tasks T.
    n_experts
        E.
    n_proxies
        Proxy segments P (1–4: identity, k = 3, 5, 7).
    expert
        ``"mp_amil"`` or ``"amil"`` (no convolution proxies).
    gate
        ``"mp_gate"`` or ``"mmoe"``.
    n_hidden, n_attention, n_gate_hidden, n_tower_hidden
        Expert dimension d, attention dimension, gate hidden dimension, tower hidden dimension.
    dropout
        Dropout on the experts' instance features and in the towers.
    loss_reduction, n_batches, n_aux
        See :class:`~hcitools.module.MILModuleBase`.
    """

    output_kinds: ClassVar[dict[str, str]] = {
        **MILModuleBase.output_kinds,
        MODULE_KEYS.GATE_WEIGHTS: "bag",
        MODULE_KEYS.EXPERT_ATTENTION: "bag_task_instance",
    }

    def __init__(
        self,
        n_input: int,
        n_tasks: int,
        *,
        n_experts: int = 5,
        n_proxies: int = 4,
        expert: str = "mp_amil",
        gate: str = "mp_gate",
        n_hidden: int = 128,
        n_attention: int = 64,
        n_gate_hidden: int = 64,
        n_tower_hidden: int = 64,
        dropout: float = 0.25,
        loss_reduction: str = "assay_mean",
        n_batches: int = 0,
        n_aux: int = 0,
    ):
        super().__init__(n_tasks, loss_reduction, n_batches, n_aux)
        if expert not in EXPERTS:
            raise ValueError(f"`expert` must be one of {EXPERTS}, got {expert!r}.")
        if gate not in GATES:
            raise ValueError(f"`gate` must be one of {GATES}, got {gate!r}.")
        if not 1 <= n_proxies <= len(PROXY_KERNELS):
            raise ValueError(f"`n_proxies` must be in 1 … {len(PROXY_KERNELS)}, got {n_proxies!r}.")
        self.n_experts, self.n_proxies, self.expert, self.gate = n_experts, n_proxies, expert, gate
        self.experts = MultiProxyExperts(
            n_experts, n_input, n_hidden, n_attention, n_proxies, conv=expert == "mp_amil", dropout=dropout
        )
        self.gates = MultiProxyGates(
            n_tasks, n_input, n_gate_hidden, n_experts, n_proxies, multi_proxy=gate == "mp_gate"
        )
        self.tower_hidden = TaskLinear(n_tasks, n_hidden, n_tower_hidden)
        self.tower_out = TaskLinear(n_tasks, n_tower_hidden, 1)
        self.tower_dropout = Dropout(dropout)
        self._build_branches(n_experts * n_hidden)

    def _get_inference_input(self, tensors: dict[str, torch.Tensor], **kwargs) -> dict:
        return {
            "x": tensors[MIL_KEYS.X],
            "mask": tensors[MIL_KEYS.MASK],
            "positions": tensors.get(MIL_KEYS.POSITIONS),
        }

    @auto_move_data
    def inference(
        self, x: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Pool padded bags (``x``: B × N × D, ``mask``: B × N, ``positions``: B × N × 2 grid positions or
        None for row-major); returns the outputs of ``output_kinds``."""
        return self.pool(x, mask, positions)

    def pool(self, x, mask, positions=None):
        mask = mask.bool()
        B, N = mask.shape
        T, E, P = self.n_tasks, self.n_experts, self.n_proxies
        z, expert_attention, h = self.experts(x, mask, positions)  # E × B × d, E × B × N, E × B × N × d
        gates = self.gates(masked_mean(x, mask))  # B × T × P × E
        d = z.shape[-1]
        task_input = torch.einsum("btpe,ebpc->btpc", gates, z.reshape(E, B, P, d // P)).reshape(B, T, d)
        hidden = self.tower_dropout(torch.relu(self.tower_hidden(task_input.transpose(0, 1))))  # T × B × th
        logits = self.tower_out(hidden).squeeze(-1).T  # B × T
        attention = torch.einsum("bte,ebn->btn", gates.mean(2), expert_attention)
        return {
            MODULE_KEYS.LOGITS: logits,
            MODULE_KEYS.ATTENTION: attention,
            MODULE_KEYS.EXPERT_ATTENTION: expert_attention.transpose(0, 1),
            MODULE_KEYS.GATE_WEIGHTS: gates,
            MODULE_KEYS.BAG_EMBEDDING: task_input,
            MODULE_KEYS.INSTANCE_EMBEDDING: h.permute(1, 2, 0, 3).reshape(B, N, E * d),
            MODULE_KEYS.BAG_REPRESENTATION: z.transpose(0, 1).reshape(B, E * d),
        }
