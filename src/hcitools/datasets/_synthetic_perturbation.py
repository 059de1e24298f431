"""A simulated single-cell perturbation experiment with cell-type-specific, dose-dependent responses."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import PERTURBATION_KEYS
from .._validate import check_int, check_real, check_str


def synthetic_perturbation(
    n_cell_types: int = 4,
    *,
    n_cells: int = 100,
    n_genes: int = 200,
    doses: Sequence[float] = (0.1, 1.0, 10.0),
    perturbation: str = "drug",
    n_response_genes: int = 30,
    cell_type_specificity: float = 0.5,
    ec50: float = 1.0,
    max_log_fold_change: float = 2.0,
    library_size: float = 2000.0,
    seed: int = 0,
) -> AnnData:
    """Simulate log-normalised expression of cell types under control and several doses of a perturbation.

    Generative model (one ``numpy.random.Generator`` seeded by ``seed``):

    - each gene has a base log-rate; each cell type adds its own offsets to a subset of marker genes;
    - the perturbation acts on a shared program of ``n_response_genes`` genes plus, per cell type, its own
      program; ``cell_type_specificity`` ∈ [0, 1] mixes them (0 = every cell type responds alike);
    - the log-fold change at dose *c* is ``max_log_fold_change · c / (c + ec50)`` (a Hill curve, n = 1), so
      one model must cover every dose;
    - counts are negative binomial (dispersion 0.2) around the rates at a log-normal library size, then
      normalised to 10,000 per cell and ``log1p``-transformed, as ``sc.pp.normalize_total`` + ``sc.pp.log1p``.

    Parameters
    ----------
    n_cell_types
        Number of cell types.
    n_cells
        Cells per (cell type, condition).
    n_genes
        Number of genes.
    doses
        Doses of the perturbation; each gives the condition ``"<perturbation>_<dose>"``.
    perturbation
        Name of the perturbation.
    n_response_genes
        Genes in each response program.
    cell_type_specificity
        Weight of the cell-type-specific program in the response.
    ec50
        Dose giving half the maximal response.
    max_log_fold_change
        Maximal natural-log fold change of responding genes.
    library_size
        Median counts per cell.
    seed
        Seed of the random generator.

    Returns
    -------
    AnnData cells × genes with log-normalised ``X`` (float32), raw counts in ``layers["counts"]``, and
    ``obs``: ``condition`` (``"control"`` or ``"<perturbation>_<dose>"``), ``cell_type``, ``dose`` (0 for
    controls), ``perturbation``. ``uns["synthetic_perturbation"]`` holds the parameters and the true
    log-fold changes per (cell type, condition) as a DataFrame.

    Examples
    --------
    >>> import hcitools as ht
    >>> adata = ht.datasets.synthetic_perturbation(n_cells=20, seed=0)
    >>> sorted(adata.obs["condition"].unique())
    ['control', 'drug_0.1', 'drug_1', 'drug_10']
    """
    for name, value in (("n_cell_types", n_cell_types), ("n_cells", n_cells), ("n_genes", n_genes)):
        check_int(value, name, min=1)
    check_int(n_response_genes, "n_response_genes", min=0)
    check_int(seed, "seed", min=0)
    check_str(perturbation, "perturbation")
    check_real(cell_type_specificity, "cell_type_specificity", min=0, max=1)
    check_real(ec50, "ec50", min=0, min_inclusive=False)
    check_real(max_log_fold_change, "max_log_fold_change")
    check_real(library_size, "library_size", min=0, min_inclusive=False)
    if isinstance(doses, str) or not isinstance(doses, Sequence | np.ndarray):
        raise TypeError(
            f"`doses` must be a list of positive numbers, e.g. `doses=(0.1, 1.0)`, got {doses!r}."
        )
    doses = [check_real(d, "doses", min=0, min_inclusive=False) for d in doses]
    if not doses or min(doses) <= 0:
        raise ValueError(f"`doses` must be positive numbers, got {doses}.")
    if len(set(doses)) != len(doses):
        raise ValueError(f"`doses` must be distinct, got {doses}.")
    if not 0 <= cell_type_specificity <= 1:
        raise ValueError(f"`cell_type_specificity` must be in [0, 1], got {cell_type_specificity}.")
    if n_response_genes > n_genes:
        raise ValueError(f"`n_response_genes` ({n_response_genes}) cannot exceed `n_genes` ({n_genes}).")
    if min(n_cell_types, n_cells, n_genes) < 1:
        raise ValueError("`n_cell_types`, `n_cells` and `n_genes` must be positive.")
    rng = np.random.default_rng(seed)
    base = rng.normal(-7.0, 1.5, size=n_genes)  # log fraction of library
    ct_offset = np.zeros((n_cell_types, n_genes))
    for c in range(n_cell_types):
        markers = rng.choice(n_genes, size=max(1, n_genes // 10), replace=False)
        ct_offset[c, markers] = rng.normal(1.5, 0.5, size=len(markers))

    def program() -> np.ndarray:
        v = np.zeros(n_genes)
        genes = rng.choice(n_genes, size=n_response_genes, replace=False)
        v[genes] = rng.choice([-1.0, 1.0], p=[0.3, 0.7], size=n_response_genes) * rng.uniform(
            0.5, 1.0, n_response_genes
        )
        return v

    shared = program()
    specific = np.stack([program() for _ in range(n_cell_types)])
    response = (1 - cell_type_specificity) * shared + cell_type_specificity * specific

    cell_types = [f"type_{c}" for c in range(n_cell_types)]
    conditions = [PERTURBATION_KEYS.CONTROL_VALUE] + [f"{perturbation}_{d:g}" for d in doses]
    dose_of = dict(zip(conditions, [0.0, *doses], strict=True))
    blocks, obs_rows, lfc_rows = [], [], {}
    for c, ct in enumerate(cell_types):
        for cond in conditions:
            d = dose_of[cond]
            lfc = max_log_fold_change * d / (d + ec50) * response[c]
            lfc_rows[(ct, cond)] = lfc
            log_rate = base + ct_offset[c] + lfc
            frac = np.exp(log_rate) / np.exp(log_rate).sum()
            lib = library_size * np.exp(0.3 * rng.normal(size=n_cells))
            mu = lib[:, None] * frac[None, :]
            r = 1.0 / 0.2  # NB via Gamma-Poisson with dispersion 0.2
            counts = rng.poisson(rng.gamma(r, mu / r))
            blocks.append(counts)
            obs_rows += [(cond, ct, d)] * n_cells
    counts = np.vstack(blocks).astype(np.float32)
    norm = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) * 1e4
    obs = pd.DataFrame(
        obs_rows, columns=[PERTURBATION_KEYS.CONDITION, PERTURBATION_KEYS.CELL_TYPE, PERTURBATION_KEYS.DOSE]
    )
    obs["perturbation"] = np.where(obs[PERTURBATION_KEYS.DOSE] > 0, perturbation, "none")
    obs[PERTURBATION_KEYS.CONDITION] = pd.Categorical(obs[PERTURBATION_KEYS.CONDITION], categories=conditions)
    obs[PERTURBATION_KEYS.CELL_TYPE] = pd.Categorical(obs[PERTURBATION_KEYS.CELL_TYPE], categories=cell_types)
    obs["perturbation"] = obs["perturbation"].astype("category")
    obs.index = pd.Index([f"cell_{i}" for i in range(len(obs))])
    adata = AnnData(
        np.log1p(norm).astype(np.float32),
        obs=obs,
        var=pd.DataFrame(index=[f"gene_{g}" for g in range(n_genes)]),
    )
    adata.layers["counts"] = counts
    lfc = pd.DataFrame(np.stack(list(lfc_rows.values())), columns=adata.var_names)
    lfc.index = pd.Index([f"{ct}|{cond}" for ct, cond in lfc_rows])
    adata.uns["synthetic_perturbation"] = {
        "params": {
            "n_cell_types": n_cell_types, "n_cells": n_cells, "n_genes": n_genes, "doses": doses,
            "perturbation": perturbation, "n_response_genes": n_response_genes,
            "cell_type_specificity": cell_type_specificity, "ec50": ec50,
            "max_log_fold_change": max_log_fold_change, "library_size": library_size, "seed": seed,
        },
        "true_log_fold_change": lfc,
    }  # fmt: skip
    return adata
