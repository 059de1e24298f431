"""MoMIL with no training arguments against a tuned pooled logistic regression on the real MIL sets.

Run: ``OMP_NUM_THREADS=1 .venv-python3.11/bin/python benchmarks/mil_real.py [--seeds 0 1]
[--datasets corel_dogs protein] [--configs new old] [--mil-path /work/shared/data/mil]``.

Per data set (``ht.datasets.mil_dataset``) and seed: 5 stratified, shuffled bag folds
(``StratifiedKFold(5, shuffle=True, random_state=seed)``). In every fold the features are standardised on the
training instances only, and the test bags are never looked at before prediction:

- **MoMIL, new defaults** (``config new``): ``MoMIL(train)`` with its default architecture and
  ``model.train(seed=fold, enable_progress_bar=False)``: every training setting derived by the defaults (batch
  size, epochs, warm-up, early-stopping monitor) on the model's own inner validation split (20 % of the training
  bags).
- **MoMIL, old defaults** (``config old``): the same model trained with the former defaults
  (``max_epochs=100, warmup_epochs=20, patience=10, lr=1e-4, batch_size=256``, no learning-rate warm-up, early
  stopping on the validation AUROC), for contrast.
- **pooled LR**: bags mean-pooled, standardised on the training bags, an L2 logistic regression
  (``class_weight="balanced"``) whose ``C`` (``10**-3 … 10**2``) is chosen by AUROC on a stratified inner 20 %
  of the training bags (``GridSearchCV`` with a ``PredefinedSplit``), then refitted on all training bags.

Prints per data set, seed and method the AUROC of the pooled test predictions (5 folds), the accuracy at 0.5
and the balanced accuracy (the sets are imbalanced: 5 % and 13 % positive bags, so predicting "negative"
everywhere has accuracy 0.95 / 0.87), the mean over seeds, the margins MoMIL (new) − pooled LR, and the time.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, PredefinedSplit, StratifiedKFold, train_test_split
from sklearn.preprocessing import StandardScaler

import hcitools as ht
from hcitools.tl._cv import release

OLD_DEFAULTS = {
    "max_epochs": 100,
    "warmup_epochs": 20,
    "patience": 10,
    "lr": 1e-4,
    "batch_size": 256,
    "lr_warmup_steps": 0,
    "monitor": "auroc",
}
CONFIGS = {"new": {}, "old": OLD_DEFAULTS}
LR_CS = np.logspace(-3, 2, 11)
INNER_VALIDATION = 0.2


def standardise(adata, train_mask):
    """Standardise the instance features on the training instances only."""
    scaler = StandardScaler().fit(adata.X[train_mask])
    adata.X = scaler.transform(adata.X).astype(np.float32)


def momil_fold(sub, test, name: str, config: dict, seed: int) -> np.ndarray:
    """Train one MoMIL on ``sub`` (its own inner validation split) and predict the bags of ``test``."""
    ht.model.MoMIL.setup_anndata(sub)
    model = ht.model.MoMIL(sub)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # e.g. no positive in a tiny inner validation split
            model.train(seed=seed, enable_progress_bar=False, **config)
        return model.predict(test)[name]
    finally:
        release(model)


def pooled_lr_fold(x_train, y_train, x_test, seed: int) -> np.ndarray:
    """Pooled logistic regression, ``C`` chosen on a stratified inner validation split of the training bags."""
    scaler = StandardScaler().fit(x_train)
    x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    inner = np.zeros(len(y_train), int) - 1
    _, val = train_test_split(
        np.arange(len(y_train)), test_size=INNER_VALIDATION, stratify=y_train, random_state=seed
    )
    inner[val] = 0
    search = GridSearchCV(
        LogisticRegression(class_weight="balanced", max_iter=5000, random_state=seed),
        {"C": LR_CS},
        scoring="roc_auc",
        cv=PredefinedSplit(inner),
        refit=True,
    )
    return search.fit(x_train, y_train).predict_proba(x_test)[:, 1]


def run(name: str, path: str, seed: int, configs: list[str]) -> dict[str, dict[str, float]]:
    """Cross-validated predictions of every method on one data set and seed; their scores."""
    raw = ht.datasets.mil_dataset(name, path)
    bags = raw.obs["well"].astype(str).to_numpy()
    wells = ht.pp.aggregate(raw, by="well")
    y = wells.obsm["assays"][name].to_numpy().astype(int)
    names = wells.obs_names.to_numpy()
    pred = {
        m: pd.Series(np.nan, index=names) for m in [*(f"MoMIL ({c} defaults)" for c in configs), "pooled LR"]
    }
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    for k, (tr, te) in enumerate(folds.split(wells.X, y)):
        adata = raw.copy()
        in_train = np.isin(bags, names[tr])
        standardise(adata, in_train)
        sub, test = adata[in_train].copy(), adata[~in_train].copy()
        for c in configs:
            p = momil_fold(sub, test, name, CONFIGS[c], seed=10 * seed + k)
            pred[f"MoMIL ({c} defaults)"].loc[names[te]] = p.loc[names[te]].to_numpy()
        pred["pooled LR"].iloc[te] = pooled_lr_fold(wells.X[tr], y[tr], wells.X[te], seed=10 * seed + k)
    out = {}
    for method, p in pred.items():
        p = p.to_numpy(dtype=float)
        out[method] = {
            "auroc": roc_auc_score(y, p),
            "accuracy": accuracy_score(y, p > 0.5),
            "balanced_accuracy": balanced_accuracy_score(y, p > 0.5),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["corel_dogs", "protein"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--configs", nargs="+", default=["new", "old"], choices=list(CONFIGS))
    parser.add_argument(
        "--mil-path", default=os.path.join(os.environ.get("HCITOOLS_DATA", "../shared/data"), "mil")
    )
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    logging.getLogger("hcitools").setLevel(logging.WARNING)
    start = time.perf_counter()
    rows = []
    for name in args.datasets:
        for seed in args.seeds:
            t0 = time.perf_counter()
            for method, scores in run(name, args.mil_path, seed, args.configs).items():
                rows.append({"dataset": name, "seed": seed, "method": method, **scores})
            print(f"{name} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    table = pd.DataFrame(rows)
    fmt = {"float_format": lambda v: f"{v:.3f}"}
    print("\nper seed (5 stratified bag folds, test predictions pooled):")
    print(table.set_index(["dataset", "seed", "method"]).to_string(**fmt))
    mean = table.groupby(["dataset", "method"], sort=False)[["auroc", "accuracy", "balanced_accuracy"]].mean()
    print(f"\nmean over seeds {args.seeds}:")
    print(mean.to_string(**fmt))
    if "new" in args.configs:
        auc = table.pivot_table(index=["dataset", "seed"], columns="method", values="auroc")
        margin = auc["MoMIL (new defaults)"] - auc["pooled LR"]
        print("\nAUROC margin MoMIL (new defaults) − pooled LR per data set and seed:")
        print(margin.to_string(**fmt))
        print(f"smallest margin: {margin.min():+.3f}")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
