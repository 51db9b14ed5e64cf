"""docs/compose.md from the result ``python -m bench.compose`` writes to docs/compose.json (``markdown``)."""

from __future__ import annotations


def markdown(result: dict) -> str:
    f = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [
        "# Classifier label sets and composed queries (issue 18)",
        "",
        f"On {result['machine']}, {result['date']}, by:",
        "",
    ]
    lines += [f"    {c}    # {result['minutes'].get(c, '?')} min" for c in result["commands"]] + [""]
    for name, r in result["datasets"].items():
        s = r.get("same")
        lines += [f"## {name}", ""]
        if s:
            lines += [
                f"### The same labels (`{r['new']}`): LC label set vs classifier label set",
                "",
                "| | asked on: mean | asked on, per attribute | asked off: worst | balanced accuracy "
                "| exact match | FD | converged | ms / sample | CPU-s to register |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            for method in ("lc", "classifier"):
                m = s[method]
                per = ", ".join(f"{a} {v:.2f}" for a, v in m["asked_on"].items())
                lines.append(
                    f"| {method} | {f(m['asked_on_mean'])} | {per} | {f(m['asked_off_worst'])} | "
                    f"{f(m['balanced_accuracy'])} | {f(m['exact_match'])} | {m['frechet']:.1f} | {f(m['converged'])} | "
                    f"{m['ms_per_sample']:.2f} | {m['cpu_s_to_register']:.1f} |"
                )
            lines += [
                "",
                f"Classifier ÷ LC: asked-on hit rate **{s['asked_on_ratio']:.2f}** (bar ≥ 0.9), "
                f"Fréchet distance **{s['frechet_ratio']:.2f}** (bar ≤ 1.2).",
                "",
            ]
        for part, title in (("dynamics", "How the energy sampler moves z"), ("classifiers", "Classifier training")):
            if not r.get("dynamics", {}).get(part):
                continue
            lines += [
                f"### {title}",
                "",
                f"The `{r['new']}` classifier label set, each attribute asked on alone ({r['dynamics'].get('n', 200)} "
                "requests each); hit rate judged on the images. The defaults are what the server runs.",
                "",
                "| variant | asked on: mean | per attribute | converged | ms / sample |",
                "|---|---|---|---|---|",
            ]
            for label, m in r["dynamics"][part].items():
                per = ", ".join(f"{a} {v:.2f}" for a, v in m["asked_on"].items())
                lines.append(f"| {label} | {f(m['mean'])} | {per} | {f(m['converged'])} | {m['ms_per_sample']:.1f} |")
            lines.append("")
        g = r.get("register")
        if g:
            c, v = g["classifier"], g["cvae_retrain"]
            lines += [
                f"### Registering `{r['new']}`: classifier vs CVAE retrain",
                "",
                "| | final exact match | CPU-s to 95% | CPU-s total |",
                "|---|---|---|---|",
                f"| classifier label set | {f(c['final_accuracy'])} | {c['cpu_s_to_95']:.2f} | "
                f"{c['cpu_s_total']:.2f} |",
                f"| CVAE retrained (docs/baselines.json) | {f(v['final_accuracy'])} | {v['cpu_s_to_95']:.2f} | "
                f"{v['cpu_s_total']:.2f} |",
                "",
                f"**R_register = {g['R_register']:.4f}** (target ≤ 0.02), at "
                f"{'equal or better' if g['equal_or_better'] else '**worse**'} accuracy.",
                "",
            ]
        for key, title in (("compose", "Composed queries"), ("held_out", "A combination no label set has seen")):
            if not r.get(key):
                continue
            lines += [f"### {title} (energy sampler) vs rejection sampling from the LC actor", ""]
            if key == "held_out":
                lines += ["A classifier label set `held_out` of the two attributes, trained on the latent table "
                          "without any row that has both; the first query asks for both. Rejection sampling from the "
                          "LC actor (trained on every row) is the reference.", ""]  # fmt: skip
            lines += [
                "Each clause judged on the images; `all`: the whole query. Rows in data: training rows that "
                "satisfy the query (0: a combination the data lacks, which rejection sampling cannot answer).",
                "",
                "| query | clauses: energy | all | converged | ms / sample | clauses: actor (rejection) "
                "| all | rows in data |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for q in r[key]:
                e = ", ".join(f"{c} {v:.2f}" for c, v in zip(q["clauses"], q["energy"], strict=True))
                a = ", ".join(f"{v:.2f}" for v in q["actor"]) if "actor" in q else "–"
                lines.append(
                    f"| `{q['query']}` | {e} | {f(q['energy_all'])} | {f(q['converged'])} | {q['ms_per_sample']:.1f} "
                    f"| {a} | {f(q.get('actor_all'))} | {q['rows_in_data']} |"
                )
            lines.append("")
    return "\n".join(lines) + "\n"
