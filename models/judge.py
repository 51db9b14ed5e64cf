"""The judge: an image-space attribute classifier used only to *evaluate* generated images.

Deliberately unlike the VAE encoder (residual blocks, BatchNorm, max-pooling, global average
pooling) so it does not share the encoder's blind spots. One sigmoid output per attribute
column; categorical label sets are decided by argmax over their columns.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

ARCH = "resnet-judge-v1"


@dataclass
class JudgeConfig:
    channels: int = 3
    image_size: int = 64
    attr_names: list[str] = field(default_factory=list)
    width: int = 32
    feature_dim: int = 128

    def to_json(self) -> dict:
        return asdict(self)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.skip(x))


class Judge(nn.Module):
    def __init__(self, cfg: JudgeConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        stride = 2 if cfg.image_size >= 64 else 1
        self.stem = nn.Sequential(nn.Conv2d(cfg.channels, w, 3, stride, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.blocks = nn.Sequential(
            ResBlock(w, w), nn.MaxPool2d(2), ResBlock(w, 2 * w), nn.MaxPool2d(2), ResBlock(2 * w, 4 * w)
        )
        self.features = nn.Sequential(nn.Linear(4 * w, cfg.feature_dim), nn.ReLU())
        self.head = nn.Linear(cfg.feature_dim, len(cfg.attr_names))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (for Fréchet distance) of images in [0, 1]."""
        h = self.blocks(self.stem(x * 2 - 1))
        return self.features(h.mean((2, 3)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(attribute logits, penultimate features)."""
        f = self.embed(x)
        return self.head(f), f


def load_judge(directory, device: str | torch.device = "cpu") -> tuple[Judge, dict]:
    from models.artifacts import load_model

    judge, manifest, _ = load_model(directory, "judge", ARCH, lambda cfg: Judge(JudgeConfig(**cfg)))
    return judge.to(device), manifest
