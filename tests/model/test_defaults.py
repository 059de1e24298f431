"""The training defaults that scale with the number of training bags (``MILModelBase.train``, ``scaled_defaults``)."""

import math

import numpy as np
import pytest
from lightning.pytorch.callbacks import Callback

import hcitools as ht
from hcitools.train import MILTrainingPlan
from hcitools.train._mil_plan import VAL_LOSS, VAL_MEAN_AUROC, scaled_defaults


# (n_train, batch_size, steps per epoch, max_epochs, lr warm-up steps, early-stopping warm-up, patience): the table
# of the `train` docstring
@pytest.mark.parametrize(
    ("n_train", "batch_size", "steps", "max_epochs", "lr_warmup", "warmup_epochs", "patience"),
    [
        (100, 8, 13, 154, 101, 31, 16),
        (1_000, 62, 17, 118, 101, 24, 12),
        (100_000, 256, 391, 20, 391, 4, 10),
    ],
)
def test_rule_for_100_1000_100000_bags(
    n_train, batch_size, steps, max_epochs, lr_warmup, warmup_epochs, patience
):
    d = scaled_defaults(n_train)
    assert (d.batch_size, d.steps_per_epoch, d.max_epochs) == (batch_size, steps, max_epochs)
    assert (d.lr_warmup_steps, d.warmup_epochs, d.patience) == (lr_warmup, warmup_epochs, patience)
    # the documented formulas
    assert d.batch_size == min(256, max(8, n_train // 16))
    assert d.steps_per_epoch == math.ceil(n_train / d.batch_size)
    assert d.max_epochs == min(300, max(20, math.ceil(2000 / d.steps_per_epoch)))
    assert d.lr_warmup_steps == math.ceil(0.05 * d.total_steps)
    # small sets get many more optimiser steps than the old fixed 256-bag batches × 100 epochs
    assert d.total_steps >= min(2000, 20 * d.steps_per_epoch)


@pytest.mark.parametrize("n_train", [1, 7, 8, 127, 128, 4095, 4096, 10**7])
def test_rule_bounds(n_train):
    d = scaled_defaults(n_train)
    assert 8 <= d.batch_size <= 256
    assert 20 <= d.max_epochs <= 300
    assert 1 <= d.lr_warmup_steps < d.total_steps
    assert d.warmup_epochs < d.max_epochs and d.patience >= 10


def test_explicit_values_are_kept():
    d = scaled_defaults(100, batch_size=256, max_epochs=7, lr_warmup_steps=0, warmup_epochs=3, patience=2)
    assert (d.batch_size, d.max_epochs, d.lr_warmup_steps, d.warmup_epochs, d.patience) == (256, 7, 0, 3, 2)
    assert d.steps_per_epoch == 1
    # the others are derived from the values given
    d = scaled_defaults(100, batch_size=50)
    assert d.steps_per_epoch == 2 and d.max_epochs == 300 and d.lr_warmup_steps == 30


def test_rule_refuses_no_bags():
    with pytest.raises(ValueError, match="n_train"):
        scaled_defaults(0)


@pytest.mark.parametrize("step", range(12))
def test_lr_factor_formula(step):
    w, total = 4, 12
    f = MILTrainingPlan.lr_factor(step, warmup_steps=w, total_steps=total)
    expected = (step + 1) / w if step < w else 0.5 * (1 + math.cos(math.pi * (step - w) / (total - w)))
    assert f == pytest.approx(expected)


class _RecordLR(Callback):
    def __init__(self):
        self.lrs = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def _tiny(n_compounds=40, seed=0, label_density=0.5):
    adata = ht.datasets.synthetic_hci(
        n_compounds=n_compounds, n_assays=2, n_primary=1, n_features=4, label_density=label_density, seed=seed
    )
    ht.model.MoMIL.setup_anndata(adata)
    return adata


def test_warmup_schedule_read_off_the_optimiser():
    """The learning rate of every optimiser step follows ``lr_factor`` (linear warm-up, then cosine to 0)."""
    adata = _tiny()
    model = ht.model.MoMIL(adata, n_hidden=4, n_head_hidden=4)
    rec = _RecordLR()
    lr, w = 1e-2, 5
    with pytest.warns(UserWarning, match="without early stopping"):  # no validation bags
        model.train(
            max_epochs=4, lr=lr, lr_warmup_steps=w, batch_size=16, validation_size=0.0, callbacks=[rec],
            enable_progress_bar=False, accelerator="cpu",
        )  # fmt: skip
    total = 4 * math.ceil(len(model.train_indices) / 16)
    assert len(rec.lrs) == total
    expected = [lr * MILTrainingPlan.lr_factor(s, warmup_steps=w, total_steps=total) for s in range(total)]
    np.testing.assert_allclose(rec.lrs, expected, rtol=1e-6)
    assert rec.lrs[0] == pytest.approx(lr / w) and rec.lrs[w - 1] == pytest.approx(lr)
    assert np.all(np.diff(rec.lrs[:w]) > 0) and np.all(np.diff(rec.lrs[w:]) < 0)  # up, then down


def test_no_arguments_derive_and_record_the_settings():
    adata = _tiny(n_compounds=30)
    model = ht.model.MoMIL(adata, n_hidden=4, n_head_hidden=4)
    model.train(max_epochs=2, enable_progress_bar=False, accelerator="cpu")  # only max_epochs given
    d = scaled_defaults(len(model.train_indices), max_epochs=2)
    p = model.train_params_
    assert (p["batch_size"], p["lr_warmup_steps"], p["warmup_epochs"], p["patience"]) == (
        d.batch_size, d.lr_warmup_steps, d.warmup_epochs, d.patience,
    )  # fmt: skip
    assert p["max_epochs"] == 2 and p["lr"] == 1e-3 and p["monitor"] in ("auroc", "loss")


def test_explicit_training_values_are_used_as_given():
    adata = _tiny(n_compounds=30)
    model = ht.model.MoMIL(adata, n_hidden=4, n_head_hidden=4)
    model.train(
        max_epochs=3, warmup_epochs=1, patience=2, lr=3e-3, lr_warmup_steps=0, batch_size=5, monitor="auroc",
        enable_progress_bar=False, accelerator="cpu",
    )  # fmt: skip
    p = model.train_params_
    assert (p["max_epochs"], p["warmup_epochs"], p["patience"], p["batch_size"]) == (3, 1, 2, 5)
    assert (p["lr"], p["lr_warmup_steps"], p["monitor"]) == (3e-3, 0, "auroc")


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"max_epochs": "10"}, "max_epochs"),
        ({"lr_warmup_steps": -1}, "lr_warmup_steps"),
        ({"patience": 0}, "patience"),
        ({"monitor": "auprc"}, "monitor"),
    ],
)
def test_bad_values_refused_before_any_change(kwargs, name):
    adata = _tiny(n_compounds=20)
    model = ht.model.MoMIL(adata, n_hidden=4, n_head_hidden=4)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    with pytest.raises((ValueError, TypeError), match=f"`{name}`"):  # a wrong type is a TypeError
        model.train(enable_progress_bar=False, **kwargs)
    assert all(torch_equal(before[k], v) for k, v in model.module.state_dict().items())
    assert not model.is_trained


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_auto_monitor_follows_the_validation_counts():
    """Few validation positives → validation loss; enough → the mean AUROC; forced values are kept."""
    few = _tiny(n_compounds=20, label_density=0.1)
    model = ht.model.MoMIL(few, n_hidden=4, n_head_hidden=4)
    model.train(max_epochs=2, enable_progress_bar=False, accelerator="cpu")
    counts_few = model.train_params_["monitor"]
    many = _tiny(n_compounds=300)
    model2 = ht.model.MoMIL(many, n_hidden=4, n_head_hidden=4)
    model2.train(max_epochs=2, validation_size=0.5, enable_progress_bar=False, accelerator="cpu")
    assert counts_few == "loss" and model2.train_params_["monitor"] == "auroc"
    model.train(max_epochs=2, monitor="auroc", enable_progress_bar=False, accelerator="cpu")
    assert model.train_params_["monitor"] == "auroc"
    assert VAL_MEAN_AUROC in model.history and VAL_LOSS in model.history
