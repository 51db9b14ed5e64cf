"""``lcs pack``: copy a trained bundle's VAE (and judge) into a shipping bundle, optionally fp16.

fp16 halves the size of the shipped default. The decoder fingerprint is recomputed over the
stored tensors, so everything trained afterwards (latent table, label sets) is bound to exactly
the weights that ship; the source fingerprint is kept in the manifest for provenance.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch

from models.artifacts import fingerprint, load_artifact, save_artifact

log = logging.getLogger("lcs.pack")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def pack(
    src: str | Path,
    dst: str | Path,
    dtype: str = "float16",
    stems: tuple[str, ...] = ("vae", "judge"),
    command: list[str] | None = None,
) -> Path:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    src, dst = Path(src), Path(dst)
    for stem in stems:
        tensors, manifest = load_artifact(src, stem)
        cast = {k: v.to(DTYPES[dtype]) if v.is_floating_point() else v for k, v in tensors.items()}
        manifest = {**manifest, "storage_dtype": dtype, "packed_from": str(src), "pack_command": command or sys.argv}
        if "decoder_fingerprint" in manifest:
            manifest["source_decoder_fingerprint"] = manifest["decoder_fingerprint"]
            manifest["decoder_fingerprint"] = fingerprint({k: v for k, v in cast.items() if k.startswith("decoder.")})
        save_artifact(dst, stem, cast, manifest)
        log.info("packed %s/%s -> %s as %s", src, stem, dst, dtype)
    return dst
