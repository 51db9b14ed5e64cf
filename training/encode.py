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

from models.artifacts import save_artifact
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
    manifest = write_latent_table(
        bundle, mu, sigma, data.attrs, data.split, attr_names=data.attr_names,
        label_sets={k: v.to_json() for k, v in data.label_sets.items()},
        decoder_fingerprint=vman["decoder_fingerprint"], dataset={"name": data.name, "params": data.params},
        ids=data.ids, command=command or sys.argv, extra_stats={"seconds": round(time.time() - started, 1)},
    )
    log.info("wrote %s: %d x %d latents, mean σ̄_z %.4f, %d active dims", bundle / "latents.safetensors",
             len(data), vae.cfg.latent_dim, manifest["stats"]["sigma_bar_mean"], manifest["stats"]["active_dims"])
    return bundle / "latents.safetensors"


def write_latent_table(bundle: str | Path, mu: torch.Tensor, sigma: torch.Tensor, attrs, split, *, attr_names: list[str],
                       label_sets: dict, decoder_fingerprint: str, dataset: dict, ids=None, command=None,
                       sigma_bar: torch.Tensor | None = None, extra_stats: dict | None = None) -> dict:
    """Write latents.safetensors/json; σ̄_z defaults to the encoder σ averaged over the training split."""
    split_t = torch.as_tensor(split).to(torch.uint8)
    if sigma_bar is None:
        sigma_bar = sigma[split_t == 0].mean(0)
    train = split_t == 0
    tensors = {"mu": mu.float(), "sigma": sigma.float(), "attrs": torch.as_tensor(attrs).to(torch.int8), "split": split_t}
    manifest = {
        "kind": "latents",
        "latent_dim": mu.shape[1],
        "n": len(mu),
        "dataset": dataset,
        "attr_names": list(attr_names),
        "label_sets": label_sets,
        "ids": ids,
        "sigma_bar": sigma_bar.tolist(),
        "decoder_fingerprint": decoder_fingerprint,
        "command": command or sys.argv,
        "stats": {
            "sigma_bar_mean": float(sigma_bar.mean()),
            "active_dims": int((sigma_bar < 0.5).sum()),  # dims the encoder actually uses
            "mu_std_mean": float(mu[train].std(0).mean()),
            **(extra_stats or {}),
        },
    }
    save_artifact(bundle, "latents", tensors, manifest)
    return manifest
