import importlib.util

import numpy as np
import pytest

import hcitools as ht


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
