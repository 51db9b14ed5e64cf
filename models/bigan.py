"""BiGAN / ALI (Donahue et al. 2017; Dumoulin et al. 2017): a GAN with an encoder, so latent constraints can later
condition it post hoc like the VAE.

- generator G(z), z ~ N(0, I): the VAE's Decoder; encoder E(x): the VAE's Encoder, read as deterministic (BiGAN: μ)
  or as a Gaussian q(z|x) sampled with reparameterisation (ALI, ``stochastic=True``);
- discriminator D(x, z) on joint pairs, as ALI's: an image trunk (the VAE's conv trunk) and a latent MLP, joined by
  an MLP, with dropout (ALI's, against a discriminator that memorises the pairs);
- D: cross-entropy, real pairs (x, E(x)) -> 1, fake pairs (G(z), z) -> 0;
- E and G together: the swapped-labels loss, real pairs -> 0 and fake pairs -> 1. It is the non-saturating loss
  applied to both players: the minimax form log(1 − D) gives G and E vanishing gradients while D still rejects their
  pairs easily, which is the whole start of training. At D's optimum both have the same fixed point (the two joint
  distributions equal, so E inverts G).
The (E, G) pair has the VAE's module names and sizes: ``as_vae`` / ``save_as_vae`` export it as a conv-vae-v1
artifact that ``models.vae.load_vae``, ``lcs encode`` and label-set training read unchanged. ``models.gaia`` reuses
``Invertible`` and ``save_as_vae``.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from models.vae import ARCH as VAE_ARCH
from models.vae import VAE, Decoder, Encoder, HasBackbone, VAEConfig, conv_trunk

ARCH = "conv-bigan-v1"
EXPORT_FORMAT = 2  # 2: a model without a prior exports standardised latents (``Invertible.as_vae``); 1 did not


@dataclass(frozen=True)
class BiGANConfig(HasBackbone):
    backbone: VAEConfig  # sizes of E and G (its sigma_x and beta are unused: there is no likelihood)
    stochastic: bool = False  # ALI: E(x) = μ + σ·ε from the encoder's (μ, log σ²); BiGAN (False): E(x) = μ
    sigma_z: float = 0.1  # BiGAN: the σ that ``encode`` reports for every latent (see ``Invertible.encode``)
    dis_width: int = 256  # D's latent MLP and image features; the joint MLP is twice as wide
    dis_dropout: float = 0.2  # after every hidden layer of D (ALI's)


class Invertible(nn.Module):
    """An encoder and a decoder under the VAE's names (``encoder.*``, ``decoder.*``), read like a VAE. A
    deterministic encoder has no posterior; it reports a fixed σ = ``cfg.sigma_z`` for every latent."""

    cfg: BiGANConfig  # or any config with ``backbone`` and ``sigma_z``
    encoder: Encoder
    decoder: Decoder
    has_prior = True  # the decoder was trained on z ~ N(0, I) (BiGAN); GAIA's never saw a prior: see ``as_vae``

    @property
    def pinned_logvar(self) -> float | None:
        """log σ² that ``encode`` reports, or None where the encoder's own log σ² is the posterior's."""
        return 2 * math.log(self.cfg.sigma_z)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, σ) as ``VAE.encode`` returns them, so ``lcs encode``'s latent table reads this model. A deterministic
        encoder's σ is the fixed ``sigma_z``: the table's σ̄ becomes sigma_z, which scales the latent constraints'
        distance penalty (log(1 + Δz²)/σ̄²) and the noise label-set training adds to μ."""
        mu, logvar = self.encoder(x)
        if self.pinned_logvar is not None:
            logvar = torch.full_like(mu, self.pinned_logvar)
        return mu, torch.exp(0.5 * logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1]."""
        return self.decoder(z)

    def as_vae(self, standardise: tuple[torch.Tensor, torch.Tensor] | None = None) -> VAE:
        """The (E, G) pair as a ``models.vae.VAE`` with the same encode/decode outputs. A deterministic encoder's
        log σ² half of the head is pinned (zero weights, bias log sigma_z²), so the VAE reports the same fixed σ.

        ``standardise`` = (mean, std) of E's latents on the data, folded into E's head and G's first layer: the
        exported latents are (μ − mean) / std and decode to the same images. For a model trained without a prior
        (GAIA), whose latents sit far from the N(0, I) that latent constraints sample and scale σ̄ against."""
        vae = VAE(self.cfg.backbone)
        vae.load_state_dict({k: v for k, v in self.state_dict().items() if k.startswith(("encoder.", "decoder."))})
        d = self.cfg.backbone.latent_dim
        with torch.no_grad():
            if standardise is not None:
                mean, std = (t.to(vae.decoder.fc.weight) for t in standardise)
                head, fc = vae.encoder.head, vae.decoder.fc
                head.weight[:d] /= std[:, None]
                head.bias[:d] = (head.bias[:d] - mean) / std
                fc.bias += fc.weight @ mean
                fc.weight *= std[None, :]
            if self.pinned_logvar is not None:
                vae.encoder.head.weight[d:].zero_()
                vae.encoder.head.bias[d:].fill_(self.pinned_logvar)
        return vae.eval().requires_grad_(False)


def save_as_vae(
    model: Invertible, directory, manifest: dict, standardise: tuple[torch.Tensor, torch.Tensor] | None = None
) -> VAE:
    """Write ``model.as_vae(standardise)`` as DIR/vae.safetensors + vae.json, the artifact ``lcs encode`` reads.
    ``manifest`` carries what ``train_vae`` records (``dataset`` with name and params is required by ``lcs encode``
    without a dataset argument; ``training``, ``command``, ``metrics``); kind, arch, config and the decoder
    fingerprint are set here, ``exported_from`` names the source architecture, ``export`` how it was exported."""
    from models.artifacts import fingerprint, save_artifact

    vae = model.as_vae(standardise)
    state = vae.state_dict()
    save_artifact(
        directory,
        "vae",
        state,
        {
            **manifest,
            "kind": "vae",
            "arch": VAE_ARCH,
            "config": vae.cfg.to_json(),
            "exported_from": sys.modules[type(model).__module__].ARCH,
            "export": {"format": EXPORT_FORMAT, "standardised": standardise is not None},
            "decoder_fingerprint": fingerprint({k: v for k, v in state.items() if k.startswith("decoder.")}),
        },
    )
    return vae


class JointDiscriminator(nn.Module):
    """D(x, z) -> logit: image features and latent features, joined (ALI's layout)."""

    def __init__(self, cfg: BiGANConfig):
        super().__init__()
        w, p = cfg.dis_width, cfg.dis_dropout
        trunk, n = conv_trunk(cfg.backbone)
        self.image = nn.Sequential(trunk, nn.Flatten(), nn.Linear(n, w), nn.LeakyReLU(0.2), nn.Dropout(p))
        self.latent = nn.Sequential(
            nn.Linear(cfg.backbone.latent_dim, w),
            nn.LeakyReLU(0.2),
            nn.Dropout(p),
            nn.Linear(w, w),
            nn.LeakyReLU(0.2),
            nn.Dropout(p),
        )
        self.joint = nn.Sequential(nn.Linear(2 * w, 2 * w), nn.LeakyReLU(0.2), nn.Dropout(p), nn.Linear(2 * w, 1))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.image(x * 2 - 1), self.latent(z.to(x.dtype))], 1)
        return self.joint(h).float().squeeze(1)


