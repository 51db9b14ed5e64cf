"""What the registry admits: label-set names, and artifacts checked before they may serve (refused with the reason,
never a server error); plus the content id a version is stored under."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import struct
from pathlib import Path

import torch

from models.artifacts import ArtifactError
from models.latent import ARCH, LatentConfig, LatentMappers, load_mappers
from service.domain import DomainError, Kind
from service.uploads import ATTR_RE

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # fullmatch: "$" would let a trailing newline in
ALLOWED_ARCHS = {ARCH}
FILES = ("mapper.safetensors", "mapper.json")
LIMITS = {"width": 4096, "depth": 8, "label_embed": 1024, "n_labels": 1024}


class RegistryError(DomainError):
    """A label set, version or artifact the registry refuses or does not have."""


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise RegistryError(
            Kind.INVALID,
            "invalid_name",
            "label-set names are 1-64 letters, digits, '_' or '-', starting with a letter or digit",
            {"name": name},
        )
    return name


def invalid_artifact(message: str, **details) -> RegistryError:
    return RegistryError(Kind.INVALID, "invalid_artifact", message, details)


def _data_end(key: str, entry) -> int:
    """Where one tensor's bytes end, from a header entry whose every field has been type-checked (a malformed entry
    is the uploader's error, not a server one)."""
    ok = (
        isinstance(entry, dict)
        and isinstance(entry.get("dtype"), str)
        and isinstance(entry.get("shape"), list)
        and all(type(d) is int and d >= 0 for d in entry["shape"])
        and isinstance(entry.get("data_offsets"), list)
        and len(entry["data_offsets"]) == 2
        and all(type(o) is int and o >= 0 for o in entry["data_offsets"])
        and entry["data_offsets"][0] <= entry["data_offsets"][1]
    )
    if not ok:
        raise invalid_artifact(
            f"mapper.safetensors: header entry {str(key)[:64]!r} is malformed "
            "(needs dtype, a shape of non-negative integers and data_offsets [begin, end])"
        )
    return entry["data_offsets"][1]


