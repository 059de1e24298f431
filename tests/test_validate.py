import numpy as np
import pandas as pd
import pytest

from hcitools._validate import (
    check_bag_key,
    check_controls,
    check_labels,
    get_rep,
    validate_hci,
    validate_perturbation,
)


def test_valid_screen_passes(screen):
    validate_hci(screen, control_key="compound", control_value="DMSO", labels_key="assays")


def test_nan_embeddings(screen):
    screen.X[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"adata.X contains 1 NaN or infinite values in 1 instances.*crop_3"):
        validate_hci(screen)


def test_nan_in_obsm(screen):
    emb = np.ones((screen.n_obs, 4))
    emb[0, 0] = np.inf
    screen.obsm["X_dino"] = emb
    with pytest.raises(ValueError, match=r"obsm\['X_dino'\] contains"):
        get_rep(screen, rep_key="X_dino")
    with pytest.raises(KeyError, match="rep_key"):
        get_rep(screen, rep_key="X_missing")


def test_labels_vary_within_bag(screen):
    labels = screen.obsm["assays"].copy()
    well = screen.obs["well"].iloc[0]
    rows = np.flatnonzero(screen.obs["well"] == well)
    labels.iloc[rows[0], 1] = 1.0
    labels.iloc[rows[1], 1] = 0.0
    screen.obsm["assays"] = labels
    with pytest.raises(ValueError, match=rf"varies within a bag.*assay_01.*{well}"):
        check_labels(screen, "assays", "well")


def test_labels_measured_and_missing_within_bag(screen):
    labels = screen.obsm["assays"].copy()
    rows = np.flatnonzero(screen.obs["well"] == screen.obs["well"].iloc[0])
    labels.iloc[rows, 0] = np.nan
    labels.iloc[rows[0], 0] = 1.0
    screen.obsm["assays"] = labels
    with pytest.raises(ValueError, match="varies within a bag"):
        check_labels(screen)


def test_bag_ids_repeat_across_plates(screen):
    with pytest.raises(ValueError, match=r"repeat across plates.*make_bag_key"):
        check_bag_key(screen, bag_key="well_position", plate_key="plate")


def test_missing_columns(screen):
    with pytest.raises(KeyError, match=r"no column 'batch' \(argument `plate_key`\)"):
        validate_hci(screen, plate_key="batch")
    with pytest.raises(KeyError, match="labels_key"):
        validate_hci(screen, labels_key="activity")


def test_missing_values_in_column(screen):
    screen.obs["compound"] = screen.obs["compound"].astype(object)
    screen.obs.iloc[0, screen.obs.columns.get_loc("compound")] = None
    with pytest.raises(ValueError, match=r"'compound'.*1 missing values"):
        validate_hci(screen)


def test_labels_index_mismatch(screen):
    shuffled = screen.obsm["assays"].sample(frac=1.0, random_state=0)
    with pytest.raises(
        ValueError, match=r"does not match adata.obs_names \(1\d{3} of 1152 positions differ\)"
    ):
        check_labels(screen, labels=shuffled)
    with pytest.raises(ValueError, match="lengths differ"):
        check_labels(screen, labels=screen.obsm["assays"].iloc[:10])


def test_labels_not_a_dataframe(screen):
    screen.obsm["assays"] = screen.obsm["assays"].to_numpy()
    with pytest.raises(TypeError, match="must be a pandas DataFrame"):
        check_labels(screen)


def test_labels_not_binary(screen):
    labels = screen.obsm["assays"].copy()
    labels.iloc[:, 0] = 0.5
    screen.obsm["assays"] = labels
    with pytest.raises(ValueError, match="Binarise"):
        check_labels(screen, bag_key=None)


def test_plate_without_controls(screen):
    keep = ~((screen.obs["plate"] == "plate1") & (screen.obs["compound"] == "DMSO")).to_numpy()
    sub = screen[keep].copy()
    with pytest.raises(ValueError, match=r"Plates without any control instance.*plate1"):
        check_controls(sub, "compound", "DMSO", "plate")
    with pytest.raises(ValueError, match="control_value"):
        check_controls(screen, "compound", "DMSO_typo", "plate")


def test_validators_do_not_modify(screen):
    before = screen.copy()
    with pytest.raises(KeyError):
        validate_hci(screen, plate_key="nope")
    pd.testing.assert_frame_equal(before.obs, screen.obs)
    np.testing.assert_array_equal(before.X, screen.X)


def test_validate_perturbation():
    import hcitools as ht

    adata = ht.datasets.synthetic_perturbation(n_cells=10, n_genes=30, n_response_genes=5)
    validate_perturbation(adata)
    with pytest.raises(ValueError, match="no control cells labelled 'ctrl'"):
        validate_perturbation(adata, control_value="ctrl")
    with pytest.raises(KeyError, match="cell_type_key"):
        validate_perturbation(adata, cell_type_key="celltype")
    neg = adata.copy()
    neg.X = neg.X - 1.0
    with pytest.raises(ValueError, match="negative"):
        validate_perturbation(neg)
    raw = adata.copy()
    raw.X = raw.layers["counts"] * 100
    with pytest.warns(UserWarning, match="raw counts"):
        validate_perturbation(raw)


def test_per_plate_bag_ids_point_to_make_bag_key(screen):
    """Issue 11: labels varying within per-plate well ids are not a labelling problem; the fix is make_bag_key."""
    with pytest.raises(ValueError, match=r"repeat across plates.*ht\.pp\.make_bag_key") as err:
        check_labels(screen, "assays", "well_position")
    assert "assign_labels" not in str(err.value)


def test_argument_helpers():
    from hcitools._validate import check_bool, check_choice, check_int, check_real

    assert check_int(np.int64(3), "n", min=1) == 3
    with pytest.raises(TypeError, match=r"`n` must be an integer ≥ 1, got '3' \(str\)\. Pass a number"):
        check_int("3", "n", min=1)
    with pytest.raises(TypeError, match="`n`"):
        check_int(True, "n")
    with pytest.raises(ValueError, match=r"`n` must be an integer ≥ 1 and ≤ 4, got 5"):
        check_int(5, "n", min=1, max=4)
    assert check_int(None, "n", allow_none=True) is None
    assert check_real(1, "lr", min=0, min_inclusive=False) == 1.0
    with pytest.raises(ValueError, match=r"`lr` must be a finite number > 0, got nan"):
        check_real(float("nan"), "lr", min=0, min_inclusive=False)
    with pytest.raises(TypeError, match="`copy` must be True or False, got 0"):
        check_bool(0, "copy")
    with pytest.raises(
        ValueError, match=r"`how` must be one of 'mean', 'median'; got 'Mean' \(str\)\. Did you mean 'mean'"
    ):
        check_choice("Mean", "how", ("mean", "median"))


def test_check_writable(tmp_path, screen):
    import anndata as ad

    from hcitools._validate import check_writable

    check_writable(screen)  # in memory
    screen.write_h5ad(tmp_path / "s.h5ad")
    backed = ad.read_h5ad(tmp_path / "s.h5ad", backed="r")
    with pytest.raises(ValueError, match=r"adata.to_memory\(\).*backed='r\+'"):
        check_writable(backed, "X")
    check_writable(backed, "obs")  # obs lives in memory
    backed.file.close()
    check_writable(ad.read_h5ad(tmp_path / "s.h5ad", backed="r+"), "X")
