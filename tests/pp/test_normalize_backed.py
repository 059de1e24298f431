"""Out-of-core plate normalisation: a backed AnnData normalised into a new file equals the in-memory result."""

from __future__ import annotations

import anndata as ad
import h5py
import numpy as np
import pytest

import hcitools as ht


@pytest.fixture
def on_disk(tmp_path):
    adata = ht.datasets.synthetic_hci(n_compounds=20, n_plates=3, n_features=16, seed=0)
    adata.X = adata.X.astype(np.float32)
    adata.write_h5ad(tmp_path / "raw.h5ad")
    return adata, ad.read_h5ad(tmp_path / "raw.h5ad", backed="r")


@pytest.mark.parametrize("method", ["mad_robustize", "standardize", "spherize"])
def test_backed_normalisation_equals_in_memory(on_disk, tmp_path, method):
    adata, backed = on_disk
    out = ht.pp.normalize_plates(backed, method=method, path=str(tmp_path / "norm.h5ad"))
    ref = ht.pp.normalize_plates(adata, method=method, copy=True)
    assert out.isbacked and out.X.dtype == np.float32
    np.testing.assert_allclose(out.X[:], ref.X, atol=1e-5)
    assert out.uns["normalize_plates"]["n_controls"] == ref.uns["normalize_plates"]["n_controls"]
    np.testing.assert_array_equal(
        out.var["normalize_plates_degenerate"], ref.var["normalize_plates_degenerate"]
    )
    assert "normalize_plates" not in backed.uns  # the input file is untouched
    np.testing.assert_array_equal(backed.X[:], adata.X)


def test_statistics_come_from_control_rows_only(on_disk, tmp_path):
    adata, backed = on_disk
    norm = ht.pp.normalize_plates(backed, path=str(tmp_path / "a.h5ad"))
    # changing every non-control row leaves the statistics (hence the controls' normalised values) unchanged
    changed = adata.copy()
    ctrl = (changed.obs["compound"] == "DMSO").to_numpy()
    changed.X[~ctrl] += 100.0
    changed.write_h5ad(tmp_path / "changed.h5ad")
    norm2 = ht.pp.normalize_plates(
        ad.read_h5ad(tmp_path / "changed.h5ad", backed="r"), path=str(tmp_path / "b.h5ad")
    )
    np.testing.assert_allclose(norm2.X[:][ctrl], norm.X[:][ctrl], atol=1e-6)
    assert not np.allclose(norm2.X[:][~ctrl], norm.X[:][~ctrl])


def test_transform_into_an_on_disk_array(on_disk, tmp_path):
    adata, backed = on_disk
    ctrl = (adata.obs["compound"] == "DMSO").to_numpy()
    normalizer = ht.pp.PlateNormalizer().fit(adata.X, adata.obs["plate"], is_control=ctrl)
    with h5py.File(tmp_path / "out.h5", "w") as f:
        out = f.create_dataset("X", shape=backed.shape, dtype="float32")
        normalizer.transform(backed.X, backed.obs["plate"], out=out, chunk_rows=50)
        np.testing.assert_allclose(out[:], normalizer.transform(adata.X, adata.obs["plate"]), atol=1e-5)
    with pytest.raises(ValueError, match="out="):
        normalizer.transform(backed.X, backed.obs["plate"])


def test_backed_needs_a_new_path(on_disk, tmp_path):
    _, backed = on_disk
    with pytest.raises(ValueError, match="path="):
        ht.pp.normalize_plates(backed)
    with pytest.raises(ValueError, match="key_added"):
        ht.pp.normalize_plates(backed, key_added="X_norm", path=str(tmp_path / "n.h5ad"))
    with pytest.raises(ValueError, match="new file"):
        ht.pp.normalize_plates(backed, path=str(backed.filename), overwrite=True)
    ht.pp.normalize_plates(backed, path=str(tmp_path / "n.h5ad"))
    with pytest.raises(FileExistsError, match="overwrite"):
        ht.pp.normalize_plates(backed, path=str(tmp_path / "n.h5ad"))
