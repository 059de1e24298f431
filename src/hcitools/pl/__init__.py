"""Plots (:mod:`hcitools.pl`)."""

from ._assays import assay_performance
from ._mil import attention, training_history

__all__ = ["assay_performance", "attention", "training_history"]
