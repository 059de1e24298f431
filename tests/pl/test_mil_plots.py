"""Plots of MIL training and attention."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

import hcitools as ht


@pytest.fixture(scope="module")
def trained():
    adata = ht.datasets.synthetic_hci(
        n_compounds=40, n_assays=4, n_plates=3, n_features=16, n_primary=2, label_density=0.5, seed=0
    )
    ht.model.MoMIL.setup_anndata(adata, bag_key="well", labels_key="assays")
    model = ht.model.MoMIL(adata, n_hidden=8, n_head_hidden=4, primary_assays=["assay_00", "assay_01"])
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
    # stable order (the column's sorted values), the n of every box in its label
    responder = adata.obs["responder"]
    counts = responder.value_counts()
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        f"{v}\n(n={counts[v]})" for v in sorted(responder.unique())
    ]
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


class FakeModel:
    """A model-like object with a scvi-tools-style history (one one-column DataFrame per key, epochs as index)."""

    best_epoch = None

    def __init__(self, history, assays=("a", "b", "c"), primary_assays=("b",)):
        self.history = {
            k: pd.DataFrame({k: v}, index=pd.Index(range(len(v)), name="epoch")) for k, v in history.items()
        }
        self.assays = list(assays)
        self.primary_assays = None if primary_assays is None else list(primary_assays)


def test_training_history_branch_terms():
    losses = {"train_loss": [1.0, 0.8, 0.7], "validation_loss": [1.1, 0.9, 0.85]}
    fake = FakeModel({**losses, "prior_loss": [0.3, 0.2, 0.1], "adversarial_loss": [0.7, 0.9, 1.0]})
    ax = ht.pl.training_history(fake, metric=None)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["train_loss", "validation_loss", "prior_loss (training)", "adversarial_loss (training)"]
    np.testing.assert_allclose(ax.lines[3].get_ydata(), [0.7, 0.9, 1.0])
    assert ax.lines[2].get_linestyle() == "--"
    # absent terms are skipped; `terms=()` hides present ones
    ax = ht.pl.training_history(FakeModel(losses), metric=None)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train_loss", "validation_loss"]
    ax = ht.pl.training_history(fake, metric=None, terms=())
    assert len(ax.lines) == 2
    with pytest.raises(TypeError, match="`terms`"):
        ht.pl.training_history(fake, terms="prior_loss")


def test_task_weights_fake_history():
    weights = {
        "a": [1.0, 0.9, 0.8],
        "b": [1.0, 1.2, 1.4],
        "c": [1.0, np.nan, 0.7],
        "aux_cell_count": [1.0, 1.0, 0.9],
    }
    fake = FakeModel({f"task_weight_{k}": v for k, v in weights.items()} | {"train_loss": [1.0, 0.9, 0.8]})
    fig = ht.pl.task_weights(fake, return_fig=True)
    ax = fig.axes[0]
    assert len(ax.lines) == 4  # one per task, model assays first
    np.testing.assert_allclose(ax.lines[1].get_ydata(), weights["b"])
    assert ax.lines[1].get_linewidth() > ax.lines[0].get_linewidth()  # the primary assay highlighted
    assert ax.lines[0].get_color() == ax.lines[2].get_color() == "lightgrey"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["b", "aux_cell_count", "other assays (n=2)"]
    # a subset, in the order given; all assays coloured without primary assays
    ax = ht.pl.task_weights(FakeModel(fake_history(weights), primary_assays=None), assays=["c", "a"])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["c", "a"]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), weights["c"])
    with pytest.raises(KeyError, match="argument `assays`"):
        ht.pl.task_weights(fake, assays=["nope"])
    with pytest.raises(TypeError, match="`assays`"):
        ht.pl.task_weights(fake, assays="a")
    with pytest.raises(KeyError, match="no task weights"):
        ht.pl.task_weights(FakeModel({"train_loss": [1.0]}))

    class Untrained:
        history = None

    with pytest.raises(ValueError, match="train it first"):
        ht.pl.task_weights(Untrained())


def fake_history(weights):
    return {f"task_weight_{k}": v for k, v in weights.items()}


def test_task_weights_trained(trained):
    _, model = trained
    ax = ht.pl.task_weights(model)
    assert len(ax.lines) == len(model.assays)
    assert len(ax.lines[0].get_xdata()) == len(model.history["task_weight_assay_00"])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["assay_00", "assay_01", f"other assays (n={len(model.assays) - 2})"]
