"""Evaluation and ranking of perturbation predictions (SPECS §8, with the pitfalls of paper 004 fixed)."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._constants import PERTURBATION_KEYS
from .._utils import logger, progress_bar, progress_bar_default, to_dense, warn
from ._pca import pca_basis
from ._perturbation import (
    BASELINES,
    _given,
    check_bool_arg,
    check_choice_arg,
    check_int_arg,
    check_names_arg,
    check_real_arg,
    check_seed_arg,
)

DISTANCES = ("euclidean", "edistance", "wasserstein", "mean_pairwise", "mmd")
DEG_METHODS = ("t-test", "t-test_overestim_var", "wilcoxon", "logreg")
DIRECTIONS = ("up", "down", "both")
NAN_POLICIES = ("worst", "drop_metric", "raise")
#: The model name of the split-half ceiling in :func:`benchmark_perturbation`'s table.
CEILING = "ceiling (split half)"
#: Groups (predicted, real perturbed, control cells) smaller than this get a warning.
MIN_CELLS = 10
#: A ratio d(stim, pred) / d(ctrl, pred) is undefined (NaN) when d(ctrl, pred) ≤ RATIO_RTOL × d(stim, pred): the
#: prediction is indistinguishable from the controls and the ratio is floating-point noise (e.g. 2·10¹⁰).
RATIO_RTOL = 1e-6
_HIGHER = ("deg_overlap", "deg_jaccard", "r2_all", "r2_top20", "r2_top100", "r2_shift")


def _matrix(name: str, x: Any) -> np.ndarray:
    """The cells × genes matrix of an AnnData or array argument, dense float64, checked to be finite."""
    if isinstance(x, AnnData):
        X = x.X
    elif isinstance(x, np.ndarray) or sparse.issparse(x):
        X = x
    else:
        raise TypeError(f"`{name}` must be an AnnData or an array (cells × genes), got {type(x).__name__}.")
    if X is None:
        raise ValueError(f"`{name}` has no expression (X is None).")
    X = to_dense(X, np.float64)
    if X.ndim != 2:
        raise ValueError(f"`{name}` must be 2-D (cells × genes), got shape {X.shape}.")
    if not np.isfinite(X).all():
        raise ValueError(
            f"`{name}` holds {int((~np.isfinite(X)).sum())} NaN or infinite values; drop or impute them first."
        )
    return X


def _few_cells_note(counts: Mapping[str, int]) -> str | None:
    """The warning for groups with fewer than ``MIN_CELLS`` cells (None when every group is large enough)."""
    few = {k: n for k, n in counts.items() if n < MIN_CELLS}
    if not few:
        return None
    shown = ", ".join(f"{k} {n}" for k, n in few.items())
    return (
        f"few cells ({shown}; fewer than {MIN_CELLS}): DEG rankings, R² and distances computed from so few cells "
        "are dominated by sampling noise"
    )


def _rank_degs(
    a: np.ndarray, b: np.ndarray, genes: list[str], n: int, method: str, direction: str
) -> list[str]:
    """Top-``n`` DEGs of ``a`` vs ``b`` (arguments already checked)."""
    import scanpy as sc

    ad = AnnData(np.vstack([a, b]).astype(np.float32), var=pd.DataFrame(index=genes))
    ad.obs["group"] = pd.Categorical(["case"] * len(a) + ["ctrl"] * len(b))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.rank_genes_groups(
            ad, "group", groups=["case"], reference="ctrl", method=method, n_genes=ad.n_vars
        )
    df = sc.get.rank_genes_groups_df(ad, group="case").dropna(subset=["scores"])
    if direction == "up":
        df = df.sort_values("scores", ascending=False, kind="stable")
    elif direction == "down":
        df = df.sort_values("scores", ascending=True, kind="stable")
    else:
        df = df.reindex(df["scores"].abs().sort_values(ascending=False, kind="stable").index)
    return df["names"].head(n).astype(str).tolist()


def _check_genes(genes: Any, n_vars: int, default: Any) -> list[str]:
    if genes is None:
        if default is None:
            raise TypeError(
                "`genes` is required when `case` and `ctrl` are arrays: pass the gene names (columns)."
            )
        return list(map(str, default))
    if isinstance(genes, str) or not hasattr(genes, "__len__"):
        raise TypeError(
            f"`genes` must be a sequence of gene names (one per column), got {type(genes).__name__}."
        )
    if len(genes) != n_vars:
        raise ValueError(
            f"`genes` has {len(genes)} names but the data have {n_vars} genes (columns); pass one name per column."
        )
    return list(map(str, genes))


def top_degs(
    case: AnnData | np.ndarray,
    ctrl: AnnData | np.ndarray,
    *,
    genes: Sequence[str] | None = None,
    n: int = 100,
    method: str = "t-test",
    direction: Literal["up", "down", "both"] = "up",
) -> list[str]:
    """Top-``n`` differentially expressed genes of ``case`` vs ``ctrl`` with :func:`scanpy.tl.rank_genes_groups`.

    Parameters
    ----------
    case, ctrl
        Cells (AnnData or arrays cells × genes) of the two groups, at least two cells each (a warning is issued
        below 10).
    genes
        Gene names (columns); default: ``case.var_names`` (AnnData input).
    n
        Number of genes returned, between 1 and the number of genes.
    method
        scanpy test: ``"t-test"``, ``"t-test_overestim_var"``, ``"wilcoxon"`` or ``"logreg"``.
    direction
        ``"up"`` takes the highest scores, ``"down"`` the lowest, ``"both"`` the largest absolute scores.

    Returns
    -------
    List of gene names, best first (genes whose score is undefined, e.g. constant in both groups, are left out,
    so the list can be shorter than ``n``). Nothing is written; inputs are not modified.
    """
    a, b = _matrix("case", case), _matrix("ctrl", ctrl)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"`case` and `ctrl` must have the same genes; they have {a.shape[1]} and {b.shape[1]}."
        )
    names = _check_genes(genes, a.shape[1], case.var_names if isinstance(case, AnnData) else None)
    check_int_arg("n", n, 1, len(names))
    check_choice_arg("method", method, DEG_METHODS)
    check_choice_arg("direction", direction, DIRECTIONS)
    for name, m in (("case", a), ("ctrl", b)):
        if len(m) < 2:
            raise ValueError(f"`{name}` needs at least two cells for a DEG test, got {len(m)}.")
    note = _few_cells_note({"case": len(a), "ctrl": len(b)})
    if note:
        warn(f"top_degs: {note}.")
    return _rank_degs(a, b, names, n, method, direction)


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
        Predicted perturbed cells, real perturbed cells, real control cells (same genes, at least two cells each;
        a warning is issued when a group has fewer than 10 cells).
    n_degs
        Number of top DEGs, an int ≥ 1 and smaller than the number of genes (with ``n_degs`` ≥ the number of genes
        both lists would hold every gene and the Jaccard index would be 1 whatever the prediction: this raises).
        ``r2_top20`` / ``r2_top100`` use the top 20 / 100 real DEGs (all genes when there are fewer).
    deg_method
        scanpy test: ``"t-test"``, ``"t-test_overestim_var"``, ``"wilcoxon"`` or ``"logreg"``.
    direction
        ``"up"``, ``"down"`` or ``"both"``.
    distances
        A list or tuple, subset of ``("euclidean", "edistance", "wasserstein", "mean_pairwise", "mmd")`` (may be
        empty).
    n_comps
        PCA components of the distance basis.
    n_boot
        Bootstrap resamples for R² (0: R² of the full means, no SD).
    seed
        Seed of the PCA and the bootstrap.

    Returns
    -------
    A Series of metrics (higher is better for DEG and R² metrics, lower for distances and ratios); nothing is
    written and the inputs are not modified. A metric that is undefined is NaN, never a huge or arbitrary number,
    and one warning per call says why; ``Series.attrs["undefined"]`` maps each such metric to the reason:

    - ``<distance>_ratio`` when d(ctrl, pred) ≤ 10⁻⁶ × d(stim, pred) (the prediction is indistinguishable from
      the controls, e.g. the identity baseline: the ratio would be floating-point noise such as 2·10¹⁰);
    - ``r2_*`` when a mean profile is constant, e.g. ``r2_shift`` of the identity prediction (zero shift).
    """
    for name, ad in (("pred", pred), ("stim", stim), ("ctrl", ctrl)):
        if not isinstance(ad, AnnData):
            raise TypeError(f"`{name}` must be an AnnData (cells × genes), got {type(ad).__name__}.")
    if not (pred.var_names.equals(stim.var_names) and stim.var_names.equals(ctrl.var_names)):
        raise ValueError(
            "`pred`, `stim` and `ctrl` must have the same genes in the same order (var_names); subset and order "
            "them alike, e.g. `pred = pred[:, stim.var_names].copy()`."
        )
    kwargs = _check_eval_args(
        stim.n_vars, n_degs=n_degs, deg_method=deg_method, direction=direction, distances=distances,
        n_comps=n_comps, n_boot=n_boot, seed=seed,
    )  # fmt: skip
    P, S, C = (_matrix(name, ad) for name, ad in (("pred", pred), ("stim", stim), ("ctrl", ctrl)))
    out, notes = _evaluate(P, S, C, list(map(str, stim.var_names)), **kwargs)
    _warn_notes("evaluate_perturbation", notes)
    return out


