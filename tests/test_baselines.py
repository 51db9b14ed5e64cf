"""Baselines: CVAE (+ learned prior), CVAE-GAN, attribute vectors, latent GMM — build, train, save/load,
sample, fine-tune for a wider label set, and score through ``lcs eval`` on the tiny fixture."""

import pytest
import torch

from evaluation.samplers import build_sampler, fill_columns
from models.attrvec import AttributeVectors, AttrVecConfig, load_attrvec
from models.cvae import CVAE, CVAEConfig
from models.cvaegan import CVAEGAN, CVAEGANConfig, load_conditional
from models.latent_gmm import LatentGMM, LatentGMMConfig, load_latent_gmm
from models.vae import VAEConfig
from training.evaluate import evaluate
from training.train_baseline import TrainBaselineConfig, train_baseline, widen_labels

BACKBONE = VAEConfig(channels=1, image_size=28, latent_dim=6, width=8)


def batch(n=16, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), (torch.rand(n, k, generator=g) > 0.5).float()


def losses_after_stepping(model, x, y, group):
    """Every group's loss on (x, y) before and after one Adam step of ``group`` alone (same noise both times)."""
    opt = torch.optim.Adam(model.optim_groups()[group], lr=1e-3)

    def run(step):
        torch.manual_seed(0)
        out = {}
        for g, loss, _ in model.step_losses(x, y):
            out[g] = loss.item()
            if step and g == group:
                opt.zero_grad()
                loss.backward()
                opt.step()
        return out

    before = run(step=True)
    return before, run(step=False)


@pytest.mark.parametrize("learned_prior", [False, True])
def test_cvae_step_lowers_its_loss_and_samples_images(learned_prior):
    torch.manual_seed(0)
    m = CVAE(CVAEConfig(BACKBONE, ["a", "b", "c"], learned_prior=learned_prior))
    x, y = batch()
    before, after = losses_after_stepping(m, x, y, "model")
    # One Adam step on the same batch and noise; with torch.manual_seed(k) and batch(seed=k) for k = 0-19 the loss
    # fell every time, by a relative 1e-4 to 1.2e-3 (plain and learned prior): deterministic, not a coin.
    assert after["model"] < before["model"]
    z = m.sample_latents(y, torch.Generator().manual_seed(1))
    assert z.shape == (16, 6) and m.decode(z, y).shape == (16, 1, 28, 28)
    if learned_prior:  # p(z|y) depends on y: two label rows get different prior means
        mu, _ = m.prior_params(torch.tensor([[0.0, 0, 0], [1, 1, 1]]))
        assert not torch.allclose(mu[0], mu[1])


def test_cvaegan_each_step_lowers_its_own_loss():
    torch.manual_seed(0)
    m = CVAEGAN(CVAEGANConfig(CVAEConfig(BACKBONE, ["a", "b", "c"]), feature_dim=32))
    x, y = batch()
    for group in ("discriminator", "classifier", "generator"):
        before, after = losses_after_stepping(m, x, y, group)
        # Seeds 0-19 as above: every group fell every time, by a relative 1e-4 (generator) to 5e-3 (classifier).
        assert after[group] < before[group], group
    assert all(p.requires_grad for p in m.parameters())  # D and C are unfrozen after the generator's loss
    with pytest.raises(ValueError, match="standard normal prior"):
        CVAEGAN(CVAEGANConfig(CVAEConfig(BACKBONE, ["a"], learned_prior=True)))


def test_widened_cvae_keeps_old_outputs_when_new_labels_are_zero():
    torch.manual_seed(0)
    old = CVAE(CVAEConfig(BACKBONE, ["a", "b"], learned_prior=True)).eval()
    new = CVAE(CVAEConfig(BACKBONE, ["a", "b", "new"], learned_prior=True)).eval()
    widen_labels(new, ["a", "b"], ["a", "b", "new"], old.state_dict())
    x, y = batch(8, 2)
    y3 = torch.cat([y, torch.zeros(8, 1)], 1)
    z = torch.randn(8, 6)
    assert torch.allclose(old.decode(z, y), new.decode(z, y3), atol=1e-6)
    assert torch.allclose(old.encode(x, y)[0], new.encode(x, y3)[0], atol=1e-5)
    assert torch.allclose(old.prior_params(y)[0], new.prior_params(y3)[0], atol=1e-6)
    with pytest.raises(ValueError, match="lacks"):
        widen_labels(new, ["a", "gone"], ["a", "b", "new"], old.state_dict())


