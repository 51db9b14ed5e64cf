"""What the baselines bench shows: the sample grid per dataset (``figure``) and docs/baselines.md (``markdown``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench.protocol import BACKBONE_PARTS, sampler_of
from conditioning.images import save_grid
from evaluation.samplers import build_sampler
from models.artifacts import ArtifactError
from models.vae import load_vae
from training.data import load_dataset

log = logging.getLogger("lcs.bench")


def figure(name: str, bundle: Path, spec: dict, work: Path, methods: list[str], out: Path) -> dict:
    """One row per method, one column per requested label row (the same rows for every method): look, don't read."""
    ls = spec["label_set"]
    vae, vman = load_vae(bundle, "cpu")
    data = load_dataset(vman["dataset"]["name"], **vman["dataset"]["params"])
    table = data.columns(data.label_sets[ls].attrs)[data.indices("train")].astype(np.int8)
    rows, counts = np.unique(table, axis=0, return_counts=True)
    labels = torch.from_numpy(rows[np.argsort(-counts, kind="stable")[:10]]).float()
    if data.label_sets[ls].kind == "categorical":
        labels = labels[labels.argmax(1).argsort()]
    images, drawn = [], []
    for method in methods:
        trained = method not in ("prior", "actor", "optimize")
        try:
            if method in BACKBONE_PARTS:  # the actor on the GAN's own bundle
                on = work / f"{method}-{ls}-s0"
                smp = build_sampler("actor", on, ls, load_vae(on, "cpu")[0])
            else:
                smp = build_sampler(sampler_of(method), bundle, ls, vae, work / f"{method}-{ls}-s0" if trained else "")
        except ArtifactError as e:  # a row measured with another work dir (--only): its model is not in this one
            log.warning("figure: %s left out (%s)", method, e)
            continue
        images.append(smp.images(labels, torch.Generator().manual_seed(0), torch.device("cpu")))
        drawn.append(method)
    path = save_grid(torch.cat(images), out / f"baselines_{name}.png", nrow=len(labels), scale=2)
    attrs = data.label_sets[ls].attrs
    return {
        "figure": path.name,
        "rows": drawn,
        "columns": [",".join(a for a, v in zip(attrs, r.tolist(), strict=True) if v) or "(none)" for r in labels],
    }


def _new_label_set_section(h: dict, quality: list[dict], f: Callable[..., str]) -> list[str]:
    """The "A new label set" section of one dataset (the hold-out), ``quality`` its quality rows (for the images'
    FD); ``f`` formats a number or None."""
    lines: list[str] = []
    lines += [f"### A new label set: `{h['new']}` (served before: `{h['served']}`)", ""]
    if "floor_accuracy" in h:
        lines += [
            f"Floor: unconditional VAE samples score {f(h['floor_accuracy'])} on the requested `{h['new']}` labels "
            "(what a method that ignores them gets). Accuracy here is exact match: every requested attribute "
            "of the label set right (top-1 for a categorical set).",
            "",
        ]
    lines += [
        "| method | final accuracy (last 3 probes) | gain over floor | steps to 95% | CPU-s to 95% "
        "| CPU-s to 95% of the gain | CPU-s total "
        "| FLOPs to 95% | params trained | params stored | drift on served |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k, label in (
        ("lc_l0", "LC, λ_dist 0 (sampling recipe): new mapper, frozen VAE"),
        ("lc", "LC, λ_dist 0.1 (edit recipe)"),
        ("cvae_finetune", "CVAE fine-tuned from the served model"),
        ("cvae_retrain", "CVAE retrained from scratch"),
    ):
        if k not in h:
            continue
        m = h[k]
        lines.append(
            f"| {label} | {f(m['final_accuracy'])} | {f(m.get('gain_over_floor'))} | {m['steps_to_95']} | "
            f"{f(m['cpu_s_to_95'], 1)} | "
            f"{f(m.get('cpu_s_to_95_gain'), 1)} | {f(m['cpu_s_total'], 1)} | "
            f"{m['flops_to_95']:.3g} | {m['params_trained']:,} | {m['params_stored']:,} | {f(m['drift_on_served'])} |"
        )
    ratios = [
        f"{lc} ÷ {ref} = {h[f'R_register_{lc}_vs_{ref}']:.3f}"
        + (f" (to 95% of the gain: {h[f'R_gain_{lc}_vs_{ref}']:.3f})" if f"R_gain_{lc}_vs_{ref}" in h else "")
        for lc in ("lc_l0", "lc")
        for ref in ("cvae_retrain", "cvae_finetune")
        if f"R_register_{lc}_vs_{ref}" in h
    ]
    lines += [""]
    if "R_register" in h:
        lines += [
            f"**R_register = {h['R_register']:.3f}** "
            "(CPU-seconds to 95% of final accuracy, LC ÷ CVAE retrain; target ≤ 0.02). "
            f"All ratios: {'; '.join(ratios)}."
        ]
    lines += _plateaus(h, quality, f)
    eq = h.get("equal_accuracy") or {}
    for ref, label in (("cvae_retrain", "CVAE retrained"), ("cvae_finetune", "CVAE fine-tuned")):
        if ref in eq:
            r = eq[ref]
            lines += [
                f"At equal accuracy ({f(eq['target_accuracy'])}, 95% of LC's final): "
                f"LC needs {f(eq['lc_cpu_s'], 1)} CPU-s; {label} "
                + (
                    f"needs {f(r['cpu_s'], 1)}, **R = {r['ratio']:.3f}**."
                    if r["cpu_s"] is not None
                    else f"never gets there in its {f(r['budget_cpu_s'], 0)} CPU-s, "
                    f"so **R < {r['ratio_upper_bound']:.3f}**."
                )
            ]
    if "cvae_finetune" in h:
        lines += [
            "Served-set accuracy of the CVAE before / after fine-tuning: "
            f"{f(h['cvae_finetune']['served_accuracy_before'])} / "
            f"{f(h['cvae_finetune']['served_accuracy_after'])}."
        ]
    if h.get("label_efficiency"):
        lc_l = "LC (λ_dist 0)" if h["label_efficiency"][0].get("lc_lambda_dist") == 0.0 else "LC (λ_dist 0.1)"
        lines += [
            "",
            "Label efficiency (final accuracy on the new labels):",
            "",
            f"| labelled examples | {lc_l} | CVAE fine-tune |",
            "|---|---|---|",
        ]
        lines += [
            f"| {e['labelled']:,} | {f(e['lc_accuracy'])} | {f(e['cvae_finetune_accuracy'])} |"
            for e in h["label_efficiency"]
        ]
    lines.append("")
    return lines