def _check_eval_args(
    n_genes: int, *, n_degs: Any = 100, deg_method: Any = "t-test", direction: Any = "up",
    distances: Any = DISTANCES, n_comps: Any = 50, n_boot: Any = 100, seed: Any = 0,
) -> dict[str, Any]:  # fmt: skip
    """The checked options of :func:`evaluate_perturbation` (also checked up front by the benchmark)."""
    check_int_arg("n_degs", n_degs, 1)
    if n_degs >= n_genes:
        raise ValueError(
            f"`n_degs` ({n_degs}) must be smaller than the number of genes ({n_genes}): with n_degs ≥ n_genes both "
            f"DEG lists hold every gene and the Jaccard index is 1 whatever the prediction. Pass e.g. "
            f"`n_degs={max(1, n_genes // 5)}`."
        )
    check_choice_arg("deg_method", deg_method, DEG_METHODS)
    check_choice_arg("direction", direction, DIRECTIONS)
    distances = check_names_arg("distances", distances, DISTANCES, allow_empty=True)
    check_int_arg("n_comps", n_comps, 1)
    check_int_arg("n_boot", n_boot, 0)
    check_seed_arg("seed", seed)
    return {
        "n_degs": int(n_degs), "deg_method": deg_method, "direction": direction, "distances": distances,
        "n_comps": int(n_comps), "n_boot": int(n_boot), "seed": int(seed),
    }  # fmt: skip


