"""``lcs refine-attr``: a latent classifier that reads what the decoder draws (issue 27 item 3).

D_attr learns from posterior samples of real encodings, but the actor, optimisation and request-time selection ask it
about latents the encoder never produced: the actor's outputs. Where the decoder draws something else there, D_attr
is wrong, and the actor's attribute term learns to satisfy it rather than the image. Each round, the actor maps prior
draws (under training label rows) and real encodings (under one-attribute edits) to latents; the decoder draws them;
a classifier of real images that is *not* the judge (``--labeler``: ``lcs train-judge`` with another seed) reads
them; D_attr trains on those latents and on their re-encodings, labelled by that reading, beside the real rows; then,
with ``actor_steps``, critic and actor train on against it (the label set's own recipe). The drawn rows of every
round stay in the pool (as DAgger keeps them). Agreement of D_attr with the labeler on fresh drawn rows, and D_attr's
accuracy on real held-out rows, are measured before and after and land in the manifest.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from tqdm import tqdm

from conditioning.backbone import Backbone
from conditioning.runtime import job_threads
from conditioning.settings import require_at_least
from evaluation.judging import decide, predict
from models import latent_objective as objective
from models.artifacts import ArtifactError, fingerprint, save_artifact
from models.judge import load_judge
from models.latent import LatentMappers, load_mappers
from models.latent_objective import attr_loss, attr_predict, edit_labels
from models.latent_table import LatentTable, load_table, posterior_sample
from training.train_labelset import TrainLabelSetConfig

log = logging.getLogger("lcs.refine_attr")


@dataclass
class RefineAttrConfig:
    bundle: str = "runs/avatars"
    label_set: str = "faces"
    labeler: str = ""  # directory of an image classifier (judge.*) trained apart from the bundle's judge
    out: str = ""  # default: the label set's directory, refined in place
    rounds: int = 2
    n: int = 4096  # rows drawn per round: half prior draws under training rows, half edits of real encodings
    n_check: int = 2000  # fresh drawn rows the agreement is measured on, before and after
    attr_steps: int = 300  # D_attr steps per round on real rows and the pool
    actor_steps: int = 200  # critic/actor steps per round after D_attr's (0: refine D_attr alone)
    drawn_share: float = 0.5  # share of each D_attr batch taken from the drawn rows
    lambda_dist_edit: float = -1.0  # λ_dist of the actor's edit rows from here on (issue 27 item 4); < 0: the set's own
    batch_size: int = 256
    attr_lr: float = 1e-3
    seed: int = 0
    device: str = "auto"  # the VAE and labeler; the latent MLPs train on CPU (train-labelset's reasoning)
    precision: str = "auto"
    threads: int = 0

    def __post_init__(self) -> None:
        """A round of no drawn rows or no D_attr steps refines nothing."""
        require_at_least(self, {"rounds": 1, "n": 2, "n_check": 1, "attr_steps": 1, "actor_steps": 0, "batch_size": 1})


@dataclass
class Drawn:
    z: torch.Tensor  # the actor's outputs
    reencoded: torch.Tensor  # μ of their decoded images, re-encoded
    read: torch.Tensor  # the labeler's reading of the decoded images (0/1 rows)
    asked: torch.Tensor  # the label rows the actor was asked for


@torch.no_grad()
def draw(m: LatentMappers, t: LatentTable, bb: Backbone, labeler, lman: dict, n: int, gen: torch.Generator) -> Drawn:
    """``n`` actor outputs (half from the prior, half edits of real encodings), drawn, read by the labeler and
    re-encoded from their 8-bit images (what a user would download)."""
    train = t.rows(0)
    half = n // 2
    i = train[torch.randint(len(train), (half,), generator=gen)]
    j = train[torch.randint(len(train), (n - half,), generator=gen)]
    asked = torch.cat([t.labels[i], edit_labels(t.labels[j], t.unique_rows, gen)])
    starts = torch.cat([torch.randn(half, t.mu.shape[1], generator=gen), t.mu[j]])
    z = m.actor(starts, asked)
    images = (bb.decode(z) * 255).round().to(torch.uint8)
    read = torch.from_numpy(decide(predict(labeler, images, bb.device)[0], lman, t.attr_names)).float()
    return Drawn(z, bb.encode(images), read, asked)


@torch.no_grad()
def agreement(m: LatentMappers, t: LatentTable, d: Drawn, gen: torch.Generator) -> dict:
    """How often D_attr reads on drawn latents what the labeler reads in their images (overall, per attribute, and
    on the attribute values asked of the actor), how often the images show what was asked, and D_attr's accuracy
    on real held-out rows (which the refinement must not lose)."""
    pred = attr_predict(m, d.z, t.kind)
    agree = (pred == d.read).float()
    va = t.rows(1) if len(t.rows(1)) else t.rows(0)
    real = attr_predict(m, posterior_sample(t, va, gen), t.kind) == t.labels[va]
    # a categorical set agrees on a row when the class does (its one-hot columns would count a miss twice)
    share = lambda same: round((same.all(1) if t.kind == "categorical" else same).float().mean().item(), 4)  # noqa: E731
    return {
        "agreement": share(pred == d.read),
        "agreement_per_attr": {a: round(agree[:, k].mean().item(), 4) for k, a in enumerate(t.attr_names)},
        "drawn_shows_asked": share(d.read == d.asked),
        "attr_reads_asked": share(pred == d.asked),
        "real_val_accuracy": share(real),
        "n": len(d.z),
    }


def refine_attr(cfg: RefineAttrConfig, command: list[str] | None = None) -> Path:
    """Refine the label set's D_attr (and, with actor_steps, its critic and actor) and write it to OUT."""
    if not cfg.labeler:
        raise ValueError("--labeler is required: an image classifier trained apart from the judge (lcs train-judge)")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    bundle = Path(cfg.bundle)
    src = bundle / "labelsets" / cfg.label_set
    out = Path(cfg.out) if cfg.out else src
    bb = Backbone(bundle, cfg.device, job_threads(cfg.threads), cfg.precision)
    m, manifest, extra = load_mappers(src, bb.decoder_fingerprint)
    m.train().requires_grad_(True)  # loaded frozen for serving; it trains on here
    if m.attr is None or m.actor is None:
        raise ValueError(f"{src}: refine-attr needs a label set with an actor and attributes")
    labeler, lman = load_judge(cfg.labeler, bb.device)
    judge, _ = load_judge(bundle, bb.device) if (bundle / "judge.json").exists() else (None, None)
    if judge is not None and fingerprint(judge.state_dict()) == fingerprint(labeler.state_dict()):
        raise ArtifactError(f"{cfg.labeler}: the labeler is the bundle's judge; train another (lcs train-judge --seed)")
    missing = [a for a in m.cfg.attr_names if a not in lman["config"]["attr_names"]]
    if missing:
        raise ValueError(f"{cfg.labeler}: the labeler does not read {', '.join(missing)}")
    t = load_table(bundle, cfg.label_set)
    known = {f.name for f in fields(TrainLabelSetConfig)}
    train_cfg = TrainLabelSetConfig(**{k: v for k, v in manifest["training"].items() if k in known})
    if cfg.lambda_dist_edit >= 0:
        train_cfg.lambda_dist_edit = cfg.lambda_dist_edit
    obj, opts = train_cfg.objective(), objective.optimizers(m, train_cfg.lr, cfg.attr_lr)
    check_gen = lambda: torch.Generator().manual_seed(cfg.seed + 1)  # noqa: E731 (the same draws before and after)
    before = agreement(m, t, draw(m, t, bb, labeler, lman, cfg.n_check, check_gen()), check_gen())
    log.info("before: D_attr agrees with the labeler on %.3f of drawn attributes", before["agreement"])
    train_rows = t.rows(0)
    batch = lambda: train_rows[torch.randint(len(train_rows), (cfg.batch_size,), generator=gen)]  # noqa: E731
    pool_z, pool_y = torch.zeros(0, t.mu.shape[1]), torch.zeros(0, len(t.attr_names))
    n_drawn = round(cfg.batch_size * cfg.drawn_share)  # 0: real rows only (the control: continued training alone)

    def attr_rows() -> tuple[torch.Tensor, torch.Tensor]:
        idx = batch()[: cfg.batch_size - n_drawn]
        k = torch.randint(len(pool_z), (n_drawn,), generator=gen)
        return torch.cat([posterior_sample(t, idx, gen), pool_z[k]]), torch.cat([t.labels[idx], pool_y[k]])

    started, rounds = time.time(), []
    for r in range(1, cfg.rounds + 1):
        d = draw(m, t, bb, labeler, lman, cfg.n, gen)
        pool_z, pool_y = torch.cat([pool_z, d.z, d.reencoded]), torch.cat([pool_y, d.read, d.read])
        for _ in tqdm(range(cfg.attr_steps), desc=f"refine-attr round {r}: D_attr", unit="step"):
            z, y = attr_rows()
            loss = attr_loss(m, z, y, t.kind)
            opts.attr.zero_grad(set_to_none=True)
            loss.backward()
            opts.attr.step()
        for _ in tqdm(range(cfg.actor_steps), desc=f"refine-attr round {r}: actor", unit="step"):
            objective.step(m, opts, t, batch, obj, gen, attr_rows=attr_rows)
        shown = agreement(m, t, d, gen)["drawn_shows_asked"]
        rounds.append({"round": r, "pool": len(pool_z), "drawn_shows_asked": shown})
        log.info("round %d: pool %d rows; its draws showed what was asked in %.3f", r, len(pool_z), shown)
    after = agreement(m, t, draw(m, t, bb, labeler, lman, cfg.n_check, check_gen()), check_gen())
    log.info(
        "after: D_attr agrees with the labeler on %.3f (was %.3f); drawn images show what was asked %.3f (was %.3f); "
        "D_attr on real held-out rows %.3f (was %.3f)",
        after["agreement"], before["agreement"], after["drawn_shows_asked"], before["drawn_shows_asked"],
        after["real_val_accuracy"], before["real_val_accuracy"],
    )  # fmt: skip
    refined = {
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("bundle", "out")},
        "labeler_fingerprint": fingerprint(labeler.state_dict()),
        "before": before,
        "after": after,
        "rounds": rounds,
        "seconds": round(time.time() - started, 1),
        "command": command or sys.argv,
    }
    manifest = {**manifest, "refined": [*manifest.get("refined", []), refined]}
    save_artifact(out, "mapper", {**m.state_dict(), **extra}, manifest)
    log.info("wrote %s in %.1f s", out / "mapper.safetensors", refined["seconds"])
    return out


def agreement_table(before: dict, after: dict) -> str:
    """Markdown: per attribute, D_attr's agreement with the labeler before and after (docs and the log)."""
    rows = ["| attribute | before | after |", "|---|---|---|"]
    per_attr = after["agreement_per_attr"].items()
    rows += [f"| {a} | {before['agreement_per_attr'][a]:.3f} | {v:.3f} |" for a, v in per_attr]
    for key in ("agreement", "drawn_shows_asked", "attr_reads_asked", "real_val_accuracy"):
        rows.append(f"| **{key.replace('_', ' ')}** | {before[key]:.3f} | {after[key]:.3f} |")
    return "\n".join(rows)
