"""Compound-level cross-validation folds (random, by group, or by Bemis–Murcko scaffold)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import HCI_KEYS
from .._utils import check_free_keys, import_optional, log_written, logger
from .._validate import check_anndata, check_obs_keys


class FoldRotation(NamedTuple):
    """One 3-1-1 rotation: folds to train on, the validation fold, the test fold."""

    train: tuple[int, ...]
    validation: int
    test: int


def fold_rotations(n_folds: int = 5) -> Iterator[FoldRotation]:
    """Yield the rotations used for model evaluation: test fold *i*, validation fold *i + 1*, train on the rest.

    With 5 folds this is the 3-1-1 protocol (train on three folds, select on one, test on one); every fold is
    the test fold exactly once.

    Examples
    --------
    >>> from hcitools.pp import fold_rotations
    >>> next(fold_rotations(5))
    FoldRotation(train=(2, 3, 4), validation=1, test=0)
    """
    if n_folds < 3:
        raise ValueError(f"Rotations need at least 3 folds (train, validation, test), got {n_folds}.")
    for test in range(n_folds):
        val = (test + 1) % n_folds
        yield FoldRotation(tuple(f for f in range(n_folds) if f not in (test, val)), val, test)


def check_folds(
    adata: AnnData, *, compound_key: str = HCI_KEYS.COMPOUND, fold_key: str = HCI_KEYS.FOLD
) -> None:
    """Raise a ValueError if any compound has instances in more than one fold.

    Examples
    --------
    >>> import hcitools as ht
    >>> adata = ht.datasets.synthetic_hci(n_compounds=20, seed=0)
    >>> ht.pp.split_compounds(adata, method="random", seed=0)
    >>> ht.pp.check_folds(adata)  # passes silently
    """
    check_obs_keys(adata, {"compound_key": compound_key, "fold_key": fold_key})
    n = adata.obs[fold_key].groupby(adata.obs[compound_key].astype(str).to_numpy()).nunique()
    bad = n.index[n.to_numpy() > 1]
    if len(bad):
        raise ValueError(
            f"{len(bad)} compounds straddle folds of adata.obs[{fold_key!r}] (e.g. {list(bad)[:5]}); every "
            "instance of a compound must be in the same fold. Recompute them with `ht.pp.split_compounds`."
        )


def _scaffolds(smiles: pd.Series) -> pd.Series:
    """Bemis–Murcko scaffold SMILES per compound (RDKit). Acyclic molecules get their own group."""
    import_optional("rdkit", "split_compounds(method='scaffold')")
    from rdkit import Chem, RDLogger
    from rdkit.Chem.Scaffolds import MurckoScaffold

    RDLogger.DisableLog("rdApp.*")
    out = {}
    bad = []
    for cpd, smi in smiles.items():
        mol = Chem.MolFromSmiles(str(smi)) if isinstance(smi, str) and smi else None
        if mol is None:
            bad.append(cpd)
            continue
        scaf = MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)
        out[cpd] = scaf if scaf else f"acyclic:{cpd}"
    if bad:
        raise ValueError(
            f"{len(bad)} compounds have missing or unparsable SMILES (e.g. {bad[:5]}); fix them or use "
            "`method='group'`."
        )
    return pd.Series(out)


def _balanced_assignment(group_of: pd.Series, n_folds: int, rng: np.random.Generator) -> pd.Series:
    """Assign groups (largest first, ties in random order) to the fold with the fewest compounds so far."""
    # start from groups sorted by name: value_counts orders ties differently across pandas versions, and the
    # same seed must give the same folds everywhere
    sizes = group_of.value_counts().sort_index()
    order = sizes.sample(frac=1.0, random_state=rng.integers(2**31 - 1)).sort_values(
        ascending=False, kind="stable"
    )
    fold_size = np.zeros(n_folds, dtype=int)
    fold_of_group = {}
    for g, size in order.items():
        f = int(np.argmin(fold_size))
        fold_of_group[g] = f
        fold_size[f] += size
    return group_of.map(fold_of_group)


def split_compounds(
    adata: AnnData,
    *,
    compound_key: str = HCI_KEYS.COMPOUND,
    n_folds: int = 5,
    method: Literal["scaffold", "group", "random"] = "scaffold",
    smiles_key: str | None = None,
    group_key: str | None = None,
    control_value: Any = HCI_KEYS.CONTROL_VALUE,
    seed: int = 0,
    key_added: str = HCI_KEYS.FOLD,
    overwrite: bool = False,
    copy: bool = False,
) -> AnnData | None:
    """Assign every compound (and so every instance of it) to one of ``n_folds`` cross-validation folds.

    Parameters
    ----------
    adata
        Instances, wells or compounds.
    compound_key
        obs column with compound ids.
    n_folds
        Number of folds.
    method
        ``"scaffold"``: group compounds by RDKit Bemis–Murcko scaffold of ``obs[smiles_key]`` (acyclic molecules
        are groups of their own), then assign groups, largest first, to the fold with the fewest compounds.
        ``"group"``: the same balancing over the groups of ``obs[group_key]`` (e.g. precomputed scaffolds).
        ``"random"``: compounds shuffled and dealt to folds.
    smiles_key
        obs column with SMILES (``method="scaffold"``).
    group_key
        obs column with a group per compound (``method="group"``); defaults to ``compound_key``.
    control_value
        Compound id of the controls; they get fold ``-1`` (in no fold). ``None`` treats them like any compound.
    seed
        Seed for shuffling and tie-breaking.
    key_added
        obs column to write.
    overwrite
        Replace an existing ``obs[key_added]``.
    copy
        Return a modified copy.

    Returns
    -------
    ``None``, or a copy when ``copy=True``. Writes ``obs[key_added]`` (int fold, ``-1`` for controls) and
    ``uns[key_added]`` (``method``, ``n_folds``, ``seed``, ``compounds_per_fold``, ``instances_per_fold``).

    Examples
    --------
    >>> import hcitools as ht
    >>> adata = ht.datasets.synthetic_hci(n_compounds=50, seed=0)
    >>> ht.pp.split_compounds(adata, method="group", group_key="scaffold", seed=0)
    >>> sorted(adata.obs["fold"].unique().tolist())
    [-1, 0, 1, 2, 3, 4]
    """
    check_anndata(adata)
    if method not in ("scaffold", "group", "random"):
        raise ValueError(f"`method` must be 'scaffold', 'group' or 'random', got {method!r}.")
    if n_folds < 2:
        raise ValueError(f"`n_folds` must be at least 2, got {n_folds}.")
    if method == "scaffold" and smiles_key is None:
        raise ValueError("`method='scaffold'` needs `smiles_key=`, the obs column with SMILES.")
    if method == "group":
        group_key = group_key or compound_key
    check_obs_keys(adata, {"compound_key": compound_key, "smiles_key": smiles_key if method == "scaffold" else None,
                           "group_key": group_key if method == "group" else None})  # fmt: skip
    check_free_keys(adata, {"obs": key_added, "uns": key_added}, overwrite=overwrite)
    obs = adata.obs
    compounds = obs[compound_key].astype(str)
    is_ctrl = (
        (obs[compound_key] == control_value).to_numpy()
        if control_value is not None
        else np.zeros(len(obs), bool)
    )
    treated = obs.loc[~is_ctrl]
    cpds = pd.unique(compounds[~is_ctrl])
    if len(cpds) < n_folds:
        raise ValueError(f"{len(cpds)} compounds cannot fill {n_folds} folds; lower `n_folds`.")
    rng = np.random.default_rng(seed)
    extra_col = {"scaffold": smiles_key, "group": group_key}.get(method)
    if extra_col is not None:
        grouped = treated[extra_col].groupby(compounds[~is_ctrl].to_numpy(), sort=False)
        per_cpd = grouped.nunique()
        if (per_cpd > 1).any():
            raise ValueError(
                f"Some compounds have several values of obs[{extra_col!r}] (e.g. {list(per_cpd.index[per_cpd > 1])[:5]}); "
                "it must be constant within each compound."
            )
        first = grouped.first().reindex(cpds)
    if method == "random":
        perm = rng.permutation(len(cpds))
        fold_of = pd.Series(np.empty(len(cpds), dtype=int), index=cpds)
        fold_of.iloc[perm] = np.arange(len(cpds)) % n_folds
    elif method == "scaffold":
        fold_of = _balanced_assignment(_scaffolds(first), n_folds, rng)
    else:
        fold_of = _balanced_assignment(first.astype(str), n_folds, rng)
    if fold_of.nunique() < n_folds:
        logger.warning(f"only {fold_of.nunique()} of {n_folds} folds received compounds (too few groups)")
    folds = compounds.map(fold_of).fillna(-1).astype(int).to_numpy()
    target = adata.copy() if copy else adata
    target.obs[key_added] = folds
    target.uns[key_added] = {
        "method": method,
        "n_folds": n_folds,
        "seed": seed,
        "compounds_per_fold": np.bincount(fold_of.to_numpy(), minlength=n_folds),
        "instances_per_fold": np.bincount(folds[folds >= 0], minlength=n_folds),
    }
    log_written("adata", [f"obs[{key_added!r}]", f"uns[{key_added!r}]"])
    return target if copy else None
