"""Plots of MIL training and attention."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

import hcitools as ht


@pytest.fixture(scope="module")
def trained():
    adata = ht.datasets.synthetic_hci(
        n_compounds=40, n_assays=4, n_plates=3, n_features=16, n_primary=2, label_density=0.5, seed=0
    )
    ht.model.MoMIL.setup_anndata(adata, bag_key="well", labels_key="assays")
    model = ht.model.MoMIL(adata, n_hidden=8, n_head_hidden=4)
    model.train(max_epochs=4, warmup_epochs=0, patience=10, lr=1e-3, batch_size=16, enable_progress_bar=False)
    return adata, model


def test_training_history(trained):
    _, model = trained
    ax = ht.pl.training_history(model)
    labels = ax.get_legend().get_texts()
    assert [t.get_text() for t in labels][:3] == ["train_loss", "validation_loss", "validation_mean_auroc"]
    assert len(ax.lines[0].get_xdata()) == len(model.history["train_loss"])
    if model.best_epoch is not None:
        assert labels[-1].get_text() == f"kept epoch ({model.best_epoch})"
    with pytest.raises(KeyError, match="None of"):
        ht.pl.training_history(model, keys=["nope"], metric="nope")

    class Untrained:
        history = None

    with pytest.raises(ValueError, match="train it first"):
        ht.pl.training_history(Untrained())


def test_attention_by_group(trained):
    adata, model = trained
    adata = adata.copy()
    adata.obsm["att"] = model.get_attention(adata)
    fig = ht.pl.attention(adata, assay="assay_01", key="att", groupby="responder", return_fig=True)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(
        dict.fromkeys(adata.obs["responder"].astype(str))
    )
    # attention × bag size averages to 1 within every bag
    sizes = adata.obs["well"].map(adata.obs["well"].value_counts()).to_numpy()
    rel = adata.obsm["att"][:, 1] * sizes
    np.testing.assert_allclose(
        np.bincount(adata.obs["well"].cat.codes, rel) / np.bincount(adata.obs["well"].cat.codes),
        1.0,
        rtol=1e-5,
    )
    with pytest.raises(KeyError, match="argument `assay`"):
        ht.pl.attention(adata, assay="nope", key="att", groupby="responder")
    with pytest.raises(KeyError, match="argument `key`"):
        ht.pl.attention(adata, assay="assay_01", key="missing", groupby="responder")
    with pytest.raises(ValueError, match="Pass `assays`"):
        ht.pl.attention(adata, assay="assay_01", key="att", groupby="responder", assays=["a"])
