"""A training job's worker process (``python -m service.job_worker``, started by ``service.jobs.JobManager``).

It builds a latent table (dataset example ids -> the bundle's encodings; a zip of images -> the frozen encoder; or a
rule on decoded prior samples), runs ``train_labelset``, and publishes through the registry's usual validation. It
never writes the decoder: it only reads the bundle. It records the job's state and progress in the registry's backend,
where every replica reads it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import torch

from service.domain import DomainError, Kind
from service.jobs import JobError, now, stored_status

log = logging.getLogger("lcs.jobs")
STATUS_RETRY_S = 60.0  # how long a worker retries recording a state change while the registry's store is away


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
