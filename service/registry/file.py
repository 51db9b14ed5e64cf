"""The file backend (the default): DATA/registry, shared by replicas on one host or one POSIX filesystem.

    DATA/registry/NAME/versions/VID/{mapper.safetensors, mapper.json, meta.json}
    DATA/registry/NAME/current.json   {"version": VID, "history": [older VIDs, oldest first]}
    DATA/registry/.staging/           uploads being validated (stale ones are swept)

VID is the first 16 hex digits of the SHA-256 of the artifact's two files (``content_id``), so a version never
changes once written. A writer stages and validates a complete copy, renames it into ``versions/`` and only then
replaces ``current.json`` (temp file + ``os.replace``). A writer killed at any moment therefore leaves
``current.json`` naming a complete version: the new one or the previous one. Writers on one host serialise on an
``flock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from models.artifacts import write_json
from service.registry.admission import NAME_RE, check_name
from service.registry.base import RegistryBase, last_touched, unknown_labelset

log = logging.getLogger("lcs.registry")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Registry(RegistryBase):
    """The file backend (the default): DATA/registry, shared by replicas on one host or one POSIX filesystem."""

    def __init__(self, data_dir: str | Path, root: str | Path | None = None):
        self.data_dir = Path(data_dir)
        self.root = Path(root) if root is not None else self.data_dir / "registry"
        self.url = f"file://{self.root.resolve()}"
        self.staging = self.root / ".staging"
        self.staging.mkdir(parents=True, exist_ok=True)

    # ---- reading -------------------------------------------------------------------------
    def serving(self) -> dict[str, str]:
        out = {}
        for p in self.root.glob("*/current.json"):
            if NAME_RE.fullmatch(p.parent.name) and (cur := self.current(p.parent.name)) is not None:
                out[p.parent.name] = cur["version"]
        return out

    def current(self, name: str) -> dict | None:
        try:
            cur = json.loads((self.root / name / "current.json").read_text())
        except (FileNotFoundError, NotADirectoryError):
            return None
        return cur if (self.root / name / "versions" / cur["version"]).is_dir() else None

    def _read_pointer(self, name: str) -> tuple[dict | None, None]:
        return self.current(name), None

    def version_dir(self, name: str, version: str) -> Path:
        return self.root / name / "versions" / version

    def _version_json(self, name: str, vid: str, fname: str) -> dict | None:
        try:
            return json.loads((self.version_dir(name, vid) / fname).read_text())
        except FileNotFoundError:
            return None

    # ---- writing -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _writing(self):
        with open(self.root / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def stage(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.staging, prefix="upload-"))

    def _store_version(self, name: str, vid: str, staged: Path) -> None:
        dest = self.version_dir(name, vid)
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staged, dest)
            _fsync_dir(dest.parent)

    def _write_pointer(self, name: str, doc: dict, token: None) -> bool:
        write_json(self.root / name / "current.json", doc)  # temp file + os.replace, under the flock
        return True

    def _drop_version(self, name: str, version: str) -> None:
        trash = self.staging / f"deleted-{uuid.uuid4().hex}"
        os.rename(self.version_dir(name, version), trash)
        shutil.rmtree(trash, ignore_errors=True)

    def delete(self, name: str) -> None:
        with self._writing():
            if self.current(check_name(name)) is None:
                raise unknown_labelset(name, self.names())
            trash = self.staging / f"deleted-{uuid.uuid4().hex}"
            os.rename(self.root / name, trash)  # one atomic step: readers see the whole set or nothing
        shutil.rmtree(trash, ignore_errors=True)
        self._notify(name)
        log.info("deleted label set %s", name)

    def sweep(self) -> int:
        """Remove staging left by writers that died (untouched for stale_s; live writers touch it sooner)."""
        now, n = time.time(), 0
        for p in self.staging.iterdir():
            if p.name.startswith("deleted-") or now - last_touched(p) > self.stale_s:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                n += 1
        # a pointer write cut short. Pointers are written under the writers' flock, so while the sweep holds it a
        # temp file is a dead writer's: without it, a replica starting beside one that was seeding deleted that
        # replica's temp before its rename, and that replica's start-up failed (seen in CI's two-replica check)
        with self._writing():
            for p in self.root.glob("*/.current.json.*.tmp"):
                p.unlink(missing_ok=True)
                n += 1
        return n

    def _seeded(self) -> bool:
        return (self.root / ".seeded").exists()

    def _mark_seeded(self, doc: dict) -> None:
        write_json(self.root / ".seeded", doc)

    # ---- training jobs' status (DATA/jobs/ID/status.json: replicas that share DATA share jobs) -----------------
    def job_status(self, job_id: str) -> dict | None:
        try:
            return json.loads((self.data_dir / "jobs" / job_id / "status.json").read_text())
        except FileNotFoundError:
            return None

    def put_job_status(self, job_id: str, doc: dict) -> None:
        write_json(self.data_dir / "jobs" / job_id / "status.json", doc)

    def job_seen(self, job_id: str) -> float | None:
        try:
            return float(json.loads((self.data_dir / "jobs" / job_id / "alive.json").read_text())["at"])
        except (FileNotFoundError, ValueError, KeyError):
            return None

    def mark_job_seen(self, job_id: str) -> None:
        write_json(self.data_dir / "jobs" / job_id / "alive.json", {"at": time.time()})
