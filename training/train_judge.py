"""``lcs train-judge``: the evaluation classifier, trained on real training images only.

Thresholds are chosen per attribute on the validation split; test accuracy/AUC per attribute
(and top-1 accuracy per categorical label set) is the *ceiling* that generated samples are
compared against. Nothing is ever trained against the judge.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from conditioning.images import batch_to_float
from conditioning.runtime import autocast, job_threads, memory_format, resolve_device, resolve_precision
from conditioning.settings import require_at_least
from evaluation.judging import decide, predict
from evaluation.statistics import auc, best_threshold, binary_metrics
from models.artifacts import save_artifact
from models.judge import ARCH, Judge, JudgeConfig
from training.data import ImageDataset, load_dataset

log = logging.getLogger("lcs.train_judge")


@dataclass
class TrainJudgeConfig:
    dataset: str = "avatars"
    dataset_params: dict = field(default_factory=dict)
    out: str = "runs/avatars"
    width: int = 32
    epochs: int = 4
    batch_size: int = 64
    lr: float = 2e-3
    shift: int = 2  # random translation (pixels) as augmentation
    flip: bool = False  # random horizontal flips as augmentation (Fashion-MNIST's judge; avatars are drawn facing us)
    # Positive weight per attribute = negatives / positives, capped here; 0 (the default) turns it off. Measured on
    # avatars (issue 15): at 10, Smiling never leaves the base rate (0.70, AUC 0.58, also at 8 epochs and with another
    # trunk); at 0 the same judge reads Smiling at 0.989. Thresholds are chosen on validation data either way, so the
    # weighting is not needed for calibrated decisions.
    pos_weight_cap: float = 0.0
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto (bf16 where the device has it in hardware) | bf16 | fp32: conditioning.runtime
    threads: int = 0  # 0 = every core
    max_steps: int = 0

    def __post_init__(self) -> None:
        """``--epochs 0`` wrote an untrained judge and exited 0."""
        require_at_least(self, {"epochs": 1, "batch_size": 1, "width": 1, "max_steps": 0})


def ceiling(judge_probs: np.ndarray, target: np.ndarray, manifest: dict, data: ImageDataset) -> dict:
    per_attr = {}
    for ls in data.label_sets.values():
        pred = decide(judge_probs, manifest, ls.attrs)
        for j, a in enumerate(ls.attrs):
            k = data.attr_names.index(a)
            per_attr[a] = {**binary_metrics(pred[:, j], target[:, k]), "auc": auc(judge_probs[:, k], target[:, k])}
    sets = {}
    for name, ls in data.label_sets.items():
        pred = decide(judge_probs, manifest, ls.attrs)
        tgt = target[:, [data.attr_names.index(a) for a in ls.attrs]]
        exact = float((pred == tgt).all(1).mean())
        mean_attr = float(np.mean([per_attr[a]["accuracy"] for a in ls.attrs]))
        # Headline accuracy: top-1 for a categorical set (one-vs-rest accuracies flatter it), else the attribute mean.
        sets[name] = {
            "kind": ls.kind,
            "accuracy": exact if ls.kind == "categorical" else mean_attr,
            "mean_attribute_accuracy": mean_attr,
            "exact_match": exact,
        }
    return {"per_attribute": per_attr, "label_sets": sets}


def train_judge(cfg: TrainJudgeConfig, command: list[str] | None = None) -> Path:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device, job_threads(cfg.threads))
    precision = resolve_precision(device, cfg.precision)
    fmt = memory_format(device, precision)
    torch.manual_seed(cfg.seed)
    data = load_dataset(cfg.dataset, **cfg.dataset_params)
    c, h, _ = data.image_shape
    judge = Judge(JudgeConfig(channels=c, image_size=h, attr_names=data.attr_names, width=cfg.width)).to(device)
    judge.to(memory_format=fmt)
    opt = torch.optim.AdamW(judge.parameters(), lr=cfg.lr, weight_decay=1e-4)
    train_idx = data.indices("train")
    steps_per_epoch = len(train_idx) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total, 1))
    attrs_t = torch.from_numpy(data.attrs).float()
    # Balance rare attributes (pos_weight_cap > 0): positive weight = negatives / positives, capped.
    rate = attrs_t[train_idx].mean(0).clamp(1e-3, 1 - 1e-3)
    pos_weight = ((1 - rate) / rate).clamp(max=cfg.pos_weight_cap).to(device) if cfg.pos_weight_cap > 0 else None
    categorical = [
        [data.attr_names.index(a) for a in ls.attrs] for ls in data.label_sets.values() if ls.kind == "categorical"
    ]
    started = time.time()
    step = 0
    bar = tqdm(total=total, desc="train-judge", unit="step")
    judge.train()
    while step < total:
        order = np.random.default_rng([cfg.seed, step // steps_per_epoch]).permutation(train_idx)
        for i in range(steps_per_epoch):
            if step >= total:
                break
            idx = np.sort(order[i * cfg.batch_size : (i + 1) * cfg.batch_size])
            x = batch_to_float(data.images[idx], device)
            if cfg.shift:
                dx, dy = np.random.default_rng([cfg.seed, step, 1]).integers(-cfg.shift, cfg.shift + 1, 2)
                x = torch.roll(F.pad(x, [cfg.shift] * 4, value=1.0), (int(dy), int(dx)), (2, 3))[
                    ..., cfg.shift : -cfg.shift, cfg.shift : -cfg.shift
                ]
            if cfg.flip:
                flip = torch.from_numpy(np.random.default_rng([cfg.seed, step, 2]).random(len(idx)) < 0.5).to(device)
                x = torch.where(flip[:, None, None, None], x.flip(3), x)
            y = attrs_t[idx].to(device)
            with autocast(device, precision):
                logits, _ = judge(x)
            loss = F.binary_cross_entropy_with_logits(logits.float(), y, pos_weight=pos_weight)
            for cols in categorical:  # decided by argmax, so trained as one softmax too (top-1, not one-vs-rest)
                loss = loss + F.cross_entropy(logits[:, cols].float(), y[:, cols].argmax(1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            bar.update()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    judge.eval()

    val_idx, test_idx = data.indices("val"), data.indices("test")
    val_probs, _ = predict(judge, data.images[val_idx], device)
    thresholds = {a: best_threshold(val_probs[:, k], data.attrs[val_idx, k]) for k, a in enumerate(data.attr_names)}
    manifest = {
        "kind": "judge",
        "arch": ARCH,
        "config": judge.cfg.to_json(),
        "dataset": {"name": data.name, "params": data.params},
        "label_sets": {k: v.to_json() for k, v in data.label_sets.items()},
        "thresholds": thresholds,
        "training": {k: v for k, v in cfg.__dict__.items() if k not in ("dataset", "dataset_params")},
        "command": command or sys.argv,
    }
    test_probs, _ = predict(judge, data.images[test_idx], device)
    manifest["ceiling"] = ceiling(test_probs, data.attrs[test_idx], manifest, data)
    manifest["train_seconds"] = round(time.time() - started, 1)
    save_artifact(out, "judge", judge.cpu().state_dict(), manifest)
    summary = {a: round(m["accuracy"], 4) for a, m in manifest["ceiling"]["per_attribute"].items()}
    log.info("wrote %s; test accuracy per attribute: %s", out / "judge.safetensors", json.dumps(summary))
    return out
