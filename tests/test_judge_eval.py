import json
from itertools import product

import numpy as np
import pytest
import torch

from evaluation.samplers import SAMPLERS, LatentSampler, build_sampler
from evaluation.statistics import (
    auc,
    best_threshold,
    binary_metrics,
    frechet_distance,
    frechet_with_ci,
    precision_recall,
)
from training.evaluate import evaluate
from training.train_judge import TrainJudgeConfig, train_judge
from training.train_vae import TrainVAEConfig, train_vae


def test_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    target = rng.integers(0, 2, 60)
    pos, neg = scores[target == 1], scores[target == 0]
    brute = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in product(pos, neg)])
    assert auc(scores, target) == pytest.approx(brute)
    assert np.isnan(auc(scores, np.ones(60)))


def test_binary_metrics_and_threshold():
    m = binary_metrics(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
    assert m == {
        "accuracy": 0.5,
        "precision": 0.5,
        "recall": 0.5,
        "specificity": 0.5,
        "balanced_accuracy": 0.5,
        "f1": 0.5,
        "support": 2,
    }
    # planted: 1 of 2 positives kept (recall 0.5), 2 of 3 negatives kept (specificity 2/3)
    m = binary_metrics(np.array([1, 0, 1, 0, 0]), np.array([1, 1, 0, 0, 0]))
    assert (m["recall"], m["specificity"], m["balanced_accuracy"]) == (0.5, 2 / 3, (0.5 + 2 / 3) / 2)
    # no positives at all: recall is undefined, so balanced accuracy is the specificity alone (not halved)
    assert binary_metrics(np.array([0, 1, 0]), np.array([0, 0, 0]))["balanced_accuracy"] == 2 / 3
    probs = np.array([0.1, 0.2, 0.35, 0.4, 0.9])
    t = best_threshold(probs, np.array([0, 0, 0, 1, 1]))
    assert 0.35 < t <= 0.4


def test_hit_rates_over_the_decoder_ceiling_and_their_summary():
    from training.evaluate import over_reconstruction, summary

    m = {
        "recall": 0.4,
        "specificity": 0.9,
        "balanced_accuracy": 0.65,
        "single_on": 0.3,
        "single_off": 0.95,
        "reconstruction": {"recall": 0.5, "specificity": 1.0, "balanced_accuracy": 0.75},
    }
    over = over_reconstruction(m)
    assert over == pytest.approx(
        {"recall": 0.8, "specificity": 0.9, "balanced_accuracy": 0.65 / 0.75, "single_on": 0.6, "single_off": 0.95}
    )
    # an attribute the decoder never draws has no ratio (not a division by zero)
    assert "single_on" not in over_reconstruction({**m, "reconstruction": {**m["reconstruction"], "recall": 0.0}})
    per_attr = {
        "a": {**m, "over_reconstruction": over},
        "b": {"single_on": 0.9, "over_reconstruction": {"single_on": 1.0}},
    }
    q = summary(per_attr, "single_on")
    assert q["mean"] == pytest.approx(0.6) and q["min"] == 0.3 and q["min_attribute"] == "a"
    assert q["mean_over_reconstruction"] == pytest.approx(0.8)
    assert summary(per_attr, "single_off")["min_attribute"] == "a" and summary({}, "single_on") is None


def test_frechet_distance_known_values():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    shifted = a + np.array([2.0, 0, 0])
    assert frechet_distance(a, shifted) == pytest.approx(4.0, rel=1e-6)
    scaled = rng.normal(size=(4000, 3)) * 2  # N(0, I) vs N(0, 4I): 3 * (1 + 4 - 2*2) = 3
    r = frechet_with_ci(a, scaled, boots=20)
    assert r["fd"] == pytest.approx(3.0, abs=0.3)
    assert r["ci95"][0] <= r["fd"] <= r["ci95"][1]


def test_judge_trains_without_positive_weights(fashion_root, tmp_path):
    """pos_weight_cap 0 turns the class balancing off (the avatars judge needs it off to learn Smiling)."""
    cfg = TrainJudgeConfig(
        dataset="fashion-mnist",
        dataset_params={"root": str(fashion_root)},
        out=str(tmp_path),
        width=8,
        max_steps=3,
        batch_size=32,
        device="cpu",
        threads=1,
        pos_weight_cap=0,
    )
    man = json.loads((train_judge(cfg) / "judge.json").read_text())
    assert man["training"]["pos_weight_cap"] == 0 and set(man["thresholds"]) == set(man["config"]["attr_names"])


@pytest.fixture(scope="module")
def tiny_bundle(tiny_vae, fashion_root, seed):
    out = tiny_vae
    params = {"root": str(fashion_root)}
    train_judge(
        TrainJudgeConfig(
            dataset="fashion-mnist",
            dataset_params=params,
            out=str(out),
            width=16,
            epochs=10,
            batch_size=32,
            device="cpu",
            seed=seed,
            threads=1,
        )
    )
    return out


def test_judge_learns_the_visible_class_and_records_a_ceiling(tiny_bundle):
    m = json.loads((tiny_bundle / "judge.json").read_text())
    assert m["arch"] == "resnet-judge-v1"
    ceiling = m["ceiling"]
    # The fixture's class is a bright band at a class-specific height: easy, so the ceiling is high.
    # Measured over seeds 0-9 (LCS_TEST_SEED): min 0.62, max 0.995 (chance 0.1); threshold 0.5.
    assert ceiling["label_sets"]["category"]["accuracy"] > 0.5
    assert set(ceiling["per_attribute"]) >= {"sandal", "footwear", "upper_body"}
    assert all(0.0 < t < 1.0 for t in m["thresholds"].values())


class OracleSampler(LatentSampler):
    """Encodes a real test image of the requested class: a conditional sampler that should score high."""

    name, conditional = "oracle", True

    def __init__(self, bundle, vae):
        from models.vae import load_vae

        super().__init__(vae)
        from conditioning.images import batch_to_float
        from training.data import load_dataset

        _, man = load_vae(bundle)
        data = load_dataset(man["dataset"]["name"], **man["dataset"]["params"])
        test = data.indices("test")
        cls = data.columns(data.label_sets["category"].attrs)[test].argmax(1)
        with torch.no_grad():
            self.z_by_class = [vae.encode(batch_to_float(data.images[test[cls == c]]))[0] for c in range(10)]

    def sample(self, labels, generator, mask=None):
        out = []
        for row in labels:
            zs = self.z_by_class[int(row.argmax())]
            out.append(zs[torch.randint(len(zs), (1,), generator=generator)][0])
        return torch.stack(out)


def test_eval_prior_vs_conditional_oracle(tiny_bundle, monkeypatch):
    prior = evaluate(tiny_bundle, sampler="prior", label_set="category", n=300, boots=5, device="cpu")
    assert prior["label_set"]["kind"] == "categorical"
    # Measured over seeds 0-9: prior accuracy min 0.077, max 0.097; prior FD min 411 vs real test-vs-train FD
    # max 0.36; reconstruction MSE min 0.0021, max 0.0023; thresholds 0.5, the real FD, 0.1.
    assert 0.0 <= prior["mean_accuracy"] < 0.5  # unconditional: near chance (0.1) for 10 classes
    assert prior["frechet"]["fd"] > prior["frechet_real_test_vs_train"]["fd"] >= 0
    assert 0 < prior["reconstruction_mse_test"] < 0.1
    assert (tiny_bundle / "eval" / "eval-prior-category.json").exists()
    assert (tiny_bundle / "eval" / "samples-prior-category.png").exists()

    assert "single_on" not in prior["per_attribute"]["sandal"] and prior["asked_on"] is None  # unconditional

    monkeypatch.setitem(SAMPLERS, "oracle", lambda bundle, ls, vae, artifact="": OracleSampler(bundle, vae))
    oracle = evaluate(tiny_bundle, sampler="oracle", label_set="category", n=300, n_single=40, boots=5, device="cpu")
    # Each class asked alone: the oracle returns a real image of it, so the judge reads it as often as it reads the
    # reconstructions. Measured: mean asked-on hit rate 0.90 (seed 0), 1.0 (seed 1); chance is 0.1, and the oracle's
    # full-row accuracy, which this follows, stays >= 0.46 above the prior's over seeds 0-9; threshold 0.3.
    assert oracle["n_single"] == 40 and set(oracle["per_attribute"]["sandal"]) >= {"single_on", "single_off"}
    assert oracle["asked_on"]["mean"] > 0.3, oracle["asked_on"]
    # Measured over seeds 0-9: oracle - prior min 0.46, max 0.92 (lowest where the judge is weakest); threshold 0.3.
    assert oracle["mean_accuracy"] > prior["mean_accuracy"] + 0.3
    for m in oracle["per_attribute"].values():
        assert 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1 and 0 <= m["f1"] <= 1


def test_eval_binary_label_set_and_sigma_figure(tiny_bundle, fashion_root, tmp_path):
    other = train_vae(
        TrainVAEConfig(
            dataset="fashion-mnist",
            dataset_params={"root": str(fashion_root)},
            out=str(tmp_path),
            latent_dim=8,
            width=8,
            sigma_x=1.0,
            max_steps=5,
            batch_size=32,
            device="cpu",
        )
    )
    r = evaluate(
        tiny_bundle, label_set="footwear", n=200, boots=5, device="cpu", compare_vae=str(other), out=tmp_path / "ev"
    )
    assert set(r["per_attribute"]) == {"footwear"} and 0 <= r["exact_match"] <= 1
    assert "exact_match_3attr" not in r  # one attribute: no 3-attribute specs
    assert set(r["sigma_tradeoff"]["reconstruction_mse_test"]) == {"0.1", "1.0"}
    rec = r["per_attribute"]["footwear"]["reconstruction"]  # the decoder's ceiling for this attribute
    assert rec["accuracy"] == r["per_attribute"]["footwear"]["reconstruction_accuracy"]
    # Measured over seeds 0-9: reconstruction recall 1.0 every time (specificity min 0.60, max 0.86); threshold 0.5.
    assert rec["support"] == 60 and 0 <= rec["specificity"] <= 1 and rec["recall"] > 0.5  # 3 of 10 test classes
    assert (tmp_path / "ev" / "sigma_tradeoff.png").exists()


def test_precision_recall_separate_realism_from_coverage():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(1500, 6))
    same = precision_recall(real, rng.normal(size=(1500, 6)))
    collapsed = precision_recall(real, 0.2 * rng.normal(size=(1500, 6)))  # realistic but covers little
    off = precision_recall(real, rng.normal(size=(1500, 6)) + 4)  # covers nothing real
    assert same["precision"] > 0.75 and same["recall"] > 0.75
    assert collapsed["precision"] > 0.95 and collapsed["recall"] < 0.2
    assert off["precision"] < 0.05 and off["recall"] < 0.05


