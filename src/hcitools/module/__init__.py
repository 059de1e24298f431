"""The maths of hcitools' models (:mod:`hcitools.module`): scvi-tools modules, no AnnData inside."""

from ._m4 import M4Module
from ._mil import MeanMLPModule, MILModuleBase, MoMILModule, MultiLabelMILModule
from ._mtae import MTAeModule
from ._torchmil import TorchMILModule

__all__ = [
    "M4Module",
    "MILModuleBase",
    "MTAeModule",
    "MeanMLPModule",
    "MoMILModule",
    "MultiLabelMILModule",
    "TorchMILModule",
]
