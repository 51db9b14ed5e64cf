"""Device choice shared by every job and the server: same code on a 2-core CPU and a GPU box."""

from __future__ import annotations

import contextlib
import logging
import os

import torch

log = logging.getLogger("lcs")


def resolve_device(name: str = "auto", threads: int = 0) -> torch.device:
    """``auto`` picks CUDA when present, else CPU (with ``threads`` intra-op threads if > 0)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but PyTorch sees no CUDA device")
    if threads > 0:
        torch.set_num_threads(threads)
    device = torch.device(name)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return device


def autocast(device: torch.device):
    """bf16 autocast on CUDA (mixed precision); a no-op on CPU, where fp32 is fastest and exact."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def setup_logging(level: str = os.environ.get("LCS_LOG_LEVEL", "INFO")) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
