"""Seconds per epoch of MTAe and of pertpy's scGen on the Kang subset: same cells, same run, as a ratio.

Run: ``.venv-python3.11/bin/python benchmarks/perturbation_speed.py [--epochs 3] [--repeats 3]``. Both models
train on the training cells of the held-out-B split (``ht.tl.split_ood``, 1,863 cells × 6,998 genes) at scGen's
default widths (hidden 800, 800; latent 100), batch size 128, on the CPU with one thread each (torch's
``set_num_threads(1)``; XLA's Eigen pool off, so JAX does not take every core either). After a warm-up epoch
(JAX compiles), the two are timed alternately ``--repeats`` times (the machine's load changes between runs) and
the medians are compared. scGen needs JAX (present with pertpy 1.0 on Python 3.11; ``pertpy[jax]`` on 3.12).
With ``--threads N`` both use N threads instead.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def seconds_per_epoch(fit, epochs: int) -> float:
    t = time.perf_counter()
    fit(epochs)
    return (time.perf_counter() - t) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", default=os.environ.get("HCITOOLS_DATA", "../shared/data"))
    args = parser.parse_args()
    # before JAX is imported: XLA reads its flags once
    flags = f"--xla_cpu_multi_thread_eigen={'false' if args.threads == 1 else 'true'} "
    flags += f"intra_op_parallelism_threads={args.threads}"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
    import numpy as np
    import torch

    import hcitools as ht

    torch.set_num_threads(args.threads)
    ht.settings.verbosity = "error"
    adata = ht.datasets.kang2018(args.data)
    train, _, _ = ht.tl.split_ood(adata, target="B", condition="stimulated")
    train.X = np.asarray(train.X.toarray(), dtype=np.float32)

    mtae_data = train.copy()
    ht.model.MTAe.setup_anndata(mtae_data)
    mtae = ht.model.MTAe(mtae_data, n_latent=100, n_hidden=(800, 800))  # scGen's default widths

    def fit_mtae(n):
        mtae.train(max_epochs=n, batch_size=128, validation_size=0.1, enable_progress_bar=False)

    import pertpy as pt

    scgen_data = train.copy()
    pt.tl.Scgen.setup_anndata(scgen_data, batch_key="condition", labels_key="cell_type")
    scgen = pt.tl.Scgen(scgen_data, n_hidden=800, n_latent=100, n_layers=2)

    def fit_scgen(n):
        scgen.train(max_epochs=n, batch_size=128, early_stopping=False, enable_progress_bar=False)

    fit_mtae(1)  # warm up
    fit_scgen(1)  # warm up (JAX compiles)
    t_mtae, t_scgen = [], []
    for _ in range(args.repeats):
        t_mtae.append(seconds_per_epoch(fit_mtae, args.epochs))
        t_scgen.append(seconds_per_epoch(fit_scgen, args.epochs))
    m, s = statistics.median(t_mtae), statistics.median(t_scgen)
    print(
        f"{train.n_obs} cells × {train.n_vars} genes, {args.threads} thread(s), {args.repeats} × {args.epochs} epochs each"
    )
    print(f"MTAe : {m:.3f} s/epoch (runs: {', '.join(f'{t:.2f}' for t in t_mtae)})")
    print(f"scGen: {s:.3f} s/epoch (runs: {', '.join(f'{t:.2f}' for t in t_scgen)})")
    print(f"MTAe / scGen epoch-time ratio: {m / s:.2f}× (≤ 1: MTAe is at least as fast)")


if __name__ == "__main__":
    main()