def test_attribute_vectors_recover_a_planted_direction():
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(4000, 2, generator=g) > 0.5).float()
    direction = torch.tensor([[3.0, 0, 0, 0], [0, 0, -2, 0]])
    mu = torch.randn(4000, 4, generator=g) * 0.5 + y @ direction
    for method in ("mean", "lsq"):
        v = AttributeVectors(AttrVecConfig(4, ["a", "b"], method=method)).fit(mu, y)
        assert torch.allclose(v.vectors, direction, atol=0.1), method
    edited = v.edit(mu[:5], y[:5], 1 - y[:5])
    assert torch.allclose(edited - mu[:5], (1 - 2 * y[:5]) @ v.vectors)
    assert v.sample(y[:7], g).shape == (7, 4)
    with pytest.raises(ValueError, match="method"):
        AttributeVectors(AttrVecConfig(4, ["a"], method="pca"))


def test_latent_gmm_samples_each_condition_from_its_own_cluster():
    g = torch.Generator().manual_seed(0)
    rows = torch.tensor([[0.0, 0], [1, 0], [0, 1]])
    y = rows[torch.randint(3, (3000,), generator=g)]
    centres = torch.tensor([[0.0, 0, 0], [5, 0, 0], [0, 5, 0]])
    z = centres[(y @ torch.tensor([1.0, 2])).long()] + 0.3 * torch.randn(3000, 3, generator=g)
    m = LatentGMM.fit(LatentGMMConfig(3, ["a", "b"], components=2, min_count=20), z, y)
    assert m.cfg.n_rows == 3
    for i, row in enumerate(rows):
        s = m.sample(row.expand(500, 2), g)
        # With data and fit seeds k = 0-4: max |mean - centre| at most 0.044, std 0.29..0.31; bounds 0.15, 0.2..0.4.
        assert torch.allclose(s.mean(0), centres[i], atol=0.15) and 0.2 < s.std(0).mean() < 0.4
    # a row never seen ([1, 1]) falls back to a nearest seen row: one differing attribute
    assert (m.rows[m.row_index(torch.tensor([[1.0, 1]]))].float() - torch.tensor([1.0, 1])).abs().sum() == 1


def test_fill_columns_keeps_the_request_and_draws_the_rest_from_seen_rows():
    rows = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 1]], dtype=torch.int8)
    counts = torch.tensor([5, 1, 3])
    asked = torch.tensor([[1.0], [0.0], [1.0], [0.0]])  # the 'shoe' column only
    out = fill_columns(asked, ["shoe"], ["c0", "c1", "c2", "shoe"], rows, counts, torch.Generator().manual_seed(0))
    assert torch.equal(out[:, 3], asked[:, 0])
    assert all(any(torch.equal(r, s.float()) for s in rows) for r in out)
    with pytest.raises(ValueError, match="no training row"):
        fill_columns(
            torch.tensor([[1.0, 1.0]]), ["c0", "c1"], ["c0", "c1", "c2", "shoe"], rows, counts, torch.Generator()
        )


