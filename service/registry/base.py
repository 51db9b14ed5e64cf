"""What every registry backend shares: publishing through the admission checks, the pointer's version/history rules
(publish, roll back, delete a version, seed from the bundle) and change notices."""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
import uuid
from pathlib import Path

from models.artifacts import write_json
from models.latent_table import REALISM
from service.domain import Kind
from service.registry.admission import (
    FILES,
    NAME_RE,
    RegistryError,
    check_name,
    content_id,
    invalid_artifact,
    validate_artifact,
)

log = logging.getLogger("lcs.registry")

# An upload is staged from a body already received, validated and renamed within seconds, touching its files as it
# goes; one untouched for 2 minutes belongs to a writer that died (kill -9). Every replica sweeps periodically.
STALE_STAGING_S = 120

RACE_RETRIES = 20  # a pointer update re-read and retried this often when another writer got there first


def unknown_labelset(name: str, available: list[str]) -> RegistryError:
    return RegistryError(Kind.NOT_FOUND, "unknown_labelset", f"no label set named {name!r}", {"available": available})


def last_touched(path: Path) -> float:
    """The newest mtime of a staging entry and what it holds (0 when it vanished meanwhile: sweep it)."""
    try:
        inside = [p.stat().st_mtime for p in path.iterdir()] if path.is_dir() else []
        return max([path.stat().st_mtime, *inside])
    except FileNotFoundError:
        return 0.0


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
            raise unknown_labelset(name, self.names())
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
                raise invalid_artifact(
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
                raise unknown_labelset(name, self.names())
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
                raise unknown_labelset(name, self.names())
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
