"""One registry test suite, run against every backend: the file registry (DATA/registry) and S3 on a real
SeaweedFS. What is held: content-addressed immutable versions, rollback and deletes, refused uploads changing nothing,
racing publishers losing no update, a publisher killed at any moment leaving a whole servable version, orphans swept,
job status shared."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from models.latent import load_mappers
from service.errors import http_status
from service.registry import RegistryError, content_id, open_registry
from tests.test_registry import FP, _bad_uploads, make_artifact, publish


@pytest.fixture(params=["file", "s3"])
def spec(request, tmp_path) -> dict:
    """open_registry's arguments for a fresh, empty registry of each backend."""
    if request.param == "file":
        return {"url": "", "data_dir": str(tmp_path / "data")}
    store = request.getfixturevalue("seaweed")
    return {"url": store.url(), "data_dir": str(tmp_path / "data"), "endpoint": store.endpoint}


def opened(spec: dict, data_dir: str | None = None):
    """Another handle on the same registry: another replica, with its own client, cache and staging for S3; file
    replicas share their data dir, as they must to share the registry."""
    own = {"data_dir": data_dir} if data_dir and spec["url"] else {}
    return open_registry(**{**spec, **own})


def stored_versions(reg, name: str) -> set[str]:
    return {v["version"] for v in reg.describe(name)["versions"]}


def test_versions_are_content_addressed_rollback_and_deletes_work(spec, tmp_path):
    reg = opened(spec)
    v1 = publish(reg, "s", make_artifact(tmp_path / "a1", seed=1))
    v2 = publish(reg, "s", make_artifact(tmp_path / "a2", seed=2))
    assert v1 != v2 and reg.current("s")["version"] == v2 and reg.serving() == {"s": v2}
    assert content_id(reg.version_dir("s", v1)) == v1
    assert publish(reg, "s", make_artifact(tmp_path / "a1b", seed=1)) == v1  # same bytes, same id: current again
    assert reg.current("s")["version"] == v1 and reg.current("s")["history"] == [v2]
    assert reg.rollback("s") == v2 and reg.current("s")["history"] == [v1]
    with pytest.raises(RegistryError) as e:
        reg.delete_version("s", v2)
    assert e.value.code == "version_is_current"
    reg.delete_version("s", v1)
    assert reg.current("s")["history"] == [] and stored_versions(reg, "s") == {v2}
    with pytest.raises(RegistryError) as e:
        reg.rollback("s")
    assert e.value.code == "no_previous_version"
    reg.delete("s")
    assert reg.names() == [] and reg.current("s") is None
    with pytest.raises(RegistryError) as e:
        reg.describe("s")
    assert http_status(e.value) == 404
    v3 = publish(reg, "s", make_artifact(tmp_path / "a3", seed=3))  # a deleted name can be published again
    assert reg.current("s") == {**reg.current("s"), "version": v3, "history": []}


def test_bad_uploads_are_refused_and_change_nothing(spec, tmp_path):
    reg = opened(spec)
    v1 = publish(reg, "s", make_artifact(tmp_path / "v1", seed=1))
    before = (reg.serving(), reg.describe("s"))
    good = tmp_path / "good"
    for what, weights, manifest, status, code in _bad_uploads(tmp_path):
        if weights is None:
            continue  # the torch.save case needs torch's pickler; test_registry covers it on the file backend
        staged = reg.stage()
        (staged / "mapper.safetensors").write_bytes(weights)
        (staged / "mapper.json").write_text(manifest if manifest is not None else (good / "mapper.json").read_text())
        with pytest.raises(RegistryError) as e:
            reg.publish("s", staged, FP, 8, "test")
        assert (http_status(e.value), e.value.code) == (status, code), what
        assert not staged.exists(), what
    assert (reg.serving(), reg.describe("s")) == before and reg.current("s")["version"] == v1


