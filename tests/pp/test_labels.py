import numpy as np
import pandas as pd
import pytest

import hcitools as ht
from hcitools._validate import check_labels


def _labels():
    return pd.DataFrame(
        {"tox": [1.0, 0.0, np.nan], "kinase": [0.0, 1.0, 1.0]}, index=["cpd_0000", "cpd_0001", "cpd_9999"]
    )


def test_assign_wide(screen):
    ht.pp.assign_labels(screen, _labels(), key_added="new")
    lab = screen.obsm["new"]
    check_labels(screen, "new", "well")
    m0 = (screen.obs["compound"] == "cpd_0000").to_numpy()
    assert (lab.loc[m0, "tox"] == 1).all() and (lab.loc[m0, "kinase"] == 0).all()
    assert lab.loc[(screen.obs["compound"] == "DMSO").to_numpy()].isna().all().all()
    cov = screen.uns["new"]["coverage"]
    assert cov.loc["kinase", "n_pos"] == 1 and cov.loc["kinase", "n_neg"] == 1
    assert screen.uns["new"]["n_unmatched"] == 1


def test_assign_long_equals_wide(screen):
    long = (
        _labels().rename_axis("compound").reset_index().melt("compound", var_name="assay", value_name="label")
    )
    a = ht.pp.assign_labels(screen, long.dropna(), key_added="a", copy=True)
    b = ht.pp.assign_labels(screen, _labels(), key_added="a", copy=True)
    pd.testing.assert_frame_equal(a.obsm["a"][["kinase", "tox"]], b.obsm["a"][["kinase", "tox"]])


def test_assign_errors_leave_adata(screen):
    before = set(screen.obsm.keys())
    with pytest.raises(ValueError, match=r"1 labelled compounds are absent.*cpd_9999"):
        ht.pp.assign_labels(screen, _labels(), key_added="new", strict=True)
    bad = _labels().assign(tox=[2.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="Binarise"):
        ht.pp.assign_labels(screen, bad, key_added="new")
    with pytest.raises(ValueError, match="exists already"):
        ht.pp.assign_labels(screen, _labels(), key_added="assays")
    with pytest.raises(ValueError, match="No labelled compound matches"):
        ht.pp.assign_labels(screen, _labels().set_axis(["x", "y", "z"]), key_added="new")
    conflict = pd.DataFrame({"compound": ["cpd_0000"] * 2, "assay": ["tox"] * 2, "label": [1.0, 0.0]})
    with pytest.raises(ValueError, match="conflicting"):
        ht.pp.assign_labels(screen, conflict, key_added="new")
    assert set(screen.obsm.keys()) == before


def test_jump_target_list_multilabel(data_root):
    meta = pd.read_csv(
        data_root / "hci/jump_target2_BR00121431/JUMP-Target-2_compound_metadata.tsv", sep="\t"
    )
    mat = ht.pp.labels_from_lists(meta, compound_col="broad_sample", labels_col="target_list")
    assert mat.shape == (306, 758)
    assert (
        mat.sum(axis=1) > 1
    ).sum() == 212 - 4  # 212 rows with > 1 target, 4 duplicated compounds among them
    adata = ht.datasets.jump_target2(data_root)
    ht.pp.assign_labels(adata, mat, key_added="targets2", strict=False)
    pd.testing.assert_frame_equal(adata.obsm["targets2"], adata.obsm["targets"], check_names=False)
