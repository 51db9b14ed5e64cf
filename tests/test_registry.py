"""Registry on disk: validation refuses bad artifacts without touching state; writers killed midway leave a
servable registry."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, save

from models.artifacts import save_artifact
from models.latent import ARCH, LatentConfig, LatentMappers, load_mappers
from service.errors import http_status
from service.registry import STALE_STAGING_S, Registry, RegistryError, check_name, content_id

FP = "f" * 64


def make_artifact(
    d: Path, seed: int = 0, width: int = 16, depth: int = 2, latent_dim: int = 8, fp: str = FP, names=("a", "b")
) -> Path:
    torch.manual_seed(seed)
    cfg = LatentConfig(latent_dim=latent_dim, attr_names=list(names), width=width, depth=depth, label_embed=4)
    m = LatentMappers(cfg)
    tensors = {
        **m.state_dict(),
        "label_table": torch.tensor([[0, 1], [1, 0], [1, 1]], dtype=torch.int8)[:, : len(names)],
        "sigma_bar": torch.full((latent_dim,), 0.3),
    }
    save_artifact(
        d,
        "mapper",
        tensors,
        {
            "kind": "labelset",
            "name": "test",
            "arch": ARCH,
            "config": cfg.to_json(),
            "decoder_fingerprint": fp,
            "metrics": {"seed": seed},
        },
    )
    return d


def publish(reg: Registry, name: str, src: Path, fp: str = FP, latent_dim: int = 8) -> str:
    staged = reg.stage()
    for f in ("mapper.json", "mapper.safetensors"):
        (staged / f).write_bytes((src / f).read_bytes())
    return reg.publish(name, staged, fp, latent_dim, "test")


def snapshot(root: Path) -> dict:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".staging" not in p.parts
    }


def test_versions_are_content_addressed_and_rollback_works(tmp_path):
    reg = Registry(tmp_path)
    v1 = publish(reg, "s", make_artifact(tmp_path / "a1", seed=1))
    v2 = publish(reg, "s", make_artifact(tmp_path / "a2", seed=2))
    assert v1 != v2 and reg.current("s")["version"] == v2
    assert content_id(reg.version_dir("s", v1)) == v1
    assert (
        publish(reg, "s", make_artifact(tmp_path / "a1b", seed=1)) == v1
    )  # same content, same id; it becomes current again
    assert reg.current("s") == {**reg.current("s"), "version": v1, "history": [v2]}
    assert reg.rollback("s") == v2 and reg.current("s")["history"] == [v1]
    with pytest.raises(RegistryError) as e:
        reg.delete_version("s", v2)
    assert e.value.code == "version_is_current"
    reg.delete_version("s", v1)
    assert not reg.version_dir("s", v1).exists() and reg.current("s")["history"] == []
    with pytest.raises(RegistryError) as e:
        reg.rollback("s")
    assert e.value.code == "no_previous_version"
    reg.delete("s")
    assert reg.names() == [] and not (reg.root / "s").exists()


@pytest.mark.parametrize("name", ["..", "../x", "a/b", "", ".hidden", "x" * 65, "a b", "nl\n", "tab\t", "a\nb"])
def test_names_that_could_escape_are_refused(name):
    with pytest.raises(RegistryError) as e:
        check_name(name)
    assert http_status(e.value) == 422 and e.value.code == "invalid_name"


def _bad_uploads(tmp_path: Path):
    good = make_artifact(tmp_path / "good")
    st = (good / "mapper.safetensors").read_bytes()
    man = json.loads((good / "mapper.json").read_text())
    wrong_shape = make_artifact(tmp_path / "wide", width=32)
    yield "pickle", pickle.dumps({"w": [1.0] * 10}), None, 415, "not_safetensors"
    yield "torch.save", None, None, 415, "not_safetensors"
    yield "truncated", st[: len(st) // 2], None, 422, "invalid_artifact"
    shapes = dict(man, config=dict(man["config"], width=32))  # manifest says 32 wide, weights are 16 wide
    yield "wrong shapes", st, json.dumps(shapes), 422, "invalid_artifact"
    yield "weights of another width", (wrong_shape / "mapper.safetensors").read_bytes(), None, 422, "invalid_artifact"
    yield "foreign decoder", st, json.dumps(dict(man, decoder_fingerprint="0" * 64)), 422, "decoder_mismatch"
    yield "unknown architecture", st, json.dumps(dict(man, arch="os.system")), 422, "invalid_artifact"
    yield (
        "wrong latent size",
        (make_artifact(tmp_path / "d16", latent_dim=16) / "mapper.safetensors").read_bytes(),
        json.dumps(dict(man, config=dict(man["config"], latent_dim=16))),
        422,
        "invalid_artifact",
    )
    yield "not json", st, "{nope", 422, "invalid_artifact"
    # malformed safetensors headers: each used to raise TypeError/IndexError inside the check, a 500 over HTTP
    n = int.from_bytes(st[:8], "little")
    header = json.loads(st[8 : 8 + n])
    first = next(k for k in header if k != "__metadata__")
    for what, entry in (
        ("string offsets", dict(header[first], data_offsets=["0", "4"])),
        ("short offsets", dict(header[first], data_offsets=[0])),
        ("reversed offsets", dict(header[first], data_offsets=[8, 0])),
        ("no shape", {"dtype": "F32", "data_offsets": [0, 4]}),
        ("entry not an object", [0, 4]),
    ):
        bad = json.dumps(dict(header, **{first: entry})).encode()
        malformed = len(bad).to_bytes(8, "little") + bad + st[8 + n :]
        yield f"safetensors header: {what}", malformed, None, 422, "invalid_artifact"
    # configs refused in the uploader's terms, never as a Python TypeError or a string compared with an int
    for what, config in (
        ("unknown config field", dict(man["config"], bogus=1)),
        ("string latent size", dict(man["config"], latent_dim="8")),
        ("config not an object", [1, 2]),
        ("attribute name with a newline", dict(man["config"], attr_names=["a", "b\n"])),
        ("unknown critic", dict(man["config"], critic="exec")),
    ):
        yield what, st, json.dumps(dict(man, config=config)), 422, "invalid_artifact"
    nan = load(st)
    nan["actor.net.0.weight"][:] = float("nan")
    yield "non-finite", save(nan), None, 422, "invalid_artifact"


def test_bad_uploads_are_refused_and_change_nothing(tmp_path):
    reg = Registry(tmp_path / "data")
    v1 = publish(reg, "s", make_artifact(tmp_path / "v1", seed=1))
    before = snapshot(reg.root)
    good = tmp_path / "good"
    for what, weights, manifest, status, code in _bad_uploads(tmp_path):
        staged = reg.stage()
        if weights is None:  # a real torch.save pickle of a state dict
            torch.save(
                LatentMappers(LatentConfig(8, ["a", "b"], width=16, depth=2, label_embed=4)).state_dict(),
                staged / "mapper.safetensors",
            )
        else:
            (staged / "mapper.safetensors").write_bytes(weights)
        (staged / "mapper.json").write_text(manifest if manifest is not None else (good / "mapper.json").read_text())
        with pytest.raises(RegistryError) as e:
            reg.publish("s", staged, FP, 8, "test")
        assert (http_status(e.value), e.value.code) == (status, code), what
        assert "__init__" not in e.value.message, what  # a Python error is not an answer
        if what == "string latent size":  # was "latent size 8 does not match the decoder's 8"
            assert "must be integers" in e.value.message
        assert not staged.exists(), what
        assert snapshot(reg.root) == before, what
    assert reg.current("s")["version"] == v1
    assert list(reg.staging.iterdir()) == []


WRITER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_registry import publish, make_artifact
from service.registry import Registry
reg = Registry({data!r})
print("go", flush=True)
publish(reg, "s", Path({src!r}))
"""


