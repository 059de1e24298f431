"""Baselines with the MIL API: mean-pooled MLP and multi-label attention MIL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from anndata import AnnData

from ..module import MeanMLPModule, MultiLabelMILModule
from ._mil_base import MILModelBase


class MeanMLP(MILModelBase):
    """Baseline: mean-pool each bag's instances, then an MLP with one output per assay (one or many assays).

    Same API as :class:`~hcitools.model.MoMIL`; its "attention" is uniform over each bag. It has no instance
    projector: ``get_latent_representation(level="instance")`` returns the input instances and ``level="bag"``
    their mean per bag; ``level="assay"`` holds its hidden layer (the same for every assay).

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_hidden
        Hidden layer size.
    dropout
        Dropout rate.
    primary_assays
        Assays used for model selection (default: all).
    loss_reduction
        ``"assay_mean"`` (default; every assay counts the same) or ``"label_sum"`` (sum over every observed
        label); see :func:`hcitools.module._mil.masked_bce`.
    adversarial
        Gradient-reversal branch predicting the ``batch_key`` (plate) from the shared bag representation (see
        :class:`~hcitools.model.MoMIL`). Registered ``aux_keys`` add the auxiliary regressions.
    registry
        A saved registry instead of ``adata`` (used by ``load`` without data).
    """

    _module_cls = MeanMLPModule

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        *,
        n_hidden: int = 128,
        dropout: float = 0.5,
        primary_assays: Sequence[str] | None = None,
        loss_reduction: Literal["assay_mean", "label_sum"] = "assay_mean",
        adversarial: bool = False,
    ):
        super().__init__(adata, registry)
        self._init_mil(
            primary_assays,
            {"n_hidden": n_hidden, "dropout": dropout, "loss_reduction": loss_reduction},
            adversarial=adversarial,
        )
        self.init_params_ = self._get_init_params(locals())


class MultiLabelMIL(MILModelBase):
    """Baseline: one gated-attention MIL network with T outputs and a single objective.

    Unlike :class:`~hcitools.model.MoMIL`, all assays share one attention: the attention returned is the same
    for every assay.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_hidden
        Shared projector size.
    n_head_hidden
        Attention head size.
    dropout
        Dropout rate.
    primary_assays
        Assays used for model selection (default: all).
    loss_reduction
        ``"assay_mean"`` (default; every assay counts the same) or ``"label_sum"`` (sum over every observed
        label); see :func:`hcitools.module._mil.masked_bce`.
    adversarial
        Gradient-reversal branch predicting the ``batch_key`` (plate) from the shared bag representation (see
        :class:`~hcitools.model.MoMIL`). Registered ``aux_keys`` add the auxiliary regressions.
    registry
        A saved registry instead of ``adata`` (used by ``load`` without data).
    """

    _module_cls = MultiLabelMILModule

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        *,
        n_hidden: int = 128,
        n_head_hidden: int = 64,
        dropout: float = 0.5,
        primary_assays: Sequence[str] | None = None,
        loss_reduction: Literal["assay_mean", "label_sum"] = "assay_mean",
        adversarial: bool = False,
    ):
        super().__init__(adata, registry)
        self._init_mil(
            primary_assays,
            {
                "n_hidden": n_hidden,
                "n_head_hidden": n_head_hidden,
                "dropout": dropout,
                "loss_reduction": loss_reduction,
            },
            adversarial=adversarial,
        )
        self.init_params_ = self._get_init_params(locals())
