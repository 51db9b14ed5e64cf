"""Rule constraints without labels (the paper's zero-shot experiment).

Decode prior samples z ~ N(0, I), score each image with a rule, label it rule-positive when the
score passes a threshold, and write (z, label) as an ordinary latent table. ``lcs train-labelset
--table DIR`` then learns the critic and actor exactly as for labelled data: no labelled image
is involved. The threshold defaults to the median score, so the two classes are balanced.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Callable

import torch

from models.artifacts import load_manifest
from models.vae import load_vae
from training.encode import write_latent_table
from training.runtime import autocast, resolve_device

log = logging.getLogger("lcs.rules")


def brightness(images: torch.Tensor) -> torch.Tensor:
    """Mean intensity of the image."""
    return images.mean((1, 2, 3))


def warm(images: torch.Tensor) -> torch.Tensor:
    """Red minus blue, averaged over the image (grey images score 0)."""
    if images.shape[1] < 3:
        return torch.zeros(len(images))
    return (images[:, 0] - images[:, 2]).mean((1, 2))


RULES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"bright": brightness, "warm": warm}


@torch.no_grad()
def build_rule_table(bundle: str | Path, rule: str, out: str | Path = "", n: int = 20000, threshold: float | None = None,
                     seed: int = 0, device: str = "auto", command: list[str] | None = None) -> Path:
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose from {sorted(RULES)}")
    bundle = Path(bundle)
    out = Path(out) if out else bundle / "rules" / rule
    dev = resolve_device(device)
    vae, vman = load_vae(bundle, dev)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, vae.cfg.latent_dim, generator=gen)
    scores = []
    for s in range(0, n, 256):
        with autocast(dev):
            scores.append(RULES[rule](vae.decode(z[s: s + 256].to(dev)).float()).cpu())
    score = torch.cat(scores)
    thr = float(score.median()) if threshold is None else threshold
    labels = (score > thr).to(torch.int8)[:, None]
    split = (torch.arange(n) % 10 == 9).to(torch.uint8)  # 10% validation
    try:  # the distance penalty uses the real encoder's σ̄_z when the bundle has been encoded
        sigma_bar = torch.tensor(load_manifest(bundle, "latents")["sigma_bar"])
    except Exception:  # noqa: BLE001 - no latent table yet: unit scale
        sigma_bar = torch.ones(vae.cfg.latent_dim)
    write_latent_table(
        out, z, torch.zeros_like(z), labels, split, attr_names=[rule],
        label_sets={rule: {"name": rule, "attrs": [rule], "kind": "binary"}},
        decoder_fingerprint=vman["decoder_fingerprint"], sigma_bar=sigma_bar,
        dataset={"name": "rule", "params": {"rule": rule, "n": n, "threshold": thr, "seed": seed,
                                            "doc": RULES[rule].__doc__}},
        command=command or sys.argv, extra_stats={"positive_rate": float(labels.float().mean()), "threshold": thr},
    )
    log.info("rule %r on %d decoded prior samples: threshold %.4f, %.1f%% positive -> %s", rule, n, thr,
             100 * float(labels.float().mean()), out / "latents.safetensors")
    return out
