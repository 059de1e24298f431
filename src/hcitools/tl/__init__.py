"""Tools: fit and apply models, evaluate, write results into AnnData (:mod:`hcitools.tl`)."""

from ._activity import phenotypic_activity
from ._baselines import pooled_logistic_regression
from ._compare import compare_methods
from ._evaluate import evaluate_assays
from ._fewshot import linear_probe
from ._impute import impute_labels
from ._momil import bag_size_baseline, momil
from ._mtae import mtae
from ._perturbation import predict_baseline, split_ood
from ._perturbation_eval import (
    benchmark_perturbation,
    evaluate_perturbation,
    perturbation_ceiling,
    rank_models,
    top_degs,
)
from ._potentials import task_potentials
from ._probe import probe_concepts
from ._select import select_assays, task_groups

__all__ = [
    "bag_size_baseline",
    "benchmark_perturbation",
    "compare_methods",
    "evaluate_assays",
    "evaluate_perturbation",
    "impute_labels",
    "linear_probe",
    "momil",
    "mtae",
    "perturbation_ceiling",
    "phenotypic_activity",
    "pooled_logistic_regression",
    "predict_baseline",
    "probe_concepts",
    "rank_models",
    "select_assays",
    "split_ood",
    "task_groups",
    "task_potentials",
    "top_degs",
]
