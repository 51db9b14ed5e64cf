"""Training jobs: a new label set learned on the server's frozen model, in a separate process.

The server checks the upload, writes it to DATA/jobs/ID/ and ``JobManager`` starts a worker
(``python -m service.job_worker``) on it, so serving never stalls on training. The job's status lives in the
registry's backend (DATA/jobs/ID/status.json for the file registry, an object for S3), so every replica sharing the
registry answers ``GET /jobs/ID``; the inputs and the worker's log stay on the replica that runs it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from models.artifacts import write_json
from service.domain import DomainError, Kind

log = logging.getLogger("lcs.jobs")
JOB_ID_RE = re.compile(r"[0-9a-f]{32}")
FINAL = ("succeeded", "failed")
TRAIN_FIELDS = {
    "steps": (int, 1, 100_000),
    "lambda_dist": (float, 0.0, 100.0),
    "width": (int, 8, 2048),
    "depth": (int, 1, 8),
    "batch_size": (int, 8, 4096),
    "lr": (float, 1e-6, 1.0),
    "edit_prob": (float, 0.0, 1.0),
    "rule_samples": (int, 256, 1_000_000),
    "classifier_steps": (int, 1, 100_000),
}
# What a job changes from ``lcs train-labelset``'s defaults (TrainLabelSetConfig), and why: a job trains on the
# server's own CPU, next to serving, so it takes half the CLI's actor steps.
JOB_CHANGES = {"steps": 1000}
# The replica that owns a queued or running job says so every SEEN_EVERY_S; a job not seen for LOST_AFTER_S belongs to
# a replica that died without a word (kill -9, a lost node) and is reported failed (worker_lost) by every replica.
SEEN_EVERY_S = 10.0
LOST_AFTER_S = 90.0


class JobError(DomainError):
    """An unknown job, or a job request (settings, labels, ids) that cannot be trained on."""


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def job_dir(data_dir: str | Path, job_id: str) -> Path:
    if not JOB_ID_RE.fullmatch(job_id or ""):
        raise JobError(Kind.NOT_FOUND, "unknown_job", f"no job {job_id!r}")
    return Path(data_dir) / "jobs" / job_id


def stored_status(registry, job_id: str) -> dict:
    """What the job's worker (or manager) last wrote."""
    job_dir(".", job_id)  # refuses ids that are not job ids before the store is asked
    status = registry.job_status(job_id)
    if status is None:
        raise JobError(Kind.NOT_FOUND, "unknown_job", f"no job {job_id!r}")
    return status


def read_status(registry, job_id: str) -> dict:
    """The job's status as any replica reports it: what its worker last wrote, or ``worker_lost`` when the replica
    that owns an unfinished job has not been seen for LOST_AFTER_S."""
    status = stored_status(registry, job_id)
    if status["state"] not in FINAL:
        seen = registry.job_seen(job_id)
        if seen is None or time.time() - seen > LOST_AFTER_S:
            ago = "never" if seen is None else f"{time.time() - seen:.0f} s ago"
            message = f"the replica running this job stopped (last seen {ago}); submit it again"
            status = {**status, "state": "failed", "error": {"code": "worker_lost", "message": message}}
    return status


def training_params(form: dict) -> dict:
    """Form fields -> checked training settings: TrainLabelSetConfig's defaults, JOB_CHANGES, then the form."""
    from training.encode import RULE_SAMPLES
    from training.train_labelset import TrainLabelSetConfig

    defaults = TrainLabelSetConfig()
    out = {k: getattr(defaults, k) for k in TRAIN_FIELDS if k != "rule_samples"} | {
        "rule_samples": RULE_SAMPLES,
        **JOB_CHANGES,
    }
    for k, (typ, lo, hi) in TRAIN_FIELDS.items():
        if form.get(k) in (None, ""):
            continue
        try:
            v = typ(form[k])
        except (TypeError, ValueError):
            raise JobError(Kind.INVALID, "invalid_request", f"{k} must be a {typ.__name__}", {"field": k}) from None
        if not lo <= v <= hi:
            raise JobError(
                Kind.INVALID, "invalid_request", f"{k} must be within [{lo}, {hi}]", {"field": k, "value": v}
            )
        out[k] = v
    return out


@dataclass
class _Running:
    job_id: str
    proc: subprocess.Popen


