"""HCI plots: per-assay bars with n and bootstrap intervals, heatmap, plate effects, attention on the field."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

import hcitools as ht


@pytest.fixture(scope="module")
def scored():
    """Two methods' scores of 60 compounds on 4 assays, their labels and the stacked evaluation."""
    rng = np.random.default_rng(0)
    labels = pd.DataFrame(rng.integers(0, 2, (60, 4)).astype(float), columns=[f"a{i}" for i in range(4)],
                          index=[f"c{i}" for i in range(60)])  # fmt: skip
    labels.iloc[:10, 3] = np.nan
    good = labels.fillna(0.5) + rng.normal(0, 0.6, labels.shape)
    bad = pd.DataFrame(rng.random(labels.shape), index=labels.index, columns=labels.columns)
    results = (
        pd.concat(
            [
                ht.tl.evaluate_assays(good, labels).assign(method="good"),
                ht.tl.evaluate_assays(bad, labels).assign(method="bad"),
            ]
        )
        .rename_axis("assay")
        .reset_index()
    )
    return results, {"good": good, "bad": bad}, labels


def test_assay_performance_summary_rows_n_intervals(scored):
    results, predictions, labels = scored
    ax = ht.pl.assay_performance(results, predictions=predictions, labels=labels, n_boot=200)
    assert isinstance(ax, Axes)
    assert len(ax.patches) == 4 * 2  # bars for the assays only: "macro mean" is not an assay
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    n_pos, n_neg = int(labels["a0"].sum()), int((labels["a0"] == 0).sum())
    assert ticks[0] == f"a0\n{n_pos}/{n_neg}"
    assert not any("macro" in t for t in ticks)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    macro = results.set_index(["assay", "method"]).loc[("macro mean", "good"), "auroc"]
    assert f"good: macro mean {macro:.2f}" in legend
    # bootstrap intervals around each bar: the interval holds the observed AUROC
    iv = ht.pl.bootstrap_auroc_intervals(predictions["good"], labels, n_boot=200)
    auroc = results[(results["method"] == "good") & (results["assay"] != "macro mean")].set_index("assay")[
        "auroc"
    ]
    assert ((iv["low"] <= auroc) & (auroc <= iv["high"])).all()
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    segments = bars[0].errorbar.lines[2][0].get_segments()  # the first method's error bars: low → high
    np.testing.assert_allclose([seg[:, 1] for seg in segments], iv[["low", "high"]].to_numpy())
    # the legend sits outside the axes: it covers no bar
    fig = ax.figure
    fig.canvas.draw()
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1
    fig = ht.pl.assay_performance(results, methods=["bad"], return_fig=True)
    assert isinstance(fig, Figure) and len(fig.axes[0].patches) == 4
    with pytest.raises(ValueError, match="both `predictions` and `labels`"):
        ht.pl.assay_performance(results, predictions=predictions)
    with pytest.raises(ValueError, match="AUROC"):
        ht.pl.assay_performance(results, metric="auprc", predictions=predictions, labels=labels)
    with pytest.raises(ValueError, match="only summary rows"):
        ht.pl.assay_performance(results[results["assay"] == "macro mean"])


def test_assay_heatmap(scored):
    results, _, labels = scored
    ax = ht.pl.assay_heatmap(results)
    assert isinstance(ax, Axes)
    values = ax.images[0].get_array()
    assert values.shape == (4, 2)
    expected = results[results["assay"] == "a1"].set_index("method")["auroc"]
    np.testing.assert_allclose(np.asarray(values[1]), expected[["good", "bad"]].to_numpy())
    assert ax.get_xticklabels()[0].get_text().startswith("good\nmacro mean")
    assert (
        ax.get_yticklabels()[3].get_text()
        == f"a3 ({int(labels['a3'].sum())}/{int((labels['a3'] == 0).sum())})"
    )
    assert isinstance(ht.pl.assay_heatmap(results, vmin=None, vmax=None, return_fig=True), Figure)


@pytest.fixture(scope="module")
def screen():
    adata = ht.datasets.synthetic_hci(
        n_compounds=30, n_assays=3, n_primary=1, n_plates=3, n_features=12, plate_effect=1.0, seed=0
    )
    ht.pp.normalize_plates(adata, key_added="X_norm")
    return adata


