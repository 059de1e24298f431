"""Reusable layers (:mod:`hcitools.nn`): masked attention pooling and task-batched linear maps."""

from ._film import FiLM, GradientReversal
from ._mil import (
    MultiTaskAttentionHeads,
    MultiTaskDSMILHeads,
    TaskLinear,
    masked_mean,
    masked_softmax,
)

__all__ = [
    "FiLM",
    "GradientReversal",
    "MultiTaskAttentionHeads",
    "MultiTaskDSMILHeads",
    "TaskLinear",
    "masked_mean",
    "masked_softmax",
]
