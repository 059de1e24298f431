"""Seconds per epoch of MTAe and of pertpy's scGen on the Kang subset: same cells, same run, as a ratio.

Run: ``.venv-python3.11/bin/python benchmarks/perturbation_speed.py [--epochs 5]``. Both models train on the
training cells of the held-out-B split (``ht.tl.split_ood``), batch size 128, on the same device. scGen needs
JAX (present with pertpy 1.0 on Python 3.11; ``pertpy[jax]`` on 3.12).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import hcitools as ht


def seconds_per_epoch(fit, epochs: int) -> float:
    fit(1)  # compile / warm up
    t = time.perf_counter()
    fit(epochs)
    return (time.perf_counter() - t) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--data", default=os.environ.get("HCITOOLS_DATA", "../shared/data"))
    args = parser.parse_args()
    adata = ht.datasets.kang2018(args.data)
    train, _, _ = ht.tl.split_ood(adata, target="B", condition="stimulated")
    train.X = np.asarray(train.X.toarray(), dtype=np.float32)

    ht.model.MTAe.setup_anndata(train)
    mtae = ht.model.MTAe(train, n_latent=100, n_hidden=(800, 800))  # scGen's default widths

    def fit_mtae(n):
        mtae.train(max_epochs=n, batch_size=128, validation_size=0.1, enable_progress_bar=False)

    import pertpy as pt

    scgen_data = train.copy()
    pt.tl.Scgen.setup_anndata(scgen_data, batch_key="condition", labels_key="cell_type")
    scgen = pt.tl.Scgen(scgen_data)

    def fit_scgen(n):
        scgen.train(max_epochs=n, batch_size=128, early_stopping=False, enable_progress_bar=False)

    t_mtae = seconds_per_epoch(fit_mtae, args.epochs)
    t_scgen = seconds_per_epoch(fit_scgen, args.epochs)
    print(f"{train.n_obs} cells × {train.n_vars} genes, {args.epochs} epochs each")
    print(f"MTAe : {t_mtae:.3f} s/epoch")
    print(f"scGen: {t_scgen:.3f} s/epoch")
    print(f"scGen / MTAe time ratio: {t_scgen / t_mtae:.2f}×")


if __name__ == "__main__":
    main()
