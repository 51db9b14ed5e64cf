"""Shared fixtures: tiny data written by the tests themselves, and an isolated dataset cache."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LCS_CACHE", str(tmp_path_factory.getbasetemp() / "lcs-cache"))


def write_idx(path: Path, array: np.ndarray) -> None:
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def class_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """28x28 images whose class is visible: a bright band at a class-specific height and length
    (so brightness varies with the class too)."""
    x = rng.integers(0, 40, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, y in enumerate(labels):
        x[i, 2 + 2 * y: 5 + 2 * y, 4: 6 + 2 * y] = 230
    return x


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory) -> Path:
    """A Fashion-MNIST-format folder (gzip IDX) of 700 train + 200 test learnable images."""
    root = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(0)
    for split, n in (("train", 700), ("t10k", 200)):
        y = (np.arange(n) % 10).astype(np.uint8)
        write_idx(root / f"{split}-images-idx3-ubyte.gz", class_images(y, rng))
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", y)
    return root


@pytest.fixture(scope="session")
def tiny_vae(fashion_root, tmp_path_factory) -> Path:
    """A tiny VAE trained enough (400 steps) on the fixture to reconstruct the class band."""
    from training.train_vae import TrainVAEConfig, train_vae

    out = tmp_path_factory.mktemp("tiny-vae")
    return train_vae(TrainVAEConfig(dataset="fashion-mnist", dataset_params={"root": str(fashion_root)}, out=str(out),
                                    latent_dim=8, width=16, epochs=20, batch_size=32, lr=2e-3, lr_final=2e-3, device="cpu"))
