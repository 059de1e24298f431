"""Invariances of a trained MoMIL: row order, obs and label columns of query data; assays and features by name."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lightning.pytorch import Callback

import hcitools as ht
from hcitools.dataloaders import BagData

TOL = {"atol": 1e-6, "rtol": 1e-5}


def _data():
    return ht.datasets.synthetic_hci(
        n_compounds=24,
        n_assays=3,
        n_plates=2,
        n_primary=2,
        n_features=8,
        wells_per_compound=2,
        label_density=0.5,
        seed=3,
    )


@pytest.fixture(scope="module", params=["gated_abmil", "dsmil"])
def trained(request):
    adata = _data()
    ht.model.MoMIL.setup_anndata(adata, bag_key="well", labels_key="assays", group_key="compound")
    model = ht.model.MoMIL(adata, head=request.param, n_hidden=8, n_head_hidden=4, dropout=0.1)
    model.train(max_epochs=2, warmup_epochs=0, batch_size=16, lr=1e-2, enable_progress_bar=False)
    return model, adata


def _query(adata, perm=None):
    q = adata[perm].copy() if perm is not None else adata.copy()
    del q.obsm["assays"]
    return q


def test_row_shuffled_query_gives_the_same_bag_predictions_and_permuted_attention(trained):
    model, adata = trained
    pred = model.predict(adata)
    att = model.get_attention(adata)
    inst = model.get_latent_representation(adata, level="instance")
    assert np.isfinite(att).all() and att.shape == (adata.n_obs, len(model.assays))
    perm = np.random.default_rng(0).permutation(adata.n_obs)
    q = _query(adata, perm)
    pred_q = model.predict(q)
    pd.testing.assert_frame_equal(pred_q, pred, **TOL)  # bags sorted by id: same index order
    np.testing.assert_allclose(model.get_attention(q), att[perm], **TOL)
    np.testing.assert_allclose(model.get_latent_representation(q, level="instance"), inst[perm], **TOL)
    np.testing.assert_allclose(
        model.get_latent_representation(q, level="assay"),
        model.get_latent_representation(adata, level="assay"),
        **TOL,
    )
    assert "assays" not in q.obsm  # queries write nothing back (beyond scvi-tools' codes)


def test_query_with_other_obs_columns_order_gives_the_same_predictions(trained):
    model, adata = trained
    pred, att = model.predict(adata), model.get_attention(adata)
    q = _query(adata)
    cols = list(q.obs.columns)
    q.obs = q.obs[cols[::-1]].assign(extra=np.arange(q.n_obs))  # other order, an extra column
    pd.testing.assert_frame_equal(model.predict(q), pred, **TOL)
    np.testing.assert_allclose(model.get_attention(q), att, **TOL)
    # and with permuted rows and the well ids as a categorical
    perm = np.random.default_rng(1).permutation(adata.n_obs)
    q = _query(adata, perm)
    q.obs["well"] = pd.Categorical(q.obs["well"].astype(str))
    pd.testing.assert_frame_equal(model.predict(q), pred, **TOL)
    np.testing.assert_allclose(model.get_attention(q), att[perm], **TOL)


def test_query_labels_are_never_read(trained):
    model, adata = trained
    pred, att = model.predict(adata), model.get_attention(adata)
    lab = adata.obsm["assays"]
    for labels in (
        lab[lab.columns[::-1]],  # other column order
        lab[[lab.columns[1]]],  # fewer assays
        lab.rename(columns=lambda c: f"other_{c}").assign(x=1.0),  # other assays
        lab.fillna(1.0)[lab.columns[::-1]] * 0,  # other values
    ):
        q = adata.copy()
        q.obsm["assays"] = labels
        pred_q = model.predict(q)
        assert list(pred_q.columns) == model.assays
        pd.testing.assert_frame_equal(pred_q, pred, **TOL)
        np.testing.assert_allclose(model.get_attention(q), att, **TOL)


@pytest.mark.parametrize("labels", ["reordered", "superset"])
def test_fine_tuning_maps_assays_by_name(trained, labels, tmp_path):
    model, adata = trained
    expected = BagData.from_manager(model.adata_manager, labels=True).labels.numpy()  # model's assay order
    assert list(adata.obsm["assays"].columns) == model.assays
    model.save(tmp_path / "m", overwrite=True)
    tuning = adata.copy()
    lab = adata.obsm["assays"]
    cols = list(lab.columns)
    if labels == "reordered":
        tuning.obsm["assays"] = lab[[cols[2], cols[0], cols[1]]]
    else:  # the model's assays and another one, first
        tuning.obsm["assays"] = lab.assign(new_assay=lab[cols[0]].fillna(1.0))[["new_assay", *cols[::-1]]]
    loaded = ht.model.MoMIL.load(tmp_path / "m", adata=tuning)
    assert loaded.assays == model.assays
    loaded.train(max_epochs=1, warmup_epochs=0, batch_size=16, enable_progress_bar=False)
    got = BagData.from_manager(loaded.adata_manager, labels=True).labels.numpy()
    np.testing.assert_array_equal(got, expected)
    assert list(loaded.predict().columns) == model.assays


@pytest.mark.parametrize("change", ["permuted_names", "renamed", "permuted_columns"])
def test_predict_refuses_other_feature_names(trained, change):
    model, adata = trained
    q = _query(adata)
    names = list(q.var_names)
    if change == "permuted_names":
        q.var_names = names[::-1]  # same data, features named in another order
    elif change == "renamed":
        q.var_names = [f"other_{v}" for v in names]
    else:
        q = q[:, names[::-1]].copy()  # the features themselves in another order
    for query in (model.predict, model.get_attention, model.get_latent_representation):
        with pytest.raises(ValueError, match="features"):
            query(q)
    assert q.shape[1] == len(names)


class _ModeRecorder(Callback):
    """Records, at each training step, whether every submodule of the module is in training mode."""

    def __init__(self):
        self.modes = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.modes.append(all(m.training for m in pl_module.module.modules()))


@pytest.mark.parametrize("head", ["gated_abmil", "dsmil"])
def test_training_after_a_query_or_a_load_runs_in_training_mode(head, tmp_path):
    """Queries and ``load`` leave the module in eval mode; the next ``train`` must switch dropout back on."""
    adata = _data()
    ht.model.MoMIL.setup_anndata(adata, group_key="compound")
    model = ht.model.MoMIL(adata, head=head, n_hidden=8, n_head_hidden=4, dropout=0.5)
    kw = {"max_epochs": 1, "warmup_epochs": 0, "batch_size": 16, "enable_progress_bar": False}
    first = _ModeRecorder()
    model.train(callbacks=[first], **kw)
    assert first.modes and all(first.modes)  # a fresh module trains in training mode
    model.predict(adata)  # queries put the module in eval mode
    again = _ModeRecorder()
    model.train(callbacks=[again], **kw)
    assert again.modes and all(again.modes), "continued training after a query runs with dropout off"
    model.save(tmp_path / "m", overwrite=True)
    loaded = ht.model.MoMIL.load(tmp_path / "m", adata=adata)
    tuned = _ModeRecorder()
    loaded.train(callbacks=[tuned], **kw)
    assert tuned.modes and all(tuned.modes), "fine-tuning a loaded model runs with dropout off"
