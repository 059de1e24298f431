import numpy as np
import pandas as pd
import pytest
import torch

import hcitools as ht

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pretrained():
    adata = ht.datasets.synthetic_hci(
        n_compounds=120,
        n_assays=4,
        n_plates=3,
        n_primary=2,
        n_features=8,
        label_density=0.5,
        n_unrelated=0,
        seed=5,
    )
    ht.pp.split_compounds(adata, method="random", n_folds=3, seed=0)
    adata.obsm["known"] = adata.obsm["assays"][["assay_00", "assay_01", "assay_02"]]  # assay_03 is new
    ht.model.MoMIL.setup_anndata(adata, labels_key="known", group_key="compound")
    model = ht.model.MoMIL(adata, n_hidden=8, n_head_hidden=8)
    model.train(max_epochs=4, warmup_epochs=0, lr=3e-3, enable_progress_bar=False)
    return adata, model


def test_linear_probe_table(pretrained):
    adata, model = pretrained
    res = ht.tl.linear_probe(
        adata, model, assay="assay_03", shots=(2, None), n_repeats=3, baseline_kwargs={"max_epochs": 2}
    )
    assert list(res["shots"]) == [2, 2, "all", "all"] and list(res["method"]) == ["linear_probe", "stl"] * 2
    assert list(res["n_repeats"]) == [3, 3, 1, 1]
    assert res["auroc_mean"].between(0, 1).all() and res.loc[res["shots"] == "all", "auroc_sd"].isna().all()
    repr(pd.concat([res, res], axis=1))  # the result prints and concatenates (its attrs hold no DataFrame)
    draws = pd.DataFrame(res.attrs["draws"])
    assert len(draws) == 8
    np.testing.assert_allclose(
        res["auroc_mean"], draws.groupby(["shots", "method"], sort=False)["auroc"].mean().to_numpy()
    )
    # the test compounds are those of fold 0; the pool the others
    cpd = adata.obs[["compound", "fold"]].drop_duplicates().set_index("compound")["fold"]
    y = (
        adata.obsm["assays"]["assay_03"]
        .groupby(adata.obs["compound"].astype(str).to_numpy())
        .first()
        .dropna()
    )
    assert res["n_test_pos"].iloc[0] == int(y[cpd.loc[y.index].to_numpy() == 0].sum())
    # reproducible
    again = ht.tl.linear_probe(adata, model, assay="assay_03", shots=(2,), n_repeats=3, baseline=False)
    assert again["auroc_mean"].iloc[0] == pytest.approx(res["auroc_mean"].iloc[0])
    with pytest.raises(ValueError, match="shots"):
        ht.tl.linear_probe(adata, model, assay="assay_03", shots=(500,), baseline=False)
    with pytest.raises(KeyError, match="assay"):
        ht.tl.linear_probe(adata, model, assay="nope")
