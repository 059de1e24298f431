"""Preprocessing of HCI screens (:mod:`hcitools.pp`)."""

from ._aggregate import aggregate
from ._bags import make_bag_key, sort_by_bag
from ._labels import assign_labels, labels_from_lists
from ._mudata import from_mudata, to_mudata
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
    "from_mudata",
    "labels_from_lists",
    "make_bag_key",
    "normalize_plates",
    "sort_by_bag",
    "split_compounds",
    "tile_images",
    "to_mudata",
]
