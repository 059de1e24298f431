"""``ht.tl.probe_concepts``: cross-validated linear probes of bag-level concepts from a MIL model's representations.

003 §4 probes what a network's intermediate layers encode by fitting linear models from their activations to
known concepts (a cell count, the plate). A concept that a linear probe recovers from a representation is
linearly encoded there; the adversarial branch should lower the plate probe's accuracy on the bag embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import MODULE_KEYS
from .._utils import logger, warn
from .._validate import (
    _preview,
    check_anndata,
    check_choice,
    check_constant_within,
    check_int,
    check_obs_keys,
)

#: Names of the probed representations, in the order of the result's rows.
REPRESENTATIONS = ("pooled_input", "shared_projection", "bag_embedding")
_RIDGE_ALPHAS = np.logspace(-3, 3, 13)


def probe_concepts(
    adata: AnnData,
    model,
    *,
    keys: str | Sequence[str],
    level: Literal["bag", "compound"] = "bag",
    n_splits: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """Cross-validated linear probes of bag-level concepts from each representation of a trained MIL model.

    Linear probing (003 §4): a concept that a linear model recovers from a representation, on bags it was not
    fitted on, is linearly encoded there. Three representations of every bag are probed:

    ``"pooled_input"``
        The mean of the bag's instance features as the model reads them (``X``, ``layers[layer]`` or
        ``obsm[rep_key]`` of setup): what the data hold before any learning.
    ``"shared_projection"``
        The mean of the bag's projected instances (``model.get_latent_representation(level="bag")``).
    ``"bag_embedding"``
        The attention-pooled bag embeddings of all assays, **concatenated** (flattened T × h, from
        ``get_latent_representation(level="assay")``); a linear probe of the concatenation can also read their
        mean over assays.

    Numeric keys are probed by ridge regression (:class:`~sklearn.linear_model.RidgeCV` after a
    :class:`~sklearn.preprocessing.StandardScaler`) scored by R²; categorical keys (categories, strings,
    booleans; e.g. the plate) by logistic regression (class-balanced, after a StandardScaler) scored by balanced
    accuracy. Scores are the mean over the folds of :func:`~sklearn.model_selection.cross_val_score`. When the
    model was set up with ``group_key`` (compounds), folds never split a compound's bags
    (:class:`~sklearn.model_selection.GroupKFold` / :class:`~sklearn.model_selection.StratifiedGroupKFold`);
    otherwise :class:`~sklearn.model_selection.KFold` / :class:`~sklearn.model_selection.StratifiedKFold`.

    Parameters
    ----------
    adata
        Instances with the model's features (as at setup) and the ``keys`` in ``obs``; the training AnnData or
        other data (labels are not needed).
    model
        A trained MIL model (e.g. :class:`hcitools.model.MoMIL`).
    keys
        obs columns to probe, each constant within bags (a well-level value such as a cell count, or the plate).
    level
        ``"bag"``: one probe observation per bag. ``"compound"``: per compound (needs ``group_key`` at setup):
        representations and numeric keys averaged over the compound's bags; categorical keys must then be
        constant within compounds.
    n_splits
        Number of cross-validation folds (≥ 2; at most the number of bags, or of compounds with groups, and for
        a categorical key at most the size of its smallest class).
    seed
        Seed of the fold assignment (shuffling).

    Returns
    -------
    DataFrame, one row per key × representation (keys in the order given, representations as above), with
    columns ``key``, ``representation``, ``metric`` (``"r2"`` or ``"balanced_accuracy"``), ``score`` (mean over
    folds), ``score_std`` (standard deviation over folds), ``chance`` (0 for R², 1 / n_classes for balanced
    accuracy), ``n`` (bags, or compounds, probed), ``n_groups`` (compounds; NaN without groups), ``n_classes``
    (NaN for numeric keys), ``n_features`` (width of the representation) and ``n_splits``. Nothing is written
    into ``adata`` (scvi-tools' registration of new data adds ``obs["_scvi_*"]`` codes, as for
    :meth:`~hcitools.model.MoMIL.predict`).

    Examples
    --------
    >>> import hcitools as ht
    >>> adata = ht.datasets.synthetic_hci(n_compounds=30, n_assays=2, n_primary=1, n_features=6, seed=0)
    >>> ht.model.MoMIL.setup_anndata(adata, group_key="compound")
    >>> model = ht.model.MoMIL(adata, n_hidden=4, n_head_hidden=4)
    >>> model.train(max_epochs=1, enable_progress_bar=False)
    >>> table = ht.tl.probe_concepts(adata, model, keys=["cell_count", "plate"], n_splits=3)
    >>> sorted(table["representation"].unique())
    ['bag_embedding', 'pooled_input', 'shared_projection']
    """
    check_anndata(adata)
    keys = _check_keys(keys)
    check_choice(level, "level", ("bag", "compound"))
    n_splits = check_int(n_splits, "n_splits", min=2)
    seed = check_int(seed, "seed", min=0)
    setup = getattr(model, "_setup", None)
    if not isinstance(setup, dict) or "bag_key" not in setup:
        raise TypeError(
            f"`model` must be a MIL model set up with `setup_anndata`, got {type(model).__name__}."
        )
    bag_key, group_key = setup["bag_key"], setup.get("group_key")
    if level == "compound" and group_key is None:
        raise ValueError("`level='compound'` needs `group_key` at setup_anndata (e.g. group_key='compound').")
    check_obs_keys(adata, {"bag_key": bag_key})
    for key in keys:
        check_obs_keys(adata, {"keys": key})
        check_constant_within(
            adata.obs[key],
            adata.obs[bag_key].to_numpy(),
            what=f"adata.obs[{key!r}] (argument `keys`)",
            group_what=f"bags of adata.obs[{bag_key!r}]",
            fix="A probed concept is a bag-level value (one per well); aggregate instance values per bag first.",
        )

    data = model._bag_data(adata)
    first = data.order[data.starts]  # the source row of each bag's first instance
    concepts = {key: adata.obs[key].to_numpy()[first] for key in keys}
    groups = None if data.groups is None else np.asarray(data.groups)
    reps = _representations(model, adata, data)

    if level == "compound":
        units, unit_of_bag = np.unique(groups.astype(str), return_inverse=True)
        reps = {name: _mean_by(x, unit_of_bag, len(units)) for name, x in reps.items()}
        concepts = {
            k: _concept_by_compound(k, v, unit_of_bag, len(units), group_key) for k, v in concepts.items()
        }
        groups = None  # one row per compound: plain (stratified) K-fold over compounds
    rows = []
    for key in keys:
        y = concepts[key]
        numeric = _is_numeric(adata.obs[key])
        splitter, split_groups, n_classes = _folds(y, groups, numeric, n_splits, seed, key)
        for name, x in reps.items():
            scores = _probe(x, y, numeric, splitter, split_groups)
            rows.append(
                {
                    "key": key,
                    "representation": name,
                    "metric": "r2" if numeric else "balanced_accuracy",
                    "score": float(np.mean(scores)),
                    "score_std": float(np.std(scores)),
                    "chance": 0.0 if numeric else 1.0 / n_classes,
                    "n": len(y),
                    "n_groups": np.nan if split_groups is None else len(np.unique(split_groups)),
                    "n_classes": np.nan if numeric else n_classes,
                    "n_features": x.shape[1],
                    "n_splits": n_splits,
                }
            )
    table = pd.DataFrame(rows)
    logger.info(
        f"probed {len(keys)} concepts from {len(reps)} representations of {table['n'].iloc[0]} "
        f"{'compounds' if level == 'compound' else 'bags'} ({n_splits}-fold cross-validation)"
    )
    return table


def _check_keys(keys) -> list[str]:
    if isinstance(keys, str):
        keys = [keys]
    if not isinstance(keys, Sequence) or not all(isinstance(k, str) for k in keys):
        raise TypeError(f"`keys` must be an obs column name or a list of them, e.g. ['plate'], got {keys!r}.")
    keys = list(dict.fromkeys(keys))
    if not keys:
        raise ValueError("`keys` is empty; pass the obs columns to probe, e.g. keys=['plate'].")
    return keys


def _is_numeric(column: pd.Series) -> bool:
    dtype = column.dtype
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def _representations(model, adata: AnnData, data) -> dict[str, np.ndarray]:
    """Each probed representation, one row per bag in the order of ``data`` (that of ``model.predict``)."""
    X = data.X.numpy().astype(np.float64)
    pooled = np.add.reduceat(X, data.starts, axis=0) / data.sizes[:, None]
    reps = {"pooled_input": pooled}
    kinds = model.module.output_kinds
    if MODULE_KEYS.INSTANCE_EMBEDDING in kinds:
        reps["shared_projection"] = np.asarray(
            model.get_latent_representation(adata, level="bag"), np.float64
        )
    else:
        warn(f"{type(model).__name__} has no shared projection; that representation is not probed.")
    if MODULE_KEYS.BAG_EMBEDDING in kinds:
        emb = np.asarray(model.get_latent_representation(adata, level="assay"), np.float64)
        reps["bag_embedding"] = emb.reshape(len(emb), -1)
    else:
        warn(
            f"{type(model).__name__} has no attention-pooled bag embedding; that representation is not probed."
        )
    for name, x in reps.items():
        if len(x) != data.n_bags:
            raise RuntimeError(f"The {name} has {len(x)} rows for {data.n_bags} bags.")
    return reps


def _mean_by(x: np.ndarray, codes: np.ndarray, n: int) -> np.ndarray:
    sums = np.zeros((n, x.shape[1]))
    np.add.at(sums, codes, x)
    return sums / np.bincount(codes, minlength=n)[:, None]


def _concept_by_compound(key: str, y: np.ndarray, codes: np.ndarray, n: int, group_key: str) -> np.ndarray:
    """Numeric concepts averaged over each compound's bags; categorical ones must be constant within compounds."""
    if pd.api.types.is_numeric_dtype(y.dtype) and not pd.api.types.is_bool_dtype(y.dtype):
        return _mean_by(y.astype(float)[:, None], codes, n)[:, 0]
    check_constant_within(
        pd.Series(y),
        codes,
        what=f"adata.obs[{key!r}] (argument `keys`)",
        group_what=f"compounds of adata.obs[{group_key!r}]",
        fix="A categorical concept probed at `level='compound'` must be one per compound; use `level='bag'`.",
    )
    out = np.empty(n, dtype=object)
    out[codes] = y
    return out


