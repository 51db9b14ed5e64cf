"""Judge inference: what the independent pixel-space classifier reads in images.

Used by ``lcs train-judge`` (thresholds on validation, the ceiling on test), ``lcs eval``,
``lcs eval-edits`` and the baselines bench; the judge never trains anything.
"""

from __future__ import annotations

import numpy as np
import torch

from conditioning.images import batch_to_float
from conditioning.runtime import autocast
from models.judge import Judge


@torch.no_grad()
def predict(judge: Judge, images, device: torch.device, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities N x K, penultimate features N x F) for uint8 or float images."""
    probs, feats = [], []
    for s in range(0, len(images), batch):
        x = images[s : s + batch]
        x = batch_to_float(x, device) if not torch.is_tensor(x) or x.dtype == torch.uint8 else x.to(device).float()
        with autocast(device):
            logits, f = judge(x)
        probs.append(torch.sigmoid(logits.float()).cpu())
        feats.append(f.float().cpu())
    return torch.cat(probs).numpy(), torch.cat(feats).numpy()


def decide(probs: np.ndarray, manifest: dict, attrs: list[str]) -> np.ndarray:
    """0/1 decisions for the given attribute columns: argmax within a categorical label set, else thresholds."""
    names = manifest["config"]["attr_names"]
    cols = [names.index(a) for a in attrs]
    for ls in manifest.get("label_sets", {}).values():
        if ls["kind"] == "categorical" and set(ls["attrs"]) == set(attrs):
            winner = probs[:, cols].argmax(1)
            return np.eye(len(cols), dtype=np.int8)[winner]
    thr = np.array([manifest["thresholds"][a] for a in attrs])
    return (probs[:, cols] >= thr).astype(np.int8)