def test_a_writer_killed_at_any_moment_leaves_a_complete_current_version(tmp_path):
    """kill -9 a process publishing a ~30 MB artifact at many moments; the registry must always
    point at a complete, loadable version (the old one or the new one) and hold no partial version."""
    reg = Registry(tmp_path / "data")
    v1 = publish(reg, "s", make_artifact(tmp_path / "v1", seed=1))
    big = make_artifact(tmp_path / "big", seed=2, width=1024, depth=4)
    v_big = content_id(big)
    outcomes = set()
    for delay in (0.0, 0.1, 0.25, 0.5, 0.9, 1.5):
        reg.delete("s") if reg.current("s") and reg.current("s")["version"] == v_big else None
        if reg.current("s") is None:
            publish(reg, "s", make_artifact(tmp_path / "v1", seed=1))
        code = WRITER.format(tests=str(Path(__file__).parent), data=str(tmp_path / "data"), src=str(big))
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        assert p.stdout.readline().strip() == b"go"
        time.sleep(delay)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        cur = reg.current("s")
        assert cur is not None and cur["version"] in (v1, v_big)
        outcomes.add(cur["version"])
        for d in (reg.root / "s" / "versions").iterdir():  # every stored version is whole
            assert content_id(d) == d.name
            assert (d / "meta.json").is_file()
        load_mappers(reg.version_dir("s", cur["version"]), FP)
    assert v1 in outcomes  # some kills landed before the pointer moved
    reg.sweep()
    assert all(not p.name.startswith("deleted-") for p in reg.staging.iterdir())


def test_names_the_pattern_refuses_are_not_served_even_if_on_disk(tmp_path):
    """A name stored before names were full-matched ("nl\\n" passed ``^...$`` with re.match) stays invisible."""
    reg = Registry(tmp_path / "data")
    publish(reg, "ok", make_artifact(tmp_path / "a"))
    shutil.copytree(reg.root / "ok", reg.root / "nl\n")
    assert reg.names() == ["ok"]


def test_sweep_removes_staging_untouched_for_long_and_keeps_live_writers(tmp_path):
    reg = Registry(tmp_path / "data")
    dead, live = reg.stage(), reg.stage()
    (dead / "mapper.json").write_text("{}")
    (live / "mapper.json").write_text("{}")
    old = time.time() - STALE_STAGING_S - 5
    for p in (dead / "mapper.json", dead):
        os.utime(p, (old, old))
    os.utime(live, (old, old))  # the directory is old but a file in it was just written: a writer at work
    assert reg.sweep() == 1
    assert not dead.exists() and live.exists()


def test_sweep_waits_for_a_live_pointer_write_and_removes_a_dead_ones_temp(tmp_path):
    """Replicas sharing DATA: one's sweep must not delete the temp file another is about to rename over
    current.json (the rename then fails and that replica's start-up with it)."""
    import threading

    reg = Registry(tmp_path / "data")
    publish(reg, "s", make_artifact(tmp_path / "a"))
    tmp = reg.root / "s" / ".current.json.live.tmp"
    with reg._writing():  # a writer between writing its temp file and renaming it
        tmp.write_text("{}")
        sweeper = threading.Thread(target=reg.sweep)
        sweeper.start()
        sweeper.join(0.5)
        assert sweeper.is_alive() and tmp.exists()
    sweeper.join(10)
    assert not sweeper.is_alive() and not tmp.exists()  # once no writer holds the lock, a temp is a dead one's
