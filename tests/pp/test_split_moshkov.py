"""Scaffold split on the 16,170 real compounds of Moshkov et al. (2023), compared with their published split."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from rdkit import Chem
from rdkit.Chem.Scaffolds import MurckoScaffold

import hcitools as ht


@pytest.fixture(scope="module")
def moshkov(data_root):
    root = data_root / "hci" / "moshkov2023_assays"
    ids = pd.read_csv(root / "broad_ids.txt")["broad_id"]
    smiles = pd.read_csv(root / "smiles.txt")["smiles"]
    keep = np.load(root / "compounds16978to16170.npy")
    published = np.load(root / "scaffold_based_split.npz")["features"]
    obs = pd.DataFrame({"compound": ids.iloc[keep].to_numpy(), "smiles": smiles.iloc[keep].to_numpy()})
    obs.index = obs["compound"].astype(str)
    pub_fold = np.full(len(obs), -1)
    for f, rows in enumerate(published):
        pub_fold[rows] = f
    obs["published_fold"] = pub_fold
    return ad.AnnData(np.zeros((len(obs), 1), np.float32), obs=obs)


def test_scaffold_split_on_real_smiles(moshkov):
    ht.pp.split_compounds(
        moshkov, method="scaffold", smiles_key="smiles", n_folds=5, control_value=None, seed=0
    )
    ht.pp.check_folds(moshkov)
    ours = moshkov.uns["fold"]["compounds_per_fold"]
    published = np.bincount(moshkov.obs["published_fold"], minlength=5)
    # independent scaffolds: no Bemis–Murcko scaffold crosses our folds
    scaf = [
        MurckoScaffold.MurckoScaffoldSmiles(mol=Chem.MolFromSmiles(s), includeChirality=False)
        for s in moshkov.obs["smiles"]
    ]
    df = pd.DataFrame(
        {
            "scaffold": scaf,
            "ours": moshkov.obs["fold"].to_numpy(),
            "published": moshkov.obs["published_fold"].to_numpy(),
        }
    )
    cyclic = df[df["scaffold"] != ""]
    multi = cyclic.groupby("scaffold").filter(lambda g: len(g) > 1)
    assert multi.groupby("scaffold")["ours"].nunique().max() == 1
    straddle_published = (multi.groupby("scaffold")["published"].nunique() > 1).mean()
    print(
        f"\nfold sizes: ours {ours.tolist()} vs published {published.tolist()}; "
        f"{multi['scaffold'].nunique()} Bemis–Murcko scaffolds shared by several compounds: {straddle_published:.1%} "
        "cross the published folds, 0% cross ours"
    )
    assert ours.sum() == 16170
    assert ours.max() - ours.min() <= 0.01 * ours.mean()  # as balanced as the published 5 × 3234
    assert np.abs(ours - published).max() <= 0.01 * published.mean()