def _warn_notes(where: str, notes: Sequence[str]) -> None:
    """One warning per call, listing every note."""
    if notes:
        warn(f"{where}: " + "; ".join(notes) + ".")


def _evaluate(
    P: np.ndarray, S: np.ndarray, C: np.ndarray, genes: list[str], *, n_degs: int, deg_method: str,
    direction: str, distances: Sequence[str], n_comps: int, n_boot: int, seed: int,
) -> tuple[pd.Series, list[str]]:  # fmt: skip
    """The metrics of :func:`evaluate_perturbation` on checked matrices, and the notes (small groups, why a metric
    is undefined) the caller issues."""
    for name, m in (("pred", P), ("stim", S), ("ctrl", C)):
        if len(m) < 2:
            raise ValueError(f"`{name}` must hold at least two cells, got {len(m)}.")
    notes = [n for n in [_few_cells_note({"pred": len(P), "stim": len(S), "ctrl": len(C)})] if n]
    undefined: dict[str, str] = {}
    out: dict[str, float] = {}
    real_degs = _rank_degs(S, C, genes, min(max(n_degs, 100), len(genes)), deg_method, direction)
    pred_degs = _rank_degs(P, C, genes, n_degs, deg_method, direction)
    inter = len(set(real_degs[:n_degs]) & set(pred_degs))
    union = set(real_degs[:n_degs]) | set(pred_degs)
    out["deg_overlap"] = float(inter)
    out["deg_jaccard"] = inter / len(union) if union else float("nan")
    if not union:
        undefined["deg_jaccard"] = "no gene has a defined DEG score"

    gene_index = {g: i for i, g in enumerate(genes)}
    sets = {
        "all": np.arange(len(genes)),
        "top20": np.array([gene_index[g] for g in real_degs[:20]], dtype=np.int64),
        "top100": np.array([gene_index[g] for g in real_degs[:100]], dtype=np.int64),
    }
    rng = np.random.default_rng(seed)
    boots: dict[str, list[float]] = {k: [] for k in sets}
    kp, ks = max(1, int(0.8 * len(P))), max(1, int(0.8 * len(S)))
    for _ in range(n_boot):
        mp = P[rng.choice(len(P), kp, replace=False)].mean(0)
        ms = S[rng.choice(len(S), ks, replace=False)].mean(0)
        for k, idx in sets.items():
            boots[k].append(_r2(mp[idx], ms[idx]))
    for k, vals in boots.items():
        finite = [v for v in vals if np.isfinite(v)]
        if n_boot:
            out[f"r2_{k}"] = float(np.mean(finite)) if finite else float("nan")
            out[f"r2_{k}_sd"] = float(np.std(finite)) if finite else float("nan")
        else:
            out[f"r2_{k}"] = _r2(P.mean(0)[sets[k]], S.mean(0)[sets[k]])
            out[f"r2_{k}_sd"] = float("nan")
        if not np.isfinite(out[f"r2_{k}"]):
            undefined[f"r2_{k}"] = (
                "the mean expression of the predicted or the real cells is constant over those genes"
            )
    out["r2_shift"] = _r2(P.mean(0) - C.mean(0), S.mean(0) - C.mean(0))
    if not np.isfinite(out["r2_shift"]):
        undefined["r2_shift"] = (
            "the predicted (or real) mean shift from the controls is constant, e.g. zero for an identity prediction"
        )

    if distances:
        project = _pca_basis(np.vstack([S, C]), n_comps, seed)
        Ps, Ss, Cs = project(P), project(S), project(C)
        for name, fn in _distance_fns(distances).items():
            d_stim, d_ctrl = float(fn(Ss, Ps)), float(fn(Cs, Ps))
            out[name] = d_stim
            if d_ctrl <= 0 or d_ctrl <= RATIO_RTOL * abs(d_stim):
                out[f"{name}_ratio"] = float("nan")
                undefined[f"{name}_ratio"] = (
                    f"d(ctrl, pred) = {d_ctrl:.3g} is ~0 (the prediction is indistinguishable from the controls)"
                )
            else:
                out[f"{name}_ratio"] = d_stim / d_ctrl
    if undefined:
        notes.append("undefined metrics (NaN): " + "; ".join(f"{m}: {why}" for m, why in undefined.items()))
    series = pd.Series(out, name="value")
    series.attrs["undefined"] = undefined
    return series, notes


