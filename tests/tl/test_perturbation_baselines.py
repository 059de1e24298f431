import importlib.util

import numpy as np
import pytest

import hcitools as ht
from hcitools._testing import assert_unchanged, snapshot


@pytest.fixture(scope="module")
def kang(data_root):
    return ht.datasets.kang2018(data_root)


def test_identity_and_mean_shift(kang):
    ident = ht.tl.predict_baseline(kang, method="identity", target="NK")
    ctrl = kang[(kang.obs["cell_type"] == "NK").to_numpy() & (kang.obs["condition"] == "control").to_numpy()]
    np.testing.assert_array_equal(ident.X, ctrl.X.toarray())
    shift = ht.tl.predict_baseline(kang, method="mean_shift", target="NK")
    isg15 = list(kang.var_names).index("ISG15")
    assert shift.X[:, isg15].mean() > ident.X[:, isg15].mean() + 1.0  # IFN-β induces ISG15 in every cell type
    with pytest.raises(ValueError, match="method"):
        ht.tl.predict_baseline(kang, method="linear", target="NK")


def test_scgen_runs_or_says_why(kang):
    small = kang[:, :300].copy()
    if importlib.util.find_spec("jax") is None:
        with pytest.raises(ImportError, match=r"needs JAX.*pertpy\[jax\]"):
            ht.tl.predict_baseline(small, method="scgen", target="NK", max_epochs=1)
    else:
        pred = ht.tl.predict_baseline(small, method="scgen", target="NK", max_epochs=2, seed=0)
        assert pred.n_vars == 300 and pred.uns["baseline"]["method"] == "scgen"
        assert np.isfinite(pred.X).all()


# ------------------------------------------------------------------------------------------------- bad input (issue 11)
def _synthetic():
    return ht.datasets.synthetic_perturbation(
        n_cell_types=2, n_cells=12, n_genes=20, n_response_genes=4, doses=(10.0,), seed=0
    )


def _snapshot(adata):
    return snapshot(adata)


def _assert_unchanged(adata, snap):
    assert_unchanged(snap, adata)


_SPLIT_CASES = [
    ({"target": "type_9"}, ValueError, r"`target` 'type_9'.*type_0"),
    ({"target": ["type_0"]}, ValueError, "target"),
    ({"cell_type_key": "celltype"}, KeyError, "cell_type_key"),
    ({"cell_type_key": 1}, TypeError, "cell_type_key"),
    ({"condition_key": "treatment"}, KeyError, "condition_key"),
    ({"control_value": "Control"}, ValueError, "control_value"),
    ({"control_value": ["control"]}, TypeError, "control_value"),
    ({"condition": "stimulated"}, ValueError, r"`condition` 'stimulated'.*drug_10"),
    ({"condition": ["drug_10"]}, TypeError, "condition"),
    ({"train_on_target_control": "yes"}, TypeError, "train_on_target_control"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), _SPLIT_CASES)
def test_split_ood_bad_input(kwargs, error, match):
    adata = _synthetic()
    snap = _snapshot(adata)
    with pytest.raises(error, match=match):
        ht.tl.split_ood(adata, **{"target": "type_0", **kwargs})
    _assert_unchanged(adata, snap)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        *[case for case in _SPLIT_CASES if "train_on_target_control" not in case[0]],
        ({"method": "linear"}, ValueError, "method"),
        ({"seed": "0"}, TypeError, "seed"),
        ({"seed": -1}, ValueError, "seed"),
        ({"max_epochs": 0}, ValueError, "max_epochs"),
        ({"batch_size": 2.0}, TypeError, "batch_size"),
    ],
)
def test_predict_baseline_bad_input(kwargs, error, match):
    adata = _synthetic()
    snap = _snapshot(adata)
    with pytest.raises(error, match=match):
        ht.tl.predict_baseline(adata, **{"method": "identity", "target": "type_0", **kwargs})
    _assert_unchanged(adata, snap)


def test_split_ood_not_an_anndata():
    with pytest.raises(TypeError, match="adata"):
        ht.tl.split_ood(np.zeros((3, 3)), target="type_0")
