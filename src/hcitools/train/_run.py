"""Shared steps of the models' ``train`` methods: seeding, first-training re-initialisation, quiet runs."""

from __future__ import annotations

import warnings

import pandas as pd


def seed_and_reset(model, seed: int) -> None:
    """Seed Lightning, torch, numpy and random; re-initialise the module before its first training.

    The module is built in ``__init__`` (which takes no seed); re-initialising it here makes the initial
    weights a function of ``seed``.
    """
    from lightning.pytorch import seed_everything

    seed_everything(seed, workers=True, verbose=False)
    if not model.is_trained_:
        # children first, so that a parent's own initialisation (e.g. FiLM's identity start) has the last word
        for m in reversed(list(model.module.modules())):
            if m is not model.module and hasattr(m, "reset_parameters"):
                m.reset_parameters()


def run_training(model, runner) -> None:
    """Run an scvi-tools TrainRunner without Lightning's notes for single-process CPU data loading; make
    ``model.history`` numeric."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        runner()
    if isinstance(model.history_, dict):
        model.history_ = {k: v.apply(pd.to_numeric, errors="coerce") for k, v in model.history_.items()}
