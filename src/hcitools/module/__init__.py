"""The maths of hcitools' models (:mod:`hcitools.module`): scvi-tools modules, no AnnData inside."""

from ._mil import MeanMLPModule, MILModuleBase, MoMILModule, MultiLabelMILModule

__all__ = ["MILModuleBase", "MeanMLPModule", "MoMILModule", "MultiLabelMILModule"]
