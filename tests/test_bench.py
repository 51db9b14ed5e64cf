"""The benches' own arithmetic: planted eval outputs in, the bars and tables they must give out."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.card_render import per_attribute_table
from bench.model_card import asked_on_worst, balanced_over_decoder, bars
from conditioning.runtime import resolve_precision


def attr(on, off, bal, rec_recall, rec_spec=1.0, rec_bal=1.0):
    return {
        "single_on": on,
        "single_off": off,
        "balanced_accuracy": bal,
        "requested_rate": 0.3,
        "reconstruction": {"recall": rec_recall, "specificity": rec_spec, "balanced_accuracy": rec_bal},
        "over_reconstruction": {"single_on": on / rec_recall, "balanced_accuracy": bal / rec_bal},
    }


def card(actor: dict, optimize: dict | None = None) -> dict:
    ev = {"actor": {"per_attribute": actor, "asked_on": {"mean": 0.7}, "asked_off": {"min": 0.96}}}
    if optimize:
        ev["optimize"] = {"per_attribute": optimize, "converged": 0.9}
    edits = {
        "actor": {
            "target_reached": 0.85,
            "others_unchanged_vs_reconstruction": 0.93,
            "per_edit": {"a=1": {"n": 5, "target_reached": 0.4}, "a=0": {"n": 5, "target_reached": 0.9}},
        }
    }
    return {"avatars": {"eval": ev, "edits": edits}}


def test_asked_on_bar_allows_for_what_the_decoder_cannot_draw():
    # "a" is drawable (bar 0.80): 0.72 / 0.80 = 0.9. "b" is drawn in 0.5 of reconstructions (bar 0.9 x 0.5 = 0.45).
    per_attr = {"a": attr(0.72, 1.0, 0.9, 0.95), "b": attr(0.5, 1.0, 0.8, 0.5)}
    assert asked_on_worst({"per_attribute": per_attr}) == pytest.approx(0.9)
    assert balanced_over_decoder({"per_attribute": per_attr}) == pytest.approx(0.85)


def test_bars_read_the_planted_numbers():
    actor = {"a": attr(0.9, 0.97, 0.9, 1.0), "b": attr(0.8, 0.99, 0.8, 1.0)}
    optimize = {"a": attr(0.9, 0.97, 0.95, 1.0), "b": attr(0.8, 0.99, 0.85, 1.0)}
    b = bars(card(actor, optimize))
    assert b["faces_asked_on_mean"]["measured"] == 0.7 and b["faces_asked_on_mean"]["met"] is False
    assert b["faces_asked_off_worst"]["met"] is True
    assert b["optimize_minus_actor_balanced"]["measured"] == pytest.approx(0.05)
    assert b["optimize_converged"]["measured"] == 0.9 and b["optimize_converged"]["met"] is False
    assert b["edits_actor_worst_direction"]["measured"] == 0.4 and b["edits_actor_worst_direction"]["met"] is False
    assert b["edits_actor_kept"]["met"] is True
    assert b["edits_optimize_reached"]["measured"] is None and b["edits_optimize_reached"]["met"] is None
    assert b["fashion_rows_balanced_over_decoder"]["measured"] is None  # no Fashion-MNIST evals planted


def test_per_attribute_table_has_a_row_per_attribute_and_the_decoder_column():
    evals = {"actor": {"per_attribute": {"a": attr(0.9, 0.97, 0.9, 0.5)}, "asked_on": None}}
    lines = per_attribute_table(evals, ["actor"])
    row = next(line for line in lines if line.startswith("| a |"))
    assert "0.50 / 1.00" in row and "0.90 (1.80)" in row


def test_ablation_table_reads_each_recipe_and_summarises_seeds(tmp_path):
    import json

    from bench.ablation import by_recipe, collect, markdown

    def run(name, on, reached, categorical=False):
        d = tmp_path / name
        d.mkdir()
        ev = {
            "asked_on": {"mean": on, "min": on - 0.5},
            "asked_off": {"min": 0.9},
            "per_attribute": {"a": attr(on, 0.9, 0.8, 1.0)},
            "frechet": {"fd": 100.0},
        }
        ed = {
            "target_reached": reached,
            "per_edit": {"a=1": {"n": 3, "target_reached": reached / 2}},
            "identity_cosine": 0.5,
        }
        if not categorical:  # a categorical set's edits have no other attributes to keep
            ed["others_unchanged_vs_reconstruction"] = 0.9
        (d / "eval-actor-faces.json").write_text(json.dumps(ev))
        (d / "edits-actor-faces.json").write_text(json.dumps(ed))
        man = {"command": ["lcs", name], "metrics": {"train_seconds": 60}}
        if name.startswith("refined"):  # lcs refine-attr appends each refinement to the manifest
            man["refined"] = [{"command": ["lcs", "refine-attr", str(k)], "seconds": 60 * k} for k in (1, 2)]
        (d / "mapper.json").write_text(json.dumps(man))

    run("shipped-s0", 0.6, 0.2)
    run("shipped-s1", 0.8, 0.4)
    run("hard-negatives-s0", 0.7, 0.5)
    run("category-s0", 0.9, 0.8, categorical=True)
    run("refined-s0", 0.8, 0.7)
    (tmp_path / "not-a-run").mkdir()
    rows = collect(tmp_path)
    assert set(rows) == {"shipped-s0", "shipped-s1", "hard-negatives-s0", "category-s0", "refined-s0"}
    groups = by_recipe(rows)
    assert groups["shipped"]["asked_on_mean"] == (pytest.approx(0.7), pytest.approx(0.2), 2)
    assert groups["hard-negatives"]["edit_worst_direction"][0] == pytest.approx(0.25)
    md = markdown("x", rows, "cmd")
    assert "| shipped | 2 | 0.700 ±0.100 |" in md
    assert "| 0.800 | 0.400 | — | 0.500 |" in next(line for line in md.splitlines() if line.startswith("| category |"))
    assert "- refined-s0 (2.0 min): `lcs refine-attr 2`" in md and "- shipped-s0 (1.0 min): `lcs shipped-s0`" in md


def test_serve_bench_ratios_from_planted_rows():
    from bench.serve import summarize

    def row(n, conns, rps, p99):
        return {"n": n, "connections": conns, "requests_per_s": rps, "images_per_s": rps * n, "p99_ms": p99}

    bare = [
        {"batch": 1, "images_per_s": 25.0, "route_images_per_s": 20.0},
        {"batch": 32, "images_per_s": 500.0, "route_images_per_s": 400.0},
    ]
    http = {
        "ours": [row(1, 1, 30.0, 40.0), row(1, 32, 400.0, 120.0), row(16, 32, 20.0, 900.0)],
        "litserve": [row(1, 1, 3.0, 400.0), row(1, 32, 200.0, 150.0)],
    }
    s = summarize(bare, http)
    assert s["at_connections"] == 32 and s["best_route_images_per_s"] == 400.0
    assert s["r_serve"] == {1: {"vs_engine": 0.8, "vs_route": 1.0}, 16: {"vs_engine": 0.64, "vs_route": 0.8}}
    assert s["vs_litserve"]["throughput_ratio"] == 2.0 and s["vs_litserve"]["met"] is True
    assert http["ours"][0]["vs_litserve"] == 10.0 and http["ours"][2]["vs_litserve"] is None  # no n = 16 peer
    assert http["ours"][2]["vs_bare"] == pytest.approx(0.64) and http["litserve"][1]["vs_litserve"] is None
    http["ours"][1]["p99_ms"] = 151.0  # faster but a worse tail: not met
    assert summarize(bare, http)["vs_litserve"]["met"] is False


def test_serve_bench_bare_runs_one_process_per_server_worker_and_sums_them(service_bundle):
    from bench.serve_bare import BARE_SIZES, bare

    args = (service_bundle, "category", "sandal", "cpu", 1, "fp32", 0.5, 2)
    rows, engine = bare(args, 2)
    assert [r["batch"] for r in rows] == list(BARE_SIZES) and engine == "cpu/fp32"
    assert all(r["images_per_s"] > 0 and r["route_images_per_s"] > 0 and r["route_ms_per_batch"] > 0 for r in rows)


def test_serve_bench_without_wrk_says_how_to_install_it(monkeypatch, tmp_path):
    from bench import serve

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SystemExit, match="apt-get install -y wrk"):
        serve.need_wrk()


def test_serve_bench_rewrites_only_its_block_of_the_markdown(tmp_path):
    from bench.serve import MARKERS, write_md

    md = tmp_path / "bench.md"
    write_md(md, ["first"])
    md.write_text(md.read_text() + "\n## Where the time goes\nkept\n")
    write_md(md, ["second"])
    text = md.read_text()
    assert "second" in text and "first" not in text and text.endswith("kept\n") and text.count(MARKERS[0]) == 1


@pytest.mark.skipif(shutil.which("wrk") is None, reason="the serving bench needs wrk: apt-get install -y wrk")
def test_serve_bench_smoke(tmp_path):
    """One short run end to end: ours (and LitServe when installed) answer PNGs at a positive rate, with the
    candidates asked for (the cost of the quality knob is measured at any setting)."""
    out = tmp_path / "serve.json"
    cmd = [sys.executable, "-m", "bench.serve", "--seconds", "1", "--connections", "2", "--n", "1", "--threads", "1"]
    cmd += ["--candidates", "2"]
    subprocess.run([*cmd, "--out", str(out)], check=True, timeout=300, capture_output=True)
    r = json.loads(out.read_text())
    assert {"bare", "http", "summary", "skipped", "uvicorn", "load_average"} <= r.keys()
    assert r["engine"] == f"cpu/{resolve_precision(torch.device('cpu'))}"  # what every server under test ran
    assert r["summary"]["r_serve"]["1"]["vs_route"] > 0 and r["summary"]["best_bare_images_per_s"] > 0
    assert all(row["route_images_per_s"] > 0 for row in r["bare"])
    servers = ["ours", "litserve"] if importlib.util.find_spec("litserve") else ["ours"]
    assert list(r["http"]) == servers and ("litserve" in r["skipped"]) == (len(servers) == 1)
    for name in servers:
        (row,) = r["http"][name]
        assert row["images_per_s"] > 0 and row["errors_status"] == row["errors_socket"] == 0, row
        assert 0 < row["p50_ms"] <= row["p99_ms"]
    md = out.with_suffix(".md").read_text()
    assert "| ours | 1 | 2 |" in md and r["candidates"] == 2 and "2 actor candidates an image" in md


def test_abuse_probes_get_their_statuses_with_bounded_memory(service_bundle):
    """bench.abuse against a real server on the tiny bundle, scaled down: every probe answered as it should, peak RSS
    within 2x the steady state, nothing unhandled. (Its fairness timing is the bench's to judge, not a unit test's.)"""
    from bench import abuse

    res = abuse.run(service_bundle, threads=1, scale=0.25)
    assert res["unhandled_errors"] == 0
    for row in res["probes"]:
        assert row["count"] and set(row["statuses"]) <= set(row["expected"]), row
        assert row["peak_over_steady"] <= 2.0, row


@pytest.mark.skipif(shutil.which("wrk") is None, reason="the soak's load is wrk's: apt-get install -y wrk")
def test_abuse_soak_reports_growth_of_a_server_with_limited_malloc_arenas(service_bundle, monkeypatch):
    """bench.abuse's soak scaled down to seconds: RSS readings and their growth under wrk's mixed load, from an
    `lcs serve` started without MALLOC_ARENA_MAX that runs with service.config's (glibc reads it only as a process
    starts: the CLI re-runs itself with it). Whether memory stays flat is the full soak's to judge, not a test's."""
    from bench import abuse
    from service.config import MALLOC_ARENA_MAX

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    res = abuse.soak(service_bundle, threads=1, warmup_s=1.0, window_s=2.0, connections=4)
    assert res["malloc_arena_max"] == str(MALLOC_ARENA_MAX)
    assert len(res["rss_mb"]) == 5 and min(res["rss_mb"]) > 0 and res["growth"] > 0, res
    assert res["requests"] > 0 and res["errors_socket"] == 0, res


def test_register_bench_serves_a_classifier_label_set(service_bundle):
    """bench.register once against a real server on the tiny bundle: the classifier job succeeds and its version
    answers /sample (energy mode). Its timing is the bench's to judge, not a unit test's."""
    from bench import register

    res = register.run(service_bundle, "footwear", repeats=1, threads=1)
    (row,) = res["runs"]
    assert row["state"] == "succeeded" and row["method"] == "classifier", row
    assert row["served_ok"] and row["mode"] == "energy" and row["served_s"] >= row["post_s"] > 0, row
    assert row["cpu_seconds"] > 0 and row["labelled_examples"] == res["rows"] - res["rows"] // 10  # 1 in 10 held out


def test_cluster_bench_measures_convergence(service_bundle, tmp_path):
    """bench.cluster's notices part on the tiny bundle with two publishes (its outage part is what
    tests/test_cluster.py checks, and docs/cluster.md ran): the table and JSON are written and every replica
    converged within the bar."""
    from bench import cluster

    argv = ["--bundle", str(service_bundle), "--labelset", "category", "--publishes", "2", "--parts", "notices"]
    with pytest.raises(SystemExit) as e:
        cluster.main([*argv, "--out", str(tmp_path)])
    r = json.loads((tmp_path / "cluster.json").read_text())
    assert e.value.code == 0, r
    assert r["notices"]["pairs"] == 4 and r["notices"]["max_s"] < cluster.BAR_S
    assert "| notices" in (tmp_path / "cluster.md").read_text()


def test_gan_section_reports_each_systems_curve_and_its_paragraph_against_the_lc_actor():
    from bench.protocol import aggregate
    from bench.render import _gan_section

    f = lambda v, p=3: "–" if v is None else f"{v:.{p}f}"  # noqa: E731

    def row(method, acc, fd, **extra):
        return {
            "dataset": "d",
            "method": method,
            "seed": 0,
            "accuracy": acc,
            "accuracy_over_ceiling": acc,
            "exact_match": acc,
            "exact_match_3attr": None,
            "frechet": fd,
            "frechet_real": 1.0,
            "precision": 0.5,
            "recall": 0.5,
            "trained_here": True,
            "train_cpu_s": 100.0,
            **extra,
        }

    curve = [{"step": 50, "d_acc": 0.9}, {"step": 100, "d_acc": 0.7}, {"step": 150, "d_acc": 0.6}]
    began = [{"step": 50, "convergence": 0.3}, {"step": 100, "convergence": 0.2}]
    raw = [
        row("actor-l0", 0.8, 40.0),
        row("infogan", 0.55, 90.0, steps=150, curve=curve, code_match={"test_accuracy": 0.61}),
        row("gaia-lc", 0.7, 60.0, steps=100, curve=began, gan_prior={"frechet": 120.0}),
    ]
    d = {"quality_raw": raw, "quality": aggregate(raw)}
    d["triplegan_labels"] = [
        {
            "share": 0.01,
            "labelled": 600,
            "triplegan": {"accuracy": 0.3, "frechet": 150.0},
            "lc": {"accuracy": 0.6, "frechet": 50.0},
        }
    ]
    text = "\n".join(_gan_section(d, f))
    assert "| infogan | 0 | 150 | 100 | d_acc 0.90 → 0.70 → 0.60 | 0.610 | – |" in text
    assert "| gaia-lc | 0 | 100 | 100 | convergence 0.30 → 0.20 → 0.20 | – | 120.00 |" in text
    assert "**InfoGAN**" in text and "accuracy 0.550 vs 0.800, FD 90.00 vs 40.00" in text
    assert "**GAIA**" in text and "**BiGAN**" not in text and "**Triple-GAN**" not in text
    assert "| 1% | 600 | 0.300 | 150.00 | 0.600 | 50.00 |" in text
    assert _gan_section({"quality_raw": raw[:1], "quality": aggregate(raw[:1])}, f) == []


def test_quality_trains_the_gan_systems_on_their_own_seed_count(tmp_path, monkeypatch):
    """The small profile trains each network once but the GAN systems twice (issue 29 asks their seed spread); the
    latent fits always run two seeds. Which part trains on which seed, with the training and scoring stubbed out."""
    from bench import runners
    from bench.protocol import PROFILES

    trained = []
    fake = {"mean_accuracy": 0.5, "frechet": {"fd": 1.0}}
    monkeypatch.setattr(runners, "evaluator", lambda *a: lambda sampler, seed, *b: fake)
    monkeypatch.setattr(runners, "summarise", lambda name, method, seed, r, extra: (method, seed))

    def record(name, method, bundle, spec, prof, out, seed, *ev):
        trained.append((method, seed))
        return (out, {}) if ev else {}  # a backbone part also names the bundle its row is scored on

    for fn in ("_train_part", "train_sampler_part", "train_backbone_part"):
        monkeypatch.setattr(runners, fn, record)
    parts = ["actor", "actor-l0", "attrvec-mean", "cvae", "triplegan", "infogan", "gaia-lc"]
    rows = runners.quality("fashion-mnist", tmp_path, {"label_set": "category"}, PROFILES["small"], tmp_path, parts)
    assert sorted(trained) == [
        ("actor-l0", 0),
        ("attrvec-mean", 0),
        ("attrvec-mean", 1),
        ("cvae", 0),
        ("gaia-lc", 0),
        ("gaia-lc", 1),
        ("infogan", 0),
        ("infogan", 1),
        ("triplegan", 0),
        ("triplegan", 1),
    ]
    assert ("actor", 1) in rows and len(rows) == len(trained) + 2


def test_a_gan_whose_discriminator_won_outright_is_reported_as_diverged():
    from bench.render import diverged_at, markdown

    def curve(accs):
        return [{"step": 100 * (i + 1), "d_acc": a} for i, a in enumerate(accs)]

    won = curve([0.7, 0.9, 0.995, 1.0, 1.0, 1.0])
    assert diverged_at({"curve": won}) == 300
    assert diverged_at({"curve": curve([0.7, 1.0, 1.0, 0.9, 0.8, 0.85])}) is None  # recovered: a game, not a rout
    assert diverged_at({"curve": [{"step": 1, "convergence": 0.1}]}) is None  # GAIA reports BEGAN's measure
    base = {
        "dataset": "avatars",
        "seed": 0,
        "trained_here": True,
        "train_cpu_s": 1.0,
        "params_stored": 1,
        "frechet_real": 1.0,
    }
    scores = {k: 0.5 for k in ("accuracy", "accuracy_over_ceiling", "exact_match", "frechet", "precision", "recall")}
    raw = [
        {**base, **scores, "method": "bigan-lc", "steps": 600, "curve": won, "exact_match_3attr": None},
        {**base, **scores, "method": "actor-l0", "exact_match_3attr": None},
    ]
    from bench.protocol import aggregate

    entry = {
        "commands": ["test"],
        "profile": "smoke",
        "profile_settings": {},
        "skipped": [],
        "label_set": "faces",
        "quality_raw": raw,
        "quality": aggregate(raw),
        "new_label_set": None,
        "wall_minutes": 1.0,
        "machine": "test",
    }
    text = markdown({"datasets": {"avatars": entry}})
    assert "| bigan-lc (diverged: seed 0 from step 300) | 0.500 |" in text and "| actor-l0 | 0.500 |" in text
    assert "Its run diverged (seed 0 from step 300" in text and "Against the LC actor" not in text
    # a part a dataset leaves out says why (bench.protocol.DATASETS' "skip")
    entry = {**entry, "skipped": ["triplegan-labels"], "skip_reasons": {"triplegan-labels": "an hour of a core"}}
    assert "; skipped: triplegan-labels (an hour of a core))" in markdown({"datasets": {"avatars": entry}})


def test_baselines_runs_on_two_datasets_at_once_keep_each_others_results(tmp_path, monkeypatch):
    """Each run writes its dataset into the file as it is when it finishes, not as it was when it started."""
    import bench.baselines as bb

    out = tmp_path / "docs"
    out.mkdir()
    old = {
        "commands": [],
        "profile": "smoke",
        "quality_raw": [],
        "quality": [],
        "new_label_set": None,
        "wall_minutes": 0,
    }
    (out / "baselines.json").write_text(json.dumps({"datasets": {"fashion-mnist": old, "avatars": old}}))

    def measure(name, bundle, spec, prof, work, parts, entry, out_dir):
        # meanwhile, another run finished the other dataset
        doc = json.loads((out / "baselines.json").read_text())
        doc["datasets"]["avatars"] = {**old, "commands": ["the other run"]}
        (out / "baselines.json").write_text(json.dumps(doc))
        entry["quality"] = [{"method": "measured"}]

    monkeypatch.setattr(bb, "_measure", measure)
    monkeypatch.setattr(bb, "markdown", lambda result: "md")
    monkeypatch.setattr(bb, "bundle_dir", lambda name: tmp_path)
    (tmp_path / "latents.safetensors").write_bytes(b"")
    argv = ["bench.baselines", "--datasets", "fashion-mnist", "--profile", "smoke", "--only", "prior"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out), "--work", str(tmp_path / "work")])
    bb.main()
    doc = json.loads((out / "baselines.json").read_text())
    assert doc["datasets"]["avatars"]["commands"] == ["the other run"]
    assert doc["datasets"]["fashion-mnist"]["quality"] == [{"method": "measured"}]


def test_the_bench_reuses_a_model_trained_with_the_same_settings_and_retrains_on_any_change(
    service_bundle, tmp_path, monkeypatch
):
    """One command regenerates docs/baselines.md because a trained model in the work dir is reused when its settings
    (and a label set's decoder) match: an LC label set (``train_lc``) and an image method (``_train_part`` through
    ``train_once``), with the trainers counted."""
    from bench import gan_parts, runners

    calls = []
    real = gan_parts.train_labelset
    monkeypatch.setattr(gan_parts, "train_labelset", lambda cfg, **kw: calls.append(cfg.steps) or real(cfg, **kw))
    out = tmp_path / "lc"
    for steps in (3, 3, 4):
        gan_parts.train_lc(service_bundle, "category", out, steps, 0, ["test"])
    assert calls == [3, 4]  # the second call reused the first's mapper; a changed setting retrained
    man = json.loads((out / "mapper.json").read_text())
    man["decoder_fingerprint"] = "another decoder"
    (out / "mapper.json").write_text(json.dumps(man))
    gan_parts.train_lc(service_bundle, "category", out, 4, 0, ["test"])
    assert calls == [3, 4, 4]  # same settings on another decoder: retrained

    trained = []
    monkeypatch.setattr(gan_parts, "train_baseline", lambda cfg, command: trained.append(cfg.steps) or _fake(cfg))
    spec, prof = {"label_set": "category", "batch": 8}, {"image_steps": 5, "gan_steps": 7}
    for steps in (5, 5, 6):
        prof["image_steps"] = steps
        row = runners._train_part("fashion-mnist", "cvae", service_bundle, spec, prof, tmp_path / "cvae", 0)
    assert trained == [5, 6] and row["train_cpu_s"] == 1.5
    man = json.loads((tmp_path / "cvae" / "cvae.json").read_text())  # as a latent baseline's: fitted on the latents
    (tmp_path / "cvae" / "cvae.json").write_text(json.dumps({**man, "decoder_fingerprint": "another decoder"}))
    runners._train_part("fashion-mnist", "cvae", service_bundle, spec, prof, tmp_path / "cvae", 0)
    assert trained == [5, 6, 6]  # same settings, another decoder's latents: refitted


def _fake(cfg):
    """A CVAE manifest as ``train_baseline`` writes it (what ``train_once`` and ``_train_part`` read)."""
    from training.train_baseline import training_settings

    man = {"training": training_settings(cfg), "metrics": {"cpu_seconds": 1.5, "steps": cfg.steps, "params_stored": 9}}
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out) / "cvae.json").write_text(json.dumps(man))


def test_a_runs_final_accuracy_is_the_mean_of_its_last_probes_not_the_last_dip():
    """The avatars hold-one-out read LC's last probe, a dip (0.76 -> 0.57), as its final accuracy (session 22)."""
    from bench.protocol import to_95

    probes = [{"step": s, "cpu_s": s / 10, "accuracy": a} for s, a in ((50, 0.3), (100, 0.72), (150, 0.75), (200, 0.6))]
    got = to_95(probes)
    assert got["final_accuracy"] == pytest.approx(0.69)  # mean of 0.72, 0.75, 0.6
    assert got["steps_to_95"] == 100 and got["cpu_s_to_95"] == 10.0  # first >= 0.6555


