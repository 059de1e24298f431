import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import hcitools as ht


def _evaluation(method, seed):
    rng = np.random.default_rng(seed)
    assays = [f"assay_{i}" for i in range(5)]
    table = pd.DataFrame(
        {"assay": [*assays, "macro mean"], "auroc": rng.uniform(0.5, 1, 6), "n_pos": 5, "n_neg": 20}
    )
    base = table.assign(method="bag_size", auroc=0.5)
    return pd.concat([table.assign(method=method), base], ignore_index=True)


def test_gate_weights_plot():
    adata = ht.datasets.synthetic_hci(n_compounds=30, n_assays=3, n_primary=2, n_features=8, seed=0)
    ht.model.M4.setup_anndata(adata, group_key="compound")
    model = ht.model.M4(adata, n_experts=3, n_hidden=8, n_attention=4, n_gate_hidden=8, n_tower_hidden=4)
    model.train(max_epochs=1, warmup_epochs=0, enable_progress_bar=False)
    ax = ht.pl.gate_weights(model)
    assert isinstance(ax, plt.Axes)
    assert ax.images[0].get_array().shape == (3, 3)
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()).sum(1), 1.0, atol=1e-5)
    fig = ht.pl.gate_weights(model, return_fig=True)
    assert isinstance(fig, plt.Figure)
    with pytest.raises(TypeError, match="M4"):
        ht.pl.gate_weights(object())
    plt.close("all")


def test_assay_radar():
    tidy = pd.concat([_evaluation("m4", 0), _evaluation("momil", 1)], ignore_index=True)
    tidy = tidy[~((tidy["method"] == "bag_size") & tidy.duplicated(["assay", "method"]))]
    ax = ht.pl.assay_radar(tidy, methods=["m4", "momil"])
    assert ax.name == "polar" and len(ax.get_xticks()) == 5  # the summary row is not a spoke
    assert len(ax.get_legend().get_texts()) == 2
    fig = ht.pl.assay_radar(
        {"M4": _evaluation("m4", 0), "MoMIL": {"evaluation": _evaluation("momil", 1)}}, return_fig=True
    )
    assert isinstance(fig, plt.Figure)
    wide = pd.DataFrame({"a": [0.6, 0.7, 0.8], "b": [0.7, 0.7, 0.7]}, index=["x", "y", "z"])
    assert isinstance(ht.pl.assay_radar(wide), plt.Axes)
    with pytest.raises(ValueError, match="at least 3"):
        ht.pl.assay_radar(wide.iloc[:2])
    with pytest.raises(ValueError, match="polar"):
        ht.pl.assay_radar(wide, ax=plt.subplots()[1])
    with pytest.raises(ValueError, match="methods"):
        ht.pl.assay_radar(wide, methods=["c"])
    plt.close("all")
