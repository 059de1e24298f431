"""MTAe: FiLM multi-task perturbation autoencoders and their adversarial, OT and VAE variants (paper 004)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import LayerField
from scvi.model.base import BaseModelClass
from scvi.train import TrainRunner

from .._constants import PERTURBATION_KEYS
from .._validate import check_obs_keys, get_rep, validate_perturbation
from ..dataloaders import TensorDataSplitter
from ..module import MTAeModule
from ..train import MTAeTrainingPlan
from ..train._run import run_training, seed_and_reset

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


def ot_pairs(
    X_basis: np.ndarray,
    groups: np.ndarray,
    conditions: np.ndarray,
    control_value: Any,
    *,
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
    row of the plan (``"sample"``).

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
        Entropic regularisation relative to the median cost (sinkhorn).
    max_exact
        Largest n_ctrl × n_pert solved exactly with ``method="auto"``.
    seed
        Seed of the sampling.

    Returns
    -------
    (control row indices, partner row indices, per-group table with ``n_control``, ``n_perturbed``, ``method``
    and the transport ``cost`` ⟨plan, cost⟩).
    """
    from .._utils import import_optional

    ot = import_optional("ot", "optimal-transport pairing")
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
            elif use == "sinkhorn":
                # log-domain iterations do not underflow for small regularisation
                plan = ot.sinkhorn(a, b, M, reg * float(np.median(M)), method="sinkhorn_log")
            else:
                raise ValueError(f"`ot_method` must be 'auto', 'emd' or 'sinkhorn', got {method!r}.")
            if sampling == "argmax":
                partner = plan.argmax(axis=1)
            elif sampling == "sample":
                mass = plan.sum(axis=1, keepdims=True)
                p = np.where(mass > 0, plan / np.where(mass > 0, mass, 1.0), 1.0 / len(pert))
                partner = np.array([rng.choice(len(pert), p=row / row.sum()) for row in p])
            else:
                raise ValueError(f"`ot_sampling` must be 'argmax' or 'sample', got {sampling!r}.")
            src.append(ctrl)
            dst.append(pert[partner])
            report.append(
                {
                    "group": g,
                    "condition": cond,
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


class MTAe(BaseModelClass):
    """Multi-task perturbation autoencoder with a FiLM-conditioned decoder, and its variants.

    A shared, unconditioned encoder maps each cell to a latent; the decoder is modulated at each fusion point by
    FiLM parameters γ, β generated from the one-hot condition (control, perturbations or doses), so one model
    covers every condition. Prediction is counterfactual: encode given (control) cells, decode them with the
    target condition.

    Variants (``variant=``):

    ``"MTAe"``
        Reconstruction (MSE) of each cell under its own condition.
    ``"MTAeAdv"``
        + a latent discriminator control vs perturbed that the encoder fools (perturbation-free latent).
    ``"MTAeAdvG"``
        + a discriminator between latents and N(0, I) samples (adversarial autoencoder).
    ``"MTAeOT"``
        Control cells are paired with perturbed cells of the same cell type and condition by optimal transport
        (POT, in a fixed PCA basis of the training cells); the model maps control → paired perturbed cell (MSE)
        and control → itself; perturbed cells are never fed in.
    ``"MTAePlusOT"``
        MTAe pre-training, then OT fine-tuning.
    ``"MTVae"``, ``"MTVaeOT"``, ``"MTVaePlusOT"``
        The same with a Gaussian latent and KL term (ELBO with weight ``kl_weight``).

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    variant
        One of the eight names above.
    n_latent
        Latent dimension.
    n_hidden
        Encoder hidden widths (decoder mirrored).
    film_layers
        Decoder hidden layers with FiLM, from the first (default: all).
    film_encoder
        Also condition the encoder (on the input's own condition).
    dropout
        Dropout rate.
    adversarial_weight
        Weight of the encoder's adversarial loss (Adv variants).
    kl_weight
        Weight of the KL term (VAE variants).
    ot_method
        ``"auto"`` (exact ``ot.emd`` up to 4 M pairs, else ``ot.sinkhorn``), ``"emd"`` or ``"sinkhorn"``.
    ot_sampling
        ``"argmax"`` of each control cell's plan row, or ``"sample"`` from it.
    n_pca
        Dimensions of the PCA basis (scanpy) used for the OT cost.

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
    _data_splitter_cls = TensorDataSplitter
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

        Parameters
        ----------
        adata
            Cells × genes.
        condition_key
            obs column with the condition (control, perturbations, doses).
        cell_type_key
            obs column with the cell type (used for OT pairing and held-out splits).
        control_value
            Value of ``obs[condition_key]`` marking control cells.
        layer
            Layer with log-normalised expression (default ``X``).
        """
        validate_perturbation(
            adata,
            condition_key=condition_key,
            cell_type_key=cell_type_key,
            control_value=control_value,
            layer=layer,
        )
        setup_method_args = cls._get_setup_method_args(**locals())
        manager = AnnDataManager(
            fields=[LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False)],
            setup_method_args=setup_method_args,
        )
        manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)

    def __init__(
        self,
        adata: AnnData,
        *,
        variant: str = "MTAe",
        n_latent: int = 32,
        n_hidden: Sequence[int] = (512, 256),
        film_layers: int | None = None,
        film_encoder: bool = False,
        dropout: float = 0.1,
        adversarial_weight: float = 1.0,
        kl_weight: float = 0.005,
        ot_method: str = "auto",
        ot_sampling: str = "argmax",
        n_pca: int = 50,
    ):
        super().__init__(adata)
        if variant not in VARIANTS:
            raise ValueError(f"`variant` must be one of {list(VARIANTS)}, got {variant!r}.")
        if ot_method not in ("auto", "emd", "sinkhorn"):
            raise ValueError(f"`ot_method` must be 'auto', 'emd' or 'sinkhorn', got {ot_method!r}.")
        if ot_sampling not in ("argmax", "sample"):
            raise ValueError(f"`ot_sampling` must be 'argmax' or 'sample', got {ot_sampling!r}.")
        s = self._setup
        cond = adata.obs[s["condition_key"]]
        categories = (
            list(cond.cat.categories)
            if isinstance(cond.dtype, pd.CategoricalDtype)
            else sorted(pd.unique(cond), key=str)
        )
        categories = [c for c in categories if (cond == c).any()]
        # control first, then the perturbations / doses in their categorical order
        self.conditions = [s["control_value"], *[c for c in categories if c != s["control_value"]]]
        variational, adversary, ot_mode = VARIANTS[variant]
        self.variant, self.ot_mode = variant, ot_mode
        self.adversarial_weight, self.kl_weight = adversarial_weight, kl_weight
        self.ot_method, self.ot_sampling, self.n_pca = ot_method, ot_sampling, n_pca
        self.n_genes = adata.n_vars
        self.module = self._module_cls(
            self.n_genes, len(self.conditions), n_latent=n_latent, n_hidden=n_hidden, film_layers=film_layers,
            film_encoder=film_encoder, dropout=dropout, variational=variational, adversary=adversary,
        )  # fmt: skip
        self.ot_report_: pd.DataFrame | None = None
        self._model_summary_string = f"{variant}: {self.n_genes} genes, conditions {self.conditions}, latent {n_latent}, hidden {tuple(n_hidden)}"
        self.init_params_ = self._get_init_params(locals())

    @property
    def _setup(self) -> dict:
        return self.adata_manager.registry["setup_args"]

    # --------------------------------------------------------------------------------------------- data
    def _expression(self, adata: AnnData) -> np.ndarray:
        s = self._setup
        if adata is self.adata:
            X = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        else:
            X = get_rep(adata, layer=s["layer"])
            if adata.n_vars != self.n_genes or not adata.var_names.equals(self.adata.var_names):
                raise ValueError(
                    f"`adata` must have the {self.n_genes} genes of the training data, in the same order."
                )
        X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
        return X.astype(np.float32, copy=False)

    def _onehot(self, labels: Sequence[Any]) -> torch.Tensor:
        index = {c: i for i, c in enumerate(self.conditions)}
        unknown = sorted({str(v) for v in labels if v not in index})
        if unknown:
            raise ValueError(f"Unknown conditions {unknown}; the model knows {self.conditions}.")
        codes = torch.as_tensor([index[v] for v in labels])
        return torch.nn.functional.one_hot(codes, len(self.conditions)).float()

    def _reconstruction_tensors(self) -> dict[str, torch.Tensor]:
        s = self._setup
        X = torch.from_numpy(self._expression(self.adata))
        cond = self.adata.obs[s["condition_key"]].to_numpy()
        onehot = self._onehot(cond)
        perturbed = torch.as_tensor(cond != s["control_value"], dtype=torch.float32)
        return {"X": X, "target": X, "condition": onehot, "condition_in": onehot, "perturbed": perturbed}

    def _ot_tensors(self, seed: int) -> dict[str, torch.Tensor]:
        import scanpy as sc

        s = self._setup
        X = self._expression(self.adata)
        basis = sc.pp.pca(X, n_comps=min(self.n_pca, min(X.shape) - 1), random_state=seed)
        cond = self.adata.obs[s["condition_key"]].to_numpy()
        groups = self.adata.obs[s["cell_type_key"]].astype(str).to_numpy()
        src, dst, report = ot_pairs(
            basis,
            groups,
            cond,
            s["control_value"],
            method=self.ot_method,
            sampling=self.ot_sampling,
            seed=seed,
        )
        self.ot_report_ = report
        ctrl = np.flatnonzero(cond == s["control_value"])
        rows_in = np.concatenate([ctrl, src])
        rows_out = np.concatenate([ctrl, dst])
        Xt = torch.from_numpy(X)
        control_onehot = self._onehot([s["control_value"]] * len(rows_in))
        return {
            "X": Xt[rows_in],
            "target": Xt[rows_out],
            "condition": self._onehot(cond[rows_out]),
            "condition_in": control_onehot,
            "perturbed": torch.as_tensor(cond[rows_out] != s["control_value"], dtype=torch.float32),
        }

    # --------------------------------------------------------------------------------------------- train
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
        enable_progress_bar: bool = True,
        **trainer_kwargs,
    ) -> None:
        """Train with Adam (and an alternating discriminator for the Adv variants).

        Parameters
        ----------
        max_epochs
            Epochs in all (PlusOT: pre-training + fine-tuning).
        batch_size
            Cells per batch.
        lr, weight_decay
            Adam parameters.
        seed
            Seeds initialisation (before the first training), the split, batch order, OT sampling and dropout.
        accelerator, devices
            Lightning's; ``"auto"`` uses a GPU when present.
        validation_size
            Fraction of rows held out to monitor ``validation_loss``.
        pretrain_epochs
            PlusOT variants: epochs of MTAe pre-training before OT fine-tuning (default half of ``max_epochs``).
        enable_progress_bar
            Show Lightning's progress bar.
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer` (e.g. ``strategy="ddp"``).

        Notes
        -----
        ``model.history`` holds the per-epoch losses; OT variants report their pairing in ``model.ot_report_``
        (cells and transport cost per cell type and condition).
        """
        seed_and_reset(self, seed)
        if self.ot_mode == "plus_ot":
            pre = max_epochs // 2 if pretrain_epochs is None else pretrain_epochs
            if not 0 <= pre <= max_epochs:
                raise ValueError(f"`pretrain_epochs` must be between 0 and `max_epochs`, got {pre}.")
            phases = [("reconstruction", pre), ("ot", max_epochs - pre)]
        else:
            phases = [("ot" if self.ot_mode == "ot" else "reconstruction", max_epochs)]
        for kind, epochs in phases:
            if epochs == 0:
                continue
            tensors = self._ot_tensors(seed) if kind == "ot" else self._reconstruction_tensors()
            splitter = self._data_splitter_cls(
                tensors, validation_size=validation_size, batch_size=batch_size, seed=seed
            )
            plan = self._training_plan_cls(
                self.module,
                lr=lr,
                weight_decay=weight_decay,
                kl_weight=self.kl_weight,
                adversarial_weight=self.adversarial_weight,
            )
            kwargs = {"check_val_every_n_epoch": 1, "log_every_n_steps": 1, **trainer_kwargs}
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
            run_training(self, runner)
        self.train_params_ = {"max_epochs": max_epochs, "batch_size": batch_size, "lr": lr, "seed": seed}

    # --------------------------------------------------------------------------------------------- queries
    @torch.inference_mode()
    def _encode_decode(
        self, adata: AnnData, condition: Any | None, batch_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        self._check_if_trained(warn=True)
        s = self._setup
        X = torch.from_numpy(self._expression(adata))
        check_obs_keys(adata, {"condition_key": s["condition_key"]})
        own = adata.obs[s["condition_key"]].to_numpy()
        cond_in = self._onehot(own)
        cond_out = cond_in if condition is None else self._onehot([condition] * adata.n_obs)
        self.module.eval()
        device = self.module.device
        zs, xs = [], []
        for start in range(0, adata.n_obs, batch_size):
            sl = slice(start, start + batch_size)
            inf = self.module.inference(X[sl].to(device), cond_in[sl].to(device), sample=False)
            gen = self.module.generative(inf["z"], cond_out[sl].to(device))
            zs.append(inf["z"].cpu().numpy())
            xs.append(gen["x_hat"].cpu().numpy())
        return np.concatenate(zs), np.concatenate(xs)

    def predict(self, adata_ctrl: AnnData, *, condition: Any, batch_size: int = 1024) -> AnnData:
        """Counterfactual prediction: encode the given cells, decode them under ``condition``.

        Parameters
        ----------
        adata_ctrl
            Cells to transform (typically the control cells of a held-out cell type), with the training genes.
        condition
            Target condition (a value of ``obs[condition_key]`` seen in training).
        batch_size
            Cells per forward pass.

        Returns
        -------
        A new AnnData: one predicted cell per input cell, the same ``var``, a copy of the input's ``obs``;
        ``uns["mtae_predict"]`` records the variant and the condition. ``adata_ctrl`` is not modified.
        """
        if condition not in self.conditions:
            raise ValueError(f"Unknown `condition` {condition!r}; the model knows {self.conditions}.")
        _, x_hat = self._encode_decode(adata_ctrl, condition, batch_size)
        out = AnnData(x_hat, obs=adata_ctrl.obs.copy(), var=adata_ctrl.var.copy())
        out.uns["mtae_predict"] = {"variant": self.variant, "condition": str(condition)}
        return out

    def reconstruct(self, adata: AnnData | None = None, *, batch_size: int = 1024) -> AnnData:
        """Reconstruct cells under their own condition (same layout as :meth:`predict`)."""
        adata = self.adata if adata is None else adata
        _, x_hat = self._encode_decode(adata, None, batch_size)
        return AnnData(x_hat, obs=adata.obs.copy(), var=adata.var.copy())

    def get_latent_representation(
        self, adata: AnnData | None = None, *, batch_size: int = 1024
    ) -> np.ndarray:
        """Latent of each cell (the posterior mean for VAE variants): ndarray n_cells × n_latent."""
        adata = self.adata if adata is None else adata
        z, _ = self._encode_decode(adata, None, batch_size)
        return z


__all__ = ["VARIANTS", "MTAe", "ot_pairs"]
