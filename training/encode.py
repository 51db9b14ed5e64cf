"""``lcs encode``: one pass of the frozen encoder -> the latent table every label set trains on
(format: ``models/latent_table.py``); and rule tables, labelled by a rule on decoded prior samples.

Rule tables are the paper's zero-shot experiment: decode z ~ N(0, I), score each image with a rule
(``conditioning/rules.py``), label it positive above the threshold (default: the median score, so
the classes balance) and write (z, label) as an ordinary latent table; no labelled image is involved.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import torch

from conditioning import backbone, modes
from conditioning.labelset import LabelSetVersion
from conditioning.rules import RULES
from conditioning.runtime import autocast, resolve_device
from models.artifacts import load_manifest
from models.latent_table import REALISM, write_latent_table
from models.vae import load_vae
from training.data import ImageDataset, load_dataset

log = logging.getLogger("lcs.encode")
RULE_SAMPLES = 20000  # decoded prior samples a rule labels


def encode_dataset(
    bundle: str | Path,
    data: ImageDataset | None = None,
    device: str = "auto",
    command: list[str] | None = None,
    precision: str = "auto",
) -> Path:
    bundle = Path(bundle)
    dev = resolve_device(device)
    vae, vman = load_vae(bundle, dev)
    if data is None:
        ds = vman["dataset"]
        data = load_dataset(ds["name"], **ds["params"])
    if tuple(data.image_shape) != (vae.cfg.channels, vae.cfg.image_size, vae.cfg.image_size):
        raise ValueError(
            f"dataset images are {data.image_shape}, the VAE takes "
            f"{(vae.cfg.channels, vae.cfg.image_size, vae.cfg.image_size)}"
        )
    started = time.time()
    mu, sigma = backbone.encode(vae, data.images, dev, progress=f"encode {data.name}", precision=precision)
    manifest = write_latent_table(
        bundle,
        mu,
        sigma,
        data.attrs,
        data.split,
        attr_names=data.attr_names,
        label_sets={k: v.to_json() for k, v in data.label_sets.items()},
        decoder_fingerprint=vman["decoder_fingerprint"],
        dataset={"name": data.name, "params": data.params},
        ids=data.ids,
        command=command or sys.argv,
        extra_stats={"seconds": round(time.time() - started, 1)},
    )
    log.info(
        "wrote %s: %d x %d latents, mean σ̄_z %.4f, %d active dims",
        bundle / "latents.safetensors",
        len(data),
        vae.cfg.latent_dim,
        manifest["stats"]["sigma_bar_mean"],
        manifest["stats"]["active_dims"],
    )
    return bundle / "latents.safetensors"


@torch.no_grad()
def build_rule_table(
    bundle: str | Path,
    rule: str,
    out: str | Path = "",
    n: int = RULE_SAMPLES,
    threshold: float | None = None,
    seed: int = 0,
    device: str = "auto",
    command: list[str] | None = None,
    realism: str = REALISM,
) -> Path:
    """Label decodes of ``n`` latents by ``rule`` (above the median: positive) into a latent table. The latents are
    realism-mapped prior samples G(z_p) when the bundle has the ``realism`` label set (the paper's zero-shot setup:
    the rule's "real" rows are realistic, so its critic keeps samples realistic), else raw prior samples."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose from {sorted(RULES)}")
    bundle = Path(bundle)
    out = Path(out) if out else bundle / "rules" / rule
    dev = resolve_device(device)
    vae, vman = load_vae(bundle, dev)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, vae.cfg.latent_dim, generator=gen)
    mapper = bundle / "labelsets" / realism if realism else None
    if mapper is not None and (mapper / "mapper.json").exists():
        ls = LabelSetVersion.load(mapper, vman["decoder_fingerprint"], realism, "bundle")
        none = torch.zeros(len(z), 0)
        z = modes.latents("actor", ls, z, none, none.bool()).z
    else:
        log.warning("no %s label set in %s: the rule labels raw prior samples", realism or "realism", bundle)
        realism = ""
    scores = []
    for s in range(0, n, 256):
        with autocast(dev):
            scores.append(RULES[rule](vae.decode(z[s : s + 256].to(dev)).float()).cpu())
    score = torch.cat(scores)
    thr = float(score.median()) if threshold is None else threshold
    labels = (score > thr).to(torch.int8)[:, None]
    split = (torch.arange(n) % 10 == 9).to(torch.uint8)  # 10% validation
    try:  # the distance penalty uses the real encoder's σ̄_z when the bundle has been encoded
        sigma_bar = torch.tensor(load_manifest(bundle, "latents")["sigma_bar"])
    except Exception:  # noqa: BLE001 - no latent table yet: unit scale
        sigma_bar = torch.ones(vae.cfg.latent_dim)
    write_latent_table(
        out,
        z,
        torch.zeros_like(z),
        labels,
        split,
        attr_names=[rule],
        label_sets={rule: {"name": rule, "attrs": [rule], "kind": "binary"}},
        decoder_fingerprint=vman["decoder_fingerprint"],
        sigma_bar=sigma_bar,
        dataset={
            "name": "rule",
            "params": {
                "rule": rule,
                "n": n,
                "threshold": thr,
                "seed": seed,
                "realism": realism,
                "doc": RULES[rule].__doc__,
            },
        },
        command=command or sys.argv,
        extra_stats={"positive_rate": float(labels.float().mean()), "threshold": thr},
    )
    log.info(
        "rule %r on %d decoded %s samples: threshold %.4f, %.1f%% positive -> %s",
        rule,
        n,
        "realism-mapped" if realism else "prior",
        thr,
        100 * float(labels.float().mean()),
        out / "latents.safetensors",
    )
    return out