def perturbation_ceiling(stim: AnnData, ctrl: AnnData, *, seed: int = 0, **kwargs) -> pd.Series:
    """Split-half ceiling: one random half of the real perturbed cells "predicts" the other half.

    Every metric of :func:`evaluate_perturbation` is computed for half A (as the prediction) against half B (as the
    truth), so the values show how good a perfect model can look given sampling noise.

    Parameters
    ----------
    stim
        Real perturbed cells (at least four: two per half).
    ctrl
        Real control cells.
    seed
        Seed of the split (and of the evaluation).
    **kwargs
        Passed to :func:`evaluate_perturbation` (``n_degs``, ``deg_method``, ``direction``, ``distances``,
        ``n_comps``, ``n_boot``).

    Returns
    -------
    A Series of metrics, as :func:`evaluate_perturbation` (nothing is written; inputs are not modified).
    """
    out, notes = _ceiling(stim, ctrl, seed=seed, **kwargs)
    _warn_notes("perturbation_ceiling", notes)
    return out


def _ceiling(stim: AnnData, ctrl: AnnData, *, seed: int = 0, **kwargs) -> tuple[pd.Series, list[str]]:
    for name, ad in (("stim", stim), ("ctrl", ctrl)):
        if not isinstance(ad, AnnData):
            raise TypeError(f"`{name}` must be an AnnData (cells × genes), got {type(ad).__name__}.")
    if not stim.var_names.equals(ctrl.var_names):
        raise ValueError("`stim` and `ctrl` must have the same genes in the same order (var_names).")
    unknown = sorted(set(kwargs) - _EVAL_OPTIONS)
    if unknown:
        raise TypeError(
            f"perturbation_ceiling got unknown options {unknown}; it passes {sorted(_EVAL_OPTIONS)} to "
            "evaluate_perturbation."
        )
    options = _check_eval_args(stim.n_vars, seed=seed, **kwargs)
    if stim.n_obs < 4:
        raise ValueError(
            f"`stim` must hold at least four cells (two per half) for the split-half ceiling, got {stim.n_obs}."
        )
    S, C = _matrix("stim", stim), _matrix("ctrl", ctrl)
    perm = np.random.default_rng(seed).permutation(len(S))
    half = len(S) // 2
    a, b = S[np.sort(perm[:half])], S[np.sort(perm[half:])]
    return _evaluate(a, b, C, list(map(str, stim.var_names)), **options)


