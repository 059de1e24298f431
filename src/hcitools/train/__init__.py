"""Training plans, task-weighting strategies and callbacks (:mod:`hcitools.train`)."""

from ._mil_plan import MILTrainingPlan, RestoreBestWeights, adversarial_schedule
from ._mtae_plan import MTAeTrainingPlan
from ._pseudo import PseudoLabels
from ._weighting import (
    WEIGHTINGS,
    AMTLGeometricWeighting,
    AMTLWeighting,
    DWAWeighting,
    EqualWeighting,
    TaskWeighting,
    UncertaintyWeighting,
    amtl_weights,
    make_weighting,
)

__all__ = [
    "WEIGHTINGS",
    "AMTLGeometricWeighting",
    "AMTLWeighting",
    "DWAWeighting",
    "EqualWeighting",
    "MILTrainingPlan",
    "MTAeTrainingPlan",
    "PseudoLabels",
    "RestoreBestWeights",
    "TaskWeighting",
    "UncertaintyWeighting",
    "adversarial_schedule",
    "amtl_weights",
    "make_weighting",
]
