"""Property tests of ragged-bag batching: permutation, padding, batch-vs-single, zero attention on padding."""

import numpy as np
import pytest
import torch

from hcitools.dataloaders import BagCollator, BagData
from hcitools.module import MeanMLPModule, MoMILModule, MultiLabelMILModule

HEADS = ["gated_abmil", "abmil", "dsmil"]


def _module(kind, n_input=6, n_tasks=4):
    torch.manual_seed(0)
    if kind in HEADS:
        m = MoMILModule(n_input, n_tasks, head=kind, n_hidden=8, n_head_hidden=5, dropout=0.0)
    elif kind == "mean_mlp":
        m = MeanMLPModule(n_input, n_tasks, n_hidden=8, dropout=0.0)
    else:
        m = MultiLabelMILModule(n_input, n_tasks, n_hidden=8, n_head_hidden=5, dropout=0.0)
    return m.eval()


def _bags(sizes=(3, 7, 1, 5), n_input=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(sum(sizes), n_input)).astype(np.float32)
    bags = np.repeat([f"b{i}" for i in range(len(sizes))], sizes)
    perm = rng.permutation(len(X))  # instances of a bag need not be contiguous in the AnnData
    return BagData.from_arrays(X[perm], bags[perm], None, 4)


ALL = [*HEADS, "mean_mlp", "multilabel_mil"]


@pytest.mark.parametrize("kind", ALL)
def test_batch_equals_one_bag_at_a_time_and_padding(kind):
    m, data = _module(kind), _bags()
    collate = BagCollator(data)
    batch = collate(list(range(data.n_bags)))
    with torch.no_grad():
        together = m.inference(batch["X"], batch["mask"])
        for b in range(data.n_bags):
            single = collate([b])
            alone = m.inference(single["X"], single["mask"])
            torch.testing.assert_close(together["logits"][b], alone["logits"][0], atol=1e-5, rtol=1e-5)
            n = int(data.sizes[b])
            torch.testing.assert_close(
                together["attention"][b, :, :n], alone["attention"][0], atol=1e-5, rtol=1e-5
            )
    # zero attention on padding; each bag's attention sums to 1 per task
    att = together["attention"]
    assert torch.all(att[~batch["mask"][:, None, :].expand_as(att)] == 0)
    torch.testing.assert_close(att.sum(-1), torch.ones_like(att.sum(-1)))


@pytest.mark.parametrize("kind", ALL)
def test_permutation_invariance(kind):
    m = _module(kind)
    x = torch.randn(1, 9, 6)
    mask = torch.ones(1, 9, dtype=torch.bool)
    perm = torch.randperm(9)
    with torch.no_grad():
        a = m.inference(x, mask)
        b = m.inference(x[:, perm], mask)
    torch.testing.assert_close(a["logits"], b["logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a["attention"][..., perm], b["attention"], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", ALL)
def test_padding_values_do_not_matter(kind):
    m = _module(kind)
    x = torch.randn(2, 6, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    x2 = x.clone()
    x2[0, 3:] = 1e3  # garbage in padding
    with torch.no_grad():
        a, b = m.inference(x, mask), m.inference(x2, mask)
        c = m.inference(x[:1, :3], mask[:1, :3])  # no padding at all
    torch.testing.assert_close(a["logits"], b["logits"])
    torch.testing.assert_close(a["logits"][:1], c["logits"], atol=1e-5, rtol=1e-5)


def test_heads_are_batched_not_looped():
    """200 assays are one set of T × d × h weights, not 200 modules."""
    m = MoMILModule(16, 200, n_hidden=8, n_head_hidden=4)
    assert len(list(m.heads.children())) < 10
    assert m.heads.project.weight.shape == (200, 8, 4)


def test_collator_subsampling_never_duplicates():
    data = _bags(sizes=(20, 3))
    collate = BagCollator(data, max_instances=5, seed=1)
    big = int(np.argmax(data.sizes))
    batch = collate([big, 1 - big])
    assert batch["mask"].sum(1).tolist() == [5, 3]
    rows = batch["X"][0][batch["mask"][0]]
    assert len(torch.unique(rows, dim=0)) == 5
    full = data.X[data.starts[big] : data.starts[big] + 20]
    assert all((full == r).all(1).any() for r in rows)


def test_masked_bce_ignores_unobserved():
    from hcitools.module._mil import masked_bce

    logits = torch.tensor([[2.0, 0.0], [-1.0, 5.0]])
    labels = torch.tensor([[1.0, float("nan")], [0.0, float("nan")]])
    per_task, count = masked_bce(logits, labels)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], labels[:, 0])
    torch.testing.assert_close(per_task[0], expected)
    assert per_task[1] == 0 and count.tolist() == [2, 0]
    # the paper's reduction: the sum over observed labels, per bag of the batch
    summed, _ = masked_bce(logits, labels, reduction="label_sum")
    torch.testing.assert_close(summed[0], expected * 2 / 2)
    with pytest.raises(ValueError, match="loss_reduction"):
        masked_bce(logits, labels, reduction="mean")


