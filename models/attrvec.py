"""Attribute vectors on the frozen VAE (as in GAIA / "smile vectors"): linear directions in latent space.

Fitted in closed form on encodings μ(x) with labels y (N x K, 0/1):
- ``mean``:  v_k = mean(μ | y_k = 1) − mean(μ | y_k = 0), one direction per attribute;
- ``lsq``:   least squares μ ≈ b + Yᵀ W (ridge-regularised), so the directions W_k are fitted jointly
  and correlated attributes do not double count.
Sampling moves a prior sample by the vectors of the requested labels relative to the data's mean
labels: z = z_p + (y − ȳ) V. Editing moves an encoding by the label change: z' = μ(x) + (y' − y) V.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from models.latent import LabelKind

ARCH = "latent-attribute-vectors-v1"
METHODS = ("mean", "lsq")


@dataclass
class AttrVecConfig:
    latent_dim: int
    attr_names: list[str] = field(default_factory=list)
    kind: LabelKind = "binary"
    method: str = "lsq"
    ridge: float = 1e-3

    def to_json(self) -> dict:
        return asdict(self)


class AttributeVectors(nn.Module):
    def __init__(self, cfg: AttrVecConfig):
        super().__init__()
        if cfg.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {cfg.method!r}")
        self.cfg = cfg
        k = len(cfg.attr_names)
        self.register_buffer("vectors", torch.zeros(k, cfg.latent_dim))
        self.register_buffer("label_mean", torch.zeros(k))

    @torch.no_grad()
    def fit(self, mu: torch.Tensor, y: torch.Tensor) -> "AttributeVectors":
        y = y.float()
        if self.cfg.method == "mean":
            pos, neg = y.sum(0), (1 - y).sum(0)
            if (pos == 0).any() or (neg == 0).any():
                raise ValueError("every attribute needs positive and negative examples")
            v = (y.T @ mu) / pos[:, None] - ((1 - y).T @ mu) / neg[:, None]
        else:
            yc, mc = y - y.mean(0), mu - mu.mean(0)
            gram = yc.T @ yc + self.cfg.ridge * len(y) * torch.eye(y.shape[1])
            v = torch.linalg.solve(gram, yc.T @ mc)
        self.vectors.copy_(v)
        self.label_mean.copy_(y.mean(0))
        return self

    def sample(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(len(y), self.cfg.latent_dim, generator=generator)
        return z + (y.float() - self.label_mean) @ self.vectors

    def edit(self, mu: torch.Tensor, y_from: torch.Tensor, y_to: torch.Tensor) -> torch.Tensor:
        return mu + (y_to.float() - y_from.float()) @ self.vectors


def load_attrvec(directory) -> tuple[AttributeVectors, dict]:
    from models.artifacts import load_model

    model, manifest, _ = load_model(directory, "attrvec", ARCH, lambda cfg: AttributeVectors(AttrVecConfig(**cfg)))
    return model, manifest
