import numpy as np
import pandas as pd
import pytest
import torch

import hcitools as ht


@pytest.fixture
def small():
    adata = ht.datasets.synthetic_hci(
        n_compounds=80, n_assays=4, n_plates=3, n_primary=2, n_features=12, label_density=0.3, seed=1
    )
    ht.pp.normalize_plates(adata)
    return adata


def _train(model, **kw):
    kw = {
        "max_epochs": 3,
        "warmup_epochs": 0,
        "batch_size": 32,
        "lr": 1e-3,
        "enable_progress_bar": False,
        **kw,
    }
    model.train(**kw)
    return model


@pytest.mark.parametrize("cls", ["MoMIL", "MeanMLP", "MultiLabelMIL"])
def test_api(small, cls, tmp_path):
    Model = getattr(ht.model, cls)
    obs_before = small.obs.copy()
    Model.setup_anndata(small, bag_key="well", labels_key="assays", group_key="compound", batch_key="plate")
    model = _train(Model(small, n_hidden=16, primary_assays=["assay_00", "assay_01"]))
    bag = model.predict()
    assert bag.shape == (small.obs["well"].nunique(), 4) and list(bag.columns) == list(
        small.obsm["assays"].columns
    )
    assert ((bag >= 0) & (bag <= 1)).all().all()
    cpd = model.predict(level="compound")
    assert cpd.shape[0] == small.obs["compound"].nunique()
    att = model.get_attention()
    assert att.shape == (small.n_obs, 4)
    sums = pd.DataFrame(att).groupby(small.obs["well"].to_numpy()).sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-5)
    assert model.get_latent_representation().shape[0] == bag.shape[0]
    assert "train_loss" in model.history and "validation_mean_auroc" in model.history
    model.save(tmp_path / "m", overwrite=True)
    loaded = Model.load(tmp_path / "m", adata=small)
    pd.testing.assert_frame_equal(loaded.predict(), bag, atol=1e-6, rtol=1e-6)
    # setup adds only scvi-tools' code columns and leaves the user's columns as they were
    added = [c for c in small.obs.columns if c not in obs_before.columns]
    assert sorted(added) == ["_scvi_bag", "_scvi_batch", "_scvi_group"]
    pd.testing.assert_frame_equal(small.obs[obs_before.columns], obs_before)


def test_reproducible_same_seed(small):
    ht.model.MoMIL.setup_anndata(small, group_key="compound")
    a = _train(ht.model.MoMIL(small, n_hidden=16), seed=3).predict()
    b = _train(ht.model.MoMIL(small, n_hidden=16), seed=3).predict()
    c = _train(ht.model.MoMIL(small, n_hidden=16), seed=4).predict()
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a.to_numpy(), c.to_numpy())


def test_validation_from_column(small):
    ht.pp.split_compounds(small, method="random", seed=0)
    ht.model.MoMIL.setup_anndata(small, group_key="compound")
    model = ht.model.MoMIL(small, n_hidden=16)
    small.obs["fold"] = small.obs["fold"].astype(int)
    _train(model, validation_key="fold", validation_values=[1])
    in_val = (small.obs["fold"] == 1).to_numpy() & small.obsm["assays"].notna().any(axis=1).to_numpy()
    val_bags = set(np.asarray(small.obs.loc[in_val, "well"].astype(str)))  # labelled bags of fold 1
    data = model._bag_data()
    assert {data.bag_names[i] for i in model.validation_indices} == val_bags
    with pytest.raises(ValueError, match="No bag"):
        _train(model, validation_key="fold", validation_values=[9])


def test_predict_new_unlabelled_data(small):
    ht.model.MoMIL.setup_anndata(small)
    model = _train(ht.model.MoMIL(small, n_hidden=16, head="dsmil"))
    new = small[small.obs["plate"] == "plate0"].copy()
    del new.obsm["assays"]
    pred = model.predict(new)
    ref = model.predict().loc[pred.index]
    pd.testing.assert_frame_equal(pred, ref, atol=1e-5, rtol=1e-5)


