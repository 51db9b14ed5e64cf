"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (gzip IDX files)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from .base import DataError, ImageDataset, LabelSet

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CLASS_ATTRS = ["tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
# Derived binary label sets (documented in README): class groups a shop would filter by.
DERIVED = {
    "footwear": ["sandal", "sneaker", "ankle_boot"],
    "upper_body": ["tshirt_top", "pullover", "coat", "shirt"],
}


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (optionally gzip'd): magic 0x00 0x00 dtype ndim, big-endian dims, data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic bytes)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise DataError(f"{path}: unknown IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(dtypes[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(f"{path}: IDX body has {len(data) - header} bytes, dims {dims} need {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def load_fashion_mnist(root: str = "") -> ImageDataset:
    root_path = Path(root or os.environ.get("LCS_FASHION_MNIST", DEFAULT_ROOT))
    files = {
        k: root_path / f"{k}-idx{3 if 'images' in k else 1}-ubyte.gz"
        for k in ("train-images", "train-labels", "t10k-images", "t10k-labels")
    }
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise DataError(
            f"Fashion-MNIST not found ({', '.join(missing)}). Install it with "
            "`apt-get install dataset-fashion-mnist`, or point LCS_FASHION_MNIST at a folder of the four .gz IDX files."
        )
    x = np.concatenate([read_idx(files["train-images"]), read_idx(files["t10k-images"])])
    y = np.concatenate([read_idx(files["train-labels"]), read_idx(files["t10k-labels"])]).astype(np.int64)
    if len(x) != len(y) or x.ndim != 3:
        raise DataError(f"Fashion-MNIST files in {root_path} disagree: {x.shape} images, {y.shape} labels")
    n_train = len(read_idx(files["train-labels"]))
    onehot = np.eye(len(CLASS_ATTRS), dtype=np.int8)[y]
    derived = np.stack([onehot[:, [CLASS_ATTRS.index(c) for c in cols]].max(1) for cols in DERIVED.values()], 1)
    split = np.full(len(x), 2, np.uint8)
    split[:n_train] = 0
    split[n_train - n_train // 12 : n_train] = 1  # the last 5,000 of the 60,000 training images validate
    return ImageDataset(
        name="fashion-mnist",
        images=np.ascontiguousarray(x[:, None]),
        attrs=np.concatenate([onehot, derived], 1),
        attr_names=CLASS_ATTRS + list(DERIVED),
        split=split,
        params={"root": str(root_path)},
        label_sets={
            "category": LabelSet("category", list(CLASS_ATTRS), kind="categorical"),
            **{k: LabelSet(k, [k]) for k in DERIVED},
        },
    )
