"""``ht.tl.task_potentials``: single-task cross-validated AUROC per assay, nothing left in the AnnData."""

import numpy as np
import pandas as pd
import pytest

import hcitools as ht
from hcitools.tl import _potentials

TRAIN = {"max_epochs": 1, "warmup_epochs": 0, "batch_size": 32, "lr": 1e-3, "enable_progress_bar": False}


@pytest.fixture
def screen_folds():
    adata = ht.datasets.synthetic_hci(
        n_compounds=60, n_assays=3, n_plates=2, wells_per_compound=2, fovs_per_well=2, crops_per_fov=2,
        n_features=8, n_primary=2, label_density=0.5, seed=1,
    )  # fmt: skip
    ht.pp.split_compounds(adata, method="group", group_key="scaffold", n_folds=3, seed=0)
    return adata


def _state(adata):
    return set(adata.uns), set(adata.obsm), adata.obs.copy()


def test_task_potentials_runs_single_task_cv_and_leaves_adata_alone(screen_folds):
    uns, obsm, obs = _state(screen_folds)
    pot = ht.tl.task_potentials(screen_folds, primary_assays=["assay_00"], train_kwargs=TRAIN, n_hidden=4)
    assert isinstance(pot, pd.Series) and pot.name == "potential" and pot.index.name == "assay"
    assert list(pot.index) == ["assay_00"]
    assert np.isfinite(pot).all() and ((pot >= 0) & (pot <= 1)).all()
    assert set(screen_folds.uns) == uns and set(screen_folds.obsm) == obsm
    pd.testing.assert_frame_equal(screen_folds.obs, obs)


def _fake_momil(calls, fail=False):
    """Stands in for ``ht.tl.momil(method="stl")``: writes what it writes, from a known evaluation table."""

    def fake(adata, *, method, key_added, copy=False, overwrite=False, primary_assays=None, **options):
        calls.append({"method": method, "key_added": key_added, "copy": copy, **options})
        assays = list(primary_assays or ["a", "b", "c"])
        auroc = {"a": 0.71, "b": np.nan, "c": 0.64}
        rows = [{"assay": a, "auroc": auroc[a], "method": "stl"} for a in assays]
        rows += [{"assay": "macro mean", "auroc": 0.5, "method": "stl"}]
        rows += [{"assay": a, "auroc": 0.99, "method": "bag_size"} for a in assays]
        target = adata.copy() if copy else adata
        target.uns[key_added] = {
            "predictions": pd.DataFrame(0.5, index=["x", "y"], columns=assays),
            "evaluation": pd.DataFrame(rows),
            "params": {},
        }
        target.obsm[f"{key_added}_attention"] = np.zeros((adata.n_obs, len(assays)))
        if fail:
            raise RuntimeError("a fold failed")
        return target if copy else None

    return fake


@pytest.fixture
def tiny():
    return ht.datasets.synthetic_hci(n_compounds=10, n_assays=3, n_primary=1, n_features=4, seed=0)


def test_task_potentials_reads_the_single_task_rows(tiny, monkeypatch):
    calls = []
    monkeypatch.setattr(_potentials, "momil", _fake_momil(calls))
    uns, obsm, _ = _state(tiny)
    pot = ht.tl.task_potentials(tiny, seed=3, n_hidden=16)
    pd.testing.assert_series_equal(
        pot, pd.Series([0.71, np.nan, 0.64], index=pd.Index(["a", "b", "c"], name="assay"), name="potential")
    )
    assert calls[0]["method"] == "stl" and calls[0]["seed"] == 3 and calls[0]["n_hidden"] == 16
    assert set(tiny.uns) == uns and set(tiny.obsm) == obsm  # the temporary key is gone
    assert list(ht.tl.task_potentials(tiny, primary_assays=["c", "a"]).index) == ["c", "a"]
    # a view is never written into: the run works on a copy
    view = tiny[:50]
    ht.tl.task_potentials(view)
    assert calls[-1]["copy"] is True and view.is_view


def test_task_potentials_key_added_keeps_the_run(tiny, monkeypatch):
    monkeypatch.setattr(_potentials, "momil", _fake_momil([]))
    pot = ht.tl.task_potentials(tiny, key_added="pot")
    pd.testing.assert_series_equal(tiny.uns["pot"]["potentials"], pot)
    assert "pot_attention" in tiny.obsm and "evaluation" in tiny.uns["pot"]
    with pytest.raises(ValueError, match="exists already"):
        ht.tl.task_potentials(tiny, key_added="pot")
    ht.tl.task_potentials(tiny, key_added="pot", overwrite=True)


def test_task_potentials_cleans_up_when_the_run_fails(tiny, monkeypatch):
    monkeypatch.setattr(_potentials, "momil", _fake_momil([], fail=True))
    uns, obsm, _ = _state(tiny)
    with pytest.raises(RuntimeError, match="fold failed"):
        ht.tl.task_potentials(tiny)
    assert set(tiny.uns) == uns and set(tiny.obsm) == obsm


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "momil"}, TypeError, "method"),
        ({"copy": True}, TypeError, "copy"),
        ({"key_added": 3}, TypeError, "key_added"),
        ({"primary_assays": ["nope"]}, ValueError, "primary_assays"),
        ({"fold_key": "split"}, KeyError, "fold_key"),
    ],
)
def test_task_potentials_bad_arguments(screen_folds, kwargs, error, match):
    uns, obsm, _ = _state(screen_folds)
    with pytest.raises(error, match=match):
        ht.tl.task_potentials(screen_folds, **kwargs)
    assert set(screen_folds.uns) == uns and set(screen_folds.obsm) == obsm
