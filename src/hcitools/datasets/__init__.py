"""Synthetic generators and loaders of public data (:mod:`hcitools.datasets`)."""

from ._jump import jump_target2
from ._loaders import data_path, deepprofiler_cells, kang2018, lincs_plate, mil_dataset
from ._synthetic_hci import synthetic_hci
from ._synthetic_perturbation import synthetic_perturbation

__all__ = [
    "data_path",
    "deepprofiler_cells",
    "jump_target2",
    "kang2018",
    "lincs_plate",
    "mil_dataset",
    "synthetic_hci",
    "synthetic_perturbation",
]
