"""The FastAPI app: start-up order, background loops, upload limits; routes live in ``service.api``.

Start-up runs in the background so /livez and /readyz answer at once: load the frozen VAE, sweep
and sync the registry (seeding it with the bundle's label sets the first time; retried while its store is
unreachable), warm the model up, start the batcher. /readyz says which of these is still missing, and once ready,
what is degraded (a registry store or notice channel that went away while the server kept serving).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

import torch
from fastapi import Depends, FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException

from conditioning import modes
from conditioning.backbone import Backbone
from service import contract, errors
from service.auth import admin_token
from service.batcher import Batcher
from service.config import ServerConfig
from service.domain import Kind
from service.hotswap import LiveLabelSets
from service.http_protocol import BoundedHttpToolsProtocol
from service.jobs import JobManager
from service.metrics import Metrics
from service.registry import RegistryError, open_registry
from service.request_meaning import refuse_repeated

log = logging.getLogger("lcs.service")
SWEEP_EVERY_S = 30.0
MAX_QUERY_BYTES = 8 << 10
GC_GEN0_THRESHOLD = 10_000  # allocations between young-generation collections (Python's default: 700)


class State:
    """Everything the routes use; filled in by start-up."""

    def __init__(self, cfg: ServerConfig):
        self.cfg = cfg
        self.metrics = Metrics()
        self.registry = open_registry(cfg.registry, cfg.data_dir, cfg.registry_endpoint, cfg.notify)
        self.jobs = JobManager(
            cfg.data_dir, cfg.bundle, self.metrics, cfg.job_workers, cfg.job_threads, registry=self.registry
        )
        self.backbone: Backbone | None = None
        self.live: LiveLabelSets | None = None
        self.batcher: Batcher | None = None
        self.decode_slots = asyncio.Semaphore(cfg.max_decodes)
        self.pending = {"decoder": "loading", "registry": "not synced yet", "warmup": "not done yet"}
        self.startup_error: str | None = None
        self.degraded: dict[str, dict] = {}  # what stopped working after start-up, and since when (for /readyz)
        self.notice = asyncio.Event()  # set by a change notice: sync now rather than at the next poll
        self.stop_notices = threading.Event()
        self.settled = asyncio.Event()  # start-up done, failed, or waiting on an unreachable registry

    @property
    def ready(self) -> bool:
        return not self.pending and self.startup_error is None


async def _start(app: FastAPI, st: State) -> None:
    cfg = st.cfg
    try:
        st.backbone = await asyncio.to_thread(Backbone, cfg.bundle, cfg.device, cfg.threads, cfg.precision)
        st.pending.pop("decoder")
        st.live = LiveLabelSets(st.registry, st.backbone.decoder_fingerprint)
        await _first_sync(st)
        st.pending.pop("registry")
        await asyncio.to_thread(_warmup, st)
        _settle_gc()
        st.pending.pop("warmup")
        st.batcher = Batcher(st.backbone, st.metrics, cfg.max_batch, cfg.max_wait_ms, cfg.max_queue, cfg.model_workers)
        st.batcher.start()
        app.state.tasks += [asyncio.create_task(t) for t in (_poll(st), _sweep(st), st.jobs.run())]
        if st.registry.notifier is not None:
            loop = asyncio.get_running_loop()
            st.registry.notifier.listen(lambda _name: loop.call_soon_threadsafe(st.notice.set), st.stop_notices)
        log.info(
            "ready: %d label set(s) serving: %s",
            len(st.live.sets),
            ", ".join(f"{k}@{v.version}" for k, v in st.live.sets.items()),
        )
    except Exception as e:  # noqa: BLE001 - reported by /readyz and the log; the process stays up to say so
        st.startup_error = f"{type(e).__name__}: {e}"
        log.exception("start-up failed")
    finally:
        st.settled.set()


async def _first_sync(st: State) -> None:
    """Sweep, seed and load the registry, retrying every second while its store is unreachable (a replica may start
    before the object store does); /readyz says why meanwhile."""
    cfg = st.cfg
    while True:
        try:
            await asyncio.to_thread(st.registry.check)
            await asyncio.to_thread(st.registry.sweep)
            added = await asyncio.to_thread(
                st.registry.seed_from, Path(cfg.bundle), st.backbone.decoder_fingerprint, st.backbone.latent_dim
            )
            if added:
                log.info("seeded the registry with the bundle's label sets: %s", ", ".join(added))
            await asyncio.to_thread(st.live.sync)
            return
        except RegistryError as e:
            if e.kind != Kind.UNAVAILABLE:
                raise
            if not st.pending["registry"].startswith("unreachable"):
                log.warning("registry %s: %s; retrying every second", st.registry.url, e.message)
            st.pending["registry"] = f"unreachable: {e.message}"
            st.settled.set()  # /readyz says why; a --workers process joins the port to say it
            await asyncio.sleep(1.0)


def _warmup(st: State) -> None:
    """First calls allocate buffers and pick kernels; do it before traffic arrives."""
    z = torch.zeros(st.cfg.max_batch, st.backbone.latent_dim)
    st.backbone.decode(z)
    st.backbone.decode(z[:1])
    for ls in st.live.sets.values():
        if ls.m.actor is None:  # a classifier label set: the energy sampler's first call warms the realism mapper's
            continue
        y = ls.table[:1].float().expand(2, -1) if ls.m.cfg.n_labels else torch.zeros(2, 0)
        modes.actor(ls, z[:2], y, y.bool())


def _settle_gc() -> None:
    """Move what start-up made (torch, the models, the framework: ~10^5 objects) out of the garbage collector's view,
    and collect the youngest generation less often: each collection of the old generations walked all of it, and
    collections took 5-8% of a worker's throughput at n = 1, 32 connections (py-spy; A/B, issue 28). What start-up
    made stays alive for the process anyway; what comes later (label-set versions, requests) is collected as ever."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


