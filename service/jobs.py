"""Training jobs: a new label set learned on the server's frozen model, in a separate process.

The server checks the upload, writes it to DATA/jobs/ID/ and starts ``python -m service.jobs``
on it, so serving never stalls on training. The worker builds a latent table (dataset example
ids -> the bundle's encodings; a zip of images -> the frozen encoder; or a rule on decoded prior
samples), runs ``train_labelset``, and publishes through the registry's usual validation. It
never writes the decoder: it only reads the bundle. The job's status lives in the registry's backend
(DATA/jobs/ID/status.json for the file registry, an object for S3), so every replica sharing the registry answers
``GET /jobs/ID``; the inputs and the worker's log stay on the replica that runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

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
STATUS_RETRY_S = 60.0  # how long a worker retries recording a state change while the registry's store is away
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
                cmd = [sys.executable, "-m", "service.jobs", str(d), "--bundle", str(self.bundle)]
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


# ---- worker process ------------------------------------------------------------------------


class _Status:
    """The worker's status writes. Progress is best effort (a store outage must not fail the training); a state
    change is retried for up to STATUS_RETRY_S, so a job that published is not reported failed for a short outage."""

    def __init__(self, registry, job_id: str):
        self.registry, self.job_id, self.s, self.last = registry, job_id, stored_status(registry, job_id), 0.0

    def update(self, force: bool = True, **kw) -> None:
        self.s.update(kw)
        if not force and time.monotonic() - self.last <= 0.5:
            return
        deadline = time.monotonic() + (STATUS_RETRY_S if force else 0.0)
        while True:
            try:
                self.registry.put_job_status(self.job_id, self.s)
                self.registry.mark_job_seen(self.job_id)  # a live worker keeps its job owned, whatever its server does
                self.last = time.monotonic()
                return
            except DomainError as e:
                if time.monotonic() >= deadline:
                    if force:
                        raise
                    log.warning("progress not recorded: %s", e.message)
                    return
                time.sleep(1.0)


def build_table(d: Path, job: dict, bundle: Path, device: torch.device) -> tuple[Path, str]:
    """The job's latent table in d/table; returns (table dir, label-set name inside it)."""
    from conditioning import backbone
    from models.artifacts import load_artifact, load_manifest
    from models.latent_table import write_latent_table
    from models.vae import load_vae
    from service.uploads import open_zip, parse_labels_csv, zip_images
    from training.encode import build_rule_table

    out = d / "table"
    if job["source"] == "rule":
        build_rule_table(
            bundle, job["rule"], out=out, n=job["train"]["rule_samples"], device=str(device), command=["job", job["id"]]
        )
        return out, job["rule"]
    vae, vman = load_vae(bundle, device)
    key = "file" if job["source"] == "images" else "id"
    keys, names, labels = parse_labels_csv((d / "labels.csv").read_bytes(), key)
    if job["source"] == "images":
        zf = open_zip(d / "images.zip", keys)
        images = zip_images(zf, keys, vae.cfg.channels, vae.cfg.image_size)
        mu, sigma = backbone.encode(vae, images, device, progress="encode uploaded images")
    elif (bundle / "latents.safetensors").is_file():
        tensors, lman = load_artifact(bundle, "latents")
        rows = _rows_for(keys, lman.get("ids"), len(tensors["mu"]))
        mu, sigma = tensors["mu"][rows].float(), tensors["sigma"][rows].float()
    else:
        from training.data import load_dataset

        data = load_dataset(vman["dataset"]["name"], **vman["dataset"]["params"])
        rows = _rows_for(keys, data.ids, len(data))
        mu, sigma = backbone.encode(vae, data.images[rows], device, progress="encode dataset examples")
    # a tenth of the rows validate, drawn (seeded) rather than every 10th: an upload whose rows repeat with period 10
    # would otherwise validate on one value of an attribute
    split = (np.random.default_rng(0).permutation(len(keys)) % 10 == 9).astype(np.uint8)
    kind = job.get("kind", "binary")
    if kind == "categorical" and not (labels.sum(1) == 1).all():
        raise JobError(Kind.INVALID, "invalid_labels", "a categorical label set needs exactly one 1 per row")
    write_latent_table(
        out,
        mu,
        sigma,
        labels,
        split,
        attr_names=names,
        label_sets={"job": {"name": "job", "attrs": names, "kind": kind}},
        decoder_fingerprint=load_manifest(bundle, "vae")["decoder_fingerprint"],
        dataset={"name": f"job:{job['source']}", "params": {"rows": len(keys)}},
        command=["job", job["id"]],
    )
    return out, "job"


