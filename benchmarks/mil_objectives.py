"""Multi-task objectives of MoMIL on simulated screens: every task weighting and branch against equal weighting.

Run: ``.venv-python3.11/bin/python benchmarks/mil_objectives.py [--seeds 0 1 2] [--n-compounds 120]``.

For each seed a screen is simulated by ``ht.datasets.synthetic_hci`` and left **un-normalised**, so that its plate
effects are strong (``plate_effect=1.0``), and its compounds are dealt to 5 scaffold-grouped folds. Nested
protocol: fold 0 is the test fold (never seen by any training, selection or potential), fold 1 the validation
fold (early stopping, model selection and AMTL's validation AUROCs), folds 2–4 train. Each option trains one MoMIL
with the same seed and settings:

- ``equal`` (the baseline: plain MoMIL), ``uncertainty`` (Kendall et al.), ``amtl`` (000 §3.3.4, with task
  potentials of the primary assays from :func:`hcitools.tl.task_potentials` cross-validated over the three
  training folds only; the sparse secondary assays get AMTL's fixed target ``p``),
  ``amtl_geometric`` and ``dwa``;
- ``adversarial`` (gradient-reversal plate branch, default schedule and discriminator steps; ``adversarial_w10``
  with a fixed ``adversarial_weight=10``), ``prior`` (task-prior
  loss, λ = 0.1, with the affinity of the simulation's mechanism structure: c_ij = Jaccard overlap of the
  mechanisms that assays i and j read out; primary assays are the key assays) and ``aux_cell_count`` (auxiliary
  regression of ``obs["cell_count"]``), each with equal weighting.

Printed per option, as mean ± SD over seeds: the mean primary compound AUROC on the test fold (against the
simulation's true labels of every test compound) and its difference to ``equal``; the balanced accuracy of a
linear plate probe (:func:`hcitools.tl.probe_concepts`, 3-fold, on the test-fold bags) from the attention-pooled
bag embedding and from the shared projection (the representation the adversary acts on), against chance 1/3;
and the time per training epoch as a ratio to ``equal`` measured in the same run (target ≤ 1.5×: met / NOT met).
The time of ``amtl`` excludes that of its potentials (reported separately).
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

import hcitools as ht

MODEL = {"n_hidden": 32, "n_head_hidden": 16, "dropout": 0.25}
TRAIN = {
    "max_epochs": 25,
    "warmup_epochs": 8,
    "patience": 8,
    "lr": 3e-3,
    "batch_size": 24,
    "enable_progress_bar": False,
}
TEST_FOLD, VALIDATION_FOLD = 0, 1
TIME_TARGET = 1.5
OPTIONS = [
    "equal", "uncertainty", "amtl", "amtl_geometric", "dwa", "adversarial", "adversarial_w10", "prior",
    "aux_cell_count",
]  # fmt: skip


def simulate(n_compounds: int, seed: int):
    adata = ht.datasets.synthetic_hci(
        n_compounds=n_compounds, n_assays=6, n_primary=2, n_plates=3, n_features=16, fovs_per_well=1,
        crops_per_fov=8, responder_fraction=0.5, label_noise=0.25, label_density=0.3, plate_effect=1.0,
        seed=seed,
    )  # fmt: skip
    ht.pp.split_compounds(adata, method="group", group_key="scaffold", seed=seed)
    return adata


def mechanism_affinity(adata) -> pd.DataFrame:
    """Jaccard overlap of the mechanisms each pair of assays reads out (1 on the diagonal)."""
    mech = {a: set(m) for a, m in adata.uns["synthetic_hci"]["assay_mechanisms"].items()}
    names = list(adata.obsm["assays"].columns)
    values = [[len(mech[a] & mech[b]) / len(mech[a] | mech[b]) for b in names] for a in names]
    return pd.DataFrame(values, index=names, columns=names)


def training_potentials(adata, primary, seed: int) -> pd.Series:
    """Task potentials cross-validated over the training folds only (2, 3, 4 renumbered 0, 1, 2; DMSO kept)."""
    train = adata[~adata.obs["fold"].isin([TEST_FOLD, VALIDATION_FOLD])].copy()
    train.obs["fold"] = train.obs["fold"].map({-1: -1, 2: 0, 3: 1, 4: 2}).astype(int)
    kwargs = {**TRAIN, "max_epochs": 10, "warmup_epochs": 4, "patience": 4}
    return ht.tl.task_potentials(
        train, primary_assays=primary, seed=seed, train_kwargs=kwargs, progress=False, **MODEL
    )


def run_option(option: str, adata, test, potentials, seed: int) -> dict:
    fit = adata.copy()
    model_kw, train_kw = dict(MODEL), {}
    setup = {"group_key": "compound", "batch_key": "plate"}
    if option in ("uncertainty", "amtl", "amtl_geometric", "dwa"):
        train_kw["weighting"] = option
    if option == "amtl":
        train_kw["weighting_kwargs"] = {"potentials": potentials}
    if option.startswith("adversarial"):
        model_kw["adversarial"] = True
    if option == "adversarial_w10":
        train_kw["adversarial_weight"] = 10.0
    if option == "prior":
        model_kw.update(task_affinity=mechanism_affinity(adata), prior_weight=0.1)
        model_kw["key_assays"] = list(adata.uns["synthetic_hci"]["primary_assays"])
    if option == "aux_cell_count":
        setup["aux_keys"] = ["cell_count"]
    ht.model.MoMIL.setup_anndata(fit, **setup)
    primary = list(adata.uns["synthetic_hci"]["primary_assays"])
    model = ht.model.MoMIL(fit, primary_assays=primary, **model_kw)
    start = time.perf_counter()
    model.train(validation_key="fold", validation_values=[VALIDATION_FOLD], seed=seed, **TRAIN, **train_kw)
    seconds = time.perf_counter() - start
    epochs = len(model.history["train_loss"])
    truth = adata.uns["synthetic_hci"]["true_labels"]
    pred = model.predict(test, level="compound").drop(index="DMSO", errors="ignore")
    auroc = float(np.mean([roc_auc_score(truth.loc[pred.index, a], pred[a]) for a in primary]))
    probe = ht.tl.probe_concepts(test, model, keys="plate", n_splits=3, seed=seed)
    probe = probe.set_index("representation")["score"]
    return {
        "option": option,
        "seed": seed,
        "auroc": auroc,
        "probe_bag_embedding": float(probe["bag_embedding"]),
        "probe_shared": float(probe["shared_projection"]),
        "probe_input": float(probe["pooled_input"]),
        "epoch_seconds": seconds / epochs,
        "epochs": epochs,
    }


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    base = rows[rows["option"] == "equal"].set_index("seed")
    rows = rows.assign(
        delta=rows["auroc"] - rows["seed"].map(base["auroc"]),
        time_ratio=rows["epoch_seconds"] / rows["seed"].map(base["epoch_seconds"]),
    )
    g = rows.groupby("option", sort=False)

    def pm(col, digits=3):
        return g[col].mean().round(digits).astype(str) + " ± " + g[col].std().round(digits).astype(str)

    ratio = g["time_ratio"].mean()
    return pd.DataFrame(
        {
            "primary AUROC (test)": pm("auroc"),
            "Δ vs equal": pm("delta"),
            "plate probe, bag embedding": pm("probe_bag_embedding"),
            "plate probe, shared projection": pm("probe_shared"),
            "epoch time / equal": ratio.round(2).astype(str) + "×",
            f"≤ {TIME_TARGET}×": np.where(ratio <= TIME_TARGET, "met", "NOT met"),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-compounds", type=int, default=120)
    parser.add_argument("--options", nargs="+", default=OPTIONS, choices=OPTIONS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ht.settings.verbosity = "error"
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    rows, potential_seconds, start = [], [], time.perf_counter()
    for seed in args.seeds:
        adata = simulate(args.n_compounds, seed)
        test = adata[adata.obs["fold"] == TEST_FOLD].copy()
        t0 = time.perf_counter()
        primary = list(adata.uns["synthetic_hci"]["primary_assays"])
        potentials = training_potentials(adata, primary, seed) if "amtl" in args.options else None
        potential_seconds.append(time.perf_counter() - t0)
        for option in ["equal", *[o for o in args.options if o != "equal"]]:
            rows.append(run_option(option, adata, test, potentials, seed))
            r = rows[-1]
            print(
                f"seed {seed} {option:>15}: AUROC {r['auroc']:.3f}, plate probe {r['probe_bag_embedding']:.3f} "
                f"(shared {r['probe_shared']:.3f}, input {r['probe_input']:.3f}), "
                f"{r['epoch_seconds']:.3f} s/epoch × {r['epochs']}",
                flush=True,
            )
    rows = pd.DataFrame(rows)
    table = summarise(rows)
    print(
        f"\n{args.n_compounds} compounds, seeds {args.seeds}, un-normalised (plate probe from the pooled input: "
        f"{rows['probe_input'].mean():.3f}; chance 0.333); AMTL potentials took "
        f"{np.mean(potential_seconds):.0f} s per seed; total {time.perf_counter() - start:.0f} s\n"
    )
    print(table.to_markdown())


if __name__ == "__main__":
    main()
