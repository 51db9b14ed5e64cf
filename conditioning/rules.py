"""Rules that label decoded images without any labelled data (the paper's zero-shot experiment).

A rule maps images (N x C x H x W in [0, 1]) to a score; ``lcs train-labelset --rule`` and server
jobs decode prior samples, label those above the median score positive and train an ordinary
label set on them (``training.encode.build_rule_table``).
"""

from __future__ import annotations

from typing import Callable

import torch


def brightness(images: torch.Tensor) -> torch.Tensor:
    """Mean intensity of the image."""
    return images.mean((1, 2, 3))


def warm(images: torch.Tensor) -> torch.Tensor:
    """Red minus blue, averaged over the image (grey images score 0)."""
    if images.shape[1] < 3:
        return torch.zeros(len(images))
    return (images[:, 0] - images[:, 2]).mean((1, 2))


RULES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"bright": brightness, "warm": warm}
