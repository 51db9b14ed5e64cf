"""The frozen model on its device: decoder, encoder and the loaded label sets' mappers.

Every forward is padded to at least ``PAD_ROWS`` rows. Why: BLAS picks other kernels for very
small batches, which changes results in the last float bits, so the same seed could give
different PNG bytes depending on what it was batched with. From about 12 rows on, each row's
result no longer depends on the batch (measured on CPU); padding makes responses reproducible
under dynamic batching.

Label-set mappers stay on the CPU even on a GPU host: they are small MLPs (a forward of 64 rows
takes about a millisecond), label tables and spec resolution live on the CPU, and only the
decoder and encoder are worth the device.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.artifacts import fingerprint
from models.latent import LatentMappers
from models.vae import load_vae
from training.optimize import OptimizeConfig, edit_latents, optimize_latents
from training.runtime import autocast, resolve_device
from training.specs import distinct_rows

log = logging.getLogger("lcs.engine")
PAD_ROWS = 16


@dataclass(eq=False)
class LabelSet:
    """One immutable, loaded version of a label set; requests keep a reference to the one they started on."""

    name: str
    version: str
    m: LatentMappers
    manifest: dict
    table: torch.Tensor | None  # label rows of the training data (n x K, float); None for realism
    sigma_bar: torch.Tensor
    rows: torch.Tensor | None = None  # the table's distinct rows and their counts: fast request resolution
    counts: torch.Tensor | None = None

    def __post_init__(self):
        if self.table is not None and self.rows is None:
            self.rows, self.counts = distinct_rows(self.table)

    @property
    def attr_names(self) -> list[str]:
        return list(self.m.cfg.attr_names)

    @property
    def kind(self) -> str:
        return self.m.cfg.kind


def _pad(x: torch.Tensor) -> torch.Tensor:
    if len(x) >= PAD_ROWS:
        return x
    return torch.cat([x, x.new_zeros(PAD_ROWS - len(x), *x.shape[1:])])


class Engine:
    def __init__(self, bundle: str | Path, device: str = "auto", threads: int = 0):
        self.device = resolve_device(device, threads)
        self.vae, self.manifest = load_vae(bundle, self.device)
        self.decoder_fingerprint: str = self.manifest["decoder_fingerprint"]
        self.latent_dim = self.vae.cfg.latent_dim
        self.image_shape = (self.vae.cfg.channels, self.vae.cfg.image_size, self.vae.cfg.image_size)
        log.info("loaded %s VAE (latent %d, images %s) on %s; decoder %s", self.manifest["dataset"]["name"], self.latent_dim,
                 self.image_shape, self.device, self.decoder_fingerprint[:12])

    def live_decoder_fingerprint(self) -> str:
        """Recomputed from the weights in memory, at the precision they are stored in (packed bundles: fp16)."""
        dtype = torch.float16 if self.manifest.get("storage_dtype") == "float16" else torch.float32
        return fingerprint({f"decoder.{k}": v.to(dtype) for k, v in self.vae.decoder.state_dict().items()})

    @torch.inference_mode()
    def decode(self, z: torch.Tensor) -> np.ndarray:
        """Latents -> uint8 images N x H x W x C."""
        n = len(z)
        with autocast(self.device):
            x = self.vae.decode(_pad(z.to(self.device)))[:n]
        return (x.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N x C x H x W -> posterior means (the identity an edit preserves)."""
        n = len(images)
        with autocast(self.device):
            mu, _ = self.vae.encode(_pad(images.to(self.device).float().div(255)))
        return mu[:n].float().cpu()

    @torch.inference_mode()
    def actor(self, ls: LabelSet, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = len(z)
        return ls.m.actor(_pad(z), _pad(y) if ls.m.cfg.n_labels else None)[:n]

    @torch.inference_mode()
    def realism(self, ls: LabelSet, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Critic probability that each latent is a real encoding with these labels (for metrics)."""
        n = len(z)
        return torch.sigmoid(ls.m.critic(_pad(z), _pad(y) if ls.m.cfg.n_labels else None)[:n])

    def optimize(self, ls: LabelSet, z: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n = len(z)
        z, _ = optimize_latents(ls.m, _pad(z), _pad(y), _pad(mask), OptimizeConfig(), ls.sigma_bar)
        return z[:n].detach()

    def edit(self, ls: LabelSet, z0: torch.Tensor, spec: dict[str, int], mode: str, allow_unseen: bool) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(z0)
        cfg = OptimizeConfig(dist_weight=1.0) if mode == "optimize" else None
        z, target = edit_latents(ls.m, _pad(z0), spec, ls.table, mode, cfg, ls.sigma_bar, allow_unseen)
        return z[:n].detach(), target[:n]
