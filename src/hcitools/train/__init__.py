"""Training plans and callbacks (:mod:`hcitools.train`)."""

from ._mil_plan import MILTrainingPlan, RestoreBestWeights
from ._mtae_plan import MTAeTrainingPlan

__all__ = ["MILTrainingPlan", "MTAeTrainingPlan", "RestoreBestWeights"]
