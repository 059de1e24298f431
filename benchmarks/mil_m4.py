"""M4 and its ablations (002 Table 3) beside MoMIL and torchmil's single-task baselines (002 Table 2).

Run: ``OMP_NUM_THREADS=1 HCITOOLS_DATA=/work/shared/data .venv-python3.11/bin/python benchmarks/mil_m4.py
[--seeds 0 1 2] [--n-compounds 120] [--n-assays 4] [--real-seeds 0] [--max-epochs 12]``.

Methods (same data, splits, seeds and training settings; only the model differs):

- ``MMoE+AMIL``: ``ht.model.M4(expert="amil", gate="mmoe")``; ``MMoE+MP-AMIL``: ``M4(expert="mp_amil",
  gate="mmoe")``; ``M4``: ``M4()`` (MP-AMIL experts + MP-Gate), all with 5 experts and 4 proxies;
- ``MoMIL`` (``ht.model.MoMIL``, default DSMIL heads);
- single-task baselines through torchmil (``ht.model.TorchMIL``): mean / max pooling of instance scores, ABMIL,
  DSMIL, TransMIL, DTFD-MIL, one model per assay (trained side by side in one run, one early stopping).

Data: simulated screens (``ht.datasets.synthetic_hci``, normalised against DMSO, scaffold-grouped folds of
``ht.pp.split_compounds``: test fold 0, validation fold 1, training on the others; value = mean compound-level
AUROC over the primary assays on the test fold), per seed; and the real MIL sets ``corel_dogs`` and ``protein``
(``ht.datasets.mil_dataset``; one stratified 80 / 20 bag split per seed, 20 % of the training bags as inner
validation, features standardised on the training instances; value = bag-level test AUROC). Model selection
never sees the test bags. Epoch time = training wall time / epochs run, as a ratio to MoMIL's on the same data
(mean over data sets); parameters = trainable parameters on the simulated screen. Everything printed is measured
in this run (2-core CPU shared with other jobs: times are noisy).
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
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.preprocessing import StandardScaler

import hcitools as ht
from hcitools.tl._cv import release

HIDDEN = 32
M4_KW = {"n_experts": 5, "n_proxies": 4, "n_hidden": HIDDEN, "n_attention": 16, "n_gate_hidden": 16,
         "n_tower_hidden": 16, "dropout": 0.25}  # fmt: skip
METHODS = {
    "MMoE+AMIL": ("M4", {**M4_KW, "expert": "amil", "gate": "mmoe"}),
    "MMoE+MP-AMIL": ("M4", {**M4_KW, "expert": "mp_amil", "gate": "mmoe"}),
    "M4": ("M4", M4_KW),
    "MoMIL": ("MoMIL", {"n_hidden": HIDDEN, "n_head_hidden": 16, "dropout": 0.25}),
    **{
        label: ("TorchMIL", {"model": name, "n_hidden": HIDDEN, "n_attention": 16})
        for label, name in (
            ("Mean-Pooling", "mean"),
            ("Max-Pooling", "max"),
            ("AMIL", "abmil"),
            ("DSMIL", "dsmil"),
            ("TransMIL", "transmil"),
            ("DTFD-MIL", "dtfd"),
        )
    },
}
ORDER = ["Mean-Pooling", "Max-Pooling", "AMIL", "DSMIL", "TransMIL", "DTFD-MIL", "MoMIL", "MMoE+AMIL",
         "MMoE+MP-AMIL", "M4"]  # fmt: skip


def fit(label: str, adata, train_kwargs: dict, primary=None):
    """Train one method; return the model, its wall time per epoch and its parameter count."""
    cls, kwargs = METHODS[label]
    Model = getattr(ht.model, cls)
    Model.setup_anndata(adata, **({"group_key": "compound"} if "compound" in adata.obs else {}))
    model = Model(adata, primary_assays=primary, **kwargs)
    t = time.perf_counter()
    model.train(**train_kwargs)
    epochs = len(model.history["train_loss"])
    n_params = sum(p.numel() for p in model.module.parameters() if p.requires_grad)
    return model, (time.perf_counter() - t) / max(1, epochs), n_params


def simulated(args, seed: int) -> list[dict]:
    adata = ht.datasets.synthetic_hci(
        n_compounds=args.n_compounds, n_assays=args.n_assays, n_primary=args.n_primary,
        n_plates=max(3, args.n_compounds // 100), crops_per_fov=4, responder_fraction=0.2, effect_size=6.0,
        label_noise=0.25, label_density=args.label_density, n_features=32, seed=seed,
    )  # fmt: skip
    ht.pp.normalize_plates(adata)
    ht.pp.split_compounds(adata, method="group", group_key="scaffold", seed=seed)
    primary = list(adata.uns["synthetic_hci"]["primary_assays"])
    fold = adata.obs["fold"].to_numpy()
    train = adata[fold >= 1].copy()
    train.obs["val"] = (train.obs["fold"] == 1).astype(int)
    test = adata[fold == 0].copy()
    labels = test.obsm["assays"].groupby(test.obs["compound"].astype(str).to_numpy()).first()
    rows = []
    for label in ORDER:
        kw = {**args.train, "seed": seed, "validation_key": "val", "validation_values": [1]}
        model, epoch_time, n_params = fit(label, train, kw, primary)
        pred = model.predict(test, level="compound")
        ev = ht.tl.evaluate_assays(pred, labels.loc[pred.index], assays=primary)
        rows.append({"data set": "simulated", "seed": seed, "method": label,
                     "auroc": float(ev.loc["macro mean", "auroc"]), "epoch_s": epoch_time, "params": n_params})  # fmt: skip
        release(model)
    return rows


def real(args, name: str, seed: int) -> list[dict]:
    adata = ht.datasets.mil_dataset(name, args.mil_path)
    bags = adata.obs["well"].astype(str).to_numpy()
    wells = ht.pp.aggregate(adata, by="well")
    y = wells.obsm["assays"][name].to_numpy()
    names = wells.obs_names.to_numpy()
    outer = StratifiedShuffleSplit(1, test_size=0.2, random_state=seed)
    tr, te = next(outer.split(names, y))
    inner = StratifiedShuffleSplit(1, test_size=0.2, random_state=seed + 1000)
    _, va = next(inner.split(names[tr], y[tr]))
    in_train = np.isin(bags, names[tr])
    train, test = adata[in_train].copy(), adata[np.isin(bags, names[te])].copy()
    scaler = StandardScaler().fit(train.X)
    train.X = scaler.transform(train.X).astype(np.float32)
    test.X = scaler.transform(test.X).astype(np.float32)
    train.obs["val"] = np.isin(bags[in_train], names[tr][va]).astype(int)
    rows = []
    for label in ORDER:
        kw = {**args.train, "seed": seed, "validation_key": "val", "validation_values": [1]}
        model, epoch_time, n_params = fit(label, train, kw)
        pred = model.predict(test)[name].loc[names[te]].to_numpy()
        rows.append({"data set": name, "seed": seed, "method": label,
                     "auroc": float(roc_auc_score(y[te], pred)), "epoch_s": epoch_time, "params": n_params})  # fmt: skip
        release(model)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="simulated-screen seeds")
    parser.add_argument("--n-compounds", type=int, default=120)
    parser.add_argument("--n-assays", type=int, default=4)
    parser.add_argument("--n-primary", type=int, default=4)
    parser.add_argument("--label-density", type=float, default=0.5)
    parser.add_argument("--real-seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--real-sets", nargs="*", default=["corel_dogs", "protein"])
    parser.add_argument("--max-epochs", type=int, default=12)
    parser.add_argument(
        "--mil-path", default=os.path.join(os.environ.get("HCITOOLS_DATA", "../shared/data"), "mil")
    )
    args = parser.parse_args()
    args.train = {"max_epochs": args.max_epochs, "warmup_epochs": args.max_epochs // 3, "patience": 5,
                  "lr": 1e-3, "batch_size": 32, "enable_progress_bar": False}  # fmt: skip
    torch.set_num_threads(1)
    for name in ("hcitools", "scvi", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    start = time.perf_counter()
    rows = []
    jobs = [("simulated", s) for s in args.seeds] + [(n, s) for n in args.real_sets for s in args.real_seeds]
    for name, seed in jobs:
        t = time.perf_counter()
        res = simulated(args, seed) if name == "simulated" else real(args, name, seed)
        rows += res
        print(f"{name} seed {seed}: " + ", ".join(f"{r['method']} {r['auroc']:.3f}" for r in res)
              + f" ({time.perf_counter() - t:.0f} s)", flush=True)  # fmt: skip
    long = pd.DataFrame(rows)
    sets = [s for s in ["simulated", *args.real_sets] if s in set(long["data set"])]
    table = long.groupby(["method", "data set"])["auroc"].mean().unstack("data set").loc[ORDER, sets]
    table["Average"] = table.mean(axis=1)
    ratio = long.pivot_table(index=["data set", "seed"], columns="method", values="epoch_s")
    ratio = ratio.div(ratio["MoMIL"], axis=0).mean()
    table["epoch time / MoMIL"] = ratio.loc[ORDER]
    params = long[long["data set"] == sets[0]].groupby("method")["params"].first()
    table["params"] = params.loc[ORDER].astype(int)
    print(
        f"\nAUROC (simulated: mean compound-level test AUROC over {args.n_primary} primary assays of "
        f"{args.n_assays}, {args.n_compounds} compounds, seeds {args.seeds}; real sets: bag-level test AUROC, "
        f"seeds {args.real_seeds}); max_epochs={args.max_epochs}; params on {sets[0]}"
    )
    fmt = {c: "{:.3f}".format for c in [*sets, "Average"]}
    fmt["epoch time / MoMIL"] = "{:.2f}".format
    fmt["params"] = "{:,}".format
    print(table.to_string(formatters=fmt))
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
