import numpy as np
import pandas as pd
import pytest

import hcitools as ht

TRAIN = {"max_epochs": 3, "warmup_epochs": 0, "batch_size": 32, "lr": 1e-3, "enable_progress_bar": False}


@pytest.fixture
def screen_folds():
    adata = ht.datasets.synthetic_hci(
        n_compounds=100, n_assays=4, n_plates=3, n_primary=2, n_features=12, label_density=0.3, seed=2
    )
    ht.pp.normalize_plates(adata)
    ht.pp.split_compounds(adata, method="group", group_key="scaffold", seed=0)
    return adata


@pytest.mark.parametrize("method", ["momil", "mean_mlp", "multilabel_mil"])
def test_tl_momil_writes_results(screen_folds, method):
    adata = screen_folds
    primary = ["assay_00", "assay_01"]
    ht.tl.momil(adata, method=method, key_added="res", train_kwargs=TRAIN, n_hidden=8, primary_assays=primary)
    res = adata.uns["res"]
    treated = adata.obs.loc[adata.obs["fold"] >= 0, "compound"].astype(str).unique()
    assert set(res["predictions"].index) == set(treated)  # every compound predicted once, out of fold
    ev = res["evaluation"]
    assert set(ev["method"]) == {method, "bag_size"}
    assert {"auroc", "auprc", "n_pos", "n_neg"} <= set(ev.columns)
    for _, part in ev.groupby("method"):
        part = part.set_index("assay")
        assert part.loc["primary mean", "auroc"] == pytest.approx(
            part.loc[primary, "auroc"].mean(), nan_ok=True
        )
        assert part.loc["macro mean", "n_pos"] == part.drop(["macro mean", "primary mean"])["n_pos"].sum()
    att = adata.obsm["res_attention"]
    used = (adata.obs["fold"] >= 0).to_numpy()
    assert att[~used].isna().all().all() and att.loc[used, primary].notna().all().all()
    # an assay with a single class in a rotation's training folds is not predicted there: NaN in both
    pred_of_row = res["predictions"].loc[adata.obs.loc[used, "compound"].astype(str), list(att.columns)]
    np.testing.assert_array_equal(att[used].isna().to_numpy(), pred_of_row.isna().to_numpy())
    sums = att[used].groupby(adata.obs.loc[used, "well"].astype(str).to_numpy()).sum(min_count=1)
    sums = sums.to_numpy()
    np.testing.assert_allclose(sums[~np.isnan(sums)], 1.0, atol=1e-5)
    assert res["params"]["method"] == method


def test_tl_momil_stl_primary_only(screen_folds):
    ht.tl.momil(
        screen_folds, method="stl", primary_assays=["assay_00", "assay_01"], train_kwargs=TRAIN, n_hidden=8
    )
    assert list(screen_folds.uns["momil"]["predictions"].columns) == ["assay_00", "assay_01"]


def test_tl_momil_copy_and_errors(screen_folds):
    before = screen_folds.copy()
    out = ht.tl.momil(screen_folds, copy=True, train_kwargs=TRAIN, n_hidden=8)
    assert "momil" in out.uns and "momil" not in screen_folds.uns
    with pytest.raises(ValueError, match="method"):
        ht.tl.momil(screen_folds, method="svm")
    with pytest.raises(KeyError, match="fold_key"):
        ht.tl.momil(screen_folds, fold_key="split")
    screen_folds.uns["momil"] = {}
    with pytest.raises(ValueError, match="exists already"):
        ht.tl.momil(screen_folds, train_kwargs=TRAIN)
    del screen_folds.uns["momil"]
    assert set(screen_folds.obsm.keys()) == set(before.obsm.keys())
    pd.testing.assert_frame_equal(screen_folds.obs, before.obs)


def test_compare_methods():
    rng = np.random.default_rng(0)
    idx = [f"c{i}" for i in range(80)]
    y = pd.DataFrame(
        {"a": rng.integers(0, 2, 80).astype(float), "b": rng.integers(0, 2, 80).astype(float)}, index=idx
    )
    good = y + rng.normal(0, 0.4, y.shape)
    noise = pd.DataFrame(rng.random(y.shape), index=idx, columns=["a", "b"])
    res = ht.tl.compare_methods(good, noise, labels=y, n_boot=300, seed=0)
    assert (res["p_value"] < 0.01).all() and (res["delta"] > 0).all()
    same = ht.tl.compare_methods(noise, noise, labels=y, n_boot=100)
    assert (same["p_value"] == 1.0).all()
    rev = ht.tl.compare_methods(noise, good, labels=y, n_boot=300)
    assert (rev["p_value"] > 0.95).all()
    again = ht.tl.compare_methods(good, noise, labels=y, n_boot=300, seed=0)
    pd.testing.assert_frame_equal(res, again)


def test_resampled_auroc_matches_scikit_learn():
    from sklearn.metrics import roc_auc_score

    from hcitools.tl._compare import _resampled_auroc

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (50, 30)).astype(float)
    y[:, 0], y[:, 1] = 0, 1  # both classes in every row
    score = np.round(rng.random((50, 30)), 1)  # ties
    expected = [roc_auc_score(yi, si) for yi, si in zip(y, score, strict=True)]
    np.testing.assert_allclose(_resampled_auroc(y, score), expected, atol=1e-12)


