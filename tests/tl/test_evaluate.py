import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from hcitools.tl import evaluate_assays


def test_evaluate_assays():
    rng = np.random.default_rng(0)
    idx = [f"c{i}" for i in range(50)]
    y = pd.DataFrame({"a": rng.integers(0, 2, 50).astype(float), "b": 0.0, "c": np.nan}, index=idx)
    y.iloc[:10, 0] = np.nan
    p = pd.DataFrame(rng.random((50, 3)), index=idx, columns=["a", "b", "c"])
    res = evaluate_assays(p, y)
    m = y["a"].notna()
    assert res.loc["a", "auroc"] == roc_auc_score(y.loc[m, "a"], p.loc[m, "a"])
    assert np.isnan(res.loc["b", "auroc"]) and res.loc["b", "n_neg"] == 50
    assert res.loc["c", "n_pos"] == 0
    assert res.loc["macro mean", "auroc"] == res.loc["a", "auroc"]
    # rows are aligned by index, not position
    shuffled = evaluate_assays(p.iloc[::-1], y)
    assert shuffled.loc["a", "auroc"] == res.loc["a", "auroc"]


def test_evaluate_assays_warns_once_on_small_classes():
    import warnings

    import pytest

    rng = np.random.default_rng(0)
    idx = [f"c{i}" for i in range(40)]
    y = pd.DataFrame({"big": np.tile([1.0, 0.0], 20), "tiny": [1.0, 1.0] + [0.0] * 38}, index=idx)
    pred = pd.DataFrame(rng.random((40, 2)), index=idx, columns=["big", "tiny"])
    with pytest.warns(UserWarning, match=r"1 assays have fewer than 5 .*'tiny' \(2 pos / 38 neg\)") as record:
        evaluate_assays(pred, y)
    assert len(record) == 1 and record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate_assays(pred, y, assays=["big"])


def test_evaluate_assays_refuses_disjoint_assays_and_non_binary_labels():
    import pytest

    idx = ["c1", "c2"]
    pred = pd.DataFrame({"a": [0.1, 0.9]}, index=idx)
    with pytest.raises(ValueError, match=r"share no assay.*`predictions` has 'a'.*`labels` has 'b'"):
        evaluate_assays(pred, pd.DataFrame({"b": [0.0, 1.0]}, index=idx))
    with pytest.raises(ValueError, match=r"`labels` must hold 1 \(active\), 0 \(inactive\) or NaN.*'a'"):
        evaluate_assays(pred, pd.DataFrame({"a": [0.0, 3.0]}, index=idx))
