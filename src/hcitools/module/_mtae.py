"""MTAe family: autoencoders whose decoder is FiLM-conditioned on the perturbation (SPECS §8, paper 004)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn
from torch.distributions import Normal, kl_divergence

from ..nn import FiLM


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
    """Shared encoder, FiLM-conditioned decoder; optional VAE latent and latent discriminator.

    Parameters
    ----------
    n_genes
        Number of genes.
    n_conditions
        Length of the one-hot condition (perturbations + control).
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
        ``None``, ``"condition"`` (discriminator control vs perturbed on the latent, MTAeAdv) or ``"gaussian"``
        (discriminator latent vs N(0, I) samples, MTAeAdvG).
    """

    def __init__(
        self,
        n_genes: int,
        n_conditions: int,
        *,
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

    def _get_inference_input(self, tensors, **kwargs):
        return {"x": tensors["X"], "condition_in": tensors["condition_in"]}

    @auto_move_data
    def inference(
        self, x: torch.Tensor, condition_in: torch.Tensor, sample: bool | None = None
    ) -> dict[str, torch.Tensor]:
        """Encode cells: ``z`` (sampled in training for the VAE, its mean otherwise), ``qz_m``, ``qz_v``."""
        h = self.encoder(x, condition_in)
        qz_m = self.z_mean(h)
        out = {"qz_m": qz_m, "z": qz_m}
        if self.variational:
            qz_v = torch.exp(self.z_logvar(h).clamp(-10, 10))
            out["qz_v"] = qz_v
            if self.training if sample is None else sample:
                out["z"] = Normal(qz_m, qz_v.sqrt()).rsample()
        return out

    def _get_generative_input(self, tensors, inference_outputs, **kwargs):
        return {"z": inference_outputs["z"], "condition": tensors["condition"]}

    @auto_move_data
    def generative(self, z: torch.Tensor, condition: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decode ``z`` under ``condition`` (one-hot): ``x_hat``."""
        return {"x_hat": self.output(self.decoder(z, condition))}

    def discriminate(self, z: torch.Tensor) -> torch.Tensor:
        """Logit of the latent discriminator."""
        return self.discriminator(z).squeeze(-1)

    def loss(self, tensors, inference_outputs, generative_outputs, kl_weight: float = 0.0) -> LossOutput:
        """MSE between the decoder output and ``tensors["target"]`` (the cell itself, or its OT partner), + KL."""
        recon = ((generative_outputs["x_hat"] - tensors["target"]) ** 2).mean(-1)
        loss = recon.mean()
        kl = torch.zeros_like(recon)
        if self.variational:
            qz_m, qz_v = inference_outputs["qz_m"], inference_outputs["qz_v"]
            kl = kl_divergence(
                Normal(qz_m, qz_v.sqrt()), Normal(torch.zeros_like(qz_m), torch.ones_like(qz_v))
            ).sum(-1)
            loss = loss + kl_weight * kl.mean()
        return LossOutput(
            loss=loss, reconstruction_loss=recon, kl_local=kl, n_obs_minibatch=recon.shape[0],
            extra_metrics={"mse": recon.mean().detach(), "kl": kl.mean().detach()},
        )  # fmt: skip
