"""MoMIL on real MIL benchmarks (bag-level 5-fold CV) beside a pooled logistic-regression baseline."""

import logging
from contextlib import nullcontext

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

import hcitools as ht


@pytest.mark.parametrize(("name", "train"), [
    ("corel_dogs", {"max_epochs": 40, "warmup_epochs": 10, "patience": 10}),
    # 193 bags, 25 positive: a validation split would hold ~4 positives, so train a fixed number of epochs
    ("protein", {"max_epochs": 150, "validation_size": 0.0}),
])  # fmt: skip
def test_cross_validated_against_pooled_logistic_regression(data_root, name, train):
    logging.getLogger("hcitools").setLevel(logging.WARNING)
    adata = ht.datasets.mil_dataset(name, data_root)
    adata.X = StandardScaler().fit_transform(adata.X).astype(np.float32)
    bags = adata.obs["well"].astype(str).to_numpy()
    wells = ht.pp.aggregate(adata, by="well")
    y = wells.obsm["assays"][name].to_numpy()
    p_mil = pd.Series(np.nan, index=wells.obs_names)
    p_lr = p_mil.copy()
    # stratified, shuffled bag folds: the files list positive bags first, so never split by order
    for k, (tr, te) in enumerate(StratifiedKFold(5, shuffle=True, random_state=0).split(wells.X, y)):
        in_train = np.isin(bags, wells.obs_names[tr])
        sub, test = adata[in_train].copy(), adata[~in_train].copy()
        ht.model.MoMIL.setup_anndata(sub)
        model = ht.model.MoMIL(sub, n_hidden=32, n_head_hidden=16, dropout=0.1)
        with pytest.warns(UserWarning) if train.get("validation_size") == 0.0 else nullcontext():
            model.train(lr=1e-3, batch_size=32, seed=k, enable_progress_bar=False, **train)
        p_mil.iloc[te] = model.predict(test)[name].loc[wells.obs_names[te]].to_numpy()
        clf = LogisticRegression(max_iter=5000, class_weight="balanced").fit(wells.X[tr], y[tr])
        p_lr.iloc[te] = clf.predict_proba(wells.X[te])[:, 1]
    auc_mil, auc_lr = roc_auc_score(y, p_mil), roc_auc_score(y, p_lr)
    acc_mil, acc_lr = accuracy_score(y, p_mil > 0.5), accuracy_score(y, p_lr > 0.5)
    print(
        f"\n{name}: MoMIL AUROC {auc_mil:.3f} accuracy {acc_mil:.3f} | pooled LR AUROC {auc_lr:.3f} accuracy {acc_lr:.3f}"
    )
    assert auc_mil > 0.7
    assert auc_mil > auc_lr - 0.03
