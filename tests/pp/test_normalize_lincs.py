"""Golden tests of plate normalisation on the real LINCS Cell Painting plate SQ00015054."""

import numpy as np
import pytest

import hcitools as ht


@pytest.fixture(scope="module")
def plate(data_root):
    return ht.datasets.lincs_plate(data_root)


def test_dmso_referenced_mad_robustize_matches_formula(plate):
    raw = plate.X.astype(np.float64)
    dmso = (plate.obs["Metadata_broad_sample"] == "DMSO").to_numpy()
    med = np.median(raw[dmso], axis=0)
    mad = np.median(np.abs(raw[dmso] - med), axis=0)
    expected = (raw - med) / (1.4826 * mad)
    out = ht.pp.normalize_plates(plate, control_key="compound", control_value="DMSO", copy=True)
    assert out.uns["normalize_plates"]["n_degenerate"] == 0
    np.testing.assert_allclose(out.X, expected, rtol=1e-6, atol=1e-6)


def test_replicate_retrieval_map(plate):
    """copairs mAP of compounds against DMSO: 0.618 as shipped, 0.679 after DMSO-referenced normalisation."""
    shipped = ht.tl.phenotypic_activity(plate, control_value="DMSO", null_size=10_000, seed=0, inplace=False)
    assert shipped["mean_average_precision"].mean() == pytest.approx(0.618, abs=0.005)
    assert shipped["below_corrected_p"].sum() == 31
    norm = ht.pp.normalize_plates(plate, control_value="DMSO", copy=True)
    ht.tl.phenotypic_activity(norm, control_value="DMSO", null_size=10_000, seed=0)
    res = norm.uns["phenotypic_activity"]["per_compound"]
    assert res["mean_average_precision"].mean() == pytest.approx(0.679, abs=0.005)
    assert res["below_corrected_p"].sum() == 50
    assert norm.uns["phenotypic_activity"]["summary"]["n_compounds"] == 58
