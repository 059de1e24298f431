"""M4: multi-proxy multi-gate mixture of experts for multi-task MIL (Li et al., 002 §3.3; SPECS §7)."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from anndata import AnnData
from scvi.data.fields import MuDataWrapper

from .._constants import HCI_KEYS, MIL_KEYS, MODULE_KEYS
from .._utils import warn
from .._validate import check_choice, check_int
from ..module import M4Module
from ..module._m4 import EXPERTS, GATES, PROXY_KERNELS
from ._mil_base import MILModelBase
from .base._fields import GridField, grid_positions

#: Mean gate weight (over bags and proxy segments) above which one expert is said to take all of a task's gate.
COLLAPSE_THRESHOLD = 0.9


def _check_grid_keys(adata: AnnData, grid_keys, bag_key: str) -> list[str] | None:
    """``grid_keys`` as a list of ≥ 2 obs columns whose positions are valid (checked before anything changes)."""
    if grid_keys is None:
        return None
    if isinstance(grid_keys, str) or not all(isinstance(k, str) for k in grid_keys) or len(grid_keys) < 2:
        raise TypeError(
            "`grid_keys` must be a list of at least two obs columns, the last two the row and column of each crop "
            f"(e.g. ['fov', 'tile_row', 'tile_col']), got {grid_keys!r}."
        )
    grid_keys = list(grid_keys)
    if bag_key in adata.obs:  # else setup's own check names the missing bag column
        grid_positions(adata.obs, bag_key, grid_keys)
    return grid_keys


class MuDataGridField(MuDataWrapper(GridField)):
    """:class:`~hcitools.model.base.GridField` on the instance modality of a MuData (scvi-tools' wrapper)."""


class M4(MILModelBase):
    """M4: a mixture of multi-proxy attention-MIL experts with one (multi-proxy) gate and one tower per assay.

    Each of ``n_experts`` experts (MP-AMIL) projects every instance (FC + ReLU), lays the bag on a square grid,
    splits the channels into ``n_proxies`` proxies (identity, then depthwise-separable convolutions of kernel 3,
    5, 7), concatenates them and pools the bag by gated attention into one vector. Per assay, a gate reads the
    bag's mean raw instance (FC + ReLU) and gives one softmax over the experts per proxy segment
    (``gate="mp_gate"``) or one per assay (``"mmoe"``); the assay's tower (an MLP) reads the gate-weighted sum of
    the expert vectors, segment by segment. Training minimises the BCE of the observed (bag, assay) labels only,
    through the per-assay loss vector, so ``train(weighting=...)`` applies.

    The paper's ablations are switches: ``expert="amil", gate="mmoe"`` (MMoE + AMIL experts),
    ``expert="mp_amil", gate="mmoe"`` (MMoE + MP-AMIL experts) and the defaults (full M4).

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_experts
        Number of experts E (paper: 5).
    n_proxies
        Proxy segments P of every expert and gate, 1 … 4 (paper: 4: identity, k = 3, 5, 7).
    expert
        ``"mp_amil"`` (default) or ``"amil"`` (gated-attention experts without the convolution proxies).
    gate
        ``"mp_gate"`` (default; one softmax over experts per proxy segment and assay) or ``"mmoe"`` (one softmax
        per assay, the same for every segment).
    n_hidden
        Expert dimension d (divisible by ``n_proxies``).
    n_attention
        Attention dimension of each expert.
    n_gate_hidden
        Hidden dimension of each gate (divisible by ``n_proxies`` with ``"mp_gate"``).
    n_tower_hidden
        Hidden dimension of each tower.
    dropout
        Dropout on the experts' instance features and in the towers.
    primary_assays
        Assays whose mean validation AUROC drives early stopping and model selection (default: all).
    loss_reduction
        ``"assay_mean"`` (default) or ``"label_sum"`` (the paper's sum over labels); see
        :func:`hcitools.module._mil.masked_bce`.
    adversarial
        Gradient-reversal branch predicting the ``batch_key`` from the experts' bag vectors (see
        :class:`~hcitools.model.MoMIL`).
    registry
        A saved registry instead of ``adata`` (used by ``load`` without data).

    Notes
    -----
    Paper defaults (002 §4.1): 5 experts, 4 proxies, Adam at lr 1e-4, one bag per batch. Here bags are batched
    (zero-padded grids, masked attention: a bag's output does not depend on its batch) and ``train`` uses the
    shared MIL defaults (AdamW, lr 1e-3 with warm-up and cosine decay, early stopping). The paper does not give
    the layer widths; ``n_hidden=128``, ``n_attention=64``, ``n_gate_hidden=64``, ``n_tower_hidden=64`` are ours.

    Examples
    --------
    >>> import hcitools as ht
    >>> adata = ht.datasets.synthetic_hci(n_compounds=60, n_assays=3, n_primary=2, n_features=8, seed=0)
    >>> ht.model.M4.setup_anndata(adata, bag_key="well", labels_key="assays", group_key="compound")
    >>> model = ht.model.M4(adata, n_experts=3, n_hidden=16, n_attention=8, n_gate_hidden=8, n_tower_hidden=8)
    >>> model.train(max_epochs=2, warmup_epochs=0, enable_progress_bar=False)
    >>> model.get_gate_weights().shape[1:]
    (3, 4, 3)
    """

    _module_cls = M4Module

    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        *,
        bag_key: str = HCI_KEYS.WELL,
        labels_key: str = HCI_KEYS.ASSAYS,
        group_key: str | None = None,
        grid_keys: Sequence[str] | None = None,
        rep_key: str | None = None,
        layer: str | None = None,
        batch_key: str | None = None,
        aux_keys: str | Sequence[str] | None = None,
        **kwargs,
    ) -> None:
        """Validate and register an instance AnnData for M4.

        Parameters
        ----------
        adata
            One row per instance (crop or cell).
        bag_key, labels_key, group_key, rep_key, layer, batch_key, aux_keys
            As in :meth:`hcitools.model.MoMIL.setup_anndata`.
        grid_keys
            obs columns placing each crop on its bag's grid, the last two being its row and column within its
            field of view (integers ≥ 0, e.g. ``tile_row`` / ``tile_col`` of :func:`hcitools.pp.tile_images`),
            any before them naming the field of view (e.g. ``["fov", "tile_row", "tile_col"]``). A bag's fields
            of view are laid out side by side (sorted, ⌈√F⌉ per line) with 3 empty cells between them, so the
            convolutions never mix crops of different fields. ``None`` (default): crops in row order on a
            ⌈√N⌉ × ⌈√N⌉ grid (002's squaring, with empty cells instead of repeated crops). Registered as a field
            (positions in ``obsm["_scvi_grid"]``); query data need the same columns.
        """
        grid_keys = _check_grid_keys(adata, grid_keys, bag_key)
        super().setup_anndata(
            adata,
            bag_key=bag_key,
            labels_key=labels_key,
            rep_key=rep_key,
            layer=layer,
            batch_key=batch_key,
            group_key=group_key,
            aux_keys=aux_keys,
            extra_setup_args={"grid_keys": grid_keys},
            **kwargs,
        )

    @classmethod
    def setup_mudata(
        cls, mdata, *, grid_keys: Sequence[str] | None = None, instance_mod: str = "crops", **kwargs
    ):
        """Register a screen in the MuData layout for M4 (see :meth:`hcitools.model.MoMIL.setup_mudata`).

        Parameters
        ----------
        mdata, instance_mod, kwargs
            As in :meth:`hcitools.model.MoMIL.setup_mudata` (``bag_key``, ``label_mod``, ``group_key``, ...).
        grid_keys
            As in :meth:`setup_anndata`, obs columns of the instance modality.
        """
        if hasattr(mdata, "mod") and isinstance(instance_mod, str) and instance_mod in mdata.mod:
            grid_keys = _check_grid_keys(
                mdata.mod[instance_mod], grid_keys, kwargs.get("bag_key", HCI_KEYS.WELL)
            )
        super().setup_mudata(
            mdata, instance_mod=instance_mod, extra_setup_args={"grid_keys": grid_keys}, **kwargs
        )

    @classmethod
    def _extra_fields(cls, adata: AnnData, **setup_args) -> list:
        grid_keys = setup_args.get("grid_keys")
        if grid_keys is None:
            return []
        instance_mod = setup_args.get("instance_mod")
        if instance_mod is not None:  # MuData: the positions of the instance modality
            return [
                MuDataGridField(
                    MIL_KEYS.GRID_REGISTRY,
                    list(grid_keys),
                    setup_args["bag_key"],
                    mod_key=instance_mod,
                    mod_required=True,
                )
            ]
        return [GridField(MIL_KEYS.GRID_REGISTRY, list(grid_keys), setup_args["bag_key"])]

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        *,
        n_experts: int = 5,
        n_proxies: int = 4,
        expert: Literal["mp_amil", "amil"] = "mp_amil",
        gate: Literal["mp_gate", "mmoe"] = "mp_gate",
        n_hidden: int = 128,
        n_attention: int = 64,
        n_gate_hidden: int = 64,
        n_tower_hidden: int = 64,
        dropout: float = 0.25,
        primary_assays: Sequence[str] | None = None,
        loss_reduction: Literal["assay_mean", "label_sum"] = "assay_mean",
        adversarial: bool = False,
    ):
        super().__init__(adata, registry)
        check_int(n_experts, "n_experts", min=1)
        check_int(n_proxies, "n_proxies", min=1, max=len(PROXY_KERNELS))
        check_choice(expert, "expert", EXPERTS)
        check_choice(gate, "gate", GATES)
        for name, value in (
            ("n_hidden", n_hidden),
            ("n_attention", n_attention),
            ("n_gate_hidden", n_gate_hidden),
            ("n_tower_hidden", n_tower_hidden),
        ):
            check_int(value, name, min=1)
        if n_hidden % n_proxies:
            raise ValueError(
                f"`n_hidden` ({n_hidden}) must be divisible by `n_proxies` ({n_proxies}): each proxy takes "
                "an equal share of the expert's channels."
            )
        if gate == "mp_gate" and n_gate_hidden % n_proxies:
            raise ValueError(
                f"`n_gate_hidden` ({n_gate_hidden}) must be divisible by `n_proxies` ({n_proxies}) with "
                "gate='mp_gate' (one segment per proxy)."
            )
        self._init_mil(
            primary_assays,
            {
                "n_experts": n_experts,
                "n_proxies": n_proxies,
                "expert": expert,
                "gate": gate,
                "n_hidden": n_hidden,
                "n_attention": n_attention,
                "n_gate_hidden": n_gate_hidden,
                "n_tower_hidden": n_tower_hidden,
                "dropout": dropout,
                "loss_reduction": loss_reduction,
            },
            adversarial=adversarial,
        )
        self.init_params_ = self._get_init_params(locals())

    @property
    def n_experts(self) -> int:
        """Number of experts E."""
        return self.module.n_experts

    def train(self, *args, **kwargs) -> None:
        """Train as :meth:`hcitools.model.MoMIL.train` (same arguments), then warn when the experts collapsed.

        The warning is issued when, averaged over the training bags and proxy segments, one expert takes more
        than 90 % of the gate of every assay: the mixture has then become a single expert.
        """
        super().train(*args, **kwargs)
        mean = self.get_gate_weights().mean(axis=(0, 2))  # T × E
        collapsed = np.flatnonzero((mean > COLLAPSE_THRESHOLD).all(axis=0))
        if len(collapsed):
            warn(
                f"Expert collapse: expert {int(collapsed[0])} takes more than {COLLAPSE_THRESHOLD:.0%} of the "
                f"gate of every assay (mean gate weights {np.round(mean[:, collapsed[0]], 3).tolist()}); the "
                "mixture acts as one expert. Try fewer experts, a lower `lr`, or more dropout."
            )

    train.__signature__ = inspect.signature(MILModelBase.train)

    def get_gate_weights(self, adata: AnnData | None = None, *, batch_size: int = 256) -> np.ndarray:
        """Gate weight of every expert, per bag, assay and proxy segment.

        Parameters
        ----------
        adata
            Instances (same representation as at setup); default the training AnnData. Labels are not needed.
        batch_size
            Bags per forward pass.

        Returns
        -------
        ndarray n_bags × n_assays × n_proxies × n_experts (bags in the order of :meth:`predict`, assays as
        ``model.assays``), summing to 1 over experts. With ``gate="mmoe"`` every proxy segment has the same
        weights. Nothing is written into ``adata``.
        """
        return self.get_module_outputs(adata, keys=[MODULE_KEYS.GATE_WEIGHTS], batch_size=batch_size)[
            MODULE_KEYS.GATE_WEIGHTS
        ]

    def get_attention(
        self,
        adata: AnnData | None = None,
        *,
        expert: int | Literal["all"] | None = None,
        batch_size: int = 256,
        out: Any = None,
    ) -> np.ndarray:
        """Attention of every instance, per assay (gate-weighted) or per expert.

        Parameters
        ----------
        adata
            Instances (same representation as at setup); default the training AnnData. Labels are not needed.
        expert
            ``None`` (default): per assay, the experts' attention weighted by the assay's gate (averaged over
            proxy segments), n_obs × n_assays; ``"all"``: each expert's own attention, n_obs × n_experts; an
            integer e: expert e's attention, n_obs.
        batch_size
            Bags per forward pass.
        out
            With ``expert=None``: an n_obs × n_assays array (h5py dataset, memmap) to write the attention into
            batch by batch, as in :meth:`hcitools.model.MoMIL.get_attention`; it is returned.

        Returns
        -------
        ndarray as above, rows following ``adata.obs_names``; within each bag, each column sums to 1. Nothing is
        written into ``adata``.
        """
        if expert is None:
            return super().get_attention(adata, batch_size=batch_size, out=out)
        if out is not None:
            raise ValueError(
                f"`out` is supported with expert=None (per-assay attention) only, got expert={expert!r}; "
                "per-expert attention is returned in memory."
            )
        if isinstance(expert, str) and expert != "all":
            raise ValueError(f"`expert` must be None, 'all' or an expert index, got {expert!r}.")
        if expert != "all":
            check_int(expert, "expert", min=0, max=self.n_experts - 1)
        att = self.get_module_outputs(adata, keys=[MODULE_KEYS.EXPERT_ATTENTION], batch_size=batch_size)[
            MODULE_KEYS.EXPERT_ATTENTION
        ]
        return att if expert == "all" else att[:, int(expert)]
