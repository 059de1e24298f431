"""MoMIL: multi-task MIL with one attention head per assay (Nguyen et al., MICCAI; SPECS §3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pandas as pd
from anndata import AnnData

from .._validate import check_int
from ..module import MoMILModule
from ._mil_base import MILModelBase


class MoMIL(MILModelBase):
    """Multi-task multiple-instance learning: a shared projector, then one MIL head per assay.

    Every instance (crop or cell) goes through a shared projector F_φ (D → ``n_hidden``, ReLU, dropout); each assay
    has its own head (projector γ_t, attention β_t, classifier α_t) pooling the bag (well) into a probability. The
    T heads run as one batched tensor operation. Training minimises the binary cross-entropy of the observed
    (bag, assay) labels only, summed over assays. With one assay, MoMIL is the single-task model (STL).

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    head
        ``"dsmil"`` (default, the paper's: each assay's max-instance and bag streams are trained with a BCE each,
        and predict with their mean), ``"gated_abmil"`` or ``"abmil"``. Measured with
        ``benchmarks/mil_heads.py --seeds 0 1 2 --n-compounds 300 --real-seeds 0`` (mean AUROC, 2-core CPU):
        simulated screens 0.836 (DSMIL) vs 0.843 (gated ABMIL), corel_dogs 0.877 vs 0.869, protein 0.620 vs
        0.505; gated ABMIL is not better by more than 0.01 (−0.038 overall), so the default is DSMIL.
    n_hidden
        Dimension of the shared projector.
    n_head_hidden
        Dimension of each assay head.
    dropout
        Dropout rate, after the shared projector and on the projected instances of each head.
    primary_assays
        Assays whose mean validation AUROC drives early stopping and model selection (default: all).
    loss_reduction
        How a batch's BCE is reduced per assay: ``"assay_mean"`` (default; mean over the assay's observed labels,
        so every assay counts the same whatever its number of labels) or ``"label_sum"`` (the paper's objective:
        sum over every observed label, divided by the bags of the batch); see
        :func:`hcitools.module._mil.masked_bce`.
    adversarial
        Add a gradient-reversal branch (003 §3.2; Ganin & Lempitsky): a linear classifier of the ``batch_key``
        (plate) of each bag from the shared bag representation (the mean projected instance), whose reversed
        gradient pushes the projector to forget the plate. Needs ``batch_key`` at setup. Its weight is
        ``train(adversarial_weight=...)``, outside the task weighting; the classifier is fitted by its own
        optimiser, ``train(n_discriminator_steps=5, discriminator_lr=None)`` (10 × ``lr``). Default False.
    discriminator_hidden
        The adversarial branch's domain classifier: None (default) a linear one (003's linear extra branch); an
        int, an MLP with one ReLU hidden layer of that width.
    task_affinity
        Task-prior loss (000 §3.3.5): a symmetric T × T DataFrame, rows and columns = assay names (e.g. STRING
        combined scores of the assays' targets; reindexed to the model's assays, extra names ignored). With the
        per-task bag embeddings e (T × h) of a bag and E = e eᵀ, the loss is
        λ · (1/T²) Σ_ij v_i (c_ij − E_ij)², averaged over bags, added outside the task weighting and logged as
        ``prior_loss``. Saved as ``{"names": [...], "values": [[...]]}`` (also accepted here).
    prior_weight
        λ of the prior loss (the thesis tries 0.001 … 5); 0 (default) turns it off.
    key_assays
        Assays with v_i = 0.9 in the prior loss (others 0.1).
    registry
        A saved registry instead of ``adata`` (used by ``load`` without data).

    Examples
    --------
    >>> import hcitools as ht
    >>> adata = ht.datasets.synthetic_hci(n_compounds=60, n_assays=3, n_primary=2, n_features=8, seed=0)
    >>> ht.model.MoMIL.setup_anndata(adata, bag_key="well", labels_key="assays", group_key="compound")
    >>> model = ht.model.MoMIL(adata, n_hidden=16, n_head_hidden=8)
    >>> model.train(max_epochs=2, warmup_epochs=0, enable_progress_bar=False)
    >>> model.predict(level="compound").shape[1]
    3
    """

    _module_cls = MoMILModule

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        *,
        head: Literal["dsmil", "gated_abmil", "abmil"] = "dsmil",
        n_hidden: int = 128,
        n_head_hidden: int = 64,
        dropout: float = 0.5,
        primary_assays: Sequence[str] | None = None,
        loss_reduction: Literal["assay_mean", "label_sum"] = "assay_mean",
        adversarial: bool = False,
        task_affinity: pd.DataFrame | dict | None = None,
        prior_weight: float = 0.0,
        key_assays: Sequence[str] | None = None,
        discriminator_hidden: int | None = None,
    ):
        super().__init__(adata, registry)
        check_int(discriminator_hidden, "discriminator_hidden", min=1, allow_none=True)
        if discriminator_hidden is not None and not adversarial:
            raise ValueError(
                "`discriminator_hidden` shapes the adversarial branch: pass `adversarial=True` too."
            )
        task_affinity = self._init_mil(
            primary_assays,
            {
                "head": head,
                "n_hidden": n_hidden,
                "n_head_hidden": n_head_hidden,
                "dropout": dropout,
                "loss_reduction": loss_reduction,
                **(
                    {}
                    if discriminator_hidden is None
                    else {"discriminator_hidden": int(discriminator_hidden)}
                ),
            },
            adversarial=adversarial,
            prior={"task_affinity": task_affinity, "prior_weight": prior_weight, "key_assays": key_assays},
        )
        if key_assays is not None:  # saved as a list of names
            key_assays = [key_assays] if isinstance(key_assays, str) else [str(a) for a in key_assays]
        self.init_params_ = self._get_init_params(locals())
