"""End-to-end: a real uvicorn (``lcs serve``) on 127.0.0.1, the tiny bundle, HTTP only."""

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
import zipfile

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from bench.ports import free_port
from conditioning.runtime import resolve_precision
from service.client import Client, ServiceError
from service.config import ServerConfig
from tests.conftest import Server
from training.data.fashion_mnist import CLASS_ATTRS
from training.train_labelset import TrainLabelSetConfig, train_labelset


@pytest.fixture(scope="module")
def srv(service_bundle, tmp_path_factory):
    s = Server(
        service_bundle, tmp_path_factory.mktemp("srv") / "data", "test-token", "--max-wait-ms", "20", "--max-n", "16"
    )
    yield s
    s.stop()


@pytest.fixture(scope="module")
def footwear(service_bundle, tmp_path_factory):
    """An artifact straight from the trainer (``lcs train-labelset``), not part of the served bundle."""
    out = tmp_path_factory.mktemp("footwear")
    train_labelset(
        TrainLabelSetConfig(
            bundle=str(service_bundle),
            label_set="footwear",
            out=str(out),
            steps=20,
            width=32,
            depth=2,
            label_embed=8,
            batch_size=64,
            lr=1e-3,
            diag_every=20,
            threads=1,
        )
    )
    return out


def put(s, name, d, manifest: bytes | None = None, weights: bytes | None = None, headers=None):
    files = {
        "manifest": ("mapper.json", manifest if manifest is not None else (d / "mapper.json").read_bytes()),
        "weights": ("mapper.safetensors", weights if weights is not None else (d / "mapper.safetensors").read_bytes()),
    }
    return httpx.put(
        f"{s.url}/labelsets/{name}", files=files, headers=s.auth if headers is None else headers, timeout=30
    )


def variant(d, i: int) -> bytes:
    """The same weights with a different manifest note: a new content-addressed version."""
    man = json.loads((d / "mapper.json").read_text())
    man["note"] = f"variant {i}"
    return json.dumps(man).encode()


NOISE = np.random.default_rng(0).integers(
    0, 255, (28, 28), dtype=np.uint8
)  # incompressible: truncation hits pixel data


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_sample_png_json_headers(srv):
    r = httpx.get(f"{srv.url}/sample", params={"attrs": "sandal", "seed": 3})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (28, 28)
    assert r.headers["x-lcs-labelset"] == "category" and r.headers["x-lcs-seed"] == "3"
    info = httpx.get(srv.url + "/info").json()
    assert r.headers["x-lcs-labelset-version"] == info["labelsets"]["category"]
    assert r.headers["x-lcs-decoder-fingerprint"] == info["decoder_fingerprint"] == info["live_decoder_fingerprint"]
    # the engine chosen at start-up (--precision auto): bf16 only where the CPU has bf16 units
    assert info["engine"] == f"cpu/{resolve_precision(torch.device('cpu'))}"
    labels = r.headers["x-lcs-labels"]  # categorical: the asked class, one-hot
    assert labels == "0000010000"
    grid = Image.open(io.BytesIO(httpx.get(f"{srv.url}/sample", params={"n": 4, "seed": 1}).content))
    assert grid.size == (2 * 28 + 3 * 2, 2 * 28 + 3 * 2)  # 2 x 2 grid with 2-px borders; no attrs: realism mapper
    body = httpx.get(f"{srv.url}/sample", params={"attrs": "-sandal,-bag", "n": 3, "format": "json", "seed": 9}).json()
    assert body["labelset"] == "category" and len(body["images"]) == 3 and body["seed"] == 9
    for im in body["images"]:
        assert im["labels"]["sandal"] == 0 and im["labels"]["bag"] == 0 and sum(im["labels"].values()) == 1
        assert 0 <= im["realism"] <= 1 and isinstance(im["converged"], bool)  # did a candidate pass (ServerConfig)
        assert Image.open(io.BytesIO(__import__("base64").b64decode(im["png_base64"]))).size == (28, 28)
    prior = httpx.get(f"{srv.url}/sample", params={"mode": "prior", "seed": 3})
    assert prior.status_code == 200 and prior.headers["x-lcs-mode"] == "prior" and "x-lcs-labelset" not in prior.headers
    opt = httpx.get(f"{srv.url}/sample", params={"attrs": "trouser", "mode": "optimize", "seed": 3}, timeout=60)
    assert opt.status_code == 200 and opt.content != r.content
    assert r.headers["x-lcs-converged"] in {"0/1", "1/1"} and info["candidates"] == ServerConfig().candidates
    # optimisation says how many of its images met the stop rule, in the header and per image
    params = {"attrs": "trouser", "mode": "optimize", "seed": 3, "n": 4, "format": "json"}
    body = httpx.get(f"{srv.url}/sample", params=params, timeout=60)
    done = [im["converged"] for im in body.json()["images"]]
    assert all(isinstance(c, bool) for c in done) and body.headers["x-lcs-converged"] == f"{sum(done)}/4"


