"""What users upload, turned into model inputs or a clear ``UploadError``: images, label CSVs, image zips."""

from __future__ import annotations

import csv
import io
import re
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from service.domain import DomainError, Kind

IMAGE_FORMATS = {"PNG", "JPEG"}
MAX_PIXELS = 40_000_000  # what a JPEG header may declare: JPEGs are decoded at 1/2..1/8 scale (Image.draft)
# What may be decoded in full (every PNG, a JPEG after draft): 4 MP, 16 MB as RGBA. The models read 28-256 px, so
# more only costs memory: a 116 KB PNG of 6300 x 6300 used to cost ~300 MB of server memory per request.
MAX_DECODED_PIXELS = 2048 * 2048
ATTR_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
VALUES = {"1": 1, "0": 0, "-1": 0, "true": 1, "false": 0, "yes": 1, "no": 0}
MAX_ROWS = 1_000_000
# Zip members are images: one over 32 MB, or one that inflates more than 100x from over 1 MB, is not a photo but a
# bomb (a 2 MB zip of one 2 GiB member used to be inflated in memory by the job worker).
MAX_MEMBER_BYTES = 32 << 20
MAX_RATIO = 100
MAX_ZIP_EXPANDED = 4 << 30


class UploadError(DomainError):
    """An upload that cannot be read (malformed), is refused (invalid/unsupported) or is over a limit (too_large)."""


def _too_many_pixels(what: str, width: int, height: int, limit: int) -> UploadError:
    return UploadError(
        Kind.TOO_LARGE,
        "image_too_large",
        f"{what} has {width}x{height} pixels; the limit is {limit} (the model reads small images: downscale it)",
        {"width": width, "height": height, "limit": limit},
    )


def _open_image(data: bytes, what: str, size: int) -> Image.Image:
    """Open, check format and pixel count from the header, decode at the smallest scale that still covers ``size``."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        im = Image.open(io.BytesIO(data))
        if im.format not in IMAGE_FORMATS:
            raise UploadError(
                Kind.UNSUPPORTED,
                "unsupported_media_type",
                f"{what} is {im.format or 'not an image'}; send PNG or JPEG",
                {"accepted": sorted(IMAGE_FORMATS)},
            )
        if im.width * im.height > MAX_PIXELS:
            raise _too_many_pixels(what, im.width, im.height, MAX_PIXELS)
        if im.format == "JPEG":  # DCT scaling: decode at 1/2, 1/4 or 1/8 while the short side stays >= size
            im.draft(im.mode, (size, size))
        if im.width * im.height > MAX_DECODED_PIXELS:
            raise _too_many_pixels(what, im.width, im.height, MAX_DECODED_PIXELS)
        im.load()
    return im


def decode_image(data: bytes, channels: int, size: int, what: str = "image") -> np.ndarray:
    """PNG/JPEG bytes -> uint8 C x size x size: centre square crop, then resize (as the training data was framed).
    Decoded memory is bounded by MAX_DECODED_PIXELS whatever the file claims."""
    if not data:
        raise UploadError(Kind.MALFORMED, "empty_image", f"{what} is empty")
    try:
        im = _open_image(data, what, size)
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(Kind.TOO_LARGE, "image_too_large", f"{what} has too many pixels") from None
    except Image.UnidentifiedImageError:
        raise UploadError(
            Kind.UNSUPPORTED,
            "unsupported_media_type",
            f"{what} is not an image format this server reads; send PNG or JPEG",
            {"accepted": sorted(IMAGE_FORMATS)},
        ) from None
    except Exception as e:  # noqa: BLE001 - PIL raises many types for broken files
        raise UploadError(Kind.MALFORMED, "undecodable_image", f"{what} could not be decoded: {e}") from None
    side = min(im.size)
    left, top = (im.width - side) // 2, (im.height - side) // 2
    im = im.crop((left, top, left + side, top + side))
    if side >= 4 * size:  # box-reduce first: the bicubic resize and the mode conversion then touch few pixels
        im = im.reduce(side // (2 * size))
    im = im.convert("RGB" if channels == 3 else "L").resize((size, size), Image.BICUBIC)
    arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1).copy()


def _parse_label_rows(
    body: list[list[str]], header: list[str], bad: Callable[..., UploadError]
) -> tuple[list[str], np.ndarray]:
    """The CSV's data rows -> (keys, N x K int8 labels); ``bad`` builds the error for a short row or a bad cell."""
    names = header[1:]
    keys, labels = [], np.zeros((len(body), len(names)), np.int8)
    for i, r in enumerate(body):
        if len(r) != len(header):
            raise bad(f"line {i + 2} has {len(r)} cells, the header has {len(header)}", line=i + 2)
        keys.append(r[0].strip())
        for j, cell in enumerate(r[1:]):
            v = VALUES.get(cell.strip().lower())
            if v is None:
                raise bad(f"line {i + 2}, column {names[j]}: {cell!r} is not 0/1", line=i + 2, column=names[j])
            labels[i, j] = v
    return keys, labels


