"""Tools: fit and apply models, evaluate, write results into AnnData (:mod:`hcitools.tl`)."""

from ._activity import phenotypic_activity
from ._evaluate import evaluate_assays

__all__ = ["evaluate_assays", "phenotypic_activity"]
