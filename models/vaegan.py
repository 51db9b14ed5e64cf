"""VAE-GAN (Larsen et al., 2016) as a backbone candidate: the σ_x = 0.1 VAE plus an image discriminator.

The discriminator D(x) only shapes training; what ships is the VAE (same arch, same artifact), so everything
downstream (latent table, label sets, the server) is unchanged. Losses, every norm summed per image and
averaged over the batch:
- D: cross-entropy, real x -> 1, reconstructions x_r = dec(z ~ q(z|x)) and prior samples x_p = dec(z ~ N(0, I)) -> 0;
- VAE: the negative ELBO with the fixed-σ_x Gaussian decoder (unchanged), plus
  fm · ½‖f_D(x) − f_D(x_r)‖²   (feature matching: Larsen's learned similarity, here *added* to the pixel term), plus
  adv · [BCE(D(x_r) -> 1) + BCE(D(x_p) -> 1)]   (non-saturating generator loss).
With fm = adv = 0 it is the plain VAE step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from models.cvaegan import FeatureNet
from models.vae import VAE, elbo


@dataclass(frozen=True)
class VAEGANConfig:
    adv: float = 0.0  # weight of the generator's adversarial term
    fm: float = 0.0  # weight of feature matching on the discriminator's feature layer
    feature_dim: int = 256  # width of f_D

    @property
    def enabled(self) -> bool:
        return self.adv > 0 or self.fm > 0

    def to_json(self) -> dict:
        return asdict(self)


class VAEGAN(nn.Module):
    """The VAE and its image discriminator, trained together; ``vae`` is what gets saved as the artifact."""

    def __init__(self, vae: VAE, cfg: VAEGANConfig):
        super().__init__()
        self.cfg = cfg
        self.vae = vae
        self.discriminator = FeatureNet(vae.cfg, cfg.feature_dim, 1)

    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"discriminator": list(self.discriminator.parameters()), "vae": list(self.vae.parameters())}

    def step_losses(self, x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor, dict[str, torch.Tensor]]]:
        """(optimiser group, loss, parts) in order; the trainer steps D before the VAE's loss is computed."""
        mu, logvar = self.vae.encoder(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        x_r = self.vae.decoder(z)
        x_p = self.vae.decoder(torch.randn_like(mu))

        d_real, _ = self.discriminator(x)
        d_fake, _ = self.discriminator(torch.cat([x_r, x_p]).detach())
        bce = F.binary_cross_entropy_with_logits
        loss_d = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
        yield "discriminator", loss_d, {"loss_d": loss_d.detach()}

        self.discriminator.requires_grad_(False)
        try:
            _, f_x = self.discriminator(x)
            logit_r, f_r = self.discriminator(x_r)
            logit_p, _ = self.discriminator(x_p)
            fm = 0.5 * (f_x - f_r).pow(2).sum(1).mean()
            adv = bce(logit_r, torch.ones_like(logit_r)) + bce(logit_p, torch.ones_like(logit_p))
            parts = elbo(x, x_r, mu, logvar, self.vae.cfg)
            loss = parts["loss"] + self.cfg.fm * fm + self.cfg.adv * adv
        finally:
            self.discriminator.requires_grad_(True)
        yield "vae", loss, {**parts, "loss": loss.detach(), "fm": fm.detach(), "adv": adv.detach()}
