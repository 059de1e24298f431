import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import hcitools as ht


def _imputation_table():
    rows = []
    for fold in (0, 1):
        for r in (1, 2):
            for a in ("assay_00", "assay_01"):
                rows.append({"round": r, "assay": a, "th_pos": 0.9, "th_neg": 0.1, "n_added_pos": 3, "n_added_neg": 5,
                             "n_added": 8, "n_correct_added": 7, "test_fold": fold})  # fmt: skip
    return pd.DataFrame(rows)


def test_imputation_plot_return_types():
    adata = AnnData(np.zeros((2, 1)))
    adata.uns["momil"] = {"imputation": _imputation_table()}
    axes = ht.pl.imputation(adata, key="momil")
    assert len(axes) == 2 and all(isinstance(ax, plt.Axes) for ax in axes)
    fig = ht.pl.imputation(_imputation_table(), return_fig=True)
    assert isinstance(fig, plt.Figure)
    with pytest.raises(KeyError, match="key"):
        ht.pl.imputation(adata)
    with pytest.raises(ValueError, match="ax"):
        ht.pl.imputation(adata, key="momil", ax=axes[0])
    plt.close("all")


def test_assay_selection_plot_return_types():
    table = pd.DataFrame(
        {"assay": ["a1", "a2", "a3"], "validation_auroc": [0.8, 0.6, np.nan], "similar": [True, True, False],
         "performant": [True, False, False], "influence_p": [0.7, np.nan, np.nan], "kept": [True, False, False]}
    )  # fmt: skip
    adata = AnnData(np.zeros((2, 1)))
    adata.uns["select_assays"] = {"table": table, "self_influence": pd.Series({"p": 0.75}),
                                  "params": {"th_perf": 0.7, "th_inf": 0.9}}  # fmt: skip
    assert isinstance(ht.pl.assay_selection(adata), plt.Axes)
    assert isinstance(ht.pl.assay_selection(table, return_fig=True), plt.Figure)
    _, ax = plt.subplots()
    assert ht.pl.assay_selection(adata, ax=ax) is ax
    with pytest.raises(ValueError, match="empty"):
        ht.pl.assay_selection(table.iloc[:0])
    plt.close("all")
