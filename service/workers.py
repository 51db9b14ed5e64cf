"""``lcs serve --workers N``: N whole servers on one port, each on a listening socket of its own (SO_REUSEPORT).

Why: one process is bound by its interpreter, its event loop and model thread taking turns (1.25 of 2 cores busy at
32 connections, issue 28); a second process puts the other core to work. Why not uvicorn's own ``workers``: those
share one listening socket and race to accept, and with keep-alive clients the race decides the whole run: at 32
connections one worker took every connection in 3 runs of 4 (436-465 req/s against 729 when they split). With a
socket each, the kernel spreads connections over the workers by their address hash.

Each worker joins the port once its start-up has settled (``State.settled``), so a connection is not hashed to a
worker still loading its model while another serves. Workers share the data dir as replicas on one host do (the
admin token is made here first, so they do not race for it), and /metrics, whichever answers, sums them
(prometheus_client's multiprocess mode). A worker that exits stops the others and the server exits with its code:
the supervisor above (systemd, Docker, Kubernetes) restarts it whole.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
from typing import Any

from service.auth import admin_token
from service.config import ServerConfig

log = logging.getLogger("lcs.service")


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound socket that shares its port with the other workers' (SO_REUSEPORT); uvicorn makes it listen."""
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(addr)
    return sock


def _worker(cfg: ServerConfig, options: dict[str, Any]) -> None:
    import uvicorn

    from conditioning.runtime import setup_logging
    from service.app import create_app

    setup_logging()
    sock = listening_socket(cfg.host, cfg.port)
    uvicorn.Server(uvicorn.Config(create_app(cfg), **options)).run(sockets=[sock])


def serve_workers(cfg: ServerConfig, options: dict[str, Any]) -> None:
    """Run ``cfg.workers`` servers with the uvicorn ``options`` until a signal, or until one of them exits."""
    admin_token(cfg.data_dir)
    shared = tempfile.mkdtemp(prefix="lcs-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared  # before the workers start: they inherit it
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(cfg, options), name=f"lcs-worker-{i}") for i in range(cfg.workers)]
    stop = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: stop.set())
    for p in procs:
        p.start()
    log.info("%d workers on %s:%d: pids %s", len(procs), cfg.host, cfg.port, ", ".join(str(p.pid) for p in procs))
    try:
        while not stop.is_set() and all(p.is_alive() for p in procs):
            stop.wait(0.5)
    finally:
        dead = [p for p in procs if not p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: uvicorn's graceful shutdown
        for p in procs:
            p.join(15)
            if p.is_alive():
                p.kill()
        shutil.rmtree(shared, ignore_errors=True)
    if dead and not stop.is_set():
        log.error("worker %s exited with %s: stopping the server", dead[0].name, dead[0].exitcode)
        raise SystemExit(dead[0].exitcode or 1)
