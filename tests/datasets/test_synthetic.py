import numpy as np
import pandas as pd
import pytest

import hcitools as ht
from hcitools._validate import validate_hci, validate_perturbation


@pytest.fixture(scope="module")
def big():
    return ht.datasets.synthetic_hci(n_compounds=300, n_plates=4, n_features=16, seed=3)


def test_shape_and_data_model(screen):
    n_wells = 40 * 3 + 3 * 8
    assert screen.n_obs == n_wells * 2 * 4
    assert screen.n_vars == 16
    validate_hci(screen, control_key="compound", control_value="DMSO", labels_key="assays")
    assert list(screen.obsm["assays"].columns) == [f"assay_0{i}" for i in range(5)]


def test_layout(screen):
    obs = screen.obs
    # DMSO wells on every plate, unlabelled
    dmso = obs["compound"] == "DMSO"
    assert set(obs.loc[dmso, "plate"]) == set(obs["plate"])
    assert screen.obsm["assays"][dmso.to_numpy()].isna().all().all()
    # replicate wells of a compound sit on different plates
    wells = obs.drop_duplicates("well")
    treated = wells[wells["compound"] != "DMSO"]
    per_cpd = treated.groupby("compound", observed=True)["plate"].nunique()
    assert (per_cpd == 3).all()
    # well positions repeat across plates, wells do not
    assert obs.groupby("well_position", observed=True)["plate"].nunique().max() > 1
    assert obs.groupby("well", observed=True)["plate"].nunique().max() == 1
    # scaffolds group compounds
    assert treated["scaffold"].nunique() < treated["compound"].nunique()


def test_label_density_and_primary(big):
    truth = big.uns["synthetic_hci"]["true_labels"]
    obs_lab = big.obsm["assays"].groupby(big.obs["compound"].to_numpy()).first().drop(index="DMSO")
    density = obs_lab.notna().to_numpy().mean()
    assert 0.025 < density < 0.06  # requested 0.04, plus the 2+2 minimum per assay
    prim = big.uns["synthetic_hci"]["primary_assays"]
    sec = [a for a in obs_lab.columns if a not in prim]
    assert obs_lab[prim].notna().mean().mean() > 2 * obs_lab[sec].notna().mean().mean()
    # every assay has at least two observed positives and negatives
    assert ((obs_lab == 1).sum() >= 2).all() and ((obs_lab == 0).sum() >= 2).all()
    # observed labels agree with the ground truth
    observed = obs_lab.notna().to_numpy()
    np.testing.assert_array_equal(obs_lab.to_numpy()[observed], truth.loc[obs_lab.index].to_numpy()[observed])


def test_responders_only_in_active_wells(big):
    obs = big.obs
    assert not obs.loc[obs["compound"] == "DMSO", "responder"].any()
    frac = obs.loc[obs["responder"]].groupby("well", observed=True).size() / 8
    assert 0 < obs["responder"].mean() < 0.5
    assert frac.max() <= 1.0


def test_signal_is_diluted_in_means(big):
    """Responding crops differ from DMSO much more than the well mean does (what attention can exploit)."""
    X = big.X
    dmso = X[(big.obs["compound"] == "DMSO").to_numpy()].mean(axis=0)
    resp = big.obs["responder"].to_numpy()
    d_resp = np.linalg.norm(X[resp].mean(axis=0) - dmso)
    active_wells = big.obs.loc[resp, "well"].unique()
    in_active = big.obs["well"].isin(active_wells).to_numpy()
    d_wells = np.linalg.norm(X[in_active].mean(axis=0) - dmso)
    assert d_resp > 2 * d_wells


def test_unrelated_assays_use_hidden_mechanisms(big):
    info = big.uns["synthetic_hci"]
    n_visible = info["params"]["n_mechanisms"]
    for a in info["unrelated_assays"]:
        assert min(info["assay_mechanisms"][a]) >= n_visible


def test_plate_effects_present(big):
    dmso = (big.obs["compound"] == "DMSO").to_numpy()
    means = pd.DataFrame(big.X[dmso]).groupby(big.obs["plate"].to_numpy()[dmso]).mean()
    assert means.std(axis=0).mean() > 0.2


def test_reproducible():
    a = ht.datasets.synthetic_hci(n_compounds=20, n_features=8, seed=5)
    b = ht.datasets.synthetic_hci(n_compounds=20, n_features=8, seed=5)
    c = ht.datasets.synthetic_hci(n_compounds=20, n_features=8, seed=6)
    np.testing.assert_array_equal(a.X, b.X)
    pd.testing.assert_frame_equal(a.obsm["assays"], b.obsm["assays"])
    assert not np.array_equal(a.X, c.X)


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_plates"):
        ht.datasets.synthetic_hci(n_plates=2, wells_per_compound=3)
    with pytest.raises(ValueError, match="label_density"):
        ht.datasets.synthetic_hci(label_density=0)
    with pytest.raises(ValueError, match=r"pass `n_plates` ≥"):
        ht.datasets.synthetic_hci(n_compounds=2000, n_plates=4)


def test_synthetic_perturbation():
    adata = ht.datasets.synthetic_perturbation(n_cell_types=3, n_cells=50, n_genes=100, seed=1)
    validate_perturbation(adata)
    assert adata.n_obs == 3 * 4 * 50
    assert set(adata.obs["dose"]) == {0.0, 0.1, 1.0, 10.0}
    lfc = adata.uns["synthetic_perturbation"]["true_log_fold_change"]
    # responses grow with dose, and differ between cell types
    for ct in ("type_0", "type_1"):
        mags = [np.abs(lfc.loc[f"{ct}|drug_{d}"]).sum() for d in ("0.1", "1", "10")]
        assert mags[0] < mags[1] < mags[2]
    assert not np.allclose(lfc.loc["type_0|drug_10"], lfc.loc["type_1|drug_10"])

    # the observed mean shift follows the true one
    def mean(ct, cond):
        m = ((adata.obs["cell_type"] == ct) & (adata.obs["condition"] == cond)).to_numpy()
        return adata.X[m].mean(axis=0)

    shift = mean("type_0", "drug_10") - mean("type_0", "control")
    assert np.corrcoef(shift, lfc.loc["type_0|drug_10"])[0, 1] > 0.5
    b = ht.datasets.synthetic_perturbation(n_cell_types=3, n_cells=50, n_genes=100, seed=1)
    np.testing.assert_array_equal(adata.X, b.X)
    with pytest.raises(ValueError, match="doses"):
        ht.datasets.synthetic_perturbation(doses=(0, 1))


def test_generators_take_keywords_after_the_first_parameter():
    with pytest.raises(TypeError, match="positional"):
        ht.datasets.synthetic_hci(20, 3)
    with pytest.raises(TypeError, match="positional"):
        ht.datasets.synthetic_perturbation(2, 10)
    assert ht.datasets.synthetic_hci(20, n_features=8).n_obs > 0
