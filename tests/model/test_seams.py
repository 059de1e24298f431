"""Where the pieces meet: M4's grid positions with on-disk and MuData screens, pseudo-labels and imputation with
the data layouts they cannot use (each of these was a bug found when the branches were merged)."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import hcitools as ht

SMALL = {"n_experts": 2, "n_hidden": 8, "n_attention": 4, "n_gate_hidden": 4, "n_tower_hidden": 4}
GRID = ["fov", "tile_row", "tile_col"]


@pytest.fixture
def screen():
    adata = ht.datasets.synthetic_hci(
        n_compounds=24, n_assays=2, n_plates=3, n_primary=1, n_features=6, label_density=0.5, seed=0
    )
    adata.obs["tile_row"] = adata.obs["crop"].to_numpy() // 2
    adata.obs["tile_col"] = adata.obs["crop"].to_numpy() % 2
    return adata


def _train(model, **kw):
    kw = {"max_epochs": 1, "warmup_epochs": 0, "batch_size": 16, "enable_progress_bar": False, **kw}
    model.train(**kw)
    return model


def test_m4_grid_on_a_backed_file_equals_in_memory(screen, tmp_path):
    screen.write_h5ad(tmp_path / "s.h5ad")
    backed = ad.read_h5ad(tmp_path / "s.h5ad", backed="r")
    ht.model.M4.setup_anndata(screen, group_key="compound", grid_keys=GRID)
    mem = _train(ht.model.M4(screen, **SMALL))
    ht.model.M4.setup_anndata(backed, group_key="compound", grid_keys=GRID)
    disk = ht.model.M4(backed, **SMALL)
    disk.module.load_state_dict(mem.module.state_dict())
    disk.is_trained_ = True
    np.testing.assert_allclose(disk.predict(backed).to_numpy(), mem.predict(screen).to_numpy(), atol=1e-5)
    _train(disk)  # trains from the file (the collate reads grid positions on the on-disk path too)


def test_m4_attention_written_out_equals_in_memory_with_grid(screen):
    ht.model.M4.setup_anndata(screen, group_key="compound", grid_keys=GRID)
    model = _train(ht.model.M4(screen, **SMALL))
    out = np.zeros((screen.n_obs, len(model.assays)), np.float32)
    np.testing.assert_allclose(model.get_attention(out=out), model.get_attention(), atol=1e-6)
    with pytest.raises(ValueError, match="out"):
        model.get_attention(expert="all", out=out)


def test_m4_setup_mudata_takes_grid_keys(screen):
    mdata = ht.pp.to_mudata(screen)
    ht.model.M4.setup_mudata(mdata, grid_keys=GRID)
    model = ht.model.M4(mdata, **SMALL)
    assert model._bag_data().positions is not None
    ht.model.M4.setup_anndata(screen, group_key="compound", grid_keys=GRID)
    ref = ht.model.M4(screen, **SMALL)
    ref.module.load_state_dict(model.module.state_dict())
    ref.is_trained_ = model.is_trained_ = True
    pd.testing.assert_frame_equal(model.predict(mdata), ref.predict(screen), atol=1e-5)


def test_pseudo_labels_need_validation_bags(screen):
    ht.model.MoMIL.setup_anndata(screen, group_key="compound")
    model = ht.model.MoMIL(screen, n_hidden=8, n_head_hidden=4)
    with pytest.raises(ValueError, match="validation"):
        model.train(
            max_epochs=2,
            validation_size=0.0,
            enable_progress_bar=False,
            pseudo_labels={"warmup": 0, "every": 1},
        )


def test_impute_labels_refuses_a_mudata_model(screen):
    mdata = ht.pp.to_mudata(screen)
    ht.model.MoMIL.setup_mudata(mdata)
    model = _train(ht.model.MoMIL(mdata, n_hidden=8, n_head_hidden=4), validation_size=0.3)
    with pytest.raises(TypeError, match="from_mudata"):
        ht.tl.impute_labels(mdata, model)
    crops = mdata["crops"]
    before = dict(crops.obsm)
    with pytest.raises(ValueError, match="setup_mudata"):
        ht.tl.impute_labels(crops, model)
    assert set(crops.obsm) == set(before)
