import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import hcitools as ht
from hcitools.tl._impute import apply_thresholds, correct_thresholds, emphasised, percentiles

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------- threshold rules
def test_percentiles_primary_and_secondary():
    q_pos, q_neg = percentiles(0.9, 0.05, np.array([True, False]))
    np.testing.assert_allclose(q_pos, [0.9, 0.95])
    np.testing.assert_allclose(q_neg, [0.1, 0.05])
    q_pos, q_neg = percentiles(0.97, 0.03, np.array([False]))  # clipped at 1 / 0
    np.testing.assert_allclose([q_pos[0], q_neg[0]], [1.0, 0.0], atol=1e-12)


def test_correct_thresholds_known_answer():
    # task 0: positives 0.2 (wrong) and 0.6 … 1.0 (correct); negatives 0.05 … 0.4 (correct) and 0.7 (wrong)
    pos = [0.2, 0.6, 0.7, 0.8, 0.9, 1.0]
    neg = [0.05, 0.1, 0.15, 0.2, 0.4, 0.7]
    prob = np.array(pos + neg)[:, None].repeat(2, axis=1)
    labels = np.array([1.0] * 6 + [0.0] * 6)[:, None].repeat(2, axis=1)
    labels[0, 1] = np.nan  # not observed: ignored
    th_pos, th_neg, n_pos, n_neg = correct_thresholds(
        prob, labels, np.array([0.9, 0.95]), np.array([0.1, 0.05])
    )
    # np.quantile of the 5 correct positives [0.6 … 1.0] at 0.9: 0.6 + 0.9·4·0.1 = 0.96; at 0.95: 0.98
    np.testing.assert_allclose(th_pos, [0.96, 0.98])
    # the 5 correct negatives [0.05, 0.1, 0.15, 0.2, 0.4] at 0.1 (position 0.4): 0.07; at 0.05 (0.2): 0.06
    np.testing.assert_allclose(th_neg, [0.07, 0.06])
    np.testing.assert_array_equal(n_pos, [5, 5])
    np.testing.assert_array_equal(n_neg, [5, 5])


def test_correct_thresholds_without_correct_entries_is_nan():
    prob = np.array([[0.3], [0.2], [0.6]])  # the positives are all wrong, the negative is wrong
    labels = np.array([[1.0], [1.0], [0.0]])
    th_pos, th_neg, n_pos, n_neg = correct_thresholds(prob, labels, np.array([0.9]), np.array([0.1]))
    assert np.isnan(th_pos[0]) and np.isnan(th_neg[0]) and n_pos[0] == 0 and n_neg[0] == 0
    new = apply_thresholds(np.array([[0.99], [0.01]]), np.array([[np.nan], [np.nan]]), th_pos, th_neg)
    assert np.isnan(new).all()  # no threshold, no imputation


def test_apply_thresholds_never_relabels_observed_and_uses_inclusive_bounds():
    prob = np.array([[0.9, 0.1], [0.95, 0.05], [0.5, 0.5], [0.1, 0.9]])
    labels = np.array([[np.nan, np.nan], [0.0, 1.0], [np.nan, np.nan], [np.nan, 0.0]])
    new = apply_thresholds(prob, labels, np.array([0.9, 0.9]), np.array([0.1, 0.1]))
    expected = np.array([[1.0, 0.0], [np.nan, np.nan], [np.nan, np.nan], [0.0, np.nan]])
    np.testing.assert_array_equal(new, expected)


def test_emphasis_scales_non_key_thresholds_only():
    th_pos, th_neg = emphasised(
        np.array([0.8, 0.8]), np.array([0.2, 0.2]), np.array([True, False]), (1.1, 0.5)
    )
    np.testing.assert_allclose(th_pos, [0.8, 0.88])
    np.testing.assert_allclose(th_neg, [0.2, 0.1])


