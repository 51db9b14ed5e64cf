"""``lcs encode``: one pass of the frozen encoder -> the latent table every label set trains on.

latents.safetensors holds mu, sigma (N x d, float32), attrs (N x K, int8) and split (N, uint8);
latents.json holds the attribute names, label sets, sigma_bar (encoder σ averaged over the
training split, per dimension; the actor's distance penalty divides by its square) and the
fingerprints that tie the table to its VAE.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from models.artifacts import load_artifact, save_artifact
from models.vae import VAE, load_vae
from training.data import ImageDataset, load_dataset
from training.images import batch_to_float
from training.runtime import autocast, resolve_device

log = logging.getLogger("lcs.encode")


@torch.no_grad()
def encode_images(vae: VAE, images, device: torch.device, batch: int = 256, desc: str = "encode") -> tuple[torch.Tensor, torch.Tensor]:
    mus, sigmas = [], []
    for s in tqdm(range(0, len(images), batch), desc=desc, unit="batch", disable=len(images) <= batch):
        with autocast(device):
            mu, sigma = vae.encode(batch_to_float(images[s: s + batch], device))
        mus.append(mu.float().cpu())
        sigmas.append(sigma.float().cpu())
    return torch.cat(mus), torch.cat(sigmas)


def encode_dataset(bundle: str | Path, data: ImageDataset | None = None, device: str = "auto",
                   command: list[str] | None = None) -> Path:
    bundle = Path(bundle)
    dev = resolve_device(device)
    vae, vman = load_vae(bundle, dev)
    if data is None:
        ds = vman["dataset"]
        data = load_dataset(ds["name"], **ds["params"])
    if tuple(data.image_shape) != (vae.cfg.channels, vae.cfg.image_size, vae.cfg.image_size):
        raise ValueError(f"dataset images are {data.image_shape}, the VAE takes "
                         f"{(vae.cfg.channels, vae.cfg.image_size, vae.cfg.image_size)}")
    started = time.time()
    mu, sigma = encode_images(vae, data.images, dev, desc=f"encode {data.name}")
    train = torch.from_numpy(data.indices("train"))
    sigma_bar = sigma[train].mean(0)
    tensors = {
        "mu": mu, "sigma": sigma,
        "attrs": torch.from_numpy(data.attrs.astype("int8")),
        "split": torch.from_numpy(data.split.astype("uint8")),
    }
    manifest = {
        "kind": "latents",
        "latent_dim": vae.cfg.latent_dim,
        "n": len(data),
        "dataset": {"name": data.name, "params": data.params},
        "attr_names": data.attr_names,
        "label_sets": {k: v.to_json() for k, v in data.label_sets.items()},
        "ids": data.ids,
        "sigma_bar": sigma_bar.tolist(),
        "decoder_fingerprint": vman["decoder_fingerprint"],
        "command": command or sys.argv,
        "stats": {
            "sigma_bar_mean": float(sigma_bar.mean()),
            "active_dims": int((sigma_bar < 0.5).sum()),  # dims the encoder actually uses
            "mu_std_mean": float(mu[train].std(0).mean()),
            "seconds": round(time.time() - started, 1),
        },
    }
    save_artifact(bundle, "latents", tensors, manifest)
    log.info("wrote %s: %d x %d latents, mean σ̄_z %.4f, %d active dims", bundle / "latents.safetensors",
             len(data), vae.cfg.latent_dim, manifest["stats"]["sigma_bar_mean"], manifest["stats"]["active_dims"])
    return bundle / "latents.safetensors"


def load_latents(bundle: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    return load_artifact(bundle, "latents")
