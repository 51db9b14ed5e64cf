"""``lcs eval``: score a sampler on a bundle with the judge, and draw the figures people look at.

Conditional quality: requested label rows are drawn from the test split's label table (so
requests follow the data's joint distribution); each is decoded and judged. Reported per
attribute (accuracy/precision/recall/F1, raw and ÷ the judge's accuracy on real test images),
exact match of whole rows and of 3-attribute specs (3 random attributes of the row), and the
Fréchet distance in judge features to real training images with a bootstrap 95% interval.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from conditioning.images import batch_to_float, save_grid
from conditioning.runtime import resolve_device, resolve_precision
from conditioning.specs import SpecError, resolve
from evaluation.judging import decide, predict
from evaluation.reconstruction import evaluate_mse, reconstruction_scores
from evaluation.samplers import build_sampler
from evaluation.statistics import binary_metrics, frechet_with_ci, precision_recall
from models.judge import load_judge
from models.vae import VAE, load_vae
from training.data import LabelSet, load_dataset

log = logging.getLogger("lcs.eval")


def sigma_tradeoff_figure(vae_a: VAE, vae_b: VAE, images: np.ndarray, path: Path, n: int = 12, seed: int = 0) -> Path:
    """Rows: real test images; reconstructions by A and B; prior samples of A and B (same z when sizes match)."""
    x = batch_to_float(images[:n])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        rows = [x, vae_a.decode(vae_a.encode(x)[0]), vae_b.decode(vae_b.encode(x)[0])]
        za = torch.randn(n, vae_a.cfg.latent_dim, generator=g)
        zb = za if vae_b.cfg.latent_dim == vae_a.cfg.latent_dim else torch.randn(n, vae_b.cfg.latent_dim, generator=g)
        rows += [vae_a.decode(za), vae_b.decode(zb)]
    return save_grid(torch.cat(rows), path, nrow=n, scale=2)


def open_bundle(bundle: str | Path, device: str, out: str | Path):
    """What every evaluation starts from: the output dir (default BUNDLE/eval), device, VAE, judge and dataset."""
    bundle = Path(bundle)
    out = Path(out) if out else bundle / "eval"
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    vae, vman = load_vae(bundle, dev)
    judge, jman = load_judge(bundle, dev)
    data = load_dataset(vman["dataset"]["name"], **vman["dataset"]["params"])
    return bundle, out, dev, vae, vman, judge, jman, data


def single_attribute_requests(
    smp, ls: LabelSet, rows: torch.Tensor, counts: torch.Tensor, n: int, gen: torch.Generator, judge, jman, dev
) -> dict[str, dict[str, float]]:
    """Per attribute: the share of ``n`` requests naming only it as on (``single_on``) whose image the judge reads
    with it, and likewise off (``single_off``). The other attributes are drawn as the server draws them
    (``specs.resolve`` on the training rows); the mask names the one attribute. A value no training row has
    is skipped."""
    out: dict[str, dict[str, float]] = {}
    for j, a in enumerate(ls.attrs):
        for v, key in ((1, "single_on"), (0, "single_off")):
            try:
                y = resolve({a: v}, ls.attrs, rows, n, gen, ls.kind, counts=counts)
            except SpecError:
                continue
            mask = torch.zeros(y.shape, dtype=torch.bool)
            mask[:, j] = True
            got = decide(predict(judge, smp.images(y, gen, dev, mask), dev)[0], jman, ls.attrs)
            out.setdefault(a, {})[key] = float((got[:, j] == v).mean())
    return out


def over_reconstruction(m: dict) -> dict[str, float]:
    """A sampler's hit rates ÷ the same rates on reconstructions of real test images (the decoder's ceiling):
    asked on ÷ reconstruction recall, asked off ÷ reconstruction specificity."""
    rec = m["reconstruction"]
    pairs = {
        "recall": ("recall", "recall"),
        "specificity": ("specificity", "specificity"),
        "balanced_accuracy": ("balanced_accuracy", "balanced_accuracy"),
        "single_on": ("single_on", "recall"),
        "single_off": ("single_off", "specificity"),
    }
    return {k: m[a] / rec[b] for k, (a, b) in pairs.items() if a in m and rec.get(b)}


def summary(per_attr: dict, key: str) -> dict | None:
    """Mean and worst of a per-attribute hit rate, raw and ÷ reconstruction; None where it was not measured."""
    vals = {a: m[key] for a, m in per_attr.items() if key in m}
    if not vals:
        return None
    over = {a: per_attr[a]["over_reconstruction"][key] for a in vals if key in per_attr[a]["over_reconstruction"]}
    worst = min(vals, key=vals.get)
    return {
        "mean": float(np.mean(list(vals.values()))),
        "min": vals[worst],
        "min_attribute": worst,
        "mean_over_reconstruction": float(np.mean(list(over.values()))) if over else None,
    }


def evaluate(
    bundle: str | Path,
    sampler: str = "prior",
    label_set: str = "",
    n: int = 10000,
    n_spec3: int = 2000,
    n_single: int = 200,
    seed: int = 0,
    device: str = "auto",
    out: str | Path = "",
    compare_vae: str = "",
    boots: int = 50,
    command: list[str] | None = None,
    artifact: str | Path = "",
) -> dict:
    if min(n, n_spec3, n_single) < 1:
        raise ValueError(f"n, n_spec3 and n_single must be at least 1, got {n}, {n_spec3}, {n_single}")
    started = time.time()
    bundle, out, dev, vae, vman, judge, jman, data = open_bundle(bundle, device, out)
    label_set = label_set or next(iter(data.label_sets))
    if label_set not in data.label_sets:
        raise ValueError(f"label set {label_set!r} not in {sorted(data.label_sets)}")
    ls = data.label_sets[label_set]
    rng = np.random.default_rng(seed)
    test_labels = data.columns(ls.attrs)[data.indices("test")]
    requested = test_labels[rng.integers(len(test_labels), size=n)]
    smp = build_sampler(sampler, bundle, label_set, vae, artifact)
    gen = torch.Generator().manual_seed(seed)

    # Full-row requests.
    images = smp.images(torch.from_numpy(requested).float(), gen, dev)
    probs, feats = predict(judge, images, dev)
    got = decide(probs, jman, ls.attrs)
    ceiling = jman["ceiling"]["per_attribute"]
    per_attr = {}
    for j, a in enumerate(ls.attrs):
        m = binary_metrics(got[:, j], requested[:, j])
        m["requested_rate"] = float(requested[:, j].mean())
        m["ceiling_accuracy"] = ceiling[a]["accuracy"]
        m["accuracy_over_ceiling"] = m["accuracy"] / ceiling[a]["accuracy"]
        per_attr[a] = m
    exact = float((got == requested).all(1).mean())
    ceil_set = jman["ceiling"]["label_sets"][label_set]
    # Headline: top-1 accuracy for a categorical set, mean attribute accuracy for a binary one (as in the ceiling).
    mean_acc = exact if ls.kind == "categorical" else float(np.mean([m["accuracy"] for m in per_attr.values()]))
    ceiling_mean = ceil_set["accuracy"]
    result = {
        "bundle": str(bundle),
        "sampler": sampler,
        "conditional": smp.conditional,
        "label_set": ls.to_json(),
        "n": n,
        "seed": seed,
        "per_attribute": per_attr,
        "mean_accuracy": mean_acc,
        "ceiling_mean_accuracy": ceiling_mean,
        "mean_accuracy_over_ceiling": mean_acc / ceiling_mean,
        "exact_match": exact,
        "ceiling_exact_match": ceil_set["exact_match"],
    }

    # 3-attribute specs: score only the three named attributes (binary label sets with >= 3 attributes).
    if ls.kind == "binary" and len(ls.attrs) >= 3:
        rows = test_labels[rng.integers(len(test_labels), size=n_spec3)]
        picked = np.stack([rng.choice(len(ls.attrs), 3, replace=False) for _ in range(n_spec3)])
        named = np.zeros(rows.shape, dtype=bool)  # the request names these three, as a user's spec would
        np.put_along_axis(named, picked, True, 1)
        images3 = smp.images(torch.from_numpy(rows).float(), gen, dev, torch.from_numpy(named))
        got3 = decide(predict(judge, images3, dev)[0], jman, ls.attrs)
        hit = np.take_along_axis(got3 == rows, picked, 1).all(1)
        result["exact_match_3attr"] = float(hit.mean())
        result["n_3attr"] = n_spec3

    # Single-attribute requests, as a user asks (GET /sample?attrs=smiling): each attribute on alone and off alone.
    train_idx = data.indices("train")
    if smp.conditional and n_single:
        rows, counts = torch.unique(torch.from_numpy(data.columns(ls.attrs)[train_idx]), dim=0, return_counts=True)
        for a, hits in single_attribute_requests(smp, ls, rows, counts, n_single, gen, judge, jman, dev).items():
            per_attr[a].update(hits)
        result["n_single"] = n_single

    if getattr(smp, "mode", "") in ("optimize", "energy"):  # share of every row that met its stop rule
        result["converged"] = float(np.mean(smp.converged))

    # Fréchet distance in judge features: samples vs real training images, and real test vs train as the floor.
    real_idx = np.sort(rng.choice(train_idx, size=min(n, len(train_idx)), replace=False))
    _, real_feats = predict(judge, data.images[real_idx], dev)
    _, test_feats = predict(judge, data.images[data.indices("test")], dev)
    result["frechet"] = frechet_with_ci(feats, real_feats, boots=boots, seed=seed)
    result["frechet_real_test_vs_train"] = frechet_with_ci(test_feats, real_feats, boots=boots, seed=seed)
    result["precision_recall"] = precision_recall(real_feats, feats, k=3)
    result["reconstruction_mse_test"] = evaluate_mse(vae, data.images[data.indices("test")], dev)
    # The decoder's own ceiling: the judge on reconstructions of real test images. No latent sampler
    # can beat it by much, since every sample goes through the same decoder.
    test_images = data.images[data.indices("test")]
    rec, rec_got = reconstruction_scores(vae, judge, jman, test_images, test_labels, ls.attrs, dev)
    rec_acc = (rec_got == test_labels).mean(0)
    for j, a in enumerate(ls.attrs):
        per_attr[a]["reconstruction_accuracy"] = float(rec_acc[j])
        per_attr[a]["reconstruction"] = rec[a]
    for m in per_attr.values():
        m["over_reconstruction"] = over_reconstruction(m)
    result["asked_on"] = summary(per_attr, "single_on")
    result["asked_off"] = summary(per_attr, "single_off")
    result["reconstruction_mean_accuracy"] = float(
        (rec_got == test_labels).all(1).mean() if ls.kind == "categorical" else rec_acc.mean()
    )
    result["decoder_fingerprint"] = vman["decoder_fingerprint"]
    result["engine"] = f"{dev.type}/{resolve_precision(dev)}"  # what the samples were decoded on
    result["seconds"] = round(time.time() - started, 1)
    result["command"] = command or sys.argv

    stem = f"{sampler}-{label_set}"
    save_grid(images[:64], out / f"samples-{stem}.png", nrow=8, scale=2)
    if compare_vae:
        other, _ = load_vae(compare_vae, "cpu")
        result["sigma_tradeoff"] = {
            "figure": str(
                sigma_tradeoff_figure(
                    vae.cpu(), other, data.images[data.indices("test")], out / "sigma_tradeoff.png", seed=seed
                )
            ),
            "rows": [
                "real test images",
                f"reconstructions σx={vae.cfg.sigma_x}",
                f"reconstructions σx={other.cfg.sigma_x}",
                f"prior samples σx={vae.cfg.sigma_x}",
                f"prior samples σx={other.cfg.sigma_x}",
            ],
            "reconstruction_mse_test": {
                str(vae.cfg.sigma_x): result["reconstruction_mse_test"],
                str(other.cfg.sigma_x): evaluate_mse(other, data.images[data.indices("test")], torch.device("cpu")),
            },
        }
    (out / f"eval-{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(format_table(result))
    log.info("wrote %s", out / f"eval-{stem}.json")
    return result


def format_table(r: dict) -> str:
    """Per attribute, the rates that show a miss: asked on / asked off in test-row requests and alone, beside the
    decoder's own (reconstructions of real test images) and the single-attribute rates ÷ it."""
    lines = [
        f"sampler={r['sampler']} label_set={r['label_set']['name']} n={r['n']} (alone: {r.get('n_single', 0)} each)",
        f"{'attribute':<14} {'req':>5} {'acc':>6} | {'rows: on':>8} {'off':>6} {'bal':>6} | {'alone: on':>9} "
        f"{'off':>6} | {'decoder: on':>11} {'off':>6} | {'alone ÷ decoder: on':>19} {'off':>6}",
    ]
    na = lambda v: f"{v:.3f}" if v is not None else "—"  # noqa: E731
    for a, m in r["per_attribute"].items():
        rec, over = m.get("reconstruction", {}), m.get("over_reconstruction", {})
        lines.append(
            f"{a:<14} {m['requested_rate']:>5.2f} {m['accuracy']:>6.3f} | {m['recall']:>8.3f} {m['specificity']:>6.3f} "
            f"{m['balanced_accuracy']:>6.3f} | {na(m.get('single_on')):>9} {na(m.get('single_off')):>6} | "
            f"{na(rec.get('recall')):>11} {na(rec.get('specificity')):>6} | {na(over.get('single_on')):>19} "
            f"{na(over.get('single_off')):>6}"
        )
    for key, label in (("asked_on", "asked on alone"), ("asked_off", "asked off alone")):
        if r.get(key):
            q = r[key]
            lines.append(
                f"{label}: mean {q['mean']:.3f}, worst {q['min']:.3f} ({q['min_attribute']}); "
                f"mean ÷ decoder {na(q['mean_over_reconstruction'])}"
            )
    lines.append(
        f"{'top-1' if r['label_set']['kind'] == 'categorical' else 'mean'} accuracy {r['mean_accuracy']:.4f} "
        f"(ceiling {r['ceiling_mean_accuracy']:.4f}, ratio {r['mean_accuracy_over_ceiling']:.3f}); "
        f"exact match {r['exact_match']:.4f} (ceiling {r['ceiling_exact_match']:.4f})"
        + (f"; 3-attr exact match {r['exact_match_3attr']:.4f}" if "exact_match_3attr" in r else "")
    )
    f, fr = r["frechet"], r["frechet_real_test_vs_train"]
    lines.append(
        f"judge on reconstructions of real test images (the decoder's ceiling): {r['reconstruction_mean_accuracy']:.4f}"
    )
    pr = r["precision_recall"]
    lines.append(
        f"Fréchet (judge features) {f['fd']:.3f} [{f['ci95'][0]:.3f}, {f['ci95'][1]:.3f}]; "
        f"real test vs train {fr['fd']:.3f}; "
        f"precision {pr['precision']:.3f} recall {pr['recall']:.3f} (k={pr['k']}); "
        f"reconstruction MSE {r['reconstruction_mse_test']:.5f}"
    )
    return "\n".join(lines)