def test_setup_errors(small):
    lab = small.obsm["assays"].copy()
    lab["assay_03"] = np.where(lab["assay_03"].notna(), 0.0, np.nan)
    bad = small.copy()
    bad.obsm["assays"] = lab
    with pytest.raises(ValueError, match=r"single observed class: 'assay_03'"):
        ht.model.MoMIL.setup_anndata(bad)
    with pytest.raises(KeyError, match="bag_key"):
        ht.model.MoMIL.setup_anndata(small, bag_key="bag")
    with pytest.raises(ValueError, match="repeat across plates"):
        ht.model.MoMIL.setup_anndata(small, bag_key="well_position", batch_key="plate")
    nan = small.copy()
    nan.X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ht.model.MoMIL.setup_anndata(nan)
    ht.model.MoMIL.setup_anndata(small)
    with pytest.raises(ValueError, match="primary_assays"):
        ht.model.MoMIL(small, primary_assays=["nope"])
    with pytest.raises(ValueError, match="head"):
        ht.model.MoMIL(small, head="transformer")
    with pytest.raises(ValueError, match="n_hidden"):
        ht.model.MoMIL(small, n_hidden=0)
    with pytest.raises(ValueError, match="dropout"):
        ht.model.MoMIL(small, dropout=1.0)


def test_deepprofiler_cells_as_instances(data_root):
    """Real DeepProfiler single-cell embeddings (6400-d) as MIL instances: each site is a bag."""
    cells = ht.datasets.deepprofiler_cells(data_root)
    ht.pp.make_bag_key(cells, well_key="well", plate_key="fov", key_added="site_bag")
    labels = (cells.obs["fov"] == "5").astype(float).to_numpy()
    cells.obsm["assays"] = pd.DataFrame({"site5": labels}, index=cells.obs_names)
    # split each site into bags of 10 cells so that there are enough bags
    cells.obs["bag"] = cells.obs["site_bag"].astype(str) + "_" + (np.arange(cells.n_obs) // 10).astype(str)
    ht.model.MoMIL.setup_anndata(cells, bag_key="bag")
    model = ht.model.MoMIL(cells, n_hidden=16, n_head_hidden=8)
    model.train(max_epochs=4, warmup_epochs=4, lr=1e-3, batch_size=8, enable_progress_bar=False)
    loss = model.history["train_loss"]["train_loss"].to_numpy()
    assert loss[-1] < loss[0]  # 6400-d real embeddings train (no NaN, no divergence)
    att = model.get_attention()
    assert att.shape == (cells.n_obs, 1)
    sums = pd.Series(att[:, 0]).groupby(cells.obs["bag"].to_numpy()).sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-5)
    assert np.isfinite(model.predict().to_numpy()).all()


def test_load_onto_query_data_with_a_single_observed_class(small, tmp_path):
    """A saved model loads onto a test set whose labels hold one class of an assay: it only predicts there."""
    ht.model.MoMIL.setup_anndata(small)
    model = ht.model.MoMIL(small, n_hidden=8, n_head_hidden=4)
    model.train(max_epochs=2, warmup_epochs=0, batch_size=16, enable_progress_bar=False)
    model.save(tmp_path / "m")
    query = small.copy()
    lab = query.obsm["assays"].copy()
    lab["assay_03"] = np.where(lab["assay_03"].notna(), 0.0, np.nan)
    query.obsm["assays"] = lab
    reloaded = ht.model.MoMIL.load(tmp_path / "m", adata=query)
    pd.testing.assert_frame_equal(reloaded.predict(query), model.predict(query))


def test_train_with_bags_grouped_by_size(small):
    ragged = small[small.obs["crop"].astype(int) % 3 != 0].copy()  # drop some crops: ragged bags
    ragged = ragged[~ragged.obs["well"].duplicated() | (ragged.obs["plate"] != "plate0")].copy()
    assert ragged.obs["well"].value_counts().nunique() > 1
    ht.model.MoMIL.setup_anndata(ragged)
    model = ht.model.MoMIL(ragged, n_hidden=8, n_head_hidden=4)
    model.train(max_epochs=2, warmup_epochs=0, batch_size=8, group_by_size=True, enable_progress_bar=False)
    assert len(model.history["train_loss"]) == 2
    assert np.isfinite(model.predict().to_numpy()).all()