def test_racing_publishers_on_one_label_set_lose_no_update(spec, tmp_path):
    """Eight replicas (own handles: own clients, caches, staging) publish to one name at once; every version they
    published is afterwards the current one or in its history."""
    arts = [make_artifact(tmp_path / f"a{i}", seed=10 + i) for i in range(8)]
    regs = [opened(spec, str(tmp_path / f"replica-{i}")) for i in range(8)]
    publish(regs[0], "race", make_artifact(tmp_path / "base", seed=99))
    barrier, got, errors = threading.Barrier(8), [], []

    def go(i: int) -> None:
        barrier.wait()
        try:
            got.append(publish(regs[i], "race", arts[i]))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []
    cur = regs[0].current("race")
    assert set(got) <= set(cur["history"] + [cur["version"]]) and len(set(got)) == 8
    assert len(cur["history"]) == 8  # the base version and seven of the eight


WRITER = """
import sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.test_registry import publish
from service.registry import open_registry
reg = open_registry(**{spec!r})
print("go", flush=True)
publish(reg, "s", Path({src!r}))
"""


def test_a_publisher_killed_at_any_moment_leaves_a_whole_version_serving(spec, tmp_path):
    """kill -9 a process publishing a ~30 MB artifact at many moments: the pointer names the old or the new version,
    whichever it names loads whole on another replica, and the sweep removes the killed uploads' objects."""
    reg = opened(spec)
    v1 = publish(reg, "s", make_artifact(tmp_path / "v1", seed=1))
    big = make_artifact(tmp_path / "big", seed=2, width=1024, depth=4)
    v_big, outcomes = content_id(big), set()
    for i, delay in enumerate((0.0, 0.2, 0.5, 0.9, 1.5, 2.5)):
        if reg.current("s")["version"] == v_big:
            reg.rollback("s", v1)
        code = WRITER.format(root=str(Path(__file__).parent.parent), spec=spec, src=str(big))
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=os.environ.copy())
        assert p.stdout.readline().strip() == b"go"
        time.sleep(delay)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        cur = reg.current("s")
        assert cur is not None and cur["version"] in (v1, v_big)
        outcomes.add(cur["version"])
        reader = opened(spec, str(tmp_path / f"reader-{i}"))  # a replica that has never seen this version
        d = reader.version_dir("s", cur["version"])
        assert content_id(d) == cur["version"]
        load_mappers(d, FP)
    assert v1 in outcomes  # some kills landed before the pointer moved
    if reg.current("s")["version"] == v_big:
        reg.rollback("s", v1)
    reg.delete_version("s", v_big) if v_big in reg.current("s")["history"] else None
    reg.stale_s = 0  # everything unreferenced is old enough now
    time.sleep(1.1)  # object stores keep LastModified to the second
    reg.sweep()
    assert stored_versions(reg, "s") == {v1}
    if spec["url"].startswith("s3://"):
        keys = [o["Key"] for o in reg._list(reg._key("versions/"))]
        assert keys and all(f"/{v1}/" in k for k in keys), keys  # the killed uploads' objects are gone


def test_the_sweep_keeps_recent_uploads_and_removes_old_orphans(spec, tmp_path):
    reg = opened(spec)
    publish(reg, "s", make_artifact(tmp_path / "v1", seed=1))
    live = reg.stage()
    (live / "mapper.json").write_text("{}")
    assert reg.sweep() == 0 and live.exists()  # a writer at work
    reg.stale_s = 0
    time.sleep(1.1)
    assert reg.sweep() >= 1 and not live.exists()
    assert reg.serving() == {"s": reg.current("s")["version"]}


