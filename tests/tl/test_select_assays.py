import numpy as np
import pandas as pd
import pytest
import torch

import hcitools as ht
from hcitools.tl._select import graph_order

torch.set_num_threads(1)

NAMES = ["assay_00", "assay_01", "assay_02", "assay_03"]


def _affinity():
    # a chain assay_00 — assay_01 — assay_02, assay_03 isolated
    values = np.array([[1, 0.9, 0, 0], [0.9, 1, 0.4, 0], [0, 0.4, 1, 0], [0, 0, 0, 1]], dtype=float)
    return pd.DataFrame(values, index=NAMES, columns=NAMES)


def test_graph_order_known_answer():
    orders = graph_order(_affinity(), ["assay_00"])
    assert orders.tolist() == [0.0, 1.0, 2.0, np.inf]
    assert graph_order(_affinity(), ["assay_00"], min_affinity=0.5).tolist() == [0.0, 1.0, np.inf, np.inf]


def test_task_groups_known_answer():
    adata = ht.datasets.synthetic_hci(n_compounds=20, n_assays=4, n_primary=1, seed=0)
    auroc = pd.Series({"assay_01": 0.66, "assay_02": 0.72, "assay_03": 0.80})
    groups = ht.tl.task_groups(
        adata,
        auroc=auroc,
        affinity=_affinity(),
        primary_assays=["assay_00"],
        thresholds=(0.65, 0.70),
        orders=(1, 2),
    )
    assert groups["vanilla"] == ["assay_00"]
    assert groups["basic (0.65)"] == NAMES
    assert groups["basic (0.7)"] == ["assay_00", "assay_02", "assay_03"]
    assert groups["order 1 (0.65)"] == ["assay_00", "assay_01"]
    assert groups["order 1 (0.7)"] == ["assay_00"]
    assert groups["order 2 (0.7)"] == ["assay_00", "assay_02"]
    assert groups["superset"] == NAMES
    with pytest.raises(ValueError, match="primary_assays"):
        ht.tl.task_groups(adata, auroc=auroc, affinity=_affinity())
    with pytest.raises(ValueError, match="auroc"):
        ht.tl.task_groups(adata)
    bad = _affinity()
    bad.iloc[0, 1] = 0.1
    with pytest.raises(ValueError, match="symmetric"):
        ht.tl.task_groups(adata, auroc=auroc, affinity=bad, primary_assays=["assay_00"])


def _screen():
    adata = ht.datasets.synthetic_hci(
        n_compounds=90,
        n_assays=4,
        n_plates=3,
        n_primary=1,
        n_features=8,
        label_density=0.5,
        n_unrelated=0,
        seed=4,
    )
    ht.pp.split_compounds(adata, method="random", n_folds=3, seed=0)
    return adata


SELECT = dict(
    primary_assays=["assay_00"], affinity=_affinity(), order=2, model_kwargs={"n_hidden": 8, "n_head_hidden": 8},
    max_epochs=4, warmup_epochs=0, lr=3e-3, progress=False,
)  # fmt: skip


