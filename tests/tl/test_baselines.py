import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

import hcitools as ht


@pytest.fixture(scope="module")
def wells():
    adata = ht.datasets.synthetic_hci(
        n_compounds=80, n_assays=4, n_plates=3, n_features=8, n_primary=2, label_density=0.3, seed=0
    )
    ht.pp.normalize_plates(adata)
    ht.pp.split_compounds(adata, method="group", group_key="scaffold", seed=0)
    return ht.pp.aggregate(adata, by="well")


def _reference(wells, Cs=(0.01, 0.1, 1.0)):
    """The 3-1-1 protocol written out: fit each C on the training folds, keep the best validation AUROC."""
    X, folds, labels = wells.X.astype(np.float64), wells.obs["fold"].to_numpy(), wells.obsm["assays"]
    pred = pd.DataFrame(np.nan, index=wells.obs_names, columns=labels.columns)
    for rot in ht.pp.fold_rotations(5):
        train, val, test = np.isin(folds, rot.train), folds == rot.validation, folds == rot.test
        for assay in labels.columns:
            y = labels[assay].to_numpy()
            tr, va = train & ~np.isnan(y), val & ~np.isnan(y)
            if len(np.unique(y[tr])) < 2:
                continue
            best, best_auc = None, -np.inf
            for C in Cs:
                clf = LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=0)
                clf.fit(X[tr], y[tr])
                auc = (
                    roc_auc_score(y[va], clf.predict_proba(X[va])[:, 1])
                    if len(np.unique(y[va])) == 2
                    else 0.0
                )
                if auc > best_auc:
                    best, best_auc = clf, auc
            pred.loc[test, assay] = best.predict_proba(X[test])[:, 1]
    return pred


def test_matches_the_protocol_written_out(wells):
    pred = ht.tl.pooled_logistic_regression(wells, seed=0)
    pd.testing.assert_frame_equal(pred, _reference(wells), atol=1e-8)
    folds = wells.obs["fold"].to_numpy()
    assert pred[folds < 0].isna().all().all()  # DMSO wells are in no fold: never predicted
    # a treated well is left unpredicted only when its rotation's training folds hold a single class
    labels = wells.obsm["assays"]
    for rot in ht.pp.fold_rotations(5):
        train = np.isin(folds, rot.train)
        for a in labels.columns:
            one_class = labels.loc[train, a].nunique() < 2
            assert pred.loc[folds == rot.test, a].isna().all() == one_class


def test_learns_a_pooled_signal():
    """Wells whose mean feature carries the label: the baseline ranks them almost perfectly."""
    import anndata as ad

    rng = np.random.default_rng(0)
    n_cpd, n_wells = 60, 2
    y_cpd = rng.integers(0, 2, n_cpd).astype(float)
    cpd = np.repeat(np.arange(n_cpd), n_wells)
    X = rng.normal(size=(len(cpd), 5))
    X[:, 0] += 2.0 * y_cpd[cpd]
    obs = pd.DataFrame(
        {"compound": [f"c{c}" for c in cpd], "well": [f"w{i}" for i in range(len(cpd))]},
        index=[f"w{i}" for i in range(len(cpd))],
    )
    adata = ad.AnnData(X.astype(np.float32), obs=obs)
    adata.obsm["assays"] = pd.DataFrame({"a": y_cpd[cpd]}, index=adata.obs_names)
    ht.pp.split_compounds(adata, method="random", seed=0)
    pred = ht.tl.pooled_logistic_regression(adata)
    assert roc_auc_score(adata.obsm["assays"]["a"], pred["a"]) > 0.9


def test_test_fold_labels_are_never_used(wells):
    """Permuting (or erasing) the test fold's labels leaves that fold's predictions unchanged."""
    pred = ht.tl.pooled_logistic_regression(wells)
    folds = wells.obs["fold"].to_numpy()
    rng = np.random.default_rng(0)
    for test_fold in range(5):
        other = wells.copy()
        labels = other.obsm["assays"].copy()
        rows = np.flatnonzero(folds == test_fold)
        labels.iloc[rows] = labels.iloc[rng.permutation(rows)].to_numpy()
        other.obsm["assays"] = labels
        permuted = ht.tl.pooled_logistic_regression(other)
        pd.testing.assert_frame_equal(permuted.iloc[rows], pred.iloc[rows])
        labels.iloc[rows] = np.nan
        other.obsm["assays"] = labels
        pd.testing.assert_frame_equal(ht.tl.pooled_logistic_regression(other).iloc[rows], pred.iloc[rows])


def test_validation_labels_choose_C(wells):
    """C is chosen on the validation fold: a single C gives other predictions than the search over three."""
    searched = ht.tl.pooled_logistic_regression(wells)
    fixed = {C: ht.tl.pooled_logistic_regression(wells, Cs=[C]) for C in (0.01, 0.1, 1.0)}
    assert not all(np.allclose(searched, f, equal_nan=True) for f in fixed.values())
    # and every searched prediction is one of the single-C predictions
    stacked = np.stack([f.to_numpy() for f in fixed.values()])
    s = searched.to_numpy()
    ok = np.isnan(s) | np.isclose(stacked, s[None]).any(axis=0)
    assert ok.all()


def test_writes_nothing(wells):
    before = wells.copy()
    ht.tl.pooled_logistic_regression(wells)
    assert list(wells.uns) == list(before.uns) and list(wells.obsm) == list(before.obsm)
    pd.testing.assert_frame_equal(wells.obs, before.obs)


def test_bad_inputs(wells):
    crops = ht.datasets.synthetic_hci(n_compounds=20, n_features=8, seed=0)
    ht.pp.split_compounds(crops, method="random", seed=0)
    with pytest.raises(ValueError, match=r"defined on wells.*ht\.pp\.aggregate"):
        ht.tl.pooled_logistic_regression(crops)
    with pytest.raises(KeyError, match="fold_key"):
        ht.tl.pooled_logistic_regression(wells, fold_key="folds")
    bad = wells.copy()
    bad.obs["fold"] = bad.obs["fold"].astype(float)
    with pytest.raises(TypeError, match=r"fold_key.*integer"):
        ht.tl.pooled_logistic_regression(bad)
    bad.obs["fold"] = np.minimum(wells.obs["fold"].to_numpy(), 1)
    with pytest.raises(ValueError, match=r"n ≥ 3"):
        ht.tl.pooled_logistic_regression(bad)
    with pytest.raises(ValueError, match="Cs"):
        ht.tl.pooled_logistic_regression(wells, Cs=[0.0])
    with pytest.raises(KeyError, match="labels_key"):
        ht.tl.pooled_logistic_regression(wells, labels_key="targets")
