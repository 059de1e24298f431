"""Throughput of MoMIL training: batched ragged bags vs a batch-size-1 loop, 6 vs 200 assays, FLOP/s.

Run: ``.venv-python3.11/bin/python benchmarks/mil_throughput.py`` (CPU or GPU). Prints, measured in this run:
bags per second of training steps (forward, masked loss, backward, AdamW) with batches of 256 bags and with one
bag at a time; the time of 200 assays relative to 6; and the achieved FLOP/s relative to a plain matmul.
Targets (issue #4): batched ≥ 20× batch size 1; 200 assays ≤ 3× the time of 6.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from hcitools.dataloaders import BagCollator, BagData
from hcitools.module import MoMILModule


def make_bags(n_bags: int, n_instances: int, n_features: int, n_tasks: int, seed: int = 0) -> BagData:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(n_instances // 2, n_instances + 1, size=n_bags)  # ragged, as after QC
    X = rng.normal(size=(sizes.sum(), n_features)).astype(np.float32)
    bags = np.repeat(np.arange(n_bags), sizes)
    labels = np.where(rng.random((n_bags, n_tasks)) < 0.2, rng.integers(0, 2, (n_bags, n_tasks)), np.nan)
    return BagData.from_arrays(X, bags, labels[bags], n_tasks)


def train_rate(module, data: BagData, batch_size: int, n_bags: int, device) -> float:
    """Bags per second of training steps on the first ``n_bags`` bags."""
    collate = BagCollator(data)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)
    module.train().to(device)
    batches = [collate(list(range(i, min(i + batch_size, n_bags)))) for i in range(0, n_bags, batch_size)]
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]

    def step(b):
        _, _, loss = module(b)
        opt.zero_grad(set_to_none=True)
        loss.loss.backward()
        opt.step()

    step(batches[0])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for b in batches:
        step(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n_bags / (time.perf_counter() - t)


def forward_flops_per_bag(n: float, D: int, d: int, h: int, T: int) -> float:
    """Multiply-adds × 2 of one bag's forward pass (projector, task projector, gated attention, classifier)."""
    return 2 * n * (D * d + T * (d * h + 2 * h * h + h)) + 2 * T * h


def matmul_flops_per_s(device, size: int = 1024, reps: int = 20) -> float:
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * reps / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bags", type=int, default=2048, help="bags per batched measurement")
    parser.add_argument("--single-bags", type=int, default=128, help="bags for the batch-size-1 loop")
    parser.add_argument("--instances", type=int, default=16)
    parser.add_argument("--features", type=int, default=768)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d, h = 128, 64
    rates = {}
    mean_n = None
    for T in (6, 200):
        data = make_bags(args.bags, args.instances, args.features, T)
        mean_n = float(data.sizes.mean())
        module = MoMILModule(args.features, T, n_hidden=d, n_head_hidden=h, dropout=0.5)
        rates[(T, "batched")] = train_rate(module, data, args.batch_size, args.bags, device)
        rates[(T, "single")] = train_rate(module, data, 1, args.single_bags, device)
    peak = matmul_flops_per_s(device)
    print(
        f"device {device}; {args.instances} instances × {args.features}-d per bag (ragged, mean {mean_n:.1f}); batch {args.batch_size} bags"
    )
    for T in (6, 200):
        b, s = rates[(T, "batched")], rates[(T, "single")]
        flops = 3 * forward_flops_per_bag(mean_n, args.features, d, h, T) * b  # training ≈ 3 × forward
        print(
            f"{T:>4} assays: batched {b:8.0f} bags/s | batch size 1 {s:6.0f} bags/s | speed-up {b / s:5.1f}× | {flops / 1e9:6.1f} GFLOP/s = {flops / peak:.2f} × plain matmul ({peak / 1e9:.0f} GFLOP/s)"
        )
    print(
        f"time of 200 assays / time of 6 assays (batched): {rates[(6, 'batched')] / rates[(200, 'batched')]:.2f}×"
    )


if __name__ == "__main__":
    main()
