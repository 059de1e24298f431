"""Shared pieces of hcitools' model classes: persistence and registered fields."""

from ._fields import BagIdField, LabelsField
from ._mudata import LabelIndexField, MuDataBagIdField, MuDataLabelsField
from ._persistence import FORMAT_VERSION, PersistenceMixin

__all__ = [
    "FORMAT_VERSION",
    "BagIdField",
    "LabelIndexField",
    "LabelsField",
    "MuDataBagIdField",
    "MuDataLabelsField",
    "PersistenceMixin",
]