def _rows_for(keys: list[str], ids: list[str] | None, n: int) -> np.ndarray:
    """Dataset example ids are the dataset's file names where it has them, else row numbers 0..N-1."""
    lookup = {k: i for i, k in enumerate(ids)} if ids else {str(i): i for i in range(n)}
    missing = [k for k in keys if k not in lookup]
    if missing:
        raise JobError(
            Kind.INVALID,
            "unknown_ids",
            f"{len(missing)} id(s) are not examples of the bundle's dataset",
            {"missing": missing[:20]},
        )
    return np.array([lookup[k] for k in keys])


def work(d: Path, bundle: Path, registry, threads: int) -> None:
    import json

    from conditioning.runtime import resolve_device
    from models.artifacts import load_manifest
    from training.train_labelset import TrainLabelSetConfig, train_labelset

    job = json.loads((d / "job.json").read_text())
    status = _Status(registry, job["id"])
    status.update(state="running", started=now(), host=socket.gethostname(), pid=os.getpid())
    try:
        device = resolve_device("cpu", threads)  # the GPU (if any) stays with the server
        table, label_set = build_table(d, job, bundle, device)
        settings = {k: v for k, v in job["train"].items() if k != "rule_samples"}
        cfg = TrainLabelSetConfig(
            bundle=str(bundle),
            table=str(table),
            label_set=label_set,
            out=str(d / "out"),
            threads=threads,
            diag_every=max(settings["steps"] // 5, 1),
            **settings,
        )
        train_labelset(
            cfg,
            ["POST", f"/labelsets/{job['name']}/jobs", job["id"]],
            progress=lambda step, steps: status.update(False, progress={"step": step, "steps": steps}),
        )
        staged = registry.stage()
        for f in ("mapper.safetensors", "mapper.json"):
            shutil.copyfile(d / "out" / f, staged / f)
        vman = load_manifest(bundle, "vae")
        vid = registry.publish(
            job["name"], staged, vman["decoder_fingerprint"], vman["config"]["latent_dim"], source=f"job:{job['id']}"
        )
        total = cfg.classifier_steps if cfg.method == "classifier" else cfg.steps
        status.update(
            state="succeeded",
            finished=now(),
            progress={"step": total, "steps": total},
            result={"labelset": job["name"], "version": vid},
        )
    except DomainError as e:  # registry, upload and job errors: their code and message are the job's error
        status.update(state="failed", finished=now(), error=e.to_dict())
    except Exception as e:  # noqa: BLE001 - the job reports it; the traceback goes to worker.log
        log.exception("job %s failed", job["id"])
        status.update(
            state="failed", finished=now(), error={"code": "job_failed", "message": f"{type(e).__name__}: {e}"}
        )


def main(argv: list[str] | None = None) -> None:
    from conditioning.runtime import setup_logging

    p = argparse.ArgumentParser(description="Run one label-set training job (started by the server)")
    p.add_argument("job_dir")
    p.add_argument("--bundle", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--threads", type=int, default=1)
    # the server passes its registry settings in the environment (a Redis URL may hold a password)
    p.add_argument("--registry", default=os.environ.get("LCS_REGISTRY", ""), help="'' = DATA_DIR/registry")
    p.add_argument("--registry-endpoint", default=os.environ.get("LCS_REGISTRY_ENDPOINT", ""))
    p.add_argument("--notify", default=os.environ.get("LCS_NOTIFY", ""))
    a = p.parse_args(argv)
    setup_logging()
    from service.registry import open_registry

    registry = open_registry(a.registry, a.data_dir, a.registry_endpoint, a.notify)
    work(Path(a.job_dir), Path(a.bundle), registry, a.threads)


if __name__ == "__main__":
    main()
