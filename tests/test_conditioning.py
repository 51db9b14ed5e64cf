"""One conditioning core: the server and the evaluation produce the same latents, hence the same pixels.

The server's answer comes over HTTP from a real ``lcs serve``; the evaluation's from the samplers that
``lcs eval`` and ``lcs eval-edits`` use, in this process. Equal pixels (PNG is lossless) mean equal
latents through the same decoder, so the numbers in docs/ measure what the server serves.
"""

import base64
import io
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from conditioning import backbone, edits, modes
from conditioning.images import png_bytes, to_uint8
from conditioning.labelset import LabelSetVersion
from conditioning.specs import SpecError
from evaluation.samplers import SAMPLERS, build_sampler, load_labelset
from models.vae import load_vae
from service.config import ServerConfig

SEED, N = 7, 5
K = ServerConfig().candidates  # what the server selects among in actor mode


@pytest.fixture(scope="module")
def srv(service_bundle, tmp_path_factory):
    from tests.conftest import Server

    s = Server(service_bundle, tmp_path_factory.mktemp("core") / "data", "test-token")
    yield s
    s.stop()


def pixels(png_base64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(png_base64))))


def served(srv, **params) -> dict:
    r = httpx.get(f"{srv.url}/sample", params={"n": N, "seed": SEED, "format": "json", **params}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("mode", ["actor", "optimize"])
def test_server_and_eval_sample_identical_latents(srv, service_bundle, mode):
    body = served(srv, labelset="category", attrs="sandal", mode=mode)
    names = body["attr_names"]
    labels = torch.tensor([[im["labels"][a] for a in names] for im in body["images"]], dtype=torch.float)
    assert (labels[:, names.index("sandal")] == 1).all()
    vae, _ = load_vae(service_bundle, "cpu")
    sampler = SAMPLERS[mode](service_bundle, "category", vae, candidates=K)
    images = to_uint8(sampler.images(labels, torch.Generator().manual_seed(SEED), torch.device("cpu")))
    got = np.stack([pixels(im["png_base64"]) for im in body["images"]])
    assert np.array_equal(got, images[..., 0]), f"max pixel difference {np.abs(got.astype(int) - images[..., 0]).max()}"


@pytest.mark.parametrize("sampler_name, params", [("realism", {}), ("prior", {"mode": "prior"})])
def test_server_and_eval_agree_without_attributes(srv, service_bundle, sampler_name, params):
    body = served(srv, **params)
    vae, _ = load_vae(service_bundle, "cpu")
    sampler = build_sampler(sampler_name, service_bundle, "category", vae)
    sampler.candidates = K if sampler_name == "realism" else 1
    images = to_uint8(sampler.images(torch.zeros(N, 0), torch.Generator().manual_seed(SEED), torch.device("cpu")))
    assert np.array_equal(np.stack([pixels(im["png_base64"]) for im in body["images"]]), images[..., 0])


@pytest.mark.parametrize("mode", ["actor", "optimize"])
def test_server_and_eval_edit_identically(srv, service_bundle, fashion_root, mode):
    from training.data import load_dataset

    data = load_dataset("fashion-mnist", root=str(fashion_root))
    image = data.images[data.indices("test")[3]]  # 1 x 28 x 28 uint8
    buf = io.BytesIO()
    Image.fromarray(image[0]).save(buf, format="PNG")
    r = httpx.post(
        f"{srv.url}/transform",
        files={"image": ("x.png", buf.getvalue(), "image/png")},
        data={"attrs": "bag", "labelset": "category", "mode": mode, "format": "json"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    vae, _ = load_vae(service_bundle, "cpu")
    ls = load_labelset(service_bundle, "category")
    cpu = torch.device("cpu")
    z0 = backbone.encode(vae, image[None], cpu)[0]
    z, target, ok = edits.edit(ls, z0, {"bag": 1}, mode, candidates=K)
    assert r.json()["converged"] == bool(ok[0]) and r.headers["x-lcs-converged"] == f"{int(ok[0])}/1"
    assert r.json()["target"] == {a: int(v) for a, v in zip(ls.attr_names, target[0].tolist(), strict=True)}
    assert np.array_equal(pixels(r.json()["edited_png_base64"]), to_uint8(backbone.decode(vae, z, cpu))[0, ..., 0])
    assert np.array_equal(
        pixels(r.json()["reconstruction_png_base64"]), to_uint8(backbone.decode(vae, z0, cpu))[0, ..., 0]
    )


def test_modes_pad_small_batches_and_keep_rows_independent(service_bundle):
    """A row's latent does not depend on its batch-mates: the property the two callers rely on. The actor is
    bit-exact; optimisation runs 300 backward passes whose kernels round differently per batch size
    (measured: at most 2.4e-7 after 300 steps), so it is exact only for the same batch (the HTTP tests above)."""
    ls = load_labelset(service_bundle, "category")
    g = torch.Generator().manual_seed(0)
    z, y, mask = modes.draw(ls, {"sandal": 1}, 40, ls.m.cfg.latent_dim, g)
    for mode in ("actor", "optimize"):
        each = [modes.latents(mode, ls, z[i : i + 1], y[i : i + 1], mask[i : i + 1]) for i in range(3)]
        alone = torch.cat([e.z for e in each])
        together, converged = modes.latents(mode, ls, z, y, mask)
        if mode == "actor":  # rows the critics reject are re-stepped, each on its own (modes.restep)
            assert torch.equal(alone, together[:3]) and torch.equal(
                torch.cat([e.converged for e in each]), converged[:3]
            )
        else:
            torch.testing.assert_close(alone, together[:3], atol=1e-5, rtol=0)
            assert converged.shape == (40,) and converged.dtype == torch.bool
    assert torch.equal(modes.latents("prior", ls, z, y, mask).z, z)
    with pytest.raises(ValueError, match="mode must be one of"):
        modes.latents("dream", ls, z, y, mask)


def test_draw_is_the_request_semantics(service_bundle):
    """Same seed, same (z, y); the mask marks exactly the named attributes; a bad spec is a SpecError."""
    ls = LabelSetVersion.load(service_bundle / "labelsets" / "category", None, "category")
    a = modes.draw(ls, {"sandal": 1}, 6, 8, torch.Generator().manual_seed(3))
    b = modes.draw(ls, {"sandal": 1}, 6, 8, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    z, y, mask = a
    assert z.shape == (6, 8) and (y[:, ls.attr_names.index("sandal")] == 1).all() and (y.sum(1) == 1).all()
    assert mask[:, ls.attr_names.index("sandal")].all() and mask.sum() == 6
    with pytest.raises(SpecError):
        modes.draw(ls, {"sandal": 1, "bag": 1}, 2, 8, torch.Generator())


@pytest.mark.parametrize("shape", [(64, 64, 3), (28, 28, 1), (5, 7, 3), (1, 1, 1), (130, 198, 3)])
def test_png_bytes_decode_to_the_same_pixels(shape):
    """The server's own PNG writer: any reader (Pillow here) gets back exactly the array, grey or RGB."""
    a = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    a[0] = 255  # a flat row above a noisy one: the Up filter's wrap-around modulo 256
    data = png_bytes(a)
    assert data == png_bytes(a.copy()) and data.startswith(b"\x89PNG\r\n\x1a\n")
    im = Image.open(io.BytesIO(data))
    assert im.mode == ("L" if shape[-1] == 1 else "RGB")
    assert np.array_equal(np.asarray(im).reshape(shape), a)


def test_fidelity_bench_measures_what_the_server_serves(srv, service_bundle, fashion_root, tmp_path):
    """bench.fidelity's hit rates come from the server's own images: rebuilding one attribute's requests in process
    (the server's draw for each seed, the same mode and decoder) gives the same judged share."""
    from bench.fidelity import markdown, measure
    from evaluation.judging import decide, predict
    from models.judge import load_judge
    from training.train_judge import TrainJudgeConfig, train_judge

    params = {"root": str(fashion_root)}  # a quick judge: the test checks where the numbers come from, not their size
    cfg = TrainJudgeConfig("fashion-mnist", params, str(tmp_path), width=8, epochs=1, device="cpu", threads=1)
    judge_dir = train_judge(cfg)
    r = measure(srv.url, service_bundle, "category", "actor", n=6, max_n=4, device="cpu", judge_dir=judge_dir)
    ls = load_labelset(service_bundle, "category")
    assert list(r["per_attribute"]) == ls.attr_names and r["version"] and 0 <= r["converged"] <= 1
    vae, _ = load_vae(service_bundle, "cpu")
    judge, jman = load_judge(judge_dir, "cpu")
    cpu = torch.device("cpu")
    for a, v, key in (("sandal", 1, "on"), ("trouser", 0, "off")):
        images = []
        for seed, k in ((0, 4), (1, 2)):  # n=6 in requests of at most 4: seeds 0 and 1
            z, y, mask = modes.draw(ls, {a: v}, k, ls.m.cfg.latent_dim, torch.Generator().manual_seed(seed))
            images.append(to_uint8(backbone.decode(vae, modes.latents("actor", ls, z, y, mask, candidates=K).z, cpu)))
        got = decide(predict(judge, np.concatenate(images).transpose(0, 3, 1, 2), cpu)[0], jman, ls.attr_names)
        assert r["per_attribute"][a][key] == float((got[:, ls.attr_names.index(a)] == v).mean())
    row = r["per_attribute"]["sandal"]
    assert 0 <= row["decoder_recall"] <= 1 and 0 <= row["decoder_specificity"] <= 1
    assert "| sandal |" in markdown("fidelity", r, "python -m bench.fidelity ...")


SHIPPED_FACES = Path(__file__).resolve().parents[1] / "service" / "bundles" / "avatars" / "labelsets" / "faces"


@pytest.mark.parametrize("threads", [1, 2])
def test_each_mapper_gives_a_row_the_same_bits_at_every_batch_size(threads):
    """Same seed, same bytes, for the label sets' networks: a row's actor, critic and D_attr outputs do not depend on
    how many rows ``modes.pad`` runs it with. Failed before the padding to a multiple of 8: the fp32 critic (one output
    column) gave another logit at most batch sizes from 17 on, and the server runs whatever sizes its batches have."""
    ls = LabelSetVersion.load(SHIPPED_FACES, None, "faces", "test")
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(72, ls.m.cfg.latent_dim, generator=g), (torch.rand(72, len(ls.attr_names), generator=g) > 0.5)
    nets = {
        "actor": lambda a, b: ls.m.actor(a, b),
        "critic": lambda a, b: ls.m.critic(a, b),
        "attr": lambda a, b: ls.m.attr(a),
    }
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            for name, net in nets.items():
                ref = net(z, y.float())
                assert ref.dtype == torch.float32
                differ = [
                    b
                    for b in range(1, 72)
                    if not torch.equal(net(modes.pad(z[:b]), modes.pad(y[:b].float()))[:b], ref[:b])
                ]
                assert differ == [], (name, differ)
    finally:
        torch.set_num_threads(before)