def _plateaus(h: dict, quality: list[dict], f: Callable[..., str]) -> list[str]:
    """How to read R_register when the methods level off far apart: it divides the cost of reaching 95% of each
    method's *own* final accuracy, so a CVAE that stops low gets there soon; and what its images look like."""
    lc, cvae = (
        h.get("lc_l0") or h.get("lc"),
        [h[k]["final_accuracy"] for k in ("cvae_retrain", "cvae_finetune") if k in h],
    )
    if not lc or not cvae or lc["final_accuracy"] - max(cvae) <= 0.05:
        return []
    fd = {r["method"]: r["frechet"] for r in quality}
    return [
        f"R_register reads each method against its own final accuracy: the CVAE levels off at {f(max(cvae))} here "
        f"against LC's {f(lc['final_accuracy'])}, so it gets to its own level sooner; the lines below compare them "
        "at one accuracy."
        + (
            f" What the images look like, from the quality table: FD {f(fd['cvae'], 2)} for the CVAE's samples, "
            f"{f(fd['actor-l0'], 2)} for LC's actor (λ_dist 0)."
            if {"cvae", "actor-l0"} <= fd.keys()
            else ""
        )
    ]


SYSTEMS = {
    "triplegan": "**Triple-GAN** gives a conditional generator and a classifier trained together, unlabelled images "
    "helping both. A new label set means training all three networks again on images.",
    "infogan": "**InfoGAN** learns a categorical code without labels; a user gets classes only where the code "
    "happens to match them, through a map fitted afterwards on labelled images. A new label set cannot be asked "
    "for: the codes are whatever the game found.",
    "bigan-lc": "**BiGAN** gives an unconditional GAN with an encoder, so latent constraints condition it post hoc "
    "as they do the VAE: the row is an LC actor trained on the BiGAN's latent table.",
    "ali-lc": "**ALI** is BiGAN with a stochastic encoder (q(z|x) sampled with reparameterisation) and its paper's "
    "learning rate (Adam 1e-4, β1 0.5), the settings a diverged BiGAN is rerun with; the row is an LC actor trained "
    "on its latent table (the encoder's means).",
    "gaia-lc": "**GAIA** gives an autoencoder whose interpolations are pushed toward realism; latent constraints "
    "condition it post hoc: the row is an LC actor trained on GAIA's latent table. GAIA has no prior (its latents "
    "are whatever reconstruction found, far from N(0, I)), so its bundle standardises them on the training images "
    "(mean 0, std 1 per dimension; `models.bigan.Invertible.as_vae`); its own samples are draws from that diagonal "
    "Gaussian.",
}


