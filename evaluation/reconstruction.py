"""Reconstruction error of a VAE: the number ``lcs train-vae`` reports and the σ_x comparison uses."""

from __future__ import annotations

import numpy as np
import torch

from conditioning.images import batch_to_float
from conditioning.runtime import autocast
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
