"""CelebA as distributed (img_align_celeba/ + list_attr_celeba.txt + list_eval_partition.txt).

Images are centre-cropped to 128 x 128 and resized to 64 x 64, as in the paper.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from conditioning.celeba import served_names

from .base import DataError, ImageDataset, LabelSet, cached_arrays


def parse_attr_file(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Return (file names, attribute names, 0/1 table) from list_attr_celeba.txt."""
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from e
    if len(lines) < 2:
        raise DataError(f"{path}: expected a count line and a header line")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise DataError(f"{path}: first line must be the number of images, got {lines[0]!r}") from None
    names = lines[1].split()
    files, rows = [], []
    for lineno, line in enumerate(lines[2:], start=3):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != len(names) + 1 or any(p not in ("1", "-1") for p in parts[1:]):
            raise DataError(f"{path}:{lineno}: expected a file name and {len(names)} values of 1/-1")
        files.append(parts[0])
        rows.append([p == "1" for p in parts[1:]])
    if len(files) != count:
        raise DataError(f"{path}: header says {count} images, found {len(files)} rows")
    return files, names, np.array(rows, dtype=np.int8).reshape(len(files), len(names))


def parse_partition_file(path: Path) -> dict[str, int]:
    try:
        lines = path.read_text().split("\n")
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from e
    out = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DataError(f"{path}:{lineno}: expected `file 0|1|2`, got {line!r}")
        out[parts[0]] = int(parts[1])
    return out


def load_image(path: Path, crop: int, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"cannot read image {path}: {e}") from e
    w, h = im.size
    if w < crop or h < crop:
        raise DataError(f"{path}: image is {w}x{h}, smaller than the {crop}x{crop} centre crop")
    left, top = (w - crop) // 2, (h - crop) // 2
    im = im.crop((left, top, left + crop, top + crop)).resize((size, size), Image.BICUBIC)
    return np.asarray(im).transpose(2, 0, 1)


def load_celeba(root: str, crop: int = 128, size: int = 64, limit: int = 0) -> ImageDataset:
    rootp = Path(root).expanduser().resolve()
    attr_path, part_path, img_dir = (
        rootp / "list_attr_celeba.txt",
        rootp / "list_eval_partition.txt",
        rootp / "img_align_celeba",
    )
    for p in (attr_path, part_path, img_dir):
        if not p.exists():
            raise DataError(
                f"CelebA: {p} is missing "
                f"(expected img_align_celeba/, list_attr_celeba.txt, list_eval_partition.txt in {rootp})"
            )
    files, names, table = parse_attr_file(attr_path)
    names = served_names(names)  # 5_o_Clock_Shadow -> Five_o_Clock_Shadow: a request could not name it
    partition = parse_partition_file(part_path)
    if limit:
        files, table = files[:limit], table[:limit]
    missing = [f for f in files if f not in partition]
    if missing:
        raise DataError(f"{part_path}: no split for {missing[0]} (and {len(missing) - 1} more)")
    params = {"root": str(rootp), "crop": crop, "size": size, "limit": limit}

    def build() -> dict[str, np.ndarray]:
        images = np.empty((len(files), 3, size, size), np.uint8)
        with ThreadPoolExecutor(4) as pool, tqdm(total=len(files), desc="decode CelebA", unit="img") as bar:
            for i, im in enumerate(pool.map(lambda f: load_image(img_dir / f, crop, size), files)):
                images[i] = im
                bar.update()
        return {"images": images}

    images = cached_arrays("celeba", params, build)["images"]
    return ImageDataset(
        name="celeba",
        images=images,
        attrs=table,
        attr_names=names,
        split=np.array([partition[f] for f in files], np.uint8),
        params={"root": str(rootp), "crop": crop, "size": size, "limit": limit},
        label_sets={"attributes": LabelSet("attributes", list(names))},
        ids=files,
    )
