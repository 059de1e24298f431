"""``ht.tl.linear_probe``: few-shot transfer of a trained MIL model to a new assay (001 Table 3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import HCI_KEYS
from .._utils import logger, quiet_loggers
from .._validate import check_anndata, check_bool, check_choice, check_int, check_obs_keys, check_str


def _shot_list(shots) -> list[int | None]:
    shots = [shots] if shots is None or isinstance(shots, int | np.integer) else list(shots)
    out = []
    for k in shots:
        out.append(None if k is None else check_int(k, "shots", min=1))
    if not out:
        raise ValueError("`shots` is empty; pass e.g. shots=(5, 10, None).")
    return out


def linear_probe(
    adata: AnnData,
    model,
    *,
    assay: str,
    shots: Sequence[int | None] = (5, 10, None),
    n_repeats: int = 10,
    seed: int = 0,
    labels_key: str = HCI_KEYS.ASSAYS,
    fold_key: str | None = HCI_KEYS.FOLD,
    test_fold: int = 0,
    representation: Literal["bag", "assay"] = "bag",
    baseline: bool = True,
    baseline_kwargs: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Few-shot transfer to a new assay (001 Table 3): a logistic regression on a trained model's frozen embeddings.

    The compounds of the test fold (``test_fold`` of ``obs[fold_key]``) are the test set; the other compounds
    with an observed label of ``assay`` are the pool. For each ``k`` in ``shots`` and each of ``n_repeats``
    draws, ``k`` positive and ``k`` negative pool compounds are drawn (``k=None``: the whole pool, one draw), a
    scikit-learn logistic regression (standardised inputs) is fitted on their frozen compound embeddings (the
    mean of the compound's bag embeddings), and its compound-level test AUROC is recorded. With ``baseline``, a
    single-assay :class:`~hcitools.model.MoMIL` is trained from scratch on the same shots (all their wells, no
    validation split: with 2k compounds there is nothing to select on) and scored on the same test compounds.

    Parameters
    ----------
    adata
        Instances with the model's features, labels of ``assay`` in ``obsm[labels_key]``, folds in
        ``obs[fold_key]`` and the model's ``group_key`` (compounds).
    model
        A trained MIL model (its weights are frozen: only queried). ``assay`` should be new to it.
    assay
        The new assay (a column of ``obsm[labels_key]``).
    shots
        Compounds per class of each few-shot setting; None = all pool compounds.
    n_repeats
        Draws per setting (one for None).
    seed
        Seed of the draws, the logistic regressions and the baseline models.
    labels_key, fold_key, test_fold
        Labels and the held-out compounds; ``fold_key=None`` holds out a random half of the labelled compounds
        (stratified by class).
    representation
        ``"bag"``: the model's shared bag representation (``get_latent_representation(level="bag")``);
        ``"assay"``: the attention-pooled embeddings of all its assays, concatenated.
    baseline
        Also train the single-task model on the same shots (slower: one model per draw).
    baseline_kwargs
        ``model.train`` arguments of the baseline (default ``{"max_epochs": 30}``).

    Returns
    -------
    DataFrame, one row per setting and method (``linear_probe``, and ``stl`` with ``baseline``): ``shots``
    (``k`` or ``"all"``), ``method``, ``auroc_mean``, ``auroc_sd`` (over the draws; NaN for one draw),
    ``n_repeats``, ``n_pool_pos``, ``n_pool_neg``, ``n_test_pos``, ``n_test_neg``; the per-draw AUROCs are in
    ``.attrs["draws"]`` as a dict of columns (``pd.DataFrame(res.attrs["draws"])``; a DataFrame there would
    break pandas' printing and concatenation of the result, which compare ``attrs``). Nothing is written into
    ``adata``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    check_anndata(adata)
    assay = check_str(assay, "assay")
    labels_key = check_str(labels_key, "labels_key")
    n_repeats = check_int(n_repeats, "n_repeats", min=1)
    seed = check_int(seed, "seed", min=0)
    check_choice(representation, "representation", ["bag", "assay"])
    baseline = check_bool(baseline, "baseline")
    shot_list = _shot_list(shots)
    if not getattr(model, "is_trained_", False):
        raise ValueError("`model` must be a trained MIL model.")
    s = model._setup
    bag_key, group_key = s["bag_key"], s["group_key"]
    if group_key is None:
        raise ValueError("`linear_probe` works on compounds: the model needs `group_key` at setup_anndata.")
    check_obs_keys(adata, {"fold_key": fold_key, "bag_key": bag_key, "group_key": group_key})
    if labels_key not in adata.obsm or assay not in adata.obsm[labels_key].columns:
        raise KeyError(f"adata.obsm[{labels_key!r}] has no column {assay!r} (argument `assay`).")
    if assay in model.assays:
        logger.info(f"linear_probe: {assay!r} is one of the model's assays, not a new one")
    compounds = adata.obs[group_key].astype(str).to_numpy()
    y = adata.obsm[labels_key][assay].groupby(compounds).first().dropna().astype(int)
    rng = np.random.default_rng(seed)
    if fold_key is not None:
        fold = adata.obs[fold_key].groupby(compounds, observed=True).first().loc[y.index]
        test = y.index[fold.to_numpy() == test_fold]
    else:
        test = np.concatenate([rng.permutation(y.index[y == c])[: int((y == c).sum()) // 2] for c in (0, 1)])
    pool = y.drop(test)
    y_test = y.loc[test]
    if y_test.nunique() < 2:
        raise ValueError(f"The test compounds of {assay!r} hold a single class; choose another `test_fold`.")
    need = max((k for k in shot_list if k is not None), default=1)
    counts = pool.value_counts()
    if min(counts.get(0, 0), counts.get(1, 0)) < need:
        raise ValueError(
            f"{assay!r} has {counts.get(1, 0)} positive and {counts.get(0, 0)} negative pool compounds; "
            f"`shots` asks for {need} of each."
        )

    # frozen compound embeddings
    level = "bag" if representation == "bag" else "assay"
    emb = model.get_latent_representation(adata, level=level)
    emb = emb.reshape(len(emb), -1)
    bag_names = model._bag_data(adata).bag_names.astype(str)
    bag_cpd = pd.Series(compounds, index=adata.obs[bag_key].astype(str).to_numpy()).groupby(level=0).first()
    cpd_emb = pd.DataFrame(emb, index=bag_names).groupby(bag_cpd.loc[bag_names].to_numpy()).mean()

    draws = []
    for k in shot_list:
        for r in range(1 if k is None else n_repeats):
            draw_rng = np.random.default_rng([seed, r, k or 0])
            if k is None:
                chosen = pool.index.to_numpy()
            else:
                chosen = np.concatenate(
                    [draw_rng.choice(pool.index[pool == c], size=k, replace=False) for c in (0, 1)]
                )
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
            clf.fit(cpd_emb.loc[chosen].to_numpy(), pool.loc[chosen].to_numpy())
            score = clf.predict_proba(cpd_emb.loc[test].to_numpy())[:, 1]
            draws.append({"shots": "all" if k is None else k, "method": "linear_probe", "repeat": r,
                          "auroc": roc_auc_score(y_test.to_numpy(), score)})  # fmt: skip
            if baseline:
                draws.append({"shots": "all" if k is None else k, "method": "stl", "repeat": r,
                              "auroc": _stl_auroc(adata, model, assay, chosen, pool, test, y_test, seed + r,
                                                  baseline_kwargs, labels_key)})  # fmt: skip
    draws = pd.DataFrame(draws)
    summary = (
        draws.groupby(["shots", "method"], sort=False)["auroc"]
        .agg(auroc_mean="mean", auroc_sd="std", n_repeats="size")
        .reset_index()
    )
    summary["n_pool_pos"], summary["n_pool_neg"] = int(counts.get(1, 0)), int(counts.get(0, 0))
    summary["n_test_pos"], summary["n_test_neg"] = int(y_test.sum()), int((y_test == 0).sum())
    summary.attrs["draws"] = draws.to_dict(orient="list")  # primitives: pandas compares attrs with ==
    logger.info(
        f"linear_probe on {assay!r}: "
        + ", ".join(f"{r.shots}/{r.method} {r.auroc_mean:.3f}" for r in summary.itertuples())
    )
    return summary


def _stl_auroc(adata, model, assay, chosen, pool, test, y_test, seed, kwargs, labels_key) -> float:
    """Compound-level test AUROC of a single-assay MoMIL trained on the shot compounds only."""
    from sklearn.metrics import roc_auc_score

    from ..model import MoMIL
    from ._cv import minimal_adata, release

    s = model._setup
    setup = {k: s.get(k) for k in ("bag_key", "group_key", "rep_key", "layer")}
    compounds = adata.obs[s["group_key"]].astype(str).to_numpy()
    rows = np.flatnonzero(np.isin(compounds, chosen))
    test_rows = np.flatnonzero(np.isin(compounds, test))
    train = minimal_adata(adata, rows, {**setup, "labels_key": labels_key})
    train.obsm[labels_key] = pd.DataFrame(
        {assay: pool.loc[compounds[rows]].to_numpy().astype(float)}, index=train.obs_names
    )
    test_ad = minimal_adata(adata, test_rows, {**setup, "labels_key": labels_key}, labels=False)
    kwargs = {"max_epochs": 30, "enable_progress_bar": False, **(kwargs or {})}
    import warnings

    with quiet_loggers("scvi", "lightning.pytorch", "lightning.fabric"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*early stopping.*")
        warnings.filterwarnings("ignore", message=".*validation bags.*")
        MoMIL.setup_anndata(train, labels_key=labels_key, **{k: v for k, v in setup.items() if v is not None})
        stl = MoMIL(
            train,
            **{
                k: v
                for k, v in getattr(model, "init_params_", {}).get("non_kwargs", {}).items()
                if k in _ARCH
            },
        )
        try:
            stl.train(validation_size=0.0, seed=int(seed), **kwargs)
            pred = stl.predict(test_ad, level="compound")[assay]
        finally:
            release(stl)
    return float(roc_auc_score(y_test.to_numpy(), pred.loc[y_test.index].to_numpy()))


#: Architecture arguments the baseline copies from the probed model (when it is a MoMIL).
_ARCH = ("head", "n_hidden", "n_head_hidden", "dropout")
