"""The ``lcs`` entry point as a user runs it: real subprocesses, exit codes, one-line errors."""

import json
import os
import subprocess
import sys

import pytest


def lcs(*args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_help_lists_every_offline_job():
    r = lcs("--help")
    assert r.returncode == 0
    for cmd in ("data", "train-vae", "encode", "train-judge", "eval"):
        assert cmd in r.stdout


def test_missing_fashion_mnist_is_one_clear_line(tmp_path):
    r = lcs("data", "--dataset", "fashion-mnist", "--data-arg", f"root={tmp_path}")
    assert r.returncode == 2
    assert "apt-get install dataset-fashion-mnist" in r.stderr
    assert "Traceback" not in r.stderr


def test_eval_on_a_missing_bundle_is_clear(tmp_path):
    r = lcs("eval", "--bundle", str(tmp_path / "nope"))
    assert r.returncode == 2 and "vae.json does not exist" in r.stderr and "Traceback" not in r.stderr


def test_serve_refuses_settings_it_cannot_run_with_before_it_starts(tmp_path):
    """--candidates 0 started a server that answered every actor request with a 500 (select among no candidates);
    --precision fp16 one that stayed up not ready, its error in the log."""
    from service.config import ServerConfig

    r = lcs("serve", "--candidates", "0", "--data-dir", str(tmp_path), timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "lcs serve: error: candidates must be at least 1, got 0" in r.stderr
    r = lcs("serve", "--data-dir", str(tmp_path), env={**os.environ, "LCS_TIMEOUT": "0"}, timeout=120)
    assert r.returncode == 2 and "request_timeout_s must be above 0, got 0.0" in r.stderr
    r = lcs("serve", "--precision", "fp16", "--device", "cpu", "--data-dir", str(tmp_path), timeout=120)
    assert r.returncode == 2 and "precision must be one of auto, bf16, fp32, got 'fp16'" in r.stderr
    bad_values = ({"max_n": 0}, {"workers": 0}, {"max_wait_ms": -1}, {"poll_interval_s": float("nan")})
    for bad in (*bad_values, {"device": "tpu"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ServerConfig(**bad)
    ServerConfig(threads=0, job_workers=0, max_wait_ms=0)  # 0 means something there: PyTorch's threads, no jobs


def test_offline_jobs_refuse_counts_they_cannot_run_with(tmp_path):
    """train-labelset --steps 0, train-baseline --steps 0 and train-judge --epochs 0 wrote untrained artifacts and
    exited 0; eval --n 0 said only that torch.cat had no tensors."""
    r = lcs("train-labelset", "--bundle", str(tmp_path), "--steps", "0", "--out", str(tmp_path / "ls"))
    assert r.returncode == 2 and "steps must be at least 1, got 0" in r.stderr and not (tmp_path / "ls").exists()
    r = lcs("train-baseline", "--bundle", str(tmp_path), "--method", "cvae", "--label-set", "x", "--steps", "0")
    assert r.returncode == 2 and "steps must be at least 1, got 0" in r.stderr
    r = lcs("train-judge", "--dataset", "avatars", "--out", str(tmp_path / "j"), "--epochs", "0", "--width", "0")
    assert r.returncode == 2 and "epochs must be at least 1, got 0; width must be at least 1, got 0" in r.stderr
    assert not (tmp_path / "j").exists() and "Traceback" not in r.stderr
    r = lcs("eval", "--bundle", str(tmp_path), "--n", "0")
    assert r.returncode == 2 and "n, n_spec3 and n_single must be at least 1, got 0" in r.stderr
    r = lcs("eval-edits", "--bundle", str(tmp_path), "--candidates", "0")
    assert r.returncode == 2 and "n and candidates must be at least 1, got 1000 and 0" in r.stderr


def test_bad_data_arg_syntax():
    r = lcs("data", "--dataset", "avatars", "--data-arg", "n")
    assert r.returncode != 0 and "KEY=VALUE" in r.stderr


def test_train_encode_end_to_end(fashion_root, tmp_path):
    out = tmp_path / "bundle"
    r = lcs(
        "train-vae",
        "--dataset",
        "fashion-mnist",
        "--data-arg",
        f"root={fashion_root}",
        "--out",
        str(out),
        "--latent-dim",
        "4",
        "--width",
        "8",
        "--max-steps",
        "5",
        "--device",
        "cpu",
    )
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "vae.json").read_text())
    assert manifest["command"][:2] == ["lcs", "train-vae"] and "--max-steps" in manifest["command"]
    r = lcs("encode", "--bundle", str(out), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    from models.artifacts import load_artifact

    tensors, lat = load_artifact(out, "latents")
    assert tensors["mu"].shape == tensors["sigma"].shape == (900, 4)
    assert tensors["attrs"].shape == (900, 12) and lat["attr_names"][-2:] == ["footwear", "upper_body"]
    assert len(lat["sigma_bar"]) == 4 and all(s > 0 for s in lat["sigma_bar"])
    train = tensors["split"] == 0
    assert abs(tensors["sigma"][train].mean(0) - __import__("torch").tensor(lat["sigma_bar"])).max() < 1e-6
    assert lat["decoder_fingerprint"] == manifest["decoder_fingerprint"]


def test_serve_flags_read_environment_variables(monkeypatch):
    from cli import build_parser

    monkeypatch.setenv("LCS_PORT", "9123")
    monkeypatch.setenv("LCS_DATA_DIR", "/data")
    monkeypatch.setenv("LCS_MAX_WAIT_MS", "2.5")
    a = build_parser().parse_args(["serve"])
    assert (a.port, a.data_dir, a.max_wait_ms) == (9123, "/data", 2.5)
    assert build_parser().parse_args(["serve", "--port", "80"]).port == 80  # a flag beats the environment
    monkeypatch.setenv("LCS_PORT", "eighty")
    with pytest.raises(SystemExit):
        build_parser()


def test_serve_reruns_itself_with_malloc_arenas_limited_unless_the_user_set_them(monkeypatch):
    """glibc reads MALLOC_ARENA_MAX only as a process starts: `lcs serve` re-runs itself with service.config's default
    (the soak in tests/test_bench.py sees it in a real server's environment); a value already set wins."""
    import os

    import cli
    from service.config import MALLOC_ARENA_MAX

    runs = []
    monkeypatch.setattr(os, "execve", lambda path, args, env: runs.append((path, args, env["MALLOC_ARENA_MAX"])))
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    cli.limit_malloc_arenas()
    assert runs == []
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    cli.limit_malloc_arenas()
    assert runs == [(sys.executable, [sys.executable, *sys.orig_argv[1:]], str(MALLOC_ARENA_MAX))]
