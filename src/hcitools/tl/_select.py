"""``ht.tl.select_assays`` (001 §2.2): hierarchical selection of secondary assays; ``ht.tl.task_groups``
(000 §3.3.2): task groups by single-task AUROC and graph order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import HCI_KEYS
from .._utils import check_free_keys, log_written, logger, progress_bar, progress_bar_default, quiet_loggers
from .._validate import (
    _preview,
    check_anndata,
    check_bool,
    check_int,
    check_labels,
    check_obs_keys,
    check_real,
    check_str,
)


def _check_affinity(affinity, assays: list[str], arg: str = "affinity") -> pd.DataFrame | None:
    """A square DataFrame by assay name, finite, symmetric, ≥ 0, reindexed to ``assays`` (missing assays: 0)."""
    if affinity is None:
        return None
    if not isinstance(affinity, pd.DataFrame):
        raise TypeError(
            f"`{arg}` must be a square DataFrame (rows and columns = assay names, e.g. STRING combined scores of "
            f"the assays' targets), got {type(affinity).__name__}."
        )
    frame = affinity.copy()
    frame.index, frame.columns = frame.index.astype(str), frame.columns.astype(str)
    if set(frame.index) != set(frame.columns) or frame.index.duplicated().any():
        raise ValueError(f"`{arg}` must name the same assays, once each, as rows and as columns.")
    unknown = [a for a in assays if a not in frame.index]
    if len(unknown) == len(assays):
        raise ValueError(f"`{arg}` names none of the assays {_preview(assays)}.")
    frame = frame.reindex(index=assays, columns=assays, fill_value=0.0)
    try:
        values = frame.to_numpy(dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`{arg}` must hold numbers: {err}") from err
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"`{arg}` must hold finite scores ≥ 0.")
    if not np.allclose(values, values.T):
        raise ValueError(f"`{arg}` must be symmetric.")
    return pd.DataFrame(values, index=assays, columns=assays)


def graph_order(affinity: pd.DataFrame, sources: Sequence[str], *, min_affinity: float = 0.0) -> pd.Series:
    """Graph order of every assay from the nearest of ``sources``: the number of edges of the shortest path in the
    graph whose edges join assays with affinity > ``min_affinity`` (networkx); 0 for a source, inf when not
    connected. Order 1 = directly associated (e.g. STRING neighbours), 2 = a shared neighbour, ….

    Examples
    --------
    >>> aff = pd.DataFrame([[1, .9, 0], [.9, 1, .5], [0, .5, 1]], index=list("abc"), columns=list("abc"))
    >>> graph_order(aff, ["a"]).tolist()
    [0.0, 1.0, 2.0]
    """
    import networkx as nx

    graph = nx.Graph()
    graph.add_nodes_from(affinity.index)
    values = affinity.to_numpy()
    rows, cols = np.nonzero(np.triu(values > min_affinity, k=1))
    graph.add_edges_from((affinity.index[i], affinity.index[j]) for i, j in zip(rows, cols, strict=True))
    lengths = nx.multi_source_dijkstra_path_length(graph, list(sources))  # unit weights: hop counts
    return pd.Series({a: float(lengths.get(a, np.inf)) for a in affinity.index}, name="order")


def _split_rows(adata: AnnData, fold_key: str | None, test_fold: int) -> tuple[np.ndarray, Any]:
    """Rows outside the test fold (and outside negative folds) and the validation fold (None: random split)."""
    if fold_key is None:
        return np.arange(adata.n_obs), None
    folds = adata.obs[fold_key].to_numpy()
    if not np.issubdtype(folds.dtype, np.integer):
        raise TypeError(f"adata.obs[{fold_key!r}] must hold integer folds (from `ht.pp.split_compounds`).")
    n_folds = int(folds.max()) + 1
    if not 0 <= test_fold < n_folds or n_folds < 3:
        raise ValueError(
            f"`test_fold` must be one of the folds 0 … {n_folds - 1} of adata.obs[{fold_key!r}] (≥ 3 folds), got "
            f"{test_fold}."
        )
    validation = (test_fold + 1) % n_folds
    return np.flatnonzero((folds >= 0) & (folds != test_fold)), validation


def select_assays(
    adata: AnnData,
    *,
    primary_assays: Sequence[str],
    affinity: pd.DataFrame | None = None,
    th_perf: float = 0.70,
    th_inf: float = 0.9,
    key_added: str = "select_assays",
    order: int = 1,
    min_affinity: float = 0.0,
    fold_key: str | None = HCI_KEYS.FOLD,
    test_fold: int = 0,
    bag_key: str = HCI_KEYS.WELL,
    labels_key: str = HCI_KEYS.ASSAYS,
    group_key: str = HCI_KEYS.COMPOUND,
    rep_key: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool | None = None,
    **train_kwargs,
) -> list[str]:
    """Select the secondary assays that help the primary ones (001 §2.2), in three hierarchical steps.

    1. **Biological similarity** (with ``affinity``): keep secondaries within graph order ``order`` of a primary
       assay in the graph of ``affinity > min_affinity`` (:func:`graph_order`, networkx); skipped when
       ``affinity`` is None.
    2. **Assay performance**: train a single-assay MoMIL per remaining secondary (its own projector and head: a
       single-task model has no shared projector to speak of) and keep those whose compound-level AUROC on the
       validation fold is ≥ ``th_perf``.
    3. **Influence**: with each kept secondary's trained model, embed the wells of each primary assay's
       training and validation bags (the secondary head's attention-pooled bag embedding), fit a logistic
       regression (scikit-learn, standardised inputs) on the training wells and score its AUROC on the
       validation wells; keep the secondary if its influence on some primary is ≥ ``th_inf`` × that primary's
       self-influence (the same with the primary's own single-assay model).

    The test fold (``test_fold`` of ``obs[fold_key]``) is dropped before anything is trained or scored: models
    train on the other folds but the validation fold ``(test_fold + 1) % n_folds`` (the 3-1-1 rotation of
    :func:`hcitools.pp.fold_rotations`), and every score is on the validation fold.

    Parameters
    ----------
    adata
        Instances with labels in ``obsm[labels_key]`` and folds in ``obs[fold_key]``.
    primary_assays
        The primary assays; every other assay of the labels is a secondary candidate.
    affinity
        Assays × assays DataFrame of association scores ≥ 0 by name (e.g. STRING combined scores of the assays'
        targets; ``uns["synthetic_hci"]["assay_affinity"]`` on simulated screens); assays it lacks have none.
    th_perf
        Step 2 threshold on the single-assay validation AUROC (0.70 in 001).
    th_inf
        Step 3 threshold, a fraction of the primary's self-influence (0.9 in 001).
    key_added
        ``uns`` key of the step table (see Returns).
    order
        Step 1: the largest graph order kept (1, 2 or 3 in 000).
    min_affinity
        Step 1: scores above this are edges.
    fold_key, test_fold
        Folds and the held-out test fold; ``fold_key=None`` uses all bags with the random compound-level
        validation split of ``model.train`` (``validation_size``).
    bag_key, labels_key, group_key, rep_key
        As in :meth:`hcitools.model.MoMIL.setup_anndata`.
    model_kwargs
        Passed to every single-assay :class:`~hcitools.model.MoMIL` (e.g. ``{"n_hidden": 64}``).
    seed
        Seed of every model and logistic regression.
    overwrite
        Replace an existing ``uns[key_added]``.
    progress
        A progress bar over the models; None follows ``ht.settings.verbosity``.
    **train_kwargs
        Passed to every ``model.train`` (e.g. ``max_epochs=50``).

    Returns
    -------
    The kept secondary assays, in label order. Writes ``uns[key_added]``: ``table`` (one row per secondary:
    ``order``, ``affinity`` (largest score with a primary), ``similar``, ``validation_auroc``, ``performant``,
    ``influence_<primary>`` for each primary, ``influential``, ``kept`` and ``reason``), ``self_influence`` (per
    primary), ``selected`` and ``params``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ..model import MoMIL
    from ..train._mil_plan import per_task_auroc
    from ._cv import minimal_adata, release

    # 1. validate
    check_anndata(adata)
    key_added = check_str(key_added, "key_added")
    th_perf = check_real(th_perf, "th_perf", min=0, max=1)
    th_inf = check_real(th_inf, "th_inf", min=0)
    order = check_int(order, "order", min=1)
    min_affinity = check_real(min_affinity, "min_affinity")
    seed = check_int(seed, "seed", min=0)
    check_bool(overwrite, "overwrite")
    check_obs_keys(adata, {"bag_key": bag_key, "group_key": group_key, "fold_key": fold_key})
    labels = check_labels(adata, labels_key, bag_key)
    assays = [str(c) for c in labels.columns]
    primary = [primary_assays] if isinstance(primary_assays, str) else [str(a) for a in primary_assays]
    unknown = [a for a in primary if a not in assays]
    if unknown or not primary:
        raise ValueError(
            f"`primary_assays` must name assays of adata.obsm[{labels_key!r}]; unknown: {unknown or '(empty)'}."
        )
    secondary = [a for a in assays if a not in primary]
    affinity = _check_affinity(affinity, assays)
    fixed = {"validation_key", "validation_values"} & set(train_kwargs)
    if fixed and fold_key is not None:
        raise TypeError(
            f"`select_assays` validates on the fold after `test_fold`; it takes no {sorted(fixed)}."
        )
    check_free_keys(adata, {"uns": key_added}, overwrite=overwrite)
    rows, val_fold = _split_rows(adata, fold_key, int(test_fold))
    model_kwargs = dict(model_kwargs or {})
    setup = {"bag_key": bag_key, "labels_key": labels_key, "group_key": group_key, "rep_key": rep_key}
    if val_fold is not None:
        train_kwargs = {**train_kwargs, "validation_key": fold_key, "validation_values": [val_fold]}
    train_kwargs = {"seed": seed, "enable_progress_bar": False, **train_kwargs}

    # 2. step 1: biological similarity
    table = pd.DataFrame(index=pd.Index(secondary, name="assay"))
    if affinity is not None:
        orders = graph_order(affinity, primary, min_affinity=min_affinity)
        table["order"] = orders.loc[secondary]
        table["affinity"] = affinity.loc[secondary, primary].max(axis=1)
        table["similar"] = table["order"] <= order
    else:
        table["order"], table["affinity"], table["similar"] = np.nan, np.nan, True
    candidates = [a for a in secondary if table.loc[a, "similar"]]

    # 3. step 2: one single-assay model per candidate and per primary (for the self-influence)
    base = minimal_adata(adata, rows, setup, extra_obs=[fold_key] if fold_key else [])
    all_labels = base.obsm[labels_key]
    embeddings: dict[str, pd.DataFrame] = {}
    val_auroc: dict[str, float] = {}
    split: dict[str, dict] = {}
    fits = primary + candidates
    bar = progress_bar(
        total=len(fits), desc="select_assays", unit="model", disable=not progress_bar_default(progress)
    )
    with quiet_loggers("scvi", "lightning.pytorch", "lightning.fabric"):
        for assay in fits:
            bar.set_postfix_str(assay)
            base.obsm[labels_key] = all_labels[[assay]]
            model = None
            try:
                MoMIL.setup_anndata(base, **setup)
                model = MoMIL(base, **model_kwargs)
                model.train(**train_kwargs)
                prob = model.predict()
                emb = model.get_latent_representation(level="assay")[:, 0]
                split[assay] = model.split_bags
            except ValueError as err:  # e.g. a single observed class, or no labelled training bag
                logger.info(f"select_assays: {assay} cannot be trained ({err})")
                val_auroc[assay] = np.nan
                bar.update()
                continue
            finally:
                if model is not None:
                    release(model)
            bags = prob.index.astype(str)
            embeddings[assay] = pd.DataFrame(emb, index=bags)
            val = np.isin(bags, split[assay]["validation"])
            per_bag = all_labels[[assay]].groupby(base.obs[bag_key].astype(str).to_numpy()).first().loc[bags]
            groups = base.obs[group_key].astype(str).groupby(base.obs[bag_key].astype(str).to_numpy()).first()
            val_auroc[assay] = float(
                per_task_auroc(
                    prob.to_numpy()[val], per_bag.to_numpy()[val], groups.loc[bags].to_numpy()[val]
                )[0]
            )
            bar.update()
    bar.close()
    base.obsm[labels_key] = all_labels
    table["validation_auroc"] = pd.Series(val_auroc).reindex(secondary)
    table["performant"] = table["validation_auroc"] >= th_perf

    # 4. step 3: influence of each performant secondary on each primary (logistic regression on its embeddings)
    bags_of = base.obs[bag_key].astype(str).to_numpy()
    performant = [a for a in candidates if table.loc[a, "performant"]]
    self_influence = {}
    for p in primary:
        if p not in split:  # the primary's own model could not be trained
            self_influence[p] = np.nan
            table[f"influence_{p}"] = np.nan
            continue
        y = all_labels[p].groupby(bags_of).first()
        val_bags = set(split[p]["validation"])
        labelled = y.index[y.notna()]
        tr = [b for b in labelled if b not in val_bags]
        va = [b for b in labelled if b in val_bags]

        def influence(source: str, p=p, y=y, tr=tr, va=va) -> float:
            if len(set(y.loc[tr])) < 2 or len(set(y.loc[va])) < 2:
                return np.nan
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
            clf.fit(embeddings[source].loc[tr].to_numpy(), y.loc[tr].to_numpy().astype(int))
            return float(
                roc_auc_score(
                    y.loc[va].to_numpy().astype(int),
                    clf.predict_proba(embeddings[source].loc[va].to_numpy())[:, 1],
                )
            )

        self_influence[p] = influence(p)
        table[f"influence_{p}"] = [influence(s) if s in performant else np.nan for s in secondary]
    ratio = pd.DataFrame(
        {
            p: table[f"influence_{p}"] / self_influence[p] if np.isfinite(self_influence[p]) else np.nan
            for p in primary
        },
        index=table.index,
    )
    table["influential"] = (ratio >= th_inf).any(axis=1)
    table["kept"] = table["similar"] & table["performant"] & table["influential"]
    reasons = []
    for a in secondary:
        row = table.loc[a]
        if not row["similar"]:
            reasons.append(f"graph order {row['order']:g} > {order}")
        elif not row["performant"]:
            reasons.append(f"validation AUROC {row['validation_auroc']:.3f} < {th_perf}")
        elif not row["influential"]:
            reasons.append(f"influence < {th_inf} × self-influence on every primary")
        else:
            best = ratio.loc[a].idxmax()
            reasons.append(f"influence on {best}: {ratio.loc[a, best]:.2f} × self")
    table["reason"] = reasons
    selected = [a for a in secondary if table.loc[a, "kept"]]
    adata.uns[key_added] = {
        "table": table.reset_index(),
        "self_influence": pd.Series(self_influence, name="self_influence"),
        "selected": selected,
        "params": {"primary_assays": primary, "th_perf": th_perf, "th_inf": th_inf, "order": order,
                   "min_affinity": min_affinity, "fold_key": fold_key, "test_fold": int(test_fold), "seed": seed,
                   "affinity": affinity is not None},
    }  # fmt: skip
    logger.info(
        f"select_assays: {len(candidates)}/{len(secondary)} similar, {len(performant)} performant, "
        f"{len(selected)} kept: {_preview(selected)}"
    )
    log_written("adata", [f"uns[{key_added!r}]"])
    return selected


def task_groups(
    adata: AnnData,
    *,
    auroc: pd.Series | None = None,
    affinity: pd.DataFrame | None = None,
    thresholds: Sequence[float] = (0.65, 0.70, 0.75),
    orders: Sequence[int] = (1, 2, 3),
    primary_assays: Sequence[str] | None = None,
    labels_key: str = HCI_KEYS.ASSAYS,
    min_affinity: float = 0.0,
) -> dict[str, list[str]]:
    """Task groups of thesis 000 §3.3.2 (its Table 3.1): assays by single-task AUROC, intersected with graph
    orders of an affinity matrix.

    Parameters
    ----------
    adata
        Instances with labels in ``obsm[labels_key]`` (the assays).
    auroc
        Single-task AUROC per assay (e.g. :func:`hcitools.tl.task_potentials`); default the
        ``validation_auroc`` column of ``uns["select_assays"]["table"]`` (secondaries only; primaries are in
        every group anyway).
    affinity
        Assays × assays association scores (as in :func:`select_assays`); None: no order groups.
    thresholds
        AUROC thresholds of the groups.
    orders
        Graph orders of the groups (from the nearest primary assay; needs ``primary_assays``).
    primary_assays
        The key assays; they belong to every group (the ``"vanilla"`` group). Default: those of
        ``uns["select_assays"]`` when present.
    labels_key
        obsm key of the labels.
    min_affinity
        Scores above this are edges of the graph.

    Returns
    -------
    dict group name → assays (label order): ``"vanilla"`` (the primary assays), ``"basic (0.65)"`` … (AUROC ≥
    threshold), ``"order 1 (0.65)"`` … (graph order ≤ k ∩ AUROC ≥ threshold), ``"superset"`` (all assays).
    Nothing is written into ``adata``.

    Examples
    --------
    >>> import hcitools as ht
    >>> adata = ht.datasets.synthetic_hci(n_compounds=20, n_assays=4, n_primary=1, seed=0)
    >>> auroc = pd.Series({"assay_01": 0.8, "assay_02": 0.6, "assay_03": 0.9})
    >>> groups = ht.tl.task_groups(adata, auroc=auroc, primary_assays=["assay_00"], thresholds=(0.7,), orders=())
    >>> groups["basic (0.7)"]
    ['assay_00', 'assay_01', 'assay_03']
    """
    check_anndata(adata)
    labels_key = check_str(labels_key, "labels_key")
    if labels_key not in adata.obsm:
        raise KeyError(f"adata.obsm has no {labels_key!r} (argument `labels_key`).")
    assays = [str(c) for c in adata.obsm[labels_key].columns]
    stored = adata.uns.get("select_assays", {})
    if auroc is None:
        if "table" not in stored:
            raise ValueError(
                "`auroc` is None and adata.uns has no 'select_assays' table: pass the single-task AUROC per assay, "
                "e.g. `auroc=ht.tl.task_potentials(adata)`."
            )
        auroc = pd.DataFrame(stored["table"]).set_index("assay")["validation_auroc"]
    if not isinstance(auroc, pd.Series):
        raise TypeError(f"`auroc` must be a Series indexed by assay, got {type(auroc).__name__}.")
    auroc = auroc.copy()
    auroc.index = auroc.index.astype(str)
    if primary_assays is None:
        primary_assays = stored.get("params", {}).get("primary_assays", [])
    primary = [primary_assays] if isinstance(primary_assays, str) else [str(a) for a in primary_assays]
    unknown = [a for a in [*primary, *auroc.index] if a not in assays]
    if unknown:
        raise ValueError(
            f"`auroc` / `primary_assays` name assays not in adata.obsm[{labels_key!r}]: {_preview(unknown)}."
        )
    thresholds = [check_real(t, "thresholds", min=0, max=1) for t in thresholds]
    orders = [check_int(k, "orders", min=1) for k in orders]
    affinity = _check_affinity(affinity, assays)
    if affinity is not None and orders and not primary:
        raise ValueError("Order groups count graph steps from the primary assays: pass `primary_assays`.")
    score = auroc.reindex(assays)
    groups: dict[str, list[str]] = {"vanilla": [a for a in assays if a in primary]}

    def members(mask: pd.Series) -> list[str]:
        return [a for a in assays if a in primary or bool(mask.get(a, False))]

    for th in thresholds:
        groups[f"basic ({th:g})"] = members(score >= th)
    if affinity is not None:
        hops = graph_order(affinity, primary, min_affinity=min_affinity)
        for k in orders:
            for th in thresholds:
                groups[f"order {k} ({th:g})"] = members((hops <= k) & (score >= th))
    groups["superset"] = list(assays)
    return groups
