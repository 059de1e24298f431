"""Plots (:mod:`hcitools.pl`)."""

from ._assays import assay_performance

__all__ = ["assay_performance"]
