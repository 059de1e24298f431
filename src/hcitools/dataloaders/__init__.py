"""Bag data, sampler/collate and splitters (:mod:`hcitools.dataloaders`)."""

from ._bags import BagCollator, BagData, BagDataSplitter, SizeGroupedSampler, bag_loader
from ._cells import TensorDataSplitter

__all__ = [
    "BagCollator",
    "BagData",
    "BagDataSplitter",
    "SizeGroupedSampler",
    "TensorDataSplitter",
    "bag_loader",
]
