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


def load_labelset(bundle: Path, name: str):
    """A label set's mappers from BUNDLE/labelsets/NAME, checked against the bundle's decoder."""
    from models.artifacts import load_manifest
    from models.latent import load_mappers

    return load_mappers(bundle / "labelsets" / name, load_manifest(bundle, "vae")["decoder_fingerprint"])


class ActorSampler:
    """Amortised: z = G(z_p, y) for z_p ~ N(0, I), one forward pass."""

    name, conditional = "actor", True

    def __init__(self, bundle: Path, label_set: str):
        self.m, self.manifest, _ = load_labelset(bundle, label_set)

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn(len(labels), self.m.cfg.latent_dim, generator=generator)
        return self.m.actor(z, labels if self.m.cfg.n_labels else None)


class RealismSampler(ActorSampler):
    """Unconditional realism mapper G(z_p): prior samples moved onto the data manifold."""

    name, conditional = "realism", False

    def __init__(self, bundle: Path, label_set: str):
        super().__init__(bundle, "realism")

    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return super().sample(torch.zeros(len(labels), 0), generator)


class OptimizeSampler:
    """Optimisation mode: Adam on z from z_p ~ N(0, I) against D(z, y) and D_attr (all attributes specified)."""

    name, conditional = "optimize", True

    def __init__(self, bundle: Path, label_set: str):
        from training.optimize import OptimizeConfig

        self.m, self.manifest, _ = load_labelset(bundle, label_set)
        self.cfg = OptimizeConfig()

    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        from training.optimize import optimize_latents

        z0 = torch.randn(len(labels), self.m.cfg.latent_dim, generator=generator)
        return torch.cat([optimize_latents(self.m, z0[s: s + 1024], labels[s: s + 1024], None, self.cfg)[0]
                          for s in range(0, len(labels), 1024)])


SAMPLERS: dict[str, Callable[[Path, str, VAE], Sampler]] = {
    "prior": lambda bundle, label_set, vae: PriorSampler(vae.cfg.latent_dim),
    "realism": lambda bundle, label_set, vae: RealismSampler(bundle, label_set),
    "actor": lambda bundle, label_set, vae: ActorSampler(bundle, label_set),
    "optimize": lambda bundle, label_set, vae: OptimizeSampler(bundle, label_set),
}


def build_sampler(name: str, bundle: Path, label_set: str, vae: VAE) -> Sampler:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose from {sorted(SAMPLERS)}")
    return SAMPLERS[name](Path(bundle), label_set, vae)
