"""The one shape every dataset takes: uint8 images + a table of named 0/1 attributes + splits.

Label sets are views on the attribute table (a list of columns and a kind), so one judge
and one latent table serve every label set of a dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from models.latent import LabelKind

SPLITS = {"train": 0, "val": 1, "test": 2}


class DataError(ValueError):
    """A dataset could not be read; the message names the file or package at fault."""


@dataclass
class LabelSet:
    name: str
    attrs: list[str]
    kind: LabelKind = "binary"  # "binary": independent 0/1 columns; "categorical": exactly one is 1

    def to_json(self) -> dict:
        return {"name": self.name, "attrs": list(self.attrs), "kind": self.kind}


@dataclass
class ImageDataset:
    name: str
    images: np.ndarray  # uint8, N x C x H x W
    attrs: np.ndarray  # int8 0/1, N x K
    attr_names: list[str]
    split: np.ndarray  # uint8, N (0 train, 1 val, 2 test)
    params: dict  # everything needed to rebuild it: load_dataset(name, **params)
    label_sets: dict[str, LabelSet] = field(default_factory=dict)
    ids: list[str] | None = None  # stable example ids (file names), when the source has them

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise DataError(
                f"{self.name}: images must be uint8 N x C x H x W, got {self.images.dtype} {self.images.shape}"
            )
        if self.attrs.shape != (n, len(self.attr_names)):
            raise DataError(
                f"{self.name}: attribute table {self.attrs.shape} does not match {n} images x "
                f"{len(self.attr_names)} names"
            )
        if self.split.shape != (n,):
            raise DataError(f"{self.name}: split has shape {self.split.shape}, expected ({n},)")
        for ls in self.label_sets.values():
            missing = [a for a in ls.attrs if a not in self.attr_names]
            if missing:
                raise DataError(f"{self.name}: label set {ls.name!r} names unknown attributes {missing}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == SPLITS[split])

    def columns(self, names: list[str]) -> np.ndarray:
        idx = [self.attr_names.index(a) for a in names]
        return self.attrs[:, idx]

    def describe(self) -> dict:
        counts = {s: int((self.split == v).sum()) for s, v in SPLITS.items()}
        rates = {a: round(float(self.attrs[:, i].mean()), 4) for i, a in enumerate(self.attr_names)}
        return {
            "name": self.name,
            "params": self.params,
            "image_shape": list(self.image_shape),
            "splits": counts,
            "attribute_rates": rates,
            "label_sets": {k: v.to_json() for k, v in self.label_sets.items()},
        }


def cache_dir() -> Path:
    """Where rendered/decoded datasets are cached: $LCS_CACHE, else ~/.cache/lcs."""
    return Path(os.environ.get("LCS_CACHE", Path.home() / ".cache" / "lcs"))


def params_key(name: str, params: dict) -> str:
    blob = json.dumps({"dataset": name, **params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_arrays(name: str, params: dict, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Load arrays cached under a key of (name, params), or build and cache them atomically.

    Compressed .npz without pickles: flat-colour renders shrink ~20x, and reruns are instant.
    """
    path = cache_dir() / f"{name}-{params_key(name, params)}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    arrays = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    with os.fdopen(fd, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    os.replace(tmp, path)
    return arrays
