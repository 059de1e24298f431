"""Plots of perturbation predictions (return types, what is drawn, clear errors)."""

import matplotlib

matplotlib.use("Agg")

import warnings

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

import hcitools as ht


@pytest.fixture(scope="module")
def doses():
    return ht.datasets.synthetic_perturbation(
        n_cell_types=2, n_cells=30, n_genes=60, n_response_genes=10, seed=0
    )


@pytest.fixture(scope="module")
def split(doses):
    adata = doses[doses.obs["condition"].isin(["control", "drug_10"]).to_numpy()].copy()
    _, ctrl, stim = ht.tl.split_ood(
        adata, target=adata.obs["cell_type"].cat.categories[0], condition="drug_10"
    )
    pred = ht.tl.predict_baseline(adata, method="mean_shift", target=adata.obs["cell_type"].cat.categories[0],
                                  condition="drug_10")  # fmt: skip
    return pred, stim, ctrl


def test_perturbation_regression(split):
    pred, stim, ctrl = split
    ax = ht.pl.perturbation_regression(pred, stim, ctrl=ctrl, n_degs=10, n_labels=3)
    assert isinstance(ax, Axes)
    ms, mp = np.asarray(stim.X, dtype=np.float64).mean(0), np.asarray(pred.X, dtype=np.float64).mean(0)
    r2 = np.corrcoef(ms, mp)[0, 1] ** 2
    assert f"R² all genes = {r2:.3f}" in ax.get_title()
    assert "top 10 DEGs" in ax.get_title()
    assert len(ax.texts) == 3  # the labelled DEGs
    np.testing.assert_allclose(ax.collections[0].get_offsets()[:, 0], ms)
    fig = ht.pl.perturbation_regression(pred, stim, genes=[stim.var_names[0]], return_fig=True)
    assert isinstance(fig, Figure)
    assert [t.get_text() for t in fig.axes[0].texts] == [stim.var_names[0]]
    with pytest.raises(ValueError, match="same genes"):
        ht.pl.perturbation_regression(pred[:, :5].copy(), stim)
    with pytest.raises(KeyError, match="argument `genes`"):
        ht.pl.perturbation_regression(pred, stim, genes=["nope"])
    with pytest.raises(TypeError, match="`pred` must be an AnnData"):
        ht.pl.perturbation_regression(np.zeros((2, 2)), stim)


def tidy_results():
    rows = []
    for model, base in (
        ("MTAe", 0.9),
        ("MTVae", 0.8),
        ("identity", 0.5),
        ("mean_shift", 0.7),
        ("ceiling (split half)", 0.97),
    ):
        for ct in ("A", "B"):
            for seed in (1, 2):
                rows.append(
                    {
                        "model": model,
                        "cell_type": ct,
                        "seed": seed,
                        "metric": "r2_all",
                        "value": base + 0.01 * seed,
                    }
                )
                rows.append(
                    {"model": model, "cell_type": ct, "seed": seed, "metric": "euclidean", "value": 1 - base}
                )
                shift = np.nan if model == "identity" else base - 0.2
                rows.append(
                    {"model": model, "cell_type": ct, "seed": seed, "metric": "r2_shift", "value": shift}
                )
    return pd.DataFrame(rows)


def test_perturbation_metrics_tidy():
    tidy = tidy_results()
    axes = ht.pl.perturbation_metrics(tidy)
    assert len(axes) == 3
    titles = [a.get_title() for a in axes]
    assert titles == ["r2_all (↑ better)", "r2_shift (↑ better)", "euclidean (↓ better)"]
    ax = axes[0]
    # models first, then the baselines; the ceiling is a line, not a bar
    assert [t.get_text() for t in ax.get_xticklabels()] == ["MTAe", "MTVae", "identity", "mean_shift"]
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(heights, [0.915, 0.815, 0.515, 0.715])
    assert ax.patches[2].get_facecolor()[:3] == matplotlib.colors.to_rgb("lightgrey")
    np.testing.assert_allclose(ax.lines[-1].get_ydata(), [0.985, 0.985])
    assert "n = 4 experiments, mean ± SD" in ax.get_xlabel()
    assert any(t.get_text() == "n/a" for t in axes[1].texts)  # the identity's undefined r2_shift
    fig = ht.pl.perturbation_metrics(tidy, metrics=["r2_all"], models=["mean_shift", "MTAe"], return_fig=True)
    assert isinstance(fig, Figure)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["mean_shift", "MTAe"]
    with pytest.raises(KeyError, match="argument `metrics`"):
        ht.pl.perturbation_metrics(tidy, metrics=["nope"])
    with pytest.raises(KeyError, match="argument `models`"):
        ht.pl.perturbation_metrics(tidy, models=["nope"])
    with pytest.raises(ValueError, match="one Axes per metric"):
        ht.pl.perturbation_metrics(tidy, ax=ax)


def test_perturbation_metrics_series_and_rank_heatmap(split):
    pred, stim, ctrl = split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev = {
            "mean_shift": ht.tl.evaluate_perturbation(
                pred, stim, ctrl=ctrl, n_degs=10, distances=(), n_boot=0
            ),
            "identity": ht.tl.evaluate_perturbation(ctrl, stim, ctrl=ctrl, n_degs=10, distances=(), n_boot=0),
        }
    axes = ht.pl.perturbation_metrics(ev, metrics=["r2_all", "deg_jaccard"])
    assert "n = 1 experiments" in axes[0].get_xlabel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranked = ht.tl.rank_models(tidy_results())
    ax = ht.pl.rank_heatmap(ranked)
    assert isinstance(ax, Axes)
    image = ax.images[0].get_array()
    assert image.shape == (len(ranked), len(ranked.attrs["metrics"]))
    assert ax.get_yticklabels()[0].get_text().startswith(ranked.index[0])
    np.testing.assert_allclose(np.asarray(image[0]), ranked.iloc[0][ranked.attrs["metrics"]].to_numpy(float))
    assert "winner stable" in ax.get_title()
    with pytest.raises(TypeError, match="rank_models"):
        ht.pl.rank_heatmap(tidy_results())


def test_dose_response(doses):
    ct = doses.obs["cell_type"].cat.categories[0]
    ax = ht.pl.dose_response(doses, n_genes=3, cell_type=ct)
    assert isinstance(ax, Axes)
    assert len(ax.containers) == 3  # one error-bar line per gene
    sub = doses[(doses.obs["cell_type"] == ct).to_numpy()]
    gene = ax.get_legend().get_texts()[0].get_text()
    X = np.asarray(sub[:, gene].X).ravel()
    ctrl = (sub.obs["condition"] == "control").to_numpy()
    top = (sub.obs["dose"] == 10).to_numpy()
    np.testing.assert_allclose(
        ax.containers[0].lines[0].get_ydata()[-1], X[top].mean() - X[ctrl].mean(), rtol=1e-5
    )
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.1\n(n=30)", "1\n(n=30)", "10\n(n=30)"]
    fig = ht.pl.dose_response(
        doses, genes=[gene], pred=doses[(doses.obs["dose"] > 0).to_numpy()], return_fig=True
    )
    assert isinstance(fig, Figure)
    assert "predicted" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    with pytest.raises(TypeError, match="numeric doses"):
        ht.pl.dose_response(doses, dose_key="condition")
    with pytest.raises(ValueError, match="at least two"):
        ht.pl.dose_response(doses[doses.obs["dose"].isin([0, 10]).to_numpy()])
    with pytest.raises(KeyError, match="argument `genes`"):
        ht.pl.dose_response(doses, genes=["nope"])
