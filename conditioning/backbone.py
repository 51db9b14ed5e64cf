"""The frozen VAE on its device: latents -> images and images -> latents, the one implementation
the server, the evaluation and the encoding job share.

Both directions run in chunks, each padded to at least ``modes.PAD_ROWS`` rows (see there why),
at the engine's precision (``runtime.resolve_precision``: bf16 autocast, with channels_last on CPU, where the device has
bf16 in hardware; fp32 elsewhere).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from conditioning.images import batch_to_float
from conditioning.modes import pad
from conditioning.runtime import autocast, memory_format, resolve_device, resolve_precision
from models.artifacts import fingerprint
from models.vae import VAE, load_vae

log = logging.getLogger("lcs.backbone")
CHUNK = 256


@torch.no_grad()
def decode(
    vae: VAE, z: torch.Tensor, device: torch.device, chunk: int = CHUNK, precision: str = "auto"
) -> torch.Tensor:
    """Latents (n x d) -> images n x C x H x W, CPU floats in [0, 1]."""
    out = []
    for s in range(0, len(z), chunk):
        part = z[s : s + chunk]
        with autocast(device, precision):
            x = vae.decode(pad(part.to(device)))[: len(part)]
        out.append(x.float().clamp(0, 1).cpu())
    return torch.cat(out) if out else torch.zeros(0, vae.cfg.channels, vae.cfg.image_size, vae.cfg.image_size)


@torch.no_grad()
def encode(
    vae: VAE,
    images: np.ndarray | torch.Tensor,
    device: torch.device,
    chunk: int = CHUNK,
    progress: str = "",
    precision: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images N x C x H x W -> posterior (μ, σ) on the CPU; μ is the identity an edit preserves.
    ``progress``: a progress-bar label for long passes (the bar shows only then)."""
    mus, sigmas = [], []
    for s in tqdm(
        range(0, len(images), chunk), desc=progress, unit="batch", disable=not progress or len(images) <= chunk
    ):
        part = images[s : s + chunk]
        x = batch_to_float(part, device).contiguous(memory_format=memory_format(device, precision))
        with autocast(device, precision):
            mu, sigma = vae.encode(pad(x))
        mus.append(mu[: len(part)].float().cpu())
        sigmas.append(sigma[: len(part)].float().cpu())
    return torch.cat(mus), torch.cat(sigmas)


class Backbone:
    """A bundle's VAE loaded on a device, with what the server reports about it."""

    def __init__(self, bundle: str | Path, device: str = "auto", threads: int = 0, precision: str = "auto"):
        self.device = resolve_device(device, threads)
        self.precision = resolve_precision(self.device, precision)
        self.vae, self.manifest = load_vae(bundle, self.device)
        self.vae.to(memory_format=memory_format(self.device, self.precision))
        self.decoder_fingerprint: str = self.manifest["decoder_fingerprint"]
        self.latent_dim = self.vae.cfg.latent_dim
        self.image_shape = (self.vae.cfg.channels, self.vae.cfg.image_size, self.vae.cfg.image_size)
        log.info(
            "loaded %s VAE (latent %d, images %s) on %s; decoder %s",
            self.manifest["dataset"]["name"],
            self.latent_dim,
            self.image_shape,
            self.engine,
            self.decoder_fingerprint[:12],
        )

    @property
    def engine(self) -> str:
        """What runs the networks, e.g. ``cpu/fp32`` or ``cpu/bf16``: /info, the bench and the model card name it."""
        return f"{self.device.type}/{self.precision}"

    def live_decoder_fingerprint(self) -> str:
        """Recomputed from the weights in memory, at the precision they are stored in (packed bundles: fp16)."""
        dtype = torch.float16 if self.manifest.get("storage_dtype") == "float16" else torch.float32
        return fingerprint({f"decoder.{k}": v.to(dtype) for k, v in self.vae.decoder.state_dict().items()})

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return decode(self.vae, z, self.device, precision=self.precision)

    def encode(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        return encode(self.vae, images, self.device, precision=self.precision)[0]
