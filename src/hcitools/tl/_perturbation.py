"""Held-out-cell-type splits and baseline predictions for perturbation modelling."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from anndata import AnnData
from scipy import sparse

from .._constants import PERTURBATION_KEYS
from .._utils import import_optional, logger
from .._validate import check_obs_keys, validate_perturbation


def split_ood(
    adata: AnnData,
    *,
    cell_type_key: str = PERTURBATION_KEYS.CELL_TYPE,
    target: Any,
    condition_key: str = PERTURBATION_KEYS.CONDITION,
    control_value: Any = PERTURBATION_KEYS.CONTROL_VALUE,
    condition: Any = "stimulated",
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
        The perturbed condition to evaluate (its target cells form ``stim_target``).
    train_on_target_control
        Keep the target's control cells in the training set.

    Returns
    -------
    ``(train, ctrl_target, stim_target)``: new AnnData objects (copies). ``train.uns["split_ood"]`` records the
    target, the condition and whether the target's controls were trained on.
    """
    validate_perturbation(
        adata, condition_key=condition_key, cell_type_key=cell_type_key, control_value=control_value
    )
    check_obs_keys(adata, {"cell_type_key": cell_type_key})
    ct = adata.obs[cell_type_key].to_numpy()
    cond = adata.obs[condition_key].to_numpy()
    if target not in set(ct):
        raise ValueError(
            f"`target` {target!r} is not a value of adata.obs[{cell_type_key!r}]; values: {sorted(map(str, set(ct)))}."
        )
    if condition == control_value or condition not in set(cond):
        raise ValueError(
            f"`condition` {condition!r} must be a perturbed value of adata.obs[{condition_key!r}]."
        )
    is_target = ct == target
    ctrl_mask = is_target & (cond == control_value)
    stim_mask = is_target & (cond == condition)
    if not ctrl_mask.any() or not stim_mask.any():
        raise ValueError(f"Cell type {target!r} needs both control and {condition!r} cells to be evaluated.")
    train_mask = ~is_target | ((cond == control_value) & train_on_target_control)
    train = adata[train_mask].copy()
    train.uns["split_ood"] = {
        "target": str(target),
        "condition": str(condition),
        "train_on_target_control": train_on_target_control,
    }
    logger.info(
        f"split_ood: {train.n_obs} training cells; held out {int(stim_mask.sum())} {condition} cells of {target!r}"
    )
    return train, adata[ctrl_mask].copy(), adata[stim_mask].copy()


def _dense(X) -> np.ndarray:
    return X.toarray() if sparse.issparse(X) else np.asarray(X)


def predict_baseline(
    adata: AnnData,
    *,
    method: Literal["identity", "mean_shift", "scgen"] = "mean_shift",
    target: Any,
    condition: Any = "stimulated",
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
        Perturbed condition to predict.
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
    train, ctrl, _ = split_ood(
        adata,
        cell_type_key=cell_type_key,
        target=target,
        condition_key=condition_key,
        control_value=control_value,
        condition=condition,
    )
    if method == "identity":
        X = _dense(ctrl.X).astype(np.float32)
    elif method == "mean_shift":
        others = train[(train.obs[cell_type_key] != target).to_numpy()]
        shifts = []
        for ct in others.obs[cell_type_key].unique():
            sub = others[(others.obs[cell_type_key] == ct).to_numpy()]
            c = (sub.obs[condition_key] == control_value).to_numpy()
            s = (sub.obs[condition_key] == condition).to_numpy()
            if c.any() and s.any():
                shifts.append(_dense(sub.X[s]).mean(0) - _dense(sub.X[c]).mean(0))
        if not shifts:
            raise ValueError(
                f"No other cell type has both control and {condition!r} cells: no shift to transfer."
            )
        X = (_dense(ctrl.X) + np.mean(shifts, axis=0)).astype(np.float32)
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
    train = train.copy()
    if sparse.issparse(train.X):
        train.X = train.X.toarray()
    Scgen.setup_anndata(train, batch_key=condition_key, labels_key=cell_type_key)
    model = Scgen(train)
    model.train(max_epochs=max_epochs, batch_size=batch_size, early_stopping=True, enable_progress_bar=False)
    pred, _ = model.predict(ctrl_key=control_value, stim_key=condition, celltype_to_predict=target)
    out = AnnData(np.asarray(_dense(pred.X), dtype=np.float32), obs=pred.obs.copy(), var=train.var.copy())
    out.uns["baseline"] = {
        "method": "scgen",
        "target": str(target),
        "condition": str(condition),
        "seed": seed,
    }
    return out
