"""Tools: fit and apply models, evaluate, write results into AnnData (:mod:`hcitools.tl`)."""

from ._activity import phenotypic_activity
from ._compare import compare_methods
from ._evaluate import evaluate_assays
from ._momil import bag_size_baseline, momil
from ._perturbation import predict_baseline, split_ood

__all__ = [
    "bag_size_baseline",
    "compare_methods",
    "evaluate_assays",
    "momil",
    "phenotypic_activity",
    "predict_baseline",
    "split_ood",
]
