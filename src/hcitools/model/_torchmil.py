"""Single-task MIL baselines of 002 Table 2 through torchmil (ABMIL, DSMIL, DTFD-MIL, TransMIL, mean / max)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from anndata import AnnData

from .._validate import check_choice, check_int
from ..module._torchmil import TORCHMIL_MODELS, TorchMILModule, import_torchmil
from ._mil_base import MILModelBase


class TorchMIL(MILModelBase):
    """One torchmil MIL model per assay, with hcitools' data, training and queries (the baselines of 002).

    Each assay gets its own model from `torchmil <https://github.com/Franblueee/torchmil>`_ (none of the
    models' maths is written here): ``"abmil"`` (gated attention, Ilse et al.), ``"dsmil"`` (Li et al.),
    ``"dtfd"`` (DTFD-MIL, Zhang et al.), ``"transmil"`` (Shao et al.), and the instance-level ``"mean"`` /
    ``"max"`` pooling of instance scores (torchmil's ``MeanPool`` / ``MaxPool``). Every model reads the instances
    through its own feature extractor (FC + ReLU + dropout, ``n_hidden`` wide). Bags arrive padded with masks;
    the models that torchmil does not mask (DSMIL's critical instance, DTFD-MIL, TransMIL) are run on groups of
    bags of one size, without padding, so a bag's prediction never depends on its batch. The loss of each assay
    is its model's torchmil loss (DSMIL and DTFD-MIL add their second stream) over the observed labels only.

    With several assays the models train side by side (one early stopping on their mean validation AUROC);
    ``ht.tl.momil(method="torchmil_<model>")`` trains one model per assay, each with its own early stopping
    (the single-task protocol of 002).

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    model
        ``"abmil"``, ``"dsmil"``, ``"dtfd"``, ``"transmil"``, ``"mean"`` or ``"max"``.
    n_hidden
        Width of each model's feature extractor (TransMIL: its embedding dimension, divisible by 4).
    n_attention
        Attention dimension (ABMIL, DSMIL, DTFD-MIL).
    dropout
        Dropout of the feature extractors.
    primary_assays
        Assays whose mean validation AUROC drives early stopping and model selection (default: all).
    loss_reduction
        ``"assay_mean"`` (default) or ``"label_sum"``.
    registry
        A saved registry instead of ``adata`` (used by ``load`` without data).

    Notes
    -----
    Needs the optional dependency torchmil: ``pip install 'hcitools[baselines]'``. DTFD-MIL draws its
    pseudo-bags with numpy's global generator; at evaluation the draws are fixed, so predictions repeat.
    """

    _module_cls = TorchMILModule

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        *,
        model: Literal["abmil", "dsmil", "dtfd", "transmil", "mean", "max"] = "abmil",
        n_hidden: int = 64,
        n_attention: int = 64,
        dropout: float = 0.25,
        primary_assays: Sequence[str] | None = None,
        loss_reduction: Literal["assay_mean", "label_sum"] = "assay_mean",
    ):
        super().__init__(adata, registry)
        check_choice(model, "model", sorted(TORCHMIL_MODELS))
        check_int(n_attention, "n_attention", min=1)
        if model == "transmil" and n_hidden % 4:
            raise ValueError(
                f"`n_hidden` must be divisible by TransMIL's 4 heads with model='transmil', got {n_hidden}."
            )
        import_torchmil()
        self._init_mil(
            primary_assays,
            {
                "model": model,
                "n_hidden": n_hidden,
                "n_attention": n_attention,
                "dropout": dropout,
                "loss_reduction": loss_reduction,
            },
        )
        self.init_params_ = self._get_init_params(locals())
