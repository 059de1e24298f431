"""Make the saved MoMIL fixture of ``tests/model/test_saved_models.py`` (run from the repository root).

    .venv-python3.11/bin/python tests/data/make_saved_momil.py

Trains a tiny MoMIL (DSMIL heads) on a small simulated screen and writes ``tests/data/saved_momil/model.pt``
and the predictions it makes on that screen (``tests/data/saved_momil_predictions.csv``). The fixture is
committed: the test loads it with the current code and checks the predictions, so a change that breaks loading of
saved models fails CI. Re-make it only when the saved format changes on purpose (and bump ``FORMAT_VERSION``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

import hcitools as ht

HERE = Path(__file__).resolve().parent


def screen():
    """The screen the fixture was trained on (also rebuilt by the test)."""
    adata = ht.datasets.synthetic_hci(
        n_compounds=30,
        n_assays=3,
        n_primary=2,
        n_plates=2,
        wells_per_compound=2,
        n_features=6,
        label_density=0.6,
        seed=3,
    )
    ht.pp.normalize_plates(adata)
    return adata


def main() -> None:
    torch.set_num_threads(1)
    adata = screen()
    ht.model.MoMIL.setup_anndata(adata, bag_key="well", labels_key="assays", group_key="compound")
    model = ht.model.MoMIL(adata, head="dsmil", n_hidden=8, n_head_hidden=4, dropout=0.1)
    model.train(
        max_epochs=3,
        warmup_epochs=0,
        lr=1e-3,
        batch_size=16,
        validation_size=0.3,
        seed=0,
        enable_progress_bar=False,
    )
    out = HERE / "saved_momil"
    shutil.rmtree(out, ignore_errors=True)
    model.save(out)
    model.predict().to_csv(HERE / "saved_momil_predictions.csv")


if __name__ == "__main__":
    main()
