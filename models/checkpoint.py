"""Resumable checkpoints without pickles: model + optimizer tensors in safetensors, the rest in JSON.

``opt`` is one optimizer (the VAE's) or a dict of them by group name (a GAN's discriminator and generator steps);
``generator``, when given, is the data-order generator whose state resumes with the run. The two files are written
one after the other: the tensors carry the meta's step too, so a pair torn by a stop between the writes is refused."""

from __future__ import annotations

from pathlib import Path

import torch

from models.artifacts import ArtifactError, load_artifact, load_manifest, save_artifact

Optimizers = torch.optim.Optimizer | dict[str, torch.optim.Optimizer]


def _by_group(opt: Optimizers) -> dict[str, torch.optim.Optimizer]:
    return opt if isinstance(opt, dict) else {"": opt}


def save_checkpoint(
    directory: Path, model: torch.nn.Module, opt: Optimizers, meta: dict, generator: torch.Generator | None = None
) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    groups = {}
    for g, o in _by_group(opt).items():
        sd = o.state_dict()
        groups[g] = sd["param_groups"]
        for pid, state in sd["state"].items():
            for k, v in state.items():
                tensors[f"opt.{g + '.' if g else ''}{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    tensors["rng.cpu"] = torch.get_rng_state()
    if generator is not None:
        tensors["rng.generator"] = generator.get_state()
    tensors["meta.step"] = torch.tensor(int(meta["step"]))
    param_groups = groups if isinstance(opt, dict) else groups[""]
    save_artifact(directory, "checkpoint", tensors, {**meta, "param_groups": param_groups})


def load_checkpoint(
    directory: Path, model: torch.nn.Module, opt: Optimizers, generator: torch.Generator | None = None
) -> dict:
    tensors, meta = load_artifact(directory, "checkpoint")
    if "meta.step" in tensors and int(tensors["meta.step"]) != meta["step"]:
        raise ArtifactError(
            f"{directory}/checkpoint.* are from different steps ({int(tensors['meta.step'])} and {meta['step']}): the "
            "run stopped while writing them; start it again without --resume"
        )
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opts = _by_group(opt)
    state: dict[str, dict[int, dict]] = {g: {} for g in opts}
    for k, v in tensors.items():
        if k.startswith("opt."):
            g, pid, name = k[4:].split(".", 2) if isinstance(opt, dict) else ("", *k[4:].split(".", 1))
            state[g].setdefault(int(pid), {})[name] = v
    param_groups = meta["param_groups"] if isinstance(opt, dict) else {"": meta["param_groups"]}
    for g, o in opts.items():
        o.load_state_dict({"state": state[g], "param_groups": param_groups[g]})
    torch.set_rng_state(tensors["rng.cpu"])
    if generator is not None:
        generator.set_state(tensors["rng.generator"])
    return meta


def has_checkpoint(directory: Path) -> bool:
    return (directory / "checkpoint.safetensors").exists() and (directory / "checkpoint.json").exists()


def checkpoint_meta(directory: Path) -> dict:
    """The checkpoint's JSON alone, to decide whether to resume before loading any weights."""
    return load_manifest(directory, "checkpoint")


def remove_checkpoint(directory: Path) -> None:
    for suffix in ("safetensors", "json"):
        (directory / f"checkpoint.{suffix}").unlink(missing_ok=True)
