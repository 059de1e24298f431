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
