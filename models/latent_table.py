"""The latent table: one pass of the frozen encoder over a dataset, what every label set trains on.

latents.safetensors holds mu, sigma (N x d, float32), attrs (N x K, int8) and split (N, uint8);
latents.json holds the attribute names, label sets, sigma_bar (encoder σ averaged over the
training split, per dimension; the actor's distance penalty divides by its square) and the
fingerprints that tie the table to its VAE. Written by ``lcs encode``, rule tables and server
jobs; read by ``lcs train-labelset``, the latent baselines and the bench.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from models.artifacts import fingerprint, load_artifact, save_artifact
from models.latent import LabelKind

REALISM = "realism"  # the reserved name of the empty label set: the unconditional realism mapper G(z)


@dataclass
class LatentTable:
    """What a label set trains on: posterior (μ, σ) per example, its labels, splits and σ̄_z."""

    mu: torch.Tensor
    sigma: torch.Tensor
    labels: torch.Tensor  # float 0/1, N x K (K = 0 for realism)
    split: torch.Tensor
    sigma_bar: torch.Tensor
    attr_names: list[str]
    kind: LabelKind
    decoder_fingerprint: str
    data_fingerprint: str
    rule: str | None = None  # the rule that labelled a rule table (``rule:NAME`` in queries names its label set)

    def rows(self, split: int) -> torch.Tensor:
        return torch.nonzero(self.split == split).squeeze(1)

    @cached_property
    def unique_rows(self) -> torch.Tensor:
        """The distinct label rows of the training split (edit targets come from these)."""
        return torch.unique(self.labels[self.rows(0)], dim=0)


def load_table(bundle: str | Path, label_set: str) -> LatentTable:
    tensors, man = load_artifact(bundle, "latents")
    if label_set == REALISM:
        names, kind = [], "binary"
    elif label_set in man["label_sets"]:
        names, kind = man["label_sets"][label_set]["attrs"], man["label_sets"][label_set]["kind"]
    else:
        raise ValueError(
            f"label set {label_set!r} is not in {bundle}/latents.json; "
            f"it has {sorted(man['label_sets'])} (or 'realism')"
        )
    cols = [man["attr_names"].index(a) for a in names]
    dataset = man.get("dataset") or {}
    return LatentTable(
        mu=tensors["mu"].float(),
        sigma=tensors["sigma"].float(),
        labels=tensors["attrs"][:, cols].float(),
        split=tensors["split"].long(),
        sigma_bar=torch.tensor(man["sigma_bar"]),
        attr_names=list(names),
        kind=kind,
        decoder_fingerprint=man["decoder_fingerprint"],
        data_fingerprint=fingerprint(tensors),
        rule=dataset.get("params", {}).get("rule") if dataset.get("name") == "rule" else None,
    )


def posterior_sample(t: LatentTable, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return t.mu[idx] + t.sigma[idx] * torch.randn(t.mu[idx].shape, generator=gen)


def write_latent_table(
    bundle: str | Path,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    attrs,
    split,
    *,
    attr_names: list[str],
    label_sets: dict,
    decoder_fingerprint: str,
    dataset: dict,
    ids=None,
    command=None,
    sigma_bar: torch.Tensor | None = None,
    extra_stats: dict | None = None,
) -> dict:
    """Write latents.safetensors/json; σ̄_z defaults to the encoder σ averaged over the training split."""
    split_t = torch.as_tensor(split).to(torch.uint8)
    if sigma_bar is None:
        sigma_bar = sigma[split_t == 0].mean(0)
    train = split_t == 0
    tensors = {
        "mu": mu.float(),
        "sigma": sigma.float(),
        "attrs": torch.as_tensor(attrs).to(torch.int8),
        "split": split_t,
    }
    manifest = {
        "kind": "latents",
        "latent_dim": mu.shape[1],
        "n": len(mu),
        "dataset": dataset,
        "attr_names": list(attr_names),
        "label_sets": label_sets,
        "ids": ids,
        "sigma_bar": sigma_bar.tolist(),
        "decoder_fingerprint": decoder_fingerprint,
        "command": command or sys.argv,
        "stats": {
            "sigma_bar_mean": float(sigma_bar.mean()),
            "active_dims": int((sigma_bar < 0.5).sum()),  # dims the encoder actually uses
            "mu_std_mean": float(mu[train].std(0).mean()),
            **(extra_stats or {}),
        },
    }
    save_artifact(bundle, "latents", tensors, manifest)
    return manifest


def nearest_allowed(
    current: torch.Tensor, rows: torch.Tensor, allowed: torch.Tensor, tiebreak: torch.Tensor
) -> torch.Tensor:
    """Per row of ``current``: the allowed row of ``rows`` at the smallest Hamming distance; among
    equals, the largest ``tiebreak`` (values in [0, 1)). allowed/tiebreak: n x len(rows)."""
    score = torch.cdist(current.float(), rows, p=0) - tiebreak
    score = score.masked_fill(~allowed, float("inf"))
    return rows[score.argmin(1)].clone()
