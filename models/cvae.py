"""Conditional VAE: the retrain-per-label-set reference, on the same conv backbone as our VAE.

The labels y (K columns, 0/1) enter the encoder as K constant image planes beside the pixels and
the decoder as K extra inputs beside z: q(z|x, y), p(x|z, y). The prior is N(0, I), or with
``learned_prior`` a diagonal Gaussian p(z|y) from a small MLP (the CMMA variant), so sampling for
a label row starts where that row's encodings live. Same fixed-σ_x Gaussian decoder and β as the VAE.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator

import torch
from torch import nn

from models.latent import LabelKind
from models.vae import Decoder, Encoder, OnBackbone, VAEConfig, elbo

ARCH = "conv-cvae-v1"


@dataclass
class CVAEConfig(OnBackbone):
    backbone: VAEConfig
    attr_names: list[str] = field(default_factory=list)
    kind: LabelKind = "binary"
    learned_prior: bool = False
    prior_width: int = 128


class CVAE(nn.Module):
    def __init__(self, cfg: CVAEConfig):
        super().__init__()
        b, k = cfg.backbone, cfg.n_labels
        self.cfg = cfg
        self.encoder = Encoder(replace(b, channels=b.channels + k))
        self.decoder = Decoder(replace(b, latent_dim=b.latent_dim + k))
        self.prior = (
            nn.Sequential(nn.Linear(k, cfg.prior_width), nn.SiLU(), nn.Linear(cfg.prior_width, 2 * b.latent_dim))
            if cfg.learned_prior
            else None
        )

    @property
    def label_config(self) -> CVAEConfig:
        """The label columns it conditions on (shared name with CVAEGAN)."""
        return self.cfg

    def _encoder_params(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        planes = y.to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:])
        return self.encoder(torch.cat([x, planes], 1))

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, σ) of q(z|x, y)."""
        mu, logvar = self._encoder_params(x, y)
        return mu, torch.exp(0.5 * logvar)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([z, y.to(z.dtype)], 1))

    def prior_params(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        """(μ, log σ²) of p(z|y); (None, None) for the standard normal prior."""
        if self.prior is None:
            return None, None
        mu, logvar = self.prior(y.float()).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 5)

    def sample_latents(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(len(y), self.cfg.backbone.latent_dim, generator=generator).to(y.device)
        mu, logvar = self.prior_params(y)
        return eps if mu is None else mu + eps * torch.exp(0.5 * logvar)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        mu, logvar = self._encoder_params(x, y)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        pmu, plogvar = self.prior_params(y)
        return elbo(x, self.decode(z, y), mu, logvar, self.cfg.backbone, pmu, plogvar)

    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"model": list(self.parameters())}

    def step_losses(self, x: torch.Tensor, y: torch.Tensor) -> Iterator[tuple[str, torch.Tensor, dict]]:
        """The trainer's interface (see ``models.cvaegan``): one group, the negative ELBO."""
        parts = self.loss(x, y)
        yield "model", parts["loss"], {k: v.item() for k, v in parts.items()}


def load_cvae(directory, device: str | torch.device = "cpu") -> tuple[CVAE, dict, dict[str, torch.Tensor]]:
    """-> (model, manifest, extra tensors: ``label_rows``/``label_counts``, the distinct training label rows)."""
    from models.artifacts import load_model

    extra = ("label_rows", "label_counts")
    model, manifest, tensors = load_model(directory, "cvae", ARCH, lambda cfg: CVAE(CVAEConfig.from_json(cfg)), extra)
    return model.to(device), manifest, {k: tensors[k] for k in extra}
