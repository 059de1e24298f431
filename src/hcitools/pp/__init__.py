"""Preprocessing of HCI screens (:mod:`hcitools.pp`)."""

from ._aggregate import aggregate
from ._bags import make_bag_key
from ._normalize import PlateNormalizer, normalize_plates
from ._split import FoldRotation, check_folds, fold_rotations, split_compounds

__all__ = [
    "FoldRotation",
    "PlateNormalizer",
    "aggregate",
    "check_folds",
    "fold_rotations",
    "make_bag_key",
    "normalize_plates",
    "split_compounds",
]
