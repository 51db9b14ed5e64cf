"""The model card's markdown (docs/model_card.md) from what ``bench.model_card`` collected: rendering only, so the
collector stays readable."""

from __future__ import annotations


def fd(e: dict) -> str:
    f = e["frechet"]
    return f"{f['fd']:.1f} [{f['ci95'][0]:.1f}, {f['ci95'][1]:.1f}]"


def shift(e: dict) -> str:
    """The σ̄-weighted latent shift; a Fader network does not move the VAE latent."""
    v = e["latent_shift_over_sigma_bar"]
    return "—" if v is None else f"{v:.2f}"


def edits_section(edits: dict) -> list[str]:
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
            f"{shift(e)} | {e['n']} | {e['seconds']:.0f} s |"
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
                f"{shift(e)} | {e['n']} | {e['seconds']:.0f} s |"
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
        out += edits_section(c["edits"])
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
