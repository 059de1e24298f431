"""Command line: ``hcitools demo`` (also ``python -m hcitools demo``)."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hcitools`` command."""
    parser = argparse.ArgumentParser(prog="hcitools", description="hcitools command line")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="cross-validate MoMIL and baselines on a simulated screen; print AUROC, intervals, p-values",
    )
    demo.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--n-compounds", type=int, default=None, help="compounds to simulate (default: 300)")
    demo.add_argument("--n-plates", type=int, default=None, help="plates (default: 3)")
    demo.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="maximum training epochs of the MIL models (default: derived by `train` from the training bags)",
    )
    demo.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default: 1000)")
    demo.add_argument("--verbose", action="store_true", help="log hcitools' progress notes (level INFO)")
    args = parser.parse_args(argv)
    # The application, not the library, configures logging: hcitools' logger only has a NullHandler and propagates.
    logging.basicConfig(format="%(name)s: %(levelname)s: %(message)s", level=logging.WARNING)
    if getattr(args, "verbose", False):
        logging.getLogger("hcitools").setLevel(logging.INFO)
    if args.command == "demo":
        import matplotlib

        matplotlib.use("Agg")
        from ._demo import run_demo

        kwargs = {
            k: v
            for k, v in {"n_compounds": args.n_compounds, "n_plates": args.n_plates}.items()
            if v is not None
        }
        train = {} if args.max_epochs is None else {"max_epochs": args.max_epochs}
        run_demo(args.out, seed=args.seed, train_kwargs=train, n_boot=args.n_boot, **kwargs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
