"""MTAe: FiLM multi-task perturbation autoencoders and their adversarial, OT and VAE variants (paper 004)."""

from __future__ import annotations

import inspect
import logging
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField, LayerField
from scvi.dataloaders import DataSplitter
from scvi.model.base import BaseModelClass
from scvi.train import TrainRunner

from .._constants import PERTURBATION_KEYS, PERTURBATION_REGISTRY_KEYS
from .._utils import progress_bar_default, quiet_loggers, third_party_quiet, to_dense, warn
from .._validate import _preview, check_anndata, check_obs_keys, get_rep, validate_perturbation
from ..dataloaders import PairedDataSplitter
from ..module import MTAeModule
from ..module._mtae import X_HAT_KEY, Z_KEY
from ..tl._perturbation import _is_int, check_int_arg, check_real_arg, check_seed_arg
from ..train import MTAeTrainingPlan
from ..train._run import history_file_dir, run_training, seed_and_reset
from .base import FORMAT_VERSION, PersistenceMixin

logger = logging.getLogger("hcitools")

#: variant → (variational, adversary, optimal transport: None / "ot" / "plus_ot")
VARIANTS: dict[str, tuple[bool, str | None, str | None]] = {
    "MTAe": (False, None, None),
    "MTAeAdv": (False, "condition", None),
    "MTAeAdvG": (False, "gaussian", None),
    "MTAeOT": (False, None, "ot"),
    "MTAePlusOT": (False, None, "plus_ot"),
    "MTVae": (True, None, None),
    "MTVaeOT": (True, None, "ot"),
    "MTVaePlusOT": (True, None, "plus_ot"),
}
_MAPPING = CategoricalObsField.CATEGORICAL_MAPPING_KEY
_PRIMITIVE_SCALARS = (str, int, float, bool, np.integer, np.floating, np.bool_)


# ------------------------------------------------------------------------------------------------- fields
class _ConditionField(CategoricalObsField):
    """The condition (``obs[condition_key]``), coded with the control first (code 0), then the other conditions
    present, in the column's category order (sorted values for a non-categorical column).

    On query data (``load(dir, adata=query)`` or a query method) the codes are assigned **by name** from the
    training mapping (scvi-tools' transfer), whatever the query's own category order; a condition the model was
    not trained on raises, naming it and the known conditions. Query data may hold any subset of the known
    conditions (e.g. control cells only).
    """

    def __init__(self, registry_key: str, attr_key: str, control_value: Any):
        super().__init__(registry_key, attr_key)
        self.control_value = control_value

    def register_field(self, adata: AnnData) -> dict:
        state = super().register_field(adata)  # validates and writes scvi-tools' codes; re-coded below
        column = adata.obs[self._original_attr_key]
        present = set(pd.unique(column))
        order = [self.control_value]
        order += [
            c for c in column.astype("category").cat.categories if c in present and c != self.control_value
        ]
        adata.obs[self.attr_key] = pd.Categorical(column, categories=order).codes.astype(np.int64)
        state[_MAPPING] = pd.Index(order).to_numpy()
        return state

    def transfer_field(self, state_registry: dict, adata_target: AnnData, **kwargs) -> dict:
        key = self._original_attr_key
        check_obs_keys(adata_target, {"condition_key": key})
        known = list(state_registry[_MAPPING])
        unknown = [v for v in pd.unique(adata_target.obs[key]) if not any(v == k for k in known)]
        if unknown:
            raise ValueError(
                f"adata.obs[{key!r}] holds conditions the model was not trained on: {_preview(unknown)}. The "
                f"model knows {known}; drop those cells or map them to known conditions."
            )
        kwargs.pop("extend_categories", None)
        return super().transfer_field(state_registry, adata_target, extend_categories=False, **kwargs)


class _CellTypeField(CategoricalObsField):
    """The cell type (``obs[cell_type_key]``): used to pair cells for optimal transport and to stratify the
    training/validation split, never by the network. Query data may hold cell types unseen in training (e.g. the
    held-out cell type): the mapping is extended by name."""

    def transfer_field(self, state_registry: dict, adata_target: AnnData, **kwargs) -> dict:
        check_obs_keys(adata_target, {"cell_type_key": self._original_attr_key})
        kwargs.pop("extend_categories", None)
        return super().transfer_field(state_registry, adata_target, extend_categories=True, **kwargs)


# ------------------------------------------------------------------------------------------------- checks
def _check_int(name: str, value: Any, minimum: int) -> None:
    check_int_arg(name, value, minimum)


def _check_float(
    name: str, value: Any, low: float, high: float = math.inf, *, low_open: bool = False
) -> None:
    """A finite number in [low, high) (or (low, high) with ``low_open``)."""
    check_real_arg(name, value, low, high, low_open=low_open, high_open=high != math.inf)


def _as_widths(n_hidden: Any) -> tuple[int, ...]:
    """``n_hidden`` as a tuple of positive ints; an int ``w`` means one hidden layer ``(w,)``."""
    if _is_int(n_hidden):
        n_hidden = (n_hidden,)
    if isinstance(n_hidden, str) or not isinstance(n_hidden, Sequence):
        raise TypeError(
            f"`n_hidden` must be an int or a sequence of ints (hidden widths, e.g. (512, 256)), got {n_hidden!r}."
        )
    if not all(_is_int(w) for w in n_hidden):
        raise TypeError(
            f"`n_hidden` must hold int widths, got {n_hidden!r}; pass e.g. `n_hidden=(512, 256)` or `n_hidden=64`."
        )
    if len(n_hidden) == 0 or not all(w >= 1 for w in n_hidden):
        raise ValueError(f"`n_hidden` must hold at least one positive int width, got {n_hidden!r}.")
    return tuple(int(w) for w in n_hidden)


