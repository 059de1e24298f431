import numpy as np
import pandas as pd
import pytest

import hcitools as ht


@pytest.fixture(scope="module")
def screen_and_wells():
    adata = ht.datasets.synthetic_hci(n_compounds=30, n_plates=3, n_features=16, effect_size=6.0, seed=0)
    ht.pp.normalize_plates(adata)
    return adata, ht.pp.aggregate(adata, by="well")


def test_phenotypic_activity_synthetic(screen_and_wells):
    adata, wells = screen_and_wells
    wells = wells.copy()
    assert ht.tl.phenotypic_activity(wells, null_size=1000, seed=0) is None  # inplace: writes, returns None
    res = wells.uns["phenotypic_activity"]["per_compound"]
    assert len(res) == 30
    assert wells.uns["phenotypic_activity"]["summary"]["n_compounds"] == 30
    active = adata.uns["synthetic_hci"]["mechanisms"].iloc[:, :8].any(axis=1)
    # compounds with a morphological mechanism are retrieved better than inert ones
    assert (
        res.loc[active[active].index, "mean_average_precision"].mean()
        > res.loc[active[~active].index, "mean_average_precision"].mean()
    )
    with pytest.raises(ValueError, match="exists already"):
        ht.tl.phenotypic_activity(wells, null_size=100)


def test_inplace_false_and_copy(screen_and_wells):
    _, wells = screen_and_wells
    wells = wells.copy()
    table = ht.tl.phenotypic_activity(wells, null_size=200, seed=1, inplace=False)
    assert isinstance(table, pd.DataFrame) and "phenotypic_activity" not in wells.uns  # nothing written
    out = ht.tl.phenotypic_activity(wells, null_size=200, seed=1, copy=True, key_added="pa")
    assert "pa" not in wells.uns  # the copy holds the results, the input does not
    pd.testing.assert_frame_equal(out.uns["pa"]["per_compound"], table)
    with pytest.raises(ValueError, match=r"copy=True.*inplace=False"):
        ht.tl.phenotypic_activity(wells, copy=True, inplace=False)


def test_refuses_crop_level_data(screen_and_wells):
    adata, _ = screen_and_wells
    crops = adata.copy()
    with pytest.raises(ValueError, match=r"defined on wells.*bag_key.*ht\.pp\.aggregate\(adata, by='well'\)"):
        ht.tl.phenotypic_activity(crops, null_size=100)
    assert "phenotypic_activity" not in crops.uns
    with pytest.raises(KeyError, match="bag_key"):
        ht.tl.phenotypic_activity(crops, bag_key="no_such_column", null_size=100)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"null_size": 0}, "null_size"),
        ({"threshold": 1.5}, "threshold"),
        ({"control_value": "dmso"}, "control"),
    ],
)
def test_bad_arguments(screen_and_wells, kwargs, match):
    _, wells = screen_and_wells
    wells = wells.copy()
    with pytest.raises(ValueError, match=match):
        ht.tl.phenotypic_activity(wells, **kwargs)
    assert "phenotypic_activity" not in wells.uns


def test_sparse_profiles(screen_and_wells):
    from scipy import sparse

    _, wells = screen_and_wells
    dense = ht.tl.phenotypic_activity(wells, null_size=200, seed=0, inplace=False)
    sp = wells.copy()
    sp.X = sparse.csr_matrix(np.asarray(sp.X))
    pd.testing.assert_frame_equal(ht.tl.phenotypic_activity(sp, null_size=200, seed=0, inplace=False), dense)
