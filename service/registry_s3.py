"""The registry on S3-compatible object storage (AWS S3, MinIO, Ceph RGW, SeaweedFS), for replicas on several machines.

    PREFIX/labelsets/NAME.json              pointer {"version", "history", "updated"}; {"version": null} once deleted
    PREFIX/versions/NAME/VID/{mapper.safetensors, mapper.json, meta.json}   immutable, VID = content id
    PREFIX/jobs/ID.json                     a training job's status
    PREFIX/seeded.json                      written once the bundle's label sets were imported

The file backend's guarantees, kept with what object stores offer:
- **Objects first, pointer last.** A version's three objects are uploaded before the pointer names it; a publisher
  killed midway leaves the old pointer, so the old version keeps serving.
- **No torn version.** A replica downloads a version into its local cache and checks its content id before loading it.
- **No lost update.** Pointer writes are conditional (``If-Match`` on the ETag read, ``If-None-Match: *`` for a new
  name); a writer that lost the race re-reads and re-applies its change (``RegistryBase._update``).
- **Orphans are swept.** Objects no pointer names (a killed publisher's upload, deleted versions and label sets) are
  removed by any replica's sweep once untouched for ``stale_s``. Deletes only move pointers, so a publisher uploading
  the same content at the same moment cannot have its objects removed under it.

Polling is cheap: one LIST of ``labelsets/`` returns every pointer's ETag; only pointers whose ETag changed are read.
Store errors (unreachable, 5xx, missing credentials) become ``RegistryError(unavailable)``: routes answer 503, the
server keeps serving what it loaded and says so on /readyz.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from service.domain import Kind
from service.registry import (
    FILES,
    NAME_RE,
    RegistryBase,
    RegistryError,
    _last_touched,
    _unknown_labelset,
    check_name,
    content_id,
)

log = logging.getLogger("lcs.registry")
TOMBSTONE = {"version": None, "history": []}


class S3Registry(RegistryBase):
    def __init__(self, url: str, data_dir: str | Path, endpoint: str = ""):
        import boto3
        from botocore.config import Config

        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"registry URL {url!r}: use s3://BUCKET/PREFIX")
        self.url, self.bucket, self.endpoint = url, parsed.netloc, endpoint or "AWS S3"
        self.prefix = parsed.path.strip("/") + "/" if parsed.path.strip("/") else ""
        self.data_dir = Path(data_dir)
        self.cache = self.data_dir / "registry-cache"  # downloaded versions, checked against their content id
        self.staging = self.data_dir / "registry-staging"
        self.staging.mkdir(parents=True, exist_ok=True)
        # short timeouts and one retry: a store outage must show within seconds (routes answer 503, /readyz says so)
        config = Config(
            connect_timeout=2,
            read_timeout=10,
            retries={"max_attempts": 2, "mode": "standard"},
            s3={"addressing_style": "path" if endpoint else "auto"},
        )
        self.s3 = boto3.client("s3", endpoint_url=endpoint or None, config=config)
        self._pointers: dict[str, tuple[str, dict]] = {}  # name -> (ETag, pointer) last read, for polling

    # ---- store access ----------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def _unavailable(self, e: Exception) -> RegistryError:
        return RegistryError(
            Kind.UNAVAILABLE,
            "registry_unavailable",
            f"the registry's object store ({self.endpoint}, bucket {self.bucket}) cannot be used: "
            f"{type(e).__name__}: {e}",
        )

    def _call(self, op: str, **kw):
        """One S3 request; None for a missing key, False for a failed precondition, RegistryError when unreachable."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.s3, op)(Bucket=self.bucket, **kw)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("NoSuchKey", "404", "NotFound"):
                return None
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                return False
            raise self._unavailable(e) from None
        except BotoCoreError as e:  # connection refused or reset, timeouts, no credentials
            raise self._unavailable(e) from None

    def _get(self, key: str) -> tuple[bytes | None, str | None]:
        r = self._call("get_object", Key=key)
        return (None, None) if r is None else (r["Body"].read(), r["ETag"])

    def _list(self, prefix: str) -> list[dict]:
        out, token = [], None
        while True:
            r = self._call("list_objects_v2", Prefix=prefix, **({"ContinuationToken": token} if token else {}))
            out += (r or {}).get("Contents", [])
            if not (r or {}).get("IsTruncated"):
                return out
            token = r["NextContinuationToken"]

    def check(self) -> None:
        """Reach the bucket; create it when missing (a fresh SeaweedFS or MinIO): replicas start on an empty store."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            if str(e.response.get("Error", {}).get("Code")) not in ("404", "NoSuchBucket", "NotFound"):
                raise self._unavailable(e) from None
            try:
                self.s3.create_bucket(Bucket=self.bucket)
                log.info("created bucket %s at %s", self.bucket, self.endpoint)
            except ClientError as e2:
                if e2.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise self._unavailable(e2) from None
        except BotoCoreError as e:
            raise self._unavailable(e) from None

    # ---- reading -------------------------------------------------------------------------
    def _all_pointers(self) -> dict[str, dict]:
        """Every pointer, tombstones included: one LIST, then a GET only for pointers whose ETag changed."""
        seen = {}
        for o in self._list(self._key("labelsets/")):
            name = o["Key"][len(self._key("labelsets/")) :].removesuffix(".json")
            if not (o["Key"].endswith(".json") and NAME_RE.fullmatch(name)):
                continue
            cached = self._pointers.get(name)
            if cached is None or cached[0] != o["ETag"]:
                body, etag = self._get(o["Key"])
                if body is None:  # deleted between the LIST and the GET
                    continue
                cached = (etag, json.loads(body))
            seen[name] = cached
        self._pointers = seen
        return {name: doc for name, (_, doc) in seen.items()}

    def serving(self) -> dict[str, str]:
        return {name: doc["version"] for name, doc in self._all_pointers().items() if doc.get("version")}

    def _read_pointer(self, name: str) -> tuple[dict | None, str | None]:
        body, etag = self._get(self._key("labelsets", f"{name}.json"))
        doc = json.loads(body) if body is not None else None
        return (doc if doc and doc.get("version") else None), etag

    def current(self, name: str) -> dict | None:
        return self._read_pointer(name)[0]

    def _version_json(self, name: str, vid: str, fname: str) -> dict | None:
        body, _ = self._get(self._key("versions", name, vid, fname))
        return None if body is None else json.loads(body)

    def version_dir(self, name: str, version: str) -> Path:
        """The version's files in the local cache, downloaded and checked against the content id the first time."""
        d = self.cache / name / version
        if d.is_dir():
            return d
        self.cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.cache, prefix=".download-"))
        try:
            for f in (*FILES, "meta.json"):
                body, _ = self._get(self._key("versions", name, version, f))
                if body is None:
                    raise RegistryError(
                        Kind.NOT_FOUND, "unknown_version", f"label set {name!r} has no stored version {version!r}"
                    )
                (tmp / f).write_bytes(body)
            if content_id(tmp) != version:
                raise RegistryError(
                    Kind.UNAVAILABLE, "torn_version", f"{name}@{version}: the stored bytes do not match their id"
                )
            d.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):  # another thread downloaded it meanwhile: the same bytes
                tmp.rename(d)
            return d
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # ---- writing -------------------------------------------------------------------------
    def _writing(self):
        return contextlib.nullcontext()  # conditional pointer writes serialise writers, on any host

    def stage(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.staging, prefix="upload-"))

    def _store_version(self, name: str, vid: str, staged: Path) -> None:
        for f in (*FILES, "meta.json"):  # meta.json last: a version listed with its meta is whole
            self._call("put_object", Key=self._key("versions", name, vid, f), Body=(staged / f).read_bytes())

    def _write_pointer(self, name: str, doc: dict, token: str | None) -> bool:
        cond = {"IfMatch": token} if token else {"IfNoneMatch": "*"}
        body = json.dumps(doc, indent=1).encode()
        return self._call("put_object", Key=self._key("labelsets", f"{name}.json"), Body=body, **cond) is not False

    def _after_publish(self, name: str, vid: str, staged: Path) -> None:
        """Re-upload what a sweep removed if this publisher stalled past stale_s between its upload and its pointer
        write (a reader meanwhile refuses the missing version by its content check and keeps the old one)."""
        for f in (*FILES, "meta.json"):
            if self._call("head_object", Key=self._key("versions", name, vid, f)) is None:
                log.warning("%s@%s lost %s to a sweep before its pointer moved; uploading again", name, vid, f)
                self._store_version(name, vid, staged)
                return

    def _drop_version(self, name: str, version: str) -> None:
        """Nothing now: the sweep removes it once unreferenced and untouched (see the module docstring)."""

    def delete(self, name: str) -> None:
        check_name(name)

        def tombstone(cur: dict | None) -> dict:
            if cur is None:
                raise _unknown_labelset(name, self.names())
            return dict(TOMBSTONE)

        self._update(name, tombstone)
        log.info("deleted label set %s", name)

    def sweep(self) -> int:
        """Local staging of dead writers, then store objects no pointer names that are older than stale_s, then
        cached versions no pointer names."""
        now, n = time.time(), 0
        for p in self.staging.iterdir():
            if now - _last_touched(p) > self.stale_s:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                n += 1
        pointers = self._all_pointers()  # read before listing versions: a version named after this is newer
        named = {(name, v) for name, doc in pointers.items() for v in doc["history"] + [doc["version"]] if v}
        versions: dict[tuple[str, str], list[dict]] = {}
        for o in self._list(self._key("versions/")):
            parts = o["Key"][len(self._key("versions/")) :].split("/")
            if len(parts) == 3:
                versions.setdefault((parts[0], parts[1]), []).append(o)
        for nv, objs in versions.items():
            if nv not in named and all(now - o["LastModified"].timestamp() > self.stale_s for o in objs):
                for o in objs:
                    self._call("delete_object", Key=o["Key"])
                n += 1
                log.info("swept unreferenced version %s@%s", *nv)
        for d in self.cache.glob("*/*") if self.cache.is_dir() else []:
            if (d.parent.name, d.name) not in named and not d.parent.name.startswith("."):
                shutil.rmtree(d, ignore_errors=True)
        for d in self.cache.glob(".download-*") if self.cache.is_dir() else []:
            if now - _last_touched(d) > self.stale_s:
                shutil.rmtree(d, ignore_errors=True)
        return n

    def _seeded(self) -> bool:
        return self._call("head_object", Key=self._key("seeded.json")) is not None

    def _mark_seeded(self, doc: dict) -> None:
        self._call("put_object", Key=self._key("seeded.json"), Body=json.dumps(doc).encode(), IfNoneMatch="*")

    # ---- training jobs' status: every replica answers GET /jobs/ID ----------------------------------------------
    def job_status(self, job_id: str) -> dict | None:
        body, _ = self._get(self._key("jobs", f"{job_id}.json"))
        return None if body is None else json.loads(body)

    def put_job_status(self, job_id: str, doc: dict) -> None:
        self._call("put_object", Key=self._key("jobs", f"{job_id}.json"), Body=json.dumps(doc, indent=1).encode())