def test_same_seed_same_bytes_also_when_batched_with_others(srv):
    ref = httpx.get(f"{srv.url}/sample", params={"attrs": "coat", "n": 3, "seed": 42}).content
    assert httpx.get(f"{srv.url}/sample", params={"attrs": "coat", "n": 3, "seed": 42}).content == ref
    assert httpx.get(f"{srv.url}/sample", params={"attrs": "coat", "n": 3, "seed": 43}).content != ref
    out, batch_sizes = [], []

    def client(i):
        params = {"attrs": "coat", "n": 3, "seed": 42} if i % 3 == 0 else {"n": 1 + i % 5, "seed": i}
        r = httpx.get(f"{srv.url}/sample", params=params, timeout=30)
        batch_sizes.append(int(r.headers["x-lcs-batch-samples"]))
        if i % 3 == 0:
            out.append(r.content)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(out) == 4 and all(o == ref for o in out)
    assert max(batch_sizes) > 5  # requests really were batched together


@pytest.mark.parametrize(
    "method,path,kwargs,status,code",
    [
        ("get", "/sample", {"params": {"attrs": "wings"}}, 422, "unknown_attributes"),
        ("get", "/sample", {"params": {"attrs": "sandal,-sandal"}}, 422, "contradictory_attributes"),
        ("get", "/sample", {"params": {"attrs": "sandal,bag"}}, 422, "contradictory_attributes"),
        ("get", "/sample", {"params": {"n": 0}}, 422, "invalid_request"),
        ("get", "/sample", {"params": {"n": 17}}, 422, "n_out_of_range"),
        ("get", "/sample", {"params": {"n": "many"}}, 422, "invalid_request"),
        ("get", "/sample", {"params": {"seed": -1}}, 422, "invalid_request"),
        ("get", "/sample", {"params": {"mode": "magic"}}, 422, "invalid_request"),
        ("get", "/sample", {"params": {"mode": "prior", "attrs": "sandal"}}, 422, "prior_ignores_attrs"),
        ("get", "/sample", {"params": {"mode": "prior", "labelset": "category"}}, 422, "prior_ignores_attrs"),
        ("get", "/sample", {"params": {"attrs": "+-sandal"}}, 422, "invalid_spec"),
        ("get", "/sample", {"params": {"attrs": "--sandal"}}, 422, "invalid_spec"),
        (
            "get",
            "/sample",
            {"params": {"attrs": ",".join("-" + c for c in CLASS_ATTRS), "allow_unseen": "true"}},
            422,
            "contradictory_attributes",
        ),
        ("get", "/sample", {"params": {"labelset": "category\n"}}, 422, "invalid_name"),
        (
            "put",
            "/labelsets/nl%0A",
            {"files": {"manifest": b"{}", "weights": b""}, "headers": {"Authorization": "Bearer test-token"}},
            422,
            "invalid_name",
        ),
        ("get", "/sample", {"params": {"labelset": "nope"}}, 404, "unknown_labelset"),
        ("get", "/sample", {"params": {"attrs": "x" * 30_000}}, 414, "uri_too_long"),  # was uvicorn's plain 400
        ("get", "/labelsets/nope", {}, 404, "unknown_labelset"),
        ("get", "/labelsets/..%2F..%2Fetc", {}, 404, "not_found"),
        ("get", "/jobs/../../etc/passwd", {}, 404, "not_found"),
        ("get", "/jobs/0123", {}, 404, "unknown_job"),
        ("get", "/nowhere", {}, 404, "not_found"),
        ("post", "/sample", {}, 405, "method_not_allowed"),
        ("delete", "/labelsets/category", {}, 401, "unauthorized"),
        ("delete", "/labelsets/category", {"headers": {"Authorization": "Bearer wrong"}}, 401, "unauthorized"),
        ("put", "/labelsets/category", {"files": {"manifest": b"{}", "weights": b""}}, 401, "unauthorized"),
        ("post", "/labelsets/x/jobs", {"data": {"rule": "bright"}}, 401, "unauthorized"),
        ("post", "/labelsets/x/rollback", {}, 401, "unauthorized"),
        ("post", "/transform", {"data": {"attrs": "sandal"}}, 422, "invalid_request"),
        (
            "post",
            "/transform",
            {"files": {"image": b"plain text, not an image"}, "data": {"attrs": "sandal"}},
            415,
            "unsupported_media_type",
        ),
        (
            "post",
            "/transform",
            {"files": {"image": png(NOISE)[:400]}, "data": {"attrs": "sandal"}},
            400,
            "undecodable_image",
        ),
        (
            "post",
            "/transform",
            {"files": {"image": b"GIF89a" + bytes(40)}, "data": {"attrs": "sandal"}},
            415,
            "unsupported_media_type",
        ),
        (
            "post",
            "/transform",
            {"files": {"image": b"\x89PNG" + bytes(11 << 20)}, "data": {"attrs": "sandal"}},
            413,
            "payload_too_large",
        ),
        (
            "post",
            "/transform",
            {"files": {"image": png(np.zeros((28, 28), np.uint8))}, "data": {"attrs": ""}},
            422,
            "nothing_to_edit",
        ),
        (  # 2,100 x 2,100 zeros: an 18 KB PNG that would decode to 4.4 MP (over uploads.MAX_DECODED_PIXELS)
            "post",
            "/transform",
            {"files": {"image": png(np.zeros((2100, 2100), np.uint8))}, "data": {"attrs": "sandal"}},
            413,
            "image_too_large",
        ),
    ],
)
def test_bad_input_gets_the_envelope(srv, method, path, kwargs, status, code):
    r = getattr(httpx, method)(srv.url + path, timeout=30, **kwargs)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert (
        err["code"] == code and isinstance(err["message"], str) and err["message"] and isinstance(err["details"], dict)
    )
    assert "Traceback" not in r.text


