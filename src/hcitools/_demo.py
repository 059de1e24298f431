"""The main job: the pipeline on a simulated screen (``hcitools demo`` / ``make demo``)."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

#: The embedded default screen: sparse labels, 16 crops per well of which ~15 % respond to an active compound.
DEMO_DEFAULTS = {
    "n_compounds": 500,
    "n_assays": 12,
    "n_plates": 5,
    "wells_per_compound": 3,
    "fovs_per_well": 2,
    "crops_per_fov": 8,
    "n_features": 64,
    "label_density": 0.15,
    "n_primary": 6,
    "responder_fraction": 0.15,
    "effect_size": 4.0,
}
#: Training settings of the demo's MIL models (the paper's 100 epochs / lr 1e-4 suit far larger screens).
DEMO_TRAIN = {"max_epochs": 60, "warmup_epochs": 20, "patience": 10, "lr": 1e-3, "batch_size": 32}
MIL_METHODS = {
    "MoMIL (gated ABMIL heads)": ("momil", {"n_hidden": 64, "n_head_hidden": 32, "dropout": 0.25}),
    "multi-label MIL": ("multilabel_mil", {"n_hidden": 64, "n_head_hidden": 32, "dropout": 0.25}),
    "mean-pool MLP": ("mean_mlp", {"n_hidden": 64, "dropout": 0.25}),
}


def run_demo(
    out_dir: str | Path = "demo_output",
    *,
    seed: int = 0,
    methods: dict | None = None,
    train_kwargs: dict | None = None,
    **synthetic_kwargs,
) -> pd.DataFrame:
    """Run the pipeline on a simulated screen, print the per-assay compound-level AUROC table, save outputs.

    Steps: simulate a screen (:func:`hcitools.datasets.synthetic_hci`), normalise every plate against its DMSO
    wells (:func:`hcitools.pp.normalize_plates`), split compounds into 5 scaffold-grouped folds
    (:func:`hcitools.pp.split_compounds`), then cross-validate MoMIL and the baselines with
    :func:`hcitools.tl.momil` (3-1-1 rotations: train on three folds, select on one, test on one; well
    probabilities averaged per compound). Baselines: multi-label MIL, a mean-pooled MLP, a per-assay logistic
    regression on mean-pooled wells (:func:`hcitools.tl.pooled_logistic_regression`), and the bag-size (crop count)
    score. It configures no logging: the command line (``python -m hcitools demo``) does that for its console.

    Parameters
    ----------
    out_dir
        Folder for ``demo.h5ad`` and ``demo_auroc.png``.
    seed
        Seed of the simulation, the split and the models.
    methods
        Display name → (``tl.momil`` method, model keyword arguments); default ``MIL_METHODS``.
    train_kwargs
        Overrides of ``DEMO_TRAIN``.
    **synthetic_kwargs
        Overrides of the simulation parameters (``DEMO_DEFAULTS``).

    Returns
    -------
    The tidy results table (assay, method, auroc, auprc, n_pos, n_neg, primary).
    """
    import hcitools as ht

    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {**DEMO_DEFAULTS, **synthetic_kwargs, "seed": seed}
    methods = MIL_METHODS if methods is None else methods
    train = {**DEMO_TRAIN, **(train_kwargs or {}), "enable_progress_bar": False}
    steps = tqdm(total=4 + len(methods), desc="hcitools demo", unit="step")
    try:
        steps.set_postfix_str("simulating a screen")
        adata = ht.datasets.synthetic_hci(**params)
        primary = list(adata.uns["synthetic_hci"]["primary_assays"])
        steps.update()
        steps.set_postfix_str("normalising plates against DMSO")
        ht.pp.normalize_plates(adata, plate_key="plate", control_key="compound", control_value="DMSO")
        ht.pp.split_compounds(adata, method="group", group_key="scaffold", n_folds=5, seed=seed)
        steps.update()
        predictions = {}
        for name, (method, kwargs) in methods.items():
            steps.set_postfix_str(f"cross-validating {name}")
            ht.tl.momil(
                adata,
                method=method,
                key_added=method,
                seed=seed,
                primary_assays=primary,
                train_kwargs=train,
                **kwargs,
            )
            predictions[name] = adata.uns[method]["predictions"]
            steps.update()
        steps.set_postfix_str("logistic-regression baseline")
        wells = ht.pp.aggregate(adata, by="well")
        treated = wells.obs["fold"].to_numpy() >= 0
        compounds = wells.obs["compound"].astype(str).to_numpy()
        lr = ht.tl.pooled_logistic_regression(wells, seed=seed)
        predictions["mean-pool logistic regression"] = lr[treated].groupby(compounds[treated]).mean()
        steps.update()
        steps.set_postfix_str("evaluating")
        cpd_labels = wells.obsm["assays"][treated].groupby(compounds[treated]).first()
        size = ht.tl.bag_size_baseline(adata)
        predictions["bag size (baseline)"] = pd.DataFrame({a: size for a in cpd_labels.columns}).loc[
            cpd_labels.index
        ]
        tables = []
        for name, pred in predictions.items():
            ev = (
                ht.tl.evaluate_assays(pred, cpd_labels)
                .drop(index="macro mean")
                .rename_axis("assay")
                .reset_index()
            )
            tables.append(ev.assign(method=name))
        results = pd.concat(tables, ignore_index=True)
        results["primary"] = results["assay"].isin(primary)
        steps.update()
    finally:
        steps.close()

    wide = results.pivot_table(index="assay", columns="method", values="auroc", sort=False)
    counts = pd.DataFrame(
        {
            "n_pos": (cpd_labels == 1).sum(),
            "n_neg": (cpd_labels == 0).sum(),
            "primary": cpd_labels.columns.isin(primary),
        }
    ).rename_axis("assay")
    table = counts.join(wide)
    summary = pd.DataFrame(
        {
            "mean over primary assays": wide.loc[counts.index[counts["primary"]]].mean(),
            "mean over all assays": wide.mean(),
        }
    ).T
    print("\nCompound-level AUROC on held-out folds (5 rotations: train 3 folds, select on 1, test on 1):")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(float_format=lambda v: f"{v:.3f}"))
        print(summary.to_string(float_format=lambda v: f"{v:.3f}"))
    adata.uns["demo"] = {"params": params, "results": results.astype({"primary": int})}
    h5ad = out_dir / "demo.h5ad"
    adata.write_h5ad(h5ad)
    fig = ht.pl.assay_performance(results, metric="auroc", primary_assays=primary, return_fig=True)
    png = out_dir / "demo_auroc.png"
    fig.savefig(png, dpi=120)
    print(f"\nwrote {h5ad} and {png} in {time.perf_counter() - start:.1f} s")
    return results
