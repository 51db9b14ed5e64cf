"""The baselines bench's GAN systems (issue 29): how each is trained and scored beside latent constraints.

- ``triplegan`` and ``infogan`` are samplers on the served bundle, trained like the other image methods;
- ``bigan-lc``, ``ali-lc`` and ``gaia-lc`` are backbones: the GAN is trained, exported as a bundle
  (``lcs train-baseline``), its latent table encoded, and an LC label set trained on it with the sampling recipe;
  the row is that actor, and the GAN's own unconditional samples are scored beside it (``gan_prior``), so a row
  never hides an untrained GAN;
- every GAN row carries its training curve (the discriminator's accuracy and the losses, from train_log.jsonl);
- ``triplegan-labels``: Triple-GAN and an LC actor with the same 1%, 10% and 100% of the labels (label efficiency).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from bench.protocol import COMMAND, GAN_LR, GAN_LRS, LABEL_SHARES, LC_SAMPLING
from training.encode import encode_dataset
from training.export_backbone import reexport_backbone
from training.train_baseline import (
    ARTIFACT_STEM,
    TrainBaselineConfig,
    train_baseline,
    training_settings,
)
from training.train_labelset import TrainLabelSetConfig, labelset_settings, train_labelset


def curve(out: Path, points: int = 20) -> list[dict]:
    """The training log subsampled to about ``points`` rows (every logged key, rounded): the GAN's curve."""
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    keep = log[:: max(1, len(log) // points)]
    if keep[-1] is not log[-1]:
        keep.append(log[-1])
    return [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in keep]


def _reusable(manifest: Path, settings: dict, bundle: Path) -> bool:
    """Whether the model a manifest describes was trained with these settings and, where it read the bundle's latent
    table (a label set, a latent baseline: their manifests name the decoder), on this bundle's decoder."""
    if not manifest.exists():
        return False
    had = json.loads(manifest.read_text())
    decoder = had.get("decoder_fingerprint")
    on_this = decoder is None or decoder == json.loads((bundle / "latents.json").read_text())["decoder_fingerprint"]
    return had.get("training") == settings and on_this


def train_once(cfg: TrainBaselineConfig, command: list[str]) -> bool:
    """Train unless OUT already holds a model trained with exactly this configuration (``_reusable``), so a bench
    stopped midway (a GAN row costs up to an hour on 2 cores) resumes where it was, a row stopped midway from its
    checkpoint; any changed setting retrains. -> trained now?"""
    if _reusable(Path(cfg.out) / f"{ARTIFACT_STEM[cfg.method]}.json", training_settings(cfg), Path(cfg.bundle)):
        return False
    train_baseline(cfg, command=command)
    return True


def train_lc(bundle: Path, label_set: str, out: Path, steps: int, seed: int, tag: list[str], labelled: int = 0) -> Path:
    """An LC label set with the sampling recipe into OUT, once (``_reusable``, as ``train_once``)."""
    cfg = TrainLabelSetConfig(
        bundle=str(bundle),
        label_set=label_set,
        out=str(out),
        steps=steps,
        seed=seed,
        labelled=labelled,
        diag_every=10**9,
        **LC_SAMPLING,
    )
    if _reusable(out / "mapper.json", labelset_settings(cfg), bundle):
        return out
    return train_labelset(cfg, command=[*COMMAND, *tag])


def train_gan(
    name: str, method: str, bundle: Path, spec: dict, prof: dict, out: Path, seed: int = 0, labelled: int = 0
) -> tuple[bool, dict]:
    """Train a GAN system on the quality label set at its GAN learning rate for the profile's ``gan_steps`` (once: see
    ``train_once``). -> (trained now?, its manifest)."""
    cfg = TrainBaselineConfig(
        bundle=str(bundle),
        method=method,
        label_set=spec["label_set"],
        labelled=labelled,
        steps=prof["gan_steps"],
        seed=seed,
        batch_size=spec["batch"],
        lr=GAN_LRS.get(method, GAN_LR),
        lr_final=GAN_LRS.get(method, GAN_LR),
        device="cpu",
        out=str(out),
        resume=True,  # a row stopped midway (a session's end) continues from its checkpoint
    )
    fresh = train_once(cfg, [*COMMAND, name, method, f"seed={seed}", f"labelled={labelled or 'all'}"])
    return fresh, json.loads((out / f"{ARTIFACT_STEM[method]}.json").read_text())


def row_extras(man: dict, out: Path) -> dict:
    """What every GAN row reports of its training: cost, steps, size, curve."""
    m = man["metrics"]
    return {
        "train_cpu_s": m["cpu_seconds"],
        "steps": m["steps"],
        "params_stored": m["params_stored"],
        "curve": curve(out),
    }


def train_backbone_part(
    name: str, method: str, bundle: Path, spec: dict, prof: dict, out: Path, seed: int, ev: Callable
) -> tuple[Path, dict]:
    """Train ``bigan``/``ali``/``gaia`` into OUT (a bundle), encode it, train the LC label set on it. -> (the bundle
    to score the actor on, the row's extras: cost, curve, the GAN's own prior samples' scores)."""
    gan, ls = method.removesuffix("-lc"), spec["label_set"]
    fresh, man = train_gan(name, gan, bundle, spec, prof, out, seed)
    fresh = reexport_backbone(out, gan, bundle) or fresh  # a bundle exported by an older format: its LC too
    lc = out / "labelsets" / ls
    if fresh or not (out / "latents.json").exists():
        encode_dataset(out, device="cpu")
    train_lc(out, ls, lc, prof["lc_steps"], seed, [name, method, f"seed={seed}"])
    lc_cpu = json.loads((lc / "mapper.json").read_text())["metrics"].get("cpu_seconds", 0.0)
    prior = ev("prior", seed, "", out)
    return out, {
        **row_extras(man, out),
        "train_cpu_s": man["metrics"]["cpu_seconds"] + lc_cpu,
        "gan_cpu_s": man["metrics"]["cpu_seconds"],
        "gan_prior": {"accuracy": prior["mean_accuracy"], "frechet": prior["frechet"]["fd"]},
    }


def train_sampler_part(name: str, method: str, bundle: Path, spec: dict, prof: dict, out: Path, seed: int) -> dict:
    """Train ``triplegan``/``infogan`` into OUT; -> the row's extras (and InfoGAN's code <-> class match)."""
    _, man = train_gan(name, method, bundle, spec, prof, out, seed)
    extra = row_extras(man, out)
    if "code_match" in man["metrics"]:
        extra["code_match"] = man["metrics"]["code_match"]
    return extra


def label_efficiency(name: str, bundle: Path, spec: dict, prof: dict, work: Path, train_rows: int, ev) -> list[dict]:
    """Triple-GAN and an LC actor (sampling recipe) trained with the same share of the labels, seed 0, scored alike."""
    ls, out = spec["label_set"], []
    for share in LABEL_SHARES:
        n = 0 if share == 1.0 else round(share * train_rows)
        # all the labels: the quality rows' seed-0 Triple-GAN and LC actor, trained once for both
        tg = work / (f"triplegan-{ls}-n{n}" if n else f"triplegan-{ls}-s0")
        train_gan(name, "triplegan", bundle, spec, prof, tg, labelled=n)
        lc = work / (f"lc-l0-{ls}-n{n}" if n else f"actor-l0-{ls}-s0")
        train_lc(bundle, ls, lc, prof["lc_steps"], 0, [name, "lc-l0", f"labelled={n or 'all'}"], labelled=n)
        t, a = ev("triplegan", 0, tg), ev("actor", 0, lc)
        out.append(
            {
                "share": share,
                "labelled": n or train_rows,
                "triplegan": {"accuracy": t["mean_accuracy"], "frechet": t["frechet"]["fd"]},
                "lc": {"accuracy": a["mean_accuracy"], "frechet": a["frechet"]["fd"]},
            }
        )
        print(
            f"  {name} {share:.0%} of the labels: Triple-GAN {t['mean_accuracy']:.3f}, LC {a['mean_accuracy']:.3f}",
            flush=True,
        )
    return out