@pytest.mark.parametrize("unknown, celeba", [("young", True), ("zzz", False)])
def test_an_unknown_celeba_attribute_points_to_the_celeba_recipe(srv, unknown, celeba):
    """Each way a request names attributes: label set inferred, named, and a q= query. Only a CelebA name is told
    that a CelebA bundle serves it and which recipe builds one."""
    asks = ({"attrs": f"sandal,{unknown}"}, {"attrs": unknown, "labelset": "category"}, {"q": f"sandal and {unknown}"})
    for params in asks:
        r = httpx.get(f"{srv.url}/sample", params=params, timeout=30)
        err = r.json()["error"]
        assert r.status_code == 422 and err["code"] == "unknown_attributes", r.text
        assert unknown in err["details"]["unknown"]
        assert ("Young is a CelebA attribute" in err["message"]) is celeba, err["message"]
        assert ("training/recipes/celeba.sh" in err["message"]) is celeba and ("CelebA" in err["message"]) is celeba


def test_transform_edits_an_uploaded_image(srv):
    src = httpx.get(f"{srv.url}/sample", params={"attrs": "trouser", "seed": 5}).content
    r = httpx.post(
        f"{srv.url}/transform", files={"image": ("x.png", src, "image/png")}, data={"attrs": "sandal", "format": "json"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["target"]["sandal"] == 1 and sum(body["target"].values()) == 1
    edited = np.asarray(Image.open(io.BytesIO(__import__("base64").b64decode(body["edited_png_base64"]))))
    assert edited.shape == (28, 28)
    jpeg = io.BytesIO()
    Image.fromarray(np.full((50, 80, 3), 128, np.uint8)).save(
        jpeg, format="JPEG"
    )  # colour, non-square: cropped + greyed
    r = Client(srv.url).transform(jpeg.getvalue(), "bag")
    assert Image.open(io.BytesIO(r)).size == (28, 28)
    # a 9 MP JPEG is over the decode limit at full size, but JPEGs are decoded at 1/8 scale (Image.draft): accepted
    jpeg = io.BytesIO()
    Image.fromarray(np.full((3000, 3000), 90, np.uint8)).save(jpeg, format="JPEG")
    assert Image.open(io.BytesIO(Client(srv.url).transform(jpeg.getvalue(), "bag"))).size == (28, 28)


def test_trainer_artifact_registers_and_serves_without_restart(srv, footwear):
    c = Client(srv.url, token=srv.token)
    pid = srv.proc.pid
    out = c.register("footwear", footwear)
    assert out["labels"] == ["footwear"] and out["trained_as"] == "footwear"
    r = httpx.get(f"{srv.url}/sample", params={"attrs": "-footwear", "seed": 1})
    assert (
        r.status_code == 200
        and r.headers["x-lcs-labelset"] == "footwear"
        and r.headers["x-lcs-labelset-version"] == out["version"]
    )
    v2 = put(srv, "footwear", footwear, manifest=variant(footwear, 1)).json()["version"]
    assert c.labelset("footwear")["current"] == v2
    assert c.rollback("footwear")["version"] == out["version"]
    assert (
        httpx.get(f"{srv.url}/sample", params={"attrs": "footwear"}).headers["x-lcs-labelset-version"] == out["version"]
    )
    c.delete("footwear", v2)
    assert [v["version"] for v in c.labelset("footwear")["versions"]] == [out["version"]]
    c.delete("footwear")
    with pytest.raises(ServiceError) as e:
        c.sample("footwear")
    assert e.value.code == "unknown_attributes"
    assert srv.proc.pid == pid and srv.proc.poll() is None


def short_offsets(st: bytes) -> bytes:
    """The same safetensors file with one header entry's data_offsets cut to one number."""
    n = int.from_bytes(st[:8], "little")
    header = json.loads(st[8 : 8 + n])
    first = next(k for k in header if k != "__metadata__")
    header[first]["data_offsets"] = header[first]["data_offsets"][:1]
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + st[8 + n :]


def test_bad_uploads_change_nothing(srv, footwear, tmp_path):
    c = Client(srv.url, token=srv.token)
    c.register("shoes", footwear)
    before = c.labelset("shoes")
    files_before = sorted(
        p.relative_to(srv.data_dir) for p in (srv.data_dir / "registry").rglob("*") if ".staging" not in p.parts
    )
    st = (footwear / "mapper.safetensors").read_bytes()
    man = json.loads((footwear / "mapper.json").read_text())
    import pickle

    import torch

    torch.save({"w": torch.zeros(3)}, tmp_path / "pickled.pt")
    bad = [
        ({"weights": pickle.dumps({"w": 1})}, 415, "not_safetensors"),
        ({"weights": (tmp_path / "pickled.pt").read_bytes()}, 415, "not_safetensors"),
        ({"weights": st[:-100]}, 422, "invalid_artifact"),
        ({"manifest": json.dumps(dict(man, config=dict(man["config"], width=64))).encode()}, 422, "invalid_artifact"),
        ({"manifest": json.dumps(dict(man, decoder_fingerprint="0" * 64)).encode()}, 422, "decoder_mismatch"),
        ({"weights": bytes(300 << 20)}, 413, "payload_too_large"),
        ({"weights": short_offsets(st)}, 422, "invalid_artifact"),  # was a TypeError: 500
        ({"manifest": json.dumps(dict(man, config=dict(man["config"], bogus=1))).encode()}, 422, "invalid_artifact"),
    ]
    for kw, status, code in bad:
        r = put(srv, "shoes", footwear, **kw)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    assert put(srv, "../shoes", footwear).status_code == 404
    assert put(srv, "sh oes", footwear).json()["error"]["code"] == "invalid_name"
    assert c.labelset("shoes") == before
    assert (
        sorted(p.relative_to(srv.data_dir) for p in (srv.data_dir / "registry").rglob("*") if ".staging" not in p.parts)
        == files_before
    )
    assert list((srv.data_dir / "registry" / ".staging").iterdir()) == []
    assert httpx.get(f"{srv.url}/sample", params={"labelset": "shoes"}).status_code == 200
    c.delete("shoes")


def test_admin_routes_answer_401_before_reading_the_body(srv):
    """Headers promising 200 MB and no body at all: the 401 comes at once (it used to wait for the whole body)."""
    import socket

    host, port = srv.url.removeprefix("http://").split(":")
    for method, path in (("PUT", "/labelsets/big"), ("POST", "/labelsets/big/jobs")):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                f"Content-Length: {200 << 20}\r\n\r\n".encode()
            )
            answer = b""
            while b'"unauthorized"' not in answer:  # socket.timeout here: the server was waiting for the body
                answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:300]