def test_unknown_sampler_and_label_set_are_clear(tiny_bundle):
    with pytest.raises(ValueError, match="unknown sampler"):
        build_sampler("gan", tiny_bundle, "category", None)
    with pytest.raises(ValueError, match="label set 'hats'"):
        evaluate(tiny_bundle, label_set="hats", n=10, device="cpu")


@pytest.fixture(scope="module")
def lc_bundle(tiny_bundle, seed):
    """The tiny bundle with a latent table and trained realism, category and footwear label sets."""
    from training.encode import encode_dataset
    from training.train_labelset import TrainLabelSetConfig, train_labelset

    encode_dataset(tiny_bundle, device="cpu")
    for name in ("realism", "category", "footwear"):
        train_labelset(
            TrainLabelSetConfig(
                bundle=str(tiny_bundle),
                label_set=name,
                width=64,
                depth=2,
                label_embed=16,
                steps=800,
                critic_steps=5,
                batch_size=64,
                lr=1e-3,
                diag_every=200,
                seed=seed,
                threads=1,
            )
        )
    return tiny_bundle


def test_latent_constraint_samplers_through_eval(lc_bundle, tmp_path):
    prior = evaluate(lc_bundle, sampler="prior", label_set="category", n=300, boots=5, device="cpu", out=tmp_path)
    actor = evaluate(lc_bundle, sampler="actor", label_set="category", n=300, boots=5, device="cpu", out=tmp_path)
    # Measured over seeds 0-9: actor - prior min 0.097 (seed 6; 0.35 over seeds 0-4), max 0.90; an untrained
    # (1-step) mapper gives -0.003..0.003; threshold 0.05.
    assert actor["conditional"] and actor["mean_accuracy"] > prior["mean_accuracy"] + 0.05, (
        actor["mean_accuracy"],
        prior["mean_accuracy"],
    )
    # Optimisation mode runs through the same harness (its mechanics are tested on the 2-D mixture; on this
    # tiny VAE it fools D_attr more than it changes the image, which the model card reports for the real bundle).
    opt = evaluate(lc_bundle, sampler="optimize", label_set="category", n=100, boots=5, device="cpu", out=tmp_path)
    assert opt["conditional"] and opt["n"] == 100 and set(opt["per_attribute"]) == set(actor["per_attribute"])
    realism = evaluate(lc_bundle, sampler="realism", label_set="category", n=300, boots=5, device="cpu", out=tmp_path)
    # Measured over seeds 0-9: realism FD / prior FD min 0.05, max 0.25; untrained mapper 0.93..1.07; threshold 0.5.
    assert not realism["conditional"] and realism["frechet"]["fd"] < 0.5 * prior["frechet"]["fd"]
    assert {p.name for p in tmp_path.glob("eval-*.json")} == {
        f"eval-{s}-category.json" for s in ("prior", "actor", "optimize", "realism")
    }