def test_load_onto_query_without_labels_or_with_other_assays(small, tmp_path):
    ht.model.MoMIL.setup_anndata(small, group_key="compound")
    model = _train(ht.model.MoMIL(small, n_hidden=8, n_head_hidden=4))
    model.save(tmp_path / "m")
    expected = model.predict(small)
    unlabelled = small.copy()
    del unlabelled.obsm["assays"]
    reloaded = ht.model.MoMIL.load(tmp_path / "m", adata=unlabelled)
    assert reloaded.assays == model.assays
    pd.testing.assert_frame_equal(reloaded.predict(unlabelled), expected, atol=1e-6, rtol=1e-6)
    other = small.copy()
    other.obsm["assays"] = other.obsm["assays"][["assay_01"]]  # labels of other (fewer) assays
    reloaded = ht.model.MoMIL.load(tmp_path / "m", adata=other)
    pd.testing.assert_frame_equal(reloaded.predict(other), expected, atol=1e-6, rtol=1e-6)
    pd.testing.assert_frame_equal(model.predict(other), expected)  # predict never reads labels
    with pytest.raises(ValueError, match="lacks the assays"):
        reloaded.train(max_epochs=1)


def test_random_validation_holds_out_whole_compounds(small):
    ht.model.MoMIL.setup_anndata(small, group_key="compound")
    model = _train(ht.model.MoMIL(small, n_hidden=8, n_head_hidden=4), validation_size=0.25, max_epochs=1)
    data = model._bag_data()
    val = set(data.groups[model.validation_indices])
    train = set(data.groups[model.train_indices])
    assert val and train and not (val & train)
    n_cpd = len(np.unique(data.groups))
    assert len(val) <= round(0.25 * n_cpd)


def test_history_has_every_assay_even_without_auroc(small):
    lab = small.obsm["assays"].copy()
    ht.pp.split_compounds(small, method="random", seed=0)
    small.obs["fold"] = small.obs["fold"].astype(int)
    # a validation fold where assay_00 has both classes and assay_03 is observed
    folds = small.obs["fold"].to_numpy()

    def usable(f):
        v, t = lab[folds == f], lab[(folds != f) & (folds >= 0)]
        return v["assay_00"].nunique() == 2 and v["assay_03"].notna().any() and t["assay_03"].nunique() == 2

    val_fold = next(f for f in range(5) if usable(f))
    # assay_03: negatives only in the validation fold, so its validation AUROC is undefined
    in_val = folds == val_fold
    lab.loc[in_val & lab["assay_03"].notna().to_numpy(), "assay_03"] = 0.0
    small.obsm["assays"] = lab
    ht.model.MoMIL.setup_anndata(small, group_key="compound")
    model = _train(
        ht.model.MoMIL(small, n_hidden=8, n_head_hidden=4), validation_key="fold", validation_values=val_fold
    )
    for assay in small.obsm["assays"].columns:
        assert f"validation_auroc_{assay}" in model.history
    assert model.history["validation_auroc_assay_03"].isna().all().all()
    assert model.history["validation_auroc_assay_00"].notna().all().all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"lr": -1.0}, "lr"),
        ({"max_epochs": 0}, "max_epochs"),
        ({"patience": 0}, "patience"),
        ({"validation_size": 1.0}, "validation_size"),
        ({"validation_values": [1]}, "needs `validation_key`"),
        ({"validation_key": "fold"}, "needs `validation_values`"),
        ({"max_instances": 0}, "max_instances"),
    ],
)
def test_train_argument_errors_before_anything_runs(small, kwargs, match):
    ht.model.MoMIL.setup_anndata(small)
    model = ht.model.MoMIL(small, n_hidden=8, n_head_hidden=4)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        model.train(**kwargs)
    assert not model.is_trained
    for k, v in model.module.state_dict().items():
        assert torch.equal(v, before[k])


def test_query_level_errors(small):
    ht.model.MoMIL.setup_anndata(small)  # no group_key
    model = _train(ht.model.MoMIL(small, n_hidden=8, n_head_hidden=4), max_epochs=1)
    with pytest.raises(ValueError, match="group_key"):
        model.predict(level="compound")
    with pytest.raises(ValueError, match="level"):
        model.get_latent_representation(level="cell")