def _check_query_data(adata: AnnData, condition_key: str, cell_type_key: str, layer: str | None) -> None:
    """Checks of query data (``load(dir, adata=query)``): like training data, but any known conditions (e.g.
    control cells only) are allowed; the conditions are checked against the model's when they are transferred."""
    check_anndata(adata)
    check_obs_keys(adata, {"condition_key": condition_key, "cell_type_key": cell_type_key})
    X = get_rep(adata, layer=layer)
    data = X.data if hasattr(X, "tocsr") else np.asarray(X)
    if data.size and data.min() < 0:
        raise ValueError(
            "Expression values are negative: MTAe expects log-normalised expression (e.g. "
            "`sc.pp.normalize_total(adata); sc.pp.log1p(adata)`), as in training."
        )


def _check_trainer_args(accelerator: Any, devices: Any, trainer_kwargs: dict) -> None:
    """Lightning's options, checked before training changes anything (Lightning itself would raise only after
    the model was re-seeded and re-initialised)."""
    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.accelerators.accelerator import Accelerator

    if isinstance(accelerator, str):
        names = ["auto", "gpu", *AcceleratorRegistry.available_accelerators()]
        if accelerator not in names:
            raise ValueError(
                f"`accelerator` must be one of {names} (or a Lightning Accelerator), got {accelerator!r}."
            )
    elif not isinstance(accelerator, Accelerator):
        raise TypeError(
            f"`accelerator` must be a str such as 'auto' or 'cpu', got {type(accelerator).__name__}."
        )
    if isinstance(devices, bool) or not isinstance(devices, int | str | list | tuple):
        raise TypeError(f"`devices` must be 'auto', an int or a list of device ids, got {devices!r}.")
    if (_is_int(devices) and devices < -1) or devices == 0:
        raise ValueError(f"`devices` must be 'auto', -1 (all) or an int ≥ 1, got {devices!r}.")
    ours = {"max_epochs", "enable_progress_bar", "accelerator", "devices"}
    clash = sorted(set(trainer_kwargs) & ours)
    if clash:
        raise TypeError(f"Pass {clash} as `train`'s own arguments, not through trainer_kwargs.")
    import lightning.pytorch as pl
    from scvi.train import Trainer

    known = set(inspect.signature(pl.Trainer.__init__).parameters) | set(
        inspect.signature(Trainer.__init__).parameters
    )
    known |= {"log_save_dir"}
    unknown = sorted(set(trainer_kwargs) - known)
    if unknown:
        raise TypeError(
            f"`train` got unknown arguments {unknown}: they are neither `train`'s nor Lightning Trainer options."
        )


def _warn_small_groups(strata_names: pd.Series) -> None:
    """One warning naming the (cell type, condition) groups with fewer than 10 cells."""
    counts = strata_names.value_counts()
    small = counts[counts < 10]
    if len(small):
        shown = ", ".join(f"{k} ({n})" for k, n in small.sort_values().head(8).items())
        warn(
            f"MTAe.train: {len(small)} (cell type, condition) groups have fewer than 10 cells: {shown}"
            f"{', …' if len(small) > 8 else ''}. So few cells give the model little to learn that condition from "
            "and no reliable validation; merge or drop those groups, or read their predictions with care."
        )


