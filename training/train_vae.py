"""Train the unconditional VAE once (``lcs train-vae``). Everything downstream freezes it.

Writes into --out: train_log.jsonl, grids/ (reconstructions and prior samples as PNG),
checkpoint.* (resumable with --resume), and the final artifact vae.safetensors + vae.json.

Long runs survive being stopped: a checkpoint every --ckpt-minutes (and --ckpt-every steps), SIGTERM (what a
preemptible machine sends) checkpoints at the next step boundary and exits, --max-minutes ends the run cleanly on a
wall-clock budget, and --resume continues bit for bit from the checkpoint. Across machines, the packed fp16 VAE is the
hand-over: --init from it with --warmup-steps (Adam's moments start afresh).
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from conditioning.images import batch_to_float, save_grid
from conditioning.runtime import autocast, job_threads, memory_format, resolve_device, resolve_precision
from conditioning.settings import require_at_least
from evaluation.reconstruction import evaluate_mse
from models.artifacts import fingerprint, load_manifest, save_artifact
from models.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from models.vae import ARCH, VAE, VAEConfig, grow, load_vae
from models.vaegan import VAEGAN, VAEGANConfig
from training.data import ImageDataset, load_dataset

log = logging.getLogger("lcs.train_vae")
PACE_STEPS = 20  # a --max-minutes run re-estimates its length every this many steps


@dataclass
class TrainVAEConfig:
    dataset: str = "avatars"
    dataset_params: dict = field(default_factory=dict)
    out: str = "runs/avatars"
    latent_dim: int = VAEConfig.latent_dim
    width: int = VAEConfig.width
    res_blocks: int = VAEConfig.res_blocks
    sigma_x: float = VAEConfig.sigma_x
    beta: float = VAEConfig.beta
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    lr_final: float = 1e-5  # the schedule goes from lr to lr_final over the run
    lr_schedule: str = "exp"  # exp (exponential decay) or cosine
    warmup_steps: int = 0  # linear warm-up from 0 (a run --init from packed weights starts Adam afresh)
    # VAE-GAN (models.vaegan): weights of the image discriminator's adversarial and feature-matching terms (0, 0: VAE)
    adv_weight: float = VAEGANConfig.adv
    fm_weight: float = VAEGANConfig.fm
    init: str = ""  # start from this trained VAE directory's weights (same config): fine-tuning
    grow: bool = False  # --init from a VAE without residual blocks into this one's --res-blocks, as the same function
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto (bf16 where the device has it in hardware) | bf16 | fp32: conditioning.runtime
    threads: int = 0  # 0 = every core
    log_every: int = 50  # steps between lines of train_log.jsonl
    grid_every: int = 1000  # steps between PNG grids
    ckpt_every: int = 500  # steps between checkpoints
    ckpt_minutes: float = 5.0  # and at most this long between them (0 = steps only)
    resume: bool = False
    max_steps: int = 0  # stop early (tests, smoke runs); 0 = run all epochs
    # Wall-clock budget (0 = none): the run shortens itself to the steps that fit (re-estimated as it goes), so
    # candidates compared at equal cost each get a schedule that completes (issue 15's lever runs).
    max_minutes: float = 0.0

    def __post_init__(self) -> None:
        """``--epochs 0`` would write an untrained VAE and exit 0."""
        require_at_least(self, {"epochs": 1, "batch_size": 1, "width": 1, "latent_dim": 1, "max_steps": 0})


def recorded_lineage(man: dict) -> list[dict]:
    """The runs a VAE's manifest says it continued, newest first. A run recorded before lineages were kept names only
    its --init, whose directory may since hold a later run: that entry is marked ``unknown``."""
    if "init_lineage" in man:
        return man["init_lineage"]
    init = man["training"].get("init")
    return [{"from": init, "unknown": True}] if init else []


def init_lineage(init: str) -> list[dict]:
    """The runs an --init continues, as they are when this run starts. Recorded in the manifest because a directory
    is often trained on in place later (training/resume): read afterwards, it would name a later run."""
    man = load_manifest(init, "vae")
    m = man["metrics"]
    hop = {"from": init, "steps": m["steps"], "train_seconds": m["train_seconds"], "device": m.get("device", "")}
    hop["decoder_fingerprint"] = man["decoder_fingerprint"]
    return [hop, *recorded_lineage(man)]


def vae_manifest(
    cfg: TrainVAEConfig, vae: VAE, data: ImageDataset, metrics: dict, command: list[str], lineage: list[dict]
) -> dict:
    return {
        "kind": "vae",
        "arch": ARCH,
        "config": vae.cfg.to_json(),
        "dataset": {
            "name": data.name,
            "params": data.params,
            "attr_names": data.attr_names,
            "label_sets": {k: v.to_json() for k, v in data.label_sets.items()},
        },
        "training": {k: v for k, v in cfg.__dict__.items() if k not in ("dataset", "dataset_params")},
        "command": command,
        "decoder_fingerprint": fingerprint({f"decoder.{k}": v for k, v in vae.decoder.state_dict().items()}),
        "metrics": metrics,
        "init_lineage": lineage,
    }


def build_models(cfg: TrainVAEConfig, data: ImageDataset, device: torch.device):
    """(the VAE, what trains it: the VAE itself or a VAE-GAN around it, one Adam over its parameter groups)."""
    c, h, _ = data.image_shape
    vcfg = VAEConfig(
        channels=c,
        image_size=h,
        latent_dim=cfg.latent_dim,
        width=cfg.width,
        res_blocks=cfg.res_blocks,
        sigma_x=cfg.sigma_x,
        beta=cfg.beta,
    )
    vae = VAE(vcfg)
    if cfg.init:
        base, _ = load_vae(cfg.init)
        if cfg.grow:
            grow(vae, base)
        elif base.cfg != vcfg:
            raise ValueError(f"--init {cfg.init} has config {base.cfg.to_json()}, this run {vcfg.to_json()}")
        else:
            vae.load_state_dict(base.state_dict())
    gan = VAEGANConfig(adv=cfg.adv_weight, fm=cfg.fm_weight)
    # A VAE-GAN trains the VAE with its discriminator (the checkpoint holds both); the artifact is the VAE alone.
    model = (VAEGAN(vae, gan) if gan.enabled else vae).to(device)
    if gan.enabled:
        log.info("with an image discriminator (VAE-GAN) %s", gan.to_json())
    # One Adam, a parameter group per network: a group whose loss did not reach it has no gradient and is skipped.
    opt = torch.optim.Adam(
        [
            {"params": p, "name": g, "betas": (0.5, 0.999) if g == "discriminator" else (0.9, 0.999)}
            for g, p in model.optim_groups().items()
        ],
        lr=cfg.lr,
    )
    return vae, model, opt


def train_step(
    model: VAE | VAEGAN, opt: torch.optim.Optimizer, x: torch.Tensor, device: torch.device, precision: str = "fp32"
) -> dict:
    """One step of every optimiser group in the model's order; returns the loss parts as floats."""
    info = {}
    with autocast(device, precision):
        for _, loss, parts in model.step_losses(x):
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1e4)
            opt.step()
            info.update({k: v.item() for k, v in parts.items()})
    return info


