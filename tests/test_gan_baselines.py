"""The GAN baselines through ``lcs train-baseline`` and ``lcs eval`` on the tiny judged bundle: Triple-GAN as a
semi-supervised conditional sampler, InfoGAN through its code -> class map, BiGAN and GAIA as bundles that latent
constraints train on. Plumbing, not quality: the models' own learning is in test_bigan_gaia and
test_infogan_triplegan."""

import json

import pytest
import torch
from safetensors.torch import load_file

from conditioning.runtime import autocast
from evaluation.samplers import build_sampler
from models.bigan import EXPORT_FORMAT, load_bigan
from models.cvaegan import load_conditional
from models.infogan import load_infogan
from models.triplegan import TripleGAN
from models.vae import load_vae
from training.encode import encode_dataset
from training.evaluate import evaluate
from training.export_backbone import reexport_backbone
from training.train_baseline import TrainBaselineConfig, train_baseline
from training.train_labelset import TrainLabelSetConfig, train_labelset


def train(bundle, method, out, **kw):
    cfg = dict(bundle=str(bundle), method=method, label_set="category", steps=6, batch_size=32, device="cpu")
    return train_baseline(TrainBaselineConfig(**{**cfg, "out": str(out), **kw}))


def score(bundle, sampler, out, tmp_path):
    r = evaluate(
        bundle, sampler=sampler, label_set="category", n=40, boots=2, device="cpu", artifact=out, out=tmp_path / "ev"
    )
    assert r["sampler"] == sampler and 0 <= r["mean_accuracy"] <= 1
    return r


def test_triplegan_trains_on_few_labels_with_unlabelled_batches_and_samples(judged_bundle, tmp_path):
    out = train(judged_bundle, "triplegan", tmp_path / "t", labelled=50)
    model, manifest, extra = load_conditional(out)
    assert isinstance(model, TripleGAN) and manifest["metrics"]["labelled_examples"] == 50
    assert int(extra["label_counts"].sum()) == 50
    # the unlabelled batches ran: the classifier's adversarial term is logged beside its supervised loss
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert {"loss_c", "adv_c", "pseudo", "loss_d", "loss_g"} <= set(log[-1])
    score(judged_bundle, "triplegan", out, tmp_path)


def test_gan_baselines_use_adam_beta1_one_half(judged_bundle, tmp_path, monkeypatch):
    seen = []
    real = torch.optim.Adam

    def spy(params, **kw):
        seen.append(kw["betas"])
        return real(params, **kw)

    monkeypatch.setattr(torch.optim, "Adam", spy)
    train(judged_bundle, "triplegan", tmp_path / "t", steps=1)
    train(judged_bundle, "cvae", tmp_path / "c", steps=1)
    assert seen == [(0.5, 0.999)] * 3 + [(0.9, 0.999)]


def test_infogan_codes_are_matched_to_classes_and_sampled_through_the_map(judged_bundle, tmp_path):
    out = train(judged_bundle, "infogan", tmp_path / "i")
    model, manifest, extra = load_infogan(out)
    mapping, match = extra["code_class"], manifest["metrics"]["code_match"]
    # one class per code: the map is a permutation of the 10 classes
    assert sorted(mapping.tolist()) == list(range(10))
    assert match["fit_images"] == manifest["metrics"]["labelled_examples"]
    # the best of the 10 cyclic maps already matches a tenth of the images: the best map is at least that
    assert 0 <= match["test_accuracy"] <= 1 and match["fit_accuracy"] >= 0.1
    smp = build_sampler("infogan", judged_bundle, "category", None, out)
    labels = torch.eye(10)[[3, 3, 7]]
    imgs = smp.images(labels, torch.Generator().manual_seed(0), torch.device("cpu"))
    with autocast(torch.device("cpu")):  # at the engine's precision, as the sampler runs (bf16 on CPUs with bf16 units)
        again = model.sample(
            3, torch.Generator().manual_seed(0), torch.tensor([(mapping == c).nonzero().item() for c in (3, 3, 7)])
        ).float()
    assert imgs.shape == (3, 1, 28, 28) and torch.equal(imgs, again)
    score(judged_bundle, "infogan", out, tmp_path)
    with pytest.raises(ValueError, match="no code -> class map"):
        build_sampler("infogan", judged_bundle, "footwear", None, out)


def test_infogan_needs_a_categorical_label_set_and_gans_cannot_be_fine_tuned(judged_bundle, tmp_path):
    with pytest.raises(ValueError, match="categorical label set"):
        train(judged_bundle, "infogan", tmp_path / "i", label_set="footwear")
    with pytest.raises(ValueError, match="not a GAN baseline"):
        train(judged_bundle, "bigan", tmp_path / "b", init=str(judged_bundle))


