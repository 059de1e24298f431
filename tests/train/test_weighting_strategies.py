"""Task-weighting strategies (issue 12): weights and losses against hand-computed values, sparse labels, and one
short training per strategy."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

import hcitools as ht
from hcitools.train import (
    WEIGHTINGS,
    AMTLGeometricWeighting,
    AMTLWeighting,
    DWAWeighting,
    UncertaintyWeighting,
    amtl_weights,
)
from hcitools.train._weighting import make_weighting


def _loss(values):
    return torch.tensor(values, dtype=torch.float32, requires_grad=True)


# ---------------------------------------------------------------------------------------------- uncertainty
def test_uncertainty_loss_weights_and_gradients():
    w = UncertaintyWeighting(3)
    with torch.no_grad():
        w.log_var.copy_(torch.tensor([0.0, math.log(2.0), 1.0]))
    loss = _loss([2.0, 0.1, 5.0])
    total, weights = w(loss, torch.tensor([3, 1, 0]))  # task 2 absent from the batch
    # Σ_observed e^{-s} L + s/2 = 1·2 + 0.5·0.1 + ln2/2
    assert total.item() == pytest.approx(2.0 + 0.05 + math.log(2.0) / 2, rel=1e-6)
    np.testing.assert_allclose(weights.numpy(), [1.0, 0.5, 0.0], rtol=1e-6)
    assert not weights.requires_grad
    total.backward()
    np.testing.assert_allclose(loss.grad.numpy(), [1.0, 0.5, 0.0], rtol=1e-6)
    # ∂/∂s = −e^{-s} L + 1/2; the absent task's s gets nothing (not even the s/2 term)
    np.testing.assert_allclose(w.log_var.grad.numpy(), [-1.5, 0.45, 0.0], rtol=1e-5)
    torch.testing.assert_close(w.sigma2, torch.tensor([1.0, 2.0, math.e]))


def test_uncertainty_learns_the_optimal_weights():
    """For fixed losses, e^{-s} → 1/(2L) (classification) and 1/L·½ → σ² = L (regression): larger loss, smaller weight."""
    w = UncertaintyWeighting(3, regression=[False, False, True])
    opt = torch.optim.Adam(w.parameters(), lr=0.05)
    loss = torch.tensor([2.0, 0.25, 0.5])
    first = None
    for _ in range(600):
        opt.zero_grad()
        total, weights = w(loss, torch.tensor([1, 1, 1]))
        total.backward()
        if first is None:
            first = w.log_var.grad.clone()
        opt.step()
    assert first[0] < 0 < first[1]  # the large loss raises its σ², the small loss lowers it
    np.testing.assert_allclose(w.sigma2.numpy(), [4.0, 0.5, 0.5], rtol=1e-2)
    np.testing.assert_allclose(weights.numpy(), [0.25, 2.0, 1.0], rtol=1e-2)  # c_t e^{-s_t}


# ---------------------------------------------------------------------------------------------- AMTL
def test_amtl_weights_formula_and_cutoff():
    pot = [0.7, 0.9, np.nan, 0.5, 0.9]
    auc = [0.6, 0.86, 0.5, 0.9, np.nan]
    w = amtl_weights(auc, pot, m=1.1, p=0.85, gamma=2)
    # t0: (1 − 0.6/max(0.77, 0.85))² ; t1: AUC ≥ p → 0 (hard cut-off) although 0.86 < m·p_t = 0.99
    # t2: no potential → target p: (1 − 0.5/0.85)² ; t3: AUC ≥ target → 0 ; t4: AUC undefined → NaN
    np.testing.assert_allclose(w[:4], [0.0865051903, 0.0, 0.1695501730, 0.0], rtol=1e-8)
    assert np.isnan(w[4])
    soft = amtl_weights(auc, pot, hard_cutoff=False)
    assert soft[1] == pytest.approx(0.0172431385)  # (1 − 0.86/0.99)²: the formula alone
    # the cut-off: a task just below p keeps a weight, at p it has none
    low = amtl_weights([0.849, 0.85], [0.9, 0.9])
    assert low[0] > 0 and low[1] == 0


def test_amtl_loss_before_and_after_validation():
    w = AMTLWeighting(4, potentials=[0.7, 0.9, np.nan, 0.5])
    loss, count = _loss([1.0, 2.0, 0.5, 3.0]), torch.tensor([2, 2, 0, 1])
    total, weights = w(loss, count)  # before any validation: weights 1, mean over the 3 observed tasks
    assert total.item() == pytest.approx((1.0 + 2.0 + 3.0) / 3)
    assert weights.tolist() == [1.0, 1.0, 0.0, 1.0]
    w.on_validation_epoch_end(np.array([0.6, 0.86, 0.5, np.nan]))
    np.testing.assert_allclose(w.weight.numpy(), [0.0865052, 0.0, 0.1695502, 1.0], rtol=1e-6)  # NaN keeps 1
    total, weights = w(loss, count)
    assert total.item() == pytest.approx((0.0865052 * 1.0 + 1.0 * 3.0) / 3, rel=1e-6)
    np.testing.assert_allclose(weights.numpy(), [0.0865052, 0.0, 0.0, 1.0], rtol=1e-6)
    total.backward()
    np.testing.assert_allclose(loss.grad.numpy(), [0.0865052 / 3, 0.0, 0.0, 1 / 3], rtol=1e-6)
    w.on_validation_epoch_end(np.array([np.nan, 0.5, np.nan, 0.9]))  # NaN keeps the previous weight
    np.testing.assert_allclose(
        w.weight.numpy(), [0.0865052, (1 - 0.5 / 0.99) ** 2, 0.1695502, 0.0], rtol=1e-6
    )


def test_amtl_potentials_by_assay_name():
    assays = ["a", "b", "c"]
    pot = pd.Series({"c": 0.9, "a": 0.7})  # any order, "b" missing → target p
    w = make_weighting("amtl", 3, {"potentials": pot}, assays=assays)
    assert w.assays == assays
    np.testing.assert_allclose(w.potential.numpy(), [0.7, np.nan, 0.9], rtol=1e-6)
    w.on_validation_epoch_end(np.array([0.5, 0.5, 0.5]))
    np.testing.assert_allclose(
        w.weight.numpy(), [(1 - 0.5 / 0.85) ** 2, (1 - 0.5 / 0.85) ** 2, (1 - 0.5 / 0.99) ** 2], rtol=1e-6
    )
    with pytest.raises(ValueError, match=r"does not have.*'z'"):
        make_weighting("amtl", 3, {"potentials": pd.Series({"z": 0.8})}, assays=assays)
    unnamed = make_weighting("amtl", 3, {"potentials": pot})
    with pytest.raises(RuntimeError, match="assays"):
        unnamed.on_validation_epoch_end(np.array([0.5, 0.5, 0.5]))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"potentials": [0.5, 0.6]}, ValueError, "one value per task"),
        ({"potentials": [0.5, 0.6, 1.5]}, ValueError, r"\[0, 1\]"),
        ({"potentials": pd.Series({"a": "high"})}, TypeError, "numbers"),
        ({"m": 0}, ValueError, "`m`"),
        ({"p": 1.2}, ValueError, "`p`"),
        ({"gamma": "2"}, TypeError, "`gamma`"),
        ({"hard_cutoff": 1}, TypeError, "hard_cutoff"),
        ({"margin": 1.1}, TypeError, "weighting_kwargs"),
    ],
)
def test_amtl_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_weighting("amtl", 3, kwargs)


def test_amtl_geometric_is_the_weighted_product():
    loss, count = _loss([0.5, 2.0, 0.0, 0.8]), torch.tensor([4, 1, 0, 2])  # task 2 absent, its loss 0
    raw = AMTLGeometricWeighting(4, normalize=False)
    norm = AMTLGeometricWeighting(4)
    for w in (raw, norm):
        w.weight.copy_(torch.tensor([1.0, 0.5, 1.0, 0.25]))
    total, weights = raw(loss, count)
    assert total.item() == pytest.approx(0.5 * 2.0**0.5 * 0.8**0.25, rel=1e-6)  # Π L^w, 0.66874
    assert total.item() == pytest.approx(0.6687403050, rel=1e-6)
    assert weights.tolist() == [1.0, 0.5, 0.0, 0.25]
    total, _ = norm(loss, count)
    assert total.item() == pytest.approx(0.6687403050 ** (1 / 1.75), rel=1e-6)  # exponents / Σ w = 1.75
    total.backward()
    assert torch.isfinite(loss.grad).all() and loss.grad[2] == 0
    # ∂L/∂L_t = L · (w_t/W) / L_t
    expected = total.item() * np.array([1.0, 0.5, 0.0, 0.25]) / 1.75 / np.array([0.5, 2.0, 1.0, 0.8])
    np.testing.assert_allclose(loss.grad.numpy(), expected, rtol=1e-5)


def test_amtl_geometric_zero_losses_and_weights():
    w = AMTLGeometricWeighting(3)
    loss = _loss([0.0, 0.3, 0.2])
    total, _ = w(loss, torch.tensor([1, 1, 1]))  # an observed zero loss: floored inside the log, no NaN
    assert torch.isfinite(total)
    total.backward()
    assert torch.isfinite(loss.grad).all()
    w.weight.zero_()  # every task cut off: loss 0, no gradient
    loss = _loss([0.4, 0.3, 0.2])
    total, weights = w(loss, torch.tensor([1, 1, 1]))
    assert total.item() == 0 and weights.tolist() == [0.0, 0.0, 0.0]
    total.backward()
    assert loss.grad.tolist() == [0.0, 0.0, 0.0]
    # the same from AUROCs: everything at or above p
    w = AMTLGeometricWeighting(2)
    w.on_validation_epoch_end(np.array([0.9, 0.95]))
    assert w(_loss([0.4, 0.3]), torch.tensor([1, 1]))[0].item() == 0


# ---------------------------------------------------------------------------------------------- DWA
def test_dwa_epoch_logic():
    w = DWAWeighting(3)  # τ = 2
    loss, count = _loss([1.0, 2.0, 3.0]), torch.tensor([1, 1, 1])
    assert w(loss, count)[1].tolist() == [1.0, 1.0, 1.0]  # epoch 0
    w.on_train_epoch_end(np.array([1.0, 1.0, 1.0]))
    assert w(loss, count)[1].tolist() == [1.0, 1.0, 1.0]  # epoch 1: one epoch of history only
    w.on_train_epoch_end(np.array([0.5, 1.0, 0.9]))
    np.testing.assert_allclose(w.ratio.numpy(), [0.5, 1.0, 0.9], rtol=1e-6)
    total, weights = w(loss, count)  # epoch 2: 3·softmax(r/2) = 3·softmax([0.25, 0.5, 0.45])
    np.testing.assert_allclose(weights.numpy(), [0.8558155667, 1.0988889396, 1.0452954936], rtol=1e-6)
    assert weights.sum().item() == pytest.approx(3.0)
    assert total.item() == pytest.approx(0.8558155667 + 2 * 1.0988889396 + 3 * 1.0452954936, rel=1e-6)
    # task 1 absent from the batch: the others renormalise, 2·softmax([0.25, 0.45])
    total, weights = w(loss, torch.tensor([2, 0, 5]))
    np.testing.assert_allclose(weights.numpy(), [0.9003320054, 0.0, 1.0996679946], rtol=1e-6)
    assert total.item() == pytest.approx(0.9003320054 + 3 * 1.0996679946, rel=1e-6)
    # a task without labels in an epoch (NaN mean) has r = 1 at the next two updates
    w.on_train_epoch_end(np.array([0.25, np.nan, 0.9]))
    np.testing.assert_allclose(w.ratio.numpy(), [0.5, 1.0, 1.0], rtol=1e-6)
    w.on_train_epoch_end(np.array([0.25, 0.8, 0.45]))
    np.testing.assert_allclose(w.ratio.numpy(), [1.0, 1.0, 0.5], rtol=1e-6)
    assert w.n_epochs == 4
    with pytest.raises(ValueError, match="temperature"):
        DWAWeighting(3, temperature=0)


# ---------------------------------------------------------------------------------------------- all strategies
def _advanced(name: str, n_tasks: int):
    """The strategy in a state where its weights are not all 1."""
    w = make_weighting(name, n_tasks)
    w.on_validation_epoch_end(np.linspace(0.55, 0.8, n_tasks))
    for epoch_loss in (np.linspace(1.0, 2.0, n_tasks), np.linspace(0.5, 1.9, n_tasks)):
        w.on_train_epoch_end(epoch_loss)
    if name == "uncertainty":
        with torch.no_grad():
            w.log_var.copy_(torch.linspace(-1.0, 1.0, n_tasks))
    return w


@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_sparse_labels_never_give_nan(name):
    w = _advanced(name, 4)
    # absent tasks hold garbage (NaN, inf, 0): it must not leak into the loss or the gradients
    loss = _loss([0.7, float("nan"), 0.4, float("inf")])
    total, weights = w(loss, torch.tensor([3, 0, 2, 0]))
    assert torch.isfinite(total) and torch.isfinite(weights).all()
    assert weights[1] == 0 and weights[3] == 0 and (weights[[0, 2]] > 0).all()
    total.backward()
    assert torch.isfinite(loss.grad).all() and loss.grad[1] == 0 and loss.grad[3] == 0
    # the absent tasks change nothing: same loss as with those tasks left out
    sub = _loss([0.7, 0.0, 0.4, 0.0])
    assert w(sub, torch.tensor([3, 0, 2, 0]))[0].item() == pytest.approx(total.item(), rel=1e-6)
    # a batch without any label
    loss = _loss([0.0, float("nan"), 0.3, 0.2])
    total, weights = w(loss, torch.zeros(4, dtype=torch.long))
    assert total.item() == 0 and weights.tolist() == [0.0] * 4
    total.backward()
    assert torch.isfinite(loss.grad).all() and (loss.grad == 0).all()


# ---------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def small_screen():
    return ht.datasets.synthetic_hci(
        n_compounds=40, n_assays=4, n_plates=2, wells_per_compound=2, fovs_per_well=2, crops_per_fov=2,
        n_features=8, n_primary=2, label_density=0.6, seed=0,
    )  # fmt: skip


def _train(adata, weighting, weighting_kwargs=None, max_epochs=2):
    adata = adata.copy()
    ht.model.MoMIL.setup_anndata(adata, group_key="compound")
    model = ht.model.MoMIL(adata, n_hidden=8, n_head_hidden=4, dropout=0.0)
    model.train(max_epochs=max_epochs, warmup_epochs=0, lr=1e-2, batch_size=16, validation_size=0.3, seed=0,
                weighting=weighting, weighting_kwargs=weighting_kwargs, enable_progress_bar=False)  # fmt: skip
    return model


def _history(model, prefix):
    return np.array([model.history[f"{prefix}_{a}"].to_numpy().ravel() for a in model.assays]).T  # epochs × T


def _check_finite(model):
    assert np.isfinite(model.history["train_loss"].to_numpy()).all()
    assert (
        np.isfinite(_history(model, "task_loss")).all() and np.isfinite(_history(model, "task_weight")).all()
    )


def test_train_uncertainty(small_screen):
    strategy = UncertaintyWeighting(4)
    model = _train(small_screen, strategy)
    _check_finite(model)
    weights = _history(model, "task_weight")
    np.testing.assert_allclose(weights[0], 1.0, atol=0.05)  # s starts at 0; a few Adam steps of lr 1e-2
    assert not np.allclose(weights[-1], 1.0, atol=1e-4)  # s_t moved
    np.testing.assert_allclose(weights[-1], np.exp(-strategy.log_var.detach().numpy()), rtol=0.05)


@pytest.mark.parametrize("name", ["amtl", "amtl_geometric"])
def test_train_amtl(small_screen, name):
    potentials = [0.7, 0.9, 0.6, np.nan]
    model = _train(small_screen, name, {"potentials": potentials}, max_epochs=3)
    _check_finite(model)
    weights, auroc = _history(model, "task_weight"), _history(model, "validation_auroc")
    np.testing.assert_allclose(weights[0], 1.0)  # before the first validation epoch
    expected = np.ones(4)
    for epoch in (1, 2):  # epoch e trains with the weights from validation epoch e − 1
        new = amtl_weights(auroc[epoch - 1], potentials)
        expected = np.where(np.isnan(new), expected, new)
        np.testing.assert_allclose(weights[epoch], expected, rtol=1e-5)
    assert not np.allclose(weights[1:], 1.0)


def test_train_equal_and_a_bad_name(small_screen):
    model = _train(small_screen, "equal", max_epochs=1)
    _check_finite(model)
    np.testing.assert_allclose(_history(model, "task_weight"), 1.0)
    with pytest.raises(ValueError, match="dwa"):
        _train(small_screen, "DWA", max_epochs=1)


def test_train_amtl_potentials_by_name(small_screen):
    potentials = pd.Series({"assay_01": 0.9, "assay_00": 0.7})
    model = _train(small_screen, "amtl", {"potentials": potentials}, max_epochs=2)
    weights, auroc = _history(model, "task_weight"), _history(model, "validation_auroc")
    new = amtl_weights(auroc[0], [0.7, 0.9, np.nan, np.nan])
    np.testing.assert_allclose(weights[1], np.where(np.isnan(new), 1.0, new), rtol=1e-5)


def test_train_dwa(small_screen):
    model = _train(small_screen, "dwa", max_epochs=3)
    _check_finite(model)
    weights, losses = _history(model, "task_weight"), _history(model, "task_loss")
    np.testing.assert_allclose(weights[:2], 1.0)  # the first two epochs
    ratio = losses[1] / losses[0]
    expected = 4 * np.exp(ratio / 2) / np.exp(ratio / 2).sum()
    # every task has labels in nearly every batch here; the batches where one is absent renormalise
    np.testing.assert_allclose(weights[2], expected, rtol=0.05)
    assert not np.allclose(weights[2], 1.0, atol=1e-3)
