"""MoMIL's head types, DSMIL against gated ABMIL, on simulated screens and on the real MIL sets; picks the default.

Run: ``OMP_NUM_THREADS=1 HCITOOLS_DATA=/work/shared/data .venv-python3.11/bin/python benchmarks/mil_heads.py
[--seeds 0 1 2] [--n-compounds 300] [--real-seeds 0] [--mil-path /work/shared/data/mil]``.

Both heads get the same data, folds, seeds and hyper-parameters; only ``head=`` differs.

- Simulated screens (as in ``benchmarks/mil_synthetic.py``): per seed a screen from ``ht.datasets.synthetic_hci``,
  normalised against DMSO, 5 scaffold-grouped folds from ``ht.pp.split_compounds``, cross-validated with
  ``ht.tl.momil(method="momil", head=...)`` (3-1-1 rotations: model selection on the fold after the test fold).
  Value: mean compound-level AUROC over the primary assays (the ``"primary mean"`` row of
  ``uns[key]["evaluation"]``, checked against the mean of the per-assay rows).
- Real MIL sets (``corel_dogs``, ``protein`` from ``ht.datasets.mil_dataset``): 5 stratified, shuffled bag folds;
  per fold the features are standardised on the training instances only, a stratified 20 % of the training bags
  is held out as the inner validation split (early stopping and model selection never see the test bags), one
  MoMIL per fold predicts the test bags. Value: bag-level AUROC over the 5 test folds pooled, per data-set seed.

Prints the AUROC table head × data set (per seed and the mean over seeds), the differences gated ABMIL − DSMIL,
the mean difference over all data sets, and the decision of issue 10: DSMIL (the paper's head) stays MoMIL's
default unless gated ABMIL is better by more than 0.01 mean AUROC. The mean AUROC of the rule is the mean over the
data sets (simulated screens counted as one data set, the mean over their seeds) of each head's seed-mean AUROC.
Everything printed is measured in this run.
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
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit
from sklearn.preprocessing import StandardScaler

import hcitools as ht
from hcitools.tl._cv import release

HEADS = ("dsmil", "gated_abmil")
MARGIN = 0.01

# simulated screens: the hyper-parameters of benchmarks/mil_synthetic.py (method "momil")
SIM_TRAIN = {
    "max_epochs": 40,
    "warmup_epochs": 10,
    "patience": 10,
    "lr": 1e-3,
    "batch_size": 32,
    "enable_progress_bar": False,
}
SIM_MODEL = {"n_hidden": 64, "n_head_hidden": 32, "dropout": 0.25}

# real MIL sets: the model of tests/model/test_mil_real.py, with an inner validation split for both sets
REAL_MODEL = {"n_hidden": 32, "n_head_hidden": 16, "dropout": 0.1}
REAL_TRAIN = {
    "corel_dogs": {"max_epochs": 40, "warmup_epochs": 10, "patience": 10},
    # 193 bags, 25 positive: the stratified inner split holds ~4 positives, so a long warm-up before stopping
    "protein": {"max_epochs": 100, "warmup_epochs": 30, "patience": 20},
}
REAL_COMMON = {"lr": 1e-3, "batch_size": 32, "enable_progress_bar": False}
INNER_VALIDATION = 0.2


def simulated(n_compounds: int, seed: int, label_density: float) -> dict[str, float]:
    """Mean compound-level AUROC over primary assays of each head on one simulated screen."""
    adata = ht.datasets.synthetic_hci(
        n_compounds=n_compounds, n_plates=max(3, n_compounds // 100), crops_per_fov=8, responder_fraction=0.1,
        effect_size=6.0, label_noise=0.25, label_density=label_density, seed=seed,
    )  # fmt: skip
    ht.pp.normalize_plates(adata)
    ht.pp.split_compounds(adata, method="group", group_key="scaffold", seed=seed)
    primary = list(adata.uns["synthetic_hci"]["primary_assays"])
    out = {}
    for head in HEADS:
        key = f"momil_{head}"
        ht.tl.momil(
            adata,
            method="momil",
            head=head,
            key_added=key,
            seed=seed,
            primary_assays=primary,
            train_kwargs=SIM_TRAIN,
            **SIM_MODEL,
        )
        ev = adata.uns[key]["evaluation"]
        ev = ev[ev["method"] == "momil"].set_index("assay")["auroc"]
        per_assay = float(ev.loc[primary].mean())  # NaN-skipping, as evaluate_assays' means
        if "primary mean" in ev.index:
            if not np.isclose(ev.loc["primary mean"], per_assay, equal_nan=True):
                print(
                    f"  note: seed {seed} {head}: 'primary mean' {ev.loc['primary mean']:.4f} ≠ mean of rows {per_assay:.4f}"
                )
            out[head] = float(ev.loc["primary mean"])
        else:
            out[head] = per_assay
        n_nan = int(ev.loc[primary].isna().sum())
        if n_nan:
            print(f"  note: seed {seed} {head}: {n_nan} primary assays without AUROC")
    return out


def real(name: str, path: str, seed: int) -> dict[str, float]:
    """Bag-level AUROC (5 stratified bag folds pooled) of each head on one real MIL set."""
    adata = ht.datasets.mil_dataset(name, path)
    bags = adata.obs["well"].astype(str).to_numpy()
    wells = ht.pp.aggregate(adata, by="well")
    y = wells.obsm["assays"][name].to_numpy()
    names = wells.obs_names.to_numpy()
    pred = {head: pd.Series(np.nan, index=names) for head in HEADS}
    # stratified, shuffled bag folds: the files list positive bags first, so never split by order
    outer = StratifiedKFold(5, shuffle=True, random_state=seed)
    for k, (tr, te) in enumerate(outer.split(wells.X, y)):
        inner = StratifiedShuffleSplit(1, test_size=INNER_VALIDATION, random_state=seed * 100 + k)
        _, va = next(inner.split(names[tr], y[tr]))
        in_train = np.isin(bags, names[tr])
        sub, test = adata[in_train].copy(), adata[~in_train].copy()
        scaler = StandardScaler().fit(sub.X)  # training instances only
        sub.X = scaler.transform(sub.X).astype(np.float32)
        test.X = scaler.transform(test.X).astype(np.float32)
        sub.obs["inner_val"] = np.isin(bags[in_train], names[tr][va]).astype(int)
        for head in HEADS:
            ht.model.MoMIL.setup_anndata(sub)
            model = ht.model.MoMIL(sub, head=head, **REAL_MODEL)
            model.train(
                seed=seed * 100 + k, validation_key="inner_val", validation_values=[1],
                **REAL_COMMON, **REAL_TRAIN[name],
            )  # fmt: skip
            pred[head].iloc[te] = model.predict(test)[name].loc[names[te]].to_numpy()
            release(model)  # frees the fold's scvi-tools managers
    return {head: float(roc_auc_score(y, pred[head].to_numpy())) for head in HEADS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="simulated-screen seeds")
    parser.add_argument("--n-compounds", type=int, default=300)
    parser.add_argument("--label-density", type=float, default=0.25)
    parser.add_argument(
        "--real-seeds", type=int, nargs="*", default=[0], help="seeds of the real-set bag folds"
    )
    parser.add_argument("--real-sets", nargs="*", default=list(REAL_TRAIN), choices=list(REAL_TRAIN))
    parser.add_argument(
        "--mil-path", default=os.path.join(os.environ.get("HCITOOLS_DATA", "../shared/data"), "mil")
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in ("hcitools", "scvi", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    start = time.perf_counter()
    rows = []
    for seed in args.seeds:
        t = time.perf_counter()
        res = simulated(args.n_compounds, seed, args.label_density)
        rows += [{"data set": "simulated", "seed": seed, "head": h, "auroc": v} for h, v in res.items()]
        print(f"simulated seed {seed}: " + ", ".join(f"{h} {v:.3f}" for h, v in res.items())
              + f" ({time.perf_counter() - t:.0f} s)", flush=True)  # fmt: skip
    for name in args.real_sets:
        for seed in args.real_seeds:
            t = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                res = real(name, args.mil_path, seed)
            for w in {(w.category.__name__, str(w.message)) for w in caught}:
                print(f"  warning ({name}): {w[0]}: {w[1]}")
            rows += [{"data set": name, "seed": seed, "head": h, "auroc": v} for h, v in res.items()]
            print(f"{name} seed {seed}: " + ", ".join(f"{h} {v:.3f}" for h, v in res.items())
                  + f" ({time.perf_counter() - t:.0f} s)", flush=True)  # fmt: skip
    long = pd.DataFrame(rows)
    per_seed = long.pivot_table(index=["data set", "seed"], columns="head", values="auroc")[list(HEADS)]
    per_seed["gated − dsmil"] = per_seed["gated_abmil"] - per_seed["dsmil"]
    print(
        f"\nAUROC per data set and seed (simulated: mean compound-level AUROC over primary assays, "
        f"{args.n_compounds} compounds, label density {args.label_density}; real sets: bag-level AUROC, 5 folds)"
    )
    print(per_seed.to_string(float_format=lambda v: f"{v:+.3f}" if abs(v) < 0.5 else f"{v:.3f}"))
    table = long.groupby(["head", "data set"])["auroc"].mean().unstack("data set")
    table = table.loc[list(HEADS), ["simulated", *args.real_sets] if args.seeds else list(args.real_sets)]
    table["mean"] = table.mean(axis=1)
    diff = table.loc["gated_abmil"] - table.loc["dsmil"]
    table.loc["gated − dsmil"] = diff
    print("\nhead × data set (mean over seeds; 'mean' = mean over data sets)")
    print(table.to_string(float_format=lambda v: f"{v:+.3f}" if abs(v) < 0.5 else f"{v:.3f}"))
    wins = int((per_seed["gated − dsmil"] > 0).sum())
    print(f"gated ABMIL ahead in {wins}/{len(per_seed)} (data set, seed) pairs")
    verdict = "gated ABMIL better by > 0.01" if diff["mean"] > MARGIN else "keep DSMIL default"
    print(
        f"\nmean AUROC gated ABMIL − DSMIL: {diff['mean']:+.4f} (rule: > {MARGIN} to replace DSMIL) → {verdict}"
    )
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