@torch.no_grad()
def save_grids(vae: VAE, x: torch.Tensor, z: torch.Tensor, directory: Path, step: int) -> None:
    """recon_STEP.png (16 images over their reconstructions) and prior_STEP.png (decodes of fixed prior samples)."""
    vae.eval()
    recon = vae.decode(vae.encode(x)[0])
    save_grid(torch.cat([x[:16], recon[:16]]), directory / f"recon_{step:07d}.png", nrow=16)
    save_grid(vae.decode(z), directory / f"prior_{step:07d}.png", nrow=16)
    vae.train()


def planned_steps(cfg: TrainVAEConfig, n_train: int) -> tuple[int, int]:
    """(steps per epoch, steps of the run)."""
    per_epoch = n_train // cfg.batch_size
    if per_epoch == 0:
        raise ValueError(f"{n_train} training images is fewer than one batch of {cfg.batch_size}")
    return per_epoch, min(per_epoch * cfg.epochs, cfg.max_steps or per_epoch * cfg.epochs)


def paced_length(cfg: TrainVAEConfig, done: int, step: int, planned: int, elapsed: float) -> int:
    """The run's length under --max-minutes: the steps that fit at the pace so far (``done`` steps in ``elapsed``
    seconds). Re-estimated every PACE_STEPS steps, so a machine that gets busier mid-run still ends on time."""
    per_step = elapsed / done
    return max(step, min(planned, step + int((cfg.max_minutes * 60 - elapsed) / per_step)))


def learning_rate(cfg: TrainVAEConfig, step: int, total: int, start: int = 0) -> float:
    """lr at ``step``: from cfg.lr to cfg.lr_final, exponentially or along a half cosine, after a linear warm-up of
    cfg.warmup_steps from ``start`` (where this process began: a time-budgeted stretch resumed from a finished run
    re-plans its schedule, and without a warm-up its first steps jumped from lr_final to cfg.lr: train MSE
    0.0021 -> 0.0027 in issue 26's second stretch)."""
    t = step / max(total, 1)
    warm = min(1.0, (step - start + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.lr_schedule == "exp":
        return warm * cfg.lr * (cfg.lr_final / cfg.lr) ** t
    if cfg.lr_schedule == "cosine":
        return warm * (cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * t)))
    raise ValueError(f"lr_schedule must be exp or cosine, got {cfg.lr_schedule!r}")


class StopOnSignal:
    """While active, SIGTERM and SIGINT only set ``signum``: the loop checkpoints at the next step boundary and exits,
    so a stopped run resumes exactly. Outside the main thread (a library caller's worker) it does nothing."""

    signum = 0

    def __enter__(self):
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._note)
        return self

    def _note(self, signum, _frame) -> None:
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


