"""Held-out-cell-type splits and baseline predictions for perturbation modelling."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import PERTURBATION_KEYS
from .._utils import import_optional, logger, to_dense
from .._validate import (
    check_anndata,
    check_bool,
    check_choice,
    check_int,
    check_real,
    validate_perturbation,
)

#: Baselines of :func:`predict_baseline`.
BASELINES = ("identity", "mean_shift", "scgen")


# ------------------------------------------------------------------------------------------------- argument checks
# Small checks of the perturbation side (the MTAe model uses them too): a wrong type raises a TypeError, a value out
# of range a ValueError; both name the argument, what was given and what to pass.
def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _given(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


# Thin adapters over the package's shared argument checks (``hcitools._validate``), keeping this module's
# (name, value) argument order.
def check_int_arg(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int in ``[minimum, maximum]`` (:func:`hcitools._validate.check_int`)."""
    return check_int(value, name, min=minimum, max=maximum)


def check_real_arg(
    name: str, value: Any, low: float = -math.inf, high: float = math.inf, *, low_open: bool = False,
    high_open: bool = False,
) -> float:  # fmt: skip
    """``value`` as a finite float in the interval (:func:`hcitools._validate.check_real`)."""
    return check_real(
        value,
        name,
        min=None if low == -math.inf else low,
        max=None if high == math.inf else high,
        min_inclusive=not low_open,
        max_inclusive=not high_open,
    )


def check_bool_arg(name: str, value: Any) -> bool:
    """:func:`hcitools._validate.check_bool`."""
    return check_bool(value, name)


