"""Invariants of ``ht.pp.split_compounds`` over random screen layouts (plain parametrised random layouts)."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import hcitools as ht


def _layout(seed: int) -> ad.AnnData:
    """A random screen: 5–60 compounds with random ids in 1–20 groups, 1–4 rows each, controls, shuffled rows."""
    rng = np.random.default_rng(seed)
    n_cpd = int(rng.integers(5, 61))
    n_groups = int(rng.integers(1, 21))
    names = [f"{rng.choice(list('abcxyz'))}{rng.integers(10**6)}_{i}" for i in range(n_cpd)]
    group = {c: f"g{rng.integers(n_groups)}" for c in names}
    rows = [c for c in names for _ in range(int(rng.integers(1, 5)))]
    rows += ["DMSO"] * int(rng.integers(1, 10))
    rng.shuffle(rows)
    obs = pd.DataFrame(
        {"compound": rows, "scaffold": [group.get(c, "none") for c in rows]},
        index=[f"r{i}" for i in range(len(rows))],
    )
    obs["compound"] = obs["compound"].astype("category")
    return ad.AnnData(np.zeros((len(obs), 1), np.float32), obs=obs)


def _fold_of_compound(adata: ad.AnnData, key: str = "fold") -> pd.Series:
    by = adata.obs["compound"].astype(str).to_numpy()
    return adata.obs[key].groupby(by).first().sort_index()


@pytest.mark.parametrize("layout", range(12))
@pytest.mark.parametrize("method", ["group", "random"])
def test_split_invariants(layout, method):
    adata = _layout(layout)
    treated = adata.obs["compound"] != "DMSO"
    n_cpd = adata.obs.loc[treated, "compound"].nunique()
    n_groups = adata.obs.loc[treated, "scaffold"].nunique()
    n_folds = 3 if layout % 2 else 5
    kwargs = {"method": method, "n_folds": n_folds, "group_key": "scaffold" if method == "group" else None}
    if (method == "group" and n_groups < n_folds) or n_cpd < n_folds:
        with pytest.raises(ValueError, match="cannot fill"):
            ht.pp.split_compounds(adata, seed=0, **kwargs)
        assert "fold" not in adata.obs and "fold" not in adata.uns  # nothing written
        return
    ht.pp.split_compounds(adata, seed=layout, **kwargs)
    folds = adata.obs["fold"]
    # controls are in no fold; the folds partition the other compounds (every fold holds some)
    assert (folds[~treated] == -1).all()
    assert set(folds[treated]) == set(range(n_folds))
    ht.pp.check_folds(adata)  # no compound on two folds
    if method == "group":
        assert adata.obs[treated].groupby("scaffold")["fold"].nunique().max() == 1  # no group on two folds
    per_fold = adata.uns["fold"]["compounds_per_fold"]
    assert per_fold.sum() == n_cpd
    if method == "random":
        assert per_fold.max() - per_fold.min() <= 1
    else:  # greedy largest-first balancing: the spread never exceeds the largest group
        largest = adata.obs[treated].groupby("scaffold")["compound"].nunique().max()
        assert per_fold.max() - per_fold.min() <= largest
    # deterministic per seed, and independent of row order and of the category order of the compound column
    again = ht.pp.split_compounds(adata, seed=layout, key_added="again", copy=True, **kwargs)
    np.testing.assert_array_equal(again.obs["again"], folds)
    perm = np.random.default_rng(99).permutation(adata.n_obs)
    shuffled = adata[perm].copy()
    shuffled.obs["compound"] = shuffled.obs["compound"].cat.reorder_categories(
        shuffled.obs["compound"].cat.categories[::-1]
    )
    ht.pp.split_compounds(shuffled, seed=layout, key_added="shuffled", **kwargs)
    pd.testing.assert_series_equal(
        _fold_of_compound(shuffled, "shuffled"), _fold_of_compound(adata), check_names=False
    )


def test_seed_changes_folds():
    adata = _layout(3)
    seen = {
        tuple(ht.pp.split_compounds(adata, method="random", seed=s, copy=True).obs["fold"]) for s in range(5)
    }
    assert len(seen) > 1


def test_group_must_be_constant_within_compound():
    adata = _layout(2)
    cpd = adata.obs["compound"].astype(str)
    first = cpd[cpd != "DMSO"].iloc[0]
    rows = np.flatnonzero(cpd == first)
    scaffold = adata.obs["scaffold"].astype(str).to_numpy()
    scaffold[rows[0]] = "another_group"
    adata.obs["scaffold"] = scaffold
    if len(rows) < 2:
        adata = ad.concat([adata, adata[rows]], index_unique="-")  # give it a second row with the old group
    with pytest.raises(ValueError, match=r"scaffold.*group_key.*varies within the compounds"):
        ht.pp.split_compounds(adata, method="group", group_key="scaffold", n_folds=3)
    assert "fold" not in adata.obs


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_folds": 1}, "n_folds"),
        ({"n_folds": 2.5}, "n_folds"),
        ({"method": "kmeans"}, "method"),
        ({"method": "scaffold"}, "smiles_key"),
        ({"seed": 0.5}, "seed"),
        ({"method": "group", "group_key": "nope"}, "group_key"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    adata = _layout(1)
    before = adata.copy()
    with pytest.raises((ValueError, TypeError, KeyError), match=match):
        ht.pp.split_compounds(adata, **kwargs)
    assert list(adata.obs.columns) == list(before.obs.columns) and "fold" not in adata.uns


def test_split_invariants_property():
    """Property test (hypothesis): any layout of compounds in groups, any seed: a partition of the treated
    compounds, no compound or group on two folds, and the same folds for the same seed whatever the row order."""
    import hypothesis  # in the dev extras

    st = hypothesis.strategies

    @hypothesis.given(
        groups=st.lists(st.integers(0, 7), min_size=5, max_size=40),
        reps=st.lists(st.integers(1, 3), min_size=40, max_size=40),
        n_ctrl=st.integers(0, 5),
        n_folds=st.integers(2, 5),
        seed=st.integers(0, 2**31 - 1),
        order_seed=st.integers(0, 1000),
    )
    @hypothesis.settings(max_examples=60, deadline=None)
    def check(groups, reps, n_ctrl, n_folds, seed, order_seed):
        rows = [(f"c{i}", f"g{g}") for i, g in enumerate(groups) for _ in range(reps[i])]
        rows += [("DMSO", "none")] * n_ctrl
        obs = pd.DataFrame(rows, columns=["compound", "scaffold"])
        obs.index = [f"r{i}" for i in range(len(obs))]
        adata = ad.AnnData(np.zeros((len(obs), 1), np.float32), obs=obs)
        hypothesis.assume(len(set(groups)) >= n_folds)
        kw = {"method": "group", "group_key": "scaffold", "n_folds": n_folds, "seed": seed}
        ht.pp.split_compounds(adata, **kw)
        folds = adata.obs["fold"]
        treated = (adata.obs["compound"] != "DMSO").to_numpy()
        assert (folds[~treated] == -1).all() and set(folds[treated]) == set(range(n_folds))
        assert adata.obs[treated].groupby("compound")["fold"].nunique().max() == 1
        assert adata.obs[treated].groupby("scaffold")["fold"].nunique().max() == 1
        perm = np.random.default_rng(order_seed).permutation(adata.n_obs)
        shuffled = ht.pp.split_compounds(adata[perm].copy(), key_added="again", copy=True, **kw)
        pd.testing.assert_series_equal(
            _fold_of_compound(shuffled, "again"), _fold_of_compound(adata), check_names=False
        )

    check()
