"""Throughput of MoMIL training: batched ragged bags vs a batch-size-1 loop, 6 vs 200 assays, FLOP/s.

Run: ``.venv-python3.11/bin/python benchmarks/mil_throughput.py`` (CPU or GPU). Prints, measured in this run:

- **training steps** (forward, masked loss, backward, AdamW in a bare loop): bags per second with batches of
  256 bags, with one bag at a time, and with one bag at a time through one head module per assay in a Python loop
  (the public MIL code's way); the achieved FLOP/s relative to a plain matmul;
- **end to end** (``model.train`` through scvi-tools / Lightning, the data loader and collate included): bags
  per second of a training epoch with ``batch_size=256``, with ``batch_size=1``, and with ``batch_size=256``
  and ``group_by_size=True`` (bags of similar size batched together: less padding);
- the time of 200 assays relative to 6.

- a **profile** of one training step (issue #15): the time of the collate, forward, backward and optimiser step,
  and the shares of the step's operator time in matrix products, dropout's random numbers and other elementwise
  kernels (``torch.profiler``), with AdamW's default (per-parameter) update and with ``foreach=True`` (the
  multi-tensor update).

Targets (issue #4): batched ≥ 20× batch size 1; 200 assays ≤ 3× the time of 6. Issue #15: batched ≥ 10× batch
size 1 with a Python loop over per-assay head modules (:class:`LoopedDSMIL`, how the public MIL code runs, 6
assays); ≥ 50 % of the measured dense-matmul FLOP/s at 6 and at 200 assays; 200 assays cost no more than
their FLOP ratio. Printed as met / NOT met. Bags hold 16 instances (a superset-like well: 16 crops × 768-d);
``--min-instances 8`` makes them ragged (8–16). On a CPU shared with other jobs the rates vary from run to run;
the ratios are measured in one run.
"""

from __future__ import annotations

import argparse
import time
import warnings

import anndata as ad
import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch

from hcitools.dataloaders import BagCollator, BagData
from hcitools.module import MoMILModule


def make_bags(
    n_bags: int,
    n_instances: int,
    n_features: int,
    n_tasks: int,
    min_instances: int | None = None,
    seed: int = 0,
) -> BagData:
    """Bags of ``n_instances`` instances (or ragged, ``min_instances`` … ``n_instances``, as after crop QC)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(min_instances or n_instances, n_instances + 1, size=n_bags)
    X = rng.normal(size=(sizes.sum(), n_features)).astype(np.float32)
    bags = np.repeat(np.arange(n_bags), sizes)
    labels = np.where(rng.random((n_bags, n_tasks)) < 0.2, rng.integers(0, 2, (n_bags, n_tasks)), np.nan)
    return BagData.from_arrays(X, bags, labels[bags], n_tasks)


def train_rate(
    module, data: BagData, batch_size: int, n_bags: int, device, repeats: int = 3, foreach: bool = False
) -> float:
    """Bags per second of training steps on the first ``n_bags`` bags (the best of ``repeats`` passes)."""
    collate = BagCollator(data)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4, foreach=foreach)
    module.train().to(device)
    batches = [collate(list(range(i, min(i + batch_size, n_bags)))) for i in range(0, n_bags, batch_size)]
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]

    def step(b):
        _, _, loss = module(b)
        opt.zero_grad(set_to_none=True)
        loss.loss.backward()
        opt.step()

    step(batches[0])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for b in batches:
            step(b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return n_bags / best


class LoopedDSMIL(torch.nn.Module):
    """The reference for the issue's baseline: a shared projector and one DSMIL head **module per assay**, run
    one bag at a time with a Python loop over the heads, as the public MIL code is used (one ``nn.Module`` per
    task; no task batching, no padding). Same layers, widths and dropout as :class:`MoMILModule`'s DSMIL heads.
    """

    def __init__(self, n_input: int, n_tasks: int, d: int, h: int, dropout: float = 0.5):
        super().__init__()
        nn = torch.nn
        self.projector = nn.Sequential(nn.Linear(n_input, d), nn.ReLU(), nn.Dropout(dropout))
        self.heads = nn.ModuleList(
            nn.ModuleDict(
                {
                    "project": nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Dropout(dropout)),
                    "instance": nn.Linear(h, 1),
                    "query": nn.Sequential(nn.Linear(h, h), nn.Tanh()),
                    "value": nn.Linear(h, h),
                    "bag": nn.Linear(h, 1),
                }
            )
            for _ in range(n_tasks)
        )

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of one bag (``x``: N × D, ``labels``: T with NaN = unobserved)."""
        f = torch.nn.functional
        hx = self.projector(x)
        loss = x.new_zeros(())
        for t, head in enumerate(self.heads):
            if torch.isnan(labels[t]):
                continue
            H = head["project"](hx)
            inst = head["instance"](H).squeeze(-1)
            crit = inst.argmax()
            Q = head["query"](H)
            a = torch.softmax(Q @ Q[crit] / Q.shape[-1] ** 0.5, 0)
            bag = head["bag"](a @ head["value"](H)).squeeze(-1)
            y = labels[t]
            loss = loss + 0.5 * f.binary_cross_entropy_with_logits(inst[crit], y)
            loss = loss + 0.5 * f.binary_cross_entropy_with_logits(bag, y)
        return loss