def test_dropout_matches_torch_semantics_and_is_seeded():
    from hcitools.nn import Dropout

    x = torch.ones(200_000)
    d = Dropout(0.3).train()
    torch.manual_seed(1)
    y = d(x)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.3) < 0.01  # zeroes a fraction p
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.7))  # inverted scaling
    torch.manual_seed(1)
    torch.testing.assert_close(d(x), y)  # same seed, same mask
    assert d.eval()(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)


@pytest.mark.parametrize("head", HEADS)
def test_task_blocks_give_the_same_outputs_and_gradients(head, monkeypatch):
    """Blocks of tasks (TASK_BLOCK_ELEMENTS) are an implementation detail: results match one block of all tasks."""
    import hcitools.nn._mil as mil

    m = MoMILModule(6, 7, head=head, n_hidden=8, n_head_hidden=5, dropout=0.0)
    x, mask = torch.randn(3, 4, 6), torch.ones(3, 4, dtype=torch.bool)
    mask[0, 2:] = False
    out = {}
    for elements in (2**30, 1):  # all tasks at once; one task per block
        monkeypatch.setattr(mil, "TASK_BLOCK_ELEMENTS", elements)
        m.zero_grad()
        res = m.inference(x, mask)
        res["logits"].sum().backward()
        out[elements] = (
            res["logits"].detach(),
            res["attention"].detach(),
            m.heads.project.weight.grad.clone(),
        )
    for a, b in zip(out[2**30], out[1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_size_grouped_sampler_is_a_shuffle_with_less_padding():
    from torch.utils.data import RandomSampler

    from hcitools.dataloaders import SizeGroupedSampler, bag_loader

    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 200, size=1000)
    order = list(
        SizeGroupedSampler(sizes, batch_size=10, window=5, generator=torch.Generator().manual_seed(0))
    )
    assert sorted(order) == list(range(1000))  # every bag once
    for start in range(0, 1000, 50):  # sorted within each window of 5 batches
        assert np.all(np.diff(sizes[order[start : start + 50]]) >= 0)
    again = list(
        SizeGroupedSampler(sizes, batch_size=10, window=5, generator=torch.Generator().manual_seed(0))
    )
    assert order == again  # seeded
    # equal sizes: exactly the plain shuffle
    plain = list(RandomSampler(range(100), generator=torch.Generator().manual_seed(3)))
    same = list(SizeGroupedSampler(np.full(100, 7), 10, generator=torch.Generator().manual_seed(3)))
    assert plain == same

    def padded(group):
        data = BagData.from_arrays(
            np.zeros((sizes.sum(), 2), np.float32), np.repeat(np.arange(1000), sizes), None, 1
        )
        loader = bag_loader(data, np.arange(1000), batch_size=10, shuffle=True, group_by_size=group)
        return sum(b["mask"].numel() for b in loader)

    assert padded(True) < 0.7 * padded(False)


@pytest.mark.parametrize("head", HEADS)
def test_tasks_are_blocked_on_cpu_only(head, monkeypatch):
    """200 assays: several blocks on CPU; one block of all tasks on other devices and with
    TASK_BLOCK_ELEMENTS=None (checked on the meta device, which runs the same code path without a GPU).

    16 bags of 16 instances still make several blocks under the default TASK_BLOCK_ELEMENTS = 2**20 (4–8,
    depending on the head's width): the same block logic as a 256-bag batch, at a sixteenth of the compute."""
    import hcitools.nn._mil as mil

    m = MoMILModule(16, 200, head=head, n_hidden=16, n_head_hidden=64, dropout=0.0)
    heads = m.heads
    calls = []
    original = type(heads)._forward_block

    def counting(self, h, *args):
        calls.append(args[1][0].shape[0])  # tasks in this block
        return original(self, h, *args)

    monkeypatch.setattr(type(heads), "_forward_block", counting)
    x, mask = torch.randn(16, 16, 16), torch.ones(16, 16, dtype=torch.bool)
    with torch.no_grad():
        m.inference(x, mask)
    assert len(calls) > 1 and sum(calls) == 200  # blocks of tasks covering every task once
    calls.clear()
    monkeypatch.setattr(mil, "TASK_BLOCK_ELEMENTS", None)
    with torch.no_grad():
        m.inference(x, mask)
    assert calls == [200]
    monkeypatch.setattr(mil, "TASK_BLOCK_ELEMENTS", 2**20)
    calls.clear()
    m_meta = m.to("meta")
    with torch.no_grad():
        out = m_meta.inference(x.to("meta"), mask.to("meta"))
    assert calls == [200]
    assert out["logits"].shape == (16, 200)
