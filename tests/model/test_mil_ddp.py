"""MIL training under Lightning's data-parallel strategies (two CPU processes, gloo backend).

Each process validates a shard of the validation bags. The checks: the validation AUROC logged at the best epoch
equals the AUROC recomputed in one process on the *whole* validation set with the weights the model holds after
training, and all processes agree. A per-shard AUROC, a bag counted twice (the validation set has an odd number
of bags, so the distributed sampler repeats one), compound groups matched by position instead of by bag, or
weights that were not restored would each fail; the preconditions in `_check` make sure that they would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy

import hcitools as ht
from hcitools.train._mil_plan import VAL_MEAN_AUROC, per_task_auroc

pytestmark = pytest.mark.slow

DATA = {"n_compounds": 60, "label_density": 0.3, "n_features": 16, "seed": 0}
TRAIN = {
    "max_epochs": 12,
    "warmup_epochs": 0,
    "patience": 2,
    "batch_size": 8,
    "lr": 3e-2,
    "validation_size": 0.3,
    "seed": 0,
    "enable_progress_bar": False,
    "accelerator": "cpu",
}
# Strategies are given as DDPStrategy instances (the same as "ddp", "ddp_notebook", "ddp_spawn") with a short
# timeout of the collectives, so that processes that disagree fail the test instead of hanging it.
TIMEOUT_S = 120

# `strategy="ddp"` re-runs the calling script in each additional process: it needs a script, not pytest.
SCRIPT = """
import json
import sys
from datetime import timedelta

from lightning.pytorch.strategies import DDPStrategy

import hcitools as ht


def main(out_dir):
    adata = ht.datasets.synthetic_hci(**{data!r})
    ht.pp.normalize_plates(adata)
    ht.model.MoMIL.setup_anndata(adata, group_key="compound")
    model = ht.model.MoMIL(adata, n_hidden=16)
    strategy = DDPStrategy(timeout=timedelta(seconds={timeout}))  # strategy="ddp"
    model.train(devices=2, strategy=strategy, **{train!r})
    pred = model.predict()
    out = {{
        "history": {{k: v[k].tolist() for k, v in model.history.items()}},
        "best_epoch": model.best_epoch,
        "val_bags": pred.index[model.validation_indices].tolist(),
        "pred": pred.to_dict(orient="split"),
        "world_size": model.trainer.world_size,
    }}
    with open(f"{{out_dir}}/rank{{model.trainer.global_rank}}.json", "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1])
"""

# set by Lightning in the processes it launches; inherited, they would make the script join a foreign run
DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "GLOBAL_RANK", "RANK", "WORLD_SIZE")


@pytest.fixture
def one_thread():
    """One torch thread, as Lightning gives each DDP process here: with two, the tiny single-device run is many
    times slower on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _screen():
    adata = ht.datasets.synthetic_hci(**DATA)
    ht.pp.normalize_plates(adata)
    return adata


def _check(adata, history: dict, best_epoch: int, pred: pd.DataFrame, val_bags: list, group_key) -> None:
    """History at the best epoch = AUROC of the model's predictions on the whole validation set."""
    assays = list(adata.obsm["assays"].columns)
    assert pred.shape == (adata.obs["well"].nunique(), len(assays)) and list(pred.columns) == assays
    wells = adata.obs["well"].astype(str).to_numpy()
    labels = adata.obsm["assays"].groupby(wells).first()
    groups = adata.obs[group_key].astype(str).groupby(wells).first() if group_key else None

    def auroc(bags):
        g = groups.loc[bags].to_numpy() if groups is not None else None
        return per_task_auroc(pred.loc[bags].to_numpy(), labels.loc[bags, assays].to_numpy(float), g)

    full = auroc(val_bags)
    mean = np.asarray(history[VAL_MEAN_AUROC], dtype=float)
    # preconditions: what the test can tell apart
    assert abs(np.nanmean(auroc(val_bags[0::2])) - np.nanmean(full)) > 1e-3  # the bags of process 0
    assert len(val_bags) % 2 == 1  # two processes: the distributed sampler repeats the first bag
    if group_key is None:  # a repeated bag moves a bag-level AUROC (not always a compound-level one)
        assert abs(np.nanmean(auroc([*val_bags, val_bags[0]])) - np.nanmean(full)) > 1e-4
    assert best_epoch == int(np.argmax(mean)) and mean[-1] < mean[best_epoch]  # restoring matters

    np.testing.assert_allclose(mean[best_epoch], np.nanmean(full), rtol=1e-6)
    for assay, value in zip(assays, full, strict=True):
        if np.isfinite(value):
            np.testing.assert_allclose(history[f"validation_auroc_{assay}"][best_epoch], value, rtol=1e-6)
    assert np.isfinite(history["train_loss"]).all() and np.isfinite(history["validation_loss"]).all()


def test_ddp_script(tmp_path):
    """``strategy="ddp"`` from a script: both processes end with the same history, best epoch and weights."""
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT.format(data=DATA, train=TRAIN, timeout=TIMEOUT_S))
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    res = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=3 * TIMEOUT_S,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    for key in ("history", "best_epoch", "val_bags", "pred"):
        assert ranks[0][key] == ranks[1][key], key
    out = ranks[0]
    pred = pd.DataFrame(**out["pred"])
    _check(_screen(), out["history"], out["best_epoch"], pred, out["val_bags"], "compound")
    assert not (tmp_path / "lightning_logs").exists()  # history files go to a temporary directory


@pytest.mark.skipif(sys.platform == "win32", reason="fork and gloo on Windows")
@pytest.mark.parametrize(
    ("start_method", "group_key"),
    [
        (None, "compound"),
        ("fork", None),
        ("fork", "compound"),
        ("spawn", None),
    ],  # "ddp_notebook", "ddp_spawn"
)
def test_in_process(start_method, group_key, monkeypatch, one_thread):
    """One device, and the strategies that train in child processes of the caller (fork, spawn): the caller gets
    the history, the best epoch (read off the history) and the restored best weights."""
    for key in DIST_ENV:
        monkeypatch.delenv(key, raising=False)  # also removes the MASTER_PORT that Lightning sets
    adata = _screen()
    ht.model.MoMIL.setup_anndata(adata, group_key=group_key)
    model = ht.model.MoMIL(adata, n_hidden=16)
    # an odd number of validation bags (51 compound-grouped, 45 without groups): see `_check`
    train = {**TRAIN, "validation_size": 0.3 if group_key else 0.25}
    if start_method is None:
        model.train(devices=1, **train)
    else:
        strategy = DDPStrategy(start_method=start_method, timeout=timedelta(seconds=TIMEOUT_S))
        model.train(devices=2, strategy=strategy, **train)
    assert model.trainer.world_size == (1 if start_method is None else 2)
    pred = model.predict()
    history = {k: v[k].tolist() for k, v in model.history.items()}
    _check(adata, history, model.best_epoch, pred, list(pred.index[model.validation_indices]), group_key)


def test_unsupported(screen):
    from lightning.pytorch.strategies import FSDPStrategy

    from hcitools.model._mil_base import _check_strategy

    ht.model.MoMIL.setup_anndata(screen)
    model = ht.model.MoMIL(screen, n_hidden=8)
    with pytest.raises(TypeError, match="patience"):
        model.train(max_epochs=1, early_stopping=True)
    with pytest.raises(ValueError, match="DDP strategies"):
        _check_strategy(SimpleNamespace(strategy=FSDPStrategy()))
