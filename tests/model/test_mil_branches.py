"""The adversarial batch branch, the auxiliary concept branches and the task-prior loss of the MIL models."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import hcitools as ht
from hcitools._constants import MIL_KEYS, MODULE_KEYS
from hcitools.module import MeanMLPModule, MoMILModule
from hcitools.module._mil import task_prior_loss
from hcitools.train._mil_plan import MILTrainingPlan, adversarial_schedule

N_ASSAYS = 3


@pytest.fixture
def screen():
    adata = ht.datasets.synthetic_hci(
        n_compounds=40, n_assays=N_ASSAYS, n_plates=3, n_primary=2, n_features=8, label_density=0.5, seed=0
    )
    # a per-bag concept: the number of crops of each well (constant within bags)
    adata.obs["n_crops"] = adata.obs.groupby("well", observed=True)["well"].transform("size").astype(float)
    wells = pd.factorize(adata.obs["well"], sort=True)
    per_well = np.random.default_rng(0).integers(50, 500, len(wells[1])).astype(float)
    adata.obs["depth"] = per_well[wells[0]]  # varies across wells
    return adata


def _assays(adata):
    return [str(a) for a in adata.obsm["assays"].columns]


def _affinity(assays):
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (len(assays), len(assays)))
    return pd.DataFrame((a + a.T) / 2, index=assays, columns=assays)


def _train(model, **kw):
    kw = {"max_epochs": 2, "warmup_epochs": 0, "batch_size": 16, "enable_progress_bar": False, **kw}
    model.train(**kw)
    return model


def _setup(cls, adata, **kw):
    kw = {"bag_key": "well", "labels_key": "assays", "group_key": "compound", "batch_key": "plate", **kw}
    cls.setup_anndata(adata, **kw)


# ------------------------------------------------------------------------------------------------ known answers
@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0, 2.5])
def test_gradient_reversal_sign_and_scale_on_branch_input(weight):
    torch.manual_seed(0)
    module = MeanMLPModule(5, 2, n_hidden=4, dropout=0.0, n_batches=3)
    rep = torch.randn(6, 4, requires_grad=True)
    batch = torch.tensor([0, 1, 2, 0, 1, 2])
    loss = module.adversarial_loss({MODULE_KEYS.BAG_REPRESENTATION: rep}, batch, weight)
    (grad_rev,) = torch.autograd.grad(loss, rep)
    rep2 = rep.detach().clone().requires_grad_(True)
    plain = F.cross_entropy(module.domain_classifier(rep2), batch)
    (grad_plain,) = torch.autograd.grad(plain, rep2)
    assert torch.allclose(loss, plain)  # identity forward
    assert torch.allclose(grad_rev, -weight * grad_plain, atol=1e-7)
    # the classifier itself gets the plain (unreversed, unscaled) gradient
    module.zero_grad()
    module.adversarial_loss({MODULE_KEYS.BAG_REPRESENTATION: rep.detach()}, batch, weight).backward()
    w_rev = module.domain_classifier.weight.grad.clone()
    module.zero_grad()
    F.cross_entropy(module.domain_classifier(rep.detach()), batch).backward()
    assert torch.allclose(w_rev, module.domain_classifier.weight.grad)


def test_prior_loss_against_the_formula():
    rng = np.random.default_rng(1)
    B, T, h = 4, 3, 5
    e = rng.normal(size=(B, T, h))
    c = rng.uniform(size=(T, T))
    c = (c + c.T) / 2
    v = np.array([0.9, 0.1, 0.1])
    expected = 0.0
    for b in range(B):
        E = e[b] @ e[b].T
        expected += sum(v[i] * (c[i, j] - E[i, j]) ** 2 for i in range(T) for j in range(T)) / T**2
    expected /= B
    got = task_prior_loss(torch.tensor(e), torch.tensor(c), torch.tensor(v))
    assert math.isclose(float(got), expected, rel_tol=1e-10)
    # the module scales it by λ and reads e from its per-task bag embeddings
    module = MoMILModule(
        6, T, head="abmil", n_hidden=8, n_head_hidden=h, task_affinity=c.tolist(), prior_weight=0.5,
        prior_task_weight=v.tolist(),
    )  # fmt: skip
    out = {MODULE_KEYS.BAG_EMBEDDING: torch.tensor(e, dtype=torch.float32)}
    assert math.isclose(float(module.prior_loss(out)), 0.5 * expected, rel_tol=1e-5)


def test_prior_loss_zero_when_affinity_matches():
    e = torch.randn(2, 3, 4)
    c = e[0] @ e[0].T
    assert float(task_prior_loss(e[:1], c, torch.ones(3))) == pytest.approx(0.0, abs=1e-10)


def test_adversarial_schedule_values():
    assert adversarial_schedule(0.0) == 0.0
    assert adversarial_schedule(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert adversarial_schedule(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert adversarial_schedule(2.0) == adversarial_schedule(1.0)  # clipped
    values = [adversarial_schedule(p) for p in np.linspace(0, 1, 11)]
    assert np.all(np.diff(values) > 0)


def test_plan_adversarial_weight_fixed_or_scheduled():
    module = MeanMLPModule(5, 2, n_hidden=4, n_batches=2)
    assert (
        MILTrainingPlan(module, assays=["a", "b"], adversarial_weight=0.25).current_adversarial_weight()
        == 0.25
    )
    with pytest.raises(ValueError, match="adversarial_weight"):
        MILTrainingPlan(module, assays=["a", "b"], adversarial_weight="ramp")
    with pytest.raises(ValueError, match="adversarial_weight"):
        MILTrainingPlan(module, assays=["a", "b"], adversarial_weight=-1.0)


def test_aux_losses_standardised_mse():
    module = MeanMLPModule(5, 2, n_hidden=4, dropout=0.0, n_aux=2)
    module.set_aux_scale([10.0, -1.0], [2.0, 0.5])
    rep = torch.randn(3, 4)
    aux = torch.tensor([[12.0, -1.0], [8.0, 0.0], [10.0, float("nan")]])
    loss, count = module.aux_losses({MODULE_KEYS.BAG_REPRESENTATION: rep}, aux)
    pred = module.aux_regressor(rep)
    z = (aux - torch.tensor([10.0, -1.0])) / torch.tensor([2.0, 0.5])
    assert count.tolist() == [3, 2]
    assert torch.allclose(loss[0], ((pred[:, 0] - z[:, 0]) ** 2).mean())
    assert torch.allclose(loss[1], ((pred[:2, 1] - z[:2, 1]) ** 2).mean())


# ------------------------------------------------------------------------------------------------ validation
def test_adversarial_needs_batch_key(screen):
    ht.model.MoMIL.setup_anndata(screen, bag_key="well", labels_key="assays", group_key="compound")
    for cls in (ht.model.MoMIL, ht.model.MeanMLP):
        cls.setup_anndata(screen, bag_key="well", labels_key="assays", group_key="compound")
        with pytest.raises(ValueError, match="batch_key"):
            cls(screen, n_hidden=8, adversarial=True)
    with pytest.raises(TypeError, match="adversarial"):
        ht.model.MoMIL(screen, n_hidden=8, adversarial=1)


def test_aux_keys_validated(screen):
    screen.obs["label"] = "x"
    with pytest.raises(TypeError, match="numeric"):
        _setup(ht.model.MoMIL, screen, aux_keys=["label"])
    screen.obs["flag"] = True
    with pytest.raises(TypeError, match="numeric"):
        _setup(ht.model.MoMIL, screen, aux_keys="flag")
    screen.obs["per_crop"] = np.arange(screen.n_obs, dtype=float)
    with pytest.raises(ValueError, match="varies within bags"):
        _setup(ht.model.MoMIL, screen, aux_keys=["per_crop"])
    screen.obs["with_nan"] = screen.obs["n_crops"].where(screen.obs["well"] != screen.obs["well"].iloc[0])
    with pytest.raises(ValueError, match="NaN"):
        _setup(ht.model.MoMIL, screen, aux_keys=["with_nan"])
    with pytest.raises(KeyError, match="no columns"):
        _setup(ht.model.MoMIL, screen, aux_keys=["absent"])
    with pytest.raises(ValueError, match="more than once"):
        _setup(ht.model.MoMIL, screen, aux_keys=["n_crops", "n_crops"])


def test_task_affinity_validated(screen):
    _setup(ht.model.MoMIL, screen)
    assays = _assays(screen)
    c = _affinity(assays)
    asym = c.copy()
    asym.iloc[0, 1] += 0.5
    with pytest.raises(ValueError, match="symmetric"):
        ht.model.MoMIL(screen, task_affinity=asym, prior_weight=0.1)
    with pytest.raises(ValueError, match="lacks the model's assays"):
        ht.model.MoMIL(screen, task_affinity=c.iloc[:2, :2], prior_weight=0.1)
    bad = c.copy()
    bad.iloc[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ht.model.MoMIL(screen, task_affinity=bad, prior_weight=0.1)
    with pytest.raises(TypeError, match="DataFrame"):
        ht.model.MoMIL(screen, task_affinity=c.to_numpy(), prior_weight=0.1)
    with pytest.raises(ValueError, match="needs `task_affinity`"):
        ht.model.MoMIL(screen, prior_weight=0.1)
    with pytest.raises(ValueError, match="prior_weight"):
        ht.model.MoMIL(screen, task_affinity=c, prior_weight=-1)
    with pytest.raises(ValueError, match="key_assays"):
        ht.model.MoMIL(screen, task_affinity=c, prior_weight=0.1, key_assays=["nope"])
    # reindexed by name: a shuffled frame with an extra assay gives the same matrix
    extra = pd.concat([c, pd.DataFrame(0.0, index=["other"], columns=assays)])
    extra["other"] = 0.0
    shuffled = extra.loc[["other", *assays[::-1]], [*assays[::-1], "other"]]
    m = ht.model.MoMIL(screen, n_hidden=8, task_affinity=shuffled, prior_weight=0.1, key_assays=assays[1])
    assert np.allclose(m.module.task_affinity.numpy(), c.to_numpy())
    assert m.module.prior_task_weight.tolist() == pytest.approx([0.1, 0.9, 0.1])
    assert m.init_params_["non_kwargs"]["task_affinity"] == {"names": assays, "values": c.to_numpy().tolist()}


def test_weighting_instance_must_count_aux_tasks(screen):
    _setup(ht.model.MoMIL, screen, aux_keys=["n_crops"])
    model = ht.model.MoMIL(screen, n_hidden=8, n_head_hidden=4)
    with pytest.raises(ValueError, match="tasks"):
        _train(model, weighting=ht.train.EqualWeighting(N_ASSAYS))
    _train(model, max_epochs=1, weighting=ht.train.EqualWeighting(N_ASSAYS + 1))


# ------------------------------------------------------------------------------------------------ training
def test_collate_holds_batch_and_aux(screen):
    _setup(ht.model.MoMIL, screen, aux_keys=["n_crops", "depth"])
    model = ht.model.MoMIL(screen, n_hidden=8)
    data = ht.dataloaders.BagData.from_manager(model.adata_manager, labels=True)
    batch = next(iter(ht.dataloaders.bag_loader(data, np.arange(data.n_bags), batch_size=5)))
    sizes = torch.as_tensor(data.sizes[:5], dtype=torch.float32)
    assert torch.equal(batch[MIL_KEYS.AUX][:, 0], sizes)
    depth = screen.obs.groupby("well", observed=True)["depth"].first().loc[data.bag_names[:5]].to_numpy()
    assert torch.equal(batch[MIL_KEYS.AUX][:, 1], torch.as_tensor(depth, dtype=torch.float32))
    plates = screen.obs.groupby("well", observed=True)["plate"].first().loc[data.bag_names[:5]]
    codes = pd.factorize(screen.obs["plate"], sort=True)[1]
    assert batch[MIL_KEYS.BATCH].tolist() == [list(codes).index(p) for p in plates]
    query = ht.dataloaders.BagData.from_manager(model.adata_manager, labels=False)
    assert query.batch is None and query.aux is None


OPTIONS = {
    "adversarial": ({"adversarial": True}, {}, ["adversarial_loss", "adversarial_weight"]),
    "adversarial_fixed": ({"adversarial": True}, {"adversarial_weight": 0.5}, ["adversarial_loss"]),
    "aux": ({}, {"weighting": "uncertainty"}, ["task_loss_aux_depth", "task_weight_aux_depth"]),
    "prior": ({"prior": True}, {}, ["prior_loss"]),
}


@pytest.mark.parametrize("option", list(OPTIONS))
def test_training_and_round_trip(screen, option, tmp_path):
    model_kw, train_kw, columns = OPTIONS[option]
    _setup(ht.model.MoMIL, screen, aux_keys=["depth"] if option == "aux" else None)
    if model_kw.pop("prior", False):
        model_kw = {
            "task_affinity": _affinity(_assays(screen)),
            "prior_weight": 0.1,
            "key_assays": ["assay_00"],
        }
    model = _train(ht.model.MoMIL(screen, n_hidden=8, n_head_hidden=4, **model_kw), **train_kw)
    for col in columns:
        values = model.history[col][col].to_numpy(dtype=float)
        assert len(values) == 2 and np.isfinite(values).all(), col
    if option == "adversarial_fixed":
        assert np.allclose(model.history["adversarial_weight"].to_numpy(), 0.5)
    if option == "adversarial":  # the ramp: the epoch means rise
        w = model.history["adversarial_weight"]["adversarial_weight"].to_numpy()
        assert 0 < w[0] < w[1] < 1
    assert np.isfinite(model.history["train_loss"].to_numpy()).all()
    model.save(tmp_path / "m")
    loaded = ht.model.MoMIL.load(tmp_path / "m", adata=screen)
    pd.testing.assert_frame_equal(model.predict(), loaded.predict())
    assert {k: v for k, v in loaded.init_params_["non_kwargs"].items()} == model.init_params_["non_kwargs"]
    state, state2 = model.module.state_dict(), loaded.module.state_dict()
    assert set(state) == set(state2) and all(torch.equal(state[k], state2[k]) for k in state)
    # without data, and retraining the loaded model works
    bare = ht.model.MoMIL.load(tmp_path / "m")
    assert np.allclose(bare.predict(screen).to_numpy(), model.predict().to_numpy())
    _train(loaded, max_epochs=1, **train_kw)


@pytest.mark.parametrize("cls", ["MeanMLP", "MultiLabelMIL"])
def test_baselines_adversarial_and_aux(screen, cls, tmp_path):
    Model = getattr(ht.model, cls)
    _setup(Model, screen, aux_keys="n_crops")
    model = _train(Model(screen, n_hidden=8, adversarial=True), adversarial_weight=1.0)
    for col in ("adversarial_loss", "task_loss_aux_n_crops"):
        assert np.isfinite(model.history[col].to_numpy()).all()
    model.save(tmp_path / "m")
    loaded = Model.load(tmp_path / "m", adata=screen)
    pd.testing.assert_frame_equal(model.predict(), loaded.predict())


def test_aux_standardised_with_training_bags(screen):
    _setup(ht.model.MoMIL, screen, aux_keys=["depth"])
    model = _train(ht.model.MoMIL(screen, n_hidden=8), max_epochs=1, validation_size=0.3, seed=3)
    splitter = ht.dataloaders.BagDataSplitter(model.adata_manager, validation_size=0.3, seed=3)
    depth = screen.obs.groupby("well", observed=True)["depth"].first().loc[splitter.data.bag_names]
    train = depth.to_numpy()[splitter.train_idx]
    assert float(model.module.aux_mean) == pytest.approx(train.mean(), rel=1e-5)
    assert float(model.module.aux_std) == pytest.approx(train.std(), rel=1e-4)
    assert train.mean() != pytest.approx(depth.mean(), rel=1e-6)  # training bags only


def test_query_without_aux_or_batch_columns(screen, tmp_path):
    _setup(ht.model.MoMIL, screen, aux_keys=["n_crops"])
    model = _train(ht.model.MoMIL(screen, n_hidden=8, adversarial=True), max_epochs=1)
    query = screen.copy()
    del query.obs["n_crops"]
    pred = model.predict(query)
    pd.testing.assert_frame_equal(pred, model.predict())


def test_defaults_build_no_branch(screen):
    _setup(ht.model.MoMIL, screen)
    model = ht.model.MoMIL(screen, n_hidden=8)
    names = set(model.module.state_dict())
    assert not any(k.startswith(("domain_classifier", "aux_", "task_affinity", "prior_")) for k in names)


def test_synthetic_cell_count_is_a_learnable_aux_concept(screen):
    per_well = screen.obs.groupby("well", observed=True)["cell_count"].agg(["min", "max"])
    assert (per_well["min"] == per_well["max"]).all()
    # the cytotoxic mechanism lowers the count: wells of compounds differ from DMSO wells
    wells = screen.obs.groupby("well", observed=True)[["cell_count", "is_control"]].first()
    assert wells["cell_count"].nunique() > 10
    _setup(ht.model.MoMIL, screen, aux_keys=["cell_count"])
    model = _train(ht.model.MoMIL(screen, n_hidden=8), max_epochs=1)
    assert np.isfinite(model.history["task_loss_aux_cell_count"].to_numpy()).all()
    assert model.train_params_["adversarial_weight"] == "schedule"