@pytest.mark.parametrize("method", ["cvae", "cvae-cmma", "cvae-gan"])
def test_image_baselines_train_save_load_and_evaluate(judged_bundle, method, tmp_path):
    seen = []
    out = train_baseline(
        TrainBaselineConfig(
            bundle=str(judged_bundle),
            method=method,
            label_set="category",
            steps=40,
            batch_size=32,
            device="cpu",
            out=str(tmp_path / method),
        ),
        probe=lambda step, model: seen.append(step) or {"ok": 1},
        probe_every=20,
    )
    model, manifest, extra = load_conditional(out)
    assert manifest["method"] == method and manifest["metrics"]["cpu_seconds"] > 0
    assert [p["step"] for p in manifest["metrics"]["probes"]] == seen == [20, 40]
    assert manifest["metrics"]["params_trained"] == sum(p.numel() for p in model.parameters())
    assert (
        extra["label_rows"].shape == (10, 10)
        and int(extra["label_counts"].sum()) == manifest["metrics"]["labelled_examples"]
    )
    r = evaluate(
        judged_bundle,
        sampler=method,
        label_set="category",
        n=60,
        boots=3,
        device="cpu",
        artifact=out,
        out=tmp_path / "ev",
    )
    assert r["sampler"] == method and 0 <= r["mean_accuracy"] <= 1
    assert 0 <= r["precision_recall"]["precision"] <= 1 and 0 <= r["precision_recall"]["recall"] <= 1


def test_cvae_fine_tuned_for_a_new_label_set_serves_both(judged_bundle, tmp_path):
    base = train_baseline(
        TrainBaselineConfig(
            bundle=str(judged_bundle),
            method="cvae",
            label_set="category",
            steps=10,
            batch_size=32,
            device="cpu",
            out=str(tmp_path / "base"),
        )
    )
    wide = train_baseline(
        TrainBaselineConfig(
            bundle=str(judged_bundle),
            method="cvae",
            label_set="category+footwear",
            steps=10,
            batch_size=32,
            device="cpu",
            init=str(base),
            labelled=100,
            out=str(tmp_path / "wide"),
        )
    )
    model, manifest, extra = load_conditional(wide)
    assert model.cfg.attr_names[-1] == "footwear" and manifest["metrics"]["labelled_examples"] == 100
    smp = build_sampler("cvae", judged_bundle, "footwear", None, wide)  # its own decoder: no VAE needed
    imgs = smp.images(torch.tensor([[1.0], [0.0], [1.0]]), torch.Generator().manual_seed(0), torch.device("cpu"))
    assert imgs.shape == (3, 1, 28, 28) and imgs.min() >= 0 and imgs.max() <= 1
    with pytest.raises(ValueError, match="lacks label set"):
        build_sampler("cvae", judged_bundle, "footwear", None, base)
    with pytest.raises(ValueError, match="is a CVAE"):
        train_baseline(
            TrainBaselineConfig(
                bundle=str(judged_bundle),
                method="cvae-gan",
                label_set="category",
                steps=1,
                device="cpu",
                init=str(base),
                out=str(tmp_path / "x"),
            )
        )


@pytest.mark.parametrize("method", ["attrvec-mean", "attrvec-lsq", "gmm"])
def test_latent_baselines_fit_on_the_latent_table_and_evaluate(judged_bundle, method, tmp_path):
    out = train_baseline(
        TrainBaselineConfig(bundle=str(judged_bundle), method=method, label_set="category", out=str(tmp_path / method))
    )
    model, manifest = (load_latent_gmm if method == "gmm" else load_attrvec)(out)
    assert manifest["decoder_fingerprint"] and manifest["metrics"]["params_stored"] > 0
    r = evaluate(
        judged_bundle,
        sampler=method,
        label_set="category",
        n=60,
        boots=3,
        device="cpu",
        artifact=out,
        out=tmp_path / "ev",
    )
    assert r["sampler"] == method and 0 <= r["mean_accuracy"] <= 1
    with pytest.raises(ValueError, match="not label set"):
        build_sampler(method, judged_bundle, "footwear", None, out)


def test_unknown_method_and_label_set_are_clear(judged_bundle):
    with pytest.raises(ValueError, match="unknown method"):
        train_baseline(TrainBaselineConfig(bundle=str(judged_bundle), method="pixelcnn"))
    with pytest.raises(ValueError, match="not in fashion-mnist"):
        train_baseline(
            TrainBaselineConfig(bundle=str(judged_bundle), method="cvae", label_set="category+hats", steps=1)
        )