@pytest.mark.slow
def test_select_assays_steps_and_test_fold_unread():
    adata = _screen()
    kept = ht.tl.select_assays(adata, th_perf=0.5, th_inf=0.0, **SELECT)
    res = adata.uns["select_assays"]
    table = res["table"].set_index("assay")
    assert list(table.index) == ["assay_01", "assay_02", "assay_03"]  # one row per secondary
    assert {
        "order",
        "affinity",
        "similar",
        "validation_auroc",
        "performant",
        "influence_assay_00",
        "kept",
        "reason",
    } <= set(table.columns)
    # step 1 drops the isolated assay without training it
    assert not table.loc["assay_03", "similar"] and np.isnan(table.loc["assay_03", "validation_auroc"])
    assert "graph order" in table.loc["assay_03", "reason"]
    assert table.loc[["assay_01", "assay_02"], "validation_auroc"].between(0, 1).all()
    # step 2 is the threshold on the validation AUROC; step 3 (th_inf = 0) keeps every one with an influence
    np.testing.assert_array_equal(table["performant"], table["validation_auroc"] >= 0.5)
    expected = [
        a
        for a in ["assay_01", "assay_02"]
        if table.loc[a, "performant"] and np.isfinite(table.loc[a, "influence_assay_00"])
    ]
    assert kept == expected and res["selected"] == kept
    assert np.isfinite(res["self_influence"]["assay_00"])
    for a in ["assay_01", "assay_02"]:
        if not table.loc[a, "performant"]:
            assert "validation AUROC" in table.loc[a, "reason"] and np.isnan(
                table.loc[a, "influence_assay_00"]
            )
    np.testing.assert_array_equal(
        table["kept"], table["similar"] & table["performant"] & table["influential"]
    )
    # poisoning the test fold (labels flipped, features scrambled) changes nothing
    poisoned = _screen()
    test = (poisoned.obs["fold"] == 0).to_numpy()
    lab = poisoned.obsm["assays"]
    lab.loc[test] = 1.0 - lab.loc[test]
    poisoned.X[test] = np.random.default_rng(0).normal(size=(int(test.sum()), poisoned.n_vars)) * 50
    ht.tl.select_assays(poisoned, th_perf=0.5, th_inf=0.0, **SELECT)
    pd.testing.assert_frame_equal(res["table"], poisoned.uns["select_assays"]["table"])
    # groups from the stored table
    groups = ht.tl.task_groups(adata, thresholds=(0.5,), orders=())
    assert groups["basic (0.5)"] == [
        "assay_00",
        *[a for a in ["assay_01", "assay_02"] if table.loc[a, "performant"]],
    ]


def test_select_assays_bad_input_changes_nothing():
    adata = _screen()
    before = set(adata.uns)
    with pytest.raises(ValueError, match="primary_assays"):
        ht.tl.select_assays(adata, primary_assays=["nope"])
    with pytest.raises(TypeError, match="affinity"):
        ht.tl.select_assays(adata, primary_assays=["assay_00"], affinity=np.eye(4))
    with pytest.raises(ValueError, match="test_fold"):
        ht.tl.select_assays(adata, primary_assays=["assay_00"], test_fold=7)
    with pytest.raises(TypeError, match="validation_key"):
        ht.tl.select_assays(adata, primary_assays=["assay_00"], validation_key="fold")
    assert set(adata.uns) == before


def test_synthetic_truth_related_assays_and_affinity():
    adata = ht.datasets.synthetic_hci(n_compounds=30, n_assays=6, n_primary=2, seed=0)
    meta = adata.uns["synthetic_hci"]
    truth, observed = adata.obsm["assays_true"], adata.obsm["assays"]
    seen = observed.notna().to_numpy()
    np.testing.assert_array_equal(truth.to_numpy()[seen], observed.to_numpy()[seen])  # the truth agrees
    treated = ~adata.obs["is_control"].to_numpy()
    assert truth[treated].notna().all().all() and truth[~treated].isna().all().all()
    aff = meta["assay_affinity"]
    np.testing.assert_allclose(aff.to_numpy(), aff.to_numpy().T)
    mech = {a: set(m) for a, m in meta["assay_mechanisms"].items()}
    for p, related in meta["related_assays"].items():
        for s in aff.index:
            shares = bool(mech[p] & mech[s]) and s not in meta["primary_assays"]
            assert (s in related) == shares and (aff.loc[p, s] > 0) == bool(mech[p] & mech[s])
    # the additions draw nothing: the same seed gives the same screen (checked against main by hand, too)
    again = ht.datasets.synthetic_hci(n_compounds=30, n_assays=6, n_primary=2, seed=0)
    np.testing.assert_array_equal(again.X, adata.X)
