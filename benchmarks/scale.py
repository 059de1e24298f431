"""Screens on disk at two sizes: peak memory and throughput of the out-of-core path against the in-memory one.

Run: ``.venv-python3.11/bin/python benchmarks/scale.py`` (defaults run here in a few minutes); the papers' scale:
``--crops 250000`` (and ``--factor 4`` for 1 M crops) ``--features 768``.

For each size (``--crops`` and ``--factor`` × ``--crops``) a simulated screen (16 crops per well, 2 wells per
compound, 10 % DMSO wells per plate of 384 wells, sparse labels of ``--assays`` assays) is written to an .h5ad
file block by block, with its compounds × assays labels (the MuData layout: labels once per compound). Then, each
in a fresh process (so that peak memory is its own):

- **out of core**: open with ``backed="r"``, ``ht.pp.normalize_plates(..., path=...)`` into a new file, MoMIL set
  up on ``MuData({"crops": backed, "compounds": labels})``, one training epoch, ``predict``;
- **in memory**: read the file whole, ``normalize_plates`` in memory, the same MuData model, epoch and predict.

Printed: peak RSS (``resource.getrusage``), wall times, training bags/s, and the targets of issue #15: peak RSS at
the larger size ≤ 1.2× the peak at the smaller (out of core), out-of-core training throughput ≥ 70 % of in-memory
(each size), as met / NOT met. An in-memory run whose peak, extrapolated from the smaller size, would exceed 90 % of
the available memory is skipped (and said so) rather than killed by the kernel.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

CROPS_PER_WELL = 16
WELLS_PER_PLATE = 384


def write_screen(path: str, n_crops: int, n_features: int, n_assays: int, seed: int = 0) -> None:
    """Write a simulated screen (crops h5ad at ``path``, labels at ``path + '.compounds.h5ad'``) plate by plate."""
    import anndata as ad
    import pandas as pd

    from hcitools.pp._disk import write_h5ad_blocks

    rng = np.random.default_rng(seed)
    n_wells = n_crops // CROPS_PER_WELL
    plate = np.arange(n_wells) // WELLS_PER_PLATE
    pos = np.arange(n_wells) % WELLS_PER_PLATE
    dmso = (pos % 10) == 0
    n_cpd = int((~dmso).sum()) // 2 + 1
    compound = np.where(dmso, "DMSO", "").astype(object)
    compound[~dmso] = [f"cpd{i:07d}" for i in (np.arange((~dmso).sum()) // 2)]
    k = 8
    z = rng.normal(size=(n_cpd, k)).astype(np.float32)
    W = rng.normal(size=(k, n_features)).astype(np.float32) / np.sqrt(k)
    V = rng.normal(size=(k, n_assays))
    cpd_index = pd.Index([f"cpd{i:07d}" for i in range(n_cpd)])
    labels = (z @ V > 1.0).astype(np.float32)
    labels[rng.random(labels.shape) > 0.3] = np.nan  # sparse: 30 % of the pairs measured
    compounds = ad.AnnData(
        labels,
        obs=pd.DataFrame(index=cpd_index),
        var=pd.DataFrame(index=[f"assay_{t:03d}" for t in range(n_assays)]),
    )
    compounds.write_h5ad(path + ".compounds.h5ad")
    well_names = np.array([f"p{p:04d}_w{w:03d}" for p, w in zip(plate, pos, strict=True)])
    rows = np.repeat(np.arange(n_wells), CROPS_PER_WELL)
    obs = pd.DataFrame(
        {
            "plate": pd.Categorical(np.char.add("p", plate[rows].astype(str))),
            "well": pd.Categorical(well_names[rows]),
            "compound": pd.Categorical(compound[rows]),
        },
        index=pd.Index(np.char.add("c", np.arange(len(rows)).astype(str))),
    )
    skeleton = ad.AnnData(obs=obs, var=pd.DataFrame(index=[f"f{j}" for j in range(n_features)]))
    code = cpd_index.get_indexer(compound)
    plate_shift = rng.normal(scale=0.5, size=(plate.max() + 1, n_features)).astype(np.float32)

    def blocks():
        for p in range(plate.max() + 1):
            wells = np.flatnonzero(plate == p)
            effect = np.where(code[wells, None] >= 0, z[np.maximum(code[wells], 0)] @ W, 0.0)
            block = np.repeat(effect, CROPS_PER_WELL, axis=0) + plate_shift[p]
            block += rng.normal(size=block.shape).astype(np.float32)
            yield int(wells[0]) * CROPS_PER_WELL, block.astype(np.float32)

    write_h5ad_blocks(path, skeleton, n_features=n_features, dtype=np.float32, blocks=blocks).file.close()


def worker(mode: str, path: str, batch_size: int) -> dict:
    """One measurement in this (fresh) process: normalise, train one epoch, predict; returns times and peak RSS."""
    import resource
    import warnings

    import anndata as ad
    import lightning.pytorch as pl
    import mudata as mu
    import torch

    import hcitools as ht

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")

    class EpochTimer(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            self.seconds = time.perf_counter() - self.start

    compounds = ad.read_h5ad(path + ".compounds.h5ad")
    ht.model.MoMIL  # imports (torch, scvi-tools) before the clock starts  # noqa: B018
    with open("/proc/self/statm") as f:  # resident memory after the imports (Linux)
        base_mb = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    t0 = time.perf_counter()
    norm_path = path.replace(".h5ad", f".{os.getpid()}.norm.h5ad")
    if mode == "disk":
        raw = ad.read_h5ad(path, backed="r")
        crops = ht.pp.normalize_plates(raw, control_value="DMSO", path=norm_path)
    else:
        crops = ad.read_h5ad(path)
        ht.pp.normalize_plates(crops, control_value="DMSO")
    t_norm = time.perf_counter() - t0
    measured = compounds.obs_names[~np.isnan(compounds.X).all(axis=1)]
    labelled = int(crops.obs.groupby("well", observed=True)["compound"].first().isin(measured).sum())
    mdata = mu.MuData({"crops": crops, "compounds": compounds})
    ht.model.MoMIL.setup_mudata(mdata, group_key="compound")
    model = ht.model.MoMIL(mdata, n_hidden=128, n_head_hidden=64)
    timer = EpochTimer()
    t1 = time.perf_counter()
    model.train(
        max_epochs=1, batch_size=batch_size, validation_size=0.0, accelerator="cpu", enable_progress_bar=False,
        callbacks=[timer], seed=0,
    )  # fmt: skip
    t_train = time.perf_counter() - t1
    t2 = time.perf_counter()
    pred = model.predict(batch_size=batch_size)
    t_pred = time.perf_counter() - t2
    if mode == "disk":
        os.remove(norm_path)
    return {
        "mode": mode,
        "n_crops": int(crops.n_obs),
        "n_bags": len(pred),
        "n_train": labelled,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "base_rss_mb": base_mb,
        "normalise_s": t_norm,
        "train_s": t_train,
        "epoch_s": timer.seconds,
        "predict_s": t_pred,
        "train_bags_per_s": labelled / timer.seconds,
        "predict_bags_per_s": len(pred) / t_pred,
    }


def available_mb() -> float:
    """MemAvailable of /proc/meminfo (Linux), in MB."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def memory_needed(results: list[dict], n_crops: int) -> float | None:
    """Peak RSS (MB) of the in-memory path at ``n_crops``, extrapolated linearly from the last in-memory run."""
    mem = [r for r in results if r["mode"] == "memory"]
    if not mem:
        return None
    r = mem[-1]
    return r["base_rss_mb"] + (r["peak_rss_mb"] - r["base_rss_mb"]) * n_crops / r["n_crops"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crops", type=int, default=49152, help="crops of the smaller screen")
    parser.add_argument("--factor", type=int, default=4, help="the larger screen has factor × crops")
    parser.add_argument("--features", type=int, default=384)
    parser.add_argument("--assays", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--dir", default=None, help="where to write the screens (default: a temporary folder)"
    )
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.batch_size)))
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        results = []
        for n in (args.crops, args.crops * args.factor):
            path = os.path.join(tmp, f"screen_{n}.h5ad")
            t = time.perf_counter()
            write_screen(path, n, args.features, args.assays)
            size_gb = os.path.getsize(path) / 1e9
            print(
                f"wrote {n} crops × {args.features}-d ({size_gb:.2f} GB) in {time.perf_counter() - t:.1f} s",
                flush=True,
            )
            for mode in ("disk", "memory"):
                need = memory_needed(results, n) if mode == "memory" else None
                if need is not None and need > 0.9 * available_mb():
                    print(
                        f"in memory at {n:,} crops: skipped, it would need ≈ {need / 1024:.1f} GB (extrapolated "
                        f"from the smaller size) and {available_mb() / 1024:.1f} GB are available",
                        flush=True,
                    )
                    continue
                cmd = [sys.executable, __file__, "--worker", mode, path, "--batch-size", str(args.batch_size)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                res = json.loads(out.strip().splitlines()[-1])
                res["file_gb"] = size_gb
                results.append(res)
                print(json.dumps(res), flush=True)
    print()
    print(
        "| crops | path | file GB | peak RSS MB (above imports) | normalise s | train s (epoch s) | train bags/s | predict bags/s |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r['n_crops']:,} | {'out of core' if r['mode'] == 'disk' else 'in memory'} | {r['file_gb']:.2f} | "
            f"{r['peak_rss_mb']:.0f} ({r['peak_rss_mb'] - r['base_rss_mb']:.0f}) | {r['normalise_s']:.1f} | {r['train_s']:.1f} ({r['epoch_s']:.1f}) | "
            f"{r['train_bags_per_s']:.0f} | {r['predict_bags_per_s']:.0f} |"
        )
    disk = [r for r in results if r["mode"] == "disk"]
    mem = {r["n_crops"]: r for r in results if r["mode"] == "memory"}
    ratio = disk[1]["peak_rss_mb"] / disk[0]["peak_rss_mb"]
    above = (disk[1]["peak_rss_mb"] - disk[1]["base_rss_mb"]) / (
        disk[0]["peak_rss_mb"] - disk[0]["base_rss_mb"]
    )
    print()
    in_memory = (
        f"{mem[disk[1]['n_crops']]['peak_rss_mb'] / mem[disk[0]['n_crops']]['peak_rss_mb']:.2f}×"
        if len(mem) == 2
        else "did not fit at the larger size"
    )
    print(
        f"target peak RSS (out of core) at {args.factor}× the data ≤ 1.2× the peak at 1×: {ratio:.2f}× -> "
        f"{'met' if ratio <= 1.2 else 'NOT met'} (above the imports: {above:.2f}×; in memory: {in_memory})"
    )
    for d in disk:
        if d["n_crops"] not in mem:
            print(
                f"out-of-core training at {d['n_crops']:,} crops: {d['train_bags_per_s']:.0f} bags/s (no in-memory run)"
            )
            continue
        m = mem[d["n_crops"]]
        tp = d["train_bags_per_s"] / m["train_bags_per_s"]
        print(
            f"target out-of-core training throughput ≥ 70 % of in-memory ({d['n_crops']:,} crops): {tp:.0%} -> "
            f"{'met' if tp >= 0.7 else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