def test_pos_weight_is_n_neg_over_n_pos_of_training_bags(small):
    from hcitools.module._mil import masked_bce

    ht.model.MoMIL.setup_anndata(small)
    model = _train(ht.model.MoMIL(small, n_hidden=8, n_head_hidden=4), pos_weight=True, max_epochs=1)
    data = model._bag_data(labels=True)
    lab = data.labels[model.train_indices].numpy()
    expected = (lab == 0).sum(0) / (lab == 1).sum(0)
    # the weights live in the training plan, not on the module
    np.testing.assert_allclose(model.trainer.lightning_module.pos_weight.numpy(), expected, rtol=1e-6)
    assert not hasattr(model.module, "pos_weight")
    assert model.use_pos_weight
    # the weight multiplies the loss of positives only
    logits, labels = torch.zeros(2, 1), torch.tensor([[1.0], [0.0]])
    plain, _ = masked_bce(logits, labels)
    weighted, _ = masked_bce(logits, labels, pos_weight=torch.tensor([3.0]))
    torch.testing.assert_close(weighted, plain * 2)  # (3 + 1) / 2 × log 2 against (1 + 1) / 2 × log 2


def test_warmup_epochs_hold_off_early_stopping(small):
    ht.model.MoMIL.setup_anndata(small)
    # a learning rate this small leaves the validation AUROC flat: early stopping fires as soon as it may
    stopped = _train(ht.model.MoMIL(small, n_hidden=8), lr=1e-12, max_epochs=8, patience=1, warmup_epochs=0)
    held = _train(ht.model.MoMIL(small, n_hidden=8), lr=1e-12, max_epochs=8, patience=1, warmup_epochs=8)
    assert len(stopped.history["train_loss"]) < 8
    assert len(held.history["train_loss"]) == 8


def test_max_instances_subsamples_training_bags_only(small):
    ht.model.MoMIL.setup_anndata(small)
    model = _train(ht.model.MoMIL(small, n_hidden=8, n_head_hidden=4), max_instances=3, max_epochs=1)
    from hcitools.dataloaders import BagDataSplitter

    data = model._bag_data(labels=True)
    splitter = BagDataSplitter(data, batch_size=16, max_instances=3)
    train_batch = next(iter(splitter.train_dataloader()))
    val_batch = next(iter(splitter.val_dataloader()))
    assert int(train_batch["mask"].sum(1).max()) == 3
    val_sizes = torch.as_tensor(data.sizes[val_batch["bag_index"].numpy()])
    torch.testing.assert_close(val_batch["mask"].sum(1), val_sizes)
    assert int(val_sizes.max()) > 3
    att = model.get_attention()  # queries use every instance
    assert (att > 0).all()


def test_compound_predictions_and_latent_levels(small):
    ht.model.MoMIL.setup_anndata(small, group_key="compound")
    model = _train(ht.model.MoMIL(small, n_hidden=8, n_head_hidden=4), max_epochs=1)
    bags = model.predict()
    cpd = model.predict(level="compound")
    bag_cpd = small.obs.groupby("well", observed=True)["compound"].first().astype(str)
    expected = bags.groupby(bag_cpd.loc[bags.index].to_numpy()).mean()
    pd.testing.assert_frame_equal(cpd.sort_index(), expected.sort_index(), atol=1e-6, rtol=1e-6)
    inst = model.get_latent_representation(level="instance")
    assert inst.shape == (small.n_obs, 8)
    bag = model.get_latent_representation(level="bag")
    mean_inst = pd.DataFrame(inst).groupby(small.obs["well"].astype(str).to_numpy(), sort=False).mean()
    np.testing.assert_allclose(bag, mean_inst.loc[bags.index].to_numpy(), atol=1e-5)
    per_assay = model.get_latent_representation(level="assay")
    assert per_assay.shape == (len(bags), 4, 4)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"max_epochs": "5"}, "max_epochs"), ({"lr": "0.1"}, "lr"), ({"batch_size": 2.5}, "batch_size"),
     ({"patience": True}, "patience"), ({"validation_size": "0.2"}, "validation_size")],
)  # fmt: skip
def test_train_wrong_types_are_type_errors(small, kwargs, name):
    ht.model.MoMIL.setup_anndata(small)
    model = ht.model.MoMIL(small, n_hidden=8, n_head_hidden=4)
    with pytest.raises(TypeError, match=name):
        model.train(**kwargs)
    assert not model.is_trained


def test_setup_errors_name_the_arguments(small):
    with pytest.raises(KeyError, match="batch_key"):
        ht.model.MoMIL.setup_anndata(small, batch_key="nope")
    with pytest.raises(KeyError, match="group_key"):
        ht.model.MoMIL.setup_anndata(small, group_key="nope")