@pytest.mark.parametrize("method", ["bigan", "ali", "gaia"])
def test_bigan_ali_and_gaia_become_bundles_that_latent_constraints_train_on(judged_bundle, method, tmp_path, seed):
    out = train(judged_bundle, method, tmp_path / method)
    vae, vman = load_vae(out)
    stem = "bigan" if method == "ali" else method  # ALI: a BiGAN with a stochastic encoder
    assert vman["exported_from"].startswith(f"conv-{stem}") and vman["dataset"]["label_sets"]["category"]
    assert (out / "judge.json").exists() and (out / f"{stem}.json").exists()
    assert method != "ali" or load_bigan(out)[0].cfg.stochastic
    x = torch.rand(4, 1, 28, 28)
    mu, sigma = vae.encode(x)
    fixed = torch.allclose(sigma, torch.full_like(sigma, 0.1))  # a deterministic encoder reports its fixed σ
    assert fixed == (method != "ali")  # ALI's is its posterior's own
    encode_dataset(out, device="cpu")
    # GAIA has no prior: its exported latents are standardised on the training images; BiGAN's keep G's N(0, I)
    assert vman["export"] == {"format": EXPORT_FORMAT, "standardised": method == "gaia"}
    if method == "gaia":
        table = load_file(out / "latents.safetensors")
        train_mu = table["mu"][table["split"] == 0].float()
        assert train_mu.mean(0).abs().max() < 0.1 and (train_mu.std(0) - 1).abs().max() < 0.1
    # a bundle exported by an older format is exported again from the trained weights, once
    vman.pop("export")
    (out / "vae.json").write_text(json.dumps(vman))
    assert reexport_backbone(out, method, judged_bundle) and not reexport_backbone(out, method, judged_bundle)
    assert load_vae(out)[1]["export"]["standardised"] == (method == "gaia")
    train_labelset(
        TrainLabelSetConfig(
            bundle=str(out),
            label_set="category",
            steps=10,
            width=32,
            depth=2,
            label_embed=8,
            batch_size=64,
            diag_every=10,
            seed=seed,
            threads=1,
        )
    )
    score(out, "actor", "", tmp_path)


def test_the_baselines_bench_measures_the_gan_systems_and_renders_their_section(judged_bundle, tmp_path, monkeypatch):
    from bench.protocol import DATASETS, PROFILES, aggregate
    from bench.render import markdown
    from bench.runners import quality, triplegan_labels

    spec, prof = {**DATASETS["fashion-mnist"], "batch": 32}, {**PROFILES["smoke"], "n_eval": 40}
    monkeypatch.setattr("bench.gan_parts.LABEL_SHARES", (0.1, 1.0))  # the 1% run is the 10% one with fewer rows
    rows = quality("fashion-mnist", judged_bundle, spec, prof, tmp_path, ["actor-l0", "infogan", "gaia-lc"])
    got = {r["method"]: r for r in rows}
    assert set(got) == {"actor-l0", "infogan", "gaia-lc"}  # trained parts run on the profile's one seed
    assert got["infogan"]["steps"] == prof["gan_steps"] and got["infogan"]["curve"][-1]["step"] == prof["gan_steps"]
    assert "test_accuracy" in got["infogan"]["code_match"] and got["gaia-lc"]["gan_prior"]["frechet"] > 0
    # the GAIA row is the LC actor on GAIA's own bundle, its cost the GAN's and the label set's together
    assert (tmp_path / "gaia-lc-category-s0" / "labelsets" / "category" / "mapper.json").exists()
    assert got["gaia-lc"]["train_cpu_s"] > got["gaia-lc"]["gan_cpu_s"] > 0
    # what GAIA's encoder and decoder keep, per class, beside the VAE's (read from the shipped actor's row)
    assert len(got["gaia-lc"]["reconstruction_recall"]) == 10 and 0 <= got["gaia-lc"]["reconstruction_accuracy"] <= 1
    # a bench stopped midway resumes: the same configuration is not trained again, a changed one is
    from bench.gan_parts import train_sampler_part

    weights = tmp_path / "infogan-category-s0" / "infogan.safetensors"
    before = weights.stat().st_mtime_ns
    train_sampler_part("fashion-mnist", "infogan", judged_bundle, spec, prof, weights.parent, 0)
    assert weights.stat().st_mtime_ns == before
    more = {**prof, "gan_steps": prof["gan_steps"] + 1}
    assert train_sampler_part("fashion-mnist", "infogan", judged_bundle, spec, more, weights.parent, 0)["steps"] == 11
    efficiency = triplegan_labels("fashion-mnist", judged_bundle, spec, prof, tmp_path)
    assert [e["share"] for e in efficiency] == [0.1, 1.0]
    assert efficiency[0]["labelled"] == 64 and efficiency[1]["labelled"] > 600
    entry = {
        "commands": ["test"],
        "profile": "smoke",
        "profile_settings": prof,
        "skipped": [],
        "label_set": "category",
        "quality_raw": rows + [{**got["actor-l0"], "method": "actor"}],
        "quality": aggregate(rows),
        "new_label_set": None,
        "wall_minutes": 1.0,
        "machine": "test",
        "triplegan_labels": efficiency,
    }
    text = markdown({"datasets": {"fashion-mnist": entry}})
    assert "### GAN systems" in text and "**InfoGAN**" in text and "**GAIA**" in text and "| 10% | 64 |" in text
    assert "| backbone | accuracy | tshirt_top |" in text and "| VAE |" in text and "| GAIA |" in text