_EVAL_OPTIONS = {"n_degs", "deg_method", "direction", "distances", "n_comps", "n_boot"}


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
    nan_policy: Literal["worst", "drop_metric", "raise"] = "worst",
) -> pd.DataFrame:
    """Rank models by the score of paper 004: per metric (v − best) / (worst − best), summed; lowest wins.

    Parameters
    ----------
    results
        Either a wide table, rows = models and columns = metrics (already averaged over experiments, e.g. cell
        types × seeds), or the tidy output of :func:`benchmark_perturbation` (columns ``model``, ``metric``,
        ``value`` and the experiment columns, e.g. ``cell_type`` and ``seed``), which is averaged per model and
        metric here: every model must have been evaluated on the same experiments, and a metric undefined
        (NaN) in any experiment is undefined for that model. The ``"ceiling (split half)"`` rows of a tidy table
        are not ranked (the ceiling is not a model); their means are in ``attrs["ceiling"]``.
    metrics
        Metrics to use (default: every column with a known direction, excluding ``*_sd``).
    higher_is_better
        Direction per metric; by default DEG and R² metrics are higher-is-better and distances lower-is-better.
    duplicate_threshold
        Warn when the absolute Spearman correlation of two metrics across models exceeds it (between 0 and 1):
        they count the same thing twice.
    nan_policy
        What an undefined value (NaN or ±inf, e.g. ``r2_shift`` or a ``*_ratio`` of the identity baseline, see
        :func:`evaluate_perturbation`) does; it is never scored as the best and always named in a warning:
        ``"worst"`` (default) scores it 1, the worst of the metric, and the metric's best and worst are taken
        over the defined values only, so an undefined value never stretches the scale of the others;
        ``"drop_metric"`` leaves out every metric with an undefined value (for all models, so that the scores
        stay comparable); ``"raise"`` raises a ValueError naming them.

    Returns
    -------
    A new DataFrame sorted by ``score``: the scaled per-metric scores, ``score`` (sum), ``rank`` (1 = best),
    ``rank_average`` (mean of per-metric ranks, an alternative less sensitive to outliers; undefined values rank
    last) and ``rank_by_average``. ``attrs["leave_one_metric_out"]``: for each metric left out, every model's
    rank by the remaining metrics (a stability table; ``attrs["winner_stable"]`` tells whether the winner never
    changes); ``attrs["undefined"]``: the (model, metric) pairs that were undefined; ``attrs["metrics"]``: the
    metrics scored; ``attrs["ceiling"]``: the ceiling's mean metrics (tidy input) or None. ``results`` is not
    modified.
    """
    if not isinstance(results, pd.DataFrame):
        raise TypeError(
            f"`results` must be a pandas DataFrame (models × metrics, or benchmark_perturbation's tidy table), got "
            f"{type(results).__name__}."
        )
    if results.empty:
        raise ValueError(
            "`results` is empty; it needs rows = models and columns = metrics (or a tidy table)."
        )
    check_choice_arg("nan_policy", nan_policy, NAN_POLICIES)
    check_real_arg("duplicate_threshold", duplicate_threshold, 0.0, 1.0)
    if higher_is_better is not None:
        if not isinstance(higher_is_better, Mapping):
            raise TypeError(
                f"`higher_is_better` must be a dict metric → True/False, got {type(higher_is_better).__name__}."
            )
        for m, v in higher_is_better.items():
            check_bool_arg(f"higher_is_better[{m!r}]", v)
    ceiling = None
    if _is_tidy(results):
        results, ceiling = _from_tidy(results)
    if not results.index.is_unique:
        dup = results.index[results.index.duplicated()].unique().tolist()
        raise ValueError(
            f"`results` has duplicated model names {dup[:5]}: one row per model (average experiments first, or "
            "pass benchmark_perturbation's tidy table as it is)."
        )
    if metrics is None:
        metrics = [
            c
            for c in results.columns
            if not str(c).endswith("_sd") and ((higher_is_better and c in higher_is_better) or _known(c))
        ]
        if not metrics:
            raise ValueError(
                f"`results` has no metric column with a known direction (columns {list(results.columns)[:10]}); pass "
                "`metrics=` and `higher_is_better=`."
            )
    elif isinstance(metrics, str) or not isinstance(metrics, Sequence):
        raise TypeError(f"`metrics` must be a list of column names, got {_given(metrics)}.")
    metrics = list(metrics)
    if not metrics:
        raise ValueError("`metrics` is empty; pass at least one metric column.")
    missing = [m for m in metrics if m not in results.columns]
    if missing:
        raise KeyError(
            f"Metrics {missing} (argument `metrics`) are not columns of `results` (columns: {list(results.columns)[:20]})."
        )
    not_numeric = [m for m in metrics if not pd.api.types.is_numeric_dtype(results[m])]
    if not_numeric:
        raise TypeError(
            f"Metric columns {not_numeric} of `results` are not numeric; rank_models ranks numbers."
        )
    if len(results) < 2:
        raise ValueError(f"`results` holds {len(results)} model; ranking needs at least two.")
    direction = {
        m: (higher_is_better[m] if higher_is_better and m in higher_is_better else _direction(m))
        for m in metrics
    }
    values = results[metrics].astype(float).replace([np.inf, -np.inf], np.nan)
    undefined = [(str(model), m) for m in metrics for model in values.index[values[m].isna().to_numpy()]]
    if undefined:
        by_metric: dict[str, list[str]] = {}
        for model, m in undefined:
            by_metric.setdefault(m, []).append(model)
        listing = "; ".join(f"{m}: {', '.join(models)}" for m, models in by_metric.items())
        if nan_policy == "raise":
            raise ValueError(
                f"Undefined (NaN or inf) metric values: {listing}. Pass `nan_policy='worst'` or `'drop_metric'`, "
                "or leave those metrics out with `metrics=`."
            )
        if nan_policy == "drop_metric":
            metrics = [m for m in metrics if m not in by_metric]
            if not metrics:
                raise ValueError(
                    f"Every metric has an undefined value ({listing}); nothing is left to rank on."
                )
            values = values[metrics]
            warn(
                f"rank_models: metrics left out because some models' values are undefined (NaN or inf): {listing}."
            )
        else:
            warn(
                f"rank_models: undefined (NaN or inf) values score as the worst (1) of their metric: {listing}. "
                "Pass `nan_policy='drop_metric'` to leave those metrics out instead."
            )
    best = pd.Series({m: values[m].max() if direction[m] else values[m].min() for m in metrics}, dtype=float)
    worst = pd.Series({m: values[m].min() if direction[m] else values[m].max() for m in metrics}, dtype=float)
    span = (worst - best).replace(0, np.nan)
    scaled = (values - best) / span
    scaled = scaled.where(
        span.notna() | values.isna(), 0.0
    )  # a metric on which all defined models tie scores 0
    scaled = scaled.fillna(1.0) + 0.0  # undefined (policy "worst") scores 1; + 0.0 drops -0.0
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
    out = out.sort_values("score", kind="stable")
    out.attrs["leave_one_metric_out"] = loo.loc[out.index]
    out.attrs["winner_stable"] = bool((loo.idxmin(axis=0) == out.index[0]).all())
    out.attrs["undefined"] = undefined
    out.attrs["metrics"] = list(metrics)
    out.attrs["ceiling"] = ceiling
    _warn_duplicates(values, duplicate_threshold)
    return out