def _folds(y: np.ndarray, groups, numeric: bool, n_splits: int, seed: int, key: str):
    """The cross-validation splitter, the groups it needs (compound codes, shuffled by ``seed``) and n_classes."""
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    rng = np.random.default_rng(seed)
    split_groups = None
    if groups is not None:
        names, codes = np.unique(groups.astype(str), return_inverse=True)
        # GroupKFold has no shuffle before scikit-learn 1.6: random group codes break its ties by the seed
        split_groups = rng.permutation(len(names))[codes]
    n_units = len(y) if split_groups is None else len(np.unique(split_groups))
    unit = "bags" if split_groups is None else "compounds (groups)"
    if n_splits > n_units:
        raise ValueError(
            f"`n_splits={n_splits}` exceeds the {n_units} {unit} to split for key {key!r}; pass a smaller `n_splits`."
        )
    state = int(rng.integers(2**31 - 1))
    if numeric:
        if not np.isfinite(y.astype(float)).all():
            raise ValueError(f"adata.obs[{key!r}] holds infinite values; a probe needs finite targets.")
        splitter = (
            KFold(n_splits, shuffle=True, random_state=state)
            if split_groups is None
            else GroupKFold(n_splits)
        )
        return splitter, split_groups, None
    classes = pd.Series(y.astype(str))
    if classes.nunique() < 2:
        raise ValueError(f"adata.obs[{key!r}] has a single class ({classes.iloc[0]!r}); nothing to probe.")
    # members per class: bags, or distinct compounds holding the class when folds keep compounds whole
    members = (
        classes.value_counts()
        if split_groups is None
        else pd.Series(split_groups).groupby(classes.to_numpy()).nunique()
    )
    small = members[members < n_splits]
    if len(small):
        raise ValueError(
            f"`n_splits={n_splits}` exceeds the {unit} of the smallest classes of adata.obs[{key!r}] "
            f"({_preview([f'{c}: {m}' for c, m in small.items()])}); pass a smaller `n_splits` or drop those classes."
        )
    splitter = (
        StratifiedKFold(n_splits, shuffle=True, random_state=state)
        if split_groups is None
        else StratifiedGroupKFold(n_splits, shuffle=True, random_state=state)
    )
    return splitter, split_groups, int(classes.nunique())


def _probe(x: np.ndarray, y: np.ndarray, numeric: bool, splitter, groups) -> np.ndarray:
    """Per-fold scores of the linear probe of ``y`` from ``x``."""
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if numeric:
        estimator = make_pipeline(StandardScaler(), RidgeCV(alphas=_RIDGE_ALPHAS))
        target, scoring = y.astype(float), "r2"
    else:
        estimator = make_pipeline(
            StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000)
        )
        target, scoring = y.astype(str), "balanced_accuracy"
    return cross_val_score(
        estimator, x, target, groups=groups, cv=splitter, scoring=scoring, error_score="raise"
    )


__all__ = ["REPRESENTATIONS", "probe_concepts"]
