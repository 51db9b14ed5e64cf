"""Serving benchmark: the bare model, ``lcs serve`` and LitServe on the same model, loaded by wrk.

    python -m bench.serve [--bundle DIR] [--labelset faces] [--attrs smiling] [--seconds 10] [--connections 1,8,32]
                          [--n 1,16] [--candidates 8] [--out docs/bench_serve.json]

1. Bare, in as many processes as ``lcs serve`` has workers (each with --threads), summed: the engine (label-set
   actor + decoder to uint8, conditioning.modes.actor), and the route's model work (what the model thread does for
   GET /sample's rows: the server's candidates and re-step, realism, decoder, a PNG per image), batch 1..64.
2. Ours: a real ``lcs serve`` subprocess on 127.0.0.1; ``GET /sample?n=N`` from each of --connections keep-alive
   connections for --seconds; requests/s, images/s (= requests/s x n), p50/p99 latency, errors (status >= 400,
   and socket errors), and the server's CPU time per image (all its threads and processes; bare has it too).
3. LitServe (bench/litserve_peer.py, when ``litserve`` is installed: pip install -e '.[bench]'): the same work
   for n = 1 in its own subprocess, same threads, batches of up to 32, --peer-batch-timeout-ms as its batch timeout
   (default LitServe's own, 0: it gained nothing from ours, a 2 ms cap, which it would wait out on every batch).
4. R_serve = ours' images/s at the widest --connections / the best bare images/s, at n = 1 and at the largest n
   (target >= 0.8 at n = 16), against the engine and against the route's model work (the second is what serving
   adds); ours over LitServe at n = 1 at that load (target >= 1.5x the throughput at no worse p99).
--candidates K sets the actor's candidates per image for every server and the bare route (lcs serve --candidates;
default the server's), so what the quality knob costs is measured through HTTP.
The client is wrk (Debian: apt-get install -y wrk), one thread: compiled, it takes 1-2% of a core, where the Python
client it replaces ate the CPU it measured (R_serve 0.28 with it, 0.47-0.52 with wrk: issue 17). Prints a table,
writes the JSON (--out) and the table into the .md beside it, between the BENCH markers (the rest is kept).
"""  # noqa: E501 - the usage line above is printed verbatim by --help (description=__doc__)

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import torch

from bench.ports import free_port
from bench.serve_bare import bare
from service.config import DEFAULT_BUNDLE, ServerConfig

TARGET_R_SERVE = 0.8
TARGET_VS_LITSERVE = 1.5
READY_TIMEOUT_S = 180  # model load + warm-up; slow when the machine is busy
STOP_GRACE_S = 3  # nothing a server holds here outlives the run (its data dir is temporary)
WRK_TIMEOUT = "10s"  # wrk's default (2 s) would drop slow answers from the latency histogram as timeouts
JSON = {"Content-Type": "application/json"}
MARKERS = ("<!-- BENCH:BEGIN (written by python -m bench.serve) -->", "<!-- BENCH:END -->")
# wrk calls done() once at the end; one JSON line on stdout is easier to read than its text report. Latencies in
# microseconds; errors.status counts answers with status >= 400 (the routes here answer no 1xx/3xx).
WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, '
    .. '"p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def need_wrk() -> str:
    """wrk's path, or stop: a Python client on the same cores would measure itself (issue 17), so no fallback."""
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit(
            "bench.serve needs the wrk HTTP load generator on PATH: apt-get install -y wrk (Debian/Ubuntu), "
            "brew install wrk (macOS)"
        )
    return path