_TIDY = ("model", "metric", "value")


def _is_tidy(results: pd.DataFrame) -> bool:
    return all(c in results.columns for c in _TIDY)


def _from_tidy(tidy: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series | None]:
    """Models × metrics means of a tidy table (a NaN in any experiment makes the mean NaN), and the ceiling's."""
    if not pd.api.types.is_numeric_dtype(tidy["value"]):
        raise TypeError("The `value` column of the tidy `results` must be numeric.")
    experiments = [c for c in tidy.columns if c not in _TIDY]
    keys = ["model", "metric", *experiments]
    if tidy[keys].isna().any().any():
        raise ValueError(f"The tidy `results` has missing values in its key columns {keys}.")
    duplicated = tidy.duplicated(subset=keys)
    if duplicated.any():
        raise ValueError(
            f"The tidy `results` has {int(duplicated.sum())} duplicated rows for the same {keys}, e.g. "
            f"{tidy.loc[duplicated, keys].iloc[0].to_dict()}; one value per model, metric and experiment."
        )
    is_ceiling = (tidy["model"] == CEILING).to_numpy()
    ceiling = None
    if is_ceiling.any():
        ceiling = tidy[is_ceiling].groupby("metric")["value"].mean()
        tidy = tidy[~is_ceiling]
    n = tidy.groupby(["model", "metric"]).size().unstack("metric")
    if experiments and (n.isna().any().any() or len(pd.unique(n.to_numpy().ravel())) > 1):
        counts = n.fillna(0).astype(int).max(axis=1)
        raise ValueError(
            f"The models of the tidy `results` were not evaluated on the same experiments ({experiments}): "
            f"experiments per model {counts.to_dict()}. Rank like for like: keep the experiments every model has."
        )
    wide = tidy.groupby(["model", "metric"], sort=False)["value"].agg(lambda v: v.mean(skipna=False))
    wide = wide.unstack("metric")
    wide.index.name, wide.columns.name = None, None
    return wide, ceiling


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
        warn(
            "Near-duplicate metrics across models, counted twice in the score: "
            + "; ".join(pairs[:10])
            + ". With pertpy's linear-kernel MMD, mmd is the squared Euclidean distance of the means."
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
    progress: bool | None = None,
) -> pd.DataFrame:
    """Leave-one-cell-type-out benchmark of MTAe variants beside baselines and the split-half ceiling.

    For each held-out cell type (:func:`split_ood`) and seed, every model is trained on the training cells and
    predicts the held-out cell type's response from its control cells; baselines (:func:`predict_baseline`)
    and the ceiling (:func:`perturbation_ceiling`) are evaluated on the same cells with the same evaluation.
    Every argument is checked before the first training. The warnings of the folds (e.g. undefined metrics of
    the identity baseline, small groups) are issued once per call, naming the models and folds concerned.

    Parameters
    ----------
    adata
        Cells × genes (log-normalised).
    models
        MTAe variants (default: all eight; ``()`` for baselines only).
    cell_types
        Cell types to hold out (default: every cell type with control and ``condition`` cells; none raises).
    seeds
        Seeds (paper 004: 1, 2, 19193), ints ≥ 0.
    condition
        Perturbed condition; default: the only perturbed condition of the data (several raise).
    baselines
        Baselines always reported (``"identity"``, ``"mean_shift"``, ``"scgen"``).
    ceiling
        Report the split-half ceiling.
    condition_key, cell_type_key, control_value
        As in :func:`split_ood`.
    model_kwargs, train_kwargs, eval_kwargs
        Passed to :class:`~hcitools.model.MTAe`, its ``train`` (``seed`` is the benchmark's; the trainings' own
        progress bars are off unless ``enable_progress_bar=True`` is passed) and :func:`evaluate_perturbation`.
    progress
        One progress bar over folds × (models, baselines, ceiling); ``None`` follows ``ht.settings.verbosity``
        (a bar at every level but ``"error"``).

    Returns
    -------
    A new tidy DataFrame with columns ``model``, ``cell_type``, ``seed``, ``metric``, ``value`` (the ceiling's rows
    under the model name ``"ceiling (split half)"``), which :func:`rank_models` accepts as it is. ``adata`` is
    not modified.
    """
    from ..model._mtae import VARIANTS
    from ._perturbation import _check_keys, _resolve_condition

    _check_keys(adata, condition_key=condition_key, cell_type_key=cell_type_key, control_value=control_value)
    models = (
        list(VARIANTS)
        if models is None
        else check_names_arg("models", models, list(VARIANTS), allow_empty=True)
    )
    baselines = check_names_arg("baselines", baselines, BASELINES, allow_empty=True)
    check_bool_arg("ceiling", ceiling)
    if not (models or baselines or ceiling):
        raise ValueError("Nothing to benchmark: `models` and `baselines` are empty and `ceiling=False`.")
    if isinstance(seeds, str) or not isinstance(seeds, Sequence) or len(seeds) == 0:
        raise TypeError(f"`seeds` must be a non-empty list or tuple of ints, got {_given(seeds)}.")
    for i, seed in enumerate(seeds):
        check_seed_arg(f"seeds[{i}]", seed)
    show = progress_bar_default(progress)
    condition = _resolve_condition(adata, condition, condition_key=condition_key, control_value=control_value)
    ct, cond = adata.obs[cell_type_key], adata.obs[condition_key]
    evaluable = [
        c
        for c in pd.unique(ct)
        if ((ct == c) & (cond == control_value)).any() and ((ct == c) & (cond == condition)).any()
    ]
    if cell_types is None:
        cell_types = evaluable
        if not cell_types:
            raise ValueError(
                f"No cell type of adata.obs[{cell_type_key!r}] has both control ({control_value!r}) and {condition!r} "
                "cells: there is nothing to hold out and evaluate."
            )
    else:
        if isinstance(cell_types, str) or not isinstance(cell_types, Sequence) or len(cell_types) == 0:
            raise TypeError(
                f"`cell_types` must be a non-empty list or tuple of cell types, got {_given(cell_types)}; for one "
                f"pass `cell_types=[{cell_types!r}]`."
            )
        bad = [c for c in cell_types if not any(c == e for e in evaluable)]
        if bad:
            raise ValueError(
                f"`cell_types` {bad} have no control and {condition!r} cells in adata.obs[{cell_type_key!r}] to "
                f"evaluate; cell types that do: {[str(e) for e in evaluable]}."
            )
    model_kwargs = _check_kwargs("model_kwargs", model_kwargs)
    train_kwargs = _check_kwargs("train_kwargs", train_kwargs, refused=("seed",))
    eval_kwargs = _check_kwargs("eval_kwargs", eval_kwargs)
    unknown = sorted(set(eval_kwargs) - _EVAL_OPTIONS - {"seed"})
    if unknown:
        raise TypeError(
            f"`eval_kwargs` has unknown options {unknown}; evaluate_perturbation takes {sorted(_EVAL_OPTIONS | {'seed'})}."
        )
    try:
        _check_eval_args(adata.n_vars, **eval_kwargs)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{err} (pass it in `eval_kwargs`)") from None
    if models:
        from ..model import MTAe

        init_params = set(inspect.signature(MTAe.__init__).parameters) - {"self", "adata", "registry"}
        wrong = sorted(set(model_kwargs) - init_params)
        if wrong:
            raise TypeError(
                f"`model_kwargs` has unknown MTAe options {wrong}; MTAe takes {sorted(init_params)}."
            )
        if "variant" in model_kwargs:
            raise TypeError("`model_kwargs` must not hold `variant`: the variants are the `models` argument.")
        train_kwargs = {"enable_progress_bar": False, **train_kwargs}  # one bar: the benchmark's
    keys = {"condition_key": condition_key, "cell_type_key": cell_type_key, "control_value": control_value}
    rows: list[dict] = []
    notes = _FoldNotes()
    per_fold = len(models) + len(baselines) + int(ceiling)
    bar = progress_bar(
        total=len(cell_types) * len(seeds) * per_fold, desc="benchmark", unit="fit", disable=not show
    )
    try:
        for cell_type, seed in ((c, s) for c in cell_types for s in seeds):
            _benchmark_fold(
                adata, cell_type, int(seed), condition=condition, keys=keys, models=models, baselines=baselines,
                ceiling=ceiling, model_kwargs=model_kwargs, train_kwargs=train_kwargs, eval_kwargs=eval_kwargs,
                rows=rows, notes=notes, bar=bar,
            )  # fmt: skip
    finally:
        bar.close()
    notes.emit("benchmark_perturbation")
    table = pd.DataFrame(rows, columns=["model", "cell_type", "seed", "metric", "value"])
    logger.info(
        f"benchmark: {len(models)} models, {len(baselines)} baselines, {len(cell_types)} cell types × {len(seeds)} seeds"
    )
    return table


