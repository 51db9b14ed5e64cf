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
from service.registry.admission import FILES, NAME_RE, RegistryError, check_name, content_id
from service.registry.base import RegistryBase, last_touched, unknown_labelset

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

    def _call(self, op: str, *, missing: bool = False, conditional: bool = False, **kw):
        """One S3 request. Only where asked: None for a missing key (``missing``: GET/HEAD) and False for a failed
        precondition (``conditional``: the pointer write). Anything else the store answers or fails with is
        RegistryError(unavailable): a 404 from a listing is a missing bucket, not an empty registry."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            r = getattr(self.s3, op)(Bucket=self.bucket, **kw)
            if op == "get_object":  # the body streams after the headers: its errors are the store's too
                r["Body"] = r["Body"].read()
            return r
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if missing and (code in ("NoSuchKey", "404", "NotFound") or status == 404):
                return None
            if conditional and (code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412)):
                return False
            raise self._unavailable(e) from None
        except (BotoCoreError, OSError) as e:  # refused or reset connections, timeouts, truncated bodies, no keys
            raise self._unavailable(e) from None
        except Exception as e:  # urllib3's protocol errors while streaming a body, not wrapped by botocore
            if type(e).__module__.startswith(("urllib3", "botocore")):
                raise self._unavailable(e) from None
            raise

    def _get(self, key: str) -> tuple[bytes | None, str | None]:
        r = self._call("get_object", missing=True, Key=key)
        return (None, None) if r is None else (r["Body"], r["ETag"])

    def _list(self, prefix: str) -> list[dict]:
        out, token = [], None
        while True:
            r = self._call("list_objects_v2", Prefix=prefix, **({"ContinuationToken": token} if token else {}))
            out += r.get("Contents", [])
            if not r.get("IsTruncated"):
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
            except BotoCoreError as e2:
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
        """The pointer as stored (a deleted label set's tombstone included) and its ETag."""
        body, etag = self._get(self._key("labelsets", f"{name}.json"))
        return (json.loads(body) if body is not None else None), etag

    def current(self, name: str) -> dict | None:
        doc = self._read_pointer(name)[0]
        return doc if doc and doc.get("version") else None

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
        key = self._key("labelsets", f"{name}.json")
        return self._call("put_object", conditional=True, Key=key, Body=body, **cond) is not False

    def _after_publish(self, name: str, vid: str, staged: Path) -> None:
        """Re-upload what a sweep removed if this publisher stalled past stale_s between its upload and its pointer
        write (a reader meanwhile refuses the missing version by its content check and keeps the old one)."""
        for f in (*FILES, "meta.json"):
            if self._call("head_object", missing=True, Key=self._key("versions", name, vid, f)) is None:
                log.warning("%s@%s lost %s to a sweep before its pointer moved; uploading again", name, vid, f)
                self._store_version(name, vid, staged)
                return

    def _drop_version(self, name: str, version: str) -> None:
        """Nothing now: the sweep removes it once unreferenced and untouched (see the module docstring)."""

    def delete(self, name: str) -> None:
        check_name(name)

        def tombstone(cur: dict | None) -> dict:
            if cur is None:
                raise unknown_labelset(name, self.names())
            return dict(TOMBSTONE)

        self._update(name, tombstone)
        self._notify(name)
        log.info("deleted label set %s", name)

    def _named(self) -> set[tuple[str, str]]:
        """(name, version) of every version a pointer names, as current or in its history."""
        return {(n, v) for n, doc in self._all_pointers().items() for v in doc["history"] + [doc["version"]] if v}

    def sweep(self) -> int:
        """Local staging of dead writers, store objects no pointer names that are older than stale_s, and cached
        versions no pointer names."""
        now, n = time.time(), 0
        for p in self.staging.iterdir():
            if now - last_touched(p) > self.stale_s:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                n += 1
        n += self._sweep_store(now)
        named = self._named()
        for d in self.cache.glob("*/*") if self.cache.is_dir() else []:
            if d.parent.name.startswith(".") or (d.parent.name, d.name) in named:
                continue
            if now - last_touched(d) > self.stale_s:  # a version downloaded just now may be about to be named
                shutil.rmtree(d, ignore_errors=True)
        for d in self.cache.glob(".download-*") if self.cache.is_dir() else []:
            if now - last_touched(d) > self.stale_s:
                shutil.rmtree(d, ignore_errors=True)
        return n

    def _sweep_store(self, now: float) -> int:
        versions: dict[tuple[str, str], list[dict]] = {}
        for o in self._list(self._key("versions/")):
            parts = o["Key"][len(self._key("versions/")) :].split("/")
            if len(parts) == 3:
                versions.setdefault((parts[0], parts[1]), []).append(o)
        named, n = self._named(), 0  # read after the listing: a pointer written meanwhile protects its version
        for nv, objs in versions.items():
            if nv in named or not all(now - o["LastModified"].timestamp() > self.stale_s for o in objs):
                continue
            for o in objs:  # each object is checked again just before it goes: a publisher may have re-uploaded it
                head = self._call("head_object", missing=True, Key=o["Key"])
                if head is not None and time.time() - head["LastModified"].timestamp() > self.stale_s:
                    self._call("delete_object", Key=o["Key"])
            n += 1
            log.info("swept unreferenced version %s@%s", *nv)
        return n

    def _seeded(self) -> bool:
        return self._call("head_object", missing=True, Key=self._key("seeded.json")) is not None

    def _mark_seeded(self, doc: dict) -> None:
        body = json.dumps(doc).encode()  # the first replica's marker stays; a later one's write is refused, harmlessly
        self._call("put_object", conditional=True, Key=self._key("seeded.json"), Body=body, IfNoneMatch="*")

    # ---- training jobs' status: every replica answers GET /jobs/ID ----------------------------------------------
    def job_status(self, job_id: str) -> dict | None:
        body, _ = self._get(self._key("jobs", f"{job_id}.json"))
        return None if body is None else json.loads(body)

    def put_job_status(self, job_id: str, doc: dict) -> None:
        self._call("put_object", Key=self._key("jobs", f"{job_id}.json"), Body=json.dumps(doc, indent=1).encode())

    def job_seen(self, job_id: str) -> float | None:
        body, _ = self._get(self._key("jobs", f"{job_id}.alive.json"))
        try:
            return None if body is None else float(json.loads(body)["at"])
        except (ValueError, KeyError):
            return None

    def mark_job_seen(self, job_id: str) -> None:
        body = json.dumps({"at": time.time()}).encode()
        self._call("put_object", Key=self._key("jobs", f"{job_id}.alive.json"), Body=body)
