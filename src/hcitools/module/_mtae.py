"""MTAe family: autoencoders whose decoder is FiLM-conditioned on the perturbation (SPECS §8, paper 004)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn
from torch.distributions import Normal, kl_divergence

from .._constants import PERTURBATION_REGISTRY_KEYS
from ..dataloaders._cells import TARGET_CONDITION_KEY, TARGET_X_KEY
from ..nn import FiLM

#: outputs of ``inference`` / ``generative`` (what queries read)
Z_KEY, QZ_M_KEY, QZ_V_KEY, X_HAT_KEY = "z", "qz_m", "qz_v", "x_hat"
ADVERSARIES = (None, "condition", "gaussian")


class _FiLMStack(nn.Module):
    """Linear → LayerNorm → LeakyReLU → (FiLM) → Dropout blocks."""

    def __init__(self, sizes: Sequence[int], n_conditions: int, n_film: int, dropout: float):
        super().__init__()
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.norms = nn.ModuleList(nn.LayerNorm(b) for b in sizes[1:])
        self.films = nn.ModuleList(FiLM(n_conditions, b) for b in sizes[1 : 1 + n_film])
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        for i, (lin, norm) in enumerate(zip(self.linears, self.norms, strict=True)):
            x = F.leaky_relu(norm(lin(x)), 0.2)
            if i < len(self.films):
                x = self.films[i](x, condition)
            x = self.dropout(x)
        return x


class MTAeModule(BaseModuleClass):
    """Shared encoder, FiLM-conditioned decoder with a softplus output; optional VAE latent and adversary.

    Batches hold the registered expression (``"X"``) and condition codes (``"condition"``); OT batches add the
    partner cell (``"target_X"``, ``"target_condition"``), which is then the decoder's condition and target.

    Parameters
    ----------
    n_genes
        Number of genes.
    n_conditions
        Number of condition codes (control + perturbations / doses).
    control_code
        Code of the control condition (the adversary's negative class).
    n_latent
        Latent dimension.
    n_hidden
        Hidden layer widths of the encoder (the decoder mirrors them).
    film_layers
        Number of decoder hidden layers with FiLM (from the first); default all.
    film_encoder
        Also FiLM-condition the encoder hidden layers on the input cell's own condition.
    dropout
        Dropout rate.
    variational
        Gaussian latent with a KL term (MTVae).
    adversary
        ``None``, ``"condition"`` (a discriminator control vs perturbed on the latent, MTAeAdv) or ``"gaussian"``
        (a discriminator latent vs N(0, I) samples, MTAeAdvG). The discriminator is trained on detached latents
        (:meth:`discriminator_loss`), the encoder against it (:meth:`encoder_adversarial_loss`).
    n_adversary_hidden
        Hidden width of the discriminator.
    """

    def __init__(
        self,
        n_genes: int,
        n_conditions: int,
        *,
        control_code: int = 0,
        n_latent: int = 32,
        n_hidden: Sequence[int] = (512, 256),
        film_layers: int | None = None,
        film_encoder: bool = False,
        dropout: float = 0.1,
        variational: bool = False,
        adversary: str | None = None,
        n_adversary_hidden: int = 64,
    ):
        super().__init__()
        n_hidden = list(n_hidden)
        film_layers = len(n_hidden) if film_layers is None else film_layers
        if not 0 <= film_layers <= len(n_hidden):
            raise ValueError(
                f"`film_layers` must be between 0 and {len(n_hidden)} (the decoder's hidden layers), got {film_layers}."
            )
        if adversary not in ADVERSARIES:
            raise ValueError(f"`adversary` must be one of {ADVERSARIES}, got {adversary!r}.")
        self.n_conditions, self.control_code = n_conditions, control_code
        self.variational = variational
        self.adversary = adversary
        self.encoder = _FiLMStack(
            [n_genes, *n_hidden], n_conditions, len(n_hidden) if film_encoder else 0, dropout
        )
        self.z_mean = nn.Linear(n_hidden[-1], n_latent)
        self.z_logvar = nn.Linear(n_hidden[-1], n_latent) if variational else None
        self.decoder = _FiLMStack([n_latent, *reversed(n_hidden)], n_conditions, film_layers, dropout)
        self.output = nn.Linear(n_hidden[0], n_genes)
        self.discriminator = (
            nn.Sequential(
                nn.Linear(n_latent, n_adversary_hidden), nn.LeakyReLU(0.2), nn.Linear(n_adversary_hidden, 1)
            )
            if adversary is not None
            else None
        )

    def onehot(self, codes: torch.Tensor) -> torch.Tensor:
        """One-hot of condition codes (any shape with one code per cell)."""
        return F.one_hot(codes.reshape(-1).long(), self.n_conditions).float()

    def _get_inference_input(self, tensors, **kwargs):
        return {"x": tensors[REGISTRY_KEYS.X_KEY], "condition": tensors[PERTURBATION_REGISTRY_KEYS.CONDITION]}

    @auto_move_data
    def inference(
        self, x: torch.Tensor, condition: torch.Tensor, sample: bool | None = None
    ) -> dict[str, torch.Tensor]:
        """Encode cells given their own condition codes: ``z`` (sampled in training for the VAE, its mean
        otherwise), ``qz_m`` and, for the VAE, ``qz_v``."""
        h = self.encoder(x, self.onehot(condition))
        qz_m = self.z_mean(h)
        out = {QZ_M_KEY: qz_m, Z_KEY: qz_m}
        if self.variational:
            qz_v = torch.exp(self.z_logvar(h).clamp(-10, 10))
            out[QZ_V_KEY] = qz_v
            if self.training if sample is None else sample:
                out[Z_KEY] = Normal(qz_m, qz_v.sqrt()).rsample()
        return out

    def _get_generative_input(self, tensors, inference_outputs, **kwargs):
        condition = tensors.get(TARGET_CONDITION_KEY, tensors[PERTURBATION_REGISTRY_KEYS.CONDITION])
        return {"z": inference_outputs[Z_KEY], "condition": condition}

    @auto_move_data
    def generative(self, z: torch.Tensor, condition: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decode ``z`` under condition codes ``condition``: ``x_hat``, non-negative (softplus output)."""
        return {X_HAT_KEY: F.softplus(self.output(self.decoder(z, self.onehot(condition))))}

    def discriminate(self, z: torch.Tensor) -> torch.Tensor:
        """Logit of the latent discriminator."""
        return self.discriminator(z).squeeze(-1)

    def discriminator_loss(
        self, z: torch.Tensor, condition: torch.Tensor, pos_weight: float | None = None
    ) -> torch.Tensor:
        """The discriminator's BCE on latents ``z`` (detach them to train the discriminator alone).

        ``"condition"``: perturbed (1) vs control (0) cells, the perturbed class weighted by ``pos_weight``;
        ``"gaussian"``: N(0, I) samples (1) vs latents (0).
        """
        logits = self.discriminate(z)
        if self.adversary == "condition":
            perturbed = (condition.reshape(-1).long() != self.control_code).float()
            pw = None if pos_weight is None else torch.as_tensor(pos_weight, dtype=z.dtype, device=z.device)
            return F.binary_cross_entropy_with_logits(logits, perturbed, pos_weight=pw)
        prior = self.discriminate(torch.randn_like(z))
        real = F.binary_cross_entropy_with_logits(prior, torch.ones_like(prior))
        fake = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))
        return 0.5 * (real + fake)

    def encoder_adversarial_loss(
        self, z: torch.Tensor, condition: torch.Tensor, pos_weight: float | None = None
    ) -> torch.Tensor:
        """The encoder's adversarial loss (the discriminator's parameters are not updated with it).

        ``"condition"``: BCE of the discriminator's output against the confusion target 0.5 for every cell, the
        perturbed cells weighted by ``pos_weight`` (minimal when the discriminator cannot tell control from
        perturbed, rather than when it is wrong, which flipped labels would reward); ``"gaussian"``: BCE against
        "prior sample" (the adversarial autoencoder's generator loss).
        """
        logits = self.discriminate(z)
        if self.adversary == "condition":
            perturbed = condition.reshape(-1).long() != self.control_code
            weight = torch.ones_like(logits)
            if pos_weight is not None:
                weight = torch.where(perturbed, torch.full_like(logits, pos_weight), weight)
            return F.binary_cross_entropy_with_logits(
                logits, torch.full_like(logits, 0.5), weight=weight / weight.mean()
            )
        return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))

    def loss(
        self,
        tensors,
        inference_outputs,
        generative_outputs,
        kl_weight: float = 0.0,
        adversarial_weight: float = 0.0,
        pos_weight: float | None = None,
    ) -> LossOutput:
        """MSE to the target (the cell itself, or its OT partner) + ``kl_weight`` × KL + ``adversarial_weight``
        × the encoder's adversarial loss (:meth:`encoder_adversarial_loss`).

        ``pos_weight`` (n_control / n_perturbed of the training cells) weights the perturbed class of the
        condition adversary so that both classes count equally. The discriminator is trained separately, on
        detached latents (:meth:`discriminator_loss`).
        """
        target = tensors.get(TARGET_X_KEY, tensors[REGISTRY_KEYS.X_KEY])
        recon = ((generative_outputs[X_HAT_KEY] - target) ** 2).mean(-1)
        loss = recon.mean()
        kl = torch.zeros_like(recon)
        if self.variational:
            qz_m, qz_v = inference_outputs[QZ_M_KEY], inference_outputs[QZ_V_KEY]
            kl = kl_divergence(
                Normal(qz_m, qz_v.sqrt()), Normal(torch.zeros_like(qz_m), torch.ones_like(qz_v))
            ).sum(-1)
            loss = loss + kl_weight * kl.mean()
        extra = {"mse": recon.mean().detach(), "kl": kl.mean().detach()}
        if self.discriminator is not None and adversarial_weight > 0:
            adv = self.encoder_adversarial_loss(
                inference_outputs[Z_KEY], tensors[PERTURBATION_REGISTRY_KEYS.CONDITION], pos_weight
            )
            loss = loss + adversarial_weight * adv
            extra["adversarial_loss"] = adv.detach()
        return LossOutput(
            loss=loss,
            reconstruction_loss=recon,
            kl_local=kl,
            n_obs_minibatch=recon.shape[0],
            extra_metrics=extra,
        )
