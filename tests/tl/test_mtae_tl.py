"""ht.tl.mtae on the Kang data: split, train, predict, evaluate beside baselines and the ceiling."""

import warnings

import numpy as np
import pytest

import hcitools as ht
from hcitools._testing import assert_unchanged, snapshot

SMALL = {"n_latent": 8, "n_hidden": (32,)}
TRAIN = {"max_epochs": 2, "batch_size": 256, "enable_progress_bar": False}
EVAL = {"n_boot": 5, "n_degs": 50, "distances": ()}  # no pertpy import: a fast test


@pytest.fixture(scope="module")
def kang():
    adata = ht.datasets.kang2018()
    X = adata.X
    var = np.asarray(X.multiply(X).mean(0)).ravel() - np.asarray(X.mean(0)).ravel() ** 2
    return adata[:, np.sort(np.argsort(-var)[:400])].copy()  # the 400 most variable genes: a fast test


def run(adata, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the identity baseline's undefined ratios are expected
        return ht.tl.mtae(
            adata, **{"target": "B", "train_kwargs": TRAIN, "eval_kwargs": EVAL, **SMALL, **kwargs}
        )


@pytest.mark.slow  # the first test of the module imports scvi-tools, Lightning and scanpy (most of its time)
def test_mtae_writes_predictions_and_evaluation(kang):
    adata = kang.copy()
    before = snapshot(adata)
    pred = run(adata)
    n_ctrl = int(((adata.obs["cell_type"] == "B") & (adata.obs["condition"] == "control")).sum())
    assert pred.shape == (n_ctrl, adata.n_vars)
    assert list(pred.var_names) == list(adata.var_names)
    assert (pred.obs["cell_type"] == "B").all() and (pred.obs["condition"] == "control").all()
    assert not any(c.startswith("_scvi_") for c in pred.obs.columns)
    assert np.isfinite(pred.X).all() and (pred.X >= 0).all()
    assert pred.uns["mtae_predict"] == {"variant": "MTAe", "condition": "stimulated"}
    # the input is unchanged except for uns["mtae"]; it was never registered
    assert sorted(adata.uns.keys()) == sorted([*before["uns"], "mtae"])
    np.testing.assert_array_equal(adata.X.toarray(), before["X"])
    assert list(adata.obs.columns) == list(before["obs"].columns)
    result = adata.uns["mtae"]
    ev = result["evaluation"]
    assert list(ev.columns) == ["model", "cell_type", "seed", "metric", "value"]
    assert list(dict.fromkeys(ev["model"])) == ["MTAe", "identity", "mean_shift", "ceiling (split half)"]
    wide = ev.pivot_table(index="model", columns="metric", values="value")
    # on real data: the ceiling beats the identity baseline, the mean shift beats the identity on the DEGs
    assert wide.loc["ceiling (split half)", "r2_top100"] > wide.loc["identity", "r2_top100"]
    assert wide.loc["mean_shift", "r2_top100"] > wide.loc["identity", "r2_top100"]
    assert result["params"]["target"] == "B" and result["params"]["variant"] == "MTAe"
    assert result["params"]["n_stim_cells"] == 112
    # the table ranks as it is (the ceiling set aside)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranked = ht.tl.rank_models(ev, metrics=["r2_all", "r2_top100", "deg_overlap"])
    assert set(ranked.index) == {"MTAe", "identity", "mean_shift"}
    assert ranked.attrs["ceiling"] is not None
    # never overwritten silently; a refused call changes nothing
    before = snapshot(adata)
    with pytest.raises(ValueError, match="exists already"):
        run(adata)
    assert_unchanged(before, adata)


def test_mtae_same_seed_same_predictions(kang):
    a, b = kang.copy(), kang.copy()
    p1 = run(a, baselines=(), ceiling=False, seed=3)
    p2 = run(b, baselines=(), ceiling=False, seed=3, key_added="other")
    np.testing.assert_array_equal(p1.X, p2.X)
    assert set(b.uns["other"]["evaluation"]["model"]) == {"MTAe"}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"variant": "nope"}, ValueError, "`variant` must be one of"),
        ({"target": "nope"}, ValueError, "`target`"),
        ({"condition": "nope"}, ValueError, "`condition`"),
        ({"max_epochs": 3}, TypeError, "train_kwargs"),
        ({"n_layers": 3}, TypeError, "MTAe takes no argument `n_layers`"),
        ({"train_kwargs": {"seed": 1}}, TypeError, "must not hold"),
        ({"train_kwargs": [1]}, TypeError, "`train_kwargs` must be a dict"),
        ({"eval_kwargs": {"n_degs": 10_000}}, ValueError, "eval_kwargs"),
        ({"eval_kwargs": {"nope": 1}}, TypeError, "unknown options"),
        ({"baselines": ("nope",)}, ValueError, "`baselines`"),
        ({"key_added": 3}, TypeError, "key_added"),
        ({"seed": -1}, ValueError, "seed"),
        ({"condition_key": "nope"}, (KeyError, ValueError), "nope"),
    ],
)
def test_mtae_bad_arguments_change_nothing(kang, kwargs, error, match):
    adata = kang.copy()
    before = snapshot(adata)
    with pytest.raises(error, match=match):
        run(adata, **kwargs)
    assert_unchanged(before, adata)


def test_mtae_failed_training_changes_nothing(kang):
    adata = kang.copy()
    before = snapshot(adata)
    with pytest.raises(ValueError, match="max_epochs"):
        run(adata, train_kwargs={"max_epochs": 0})
    assert_unchanged(before, adata)
