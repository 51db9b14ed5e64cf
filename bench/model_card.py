"""Model card of the shipped default bundles: docs/model_card.{md,json} and its figures.

    python -m bench.model_card --evals runs/card

Reads only what the jobs wrote: the bundle manifests (vae, judge, labelsets/*/mapper.json) and
the `lcs eval`, `lcs eval-edits` and `lcs figures` outputs that `training/recipes/default_bundle.sh`
puts under EVALS/<bundle>/. Every number comes from those files; the quality bars are issue 16's.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

BUNDLES = {"avatars": "faces", "fashion-mnist": "category"}
SAMPLERS = ("prior", "realism", "actor", "optimize")
# Issue 16's bars, in the metrics that show a miss (name: description, bar, higher is better). "Alone": a request
# naming one attribute (GET /sample?attrs=smiling), the rest drawn as the server draws them.
BARS = {
    "faces_asked_on_mean": ("avatars, actor: attribute asked on alone is present (mean over attributes)", 0.90, True),
    "faces_asked_on_worst": (
        "avatars, actor: worst attribute asked on alone ÷ its bar (0.80, or 0.9 × the decoder's recall where the "
        "backbone cannot draw it)",
        1.0,
        True,
    ),
    "faces_asked_off_worst": ("avatars, actor: worst attribute asked off alone is absent", 0.95, True),
    "faces_rows_balanced_over_decoder": (
        "avatars, actor: test-row requests' balanced accuracy ÷ the decoder's (mean over attributes)",
        0.95,
        True,
    ),
    "fashion_rows_balanced_over_decoder": (
        "Fashion-MNIST, actor: test-row requests' balanced accuracy ÷ the decoder's (mean over classes)",
        0.95,
        True,
    ),
    "edits_actor_reached": ("avatars edits, actor: target reached", 0.80, True),
    "edits_actor_worst_direction": ("avatars edits, actor: worst edit direction's target reached", 0.5, True),
    "edits_actor_kept": ("avatars edits, actor: other attributes kept (vs the reconstruction)", 0.90, True),
    "edits_optimize_reached": ("avatars edits, optimise: target reached", 0.80, True),
    "edits_optimize_worst_direction": ("avatars edits, optimise: worst edit direction's target reached", 0.5, True),
    "edits_optimize_kept": ("avatars edits, optimise: other attributes kept (vs the reconstruction)", 0.90, True),
    "optimize_minus_actor_balanced": ("avatars: optimise − actor, test-row balanced accuracy", 0.0, True),
    "optimize_converged": ("avatars: optimise-mode samples converged", 0.95, True),
    # "no worse than today": the label sets shipped before issue 16's retraining, read by issue 15's judges
    # (PART=avatars-eval / fashion-eval of training/recipes/default_bundle.sh, 2026-11-30)
    "faces_actor_frechet": ("avatars, actor: Fréchet distance in judge features", 146.814, False),
    "fashion_actor_frechet": ("Fashion-MNIST, actor: Fréchet distance in judge features", 24.511, False),
}


def read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def size_mb(path: Path) -> float:
    return path.stat().st_size / 2**20


def collect(bundle: Path, evals: Path, label_set: str) -> dict:
    out: dict = {"bundle": str(bundle), "label_set": label_set, "files": {}, "labelsets": {}, "eval": {}, "edits": {}}
    for f in sorted(bundle.rglob("*.safetensors")):
        if f.stem != "latents":
            out["files"][str(f.relative_to(bundle))] = round(size_mb(f), 2)
    for stem in ("vae", "judge"):
        m = read(bundle / f"{stem}.json")
        if m:
            out[stem] = {
                "command": " ".join(m["command"]),
                "source_command": " ".join(m.get("source_command", [])),
                "train_seconds": m.get("metrics", {}).get("train_seconds", m.get("train_seconds")),
            }
    for man in sorted(bundle.glob("labelsets/*/mapper.json")):
        m = json.loads(man.read_text())
        metrics = m["metrics"]
        out["labelsets"][m["name"]] = {
            "command": " ".join(m["command"]),
            "train_seconds": metrics["train_seconds"],
            "steps": metrics["steps"],
            "lambda_dist": m["lambda_dist"],
            "lr": m["training"]["lr"],
            "width": m["config"]["width"],
            "depth": m["config"]["depth"],
            "attrs": m["config"]["attr_names"],
            # lcs refine-attr runs on top of the training (docs/refine_attr.md): their commands, steps and walls
            "refined": [
                {
                    "command": " ".join(r["command"]),
                    "seconds": r["seconds"],
                    "actor_steps": r["config"]["rounds"] * r["config"]["actor_steps"],
                }
                for r in m.get("refined", [])
            ],
            "diagnostics": {
                k: metrics[k]
                for k in ("D_train", "D_val", "D_prior", "D_actor", "shift_prior", "shift_real", "attr_val_accuracy")
                if k in metrics
            },
        }
    for s in SAMPLERS:
        e = read(evals / f"eval-{s}-{label_set}.json")
        if e:
            out["eval"][s] = {
                k: e[k]
                for k in (
                    "mean_accuracy",
                    "ceiling_mean_accuracy",
                    "mean_accuracy_over_ceiling",
                    "exact_match",
                    "exact_match_3attr",
                    "frechet",
                    "frechet_real_test_vs_train",
                    "reconstruction_mean_accuracy",
                    "per_attribute",
                    "asked_on",
                    "asked_off",
                    "n_single",
                    "converged",
                    "n",
                    "seconds",
                    "engine",
                )
                if k in e
            }
            out["eval"][s]["command"] = " ".join(e["command"])
    for mode in ("actor", "optimize"):
        e = read(evals / f"edits-{mode}-{label_set}.json")
        if e:
            out["edits"][mode] = {k: v for k, v in e.items() if k not in ("bundle", "decoder_fingerprint")}
            out["edits"][mode]["command"] = " ".join(e["command"])
    return out


def balanced_over_decoder(e: dict) -> float:
    """Mean over attributes of test-row balanced accuracy ÷ the decoder's on reconstructions of real test images."""
    return sum(m["over_reconstruction"]["balanced_accuracy"] for m in e["per_attribute"].values()) / len(
        e["per_attribute"]
    )


