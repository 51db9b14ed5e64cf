"""Identity-preserving edits of encoded images: the smallest label change that honours the spec,
reached by the actor (amortised) or by optimisation from the image's own latent."""

from __future__ import annotations

from typing import Literal

import torch

from conditioning.labelset import LabelSetVersion
from conditioning.modes import OptimizeConfig, optimize_latents, pad
from conditioning.specs import nearest_rows
from models.latent_objective import attr_predict

EditMode = Literal["actor", "optimize"]
EDIT_OPTIMIZE = OptimizeConfig(dist_weight=1.0)  # optimisation edits keep z near the image's own latent


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """D_attr reads each latent's current labels, the target is the nearest label-table row honouring
    the spec (see ``specs.nearest_rows``), and the latent moves to it by the actor, or by optimisation on the
    spec's attributes from the actor's edit with a distance term to z0. Returns (edited latents, the target
    label rows used)."""
    if ls.m.attr is None:
        raise ValueError("an edit needs a label set with attributes")
    n = len(z0)
    target = nearest_rows(read_labels(ls, z0), spec, ls.attr_names, ls.table, allow_unseen, ls.kind)
    if mode == "actor":
        return ls.m.actor(pad(z0), pad(target))[:n], target
    if mode == "optimize":
        # Only the attributes the request names are constrained (the others are D_attr's reading of the image,
        # which can be wrong: it should not force them); the distance term and the critic keep the rest.
        mask = torch.zeros(target.shape, dtype=torch.bool)
        mask[:, [ls.attr_names.index(a) for a in spec]] = True
        z, _ = optimize_latents(ls.m, pad(z0), pad(target), pad(mask), cfg, ls.sigma_bar)
        return z[:n], target
    raise ValueError(f"edit mode must be 'actor' or 'optimize', got {mode!r}")
