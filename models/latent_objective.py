"""What the label-set networks learn: the losses of the critic D(z, y), the actor G(z, y) and the
latent classifier D_attr(z), and one training step over them (pythae-style: the model's own loss).

Per actor step, ``critic_steps`` critic steps on rows
  real        (z ~ q(z|x_i), y_i)                                  -> 1
  fake        (G(z_p, y_i) with prob. 0.9, else raw z_p ~ N(0, I); y_i) -> 0
  mismatched  (z ~ q(z|x_i), y_j) with y_j ≠ y_i from another example  -> 0
with sigmoid cross-entropy + gradient penalty (‖∇_z D‖ − 1)² on real-vs-fake interpolations
(per-sample α). Actor loss: −log D(G(z, y), y) + λ_dist · mean(log(1 + (G(z, y) − z)²) / σ̄_z²),
applied to prior samples and, when λ_dist > 0, to real encodings with their own labels.

Issue 16's options (each off by default, see ``LatentObjective``): fakes from the actor on real encodings under the
labels asked of it (real_actor_fakes), one-attribute flips among the mismatched rows (hard_negatives), a separate
λ_dist for the actor's edit rows (lambda_dist_edit), and D_attr's cross-entropy on the actor's outputs
(actor_attr_weight; D_attr is frozen during the actor's update, like the critic).

``lcs train-labelset`` runs ``step`` in its loop; the baselines bench counts its FLOPs by running
the same function, so the count follows any change to the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.nn import functional as F

from models.latent import LabelKind, LatentMappers
from models.latent_table import LatentTable, nearest_allowed, posterior_sample


@dataclass(frozen=True)
class LatentObjective:
    """The loss weights and the critic's schedule (defaults: the paper's reference recipe, plus edit_prob).
    The options after edit_prob are issue 16's fidelity levers; each default leaves the reference recipe as it was."""

    lambda_dist: float = 0.1
    critic_steps: int = 10
    gp_weight: float = 10.0
    fake_actor_prob: float = 0.9
    edit_prob: float = 0.5  # share of the real-encoding actor rows asked for a one-attribute edit (see actor_loss)
    # Share of the critic's fake rows taken from the actor on *real* encodings, G(z_real, y') with y' the row's own
    # labels or (edit_prob of them) a one-attribute edit, judged under y': the actor's edits must convince the critic.
    real_actor_fakes: float = 0.0
    hard_negatives: float = 0.0  # share of the mismatched rows that are one-attribute flips (edit_labels)
    lambda_dist_edit: float = -1.0  # λ_dist of the actor's edit rows; < 0: lambda_dist
    actor_attr_weight: float = 0.0  # AC-GAN-style: weight of D_attr's cross-entropy on the actor's outputs

    @property
    def edit_dist(self) -> float:
        return self.lambda_dist if self.lambda_dist_edit < 0 else self.lambda_dist_edit


@dataclass
class Optimizers:
    critic: torch.optim.Optimizer
    actor: torch.optim.Optimizer
    attr: torch.optim.Optimizer | None


def optimizers(m: LatentMappers, lr: float, attr_lr: float) -> Optimizers:
    """Adam with β = (0, 0.9) for critic and actor (the reference), plain Adam for D_attr."""
    return Optimizers(
        torch.optim.Adam(m.critic.parameters(), lr=lr, betas=(0.0, 0.9)),
        torch.optim.Adam(m.actor.parameters(), lr=lr, betas=(0.0, 0.9)),
        torch.optim.Adam(m.attr.parameters(), lr=attr_lr) if m.attr is not None else None,
    )


