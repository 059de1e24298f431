"""Compound-level cross-validation folds (random, by group, or by Bemis–Murcko scaffold)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import HCI_KEYS
from .._utils import check_free_keys, import_optional, log_written
from .._validate import (
    case_variants,
    check_anndata,
    check_bool,
    check_choice,
    check_constant_within,
    check_int,
    check_obs_keys,
    check_str,
)

_METHODS = ("scaffold", "group", "random")


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
    check_int(n_folds, "n_folds", min=3)  # train, validation, test
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
    check_anndata(adata)
    check_str(compound_key, "compound_key")
    check_str(fold_key, "fold_key")
    check_obs_keys(adata, {"compound_key": compound_key, "fold_key": fold_key})
    check_constant_within(
        adata.obs[fold_key],
        adata.obs[compound_key].astype(str).to_numpy(),
        what=f"The fold adata.obs[{fold_key!r}] (argument `fold_key`)",
        group_what=f"the compounds of adata.obs[{compound_key!r}] (argument `compound_key`)",
        fix="Every instance of a compound must be in one fold: compounds that straddle folds leak between "
        "training and test. Recompute the folds with `ht.pp.split_compounds`.",
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


def _balanced_group_folds(group_of: pd.Series, n_folds: int, seed: int) -> pd.Series:
    """Fold of each compound (index) from its group (values): whole groups, fold sizes balanced in compounds.

    scikit-learn's :class:`~sklearn.model_selection.GroupKFold` balances folds by size (largest group first, to
    the fold with the fewest compounds so far). It breaks ties between groups of one size by their order in
    ``np.unique``, so the groups are first given random codes (a permutation seeded by ``seed`` of the group names
    sorted by name): the seed decides the ties, and the folds depend neither on row order nor on the pandas
    version. ``GroupKFold(shuffle=True)`` is not used: it deals out equal *numbers of groups*, which on the
    16,170 Moshkov et al. compounds gave folds of 2900–3824 compounds instead of 5 × 3234.
    """
    from sklearn.model_selection import GroupKFold

    names = np.unique(group_of.to_numpy(dtype=str))  # sorted by name
    if len(names) < n_folds:
        raise ValueError(
            f"{len(names)} groups cannot fill {n_folds} folds (a group is never split across folds); lower "
            "`n_folds` or use finer groups."
        )
    code_of = pd.Series(np.random.default_rng(seed).permutation(len(names)), index=names)
    codes = code_of.loc[group_of.to_numpy(dtype=str)].to_numpy()
    folds = np.empty(len(group_of), dtype=int)
    for k, (_, test) in enumerate(GroupKFold(n_splits=n_folds).split(codes, groups=codes)):
        folds[test] = k
    return pd.Series(folds, index=group_of.index)


def _random_folds(compounds: np.ndarray, n_folds: int, seed: int) -> pd.Series:
    """Compounds (sorted by name, then shuffled by ``seed``) dealt to folds by :class:`~sklearn.model_selection.KFold`."""
    from sklearn.model_selection import KFold

    names = np.sort(compounds.astype(str))
    folds = np.empty(len(names), dtype=int)
    for k, (_, test) in enumerate(KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(names)):
        folds[test] = k
    return pd.Series(folds, index=names)


def _check_control_case(compounds: pd.Series, control_value: Any, compound_key: str) -> None:
    """Refuse a ``control_value`` that matches no compound but one up to case (``"dmso"`` for ``"DMSO"``).

    A control value matching nothing is legal (a screen without controls), but one that differs only in case from
    a compound id is almost surely a typo, and the controls would be dealt into the folds as a compound.
    """
    variants = case_variants(control_value, pd.unique(compounds.dropna()))
    if variants:
        raise ValueError(
            f"`control_value={control_value!r}` matches no row of adata.obs[{compound_key!r}], but {variants[0]!r} "
            "differs from it only in case: the controls would be dealt into the folds as a compound. Pass "
            f"`control_value={variants[0]!r}` (or `control_value=None` to treat them as a compound on purpose)."
        )


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
        are groups of their own), then deal whole groups to folds with scikit-learn's
        :class:`~sklearn.model_selection.GroupKFold`, which balances the folds' numbers of compounds (largest group
        first, to the fold with the fewest compounds); ``seed`` breaks ties between groups of one size.
        ``"group"``: the same over the groups of ``obs[group_key]`` (e.g. precomputed scaffolds).
        ``"random"``: compounds shuffled by ``seed`` and dealt to folds (:class:`~sklearn.model_selection.KFold`;
        fold sizes differ by at most one).
        Compounds are sorted by name first, so the folds depend on the seed only, not on row order.
    smiles_key
        obs column with SMILES (``method="scaffold"``).
    group_key
        obs column with a group per compound (``method="group"``); defaults to ``compound_key``.
    control_value
        Compound id of the controls; they get fold ``-1`` (in no fold). ``None`` treats them like any compound.
        A value that matches no compound is allowed (no controls), unless a compound id equals it up to case
        (``"dmso"`` for ``"DMSO"``): that typo raises a ValueError naming the id.
    seed
        Seed of the shuffling (``"random"``) and of the tie-breaking between groups of one size.
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

    Raises
    ------
    ValueError
        If there are fewer compounds (or groups) than folds, ``obs[smiles_key]`` / ``obs[group_key]`` varies
        within a compound, or ``control_value`` differs only in case from a compound id; nothing is written then.

    Examples
    --------
    >>> import hcitools as ht
    >>> adata = ht.datasets.synthetic_hci(n_compounds=50, seed=0)
    >>> ht.pp.split_compounds(adata, method="group", group_key="scaffold", seed=0)
    >>> sorted(adata.obs["fold"].unique().tolist())
    [-1, 0, 1, 2, 3, 4]
    """
    check_anndata(adata)
    check_choice(method, "method", _METHODS)
    n_folds = check_int(n_folds, "n_folds", min=2)
    seed = check_int(seed, "seed", min=0)
    check_str(compound_key, "compound_key")
    check_str(key_added, "key_added")
    check_str(smiles_key, "smiles_key", allow_none=True)
    check_str(group_key, "group_key", allow_none=True)
    check_bool(overwrite, "overwrite")
    check_bool(copy, "copy")
    if method == "scaffold" and smiles_key is None:
        raise ValueError("`method='scaffold'` needs `smiles_key=`, the obs column with SMILES.")
    if method == "group":
        group_key = group_key or compound_key
    extra_col = {"scaffold": smiles_key, "group": group_key}.get(method)
    extra_arg = {"scaffold": "smiles_key", "group": "group_key"}.get(method)
    check_obs_keys(adata, {"compound_key": compound_key, **({extra_arg: extra_col} if extra_arg else {})})
    check_free_keys(adata, {"obs": key_added, "uns": key_added}, overwrite=overwrite)
    obs = adata.obs
    compounds = obs[compound_key].astype(str).to_numpy()
    is_ctrl = (
        (obs[compound_key] == control_value).to_numpy()
        if control_value is not None
        else np.zeros(len(obs), bool)
    )
    if control_value is not None and not is_ctrl.any():
        _check_control_case(obs[compound_key], control_value, compound_key)
    cpds = np.unique(compounds[~is_ctrl])  # sorted by name: the folds never depend on row order
    if len(cpds) < n_folds:
        raise ValueError(f"{len(cpds)} compounds cannot fill {n_folds} folds; lower `n_folds`.")
    if extra_col is not None:
        values = obs[extra_col].to_numpy()[~is_ctrl]
        check_constant_within(
            values,
            compounds[~is_ctrl],
            what=f"adata.obs[{extra_col!r}] (argument `{extra_arg}`)",
            group_what=f"the compounds of adata.obs[{compound_key!r}]",
            fix="A compound has one structure and one group; fix the column.",
        )
        first = pd.Series(values, index=compounds[~is_ctrl]).groupby(level=0).first().reindex(cpds)
    if method == "random":
        fold_of = _random_folds(cpds, n_folds, seed)
    elif method == "scaffold":
        fold_of = _balanced_group_folds(_scaffolds(first), n_folds, seed)
    else:
        fold_of = _balanced_group_folds(first.astype(str), n_folds, seed)
    folds = pd.Series(compounds).map(fold_of).fillna(-1).astype(int).to_numpy()
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