# ----------------------------------------------------------------------------------------- impute_labels
def _easy_screen(seed=1):
    return ht.datasets.synthetic_hci(
        n_compounds=240, n_assays=3, n_primary=1, n_features=8, n_plates=3, wells_per_compound=2, fovs_per_well=1,
        label_density=0.5, primary_density_ratio=1.0, effect_size=5, label_noise=0.1, n_mechanisms=3,
        n_unrelated=0, responder_fraction=0.6, plate_effect=0, plate_scale=0, seed=seed,
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained():
    adata = _easy_screen()
    ht.model.MoMIL.setup_anndata(adata, group_key="compound")
    model = ht.model.MoMIL(adata, n_hidden=8, n_head_hidden=8, dropout=0.0, head="abmil")
    model.train(
        max_epochs=20,
        warmup_epochs=0,
        enable_progress_bar=False,
        lr=1e-2,
        pos_weight=True,
        validation_size=0.4,
        seed=1,
    )
    return adata, model


def test_impute_labels_accuracy_close_to_percentile_and_reported(trained):
    adata, model = trained
    ad = adata.copy()
    table = ht.tl.impute_labels(ad, model, truth_key="assays_true", p=0.9)
    n_added = int(table["n_added"].sum())
    assert n_added >= 10
    accuracy = table["n_correct_added"].sum() / n_added
    assert accuracy >= 0.85  # drawn at the 90th percentile of correctly classified validation compounds
    # the reported accuracy is the truth's verdict on the imputed entries
    imputed = ad.obsm["assays_imputed_round"] == 1
    truth = ad.obsm["assays_true"]
    per_cpd = ad.obs["compound"].astype(str).to_numpy()
    for assay in model.assays:
        rows = imputed[assay].to_numpy()
        got = (
            pd.Series(ad.obsm["assays_imputed"][assay].to_numpy()[rows], index=per_cpd[rows])
            .groupby(level=0)
            .first()
        )
        true = pd.Series(truth[assay].to_numpy()[rows], index=per_cpd[rows]).groupby(level=0).first()
        row = table.set_index("assay").loc[assay]
        assert len(got) == row["n_added"] and (got == true).sum() == row["n_correct_added"]
    # a looser percentile adds at least as many labels
    looser = ht.tl.impute_labels(adata.copy(), model, p=0.6)
    assert looser["n_added"].sum() >= n_added
    assert "accuracy" not in looser  # no truth given, none reported


def test_impute_labels_provenance_and_never_overwrites(trained):
    adata, model = trained
    ad = adata.copy()
    user = ad.obsm["assays"].copy()
    table = ht.tl.impute_labels(ad, model)
    pd.testing.assert_frame_equal(ad.obsm["assays"], user)  # the user's labels are untouched
    out, prov = ad.obsm["assays_imputed"], ad.obsm["assays_imputed_round"]
    observed = user.notna().to_numpy()
    np.testing.assert_array_equal(out.to_numpy()[observed], user.to_numpy()[observed])
    np.testing.assert_array_equal(prov.to_numpy() == 0, observed)
    np.testing.assert_array_equal(prov.to_numpy() == 1, out.notna().to_numpy() & ~observed)
    assert set(np.unique(prov.to_numpy())) <= {-1, 0, 1}
    # imputed only in training compounds, never in the validation ones
    val_bags = set(model.split_bags["validation"])
    in_val = ad.obs["well"].astype(str).isin(val_bags).to_numpy()
    assert not (prov.to_numpy()[in_val] == 1).any()
    # imputed labels follow the table's thresholds on the compound scores
    score = model.predict(ad, level="compound")
    cpd = ad.obs["compound"].astype(str).to_numpy()
    th = table.set_index("assay")
    for assay in model.assays:
        rows = prov[assay].to_numpy() == 1
        s = score.loc[cpd[rows], assay].to_numpy()
        lab = out[assay].to_numpy()[rows]
        assert (s[lab == 1] >= th.loc[assay, "th_pos"]).all() and (
            s[lab == 0] <= th.loc[assay, "th_neg"]
        ).all()
    # a second first-round call refuses to overwrite; a failed call changes nothing
    before = {k: v.copy() for k, v in ad.obsm.items()}
    with pytest.raises(ValueError, match="already"):
        ht.tl.impute_labels(ad, model)
    with pytest.raises(ValueError, match="`p`"):
        ht.tl.impute_labels(ad, model, key_added="other", p=1.2)
    with pytest.raises(KeyError, match="truth_key"):
        ht.tl.impute_labels(ad, model, key_added="other", truth_key="nope")
    assert set(ad.obsm) == set(before) and "other" not in ad.uns
    # never the training labels themselves
    with pytest.raises(ValueError, match="overwrite the training labels"):
        ht.tl.impute_labels(ad, model, key_added="assays")


def test_impute_labels_second_round_keeps_the_first(trained):
    adata, model = trained
    ad = adata.copy()
    ht.tl.impute_labels(ad, model)
    first = ad.obsm["assays_imputed"].copy()
    ht.model.MoMIL.setup_anndata(ad, labels_key="assays_imputed", group_key="compound")
    model2 = ht.model.MoMIL(ad, n_hidden=8, n_head_hidden=8, dropout=0.0, head="abmil")
    model2.train(
        max_epochs=3, warmup_epochs=0, enable_progress_bar=False, lr=1e-2, validation_size=0.4, seed=1
    )
    table = ht.tl.impute_labels(ad, model2, key_added="assays_imputed")
    assert (table["round"] == 2).all()
    prov = ad.obsm["assays_imputed_round"].to_numpy()
    known = first.notna().to_numpy()
    np.testing.assert_array_equal(ad.obsm["assays_imputed"].to_numpy()[known], first.to_numpy()[known])
    assert ((prov == 2) <= ~known).all()
    assert list(ad.uns["assays_imputed"]["table"]["round"].unique()) == [1, 2]


@pytest.mark.slow
def test_momil_self_training_never_reads_the_test_fold():
    adata = ht.datasets.synthetic_hci(
        n_compounds=90, n_assays=3, n_plates=3, n_primary=1, n_features=8, label_density=0.4, seed=3
    )
    ht.pp.split_compounds(adata, method="random", n_folds=3, seed=0)
    kw = dict(
        train_kwargs={"max_epochs": 3, "warmup_epochs": 0, "batch_size": 16, "lr": 3e-3, "enable_progress_bar": False},
        n_hidden=8, n_head_hidden=8, primary_assays=["assay_00"], impute="conformal", rounds=1,
        truth_key="assays_true", progress=False,
    )  # fmt: skip
    clean = adata.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # small-n notes of the tiny folds
        ht.tl.momil(clean, **kw)
    # poison the test fold of rotation 0: its labels flipped, its features scrambled
    poisoned = adata.copy()
    test = (poisoned.obs["fold"] == 0).to_numpy()
    lab = poisoned.obsm["assays"]
    lab.loc[test] = 1.0 - lab.loc[test]
    poisoned.X[test] = np.random.default_rng(0).normal(size=(int(test.sum()), poisoned.n_vars)) * 50
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ht.tl.momil(poisoned, **kw)
    a, b = clean.uns["momil"]["imputation"], poisoned.uns["momil"]["imputation"]
    assert set(a["round"]) == {1} and {"accuracy", "n_added", "test_fold"} <= set(a.columns)
    pd.testing.assert_frame_equal(a[a["test_fold"] == 0], b[b["test_fold"] == 0])
    assert not a[a["test_fold"] != 0].equals(b[b["test_fold"] != 0])  # other rotations do see fold 0
    assert clean.uns["momil"]["params"]["rounds"] == 1
    rounds = clean.uns["momil"]["round_evaluation"]
    assert list(rounds["round"]) == [0, 1]
    last = (
        clean.uns["momil"]["evaluation"].set_index(["method", "assay"]).loc[("momil", "macro mean"), "auroc"]
    )
    assert rounds["macro mean auroc"].iloc[-1] == pytest.approx(last)
    with pytest.raises(ValueError, match="impute"):
        ht.tl.momil(adata, impute="knn", progress=False)
    with pytest.raises(ValueError, match="rounds"):
        ht.tl.momil(adata, impute="conformal", rounds=0, progress=False)
