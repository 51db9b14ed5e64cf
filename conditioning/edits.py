"""Identity-preserving edits of encoded images: the smallest label change that honours the spec,
reached by the actor (amortised), by optimisation, or by the energy sampler from the image's own latent; or a
composed query's target (``edit_query``), reached by the energy sampler."""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

from conditioning import energy
from conditioning.labelset import LabelSetVersion
from conditioning.modes import OptimizeConfig, distance, ladder, optimize_latents, pad, select
from conditioning.specs import nearest_rows
from models.latent_objective import attr_predict

EditMode = Literal["actor", "optimize", "energy"]
EDIT_OPTIMIZE = OptimizeConfig(dist_weight=1.0)  # optimisation edits keep z near the image's own latent
EDIT_ENERGY = energy.EnergyConfig(space="latent", candidates=1, dist_weight=1.0)  # and so do energy edits
# What accepts an actor edit: D_attr sure of each asked attribute at 0.999, where samples take 0.9. Why: an edit keeps
# the shortest accepted step, which lands where D_attr has only just flipped and still over-reads the image (README,
# "Why 0.999"; docs/edit_tradeoff.md).
EDIT_ACCEPT = OptimizeConfig(attr_confidence=0.999)


class Edit(NamedTuple):
    """An edit's latents, the target label rows used, and per row whether it converged (the actor with candidates:
    one met optimisation's stop rule; optimisation: its stop rule; else true)."""

    z: torch.Tensor
    target: torch.Tensor
    converged: torch.Tensor


@torch.no_grad()
def read_labels(ls: LabelSetVersion, z: torch.Tensor) -> torch.Tensor:
    """D_attr's reading of each latent as 0/1 label rows (categorical: one-hot of the top class)."""
    return attr_predict(ls.m, pad(z), ls.kind)[: len(z)]


def edit_target(
    ls: LabelSetVersion, z0: torch.Tensor, spec: dict[str, int], allow_unseen: bool = False
) -> torch.Tensor:
    """The label row an edit of z0 aims at: D_attr's reading with the spec applied, as the nearest row the data shows
    (``specs.nearest_rows``). ``lcs eval-edits`` aims its baselines at the same rows."""
    return nearest_rows(read_labels(ls, z0), spec, ls.attr_names, ls.table, allow_unseen, ls.kind)


@torch.no_grad()
def edit(
    ls: LabelSetVersion,
    z0: torch.Tensor,
    spec: dict[str, int],
    mode: EditMode = "actor",
    allow_unseen: bool = False,
    cfg: OptimizeConfig = EDIT_OPTIMIZE,
    realism: LabelSetVersion | None = None,
    candidates: int = 1,
    accept: OptimizeConfig = EDIT_ACCEPT,
) -> Edit:
    """D_attr reads each latent's current labels, the target is the nearest label-table row honouring the spec (see
    ``specs.nearest_rows``), and the latent moves to it by the actor (its step from z0 taken as far as the critics
    need, ``actor_step``; with ``candidates`` K > 1, rows no step length satisfies also try starts around z0), or by
    optimisation on the spec's attributes from the actor's edit (K = 1) with a distance term to z0, or by the energy
    sampler from z0 with the ``realism`` label set's critic (the only mode of a classifier label set). ``accept``: what
    accepts an actor step (``EDIT_ACCEPT``)."""
    if ls.m.attr is None:
        raise ValueError("an edit needs a label set with attributes")
    n = len(z0)
    target = edit_target(ls, z0, spec, allow_unseen)
    # Only the attributes the request names are constrained in optimize and energy (the others are D_attr's reading
    # of the image, which can be wrong: it should not force them); the distance term and the critic keep the rest.
    mask = torch.zeros(target.shape, dtype=torch.bool)
    mask[:, [ls.attr_names.index(a) for a in spec]] = True
    if mode == "actor" and ls.m.actor is not None:
        z, ok = actor_step(ls, z0, target, mask, candidates, accept)
        return Edit(z, target, ok)
    if mode == "optimize" and ls.m.actor is not None:
        start = pad(actor_step(ls, z0, target, mask, accept=accept)[0]) if cfg.warm_start else None
        z, info = optimize_latents(ls.m, pad(z0), pad(target), pad(mask), cfg, ls.sigma_bar, start)
        return Edit(z[:n], target, info["converged"][:n])
    if mode == "energy" and realism is not None:
        plan = energy.Plan(realism, energy.Rows(ls), ls.name)
        z, ok, _ = energy.sample(plan, pad(z0), pad(target), pad(mask), EDIT_ENERGY, anchor=pad(z0), live=n)
        return Edit(z[:n], target, ok[:n])
    raise ValueError(f"edit mode {mode!r} is not available for label set {ls.name!r} (or no realism label set)")


def actor_step(
    ls: LabelSetVersion,
    z0: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    candidates: int = 1,
    accept: OptimizeConfig = EDIT_ACCEPT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """z0 + s · (G(z0, y') − z0) (``modes.ladder``): the shortest step the critics accept (``modes.select``),
    else the one nearest to acceptance, reported unconverged. Why: the actor is trained against a distance penalty
    and stops short of what the image shows (avatars on stretch 5: its own step reached the target in 0.73 of
    edits, adding a smile in 0.27; lengthened until D_attr reads the target, 0.83 and 0.52, kept 0.96 either way).
    With ``candidates`` K > 1, rows whose own step no length satisfies fall back to the actor's edits of K − 1 starts
    z0 + σ̄_z · ε around it (ε seeded by z0, so a row's result does not depend on its batch: the posterior's spread,
    where any start is as much this image), the accepted one nearest z0. Returns (latents, converged)."""
    n, d = z0.shape
    cand = ladder(ls, z0, target)
    tier = torch.zeros(cand.shape[1])
    if candidates > 1:
        starts = (z0[:, None] + ls.sigma_bar * energy.candidates(z0, candidates)[:, 1:]).reshape(-1, d)
        around = ls.m.actor(pad(starts), pad(target.repeat_interleave(candidates - 1, 0)))[: len(starts)]
        cand = torch.cat([cand, around.reshape(n, candidates - 1, d)], 1)
        tier = torch.cat([tier, torch.ones(candidates - 1)])
    dist = distance(ls, cand, z0)
    # the row's own step first, then the starts around it; nearest z0 within a tier (the row's dist / (max + 1) < 1)
    return select(ls.m, cand, target, mask, cost=tier + dist / (dist.amax(1, keepdim=True) + 1), cfg=accept)


def edit_query(plan: energy.Plan, z0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A composed query's edit: the energy sampler from the image's own latent, kept near it. (latents, converged)"""
    z, ok, _ = energy.sample(plan, pad(z0), cfg=EDIT_ENERGY, anchor=pad(z0), live=len(z0))
    return z[: len(z0)], ok[: len(z0)]