def test_compare_methods_errors_and_p_value_floor():
    rng = np.random.default_rng(0)
    idx = [f"c{i}" for i in range(40)]
    y = pd.DataFrame({"a": np.tile([0.0, 1.0], 20)}, index=idx)
    perfect, noise = y.copy(), pd.DataFrame({"a": rng.random(40)}, index=idx)
    res = ht.tl.compare_methods(perfect, noise, labels=y, n_boot=50)
    assert res.loc["a", "p_value"] == pytest.approx(1 / (res.loc["a", "n_boot"] + 1))  # never exactly 0
    with pytest.raises(TypeError, match="pred_a"):
        ht.tl.compare_methods(y.to_numpy(), noise, labels=y)
    with pytest.raises(KeyError, match="assays"):
        ht.tl.compare_methods(perfect, noise, labels=y, assays=["zz"])
    with pytest.raises(ValueError, match="n_boot"):
        ht.tl.compare_methods(perfect, noise, labels=y, n_boot=0)


def test_tl_momil_checks_arguments_before_training(screen_folds, monkeypatch):
    """Wrong keyword arguments, unknown primary assays and inconsistent labels fail before any fold trains."""
    calls = []
    import hcitools.tl._cv as tl_cv

    monkeypatch.setattr(tl_cv, "_fit_fold", lambda *a, **k: calls.append(1))
    before = screen_folds.copy()
    with pytest.raises(TypeError, match="train_kwargs"):
        ht.tl.momil(screen_folds, max_epochs=3)
    with pytest.raises(TypeError, match="MeanMLP takes no argument `head`"):
        ht.tl.momil(screen_folds, method="mean_mlp", head="dsmil")
    with pytest.raises(TypeError, match="validation_key"):
        ht.tl.momil(screen_folds, train_kwargs={"validation_key": "fold"})
    with pytest.raises(ValueError, match="primary_assays"):
        ht.tl.momil(screen_folds, method="stl", primary_assays=["nope"])
    lab = screen_folds.obsm["assays"].copy()
    obs = screen_folds.obs
    cpd = obs.loc[obs["fold"] >= 0, "compound"].iloc[0]
    in_cpd = (obs["compound"] == cpd).to_numpy()
    one_well = in_cpd & (obs["well"] == obs.loc[in_cpd, "well"].iloc[0]).to_numpy()
    assert (in_cpd & ~one_well).any()  # the compound has several wells
    lab.loc[in_cpd, "assay_00"] = 0.0
    lab.loc[one_well, "assay_00"] = 1.0  # constant within each well, but not across the compound's wells
    screen_folds.obsm["assays"] = lab
    with pytest.raises(ValueError, match="varies within compounds"):
        ht.tl.momil(screen_folds)
    assert calls == []
    screen_folds.obsm["assays"] = before.obsm["assays"]
    assert set(screen_folds.uns) == set(before.uns)


def test_non_string_assay_names_are_refused(screen_folds):
    lab = screen_folds.obsm["assays"].copy()
    lab.columns = range(lab.shape[1])
    screen_folds.obsm["assays"] = lab
    with pytest.raises(TypeError, match="must be strings"):
        ht.model.MoMIL.setup_anndata(screen_folds)
    with pytest.raises(TypeError, match=r"columns\.astype"):
        ht.tl.momil(screen_folds)


def test_tl_momil_scores_model_and_baseline_like_for_like(screen_folds, recwarn):
    """The bag-size baseline is scored on exactly the (compound, assay) pairs the model predicted; the folds'
    warnings come once each, attributed to the caller's line, with the test folds named."""
    adata = screen_folds
    # an assay observed on a few compounds of a single fold only: not learnable in most rotations
    lab = adata.obsm["assays"].copy()
    folds = adata.obs["fold"].to_numpy()
    lab["rare"] = np.where(folds == 0, lab["assay_00"], np.nan)
    adata.obsm["assays"] = lab
    ht.tl.momil(adata, n_hidden=8, n_head_hidden=4, progress=False,
                train_kwargs={"max_epochs": 2, "warmup_epochs": 0, "batch_size": 16})  # fmt: skip
    ev = adata.uns["momil"]["evaluation"].set_index(["method", "assay"])
    for assay in [*lab.columns, "macro mean"]:
        model_row, base_row = ev.loc[("momil", assay)], ev.loc[("bag_size", assay)]
        assert model_row["n_pos"] == base_row["n_pos"] and model_row["n_neg"] == base_row["n_neg"], assay
        assert np.isnan(model_row["auroc"]) == np.isnan(base_row["auroc"]), assay
    ours = [w for w in recwarn if "test folds" in str(w.message)]
    assert ours and all(w.filename == __file__ for w in ours)
    messages = [str(w.message) for w in ours]
    assert len(messages) == len(set(messages))
    assert any("'rare'" in m for m in messages)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"copy": "no"}, TypeError, "copy"),
        ({"overwrite": 1}, TypeError, "overwrite"),
        ({"seed": "0"}, TypeError, "seed"),
        ({"seed": -1}, ValueError, "seed"),
        ({"train_kwargs": "x"}, TypeError, "train_kwargs"),
        ({"progress": "yes"}, TypeError, "progress"),
        ({"key_added": 3}, TypeError, "key_added"),
        ({"batch_key": "nope"}, KeyError, "batch_key"),
        ({"group_key": "nope"}, KeyError, "group_key"),
    ],
)
def test_tl_momil_refuses_bad_options_before_any_fold(screen_folds, monkeypatch, kwargs, error, name):
    import hcitools.tl._cv as tl_cv

    calls = []
    monkeypatch.setattr(tl_cv, "_fit_fold", lambda *a, **k: calls.append(1))
    before = screen_folds.copy()
    with pytest.raises(error, match=name):
        ht.tl.momil(screen_folds, **kwargs)
    assert not calls and "momil" not in screen_folds.uns
    pd.testing.assert_frame_equal(screen_folds.obs, before.obs)
