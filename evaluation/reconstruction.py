"""What a VAE keeps of real images: the reconstruction error ``lcs train-vae`` reports, and the attributes that
survive reconstruction (the decoder's ceiling that ``lcs eval`` and the backbone bench report)."""

from __future__ import annotations

import numpy as np
import torch

from conditioning import backbone
from conditioning.images import batch_to_float
from conditioning.runtime import autocast
from evaluation.judging import decide, predict
from evaluation.statistics import binary_metrics
from models.judge import Judge
from models.vae import VAE


@torch.no_grad()
def evaluate_mse(vae: VAE, images: np.ndarray, device: torch.device, batch: int = 256) -> float:
    """Per-pixel MSE of reconstructions from the posterior mean (the number the σ comparison uses)."""
    vae.eval()
    total, count = 0.0, 0
    for s in range(0, len(images), batch):
        x = batch_to_float(images[s : s + batch], device)
        with autocast(device):
            mu, _ = vae.encode(x)
            xhat = vae.decode(mu)
        total += (xhat.float() - x).pow(2).sum().item()
        count += x.numel()
    vae.train()
    return total / max(count, 1)


def reconstruction_scores(
    vae: VAE, judge: Judge, judge_manifest: dict, images: np.ndarray, labels: np.ndarray, attrs: list[str], device
) -> tuple[dict[str, dict[str, float]], np.ndarray]:
    """The decoder's ceiling, attribute by attribute: the judge's reading of reconstructions (posterior mean) of
    ``images`` against their true ``labels`` (columns ``attrs``). Recall = of the images that have an attribute,
    how many keep it through the decoder; specificity = of those without, how many stay without.
    Returns (binary metrics per attribute, the 0/1 decisions)."""
    recon = backbone.decode(vae, backbone.encode(vae, images, device)[0], device)
    got = decide(predict(judge, recon, device)[0], judge_manifest, attrs)
    return {a: binary_metrics(got[:, j], labels[:, j]) for j, a in enumerate(attrs)}, got