def _check_kwargs(name: str, value: Any, refused: Sequence[str] = ()) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"`{name}` must be a dict of keyword arguments, got {_given(value)}.")
    clash = [k for k in refused if k in value]
    if clash:
        raise TypeError(f"`{name}` must not hold {clash}: the benchmark sets them (pass `seeds=` instead).")
    return dict(value)


class _FoldNotes:
    """Warnings of the folds, issued once per call with the (model, cell type, seed) they came from."""

    def __init__(self) -> None:
        self.notes: dict[tuple[str, type], list[str]] = {}

    def record(self, caught, where: str) -> None:
        for w in caught:
            # deprecation notes of the libraries below us (e.g. pertpy importing JAXopt) are theirs to fix, not the
            # user's: Python hides them outside __main__, and re-issuing them from the user's line would show them
            if not issubclass(w.category, DeprecationWarning | PendingDeprecationWarning):
                self.add(str(w.message), where, w.category)

    def add(self, message: str, where: str, category: type[Warning] = UserWarning) -> None:
        self.notes.setdefault((message, category), []).append(where)

    def emit(self, function: str) -> None:
        for (message, category), where in self.notes.items():
            shown = ", ".join(where[:6]) + (f", … ({len(where)} in all)" if len(where) > 6 else "")
            warn(f"{function}: {message.rstrip('.')} [{shown}]", category)


