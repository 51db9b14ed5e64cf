"""Identity-preserving edits of encoded images: the smallest label change that honours the spec,
reached by the actor (amortised), by optimisation, or by the energy sampler from the image's own latent; or a
composed query's target (``edit_query``), reached by the energy sampler."""

from __future__ import annotations

from typing import Literal

import torch

from conditioning import energy
from conditioning.labelset import LabelSetVersion
from conditioning.modes import OptimizeConfig, optimize_latents, pad
from conditioning.specs import nearest_rows
from models.latent_objective import attr_predict

EditMode = Literal["actor", "optimize", "energy"]
EDIT_OPTIMIZE = OptimizeConfig(dist_weight=1.0)  # optimisation edits keep z near the image's own latent
EDIT_ENERGY = energy.EnergyConfig(space="latent", candidates=1, dist_weight=1.0)  # and so do energy edits


@torch.no_grad()
def read_labels(ls: LabelSetVersion, z: torch.Tensor) -> torch.Tensor:
    """D_attr's reading of each latent as 0/1 label rows (categorical: one-hot of the top class)."""
    return attr_predict(ls.m, pad(z), ls.kind)[: len(z)]


@torch.no_grad()
def edit(
    ls: LabelSetVersion,
    z0: torch.Tensor,
    spec: dict[str, int],
    mode: EditMode = "actor",
    allow_unseen: bool = False,
    cfg: OptimizeConfig = EDIT_OPTIMIZE,
    realism: LabelSetVersion | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """D_attr reads each latent's current labels, the target is the nearest label-table row honouring
    the spec (see ``specs.nearest_rows``), and the latent moves to it by the actor, or by optimisation on the
    spec's attributes from the actor's edit with a distance term to z0, or by the energy sampler from z0 with the
    ``realism`` label set's critic (the only mode of a classifier label set). Returns (edited latents, the target
    label rows used)."""
    if ls.m.attr is None:
        raise ValueError("an edit needs a label set with attributes")
    n = len(z0)
    target = nearest_rows(read_labels(ls, z0), spec, ls.attr_names, ls.table, allow_unseen, ls.kind)
    # Only the attributes the request names are constrained in optimize and energy (the others are D_attr's reading
    # of the image, which can be wrong: it should not force them); the distance term and the critic keep the rest.
    mask = torch.zeros(target.shape, dtype=torch.bool)
    mask[:, [ls.attr_names.index(a) for a in spec]] = True
    if mode == "actor" and ls.m.actor is not None:
        return ls.m.actor(pad(z0), pad(target))[:n], target
    if mode == "optimize" and ls.m.actor is not None:
        z, _ = optimize_latents(ls.m, pad(z0), pad(target), pad(mask), cfg, ls.sigma_bar)
        return z[:n], target
    if mode == "energy" and realism is not None:
        plan = energy.Plan(realism, energy.Rows(ls), ls.name)
        z, _, _ = energy.sample(plan, pad(z0), pad(target), pad(mask), EDIT_ENERGY, anchor=pad(z0), live=n)
        return z[:n], target
    raise ValueError(f"edit mode {mode!r} is not available for label set {ls.name!r} (or no realism label set)")


def edit_query(plan: energy.Plan, z0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A composed query's edit: the energy sampler from the image's own latent, kept near it. (latents, converged)"""
    z, ok, _ = energy.sample(plan, pad(z0), cfg=EDIT_ENERGY, anchor=pad(z0), live=len(z0))
    return z[: len(z0)], ok[: len(z0)]