def parse_labels_csv(data: bytes, key: str) -> tuple[list[str], list[str], np.ndarray]:
    """CSV with header ``KEY,attr1,attr2,...`` and 0/1 (or -1/1, true/false) cells -> (keys, attribute names,
    N x K int8)."""

    def bad(msg: str, **details):
        return UploadError(Kind.INVALID, "invalid_labels", msg, details)

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise bad("the labels CSV is not UTF-8 text") from None
    try:
        rows = [r for r in csv.reader(io.StringIO(text, newline="")) if any(c.strip() for c in r)]
    except csv.Error as e:
        raise bad(f"the labels CSV cannot be parsed: {e}") from None
    if len(rows) < 2:
        raise bad("the labels CSV needs a header and at least one row")
    header = [c.strip() for c in rows[0]]
    if header[0].lower() != key:
        raise bad(
            f"the first column must be {key!r} ({'zip member names' if key == 'file' else 'dataset example ids'})",
            header=header,
        )
    names = header[1:]
    if not names:
        raise bad("the labels CSV names no attribute columns")
    wrong = [a for a in names if not ATTR_RE.fullmatch(a)]
    if wrong or len(set(n.lower() for n in names)) != len(names):
        raise bad("attribute names must be unique identifiers (letters, digits, '_')", bad=wrong)
    if len(rows) - 1 > MAX_ROWS:
        raise bad(f"at most {MAX_ROWS} rows")
    keys, labels = _parse_label_rows(rows[1:], header, bad)
    if len(set(keys)) != len(keys):
        raise bad(f"the {key!r} column has duplicates")
    return keys, names, labels


def open_zip(source: bytes | Path, files: list[str]) -> zipfile.ZipFile:
    """Check the zip is readable, holds every listed file, and that no listed member is a bomb (by its declared
    sizes; ``read_member`` also stops at the cap, so a member that lies about its size cannot get past it)."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
        members = {i.filename: i for i in zf.infolist()}
    except zipfile.BadZipFile:
        raise UploadError(Kind.MALFORMED, "invalid_zip", "the images upload is not a zip file") from None
    missing = [f for f in files if f not in members]
    if missing:
        raise UploadError(
            Kind.INVALID,
            "invalid_labels",
            f"{len(missing)} file(s) named in the CSV are not in the zip",
            {"missing": missing[:20]},
        )
    for f in files:
        info = members[f]
        if info.file_size > MAX_MEMBER_BYTES or (
            info.file_size > 1 << 20 and info.file_size > MAX_RATIO * max(info.compress_size, 1)
        ):
            raise UploadError(
                Kind.TOO_LARGE,
                "zip_too_large",
                f"zip member {f!r} expands to {info.file_size} bytes from {info.compress_size}; "
                f"members may be at most {MAX_MEMBER_BYTES} bytes and {MAX_RATIO}x compressed",
                {"member": f, "limit": MAX_MEMBER_BYTES, "max_ratio": MAX_RATIO},
            )
    if sum(members[f].file_size for f in files) > MAX_ZIP_EXPANDED:
        raise UploadError(Kind.TOO_LARGE, "zip_too_large", f"the images expand to more than {MAX_ZIP_EXPANDED} bytes")
    return zf


def read_member(zf: zipfile.ZipFile, name: str) -> bytes:
    """One member, streamed, never more than MAX_MEMBER_BYTES in memory whatever its header says."""
    with zf.open(name) as f:
        data = f.read(MAX_MEMBER_BYTES + 1)
    if len(data) > MAX_MEMBER_BYTES:
        raise UploadError(
            Kind.TOO_LARGE, "zip_too_large", f"zip member {name!r} expands beyond {MAX_MEMBER_BYTES} bytes"
        )
    return data


def zip_images(zf: zipfile.ZipFile, files: list[str], channels: int, size: int) -> np.ndarray:
    return np.stack([decode_image(read_member(zf, f), channels, size, what=f) for f in files])