def test_edit_evaluation_and_figures(lc_bundle, tmp_path):
    from training.eval_edits import evaluate_edits
    from training.figures import draw_all

    r = evaluate_edits(lc_bundle, label_set="footwear", n=120, mode="actor", device="cpu", out=tmp_path)
    assert r["n"] == 120 and set(r["per_edit"]) <= {"footwear=0", "footwear=1"}
    assert sum(v["n"] for v in r["per_edit"].values()) == 120
    # The edit moves the class band: the judge sees the asked value far more often than in the plain reconstruction.
    # Measured over seeds 0-9: reached - null min 0.092 (seed 4; a CI machine read 0.083 at seed 0), max 0.43;
    # threshold 0.04. An edit that does nothing reads 0, but an untrained (1-step) mapper already reads 0.00..0.28
    # here: this only catches a no-op edit; the categorical check below is the one an untrained mapper fails.
    assert r["target_reached"] > r["target_in_reconstruction"] + 0.04, (
        r["target_reached"],
        r["target_in_reconstruction"],
    )
    assert (
        r["others_unchanged_vs_original"] is None and r["forced_changes_per_edit"] == 0
    )  # one attribute: nothing else
    assert json.loads((tmp_path / "edits-actor-footwear.json").read_text())["mode"] == "actor"
    assert -1 <= r["identity_cosine"] <= 1 and -1 <= r["identity_cosine_other_images"] <= 1
    # A categorical set: every image asked for a class other than the one D_attr reads in it.
    c = evaluate_edits(lc_bundle, label_set="category", n=120, mode="actor", device="cpu", out=tmp_path)
    assert c["kind"] == "categorical" and sum(v["n"] for v in c["per_edit"].values()) == 120
    # Measured over seeds 0-9: reached - null min 0.10 (seed 5; 0.33 over seeds 0-4), max 0.85; untrained
    # (1-step) mapper -0.03..0.03; threshold 0.05. Latent shift / sigma-bar min 3.3, max 5.9 (untrained 2.2..2.9).
    assert c["target_reached"] > c["target_in_reconstruction"] + 0.05, (
        c["target_reached"],
        c["target_in_reconstruction"],
    )
    assert c["latent_shift_over_sigma_bar"] > 0 and "others_unchanged_vs_original" not in c
    paths = draw_all(lc_bundle, "category", tmp_path / "fig", ["sandal", "-sandal", "trouser"], [], seed=1)
    assert [p.name for p in paths] == ["realism.png", "specs-category.png"]
    from PIL import Image

    # realism: 3 pairs of rows of 12; specs: 3 rows of 10 (28 px images, 2 px borders, scaled 2x)
    assert Image.open(paths[0]).size == (2 * (12 * 30 + 2), 2 * (6 * 30 + 2))
    assert Image.open(paths[1]).size == (2 * (10 * 30 + 2), 2 * (3 * 30 + 2))


def test_identity_is_the_judge_feature_cosine_to_the_reconstruction():
    from training.eval_edits import identity

    class Features(torch.nn.Module):  # a "judge" whose features are the image's mean per channel
        def forward(self, x):
            return torch.zeros(len(x), 1), x.mean((2, 3))

    recon = torch.stack([torch.ones(3, 4, 4), torch.zeros(3, 4, 4)])
    recon[1, 0] = 1.0  # features (1, 1, 1) and (1, 0, 0)
    same = identity(Features(), recon, recon, torch.device("cpu"))
    assert same["identity_cosine"] == pytest.approx(1.0)
    assert same["identity_cosine_other_images"] == pytest.approx(1 / 3**0.5)
