"""The recipes as users run them: shell scripts calling ``lcs``, at toy size on data the tests write."""

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from conditioning.celeba import CELEBA_ATTRIBUTES
from tests.conftest import SEED
from tests.test_datasets import write_celeba

RECIPES = Path(__file__).parent.parent / "training" / "recipes"
# Toy sizes through the recipe's own knobs: every stage runs, on one thread, in seconds of CPU each
TOY = {
    "DEVICE": "cpu",
    "THREADS": "1",
    "VAE_ARGS": f"--epochs 1 --latent-dim 8 --width 8 --batch-size 16 --seed {SEED}",
    "JUDGE_ARGS": f"--epochs 1 --width 8 --batch-size 16 --seed {SEED}",
    "LABELSET_ARGS": f"--steps 3 --critic-steps 2 --width 16 --depth 2 --label-embed 4 --batch-size 16 --seed {SEED}",
}


def test_celeba_recipe_turns_a_celeba_folder_into_a_bundle_that_serves_young(tmp_path):
    rng = np.random.default_rng(SEED)
    rows = [(f"{i + 1:06d}.jpg", rng.choice([-1, 1], size=len(CELEBA_ATTRIBUTES)).tolist()) for i in range(48)]
    write_celeba(tmp_path / "celeba", rows, [0] * 32 + [1] * 8 + [2] * 8, names=list(CELEBA_ATTRIBUTES))
    bundle = tmp_path / "bundle"
    env = {**os.environ, **TOY, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    run = subprocess.run(
        ["bash", str(RECIPES / "celeba.sh"), str(tmp_path / "celeba"), str(bundle)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"lcs serve --bundle {bundle}" in run.stdout
    assert sorted(p.name for p in (bundle / "labelsets").iterdir()) == ["attributes", "realism"]

    from service.app import create_app
    from service.config import ServerConfig

    app = create_app(ServerConfig(bundle=str(bundle), data_dir=str(tmp_path / "data"), device="cpu", threads=1))
    with TestClient(app) as client:
        while client.get("/readyz").status_code == 503 and app.state.lcs.startup_error is None:
            time.sleep(0.2)
        assert app.state.lcs.startup_error is None
        r = client.get("/sample", params={"attrs": "young", "seed": 1})
        assert r.status_code == 200, r.text
        assert r.headers["x-lcs-labelset"] == "attributes" and r.headers["x-lcs-mode"] == "actor"
        assert Image.open(io.BytesIO(r.content)).size == (64, 64)
        # all 40 serve: 5_o_Clock_Shadow under the name a request can write
        r = client.get("/sample", params={"attrs": "five_o_clock_shadow,-young", "format": "json"})
        assert r.status_code == 200 and len(r.json()["images"][0]["labels"]) == len(CELEBA_ATTRIBUTES), r.text
