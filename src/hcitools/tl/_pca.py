"""The one PCA basis of the perturbation tools (scikit-learn, seeded): OT costs and evaluation distances."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def pca_basis(X: np.ndarray, n_comps: int, *, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """Fit a PCA on ``X`` and return the projection into it.

    ``n_comps`` is capped at ``min(X.shape) - 1``; the fit is :class:`sklearn.decomposition.PCA` with
    ``random_state=seed`` (randomised solvers are used only on large inputs, so small inputs are exact).

    Parameters
    ----------
    X
        Cells × genes (dense) the basis is fitted on.
    n_comps
        Number of components.
    seed
        Seed of the solver.

    Returns
    -------
    A function mapping cells × genes to cells × components, ``(Y - mean) @ components.T`` (float64).
    """
    from sklearn.decomposition import PCA

    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or min(X.shape) < 2:
        raise ValueError(
            f"A PCA basis needs at least two cells and two genes, got an array of shape {X.shape}."
        )
    if isinstance(n_comps, bool) or not isinstance(n_comps, int | np.integer) or n_comps < 1:
        raise ValueError(f"`n_comps` must be a positive int, got {n_comps!r}.")
    pca = PCA(n_components=min(int(n_comps), min(X.shape) - 1), random_state=seed).fit(X)
    mean, components = pca.mean_, pca.components_

    def project(Y: np.ndarray) -> np.ndarray:
        return (np.asarray(Y, dtype=np.float64) - mean) @ components.T

    return project
