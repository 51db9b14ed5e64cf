"""Issue 18: classifier label sets, the energy sampler's AND / OR / NOT on a latent problem whose answer is known, and
both served end to end over HTTP (a real uvicorn on 127.0.0.1)."""

import io
import time

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from conditioning import energy
from conditioning.labelset import LabelSetVersion
from conditioning.specs import SpecError
from models.latent import LatentConfig, LatentMappers
from models.latent_table import LatentTable
from service.client import Client, ServiceError
from tests.conftest import Server
from training.data import load_dataset
from training.train_classifier import fit_classifier

D = 4


def planted_table(n: int = 4000, seed: int = 0) -> LatentTable:
    """Latents z ~ N(0, I) in 4 dimensions; attribute a is z0 > 0, b is z1 > 0; a tenth of the rows validate."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(n, D, generator=g)
    labels = torch.stack([mu[:, 0] > 0, mu[:, 1] > 0], 1).float()
    split = (torch.arange(n) % 10 == 9).long()
    return LatentTable(mu, torch.full_like(mu, 0.05), labels, split, torch.ones(D), ["a", "b"], "binary", "x", "y")


@pytest.fixture(scope="module")
def planted():
    """(realism: identity actor and an accepting critic, so only the query's energy moves z; the classifier set)."""
    torch.manual_seed(0)
    t = planted_table()
    m = LatentMappers(LatentConfig(D, ["a", "b"], method="classifier", width=32, depth=3))
    metrics = fit_classifier(m, t, t.rows(0), 400, 128, 3e-3, torch.Generator().manual_seed(0))
    assert metrics["attr_val_accuracy"] > 0.97
    clf = LabelSetVersion("planted", "v1", m, {"name": "planted"}, t.labels, torch.ones(D))
    r = LatentMappers(LatentConfig(D, width=8, depth=1))
    with torch.no_grad():
        r.actor.net[-1].weight.zero_()
        r.actor.net[-1].bias.copy_(torch.cat([torch.zeros(D), torch.full((D,), -30.0)]))  # gate shut: G(z) = z
        r.critic.net[-1].weight.zero_()
        r.critic.net[-1].bias.fill_(5.0)  # every latent looks real
    realism = LabelSetVersion("realism", "v1", r, {"name": "realism"}, None, torch.ones(D))
    return realism, clf


def run(planted, text: str, n: int = 256):
    realism, clf = planted
    plan = energy.plan_query(text, {"realism": realism, "planted": clf})
    z = torch.randn(n, D, generator=torch.Generator().manual_seed(1))
    out, ok, _ = energy.sample(plan, z, cfg=energy.EnergyConfig(realism_weight=0.0))
    return out[:, 0] > 0, out[:, 1] > 0, ok


def test_the_actor_of_the_realism_set_is_the_identity_here(planted):
    realism, _ = planted
    z = torch.randn(8, D)
    assert torch.allclose(realism.m.actor(z, None), z, atol=1e-6)


def test_and_lands_where_both_planted_attributes_hold(planted):
    a, b, ok = run(planted, "a and b")
    assert (a & b).float().mean() > 0.97 and ok.float().mean() > 0.97  # the prior alone: 0.25


def test_not_avoids_and_composes_with_and(planted):
    a, b, ok = run(planted, "not a")
    assert (~a).float().mean() > 0.97
    a, b, ok = run(planted, "b and not a")
    assert (b & ~a).float().mean() > 0.97


def test_or_covers_both_branches(planted):
    a, b, ok = run(planted, "a or b")
    assert (a | b).float().mean() > 0.97
    assert (a & ~b).float().mean() > 0.15 and (b & ~a).float().mean() > 0.15  # not collapsed onto one branch
    a, b, ok = run(planted, "not (a or b)")  # De Morgan: neither
    assert (~a & ~b).float().mean() > 0.97


def test_without_the_first_draw_that_satisfies_steps_alone_still_get_there(planted):
    realism, clf = planted
    plan = energy.plan_query("a and b", {"realism": realism, "planted": clf})
    z = torch.randn(128, D, generator=torch.Generator().manual_seed(2))
    out, ok, steps = energy.sample(plan, z, cfg=energy.EnergyConfig(realism_weight=0.0, candidates=1))
    assert ((out[:, 0] > 0) & (out[:, 1] > 0)).float().mean() > 0.95 and steps.float().max() > 0


def test_each_rows_candidates_do_not_depend_on_its_batch():
    z = torch.randn(5, D)
    assert torch.equal(energy.candidates(z, 8)[2], energy.candidates(z[2:3], 8)[0])


def test_a_query_needs_the_realism_set_and_known_names(planted):
    realism, clf = planted
    with pytest.raises(SpecError) as e:
        energy.plan_query("a", {"planted": clf})
    assert e.value.code == "no_realism_labelset"
    with pytest.raises(SpecError) as e:
        energy.plan_query("a and c", {"realism": realism, "planted": clf})
    assert e.value.code == "unknown_attributes" and e.value.details["position"] == 6


def test_calibration_is_folded_into_the_classifier_and_the_held_out_check_refuses_noise(tmp_path):
    from training.train_labelset import TrainLabelSetConfig, train_labelset

    t = planted_table()
    torch.manual_seed(0)
    m = LatentMappers(LatentConfig(D, ["a", "b"], method="classifier", width=32, depth=3))
    metrics = fit_classifier(m, t, t.rows(0), 200, 128, 3e-3, torch.Generator().manual_seed(0))
    assert m.critic is None and m.actor is None
    cal = metrics["calibration"]
    assert cal["nll_after"] <= cal["nll_before"] + 1e-6 and len(cal["scale"]) == 2

    # a table whose labels are coin flips: the classifier cannot beat chance on held-out rows, so nothing is written
    from models.latent_table import write_latent_table

    g = torch.Generator().manual_seed(3)
    mu = torch.randn(2000, D, generator=g)
    noise = (torch.rand(2000, 1, generator=g) > 0.5).to(torch.int8)
    split = (torch.arange(2000) % 10 == 9).to(torch.uint8)
    write_latent_table(
        tmp_path / "table", mu, torch.full_like(mu, 0.05), noise, split, attr_names=["coin"],
        label_sets={"coin": {"name": "coin", "attrs": ["coin"], "kind": "binary"}}, decoder_fingerprint="f",
        sigma_bar=torch.ones(D), dataset={"name": "test", "params": {}}, command=["test"],
    )  # fmt: skip
    cfg = TrainLabelSetConfig(
        bundle=str(tmp_path), table=str(tmp_path / "table"), label_set="coin", out=str(tmp_path / "out"),
        method="classifier", classifier_steps=100, width=16, depth=3, batch_size=64,
    )  # fmt: skip
    with pytest.raises(ValueError, match="did not learn coin"):
        train_labelset(cfg)
    assert not (tmp_path / "out" / "mapper.json").exists()


# ---- end to end over HTTP ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(service_bundle, fashion_root, tmp_path_factory):
    s = Server(service_bundle, tmp_path_factory.mktemp("compose") / "data", "test-token", "--max-n", "16")
    c = Client(s.url, token=s.token)
    data = load_dataset("fashion-mnist", root=str(fashion_root))
    cls = data.attrs[:, :10].argmax(1)
    ids_csv = "id,heavy\n" + "".join(f"{i},{int(cls[i] in (4, 9))}\n" for i in range(len(cls)))
    jobs = {
        "heavy": c.train("heavy", labels_csv=ids_csv.encode(), method="classifier", wait=False),
        "glow": c.train("glow", rule="bright", rule_samples=512, method="classifier", wait=False),
    }
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        s.jobs = {name: c.job(j["id"]) for name, j in jobs.items()}
        if all(st["state"] in ("succeeded", "failed") for st in s.jobs.values()):
            break
        time.sleep(0.3)
    yield s
    s.stop()


def test_a_classifier_label_set_is_trained_registered_and_served_by_the_energy_sampler(srv):
    assert srv.jobs["heavy"]["state"] == "succeeded", srv.jobs["heavy"]
    c = Client(srv.url, token=srv.token)
    desc = c.labelset("heavy")["versions"][0]
    assert desc["method"] == "classifier" and desc["labels"] == ["heavy"]
    r = httpx.get(f"{srv.url}/sample", params={"attrs": "heavy", "n": 4, "seed": 3, "format": "json"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "energy" and body["labelset"] == "heavy" and r.headers["x-lcs-mode"] == "energy"
    assert r.headers["x-lcs-converged"] == f"{sum(im['converged'] for im in body['images'])}/4"
    png = httpx.get(f"{srv.url}/sample", params={"attrs": "heavy", "n": 4, "seed": 3})
    assert png.content == httpx.get(f"{srv.url}/sample", params={"attrs": "heavy", "n": 4, "seed": 3}).content
    for mode in ("actor", "optimize"):
        r = httpx.get(f"{srv.url}/sample", params={"attrs": "heavy", "mode": mode})
        assert r.status_code == 422 and r.json()["error"]["code"] == "mode_unavailable"


def test_queries_compose_label_sets_and_rules(srv):
    assert srv.jobs["glow"]["state"] == "succeeded", srv.jobs["glow"]
    c = Client(srv.url, token=srv.token)
    body = c.sample(q="(heavy or category.bag) and NOT sandal and rule:bright", n=3, seed=5, format="json")
    assert body["mode"] == "energy" and body["labelset"] is None
    assert body["query"] == "(heavy.heavy or category.bag) and not category.sandal and glow.bright"
    assert len(body["images"]) == 3 and all(im["labels"] is None for im in body["images"])
    png = c.sample(q="heavy and not trouser", n=2, seed=5)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert png == c.sample(q="heavy.heavy and not category.trouser", n=2, seed=5)  # the same query, written out


@pytest.mark.parametrize(
    "q, code, position",
    [
        ("heavy and (", "invalid_query", 11),
        ("heavy and nope", "unknown_attributes", 10),
        ("nope.bag", "unknown_labelset", 0),
        ("heavy or rule:warm", "unknown_rule", 9),
        ("bag )", "invalid_query", 4),
    ],
)
def test_query_errors_say_where(srv, q, code, position):
    r = httpx.get(f"{srv.url}/sample", params={"q": q})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == code and err["details"]["position"] == position, err


def test_query_requests_that_cannot_mean_anything_are_refused(srv):
    for params, code in [
        ({"q": "bag", "attrs": "bag"}, "query_and_attrs"),
        ({"q": "bag", "mode": "actor"}, "mode_unavailable"),
        ({"q": "bag", "mode": "prior"}, "prior_ignores_attrs"),
        ({"q": "bag & heavy"}, "invalid_query"),
        ({"q": "a" * 2001}, "invalid_request"),
        ([("q", "bag"), ("seed", "1"), ("seed", "2")], "repeated_parameter"),
    ]:
        r = httpx.get(f"{srv.url}/sample", params=params)
        assert r.status_code == 422 and r.json()["error"]["code"] == code, (params, r.text)


def test_transform_edits_towards_a_query(srv, fashion_root):
    data = load_dataset("fashion-mnist", root=str(fashion_root))
    buf = io.BytesIO()
    Image.fromarray(np.asarray(data.images[0, 0])).save(buf, format="PNG")
    c = Client(srv.url, token=srv.token)
    body = c.transform(buf.getvalue(), q="heavy and not bag", format="json")
    assert body["mode"] == "energy" and body["query"] == "heavy.heavy and not category.bag"
    assert body["target"] is None and isinstance(body["converged"], bool)
    edited = c.transform(buf.getvalue(), attrs="heavy", labelset="heavy", format="json")  # a classifier set's edit
    assert edited["mode"] == "energy" and edited["target"] == {"heavy": 1}
    with pytest.raises(ServiceError) as e:
        c.transform(buf.getvalue(), q="heavy and (")
    assert e.value.code == "invalid_query" and e.value.details["position"] == 11


def test_a_classifier_artifact_from_the_trainer_is_uploaded_and_served(srv, service_bundle, tmp_path):
    from training.train_labelset import TrainLabelSetConfig, train_labelset

    art = train_labelset(
        TrainLabelSetConfig(bundle=str(service_bundle), label_set="footwear", out=str(tmp_path / "fw"),
                            method="classifier", classifier_steps=200, width=32, depth=3, batch_size=64)
    )  # fmt: skip
    c = Client(srv.url, token=srv.token)
    version = c.register("shoes", art)["version"]
    body = c.sample(q="shoes.footwear and not sneaker", n=2, seed=1, format="json")
    assert body["query"] == "shoes.footwear and not category.sneaker" and len(body["images"]) == 2
    r = httpx.get(f"{srv.url}/sample", params={"labelset": "shoes", "attrs": "-footwear", "seed": 1})
    assert r.status_code == 200 and r.headers["x-lcs-labelset-version"] == version


def test_a_server_starts_with_classifier_sets_registered_and_realism_stays_a_realism_mapper(
    srv, service_bundle, tmp_path
):
    from training.train_labelset import TrainLabelSetConfig, train_labelset

    second = Server(service_bundle, srv.data_dir, "test-token", "--max-n", "4")  # same registry: warm-up sees "heavy"
    try:
        r = httpx.get(f"{second.url}/sample", params={"attrs": "heavy", "seed": 2, "format": "json"})
        assert r.status_code == 200 and r.json()["mode"] == "energy"
    finally:
        second.stop()
    art = train_labelset(
        TrainLabelSetConfig(bundle=str(service_bundle), label_set="footwear", out=str(tmp_path / "fw"),
                            method="classifier", classifier_steps=200, width=32, depth=3, batch_size=64)
    )  # fmt: skip
    with pytest.raises(ServiceError) as e:
        Client(srv.url, token=srv.token).register("realism", art)
    assert e.value.status == 422 and "reserved" in e.value.message
    assert httpx.get(f"{srv.url}/sample", params={"q": "heavy", "seed": 1}).status_code == 200
