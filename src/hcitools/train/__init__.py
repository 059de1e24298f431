"""Training plans, task-weighting strategies and callbacks (:mod:`hcitools.train`)."""

from ._mil_plan import MILTrainingPlan, RestoreBestWeights
from ._mtae_plan import MTAeTrainingPlan
from ._weighting import WEIGHTINGS, EqualWeighting, TaskWeighting

__all__ = [
    "WEIGHTINGS",
    "EqualWeighting",
    "MILTrainingPlan",
    "MTAeTrainingPlan",
    "RestoreBestWeights",
    "TaskWeighting",
]
