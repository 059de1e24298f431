"""Single-task MIL baselines from torchmil (002 Table 2): one torchmil model per assay, fed padded bags and masks.

torchmil (Castro-Macías et al., Apache-2) implements ABMIL, DSMIL, DTFD-MIL and TransMIL and the mean / max
pooling operators; this module only wires them into hcitools' batches and per-assay loss vector. The losses
follow each model's ``compute_loss`` in torchmil 1.0 (DSMIL: BCE of the bag stream + BCE of the max-instance
stream; DTFD-MIL: BCE of tier 2 + mean BCE of the tier-1 pseudo-bags), restricted to observed labels.

torchmil's DSMIL (critical instance), DTFD-MIL (pseudo-bags, tier-2 pooling) and TransMIL (no mask at all) would
read padding instances as real ones; for them each batch is cut into groups of bags of one size, run without
padding, so a bag's output never depends on its batch. ABMIL and the pooling models take the mask.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._constants import MODULE_KEYS
from ..nn import masked_mean, masked_softmax
from ._mil import LOSS_REDUCTIONS, MILModuleBase

#: torchmil models of ``TorchMIL(model=...)``: name → whether the torchmil model handles a padding mask.
TORCHMIL_MODELS = {"abmil": True, "dsmil": False, "dtfd": False, "transmil": False, "mean": True, "max": True}
STREAMS = "loss_streams"  # B × T × S logits that the loss reads (internal output)
STREAM_WEIGHTS = "loss_stream_weights"  # B × T × S weight of each stream (0 = absent)


def import_torchmil():
    """torchmil, or an ImportError naming the extra that installs it."""
    try:
        import torchmil
        import torchmil.models
        import torchmil.nn
    except ImportError as err:
        raise ImportError(
            "The torchmil baselines need the package 'torchmil', which is not installed: "
            "pip install 'hcitools[baselines]' (or pip install torchmil)."
        ) from err
    return torchmil


class InstancePooling(nn.Module):
    """Instance-level MIL (002's mean / max pooling baselines): score every instance, pool the scores with
    torchmil's :class:`~torchmil.nn.MeanPool` or :class:`~torchmil.nn.MaxPool`."""

    def __init__(self, feat_ext: nn.Module, n_hidden: int, pool: str):
        super().__init__()
        torchmil = import_torchmil()
        self.feat_ext = feat_ext
        self.classifier = nn.Linear(n_hidden, 1)
        self.kind = pool
        self.pool = torchmil.nn.MeanPool() if pool == "mean" else torchmil.nn.MaxPool()

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.classifier(self.feat_ext(X))  # B × N × 1
        return self.pool(scores, mask).squeeze(-1), scores.squeeze(-1)


class SeededNet(nn.Module):
    """A torchmil model whose every parameter is re-drawn by ``reset_parameters`` (TransMIL's class token is a
    bare parameter drawn at construction), so that ``train(seed=...)`` fixes the initial weights."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def reset_parameters(self) -> None:
        for name, p in self.net.named_parameters():
            if name.endswith("cls_token"):
                nn.init.normal_(p)

    def forward(self, *args, **kwargs):
        return self.net(*args, **kwargs)


def _build(model: str, n_input: int, n_hidden: int, n_attention: int, dropout: float) -> nn.Module:
    torchmil = import_torchmil()
    feat_ext = nn.Sequential(nn.Linear(n_input, n_hidden), nn.ReLU(), nn.Dropout(dropout))
    shape = (n_input,)
    if model == "abmil":
        return torchmil.models.ABMIL(in_shape=shape, att_dim=n_attention, gated=True, feat_ext=feat_ext)
    if model == "dsmil":
        return torchmil.models.DSMIL(in_shape=shape, att_dim=n_attention, feat_ext=feat_ext)
    if model == "dtfd":
        return torchmil.models.DTFDMIL(in_shape=shape, att_dim=n_attention, feat_ext=feat_ext)
    if model == "transmil":
        return torchmil.models.TransMIL(in_shape=shape, att_dim=n_hidden, n_heads=4, feat_ext=feat_ext)
    return InstancePooling(feat_ext, n_hidden, model)


class TorchMILModule(MILModuleBase):
    """T independent torchmil models, one per task (single-task baselines trained side by side).

    Outputs ``logits`` (B × T, each model's prediction: DSMIL the mean of its two streams as in torchmil's
    ``predict``), ``attention`` (B × T × N, each model's instance scores normalised to sum to 1 per bag: the
    attention of ABMIL and DSMIL, TransMIL's class-token attention, DTFD-MIL's instance CAM through a softmax,
    uniform for mean pooling, the top instance for max pooling), ``bag_embedding`` (B × T × 1, the logits),
    ``instance_embedding`` and ``bag_representation`` (the raw instances and their mean: the models share no
    projector).

    Parameters
    ----------
    n_input, n_tasks
        Instance dimension D and number of tasks T.
    model
        A key of ``TORCHMIL_MODELS``.
    n_hidden
        Width of each model's feature extractor (FC + ReLU + dropout); TransMIL's embedding dimension
        (divisible by its 4 heads).
    n_attention
        Attention dimension (ABMIL, DSMIL, DTFD-MIL).
    dropout
        Dropout of the feature extractor.
    loss_reduction
        See :func:`hcitools.module._mil.masked_bce`.
    """

    output_kinds: ClassVar[dict[str, str]] = dict(MILModuleBase.output_kinds)

    def __init__(
        self,
        n_input: int,
        n_tasks: int,
        *,
        model: str = "abmil",
        n_hidden: int = 64,
        n_attention: int = 64,
        dropout: float = 0.25,
        loss_reduction: str = "assay_mean",
        n_batches: int = 0,
        n_aux: int = 0,
    ):
        super().__init__(n_tasks, loss_reduction, n_batches, n_aux)
        if model not in TORCHMIL_MODELS:
            raise ValueError(f"`model` must be one of {sorted(TORCHMIL_MODELS)}, got {model!r}.")
        if model == "transmil" and n_hidden % 4:
            raise ValueError(f"`n_hidden` must be divisible by TransMIL's 4 heads, got {n_hidden}.")
        self.model = model
        self.nets = nn.ModuleList(
            SeededNet(_build(model, n_input, n_hidden, n_attention, dropout)) for _ in range(n_tasks)
        )
        self._build_branches(n_input)

    # ---------------------------------------------------------------------------------------- one model
    def _run_net(self, net: nn.Module, X: torch.Tensor, mask: torch.Tensor):
        """(prediction B, loss streams B × S, stream weights S, instance scores B × N normalised) of one model."""
        if self.model == "abmil":
            pred, att = net(X, mask, return_att=True)
            return pred, pred[:, None], [1.0], masked_softmax(att, mask)
        if self.model == "dsmil":
            bag, att, inst = net(X, mask, return_att=True, return_inst_pred=True)
            top = inst.masked_fill(~mask, float("-inf")).max(1).values
            return 0.5 * (bag + top), torch.stack([bag, top], 1), [1.0, 1.0], att.squeeze(-1) * mask
        if self.model == "dtfd":
            pred, pseudo, cam = net(X, mask, return_pseudo_pred=True, return_inst_cam=True)
            n_groups = pseudo.shape[1]
            weights = [1.0] + [1.0 / n_groups] * n_groups
            return pred, torch.cat([pred[:, None], pseudo], 1), weights, masked_softmax(cam, mask)
        if self.model == "transmil":
            pred, att = net(X, return_att=True)
            att = att[:, : X.shape[1]] * mask
            return pred, pred[:, None], [1.0], att / att.sum(1, keepdim=True).clamp_min(1e-12)
        pred, scores = net(X, mask)
        if self.model == "mean":
            att = mask / mask.sum(1, keepdim=True)
        else:
            top = scores.masked_fill(~mask, float("-inf")).argmax(1)
            att = F.one_hot(top, X.shape[1]).to(X.dtype)
        return pred, pred[:, None], [1.0], att

    def _run_dtfd(self, net, X, mask):
        """DTFD-MIL draws its pseudo-bags with numpy's global generator: fixed draws at evaluation, so that
        predictions are reproducible (training uses the seeded global stream)."""
        if self.training:
            return self._run_net(net, X, mask)
        state = np.random.get_state()  # noqa: NPY002 (torchmil draws from the legacy global generator)
        np.random.seed(0)  # noqa: NPY002
        try:
            return self._run_net(net, X, mask)
        finally:
            np.random.set_state(state)  # noqa: NPY002

    def _task(self, net, x, mask):
        run = self._run_dtfd if self.model == "dtfd" else self._run_net
        if TORCHMIL_MODELS[self.model]:
            pred, streams, weights, att = run(net, x, mask)
            w = x.new_tensor(weights)[None].expand(x.shape[0], -1)
            return pred, streams, w, att
        # models that read padding as instances: bags of one size at a time, without padding
        B, N = mask.shape
        sizes = mask.sum(1)
        pred = x.new_zeros(B)
        att = x.new_zeros(B, N)
        parts = []
        for n in torch.unique(sizes).tolist():
            idx = torch.nonzero(sizes == n).squeeze(1)
            p, s, w, a = run(net, x[idx, :n], mask[idx, :n])
            pred = pred.index_put((idx,), p)
            att = att.index_put((idx,), F.pad(a, (0, N - n)))
            parts.append((idx, s, w))
        n_streams = max(s.shape[1] for _, s, _ in parts)
        streams = x.new_zeros(B, n_streams)
        weights = x.new_zeros(B, n_streams)
        for idx, s, w in parts:
            streams = streams.index_put((idx,), F.pad(s, (0, n_streams - s.shape[1])))
            weights = weights.index_put(
                (idx,), F.pad(x.new_tensor(w), (0, n_streams - len(w))).expand(len(idx), -1)
            )
        return pred, streams, weights, att

    def pool(self, x, mask):
        mask = mask.bool()
        # one torchmil model per task: separate modules, so a loop over the T tasks (not over bags)
        outs = [self._task(net, x, mask) for net in self.nets]
        n_streams = max(o[1].shape[1] for o in outs)
        pad = lambda t: F.pad(t, (0, n_streams - t.shape[1]))  # noqa: E731
        logits = torch.stack([o[0] for o in outs], 1)
        return {
            MODULE_KEYS.LOGITS: logits,
            MODULE_KEYS.ATTENTION: torch.stack([o[3] for o in outs], 1),
            MODULE_KEYS.BAG_EMBEDDING: logits[..., None],
            MODULE_KEYS.INSTANCE_EMBEDDING: x,
            MODULE_KEYS.BAG_REPRESENTATION: masked_mean(x, mask),
            STREAMS: torch.stack([pad(o[1]) for o in outs], 1),
            STREAM_WEIGHTS: torch.stack([pad(o[2]) for o in outs], 1),
        }

    def task_losses(self, inference_outputs, labels, pos_weight=None):
        """Per-task losses over observed labels: each model's streams, weighted as in its torchmil
        ``compute_loss``, reduced like :func:`hcitools.module._mil.masked_bce`."""
        streams, weights = inference_outputs[STREAMS], inference_outputs[STREAM_WEIGHTS]  # B × T × S
        observed = ~torch.isnan(labels)
        target = torch.nan_to_num(labels, nan=0.0)[..., None].expand_as(streams)
        pw = None if pos_weight is None else pos_weight[None, :, None]
        bce = F.binary_cross_entropy_with_logits(streams, target, pos_weight=pw, reduction="none")
        per_bag = (bce * weights).sum(-1)
        per_bag = torch.where(observed, per_bag, torch.zeros_like(per_bag))
        count = observed.sum(0)
        if self.loss_reduction == "assay_mean":
            return per_bag.sum(0) / count.clamp_min(1), count
        if self.loss_reduction == "label_sum":
            return per_bag.sum(0) / max(1, labels.shape[0]), count
        raise ValueError(f"`loss_reduction` must be one of {LOSS_REDUCTIONS}, got {self.loss_reduction!r}.")
