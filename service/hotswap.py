"""Keeps the label sets in memory in step with the registry (this server's and other replicas' writes).

``sync()`` reads every label set's current version, loads versions it does not hold and drops the ones no longer
current. A store that cannot be reached raises (the caller reports it and keeps what is loaded); a version whose
objects are missing or not yet readable is retried on the next pass.

A request takes a reference to a ``LabelSetVersion`` when it starts and finishes on it even if a
newer version is swapped in meanwhile; a dropped version is freed once its last request ends
(``live_versions`` counts the ones still alive, for /metrics and the memory test).
"""

from __future__ import annotations

import logging
import weakref

from conditioning.labelset import LabelSetVersion
from models.artifacts import ArtifactError
from service.registry import RegistryBase, RegistryError

log = logging.getLogger("lcs.hotswap")


class LiveLabelSets:
    def __init__(self, registry: RegistryBase, decoder_fingerprint: str):
        self.registry, self.decoder_fingerprint = registry, decoder_fingerprint
        self.sets: dict[str, LabelSetVersion] = {}
        self._alive: weakref.WeakSet[LabelSetVersion] = weakref.WeakSet()
        self.failed: dict[str, str] = {}  # name -> why its current version can never be loaded ("VID: reason")
        self._waiting: set[tuple[str, str]] = set()  # (name, version) not fetchable yet, already logged

    @property
    def live_versions(self) -> int:
        return len(self._alive)

    def get(self, name: str) -> LabelSetVersion | None:
        return self.sets.get(name)

    def sync(self) -> list[str]:
        """One pass over the registry; returns what changed (for the log). Raises RegistryError when the store could
        not be listed (nothing changes) or a version could not be fetched from it (the other label sets still
        change), so the caller reports the store as degraded."""
        changes, unavailable = [], None
        wanted = self.registry.serving()
        # a version refused for good stays refused only while it is the one wanted (a name deleted and published
        # again with the same bytes is tried again)
        self.failed = {k: v for k, v in self.failed.items() if k in wanted and v.startswith(wanted[k])}
        sets = dict(self.sets)
        for name in list(sets):
            if name not in wanted:
                del sets[name]
                changes.append(f"-{name}")
        for name, vid in wanted.items():
            if name in sets and sets[name].version == vid or self.failed.get(name, "").startswith(vid):
                continue
            try:
                sets[name] = self._load(name, vid)
                self._waiting.discard((name, vid))
                changes.append(f"{name}@{vid}")
            except (RegistryError, OSError) as e:  # not fetchable right now (store, cache disk): the next pass retries
                if isinstance(e, RegistryError) and e.code == "registry_unavailable":
                    unavailable = unavailable or e
                if (name, vid) not in self._waiting:
                    self._waiting.add((name, vid))
                    log.warning("label set %s version %s not loadable yet, retrying: %s", name, vid, e)
            except (ArtifactError, KeyError, ValueError) as e:
                # The registry validated it on publish: its stored bytes are damaged. Keep serving the old one.
                self.failed[name] = f"{vid}: {e}"
                log.error("label set %s version %s could not be loaded: %s", name, vid, e)
        self.sets = sets  # one assignment: readers see the old dict or the new one
        if changes:
            log.info("registry sync: %s", ", ".join(changes))
        if unavailable is not None:
            raise unavailable
        return changes

    def _load(self, name: str, vid: str) -> LabelSetVersion:
        d = self.registry.version_dir(name, vid)
        ls = LabelSetVersion.load(d, self.decoder_fingerprint, name, vid)
        self._alive.add(ls)
        return ls