async def _poll(st: State) -> None:
    """Pick up other replicas' registry writes (and deletes) at once on a change notice, else within a poll period.
    While the store is unreachable the loaded label sets keep serving and /readyz reports it under ``degraded``."""
    while True:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(st.notice.wait(), st.cfg.poll_interval_s)
        st.notice.clear()
        try:
            await asyncio.to_thread(st.live.sync)
            if st.degraded.pop("registry", None):
                log.info("registry %s reachable again; in step", st.registry.url)
        except RegistryError as e:
            if "registry" not in st.degraded:
                log.warning("registry unreachable, serving what is loaded: %s", e.message)
            _degrade(st, "registry", e.code, e.message)
        except Exception:  # noqa: BLE001 - a bad pass is logged; the next one retries
            log.exception("registry sync failed")
        notices = st.registry.notifier
        if notices is not None and notices.error:
            _degrade(st, "notify", "notify_unavailable", f"{notices.url}: {notices.error}")
        else:
            st.degraded.pop("notify", None)
        st.metrics.labelsets_loaded.set(len(st.live.sets))
        st.metrics.versions_alive.set(st.live.live_versions)


def _degrade(st: State, what: str, code: str, message: str) -> None:
    """Record for /readyz that ``what`` is away: since when (kept from the first report), and the latest reason."""
    st.degraded.setdefault(what, {"since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    st.degraded[what].update(code=code, message=message)


async def _sweep(st: State) -> None:
    """Remove dead writers' leftovers (any replica's) every SWEEP_EVERY_S, apart from the poll loop: an S3 sweep
    lists every stored version, and a change notice must not wait behind it."""
    while True:
        await asyncio.sleep(SWEEP_EVERY_S)
        try:
            if n := await asyncio.to_thread(st.registry.sweep):
                log.info("swept %d stale entr%s", n, "y" if n == 1 else "ies")
        except RegistryError as e:  # the poll loop reports the store; the next sweep retries
            log.warning("sweep skipped: %s", e.message)
        except Exception:  # noqa: BLE001 - logged; the next sweep retries
            log.exception("sweep failed")


async def single_valued_query(request: Request) -> None:
    """Every query parameter a route declares takes one value (routes that declare query parameters document their
    422; /sample checks its own in ``request_meaning.query_params``). Async: FastAPI runs a plain function in its
    thread pool, a hop per request that cost the event loop 6% of its time (py-spy, issue 28)."""
    route = request.scope.get("route")
    if hasattr(route, "dependant") and route.dependant.query_params:
        refuse_repeated(request, {p.alias for p in route.dependant.query_params})


class BodyLimit:
    """Refuse request bodies over the route's limit with 413, by Content-Length or while streaming, and query strings
    over MAX_QUERY_BYTES with 414 (the HTTP protocol hands the app request heads up to
    ``http_protocol.MAX_HEAD_BYTES`` and refuses longer ones itself)."""

    def __init__(self, app, cfg: ServerConfig):
        self.app, self.cfg = app, cfg

    def limit(self, method: str, path: str) -> int:
        if path == "/transform":
            return self.cfg.max_image_bytes + (64 << 10)
        if path.startswith("/labelsets/") and path.endswith("/jobs"):
            return self.cfg.max_job_bytes
        if path.startswith("/labelsets/") and method == "PUT":
            return self.cfg.max_artifact_bytes
        return 1 << 20

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = None
        limit = self.limit(scope["method"], scope["path"])
        length = dict(scope["headers"]).get(b"content-length")
        if len(query := scope.get("query_string", b"")) > MAX_QUERY_BYTES:
            refusal = (414, "uri_too_long", f"the query string is {len(query)} bytes", MAX_QUERY_BYTES)
        elif length is not None and length.isdigit() and int(length) > limit:
            refusal = (413, "payload_too_large", f"the body is {int(length)} bytes", limit)
        if refusal:
            status, code, what, most = refusal
            message = f"{what}; this route takes at most {most}"
            return await errors.envelope(status, code, message, {"limit": most})(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:  # an HTTPException passes FastAPI's body parsing untouched and becomes the envelope
                raise StarletteHTTPException(413, f"the body exceeds {limit} bytes")
            return message

        await self.app(scope, limited, send)


class Timing:
    """Request latency by route template and status, errors included (outermost, so it sees every answer)."""

    def __init__(self, app, metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]

        async def record(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route = scope.get("route")
            self.metrics.latency.labels(getattr(route, "path", "unmatched"), str(status[0])).observe(
                time.perf_counter() - started
            )


def create_app(cfg: ServerConfig | None = None) -> FastAPI:
    cfg = cfg or ServerConfig()
    Path(cfg.data_dir).mkdir(parents=True, exist_ok=True)
    st = State(cfg)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.tasks = []
        app.state.tasks.append(asyncio.create_task(_start(app, st)))
        if cfg.workers > 1:  # one of several on the port: join it once start-up has settled (service.workers)
            await st.settled.wait()
        yield
        for t in app.state.tasks:
            t.cancel()
        await asyncio.gather(*app.state.tasks, return_exceptions=True)
        st.stop_notices.set()
        if st.batcher:
            await st.batcher.stop()
        st.jobs.stop()

    from service import manage, web
    from service.api import router

    app = FastAPI(
        title="Latent constraints service",
        version="0.1.0",
        lifespan=lifespan,
        description="Conditional samples and identity-preserving edits from a frozen VAE with latent constraints "
        "(Engel, Hoffman, Roberts, ICLR 2018). Label sets are hot-registered without a restart.",
        dependencies=[Depends(single_valued_query)],
        # FastAPI's own OpenTelemetry hooks off: /metrics is Prometheus's, and the check ran on every request
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.lcs = st
    app.state.admin_token = admin_token(cfg.data_dir)
    app.state.started = time.time()
    errors.install(app)
    contract.install(app, cfg)
    app.add_middleware(BodyLimit, cfg=cfg)
    app.add_middleware(Timing, metrics=st.metrics)
    routers = (router, manage.router, manage.admin, web.router)
    for r in routers:
        app.include_router(r)
    app.state.route_methods = [(route.path_regex, route.methods) for r in routers for route in r.routes]
    web.mount_static(app)
    return app


def check_data_dir(path: str | Path) -> None:
    """Stop at start with one clear line, not a traceback, when the data dir cannot be written
    (typically a host directory mounted into the container that uid 10001 does not own)."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".write-check-"):
            pass
    except OSError as e:
        raise SystemExit(
            f"lcs serve: the data dir {p} is not writable by uid {os.getuid()} ({e.strerror}); "
            "give that user the directory (in the container: chown 10001) or use a named volume"
        ) from None


def check_shared_token(cfg: ServerConfig) -> None:
    """Replicas on an S3 registry share no data dir, so a token generated into one would admit writes on that replica
    only: stop at start unless the token is given."""
    if cfg.registry.startswith("s3://") and not os.environ.get("LCS_ADMIN_TOKEN", "").strip():
        raise SystemExit(
            "lcs serve: with an s3:// registry set LCS_ADMIN_TOKEN (the same on every replica); replicas share no "
            "data dir in which to keep a generated one"
        )


def serve(cfg: ServerConfig) -> None:
    import uvicorn

    from conditioning.runtime import setup_logging

    setup_logging()
    check_data_dir(cfg.data_dir)
    check_shared_token(cfg)
    options = {
        "host": cfg.host,
        "port": cfg.port,
        "log_level": "info",
        "access_log": cfg.access_log,
        "timeout_graceful_shutdown": 10,
        # one HTTP stack, whatever else is installed: httptools with a bound on the request head (service.http_protocol)
        # on uvloop (a dependency; asyncio where it has no wheel, Windows), so the tests run on what production runs.
        # Against h11 + asyncio: 5% (uvloop) and 7-9% (httptools) more requests/s at n = 1, 32 connections (issue 28)
        "http": BoundedHttpToolsProtocol,
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
    }
    if cfg.workers > 1:
        from service.workers import serve_workers

        serve_workers(cfg, options)
    else:
        uvicorn.run(create_app(cfg), **options)
