"""Preprocessing of HCI screens (:mod:`hcitools.pp`)."""

from ._aggregate import aggregate
from ._bags import make_bag_key
from ._labels import assign_labels, labels_from_lists
from ._normalize import PlateNormalizer, normalize_plates
from ._split import FoldRotation, check_folds, fold_rotations, split_compounds
from ._tiles import Tiles, embed_tiles, tile_images

__all__ = [
    "FoldRotation",
    "PlateNormalizer",
    "Tiles",
    "aggregate",
    "assign_labels",
    "check_folds",
    "embed_tiles",
    "fold_rotations",
    "labels_from_lists",
    "make_bag_key",
    "normalize_plates",
    "split_compounds",
    "tile_images",
]
