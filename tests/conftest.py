from __future__ import annotations

import os
from pathlib import Path

import pytest

# pytest-xdist runs several workers: give each its share of the cores, or torch's default (all cores per process)
# oversubscribes the CPU and every training slows down many times over.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

DATA = Path(os.environ.get("HCITOOLS_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
os.environ.setdefault("HCITOOLS_DATA", str(DATA))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared real data (set HCITOOLS_DATA; `make test` does)."""
    assert DATA.is_dir(), f"real data folder {DATA} not found; set HCITOOLS_DATA"
    return DATA


@pytest.fixture
def screen():
    import hcitools as ht

    return ht.datasets.synthetic_hci(
        n_compounds=40, n_assays=5, n_plates=3, wells_per_compound=3, n_features=16, n_primary=2, seed=0
    )
