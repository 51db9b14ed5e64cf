"""bench.serve's bare model: how fast the served model runs without a server, in as many processes as the server has
workers, so R_serve compares like with like (issue 28)."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import torch

from conditioning import modes
from conditioning.backbone import Backbone
from conditioning.images import png_bytes, to_uint8
from conditioning.labelset import LabelSetVersion
from conditioning.specs import canonical_spec, split_spec

BARE_SIZES = (1, 2, 4, 8, 16, 32, 64)


def _bare_rows(
    bundle: Path,
    labelset: str,
    attrs: str,
    device: str,
    threads: int,
    precision: str,
    seconds: float,
    candidates: int,
    barrier=None,
) -> tuple[list[dict], str]:
    """Per batch size, images/s of (a) the engine: the actor + the decoder to uint8; (b) the route's model work: what
    the model thread does for ``GET /sample``'s rows (``modes.latents`` with the server's candidates and re-step,
    the realism score, the decoder, a PNG per image). ``barrier``: wait there before each timed run, so bare
    processes beside each other measure the same thing at the same time."""
    bb = Backbone(bundle, device, threads, precision)
    ls = LabelSetVersion.load(bundle / "labelsets" / labelset, bb.decoder_fingerprint, labelset, "bench")
    spec = canonical_spec(split_spec(attrs), ls.attr_names)

    def engine(z: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> object:
        return to_uint8(bb.decode(modes.actor(ls, z, y, mask)))  # host uint8, so the GPU work is complete

    def route(z: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> object:
        got = modes.latents("actor", ls, z, y, mask, None, candidates)
        modes.realism(ls, got.z, y)
        return [png_bytes(im) for im in to_uint8(bb.decode(got.z))]

    rows = []
    for b in BARE_SIZES:
        z, y, mask = modes.draw(ls, spec, b, bb.latent_dim, torch.Generator().manual_seed(b))
        row = {"batch": b}
        for key, run in (("", engine), ("route_", route)):
            for _ in range(3):
                run(z, y, mask)
            if bb.device.type == "cuda":
                torch.cuda.synchronize()
            if barrier is not None:
                barrier.wait()
            n, t0, cpu0 = 0, time.perf_counter(), time.process_time()
            while time.perf_counter() - t0 < seconds / (2 * len(BARE_SIZES)):
                run(z, y, mask)
                n += 1
            dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            row[f"{key}images_per_s"] = round(n * b / dt, 1)
            row[f"{key}ms_per_batch"] = round(1000 * dt / n, 2)
            row[f"{key}cpu_ms_per_image"] = round(1000 * cpu / (n * b), 2)
        rows.append(row)
    return rows, bb.engine


def _bare_process(args: tuple, barrier, out) -> None:
    out.put(_bare_rows(*args, barrier=barrier))


def bare(args: tuple, processes: int) -> tuple[list[dict], str]:
    """``_bare_rows(*args)`` in ``processes`` processes side by side (one per ``lcs serve`` worker, so the bare
    engine has what the server has: that many processes of ``--threads`` threads), images/s summed per batch size."""
    if processes == 1:
        return _bare_rows(*args)
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_bare_process, args=(args, barrier, out)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    parts = [out.get() for _ in procs]
    for proc in procs:
        proc.join()
    rows = []
    for same in zip(*(rows for rows, _ in parts), strict=True):
        row = {"batch": same[0]["batch"]}
        for key in ("", "route_"):
            row[f"{key}images_per_s"] = round(sum(r[f"{key}images_per_s"] for r in same), 1)
            for k in ("ms_per_batch", "cpu_ms_per_image"):
                row[f"{key}{k}"] = round(sum(r[f"{key}{k}"] for r in same) / processes, 2)
        rows.append(row)
    return rows, parts[0][1]
