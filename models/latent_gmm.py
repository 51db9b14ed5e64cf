"""Per-condition latent Gaussian mixtures on the frozen VAE's encodings.

For every distinct label row seen at least ``min_count`` times, a diagonal Gaussian mixture (EM) is
fitted to posterior samples z ~ q(z|x) of the examples with exactly that row. Sampling for a row
draws from its mixture; a row without its own mixture uses the nearest fitted row (fewest differing
attributes, ties to the most frequent). Cheap and faithful to what was seen, but it cannot compose
attributes into combinations the data lacks, and its size grows with the number of distinct rows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from models.latent import LabelKind

ARCH = "latent-gmm-diag-v1"


@dataclass
class LatentGMMConfig:
    latent_dim: int
    attr_names: list[str] = field(default_factory=list)
    kind: LabelKind = "binary"
    n_rows: int = (
        1  # distinct label rows with a mixture (fixed by ``fit``; part of the config so loading knows the shapes)
    )
    components: int = 4
    min_count: int = 20
    var_floor: float = 1e-3

    def to_json(self) -> dict:
        return asdict(self)


def fit_diag_gmm(x: torch.Tensor, m: int, generator: torch.Generator, iters: int = 60, var_floor: float = 1e-3):
    """EM for a diagonal Gaussian mixture with m components -> (weights m, means m x d, variances m x d)."""
    n, d = x.shape
    means = x[torch.randperm(n, generator=generator)[:m]].clone()
    var = x.var(0, unbiased=False).clamp(min=var_floor).expand(m, d).clone()
    w = torch.full((m,), 1.0 / m)
    for _ in range(iters):
        logp = -0.5 * (((x[:, None] - means) ** 2) / var + torch.log(2 * math.pi * var)).sum(-1) + torch.log(w)
        r = torch.softmax(logp, 1)
        nk = r.sum(0) + 1e-8
        w = nk / n
        means = (r.T @ x) / nk[:, None]
        var = ((r.T @ x.pow(2)) / nk[:, None] - means.pow(2)).clamp(min=var_floor)
    return w, means, var


class LatentGMM(nn.Module):
    def __init__(self, cfg: LatentGMMConfig):
        super().__init__()
        self.cfg = cfg
        r, m, d, k = cfg.n_rows, cfg.components, cfg.latent_dim, len(cfg.attr_names)
        self.register_buffer("rows", torch.zeros(r, k, dtype=torch.int8))
        self.register_buffer("counts", torch.zeros(r))
        self.register_buffer("weights", torch.zeros(r, m))  # zero weight pads rows with fewer components
        self.register_buffer("means", torch.zeros(r, m, d))
        self.register_buffer("variances", torch.ones(r, m, d))

    @classmethod
    @torch.no_grad()
    def fit(cls, cfg: LatentGMMConfig, z: torch.Tensor, y: torch.Tensor, seed: int = 0) -> "LatentGMM":
        gen = torch.Generator().manual_seed(seed)
        rows, inverse, counts = torch.unique(y.to(torch.int8), dim=0, return_inverse=True, return_counts=True)
        keep = torch.nonzero(counts >= cfg.min_count).squeeze(1)
        if len(keep) == 0:
            raise ValueError(f"no label row occurs {cfg.min_count} times; lower min_count")
        model = cls(LatentGMMConfig(**{**cfg.to_json(), "n_rows": len(keep)}))
        for i, r in enumerate(keep.tolist()):
            x = z[inverse == r]
            m = max(1, min(cfg.components, len(x) // cfg.min_count))
            w, mu, var = fit_diag_gmm(x, m, gen, var_floor=cfg.var_floor)
            model.rows[i], model.counts[i] = rows[r], counts[r].float()
            model.weights[i, :m], model.means[i, :m], model.variances[i, :m] = w, mu, var
        return model

    def row_index(self, y: torch.Tensor) -> torch.Tensor:
        """Index of the fitted row nearest each requested row (Hamming distance, ties to the most frequent)."""
        dist = (y.float()[:, None, :] != self.rows.float()[None]).sum(-1).float()
        return (dist - self.counts / (self.counts.max() + 1)).argmin(1)

    def sample(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        idx = self.row_index(y)
        comp = torch.multinomial(self.weights[idx], 1, generator=generator).squeeze(1)
        eps = torch.randn(len(y), self.cfg.latent_dim, generator=generator)
        return self.means[idx, comp] + eps * self.variances[idx, comp].sqrt()


def load_latent_gmm(directory) -> tuple[LatentGMM, dict]:
    from models.artifacts import load_model

    model, manifest, _ = load_model(directory, "gmm", ARCH, lambda cfg: LatentGMM(LatentGMMConfig(**cfg)))
    return model, manifest
