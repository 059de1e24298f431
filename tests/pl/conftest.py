import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest


@pytest.fixture(autouse=True)
def _close_figures():
    """Every plot test closes its figures (pyplot keeps them open otherwise)."""
    yield
    plt.close("all")