def test_lcs_serve_bounds_the_request_head(srv):
    """One header streamed without end: `lcs serve` runs the bounded protocol (tests/test_http_protocol.py)."""
    import socket

    from service.http_protocol import MAX_HEAD_BYTES

    host, port = srv.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Endless: ")
            for _ in range(4 * MAX_HEAD_BYTES // 8192):
                sock.sendall(b"h" * 8192)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431"), answer[:300]
    assert b'"header_fields_too_large"' in answer


def test_a_zip_bomb_job_is_refused_before_anything_inflates(srv):
    """One 64 MB member of zeros (64 KB deflated): refused by its declared size, 413, no job created."""
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("img/0.png", bytes(64 << 20))
        for i in range(1, 80):
            z.writestr(f"img/{i}.png", png(NOISE))
    assert len(zbuf.getvalue()) < 1 << 20
    csv = "file,a\n" + "".join(f"img/{i}.png,{i % 2}\n" for i in range(80))
    r = httpx.post(
        f"{srv.url}/labelsets/bomb/jobs",
        headers=srv.auth,
        files={"labels": ("l.csv", csv.encode()), "images": ("i.zip", zbuf.getvalue())},
        timeout=30,
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "zip_too_large", r.text


class Samplers:
    """Clients sampling in threads, spread over ``urls``, until the block ends; what they got, for assertions.
    ``params(i)`` is client i's query."""

    def __init__(self, urls: list[str], params, clients: int = 16):
        self.stop, self.failures, self.versions, self.count = threading.Event(), [], set(), 0
        args = [(urls[i % len(urls)], params(i)) for i in range(clients)]
        self.threads = [threading.Thread(target=self._run, args=a) for a in args]

    def _run(self, url: str, params: dict) -> None:
        with httpx.Client(base_url=url, timeout=30) as h:
            while not self.stop.is_set():
                try:
                    r = h.get("/sample", params=params)
                    if r.status_code != 200:
                        self.failures.append((r.status_code, r.text[:200]))
                    else:
                        self.versions.add(r.headers["x-lcs-labelset-version"])
                        self.count += 1
                except httpx.HTTPError as e:
                    self.failures.append(repr(e))

    def __enter__(self):
        [t.start() for t in self.threads]
        return self

    def __exit__(self, *exc):
        self.stop.set()
        [t.join() for t in self.threads]


def test_sixteen_clients_keep_sampling_while_a_labelset_is_replaced_20_times(srv, footwear):
    c = Client(srv.url, token=srv.token)
    c.register("swap", footwear)

    def params(i):
        return {"labelset": "swap", "attrs": "footwear" if i % 2 else "-footwear", "n": 1 + i % 3}

    published = []
    with Samplers([srv.url], params) as s:
        for i in range(20):
            r = put(srv, "swap", footwear, manifest=variant(footwear, i))
            assert r.status_code == 201, r.text
            published.append(r.json()["version"])
            time.sleep(0.05)
    assert s.failures == []
    assert (
        s.count > 50
        and len(s.versions) > 3
        and s.versions <= set(published) | {c.labelsets and c.labelset("swap")["versions"][0]["version"]}
    )
    c.delete("swap")


def test_metrics_and_probes(srv):
    assert httpx.get(f"{srv.url}/livez").json() == {"status": "alive"}
    # the container HEALTHCHECK command: 0 against a live server, 1 against a port nobody serves
    check = [sys.executable, "-m", "service.healthcheck"]
    assert subprocess.run(check, env={**os.environ, "LCS_PORT": str(srv.port)}).returncode == 0
    assert subprocess.run(check, env={**os.environ, "LCS_PORT": str(free_port())}, capture_output=True).returncode == 1
    assert httpx.get(f"{srv.url}/readyz").json() == {"ready": True}
    httpx.get(f"{srv.url}/sample", params={"attrs": "sandal"})
    httpx.get(f"{srv.url}/sample", params={"attrs": "wings"})
    assert httpx.get(f"{srv.url}/labelsets/no-such-set").status_code == 404
    text = httpx.get(f"{srv.url}/metrics").text
    for needle in (
        'lcs_request_seconds_bucket{le="0.005",route="/sample",status="200"}',
        "lcs_batch_samples_count",
        'route="/sample",status="422"',
        'route="/labelsets/{name}",status="404"',
        "lcs_queue_samples",
        'lcs_labelset_requests_total{labelset="category",mode="actor"}',
        'lcs_realism_score_count{labelset="category"}',
        "lcs_jobs_running",
        "lcs_labelsets_loaded 2.0",
    ):
        assert needle in text, needle
    docs = httpx.get(f"{srv.url}/openapi.json").json()
    assert {"/sample", "/transform", "/labelsets/{name}", "/labelsets/{name}/jobs", "/jobs/{job_id}"} <= set(
        docs["paths"]
    )


def test_registry_memory_does_not_grow_over_200_register_delete_cycles(srv, footwear):
    def rss_mb():
        with open(f"/proc/{srv.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024

    man, st = (footwear / "mapper.json").read_bytes(), (footwear / "mapper.safetensors").read_bytes()
    with httpx.Client(base_url=srv.url, headers=srv.auth, timeout=30) as h:

        def cycle():
            r = h.put(
                "/labelsets/churn", files={"manifest": ("mapper.json", man), "weights": ("mapper.safetensors", st)}
            )
            assert r.status_code == 201, r.text
            assert h.get("/sample", params={"labelset": "churn"}).status_code == 200
            assert h.delete("/labelsets/churn").status_code == 200

        for _ in range(20):  # warm up allocator pools
            cycle()
        start = rss_mb()
        for _ in range(200):
            cycle()
        growth = rss_mb() - start
        metrics = h.get("/metrics").text
    assert growth < 25, f"RSS grew {growth:.1f} MB over 200 cycles"
    assert "lcs_labelset_versions_in_memory 2.0" in metrics  # only the two serving versions are alive
    assert not (srv.data_dir / "registry" / "churn").exists()


def test_training_jobs_run_end_to_end_and_never_touch_the_decoder(srv, service_bundle, fashion_root):
    from training.data import load_dataset

    c = Client(srv.url, token=srv.token)
    vae_sha = hashlib.sha256((service_bundle / "vae.safetensors").read_bytes()).hexdigest()
    live_before = httpx.get(srv.url + "/info").json()["live_decoder_fingerprint"]
    data = load_dataset("fashion-mnist", root=str(fashion_root))
    cls = data.attrs[:, :10].argmax(1)
    ids_csv = "id,heavy\n" + "".join(f"{i},{int(cls[i] in (4, 9))}\n" for i in range(0, len(cls), 3))
    small = dict(steps=15, width=32, depth=2, batch_size=64)
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        rows = []
        for i in range(90):
            z.writestr(f"img/{i}.png", png(data.images[i, 0]))
            rows.append(f"img/{i}.png,{int(cls[i] == 1)},{int(cls[i] == 8)}")
    zip_csv = "file,trouser,bag\n" + "\n".join(rows)
    bad = httpx.post(f"{srv.url}/labelsets/x/jobs", headers=srv.auth, files={"labels": ("l.csv", b"id,a\n1,2\n")})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_labels"
    few = httpx.post(f"{srv.url}/labelsets/x/jobs", headers=srv.auth, files={"labels": ("l.csv", b"id,a\n1,1\n2,0\n")})
    assert few.json()["error"]["code"] == "too_few_rows"
    unknown = c.train(
        "x", labels_csv=b"id,a\n" + b"".join(b"%d,1\n" % (100000 + i) for i in range(80)), wait=False, **small
    )
    jobs = {
        "heavy": c.train("heavy", labels_csv=ids_csv.encode(), wait=False, **small),
        "zipped": c.train("zipped", labels_csv=zip_csv.encode(), images_zip=zbuf.getvalue(), wait=False, **small),
        "bright": c.train("bright", rule="bright", rule_samples=256, wait=False, **small),
    }
    assert all(j["state"] == "queued" for j in jobs.values())
    deadline = time.monotonic() + 240
    final = {}
    while len(final) < 4 and time.monotonic() < deadline:
        for name, j in list(jobs.items()) + [("x", unknown)]:
            s = c.job(j["id"])
            if s["state"] in ("succeeded", "failed"):
                final[name] = s
        time.sleep(0.5)
    assert final["x"]["state"] == "failed" and final["x"]["error"]["code"] == "unknown_ids"
    for name in ("heavy", "zipped", "bright"):
        assert final[name]["state"] == "succeeded", final[name]
        assert final[name]["progress"] == {"step": 15, "steps": 15}
        version = final[name]["result"]["version"]
        r = httpx.get(f"{srv.url}/sample", params={"labelset": name, "seed": 0})
        assert r.status_code == 200 and r.headers["x-lcs-labelset-version"] == version
    assert c.labelset("zipped")["versions"][0]["labels"] == ["trouser", "bag"]
    assert hashlib.sha256((service_bundle / "vae.safetensors").read_bytes()).hexdigest() == vae_sha
    assert httpx.get(srv.url + "/info").json()["live_decoder_fingerprint"] == live_before
    for name in ("heavy", "zipped", "bright"):
        c.delete(name)


def test_a_server_killed_mid_registration_restarts_on_the_previous_version(
    service_bundle, footwear, tmp_path, start_server
):
    s = start_server(service_bundle, tmp_path / "data")
    v1 = put(s, "footwear", footwear).json()["version"]
    body = httpx.Request(
        "PUT",
        "http://x",
        files={
            "manifest": ("mapper.json", variant(footwear, 99)),
            "weights": ("mapper.safetensors", (footwear / "mapper.safetensors").read_bytes()),
        },
    )
    payload, ctype = body.read(), body.headers["content-type"]

    def slow():  # about 1.5 s for the whole body; the server dies after 0.5 s
        step = len(payload) // 50 + 1
        for i in range(0, len(payload), step):
            yield payload[i : i + step]
            time.sleep(0.03)

    def upload():
        with contextlib.suppress(httpx.HTTPError):
            httpx.put(
                f"{s.url}/labelsets/footwear", content=slow(), headers={**s.auth, "content-type": ctype}, timeout=30
            )

    t = threading.Thread(target=upload)
    t.start()
    time.sleep(0.5)
    s.kill9()
    t.join()
    again = start_server(service_bundle, tmp_path / "data")
    assert httpx.get(f"{again.url}/labelsets/footwear").json()["current"] == v1
    r = httpx.get(f"{again.url}/sample", params={"attrs": "footwear"})
    assert r.status_code == 200 and r.headers["x-lcs-labelset-version"] == v1


def test_two_servers_on_one_registry_converge_within_2s(service_bundle, footwear, tmp_path, start_server):
    a = start_server(service_bundle, tmp_path / "data")
    b = start_server(service_bundle, tmp_path / "data")
    assert (
        httpx.get(b.url + "/info").json()["labelsets"] == httpx.get(a.url + "/info").json()["labelsets"]
    )  # seeded once, shared

    def seen_on_b(pred) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5:
            if pred(httpx.get(b.url + "/info").json()["labelsets"]):
                return time.monotonic() - t0
            time.sleep(0.05)
        return float("inf")

    version = put(a, "footwear", footwear).json()["version"]
    assert seen_on_b(lambda ls: ls.get("footwear") == version) < 2.0
    assert httpx.get(f"{b.url}/sample", params={"attrs": "footwear"}).headers["x-lcs-labelset-version"] == version
    assert httpx.delete(f"{a.url}/labelsets/footwear", headers=a.auth).status_code == 200
    assert seen_on_b(lambda ls: "footwear" not in ls) < 2.0


def test_admin_token_is_generated_with_mode_0600_when_unset(service_bundle, tmp_path, start_server):
    s = start_server(service_bundle, tmp_path / "data", "")
    f = tmp_path / "data" / "admin_token"
    assert f.stat().st_mode & 0o777 == 0o600
    token = f.read_text().strip()
    assert len(token) >= 32 and str(f) in s.logtext()
    assert (
        httpx.post(f"{s.url}/labelsets/realism/rollback", headers={"Authorization": f"Bearer {token}"}).json()["error"][
            "code"
        ]
        == "no_previous_version"
    )


def test_an_unwritable_data_dir_stops_the_server_with_one_clear_line(service_bundle, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "serve",
            "--bundle",
            str(service_bundle),
            "--data-dir",
            str(blocker / "data"),
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0
    assert "not writable" in r.stderr and str(blocker / "data") in r.stderr and "Traceback" not in r.stderr
