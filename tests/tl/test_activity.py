import pytest

import hcitools as ht


def test_phenotypic_activity_synthetic():
    adata = ht.datasets.synthetic_hci(n_compounds=30, n_plates=3, n_features=16, effect_size=6.0, seed=0)
    ht.pp.normalize_plates(adata)
    wells = ht.pp.aggregate(adata, by="well")
    res = ht.tl.phenotypic_activity(wells, null_size=1000, seed=0)
    assert len(res) == 30
    active = adata.uns["synthetic_hci"]["mechanisms"].iloc[:, :8].any(axis=1)
    # compounds with a morphological mechanism are retrieved better than inert ones
    assert (
        res.loc[active[active].index, "mean_average_precision"].mean()
        > res.loc[active[~active].index, "mean_average_precision"].mean()
    )
    with pytest.raises(ValueError, match="exists already"):
        ht.tl.phenotypic_activity(wells, null_size=100)
