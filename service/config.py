"""Server settings: one dataclass, filled from ``lcs serve`` flags (defaults suit a 2-core CPU box)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from conditioning.runtime import check_device, resolve_precision
from conditioning.settings import require_at_least

DEFAULT_BUNDLE = Path(__file__).parent / "bundles" / "avatars"
# glibc malloc arenas for `lcs serve`, set as MALLOC_ARENA_MAX before the process starts (the CLI re-runs itself with
# it; the images and manifests set it) unless the environment has it already (0 there: glibc's default, 8 per core).
# The default's per-thread arenas fragment under varied batch sizes: RSS 354 -> 801 MB and still growing after 3 min
# of mixed load, where 2 arenas stayed flat at 582 MB from 90 s on (README, The service: "Memory")
MALLOC_ARENA_MAX = 2


@dataclass
class ServerConfig:
    bundle: str = str(DEFAULT_BUNDLE)
    data_dir: str = "lcs-data"
    registry: str = ""  # '' = DATA/registry; file://DIR; s3://BUCKET/PREFIX (several machines)
    registry_endpoint: str = ""  # S3 endpoint URL for stores other than AWS (credentials: the AWS_* environment)
    notify: str = ""  # redis://HOST:PORT/DB: change notices between replicas (polling stays the fallback)
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"  # auto: CUDA when present (bf16 autocast), else CPU
    threads: int = 0  # CPU intra-op threads (0: PyTorch's default)
    # auto: bf16 autocast on CUDA and on CPUs with bf16 units (avx512_bf16 / AMX), else fp32 (conditioning.runtime)
    precision: str = "auto"
    max_batch: int = 64  # samples per decoder forward
    # batches run at once, each on its own model thread: with threads 1, one per core puts a 2-core box's second core
    # to work (the event loop leaves most of it idle), and a row's bytes do not depend on the thread (service.batcher)
    model_workers: int = 1
    # whole servers (event loop, model, registry sync) on the one port, a socket each (service/workers.py): one
    # process is bound by its interpreter, 1.25 of 2 cores busy at 32 connections (issue 28). Default 1: each worker
    # holds its own model, and a box with more memory than cores to spare is the caller's call
    workers: int = 1
    # the longest a free model thread waits for the requests it expects (as many as were in flight since its last
    # batch; service.batcher): a lone client never waits. 0: take what is queued at once. A fixed 5 ms wait cost one
    # user 44 -> 37 ms p50 on 2 AMD EPYC cores (issue 28); waiting only for expected requests, 32 connections on two
    # workers got batches of 15.7 samples instead of 8.8
    max_wait_ms: float = 2.0
    max_queue: int = 1024  # samples waiting; beyond this requests get 429
    # estimated seconds a /sample request would wait in the queue before 429: a quick 429 with Retry-After lets a
    # client back off or go elsewhere, where a samples-only cap let admitted requests wait 9.7 s under load
    max_queue_wait_s: float = 1.0
    request_timeout_s: float = 30.0  # per-request deadline -> 504
    max_n: int = 64  # images per /sample request
    # actor mode: prior draws per image (edits: starts around the image's latent) of which the critics keep the best
    candidates: int = 8
    max_image_bytes: int = 10 << 20  # /transform upload
    max_decodes: int = 2  # uploaded images decoded at once (each up to 4 MP: uploads.MAX_DECODED_PIXELS)
    max_artifact_bytes: int = 256 << 20  # PUT /labelsets upload
    max_job_bytes: int = 512 << 20  # training-job upload
    poll_interval_s: float = 0.5  # registry sync (replicas converge within ~2 poll periods)
    job_workers: int = 1  # training jobs running at once (each in its own process)
    job_threads: int = 1  # torch threads per training job, so serving keeps its cores
    # uvicorn's line per request on stderr; off by default (gunicorn's default too): 3% of a worker's throughput at
    # n = 1, 32 connections (issue 28), and /metrics counts every request by route and status either way
    access_log: bool = False
    seed_bundle_labelsets: bool = True  # import the bundle's shipped label sets into an empty registry

    def __post_init__(self) -> None:
        """Refuse settings the server cannot run with at start-up (``lcs serve`` prints one line and exits 2), not as
        a 500 on every request: ``--candidates 0`` selected among no candidates."""
        counts = ("candidates", "max_batch", "model_workers", "workers", "max_n", "max_queue", "max_decodes")
        sizes = ("job_threads", "max_image_bytes", "max_artifact_bytes", "max_job_bytes")
        zero_means_something = ("threads", "job_workers", "port", "max_wait_ms")
        periods = ("max_queue_wait_s", "request_timeout_s", "poll_interval_s")
        at_least = dict.fromkeys(counts + sizes, 1) | dict.fromkeys(zero_means_something, 0)
        require_at_least(self, at_least, above=dict.fromkeys(periods, 0))
        resolve_precision(check_device(self.device), self.precision)  # a ValueError for a device or precision unknown
