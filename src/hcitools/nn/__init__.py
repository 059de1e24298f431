"""Reusable layers (:mod:`hcitools.nn`): masked attention pooling and task-batched linear maps."""

from ._mil import (
    MultiTaskAttentionHeads,
    MultiTaskDSMILHeads,
    TaskLinear,
    masked_mean,
    masked_softmax,
)

__all__ = ["MultiTaskAttentionHeads", "MultiTaskDSMILHeads", "TaskLinear", "masked_mean", "masked_softmax"]