def balanced(e: dict) -> float:
    return sum(m["balanced_accuracy"] for m in e["per_attribute"].values()) / len(e["per_attribute"])


def asked_on_worst(e: dict) -> float:
    """min over attributes of (asked on alone) ÷ min(0.80, 0.9 × the decoder's recall)."""
    return min(
        m["single_on"] / min(0.80, 0.9 * m["reconstruction"]["recall"])
        for m in e["per_attribute"].values()
        if m["reconstruction"]["recall"] > 0
    )


def bars(card: dict) -> dict:
    av, fm = card.get("avatars", {}), card.get("fashion-mnist", {})
    ev, ed = av.get("eval", {}), av.get("edits", {})
    got: dict = {}
    actor = ev.get("actor", {})
    if actor.get("asked_on"):
        got["faces_asked_on_mean"] = actor["asked_on"]["mean"]
        got["faces_asked_on_worst"] = asked_on_worst(actor)
        got["faces_asked_off_worst"] = actor["asked_off"]["min"]
    if "over_reconstruction" in next(iter(actor.get("per_attribute", {}).values()), {}):
        got["faces_rows_balanced_over_decoder"] = balanced_over_decoder(actor)
        if "optimize" in ev:
            got["optimize_minus_actor_balanced"] = balanced(ev["optimize"]) - balanced(actor)
    fa = fm.get("eval", {}).get("actor", {})
    if "over_reconstruction" in next(iter(fa.get("per_attribute", {}).values()), {}):
        got["fashion_rows_balanced_over_decoder"] = balanced_over_decoder(fa)
    if "frechet" in actor:
        got["faces_actor_frechet"] = actor["frechet"]["fd"]
    if "frechet" in fa:
        got["fashion_actor_frechet"] = fa["frechet"]["fd"]
    if "optimize" in ev and "converged" in ev["optimize"]:
        got["optimize_converged"] = ev["optimize"]["converged"]
    for mode, e in ed.items():
        got[f"edits_{mode}_reached"] = e["target_reached"]
        got[f"edits_{mode}_worst_direction"] = min(v["target_reached"] for v in e["per_edit"].values())
        got[f"edits_{mode}_kept"] = e["others_unchanged_vs_reconstruction"]
    result = {}
    for k, (text, bar, higher) in BARS.items():
        v = got.get(k)
        met = None if v is None else (v >= bar if higher else v <= bar)
        result[k] = {"description": text, "bar": bar, "higher_is_better": higher, "measured": v, "met": met}
    return result