def check_safetensors_header(path: Path) -> dict:
    """Read only the header: refuses pickles, zips and truncated files before any tensor is parsed."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise RegistryError(
                Kind.UNSUPPORTED, "not_safetensors", "mapper.safetensors is not a safetensors file (too short)"
            )
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100 << 20):
            raise RegistryError(
                Kind.UNSUPPORTED,
                "not_safetensors",
                "mapper.safetensors is not a safetensors file (pickles and other formats are refused)",
            )
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise RegistryError(
                Kind.UNSUPPORTED, "not_safetensors", "mapper.safetensors has no valid safetensors header"
            ) from None
    if not isinstance(header, dict):
        raise RegistryError(Kind.UNSUPPORTED, "not_safetensors", "mapper.safetensors has no valid safetensors header")
    end = max([_data_end(k, v) for k, v in header.items() if k != "__metadata__"] or [0])
    if 8 + n + end != size:
        raise invalid_artifact(
            f"mapper.safetensors is truncated or padded: header promises {8 + n + end} bytes, file has {size}"
        )
    return header


def _latent_config(raw) -> LatentConfig:
    """mapper.json's config checked field by field, so a bad one is named in the uploader's terms (not as a Python
    TypeError from the dataclass, nor compared as a string with the decoder's latent size)."""
    if not isinstance(raw, dict):
        raise invalid_artifact("mapper.json needs a 'config' object")
    known = {f.name for f in dataclasses.fields(LatentConfig)}
    if set(raw) - known or "latent_dim" not in raw:
        raise invalid_artifact(
            "mapper.json config: unknown field(s) or no latent_dim",
            unknown=sorted(map(str, set(raw) - known)),
            known=sorted(known),
        )
    not_int = [k for k in ("latent_dim", "width", "depth", "label_embed") if k in raw and type(raw[k]) is not int]
    if not_int:
        raise invalid_artifact(f"mapper.json config: {', '.join(not_int)} must be integers", fields=not_int)
    names = raw.get("attr_names", [])
    if not isinstance(names, list) or not all(isinstance(a, str) and ATTR_RE.fullmatch(a) for a in names):
        raise invalid_artifact("mapper.json config: attr_names must be identifiers (letters, digits, '_')")
    return LatentConfig(**raw)


def validate_artifact(  # noqa: C901 - one flat list of admission checks, each raising its own reason
    directory: Path, decoder_fingerprint: str, latent_dim: int
) -> tuple[LatentMappers, dict, dict]:
    """Everything checked before a label set may serve; raises RegistryError with the reason."""
    for f in FILES:
        if not (directory / f).is_file():
            raise invalid_artifact(f"the artifact needs {' and '.join(FILES)}; {f} is missing")
    check_safetensors_header(directory / "mapper.safetensors")
    try:
        manifest = json.loads((directory / "mapper.json").read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise invalid_artifact(f"mapper.json is not JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != "labelset":
        raise invalid_artifact("mapper.json is not a label-set manifest (kind must be 'labelset')")
    if manifest.get("arch") not in ALLOWED_ARCHS:
        raise invalid_artifact(f"architecture {manifest.get('arch')!r} is not allowed", allowed=sorted(ALLOWED_ARCHS))
    if manifest.get("decoder_fingerprint") != decoder_fingerprint:
        raise RegistryError(
            Kind.INVALID,
            "decoder_mismatch",
            "this mapper was trained for another decoder; its latents would mean something else",
            {"artifact": str(manifest.get("decoder_fingerprint")), "server": decoder_fingerprint},
        )
    cfg = _latent_config(manifest.get("config"))
    if "rule" in manifest and not (isinstance(manifest["rule"], str) and ATTR_RE.fullmatch(manifest["rule"])):
        raise invalid_artifact("mapper.json: rule must be the name of the rule that labelled the table")
    names = cfg.attr_names
    if cfg.latent_dim != latent_dim:
        raise invalid_artifact(f"latent size {cfg.latent_dim} does not match the decoder's {latent_dim}")
    too_big = {
        k: v
        for k, v in (
            ("width", cfg.width),
            ("depth", cfg.depth),
            ("label_embed", cfg.label_embed),
            ("n_labels", cfg.n_labels),
        )
        if not isinstance(v, int) or not 0 <= v <= LIMITS[k]
    }
    if (
        too_big
        or cfg.kind not in ("binary", "categorical")
        or cfg.critic not in ("concat", "projection")
        or cfg.method not in ("lc", "classifier")
        or (cfg.method == "classifier" and not cfg.n_labels)
        or len(set(names)) != len(names)
    ):
        raise invalid_artifact(
            "config out of bounds (sizes, kind binary|categorical, critic concat|projection, method lc|classifier "
            "with attributes, unique attribute names)",
            bad=too_big,
            limits=LIMITS,
        )
    try:
        m, manifest, extra = load_mappers(directory, decoder_fingerprint)
    except ArtifactError as e:
        raise invalid_artifact(str(e).replace(str(directory), "artifact")) from None
    table, sigma_bar = extra.get("label_table"), extra.get("sigma_bar")
    if (
        sigma_bar is None
        or tuple(sigma_bar.shape) != (latent_dim,)
        or not bool(torch.isfinite(sigma_bar).all() and (sigma_bar > 0).all())
    ):
        raise invalid_artifact(f"sigma_bar must be {latent_dim} positive finite values")
    if cfg.n_labels and (
        table is None
        or table.ndim != 2
        or table.shape[1] != cfg.n_labels
        or len(table) == 0
        or not bool(((table == 0) | (table == 1)).all())
    ):
        raise invalid_artifact(f"label_table must be N x {cfg.n_labels} of 0/1 with N > 0")
    with torch.no_grad():  # dry forward on a few rows the label set can be asked for
        z = torch.randn(4, latent_dim, generator=torch.Generator().manual_seed(0))
        y = table[torch.arange(4) % len(table)].float() if cfg.n_labels else None
        outs = [net(z, y) for net in (m.actor, m.critic) if net is not None] + ([m.attr(z)] if m.attr else [])
    if not all(bool(torch.isfinite(o).all()) for o in outs):
        raise invalid_artifact("a dry forward gave non-finite outputs")
    return m, manifest, extra


def content_id(directory: Path) -> str:
    """A version's id: the first 16 hex digits of the SHA-256 of the artifact's files, so a version never changes."""
    h = hashlib.sha256()
    for f in FILES:
        with open(directory / f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]
