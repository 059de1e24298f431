"""Catalogue of bad inputs across the public API (issue 11, item 7).

Every case calls one public function with one bad argument and asserts three things: the exception type, that
the message names the argument (a regex), and that the input AnnData is unchanged afterwards (X, obs values and
dtypes, obsm keys / values / dtypes, uns keys, var, layers keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

import hcitools as ht
from hcitools._testing import assert_unchanged, snapshot

# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def hci_base():
    adata = ht.datasets.synthetic_hci(
        n_compounds=20, n_assays=3, n_primary=1, n_plates=3, n_features=8, n_control_wells=4, seed=0
    )
    adata.obsm["X_emb"] = pd.DataFrame(adata.X[:, :4].copy(), index=adata.obs_names, columns=list("abcd"))
    return adata


@pytest.fixture(scope="module")
def wells_base(hci_base):
    adata = hci_base.copy()
    ht.pp.split_compounds(adata, method="group", group_key="scaffold", n_folds=3, seed=0)
    return ht.pp.aggregate(adata, by="well")


@pytest.fixture(scope="module")
def pert_base():
    return ht.datasets.synthetic_perturbation(
        2, n_cells=12, n_genes=20, n_response_genes=5, doses=(1.0,), seed=0
    )


@pytest.fixture(scope="module")
def momil_base(hci_base):
    adata = hci_base.copy()
    ht.model.MoMIL.setup_anndata(adata, group_key="compound")
    model = ht.model.MoMIL(adata, n_hidden=8, n_head_hidden=4)
    model.train(max_epochs=1, batch_size=16, enable_progress_bar=False)
    return model


@pytest.fixture(scope="module")
def mtae_base(pert_base):
    adata = pert_base.copy()
    ht.model.MTAe.setup_anndata(adata)
    model = ht.model.MTAe(adata, n_latent=4, n_hidden=(16,), n_pca=5)
    model.train(max_epochs=1, batch_size=32, enable_progress_bar=False)
    return model


# ------------------------------------------------------------------------------------------------ cases


@dataclass
class Case:
    """``call(subject)`` must raise ``exc`` with a message matching ``match`` and leave the AnnData unchanged.

    ``subject`` is a fresh copy of the fixture ``on`` (``"hci"`` crops, ``"wells"``, ``"pert"`` cells), a model
    (``"momil"``, ``"mtae"``, whose ``adata`` is checked), or None (``"none"``: the call builds its own input);
    ``prep`` edits the copy before the snapshot.
    """

    on: str
    call: Any
    exc: type[Exception]
    match: str
    prep: Any = None


def _frames(assays=("a", "b"), n=12, values=None):
    rng = np.random.default_rng(0)
    idx = [f"c{i}" for i in range(n)]
    y = pd.DataFrame(
        values
        if values is not None
        else np.tile([1.0, 0.0], (n // 2, len(assays))).reshape(n, -1)[:, : len(assays)],
        index=idx,
        columns=list(assays),
    )
    pred = pd.DataFrame(rng.random((n, len(assays))), index=idx, columns=list(assays))
    return pred, y


def _set_nan(a):
    a.X[0, 0] = np.nan


def _straddle_folds(a):
    a.obs["fold"] = np.arange(a.n_obs) % 3


def _add_uns(key):
    def prep(a):
        a.uns[key] = {}

    return prep


CASES = {
    # ---------------------------------------------------------------- pp.aggregate
    "aggregate-by-missing": Case("hci", lambda a: ht.pp.aggregate(a, by="wel"), KeyError, r"`by`"),
    "aggregate-by-type": Case("hci", lambda a: ht.pp.aggregate(a, by=3), TypeError, r"`by`"),
    "aggregate-how": Case("hci", lambda a: ht.pp.aggregate(a, how="average"), ValueError, r"`how`"),
    "aggregate-labels_key-typo": Case(
        "hci",
        lambda a: ht.pp.aggregate(a, labels_key="asays"),
        KeyError,
        r"`labels_key`.*asays|asays.*`labels_key`",
    ),
    "aggregate-rep_key": Case("hci", lambda a: ht.pp.aggregate(a, rep_key="X_dino"), KeyError, r"`rep_key`"),
    "aggregate-nan": Case("hci", lambda a: ht.pp.aggregate(a), ValueError, r"adata\.X.*NaN", prep=_set_nan),
    "aggregate-not-anndata": Case("none", lambda _: ht.pp.aggregate(np.zeros((3, 3))), TypeError, r"`adata`"),
    "aggregate-empty": Case(
        "none", lambda _: ht.pp.aggregate(ht.datasets.synthetic_hci(5)[:0]), ValueError, r"`adata`"
    ),
    # ---------------------------------------------------------------- pp.make_bag_key
    "make_bag_key-plate_key": Case(
        "hci", lambda a: ht.pp.make_bag_key(a, plate_key="plat"), KeyError, r"`plate_key`"
    ),
    "make_bag_key-collision": Case("hci", lambda a: ht.pp.make_bag_key(a), ValueError, r"`key_added=`"),
    "make_bag_key-sep": Case(
        "hci", lambda a: ht.pp.make_bag_key(a, key_added="b", sep=1), TypeError, r"`sep`"
    ),
    "make_bag_key-copy": Case(
        "hci", lambda a: ht.pp.make_bag_key(a, key_added="b", copy="yes"), TypeError, r"`copy`"
    ),
    "make_bag_key-overwrite": Case(
        "hci", lambda a: ht.pp.make_bag_key(a, overwrite=1), TypeError, r"`overwrite`"
    ),
    # ---------------------------------------------------------------- pp.assign_labels / labels_from_lists
    "assign_labels-array": Case(
        "hci", lambda a: ht.pp.assign_labels(a, np.ones((3, 2)), key_added="y"), TypeError, r"`labels`"
    ),
    "assign_labels-compound_key": Case(
        "hci",
        lambda a: ht.pp.assign_labels(a, pd.DataFrame({"t": [1.0]}, index=["cpd_0000"]), compound_key="cpd"),
        KeyError,
        r"`compound_key`",
    ),
    "assign_labels-collision": Case(
        "hci",
        lambda a: ht.pp.assign_labels(a, pd.DataFrame({"t": [1.0]}, index=["cpd_0000"])),
        ValueError,
        r"`key_added=`",
    ),
    "assign_labels-values": Case(
        "hci",
        lambda a: ht.pp.assign_labels(
            a, pd.DataFrame({"t": [2.0, 0.0]}, index=["cpd_0000", "cpd_0001"]), key_added="y"
        ),
        ValueError,
        r"`labels`",
    ),
    "assign_labels-strict": Case(
        "hci",
        lambda a: ht.pp.assign_labels(
            a, pd.DataFrame({"t": [1.0, 0.0]}, index=["cpd_0000", "nope"]), key_added="y", strict=True
        ),
        ValueError,
        r"`strict=False`",
    ),
    "assign_labels-empty": Case(
        "hci", lambda a: ht.pp.assign_labels(a, pd.DataFrame(), key_added="y"), ValueError, r"`labels`"
    ),
    "assign_labels-strict-type": Case(
        "hci",
        lambda a: ht.pp.assign_labels(
            a, pd.DataFrame({"t": [1.0]}, index=["cpd_0000"]), key_added="y", strict="no"
        ),
        TypeError,
        r"`strict`",
    ),
    "labels_from_lists-table": Case(
        "none",
        lambda _: ht.pp.labels_from_lists([1, 2], compound_col="c", labels_col="l"),
        TypeError,
        r"`table`",
    ),
    "labels_from_lists-column": Case(
        "none",
        lambda _: ht.pp.labels_from_lists(
            pd.DataFrame({"c": ["x"], "l": ["A"]}), compound_col="cpd", labels_col="l"
        ),
        KeyError,
        r"`compound_col`",
    ),
    # ---------------------------------------------------------------- pp.normalize_plates
    "normalize-method": Case(
        "hci", lambda a: ht.pp.normalize_plates(a, method="zscore"), ValueError, r"`method`"
    ),
    "normalize-mad_scale-zero": Case(
        "hci", lambda a: ht.pp.normalize_plates(a, mad_scale=0), ValueError, r"`mad_scale`"
    ),
    "normalize-mad_scale-str": Case(
        "hci", lambda a: ht.pp.normalize_plates(a, mad_scale="1"), TypeError, r"`mad_scale`"
    ),
    "normalize-epsilon-negative": Case(
        "hci", lambda a: ht.pp.normalize_plates(a, method="spherize", epsilon=-1), ValueError, r"`epsilon`"
    ),
    "normalize-control-case": Case(
        "hci",
        lambda a: ht.pp.normalize_plates(a, control_value="dmso"),
        ValueError,
        r"`control_value`.*'DMSO'",
    ),
    "normalize-control-absent": Case(
        "hci", lambda a: ht.pp.normalize_plates(a, control_value="PBS"), ValueError, r"`control_value`"
    ),
    "normalize-plate_key": Case(
        "hci", lambda a: ht.pp.normalize_plates(a, plate_key="batch"), KeyError, r"`plate_key`"
    ),
    "normalize-rep_key": Case(
        "hci", lambda a: ht.pp.normalize_plates(a, rep_key="X_pca"), KeyError, r"`rep_key`"
    ),
    "normalize-key_added-collision": Case(
        "hci", lambda a: ht.pp.normalize_plates(a, key_added="assays"), ValueError, r"`key_added=`"
    ),
    "normalize-twice": Case(
        "hci",
        lambda a: ht.pp.normalize_plates(a),
        ValueError,
        r"`key_added=`",
        prep=_add_uns("normalize_plates"),
    ),
    "normalize-spherize-singular": Case(
        "wells", lambda a: ht.pp.normalize_plates(a, method="spherize", epsilon=0), ValueError, r"`epsilon"
    ),
    "normalize-copy": Case("hci", lambda a: ht.pp.normalize_plates(a, copy="no"), TypeError, r"`copy`"),
    "normalize-control_key": Case(
        "hci", lambda a: ht.pp.normalize_plates(a, control_key=None), TypeError, r"`control_key`"
    ),
    "normalize-obsm-frame": Case(
        "hci",
        lambda a: ht.pp.normalize_plates(a, rep_key="X_emb", plate_key="nope"),
        KeyError,
        r"`plate_key`",
    ),
    # ---------------------------------------------------------------- pp.split_compounds / check_folds / fold_rotations
    "split-method": Case("hci", lambda a: ht.pp.split_compounds(a, method="kfold"), ValueError, r"`method`"),
    "split-n_folds-small": Case(
        "hci", lambda a: ht.pp.split_compounds(a, method="random", n_folds=1), ValueError, r"`n_folds`"
    ),
    "split-n_folds-str": Case(
        "hci", lambda a: ht.pp.split_compounds(a, method="random", n_folds="5"), TypeError, r"`n_folds`"
    ),
    "split-n_folds-float": Case(
        "hci", lambda a: ht.pp.split_compounds(a, method="random", n_folds=2.5), TypeError, r"`n_folds`"
    ),
    "split-n_folds-too-many": Case(
        "hci", lambda a: ht.pp.split_compounds(a, method="random", n_folds=50), ValueError, r"`n_folds`"
    ),
    "split-seed-negative": Case(
        "hci", lambda a: ht.pp.split_compounds(a, method="random", seed=-1), ValueError, r"`seed`"
    ),
    "split-seed-float": Case(
        "hci", lambda a: ht.pp.split_compounds(a, method="random", seed=1.5), TypeError, r"`seed`"
    ),
    "split-scaffold-no-smiles": Case("hci", lambda a: ht.pp.split_compounds(a), ValueError, r"`smiles_key"),
    "split-group_key": Case(
        "hci",
        lambda a: ht.pp.split_compounds(a, method="group", group_key="series"),
        KeyError,
        r"`group_key`",
    ),
    "split-control-case": Case(
        "hci",
        lambda a: ht.pp.split_compounds(a, method="random", control_value="dmso"),
        ValueError,
        r"`control_value.*'DMSO'",
    ),
    "split-key_added-collision": Case(
        "hci",
        lambda a: ht.pp.split_compounds(a, method="random", key_added="plate"),
        ValueError,
        r"`key_added=`",
    ),
    "check_folds-fold_key": Case(
        "hci", lambda a: ht.pp.check_folds(a, fold_key="nofold"), KeyError, r"`fold_key`"
    ),
    "check_folds-straddle": Case(
        "hci", lambda a: ht.pp.check_folds(a), ValueError, r"`fold_key`", prep=_straddle_folds
    ),
    "fold_rotations-two": Case("none", lambda _: list(ht.pp.fold_rotations(2)), ValueError, r"`n_folds`"),
    "fold_rotations-str": Case("none", lambda _: list(ht.pp.fold_rotations("5")), TypeError, r"`n_folds`"),
    # ---------------------------------------------------------------- pp.tile_images / embed_tiles
    "tile-grid": Case(
        "none", lambda _: ht.pp.tile_images(np.ones((1, 1, 8, 8)), grid=5), ValueError, r"`grid`"
    ),
    "tile-grid-and-size": Case(
        "none", lambda _: ht.pp.tile_images(np.ones((1, 1, 8, 8)), grid=4, tile_size=4), ValueError, r"`grid`"
    ),
    "tile-size-zero": Case(
        "none", lambda _: ht.pp.tile_images(np.ones((1, 1, 8, 8)), tile_size=0), ValueError, r"`tile_size`"
    ),
    "tile-nan": Case(
        "none", lambda _: ht.pp.tile_images(np.full((1, 1, 8, 8), np.nan), grid=4), ValueError, r"`images`"
    ),
    "tile-str": Case("none", lambda _: ht.pp.tile_images("fov.tif", grid=4), TypeError, r"`images`"),
    "tile-clip": Case(
        "none",
        lambda _: ht.pp.tile_images(np.ones((1, 1, 8, 8)), grid=4, clip_percentiles=(99, 1)),
        ValueError,
        r"`clip_percentiles`",
    ),
    "embed-model": Case(
        "none",
        lambda _: ht.pp.embed_tiles(ht.pp.tile_images(np.ones((1, 1, 8, 8)), grid=4), lambda x: x),
        TypeError,
        r"`model`",
    ),
    # ---------------------------------------------------------------- tl.phenotypic_activity
    "activity-null_size": Case(
        "wells", lambda a: ht.tl.phenotypic_activity(a, null_size=0), ValueError, r"`null_size`"
    ),
    "activity-threshold": Case(
        "wells", lambda a: ht.tl.phenotypic_activity(a, threshold=1.5), ValueError, r"`threshold`"
    ),
    "activity-crops": Case(
        "hci", lambda a: ht.tl.phenotypic_activity(a), ValueError, r"`bag_key`.*aggregate"
    ),
    "activity-distance": Case(
        "wells", lambda a: ht.tl.phenotypic_activity(a, distance="cosin"), ValueError, r"`distance`"
    ),
    "activity-copy-inplace": Case(
        "wells",
        lambda a: ht.tl.phenotypic_activity(a, copy=True, inplace=False),
        ValueError,
        r"`inplace=False`",
    ),
    "activity-control-case": Case(
        "wells", lambda a: ht.tl.phenotypic_activity(a, control_value="dmso"), ValueError, r"`control_value`"
    ),
    "activity-seed": Case("wells", lambda a: ht.tl.phenotypic_activity(a, seed="0"), TypeError, r"`seed`"),
    # ---------------------------------------------------------------- tl.pooled_logistic_regression
    "plr-Cs-scalar": Case("wells", lambda a: ht.tl.pooled_logistic_regression(a, Cs=0.1), TypeError, r"`Cs`"),
    "plr-Cs-negative": Case(
        "wells", lambda a: ht.tl.pooled_logistic_regression(a, Cs=[-1.0]), ValueError, r"`Cs`"
    ),
    "plr-fold_key": Case(
        "wells", lambda a: ht.tl.pooled_logistic_regression(a, fold_key="nofold"), KeyError, r"`fold_key`"
    ),
    "plr-crops": Case("hci", lambda a: ht.tl.pooled_logistic_regression(a), ValueError, r"`bag_key`"),
    "plr-max_iter": Case(
        "wells", lambda a: ht.tl.pooled_logistic_regression(a, max_iter=0), ValueError, r"`max_iter`"
    ),
    "plr-labels_key": Case(
        "wells", lambda a: ht.tl.pooled_logistic_regression(a, labels_key="y"), KeyError, r"`labels_key`"
    ),
    # ---------------------------------------------------------------- tl.evaluate_assays / compare_methods
    "evaluate-no-common-assay": Case(
        "none",
        lambda _: ht.tl.evaluate_assays(_frames(("a",))[0], _frames(("b",))[1]),
        ValueError,
        r"`predictions`.*assay",
    ),
    "evaluate-labels-values": Case(
        "none",
        lambda _: ht.tl.evaluate_assays(_frames(("a",))[0], _frames(("a",))[1] * 2),
        ValueError,
        r"`labels`",
    ),
    "evaluate-array": Case(
        "none",
        lambda _: ht.tl.evaluate_assays(np.ones((12, 1)), _frames(("a",))[1]),
        TypeError,
        r"`predictions`",
    ),
    "evaluate-assays-missing": Case(
        "none", lambda _: ht.tl.evaluate_assays(*_frames(("a",)), assays=["z"]), KeyError, r"`assays`"
    ),
    "evaluate-assays-str": Case(
        "none", lambda _: ht.tl.evaluate_assays(*_frames(("a",)), assays="a"), TypeError, r"`assays`"
    ),
    "evaluate-no-rows": Case(
        "none",
        lambda _: ht.tl.evaluate_assays(
            _frames(("a",))[0].set_axis([f"x{i}" for i in range(12)]), _frames(("a",))[1]
        ),
        ValueError,
        r"`predictions`.*row",
    ),
    "compare-mismatched-assays": Case(
        "none",
        lambda _: ht.tl.compare_methods(
            _frames(("a",))[0], _frames(("b",))[0], labels=_frames(("a", "b"))[1]
        ),
        ValueError,
        r"`pred_a`.*`pred_b`",
    ),
    "compare-n_boot": Case(
        "none",
        lambda _: ht.tl.compare_methods(*_frames(("a",))[:1] * 2, labels=_frames(("a",))[1], n_boot=0),
        ValueError,
        r"`n_boot`",
    ),
    "compare-labels-array": Case(
        "none",
        lambda _: ht.tl.compare_methods(*_frames(("a",))[:1] * 2, labels=np.ones((12, 1))),
        TypeError,
        r"`labels`",
    ),
    # ---------------------------------------------------------------- tl (MIL runner, baselines)
    "bag_size_baseline-bag_key": Case(
        "hci", lambda a: ht.tl.bag_size_baseline(a, bag_key="bag"), KeyError, r"`bag_key`"
    ),
    "momil-fold_key": Case("hci", lambda a: ht.tl.momil(a, fold_key="nofold"), KeyError, r"`fold_key`"),
    "momil-method": Case("hci", lambda a: ht.tl.momil(a, method="transformer"), ValueError, r"`method`"),
    # ---------------------------------------------------------------- pl
    "pl-assay_performance-metric": Case(
        "none",
        lambda _: ht.pl.assay_performance(
            pd.DataFrame({"assay": ["a"], "method": ["m"], "auroc": [0.5]}), metric="f1"
        ),
        KeyError,
        r"`metric`",
    ),
    "pl-assay_performance-array": Case(
        "none", lambda _: ht.pl.assay_performance(np.ones((2, 2))), TypeError, r"`results`"
    ),
    "pl-assay_performance-methods": Case(
        "none",
        lambda _: ht.pl.assay_performance(
            pd.DataFrame({"assay": ["a"], "method": ["m"], "auroc": [0.5]}), methods=["zzz"]
        ),
        ValueError,
        r"`methods`",
    ),
    "pl-attention-key": Case(
        "hci", lambda a: ht.pl.attention(a, assay="assay_00", groupby="responder"), KeyError, r"`key`"
    ),
    "pl-attention-groupby": Case(
        "hci",
        lambda a: ht.pl.attention(a, assay="assay_00", groupby="state", key="assays"),
        KeyError,
        r"`groupby`",
    ),
    "pl-attention-assay": Case(
        "hci",
        lambda a: ht.pl.attention(a, assay="zzz", groupby="responder", key="assays"),
        KeyError,
        r"`assay`",
    ),
    "pl-training_history-untrained": Case(
        "none", lambda _: ht.pl.training_history(object()), ValueError, r"`model`"
    ),
    # ---------------------------------------------------------------- datasets
    "synthetic_hci-n_compounds-zero": Case(
        "none", lambda _: ht.datasets.synthetic_hci(0), ValueError, r"`n_compounds`"
    ),
    "synthetic_hci-n_compounds-str": Case(
        "none", lambda _: ht.datasets.synthetic_hci("10"), TypeError, r"`n_compounds`"
    ),
    "synthetic_hci-label_density": Case(
        "none", lambda _: ht.datasets.synthetic_hci(10, label_density=0), ValueError, r"`label_density`"
    ),
    "synthetic_hci-n_plates": Case(
        "none",
        lambda _: ht.datasets.synthetic_hci(10, n_plates=2, wells_per_compound=3),
        ValueError,
        r"`n_plates`",
    ),
    "synthetic_hci-seed": Case(
        "none", lambda _: ht.datasets.synthetic_hci(10, seed=0.5), TypeError, r"`seed`"
    ),
    "synthetic_perturbation-doses": Case(
        "none", lambda _: ht.datasets.synthetic_perturbation(doses=[-1.0]), ValueError, r"`doses`"
    ),
    "synthetic_perturbation-n_genes": Case(
        "none", lambda _: ht.datasets.synthetic_perturbation(n_genes=0), ValueError, r"`n_genes`"
    ),
    "synthetic_perturbation-doses-str": Case(
        "none", lambda _: ht.datasets.synthetic_perturbation(doses="1"), TypeError, r"`doses`"
    ),
    "mil_dataset-name": Case("none", lambda _: ht.datasets.mil_dataset("corel"), ValueError, r"`name`"),
    "kang2018-source": Case("none", lambda _: ht.datasets.kang2018(source="web"), ValueError, r"`source`"),
    "deepprofiler-dataset": Case(
        "none", lambda _: ht.datasets.deepprofiler_cells(dataset="x"), ValueError, r"`dataset`"
    ),
    "lincs_plate-path": Case("none", lambda _: ht.datasets.lincs_plate(path=3), TypeError, r"`path`"),
    "lincs_plate-missing": Case(
        "none", lambda _: ht.datasets.lincs_plate(path="/nonexistent"), FileNotFoundError, r"`path="
    ),
    # ---------------------------------------------------------------- model.MoMIL
    "MoMIL.setup-bag_key": Case(
        "hci", lambda a: ht.model.MoMIL.setup_anndata(a, bag_key="bag"), KeyError, r"`bag_key`"
    ),
    "MoMIL.setup-labels_key": Case(
        "hci", lambda a: ht.model.MoMIL.setup_anndata(a, labels_key="y"), KeyError, r"`labels_key`"
    ),
    "MoMIL.setup-rep_key": Case(
        "hci", lambda a: ht.model.MoMIL.setup_anndata(a, rep_key="X_dino"), KeyError, r"`rep_key`"
    ),
    "MoMIL.setup-per-plate-wells": Case(
        "hci",
        lambda a: ht.model.MoMIL.setup_anndata(a, bag_key="well_position"),
        ValueError,
        r"`bag_key`.*make_bag_key",
    ),
    "MoMIL.setup-nan": Case(
        "hci", lambda a: ht.model.MoMIL.setup_anndata(a), ValueError, r"adata\.X", prep=_set_nan
    ),
    "MoMIL-head": Case("momil", lambda m: ht.model.MoMIL(m.adata, head="transformer"), ValueError, r"`head`"),
    "MoMIL-n_hidden": Case("momil", lambda m: ht.model.MoMIL(m.adata, n_hidden=0), ValueError, r"`n_hidden`"),
    "MoMIL-primary_assays": Case(
        "momil",
        lambda m: ht.model.MoMIL(m.adata, primary_assays=["zzz"]),
        (KeyError, ValueError),
        r"`primary_assays`",
    ),
    "MoMIL.train-max_epochs-zero": Case(
        "momil", lambda m: m.train(max_epochs=0), ValueError, r"`max_epochs`"
    ),
    "MoMIL.train-lr": Case("momil", lambda m: m.train(max_epochs=1, lr=-1.0), ValueError, r"`lr`"),
    "MoMIL.train-batch_size": Case(
        "momil", lambda m: m.train(max_epochs=1, batch_size=0), ValueError, r"`batch_size`"
    ),
    "MoMIL.train-validation_size": Case(
        "momil", lambda m: m.train(max_epochs=1, validation_size=1.5), ValueError, r"`validation_size`"
    ),
    "MoMIL.train-validation_values": Case(
        "momil", lambda m: m.train(max_epochs=1, validation_values=[1]), ValueError, r"`validation_key`"
    ),
    "MoMIL.predict-level": Case("momil", lambda m: m.predict(level="well"), ValueError, r"`level`"),
    "MoMIL.predict-features": Case(
        "momil", lambda m: m.predict(m.adata[:, ::-1].copy()), ValueError, r"feature|var_names"
    ),
    # ---------------------------------------------------------------- model.MTAe
    "MTAe.setup-condition_key": Case(
        "pert", lambda a: ht.model.MTAe.setup_anndata(a, condition_key="cond"), KeyError, r"`condition_key`"
    ),
    "MTAe.setup-control_value": Case(
        "pert", lambda a: ht.model.MTAe.setup_anndata(a, control_value="ctrl"), ValueError, r"`control_value`"
    ),
    "MTAe.setup-cell_type_key": Case(
        "pert", lambda a: ht.model.MTAe.setup_anndata(a, cell_type_key=3), TypeError, r"`cell_type_key`"
    ),
    "MTAe-variant": Case("mtae", lambda m: ht.model.MTAe(m.adata, variant="VAE"), ValueError, r"`variant`"),
    "MTAe-n_latent": Case("mtae", lambda m: ht.model.MTAe(m.adata, n_latent=0), ValueError, r"`n_latent`"),
    "MTAe.train-max_epochs-negative": Case(
        "mtae", lambda m: m.train(max_epochs=-1), ValueError, r"`max_epochs`"
    ),
    "MTAe.train-max_epochs-str": Case("mtae", lambda m: m.train(max_epochs="5"), TypeError, r"`max_epochs`"),
    "MTAe.train-lr": Case("mtae", lambda m: m.train(max_epochs=1, lr=0.0), ValueError, r"`lr`"),
    "MTAe.predict-condition": Case(
        "mtae",
        lambda m: m.predict(m.adata[m.adata.obs["condition"] == "control"].copy(), condition="drug_9"),
        (KeyError, ValueError),
        r"`condition`",
    ),
}


@pytest.fixture
def subject(request):
    """A fresh copy of the fixture a case runs on (models are shared: their calls must not change them)."""
    on = request.param
    if on == "none":
        return None
    if on in ("momil", "mtae"):
        return request.getfixturevalue(f"{on}_base")
    return request.getfixturevalue(f"{on}_base").copy()


@pytest.mark.parametrize(
    ("subject", "case"),
    [pytest.param(c.on, c, id=name) for name, c in CASES.items()],
    indirect=["subject"],
)
def test_bad_input(subject, case):
    target = getattr(subject, "adata", subject) if subject is not None else None
    if case.prep is not None:
        case.prep(target)
    before = snapshot(target) if target is not None else None
    with pytest.raises(case.exc, match=case.match):
        case.call(subject)
    if target is not None:
        assert_unchanged(before, target)


def test_catalogue_size():
    assert len(CASES) >= 60
    covered = {name.split("-")[0].split(".")[0] for name in CASES}
    assert {"aggregate", "normalize", "activity", "evaluate", "MoMIL", "MTAe", "synthetic_hci"} <= covered


def test_backed_read_only(hci_base, tmp_path):
    """h5py's "no write intent" becomes an error naming the fix, before anything is written."""
    import anndata as ad

    adata = hci_base.copy()
    del adata.obsm["X_emb"]
    adata.write_h5ad(tmp_path / "screen.h5ad")
    backed = ad.read_h5ad(tmp_path / "screen.h5ad", backed="r")
    before = snapshot(backed)
    with pytest.raises(ValueError, match=r"`adata` is backed.*to_memory\(\).*backed='r\+'"):
        ht.pp.normalize_plates(backed)
    assert_unchanged(before, backed)
    with pytest.raises(ValueError, match=r"`adata` is backed.*to_memory"):
        ht.pp.normalize_plates(backed, copy=True)
    backed.file.close()
