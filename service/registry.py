"""The label-set registry every replica shares: admission checks, immutable versions and an atomic pointer.

Two backends behind ``RegistryBase`` (``open_registry`` picks one from a URL): the file backend below, the default,
and S3-compatible object storage for replicas on several machines (``service.registry_s3``). The file backend:

    DATA/registry/NAME/versions/VID/{mapper.safetensors, mapper.json, meta.json}
    DATA/registry/NAME/current.json   {"version": VID, "history": [older VIDs, oldest first]}
    DATA/registry/.staging/           uploads being validated (stale ones are swept)

VID is the first 16 hex digits of the SHA-256 of the artifact's two files, so a version never
changes once written. A writer stages and validates a complete copy, renames it into
``versions/`` and only then replaces ``current.json`` (temp file + ``os.replace``). A writer
killed at any moment therefore leaves ``current.json`` naming a complete version: the new one
or the previous one. Writers on one host serialise on an ``flock``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import random
import re
import shutil
import struct
import tempfile
import time
import uuid
from pathlib import Path

import torch

from models.artifacts import ArtifactError, write_json
from models.latent import ARCH, LatentConfig, LatentMappers, load_mappers
from models.latent_table import REALISM
from service.domain import DomainError, Kind
from service.uploads import ATTR_RE

log = logging.getLogger("lcs.registry")

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # fullmatch: "$" would let a trailing newline in
ALLOWED_ARCHS = {ARCH}
FILES = ("mapper.safetensors", "mapper.json")
LIMITS = {"width": 4096, "depth": 8, "label_embed": 1024, "n_labels": 1024}
# An upload is staged from a body already received, validated and renamed within seconds, touching its files as it
# goes; one untouched for 2 minutes belongs to a writer that died (kill -9). Every replica sweeps periodically.
STALE_STAGING_S = 120


class RegistryError(DomainError):
    """A label set, version or artifact the registry refuses or does not have."""


def _unknown_labelset(name: str, available: list[str]) -> RegistryError:
    return RegistryError(Kind.NOT_FOUND, "unknown_labelset", f"no label set named {name!r}", {"available": available})


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise RegistryError(
            Kind.INVALID,
            "invalid_name",
            "label-set names are 1-64 letters, digits, '_' or '-', starting with a letter or digit",
            {"name": name},
        )
    return name


def _invalid(message: str, **details) -> RegistryError:
    return RegistryError(Kind.INVALID, "invalid_artifact", message, details)


def _data_end(key: str, entry) -> int:
    """Where one tensor's bytes end, from a header entry whose every field has been type-checked (a malformed entry
    is the uploader's error, not a server one)."""
    ok = (
        isinstance(entry, dict)
        and isinstance(entry.get("dtype"), str)
        and isinstance(entry.get("shape"), list)
        and all(type(d) is int and d >= 0 for d in entry["shape"])
        and isinstance(entry.get("data_offsets"), list)
        and len(entry["data_offsets"]) == 2
        and all(type(o) is int and o >= 0 for o in entry["data_offsets"])
        and entry["data_offsets"][0] <= entry["data_offsets"][1]
    )
    if not ok:
        raise _invalid(
            f"mapper.safetensors: header entry {str(key)[:64]!r} is malformed "
            "(needs dtype, a shape of non-negative integers and data_offsets [begin, end])"
        )
    return entry["data_offsets"][1]


