"""Bring-your-own data: a folder of images + a CSV of binary attributes.

CSV format: header ``file,<attr1>,<attr2>,...[,split]``; each row names an image relative to
the folder and gives 0/1 per attribute (1/-1 and true/false are accepted). The optional
``split`` column holds train/val/test; without it examples are split 80/10/10 by a hash of
the file name (stable when rows are added).
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .base import SPLITS, DataError, ImageDataset, LabelSet

TRUE, FALSE = {"1", "true", "yes"}, {"0", "-1", "false", "no"}


def read_attribute_csv(path: Path) -> tuple[list[str], list[str], np.ndarray, list[str] | None]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read attribute CSV {path}: {e}") from e
    if not rows or not rows[0] or rows[0][0].strip() != "file":
        raise DataError(f"{path}: the first column of the header must be `file`")
    header = [h.strip() for h in rows[0]]
    has_split = header[-1] == "split"
    names = header[1:-1] if has_split else header[1:]
    if not names:
        raise DataError(f"{path}: no attribute columns in the header")
    files, table, splits = [], [], []
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{lineno}: {len(row)} columns, header has {len(header)}")
        values = []
        for name, cell in zip(names, row[1 : 1 + len(names)], strict=True):
            c = cell.strip().lower()
            if c not in TRUE | FALSE:
                raise DataError(f"{path}:{lineno}: attribute {name} must be 0/1, got {cell!r}")
            values.append(c in TRUE)
        files.append(row[0].strip())
        table.append(values)
        if has_split:
            s = row[-1].strip().lower()
            if s not in SPLITS:
                raise DataError(f"{path}:{lineno}: split must be train/val/test, got {row[-1]!r}")
            splits.append(s)
    if not files:
        raise DataError(f"{path}: no rows")
    return files, names, np.array(table, np.int8), (splits if has_split else None)


def hash_split(name: str) -> int:
    r = int(hashlib.sha256(name.encode()).hexdigest(), 16) % 10
    return 1 if r == 8 else 2 if r == 9 else 0


def load_folder(
    root: str, csv_path: str = "", size: int = 64, channels: int = 3, label_set: str = "attributes"
) -> ImageDataset:
    from PIL import Image, UnidentifiedImageError

    rootp = Path(root).expanduser().resolve()
    csvp = Path(csv_path).expanduser().resolve() if csv_path else rootp / "attributes.csv"
    files, names, table, splits = read_attribute_csv(csvp)
    mode = "RGB" if channels == 3 else "L"
    images = np.empty((len(files), channels, size, size), np.uint8)
    for i, f in enumerate(tqdm(files, desc=f"load {rootp.name}", unit="img", disable=len(files) < 1000)):
        p = (rootp / f).resolve()
        if rootp not in p.parents:
            raise DataError(f"{csvp}: {f!r} points outside {rootp}")
        try:
            with Image.open(p) as im:
                im = im.convert(mode).resize((size, size), Image.BICUBIC)
        except FileNotFoundError:
            raise DataError(f"image {p} listed in {csvp} does not exist") from None
        except (OSError, UnidentifiedImageError) as e:
            raise DataError(f"cannot read image {p}: {e}") from e
        arr = np.asarray(im)
        images[i] = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
    split = np.array([SPLITS[s] for s in splits] if splits else [hash_split(f) for f in files], np.uint8)
    return ImageDataset(
        name="folder",
        images=images,
        attrs=table,
        attr_names=names,
        split=split,
        params={"root": str(rootp), "csv_path": str(csvp), "size": size, "channels": channels, "label_set": label_set},
        label_sets={label_set: LabelSet(label_set, list(names))},
        ids=files,
    )
