"""The batched, padded MIL heads against a naive per-task, per-bag reference built from ``torch.nn.Linear``.

The reference follows the published formulas (SPECS §2; Ilse et al. 2018 for (gated) ABMIL, Li et al. 2021 for
DSMIL) one task and one bag at a time, on the real instances only (no padding, no mask), in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn

import hcitools.nn._mil as mil
from hcitools._constants import MODULE_KEYS
from hcitools.module import MeanMLPModule, MoMILModule, MultiLabelMILModule
from hcitools.module._mil import masked_bce
from hcitools.nn import MultiTaskAttentionHeads, MultiTaskDSMILHeads, TaskLinear

HEADS = ["gated_abmil", "abmil", "dsmil"]
SIZES = (1, 4, 7, 2, 9)  # ragged bags, one of a single instance
ATOL = RTOL = 1e-10  # float64 throughout


# ---------------------------------------------------------------------------------------------- reference
def _linear(layer: TaskLinear, t: int, cols: slice = slice(None)) -> nn.Linear:
    """Task ``t`` of a TaskLinear (``weight[t]`` is in × out) as a plain ``nn.Linear`` (weight out × in)."""
    w = layer.weight.detach()[t][:, cols]
    lin = nn.Linear(w.shape[0], w.shape[1]).double()
    with torch.no_grad():
        lin.weight.copy_(w.T)
        lin.bias.copy_(layer.bias.detach()[t][cols])
    return lin


def _ref_abmil(heads: MultiTaskAttentionHeads, t: int, h: torch.Tensor) -> dict[str, torch.Tensor]:
    """One task, one bag (n × d real instances): a = softmax(wᵀ(tanh(V H) [⊙ sigmoid(U H)])), z = Σ a H."""
    n_att = heads.n_attention
    project = _linear(heads.project, t)
    V = _linear(heads.attention_vu, t, slice(0, n_att))
    w = _linear(heads.attention_w, t)
    classifier = _linear(heads.classifier, t)
    H = torch.relu(project(h))  # n × hidden
    A = torch.tanh(V(H))
    if heads.gated:
        U = _linear(heads.attention_vu, t, slice(n_att, 2 * n_att))
        A = A * torch.sigmoid(U(H))
    a = torch.softmax(w(A).squeeze(-1), dim=0)  # n
    z = a @ H
    return {"logits": classifier(z).squeeze(-1), "attention": a, "bag_embedding": z}


def _ref_dsmil(heads: MultiTaskDSMILHeads, t: int, h: torch.Tensor) -> dict[str, torch.Tensor]:
    """One task, one bag: critical instance = argmax of the instance classifier; a = softmax(⟨q_k, q_crit⟩/√d_q);
    z = Σ a v(H); output = mean of the max-instance score and the bag score."""
    project = _linear(heads.project, t)
    inst_clf = _linear(heads.instance_classifier, t)
    q = _linear(heads.query, t)
    v = _linear(heads.value, t)
    bag_clf = _linear(heads.bag_classifier, t)
    H = torch.relu(project(h))
    scores = inst_clf(H).squeeze(-1)  # n
    crit = int(torch.argmax(scores))
    Q = torch.tanh(q(H))
    a = torch.softmax(Q @ Q[crit] / math.sqrt(Q.shape[1]), dim=0)
    z = a @ v(H)
    bag = bag_clf(z).squeeze(-1)
    inst = scores[crit]
    return {
        "logits": 0.5 * (inst + bag),
        "instance_logits": inst,
        "bag_logits": bag,
        "attention": a,
        "bag_embedding": z,
    }


def _reference(heads, t, h):
    return _ref_dsmil(heads, t, h) if isinstance(heads, MultiTaskDSMILHeads) else _ref_abmil(heads, t, h)


def _padded(sizes, d, seed=0, pad_value=0.0):
    """Ragged bags padded into B × N_max × d with a mask; padding filled with ``pad_value``."""
    g = torch.Generator().manual_seed(seed)
    bags = [torch.randn(n, d, generator=g, dtype=torch.float64) for n in sizes]
    n_max = max(sizes)
    x = torch.full((len(sizes), n_max, d), float(pad_value), dtype=torch.float64)
    mask = torch.zeros(len(sizes), n_max, dtype=torch.bool)
    for b, xb in enumerate(bags):
        x[b, : len(xb)] = xb
        mask[b, : len(xb)] = True
    return bags, x, mask


def _heads(kind, n_tasks, d, n_hidden=4, n_attention=3):
    torch.manual_seed(1)
    if kind == "dsmil":
        heads = MultiTaskDSMILHeads(n_tasks, d, n_hidden, n_attention=n_attention, dropout=0.3)
    else:
        heads = MultiTaskAttentionHeads(
            n_tasks, d, n_hidden, n_attention=n_attention, gated=kind == "gated_abmil", dropout=0.3
        )
    return heads.double().eval()  # eval: dropout off


def _width(heads) -> int:
    if isinstance(heads, MultiTaskDSMILHeads):
        return 2 * heads.value.weight.shape[2]
    return 2 * heads.n_attention


# ---------------------------------------------------------------------------------------------- heads
@pytest.mark.parametrize("kind", HEADS)
@pytest.mark.parametrize("tasks_per_block", [1, 2, 3, "default", None])
def test_batched_heads_equal_naive_per_task_loop(kind, tasks_per_block, monkeypatch):
    T, d = 5, 6
    heads = _heads(kind, T, d)
    bags, x, mask = _padded(SIZES, d)
    n_rows = x.shape[0] * x.shape[1]
    if tasks_per_block is None:
        monkeypatch.setattr(mil, "TASK_BLOCK_ELEMENTS", None)
        expected_blocks = 1
    elif tasks_per_block == "default":
        expected_blocks = 1  # tiny tensors: every task fits in the default block
    else:
        monkeypatch.setattr(mil, "TASK_BLOCK_ELEMENTS", tasks_per_block * n_rows * _width(heads))
        expected_blocks = math.ceil(T / tasks_per_block)
    calls = []
    block = heads._forward_block

    def counting(*args):
        calls.append(1)
        return block(*args)

    monkeypatch.setattr(heads, "_forward_block", counting)
    with torch.no_grad():
        out = heads(x, mask)
    assert len(calls) == expected_blocks  # the blocked path was really taken
    keys = ["logits", "attention", "bag_embedding"]
    if kind == "dsmil":
        keys += ["instance_logits", "bag_logits"]
    assert set(keys) <= set(out)
    assert out["logits"].shape == (len(SIZES), T)
    assert out["attention"].shape == (len(SIZES), T, max(SIZES))
    with torch.no_grad():
        for b, h in enumerate(bags):
            n = len(h)
            for t in range(T):
                ref = _reference(heads, t, h)
                for key in ("logits", "instance_logits", "bag_logits"):
                    if key in ref:
                        torch.testing.assert_close(out[key][b, t], ref[key], atol=ATOL, rtol=RTOL)
                torch.testing.assert_close(out["attention"][b, t, :n], ref["attention"], atol=ATOL, rtol=RTOL)
                assert torch.all(out["attention"][b, t, n:] == 0)
                torch.testing.assert_close(
                    out["bag_embedding"][b, t], ref["bag_embedding"], atol=ATOL, rtol=RTOL
                )
    if kind == "dsmil":  # the prediction is the mean of the two streams
        torch.testing.assert_close(out["logits"], 0.5 * (out["instance_logits"] + out["bag_logits"]))


# ---------------------------------------------------------------------------------------------- DSMIL loss
def _bce(logit, y, pw=1.0):
    """Binary cross-entropy of one logit, by hand: −(pw · y · log σ(x) + (1 − y) · log σ(−x))."""
    return -(pw * y * F.logsigmoid(logit) + (1 - y) * F.logsigmoid(-logit))


def _module(head, n_input=6, n_tasks=4, dropout=0.0, loss_reduction="assay_mean", seed=0):
    torch.manual_seed(seed)
    return MoMILModule(
        n_input,
        n_tasks,
        head=head,
        n_hidden=7,
        n_head_hidden=5,
        dropout=dropout,
        loss_reduction=loss_reduction,
    ).double()


def _labels(n_bags, n_tasks, seed=0, all_nan_task=None):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=(n_bags, n_tasks)).astype(np.float64)
    y[rng.random((n_bags, n_tasks)) < 0.3] = np.nan
    y[0, :] = [0, 1] * (n_tasks // 2) + [1] * (n_tasks % 2)  # every task observed at least twice with
    y[1, :] = [1, 0] * (n_tasks // 2) + [0] * (n_tasks % 2)  # both classes (unless made all-NaN below)
    if all_nan_task is not None:
        y[:, all_nan_task] = np.nan
    return torch.from_numpy(y)


@pytest.mark.parametrize("loss_reduction", ["assay_mean", "label_sum"])
@pytest.mark.parametrize("use_pos_weight", [False, True])
def test_dsmil_loss_is_half_max_instance_plus_half_bag_bce(loss_reduction, use_pos_weight):
    T, D = 4, 6
    module = _module("dsmil", D, T, loss_reduction=loss_reduction).eval()
    bags, x, mask = _padded(SIZES, D, seed=3)
    labels = _labels(len(SIZES), T, seed=3)
    labels[2, 1] = np.nan
    pos_weight = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64) if use_pos_weight else None
    with torch.no_grad():
        out = module.inference(x, mask)
        loss = module.loss({"X": x, "mask": mask, "labels": labels}, out, {}, pos_weight=pos_weight)
        task_loss = loss.extra_metrics[MODULE_KEYS.TASK_LOSS]
        count = loss.extra_metrics[MODULE_KEYS.TASK_COUNT]
        lin = module.projector[0]
        for t in range(T):
            observed = [b for b in range(len(bags)) if not torch.isnan(labels[b, t])]
            assert int(count[t]) == len(observed)
            pw = 1.0 if pos_weight is None else float(pos_weight[t])
            inst_terms, bag_terms = [], []
            for b in observed:
                h = torch.relu(bags[b] @ lin.weight.T + lin.bias)  # shared projector, real instances only
                ref = _ref_dsmil(module.heads, t, h)
                y = labels[b, t]
                inst_terms.append(_bce(ref["instance_logits"], y, pw))
                bag_terms.append(_bce(ref["bag_logits"], y, pw))
                torch.testing.assert_close(out[MODULE_KEYS.LOGITS][b, t], ref["logits"], atol=ATOL, rtol=RTOL)
                torch.testing.assert_close(
                    out[MODULE_KEYS.LOGITS][b, t], 0.5 * (ref["instance_logits"] + ref["bag_logits"])
                )
            denom = len(observed) if loss_reduction == "assay_mean" else len(bags)
            expected = 0.5 * sum(inst_terms) / denom + 0.5 * sum(bag_terms) / denom
            torch.testing.assert_close(task_loss[t], expected, atol=ATOL, rtol=RTOL)
        # "equal" weighting: the plain sum over tasks observed in the batch
        torch.testing.assert_close(loss.loss, task_loss[count > 0].sum())
    # not one BCE on the merged (mean) logit
    merged, _ = masked_bce(out[MODULE_KEYS.LOGITS], labels, pos_weight, loss_reduction)
    assert not torch.allclose(merged, task_loss)


# ---------------------------------------------------------------------------------------------- gradients
def _head_layers(module) -> list[TaskLinear]:
    layers = [m for m in module.heads.modules() if isinstance(m, TaskLinear)]
    assert len(layers) >= 4
    return layers


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("loss_reduction", ["assay_mean", "label_sum"])
def test_nan_task_gets_exactly_zero_gradient(head, loss_reduction):
    T, D, k = 4, 6, 2
    module = _module(head, D, T, dropout=0.5, loss_reduction=loss_reduction).train()  # dropout on
    _, x, mask = _padded(SIZES, D, seed=5)
    labels = _labels(len(SIZES), T, seed=5, all_nan_task=k)
    out = module.inference(x, mask)
    loss = module.loss({"X": x, "mask": mask, "labels": labels}, out, {})
    assert loss.extra_metrics[MODULE_KEYS.TASK_COUNT][k] == 0
    assert loss.extra_metrics[MODULE_KEYS.TASK_LOSS][k] == 0
    assert loss.extra_metrics[MODULE_KEYS.TASK_LOSS].requires_grad  # undetached
    loss.loss.backward()
    for layer in _head_layers(module):
        assert torch.all(layer.weight.grad[k] == 0), layer
        assert torch.all(layer.bias.grad[k] == 0), layer
    others = [t for t in range(T) if t != k]
    # the other tasks do learn (so the zero above is not vacuous)
    assert any(layer.weight.grad[others].abs().sum() > 0 for layer in _head_layers(module))
    assert module.projector[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("head", HEADS)
def test_tasks_do_not_leak_gradients_into_each_others_heads(head, monkeypatch):
    T, D = 4, 6
    monkeypatch.setattr(mil, "TASK_BLOCK_ELEMENTS", 1)  # one task per block: views of the weights per block
    module = _module(head, D, T, dropout=0.5).train()
    _, x, mask = _padded(SIZES, D, seed=6)
    labels = _labels(len(SIZES), T, seed=6)
    for i in range(T):
        module.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        out = module.inference(x, mask)
        task_loss = module.loss({"X": x, "mask": mask, "labels": labels}, out, {}).extra_metrics[
            MODULE_KEYS.TASK_LOSS
        ]
        task_loss[i].backward()
        own = 0.0
        for layer in _head_layers(module):
            for j in range(T):
                if j != i:
                    assert torch.all(layer.weight.grad[j] == 0), (layer, i, j)
                    assert torch.all(layer.bias.grad[j] == 0), (layer, i, j)
            own += float(layer.weight.grad[i].abs().sum())
        assert own > 0  # task i trains its own head
        assert module.projector[0].weight.grad.abs().sum() > 0  # and the shared projector


# ---------------------------------------------------------------------------------------------- masked_bce
@st.composite
def _logits_labels(draw):
    B = draw(st.integers(1, 12))
    T = draw(st.integers(1, 5))
    logits = draw(hnp.arrays(np.float64, (B, T), elements=st.floats(-15, 15)))
    labels = draw(hnp.arrays(np.float64, (B, T), elements=st.sampled_from([0.0, 1.0, np.nan])))
    pos_weight = draw(
        st.none() | hnp.arrays(np.float64, (T,), elements=st.floats(0.1, 10.0)),
    )
    return logits, labels, pos_weight


@settings(max_examples=50, deadline=None)
@given(_logits_labels(), st.sampled_from(["assay_mean", "label_sum"]))
def test_masked_bce_matches_sklearn_log_loss_over_observed(data, reduction):
    from sklearn.metrics import log_loss

    logits, labels, pos_weight = data
    B, T = logits.shape
    lt = torch.tensor(logits, requires_grad=True)
    pw = None if pos_weight is None else torch.tensor(pos_weight)
    task_loss, count = masked_bce(lt, torch.tensor(labels), pw, reduction)
    values = task_loss.detach()
    assert task_loss.shape == (T,) and count.shape == (T,)
    prob = 1 / (1 + np.exp(-logits))
    for t in range(T):
        obs = ~np.isnan(labels[:, t])
        assert int(count[t]) == obs.sum()
        if not obs.any():
            assert float(values[t]) == 0.0
            continue
        y = labels[obs, t]
        w = np.where(y == 1, 1.0 if pos_weight is None else pos_weight[t], 1.0)
        total = log_loss(y, prob[obs, t], sample_weight=w, normalize=False, labels=[0, 1])
        expected = total / obs.sum() if reduction == "assay_mean" else total / B
        np.testing.assert_allclose(float(values[t]), expected, rtol=1e-7, atol=1e-9)
    task_loss.sum().backward()
    assert torch.all(lt.grad[torch.isnan(torch.tensor(labels))] == 0)  # NaN: exactly zero gradient
    assert torch.isfinite(lt.grad).all()


# ---------------------------------------------------------------------------------------------- padding
def _any_module(kind, D):
    torch.manual_seed(2)
    if kind in HEADS:
        m = MoMILModule(D, 3, head=kind, n_hidden=7, n_head_hidden=5, dropout=0.5)
    elif kind == "mean_mlp":
        m = MeanMLPModule(D, 3, n_hidden=7, dropout=0.5)
    else:
        m = MultiLabelMILModule(D, 3, n_hidden=7, n_head_hidden=5, dropout=0.5)
    return m.double().eval()


@pytest.mark.parametrize("kind", [*HEADS, "mean_mlp", "multilabel_mil"])
@pytest.mark.parametrize("pad_value", [0.0, -3e4, 1e6])
def test_extra_padding_changes_no_output(kind, pad_value):
    D = 6
    module = _any_module(kind, D)
    _, x, mask = _padded(SIZES, D, seed=8)
    n = x.shape[1]
    extra = 5
    mask2 = torch.cat([mask, torch.zeros(len(SIZES), extra, dtype=torch.bool)], dim=1)
    x2 = torch.cat([x, torch.zeros(len(SIZES), extra, D, dtype=torch.float64)], dim=1)
    g = torch.Generator().manual_seed(9)
    n_pad = int((~mask2).sum())
    # garbage in every padded row, the old padding and the appended one
    x2[~mask2] = pad_value + abs(pad_value) * torch.randn(n_pad, D, generator=g, dtype=torch.float64)
    with torch.no_grad():
        a = module.inference(x, mask)
        b = module.inference(x2, mask2)
    assert set(a) == set(b) == set(module.output_kinds)
    for key, kind_ in module.output_kinds.items():
        if kind_ == "bag":
            torch.testing.assert_close(b[key], a[key], atol=1e-10, rtol=1e-10, msg=key)
        elif kind_ == "bag_task_instance":
            torch.testing.assert_close(b[key][..., :n], a[key], atol=1e-10, rtol=1e-10, msg=key)
            assert torch.all(b[key][..., n:] == 0), key
        else:
            for r in range(len(SIZES)):
                torch.testing.assert_close(b[key][r][mask2[r]], a[key][r][mask[r]], atol=1e-10, rtol=1e-10)
