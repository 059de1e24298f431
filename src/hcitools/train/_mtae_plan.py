"""Training plan of the MTAe family: reconstruction (or OT target) loss, optional KL, alternating adversary."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from .._constants import PERTURBATION_REGISTRY_KEYS
from ._epoch_means import EpochMeans


def _adam(params: list, **kwargs) -> torch.optim.Adam:
    """torch's fused Adam (one kernel per step for all parameters) where the device supports it, else the default.

    The autoencoder's weights are dominated by the gene-wide first and last layers (e.g. 2 × 7,000 × 800 at
    scGen's widths): the default single-tensor Adam ran ~10 element-wise kernels over them per step, 0.28 s of a
    0.9 s CPU step (measured on Kang, benchmarks/perturbation_speed.py); fused Adam takes 0.05 s. It computes the
    same update (up to float rounding).
    """
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, ValueError, TypeError):  # a device or dtype without a fused kernel
        return torch.optim.Adam(params, **kwargs)


class MTAeTrainingPlan(pl.LightningModule):
    """Adam on the autoencoder; with a latent discriminator, ``n_discriminator_steps`` discriminator steps per batch.

    For ``adversary="condition"`` the discriminator learns control vs perturbed from detached latents (BCE with the
    perturbed class weighted by ``pos_weight`` = n_control / n_perturbed, so the imbalanced classes count
    equally), and the encoder is trained towards the confusion target 0.5 (weighted alike): at the optimum the
    latent carries no information the discriminator can use. (Training the encoder on flipped labels instead would
    reward latents anti-correlated with the perturbation; a gradient-reversal layer trained in the same step was
    measured to leave the latent as predictive as without adversary on ``synthetic_perturbation``.) For
    ``"gaussian"`` the discriminator separates N(0, I) samples from latents and the encoder makes its latents pass
    as samples (adversarial autoencoder). The adversarial weight is a fixed parameter, never learned.

    Logs per epoch the batch-size-weighted mean over the batches of all processes (:class:`EpochMeans`, one
    ``self.log`` per term and epoch): ``train_loss`` (the autoencoder's
    optimised total), ``reconstruction_loss``, ``kl`` (VAE), ``adversarial_loss`` and ``discriminator_loss``
    (adversary) and ``validation_loss`` (reconstruction MSE of the validation cells or pairs).

    Parameters
    ----------
    module
        An :class:`~hcitools.module.MTAeModule`.
    lr, weight_decay
        Adam parameters (the discriminator uses ``lr`` without weight decay).
    kl_weight
        Weight of the KL term (VAE).
    adversarial_weight
        Weight of the encoder's adversarial loss.
    pos_weight
        Weight of the perturbed class in the condition adversary's losses.
    n_discriminator_steps
        Discriminator updates per batch.
    """

    def __init__(
        self,
        module,
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        kl_weight: float = 0.005,
        adversarial_weight: float = 1.0,
        pos_weight: float | None = None,
        n_discriminator_steps: int = 1,
    ):
        super().__init__()
        self.module = module
        self.lr, self.weight_decay = lr, weight_decay
        self.pos_weight, self.n_discriminator_steps = pos_weight, n_discriminator_steps
        self.loss_kwargs = {
            "kl_weight": kl_weight,
            "adversarial_weight": adversarial_weight,
            "pos_weight": pos_weight,
        }
        self.automatic_optimization = False
        self._train_means, self._val_means = EpochMeans(), EpochMeans()

    def configure_optimizers(self):
        ae = [p for n, p in self.module.named_parameters() if not n.startswith("discriminator.")]
        opts = [_adam(ae, lr=self.lr, weight_decay=self.weight_decay)]
        if self.module.discriminator is not None:
            opts.append(_adam(list(self.module.discriminator.parameters()), lr=self.lr))
        return opts

    def _log(self, name: str, value, n: int) -> None:
        """Add a batch's term to its epoch mean (:class:`EpochMeans`: one ``self.log`` per term and epoch)."""
        means = self._val_means if name == "validation_loss" else self._train_means
        means.add(name, value, n)

    def on_train_epoch_end(self):
        self._train_means.log(self, prog_bar=("train_loss",))

    def on_validation_epoch_end(self):
        self._val_means.log(self, prog_bar=("validation_loss",))

    def training_step(self, batch, batch_idx):
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        inference, _, out = self.module(batch, loss_kwargs=self.loss_kwargs)
        n = out.n_obs_minibatch
        opts[0].zero_grad(set_to_none=True)
        self.manual_backward(out.loss)
        opts[0].step()
        self._log("train_loss", out.loss.detach(), n)
        self._log("reconstruction_loss", out.extra_metrics["mse"], n)
        if self.module.variational:
            self._log("kl", out.extra_metrics["kl"], n)
        if self.module.discriminator is not None:
            z, condition = inference["z"].detach(), batch[PERTURBATION_REGISTRY_KEYS.CONDITION]
            for _ in range(self.n_discriminator_steps):
                d_loss = self.module.discriminator_loss(z, condition, self.pos_weight)
                opts[1].zero_grad(set_to_none=True)
                self.manual_backward(d_loss)
                opts[1].step()
            self._log("discriminator_loss", d_loss.detach(), n)
            if "adversarial_loss" in out.extra_metrics:
                self._log("adversarial_loss", out.extra_metrics["adversarial_loss"], n)

    def validation_step(self, batch, batch_idx):
        _, _, out = self.module(batch, loss_kwargs=self.loss_kwargs)
        self._log("validation_loss", out.extra_metrics["mse"], out.n_obs_minibatch)
