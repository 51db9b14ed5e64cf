"""A trained BiGAN or GAIA as a bundle (``lcs train-baseline`` writes it beside the model's own artifact): vae.* in
the VAE's format (``models.bigan.save_as_vae``) and the source bundle's judge, so ``lcs encode`` and ``lcs
train-labelset`` put latent constraints on the GAN's latent space unchanged."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from conditioning.images import batch_to_float
from models.bigan import EXPORT_FORMAT, BiGAN, load_bigan, save_as_vae
from models.gaia import GAIA, load_gaia
from training.data import ImageDataset, load_dataset

log = logging.getLogger("lcs.export_backbone")


def latent_moments(model: BiGAN | GAIA, data: ImageDataset, rows: np.ndarray, seed: int) -> tuple[torch.Tensor, ...]:
    """Per-dimension mean and std of E's latents on (up to 10,000 of) the training images ROWS."""
    idx = np.sort(np.random.default_rng(seed).permutation(rows)[:10_000])
    with torch.no_grad():
        mu = torch.cat(
            [model.encoder(batch_to_float(data.images[idx[s : s + 512]]))[0] for s in range(0, len(idx), 512)]
        )
    return mu.mean(0), mu.std(0).clamp_min(1e-6)


def export_backbone(
    model: BiGAN | GAIA, out: Path, bundle: Path, manifest: dict, data: ImageDataset, seed: int
) -> None:
    """Make OUT a bundle on the model's (E, G): vae.* (``models.bigan.save_as_vae``; a model without a prior with its
    latents standardised on the training images) and the source bundle's judge, which reads images whatever drew them.
    ``lcs encode --bundle OUT`` and label-set training then run unchanged."""
    moments = None if model.has_prior else latent_moments(model, data, data.indices("train"), seed)
    save_as_vae(model, out, {k: manifest[k] for k in ("dataset", "training", "command", "metrics")}, moments)
    for name in ("judge.json", "judge.safetensors"):
        if (bundle / name).exists():
            shutil.copyfile(bundle / name, out / name)


def reexport_backbone(out: Path, method: str, bundle: Path) -> bool:
    """Export OUT's trained ``bigan``/``ali``/``gaia`` again where its vae.json predates ``EXPORT_FORMAT`` (no
    retraining). -> exported now?"""
    vae = json.loads((out / "vae.json").read_text())
    if vae.get("export", {}).get("format") == EXPORT_FORMAT:
        return False
    model, manifest = (load_gaia if method == "gaia" else load_bigan)(out)
    data = load_dataset(vae["dataset"]["name"], **vae["dataset"]["params"])
    export_backbone(
        model.eval(), out, bundle, {**manifest, "dataset": vae["dataset"]}, data, manifest["training"]["seed"]
    )
    log.info("re-exported %s as a bundle (export format %d)", out, EXPORT_FORMAT)
    return True
