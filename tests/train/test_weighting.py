"""The task-weighting slot: the plan combines undetached per-task losses through a strategy and logs them."""

import numpy as np
import pytest
import torch

import hcitools as ht
from hcitools.train import EqualWeighting, TaskWeighting


def test_equal_weighting_skips_tasks_without_labels():
    loss = torch.tensor([0.5, 2.0, 1.0], requires_grad=True)
    total, weights = EqualWeighting(3)(loss, torch.tensor([4, 0, 1]))
    assert weights.tolist() == [1.0, 0.0, 1.0]
    torch.testing.assert_close(total, torch.tensor(1.5))
    total.backward()
    assert loss.grad.tolist() == [1.0, 0.0, 1.0]


class OnlyFirst(TaskWeighting):
    """Weight 1 on the first task, 0 on the others; records the AUROCs it is given."""

    def __init__(self, n_tasks):
        super().__init__(n_tasks)
        self.calls, self.aurocs = 0, []

    def forward(self, task_loss, task_count):
        self.calls += 1
        assert task_loss.requires_grad or not torch.is_grad_enabled()  # undetached in training
        weights = torch.zeros_like(task_loss)
        weights[0] = 1.0
        return (task_loss * weights).sum(), weights

    def on_validation_epoch_end(self, auroc):
        self.aurocs.append(np.asarray(auroc))


def test_a_weighting_instance_drives_training_and_is_logged(screen):
    ht.model.MoMIL.setup_anndata(screen, group_key="compound")
    model = ht.model.MoMIL(screen, n_hidden=8, n_head_hidden=4, dropout=0.0)
    model.train(max_epochs=1, enable_progress_bar=False)  # the first training re-initialises the weights
    head_before = model.module.heads.project.weight.detach().clone()
    strategy = OnlyFirst(len(model.assays))
    model.train(max_epochs=2, warmup_epochs=0, lr=1e-2, batch_size=16, validation_size=0.3,
                weighting=strategy, enable_progress_bar=False)  # fmt: skip
    assert (
        strategy.calls > 0 and len(strategy.aurocs) == 2 and strategy.aurocs[0].shape == (len(model.assays),)
    )
    head_after = model.module.heads.project.weight.detach()
    # weight 0: the other heads receive no gradient (weight decay alone shrinks them by a factor)
    moved = (head_after - head_before).abs().flatten(1).amax(1)
    ratio = (head_after[1:] / head_before[1:]).flatten()
    assert moved[0] > 1e-3 and torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-4)
    for assay in model.assays:
        assert f"task_loss_{assay}" in model.history and f"task_weight_{assay}" in model.history
    weights = np.array([model.history[f"task_weight_{a}"].iloc[1:, 0].to_numpy() for a in model.assays])
    np.testing.assert_allclose(weights[0], 1.0)
    np.testing.assert_allclose(weights[1:], 0.0)
    assert model.train_params_["weighting"] == "OnlyFirst"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"weighting": "nope"}, ValueError, "weighting"),
        ({"weighting": OnlyFirst(2)}, ValueError, "built for 2 tasks"),
        ({"weighting_kwargs": {"m": 1.1}}, TypeError, "weighting_kwargs"),
        ({"weighting_kwargs": [1]}, TypeError, "weighting_kwargs"),
        ({"weighting": OnlyFirst(5), "weighting_kwargs": {"m": 1}}, TypeError, "weighting_kwargs"),
        ({"pos_weight": "yes"}, TypeError, "pos_weight"),
    ],
)
def test_bad_weighting_arguments_fail_before_anything_changes(screen, kwargs, error, match):
    ht.model.MoMIL.setup_anndata(screen)
    model = ht.model.MoMIL(screen, n_hidden=8, n_head_hidden=4)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    rng_before = torch.get_rng_state()
    with pytest.raises(error, match=match):
        model.train(max_epochs=1, **kwargs)
    assert not model.is_trained and model.history_ is None
    assert torch.equal(torch.get_rng_state(), rng_before)
    for k, v in model.module.state_dict().items():
        assert torch.equal(v, before[k])
