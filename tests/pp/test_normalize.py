import numpy as np
import pandas as pd
import pytest

import hcitools as ht
from hcitools.pp import PlateNormalizer


def _manual_mad(X, plates, ctrl, scale=1.4826):
    out = np.empty_like(X, dtype=float)
    for p in np.unique(plates):
        m = plates == p
        c = X[m & ctrl]
        med = np.median(c, axis=0)
        mad = np.median(np.abs(c - med), axis=0)
        out[m] = (X[m] - med) / (scale * mad)
    return out


def test_mad_robustize_matches_formula(screen):
    X = screen.X.copy()
    plates = screen.obs["plate"].to_numpy()
    ctrl = (screen.obs["compound"] == "DMSO").to_numpy()
    ht.pp.normalize_plates(screen)
    np.testing.assert_allclose(screen.X, _manual_mad(X, plates, ctrl), rtol=1e-5, atol=1e-5)
    # controls are centred on every plate
    for p in np.unique(plates):
        np.testing.assert_allclose(np.median(screen.X[(plates == p) & ctrl], axis=0), 0, atol=1e-5)
    assert screen.uns["normalize_plates"]["method"] == "mad_robustize"


def test_jump_scale_and_standardize(screen):
    X = screen.X.copy()
    plates = screen.obs["plate"].to_numpy()
    ctrl = (screen.obs["compound"] == "DMSO").to_numpy()
    out = ht.pp.normalize_plates(screen, mad_scale=1.0, copy=True)
    np.testing.assert_allclose(out.X, _manual_mad(X, plates, ctrl, 1.0), rtol=1e-5, atol=1e-5)
    std = ht.pp.normalize_plates(screen, method="standardize", copy=True)
    m = (plates == "plate0") & ctrl
    np.testing.assert_allclose(std.X[m].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(std.X[m].std(axis=0, ddof=1), 1, atol=1e-4)
    np.testing.assert_array_equal(screen.X, X)  # copy=True left the input alone


def test_spherize_whitens_controls(screen):
    out = ht.pp.normalize_plates(screen, method="spherize", epsilon=1e-9, copy=True)
    plates = screen.obs["plate"].to_numpy()
    ctrl = (screen.obs["compound"] == "DMSO").to_numpy()
    c = out.X[(plates == "plate1") & ctrl].astype(float)
    np.testing.assert_allclose(np.cov(c, rowvar=False), np.eye(c.shape[1]), atol=1e-3)


def test_key_added_keeps_input(screen):
    X = screen.X.copy()
    ht.pp.normalize_plates(screen, key_added="X_norm")
    np.testing.assert_array_equal(screen.X, X)
    assert screen.obsm["X_norm"].shape == X.shape
    # scanpy's pca rule: a key_added names both the features (obsm) and the parameters (uns)
    assert screen.uns["X_norm"]["method"] == "mad_robustize" and "normalize_plates" not in screen.uns
    assert "normalize_plates_degenerate" not in screen.var
    with pytest.raises(ValueError, match=r"obsm\['X_norm'\] exists already"):
        ht.pp.normalize_plates(screen, key_added="X_norm")
    # a second normalisation with other parameters keeps its own record
    ht.pp.normalize_plates(screen, key_added="X_std", method="standardize")
    assert (
        screen.uns["X_std"]["method"] == "standardize" and screen.uns["X_norm"]["method"] == "mad_robustize"
    )


def test_normalising_twice_in_place_is_caught(screen):
    ht.pp.normalize_plates(screen)
    X = screen.X.copy()
    with pytest.raises(ValueError, match=r"uns\['normalize_plates'\] exists already.*overwrite=True"):
        ht.pp.normalize_plates(screen)
    np.testing.assert_array_equal(screen.X, X)
    ht.pp.normalize_plates(screen, overwrite=True)  # allowed when asked for


def test_sparse_input_matches_dense(screen):
    from scipy import sparse

    ref = ht.pp.normalize_plates(screen, copy=True)
    sp = screen.copy()
    sp.X = sparse.csr_matrix(sp.X)
    ht.pp.normalize_plates(sp)
    np.testing.assert_allclose(sp.X, ref.X, rtol=1e-6)


def test_mad_is_scipys(screen):
    """The MAD is scipy's `median_abs_deviation` (unscaled) times `mad_scale`, per plate."""
    from scipy.stats import median_abs_deviation

    plates = screen.obs["plate"].to_numpy()
    ctrl = (screen.obs["compound"] == "DMSO").to_numpy()
    norm = PlateNormalizer(mad_scale=2.0).fit(screen.X, plates, is_control=ctrl)
    c = screen.X[(plates == "plate1") & ctrl].astype(float)
    np.testing.assert_allclose(norm.scale_.loc["plate1"], 2.0 * median_abs_deviation(c, axis=0))
    np.testing.assert_allclose(
        norm.scale_.loc["plate1"], 2.0 / 1.4826 * median_abs_deviation(c, axis=0, scale="normal"), rtol=1e-4
    )


def test_rep_key(screen):
    ref = ht.pp.normalize_plates(screen, copy=True)
    screen.obsm["emb"] = screen.X * 2 + 1
    ht.pp.normalize_plates(screen, rep_key="emb")
    np.testing.assert_allclose(screen.obsm["emb"], ref.X, rtol=1e-4, atol=1e-4)


def test_degenerate_feature_does_not_explode(screen):
    X = screen.X.copy()
    ctrl_p0 = ((screen.obs["compound"] == "DMSO") & (screen.obs["plate"] == "plate0")).to_numpy()
    X[ctrl_p0, 0] = 1.0  # zero MAD on one plate
    X[:, 1] = 3.0  # constant everywhere
    screen.X = X
    with pytest.warns(UserWarning, match=r"4 \(plate, feature\) pairs"):
        ht.pp.normalize_plates(screen)
    assert np.isfinite(screen.X).all()
    assert np.abs(screen.X).max() < 1e3
    assert (screen.X[:, 1] == 0).all()
    assert screen.var["normalize_plates_degenerate"].iloc[0] == 1
    assert screen.var["normalize_plates_degenerate"].iloc[1] == 3


def test_errors_leave_adata_unchanged(screen):
    before = screen.copy()
    keep = ~((screen.obs["plate"] == "plate2") & (screen.obs["compound"] == "DMSO")).to_numpy()
    sub = screen[keep].copy()
    with pytest.raises(ValueError, match="plate2"):
        ht.pp.normalize_plates(sub)
    screen.X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ht.pp.normalize_plates(screen)
    assert "normalize_plates" not in screen.uns
    np.testing.assert_array_equal(screen.X[1:], before.X[1:])
    with pytest.raises(ValueError, match="method"):
        PlateNormalizer("zscore")
    with pytest.raises(ValueError, match="2-d"):
        PlateNormalizer().fit(np.zeros(5), np.zeros(5), is_control=np.ones(5, bool))


def test_plate_normalizer_inductive(screen):
    X = screen.X
    plates = screen.obs["plate"].to_numpy()
    ctrl = (screen.obs["compound"] == "DMSO").to_numpy()
    first = np.arange(len(X)) < len(X) // 2
    norm = PlateNormalizer().fit(X[ctrl], plates[ctrl], is_control=np.ones(ctrl.sum(), bool))
    np.testing.assert_allclose(
        norm.transform(X[~first], plates[~first]), _manual_mad(X, plates, ctrl)[~first], rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError, match="not fitted"):
        norm.transform(X[:3], np.array(["plate9"] * 3))
    assert isinstance(norm.degenerate_, pd.DataFrame)


def test_spherize_refuses_singular_covariance_without_epsilon():
    """Issue 11: epsilon=0 with as many features as controls filled X with NaN/inf; now refused, X untouched."""
    adata = ht.datasets.synthetic_hci(
        20, n_assays=3, n_primary=1, n_plates=3, n_features=8, n_control_wells=4
    )
    wells = ht.pp.aggregate(adata, by="well")  # 4 control wells per plate, 8 features: singular covariance
    X = wells.X.copy()
    with pytest.raises(ValueError, match=r"singular 8 × 8 covariance.*`epsilon > 0`"):
        ht.pp.normalize_plates(wells, method="spherize", epsilon=0)
    np.testing.assert_array_equal(wells.X, X)
    assert "normalize_plates" not in wells.uns
    ht.pp.normalize_plates(wells, method="spherize", epsilon=1e-3)  # regularised: finite
    assert np.isfinite(wells.X).all()
