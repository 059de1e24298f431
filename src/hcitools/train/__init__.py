"""Training plans and callbacks (:mod:`hcitools.train`)."""

from ._mil_plan import MILTrainingPlan, RestoreBestWeights

__all__ = ["MILTrainingPlan", "RestoreBestWeights"]