def fd(e: dict) -> str:
    f = e["frechet"]
    return f"{f['fd']:.1f} [{f['ci95'][0]:.1f}, {f['ci95'][1]:.1f}]"


def _edits_section(edits: dict) -> list[str]:
    """The `lcs eval-edits` tables of one bundle; empty when it has no edit results."""
    out: list[str] = []
    if edits and next(iter(edits.values())).get("kind") == "categorical":
        out += [
            "",
            "### Class edits (`lcs eval-edits`)",
            "",
            "Each test image asked for a random class other than the one D_attr reads in it. *Reached*: the judge's "
            "top-1 is the asked class; *null edit*: how often the plain reconstruction already is. Pixel MSE "
            "(images in [0, 1]) and the σ̄-weighted latent shift say how far the edit moved from the reconstruction.",
            "",
            "| mode | target reached | null edit | pixel MSE vs reconstruction | σ̄-weighted shift | n | wall |",
            "|---|---|---|---|---|---|---|",
        ]
        out += [
            f"| {mode} | {e['target_reached']:.3f} | {e['target_in_reconstruction']:.3f} | "
            f"{e['pixel_mse_edit_vs_reconstruction']:.4f} | "
            f"{e['latent_shift_over_sigma_bar']:.2f} | {e['n']} | {e['seconds']:.0f} s |"
            for mode, e in edits.items()
        ]
        out += ["", "Target reached per asked class (actor):", "", "| class | n | reached |", "|---|---|---|"]
        out += [f"| {k} | {v['n']} | {v['target_reached']:.3f} |" for k, v in edits["actor"]["per_edit"].items()]
    elif edits:
        out += [
            "",
            "### Identity-preserving edits (`lcs eval-edits`)",
            "",
            "One random attribute of each test image flipped from what D_attr reads; the target is the nearest label "
            "row the data shows. *Kept unchanged* counts the attributes the target keeps, judged on the edited image "
            "against the original (and against the plain reconstruction, which separates the edit from VAE blur). "
            "*Null edit*: how often the plain reconstruction already reads the asked value. *Identity*: cosine of the "
            "judge's features between the edited image and its reconstruction (in brackets: between reconstructions "
            "of different images).",
            "",
            "| mode | target reached | null edit | kept unchanged vs original | vs reconstruction | "
            "forced changes / edit | identity (other images) | σ̄-weighted shift | n | wall |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for mode, e in edits.items():
            ident = (
                f"{e['identity_cosine']:.3f} ({e['identity_cosine_other_images']:.3f})"
                if "identity_cosine" in e
                else "—"
            )
            out.append(
                f"| {mode} | {e['target_reached']:.3f} | {e['target_in_reconstruction']:.3f} | "
                f"{e['others_unchanged_vs_original']:.3f} | "
                f"{e['others_unchanged_vs_reconstruction']:.3f} | {e['forced_changes_per_edit']:.2f} | {ident} | "
                f"{e['latent_shift_over_sigma_bar']:.2f} | {e['n']} | {e['seconds']:.0f} s |"
            )
        modes = list(edits)
        out += [
            "",
            "Target reached per edit direction:",
            "",
            "| edit | " + " | ".join(f"{m}: n | {m}: reached" for m in modes) + " |",
            "|---|" + "---|---|" * len(modes),
        ]
        for k in edits[modes[0]]["per_edit"]:
            cells = [edits[m]["per_edit"].get(k, {}) for m in modes]
            out.append(
                f"| {k} | "
                + " | ".join(f"{c['n']} | {c['target_reached']:.3f}" if c else "— | —" for c in cells)
                + " |"
            )
    return out


def per_attribute_table(evals: dict, cond: list[str]) -> list[str]:
    """Per attribute: the decoder's own recall / specificity on reconstructions of real test images, then for each
    conditional sampler the share present when asked on alone, absent when asked off alone (each ÷ the decoder's
    rate in brackets), and the balanced accuracy of test-row requests."""
    head = " | ".join(f"{s}: on alone (÷ decoder) | {s}: off alone | {s}: rows bal. acc" for s in cond)
    out = [
        "",
        "Per attribute. *Decoder*: the judge on reconstructions of real test images (of those with the attribute, the "
        "share that keep it; of those without, the share that stay without): no sampler's images can do much better. "
        "*On alone* / *off alone*: requests naming only that attribute (`GET /sample?attrs=smiling`, `-smiling`), the "
        "rest drawn as the server draws them; *rows*: requests of whole test-image label rows.",
        "",
        f"| attribute | asked rate | decoder: recall / specificity | {head} |",
        "|---|---|---|" + "---|---|---|" * len(cond),
    ]
    na = lambda v, f=".2f": "—" if v is None else format(v, f)  # noqa: E731
    for a, m in evals[cond[0]]["per_attribute"].items():
        rec = m.get("reconstruction", {})
        cells = []
        for s in cond:
            p = evals[s]["per_attribute"][a]
            over = p.get("over_reconstruction", {})
            cells.append(
                f"{na(p.get('single_on'))} ({na(over.get('single_on'))}) | {na(p.get('single_off'))} | "
                f"{p['balanced_accuracy']:.3f}"
            )
        out.append(
            f"| {a} | {m['requested_rate']:.2f} | {na(rec.get('recall'))} / {na(rec.get('specificity'))} | "
            + " | ".join(cells)
            + " |"
        )
    for s in cond:
        q, r = evals[s].get("asked_on"), evals[s].get("asked_off")
        if q and r:
            out.append(
                f"\n{s}: asked on alone, mean {q['mean']:.3f} (worst {q['min']:.3f}, {q['min_attribute']}); "
                f"asked off alone, mean {r['mean']:.3f} (worst {r['min']:.3f}, {r['min_attribute']})."
            )
    return out


def markdown(card: dict) -> str:
    out = [
        "# Model card: the shipped default bundles",
        "",
        "Generated by `python -m bench.model_card` from the artifacts and evaluation outputs of "
        "`training/recipes/default_bundle.sh`; do not edit by hand. The VAEs are issue 2's (`docs/foundation.md`), "
        "the avatars one continued by `training/recipes/backbone_cpu_long.sh` and "
        "`training/recipes/backbone_stretch.sh` (`docs/backbones_avatars_continued.md`, `docs/backbones_stretch*.md`); "
        "the judges are issue 15's. This card adds the latent-constraint label sets.",
        "",
        "## Quality bars",
        "",
        "| bar | target | measured | met |",
        "|---|---|---|---|",
    ]
    for b in card["bars"].values():
        v = "not measured" if b["measured"] is None else f"{b['measured']:.3f}"
        sign = "≥" if b["higher_is_better"] else "≤"
        out.append(
            f"| {b['description']} | {sign} {b['bar']} | {v} | "
            f"{'—' if b['met'] is None else ('yes' if b['met'] else '**no**')} |"
        )
    for name, c in card["bundles"].items():
        total = sum(c["files"].values())
        out += ["", f"## `{name}` ({total:.1f} MB of weights)", "", "| file | MB |", "|---|---|"]
        out += [f"| {f} | {mb:.2f} |" for f, mb in c["files"].items()]
        if c["labelsets"]:
            out += [
                "",
                "### Label sets",
                "",
                "| label set | attributes | steps | lr | λ_dist | MLP | train wall | D train / prior / actor | "
                "D_attr val acc |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for ls, v in c["labelsets"].items():
                d = v["diagnostics"]
                acc = f"{d['attr_val_accuracy']:.3f}" if "attr_val_accuracy" in d else "—"
                r = v.get("refined", [])
                steps = f"{v['steps']}" + (f" + {sum(x['actor_steps'] for x in r)} refine-attr" if r else "")
                wall = f"{v['train_seconds'] / 60:.1f} min" + (
                    f" + {sum(x['seconds'] for x in r) / 60:.1f}" if r else ""
                )
                out.append(
                    f"| {ls} | {len(v['attrs'])} | {steps} | {v['lr']:g} | {v['lambda_dist']:g} | "
                    f"{v['depth']}×{v['width']} | {wall} | "
                    f"{d['D_train']:.2f} / {d['D_prior']:.3f} / {d['D_actor']:.2f} | {acc} |"
                )
        if c["eval"]:
            out += [
                "",
                f"### `lcs eval` on `{c['label_set']}`",
                "",
                "| sampler | accuracy (÷ judge ceiling) | ÷ decoder ceiling | exact match | 3-attr exact | "
                "Fréchet, judge features [95% CI] | n | eval wall |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for s, e in c["eval"].items():
                e3 = f"{e['exact_match_3attr']:.3f}" if "exact_match_3attr" in e else "—"
                out.append(
                    f"| {s} | {e['mean_accuracy']:.3f} ({e['mean_accuracy_over_ceiling']:.3f}) | "
                    f"{e['mean_accuracy'] / e['reconstruction_mean_accuracy']:.3f} | {e['exact_match']:.3f} | {e3} | "
                    f"{fd(e)} | {e['n']} | {e['seconds']:.0f} s |"
                )
            any_e = next(iter(c["eval"].values()))
            out.append(
                f"\nJudge ceiling on real test images: {any_e['ceiling_mean_accuracy']:.3f}. The judge on the VAE's "
                f"reconstructions of those images (the decoder's ceiling: every sampler's images come out of this "
                f"decoder): {any_e['reconstruction_mean_accuracy']:.3f}, i.e. "
                f"{any_e['reconstruction_mean_accuracy'] / any_e['ceiling_mean_accuracy']:.3f} × the judge ceiling. "
                f"Real test vs train Fréchet {any_e['frechet_real_test_vs_train']['fd']:.2f}."
                + (
                    f" Decoded on the engine `{any_e['engine']}` (what `lcs serve` picks on the machine that ran "
                    "the evaluation; docs/precision.md reads bf16 against fp32 decodes with the judge)."
                    if "engine" in any_e
                    else ""
                )
            )
            cond = [s for s in ("actor", "optimize") if s in c["eval"]]
            if cond:
                out += per_attribute_table(c["eval"], cond)
        out += _edits_section(c["edits"])
        for fig, caption in c.get("figures", {}).items():
            out += ["", f"![{caption}]({fig})", "", caption]
    out += ["", "## Commands", ""]
    for _, c in card["bundles"].items():
        cmds = [c[k]["command"] for k in ("vae", "judge") if k in c]
        cmds += [
            x for v in c["labelsets"].values() for x in [v["command"]] + [r["command"] for r in v.get("refined", [])]
        ]
        cmds += [e["command"] for e in c["eval"].values()] + [e["command"] for e in c["edits"].values()]
        out += [f"- `{x}`" for x in cmds]
    return "\n".join(out) + "\n"


FIGURES = {
    "realism.png": "Rows in pairs: raw prior samples z ~ N(0, I), then the same z mapped by the realism actor G(z).",
    "specs-{ls}.png": "The same prior z in every column, mapped by the actor under one attribute spec per row "
    "(unspecified attributes drawn from the matching label rows).",
    "edits-{ls}.png": "Real test images (top), their reconstructions, then one row per attribute toggled by the actor.",
}


def main() -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench.model_card", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--evals", default="runs/card", help="EVALS/<bundle>/ holds that bundle's eval outputs and figures")
    ap.add_argument("--bundles", default="service/bundles")
    ap.add_argument("--docs", default="docs")
    a = ap.parse_args()
    docs = Path(a.docs)
    docs.mkdir(parents=True, exist_ok=True)
    card = {"bundles": {}}
    for name, ls in BUNDLES.items():
        if not (Path(a.bundles) / name).exists():
            continue
        c = collect(Path(a.bundles) / name, Path(a.evals) / name, ls)
        c["figures"] = {}
        rows = (read(Path(a.evals) / name / f"figures-{ls}.json") or {"rows": {}})["rows"]
        for pattern, caption in FIGURES.items():
            src = Path(a.evals) / name / pattern.format(ls=ls)
            if src.exists():
                dst = docs / f"card_{name}_{src.name}"
                shutil.copyfile(src, dst)
                order = f" Rows, top to bottom: {'; '.join(rows[src.name])}." if src.name in rows else ""
                c["figures"][dst.name] = caption + order
        card["bundles"][name] = c
    card["bars"] = bars(card["bundles"])
    (docs / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    md = markdown(card)
    (docs / "model_card.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
