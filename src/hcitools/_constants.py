"""Names of obs columns, obsm keys and uns keys used across hcitools (one place, one name)."""

from __future__ import annotations

from typing import NamedTuple


class _HCIKeys(NamedTuple):
    PLATE: str = "plate"
    WELL: str = "well"
    WELL_POSITION: str = "well_position"
    COMPOUND: str = "compound"
    FOV: str = "fov"
    SCAFFOLD: str = "scaffold"
    CONTROL_VALUE: str = "DMSO"
    ASSAYS: str = "assays"
    FOLD: str = "fold"


class _PerturbationKeys(NamedTuple):
    CONDITION: str = "condition"
    CELL_TYPE: str = "cell_type"
    CONTROL_VALUE: str = "control"
    DOSE: str = "dose"


class _DataEnv(NamedTuple):
    VARIABLE: str = "HCITOOLS_DATA"


HCI_KEYS = _HCIKeys()
PERTURBATION_KEYS = _PerturbationKeys()
DATA_ENV = _DataEnv()


class _MILKeys(NamedTuple):
    X: str = "X"
    MASK: str = "mask"
    LABELS: str = "labels"
    BAG_INDEX: str = "bag_index"
    LABELS_REGISTRY: str = "assays"


MIL_KEYS = _MILKeys()
