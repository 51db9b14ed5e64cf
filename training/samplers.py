"""Samplers: how a method turns requested labels into latents for the frozen decoder.

``lcs eval`` scores any sampler the same way. A sampler is built from (bundle dir, label set,
VAE) and maps a float label matrix (n x K, 0/1) to latents (n x d). Add one by registering a
factory in SAMPLERS; later methods (latent-constraint actors, optimisation, baselines) plug in here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import torch

from models.vae import VAE


class Sampler(Protocol):
    name: str
    conditional: bool

    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Latents (n x d) for n rows of requested labels (rows may be ignored if not conditional)."""


class PriorSampler:
    """z ~ N(0, I), ignoring the labels: the unconditional VAE, the floor every method must beat."""

    name = "prior"
    conditional = False

    def __init__(self, latent_dim: int):
        self.latent_dim = latent_dim

    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(len(labels), self.latent_dim, generator=generator)


SAMPLERS: dict[str, Callable[[Path, str, VAE], Sampler]] = {
    "prior": lambda bundle, label_set, vae: PriorSampler(vae.cfg.latent_dim),
}


def build_sampler(name: str, bundle: Path, label_set: str, vae: VAE) -> Sampler:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose from {sorted(SAMPLERS)}")
    return SAMPLERS[name](Path(bundle), label_set, vae)
