"""``ht.tl.mtae``: train an MTAe variant on an out-of-distribution split, predict the held-out cells, evaluate."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from anndata import AnnData

from .._constants import PERTURBATION_KEYS
from .._utils import check_free_keys, log_written, logger, quiet_loggers, warn
from .._validate import check_anndata, check_bool, check_str
from ._perturbation import (
    BASELINES,
    _baseline_from_split,
    _check_keys,
    _resolve_condition,
    check_names_arg,
    check_seed_arg,
    split_ood,
)
from ._perturbation_eval import (
    _EVAL_OPTIONS,
    CEILING,
    _ceiling,
    _check_eval_args,
    _evaluate,
    _matrix,
    _release,
)

_SCALARS = (int, float, str, bool)


def _check_options(name: str, value: Any, allowed: set[str] | None, refused: Sequence[str] = ()) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"`{name}` must be a dict of keyword arguments (or None), got {type(value).__name__}, e.g. "
            f"`{name}={{'max_epochs': 50}}`."
        )
    clash = [k for k in refused if k in value]
    if clash:
        raise TypeError(f"`{name}` must not hold {clash}: pass them as `ht.tl.mtae`'s own arguments.")
    if allowed is not None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise TypeError(f"`{name}` has unknown options {unknown}; allowed: {sorted(allowed)}.")
    return dict(value)


def mtae(
    adata: AnnData,
    *,
    target: Any,
    variant: str = "MTAe",
    condition: Any = None,
    condition_key: str = PERTURBATION_KEYS.CONDITION,
    cell_type_key: str = PERTURBATION_KEYS.CELL_TYPE,
    control_value: Any = PERTURBATION_KEYS.CONTROL_VALUE,
    key_added: str = "mtae",
    seed: int = 0,
    train_on_target_control: bool = True,
    baselines: Sequence[str] = ("identity", "mean_shift"),
    ceiling: bool = True,
    train_kwargs: Mapping[str, Any] | None = None,
    eval_kwargs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    **model_kwargs,
) -> AnnData:
    """Train an MTAe variant without the target cell type's perturbed cells, predict them, and evaluate.

    The split is :func:`split_ood` (no perturbed cell of ``target`` is trained on); the model
    (:class:`~hcitools.model.MTAe`) is trained on the split's training cells (its own validation cells are drawn
    from them, never from the target), then encodes the target's control cells and decodes them under
    ``condition``. The prediction, the baselines (:func:`predict_baseline`) and the split-half ceiling
    (:func:`perturbation_ceiling`) are evaluated on the same held-out cells with :func:`evaluate_perturbation`.

    Parameters
    ----------
    adata
        Cells × genes (log-normalised) with condition and cell type in ``obs``. It is not registered or
        modified, except for ``uns[key_added]``.
    target
        The held-out cell type.
    variant
        MTAe variant: ``"MTAe"``, ``"MTAeAdv"``, ``"MTAeAdvG"``, ``"MTAeOT"``, ``"MTAePlusOT"``, ``"MTVae"``,
        ``"MTVaeOT"`` or ``"MTVaePlusOT"``.
    condition
        Perturbed condition to predict; default: the only perturbed condition of the data (several raise).
    condition_key, cell_type_key, control_value
        As in :func:`split_ood`.
    key_added
        Key of ``adata.uns`` the evaluation is written to (see Returns).
    seed
        Seed of the training (initialisation, split, batches), the baselines and the evaluation.
    train_on_target_control
        Train on the target's control cells (as the MTAe paper and scGen do).
    baselines
        Baselines evaluated beside the model (``"identity"``, ``"mean_shift"``, ``"scgen"``; ``()`` for none).
    ceiling
        Evaluate the split-half ceiling.
    train_kwargs
        Passed to :meth:`MTAe.train <hcitools.model.MTAe.train>` (e.g. ``{"max_epochs": 50}``; not ``seed``).
    eval_kwargs
        Passed to :func:`evaluate_perturbation` (``n_degs``, ``deg_method``, ``direction``, ``distances``,
        ``n_comps``, ``n_boot``; not ``seed``).
    overwrite
        Replace an existing ``uns[key_added]``.
    **model_kwargs
        Passed to :class:`~hcitools.model.MTAe` (e.g. ``n_latent=64``, ``n_hidden=(512, 256)``).

    Returns
    -------
    A new AnnData of the predicted cells: one per control cell of ``target``, same ``var``, ``obs`` copied from
    those control cells, ``uns["mtae_predict"]`` naming the variant and condition. Writes ``adata.uns[key_added]``:

    - ``"evaluation"``: a tidy DataFrame with columns ``model``, ``cell_type``, ``seed``, ``metric``, ``value``
      (the variant, each baseline, and the ceiling as ``"ceiling (split half)"``) -- the layout of
      :func:`benchmark_perturbation`, which :func:`rank_models` and :func:`hcitools.pl.perturbation_metrics`
      accept;
    - ``"params"``: variant, target, condition, keys, seed, the primitive model and training options.

    A call that raises leaves ``adata`` as it was.
    """
    from ..model._mtae import VARIANTS

    check_anndata(adata)
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {list(VARIANTS)}, got {variant!r}.")
    key_added = check_str(key_added, "key_added")
    check_seed_arg("seed", seed)
    check_bool(overwrite, "overwrite")
    check_bool(ceiling, "ceiling")
    check_bool(train_on_target_control, "train_on_target_control")
    baselines = check_names_arg("baselines", baselines, BASELINES, allow_empty=True)
    _check_keys(adata, condition_key=condition_key, cell_type_key=cell_type_key, control_value=control_value)
    condition = _resolve_condition(adata, condition, condition_key=condition_key, control_value=control_value)
    check_free_keys(adata, {"uns": key_added}, overwrite=overwrite)
    from ..model import MTAe

    init_params = set(inspect.signature(MTAe.__init__).parameters) - {"self", "adata", "registry", "variant"}
    train_params = set(inspect.signature(MTAe.train).parameters) - {"self", "trainer_kwargs", "seed"}
    for name in model_kwargs:
        if name in init_params:
            continue
        hint = (
            f" it is a `train` argument: pass `train_kwargs={{{name!r}: ...}}`"
            if name in train_params
            else ""
        )
        raise TypeError(
            f"MTAe takes no argument `{name}` (passed through `**model_kwargs`){';' + hint if hint else ''}. MTAe "
            f"takes {sorted(init_params)}."
        )
    train_kwargs = _check_options("train_kwargs", train_kwargs, None, refused=("seed",))
    eval_kwargs = _check_options("eval_kwargs", eval_kwargs, set(_EVAL_OPTIONS), refused=("seed",))
    try:
        options = _check_eval_args(adata.n_vars, seed=seed, **eval_kwargs)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{err} (pass it in `eval_kwargs`)") from None
    keys = {"condition_key": condition_key, "cell_type_key": cell_type_key, "control_value": control_value}
    train, ctrl, stim = split_ood(
        adata, target=target, condition=condition, train_on_target_control=train_on_target_control, **keys
    )
    for part in (train, ctrl):  # the split's own copies are registered afresh, never as the user's data
        part.uns.pop("_scvi_uuid", None)
        part.uns.pop("_scvi_manager_uuid", None)
    # everything is checked; from here on only the split's copies are touched, then uns[key_added] is written
    with quiet_loggers("scvi", "lightning.pytorch", "lightning.fabric"):
        MTAe.setup_anndata(train, **keys)
        model = MTAe(train, variant=variant, **model_kwargs)
        try:
            model.train(seed=int(seed), **train_kwargs)
            pred = model.predict(ctrl, condition=condition)
        finally:
            _release(model, train)  # scvi-tools' class-level stores would otherwise keep the split's data
    for col in [c for c in pred.obs.columns if str(c).startswith("_scvi_")]:
        del pred.obs[col]
    pred.uns.pop("_scvi_uuid", None)
    pred.uns.pop("_scvi_manager_uuid", None)
    genes = list(map(str, stim.var_names))
    S, C = _matrix("stim", stim), _matrix("ctrl", ctrl)
    results: dict[str, pd.Series] = {}
    notes: list[str] = []

    def record(name: str, fn) -> None:
        result, fold_notes = fn()
        results[name] = result
        notes.extend(f"{name}: {n}" for n in fold_notes)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        record(variant, lambda: _evaluate(_matrix("pred", pred), S, C, genes, **options))
        for base in baselines:

            def baseline(base=base):
                p = _baseline_from_split(
                    train, ctrl, method=base, target=target, condition=condition, seed=int(seed), **keys
                )
                return _evaluate(_matrix("pred", p), S, C, genes, **options)

            record(base, baseline)
        if ceiling:
            record(CEILING, lambda: _ceiling(stim, ctrl, **options))
    if notes:
        warn("ht.tl.mtae: " + "; ".join(notes) + ".")
    evaluation = pd.DataFrame(
        [
            {"model": name, "cell_type": str(target), "seed": int(seed), "metric": m, "value": float(v)}
            for name, series in results.items()
            for m, v in series.items()
        ],
        columns=["model", "cell_type", "seed", "metric", "value"],
    )
    adata.uns[key_added] = {
        "evaluation": evaluation,
        "params": {
            "variant": variant, "target": str(target), "condition": str(condition), **{k: str(v) for k, v in keys.items()},
            "seed": int(seed), "train_on_target_control": bool(train_on_target_control), "baselines": list(baselines),
            "n_train_cells": int(train.n_obs), "n_ctrl_cells": int(ctrl.n_obs), "n_stim_cells": int(stim.n_obs),
            "model_kwargs": {k: v for k, v in model_kwargs.items() if isinstance(v, _SCALARS)},
            "train_kwargs": {k: v for k, v in train_kwargs.items() if isinstance(v, _SCALARS)},
        },
    }  # fmt: skip
    r2 = results[variant].get("r2_top100", float("nan"))
    logger.info(f"mtae: {variant} on held-out {target!r}, R² (top-100 DEGs) {r2:.3f}")
    log_written("adata", [f"uns[{key_added!r}]"])
    return pred