class JobManager:
    """Starts queued jobs as worker slots free up and notices workers that die."""

    def __init__(
        self, data_dir: str | Path, bundle: str | Path, metrics, workers: int = 1, threads: int = 1, registry=None
    ):
        from service.registry import Registry

        self.data_dir, self.bundle, self.metrics = Path(data_dir), Path(bundle), metrics
        self.workers, self.threads = workers, threads
        self.registry = registry if registry is not None else Registry(data_dir)
        self.queue: list[str] = []
        self.running: dict[str, _Running] = {}
        self._lock = threading.Lock()  # create() and pump() run in worker threads: the loop's and the routes'
        self._seen = 0.0  # when this replica last said it still owns its jobs
        (self.data_dir / "jobs").mkdir(parents=True, exist_ok=True)

    def create(self, name: str, request: dict, files: dict[str, bytes]) -> dict:
        job_id = uuid.uuid4().hex
        d = job_dir(self.data_dir, job_id)
        d.mkdir(parents=True)
        for fname, data in files.items():
            (d / fname).write_bytes(data)
        write_json(d / "job.json", {"id": job_id, "name": name, **request})
        status = {
            "id": job_id,
            "name": name,
            "state": "queued",
            "created": now(),
            "progress": {"step": 0, "steps": request["train"]["steps"]},
            "result": None,
            "error": None,
        }
        self.registry.mark_job_seen(job_id)  # before the status: a reader never finds it unowned
        self.registry.put_job_status(job_id, status)
        with self._lock:
            self.queue.append(job_id)
        log.info("job %s queued: label set %s from %s", job_id, name, request["source"])
        return status

    def pump(self) -> None:
        """Reap finished workers, start queued jobs (called periodically, off the event loop: with an S3 registry
        each status read or write is a request)."""
        with self._lock:
            for job_id, r in list(self.running.items()):
                rc = r.proc.poll()
                if rc is None:
                    continue
                try:
                    self._reap(job_id, rc)
                except DomainError as e:  # the registry's store is unreachable: reap it on a later pump
                    log.warning("job %s ended; its status cannot be settled yet: %s", job_id, e.message)
                    continue
                del self.running[job_id]
            while self.queue and len(self.running) < self.workers:
                job_id = self.queue.pop(0)
                d = job_dir(self.data_dir, job_id)
                cmd = [sys.executable, "-m", "service.job_worker", str(d), "--bundle", str(self.bundle)]
                cmd += ["--data-dir", str(self.data_dir), "--threads", str(self.threads)]
                # the registry's settings travel in the environment, not on a command line `ps` shows (a Redis URL
                # may hold a password)
                env = {**os.environ, **{f"LCS_{k.upper()}": v for k, v in self.registry.spec.items()}}
                with open(d / "worker.log", "ab") as logf:  # the worker has its own copy of the descriptor
                    proc = subprocess.Popen(
                        cmd,
                        stdout=logf,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                        env=env,
                    )
                self.running[job_id] = _Running(job_id, proc)
            self.metrics.jobs_running.set(len(self.running))
            if time.monotonic() - self._seen > SEEN_EVERY_S:
                self._seen = time.monotonic()
                for job_id in [*self.running, *self.queue]:
                    try:
                        self.registry.mark_job_seen(job_id)
                    except DomainError as e:  # the store is away: the next round says it again
                        log.warning("job %s: could not say it is still owned: %s", job_id, e.message)
                        break

    def _reap(self, job_id: str, rc: int) -> None:
        status = stored_status(self.registry, job_id)
        if status["state"] not in FINAL:  # killed or crashed before it could say so
            status.update(
                state="failed",
                finished=now(),
                error={"code": "worker_died", "message": f"the worker exited with code {rc}; see worker.log"},
            )
            self.registry.put_job_status(job_id, status)
        self.metrics.jobs.labels(status["state"]).inc()
        log.info("job %s %s", job_id, status["state"])

    async def run(self, every: float = 0.5) -> None:
        while True:
            try:
                await asyncio.to_thread(self.pump)
            except Exception:  # noqa: BLE001 - a bad pump is logged; the loop must outlive it
                log.exception("job pump failed")
            await asyncio.sleep(every)

    def stop(self) -> None:
        """Stop the workers and fail the jobs still queued (their clients poll a status that would never change);
        nothing new starts: the final pump only reaps."""
        with self._lock:
            queued, self.queue = self.queue, []
        for job_id in queued:
            try:
                status = stored_status(self.registry, job_id)
                status.update(
                    state="failed",
                    finished=now(),
                    error={"code": "server_stopped", "message": "the server stopped before this job started; resubmit"},
                )
                self.registry.put_job_status(job_id, status)
            except DomainError as e:  # the workers are still stopped below
                log.warning("job %s: could not record that it will not run: %s", job_id, e.message)
        for r in self.running.values():
            r.proc.terminate()
        for r in self.running.values():
            try:
                r.proc.wait(5)
            except subprocess.TimeoutExpired:
                r.proc.kill()
        self.pump()
