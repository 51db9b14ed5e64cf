"""Device and precision choice shared by every job and the server: same code on a 2-core CPU and a GPU box.

Precision: ``auto`` is bf16 autocast on CUDA and on CPUs with bf16 in hardware (avx512_bf16 / AMX, where oneDNN runs
convolutions 2.4-3.4x faster than fp32), fp32 elsewhere: without those units bf16 is emulated and far slower
(measured in docs/precision.md). ``bf16`` / ``fp32`` force either.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os

import torch

log = logging.getLogger("lcs")
PRECISIONS = ("auto", "bf16", "fp32")


def check_device(name: str) -> torch.device:
    """The device ``name`` names on this machine (``auto``: CUDA when present, else CPU), or a ValueError that says
    why not, before anything loads."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"device {name!r} is not a device: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but PyTorch sees no CUDA device")
    return device


def resolve_device(name: str = "auto", threads: int = 0) -> torch.device:
    """``auto`` picks CUDA when present, else CPU. ``threads`` intra-op threads if > 0; 0 leaves PyTorch's choice
    (offline jobs pass ``job_threads``: every core)."""
    device = check_device(name)
    if threads > 0:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return device


def job_threads(threads: int = 0) -> int:
    """Threads for an offline job: ``threads`` if set, else every core this process may run on."""
    return threads or len(os.sched_getaffinity(0))


@functools.cache
def cpu_has_bf16() -> bool:
    """oneDNN's own check for bf16 instructions (avx512_bf16, AMX) on this CPU."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(device: torch.device, precision: str = "auto") -> str:
    """``bf16`` or ``fp32`` for this device (see the module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16()) else "fp32"
    return precision


def autocast(device: torch.device, precision: str = "auto"):
    """bf16 autocast where ``precision`` resolves to bf16, else a no-op (fp32)."""
    if resolve_precision(device, precision) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device, precision: str = "auto") -> torch.memory_format:
    """channels_last for convolutions under CPU bf16 (oneDNN's native layout: most of the bf16 gain comes with it),
    the default layout elsewhere."""
    if device.type == "cpu" and resolve_precision(device, precision) == "bf16":
        return torch.channels_last
    return torch.contiguous_format


def setup_logging(level: str = os.environ.get("LCS_LOG_LEVEL", "INFO")) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
