"""Bag data, sampler/collate and the bag-level splitter (:mod:`hcitools.dataloaders`)."""

from ._bags import BagCollator, BagData, BagDataSplitter, bag_loader

__all__ = ["BagCollator", "BagData", "BagDataSplitter", "bag_loader"]
