"""Optimisation mode and identity-preserving edits: gradient steps on z against the critics.

Loss per example: realism_weight · (−log D(z, y)) + cross-entropy of D_attr(z) on the *specified*
attributes only + dist_weight · mean(log(1 + (z − z0)²) / σ̄_z²). Adam on z; an example stops
(its z is frozen) once D(z, y) > threshold and D_attr agrees with every specified attribute.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from models.latent import LatentMappers
from training.specs import nearest_rows


@dataclass
class OptimizeConfig:
    steps: int = 300
    lr: float = 1e-2
    realism_weight: float = 0.05
    dist_weight: float = 0.0
    threshold: float = 0.3  # stop once D(z, y) > threshold ...
    attr_confidence: float = 0.5  # ... and D_attr gives every specified attribute at least this probability


def attributes_met(m: LatentMappers, z: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, confidence: float = 0.5) -> torch.Tensor:
    """D_attr gives each specified attribute's asked value at least ``confidence`` (categorical: the asked class)."""
    if m.attr is None:
        return torch.ones(len(z), dtype=torch.bool)
    logits = m.attr(z)
    if m.cfg.kind == "categorical":
        p = torch.softmax(logits, 1)
        return (p.gather(1, y.argmax(1, keepdim=True)).squeeze(1) >= confidence) | ~mask.any(1)
    p = torch.sigmoid(logits)
    return ((torch.where(y > 0, p, 1 - p) >= confidence) | ~mask).all(1)


def optimize_latents(m: LatentMappers, z0: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None,
                     cfg: OptimizeConfig = OptimizeConfig(), sigma_bar: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Move each z0 until the critic finds it real and D_attr reads the specified attributes.

    y: n x K target labels (float 0/1); mask: n x K bool, True where the attribute is specified
    (default all). Returns (z, info) with the steps each example took and whether it converged.
    """
    n, k = y.shape
    mask = torch.ones(n, k, dtype=torch.bool) if mask is None else mask.bool()
    yy = y if k else None
    sb2 = (sigma_bar if sigma_bar is not None else torch.ones(z0.shape[1])).pow(2)
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=cfg.lr)
    done = torch.zeros(n, dtype=torch.bool)
    frozen = z0.clone()
    steps_taken = torch.full((n,), cfg.steps)
    with torch.enable_grad():
        for step in range(cfg.steps):
            with torch.no_grad():
                ok = (torch.sigmoid(m.critic(z, yy)) > cfg.threshold) & attributes_met(m, z, y, mask, cfg.attr_confidence)
                newly = ok & ~done
                frozen[newly] = z[newly]
                steps_taken[newly] = step
                done |= ok
            if done.all():
                break
            loss = cfg.realism_weight * F.softplus(-m.critic(z, yy))
            if m.attr is not None and mask.any():
                logits = m.attr(z)
                if m.cfg.kind == "categorical":
                    ce = F.cross_entropy(logits, y.argmax(1), reduction="none") * mask.any(1)
                else:
                    ce = (F.binary_cross_entropy_with_logits(logits, y, reduction="none") * mask).sum(1)
                loss = loss + ce
            if cfg.dist_weight:
                loss = loss + cfg.dist_weight * (torch.log1p((z - z0).pow(2)) / sb2).mean(1)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            with torch.no_grad():
                z[done] = frozen[done]  # finished examples stay where they stopped
    with torch.no_grad():
        out = torch.where(done[:, None], frozen, z.detach())
    return out, {"converged": done, "steps": steps_taken}


@torch.no_grad()
def edit_latents(m: LatentMappers, z0: torch.Tensor, spec: dict[str, int], table: torch.Tensor, mode: str = "actor",
                 cfg: OptimizeConfig | None = None, sigma_bar: torch.Tensor | None = None,
                 allow_unseen: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Identity-preserving edit of encoded images: D_attr reads each latent's current labels, the
    target is the nearest label-table row honouring the spec (see ``specs.nearest_rows``), and the
    latent moves to it by the actor (amortised) or by optimisation from z0 with a distance term.

    Returns (edited latents, the target label rows used).
    """
    if m.attr is None:
        raise ValueError("an edit needs a label set with attributes")
    logits = m.attr(z0)
    if m.cfg.kind == "categorical":
        current = F.one_hot(logits.argmax(1), m.cfg.n_labels).float()
    else:
        current = (logits > 0).float()
    target = nearest_rows(current, spec, m.cfg.attr_names, table, allow_unseen)
    if mode == "actor":
        return m.actor(z0, target), target
    if mode == "optimize":
        cfg = cfg or OptimizeConfig(dist_weight=1.0)
        z, _ = optimize_latents(m, z0, target, None, cfg, sigma_bar)
        return z, target
    raise ValueError(f"edit mode must be 'actor' or 'optimize', got {mode!r}")
