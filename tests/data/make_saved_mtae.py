"""Make the saved-model fixture of tests/model/test_mtae.py::test_saved_fixture_keeps_loading.

Run from the repository root: ``.venv-python3.11/bin/python tests/data/make_saved_mtae.py``. Trains a tiny MTAe
(12 genes, 2 epochs, seeded, on CPU) on ``ht.datasets.synthetic_perturbation(..., seed=3)``, saves it to
``tests/data/saved_mtae/`` (without data, a few KB) and its predictions for the control cells under ``drug_10`` to
``tests/data/saved_mtae_predictions.npy``. Re-run it only for a deliberate format change (and bump
``hcitools.model._mtae.FORMAT_VERSION``): the point of the fixture is that models saved by earlier releases keep
loading.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import hcitools as ht

HERE = Path(__file__).resolve().parent


def main() -> None:
    torch.set_num_threads(1)
    adata = ht.datasets.synthetic_perturbation(
        n_cell_types=2, n_cells=10, n_genes=12, n_response_genes=4, seed=3
    )
    ht.model.MTAe.setup_anndata(adata)
    model = ht.model.MTAe(adata, n_latent=2, n_hidden=(8,), dropout=0.0)
    model.train(max_epochs=2, batch_size=16, seed=0, accelerator="cpu", enable_progress_bar=False)
    model.save(HERE / "saved_mtae", overwrite=True)
    ctrl = adata[(adata.obs["condition"] == "control").to_numpy()].copy()
    np.save(
        HERE / "saved_mtae_predictions.npy", model.predict(ctrl, condition="drug_10").X.astype(np.float32)
    )


if __name__ == "__main__":
    main()
