"""Convolutional VAE with a fixed-σ Gaussian decoder (the paper's sharp-reconstruction setting).

-log p(x|z) = Σ_pixels (x − μ(z))² / (2σ_x²) + D·log(σ_x √(2π)); KL summed over latent dims; β = 1.
Small σ_x (0.1) weights reconstruction heavily: sharp reconstructions, but prior samples land
off the data manifold — the gap the latent constraints close.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Iterator

import torch
from torch import nn

ARCH = "conv-vae-v1"


@dataclass
class VAEConfig:
    channels: int = 3
    image_size: int = 64  # 64 (4 stride-2 stages to 4x4) or 28 (2 stages to 7x7)
    latent_dim: int = 128
    width: int = 32  # channels of the first stage; doubles each stage
    res_blocks: int = 0  # residual blocks after every stage of the encoder and the decoder (0: none, as shipped)
    sigma_x: float = 0.1
    beta: float = 1.0

    @property
    def stages(self) -> int:
        if self.image_size == 64:
            return 4
        if self.image_size == 28:
            return 2
        raise ValueError(f"image_size must be 64 or 28, got {self.image_size}")

    @property
    def feature_size(self) -> int:
        return self.image_size // 2**self.stages

    def widths(self) -> list[int]:
        return [self.width * 2**i for i in range(self.stages)]

    def to_json(self) -> dict:
        return asdict(self)


class HasBackbone:
    """For the configs of networks built on this backbone (BiGAN, GAIA, InfoGAN, and with labels ``OnBackbone``):
    the JSON round trip of the nested VAEConfig, written once."""

    backbone: VAEConfig

    def to_json(self) -> dict:
        return {**asdict(self), "backbone": self.backbone.to_json()}

    @classmethod
    def from_json(cls, d: dict):
        return cls(**{**d, "backbone": VAEConfig(**d["backbone"])})


class OnBackbone(HasBackbone):
    """For the configs of networks built on this backbone for a label set (CVAE, Fader network, Triple-GAN)."""

    attr_names: list[str]

    @property
    def n_labels(self) -> int:
        return len(self.attr_names)


class ResBlock(nn.Module):
    """x + conv(SiLU(conv(SiLU(x)))): depth at every resolution without losing the identity path."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.SiLU(), nn.Conv2d(c, c, 3, 1, 1), nn.SiLU(), nn.Conv2d(c, c, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def conv_trunk(cfg: VAEConfig) -> tuple[nn.Sequential, int]:
    """Stride-2 4x4 convs; an extra 3x3 conv only at resolutions <= 16 (cheap on CPU), then ``res_blocks``
    residual blocks per stage. Returns the trunk and its flattened output size; the encoder and the
    baselines' critics share it."""
    layers, c_in, res = [], cfg.channels, cfg.image_size
    for c in cfg.widths():
        res //= 2
        layers += [nn.Conv2d(c_in, c, 4, 2, 1), nn.SiLU()]
        if res <= 16:
            layers += [nn.Conv2d(c, c, 3, 1, 1), nn.SiLU()]
        layers += [ResBlock(c) for _ in range(cfg.res_blocks)]
        c_in = c
    return nn.Sequential(*layers), c_in * cfg.feature_size**2


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.conv, features = conv_trunk(cfg)
        self.head = nn.Linear(features, 2 * cfg.latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (μ, log σ²) of q(z|x) for images in [0, 1]."""
        h = self.conv(x * 2 - 1).flatten(1)
        mu, logvar = self.head(h).float().chunk(2, dim=1)  # fp32 under bf16 autocast: the KL and σ need it
        return mu, logvar.clamp(-30, 20)


class Decoder(nn.Module):
    """Mirror of the encoder; the last upsampling stage halves its width to keep full-res work small."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        widths = cfg.widths()[::-1]
        self.shape = (widths[0], cfg.feature_size, cfg.feature_size)
        self.fc = nn.Linear(cfg.latent_dim, widths[0] * cfg.feature_size**2)
        layers, res = [], cfg.feature_size
        outs = widths[1:] + [max(widths[-1] // 2, 8)]
        for c_in, c_out in zip(widths, outs, strict=True):
            res *= 2
            layers += [nn.SiLU(), nn.ConvTranspose2d(c_in, c_out, 4, 2, 1)]
            if res <= 16:
                layers += [nn.SiLU(), nn.Conv2d(c_out, c_out, 3, 1, 1)]
            layers += [ResBlock(c_out) for _ in range(cfg.res_blocks)]
        layers += [nn.SiLU(), nn.Conv2d(outs[-1], cfg.channels, 3, 1, 1)]
        self.conv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Mean image μ(z) in [0, 1], fp32 also under bf16 autocast (bf16 steps by 1/256 near 1: coarser than the
        pixel errors the σ_x = 0.1 likelihood weighs)."""
        return self.image(self.fc(z))

    def image(self, h: torch.Tensor) -> torch.Tensor:
        """The convolutional part, from fc's output (the server runs the two at different batch sizes)."""
        return torch.sigmoid(self.conv(h.view(-1, *self.shape)).float())


class VAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, σ) of q(z|x)."""
        mu, logvar = self.encoder(x)
        return mu, torch.exp(0.5 * logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Negative ELBO per image (nats) and its parts; ``loss`` is what training minimises."""
        mu, logvar = self.encoder(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return elbo(x, self.decoder(z), mu, logvar, self.cfg)

    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"vae": list(self.parameters())}

    def step_losses(self, x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor, dict[str, torch.Tensor]]]:
        """The trainer's interface (shared with ``models.vaegan``): one optimiser group, the negative ELBO."""
        parts = self.loss(x)
        yield "vae", parts["loss"], parts


def elbo(
    x: torch.Tensor,
    xhat: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    cfg: VAEConfig,
    prior_mu: torch.Tensor | None = None,
    prior_logvar: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Negative ELBO with the fixed-σ_x Gaussian decoder; KL to N(0, I), or to a learned prior
    N(prior_mu, e^prior_logvar)."""
    sq = (x - xhat).pow(2).flatten(1)
    d = sq.shape[1]
    s = cfg.sigma_x
    nll = sq.sum(1) / (2 * s * s) + d * math.log(s * math.sqrt(2 * math.pi))
    if prior_mu is None:
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    else:
        kl = 0.5 * (prior_logvar - logvar + (logvar.exp() + (mu - prior_mu).pow(2)) / prior_logvar.exp() - 1).sum(1)
    loss = (nll + cfg.beta * kl).mean()
    return {"loss": loss, "nll": nll.mean().detach(), "kl": kl.mean().detach(), "mse": sq.mean().detach()}


def grow(vae: VAE, base: VAE) -> None:
    """Load ``base`` (no residual blocks) into ``vae`` (the same sizes with them) so that ``vae`` starts as the same
    function: every other layer copied in order, each block's last conv zeroed (x + 0 = x). Capacity added to a
    trained VAE costs no restart (issue 26's grown candidate)."""
    if base.cfg.res_blocks or replace(vae.cfg, res_blocks=0) != base.cfg:
        raise ValueError(
            f"cannot grow {base.cfg.to_json()} into {vae.cfg.to_json()}: only residual blocks can be added"
        )
    for new, old in ((vae.encoder.conv, base.encoder.conv), (vae.decoder.conv, base.decoder.conv)):
        for dst, src in zip((m for m in new if not isinstance(m, ResBlock)), old, strict=True):
            dst.load_state_dict(src.state_dict())
        for block in (m for m in new if isinstance(m, ResBlock)):
            nn.init.zeros_(block.body[-1].weight)
            nn.init.zeros_(block.body[-1].bias)
    vae.encoder.head.load_state_dict(base.encoder.head.state_dict())
    vae.decoder.fc.load_state_dict(base.decoder.fc.state_dict())


def load_vae(directory, device: str | torch.device = "cpu") -> tuple[VAE, dict]:
    """Load vae.safetensors + vae.json, refusing weights that do not match the recorded decoder fingerprint."""
    from models.artifacts import ArtifactError, fingerprint, load_model

    vae, manifest, tensors = load_model(directory, "vae", ARCH, lambda cfg: VAE(VAEConfig(**cfg)))
    found = fingerprint({k: v for k, v in tensors.items() if k.startswith("decoder.")})
    if found != manifest.get("decoder_fingerprint"):
        raise ArtifactError(f"{directory}: decoder weights do not match the fingerprint in vae.json")
    return vae.to(device), manifest
