"""Saved MIL models: primitive, versioned attributes; the committed fixture keeps loading."""

import importlib.util
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

import hcitools as ht
from hcitools.model.base import FORMAT_VERSION

DATA = Path(__file__).resolve().parents[1] / "data"


def _fixture_module():
    spec = importlib.util.spec_from_file_location("make_saved_momil", DATA / "make_saved_momil.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _is_primitive(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str | int) and _is_primitive(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_is_primitive(v) for v in value)
    return value is None or isinstance(value, bool | int | float | str)


def test_committed_momil_fixture_loads_and_predicts_the_same():
    query = _fixture_module().screen()
    del query.obsm["assays"]  # a query without labels
    expected = pd.read_csv(DATA / "saved_momil_predictions.csv", index_col=0)
    with_data = ht.model.MoMIL.load(DATA / "saved_momil", adata=query)
    pd.testing.assert_frame_equal(with_data.predict(), expected, check_dtype=False, atol=1e-5, rtol=1e-5)
    without = ht.model.MoMIL.load(DATA / "saved_momil")  # no data: queries take it
    assert without.adata is None
    pd.testing.assert_frame_equal(without.predict(query), expected, check_dtype=False, atol=1e-5, rtol=1e-5)
    assert with_data.best_epoch is not None and not with_data.use_pos_weight
    assert set(with_data.history) >= {"train_loss", "validation_mean_auroc"}
    assert isinstance(with_data.history["train_loss"], pd.DataFrame)


def test_saved_attributes_are_primitive_and_carry_no_data(tmp_path):
    adata = _fixture_module().screen()
    ht.model.MoMIL.setup_anndata(adata, group_key="compound", batch_key="plate")
    model = ht.model.MoMIL(adata, n_hidden=8, n_head_hidden=4)
    model.train(
        max_epochs=2, warmup_epochs=0, pos_weight=True, validation_size=0.3, enable_progress_bar=False
    )
    model.save(tmp_path / "m")
    saved = torch.load(tmp_path / "m" / "model.pt", weights_only=False)
    attrs = saved["attr_dict"]
    assert attrs["format_version_"] == FORMAT_VERSION
    for name, value in attrs.items():
        if name != "registry_":
            assert _is_primitive(value), name
    # only the documented setup arguments, no labels or per-row data in the registry
    assert set(attrs["registry_"]["setup_args"]) == {
        "bag_key", "labels_key", "rep_key", "layer", "batch_key", "group_key", "aux_keys"
    }  # fmt: skip
    assert all(_is_primitive(v) for v in attrs["registry_"]["setup_args"].values())
    assert "train_indices_" not in attrs and "validation_indices_" not in attrs
    size = (tmp_path / "m" / "model.pt").stat().st_size
    bigger = ad.concat([adata] * 4, label="copy", index_unique="-")  # 4× the rows: the file must not grow
    bigger.obs["well"] = bigger.obs["well"].astype(str) + bigger.obs["copy"].astype(str)
    bigger.obsm["assays"] = pd.concat([adata.obsm["assays"]] * 4).set_axis(bigger.obs_names)
    ht.model.MoMIL.setup_anndata(bigger, group_key="compound")
    big = ht.model.MoMIL(bigger, n_hidden=8, n_head_hidden=4)
    big.train(max_epochs=2, warmup_epochs=0, pos_weight=True, validation_size=0.3, enable_progress_bar=False)
    big.save(tmp_path / "big")
    assert (tmp_path / "big" / "model.pt").stat().st_size < 1.2 * size
    loaded = ht.model.MoMIL.load(tmp_path / "m", adata=adata)
    assert loaded.use_pos_weight and loaded.best_epoch == model.best_epoch
    pd.testing.assert_frame_equal(loaded.predict(), model.predict())


def test_load_refuses_newer_format_and_missing_model(tmp_path):
    shutil.copytree(DATA / "saved_momil", tmp_path / "m")
    path = tmp_path / "m" / "model.pt"
    saved = torch.load(path, weights_only=False)
    saved["attr_dict"]["format_version_"] = FORMAT_VERSION + 1
    torch.save(saved, path)
    with pytest.raises(ValueError, match="format"):
        ht.model.MoMIL.load(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="dir_path"):
        ht.model.MoMIL.load(tmp_path / "nothing_here")


def test_model_without_data_refuses_to_train_or_predict_without_adata():
    model = ht.model.MoMIL.load(DATA / "saved_momil")
    with pytest.raises(ValueError, match="no data attached"):
        model.predict()
    with pytest.raises(ValueError, match="no data attached"):
        model.train(max_epochs=1)
    assert np.isfinite(model.predict(_fixture_module().screen()).to_numpy()).all()


def test_features_are_checked_by_name_and_aligned_on_request():
    adata = _fixture_module().screen()
    model = ht.model.MoMIL.load(DATA / "saved_momil")
    expected = model.predict(adata)
    shuffled = adata[:, adata.var_names[::-1]].copy()
    with pytest.raises(ValueError, match="align_features"):
        model.predict(shuffled)
    pd.testing.assert_frame_equal(model.predict(model.align_features(shuffled)), expected)
    renamed = adata.copy()
    renamed.var_names = [f"x{i}" for i in range(adata.n_vars)]
    with pytest.raises(ValueError, match="missing"):
        model.predict(renamed)
    with pytest.raises(ValueError, match="lack"):
        model.align_features(renamed)
    assert list(shuffled.var_names) == list(adata.var_names[::-1])  # not modified
