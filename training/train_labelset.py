"""``lcs train-labelset``: learn a label set's critic, actor and latent classifier on the cached
latent table. The VAE is never loaded for training; only its decoder fingerprint is recorded.

Per actor step, ``critic_steps`` critic steps on rows
  real        (z ~ q(z|x_i), y_i)                                  -> 1
  fake        (G(z_p, y_i) with prob. 0.9, else raw z_p ~ N(0, I); y_i) -> 0
  mismatched  (z ~ q(z|x_i), y_j) with y_j ≠ y_i from another example  -> 0
with sigmoid cross-entropy + gradient penalty (‖∇_z D‖ − 1)² on real-vs-fake interpolations
(per-sample α). Actor loss: −log D(G(z, y), y) + λ_dist · mean(log(1 + (G(z, y) − z)²) / σ̄_z²),
applied to prior samples and, when λ_dist > 0, to real encodings with their own labels.
An empty label set trains the unconditional realism mapper G(z).
"""
from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import torch
from torch.nn import functional as F
from tqdm import tqdm

from models.artifacts import fingerprint, load_artifact, save_artifact
from models.latent import ARCH, LatentConfig, LatentMappers
from training.runtime import resolve_device
from training.specs import nearest_allowed

log = logging.getLogger("lcs.train_labelset")
REALISM = "realism"  # the reserved name of the empty label set


@dataclass
class TrainLabelSetConfig:
    bundle: str = "runs/avatars"
    label_set: str = REALISM  # a label set of the latent table, or "realism" for G(z)
    table: str = ""  # directory of the latent table; default: the bundle's (rule tables live elsewhere)
    out: str = ""  # default: BUNDLE/labelsets/<label_set>
    width: int = 256
    depth: int = 4
    label_embed: int = 64
    lambda_dist: float = 0.1
    steps: int = 2000  # actor steps
    critic_steps: int = 10
    batch_size: int = 256
    lr: float = 1e-4
    attr_lr: float = 1e-3
    gp_weight: float = 10.0
    fake_actor_prob: float = 0.9
    edit_prob: float = 0.5  # share of the real-encoding actor rows asked for a one-attribute edit (see actor_loss)
    diag_every: int = 200
    seed: int = 0
    threads: int = 0  # latent MLPs are small: they train on CPU, also on a GPU host
    labelled: int = 0  # train on this many labelled training rows, drawn with the seed (0: all); label-efficiency runs


@dataclass
class LatentTable:
    """What a label set trains on: posterior (μ, σ) per example, its labels, splits and σ̄_z."""

    mu: torch.Tensor
    sigma: torch.Tensor
    labels: torch.Tensor  # float 0/1, N x K (K = 0 for realism)
    split: torch.Tensor
    sigma_bar: torch.Tensor
    attr_names: list[str]
    kind: str
    decoder_fingerprint: str
    data_fingerprint: str

    def rows(self, split: int) -> torch.Tensor:
        return torch.nonzero(self.split == split).squeeze(1)

    @cached_property
    def unique_rows(self) -> torch.Tensor:
        """The distinct label rows of the training split (edit targets come from these)."""
        return torch.unique(self.labels[self.rows(0)], dim=0)


def load_table(bundle: str | Path, label_set: str) -> LatentTable:
    tensors, man = load_artifact(bundle, "latents")
    if label_set == REALISM:
        names, kind = [], "binary"
    elif label_set in man["label_sets"]:
        names, kind = man["label_sets"][label_set]["attrs"], man["label_sets"][label_set]["kind"]
    else:
        raise ValueError(f"label set {label_set!r} is not in {bundle}/latents.json; it has {sorted(man['label_sets'])} (or 'realism')")
    cols = [man["attr_names"].index(a) for a in names]
    return LatentTable(
        mu=tensors["mu"].float(), sigma=tensors["sigma"].float(),
        labels=tensors["attrs"][:, cols].float(), split=tensors["split"].long(),
        sigma_bar=torch.tensor(man["sigma_bar"]), attr_names=list(names), kind=kind,
        decoder_fingerprint=man["decoder_fingerprint"], data_fingerprint=fingerprint(tensors),
    )


