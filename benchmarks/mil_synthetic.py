"""MoMIL against mean pooling and single-task learning on simulated screens, averaged over seeds.

Run: ``.venv-python3.11/bin/python benchmarks/mil_synthetic.py [--seeds 0 1 2] [--n-compounds 400]``.
For each seed a screen is simulated (the screen of ``tests/model/test_mil_synthetic.py``: 16 crops per well,
~10 % responding), normalised against DMSO and split into 5 scaffold-grouped folds; MoMIL (multi-task), the mean-pooled MLP and single-task MoMIL (one model per
primary assay) are cross-validated with ``ht.tl.momil`` (3-1-1 rotations, so every compound is a test compound
once). Prints the mean compound-level AUROC over primary assays (observed labels, as on a real screen) per method
and seed, and the margins MoMIL − mean pooling and multi-task − single-task.
"""

from __future__ import annotations

import argparse
import logging
import time

import pandas as pd

import hcitools as ht

TRAIN = {
    "max_epochs": 40,
    "warmup_epochs": 10,
    "patience": 10,
    "lr": 1e-3,
    "batch_size": 32,
    "enable_progress_bar": False,
}
METHODS = {
    "momil": {"n_hidden": 64, "n_head_hidden": 32, "dropout": 0.25},
    "mean_mlp": {"n_hidden": 64, "dropout": 0.25},
    "stl": {"n_hidden": 64, "n_head_hidden": 32, "dropout": 0.25},
}


def primary_auroc(n_compounds: int, seed: int, label_density: float) -> dict[str, float]:
    adata = ht.datasets.synthetic_hci(
        n_compounds=n_compounds, n_plates=max(3, n_compounds // 100), crops_per_fov=8, responder_fraction=0.1,
        effect_size=6.0, label_noise=0.25, label_density=label_density, seed=seed,
    )  # fmt: skip
    ht.pp.normalize_plates(adata)
    ht.pp.split_compounds(adata, method="group", group_key="scaffold", seed=seed)
    primary = list(adata.uns["synthetic_hci"]["primary_assays"])
    out = {}
    for method, kwargs in METHODS.items():
        ht.tl.momil(
            adata,
            method=method,
            key_added=method,
            seed=seed,
            primary_assays=primary,
            train_kwargs=TRAIN,
            **kwargs,
        )
        ev = adata.uns[method]["evaluation"]
        out[method] = float(ev[(ev["method"] == method) & ev["assay"].isin(primary)]["auroc"].mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-compounds", type=int, default=300)
    parser.add_argument("--label-density", type=float, default=0.25)
    args = parser.parse_args()
    logging.getLogger("hcitools").setLevel(logging.WARNING)
    start = time.perf_counter()
    rows = {seed: primary_auroc(args.n_compounds, seed, args.label_density) for seed in args.seeds}
    table = pd.DataFrame(rows).T.rename_axis("seed")
    table.loc["mean"] = table.mean()
    print(
        f"mean compound-level AUROC over primary assays ({args.n_compounds} compounds, label density {args.label_density}):"
    )
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    m = table.loc["mean"]
    print(
        f"margin MoMIL − mean pooling: {m['momil'] - m['mean_mlp']:+.3f} (seeds won {int((table.drop('mean')['momil'] > table.drop('mean')['mean_mlp']).sum())}/{len(args.seeds)})"
    )
    print(
        f"margin multi-task − single-task: {m['momil'] - m['stl']:+.3f} (seeds won {int((table.drop('mean')['momil'] > table.drop('mean')['stl']).sum())}/{len(args.seeds)})"
    )
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
