"""User-facing model classes built on scvi-tools (:mod:`hcitools.model`).

The MIL models (MoMIL and its baselines) and the perturbation models (MTAe family) live here; each is
imported on first use so that ``import hcitools`` does not import torch.
"""

__all__: list[str] = []
