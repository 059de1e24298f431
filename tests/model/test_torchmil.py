import sys

import numpy as np
import pandas as pd
import pytest

import hcitools as ht


@pytest.fixture
def screen():
    adata = ht.datasets.synthetic_hci(
        n_compounds=40, n_assays=2, n_plates=3, n_primary=2, n_features=8, label_density=0.4, seed=0
    )
    rng = np.random.default_rng(0)
    keep = (rng.random(adata.n_obs) > 0.33) | (adata.obs["crop"].to_numpy() == 0)  # ragged bags
    return adata[keep].copy()


@pytest.mark.parametrize("name", ["abmil", "dsmil", "dtfd", "transmil", "mean", "max"])
def test_train_predict_attention(screen, name):
    ht.model.TorchMIL.setup_anndata(screen, group_key="compound")
    model = ht.model.TorchMIL(screen, model=name, n_hidden=16, n_attention=8)
    assert len(model.module.nets) == 2  # one torchmil model per assay
    model.train(max_epochs=2, warmup_epochs=0, batch_size=16, enable_progress_bar=False, seed=1)
    pred = model.predict()
    assert pred.shape == (screen.obs["well"].nunique(), 2) and ((pred > 0) & (pred < 1)).all().all()
    again = model.predict(batch_size=3)  # other batches, other padding
    # TransMIL's Nyström pseudo-inverse starts from a batch-wide scale (torchmil): close, not equal
    np.testing.assert_allclose(again.to_numpy(), pred.to_numpy(), atol=1e-2 if name == "transmil" else 1e-5)
    att = model.get_attention()
    sums = pd.DataFrame(att).groupby(screen.obs["well"].to_numpy()).sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-5)
    assert "validation_mean_auroc" in model.history


def test_seeded_and_saved(screen, tmp_path):
    ht.model.TorchMIL.setup_anndata(screen, group_key="compound")
    kw = {"max_epochs": 1, "warmup_epochs": 0, "batch_size": 16, "enable_progress_bar": False}
    a = ht.model.TorchMIL(screen, model="transmil", n_hidden=16)
    a.train(seed=3, **kw)
    b = ht.model.TorchMIL(screen, model="transmil", n_hidden=16)
    b.train(seed=3, **kw)
    pd.testing.assert_frame_equal(a.predict(), b.predict())
    a.save(tmp_path / "t")
    loaded = ht.model.TorchMIL.load(tmp_path / "t", adata=screen)
    pd.testing.assert_frame_equal(loaded.predict(), a.predict(), atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="model"):
        ht.model.TorchMIL(screen, model="clam")


def test_tl_momil_torchmil(screen):
    ht.pp.split_compounds(screen, method="random", n_folds=5, seed=0)
    ht.tl.momil(
        screen,
        method="torchmil_abmil",
        key_added="tm",
        n_hidden=16,
        train_kwargs={"max_epochs": 1, "warmup_epochs": 0},
    )
    assert set(screen.uns["tm"]["evaluation"]["method"]) == {"torchmil_abmil", "bag_size"}
    with pytest.raises(TypeError, match="sets"):
        ht.tl.momil(screen, method="torchmil_abmil", key_added="tm2", model="dsmil")


def test_missing_torchmil_names_the_extra(monkeypatch):
    from hcitools.module._torchmil import import_torchmil

    monkeypatch.setitem(sys.modules, "torchmil", None)
    with pytest.raises(ImportError, match=r"hcitools\[baselines\]"):
        import_torchmil()
