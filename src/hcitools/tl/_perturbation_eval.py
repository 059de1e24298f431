"""Evaluation and ranking of perturbation predictions (SPECS §8, with the pitfalls of paper 004 fixed)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import PERTURBATION_KEYS
from .._utils import logger, to_dense
from .._validate import check_obs_keys
from ._pca import pca_basis

DISTANCES = ("euclidean", "edistance", "wasserstein", "mean_pairwise", "mmd")
_HIGHER = ("deg_overlap", "deg_jaccard", "r2_all", "r2_top20", "r2_top100", "r2_shift")


def top_degs(
    case: AnnData | np.ndarray,
    ctrl: AnnData | np.ndarray,
    *,
    genes: Sequence[str],
    n: int = 100,
    method: str = "t-test",
    direction: Literal["up", "down", "both"] = "up",
) -> list[str]:
    """Top-``n`` differentially expressed genes of ``case`` vs ``ctrl`` with :func:`scanpy.tl.rank_genes_groups`.

    Parameters
    ----------
    case, ctrl
        Cells (AnnData or arrays cells × genes) of the two groups.
    genes
        Gene names (columns).
    n
        Number of genes returned.
    method
        scanpy test.
    direction
        ``"up"`` takes the highest scores, ``"down"`` the lowest, ``"both"`` the largest absolute scores.

    Returns
    -------
    List of gene names, best first. Inputs are not modified.
    """
    import scanpy as sc

    if direction not in ("up", "down", "both"):
        raise ValueError(f"`direction` must be 'up', 'down' or 'both', got {direction!r}.")
    a = to_dense(case.X if isinstance(case, AnnData) else case, np.float64)
    b = to_dense(ctrl.X if isinstance(ctrl, AnnData) else ctrl, np.float64)
    ad = AnnData(np.vstack([a, b]).astype(np.float32), var=pd.DataFrame(index=list(genes)))
    ad.obs["group"] = pd.Categorical(["case"] * len(a) + ["ctrl"] * len(b))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.rank_genes_groups(
            ad, "group", groups=["case"], reference="ctrl", method=method, n_genes=ad.n_vars
        )
    df = sc.get.rank_genes_groups_df(ad, group="case").dropna(subset=["scores"])
    if direction == "up":
        df = df.sort_values("scores", ascending=False)
    elif direction == "down":
        df = df.sort_values("scores", ascending=True)
    else:
        df = df.reindex(df["scores"].abs().sort_values(ascending=False).index)
    return df["names"].head(n).astype(str).tolist()


def _r2(x: np.ndarray, y: np.ndarray) -> float:
    if np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1] ** 2)


def _pca_basis(real: np.ndarray, n_comps: int, seed: int):
    """Projection into the PCA basis of the real cells (the package's one seeded scikit-learn PCA helper)."""
    return pca_basis(real, n_comps, seed=seed)


def _wasserstein_pot(X: np.ndarray, Y: np.ndarray) -> float:
    """Exact optimal-transport cost (POT ``ot.emd2``, squared Euclidean cost, uniform weights)."""
    from .._utils import import_optional

    ot = import_optional("ot", "the Wasserstein distance")
    return float(ot.emd2(ot.unif(len(X)), ot.unif(len(Y)), ot.dist(X, Y)))


def _distance_fns(distances: Sequence[str]) -> dict[str, Any]:
    from .._utils import import_optional

    pt = import_optional("pertpy", "evaluate_perturbation's distances")

    fns = {}
    for name in distances:
        if name not in DISTANCES:
            raise ValueError(f"Unknown distance {name!r}; choose from {DISTANCES}.")
        if name == "wasserstein":
            try:
                import jax  # noqa: F401
                import ott  # noqa: F401

                fns[name] = pt.tl.Distance(metric=name, obsm_key="X_pca")
            except ImportError:  # pertpy's needs JAX / ott-jax: exact OT from POT, labelled as such
                fns["wasserstein_pot"] = _wasserstein_pot
            continue
        fns[name] = pt.tl.Distance(metric=name, obsm_key="X_pca")
    return fns


def evaluate_perturbation(
    pred: AnnData,
    stim: AnnData,
    *,
    ctrl: AnnData,
    n_degs: int = 100,
    deg_method: str = "t-test",
    direction: Literal["up", "down", "both"] = "up",
    distances: Sequence[str] = DISTANCES,
    n_comps: int = 50,
    n_boot: int = 100,
    seed: int = 0,
) -> pd.Series:
    """Compare predicted perturbed cells with the real ones (and the real controls).

    - **DEGs**: top ``n_degs`` genes of stim vs ctrl and of pred vs ctrl (scanpy's ``rank_genes_groups``,
      ``deg_method``, ``direction``): ``deg_overlap`` (count) and ``deg_jaccard``.
    - **R²** (squared Pearson) of per-gene means of pred and stim over all genes (``r2_all``), the top-20 and
      top-100 real DEGs (``r2_top20``, ``r2_top100``): means over ``n_boot`` resamples of 80 % of the cells of
      each set (seeded), with their SDs (``*_sd``); and ``r2_shift``: R² of (pred − ctrl) against (stim − ctrl)
      means, which is not inflated by genes that do not respond.
    - **Distances** with pertpy's :class:`~pertpy.tools.Distance`, all in ONE PCA basis fitted on the real
      cells (stim and ctrl) only, predictions projected into it: ``<name>`` = d(stim, pred) and
      ``<name>_ratio`` = d(stim, pred) / d(ctrl, pred). pertpy's Wasserstein needs JAX; without it POT's exact
      ``ot.emd2`` is used and the metric is named ``wasserstein_pot``. pertpy's Wasserstein is an entropic
      (Sinkhorn) cost, positive even between identical sets; POT's exact cost is 0 there. Note that with pertpy's linear-kernel MMD,
      ``mmd`` is the squared Euclidean distance between means, i.e. ``euclidean`` squared: they rank models
      identically (see :func:`rank_models`' duplicate warning).

    Parameters
    ----------
    pred, stim, ctrl
        Predicted perturbed cells, real perturbed cells, real control cells (same genes).
    n_degs
        Number of top DEGs.
    deg_method
        scanpy test (``"t-test"``, ``"wilcoxon"``, …).
    direction
        ``"up"``, ``"down"`` or ``"both"``.
    distances
        Subset of ``("euclidean", "edistance", "wasserstein", "mean_pairwise", "mmd")``.
    n_comps
        PCA components of the distance basis.
    n_boot
        Bootstrap resamples for R².
    seed
        Seed of the PCA and the bootstrap.

    Returns
    -------
    A Series of metrics (higher is better for DEG and R² metrics, lower for distances and ratios).
    """
    for name, ad in (("pred", pred), ("stim", stim), ("ctrl", ctrl)):
        if not isinstance(ad, AnnData) or ad.n_obs < 2:
            raise ValueError(f"`{name}` must be an AnnData with at least two cells.")
    if not (pred.var_names.equals(stim.var_names) and stim.var_names.equals(ctrl.var_names)):
        raise ValueError("`pred`, `stim` and `ctrl` must have the same genes in the same order.")
    genes = list(stim.var_names)
    P, S, C = (to_dense(ad.X, np.float64) for ad in (pred, stim, ctrl))
    if not (np.isfinite(P).all() and np.isfinite(S).all() and np.isfinite(C).all()):
        raise ValueError("Expression holds NaN or infinite values.")
    out: dict[str, float] = {}
    real_degs = top_degs(S, C, genes=genes, n=max(n_degs, 100), method=deg_method, direction=direction)
    pred_degs = top_degs(P, C, genes=genes, n=n_degs, method=deg_method, direction=direction)
    inter = len(set(real_degs[:n_degs]) & set(pred_degs))
    out["deg_overlap"] = float(inter)
    out["deg_jaccard"] = inter / len(set(real_degs[:n_degs]) | set(pred_degs))

    gene_index = {g: i for i, g in enumerate(genes)}
    sets = {
        "all": np.arange(len(genes)),
        "top20": np.array([gene_index[g] for g in real_degs[:20]]),
        "top100": np.array([gene_index[g] for g in real_degs[:100]]),
    }
    rng = np.random.default_rng(seed)
    boots = {k: [] for k in sets}
    kp, ks = max(1, int(0.8 * len(P))), max(1, int(0.8 * len(S)))
    for _ in range(n_boot):
        mp = P[rng.choice(len(P), kp, replace=False)].mean(0)
        ms = S[rng.choice(len(S), ks, replace=False)].mean(0)
        for k, idx in sets.items():
            boots[k].append(_r2(mp[idx], ms[idx]))
    for k, vals in boots.items():
        out[f"r2_{k}"] = float(np.nanmean(vals)) if n_boot else _r2(P.mean(0)[sets[k]], S.mean(0)[sets[k]])
        out[f"r2_{k}_sd"] = float(np.nanstd(vals)) if n_boot else float("nan")
    out["r2_shift"] = _r2(P.mean(0) - C.mean(0), S.mean(0) - C.mean(0))

    project = _pca_basis(np.vstack([S, C]), n_comps, seed)
    Ps, Ss, Cs = project(P), project(S), project(C)
    for name, fn in _distance_fns(distances).items():
        d_stim, d_ctrl = float(fn(Ss, Ps)), float(fn(Cs, Ps))
        out[name] = d_stim
        out[f"{name}_ratio"] = d_stim / d_ctrl if d_ctrl > 0 else float("nan")
    return pd.Series(out, name="value")


def perturbation_ceiling(stim: AnnData, ctrl: AnnData, *, seed: int = 0, **kwargs) -> pd.Series:
    """Split-half ceiling: one random half of the real perturbed cells "predicts" the other half.

    Every metric of :func:`evaluate_perturbation` is computed for half A (as the prediction) against half B (as the
    truth), so the values show how good a perfect model can look given sampling noise.

    Parameters
    ----------
    stim
        Real perturbed cells.
    ctrl
        Real control cells.
    seed
        Seed of the split (and of the evaluation).
    **kwargs
        Passed to :func:`evaluate_perturbation`.

    Returns
    -------
    A Series of metrics, as :func:`evaluate_perturbation`.
    """
    rng = np.random.default_rng(seed)
    perm = rng.permutation(stim.n_obs)
    half = stim.n_obs // 2
    a, b = stim[np.sort(perm[:half])].copy(), stim[np.sort(perm[half:])].copy()
    return evaluate_perturbation(a, b, ctrl=ctrl, seed=seed, **kwargs)


def _direction(metric: str) -> bool:
    base = metric.removesuffix("_ratio")
    if metric in _HIGHER or metric.startswith("r2_") or metric.startswith("deg_"):
        return True
    if base in DISTANCES or base == "wasserstein_pot":
        return False
    raise ValueError(
        f"Unknown direction for metric {metric!r}: pass `higher_is_better={{{metric!r}: True/False}}`."
    )


def rank_models(
    results: pd.DataFrame,
    *,
    metrics: Sequence[str] | None = None,
    higher_is_better: Mapping[str, bool] | None = None,
    duplicate_threshold: float = 0.95,
) -> pd.DataFrame:
    """Rank models by the score of paper 004: per metric (v − best) / (worst − best), summed; lowest wins.

    Parameters
    ----------
    results
        Rows = models, columns = metrics (already averaged over experiments, e.g. cell types × seeds).
    metrics
        Metrics to use (default: every column with a known direction, excluding ``*_sd``).
    higher_is_better
        Direction per metric; by default DEG and R² metrics are higher-is-better and distances lower-is-better.
    duplicate_threshold
        Warn when the absolute Spearman correlation of two metrics across models exceeds it: they count the same
        thing twice.

    Returns
    -------
    DataFrame sorted by ``score``: the scaled per-metric scores (an undefined value, NaN or inf, e.g. the R² of the
    shift of an identity prediction, scores as the worst, 1), ``score`` (sum), ``rank`` (1 = best),
    ``rank_average`` (mean of per-metric ranks, an alternative less sensitive to outliers) and ``rank_by_average``.
    ``attrs["leave_one_metric_out"]``: for each metric left out, every model's rank by the remaining metrics
    (a stability table; ``attrs["winner_stable"]`` tells whether the winner never changes).
    """
    if not isinstance(results, pd.DataFrame) or results.empty:
        raise ValueError("`results` must be a non-empty DataFrame (rows = models, columns = metrics).")
    if metrics is None:
        metrics = [
            c
            for c in results.columns
            if not str(c).endswith("_sd") and ((higher_is_better and c in higher_is_better) or _known(c))
        ]
    metrics = list(metrics)
    missing = [m for m in metrics if m not in results.columns]
    if missing:
        raise KeyError(f"Metrics {missing} are not columns of `results`.")
    direction = {
        m: (higher_is_better[m] if higher_is_better and m in higher_is_better else _direction(m))
        for m in metrics
    }
    values = results[metrics].astype(float).replace([np.inf, -np.inf], np.nan)
    best = pd.Series({m: values[m].max() if direction[m] else values[m].min() for m in metrics})
    worst = pd.Series({m: values[m].min() if direction[m] else values[m].max() for m in metrics})
    span = (worst - best).replace(0, np.nan)
    scaled = (values - best) / span
    scaled = scaled.where(span.notna() | values.isna(), 0.0)  # a metric on which all models tie scores 0
    scaled = scaled.fillna(1.0) + 0.0  # an undefined value (NaN, inf) scores as the worst; + 0.0 drops -0.0
    out = scaled.copy()
    out["score"] = scaled.sum(axis=1)
    out["rank"] = out["score"].rank(method="min").astype(int)
    ranks = pd.DataFrame(
        {m: values[m].rank(ascending=not direction[m], method="average", na_option="bottom") for m in metrics}
    )
    out["rank_average"] = ranks.mean(axis=1)
    out["rank_by_average"] = out["rank_average"].rank(method="min").astype(int)
    loo = pd.DataFrame(
        {m: scaled.drop(columns=m).sum(axis=1).rank(method="min").astype(int) for m in metrics}
    )
    out = out.sort_values("score")
    out.attrs["leave_one_metric_out"] = loo.loc[out.index]
    out.attrs["winner_stable"] = bool((loo.idxmin(axis=0) == out.index[0]).all())
    _warn_duplicates(values, duplicate_threshold)
    return out


def _known(metric: str) -> bool:
    try:
        _direction(metric)
        return True
    except ValueError:
        return False


def _warn_duplicates(values: pd.DataFrame, threshold: float) -> None:
    if len(values) < 3:
        return
    varying = values.loc[:, values.nunique() > 1]
    rho = varying.corr(method="spearman")  # pandas' Spearman over models, every pair at once
    cols = list(rho.columns)
    pairs = [
        f"{a} ~ {b} (ρ = {rho.loc[a, b]:.2f})"
        for i, a in enumerate(cols)
        for b in cols[i + 1 :]
        if abs(rho.loc[a, b]) > threshold
    ]
    if pairs:
        warnings.warn(
            "Near-duplicate metrics across models, counted twice in the score: "
            + "; ".join(pairs[:10])
            + ". With pertpy's linear-kernel MMD, mmd is the squared Euclidean distance of the means.",
            UserWarning,
            stacklevel=3,
        )


def benchmark_perturbation(
    adata: AnnData,
    *,
    models: Sequence[str] | None = None,
    cell_types: Sequence[str] | None = None,
    seeds: Sequence[int] = (1, 2, 19193),
    condition: Any = None,
    baselines: Sequence[str] = ("identity", "mean_shift"),
    ceiling: bool = True,
    condition_key: str = PERTURBATION_KEYS.CONDITION,
    cell_type_key: str = PERTURBATION_KEYS.CELL_TYPE,
    control_value: Any = PERTURBATION_KEYS.CONTROL_VALUE,
    model_kwargs: Mapping[str, Any] | None = None,
    train_kwargs: Mapping[str, Any] | None = None,
    eval_kwargs: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Leave-one-cell-type-out benchmark of MTAe variants beside baselines and the split-half ceiling.

    For each held-out cell type (:func:`split_ood`) and seed, every model is trained on the training cells and
    predicts the held-out cell type's response from its control cells; baselines (:func:`predict_baseline`)
    and the ceiling (:func:`perturbation_ceiling`) are evaluated on the same cells with the same evaluation.

    Parameters
    ----------
    adata
        Cells × genes (log-normalised).
    models
        MTAe variants (default: all eight).
    cell_types
        Cell types to hold out (default: every cell type with control and ``condition`` cells).
    seeds
        Seeds (paper 004: 1, 2, 19193).
    condition
        Perturbed condition; default: the only perturbed condition of the data (several raise).
    baselines
        Baselines always reported (``"identity"``, ``"mean_shift"``, ``"scgen"``).
    ceiling
        Report the split-half ceiling.
    condition_key, cell_type_key, control_value
        As in :func:`split_ood`.
    model_kwargs, train_kwargs, eval_kwargs
        Passed to :class:`~hcitools.model.MTAe`, its ``train`` and :func:`evaluate_perturbation`.
    progress
        Show a progress bar.

    Returns
    -------
    Tidy DataFrame with columns ``model``, ``cell_type``, ``seed``, ``metric``, ``value``.
    """
    from tqdm.auto import tqdm

    from ..model import MTAe
    from ..model._mtae import VARIANTS
    from ._perturbation import _baseline_from_split, _resolve_condition, split_ood

    models = list(VARIANTS) if models is None else list(models)
    unknown = [m for m in models if m not in VARIANTS]
    if unknown:
        raise ValueError(f"`models` must be MTAe variants {list(VARIANTS)}; got unknown {unknown}.")
    keys = {"condition_key": condition_key, "cell_type_key": cell_type_key, "control_value": control_value}
    check_obs_keys(adata, {"condition_key": condition_key, "cell_type_key": cell_type_key})
    condition = _resolve_condition(adata, condition, condition_key=condition_key, control_value=control_value)
    if cell_types is None:
        ct, cond = adata.obs[cell_type_key].astype(str), adata.obs[condition_key]
        cell_types = [
            c
            for c in pd.unique(ct)
            if ((ct == c) & (cond == control_value)).any() and ((ct == c) & (cond == condition)).any()
        ]
    rows = []
    jobs = [(c, s) for c in cell_types for s in seeds]
    for cell_type, seed in tqdm(jobs, desc="benchmark", disable=not progress):
        train, ctrl, stim = split_ood(adata, target=cell_type, condition=condition, **keys)
        for fold_data in (train, ctrl):  # the fold's own copies: registered afresh, not as the user's data
            fold_data.uns.pop("_scvi_uuid", None)
            fold_data.uns.pop("_scvi_manager_uuid", None)
        ek = {"seed": seed, **(eval_kwargs or {})}

        def record(name, pred, _ct=cell_type, _seed=seed, _ctrl=ctrl, _stim=stim, _ek=ek):
            res = evaluate_perturbation(pred, _stim, ctrl=_ctrl, **_ek)
            rows.extend(
                {"model": name, "cell_type": _ct, "seed": _seed, "metric": k, "value": v}
                for k, v in res.items()
            )

        if models:
            MTAe.setup_anndata(train, **keys)
        for i, name in enumerate(models):
            model = MTAe(train, variant=name, **(model_kwargs or {}))
            model.train(seed=seed, enable_progress_bar=False, **(train_kwargs or {}))
            record(name, model.predict(ctrl, condition=condition))
            _release(model, train if i == len(models) - 1 else None)
        for base in baselines:
            pred = _baseline_from_split(
                train, ctrl, method=base, target=cell_type, condition=condition, seed=seed, **keys
            )
            record(base, pred)
        if ceiling:
            res = perturbation_ceiling(stim, ctrl, **ek)
            rows.extend(
                {
                    "model": "ceiling (split half)",
                    "cell_type": cell_type,
                    "seed": seed,
                    "metric": k,
                    "value": v,
                }
                for k, v in res.items()
            )
    table = pd.DataFrame(rows)
    logger.info(
        f"benchmark: {len(models)} models, {len(baselines)} baselines, {len(cell_types)} cell types × {len(seeds)} seeds"
    )
    return table


def _release(model, train: AnnData | None = None) -> None:
    """Forget a fold's AnnData managers: scvi-tools keeps every registered AnnData (and its manager) in class-level
    stores until it is deregistered, so a benchmark would otherwise hold every fold's data."""
    if train is not None:
        model.deregister_manager(train)  # the class-level manager of the fold's training data
    type(model)._per_instance_manager_store.pop(
        model.id, None
    )  # this model's managers (training and query data)
