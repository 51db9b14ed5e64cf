"""``lcs serve --workers 2``: two whole servers on one port (issue 28 item 3: one process is bound by its interpreter),
sharing the data dir as replicas do, answering the same bytes for the same seed, their metrics summed."""

import re
import time
from pathlib import Path

import httpx

from service.client import Client


def children(pid: int) -> list[int]:
    """Child processes of every thread of PID (a child is listed under the thread that started it)."""
    return sorted(int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split())


def workers(pid: int) -> list[int]:
    """The server's worker processes: its children but multiprocessing's resource tracker."""
    return [k for k in children(pid) if b"resource_tracker" not in Path(f"/proc/{k}/cmdline").read_bytes()]


def alive(pid: int) -> bool:
    """Running: not reaped and not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def counter(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_two_workers_serve_one_port_with_the_same_bytes_and_summed_metrics(service_bundle, start_server, tmp_path):
    srv = start_server(service_bundle, tmp_path / "data", "test-token", "--workers", "2", "--poll-interval", "0.25")
    assert len(workers(srv.proc.pid)) == 2
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
    kids = children(srv.proc.pid)  # the workers, and multiprocessing's resource tracker
    os.kill(workers(srv.proc.pid)[-1], signal.SIGKILL)
    assert srv.proc.wait(30) != 0
    # none is left running: the other worker and the tracker exit once the server has (the tracker when its pipe
    # closes, which under load takes a moment)
    deadline = time.monotonic() + 10
    while any(alive(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(k) for k in kids)