def mismatched_labels(
    y: torch.Tensor, pool: torch.Tensor, gen: torch.Generator, hard: float = 0.0, rows: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels of other examples, kept only where they differ from the row's own labels; a share ``hard`` of them
    are instead one-attribute flips of the row's own labels to a row of ``rows`` (the distinct label rows)."""
    other = pool[torch.randint(len(pool), (len(y),), generator=gen)]
    if hard > 0:
        flip = torch.rand(len(y), generator=gen) < hard
        other[flip] = edit_labels(y[flip], rows, gen)
    keep = (other != y).any(1)
    return other, keep


def edited(y: torch.Tensor, t: LatentTable, share: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels with a share of the rows asked for a one-attribute edit, which rows were asked)."""
    ask = torch.zeros(len(y), dtype=torch.bool)
    out = y.clone()
    if y.shape[1] and share > 0:
        ask = torch.rand(len(y), generator=gen) < share
        out[ask] = edit_labels(y[ask], t.unique_rows, gen)
    return out, ask


def critic_batch(
    m: LatentMappers, t: LatentTable, idx: torch.Tensor, obj: LatentObjective, gen: torch.Generator
) -> dict:
    """The rows of one critic step (returned whole so tests can check what the critic sees)."""
    y = t.labels[idx]
    labelled = t.labels.shape[1] > 0
    real = posterior_sample(t, idx, gen)
    prior = torch.randn(real.shape, generator=gen)
    use_actor = torch.rand(len(idx), generator=gen) < obj.fake_actor_prob
    with torch.no_grad():
        fake = torch.where(use_actor[:, None], m.actor(prior, y if labelled else None), prior)
    fake_labels, from_real = y, torch.zeros(len(idx), dtype=torch.bool)
    if labelled and obj.real_actor_fakes > 0:
        from_real = torch.rand(len(idx), generator=gen) < obj.real_actor_fakes
        fake_labels, _ = edited(y, t, obj.edit_prob, gen)
        fake_labels = torch.where(from_real[:, None], fake_labels, y)
        with torch.no_grad():
            fake = torch.where(from_real[:, None], m.actor(posterior_sample(t, idx, gen), fake_labels), fake)
    alpha = torch.rand(len(idx), 1, generator=gen)
    batch = {
        "real": real,
        "fake": fake,
        "labels": y,
        "fake_labels": fake_labels,
        "alpha": alpha,
        "interp": alpha * real + (1 - alpha) * fake,
        "use_actor": use_actor,
        "fake_from_real": from_real,
    }
    if labelled:
        batch["mismatched_labels"], batch["mismatched_keep"] = mismatched_labels(
            y, t.labels[t.rows(0)], gen, obj.hard_negatives, t.unique_rows
        )
    return batch


def critic_loss(m: LatentMappers, b: dict, gp_weight: float) -> tuple[torch.Tensor, dict]:
    y = b["labels"] if b["labels"].shape[1] else None
    logits = [m.critic(b["real"], y), m.critic(b["fake"], b["fake_labels"] if y is not None else None)]
    targets = [torch.ones(len(b["real"])), torch.zeros(len(b["fake"]))]
    if "mismatched_labels" in b:
        keep = b["mismatched_keep"]
        logits.append(m.critic(b["real"][keep], b["mismatched_labels"][keep]))
        targets.append(torch.zeros(int(keep.sum())))
    logits_all, targets_all = torch.cat(logits), torch.cat(targets).to(logits[0].device)
    ce = F.binary_cross_entropy_with_logits(logits_all, targets_all)
    interp = b["interp"].detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(m.critic(interp, y).sum(), interp, create_graph=True)
    gp = (grad.norm(dim=1) - 1).pow(2).mean()
    return ce + gp_weight * gp, {"critic_ce": ce.item(), "gp": gp.item()}


def edit_labels(y: torch.Tensor, rows: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One-attribute edits of label rows: flip a random attribute of each row and move to the
    nearest row the data shows that has the flipped value (random among equally near ones)."""
    a = torch.randint(y.shape[1], (len(y),), generator=gen)
    flipped = 1 - y[torch.arange(len(y)), a]
    allowed = flipped[:, None] == rows[:, a].T
    target = nearest_allowed(y, rows, allowed, 0.5 * torch.rand(len(y), len(rows), generator=gen))
    return torch.where(allowed.any(1, keepdim=True), target, y)  # an attribute the data never flips stays


def actor_loss(
    m: LatentMappers, t: LatentTable, idx: torch.Tensor, obj: LatentObjective, gen: torch.Generator
) -> tuple[torch.Tensor, dict]:
    y = t.labels[idx]
    z = torch.randn(len(idx), t.mu.shape[1], generator=gen)
    weight = torch.full((len(idx),), obj.lambda_dist)  # λ_dist per row
    if obj.lambda_dist > 0 or obj.edit_dist > 0:
        # Also map real encodings: with their own labels (the reference recipe: they stay in place) and,
        # for a share edit_prob of them, with a one-attribute edit of their labels. Without the latter the
        # actor never sees a real encoding asked for other labels and learns to leave every real z alone,
        # so identity-preserving edits would not move; λ_dist (lambda_dist_edit on edit rows) keeps the edit small.
        y_real, ask = edited(y, t, obj.edit_prob, gen)
        z = torch.cat([z, posterior_sample(t, idx, gen)])
        y = torch.cat([y, y_real])
        weight = torch.cat([weight, torch.where(ask, obj.edit_dist, obj.lambda_dist)])
    yy = y if y.shape[1] else None
    g = m.actor(z, yy)
    realism = F.softplus(-m.critic(g, yy)).mean()  # −log D
    dist_rows = (torch.log1p((g - z).pow(2)) / t.sigma_bar.pow(2)).mean(1)
    loss = realism + (weight * dist_rows).mean()
    info = {"actor_realism": realism.item(), "dist": dist_rows.mean().item()}
    if obj.actor_attr_weight > 0 and m.attr is not None:  # D_attr is frozen here (see step)
        attr = attr_loss(m, g, y, t.kind)
        loss = loss + obj.actor_attr_weight * attr
        info["actor_attr"] = attr.item()
    return loss, info


def attr_loss(m: LatentMappers, z: torch.Tensor, y: torch.Tensor, kind: LabelKind) -> torch.Tensor:
    logits = m.attr(z)
    if kind == "categorical":
        return F.cross_entropy(logits, y.argmax(1))
    return F.binary_cross_entropy_with_logits(logits, y)


def attr_predict(m: LatentMappers, z: torch.Tensor, kind: LabelKind) -> torch.Tensor:
    logits = m.attr(z)
    if kind == "categorical":
        return F.one_hot(logits.argmax(1), logits.shape[1]).float()
    return (logits > 0).float()


def step(
    m: LatentMappers,
    opts: Optimizers,
    t: LatentTable,
    batch: Callable[[], torch.Tensor],
    obj: LatentObjective,
    gen: torch.Generator,
    attr_rows: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> dict:
    """One actor step: ``critic_steps`` critic updates, one actor update, one D_attr update.
    ``batch()`` draws the training-row indices of one minibatch; ``attr_rows()``, when given, D_attr's (latents,
    labels) instead of posterior samples of a minibatch (``lcs refine-attr`` mixes in drawn rows). Returns the last
    losses."""
    for _ in range(obj.critic_steps):
        loss_c, info = critic_loss(m, critic_batch(m, t, batch(), obj, gen), obj.gp_weight)
        opts.critic.zero_grad(set_to_none=True)
        loss_c.backward()
        opts.critic.step()
    frozen = [m.critic] + ([m.attr] if m.attr is not None else [])
    for net in frozen:
        net.requires_grad_(False)
    loss_a, info_a = actor_loss(m, t, batch(), obj, gen)
    opts.actor.zero_grad(set_to_none=True)
    loss_a.backward()
    opts.actor.step()
    for net in frozen:
        net.requires_grad_(True)
    if opts.attr is not None:
        if attr_rows is None:
            idx = batch()
            z, y = posterior_sample(t, idx, gen), t.labels[idx]
        else:
            z, y = attr_rows()
        loss_attr = attr_loss(m, z, y, t.kind)
        opts.attr.zero_grad(set_to_none=True)
        loss_attr.backward()
        opts.attr.step()
    return {**info, **info_a}