def posterior_sample(t: LatentTable, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return t.mu[idx] + t.sigma[idx] * torch.randn(t.mu[idx].shape, generator=gen)


def mismatched_labels(y: torch.Tensor, pool: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels of other examples, kept only where they differ from the row's own labels."""
    other = pool[torch.randint(len(pool), (len(y),), generator=gen)]
    keep = (other != y).any(1)
    return other, keep


def critic_batch(m: LatentMappers, t: LatentTable, idx: torch.Tensor, cfg: TrainLabelSetConfig, gen: torch.Generator) -> dict:
    """The rows of one critic step (returned whole so tests can check what the critic sees)."""
    y = t.labels[idx]
    real = posterior_sample(t, idx, gen)
    prior = torch.randn(real.shape, generator=gen)
    use_actor = torch.rand(len(idx), generator=gen) < cfg.fake_actor_prob
    with torch.no_grad():
        fake = torch.where(use_actor[:, None], m.actor(prior, y if t.labels.shape[1] else None), prior)
    alpha = torch.rand(len(idx), 1, generator=gen)
    batch = {"real": real, "fake": fake, "labels": y, "alpha": alpha, "interp": alpha * real + (1 - alpha) * fake,
             "use_actor": use_actor}
    if t.labels.shape[1]:
        batch["mismatched_labels"], batch["mismatched_keep"] = mismatched_labels(y, t.labels[t.rows(0)], gen)
    return batch


def critic_loss(m: LatentMappers, b: dict, gp_weight: float) -> tuple[torch.Tensor, dict]:
    y = b["labels"] if b["labels"].shape[1] else None
    logits = [m.critic(b["real"], y), m.critic(b["fake"], y)]
    targets = [torch.ones(len(b["real"])), torch.zeros(len(b["fake"]))]
    if "mismatched_labels" in b:
        keep = b["mismatched_keep"]
        logits.append(m.critic(b["real"][keep], b["mismatched_labels"][keep]))
        targets.append(torch.zeros(int(keep.sum())))
    logits_all, targets_all = torch.cat(logits), torch.cat(targets).to(logits[0].device)
    ce = F.binary_cross_entropy_with_logits(logits_all, targets_all)
    interp = b["interp"].detach().requires_grad_(True)
    grad, = torch.autograd.grad(m.critic(interp, y).sum(), interp, create_graph=True)
    gp = (grad.norm(dim=1) - 1).pow(2).mean()
    return ce + gp_weight * gp, {"critic_ce": ce.item(), "gp": gp.item()}


def edit_labels(y: torch.Tensor, rows: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One-attribute edits of label rows: flip a random attribute of each row and move to the
    nearest row the data shows that has the flipped value (random among equally near ones)."""
    a = torch.randint(y.shape[1], (len(y),), generator=gen)
    flipped = 1 - y[torch.arange(len(y)), a]
    allowed = rows[:, a].T == flipped[:, None]
    target = nearest_allowed(y, rows, allowed, 0.5 * torch.rand(len(y), len(rows), generator=gen))
    return torch.where(allowed.any(1, keepdim=True), target, y)  # an attribute the data never flips stays


def actor_loss(m: LatentMappers, t: LatentTable, idx: torch.Tensor, cfg: TrainLabelSetConfig, gen: torch.Generator) -> tuple[torch.Tensor, dict]:
    y = t.labels[idx]
    z = torch.randn(len(idx), t.mu.shape[1], generator=gen)
    if cfg.lambda_dist > 0:
        # Also map real encodings: with their own labels (the reference recipe: they stay in place) and,
        # for a share edit_prob of them, with a one-attribute edit of their labels. Without the latter the
        # actor never sees a real encoding asked for other labels and learns to leave every real z alone,
        # so identity-preserving edits would not move; λ_dist keeps the edit small.
        y_real = y.clone()
        if y.shape[1] and cfg.edit_prob > 0:
            ask = torch.rand(len(y), generator=gen) < cfg.edit_prob
            y_real[ask] = edit_labels(y[ask], t.unique_rows, gen)
        z = torch.cat([z, posterior_sample(t, idx, gen)])
        y = torch.cat([y, y_real])
    yy = y if y.shape[1] else None
    g = m.actor(z, yy)
    realism = F.softplus(-m.critic(g, yy)).mean()  # −log D
    dist = (torch.log1p((g - z).pow(2)) / t.sigma_bar.pow(2)).mean()
    return realism + cfg.lambda_dist * dist, {"actor_realism": realism.item(), "dist": dist.item()}


def attr_loss(m: LatentMappers, z: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    logits = m.attr(z)
    if kind == "categorical":
        return F.cross_entropy(logits, y.argmax(1))
    return F.binary_cross_entropy_with_logits(logits, y)


def attr_predict(m: LatentMappers, z: torch.Tensor, kind: str) -> torch.Tensor:
    logits = m.attr(z)
    if kind == "categorical":
        return F.one_hot(logits.argmax(1), logits.shape[1]).float()
    return (logits > 0).float()


@torch.no_grad()
def diagnostics(m: LatentMappers, t: LatentTable, gen: torch.Generator, n: int = 2000) -> dict:
    """Mean critic probability on train/val encodings, prior samples and actor outputs; σ̄-weighted shift."""
    out = {}
    tr, va = t.rows(0), t.rows(1)
    tr = tr[torch.randperm(len(tr), generator=gen)[:n]]
    va = va[torch.randperm(len(va), generator=gen)[:n]] if len(va) else tr
    y_tr = t.labels[tr] if t.labels.shape[1] else None
    d = lambda z, y: torch.sigmoid(m.critic(z, y)).mean().item()  # noqa: E731
    z_tr = posterior_sample(t, tr, gen)
    out["D_train"] = d(z_tr, y_tr)
    out["D_val"] = d(posterior_sample(t, va, gen), t.labels[va] if y_tr is not None else None)
    prior = torch.randn(len(tr), t.mu.shape[1], generator=gen)
    out["D_prior"] = d(prior, y_tr)
    g = m.actor(prior, y_tr)
    out["D_actor"] = d(g, y_tr)
    out["shift_prior"] = ((g - prior).abs() / t.sigma_bar).mean().item()
    out["shift_real"] = ((m.actor(z_tr, y_tr) - z_tr).abs() / t.sigma_bar).mean().item()
    if m.attr is not None:
        pred = attr_predict(m, posterior_sample(t, va, gen), t.kind)
        acc = (pred == t.labels[va]).float().mean(0)
        out["attr_val_accuracy"] = acc.mean().item()
        out["attr_val_accuracy_per_attr"] = {a: round(acc[i].item(), 4) for i, a in enumerate(t.attr_names)}
    return out


def train_labelset(cfg: TrainLabelSetConfig, command: list[str] | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   probe: Callable[[int, LatentMappers], dict] | None = None, probe_every: int = 0) -> Path:
    """Train and write OUT/mapper.*; ``progress(step, steps)`` is called after every actor step (server jobs report it).

    CPU-seconds (process time, all threads) are recorded in the metrics; ``probe(step, mappers)`` runs every
    ``probe_every`` steps, its time not counted, and its results land in metrics["probes"] (the baselines bench)."""
    resolve_device("cpu", cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    t = load_table(cfg.table or cfg.bundle, cfg.label_set)
    out = Path(cfg.out) if cfg.out else Path(cfg.bundle) / "labelsets" / cfg.label_set
    out.mkdir(parents=True, exist_ok=True)
    lcfg = LatentConfig(latent_dim=t.mu.shape[1], attr_names=t.attr_names, kind=t.kind, width=cfg.width,
                        depth=cfg.depth, label_embed=cfg.label_embed)
    m = LatentMappers(lcfg)
    opt_c = torch.optim.Adam(m.critic.parameters(), lr=cfg.lr, betas=(0.0, 0.9))
    opt_a = torch.optim.Adam(m.actor.parameters(), lr=cfg.lr, betas=(0.0, 0.9))
    opt_attr = torch.optim.Adam(m.attr.parameters(), lr=cfg.attr_lr) if m.attr is not None else None
    train_rows = t.rows(0)
    if cfg.labelled and cfg.labelled < len(train_rows):
        train_rows = torch.sort(train_rows[torch.randperm(len(train_rows), generator=torch.Generator().manual_seed(cfg.seed))[:cfg.labelled]])[0]
    if len(train_rows) < cfg.batch_size and not cfg.labelled:  # a deliberately small labelled subset is drawn with replacement
        raise ValueError(f"{len(train_rows)} training rows is fewer than one batch of {cfg.batch_size}")
    log.info("training label set %r (%d attributes: %s) on %d latents of dim %d", cfg.label_set, lcfg.n_labels,
             ", ".join(t.attr_names) or "none: realism mapper", len(train_rows), lcfg.latent_dim)
    batch = lambda: train_rows[torch.randint(len(train_rows), (cfg.batch_size,), generator=gen)]  # noqa: E731
    log_file = open(out / "train_log.jsonl", "w")
    started, cpu, probes = time.time(), 0.0, []
    for step in tqdm(range(1, cfg.steps + 1), desc=f"train-labelset {cfg.label_set}", unit="step"):
        t0 = time.process_time()
        for _ in range(cfg.critic_steps):
            loss_c, info = critic_loss(m, critic_batch(m, t, batch(), cfg, gen), cfg.gp_weight)
            opt_c.zero_grad(set_to_none=True)
            loss_c.backward()
            opt_c.step()
        m.critic.requires_grad_(False)
        loss_a, info_a = actor_loss(m, t, batch(), cfg, gen)
        opt_a.zero_grad(set_to_none=True)
        loss_a.backward()
        opt_a.step()
        m.critic.requires_grad_(True)
        if opt_attr is not None:
            idx = batch()
            loss_attr = attr_loss(m, posterior_sample(t, idx, gen), t.labels[idx], t.kind)
            opt_attr.zero_grad(set_to_none=True)
            loss_attr.backward()
            opt_attr.step()
        cpu += time.process_time() - t0
        if probe is not None and (step % probe_every == 0 or step == cfg.steps):
            probes.append({"step": step, "cpu_s": cpu, **probe(step, m)})
        if progress is not None:
            progress(step, cfg.steps)
        if step % cfg.diag_every == 0 or step == cfg.steps:
            diag = diagnostics(m, t, gen)
            row = {"step": step, **info, **info_a, **diag, "elapsed_s": round(time.time() - started, 1)}
            log_file.write(json.dumps(row) + "\n")
            log_file.flush()
            log.info("step %d: D train %.3f val %.3f prior %.3f actor %.3f, shift %.3f%s", step, diag["D_train"],
                     diag["D_val"], diag["D_prior"], diag["D_actor"], diag["shift_prior"],
                     f", D_attr val acc {diag['attr_val_accuracy']:.3f}" if "attr_val_accuracy" in diag else "")
    log_file.close()
    metrics = {**diagnostics(m, t, gen), "train_seconds": round(time.time() - started, 1), "cpu_seconds": round(cpu, 2),
               "steps": cfg.steps, "labelled_examples": len(train_rows), **({"probes": probes} if probes else {})}
    train_labels = t.labels[train_rows].to(torch.int8)  # only the rows it was trained on
    tensors = {**{k: v for k, v in m.state_dict().items()}, "label_table": train_labels, "sigma_bar": t.sigma_bar}
    manifest = {
        "kind": "labelset",
        "name": cfg.label_set,
        "arch": ARCH,
        "config": lcfg.to_json(),
        "lambda_dist": cfg.lambda_dist,
        "training": {k: v for k, v in cfg.__dict__.items() if k not in ("bundle", "out", "table")},
        "data_fingerprint": t.data_fingerprint,
        "decoder_fingerprint": t.decoder_fingerprint,
        "command": command or sys.argv,
        "metrics": metrics,
    }
    save_artifact(out, "mapper", tensors, manifest)
    log.info("wrote %s in %.0f s", out / "mapper.safetensors", metrics["train_seconds"])
    return out
