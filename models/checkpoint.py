"""Resumable checkpoints without pickles: model + optimizer tensors in safetensors, the rest in JSON."""

from __future__ import annotations

from pathlib import Path

import torch

from models.artifacts import load_artifact, save_artifact


def save_checkpoint(directory: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, meta: dict) -> None:
    sd = opt.state_dict()
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for pid, state in sd["state"].items():
        for k, v in state.items():
            tensors[f"opt.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    tensors["rng.cpu"] = torch.get_rng_state()
    save_artifact(directory, "checkpoint", tensors, {**meta, "param_groups": sd["param_groups"]})


def load_checkpoint(directory: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
    tensors, meta = load_artifact(directory, "checkpoint")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.cpu"])
    return meta


def has_checkpoint(directory: Path) -> bool:
    return (directory / "checkpoint.safetensors").exists() and (directory / "checkpoint.json").exists()
