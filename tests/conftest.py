"""Shared fixtures: tiny data written by the tests themselves, and an isolated dataset cache."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.ports import free_port

# Every test that trains something is deterministic: a fixed seed and one intra-op thread, whatever the machine's
# core count. That makes a run repeat exactly on one machine, not across machines: a CPU with other SIMD kernels takes
# another training path from the same seed (ATEN_CPU_CAPABILITY=avx2 or =default shows it here). So every statistical
# threshold on a training outcome has a margin measured over other seeds: the seed is the one CI uses (0) unless
# LCS_TEST_SEED says otherwise (LCS_TEST_SEED=k python -m pytest tests/...), and each assertion records its margin.
SEED = int(os.environ.get("LCS_TEST_SEED", "0"))
THREADS = 1
torch.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def seed() -> int:
    """The training seed of the fixtures and tests that train (LCS_TEST_SEED, default 0)."""
    return SEED


@pytest.fixture(autouse=True)
def one_torch_thread():
    """In-process torch runs on THREADS threads in every test, also after one that set another count
    (``resolve_device(device, threads)`` calls torch.set_num_threads). Servers started as subprocesses get --threads."""
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LCS_CACHE", str(tmp_path_factory.getbasetemp() / "lcs-cache"))


def write_idx(path: Path, array: np.ndarray) -> None:
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def class_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """28x28 images whose class is visible: a bright band at a class-specific height and length
    (so brightness varies with the class too)."""
    x = rng.integers(0, 40, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, y in enumerate(labels):
        x[i, 2 + 2 * y : 5 + 2 * y, 4 : 6 + 2 * y] = 230
    return x


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory) -> Path:
    """A Fashion-MNIST-format folder (gzip IDX) of 700 train + 200 test learnable images."""
    root = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(0)
    for split, n in (("train", 700), ("t10k", 200)):
        y = (np.arange(n) % 10).astype(np.uint8)
        write_idx(root / f"{split}-images-idx3-ubyte.gz", class_images(y, rng))
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", y)
    return root


@pytest.fixture(scope="session")
def tiny_vae(fashion_root, tmp_path_factory) -> Path:
    """A tiny VAE trained enough (400 steps) on the fixture to reconstruct the class band."""
    from training.train_vae import TrainVAEConfig, train_vae

    out = tmp_path_factory.mktemp("tiny-vae")
    return train_vae(
        TrainVAEConfig(
            dataset="fashion-mnist",
            dataset_params={"root": str(fashion_root)},
            out=str(out),
            latent_dim=8,
            width=16,
            epochs=20,
            batch_size=32,
            lr=2e-3,
            lr_final=2e-3,
            device="cpu",
            seed=SEED,
            threads=THREADS,
        )
    )


@pytest.fixture(scope="session")
def service_bundle(tiny_vae, fashion_root, tmp_path_factory) -> Path:
    """The tiny VAE as a served bundle: encoded, with quickly trained realism + category label sets.

    The mappers are trained only briefly: service tests check plumbing, not sample quality."""
    import shutil

    from training.data import load_dataset
    from training.encode import encode_dataset
    from training.train_labelset import TrainLabelSetConfig, train_labelset

    out = tmp_path_factory.mktemp("service-bundle")
    for f in ("vae.json", "vae.safetensors"):
        shutil.copyfile(tiny_vae / f, out / f)
    encode_dataset(out, load_dataset("fashion-mnist", root=str(fashion_root)), device="cpu")
    for name in ("realism", "category"):
        train_labelset(
            TrainLabelSetConfig(
                bundle=str(out),
                label_set=name,
                steps=30,
                width=32,
                depth=2,
                label_embed=8,
                batch_size=64,
                lr=1e-3,
                diag_every=30,
                seed=SEED,
                threads=THREADS,
            )
        )
    return out


@pytest.fixture(scope="session")
def judged_bundle(service_bundle, tmp_path_factory, seed):
    """The tiny served bundle (VAE, latent table, label sets) plus a judge, so ``lcs eval`` and ``lcs eval-edits`` can
    score baselines."""
    import shutil

    from models.artifacts import load_manifest
    from training.train_judge import TrainJudgeConfig, train_judge

    out = tmp_path_factory.mktemp("judged")
    shutil.copytree(service_bundle, out, dirs_exist_ok=True)
    params = load_manifest(out, "vae")["dataset"]["params"]
    train_judge(
        TrainJudgeConfig(
            dataset="fashion-mnist",
            dataset_params=params,
            out=str(out),
            width=16,
            epochs=6,
            batch_size=32,
            device="cpu",
            seed=seed,
            threads=1,
        )
    )
    return out


class Server:
    """``lcs serve`` as a real uvicorn subprocess on 127.0.0.1 and a random port."""

    def __init__(self, bundle: Path, data_dir: Path, token: str = "test-token", *extra: str):
        import os
        import subprocess
        import sys

        self.bundle, self.data_dir, self.token, self.port = bundle, data_dir, token, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = (
            {**os.environ, "LCS_ADMIN_TOKEN": token}
            if token
            else {k: v for k, v in os.environ.items() if k != "LCS_ADMIN_TOKEN"}
        )
        # the server writes its log here for as long as it runs; stop() closes it
        self.log = open(data_dir.parent / f"server-{self.port}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli",
                "serve",
                "--bundle",
                str(bundle),
                "--data-dir",
                str(data_dir),
                "--port",
                str(self.port),
                "--threads",
                "1",
                "--poll-interval",
                "0.25",
                *extra,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 90) -> None:
        import time

        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.logtext()[-3000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout} s: {self.logtext()[-3000:]}")

    def logtext(self) -> str:
        self.log.flush()
        return (self.data_dir.parent / f"server-{self.port}.log").read_text(errors="replace")

    @property
    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except Exception:  # noqa: BLE001
                self.proc.kill()
        self.log.close()


@pytest.fixture
def start_server():
    started = []

    def start(bundle: Path, data_dir: Path, token: str = "test-token", *extra: str) -> Server:
        s = Server(bundle, data_dir, token, *extra)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """SeaweedFS's S3 gateway on loopback for the session (bench.stores); the AWS_* credentials any key pair passes."""
    from bench.stores import CREDENTIALS, SeaweedS3

    os.environ.update(CREDENTIALS)  # servers started as subprocesses inherit them
    store = SeaweedS3(tmp_path_factory.mktemp("seaweedfs")).start()
    yield store
    store.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    from bench.stores import RedisServer

    r = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield r
    r.stop()
