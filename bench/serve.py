"""Serving benchmark: bare model throughput vs HTTP throughput through ``lcs serve``.

    python -m bench.serve [--bundle DIR] [--labelset faces] [--attrs smiling] [--seconds 10] [--out docs/bench_serve.json]

1. Bare: label-set actor (conditioning.modes.actor) + decoder on the loaded Backbone, batch 1..64, images/s
   (decoded to uint8 as the server does; no HTTP, no PNG).
2. HTTP: a real ``lcs serve`` subprocess on 127.0.0.1; 1, 8 and 32 concurrent async clients each
   loop ``GET /sample?n=1`` for --seconds; images/s and p50/p99 latency.
3. R_serve = HTTP images/s at 32 clients / best bare images/s (target >= 0.8).
Clients and server share the machine; on a 2-core box the clients' own CPU use counts against R_serve.
Prints a table and writes JSON.
"""  # noqa: E501 - the usage line above is printed verbatim by --help (description=__doc__)

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from conditioning import modes
from conditioning.backbone import Backbone
from conditioning.images import to_uint8
from conditioning.labelset import LabelSetVersion
from service.config import DEFAULT_BUNDLE


def bare(bundle: Path, labelset: str, device: str, threads: int, seconds: float) -> list[dict]:
    bb = Backbone(bundle, device, threads)
    ls = LabelSetVersion.load(bundle / "labelsets" / labelset, bb.decoder_fingerprint, labelset, "bench")

    def run(z: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
        return to_uint8(bb.decode(modes.actor(ls, z, y, mask)))  # host uint8, so the GPU work is complete

    rows = []
    gen = torch.Generator().manual_seed(0)
    for b in (1, 2, 4, 8, 16, 32, 64):
        z = torch.randn(b, bb.latent_dim, generator=gen)
        y = ls.table[torch.randint(len(ls.table), (b,), generator=gen)]
        mask = torch.ones(y.shape, dtype=torch.bool)
        for _ in range(3):
            run(z, y, mask)
        if bb.device.type == "cuda":
            torch.cuda.synchronize()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 7:
            run(z, y, mask)
            n += 1
        dt = time.perf_counter() - t0
        rows.append({"batch": b, "images_per_s": round(n * b / dt, 1), "ms_per_batch": round(1000 * dt / n, 2)})
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, clients: int, seconds: float, params: dict) -> dict:
    lat: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def client(i: int, http: httpx.AsyncClient):
        nonlocal errors
        seed = i * 1_000_000
        while time.perf_counter() < stop:
            seed += 1
            t = time.perf_counter()
            r = await http.get("/sample", params={**params, "seed": seed})
            if r.status_code != 200:
                errors += 1
            else:
                lat.append(time.perf_counter() - t)

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*[client(i, http) for i in range(min(clients, 2))])  # warm-up round trip
        stop = time.perf_counter() + seconds
        lat.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*[client(i, http) for i in range(clients)])
        dt = time.perf_counter() - t0
    ms = np.array(lat) * 1000
    return {
        "clients": clients,
        "requests": len(lat),
        "errors": errors,
        "images_per_s": round(len(lat) * params["n"] / dt, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
    }


def http_bench(
    bundle: Path, labelset: str, attrs: str, device: str, threads: int, seconds: float, max_wait_ms: float
) -> list[dict]:
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli",
                "serve",
                "--bundle",
                str(bundle),
                "--data-dir",
                data,
                "--port",
                str(port),
                "--device",
                device,
                "--threads",
                str(threads),
                "--max-wait-ms",
                str(max_wait_ms),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "LCS_ADMIN_TOKEN": "bench"},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            else:
                raise RuntimeError("server did not become ready")
            params = {"labelset": labelset, "attrs": attrs, "n": 1}
            return [asyncio.run(load(url, c, seconds, params)) for c in (1, 8, 32)]
        finally:
            proc.terminate()
            proc.wait(20)


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    p.add_argument("--labelset", default="faces")
    p.add_argument("--attrs", default="smiling")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument(
        "--seconds", type=float, default=10.0, help="per HTTP concurrency level (bare: spread over batch sizes)"
    )
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--out", default="docs/bench_serve.json")
    a = p.parse_args()
    bundle = Path(a.bundle)
    b = bare(bundle, a.labelset, a.device, a.threads, a.seconds)
    h = http_bench(bundle, a.labelset, a.attrs, a.device, a.threads, a.seconds, a.max_wait_ms)
    best = max(r["images_per_s"] for r in b)
    r32 = next(r for r in h if r["clients"] == 32)["images_per_s"]
    dev = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available() and a.device != "cpu"
        else f"cpu ({os.cpu_count()} cores)"
    )
    result = {
        "command": " ".join(["python", "-m", "bench.serve", *sys.argv[1:]]),
        "device": dev,
        "host": platform.node(),
        "bundle": str(bundle),
        "labelset": a.labelset,
        "bare": b,
        "http": h,
        "best_bare_images_per_s": best,
        "r_serve": round(r32 / best, 3),
        "target_r_serve": 0.8,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    print(f"device: {dev}\n\nbare actor+decoder\n{'batch':>6} {'images/s':>10} {'ms/batch':>9}")
    for r in b:
        print(f"{r['batch']:>6} {r['images_per_s']:>10} {r['ms_per_batch']:>9}")
    print(f"\nHTTP GET /sample?n=1\n{'clients':>7} {'images/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for r in h:
        print(f"{r['clients']:>7} {r['images_per_s']:>10} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['errors']:>7}")
    print(f"\nR_serve = {r32} / {best} = {result['r_serve']} (target >= 0.8)")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