def test_a_stopped_gan_run_resumes_from_its_checkpoint_as_if_never_stopped(judged_bundle, tmp_path, monkeypatch):
    """Triple-GAN with few labels: three optimisers and two data streams (labelled and unlabelled batches), all of
    which must come back for the resumed run to equal an uninterrupted one."""
    from safetensors.torch import load_file

    import training.train_baseline as tb

    monkeypatch.setattr(tb, "CKPT_EVERY", 2)
    straight = train(judged_bundle, "triplegan", tmp_path / "a", labelled=50)
    real_save = tb.save_checkpoint

    def save_then_die(directory, model, opts, meta, gen):
        real_save(directory, model, opts, meta, gen)
        if meta["step"] == 4:
            raise KeyboardInterrupt("killed right after the step-4 checkpoint")

    monkeypatch.setattr(tb, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(judged_bundle, "triplegan", tmp_path / "b", labelled=50)
    assert not (tmp_path / "b" / "triplegan.safetensors").exists() and (tmp_path / "b" / "checkpoint.json").exists()
    monkeypatch.setattr(tb, "save_checkpoint", real_save)
    resumed = train(judged_bundle, "triplegan", tmp_path / "b", labelled=50, resume=True)
    a, b = load_file(str(straight / "triplegan.safetensors")), load_file(str(resumed / "triplegan.safetensors"))
    # Measured (seed 0, on 1 and 2 threads): max |difference| 0.0; tolerance 1e-6.
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not (resumed / "checkpoint.json").exists()  # the artifact supersedes it
    man = json.loads((resumed / "triplegan.json").read_text())
    assert man["training"] == json.loads((straight / "triplegan.json").read_text())["training"]
    assert "resume" not in man["training"] and man["metrics"]["cpu_seconds"] > 0


def test_a_checkpoint_of_other_settings_is_not_resumed(judged_bundle, tmp_path, monkeypatch):
    import training.train_baseline as tb

    monkeypatch.setattr(tb, "CKPT_EVERY", 2)
    monkeypatch.setattr(tb, "remove_checkpoint", lambda out: None)  # keep the 6-step run's last checkpoint (step 4)
    train(judged_bundle, "bigan", tmp_path / "r", steps=6)
    seen = []
    monkeypatch.setattr(tb, "load_checkpoint", lambda *a: seen.append(a) or {})
    train(judged_bundle, "bigan", tmp_path / "r", steps=6, lr=1e-4, resume=True)
    assert seen == []  # another learning rate: trained afresh, the checkpoint never loaded
    log = [json.loads(line) for line in (tmp_path / "r" / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [6]


def test_a_torn_checkpoint_pair_is_refused(tmp_path):
    """Tensors and JSON are two writes: a stop between them leaves the pair from different steps."""
    from models.artifacts import ArtifactError, write_json
    from models.checkpoint import load_checkpoint, save_checkpoint

    model = torch.nn.Linear(3, 2)
    opt = {"g": torch.optim.Adam(model.parameters())}
    model(torch.ones(1, 3)).sum().backward()
    opt["g"].step()
    save_checkpoint(tmp_path, model, opt, {"step": 7})
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    assert load_checkpoint(tmp_path, model, opt)["step"] == 7
    write_json(tmp_path / "checkpoint.json", {**meta, "step": 6})
    with pytest.raises(ArtifactError, match="different steps"):
        load_checkpoint(tmp_path, model, opt)
