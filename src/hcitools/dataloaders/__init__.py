"""Bag data, sampler/collate and splitters (:mod:`hcitools.dataloaders`)."""

from ._backed import BackedRows
from ._bags import BagCollator, BagData, BagDataSplitter, SizeGroupedSampler, bag_loader
from ._cells import PairedDataSplitter

__all__ = [
    "BackedRows",
    "BagCollator",
    "BagData",
    "BagDataSplitter",
    "PairedDataSplitter",
    "SizeGroupedSampler",
    "bag_loader",
]