def looped_rate(data: BagData, n_bags: int, d: int, h: int, device, repeats: int = 3) -> float:
    """Bags per second of :class:`LoopedDSMIL` trained one bag at a time (AdamW, best of ``repeats``)."""
    T = data.labels.shape[1]
    model = LoopedDSMIL(data.X.shape[1], T, d, h).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    bags = [
        (data.X[int(s) : int(s) + int(n)].to(device), data.labels[b].to(device))
        for b, (s, n) in enumerate(zip(data.starts[:n_bags], data.sizes[:n_bags], strict=True))
    ]

    def step(x, y):
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
            opt.step()

    step(*bags[0])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for x, y in bags:
            step(x, y)
        best = min(best, time.perf_counter() - t)
    return n_bags / best


class EpochTimer(pl.Callback):
    """Wall time of each training epoch."""

    def __init__(self):
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.times.append(time.perf_counter() - self._start)


def end_to_end_rate(
    data: BagData, batch_size: int, n_bags: int, d: int, h: int, accelerator: str, group_by_size: bool = False
) -> float:
    """Bags per second of a ``MoMIL.train`` epoch (the fastest of three) on the first ``n_bags`` bags."""
    import hcitools as ht

    n_rows = int(data.starts[n_bags - 1] + data.sizes[n_bags - 1])  # rows of X are sorted by bag
    bag_of_row = np.repeat(np.arange(n_bags), data.sizes[:n_bags])
    adata = ad.AnnData(data.X[:n_rows].numpy())
    adata.obs["well"] = pd.Categorical(bag_of_row.astype(str))
    # fully observed random labels (the masked loss costs the same at any density); both classes in every assay
    bag_labels = np.random.default_rng(0).integers(0, 2, (n_bags, data.labels.shape[1])).astype(np.float32)
    adata.obsm["assays"] = pd.DataFrame(
        bag_labels[bag_of_row],
        index=adata.obs_names,
        columns=[f"assay_{t:03d}" for t in range(bag_labels.shape[1])],
    )
    ht.model.MoMIL.setup_anndata(adata, bag_key="well")
    model = ht.model.MoMIL(adata, n_hidden=d, n_head_hidden=h)
    timer = EpochTimer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(
            max_epochs=3, batch_size=batch_size, validation_size=0.0, accelerator=accelerator,
            enable_progress_bar=False, callbacks=[timer], group_by_size=group_by_size,
        )  # fmt: skip
    return n_bags / min(timer.times)


def forward_flops_per_bag(n: float, D: int, d: int, h: int, T: int) -> float:
    """Multiply-adds × 2 of one bag's forward pass with DSMIL heads (MoMIL's default): shared projector D → d; per
    assay and instance the task projection d → h, instance score h, query h → h, value h → h, the score against
    the critical instance's query h and the attention-weighted sum h; per assay and bag the bag score h."""
    return 2 * n * (D * d + T * (d * h + 2 * h * h + 3 * h)) + 2 * T * h