DIVERGED_D_ACC = 0.99  # the discriminator tells every pair apart: the generator gets no usable signal


def diverged_at(r: dict) -> int | None:
    """The step from which a GAN run's discriminator won outright (accuracy >= DIVERGED_D_ACC at every later point of
    its curve, the second half of training included), else None: such a row is reported as diverged."""
    c = [p for p in r.get("curve") or [] if "d_acc" in p]
    if not c or min(p["d_acc"] for p in c[len(c) // 2 :]) < DIVERGED_D_ACC:
        return None
    start = len(c)
    while start and c[start - 1]["d_acc"] >= DIVERGED_D_ACC:
        start -= 1
    return c[start]["step"]


def _diverged(raw: list[dict], method: str) -> str:
    """ "seed S from step N, ..." for a method's diverged seeds, else ""."""
    return ", ".join(f"seed {r['seed']} from step {n}" for r in raw if r["method"] == method and (n := diverged_at(r)))


def _reconstruction_table(raw: list[dict], f: Callable[..., str]) -> list[str]:
    """Per attribute, the judge's recall on each backbone's reconstructions of real test images (seed 0): what an LC
    actor on that backbone can draw at best. The VAE's is read from the ``actor`` row (scored on the shipped bundle)."""
    rows = {r["method"]: r for r in raw if r["seed"] == 0 and r.get("reconstruction_recall")}
    names = (("VAE", "actor"), ("BiGAN", "bigan-lc"), ("ALI", "ali-lc"), ("GAIA", "gaia-lc"))
    backbones = [(name, rows[m]) for name, m in names if m in rows]
    if len(backbones) < 2:
        return []
    attrs = list(backbones[0][1]["reconstruction_recall"])
    lines = [
        "Reconstruction through each backbone's encoder and decoder (the judge on real test images' reconstructions, "
        "seed 0): accuracy, and recall per attribute.",
        "",
        "| backbone | accuracy | " + " | ".join(attrs) + " |",
        "|---|---|" + "---|" * len(attrs),
    ]
    for name, r in backbones:
        recall = " | ".join(f(r["reconstruction_recall"].get(a)) for a in attrs)
        lines.append(f"| {name} | {f(r['reconstruction_accuracy'])} | {recall} |")
    return [*lines, ""]


def _gan_section(d: dict, f: Callable[..., str]) -> list[str]:
    """The GAN systems of one dataset: their training curves, InfoGAN's code match, the GANs' own samples, a
    paragraph per system against the LC actor, and Triple-GAN's label efficiency."""
    raw = [r for r in d["quality_raw"] if "curve" in r]
    if not raw and not d.get("triplegan_labels"):
        return []
    lines = [
        "### GAN systems",
        "",
        "Training curve: the discriminator's accuracy on real and fake (BEGAN's convergence measure for GAIA, lower "
        "is better) at the start, the middle and the end of training; a diverged run shows here.",
        "",
        "| system | seed | steps | train CPU-s | curve (start → middle → end) | InfoGAN code ↔ class (test) "
        "| the GAN's own samples: FD |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in raw:
        key = "d_acc" if "d_acc" in r["curve"][-1] else "convergence"
        c = r["curve"]
        trace = " → ".join(f(c[i].get(key), 2) for i in (0, len(c) // 2, -1))
        code = r.get("code_match", {}).get("test_accuracy")
        lines.append(
            f"| {r['method']} | {r['seed']} | {r['steps']} | {f(r['train_cpu_s'], 0)} | {key} {trace} | {f(code)} | "
            f"{f(r.get('gan_prior', {}).get('frechet'), 2)} |"
        )
    lines.append("")
    agg = {r["method"]: r for r in d["quality"]}
    lc = agg.get("actor-l0") or agg.get("actor")
    for method, text in SYSTEMS.items():
        if method not in agg:
            continue
        r = agg[method]
        if bad := _diverged(d["quality_raw"], method):
            lines += [
                text + f" Its run diverged ({bad}: the discriminator's accuracy stayed >= {DIVERGED_D_ACC} to the "
                "end, so the generator had no usable signal); the row is reported for the record, not as what the "
                "system can do here.",
                "",
            ]
            continue
        versus = (
            f" Against the LC actor on the VAE (`{lc['method']}`): accuracy {f(r['accuracy'])} vs {f(lc['accuracy'])}, "
            f"FD {f(r['frechet'], 2)} vs {f(lc['frechet'], 2)}, training {f(r['train_cpu_s'], 0)} CPU-s vs "
            f"{f(lc['train_cpu_s'], 0)}."
            if lc
            else ""
        )
        lines += [text + versus, ""]
    lines += _reconstruction_table(d["quality_raw"], f)
    if d.get("triplegan_labels"):
        lines += [
            "Label efficiency on the quality label set (seed 0): Triple-GAN and an LC actor (λ_dist 0) trained with "
            "the same labelled images.",
            "",
            "| labels | labelled images | Triple-GAN accuracy | Triple-GAN FD | LC accuracy | LC FD |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {e['share']:.0%} | {e['labelled']:,} | {f(e['triplegan']['accuracy'])} | "
            f"{f(e['triplegan']['frechet'], 2)} | {f(e['lc']['accuracy'])} | {f(e['lc']['frechet'], 2)} |"
            for e in d["triplegan_labels"]
        ]
        lines.append("")
    return lines


def markdown(result: dict) -> str:
    f = lambda v, p=3: "–" if v is None else f"{v:.{p}f}"  # noqa: E731
    lines = [
        "# Baselines vs latent constraints",
        "",
        "Generated by `python -m bench.baselines`; each dataset's section names the command, profile and machine that "
        "produced it. Never hand-edited. A model its work directory already holds from the same settings (and, for "
        "a label set, the same decoder) is reused rather than retrained; its train CPU-s are from when it was trained.",
        "",
        "Samplers: `prior` (unconditional VAE, the floor), `actor` / `optimize` (LC, the shipped mappers), "
        "`attrvec-*` (attribute vectors), `gmm` (per-condition latent GMM), `cvae` / `cvae-cmma` (learned prior) / "
        "`cvae-gan` / `triplegan` (retrained conditional models on the same backbone), `infogan` (through its code ↔ "
        "class map), `bigan-lc` / `ali-lc` / `gaia-lc` (an LC actor on the BiGAN's / ALI's / GAIA's own latent space). "
        "Accuracy: judge "
        "accuracy of the requested labels (top-1 for categorical sets, mean over attributes for binary ones); FD and "
        "precision/recall (k = 3) in judge "
        "features against real training images. ± is the spread (max − min) over seeds where more than one ran; "
        "LC rows use the shipped mappers (one training seed), so their spread is over sampling seeds.",
        "",
    ]
    for ds, d in result["datasets"].items():
        why = d.get("skip_reasons", {})
        skipped = [
            m + (f" ({why[m]})" if m in why else "")
            for m in d["skipped"]
            if m not in {r["method"] for r in d["quality"]}
        ]
        lines += [
            f"## {ds}",
            "",
            f"{d['profile']} profile ({json.dumps(d['profile_settings'])}"
            + (f"; skipped: {', '.join(skipped)}" if skipped else "")
            + f") on {d['machine']}; {d['wall_minutes']:.0f} min in all, by:",
            "",
        ]
        lines += [f"    {c}" for c in d["commands"]] + [
            "",
            f"### Quality on `{d['label_set']}`",
            "",
            "| method | accuracy | ÷ ceiling | exact match | 3-attr exact | "
            f"FD (real test: {f(d['quality'][0]['frechet_real'], 2)}) "
            "| precision | recall | train CPU-s | stored params |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in d["quality"]:
            pm = lambda k, p=3, r=r: f(r[k], p) + (f" ± {f(r[k + '_spread'], p)}" if r.get(k + "_spread") else "")  # noqa: E731
            bad = _diverged(d["quality_raw"], r["method"])
            lines.append(
                f"| {r['method']}{f' (diverged: {bad})' if bad else ''} | {pm('accuracy')} | "
                f"{pm('accuracy_over_ceiling')} | {pm('exact_match')} | "
                f"{pm('exact_match_3attr')} | {pm('frechet', 2)} | {pm('precision')} | {pm('recall')} | "
                f"{f(r['train_cpu_s'], 0) if r['train_cpu_s'] is not None else '–'} | "
                f"{r['params_stored'] if r['params_stored'] is not None else '–'} |"
            )
        lines.append("")
        if d.get("figure"):
            fig = d["figure"]
            lines += [
                f"![Rows, top to bottom: {', '.join(fig['rows'])}; "
                f"columns: the {len(fig['columns'])} most frequent label rows.]({fig['figure']})",
                "",
                f"Rows, top to bottom: {', '.join(fig['rows'])}. "
                f"Columns (requested labels): {'; '.join(fig['columns'])}.",
                "",
            ]
        lines += _gan_section(d, f)
        h = d.get("new_label_set")
        if not h:
            continue
        lines += _new_label_set_section(h, d["quality"], f)
    return "\n".join(lines)