def _benchmark_fold(
    adata, cell_type, seed, *, condition, keys, models, baselines, ceiling, model_kwargs, train_kwargs,
    eval_kwargs, rows, notes, bar,
) -> None:  # fmt: skip
    """One held-out cell type and seed: train and evaluate every model, baseline and the ceiling."""
    from ._perturbation import _baseline_from_split, split_ood

    train, ctrl, stim = split_ood(adata, target=cell_type, condition=condition, **keys)
    for fold_data in (train, ctrl):  # the fold's own copies: registered afresh, not as the user's data
        fold_data.uns.pop("_scvi_uuid", None)
        fold_data.uns.pop("_scvi_manager_uuid", None)
    options = _check_eval_args(stim.n_vars, **{"seed": seed, **eval_kwargs})
    genes = list(map(str, stim.var_names))
    S, C = _matrix("stim", stim), _matrix("ctrl", ctrl)

    def record(name: str, result: pd.Series) -> None:
        rows.extend(
            {"model": name, "cell_type": cell_type, "seed": seed, "metric": k, "value": v}
            for k, v in result.items()
        )

    def step(name: str, fn) -> None:
        bar.set_postfix_str(f"{cell_type}, seed {seed}: {name}")
        where = f"{name} on {cell_type}, seed {seed}"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result, fold_notes = fn()
        notes.record(caught, where)
        for n in fold_notes:
            notes.add(n, where)
        record(name, result)
        bar.update(1)

    if models:
        from ..model import MTAe

        MTAe.setup_anndata(train, **keys)
    last_model = models[-1] if models else None
    for name in models:

        def fit(name=name, last=name == last_model):
            model = MTAe(train, variant=name, **model_kwargs)
            try:
                model.train(seed=seed, **train_kwargs)
                pred = model.predict(ctrl, condition=condition)
            finally:
                _release(model, train if last else None)
            return _evaluate(_matrix("pred", pred), S, C, genes, **options)

        step(name, fit)
    for base in baselines:

        def baseline(base=base):
            pred = _baseline_from_split(
                train, ctrl, method=base, target=cell_type, condition=condition, seed=seed, **keys
            )
            return _evaluate(_matrix("pred", pred), S, C, genes, **options)

        step(base, baseline)
    if ceiling:
        step(CEILING, lambda: _ceiling(stim, ctrl, **options))


def _release(model, train: AnnData | None = None) -> None:
    """Forget a fold's AnnData managers: scvi-tools keeps every registered AnnData (and its manager) in class-level
    stores until it is deregistered, so a benchmark would otherwise hold every fold's data."""
    if train is not None:
        model.deregister_manager(train)  # the class-level manager of the fold's training data
    type(model)._per_instance_manager_store.pop(
        model.id, None
    )  # this model's managers (training and query data)
