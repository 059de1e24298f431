import numpy as np
import pandas as pd
import pytest

import hcitools as ht
from hcitools.model._mtae import VARIANTS, ot_pairs


@pytest.fixture(scope="module")
def kang(data_root):
    return ht.datasets.kang2018(data_root)


@pytest.fixture(scope="module")
def kang_split(kang):
    return ht.tl.split_ood(kang, target="B", condition="stimulated")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variants_train_on_kang(kang_split, variant):
    train, ctrl, _stim = kang_split
    ht.model.MTAe.setup_anndata(
        train, condition_key="condition", cell_type_key="cell_type", control_value="control"
    )
    model = ht.model.MTAe(train, variant=variant, n_latent=8, n_hidden=(64,), dropout=0.0)
    model.train(max_epochs=2, batch_size=256, enable_progress_bar=False, seed=1)
    assert np.isfinite(model.history["train_loss"].to_numpy()).all()
    pred = model.predict(ctrl, condition="stimulated")
    assert pred.shape == ctrl.shape and pred.var_names.equals(ctrl.var_names)
    pd.testing.assert_frame_equal(pred.obs, ctrl.obs)  # the input's obs is kept
    assert np.isfinite(pred.X).all()
    assert model.get_latent_representation(ctrl).shape == (ctrl.n_obs, 8)
    if VARIANTS[variant][2] is not None:
        report = model.ot_report_
        assert set(report["group"]) == set(train.obs["cell_type"]) - {
            "B"
        }  # B has no stimulated cells in training
        assert (report["cost"] > 0).all()


def test_split_ood_guarantee(kang):
    train, ctrl, stim = ht.tl.split_ood(kang, target="CD4T", condition="stimulated")
    held = (train.obs["cell_type"] == "CD4T") & (train.obs["condition"] != "control")
    assert not held.any()
    assert (train.obs["cell_type"] == "CD4T").sum() == 278  # its controls are trained on (explicit default)
    assert ctrl.n_obs == 278 and stim.n_obs == 356
    assert train.uns["split_ood"]["train_on_target_control"] is True
    train2, _, _ = ht.tl.split_ood(kang, target="CD4T", train_on_target_control=False)
    assert not (train2.obs["cell_type"] == "CD4T").any()
    with pytest.raises(ValueError, match="target"):
        ht.tl.split_ood(kang, target="Neuron")


def test_one_model_covers_all_doses():
    adata = ht.datasets.synthetic_perturbation(
        n_cell_types=3, n_cells=60, n_genes=60, n_response_genes=15, max_log_fold_change=3.0, seed=0
    )
    train, ctrl, _ = ht.tl.split_ood(adata, target="type_0", condition="drug_10")
    assert not ((train.obs["cell_type"] == "type_0") & (train.obs["dose"] > 0)).any()  # every dose held out
    ht.model.MTAe.setup_anndata(train)
    model = ht.model.MTAe(train, n_latent=8, n_hidden=(64, 32))
    model.train(max_epochs=30, batch_size=64, lr=3e-3, enable_progress_bar=False)
    assert model.conditions == ["control", "drug_0.1", "drug_1", "drug_10"]
    shifts = []
    base = model.predict(ctrl, condition="control").X.mean(0)
    for dose in ("drug_0.1", "drug_1", "drug_10"):
        shifts.append(np.abs(model.predict(ctrl, condition=dose).X.mean(0) - base).sum())
    assert shifts[0] < shifts[1] < shifts[2]  # the predicted response grows with dose
    with pytest.raises(ValueError, match="Unknown `condition`"):
        model.predict(ctrl, condition="drug_100")


def test_reproducible_and_save_load(tmp_path):
    adata = ht.datasets.synthetic_perturbation(
        n_cell_types=2, n_cells=30, n_genes=40, n_response_genes=8, seed=1
    )
    ht.model.MTAe.setup_anndata(adata)
    preds = []
    for _ in range(2):
        m = ht.model.MTAe(adata, variant="MTVae", n_latent=4, n_hidden=(16,))
        m.train(max_epochs=3, seed=7, enable_progress_bar=False)
        preds.append(m.predict(adata, condition="drug_1").X)
    np.testing.assert_array_equal(preds[0], preds[1])
    m.save(tmp_path / "mtae", overwrite=True)
    loaded = ht.model.MTAe.load(tmp_path / "mtae", adata=adata)
    np.testing.assert_allclose(loaded.predict(adata, condition="drug_1").X, preds[1], rtol=1e-6, atol=1e-6)
    recon = loaded.reconstruct()
    assert recon.shape == adata.shape


def test_ot_pairs_exact_and_sinkhorn():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (20, 3)), rng.normal(5, 1, (20, 3))])
    groups = np.array(["a"] * 40)
    cond = np.array(["control"] * 20 + ["stim"] * 20)
    src, dst, rep = ot_pairs(X, groups, cond, "control", method="emd")
    assert len(src) == 20 and set(dst) <= set(range(20, 40))
    assert len(set(dst)) == 20  # equal sizes, uniform weights: the exact plan is a permutation
    _s_src, s_dst, s_rep = ot_pairs(X, groups, cond, "control", method="sinkhorn", sampling="sample", seed=0)
    assert s_rep.loc[0, "method"] == "sinkhorn" and set(s_dst) <= set(range(20, 40))
    assert rep.loc[0, "cost"] == pytest.approx(s_rep.loc[0, "cost"], rel=0.2)


def test_bad_variant_and_setup(kang_split):
    train = kang_split[0]
    ht.model.MTAe.setup_anndata(train)
    with pytest.raises(ValueError, match="variant"):
        ht.model.MTAe(train, variant="MTGan")
    with pytest.raises(ValueError, match="film_layers"):
        ht.model.MTAe(train, n_hidden=(32,), film_layers=3)
    with pytest.raises(ValueError, match="no control cells"):
        ht.model.MTAe.setup_anndata(train, control_value="ctrl")


def test_film_starts_as_identity_after_seeded_reset():
    from hcitools.train._run import seed_and_reset

    adata = ht.datasets.synthetic_perturbation(
        n_cell_types=2, n_cells=10, n_genes=20, n_response_genes=4, seed=0
    )
    ht.model.MTAe.setup_anndata(adata)
    model = ht.model.MTAe(adata, n_latent=4, n_hidden=(8,))
    seed_and_reset(model, 0)
    for film in model.module.decoder.films:
        assert film.gamma.weight.abs().sum() == 0 and film.beta.bias.abs().sum() == 0


def test_numeric_conditions():
    adata = ht.datasets.synthetic_perturbation(
        n_cell_types=2, n_cells=15, n_genes=20, n_response_genes=4, seed=0
    )
    adata.obs["dose_condition"] = adata.obs["dose"].astype(float)
    ht.model.MTAe.setup_anndata(adata, condition_key="dose_condition", control_value=0.0)
    model = ht.model.MTAe(adata, n_latent=4, n_hidden=(8,))
    assert model.conditions == [0.0, 0.1, 1.0, 10.0]
    model.train(max_epochs=1, enable_progress_bar=False)
    assert model.predict(adata[:5].copy(), condition=10.0).shape == (5, 20)
