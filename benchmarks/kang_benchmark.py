"""Leave-one-cell-type-out benchmark on the Kang subset: 8 MTAe variants, baselines, ceiling; paper-004 layout.

Full protocol (paper 004; hours on a CPU)::

    python benchmarks/kang_benchmark.py --epochs 100

holds out each of the 7 cell types in turn × seeds (1, 2, 19193), trains every MTAe variant (n_latent 64, hidden
(512, 256)), predicts the held-out cell type's IFN-β response from its control cells and evaluates it beside the
identity and mean-shift baselines (and scGen with ``--scgen``, which needs JAX) and the split-half ceiling.
Options reduce it (``--seeds``, ``--cell-types``, ``--models``, ``--epochs``, ``--n-genes`` for the most variable
genes only, ``--n-boot``); ``--markdown FILE`` writes the tables as a Markdown page with the exact command.

The protocol runs fold by fold (one held-out cell type × one seed: every model, baseline and the ceiling) and
appends each finished fold's rows to ``<out>_tidy.csv`` with the run's configuration in ``<out>_config.json``. With
``--resume`` a run skips the folds already in that file (after checking that the configuration is the same), so the
full protocol can be spread over several sittings (``kill`` it at any point: at most the running fold is lost);
``--report-only`` prints and writes the tables of the folds done so far, saying how many of the protocol's folds
they are.

Writes ``<out>_table1.csv`` (per-metric score with the raw value in parentheses, as Table 1 of paper 004),
``<out>_ranks.csv`` (rank score, rank average), ``<out>_per_cell_type.csv`` and ``<out>_tidy.csv``; prints the
overall winner, then per held-out cell type the winner among the models (rank score over that cell type's seeds),
its margin over the mean-shift baseline (rank score and raw R² / distance) and its distance to the split-half
ceiling.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
import warnings

import numpy as np
import pandas as pd
import torch

import hcitools as ht
from hcitools.model._mtae import VARIANTS

METRICS = [
    "deg_overlap",
    "r2_all",
    "r2_top20",
    "r2_top100",
    "euclidean",
    "wasserstein",
    "edistance",
    "mean_pairwise",
    "mmd",
]
#: raw metrics of the per-cell-type margins (higher-is-better R², lower-is-better distance)
MARGIN_METRICS = ("r2_top100", "r2_all", "euclidean")
BASELINES = ("identity", "mean_shift", "scgen")
CEILING = "ceiling (split half)"


def most_variable(adata, n_genes: int):
    """The ``n_genes`` genes of highest variance of the log-normalised expression (all cells)."""
    X = adata.X
    mean = np.asarray(X.mean(0)).ravel()
    var = np.asarray(X.multiply(X).mean(0)).ravel() - mean**2 if hasattr(X, "multiply") else X.var(0)
    return adata[:, np.sort(np.argsort(-var)[:n_genes])].copy()


def rank(tidy: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # undefined ratios of the identity baseline score as the worst, by design
        return ht.tl.rank_models(tidy, metrics=metrics)


def per_cell_type(tidy: pd.DataFrame, metrics: list[str], models: list[str]) -> pd.DataFrame:
    """Per held-out cell type: the best model by rank score, its margins over mean shift, its gap to the ceiling."""
    rows = []
    for cell_type, part in tidy.groupby("cell_type", sort=False):
        ranked = rank(part, metrics)
        means = part.pivot_table(index="model", columns="metric", values="value", aggfunc="mean")
        candidates = [m for m in ranked.index if m in models]
        winner = candidates[0]
        row = {
            "cell_type": cell_type,
            "winner": winner,
            "winner_score": ranked.loc[winner, "score"],
            "mean_shift_score": ranked.loc["mean_shift", "score"],
            "score_margin": ranked.loc["mean_shift", "score"] - ranked.loc[winner, "score"],
            "best_overall": ranked.index[0],
        }
        for m in MARGIN_METRICS:
            sign = 1.0 if m.startswith("r2_") else -1.0  # positive = the winner is better
            row[f"{m}_winner"] = means.loc[winner, m]
            row[f"{m}_vs_mean_shift"] = sign * (means.loc[winner, m] - means.loc["mean_shift", m])
            row[f"{m}_to_ceiling"] = sign * (means.loc[CEILING, m] - means.loc[winner, m])
        rows.append(row)
    return pd.DataFrame(rows).set_index("cell_type")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 19193])
    parser.add_argument("--cell-types", nargs="+", default=None)
    parser.add_argument("--models", nargs="+", default=list(VARIANTS))
    parser.add_argument("--scgen", action="store_true", help="also run pertpy's scGen (needs JAX)")
    parser.add_argument(
        "--n-genes", type=int, default=None, help="keep only the most variable genes (reduced)"
    )
    parser.add_argument("--n-boot", type=int, default=100)
    parser.add_argument(
        "--distances", nargs="*", default=None, help="distances evaluated (default: all five)"
    )
    parser.add_argument("--n-latent", type=int, default=64)
    parser.add_argument("--n-hidden", type=int, nargs="+", default=[512, 256])
    parser.add_argument("--out", default="kang_benchmark")
    parser.add_argument("--markdown", default=None, help="write the tables to this Markdown file")
    parser.add_argument(
        "--resume", action="store_true", help="continue <out>_tidy.csv: skip the folds already in it"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="only tabulate the folds in <out>_tidy.csv (no training)"
    )
    parser.add_argument("--data", default=os.environ.get("HCITOOLS_DATA", "../shared/data"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("hcitools").setLevel(logging.WARNING)
    start = time.perf_counter()
    adata = ht.datasets.kang2018(args.data)
    if args.n_genes is not None:
        adata = most_variable(adata, args.n_genes)
    baselines = ("identity", "mean_shift", "scgen") if args.scgen else ("identity", "mean_shift")
    cell_types = args.cell_types or [
        str(c) for c in pd.unique(adata.obs["cell_type"])
    ]  # benchmark_perturbation checks that each has control and stimulated cells
    config = {
        "epochs": args.epochs, "models": list(args.models), "baselines": list(baselines),
        "n_genes": args.n_genes, "n_boot": args.n_boot, "distances": args.distances, "n_latent": args.n_latent,
        "n_hidden": list(args.n_hidden), "n_vars": int(adata.n_vars),
    }  # fmt: skip
    tidy_path, config_path = f"{args.out}_tidy.csv", f"{args.out}_config.json"
    done = pd.DataFrame(columns=["model", "cell_type", "seed", "metric", "value"])
    if args.resume or args.report_only:
        if os.path.exists(tidy_path):
            with open(config_path) as f:
                saved = json.load(f)
            if saved != config:
                sys.exit(
                    f"{tidy_path} was written with another configuration ({config_path}: {saved}); this run is "
                    f"{config}. Use another --out or the same options."
                )
            done = pd.read_csv(tidy_path)
    elif os.path.exists(tidy_path):
        sys.exit(f"{tidy_path} exists: pass --resume to continue it, or another --out.")
    folds = [(c, int(s)) for s in args.seeds for c in cell_types]  # seed-major: each seed complete in turn
    finished = set(zip(done["cell_type"].astype(str), done["seed"].astype(int), strict=True))
    todo = [] if args.report_only else [f for f in folds if f not in finished]
    print(
        f"{len(folds)} folds in this configuration; {len(folds) - len(todo)} already done, {len(todo)} to run"
    )
    with open(config_path, "w") as f:
        json.dump(config, f, indent=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i, (cell_type, seed) in enumerate(todo):
            t = time.perf_counter()
            fold = ht.tl.benchmark_perturbation(
                adata, models=args.models, cell_types=[cell_type], seeds=[seed], baselines=baselines,
                model_kwargs={"n_latent": args.n_latent, "n_hidden": tuple(args.n_hidden)},
                train_kwargs={"max_epochs": args.epochs, "batch_size": 128}, eval_kwargs={"n_boot": args.n_boot, **({} if args.distances is None else {"distances": tuple(args.distances)})},
                progress=False,
            )  # fmt: skip
            fold.to_csv(tidy_path, mode="a", header=not os.path.exists(tidy_path), index=False)
            print(
                f"fold {i + 1}/{len(todo)}: {cell_type}, seed {seed} ({time.perf_counter() - t:.0f} s)",
                flush=True,
            )
    tidy = pd.read_csv(tidy_path)
    tidy = tidy[
        [(str(c), int(s)) in set(folds) for c, s in zip(tidy["cell_type"], tidy["seed"], strict=True)]
    ]
    n_done = len(set(zip(tidy["cell_type"].astype(str), tidy["seed"].astype(int), strict=True)))
    if n_done == 0:
        sys.exit("No fold of this configuration is done yet.")
    means = tidy.pivot_table(index="model", columns="metric", values="value", aggfunc="mean")
    metrics = [m if m in means.columns else f"{m}_pot" for m in METRICS]
    metrics = [m for m in metrics if m in means.columns]
    # the tidy table as it is: averaged per model and metric, the ceiling set aside (attrs["ceiling"])
    ranked = rank(tidy, metrics)
    ceiling = ranked.attrs["ceiling"][metrics].to_frame(CEILING).T
    table1 = ranked[metrics].copy().astype(object)
    for m in metrics:
        table1[m] = [f"{ranked.loc[i, m]:.3f} ({means.loc[i, m]:.3f})" for i in ranked.index]
    table1.to_csv(f"{args.out}_table1.csv")
    ranks = ranked[["score", "rank", "rank_average", "rank_by_average"]]
    ranks.to_csv(f"{args.out}_ranks.csv")
    cells = per_cell_type(tidy, metrics, [m for m in args.models if m not in BASELINES])
    cells.to_csv(f"{args.out}_per_cell_type.csv")
    elapsed = time.perf_counter() - start
    print(table1.to_string())
    print("\nsplit-half ceiling (raw):")
    print(ceiling.round(3).to_string())
    print("\n" + ranks.round(3).to_string())
    notes = sorted(
        {str(w.message).split(" [")[0] for w in caught if not issubclass(w.category, DeprecationWarning)}
    )
    for note in notes:
        print(f"warning: {note}")
    winner = ranked.index[0]
    margin = ranked.loc["mean_shift", "score"] - ranked.loc[winner, "score"]
    print(
        f"\nwinner: {winner} (score {ranked.loc[winner, 'score']:.3f}); margin over the mean-shift baseline: {margin:.3f}"
    )
    print(f"winner stable when any one metric is left out: {ranked.attrs['winner_stable']}")
    print(
        "\nper held-out cell type: the best model, its margin over mean shift (positive = better) and its gap to"
    )
    print("the split-half ceiling (positive = below the ceiling)")
    print(cells.round(3).to_string())
    print(f"{n_done} of the {len(folds)} folds of this configuration ({elapsed:.0f} s in this run)")
    if args.markdown:
        write_markdown(
            args, table1, ceiling, ranks, cells, winner, margin, ranked.attrs["winner_stable"], elapsed,
            n_done, len(folds),
        )  # fmt: skip


def write_markdown(
    args, table1, ceiling, ranks, cells, winner, margin, stable, elapsed, n_done, n_folds
) -> None:
    command = "python benchmarks/" + os.path.basename(sys.argv[0]) + " " + shlex.join(sys.argv[1:])
    full = (
        args.epochs >= 100 and len(args.seeds) >= 3 and len(args.models) == len(VARIANTS) and args.cell_types is None
        and args.n_genes is None and args.distances is None
    )  # fmt: skip
    margins = cells[["winner", "score_margin", *[f"{m}_vs_mean_shift" for m in MARGIN_METRICS],
                     *[f"{m}_to_ceiling" for m in MARGIN_METRICS]]]  # fmt: skip
    lines = [
        f"Command (run from the repository root; {n_done} of {n_folds} folds; the last sitting took "
        f"{elapsed / 60:.1f} min on 1 CPU thread):",
        "",
        "```bash",
        command,
        "```",
        "",
        (("This is the **full protocol**." if n_done == n_folds else f"This is the configuration of the **full "
          f"protocol, {n_done} of its {n_folds} folds done so far** (the run continues with `--resume`; the tables "
          "below cover the finished folds only, so the cell types and seeds are not yet balanced).") if full
         else "This is a **reduced configuration**, not the full protocol "
         f"(7 cell types × 3 seeds × 8 variants × 100 epochs): {len(args.seeds)} seed(s), {args.epochs} epochs, "
         f"models {', '.join(args.models)}, {'all 6,998' if args.n_genes is None else f'the {args.n_genes} most variable'} "
         f"genes, widths {tuple(args.n_hidden)}, latent {args.n_latent}, {args.n_boot} bootstrap resamples, distances "
         f"{'all five' if args.distances is None else ', '.join(args.distances)}. Its "
         "numbers are not the paper's and not comparable with published full-data results."),
        "",
        f"Overall winner: **{winner}**; rank-score margin over the mean-shift baseline {margin:.3f} (positive = "
        f"better); winner stable when any one metric is left out: {stable}.",
        "",
        "### Scores (rank score per metric, raw mean in parentheses)",
        "",
        table1.to_markdown(),
        "",
        "### Split-half ceiling (raw means)",
        "",
        ceiling.round(3).to_markdown(),
        "",
        "### Rank score",
        "",
        ranks.round(3).to_markdown(),
        "",
        "### Per held-out cell type",
        "",
        "The best model (lowest rank score over that cell type's seeds), its margin over the mean-shift baseline "
        "(rank score; R² higher, distance lower: positive = the winner is better) and its distance to the split-half "
        "ceiling (positive = below the ceiling).",
        "",
        margins.round(3).to_markdown(),
        "",
    ]  # fmt: skip
    with open(args.markdown, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
