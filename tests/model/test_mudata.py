"""MuData layout: setup_mudata, labels once per compound, the converters, and tl.momil on a MuData."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hcitools as ht

TRAIN = {"max_epochs": 3, "batch_size": 16, "enable_progress_bar": False, "seed": 0, "accelerator": "cpu"}


@pytest.fixture
def screen():
    return ht.datasets.synthetic_hci(
        n_compounds=30, n_assays=4, n_plates=2, wells_per_compound=2, n_features=12, n_primary=2, seed=0
    )


def test_to_mudata_stores_labels_once_per_compound(screen):
    before = screen.obsm["assays"].copy()
    mdata = ht.pp.to_mudata(
        screen, assay_var=pd.DataFrame({"primary": [True, False]}, index=["assay_00", "assay_01"])
    )
    crops, cpds = mdata["crops"], mdata["compounds"]
    assert "assays" not in crops.obsm and "assays" in screen.obsm  # the input is unchanged
    pd.testing.assert_frame_equal(screen.obsm["assays"], before)
    assert cpds.n_obs == screen.obs["compound"].nunique() < screen.n_obs
    assert list(cpds.var_names) == list(before.columns)
    assert cpds.var["primary"].iloc[0] is True or cpds.var["primary"].iloc[0] == True  # noqa: E712
    assert "scaffold" in cpds.obs
    back = ht.pp.from_mudata(mdata)
    np.testing.assert_array_equal(back.obsm["assays"].to_numpy(), before.to_numpy())


def test_mudata_model_equals_anndata_model(screen, tmp_path):
    mdata = ht.pp.to_mudata(screen)
    ht.model.MoMIL.setup_mudata(mdata, instance_mod="crops", label_mod="compounds", group_key="compound")
    mm = ht.model.MoMIL(mdata, n_hidden=8)
    mm.train(**TRAIN)
    ht.model.MoMIL.setup_anndata(screen, group_key="compound")
    ma = ht.model.MoMIL(screen, n_hidden=8)
    ma.train(**TRAIN)
    # same bags, labels, split and seed: the two layouts train the same model
    pm, pa = mm.predict(), ma.predict()
    pd.testing.assert_frame_equal(pm, pa)
    np.testing.assert_allclose(mm.get_attention(), ma.get_attention(), atol=1e-6)
    np.testing.assert_allclose(
        mm.get_latent_representation(level="instance"),
        ma.get_latent_representation(level="instance"),
        atol=1e-6,
    )
    assert mm.predict(level="compound").shape == (screen.obs["compound"].nunique(), 4)
    # queries take an AnnData of instances, or a MuData without the label modality
    pd.testing.assert_frame_equal(mm.predict(mdata["crops"].copy()), pm)
    # save / load, with and without data
    mm.save(tmp_path / "m")
    loaded = ht.model.MoMIL.load(tmp_path / "m")
    pd.testing.assert_frame_equal(loaded.predict(mdata), pm)
    loaded = ht.model.MoMIL.load(tmp_path / "m", adata=mdata)
    pd.testing.assert_frame_equal(loaded.predict(), pm)


def test_mudata_labels_never_per_instance(screen):
    mdata = ht.pp.to_mudata(screen)
    ht.model.MeanMLP.setup_mudata(mdata)
    model = ht.model.MeanMLP(mdata)
    data = model._bag_data(labels=True)
    n_bags = screen.obs["well"].nunique()
    assert data.labels.shape == (n_bags, 4)  # one row per bag, gathered from the per-compound table
    per_bag = screen.obsm["assays"].groupby(screen.obs["well"].astype(str).to_numpy()).first()
    np.testing.assert_array_equal(data.labels.numpy(), per_bag.loc[data.bag_names].to_numpy(np.float32))
    assert "assays" not in mdata["crops"].obsm  # the labels live in the compound modality only


def test_setup_mudata_errors(screen):
    mdata = ht.pp.to_mudata(screen)
    with pytest.raises(KeyError, match="instance_mod"):
        ht.model.MoMIL.setup_mudata(mdata, instance_mod="cells")
    with pytest.raises(TypeError, match="MuData"):
        ht.model.MoMIL.setup_mudata(screen)
    bad = mdata.copy()
    bad["compounds"].X[0, 0] = 2.0
    with pytest.raises(ValueError, match="1 \\(active\\)"):
        ht.model.MoMIL.setup_mudata(bad)
    other = mdata.copy()
    other["compounds"].obs_names = ["x" + n for n in other["compounds"].obs_names]
    with pytest.raises(ValueError, match="no instance has labels"):
        ht.model.MoMIL.setup_mudata(other)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_momil_accepts_mudata(screen):
    ht.pp.split_compounds(screen, n_folds=5, method="random", seed=0)
    mdata = ht.pp.to_mudata(screen)
    kwargs = {"method": "mean_mlp", "train_kwargs": {"max_epochs": 1}, "progress": False}
    ht.tl.momil(mdata, **kwargs)
    ht.tl.momil(screen, **kwargs)
    pd.testing.assert_frame_equal(mdata.uns["momil"]["predictions"], screen.uns["momil"]["predictions"])
    assert "momil_attention" in mdata["crops"].obsm
    with pytest.raises(ValueError, match="exists already"):
        ht.tl.momil(mdata, **kwargs)
