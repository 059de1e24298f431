"""The maths of hcitools' models (:mod:`hcitools.module`): scvi-tools modules, no AnnData inside."""

from ._mil import MeanMLPModule, MILModuleBase, MoMILModule, MultiLabelMILModule
from ._mtae import MTAeModule

__all__ = ["MILModuleBase", "MTAeModule", "MeanMLPModule", "MoMILModule", "MultiLabelMILModule"]