@contextlib.contextmanager
def running(cmd: list[str], ready_url: str, log: Path) -> Iterator[subprocess.Popen]:
    """A server subprocess, from ready until the block ends. Its own process group, so LitServe's workers stop
    with it; its log goes to ``log``, quoted if it never gets ready."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "LCS_ADMIN_TOKEN": "bench"},
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _answers(ready_url):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{' '.join(cmd[:4])} did not become ready; its log ends:\n{tail}")
            time.sleep(0.2)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)  # uvicorn and LitServe start a graceful shutdown on it
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_GRACE_S)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # LitServe's waits for its queue task for good; and any stragglers
        proc.wait()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def probe(url: str, body: str | None) -> None:
    """One request answered with a PNG before each load point: a load of error answers would read as throughput,
    and the previous point's backlog drains first (else its 429s leak into this point)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        r = httpx.request("GET" if body is None else "POST", url, content=body, headers=JSON, timeout=60)
        if r.status_code == 200 and r.content.startswith(b"\x89PNG"):
            return
        if r.status_code not in (429, 503) or time.monotonic() > deadline:
            raise RuntimeError(f"{url} answered {r.status_code} {r.headers.get('content-type')}: {r.text[:300]}")
        time.sleep(0.2)


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system, every thread) of the live processes in a process group: the server's whole cost,
    LitServe's HTTP and worker processes together (Linux /proc)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            f = stat.read_text().rsplit(")", 1)[1].split()  # the fields after the command name
            if int(f[2]) == pgid:
                ticks += int(f[11]) + int(f[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wrk(url: str, connections: int, seconds: float, server: int, body: str | None = None) -> dict:
    """One wrk run (one thread) with keep-alive connections, GET or (with ``body``) a JSON POST: its numbers, the CPU
    it used itself, and the CPU the server's process group ``server`` used meanwhile."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        if body is not None:  # a JSON string is a valid Lua string literal
            script.write(f"wrk.method = 'POST'\nwrk.body = {json.dumps(body)}\n")
            script.write(f"wrk.headers['Content-Type'] = '{JSON['Content-Type']}'\n")
        script.write(WRK_DONE)
        script.flush()
        before, server_before = resource.getrusage(resource.RUSAGE_CHILDREN), group_cpu_s(server)
        out = subprocess.run(
            [need_wrk(), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", f"--timeout={WRK_TIMEOUT}"]
            + ["-s", script.name, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        after, server_cpu = resource.getrusage(resource.RUSAGE_CHILDREN), group_cpu_s(server) - server_before
    line = next((s for s in out.splitlines() if s.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    w = json.loads(line.removeprefix("WRK_JSON "))
    ok, dt = w["requests"] - w["status_errors"], w["duration_us"] / 1e6
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {
        "connections": connections,
        "requests": w["requests"],
        "requests_per_s": round(ok / dt, 1),
        "p50_ms": round(w["p50_us"] / 1000, 1),
        "p99_ms": round(w["p99_us"] / 1000, 1),
        "errors_status": w["status_errors"],
        "errors_socket": w["socket_errors"],
        "client_cpu_share": round(cpu / dt, 3),  # of one core
        "server_cpu_s": round(server_cpu, 2),
    }


def load_levels(
    url: str, ns: list[int], conns: list[int], seconds: float, server: int, body: str | None = None
) -> list[dict]:
    """Each n at each connection count, after a short warm-up at the widest load (thread pools, batch timing)."""
    rows = []
    for n in ns:
        target = url.format(n=n)
        probe(target, body)
        wrk(target, max(conns), min(seconds, 1.0), server, body)
        for c in conns:
            probe(target, body)
            r = wrk(target, c, seconds, server, body)
            images = (r["requests"] - r["errors_status"]) * n
            r["server_cpu_ms_per_image"] = round(1000 * r["server_cpu_s"] / images, 2) if images else None
            rows.append({"n": n, **r, "images_per_s": round(r["requests_per_s"] * n, 1)})
    return rows


def ours(a: argparse.Namespace, data: str, log: Path) -> list[dict]:
    port = free_port()
    cmd = [sys.executable, "-m", "cli", "serve", "--bundle", a.bundle, "--data-dir", data, "--port", str(port)]
    cmd += ["--device", a.device, "--precision", a.precision, "--threads", str(a.threads)]
    cmd += ["--max-wait-ms", str(a.max_wait_ms), "--candidates", str(a.candidates)]
    cmd += ["--model-workers", str(a.model_workers), "--workers", str(a.workers)]
    base = f"http://127.0.0.1:{port}"
    with running(cmd, base + "/readyz", log) as proc:
        url = base + f"/sample?labelset={a.labelset}&attrs={a.attrs}&n={{n}}"
        return load_levels(url, a.n, a.connections, a.seconds, proc.pid)


def litserve(a: argparse.Namespace, log: Path) -> list[dict]:
    port = free_port()
    cmd = [sys.executable, "-m", "bench.litserve_peer", "--bundle", a.bundle, "--labelset", a.labelset]
    cmd += ["--device", a.device, "--precision", a.precision, "--threads", str(a.threads), "--port", str(port)]
    cmd += ["--batch-timeout-ms", str(a.peer_batch_timeout_ms), "--workers", str(a.model_workers)]
    cmd += ["--candidates", str(a.candidates)]
    base = f"http://127.0.0.1:{port}"
    body = json.dumps({"attrs": a.attrs})
    with running(cmd, base + "/health", log) as proc:
        return load_levels(base + "/predict", [1], a.connections, a.seconds, proc.pid, body)


def summarize(bare_rows: list[dict], http: dict[str, list[dict]]) -> dict:
    """Adds each row's ratio columns (÷ the best bare images/s of the engine and of the route's model work; ÷
    LitServe's req/s at the same n and connections) and returns, at the widest load measured: R_serve at n = 1 and
    at the largest n (issue 28's bar is at n = 16), each against the engine and the route's model work, and ours
    over LitServe at n = 1, with their targets."""
    best = max(r["images_per_s"] for r in bare_rows)
    route = max(r["route_images_per_s"] for r in bare_rows)
    peer = {(r["n"], r["connections"]): r["requests_per_s"] for r in http.get("litserve", [])}
    for name, rows in http.items():
        for r in rows:
            r["vs_bare"] = round(r["images_per_s"] / best, 3)
            r["vs_route"] = round(r["images_per_s"] / route, 3)
            p = peer.get((r["n"], r["connections"])) if name != "litserve" else None
            r["vs_litserve"] = round(r["requests_per_s"] / p, 2) if p else None
    widest = max(r["connections"] for r in http["ours"])
    at = {r["n"]: r for r in http["ours"] if r["connections"] == widest}
    lit = next((r for r in http.get("litserve", []) if r["connections"] == widest), None)
    out = {
        "best_bare_images_per_s": best,
        "best_route_images_per_s": route,
        "at_connections": widest,
        "r_serve": {n: {"vs_engine": r["vs_bare"], "vs_route": r["vs_route"]} for n, r in sorted(at.items())},
        "target_r_serve": TARGET_R_SERVE,
        "vs_litserve": None,
    }
    if (o := at.get(1)) and lit:
        ratio = o["vs_litserve"]
        out["vs_litserve"] = {
            "throughput_ratio": ratio,
            "p99_ms": {"ours": o["p99_ms"], "litserve": lit["p99_ms"]},
            "target_throughput_ratio": TARGET_VS_LITSERVE,
            "met": bool(ratio and ratio >= TARGET_VS_LITSERVE and o["p99_ms"] <= lit["p99_ms"]),
        }
    return out


def table(result: dict) -> list[str]:
    """The result as Markdown: printed, and written into the .md beside the JSON."""
    s = result["summary"]
    lines = [
        f"`{result['command']}`: {result['date']}, {result['device']}, engine {result['engine']} (every server), "
        f"{result['candidates']} actor candidates an image, "
        f"load average {result['load_average']} at start, uvicorn {result['uvicorn']}, wrk one thread, "
        f"batch waits: ours up to {result['max_wait_ms']['ours']} ms, "
        f"LitServe's timeout {result['max_wait_ms']['litserve_batch_timeout']} ms",
        "",
        "| bare batch | engine images/s | ms/batch | CPU ms/image | route work images/s | ms/batch | CPU ms/image |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r['batch']} | {r['images_per_s']} | {r['ms_per_batch']} | {r['cpu_ms_per_image']} | "
            f"{r['route_images_per_s']} | {r['route_ms_per_batch']} | {r['route_cpu_ms_per_image']} |"
            for r in result["bare"]
        ),
        "",
        "| server | n | connections | req/s | images/s | p50 ms | p99 ms | errors | server CPU ms/image | wrk CPU "
        "| ÷ best engine | ÷ best route work | ÷ LitServe |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows in result["http"].items():
        for r in rows:
            errors = r["errors_status"] + r["errors_socket"]
            vs = "" if r["vs_litserve"] is None else f"{r['vs_litserve']}x"
            lines.append(
                f"| {name} | {r['n']} | {r['connections']} | {r['requests_per_s']} | {r['images_per_s']} | "
                f"{r['p50_ms']} | {r['p99_ms']} | {errors} | {r['server_cpu_ms_per_image']} | "
                f"{r['client_cpu_share']:.0%} | {r['vs_bare']} | {r['vs_route']} | {vs} |"
            )
    for name, why in result["skipped"].items():
        lines.append(f"| {name} | skipped: {why} |||||||||||")
    lines.append("")
    for n, r in s["r_serve"].items():
        lines.append(
            f"R_serve (n = {n}, {s['at_connections']} connections) = {r['vs_engine']} of the engine, "
            f"{r['vs_route']} of the route's model work (target >= {TARGET_R_SERVE})"
        )
    if v := s["vs_litserve"]:
        lines.append(
            f"ours / LitServe = {v['throughput_ratio']}x throughput (target >= {TARGET_VS_LITSERVE}x), p99 "
            f"{v['p99_ms']['ours']} vs {v['p99_ms']['litserve']} ms: {'met' if v['met'] else 'not met'}"
        )
    return lines


def write_md(path: Path, lines: list[str]) -> None:
    """Replace what lies between the markers (or start the file with them); the text around them is kept."""
    block = "\n".join([MARKERS[0], *lines, MARKERS[1]])
    text = path.read_text() if path.exists() else ""
    if MARKERS[0] in text and MARKERS[1] in text:
        head, rest = text.split(MARKERS[0], 1)
        text = head + block + rest.split(MARKERS[1], 1)[1]
    else:
        text = f"# Serving benchmark\n\n{block}\n{text}"
    path.write_text(text)


def uvicorn_impl() -> str:
    """The HTTP stacks under test: ``lcs serve`` runs httptools (bounded, service.http_protocol) on uvloop where
    installed (service.app.serve); LitServe takes uvicorn's "auto", i.e. uvloop and httptools when installed."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    peer = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"ours httptools + {loop}, LitServe {peer} + {loop}"


def ints(text: str) -> list[int]:
    return sorted({int(x) for x in text.split(",")})


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    p.add_argument("--labelset", default="faces")
    p.add_argument("--attrs", default="smiling")
    p.add_argument("--device", default=ServerConfig.device)
    p.add_argument("--precision", default=ServerConfig.precision, help="auto | bf16 | fp32, for every server")
    p.add_argument("--threads", type=int, default=ServerConfig.threads)
    p.add_argument("--seconds", type=float, default=10.0, help="per load point (whole s); bare: spread over sizes")
    p.add_argument("--connections", type=ints, default=[1, 8, 32], help="comma-separated; R_serve at the widest")
    p.add_argument("--n", type=ints, default=[1, 16], help="images per request for ours (LitServe: n = 1)")
    p.add_argument("--max-wait-ms", type=float, default=ServerConfig.max_wait_ms, help="ours (lcs serve's flag)")
    p.add_argument("--peer-batch-timeout-ms", type=float, default=0.0, help="LitServe's batch timeout (its default)")
    p.add_argument(
        "--model-workers",
        type=int,
        default=ServerConfig.model_workers,
        help="ours: batches at once (lcs serve --model-workers); LitServe: workers_per_device, the same count",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=ServerConfig.workers,
        help="ours: HTTP processes (lcs serve --workers); LitServe runs its own API and model processes",
    )
    p.add_argument(
        "--candidates",
        type=int,
        default=ServerConfig.candidates,
        help="actor candidates per image, for every server and the bare route (lcs serve --candidates)",
    )
    p.add_argument("--out", default="docs/bench_serve.json")
    a = p.parse_args()
    need_wrk()
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    args = (Path(a.bundle), a.labelset, a.attrs, a.device, a.threads, a.precision, a.seconds, a.candidates)
    b, engine = bare(args, a.workers)
    http, skipped = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        http["ours"] = ours(a, tmp + "/data", Path(tmp, "ours.log"))
        if importlib.util.find_spec("litserve"):
            http["litserve"] = litserve(a, Path(tmp, "litserve.log"))
        else:
            skipped["litserve"] = "not installed (pip install -e '.[bench]')"
    dev = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available() and a.device != "cpu"
        else f"cpu ({os.cpu_count()} cores)"
    )
    result = {
        "command": " ".join(["python", "-m", "bench.serve", *sys.argv[1:]]),
        "device": dev,
        "engine": engine,
        "host": platform.node(),
        "load_average": load,
        "uvicorn": uvicorn_impl(),
        "versions": {
            k: importlib.metadata.version(k) for k in ("uvicorn", "fastapi", "litserve") if importlib.util.find_spec(k)
        },
        "bundle": a.bundle,
        "labelset": a.labelset,
        "attrs": a.attrs,
        "seconds": a.seconds,
        "candidates": a.candidates,
        "max_wait_ms": {"ours": a.max_wait_ms, "litserve_batch_timeout": a.peer_batch_timeout_ms},
        "bare": b,
        "http": http,
        "skipped": skipped,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    result["summary"] = summarize(b, http)
    lines = table(result)
    print("\n".join(lines))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    write_md(out.with_suffix(".md"), lines)
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
