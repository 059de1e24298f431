import numpy as np
import pytest

import hcitools as ht
from hcitools._validate import validate_hci, validate_perturbation


def test_lincs_plate(data_root):
    adata = ht.datasets.lincs_plate(data_root)
    assert adata.shape == (384, 454)
    assert (adata.obs["compound"] == "DMSO").sum() == 24
    assert adata.obs["compound"].nunique() == 59
    assert adata.obs_names.is_unique
    assert set(adata.var["compartment"]) == {"Cells", "Cytoplasm", "Nuclei"}
    validate_hci(adata, control_key="compound", control_value="DMSO")
    # as shipped, features were normalised against all wells: medians are 0
    np.testing.assert_allclose(np.median(adata.X, axis=0), 0, atol=1e-6)


def test_lincs_plate_from_env(monkeypatch, data_root):
    monkeypatch.setenv("HCITOOLS_DATA", str(data_root))
    assert ht.datasets.lincs_plate().n_obs == 384


def test_deepprofiler_cells(data_root):
    adata = ht.datasets.deepprofiler_cells(data_root)
    assert adata.shape == (337, 6400)
    assert adata.obs["well"].nunique() == 1
    assert sorted(adata.obs["fov"].unique()) == ["5", "8"]
    assert adata.obsm["spatial"].shape == (337, 2)
    validate_hci(adata, control_key="compound", control_value="DMSO")
    bbbc = ht.datasets.deepprofiler_cells(data_root, dataset="bbbc021")
    assert bbbc.shape == (206, 50)


def test_kang2018(data_root):
    adata = ht.datasets.kang2018(data_root)
    assert adata.shape == (1975, 6998)
    assert list(adata.obs["condition"].cat.categories) == ["control", "stimulated"]
    assert adata.obs["cell_type"].nunique() == 7
    validate_perturbation(adata)
    isg15 = adata[:, "ISG15"].X.toarray().ravel()
    ctrl = (adata.obs["condition"] == "control").to_numpy()
    assert isg15[ctrl].mean() == pytest.approx(0.30, abs=0.01)
    assert isg15[~ctrl].mean() == pytest.approx(3.16, abs=0.01)


@pytest.mark.parametrize(
    ("name", "n_bags", "n_pos", "n_inst", "n_feat"),
    [("corel_dogs", 2000, 100, 7947, 9), ("protein", 193, 25, 26611, 8)],
)
def test_mil_dataset(data_root, name, n_bags, n_pos, n_inst, n_feat):
    adata = ht.datasets.mil_dataset(name, data_root)
    assert adata.shape == (n_inst, n_feat)
    assert adata.obs["well"].nunique() == n_bags
    bag_labels = adata.obsm["assays"].groupby(adata.obs["well"].to_numpy())[name].first()
    assert int(bag_labels.sum()) == n_pos
    validate_hci(adata, labels_key="assays")


def test_missing_data_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("HCITOOLS_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match=r"HCITOOLS_DATA.*cytominer-eval"):
        ht.datasets.lincs_plate()
    with pytest.raises(FileNotFoundError, match="rosasalberto/mil"):
        ht.datasets.mil_dataset("protein", path=tmp_path)
    with pytest.raises(ValueError, match="name"):
        ht.datasets.mil_dataset("musk1", path=tmp_path)


def test_data_path(tmp_path, monkeypatch):
    (tmp_path / "mil").mkdir()
    (tmp_path / "mil" / "x.csv").write_text("1")
    assert ht.datasets.data_path("mil", "x.csv", path=tmp_path) == tmp_path / "mil" / "x.csv"
    assert ht.datasets.data_path("mil", "x.csv", path=tmp_path / "mil") == tmp_path / "mil" / "x.csv"
    monkeypatch.setenv("HCITOOLS_DATA", str(tmp_path))
    assert ht.datasets.data_path("mil", "x.csv") == tmp_path / "mil" / "x.csv"
    with pytest.raises(FileNotFoundError, match=r"mil/y\.csv.*HCITOOLS_DATA"):
        ht.datasets.data_path("mil", "y.csv")