def check_safetensors_header(path: Path) -> dict:
    """Read only the header: refuses pickles, zips and truncated files before any tensor is parsed."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise RegistryError(
                Kind.UNSUPPORTED, "not_safetensors", "mapper.safetensors is not a safetensors file (too short)"
            )
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100 << 20):
            raise RegistryError(
                Kind.UNSUPPORTED,
                "not_safetensors",
                "mapper.safetensors is not a safetensors file (pickles and other formats are refused)",
            )
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise RegistryError(
                Kind.UNSUPPORTED, "not_safetensors", "mapper.safetensors has no valid safetensors header"
            ) from None
    if not isinstance(header, dict):
        raise RegistryError(Kind.UNSUPPORTED, "not_safetensors", "mapper.safetensors has no valid safetensors header")
    end = max([_data_end(k, v) for k, v in header.items() if k != "__metadata__"] or [0])
    if 8 + n + end != size:
        raise _invalid(
            f"mapper.safetensors is truncated or padded: header promises {8 + n + end} bytes, file has {size}"
        )
    return header


def _latent_config(raw) -> LatentConfig:
    """mapper.json's config checked field by field, so a bad one is named in the uploader's terms (not as a Python
    TypeError from the dataclass, nor compared as a string with the decoder's latent size)."""
    if not isinstance(raw, dict):
        raise _invalid("mapper.json needs a 'config' object")
    known = {f.name for f in dataclasses.fields(LatentConfig)}
    if set(raw) - known or "latent_dim" not in raw:
        raise _invalid(
            "mapper.json config: unknown field(s) or no latent_dim",
            unknown=sorted(map(str, set(raw) - known)),
            known=sorted(known),
        )
    not_int = [k for k in ("latent_dim", "width", "depth", "label_embed") if k in raw and type(raw[k]) is not int]
    if not_int:
        raise _invalid(f"mapper.json config: {', '.join(not_int)} must be integers", fields=not_int)
    names = raw.get("attr_names", [])
    if not isinstance(names, list) or not all(isinstance(a, str) and ATTR_RE.fullmatch(a) for a in names):
        raise _invalid("mapper.json config: attr_names must be identifiers (letters, digits, '_')")
    return LatentConfig(**raw)


def validate_artifact(  # noqa: C901 - one flat list of admission checks, each raising its own reason
    directory: Path, decoder_fingerprint: str, latent_dim: int
) -> tuple[LatentMappers, dict, dict]:
    """Everything checked before a label set may serve; raises RegistryError with the reason."""
    for f in FILES:
        if not (directory / f).is_file():
            raise _invalid(f"the artifact needs {' and '.join(FILES)}; {f} is missing")
    check_safetensors_header(directory / "mapper.safetensors")
    try:
        manifest = json.loads((directory / "mapper.json").read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _invalid(f"mapper.json is not JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != "labelset":
        raise _invalid("mapper.json is not a label-set manifest (kind must be 'labelset')")
    if manifest.get("arch") not in ALLOWED_ARCHS:
        raise _invalid(f"architecture {manifest.get('arch')!r} is not allowed", allowed=sorted(ALLOWED_ARCHS))
    if manifest.get("decoder_fingerprint") != decoder_fingerprint:
        raise RegistryError(
            Kind.INVALID,
            "decoder_mismatch",
            "this mapper was trained for another decoder; its latents would mean something else",
            {"artifact": str(manifest.get("decoder_fingerprint")), "server": decoder_fingerprint},
        )
    cfg = _latent_config(manifest.get("config"))
    if "rule" in manifest and not (isinstance(manifest["rule"], str) and ATTR_RE.fullmatch(manifest["rule"])):
        raise _invalid("mapper.json: rule must be the name of the rule that labelled the table")
    names = cfg.attr_names
    if cfg.latent_dim != latent_dim:
        raise _invalid(f"latent size {cfg.latent_dim} does not match the decoder's {latent_dim}")
    too_big = {
        k: v
        for k, v in (
            ("width", cfg.width),
            ("depth", cfg.depth),
            ("label_embed", cfg.label_embed),
            ("n_labels", cfg.n_labels),
        )
        if not isinstance(v, int) or not 0 <= v <= LIMITS[k]
    }
    if (
        too_big
        or cfg.kind not in ("binary", "categorical")
        or cfg.critic not in ("concat", "projection")
        or cfg.method not in ("lc", "classifier")
        or (cfg.method == "classifier" and not cfg.n_labels)
        or len(set(names)) != len(names)
    ):
        raise _invalid(
            "config out of bounds (sizes, kind binary|categorical, critic concat|projection, method lc|classifier "
            "with attributes, unique attribute names)",
            bad=too_big,
            limits=LIMITS,
        )
    try:
        m, manifest, extra = load_mappers(directory, decoder_fingerprint)
    except ArtifactError as e:
        raise _invalid(str(e).replace(str(directory), "artifact")) from None
    table, sigma_bar = extra.get("label_table"), extra.get("sigma_bar")
    if (
        sigma_bar is None
        or tuple(sigma_bar.shape) != (latent_dim,)
        or not bool(torch.isfinite(sigma_bar).all() and (sigma_bar > 0).all())
    ):
        raise _invalid(f"sigma_bar must be {latent_dim} positive finite values")
    if cfg.n_labels and (
        table is None
        or table.ndim != 2
        or table.shape[1] != cfg.n_labels
        or len(table) == 0
        or not bool(((table == 0) | (table == 1)).all())
    ):
        raise _invalid(f"label_table must be N x {cfg.n_labels} of 0/1 with N > 0")
    with torch.no_grad():  # dry forward on a few rows the label set can be asked for
        z = torch.randn(4, latent_dim, generator=torch.Generator().manual_seed(0))
        y = table[torch.arange(4) % len(table)].float() if cfg.n_labels else None
        outs = [net(z, y) for net in (m.actor, m.critic) if net is not None] + ([m.attr(z)] if m.attr else [])
    if not all(bool(torch.isfinite(o).all()) for o in outs):
        raise _invalid("a dry forward gave non-finite outputs")
    return m, manifest, extra


def content_id(directory: Path) -> str:
    h = hashlib.sha256()
    for f in FILES:
        with open(directory / f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _last_touched(path: Path) -> float:
    """The newest mtime of a staging entry and what it holds (0 when it vanished meanwhile: sweep it)."""
    try:
        inside = [p.stat().st_mtime for p in path.iterdir()] if path.is_dir() else []
        return max([path.stat().st_mtime, *inside])
    except FileNotFoundError:
        return 0.0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


RACE_RETRIES = 20  # a pointer update re-read and retried this often when another writer got there first


class RegistryBase:
    """What every backend shares: admission checks, the pointer's version/history rules and change notices.

    A backend supplies the storage primitives (``serving``, ``current``, ``_read_pointer``, ``_write_pointer``,
    ``_store_version``, ``_drop_version``, ``version_dir``, ``_version_json``, ``stage``, ``delete``, ``sweep``, the
    seed marker and job status) and ``_writing()``, how writers serialise: the file backend holds a host-wide flock;
    the S3 backend holds nothing and relies on conditional pointer writes, retrying a write another publisher beat.
    """

    url = ""
    spec: dict = {}  # the open_registry arguments that name this registry again (for job workers), set by it
    notifier = None  # set by open_registry: told the label set's name after each pointer change
    stale_s = STALE_STAGING_S

    def check(self) -> None:
        """Raise RegistryError (unavailable) when the backing store cannot be used right now."""

    # ---- reading -------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self.serving())

    def serving(self) -> dict[str, str]:
        """Every label set's current version, in as few store requests as the backend can manage (polled)."""
        raise NotImplementedError

    def current(self, name: str) -> dict | None:
        raise NotImplementedError

    def describe(self, name: str) -> dict:
        cur = self.current(check_name(name))
        if cur is None:
            raise _unknown_labelset(name, self.names())
        versions = []
        for vid in cur["history"] + [cur["version"]]:
            man, meta = self._version_json(name, vid, "mapper.json"), self._version_json(name, vid, "meta.json")
            if man is None or meta is None:
                continue
            versions.append(
                {
                    "version": vid,
                    "current": vid == cur["version"],
                    **meta,
                    "labels": man["config"]["attr_names"],
                    "kind": man["config"]["kind"],
                    "method": man["config"].get("method", "lc"),
                    **({"rule": man["rule"]} if man.get("rule") else {}),
                    "metrics": man.get("metrics", {}),
                    "command": man.get("command"),
                }
            )
        return {"name": name, "current": cur["version"], "versions": versions}

    # ---- writing -------------------------------------------------------------------------
    def publish(self, name: str, staged: Path, decoder_fingerprint: str, latent_dim: int, source: str) -> str:
        """Validate a staged artifact dir, store it as an immutable version, point ``current`` at it.

        The staged dir is consumed (moved or removed) whatever happens."""
        check_name(name)
        try:
            m, manifest, _ = validate_artifact(staged, decoder_fingerprint, latent_dim)
            if name == REALISM and (m.actor is None or m.cfg.n_labels):
                raise _invalid(
                    f"'{REALISM}' is reserved for the unconditional realism mapper (no attributes, method lc): the "
                    "energy sampler moves its input and asks its critic"
                )
            vid = content_id(staged)
            for f in FILES:
                with open(staged / f, "rb") as fh:
                    os.fsync(fh.fileno())
            write_json(
                staged / "meta.json",
                {
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "source": source,
                    "bytes": sum((staged / f).stat().st_size for f in FILES),
                    "trained_as": manifest.get("name"),
                },
            )

            def point(cur: dict | None) -> dict:
                return {"version": vid, "history": [] if cur is None else _without(cur, vid)}

            with self._writing():
                self._store_version(name, vid, staged)  # objects first ...
                self._update(name, point)  # ... pointer last
            self._after_publish(name, vid, staged)
            self._notify(name)
            log.info("published label set %s version %s (%s)", name, vid, source)
            return vid
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def _update(self, name: str, change) -> dict:
        """Read the pointer, apply ``change`` (which may refuse), write it back; retried when another writer's
        conditional write landed in between, so neither update is lost. Callers hold ``_writing()`` and send the
        change notice once they release it.

        Each update carries its own ``op`` id: when a write whose answer was lost (and retried by the S3 client) is
        refused because it already landed, the re-read pointer carries this op and the update is done; applying
        the change again would roll back twice or report a done delete as unknown."""
        op = uuid.uuid4().hex
        for _ in range(RACE_RETRIES):
            stored, token = self._read_pointer(name)
            if stored is not None and stored.get("op") == op:
                return stored
            cur = stored if stored is not None and stored.get("version") else None
            new = {**change(cur), "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "op": op}
            if self._write_pointer(name, new, token):
                return new
            time.sleep(0.01 + 0.04 * random.random())
        raise RegistryError(
            Kind.BUSY, "registry_contended", f"label set {name!r} kept changing under this write; try again"
        )

    def _notify(self, name: str) -> None:
        if self.notifier is not None:
            self.notifier.publish(name)

    def rollback(self, name: str, version: str | None = None) -> str:
        check_name(name)

        def back(cur: dict | None) -> dict:
            if cur is None:
                raise _unknown_labelset(name, self.names())
            history, target = list(cur["history"]), version
            if target is None:
                if not history:
                    raise RegistryError(
                        Kind.CONFLICT,
                        "no_previous_version",
                        f"label set {name!r} has no earlier version to roll back to",
                    )
                target = history[-1]
            if target not in history:
                raise RegistryError(
                    Kind.NOT_FOUND,
                    "unknown_version",
                    f"label set {name!r} has no earlier version {target!r}",
                    {"versions": history},
                )
            history.remove(target)
            return {"version": target, "history": history + [cur["version"]]}

        with self._writing():
            vid = self._update(name, back)["version"]
        self._notify(name)
        log.info("label set %s rolled back to %s", name, vid)
        return vid

    def delete_version(self, name: str, version: str) -> None:
        check_name(name)

        def drop(cur: dict | None) -> dict:
            if cur is None:
                raise _unknown_labelset(name, self.names())
            if version == cur["version"]:
                raise RegistryError(
                    Kind.CONFLICT,
                    "version_is_current",
                    f"{version} is the serving version of {name!r}; roll back or delete the label set",
                )
            if version not in cur["history"]:
                raise RegistryError(Kind.NOT_FOUND, "unknown_version", f"label set {name!r} has no version {version!r}")
            return {"version": cur["version"], "history": [v for v in cur["history"] if v != version]}

        with self._writing():
            self._update(name, drop)
            self._drop_version(name, version)
        self._notify(name)

    def _after_publish(self, name: str, vid: str, staged: Path) -> None:
        """A backend's check once the pointer names the new version (the staged files still exist)."""

    def seed_from(self, bundle: Path, decoder_fingerprint: str, latent_dim: int) -> list[str]:
        """Import the bundle's shipped label sets once, into a registry that has never been seeded."""
        if self._seeded():
            return []
        added = []
        for d in sorted((bundle / "labelsets").glob("*")):
            if (d / "mapper.json").is_file() and NAME_RE.fullmatch(d.name) and self.current(d.name) is None:
                staged = self.stage()
                for f in FILES:
                    shutil.copyfile(d / f, staged / f)
                self.publish(d.name, staged, decoder_fingerprint, latent_dim, source=f"bundle:{bundle.name}")
                added.append(d.name)
        self._mark_seeded({"bundle": str(bundle), "labelsets": added})
        return added


def _without(cur: dict, vid: str) -> list[str]:
    """The history after ``vid`` becomes current: everything that served before, minus ``vid`` itself."""
    return [v for v in cur["history"] + [cur["version"]] if v != vid]


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
                raise _unknown_labelset(name, self.names())
            trash = self.staging / f"deleted-{uuid.uuid4().hex}"
            os.rename(self.root / name, trash)  # one atomic step: readers see the whole set or nothing
        shutil.rmtree(trash, ignore_errors=True)
        self._notify(name)
        log.info("deleted label set %s", name)

    def sweep(self) -> int:
        """Remove staging left by writers that died (untouched for stale_s; live writers touch it sooner)."""
        now, n = time.time(), 0
        for p in self.staging.iterdir():
            if p.name.startswith("deleted-") or now - _last_touched(p) > self.stale_s:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                n += 1
        for p in self.root.glob("*/.current.json.*.tmp"):  # a pointer write cut short
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


def open_registry(url: str, data_dir: str | Path, endpoint: str = "", notify: str = "") -> RegistryBase:
    """The registry a URL names: '' (DATA/registry), ``file://DIR`` or ``s3://BUCKET/PREFIX``; with ``notify``
    (``redis://HOST:PORT/DB``) every write publishes a change notice that replicas subscribe to."""
    if not url:
        reg: RegistryBase = Registry(data_dir)
    elif url.startswith("file://"):
        reg = Registry(data_dir, root=url.removeprefix("file://"))
    elif url.startswith("s3://"):
        from service.registry_s3 import S3Registry

        reg = S3Registry(url, data_dir, endpoint)
    else:
        raise ValueError(f"registry URL {url!r}: use file://DIR or s3://BUCKET/PREFIX")
    if notify:
        from service.notify import RedisNotices

        reg.notifier = RedisNotices(notify, reg.url)
    reg.spec = {"registry": url, "registry_endpoint": endpoint, "notify": notify}
    return reg
