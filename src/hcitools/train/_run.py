"""Shared steps of the models' ``train`` methods: seeding, first-training re-initialisation, quiet runs."""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
import torch


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


@contextmanager
def history_file_dir(trainer_kwargs: dict) -> Iterator[dict]:
    """Trainer kwargs whose default logger also writes the history to a temporary directory, removed afterwards.

    With a spawn-based strategy (``ddp_spawn``, ``ddp_notebook``) training runs in child processes and the
    calling process gets ``model.history`` back only from the file that scvi-tools' ``SimpleLogger`` of process
    0 writes into ``log_save_dir``. Giving it a temporary directory keeps these files out of the working
    directory (where scvi-tools would write them under DDP). A user's ``logger`` or ``log_save_dir`` is kept.
    """
    if trainer_kwargs.get("logger") is not None or trainer_kwargs.get("log_save_dir") is not None:
        yield trainer_kwargs
        return
    with tempfile.TemporaryDirectory(prefix="hcitools_logs_") as tmp:
        yield {**trainer_kwargs, "log_save_dir": tmp}


def run_training(model, runner) -> None:
    """Run an scvi-tools TrainRunner without Lightning's notes for single-process CPU data loading; make
    ``model.history`` numeric.

    In distributed runs where every process runs the calling script (``strategy="ddp"``), scvi-tools fills the
    history in process 0 only; it is broadcast so that ``model.history`` is the same in every process.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        runner()
    trainer = runner.trainer
    if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        model.history_ = trainer.strategy.broadcast(model.history_, src=0)
    if isinstance(model.history_, dict):
        model.history_ = {k: v.apply(pd.to_numeric, errors="coerce") for k, v in model.history_.items()}
