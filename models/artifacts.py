"""Artifacts are safetensors + a JSON manifest beside them; never pickles.

``save_artifact(dir, stem, tensors, manifest)`` writes ``stem.safetensors`` and ``stem.json``
atomically (temp file + rename), so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file


class ArtifactError(ValueError):
    """An artifact is missing, malformed, or does not fit the model it is loaded into."""


def fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes, in name order: equal iff the weights are."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # artifacts are read by other users (containers run as non-root)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: dict) -> None:
    _atomic_write(Path(path), lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n"))


def save_artifact(directory: str | Path, stem: str, tensors: dict[str, torch.Tensor], manifest: dict) -> None:
    directory = Path(directory)
    clean = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    _atomic_write(directory / f"{stem}.safetensors", lambda tmp: save_file(clean, tmp))
    write_json(directory / f"{stem}.json", manifest)


def load_manifest(directory: str | Path, stem: str) -> dict:
    path = Path(directory) / f"{stem}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path} does not exist") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path} is not a readable JSON manifest: {e}") from e


def load_artifact(directory: str | Path, stem: str) -> tuple[dict[str, torch.Tensor], dict]:
    path = Path(directory) / f"{stem}.safetensors"
    manifest = load_manifest(directory, stem)
    try:
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise ArtifactError(f"{path} does not exist") from None
    except Exception as e:  # safetensors raises its own error types for malformed headers
        raise ArtifactError(f"{path} is not a valid safetensors file: {e}") from e
    return tensors, manifest


def load_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], what: str) -> None:
    """Strict load with a readable error instead of PyTorch's long mismatch dump."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    bad = [k for k in own if k in tensors and tuple(own[k].shape) != tuple(tensors[k].shape)]
    if missing or extra or bad:
        raise ArtifactError(
            f"{what}: weights do not fit the architecture (missing {missing[:3]}, unexpected {extra[:3]}, "
            f"shape mismatch {bad[:3]})"
        )
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()})


def load_model(
    directory: str | Path, stem: str, arch: str, build: Callable[[dict], torch.nn.Module], extra: tuple[str, ...] = ()
) -> tuple[torch.nn.Module, dict, dict[str, torch.Tensor]]:
    """Load ``stem.*``, check its architecture, build it from the manifest's config, load the weights.

    Returns (module in eval mode without gradients, manifest, stored tensors as saved). Tensors named
    in ``extra`` are stored beside the weights but are not part of the module.
    """
    tensors, manifest = load_artifact(directory, stem)
    if manifest.get("arch") != arch:
        raise ArtifactError(f"{directory}/{stem}.json: architecture {manifest.get('arch')!r} is not {arch!r}")
    try:
        module = build(manifest["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{directory}/{stem}.json: bad config: {e}") from None
    load_into(module, {k: v for k, v in tensors.items() if k not in extra}, f"{directory}/{stem}.safetensors")
    return module.eval().requires_grad_(False), manifest, tensors
