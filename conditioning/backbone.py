"""The frozen VAE on its device: latents -> images and images -> latents, the one implementation
the server, the evaluation and the encoding job share.

Both directions run in chunks, each padded to at least ``modes.PAD_ROWS`` rows (see there why), except the
decoder's convolutions, which need fewer: a lone row costs 16 rows' work otherwise. ``invariant_rows`` measures,
for this machine, engine and thread count, the fewest rows from which a row's bytes no longer depend on its batch;
the server pads its convolutions to that. All at the engine's precision (``runtime.resolve_precision``: bf16
autocast, with channels_last on CPU, where the device has bf16 in hardware; fp32 elsewhere).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from conditioning.images import batch_to_float
from conditioning.modes import PAD_ROWS, pad
from conditioning.runtime import autocast, memory_format, resolve_device, resolve_precision
from models.artifacts import fingerprint
from models.vae import VAE, load_vae

log = logging.getLogger("lcs.backbone")
CHUNK = 256  # rows per forward
# ... but 32 for the CPU's decoder: two processes side by side (``lcs serve --workers 2``) decoded a batch of 64 at
# 0.46 ms an image in one forward and 0.37 in two (shared cache; alone, even)
CPU_DECODE_CHUNK = 32


@torch.no_grad()
def decode(
    vae: VAE,
    z: torch.Tensor,
    device: torch.device,
    chunk: int = 0,
    precision: str = "auto",
    rows: int = PAD_ROWS,
) -> torch.Tensor:
    """Latents (n x d) -> images n x C x H x W, CPU floats in [0, 1]. The fully connected layer runs on at least
    PAD_ROWS rows (a matrix product of few rows takes other kernels: measured), the convolutions on at least
    ``rows``; ``chunk``: rows per forward (0: CPU_DECODE_CHUNK on the CPU, else CHUNK)."""
    out, chunk = [], chunk or (CPU_DECODE_CHUNK if device.type == "cpu" else CHUNK)
    for s in range(0, len(z), chunk):
        part = z[s : s + chunk].to(device)
        with autocast(device, precision):
            h = vae.decoder.fc(pad(part, 1))[: max(len(part), rows)]
            x = vae.decoder.image(h)[: len(part)]
        out.append(x.float().clamp(0, 1).cpu())
    return torch.cat(out) if out else torch.zeros(0, vae.cfg.channels, vae.cfg.image_size, vae.cfg.image_size)


# Batch sizes a probe decodes (odd ones included: with 2 threads a transposed convolution differed at 3 and 5 rows)
PROBE_SIZES = (1, 2, 3, 4, 5, 7, 8, 9, 12, 16, 17, 31, 33, 48, 64)


@torch.no_grad()
def invariant_rows(vae: VAE, device: torch.device, precision: str, candidates=(1, 2, 4, 8, PAD_ROWS)) -> int:
    """The fewest rows to pad the convolutions to such that every row decodes to the same bytes at every probed
    batch size as in a batch of 64. Why measured and not fixed: which kernels a batch size takes depends on the
    CPU, the library version, the thread count and the engine (on this project's CPUs, one row took a slower
    direct convolution with other rounding; two threads split a transposed convolution differently at 3 and 5
    rows). Falls back to PAD_ROWS, the padding the project shipped before, when no candidate holds."""
    z = torch.randn(64, vae.cfg.latent_dim, generator=torch.Generator().manual_seed(0))
    ref = decode(vae, z, device, precision=precision, rows=64)
    for rows in candidates:
        if all(torch.equal(decode(vae, z[:b], device, precision=precision, rows=rows), ref[:b]) for b in PROBE_SIZES):
            return rows
    log.warning("no row count up to %d decodes independently of the batch here; padding to %d", rows, PAD_ROWS)
    return PAD_ROWS


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
            mu, sigma = vae.encode(pad(x, 1))
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
        # what runs: under bf16 a bf16 copy (the same bytes out as autocast on the fp32 weights, measured), since
        # autocast casts every weight again on every call: 8% of the server's model time at batch 24, a third of a
        # lone row's decode (issue 28). ``vae`` keeps the stored weights, which the fingerprint is of.
        self.net = copy.deepcopy(self.vae).to(torch.bfloat16) if self.precision == "bf16" else self.vae
        self.decoder_fingerprint: str = self.manifest["decoder_fingerprint"]
        self.latent_dim = self.vae.cfg.latent_dim
        self.image_shape = (self.vae.cfg.channels, self.vae.cfg.image_size, self.vae.cfg.image_size)
        self.decode_rows = invariant_rows(self.net, self.device, self.precision)
        log.info(
            "loaded %s VAE (latent %d, images %s) on %s, convolutions padded to %d rows; decoder %s",
            self.manifest["dataset"]["name"],
            self.latent_dim,
            self.image_shape,
            self.engine,
            self.decode_rows,
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
        return decode(self.net, z, self.device, precision=self.precision, rows=self.decode_rows)

    def encode(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        return encode(self.net, images, self.device, precision=self.precision)[0]