def train_flops_per_bag(n: float, D: int, d: int, h: int, T: int) -> float:
    """FLOPs of one bag's training step: forward, and a backward of twice the forward's matmuls, except that no
    gradient is computed for the input instances (the projector's backward is its weight gradient only)."""
    return 3 * forward_flops_per_bag(n, D, d, h, T) - 2 * n * D * d


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


_MATMUL_OPS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::matmul", "aten::linear")
_RNG_OPS = ("aten::uniform_", "aten::rand_like", "aten::rand", "aten::bernoulli_", "aten::ge")


def profile_step(module, data: BagData, batch_size: int, device, foreach: bool, n_steps: int = 4) -> dict:
    """Seconds per step of collate / forward / backward / optimiser, and operator-time shares (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    collate = BagCollator(data)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4, foreach=foreach)
    module.train().to(device)
    ids = [[j % data.n_bags for j in range(i * batch_size, (i + 1) * batch_size)] for i in range(n_steps)]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = {"collate": 0.0, "to device": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}

    def one(i):
        t0 = time.perf_counter()
        b = collate(ids[i % n_steps])
        t1 = time.perf_counter()
        b = {k: v.to(device, non_blocking=True) for k, v in b.items()}
        sync()
        t2 = time.perf_counter()
        _, _, loss = module(b)
        sync()
        t3 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.loss.backward()
        sync()
        t4 = time.perf_counter()
        opt.step()
        sync()
        t5 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4

    one(0)  # warm-up
    for i in range(n_steps):
        for key, dt in zip(times, one(i), strict=True):
            times[key] += dt / n_steps
    with profile(
        activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    ) as prof:
        for i in range(2):
            one(i)
    events = prof.key_averages()
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    total = sum(getattr(e, attr, 0) for e in events) or 1
    matmul = sum(getattr(e, attr, 0) for e in events if e.key in _MATMUL_OPS) / total
    rng = sum(getattr(e, attr, 0) for e in events if e.key in _RNG_OPS) / total
    return {**times, "matmul share": matmul, "dropout RNG share": rng, "other share": 1 - matmul - rng}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bags", type=int, default=2048, help="bags per batched measurement")
    parser.add_argument("--single-bags", type=int, default=128, help="bags for the batch-size-1 loop")
    parser.add_argument("--instances", type=int, default=16, help="instances (crops) per bag (well)")
    parser.add_argument(
        "--min-instances", type=int, default=None, help="ragged bags: sizes drawn from min … --instances"
    )
    parser.add_argument("--features", type=int, default=768)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--no-end-to-end", action="store_true", help="skip the model.train measurement")
    parser.add_argument("--no-profile", action="store_true", help="skip the profile of a training step")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("hcitools").setLevel(logging.ERROR)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d, h = 128, 64
    rates = {}
    profiles = {}
    mean_n = None
    for T in (6, 200):
        data = make_bags(args.bags, args.instances, args.features, T, min_instances=args.min_instances)
        mean_n = float(data.sizes.mean())
        module = MoMILModule(args.features, T, n_hidden=d, n_head_hidden=h, dropout=0.5)
        if not args.no_profile:
            for foreach in (False, True):
                profiles[(T, foreach)] = profile_step(module, data, args.batch_size, device, foreach)
        rates[(T, "batched")] = train_rate(module, data, args.batch_size, args.bags, device)
        rates[(T, "batched, foreach AdamW")] = train_rate(
            module, data, args.batch_size, args.bags, device, foreach=True
        )
        rates[(T, "single")] = train_rate(module, data, 1, args.single_bags, device)
        rates[(T, "looped")] = looped_rate(data, args.single_bags, d, h, device)
        if not args.no_end_to_end:
            rates[(T, "e2e batched")] = end_to_end_rate(data, args.batch_size, args.bags, d, h, device.type)
            rates[(T, "e2e single")] = end_to_end_rate(data, 1, args.single_bags, d, h, device.type)
            rates[(T, "e2e grouped")] = end_to_end_rate(
                data, args.batch_size, args.bags, d, h, device.type, group_by_size=True
            )
    peak = matmul_flops_per_s(device)
    print(
        f"device {device}; {args.instances} instances × {args.features}-d per bag (mean {mean_n:.1f}); batch {args.batch_size} bags; {torch.get_num_threads()} thread(s)"
    )
    for (T, foreach), p in profiles.items():
        step = sum(p[k] for k in ("collate", "to device", "forward", "backward", "optimizer"))
        parts = " | ".join(
            f"{k} {1e3 * p[k]:6.1f} ms ({p[k] / step:4.0%})"
            for k in ("collate", "to device", "forward", "backward", "optimizer")
        )
        print(
            f"profile {T:>3} assays, AdamW {'foreach' if foreach else 'default'}: step {1e3 * step:6.1f} ms = {parts}; "
            f"operator time: matmul {p['matmul share']:.0%}, dropout RNG {p['dropout RNG share']:.0%}, other {p['other share']:.0%}"
        )
    for T in (6, 200):
        b, s = rates[(T, "batched")], rates[(T, "single")]
        flops = train_flops_per_bag(mean_n, args.features, d, h, T) * b
        b0 = rates[(T, "batched, foreach AdamW")]
        lp = rates[(T, "looped")]
        print(
            f"{T:>4} assays: batched {b:8.0f} bags/s (foreach AdamW {b0:6.0f}) | batch size 1 {s:6.0f} bags/s | speed-up {b / s:5.1f}× | {flops / 1e9:6.1f} GFLOP/s = {flops / peak:.2f} × plain matmul ({peak / 1e9:.0f} GFLOP/s)"
        )
        print(
            f"{'':>4}  batch size 1 with a Python loop over {T} per-assay head modules (public MIL code): {lp:6.0f} bags/s | batched speed-up {b / lp:6.1f}×"
        )
        if (T, "e2e batched") in rates:
            b, s = rates[(T, "e2e batched")], rates[(T, "e2e single")]
            print(
                f"{'':>4}  end to end (model.train): batch {args.batch_size} {b:8.0f} bags/s | batch size 1 {s:6.0f} bags/s | speed-up {b / s:5.1f}×"
            )
            g = rates[(T, "e2e grouped")]
            print(
                f"{'':>4}  end to end, group_by_size=True: {g:8.0f} bags/s | speed-up over batch size 1 {g / s:5.1f}× | over ungrouped {g / b:4.2f}×"
            )
    print(
        f"time of 200 assays / time of 6 assays (batched steps): {rates[(6, 'batched')] / rates[(200, 'batched')]:.2f}×"
    )
    fl = {T: forward_flops_per_bag(mean_n, args.features, d, h, T) for T in (6, 200)}
    print(
        f"FLOPs of 200 assays / FLOPs of 6 assays (the compute-bound floor of that ratio): {fl[200] / fl[6]:.1f}×"
    )
    speedup = rates[(6, "batched")] / rates[(6, "single")]
    ratio = rates[(6, "batched")] / rates[(200, "batched")]
    print(
        f"target batched ≥ 20× batch size 1 (6 assays, training steps): {speedup:.1f}× -> {'met' if speedup >= 20 else 'NOT met'}"
    )
    print(f"target 200 assays ≤ 3× the time of 6: {ratio:.1f}× -> {'met' if ratio <= 3 else 'NOT met'}")
    looped = rates[(6, "batched")] / rates[(6, "looped")]
    print(
        f"target (#15) batched ≥ 10× batch size 1 with a Python loop over per-assay heads (6 assays): {looped:.1f}× -> {'met' if looped >= 10 else 'NOT met'}"
        f" (against batch size 1 with the batched heads: {speedup:.1f}×)"
    )
    for T in (6, 200):
        frac = train_flops_per_bag(mean_n, args.features, d, h, T) * rates[(T, "batched")] / peak
        print(
            f"target (#15) ≥ 50 % of matmul FLOP/s at {T} assays: {frac:.0%} -> {'met' if frac >= 0.5 else 'NOT met'}"
        )
    print(
        f"target (#15) cost of 200 / 6 assays ≤ FLOP ratio: {ratio:.1f}× vs {fl[200] / fl[6]:.1f}× -> {'met' if ratio <= fl[200] / fl[6] else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