def test_plate_effects_medians(screen):
    axes = ht.pl.plate_effects(screen, after="X_norm", n_features=5)
    assert len(axes) == 2
    before, after = axes
    assert len(before.lines) == 5 + 1  # one line per feature, and the zero line
    np.testing.assert_allclose(np.concatenate([ln.get_ydata() for ln in after.lines[:5]]), 0.0, atol=1e-9)
    assert np.ptp(np.concatenate([ln.get_ydata() for ln in before.lines[:5]])) > 0.1
    n_dmso = (screen.obs["compound"] == "DMSO").groupby(screen.obs["plate"], observed=True).sum()
    assert before.get_xticklabels()[0].get_text() == f"{n_dmso.index[0]}\n(n={n_dmso.iloc[0]})"
    with pytest.raises(ValueError, match="No control"):
        ht.pl.plate_effects(screen, control_value="nope")
    with pytest.raises(ValueError, match="2 Axes"):
        ht.pl.plate_effects(screen, after="X_norm", ax=before)


def test_plate_effects_pca(screen):
    wells = ht.pp.aggregate(screen, by="well")
    fig = ht.pl.plate_effects(screen, after="X_norm", kind="pca", return_fig=True)
    assert isinstance(fig, Figure)
    sil = [float(a.get_title().rsplit(" ", 1)[1]) for a in fig.axes[:2]]
    assert sil[0] > sil[1]  # normalisation mixes the plates
    axes = ht.pl.plate_effects(wells, kind="pca")
    assert len(axes) == 1 and len(axes[0].collections) == wells.obs["plate"].nunique()


@pytest.fixture(scope="module")
def tiled():
    rng = np.random.default_rng(0)
    fovs = rng.random((2, 3, 32, 32))
    tiles = ht.pp.tile_images(fovs, grid=9, obs=pd.DataFrame({"well": ["w0", "w1"]}))
    adata = AnnData(np.zeros((18, 2), dtype=np.float32), obs=tiles.obs.copy())
    att = rng.random((18, 2))
    att /= pd.DataFrame(att).groupby(adata.obs["well"].to_numpy()).transform("sum").to_numpy()
    adata.obsm["momil_attention"] = pd.DataFrame(att, index=adata.obs_names, columns=["x", "y"])
    return adata, tiles


def test_attention_field_and_top_attended(tiled):
    adata, tiles = tiled
    ax = ht.pl.attention_field(adata, assay="y", image=1)
    grid = np.asarray(ax.images[0].get_array())
    rows = (adata.obs["image"] == 1).to_numpy()
    rel = adata.obsm["momil_attention"]["y"].to_numpy()[rows] * 9
    np.testing.assert_allclose(grid[adata.obs["tile_row"][rows], adata.obs["tile_col"][rows]], rel)
    fig = ht.pl.attention_field(adata, assay="y", image=0, images=tiles, return_fig=True)
    assert len(fig.axes[0].images) == 9 and len(fig.axes[0].patches) == 9
    axes = ht.pl.top_attended(adata, images=tiles.images, assay="x", n=4)
    assert len(axes) == 4
    rel_all = adata.obsm["momil_attention"]["x"].to_numpy() * 9
    assert [float(a.get_title().split("\n")[0]) for a in axes] == pytest.approx(
        np.round(np.sort(rel_all)[::-1][:4], 2), abs=0.006
    )
    axes = ht.pl.top_attended(adata, images=tiles, assay="x", n=20, bag="w0")
    assert len(axes) == 9  # only the bag's crops
    with pytest.raises(ValueError, match="`image`"):
        ht.pl.attention_field(adata, assay="y", image=7)
    with pytest.raises(KeyError, match="tile_row"):
        bare = AnnData(
            adata.X, obs=adata.obs[["image", "well"]], obsm={"momil_attention": adata.obsm["momil_attention"]}
        )
        ht.pl.attention_field(bare, assay="y", image=0)
    with pytest.raises(ValueError, match="one crop per row"):
        ht.pl.top_attended(adata, images=tiles.images[:3], assay="x")


def test_attention_groups_stable_n_and_float(tiled):
    adata, _ = tiled
    adata = adata.copy()
    adata.obs["score"] = np.linspace(0, 1, adata.n_obs)
    with pytest.raises(ValueError, match="bins=5"):
        ht.pl.attention(adata, assay="x", groupby="score")
    ax = ht.pl.attention(adata, assay="x", groupby="score", bins=3)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert len(labels) == 3 and all(t.endswith("(n=6)") for t in labels)
    adata.obs["group"] = pd.Categorical(["b", "a"] * 9, categories=["b", "a"])
    ax = ht.pl.attention(adata, assay="x", groupby="group")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["b\n(n=9)", "a\n(n=9)"]  # the category order
