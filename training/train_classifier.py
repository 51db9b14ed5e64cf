"""A classifier label set: D_attr alone, trained on the latent table in seconds (issue 18).

Why this is enough: the energy sampler (``conditioning.energy``) draws from the realism mapper and moves z along the
classifier's log-probabilities, so a new label set needs no critic and no actor. Its probabilities are energies,
so they are calibrated on held-out rows (Platt scaling per binary attribute, one temperature for a categorical set)
and the calibration is folded into the last layer: the artifact stays a plain MLP.
"""

from __future__ import annotations

import copy
import time
from typing import Callable

import torch
from torch.nn import functional as F

from models.latent import LatentMappers
from models.latent_objective import attr_loss
from models.latent_table import LatentTable, posterior_sample


def soft_attr_loss(m: LatentMappers, z: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """D_attr's loss on soft labels (mixup rows)."""
    logits = m.attr(z)
    if kind == "categorical":
        return -(torch.log_softmax(logits, 1) * y).sum(1).mean()
    return F.binary_cross_entropy_with_logits(logits, y)


def balanced_accuracy(logits: torch.Tensor, y: torch.Tensor, kind: str) -> list[float | None]:
    """Per attribute (binary: mean of the true-positive and true-negative rates; categorical: per-class recall, one
    value per class). None where the held-out rows have only one value of the attribute."""
    if kind == "categorical":
        pred, true = logits.argmax(1), y.argmax(1)
        return [(pred[true == c] == c).float().mean().item() if (true == c).any() else None for c in range(y.shape[1])]
    pred = logits > 0
    out = []
    for k in range(y.shape[1]):
        pos, neg = y[:, k] > 0, y[:, k] == 0
        out.append(
            None
            if not (pos.any() and neg.any())
            else 0.5 * (pred[pos, k].float().mean() + (~pred[neg, k]).float().mean()).item()
        )
    return out


def calibrate(m: LatentMappers, z: torch.Tensor, y: torch.Tensor, kind: str) -> dict:
    """Fit logit' = a·logit + b per attribute (categorical: logit / T) on held-out latents, fold it into D_attr's
    last layer, and return the held-out NLL before and after."""
    last = m.attr.net[-1]
    with torch.no_grad():
        logits = m.attr(z)
    k = logits.shape[1]
    log_a = torch.zeros(1 if kind == "categorical" else k, requires_grad=True)  # a scale, positive by construction
    b = torch.zeros(k, requires_grad=True)
    nll = lambda lo: (
        F.cross_entropy(lo, y.argmax(1)) if kind == "categorical" else F.binary_cross_entropy_with_logits(lo, y)
    )  # noqa: E731
    params = [log_a] if kind == "categorical" else [log_a, b]
    opt = torch.optim.LBFGS(params, lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nll(logits * log_a.exp() + (0 if kind == "categorical" else b))
        loss.backward()
        return loss

    before = nll(logits).item()
    opt.step(closure)
    with torch.no_grad():
        if not (torch.isfinite(log_a).all() and torch.isfinite(b).all()):  # keep the uncalibrated classifier
            log_a.zero_(), b.zero_()
        scale = log_a.detach().exp().expand(k)
        shift = b.detach() if kind != "categorical" else torch.zeros(k)
        last.weight.mul_(scale[:, None])
        last.bias.mul_(scale).add_(shift)
        after = nll(m.attr(z)).item()
    return {
        "nll_before": round(before, 4),
        "nll_after": round(after, 4),
        "scale": scale.tolist(),
        "shift": shift.tolist(),
    }


def fit_classifier(
    m: LatentMappers,
    t: LatentTable,
    train_rows: torch.Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    gen: torch.Generator,
    noise: float = 1.0,
    mixup: float = 0.0,
    eval_every: int = 50,
    progress: Callable[[int, int], None] | None = None,
    probe: Callable[[int, LatentMappers], dict] | None = None,
    probe_every: int = 0,
) -> dict:
    """Adam on D_attr's loss over posterior samples; keeps the weights with the lowest held-out loss, then calibrates.
    CPU-seconds exclude the probes (the bench's curves) but include evaluation and calibration."""
    val = t.rows(1)
    if len(val) == 0:  # no validation split: hold out every tenth training row
        val, train_rows = train_rows[::10], train_rows[torch.arange(len(train_rows)) % 10 != 0]
    val = val[torch.randperm(len(val), generator=gen)[:5000]]
    z_val, y_val = posterior_sample(t, val, gen), t.labels[val]
    opt = torch.optim.Adam(m.attr.parameters(), lr=lr)
    best, best_loss, best_step, cpu, probes = None, float("inf"), 0, 0.0, []
    for step in range(1, steps + 1):
        t0 = time.process_time()
        idx = train_rows[torch.randint(len(train_rows), (batch_size,), generator=gen)]
        z, y = t.mu[idx] + noise * t.sigma[idx] * torch.randn(len(idx), t.mu.shape[1], generator=gen), t.labels[idx]
        if mixup:
            lam = torch.distributions.Beta(mixup, mixup).sample((len(idx), 1))
            perm = torch.randperm(len(idx), generator=gen)
            z, y = lam * z + (1 - lam) * z[perm], lam * y + (1 - lam) * y[perm]
        loss = soft_attr_loss(m, z, y, t.kind)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                val_loss = attr_loss(m, z_val, y_val, t.kind).item()
            if val_loss < best_loss:
                best, best_loss, best_step = copy.deepcopy(m.attr.state_dict()), val_loss, step
        cpu += time.process_time() - t0
        if probe is not None and (step % probe_every == 0 or step == steps):
            probes.append({"step": step, "cpu_s": cpu, **probe(step, m)})
        if progress is not None:
            progress(step, steps)
    t0 = time.process_time()
    if best is None:
        raise ValueError("the classifier's held-out loss was never finite: training diverged (lower --attr-lr)")
    m.attr.load_state_dict(best)
    cal = calibrate(m, z_val, y_val, t.kind)
    with torch.no_grad():
        logits = m.attr(z_val)
    cpu += time.process_time() - t0
    bal = balanced_accuracy(logits, y_val, t.kind)
    acc = (
        (logits.argmax(1) == y_val.argmax(1)).float()
        if t.kind == "categorical"
        else ((logits > 0) == (y_val > 0)).float()
    )
    return {
        "cpu_seconds": round(cpu, 3),
        "steps": steps,
        "best_step": best_step,
        "val_rows": len(val),
        "attr_val_accuracy": round(acc.mean().item(), 4),
        "attr_val_balanced_accuracy": {
            a: None if v is None else round(v, 4) for a, v in zip(t.attr_names, bal, strict=True)
        },
        "calibration": cal,
        **({"probes": probes} if probes else {}),
    }
