"""GAIA (Sainburg et al. 2018, "Generative adversarial interpolative autoencoding"): an autoencoder trained
adversarially on its reconstructions and on decodings of interpolations between real latents, so that the latent
space is convex (midpoints decode to realistic images) and latent constraints can later condition it like the VAE.

- generator: the VAE's Encoder (deterministic: μ) and Decoder, an autoencoder;
- discriminator: a second autoencoder (BEGAN-style) whose per-image mean absolute pixel error L(v) = |v − C(v)| is its
  score (low: real);
- the generator's images: reconstructions x_r = G(E(x)) and interpolations x_i = G(α z_1 + (1 − α) z_2) between
  each image's latent and its neighbour's in the batch, α ~ N(0.5, alpha_std²) clipped to [0, 1] (near the midpoint,
  as the paper samples them: there interpolations stray furthest from the data; the spread is ours);
- discriminator: BEGAN's loss L(x) − k_t·L_fake, L_fake the mean of L(x_r) and L(x_i), with k_t ∈ [0, 1] following
  k_t += λ_k (γ L(x) − L_fake) after every training step: BEGAN's balance, chosen over a fixed weight because it keeps
  the critic from winning outright (it only pushes fakes' error up while they are within γ of the real error);
- generator: L(x_r) + interp_weight·L(x_i) + rec_weight·|x − x_r| (its own L1 reconstruction error keeps the codes
  faithful to the inputs; interp_weight 0 leaves a BEGAN-trained autoencoder, the ablation without interpolations).
``encode`` / ``decode`` / ``as_vae`` / ``save_as_vae`` as in ``models.bigan`` (σ reported: the fixed sigma_z); no
prior, so the exported latents are standardised on the data (mean 0, std 1 per dimension).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator

import torch
from torch import nn

from models.bigan import Invertible
from models.vae import Decoder, Encoder, HasBackbone, VAEConfig, conv_trunk

ARCH = "conv-gaia-v1"


@dataclass(frozen=True)
class GAIAConfig(HasBackbone):
    backbone: VAEConfig  # sizes of the generator's encoder and decoder, and of the critic's trunk
    sigma_z: float = 0.1  # the σ that ``encode`` reports for every latent (the encoder is deterministic)
    critic_dim: int = 64  # the critic autoencoder's bottleneck (BEGAN's h)
    rec_weight: float = 1.0  # the generator's own reconstruction error
    interp_weight: float = 1.0  # the critic's error on decoded interpolations, in the generator's loss
    alpha_std: float = 0.25  # spread of the interpolation weight α around 0.5
    gamma: float = 0.5  # BEGAN's balance: the critic's error on fakes is held near γ times its error on real images
    lambda_k: float = 1e-3  # BEGAN's step size for k_t


class CriticAutoencoder(nn.Module):
    """The discriminator: an autoencoder on the VAE's trunk and decoder, scored by its reconstruction error."""

    def __init__(self, cfg: GAIAConfig):
        super().__init__()
        trunk, n = conv_trunk(cfg.backbone)
        self.encoder = nn.Sequential(trunk, nn.Flatten(), nn.Linear(n, cfg.critic_dim))
        self.decoder = Decoder(replace(cfg.backbone, latent_dim=cfg.critic_dim))

    def error(self, x: torch.Tensor) -> torch.Tensor:
        """Per-image mean absolute pixel error of the critic's reconstruction (BEGAN's L with η = 1)."""
        return (x - self.decoder(self.encoder(x * 2 - 1))).abs().flatten(1).mean(1)


class GAIA(Invertible):
    adam_betas = (0.5, 0.999)  # DCGAN's Adam setting for adversarial games, read by ``lcs train-baseline``
    has_prior = False  # its latents are whatever reconstruction found: exported standardised (``as_vae``)

    def __init__(self, cfg: GAIAConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg.backbone)  # its log σ² half is unused (deterministic); ``as_vae`` pins it
        self.decoder = Decoder(cfg.backbone)
        self.critic = CriticAutoencoder(cfg)
        self.register_buffer("k", torch.zeros(()))  # BEGAN's k_t, saved with the weights so training resumes

    def interpolate(self, x1: torch.Tensor, x2: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
        """Decodings of α E(x1) + (1 − α) E(x2); α a number or one per pair (α = 1: x1's reconstruction)."""
        z1, z2 = self.encoder(x1)[0], self.encoder(x2)[0]
        a = torch.as_tensor(alpha, dtype=z1.dtype, device=z1.device).reshape(-1, 1)
        return self.decoder(a * z1 + (1 - a) * z2)

    def mix(self, z: torch.Tensor) -> torch.Tensor:
        """Interpolations between each latent and its neighbour in the batch, α drawn around 0.5."""
        a = (0.5 + self.cfg.alpha_std * torch.randn(len(z), 1, device=z.device)).clamp(0, 1)
        return a * z + (1 - a) * z.roll(1, 0)

    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "discriminator": list(self.critic.parameters()),
            "generator": list(self.encoder.parameters()) + list(self.decoder.parameters()),
        }

    def step_losses(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Iterator[tuple[str, torch.Tensor, dict]]:
        """(optimiser group, loss, info) in order; the trainer steps the critic before the generator's loss is
        computed. k_t advances once per training step (not in eval mode). ``y`` is ignored (unconditional)."""
        c = self.cfg
        z = self.encoder(x)[0]
        x_r = self.decoder(z)
        x_i = self.decoder(self.mix(z))

        e_real = self.critic.error(x).mean()
        e_fake = self.critic.error(torch.cat([x_r, x_i]).detach()).mean()
        loss_d = e_real - self.k.clone() * e_fake  # a copy: k_t advances in place below
        yield "discriminator", loss_d, {"loss_d": loss_d.item(), "err_real": e_real.item(), "err_fake": e_fake.item()}

        self.critic.requires_grad_(False)
        try:
            e_r = self.critic.error(x_r).mean()
            e_i = self.critic.error(x_i).mean()
            rec = (x - x_r).abs().mean()
            loss_g = e_r + c.interp_weight * e_i + c.rec_weight * rec
        finally:
            self.critic.requires_grad_(True)
        balance = (c.gamma * e_real - e_fake).item()
        if self.training:
            self.k.copy_((self.k + c.lambda_k * balance).clamp(0, 1))
        info = {"loss_g": loss_g.item(), "err_rec": e_r.item(), "err_interp": e_i.item(), "rec": rec.item()}
        # BEGAN's convergence measure: low when the critic reconstructs real images well and the balance holds
        yield "generator", loss_g, {**info, "k": self.k.item(), "convergence": e_real.item() + abs(balance)}


def load_gaia(directory, device: str | torch.device = "cpu") -> tuple[GAIA, dict]:
    from models.artifacts import load_model

    extra = ("label_rows", "label_counts")  # stored beside every image baseline's weights (``lcs train-baseline``)
    model, manifest, _ = load_model(directory, "gaia", ARCH, lambda cfg: GAIA(GAIAConfig.from_json(cfg)), extra)
    return model.to(device), manifest