def test_the_hold_out_says_how_to_read_r_register_when_the_cvae_levels_off_low():
    """The avatars CVAE reached its own 0.59 in 10 CPU-s and LC its 0.90 in 190 (R_register 19.7), while its samples
    scored FD 619: the section says so rather than leave the ratio alone."""
    from bench.render import _plateaus

    f = lambda v, p=3: f"{v:.{p}f}"  # noqa: E731  (as markdown formats)
    h = {"lc_l0": {"final_accuracy": 0.9}, "cvae_retrain": {"final_accuracy": 0.6}}
    quality = [{"method": "cvae", "frechet": 619.0}, {"method": "actor-l0", "frechet": 53.0}]
    text = " ".join(_plateaus(h, quality, f))
    assert "levels off at 0.600 here against LC's 0.900" in text and "FD 619.00 for the CVAE's samples" in text
    assert _plateaus({**h, "cvae_retrain": {"final_accuracy": 0.88}}, quality, f) == []  # level with LC: no caveat


def test_free_ports_lie_outside_the_kernels_ephemeral_range_and_are_never_handed_out_twice():
    """A port from bind(0) is one the kernel also gives outgoing connections, so a server's own clients could take it
    before the server binds it (CI: SeaweedFS's volume server, "address already in use")."""
    from bench.ports import ephemeral_range, free_port, pickable

    if not pickable():
        pytest.skip("this host's ephemeral range covers every port free_port would pick")
    low, high = ephemeral_range()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= p < 65536 and not low <= p <= high for p in ports), sorted(ports)[-3:]


def test_free_ports_are_picked_on_either_side_of_an_ephemeral_range_and_never_past_65535(tmp_path, monkeypatch):
    from bench import ports

    cases = {
        "20000 40000": [range(10000, 20000), range(40001, 65536)],
        "70000 80000": [range(10000, 30000)],  # below it, up to Kubernetes' NodePorts
        "1024 65535": [],  # nothing outside: bind(0)'s port
    }
    for text, want in cases.items():
        (tmp_path / "range").write_text(text + "\n")
        monkeypatch.setattr(ports, "EPHEMERAL_RANGE", tmp_path / "range")
        assert ports.pickable() == want, text
        port = ports.free_port()
        assert 0 < port < 65536 and (not want or any(port in r for r in want)), (text, port)