def _split_cells(strata: np.ndarray, validation_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation rows: ``round(validation_size × n)`` random cells of each stratum (cell type ×
    condition) go to validation. Cells are split before any pairing, so no cell is on both sides."""
    rng = np.random.default_rng(seed)
    val = []
    for s in np.unique(strata):
        rows = np.flatnonzero(strata == s)
        val.append(rng.permutation(rows)[: round(validation_size * len(rows))])
    val_idx = np.sort(np.concatenate(val)) if val else np.array([], dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(strata)), val_idx)
    return train_idx.astype(np.int64), val_idx.astype(np.int64)


def _uses_ddp(strategy: Any) -> bool:
    """Whether Lightning's ``strategy`` is data-parallel, so that each process loads its share of the batches
    (the rule scvi-tools' own ``train`` applies)."""
    from lightning.pytorch.strategies import DDPStrategy

    return ("ddp" in strategy) if isinstance(strategy, str) else isinstance(strategy, DDPStrategy)


def _plain(value: Any) -> Any:
    """A Python scalar for a numpy scalar (saved attributes are primitive)."""
    return value.item() if isinstance(value, np.generic) else value


# ------------------------------------------------------------------------------------------------- OT pairs
def ot_pairs(
    X_basis: np.ndarray,
    *,
    groups: np.ndarray,
    conditions: np.ndarray,
    control_value: Any,
    method: str = "auto",
    sampling: str = "argmax",
    reg: float = 0.05,
    max_exact: int = 4_000_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Pair every control cell with a perturbed cell of its group and condition by optimal transport (POT).

    Within each (group, perturbed condition), the cost is the squared Euclidean distance in ``X_basis`` (e.g.
    a fixed PCA basis); the plan between uniform weights is exact (``ot.emd``) or entropic (``ot.sinkhorn`` with
    ``reg`` × the median cost, used with ``method="auto"`` when n_ctrl × n_pert exceeds ``max_exact``). Each
    control cell takes the perturbed cell with its largest plan mass (``sampling="argmax"``) or one drawn from its
    row of the plan (``"sample"``). Pairs never cross groups or conditions.

    Parameters
    ----------
    X_basis
        Cells × dimensions in which costs are computed.
    groups
        Group (cell type) of each cell.
    conditions
        Condition of each cell.
    control_value
        Condition of control cells.
    method
        ``"auto"``, ``"emd"`` or ``"sinkhorn"``.
    sampling
        ``"argmax"`` or ``"sample"``.
    reg
        Entropic regularisation relative to the median cost (sinkhorn), > 0.
    max_exact
        Largest n_ctrl × n_pert solved exactly with ``method="auto"``.
    seed
        Seed of the sampling.

    Returns
    -------
    (control row indices, partner row indices, per-group table with ``group``, ``condition``, ``n_control``,
    ``n_perturbed``, ``method`` and the transport ``cost`` ⟨plan, cost⟩).
    """
    from .._utils import import_optional

    if method not in ("auto", "emd", "sinkhorn"):
        raise ValueError(
            f"`method` (MTAe's `ot_method`) must be 'auto', 'emd' or 'sinkhorn', got {method!r}."
        )
    if sampling not in ("argmax", "sample"):
        raise ValueError(f"`sampling` (MTAe's `ot_sampling`) must be 'argmax' or 'sample', got {sampling!r}.")
    _check_float("reg", reg, 0.0, low_open=True)
    ot = import_optional("ot", "optimal-transport pairing")
    X_basis, groups, conditions = (
        np.asarray(X_basis, dtype=np.float64),
        np.asarray(groups),
        np.asarray(conditions),
    )
    if not len(X_basis) == len(groups) == len(conditions):
        raise ValueError(
            f"`X_basis`, `groups` and `conditions` must have one row per cell, got {len(X_basis)}, {len(groups)} "
            f"and {len(conditions)}."
        )
    rng = np.random.default_rng(seed)
    src, dst, report = [], [], []
    for g in pd.unique(groups):
        ctrl = np.flatnonzero((groups == g) & (conditions == control_value))
        if len(ctrl) == 0:
            continue
        for cond in pd.unique(conditions[(groups == g) & (conditions != control_value)]):
            pert = np.flatnonzero((groups == g) & (conditions == cond))
            M = ot.dist(X_basis[ctrl], X_basis[pert])  # squared Euclidean
            a, b = ot.unif(len(ctrl)), ot.unif(len(pert))
            use = (
                method if method != "auto" else ("emd" if len(ctrl) * len(pert) <= max_exact else "sinkhorn")
            )
            if use == "emd":
                plan = ot.emd(a, b, M, numItermax=max(100_000, 50 * len(ctrl) * len(pert)))
            else:
                # log-domain iterations do not underflow for small regularisation; a zero median cost (identical
                # cells) falls back to the mean so that the regularisation stays > 0
                scale = float(np.median(M)) or float(M.mean()) or 1.0
                plan = ot.sinkhorn(a, b, M, reg * scale, method="sinkhorn_log")
            plan = np.asarray(plan)
            if not np.isfinite(plan).all() or plan.sum() <= 0:
                raise ValueError(
                    f"The {use} transport plan between the control and {cond!r} cells of group {g!r} is not finite "
                    f"(or empty); costs range {M.min():.3g}–{M.max():.3g}. Use `ot_method='emd'` or a larger `ot_reg`."
                )
            if sampling == "argmax":
                partner = plan.argmax(axis=1)
            else:
                mass = plan.sum(axis=1, keepdims=True)
                p = np.where(mass > 0, plan / np.where(mass > 0, mass, 1.0), 1.0 / len(pert))
                partner = np.array([rng.choice(len(pert), p=row / row.sum()) for row in p])
            src.append(ctrl)
            dst.append(pert[partner])
            report.append(
                {
                    "group": _plain(g),
                    "condition": _plain(cond),
                    "n_control": len(ctrl),
                    "n_perturbed": len(pert),
                    "method": use,
                    "cost": float((plan * M).sum()),
                }
            )
    if not src:
        raise ValueError(
            "No group has both control and perturbed cells: optimal transport has nothing to pair."
        )
    return np.concatenate(src), np.concatenate(dst), pd.DataFrame(report)


# ------------------------------------------------------------------------------------------------- model
class MTAe(PersistenceMixin, BaseModelClass):
    """Multi-task perturbation autoencoder with a FiLM-conditioned decoder, and its variants.

    A shared, unconditioned encoder maps each cell to a latent; the decoder is modulated at each fusion point by
    FiLM parameters γ, β generated from the one-hot condition (control, perturbations or doses), so one model
    covers every condition. Prediction is counterfactual: encode given control cells, decode them with the
    target condition. The output layer is a softplus, so predictions are non-negative, like the log-normalised
    expression the model is trained on.

    Variants (``variant=``):

    ``"MTAe"``
        Reconstruction (MSE) of each cell under its own condition.
    ``"MTAeAdv"``
        Adds a latent discriminator control vs perturbed (classes weighted by their frequency); the encoder is
        trained towards the confusion target 0.5, i.e. to remove what the discriminator uses (a perturbation-free
        latent, not one anti-correlated with the perturbation as flipped labels would give).
    ``"MTAeAdvG"``
        Adds a discriminator between latents and N(0, I) samples (adversarial autoencoder).
    ``"MTAeOT"``
        Control cells are paired with perturbed cells of the same cell type and condition by optimal transport
        (POT, in a fixed PCA basis of the training cells); the model maps control → paired perturbed cell (MSE)
        and control → itself; perturbed cells are never fed in. Cells are split into training and validation
        before pairing, so the two sets share no cell.
    ``"MTAePlusOT"``
        MTAe pre-training, then OT fine-tuning.
    ``"MTVae"``, ``"MTVaeOT"``, ``"MTVaePlusOT"``
        The same with a Gaussian latent and KL term (ELBO with weight ``kl_weight``).

    The condition and cell type are registered scvi-tools fields: query data (``predict``, ``load(dir,
    adata=query)``) is mapped to the training conditions **by name** and may hold only control cells.
    Saved models hold primitive attributes with a format version (:class:`~hcitools.model.base.PersistenceMixin`);
    ``load(dir)`` works without data. Registration writes scvi-tools' fields into the AnnData: ``obs["_scvi_condition"]``,
    ``obs["_scvi_cell_type"]`` (codes) and ``uns["_scvi_uuid"]``, ``uns["_scvi_manager_uuid"]``.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata` (or ``None`` with ``registry``).
    registry
        A saved registry (scvi-tools ≥ 1.2): builds the model without data, as ``load(dir)`` does.
    variant
        One of the eight names above.
    n_latent
        Latent dimension.
    n_hidden
        Encoder hidden widths (decoder mirrored); an int means one hidden layer.
    film_layers
        Decoder hidden layers with FiLM, from the first (default: all).
    film_encoder
        Also condition the encoder (on the input's own condition).
    dropout
        Dropout rate.
    adversarial_weight
        Weight of the encoder's adversarial loss (Adv variants).
    n_discriminator_steps
        Discriminator updates per batch (Adv variants). On ``synthetic_perturbation`` (2 cell types, doses 1 and
        10, 300 cells, 60 epochs, ``adversarial_weight=10``) 5 steps removed clearly more of what a fresh logistic
        regression can read from the latent than 1 (balanced accuracy 0.55–0.79 against 0.78–0.95 without
        adversary, 3 data seeds).
    kl_weight
        Weight of the KL term (VAE variants).
    ot_method
        ``"auto"`` (exact ``ot.emd`` up to 4 M pairs, else ``ot.sinkhorn``), ``"emd"`` or ``"sinkhorn"``.
    ot_sampling
        ``"argmax"`` of each control cell's plan row, or ``"sample"`` from it.
    ot_reg
        Sinkhorn's entropic regularisation relative to the median cost (> 0).
    n_pca
        Dimensions of the PCA basis (scikit-learn, seeded) used for the OT cost.

    Examples
    --------
    >>> import hcitools as ht
    >>> adata = ht.datasets.synthetic_perturbation(n_cells=30, n_genes=50, n_response_genes=10, seed=0)
    >>> ht.model.MTAe.setup_anndata(adata, condition_key="condition", cell_type_key="cell_type", control_value="control")
    >>> model = ht.model.MTAe(adata, n_latent=8, n_hidden=(32,))
    >>> model.train(max_epochs=2, enable_progress_bar=False)
    >>> ctrl = adata[(adata.obs["condition"] == "control").to_numpy()].copy()
    >>> model.predict(ctrl, condition="drug_10").shape == ctrl.shape
    True
    """

    _module_cls = MTAeModule
    _data_splitter_cls = DataSplitter  # rows of the registered fields (reconstruction)
    _paired_data_splitter_cls = (
        PairedDataSplitter  # pairs of rows (OT): AnnDataLoader serves single rows only
    )
    _training_plan_cls = MTAeTrainingPlan
    _train_runner_cls = TrainRunner

    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        *,
        condition_key: str = PERTURBATION_KEYS.CONDITION,
        cell_type_key: str = PERTURBATION_KEYS.CELL_TYPE,
        control_value: Any = PERTURBATION_KEYS.CONTROL_VALUE,
        layer: str | None = None,
        **kwargs,
    ) -> None:
        """Validate and register a perturbation AnnData (cells × genes, log-normalised).

        Registers the expression (``layer`` or ``X``), the condition (control coded 0, then the other conditions
        in the column's category order) and the cell type as scvi-tools fields. On load onto query data
        (scvi-tools passes ``source_registry``), the data may hold only some of the known conditions (e.g. control
        cells only); the conditions are mapped by name, and an unknown condition raises.

        Parameters
        ----------
        adata
            Cells × genes.
        condition_key
            obs column with the condition (control, perturbations, doses).
        cell_type_key
            obs column with the cell type (used for OT pairing and to stratify the validation split).
        control_value
            Value of ``obs[condition_key]`` marking control cells (a str, int or float).
        layer
            Layer with log-normalised expression (default ``X``).
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        for name, value in (("condition_key", condition_key), ("cell_type_key", cell_type_key)):
            if not isinstance(value, str):
                raise TypeError(f"`{name}` must be the name of an obs column (a str), got {value!r}.")
        if layer is not None and not isinstance(layer, str):
            raise TypeError(f"`layer` must be None or the name of a layer (a str), got {layer!r}.")
        if not isinstance(control_value, _PRIMITIVE_SCALARS):
            raise TypeError(
                f"`control_value` must be a str, int or float, got {type(control_value).__name__}."
            )
        if kwargs.get("source_registry") is not None:  # load(dir, adata=query)
            _check_query_data(adata, condition_key, cell_type_key, layer)
        else:
            validate_perturbation(
                adata,
                condition_key=condition_key,
                cell_type_key=cell_type_key,
                control_value=control_value,
                layer=layer,
            )
            check_obs_keys(adata, {"condition_key": condition_key, "cell_type_key": cell_type_key})
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False),
            _ConditionField(PERTURBATION_REGISTRY_KEYS.CONDITION, condition_key, control_value),
            _CellTypeField(PERTURBATION_REGISTRY_KEYS.CELL_TYPE, cell_type_key),
        ]
        manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        *,
        variant: str = "MTAe",
        n_latent: int = 32,
        n_hidden: int | Sequence[int] = (512, 256),
        film_layers: int | None = None,
        film_encoder: bool = False,
        dropout: float = 0.1,
        adversarial_weight: float = 1.0,
        n_discriminator_steps: int = 5,
        kl_weight: float = 0.005,
        ot_method: str = "auto",
        ot_sampling: str = "argmax",
        ot_reg: float = 0.05,
        n_pca: int = 50,
    ):
        # every check before BaseModelClass registers anything
        if variant not in VARIANTS:
            raise ValueError(f"`variant` must be one of {list(VARIANTS)}, got {variant!r}.")
        n_hidden = _as_widths(n_hidden)
        _check_int("n_latent", n_latent, 1)
        if film_layers is not None:
            check_int_arg("film_layers", film_layers)
        if film_layers is not None and not 0 <= film_layers <= len(n_hidden):
            raise ValueError(
                f"`film_layers` must be None or between 0 and {len(n_hidden)} (the decoder's hidden layers), got "
                f"{film_layers!r}."
            )
        if not isinstance(film_encoder, bool):
            raise TypeError(f"`film_encoder` must be a bool, got {film_encoder!r}.")
        _check_float("dropout", dropout, 0.0, 1.0)
        _check_float("adversarial_weight", adversarial_weight, 0.0)
        _check_int("n_discriminator_steps", n_discriminator_steps, 1)
        _check_float("kl_weight", kl_weight, 0.0)
        if ot_method not in ("auto", "emd", "sinkhorn"):
            raise ValueError(f"`ot_method` must be 'auto', 'emd' or 'sinkhorn', got {ot_method!r}.")
        if ot_sampling not in ("argmax", "sample"):
            raise ValueError(f"`ot_sampling` must be 'argmax' or 'sample', got {ot_sampling!r}.")
        _check_float("ot_reg", ot_reg, 0.0, low_open=True)
        _check_int("n_pca", n_pca, 1)
        if adata is None and registry is None:
            raise ValueError(
                "MTAe needs `adata` (registered with `MTAe.setup_anndata`) or a saved `registry`."
            )
        super().__init__(adata, registry)
        variational, adversary, ot_mode = VARIANTS[variant]
        self.variant, self.ot_mode = variant, ot_mode
        self.adversarial_weight, self.kl_weight = float(adversarial_weight), float(kl_weight)
        self.n_discriminator_steps = int(n_discriminator_steps)
        self.ot_method, self.ot_sampling, self.ot_reg, self.n_pca = (
            ot_method,
            ot_sampling,
            float(ot_reg),
            n_pca,
        )
        self.n_genes = int(self.summary_stats["n_vars"])
        self.module = self._module_cls(
            self.n_genes, len(self.conditions), control_code=self._control_code, n_latent=n_latent,
            n_hidden=n_hidden, film_layers=film_layers, film_encoder=film_encoder, dropout=dropout,
            variational=variational, adversary=adversary,
        )  # fmt: skip
        self.format_version_ = FORMAT_VERSION
        self.ot_report_records_: list[dict] = []
        self._model_summary_string = f"{variant}: {self.n_genes} genes, conditions {self.conditions}, latent {n_latent}, hidden {n_hidden}"
        self.init_params_ = self._get_init_params(locals())

    # --------------------------------------------------------------------------------------------- registry
    @property
    def _setup(self) -> dict:
        return self.registry_["setup_args"]

    def _state(self, registry_key: str) -> dict:
        return self.registry_["field_registries"][registry_key]["state_registry"]

    @property
    def conditions(self) -> list:
        """The conditions the model knows, in code order (the control first)."""
        return [_plain(c) for c in self._state(PERTURBATION_REGISTRY_KEYS.CONDITION)[_MAPPING]]

    @property
    def _control_code(self) -> int:
        return self._condition_code(self._setup["control_value"])

    def _condition_code(self, condition: Any) -> int:
        codes = [i for i, c in enumerate(self.conditions) if c == condition]
        if not codes:
            raise ValueError(
                f"Unknown `condition` {condition!r}; the model knows {self.conditions}. Pass one of them (by name)."
            )
        return codes[0]

    @property
    def ot_report(self) -> pd.DataFrame | None:
        """OT variants: the pairing of the last training, per split (training / validation), cell type and
        condition: cells and transport cost. ``None`` before an OT training."""
        return pd.DataFrame(self.ot_report_records_) if self.ot_report_records_ else None

    # --------------------------------------------------------------------------------------------- data
    def _codes(self, registry_key: str) -> np.ndarray:
        return np.asarray(self.adata_manager.get_from_registry(registry_key)).reshape(-1).astype(np.int64)

    def _ot_pairs(self, train_idx: np.ndarray, val_idx: np.ndarray, seed: int) -> tuple[tuple, tuple, list]:
        """OT pairs within the training cells and within the validation cells (in a PCA basis fitted on the
        training cells), plus control → itself pairs; the report as records."""
        from ..tl._pca import pca_basis

        X = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        cond, groups = (
            self._codes(PERTURBATION_REGISTRY_KEYS.CONDITION),
            self._codes(PERTURBATION_REGISTRY_KEYS.CELL_TYPE),
        )
        project = pca_basis(to_dense(X[train_idx], np.float32), self.n_pca, seed=seed)
        group_names = self._state(PERTURBATION_REGISTRY_KEYS.CELL_TYPE)[_MAPPING]
        pairs, records = [], []
        for split, rows in (("training", train_idx), ("validation", val_idx)):
            ctrl = rows[cond[rows] == self._control_code]
            try:
                src, dst, report = ot_pairs(
                    project(to_dense(X[rows], np.float32)), groups=groups[rows], conditions=cond[rows],
                    control_value=self._control_code, method=self.ot_method, sampling=self.ot_sampling,
                    reg=self.ot_reg, seed=seed,
                )  # fmt: skip
            except ValueError as err:
                if split == "training" or "nothing to pair" not in str(err):
                    raise
                pairs.append((np.array([], dtype=np.int64), np.array([], dtype=np.int64)))
                continue
            pairs.append((np.concatenate([ctrl, rows[src]]), np.concatenate([ctrl, rows[dst]])))
            for rec in report.to_dict("records"):
                records.append(
                    {
                        "split": split,
                        **rec,
                        "group": _plain(group_names[rec["group"]]),
                        "condition": self.conditions[rec["condition"]],
                    }
                )
        return pairs[0], pairs[1], records

    # --------------------------------------------------------------------------------------------- train
    def _check_train_args(self, max_epochs, batch_size, lr, weight_decay, seed, validation_size, pretrain_epochs,
                          enable_progress_bar, accelerator, devices, trainer_kwargs) -> list[tuple[str, int]]:  # fmt: skip
        _check_int("max_epochs", max_epochs, 1)
        _check_int("batch_size", batch_size, 1)
        _check_float("lr", lr, 0.0, low_open=True)
        _check_float("weight_decay", weight_decay, 0.0)
        check_seed_arg("seed", seed)
        _check_float("validation_size", validation_size, 0.0, 1.0)
        progress_bar_default(enable_progress_bar)  # True, False or None
        _check_trainer_args(accelerator, devices, trainer_kwargs)
        if self.adata_manager is None:
            raise ValueError(
                "This model has no data to train on (loaded with `adata=False`); pass `adata=` to load."
            )
        if self.ot_mode != "plus_ot":
            if pretrain_epochs is not None:
                raise ValueError(
                    f"`pretrain_epochs` applies to the PlusOT variants only; {self.variant} got {pretrain_epochs!r}."
                )
            return [("ot" if self.ot_mode == "ot" else "reconstruction", int(max_epochs))]
        pre = max_epochs // 2 if pretrain_epochs is None else pretrain_epochs
        check_int_arg("pretrain_epochs", pre)
        if not 0 <= pre <= max_epochs:
            raise ValueError(
                f"`pretrain_epochs` must be an int between 0 and `max_epochs` ({max_epochs}), got {pre!r}."
            )
        return [(kind, int(n)) for kind, n in (("reconstruction", pre), ("ot", max_epochs - pre)) if n > 0]

    def train(
        self,
        max_epochs: int = 100,
        *,
        batch_size: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        seed: int = 0,
        accelerator: str = "auto",
        devices: int | str = "auto",
        validation_size: float = 0.1,
        pretrain_epochs: int | None = None,
        enable_progress_bar: bool | None = None,
        **trainer_kwargs,
    ) -> None:
        """Train with Adam (and alternating discriminator steps for the Adv variants).

        Every argument and the data are checked, and the cells split and OT-paired, before anything changes: a
        call that raises leaves the model and the random state as they were. A wrong type raises a TypeError
        (e.g. ``max_epochs="5"``), a value out of range a ValueError (e.g. ``max_epochs=0`` or ``-1``, which
        Lightning would read as "no training" or "train forever"). A warning is issued (once per call) when a
        (cell type, condition) group has fewer than 10 cells: too few to train on and to validate with.

        Parameters
        ----------
        max_epochs
            Epochs in all (PlusOT: pre-training + fine-tuning), an int ≥ 1.
        batch_size
            Cells (or OT pairs) per batch, an int ≥ 1.
        lr, weight_decay
            Adam parameters (lr > 0, weight_decay ≥ 0).
        seed
            An int in [0, 2³² − 1]. Seeds initialisation (before the first training), the split, the PCA, OT sampling, batch order and
            dropout.
        accelerator, devices
            Lightning's; ``"auto"`` uses a GPU when present.
        validation_size
            Fraction of cells of each (cell type, condition) held out to monitor ``validation_loss``; OT pairs are
            built within each side.
        pretrain_epochs
            PlusOT variants only: epochs of MTAe pre-training before OT fine-tuning (default half of
            ``max_epochs``).
        enable_progress_bar
            Show Lightning's progress bar; ``None`` follows ``ht.settings.verbosity`` (a bar at every level but
            ``"error"``). Lightning's device banner and tips show only at verbosity ``"info"`` and above.
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer`, e.g. ``strategy="ddp"`` or ``"ddp_spawn"``: each process then
            loads its share of the cells or pairs, losses are averaged over processes, and for the Adv variants
            the strategy name gets ``_find_unused_parameters_true`` (the alternating discriminator steps leave
            parameters without gradients; pass a ``DDPStrategy(find_unused_parameters=True)`` yourself if you
            pass a strategy object).

        Notes
        -----
        ``model.history`` holds the per-epoch losses; OT variants report their pairing in ``model.ot_report``
        (cells and transport cost per split, cell type and condition).
        """
        phases = self._check_train_args(
            max_epochs,
            batch_size,
            lr,
            weight_decay,
            seed,
            validation_size,
            pretrain_epochs,
            enable_progress_bar,
            accelerator,
            devices,
            trainer_kwargs,
        )
        enable_progress_bar = progress_bar_default(enable_progress_bar)
        cond = self._codes(PERTURBATION_REGISTRY_KEYS.CONDITION)
        groups = self._codes(PERTURBATION_REGISTRY_KEYS.CELL_TYPE)
        train_idx, val_idx = _split_cells(groups * len(self.conditions) + cond, validation_size, seed)
        group_names = self._state(PERTURBATION_REGISTRY_KEYS.CELL_TYPE)[_MAPPING]
        _warn_small_groups(
            pd.Series([f"{group_names[g]} / {self.conditions[c]}" for g, c in zip(groups, cond, strict=True)])
        )
        pos_weight = None
        if self.module.adversary == "condition":
            n_ctrl = int((cond[train_idx] == self._control_code).sum())
            n_pert = len(train_idx) - n_ctrl
            if n_ctrl == 0 or n_pert == 0:
                raise ValueError(
                    f"{self.variant}'s adversary needs control and perturbed training cells; got {n_ctrl} control and "
                    f"{n_pert} perturbed."
                )
            pos_weight = n_ctrl / n_pert
        ot_data = self._ot_pairs(train_idx, val_idx, seed) if any(k == "ot" for k, _ in phases) else None
        strategy = trainer_kwargs.get("strategy")
        distributed = _uses_ddp(strategy)
        if isinstance(strategy, str) and distributed and self.module.discriminator is not None:
            # the discriminator's steps leave the autoencoder's parameters without gradients (and vice versa)
            if not strategy.endswith("_find_unused_parameters_true"):
                trainer_kwargs = {**trainer_kwargs, "strategy": f"{strategy}_find_unused_parameters_true"}
        # ---- nothing has changed so far; from here on the model is modified
        seed_and_reset(self, seed)
        if ot_data is not None:
            self.ot_report_records_ = ot_data[2]
        for kind, epochs in phases:
            if kind == "ot":
                splitter = self._paired_data_splitter_cls(
                    self.adata_manager,
                    ot_data[0],
                    ot_data[1],
                    batch_size=batch_size,
                    seed=seed,
                    distributed_sampler=distributed,
                )
            else:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*Last batch will have a small size.*")
                    splitter = self._data_splitter_cls(
                        self.adata_manager,
                        external_indexing=[train_idx, val_idx, np.array([], dtype=np.int64)],
                        batch_size=batch_size,
                        distributed_sampler=distributed,
                    )
            plan = self._training_plan_cls(
                self.module, lr=lr, weight_decay=weight_decay, kl_weight=self.kl_weight,
                adversarial_weight=self.adversarial_weight, pos_weight=pos_weight,
                n_discriminator_steps=self.n_discriminator_steps,
            )  # fmt: skip
            validation = {"check_val_every_n_epoch": 1} if splitter.n_val else {"limit_val_batches": 0}
            # a spawn-based strategy returns the history only through the file of process 0
            with (
                history_file_dir({**validation, "log_every_n_steps": 1, **trainer_kwargs}) as kwargs,
                third_party_quiet(),
                warnings.catch_warnings(),
            ):
                # MTAe trains without early stopping: scvi-tools' note that DDP disables it does not apply
                warnings.filterwarnings("ignore", message="early_stopping was automatically disabled")
                runner = self._train_runner_cls(
                    self,
                    training_plan=plan,
                    data_splitter=splitter,
                    max_epochs=epochs,
                    accelerator=accelerator,
                    devices=devices,
                    enable_progress_bar=enable_progress_bar,
                    **kwargs,
                )
                # Lightning keeps the modes modules are in: a module left in eval mode by a previous phase,
                # training or load would otherwise train without dropout
                self.module.train()
                run_training(self, runner)
        self.train_params_ = {
            "max_epochs": int(max_epochs), "batch_size": int(batch_size), "lr": float(lr),
            "weight_decay": float(weight_decay), "seed": int(seed), "validation_size": float(validation_size),
            "pretrain_epochs": None if pretrain_epochs is None else int(pretrain_epochs),
        }  # fmt: skip

    # --------------------------------------------------------------------------------------------- queries
    def _query_data(self, adata: AnnData | None) -> AnnData:
        """The data of a query, checked (genes by name, expression non-negative) and registered by name."""
        if adata is None:
            if self.adata is None:
                raise ValueError("This model was loaded without data; pass `adata=`.")
            return self.adata
        s = self._setup
        _check_query_data(adata, s["condition_key"], s["cell_type_key"], s["layer"])
        genes = list(self.get_var_names())
        if adata.n_vars != len(genes) or list(adata.var_names) != genes:
            raise ValueError(
                f"`adata` must have the model's {len(genes)} genes, in the same order (adata.var_names); it has "
                f"{adata.n_vars}. Subset it: `adata[:, model.get_var_names()].copy()`."
            )
        with quiet_loggers("scvi"):  # scvi-tools' notes on transferring the setup (by name) onto query data
            return self._validate_anndata(adata)

    @torch.inference_mode()
    def _forward(
        self, adata: AnnData, condition_code: int | None, batch_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        _check_int("batch_size", batch_size, 1)
        self._check_if_trained(warn=True)
        loader = self._make_data_loader(adata=adata, batch_size=batch_size, shuffle=False)
        self.module.eval()
        zs, xs = [], []
        for tensors in loader:
            own = tensors[PERTURBATION_REGISTRY_KEYS.CONDITION]
            inf = self.module.inference(tensors[REGISTRY_KEYS.X_KEY], own, sample=False)
            out = own if condition_code is None else torch.full_like(own, condition_code)
            gen = self.module.generative(inf[Z_KEY], out)
            zs.append(inf[Z_KEY].cpu().numpy())
            xs.append(gen[X_HAT_KEY].cpu().numpy())
        return np.concatenate(zs), np.concatenate(xs)

    @staticmethod
    def _output(x_hat: np.ndarray, adata: AnnData) -> AnnData:
        obs = adata.obs.loc[:, [c for c in adata.obs.columns if not str(c).startswith("_scvi_")]].copy()
        return AnnData(x_hat, obs=obs, var=adata.var.copy())

    def predict(self, adata_ctrl: AnnData, *, condition: Any, batch_size: int = 1024) -> AnnData:
        """Counterfactual prediction: encode the given control cells, decode them under ``condition``.

        Parameters
        ----------
        adata_ctrl
            Control cells to transform (e.g. those of a held-out cell type), with the training genes and the
            condition and cell type columns of :meth:`setup_anndata`. Every cell must be a control cell.
        condition
            Target condition (a condition seen in training, by name).
        batch_size
            Cells per forward pass.

        Returns
        -------
        A new AnnData: one predicted (non-negative) cell per input cell, the same ``var``, a copy of the input's
        ``obs``; ``uns["mtae_predict"]`` records the variant and the condition. ``adata_ctrl`` gets scvi-tools'
        registration fields (see the class docstring), nothing else.
        """
        check_anndata(adata_ctrl, "adata_ctrl")
        _check_int("batch_size", batch_size, 1)
        code = self._condition_code(condition)
        key, control = self._setup["condition_key"], self._setup["control_value"]
        check_obs_keys(adata_ctrl, {"condition_key": key})
        not_ctrl = (adata_ctrl.obs[key] != control).to_numpy()
        if not_ctrl.any():
            raise ValueError(
                f"predict's input cells (argument `adata_ctrl`) must be control cells (adata.obs[{key!r}] == {control!r}); {int(not_ctrl.sum())} "
                f"of {adata_ctrl.n_obs} are not (conditions {_preview(pd.unique(adata_ctrl.obs[key][not_ctrl]))}). "
                f"Select the controls: `adata[adata.obs[{key!r}] == {control!r}].copy()`."
            )
        adata_ctrl = self._query_data(adata_ctrl)
        _, x_hat = self._forward(adata_ctrl, code, batch_size)
        out = self._output(x_hat, adata_ctrl)
        out.uns["mtae_predict"] = {"variant": self.variant, "condition": str(condition)}
        return out

    def reconstruct(self, adata: AnnData | None = None, *, batch_size: int = 1024) -> AnnData:
        """Reconstruct cells under their own condition (same layout as :meth:`predict`; any known conditions)."""
        _check_int("batch_size", batch_size, 1)
        adata = self._query_data(adata)
        _, x_hat = self._forward(adata, None, batch_size)
        return self._output(x_hat, adata)

    def get_latent_representation(
        self, adata: AnnData | None = None, *, batch_size: int = 1024
    ) -> np.ndarray:
        """Latent of each cell (the posterior mean for VAE variants): ndarray n_cells × n_latent."""
        _check_int("batch_size", batch_size, 1)
        adata = self._query_data(adata)
        z, _ = self._forward(adata, None, batch_size)
        return z


__all__ = ["VARIANTS", "MTAe", "ot_pairs"]