class BiGAN(Invertible):
    adam_betas = (0.5, 0.999)  # DCGAN's Adam setting for adversarial games, read by ``lcs train-baseline``

    def __init__(self, cfg: BiGANConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg.backbone)
        self.decoder = Decoder(cfg.backbone)
        self.discriminator = JointDiscriminator(cfg)

    @property
    def pinned_logvar(self) -> float | None:
        return None if self.cfg.stochastic else super().pinned_logvar

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) as D sees it: μ (BiGAN) or a draw μ + σ·ε (ALI)."""
        mu, logvar = self.encoder(x)
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.cfg.stochastic else mu

    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "discriminator": list(self.discriminator.parameters()),
            "generator": list(self.encoder.parameters()) + list(self.decoder.parameters()),
        }

    def step_losses(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Iterator[tuple[str, torch.Tensor, dict]]:
        """(optimiser group, loss, info) in order; the trainer steps D before E and G's loss is computed, so they
        play against the updated D. ``y`` is ignored (unconditional), taken so the baseline trainer's call works."""
        z_real = self.infer(x)
        z_fake = torch.randn_like(z_real)
        x_fake = self.decoder(z_fake)

        bce = F.binary_cross_entropy_with_logits
        real = self.discriminator(x, z_real.detach())
        fake = self.discriminator(x_fake.detach(), z_fake)
        loss_d = bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))
        acc = 0.5 * ((real > 0).float().mean() + (fake < 0).float().mean())
        yield "discriminator", loss_d, {"loss_d": loss_d.item(), "d_acc": acc.item()}

        self.discriminator.requires_grad_(False)
        try:
            real = self.discriminator(x, z_real)
            fake = self.discriminator(x_fake, z_fake)
            loss_g = bce(real, torch.zeros_like(real)) + bce(fake, torch.ones_like(fake))
        finally:
            self.discriminator.requires_grad_(True)
        yield "generator", loss_g, {"loss_g": loss_g.item()}


def load_bigan(directory, device: str | torch.device = "cpu") -> tuple[BiGAN, dict]:
    from models.artifacts import load_model

    extra = ("label_rows", "label_counts")  # stored beside every image baseline's weights (``lcs train-baseline``)
    model, manifest, _ = load_model(directory, "bigan", ARCH, lambda cfg: BiGAN(BiGANConfig.from_json(cfg)), extra)
    return model.to(device), manifest