def test_job_status_and_the_seed_marker_are_shared(spec, tmp_path, service_bundle):
    a, b = opened(spec, str(tmp_path / "a")), opened(spec, str(tmp_path / "b"))
    job = "0" * 32
    assert b.job_status(job) is None
    a.put_job_status(job, {"id": job, "state": "running"})
    assert b.job_status(job) == {"id": job, "state": "running"}
    from models.artifacts import load_manifest

    vman = load_manifest(service_bundle, "vae")
    fp, dim = vman["decoder_fingerprint"], vman["config"]["latent_dim"]
    assert a.seed_from(service_bundle, fp, dim) == ["category", "realism"]
    assert b.seed_from(service_bundle, fp, dim) == []  # once per registry, whichever replica starts first
    assert sorted(b.serving()) == ["category", "realism"]


def test_a_pointer_write_that_landed_but_whose_answer_was_lost_is_not_applied_twice(spec, tmp_path, monkeypatch):
    """The S3 client retries a write whose response was lost; the retry is refused (its precondition no longer
    holds) although the first attempt landed. Re-applying a rollback would roll back twice."""
    reg = opened(spec)
    a, b, c = (publish(reg, "s", make_artifact(tmp_path / f"v{i}", seed=i)) for i in range(3))
    real, lost = reg._write_pointer, []

    def lands_but_reports_refused(name, doc, token):
        ok = real(name, doc, token)
        if not lost:
            lost.append(doc)
            return False
        return ok

    monkeypatch.setattr(reg, "_write_pointer", lands_but_reports_refused)
    assert reg.rollback("s") == b and reg.current("s")["history"] == [a, c]
    lost.clear()
    reg.delete_version("s", a)  # not "unknown_version" for a delete that happened
    assert reg.current("s")["history"] == [c]


def test_store_errors_are_unavailable_never_an_empty_registry():
    """A listing refused by the store (409, 503, a missing bucket) must not read as "no label sets": replicas would
    drop them all and a sweep would delete every version."""
    from botocore.stub import Stubber

    from service.registry import S3Registry

    reg = S3Registry("s3://bucket/p", "/tmp/lcs-stub", endpoint="http://127.0.0.1:9")
    with Stubber(reg.s3) as stub:
        for status, code in ((409, "OperationAborted"), (503, "SlowDown"), (404, "NoSuchBucket"), (412, "x")):
            stub.add_client_error("list_objects_v2", code, http_status_code=status)
            with pytest.raises(RegistryError) as e:
                reg.serving()
            assert e.value.code == "registry_unavailable" and http_status(e.value) == 503
        stub.add_client_error("put_object", "PreconditionFailed", http_status_code=412)
        with pytest.raises(RegistryError):  # only the pointer write reads a 412 as "another writer won"
            reg.put_job_status("0" * 32, {})


def test_a_version_not_fetchable_for_a_moment_is_loaded_on_a_later_pass(spec, tmp_path, service_bundle, monkeypatch):
    """A read timeout or a cache-disk error while fetching a version used to mark it failed for good on that replica:
    it kept serving the old version while the others moved on."""
    from models.artifacts import load_manifest
    from service.domain import Kind
    from service.hotswap import LiveLabelSets

    fp = load_manifest(service_bundle, "vae")["decoder_fingerprint"]
    reg = opened(spec)
    staged = reg.stage()
    for f in ("mapper.json", "mapper.safetensors"):
        (staged / f).write_bytes((service_bundle / "labelsets" / "category" / f).read_bytes())
    vid = reg.publish("cat", staged, fp, 8, "test")
    live, real = LiveLabelSets(opened(spec, str(tmp_path / "b")), fp), None
    real = live.registry.version_dir
    for fault in (OSError("read timeout"), RegistryError(Kind.UNAVAILABLE, "registry_unavailable", "away")):
        monkeypatch.setattr(live.registry, "version_dir", lambda *a, fault=fault: (_ for _ in ()).throw(fault))
        with pytest.raises(RegistryError) if isinstance(fault, RegistryError) else contextlib.nullcontext():
            live.sync()
        assert live.get("cat") is None and "cat" not in live.failed
        monkeypatch.setattr(live.registry, "version_dir", real)
        live.sync()
        assert live.get("cat").version == vid
        live.sets = {}
