"""Bag data, sampler/collate and splitters (:mod:`hcitools.dataloaders`)."""

from ._bags import BagCollator, BagData, BagDataSplitter, bag_loader
from ._cells import TensorDataSplitter

__all__ = ["BagCollator", "BagData", "BagDataSplitter", "TensorDataSplitter", "bag_loader"]
