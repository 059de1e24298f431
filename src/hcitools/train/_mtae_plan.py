"""Training plan of the MTAe family: reconstruction (or OT target) loss, optional KL, alternating adversary."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F


class MTAeTrainingPlan(pl.LightningModule):
    """Adam on the autoencoder; with a latent discriminator, alternate one discriminator step per batch.

    The adversarial term is ``adversarial_weight`` × the encoder's loss for fooling the discriminator: for
    ``adversary="condition"`` the discriminator predicts whether a cell is perturbed from its latent and the
    encoder is trained towards the opposite label; for ``"gaussian"`` the discriminator separates N(0, I) samples
    from latents and the encoder is trained to make its latents pass as samples. The weight is a fixed parameter,
    never learned. Logs ``train_loss``, ``reconstruction_loss``, ``kl``, ``adversarial_loss``,
    ``discriminator_loss`` and ``validation_loss`` (reconstruction MSE) per epoch.
    """

    def __init__(
        self,
        module,
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        kl_weight: float = 0.005,
        adversarial_weight: float = 1.0,
    ):
        super().__init__()
        self.module = module
        self.lr, self.weight_decay = lr, weight_decay
        self.kl_weight, self.adversarial_weight = kl_weight, adversarial_weight
        self.automatic_optimization = False

    def configure_optimizers(self):
        ae_params = [p for n, p in self.module.named_parameters() if not n.startswith("discriminator.")]
        opts = [torch.optim.Adam(ae_params, lr=self.lr, weight_decay=self.weight_decay)]
        if self.module.discriminator is not None:
            opts.append(torch.optim.Adam(self.module.discriminator.parameters(), lr=self.lr))
        return opts

    def _adversarial(self, z: torch.Tensor, perturbed: torch.Tensor, for_encoder: bool) -> torch.Tensor:
        module = self.module
        if module.adversary == "condition":
            target = 1.0 - perturbed if for_encoder else perturbed
            return F.binary_cross_entropy_with_logits(module.discriminate(z), target)
        prior = torch.randn_like(z)
        if for_encoder:
            return F.binary_cross_entropy_with_logits(module.discriminate(z), torch.ones_like(z[:, 0]))
        real = F.binary_cross_entropy_with_logits(module.discriminate(prior), torch.ones_like(z[:, 0]))
        fake = F.binary_cross_entropy_with_logits(module.discriminate(z), torch.zeros_like(z[:, 0]))
        return 0.5 * (real + fake)

    def training_step(self, batch, batch_idx):
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        inference, _, out = self.module(batch, loss_kwargs={"kl_weight": self.kl_weight})
        loss = out.loss
        n = out.n_obs_minibatch
        if self.module.discriminator is not None:
            adv = self._adversarial(inference["z"], batch["perturbed"], for_encoder=True)
            loss = loss + self.adversarial_weight * adv
            self.log("adversarial_loss", adv, on_step=False, on_epoch=True, batch_size=n)
        opts[0].zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opts[0].step()
        if self.module.discriminator is not None:
            d_loss = self._adversarial(inference["z"].detach(), batch["perturbed"], for_encoder=False)
            opts[1].zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opts[1].step()
            self.log("discriminator_loss", d_loss, on_step=False, on_epoch=True, batch_size=n)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("reconstruction_loss", out.extra_metrics["mse"], on_step=False, on_epoch=True, batch_size=n)
        if self.module.variational:
            self.log("kl", out.extra_metrics["kl"], on_step=False, on_epoch=True, batch_size=n)

    def validation_step(self, batch, batch_idx):
        _, _, out = self.module(batch, loss_kwargs={"kl_weight": self.kl_weight})
        self.log(
            "validation_loss",
            out.extra_metrics["mse"],
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=out.n_obs_minibatch,
        )
