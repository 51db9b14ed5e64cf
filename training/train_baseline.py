"""``lcs train-baseline``: the related systems we measure latent constraints against, on the same
backbone and data as the bundle's VAE.

- retrained conditional models, trained on images: ``cvae`` (prior N(0, I)), ``cvae-cmma`` (learned
  prior p(z|y)), ``cvae-gan``, ``triplegan`` (semi-supervised: with ``--labelled N`` its unlabelled batches come
  from every training image); and ``fader``, a Fader network, which edits images (``lcs eval-edits``) but has no
  prior to sample from. ``--init DIR`` fine-tunes an earlier CVAE, CVAE-GAN or Fader network for a wider label set:
  its weights are copied, and inputs/outputs for the new label columns start at zero.
- unsupervised models, trained on images without labels: ``infogan`` (its categorical code is then matched to the
  label set's classes on the labelled training images: ``code_class``, the sampler's map), ``bigan`` and ``gaia``
  (exported beside their own artifact as a VAE-format backbone, vae.* plus the bundle's judge: the output directory
  is a bundle that ``lcs encode`` and ``lcs train-labelset`` take, latent constraints on a GAN's latent space).
- fits on the frozen VAE's latent table (``lcs encode``): ``attrvec-mean``, ``attrvec-lsq``, ``gmm``.

``--label-set`` names a label set of the dataset, or several joined by ``+`` (a model that must serve
all of them, e.g. ``category+footwear`` for a CVAE extended to footwear). Output:
BUNDLE/baselines/METHOD-LABELSET/ (or --out) with safetensors + JSON manifest and train_log.jsonl.
CPU-seconds (process time, all threads) are recorded; a ``probe`` callback sees the model every
``probe_every`` steps without its own time being counted (the cost-of-a-new-label-set bench uses it).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from conditioning.images import batch_to_float
from conditioning.runtime import autocast, memory_format, resolve_device
from conditioning.settings import require_at_least
from models.artifacts import load_manifest, save_artifact
from models.attrvec import AttributeVectors, AttrVecConfig
from models.bigan import BiGAN, BiGANConfig
from models.checkpoint import checkpoint_meta, has_checkpoint, load_checkpoint, remove_checkpoint, save_checkpoint
from models.cvae import CVAE, CVAEConfig
from models.cvaegan import CVAEGAN, CVAEGANConfig, load_conditional
from models.fader import FaderConfig, FaderNetwork, load_fader
from models.gaia import GAIA, GAIAConfig
from models.infogan import InfoGAN, InfoGANConfig, match_codes
from models.latent import LabelKind
from models.latent_gmm import LatentGMM, LatentGMMConfig
from models.latent_table import load_table
from models.triplegan import TripleGAN, TripleGANConfig
from models.vae import VAEConfig, load_vae
from training.data import ImageDataset, load_dataset
from training.export_backbone import export_backbone

log = logging.getLogger("lcs.train_baseline")
IMAGE_METHODS = ("cvae", "cvae-cmma", "cvae-gan", "triplegan")  # conditional generators: ``lcs eval`` samples them
EDIT_METHODS = ("fader",)  # trained on images like them, but scored by ``lcs eval-edits`` only
UNSUPERVISED_METHODS = ("infogan", "bigan", "ali", "gaia")  # trained on images without labels
BACKBONE_METHODS = ("bigan", "ali", "gaia")  # exported as a bundle's backbone (see the module's docstring)
LATENT_METHODS = ("attrvec-mean", "attrvec-lsq", "gmm")
METHODS = IMAGE_METHODS + EDIT_METHODS + UNSUPERVISED_METHODS + LATENT_METHODS
ARTIFACT_STEM = {
    "cvae": "cvae",
    "cvae-cmma": "cvae",
    "cvae-gan": "cvaegan",
    "triplegan": "triplegan",
    "fader": "fader",
    "infogan": "infogan",
    "bigan": "bigan",
    "ali": "bigan",  # a BiGAN with a stochastic encoder (models.bigan)
    "gaia": "gaia",
    "attrvec-mean": "attrvec",
    "attrvec-lsq": "attrvec",
    "gmm": "gmm",
}


@dataclass
class TrainBaselineConfig:
    bundle: str = "service/bundles/fashion-mnist"
    method: str = "cvae"
    label_set: str = "category"
    out: str = ""
    # fine-tune from this CVAE / CVAE-GAN / Fader network directory (image methods); fader also from a VAE directory
    # (e.g. the bundle): it then starts as that VAE's autoencoder
    init: str = ""
    labelled: int = 0  # train on this many labelled training examples, drawn with the seed (0: all)
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    lr_final: float = 1e-5
    components: int = 4  # gmm
    min_count: int = 20  # gmm
    adv_weight: float = FaderConfig.adv_weight  # fader: λ_E
    adv_ramp: float = 0.3  # fader: share of the steps over which λ_E rises from 0 (the authors: 500k iterations)
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    resume: bool = False  # image methods: continue from OUT/checkpoint.* when it was trained with the same settings

    def __post_init__(self) -> None:
        """``--steps 0`` wrote an untrained CVAE and exited 0."""
        require_at_least(self, {"steps": 1, "batch_size": 1, "components": 1, "min_count": 1, "labelled": 0})


CKPT_EVERY = 100  # image methods: steps between checkpoints (a GAN step takes 1-2.5 s on one of these CPU cores)
NOT_SETTINGS = ("bundle", "out", "resume")  # where and how a run goes, not what it trains


def training_settings(cfg: TrainBaselineConfig) -> dict:
    """What a model is trained with, as its manifest records it: equal settings, equal model (seeded)."""
    return {k: v for k, v in cfg.__dict__.items() if k not in NOT_SETTINGS}


def label_columns(data: ImageDataset, label_set: str) -> tuple[list[str], str]:
    """Attribute names and kind of a label set, or of several joined by '+' (kind binary)."""
    parts = label_set.split("+")
    unknown = [p for p in parts if p not in data.label_sets]
    if unknown:
        raise ValueError(f"label set(s) {unknown} not in {data.name}: {sorted(data.label_sets)}")
    attrs = [a for p in parts for a in data.label_sets[p].attrs]
    if len(set(attrs)) != len(attrs):
        raise ValueError(f"label sets {parts} share attributes")
    return attrs, data.label_sets[parts[0]].kind if len(parts) == 1 else "binary"


def labelled_subset(rows: np.ndarray, n: int, seed: int) -> np.ndarray:
    if not n or n >= len(rows):
        return rows
    return np.sort(np.random.default_rng([seed, n]).choice(rows, size=n, replace=False))


def widen_labels(
    model: torch.nn.Module, old_attrs: list[str], new_attrs: list[str], old: dict[str, torch.Tensor]
) -> None:
    """Load ``old`` (a state dict for ``old_attrs``) into ``model`` built for ``new_attrs`` ⊇ old_attrs:
    label inputs (encoder planes, decoder/prior inputs) and label outputs (classifier head) are the last
    len(attrs) entries along the dimension that grew; old columns keep their weights, new ones start at 0."""
    missing = [a for a in old_attrs if a not in new_attrs]
    if missing:
        raise ValueError(f"--init model has label columns {missing} that the new label set lacks")
    own = model.state_dict()
    for k, new in own.items():
        src = old[k]
        if src.shape == new.shape:
            new.copy_(src)
            continue
        d = next(i for i, (a, b) in enumerate(zip(src.shape, new.shape, strict=False)) if a != b)
        base = new.shape[d] - len(new_attrs)
        if base != src.shape[d] - len(old_attrs):
            raise ValueError(f"{k}: cannot widen {tuple(src.shape)} to {tuple(new.shape)}")
        new.zero_()
        new.narrow(d, 0, base).copy_(src.narrow(d, 0, base))
        cols = torch.tensor([base + new_attrs.index(a) for a in old_attrs])
        new.index_copy_(d, cols, src.narrow(d, base, len(old_attrs)))


def build_image_model(
    cfg: TrainBaselineConfig, backbone: VAEConfig, attrs: list[str], kind: LabelKind
) -> torch.nn.Module:
    if cfg.method in UNSUPERVISED_METHODS + ("triplegan",):
        if cfg.init:
            raise ValueError("--init fine-tunes a CVAE, CVAE-GAN or Fader network, not a GAN baseline")
        if cfg.method == "infogan" and kind != "categorical":
            raise ValueError("infogan matches its categorical code to classes: it needs a categorical label set")
        return {
            "infogan": lambda: InfoGAN(InfoGANConfig(backbone, n_categories=len(attrs))),
            "bigan": lambda: BiGAN(BiGANConfig(backbone)),
            "ali": lambda: BiGAN(BiGANConfig(backbone, stochastic=True)),
            "gaia": lambda: GAIA(GAIAConfig(backbone)),
            "triplegan": lambda: TripleGAN(TripleGANConfig(backbone, attrs, kind)),
        }[cfg.method]()
    if cfg.method == "fader":
        ramp = round(cfg.adv_ramp * cfg.steps)
        model = FaderNetwork(FaderConfig(backbone, attrs, kind, adv_weight=cfg.adv_weight, ramp_steps=ramp))
    else:
        ccfg = CVAEConfig(backbone=backbone, attr_names=attrs, kind=kind, learned_prior=cfg.method == "cvae-cmma")
        model = CVAEGAN(CVAEGANConfig(cvae=ccfg)) if cfg.method == "cvae-gan" else CVAE(ccfg)
    if cfg.init and cfg.method == "fader" and (Path(cfg.init) / "vae.json").exists():
        model.start_from_vae(load_vae(cfg.init)[0])
    elif cfg.init:
        base = load_fader(cfg.init)[0] if cfg.method == "fader" else load_conditional(cfg.init)[0]
        if type(base) is not type(model):
            raise ValueError(f"--init {cfg.init} is a {type(base).__name__}, not a {type(model).__name__}")
        widen_labels(model, base.label_config.attr_names, attrs, base.state_dict())
    return model


def train_image_model(
    cfg: TrainBaselineConfig,
    model: torch.nn.Module,
    data: ImageDataset,
    y_all: np.ndarray,
    rows: np.ndarray,
    device: torch.device,
    out: Path,
    probe: Callable | None,
    probe_every: int,
    unlabelled: np.ndarray | None = None,
) -> dict:
    """``unlabelled``: training rows a semi-supervised model (Triple-GAN) draws its unlabelled batch from."""
    fmt = memory_format(device)  # channels_last where autocast runs bf16 on the CPU: oneDNN's layout
    model.to(device, memory_format=fmt).train()
    betas = getattr(model, "adam_betas", (0.9, 0.999))  # the GANs': their papers' (0.5, 0.999)
    opts = {g: torch.optim.Adam(p, lr=cfg.lr, betas=betas) for g, p in model.optim_groups().items()}
    decay = (cfg.lr_final / cfg.lr) ** (1 / max(cfg.steps, 1))
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    start, cpu, probes = resume_point(cfg, model, opts, gen, out)
    with open(out / "train_log.jsonl", "a" if start else "w") as log_file:
        window = []
        for step in tqdm(
            range(start + 1, cfg.steps + 1), desc=f"train-baseline {cfg.method} {cfg.label_set}", unit="step"
        ):
            t0 = time.process_time()
            idx = np.sort(rows[torch.randint(len(rows), (cfg.batch_size,), generator=gen).numpy()])
            x = batch_to_float(data.images[idx], device).contiguous(memory_format=fmt)
            y = torch.from_numpy(y_all[idx]).float().to(device)
            extra = ()
            if unlabelled is not None:
                iu = np.sort(unlabelled[torch.randint(len(unlabelled), (cfg.batch_size,), generator=gen).numpy()])
                extra = (batch_to_float(data.images[iu], device).contiguous(memory_format=fmt),)
            info = {}
            for opt in opts.values():
                for pg in opt.param_groups:
                    pg["lr"] = cfg.lr * decay**step
            with autocast(device):
                for group, loss, part in model.step_losses(x, y, *extra):
                    opts[group].zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(opts[group].param_groups[0]["params"], 1e4)
                    opts[group].step()
                    info.update(part)
            cpu += time.process_time() - t0
            window.append(info)
            if step % 50 == 0 or step == cfg.steps:
                mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                window.clear()
                log_file.write(json.dumps({"step": step, **mean, "cpu_s": round(cpu, 2)}) + "\n")
                log_file.flush()
            if probe is not None and (step % probe_every == 0 or step == cfg.steps):
                model.eval().to(memory_format=torch.contiguous_format)  # probed as it is saved and loaded
                probes.append({"step": step, "cpu_s": cpu, **probe(step, model)})
                model.train().to(memory_format=fmt)
            if step % CKPT_EVERY == 0 and step < cfg.steps:
                meta = {"step": step, "cpu_s": cpu, "probes": probes, "training": training_settings(cfg)}
                save_checkpoint(out, model, opts, meta, gen)
    remove_checkpoint(out)  # the finished artifact supersedes it
    model.to(memory_format=torch.contiguous_format)  # what a loader of the artifact gets
    return {"steps": cfg.steps, "cpu_seconds": round(cpu, 2), "probes": probes}


def resume_point(
    cfg: TrainBaselineConfig, model: torch.nn.Module, opts: dict, gen: torch.Generator, out: Path
) -> tuple[int, float, list]:
    """(last step done, CPU seconds so far, probes so far): from OUT's checkpoint under ``--resume`` when it was
    trained with these settings (model, optimizers, both random streams restored: the run continues as if never
    stopped, the log cut back to the checkpoint's step), else (0, 0, []) for a fresh run."""
    if not (cfg.resume and has_checkpoint(out)):
        return 0, 0.0, []
    if checkpoint_meta(out).get("training") != training_settings(cfg):
        log.warning("%s/checkpoint.* was trained with other settings: training afresh", out)
        return 0, 0.0, []
    meta = load_checkpoint(out, model, opts, gen)
    lines = (out / "train_log.jsonl").read_text().splitlines() if (out / "train_log.jsonl").exists() else []
    kept = [line for line in lines if json.loads(line)["step"] <= meta["step"]]
    (out / "train_log.jsonl").write_text("".join(f"{line}\n" for line in kept))
    log.info("resumed from %s at step %d of %d", out / "checkpoint.safetensors", meta["step"], cfg.steps)
    return meta["step"], meta["cpu_s"], meta["probes"]


@torch.no_grad()
def infogan_code_map(
    model: InfoGAN, data: ImageDataset, y_all: np.ndarray, rows: np.ndarray, seed: int
) -> tuple[torch.Tensor, dict]:
    """The one-to-one code -> class map fitted on (up to 10,000 of) the labelled training images, and how many images
    it classifies right there and on the test split: how well a code learnt without labels matches the classes."""

    def codes(idx: np.ndarray) -> torch.Tensor:
        parts = [model.code_of(batch_to_float(data.images[idx[s : s + 512]], "cpu")) for s in range(0, len(idx), 512)]
        return torch.cat(parts)

    classes = lambda idx: torch.from_numpy(y_all[idx].argmax(1))  # noqa: E731
    fit, test = labelled_subset(rows, 10_000, seed), data.indices("test")
    mapping, fit_acc = match_codes(codes(fit), classes(fit), y_all.shape[1])
    test_acc = float((mapping[codes(test)] == classes(test)).float().mean())
    return mapping, {"fit_images": len(fit), "fit_accuracy": round(fit_acc, 4), "test_accuracy": round(test_acc, 4)}


def fit_latent_model(cfg: TrainBaselineConfig, attrs: list[str], kind: LabelKind) -> tuple[torch.nn.Module, dict, dict]:
    """Closed-form / EM fits on the training split of the bundle's latent table."""
    t = load_table(cfg.bundle, cfg.label_set)
    rows = labelled_subset(t.rows(0).numpy(), cfg.labelled, cfg.seed)
    t0 = time.process_time()
    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.method == "gmm":
        z = t.mu[rows] + t.sigma[rows] * torch.randn(len(rows), t.mu.shape[1], generator=gen)
        model = LatentGMM.fit(
            LatentGMMConfig(
                latent_dim=t.mu.shape[1],
                attr_names=attrs,
                kind=kind,
                components=cfg.components,
                min_count=min(cfg.min_count, max(1, len(rows) // 50)),
            ),
            z,
            t.labels[rows],
            cfg.seed,
        )
    else:
        model = AttributeVectors(
            AttrVecConfig(latent_dim=t.mu.shape[1], attr_names=attrs, kind=kind, method=cfg.method.split("-")[1])
        ).fit(t.mu[rows], t.labels[rows])
    return model, {"cpu_seconds": round(time.process_time() - t0, 3)}, {"decoder_fingerprint": t.decoder_fingerprint}


def train_baseline(
    cfg: TrainBaselineConfig,
    command: list[str] | None = None,
    probe: Callable[[int, torch.nn.Module], dict] | None = None,
    probe_every: int = 0,
) -> Path:
    if cfg.method not in METHODS:
        raise ValueError(f"unknown method {cfg.method!r}; choose from {METHODS}")
    on_images = cfg.method not in LATENT_METHODS
    device = resolve_device(cfg.device if on_images else "cpu", cfg.threads)
    vman = load_manifest(cfg.bundle, "vae")
    data = load_dataset(vman["dataset"]["name"], **vman["dataset"]["params"])
    attrs, kind = label_columns(data, cfg.label_set)
    out = Path(cfg.out) if cfg.out else Path(cfg.bundle) / "baselines" / f"{cfg.method}-{cfg.label_set}"
    out.mkdir(parents=True, exist_ok=True)
    y_all = data.columns(attrs).astype(np.float32)
    rows = labelled_subset(data.indices("train"), cfg.labelled, cfg.seed)
    started = time.time()
    if on_images:
        torch.manual_seed(cfg.seed)  # the initial weights too: one seed, one model
        model = build_image_model(cfg, VAEConfig(**vman["config"]), attrs, kind)
        log.info(
            "training %s on %s (%d labelled training images, labels %s) for %d steps on %s%s",
            cfg.method,
            data.name,
            len(rows),
            ", ".join(attrs),
            cfg.steps,
            device,
            f", from {cfg.init}" if cfg.init else "",
        )
        every = data.indices("train")
        semi = cfg.method == "triplegan" and len(rows) < len(every)
        metrics = train_image_model(
            cfg, model, data, y_all, rows, device, out, probe, probe_every, every if semi else None
        )
        model = model.cpu().eval()
        distinct, counts = np.unique(y_all[rows].astype(np.int8), axis=0, return_counts=True)
        extra = {"label_rows": torch.from_numpy(distinct), "label_counts": torch.from_numpy(counts)}
        if cfg.method == "infogan":
            extra["code_class"], metrics["code_match"] = infogan_code_map(model, data, y_all, rows, cfg.seed)
        cfg_json, arch, fp = model.cfg.to_json(), sys.modules[type(model).__module__].ARCH, {}
    else:
        model, metrics, fp = fit_latent_model(cfg, attrs, kind)
        if probe is not None:
            metrics["probes"] = [{"step": 1, "cpu_s": metrics["cpu_seconds"], **probe(1, model)}]
        extra = {}
        cfg_json, arch = model.cfg.to_json(), sys.modules[type(model).__module__].ARCH
    stored = sum(t.numel() for t in model.state_dict().values())
    trained = sum(p.numel() for p in model.parameters()) if on_images else stored  # fits: every number is fitted
    metrics.update(
        {
            "params_trained": trained,
            "params_stored": stored,
            "wall_seconds": round(time.time() - started, 1),
            "labelled_examples": int(len(rows)),
            "device": str(device),
        }
    )
    manifest = {
        "kind": "baseline",
        "method": cfg.method,
        "arch": arch,
        "config": cfg_json,
        "label_set": cfg.label_set,
        "dataset": vman["dataset"]["name"],
        "training": training_settings(cfg),
        "command": command or sys.argv,
        "metrics": metrics,
        **fp,
    }
    stem = ARTIFACT_STEM[cfg.method]
    save_artifact(out, stem, {**model.state_dict(), **extra}, manifest)
    if cfg.method in BACKBONE_METHODS:
        export_backbone(model, out, Path(cfg.bundle), {**manifest, "dataset": vman["dataset"]}, data, cfg.seed)
    log.info(
        "wrote %s (%d parameters trained, %.1f CPU-s)", out / f"{stem}.safetensors", trained, metrics["cpu_seconds"]
    )
    return out
