"""Reusable layers (:mod:`hcitools.nn`): masked attention pooling and task-batched linear maps."""

from ._film import FiLM, GradientReversal
from ._mil import (
    Dropout,
    MultiTaskAttentionHeads,
    MultiTaskDSMILHeads,
    TaskLinear,
    masked_mean,
    masked_softmax,
    task_linear,
)

__all__ = [
    "Dropout",
    "FiLM",
    "GradientReversal",
    "MultiTaskAttentionHeads",
    "MultiTaskDSMILHeads",
    "TaskLinear",
    "masked_mean",
    "masked_softmax",
    "task_linear",
]
