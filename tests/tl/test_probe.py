"""ht.tl.probe_concepts: linear probes of bag-level concepts recover planted concepts, not noise."""

import numpy as np
import pandas as pd
import pytest

import hcitools as ht
from hcitools.tl._probe import REPRESENTATIONS


@pytest.fixture(scope="module")
def screen():
    """An un-normalised screen (plate effects) with a planted numeric concept and a noise column per well."""
    adata = ht.datasets.synthetic_hci(
        n_compounds=40, n_assays=3, n_plates=3, n_features=12, n_primary=1, label_density=0.5, plate_effect=1.0,
        seed=0,
    )  # fmt: skip
    wells = adata.obs["well"].to_numpy()
    mean = pd.DataFrame(adata.X, index=wells).groupby(level=0).mean()
    planted = mean.to_numpy() @ np.linspace(-1, 1, adata.n_vars)
    rng = np.random.default_rng(1)
    adata.obs["planted"] = pd.Series(planted, index=mean.index).reindex(wells).to_numpy()
    adata.obs["noise"] = pd.Series(rng.normal(size=len(mean)), index=mean.index).reindex(wells).to_numpy()
    ht.model.MoMIL.setup_anndata(adata, bag_key="well", labels_key="assays", group_key="compound")
    model = ht.model.MoMIL(adata, n_hidden=8, n_head_hidden=4)
    model.train(max_epochs=2, warmup_epochs=0, patience=10, lr=1e-3, batch_size=16, enable_progress_bar=False)
    return adata, model


def test_planted_concept_noise_and_plate(screen):
    adata, model = screen
    n_obs = adata.n_obs
    table = ht.tl.probe_concepts(adata, model, keys=["planted", "noise", "plate"], n_splits=4, seed=0)
    assert list(table["key"]) == ["planted"] * 3 + ["noise"] * 3 + ["plate"] * 3
    assert list(table["representation"]) == list(REPRESENTATIONS) * 3
    scores = table.set_index(["key", "representation"])
    n_bags = adata.obs["well"].nunique()
    assert (table["n"] == n_bags).all()
    assert (table["n_groups"] == adata.obs["compound"].nunique()).all()
    # planted linear function of the mean input features: recovered from the pooled input
    assert scores.loc[("planted", "pooled_input"), "score"] > 0.95
    assert scores.loc[("planted", "pooled_input"), "metric"] == "r2"
    # noise: nothing to recover from any representation
    assert (scores.loc["noise", "score"] < 0.1).all()
    assert (scores.loc["noise", "chance"] == 0).all()
    # plate (categorical) from un-normalised bags: well above chance
    plate = scores.loc["plate"]
    assert (plate["metric"] == "balanced_accuracy").all()
    np.testing.assert_allclose(plate["chance"], 1 / 3)
    assert (plate["n_classes"] == 3).all()
    assert plate.loc["pooled_input", "score"] > 0.8
    _, n_assays, h = model.get_latent_representation(adata, level="assay").shape
    assert plate.loc["bag_embedding", "n_features"] == n_assays * h  # flattened T × h
    assert plate.loc["shared_projection", "n_features"] == 8
    # seeded and side-effect free
    again = ht.tl.probe_concepts(adata, model, keys=["planted", "noise", "plate"], n_splits=4, seed=0)
    pd.testing.assert_frame_equal(table, again)
    assert adata.n_obs == n_obs and "probe_concepts" not in adata.uns


def test_compound_level(screen):
    adata, model = screen
    table = ht.tl.probe_concepts(adata, model, keys="planted", level="compound", n_splits=3)
    assert (table["n"] == adata.obs["compound"].nunique()).all()
    assert table["n_groups"].isna().all()
    with pytest.raises(ValueError, match="varies within compounds"):
        ht.tl.probe_concepts(adata, model, keys="plate", level="compound", n_splits=3)


def test_errors(screen):
    adata, model = screen
    with pytest.raises(KeyError, match="argument `keys`"):
        ht.tl.probe_concepts(adata, model, keys=["nope"])
    with pytest.raises(ValueError, match="varies within bags"):
        ht.tl.probe_concepts(adata, model, keys=["crop"])
    with pytest.raises(ValueError, match=r"exceeds the .* compounds"):
        ht.tl.probe_concepts(adata, model, keys=["planted"], n_splits=10_000)
    with pytest.raises(ValueError, match="smallest classes"):
        ht.tl.probe_concepts(adata, model, keys=["is_control"], n_splits=5)
    with pytest.raises(ValueError, match="n_splits"):
        ht.tl.probe_concepts(adata, model, keys=["planted"], n_splits=1)
    with pytest.raises(TypeError, match="n_splits"):
        ht.tl.probe_concepts(adata, model, keys=["planted"], n_splits=2.0)
    with pytest.raises(ValueError, match="`level`"):
        ht.tl.probe_concepts(adata, model, keys=["planted"], level="instance")
    with pytest.raises(ValueError, match="empty"):
        ht.tl.probe_concepts(adata, model, keys=[])
    with pytest.raises(TypeError, match="MIL model"):
        ht.tl.probe_concepts(adata, object(), keys=["planted"])
