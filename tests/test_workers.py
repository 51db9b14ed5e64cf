"""``lcs serve --workers 2``: two whole servers on one port (issue 28 item 3: one process is bound by its interpreter),
sharing the data dir as replicas do, answering the same bytes for the same seed, their metrics summed."""

import re
import time
from pathlib import Path

import httpx

from service.client import Client


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def counter(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_two_workers_serve_one_port_with_the_same_bytes_and_summed_metrics(service_bundle, start_server, tmp_path):
    srv = start_server(service_bundle, tmp_path / "data", "test-token", "--workers", "2", "--poll-interval", "0.25")
    assert len(children(srv.proc.pid)) >= 2  # uvicorn's two worker processes (and multiprocessing's tracker)
    # every request on a fresh connection, so the kernel hands them to either worker
    bodies = {httpx.get(f"{srv.url}/sample", params={"attrs": "sandal", "seed": 7}).content for _ in range(20)}
    assert len(bodies) == 1  # same seed, same bytes, whichever worker drew it
    text = httpx.get(f"{srv.url}/metrics").text
    assert counter(text, 'lcs_labelset_requests_total{labelset="category",mode="actor"}') == 20.0
    assert counter(text, "lcs_labelsets_loaded") == 2.0  # the most any worker has, not the sum
    # a label set registered through one worker is served by both within a few poll periods
    c = Client(srv.url, token=srv.token)
    version = c.register("again", service_bundle / "labelsets" / "category")["version"]
    time.sleep(1.5)
    got = {httpx.get(f"{srv.url}/labelsets/again").json()["current"] for _ in range(12)}
    assert got == {version}


def test_a_worker_that_dies_stops_the_server_with_its_code(service_bundle, start_server, tmp_path):
    """The supervisor above (Docker, Kubernetes, systemd) restarts the server whole; half a server is not left."""
    import os
    import signal

    srv = start_server(service_bundle, tmp_path / "data", "test-token", "--workers", "2")
    kids = children(srv.proc.pid)  # the workers, and multiprocessing's resource tracker first
    os.kill(kids[-1], signal.SIGKILL)
    assert srv.proc.wait(30) != 0
    assert all(not Path(f"/proc/{k}").exists() or "Z" in Path(f"/proc/{k}/stat").read_text().split()[2] for k in kids)