def check_choice_arg(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """:func:`hcitools._validate.check_choice`."""
    return check_choice(value, name, choices)


def check_seed_arg(name: str, value: Any) -> int:
    """A seed: an int in [0, 2**32 − 1] (the range numpy and Lightning accept)."""
    return check_int(value, name, min=0, max=2**32 - 1)


def check_names_arg(name: str, value: Any, choices: Sequence[str], *, allow_empty: bool = False) -> list[str]:
    """A list or tuple of names, each one of ``choices`` (a single string is refused: it is not a list of names)."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TypeError(
            f"`{name}` must be a list or tuple of names from {list(choices)}, got {_given(value)}; for one name pass "
            f"`{name}=({value!r},)`."
        )
    unknown = [v for v in value if v not in choices]
    if unknown:
        raise ValueError(f"`{name}` holds unknown names {unknown}; choose from {list(choices)}.")
    duplicated = sorted({str(v) for i, v in enumerate(value) if v in list(value)[:i]})
    if duplicated:
        raise ValueError(f"`{name}` names {duplicated} more than once; name each once.")
    if not value and not allow_empty:
        raise ValueError(f"`{name}` is empty; pass at least one of {list(choices)}.")
    return list(value)


def _check_keys(adata: AnnData, *, condition_key: Any, cell_type_key: Any, control_value: Any) -> None:
    """The data and key checks every perturbation tool starts with (the keys are strings, the columns exist, controls
    and one perturbed condition are present, expression is finite and non-negative)."""
    check_anndata(adata)
    for name, value in (("condition_key", condition_key), ("cell_type_key", cell_type_key)):
        if not isinstance(value, str):
            raise TypeError(f"`{name}` must be the name of an obs column (a str), got {_given(value)}.")
    if isinstance(control_value, list | tuple | set | dict | np.ndarray):
        raise TypeError(
            f"`control_value` must be one value of adata.obs[{condition_key!r}], got {_given(control_value)}."
        )
    validate_perturbation(
        adata, condition_key=condition_key, cell_type_key=cell_type_key, control_value=control_value
    )


def _resolve_condition(adata: AnnData, condition: Any, *, condition_key: str, control_value: Any) -> Any:
    """The perturbed condition to evaluate: ``condition`` when given (it must be a perturbed value of
    ``obs[condition_key]``), otherwise the only perturbed condition of the data; several raise, listing them."""
    values = pd.unique(adata.obs[condition_key])
    perturbed = [v for v in values if v != control_value]
    if condition is None:
        if len(perturbed) != 1:
            raise ValueError(
                f"adata.obs[{condition_key!r}] holds {len(perturbed)} perturbed conditions "
                f"({sorted(map(str, perturbed))[:10]}); pass `condition=` the one to evaluate."
            )
        return perturbed[0]
    if isinstance(condition, list | tuple | set | dict | np.ndarray):
        raise TypeError(
            f"`condition` must be one value of adata.obs[{condition_key!r}], got {_given(condition)}."
        )
    if condition == control_value or not any(condition == v for v in perturbed):
        raise ValueError(
            f"`condition` {condition!r} must be a perturbed value of adata.obs[{condition_key!r}]; perturbed "
            f"values: {sorted(map(str, perturbed))[:10]}."
        )
    return condition


def split_ood(
    adata: AnnData,
    *,
    cell_type_key: str = PERTURBATION_KEYS.CELL_TYPE,
    target: Any,
    condition_key: str = PERTURBATION_KEYS.CONDITION,
    control_value: Any = PERTURBATION_KEYS.CONTROL_VALUE,
    condition: Any = None,
    train_on_target_control: bool = True,
) -> tuple[AnnData, AnnData, AnnData]:
    """Hold out a cell type's perturbed cells (out-of-distribution prediction).

    No perturbed cell of the target cell type (any non-control condition, e.g. every dose) is in the training
    set. Whether the target's control cells are trained on is explicit (``train_on_target_control``; the MTAe
    paper and scGen train on them).

    Parameters
    ----------
    adata
        Cells × genes with condition and cell type in ``obs``.
    cell_type_key
        obs column with cell types.
    target
        The held-out cell type.
    condition_key
        obs column with conditions.
    control_value
        Control condition.
    condition
        The perturbed condition to evaluate (its target cells form ``stim_target``); default: the only perturbed
        condition of the data (several raise).
    train_on_target_control
        Keep the target's control cells in the training set.

    Returns
    -------
    ``(train, ctrl_target, stim_target)``: new AnnData objects (copies). ``train.uns["split_ood"]`` records the
    target, the condition and whether the target's controls were trained on.
    """
    _check_keys(adata, condition_key=condition_key, cell_type_key=cell_type_key, control_value=control_value)
    check_bool_arg("train_on_target_control", train_on_target_control)
    ct = adata.obs[cell_type_key].to_numpy()
    cond = adata.obs[condition_key].to_numpy()
    if isinstance(target, list | tuple | set | np.ndarray) or not any(target == v for v in pd.unique(ct)):
        raise ValueError(
            f"`target` {target!r} is not a value of adata.obs[{cell_type_key!r}]; values: {sorted(map(str, set(ct)))}. "
            "Pass one cell type."
        )
    condition = _resolve_condition(adata, condition, condition_key=condition_key, control_value=control_value)
    is_target = ct == target
    ctrl_mask = is_target & (cond == control_value)
    stim_mask = is_target & (cond == condition)
    if not ctrl_mask.any() or not stim_mask.any():
        raise ValueError(
            f"Cell type {target!r} (argument `target`) needs both control and {condition!r} cells to be evaluated; it "
            f"has {int(ctrl_mask.sum())} control and {int(stim_mask.sum())} {condition!r} cells. Hold out another "
            "cell type."
        )
    train_mask = ~is_target | ((cond == control_value) & bool(train_on_target_control))
    train = adata[train_mask].copy()
    train.uns["split_ood"] = {
        "target": str(target),
        "condition": str(condition),
        "train_on_target_control": bool(train_on_target_control),
    }
    logger.info(
        f"split_ood: {train.n_obs} training cells; held out {int(stim_mask.sum())} {condition} cells of {target!r}"
    )
    return train, adata[ctrl_mask].copy(), adata[stim_mask].copy()


def predict_baseline(
    adata: AnnData,
    *,
    method: Literal["identity", "mean_shift", "scgen"] = "mean_shift",
    target: Any,
    condition: Any = None,
    cell_type_key: str = PERTURBATION_KEYS.CELL_TYPE,
    condition_key: str = PERTURBATION_KEYS.CONDITION,
    control_value: Any = PERTURBATION_KEYS.CONTROL_VALUE,
    seed: int = 0,
    max_epochs: int = 100,
    batch_size: int = 32,
) -> AnnData:
    """Predict the target cell type's response to ``condition`` with a baseline.

    ``adata`` is the full data set; the target's perturbed cells are never used (the split of
    :func:`split_ood` is applied inside).

    Methods:

    ``"identity"``
        The target's control cells, unchanged.
    ``"mean_shift"``
        Control cells + the mean shift (mean perturbed − mean control) of the other cell types, averaged over them.
    ``"scgen"``
        pertpy's :class:`~pertpy.tools.Scgen` (latent arithmetic), trained on the split's training cells,
        seeded; needs JAX (``pip install 'pertpy[jax]'``).

    Parameters
    ----------
    adata
        Cells × genes (log-normalised).
    method
        Baseline name.
    target
        The held-out cell type.
    condition
        Perturbed condition to predict; default: the only perturbed condition of the data (several raise).
    cell_type_key, condition_key, control_value
        As in :func:`split_ood`.
    seed
        Seed of scGen's training.
    max_epochs, batch_size
        scGen training.

    Returns
    -------
    AnnData of predicted cells (one per control cell of the target, same ``var``; ``obs`` copied, except for
    scGen whose output rows are its own), with ``uns["baseline"]`` naming the method.
    """
    check_choice_arg("method", method, BASELINES)
    check_seed_arg("seed", seed)
    check_int_arg("max_epochs", max_epochs, 1)
    check_int_arg("batch_size", batch_size, 1)
    _check_keys(adata, condition_key=condition_key, cell_type_key=cell_type_key, control_value=control_value)
    condition = _resolve_condition(adata, condition, condition_key=condition_key, control_value=control_value)
    train, ctrl, _ = split_ood(
        adata,
        cell_type_key=cell_type_key,
        target=target,
        condition_key=condition_key,
        control_value=control_value,
        condition=condition,
    )
    return _baseline_from_split(
        train, ctrl, method=method, target=target, condition=condition, cell_type_key=cell_type_key,
        condition_key=condition_key, control_value=control_value, seed=seed, max_epochs=max_epochs,
        batch_size=batch_size,
    )  # fmt: skip


def _baseline_from_split(
    train: AnnData,
    ctrl: AnnData,
    *,
    method: str,
    target: Any,
    condition: Any,
    cell_type_key: str,
    condition_key: str,
    control_value: Any,
    seed: int = 0,
    max_epochs: int = 100,
    batch_size: int = 32,
) -> AnnData:
    """:func:`predict_baseline` on the cells of a :func:`split_ood` split (nothing is copied again)."""
    if method == "identity":
        X = to_dense(ctrl.X, np.float32)
    elif method == "mean_shift":
        is_other = (train.obs[cell_type_key] != target).to_numpy()
        cond = train.obs[condition_key].to_numpy()
        shifts = []
        for ct in pd.unique(train.obs[cell_type_key][is_other]):
            in_ct = is_other & (train.obs[cell_type_key] == ct).to_numpy()
            c, s = in_ct & (cond == control_value), in_ct & (cond == condition)
            if c.any() and s.any():
                shifts.append(
                    to_dense(train.X[s], np.float64).mean(0) - to_dense(train.X[c], np.float64).mean(0)
                )
        if not shifts:
            raise ValueError(
                f"No other cell type has both control and {condition!r} cells: no shift to transfer."
            )
        X = (to_dense(ctrl.X, np.float64) + np.mean(shifts, axis=0)).astype(np.float32)
    elif method == "scgen":
        return _scgen(
            train,
            target,
            condition,
            cell_type_key,
            condition_key,
            control_value,
            seed,
            max_epochs,
            batch_size,
        )
    else:
        raise ValueError(f"`method` must be 'identity', 'mean_shift' or 'scgen', got {method!r}.")
    out = AnnData(X, obs=ctrl.obs.copy(), var=ctrl.var.copy())
    out.uns["baseline"] = {"method": method, "target": str(target), "condition": str(condition)}
    return out


def _scgen(
    train, target, condition, cell_type_key, condition_key, control_value, seed, max_epochs, batch_size
) -> AnnData:
    pt = import_optional("pertpy", "predict_baseline(method='scgen')")
    try:
        Scgen = pt.tl.Scgen
        import jax  # noqa: F401
    except (ImportError, AttributeError) as err:
        raise ImportError(
            "scGen (pertpy's Scgen) needs JAX, which is not installed with this pertpy: "
            "`pip install 'pertpy[jax]'` (or `pip install jax`)."
        ) from err
    import scvi

    scvi.settings.seed = seed
    train = train.copy()  # scGen registers (and densifies) its own copy
    train.X = to_dense(train.X)
    Scgen.setup_anndata(train, batch_key=condition_key, labels_key=cell_type_key)
    model = Scgen(train)
    model.train(max_epochs=max_epochs, batch_size=batch_size, early_stopping=True, enable_progress_bar=False)
    pred, _ = model.predict(ctrl_key=control_value, stim_key=condition, celltype_to_predict=target)
    out = AnnData(to_dense(pred.X, np.float32), obs=pred.obs.copy(), var=train.var.copy())
    out.uns["baseline"] = {
        "method": "scgen",
        "target": str(target),
        "condition": str(condition),
        "seed": seed,
    }
    return out