def train_vae(cfg: TrainVAEConfig, command: list[str] | None = None) -> Path:
    command = command or sys.argv
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device, job_threads(cfg.threads))
    precision = resolve_precision(device, cfg.precision)
    fmt = memory_format(device, precision)
    torch.manual_seed(cfg.seed)

    data = load_dataset(cfg.dataset, **cfg.dataset_params)
    train_idx, val_idx = data.indices("train"), data.indices("val")
    _, h, w = data.image_shape
    if h != w:
        raise ValueError(f"square images expected, got {h}x{w}")
    lineage = init_lineage(cfg.init) if cfg.init else []
    vae, model, opt = build_models(cfg, data, device)
    model.to(memory_format=fmt)
    vcfg = vae.cfg
    steps_per_epoch, planned = planned_steps(cfg, len(train_idx))
    total_steps = planned

    step = 0
    if cfg.resume and has_checkpoint(out):
        step = load_checkpoint(out, model, opt)["step"]
        log.info("resumed from %s at step %d", out / "checkpoint.safetensors", step)
    log.info(
        "training VAE %s on %s (%d train / %d val images, %s) for %d steps on %s (%s, %d threads)",
        vcfg.to_json(),
        data.name,
        len(train_idx),
        len(val_idx),
        data.image_shape,
        total_steps,
        device,
        precision,
        torch.get_num_threads(),
    )

    fixed_x = batch_to_float(data.images[val_idx[:32]], device)
    fixed_z = torch.randn(32, vcfg.latent_dim, generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    stop = StopOnSignal()
    with stop, open(out / "train_log.jsonl", "a") as log_file:
        started, window, paced_from = time.time(), [], step
        saved_at = started
        bar = tqdm(total=total_steps, initial=step, desc=f"train-vae σx={cfg.sigma_x}", unit="step")
        while step < total_steps:
            epoch, offset = divmod(step, steps_per_epoch)
            # Per-epoch permutation from (seed, epoch): resuming mid-epoch replays the same order.
            order = np.random.default_rng([cfg.seed, epoch]).permutation(train_idx)
            for i in range(offset, steps_per_epoch):
                if step >= total_steps:
                    break
                lr = learning_rate(cfg, step, total_steps, paced_from if cfg.max_minutes else 0)
                for g in opt.param_groups:
                    g["lr"] = lr
                rows = np.sort(order[i * cfg.batch_size : (i + 1) * cfg.batch_size])
                x = batch_to_float(data.images[rows], device).contiguous(memory_format=fmt)
                window.append(train_step(model, opt, x, device, precision))
                step += 1
                if cfg.max_minutes and step >= paced_from + PACE_STEPS and step % PACE_STEPS == 0:
                    total_steps = bar.total = paced_length(cfg, step - paced_from, step, planned, time.time() - started)
                bar.update()
                if step % cfg.log_every == 0 or step == total_steps:
                    mean = {k: float(np.mean([wi[k] for wi in window])) for k in window[0]}
                    window.clear()
                    bar.set_postfix(loss=f"{mean['loss']:.0f}", kl=f"{mean['kl']:.1f}", mse=f"{mean['mse']:.4f}")
                    elapsed = round(time.time() - started, 1)
                    log_file.write(json.dumps({"step": step, "epoch": epoch, "lr": lr, **mean, "elapsed_s": elapsed}))
                    log_file.write("\n")
                    log_file.flush()
                if step % cfg.grid_every == 0 or step == total_steps:
                    save_grids(vae, fixed_x, fixed_z, out / "grids", step)
                due = cfg.ckpt_minutes and time.time() - saved_at >= cfg.ckpt_minutes * 60
                if step % cfg.ckpt_every == 0 or step == total_steps or due or stop.signum:
                    save_checkpoint(out, model, opt, {"step": step, "config": vcfg.to_json()})
                    saved_at = time.time()
                if stop.signum:
                    bar.close()
                    log.warning("stopped by signal %d at step %d; checkpoint saved (--resume)", stop.signum, step)
                    raise SystemExit(128 + stop.signum)
        bar.close()

    metrics = {
        "val_mse": evaluate_mse(vae, data.images[val_idx], device),
        "test_mse": evaluate_mse(vae, data.images[data.indices("test")], device),
        "steps": step,
        "train_seconds": round(time.time() - started, 1),
        "device": str(device),
        "precision": precision,
        "threads": torch.get_num_threads(),
    }
    vae = vae.cpu().eval()
    save_artifact(out, "vae", vae.state_dict(), vae_manifest(cfg, vae, data, metrics, command, lineage))
    log.info("wrote %s (val MSE %.5f, test MSE %.5f)", out / "vae.safetensors", metrics["val_mse"], metrics["test_mse"])
    return out
