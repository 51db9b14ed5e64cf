"""Latent-space networks of *Latent Constraints*: they condition a frozen VAE without touching it.

- ``Critic``  D(z, y): an MLP on [z, Linear(y)] -> one realism logit (real encoding with its labels).
- ``Actor``   G(z, y): the MLP emits dz and gate logits g; G = (1 − σ(g)) ⊙ z + σ(g) ⊙ dz, so it can
  leave a latent untouched (gate closed) or move it where the critic wants.
- ``AttrClassifier`` D_attr(z): attribute logits from a latent (used by optimisation mode, edits and energies).
An empty label set (K = 0) gives the unconditional realism mapper G(z). A *classifier* label set (``method``
"classifier") holds D_attr alone: trained in seconds, served by the energy sampler (``conditioning.energy``)
with the realism mapper's critic and actor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

# A label set's kind: independent 0/1 attributes, or exactly one of K classes.
LabelKind = Literal["binary", "categorical"]
# What a label set trains: critic + actor + D_attr (latent constraints), or D_attr alone.
Method = Literal["lc", "classifier"]

ARCH = "latent-constraints-mlp-v1"


@dataclass
class LatentConfig:
    latent_dim: int
    attr_names: list[str] = field(default_factory=list)
    kind: LabelKind = "binary"
    width: int = 256
    depth: int = 4
    label_embed: int = 64
    critic: Literal["concat", "projection"] = "concat"  # how D(z, y) takes the labels (see Critic)
    method: Method = "lc"

    @property
    def n_labels(self) -> int:
        return len(self.attr_names)

    def to_json(self) -> dict:
        return asdict(self)


def mlp(d_in: int, width: int, depth: int, d_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(d_in if i == 0 else width, width), nn.LeakyReLU(0.2)]
    layers.append(nn.Linear(width if depth else d_in, d_out))
    return nn.Sequential(*layers)


class _Conditioned(nn.Module):
    """[z, Linear(y)] input shared by critic and actor; y has K = 0 columns for the realism mapper
    (``concat`` False: the MLP sees z alone, the projection critic's φ)."""

    def __init__(self, cfg: LatentConfig, d_out: int, concat: bool = True):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Linear(cfg.n_labels, cfg.label_embed) if cfg.n_labels and concat else None
        self.net = mlp(cfg.latent_dim + (cfg.label_embed if self.embed else 0), cfg.width, cfg.depth, d_out)

    def labels(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if y is None or y.shape != (len(z), self.cfg.n_labels):
            raise ValueError(
                f"labels must be {len(z)} x {self.cfg.n_labels}, got {None if y is None else tuple(y.shape)}"
            )
        return y.to(z.dtype)

    def inputs(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if self.embed is None:
            return z
        return torch.cat([z, self.embed(self.labels(z, y))], 1)


class Critic(_Conditioned):
    """concat: MLP([z, Linear(y)]). projection (Miyato & Koyama, 2018): D(z, y) = ψ(φ(z)) + yᵀVφ(z), so the labels
    act on the critic's features directly instead of through one input layer."""

    def __init__(self, cfg: LatentConfig):
        if cfg.critic not in ("concat", "projection"):
            raise ValueError(f"critic must be concat or projection, got {cfg.critic!r}")
        projection = cfg.critic == "projection" and cfg.n_labels > 0
        super().__init__(cfg, cfg.width if projection else 1, concat=not projection)
        self.psi = nn.Linear(cfg.width, 1) if projection else None
        self.project = nn.Linear(cfg.n_labels, cfg.width, bias=False) if projection else None

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Realism logit per row (positive: looks like a real encoding with these labels)."""
        if self.project is None:
            return self.net(self.inputs(z, y)).squeeze(1)
        phi = F.leaky_relu(self.net(z), 0.2)
        return self.psi(phi).squeeze(1) + (self.project(self.labels(z, y)) * phi).sum(1)


class Actor(_Conditioned):
    def __init__(self, cfg: LatentConfig):
        super().__init__(cfg, 2 * cfg.latent_dim)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        dz, gate_logits = self.net(self.inputs(z, y)).chunk(2, dim=1)
        gate = torch.sigmoid(gate_logits)
        return (1 - gate) * z + gate * dz


class AttrClassifier(nn.Module):
    def __init__(self, cfg: LatentConfig):
        super().__init__()
        self.net = mlp(cfg.latent_dim, cfg.width, max(cfg.depth - 2, 1), max(cfg.n_labels, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class LatentMappers(nn.Module):
    """Everything one label set adds to a frozen VAE; saved as one safetensors file. A classifier label set has no
    critic and no actor."""

    def __init__(self, cfg: LatentConfig):
        super().__init__()
        if cfg.method not in ("lc", "classifier"):
            raise ValueError(f"method must be lc or classifier, got {cfg.method!r}")
        if cfg.method == "classifier" and not cfg.n_labels:
            raise ValueError("a classifier label set needs at least one attribute")
        self.cfg = cfg
        self.critic = Critic(cfg) if cfg.method == "lc" else None
        self.actor = Actor(cfg) if cfg.method == "lc" else None
        self.attr = AttrClassifier(cfg) if cfg.n_labels else None


def load_mappers(
    directory, decoder_fingerprint: str | None = None
) -> tuple[LatentMappers, dict, dict[str, torch.Tensor]]:
    """Load mapper.safetensors + mapper.json -> (mappers, manifest, extra tensors: label_table, sigma_bar).

    Refuses a mapper trained for another decoder: its latents would mean something else.
    """
    from models.artifacts import ArtifactError, load_manifest, load_model

    manifest = load_manifest(directory, "mapper")
    if decoder_fingerprint is not None and manifest.get("decoder_fingerprint") != decoder_fingerprint:
        raise ArtifactError(
            f"{directory}: mapper was trained for decoder {str(manifest.get('decoder_fingerprint'))[:12]}…, "
            f"this decoder is {decoder_fingerprint[:12]}…"
        )
    extra = ("label_table", "sigma_bar")
    m, manifest, tensors = load_model(directory, "mapper", ARCH, lambda cfg: LatentMappers(LatentConfig(**cfg)), extra)
    return m, manifest, {k: tensors[k] for k in extra if k in tensors}
