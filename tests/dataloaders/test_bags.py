"""Property tests of bag data, the whole-bag collate and the bag-level splitter over random layouts."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import hcitools as ht
from hcitools.dataloaders import BagCollator, BagData, BagDataSplitter, bag_loader

N_TASKS = 3


@st.composite
def layouts(draw, max_groups=12):
    """A random screen: groups (compounds) of 1–4 bags of 1–6 instances, labels per group (some groups fully
    unlabelled, others sparse), instance rows in random order. Returns a dict of per-instance arrays."""
    n_groups = draw(st.integers(1, max_groups))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    bags_per_group = rng.integers(1, 5, size=n_groups)
    sparsity = draw(st.floats(0.0, 0.9))
    unlabelled_groups = draw(st.floats(0.0, 0.6))
    group_labels = rng.integers(0, 2, size=(n_groups, N_TASKS)).astype(np.float32)
    group_labels[rng.random((n_groups, N_TASKS)) < sparsity] = np.nan
    group_labels[rng.random(n_groups) < unlabelled_groups] = np.nan
    if np.isnan(group_labels).all():  # at least one labelled group
        group_labels[rng.integers(n_groups), rng.integers(N_TASKS)] = 1.0
    bag_group = np.repeat(np.arange(n_groups), bags_per_group)
    n_bags = len(bag_group)
    bag_sizes = rng.integers(1, 7, size=n_bags)
    bag_ids = np.array([f"w{b:03d}" for b in rng.permutation(n_bags)])  # ids in no particular order
    inst_bag = np.repeat(np.arange(n_bags), bag_sizes)
    perm = rng.permutation(len(inst_bag))  # a bag's instances need not be contiguous
    inst_bag = inst_bag[perm]
    n = len(inst_bag)
    X = np.column_stack([np.arange(n), rng.normal(size=(n, 3))]).astype(np.float32)  # column 0: row id
    return {
        "X": X,
        "bags": bag_ids[inst_bag],
        "groups": np.array([f"c{g}" for g in bag_group])[inst_bag],
        "labels": group_labels[bag_group][inst_bag],
        "fold": (rng.integers(0, 3, size=n_bags))[inst_bag],
        "seed": seed,
    }


def _labelled_bags(lay) -> set[str]:
    observed = ~np.isnan(lay["labels"]).all(axis=1)
    return set(lay["bags"][observed])


def _bag_data(lay, groups=True) -> BagData:
    return BagData.from_arrays(
        lay["X"], lay["bags"], lay["labels"], N_TASKS, lay["groups"] if groups else None
    )


def _check_partition(splitter: BagDataSplitter, lay, groups: bool) -> None:
    data = splitter.data
    train, val = splitter.train_idx, splitter.val_idx
    assert len(np.unique(train)) == len(train) and len(np.unique(val)) == len(val)  # no bag twice
    assert not set(train) & set(val)
    assert set(data.bag_names[np.concatenate([train, val])]) == _labelled_bags(lay)
    assert splitter.n_train == len(train) and splitter.n_val == len(val)
    if groups:
        assert not set(data.groups[train]) & set(data.groups[val])  # no compound on both sides
        # each bag carries its own group
        group_of = dict(zip(lay["bags"], lay["groups"], strict=True))
        assert all(group_of[name] == g for name, g in zip(data.bag_names, data.groups, strict=True))


@settings(max_examples=40, deadline=None)
@given(layouts(), st.floats(0.0, 0.9), st.integers(0, 10_000), st.booleans())
def test_random_split_is_a_partition_of_labelled_bags_by_group_and_deterministic(
    lay, validation_size, seed, groups
):
    data = _bag_data(lay, groups)
    try:
        splitter = BagDataSplitter(data, validation_size=validation_size, seed=seed, batch_size=4)
    except ValueError as err:  # every labelled bag fell into validation
        assert "No labelled training bags" in str(err)
        assert validation_size > 0
        return
    _check_partition(splitter, lay, groups)
    again = BagDataSplitter(_bag_data(lay, groups), validation_size=validation_size, seed=seed, batch_size=4)
    np.testing.assert_array_equal(again.train_idx, splitter.train_idx)
    np.testing.assert_array_equal(again.val_idx, splitter.val_idx)
    if validation_size == 0:
        assert splitter.n_val == 0
    # the training loader serves exactly the training bags, the validation loader the validation bags
    served = np.concatenate([b["bag_index"].numpy() for b in splitter.train_dataloader()])
    assert sorted(served) == sorted(splitter.train_idx)
    if splitter.n_val:
        served = np.concatenate([b["bag_index"].numpy() for b in splitter.val_dataloader()])
        assert sorted(served) == sorted(splitter.val_idx)


def _anndata(lay) -> ad.AnnData:
    n = len(lay["X"])
    obs = pd.DataFrame(
        {"well": lay["bags"], "compound": lay["groups"], "fold": lay["fold"]},
        index=[f"i{k}" for k in range(n)],
    )
    adata = ad.AnnData(lay["X"], obs=obs)
    adata.obsm["assays"] = pd.DataFrame(
        lay["labels"].astype(np.float64), index=obs.index, columns=[f"a{t}" for t in range(N_TASKS)]
    )
    return adata


def _make_learnable(lay) -> None:
    """setup_anndata needs both classes of every assay among the bags: make group labels of the first two
    labelled groups 0 and 1 on every assay."""
    first = list(dict.fromkeys(lay["groups"][~np.isnan(lay["labels"]).all(axis=1)]))
    rows0 = lay["groups"] == first[0]
    lay["labels"][rows0] = 0.0
    if len(first) > 1:
        lay["labels"][lay["groups"] == first[1]] = 1.0
    else:  # one labelled group: label a fully unlabelled or new group 1
        other = next(g for g in dict.fromkeys(lay["groups"]) if g != first[0])
        lay["labels"][lay["groups"] == other] = 1.0


@settings(max_examples=30, deadline=None)
@given(
    layouts().filter(lambda lay: len(np.unique(lay["groups"])) >= 2),
    st.sets(st.integers(0, 2), min_size=1, max_size=2),
    st.integers(0, 10_000),
)
def test_validation_from_column_holds_exactly_the_labelled_bags_with_those_values(lay, values, seed):
    _make_learnable(lay)
    adata = _anndata(lay)
    ht.model.MoMIL.setup_anndata(adata, bag_key="well", labels_key="assays", group_key="compound")
    manager = ht.model.MoMIL._get_most_recent_anndata_manager(adata, required=True)
    values = sorted(values)
    bag_fold = dict(zip(lay["bags"], lay["fold"], strict=True))
    labelled = _labelled_bags(lay)
    expected_val = {b for b in labelled if bag_fold[b] in values}
    expected_train = labelled - expected_val
    any_value = any(f in values for f in bag_fold.values())
    kwargs = {"validation_key": "fold", "validation_values": values, "seed": seed, "batch_size": 3}
    if not any_value:
        with pytest.raises(ValueError, match="No bag"):
            BagDataSplitter(manager, **kwargs)
        return
    if not expected_train:
        with pytest.raises(ValueError, match="No labelled training bags"):
            BagDataSplitter(manager, **kwargs)
        return
    splitter = BagDataSplitter(manager, **kwargs)
    names = splitter.data.bag_names
    assert set(names[splitter.val_idx]) == expected_val
    assert set(names[splitter.train_idx]) == expected_train
    assert not set(splitter.train_idx) & set(splitter.val_idx)
    # bags sorted by id (from the manager), labels follow their bag
    assert list(names) == sorted(names)
    lab = pd.DataFrame(lay["labels"]).groupby(lay["bags"]).first().loc[names].to_numpy()
    np.testing.assert_array_equal(splitter.data.labels.numpy(), lab)


def test_validation_values_must_be_constant_within_bags():
    rng = np.random.default_rng(0)
    n = 12
    lay = {
        "X": rng.normal(size=(n, 4)).astype(np.float32),
        "bags": np.repeat(["w0", "w1", "w2", "w3"], 3),
        "groups": np.repeat(["c0", "c1"], 6),
        "labels": np.repeat(np.array([[0, 1, 0], [1, 0, 1]], np.float32), 6, axis=0),
        "fold": np.array([0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 2]),  # w3 straddles folds 1 and 2
    }
    adata = _anndata(lay)
    ht.model.MoMIL.setup_anndata(adata, group_key="compound")
    manager = ht.model.MoMIL._get_most_recent_anndata_manager(adata, required=True)
    with pytest.raises(ValueError, match="fold"):
        BagDataSplitter(manager, validation_key="fold", validation_values=[1])


# ---------------------------------------------------------------------------------------------- collate
def _source_rows(lay, data: BagData) -> dict[int, set[int]]:
    """For each bag index of ``data``, the set of row ids (X column 0) of its instances in the source."""
    ids = lay["X"][:, 0].astype(int)
    return {b: set(ids[lay["bags"] == name]) for b, name in enumerate(data.bag_names)}


@settings(max_examples=40, deadline=None)
@given(layouts(), st.integers(1, 7), st.booleans(), st.integers(0, 1000))
def test_collate_keeps_every_instance_exactly_once(lay, batch_size, shuffle, seed):
    data = _bag_data(lay)
    rows = _source_rows(lay, data)
    rng = np.random.default_rng(seed)
    bags = rng.permutation(data.n_bags)[: rng.integers(1, data.n_bags + 1)]  # a random subset, any order
    loader = bag_loader(data, bags, batch_size=batch_size, shuffle=shuffle, seed=seed)
    batches = list(loader)
    assert len(batches) == -(-len(bags) // batch_size)  # batch_size counts bags
    served = []
    for batch in batches:
        X, mask, idx = batch["X"], batch["mask"], batch["bag_index"].numpy()
        assert 1 <= len(idx) <= batch_size and X.shape[:2] == mask.shape and X.shape[0] == len(idx)
        assert X.shape[1] == data.sizes[idx].max()  # padded to the largest bag of the batch, no further
        np.testing.assert_array_equal(mask.sum(1).numpy(), data.sizes[idx])
        assert torch.all(X[~mask] == 0)  # padding is zeros
        for r, b in enumerate(idx):
            real = X[r][mask[r]][:, 0].numpy().astype(int)
            assert len(real) == len(set(real)) and set(real) == rows[b]  # each instance once, none dropped
            # the rest of each row is the source instance itself (not interpolated)
            np.testing.assert_array_equal(X[r][mask[r]].numpy(), lay["X"][real])
            np.testing.assert_array_equal(
                batch["labels"][r].numpy(), lay["labels"][lay["bags"] == data.bag_names[b]][0]
            )
        served.extend(idx)
    if shuffle:
        assert sorted(served) == sorted(bags)
    else:
        assert served == list(bags)


@settings(max_examples=30, deadline=None)
@given(layouts(), st.integers(1, 4), st.integers(0, 1000))
def test_subsampling_collate_draws_distinct_instances_of_the_bag(lay, max_instances, seed):
    data = _bag_data(lay)
    rows = _source_rows(lay, data)
    collate = BagCollator(data, max_instances=max_instances, seed=seed)
    idx = list(range(data.n_bags))
    batch = collate(idx)
    X, mask = batch["X"], batch["mask"]
    np.testing.assert_array_equal(mask.sum(1).numpy(), np.minimum(data.sizes, max_instances))
    for b in idx:
        real = X[b][mask[b]][:, 0].numpy().astype(int)
        assert len(real) == len(set(real)) and set(real) <= rows[b]


@settings(max_examples=30, deadline=None)
@given(layouts(), st.integers(1, 5), st.integers(0, 1000))
def test_size_grouped_loader_serves_every_bag_once_per_epoch(lay, batch_size, seed):
    data = _bag_data(lay)
    bags = np.arange(data.n_bags)
    loader = bag_loader(data, bags, batch_size=batch_size, shuffle=True, seed=seed, group_by_size=True)
    for _ in range(2):
        served = np.concatenate([b["bag_index"].numpy() for b in loader])
        assert sorted(served) == list(bags)
