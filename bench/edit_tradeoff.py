"""Edits compared at equal identity: every method swept over its own strength, on the same images and targets.

    python -m bench.edit_tradeoff --bundle runs/bundles/avatars --label-set faces --n 5000 --out docs

One edit method reaches more by changing more of the image, so a single point per method (``lcs eval-edits``) cannot
say which is better. Each method is run at several strengths on the same test images, asked attributes and target rows
(``lcs eval-edits``, seed 0):
- latent constraints, the actor with the server's K = 8 starts: D_attr's probability that accepts a step
  (``--edit-confidence``; ``conditioning.edits.EDIT_ACCEPT`` is the server's);
- attribute vectors (``attrvec-mean``): the fixed step s, and the per-image search;
- a Fader network: the amplification s of the label change (``--fader-scale``; the authors' α).
Per point: target reached, the worst direction, attributes kept and identity (cosine of the judge's features), both
against the original image, the one reference every method shares (a Fader network reconstructs with its own decoder).
Then, per latent-constraints point, the most each baseline reaches at no lower identity and at no fewer kept
attributes: the comparison at equal cost. ``--bundles-extra`` repeats the latent-constraints sweep on other bundles
(another seed of the recipe). Writes OUT/edit_tradeoff.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from training.eval_edits import evaluate_edits

SWEEPS = {
    "actor": ("edit_confidence", (0.5, 0.9, 0.99, 0.999, 0.9999)),
    "attrvec-mean": ("attrvec_scale", (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 0.0)),  # 0: the per-image search
    "fader": ("fader_scale", (1.0, 1.5, 2.0, 3.0, 4.0)),
}
KEEP = ("target_reached", "others_unchanged_vs_original", "identity_cosine_original")


def point(bundle: Path, label_set: str, n: int, method: str, knob: str, value: float, work: Path) -> dict:
    """One ``lcs eval-edits`` run -> what the tables show of it."""
    mode_args = {"candidates": 8} if method == "actor" else {}
    r = evaluate_edits(
        bundle, label_set, n, method, device="cpu", out=work / f"{method}-{value}", **mode_args, **{knob: value}
    )
    worst = min(r["per_edit"].items(), key=lambda kv: kv[1]["target_reached"])
    return {
        "method": method,
        knob: value,
        **{k: r[k] for k in KEEP},
        "kept_vs_reconstruction": r["others_unchanged_vs_reconstruction"],
        "identity_vs_reconstruction": r["identity_cosine"],
        "worst_direction": worst[0],
        "worst_reached": worst[1]["target_reached"],
        "worst_n": worst[1]["n"],
        "seconds": r["seconds"],
    }


def at_equal_cost(lc: dict, rows: list[dict], method: str) -> dict:
    """The most ``method`` reaches at no lower identity, and at no fewer kept attributes, than the LC point ``lc``."""

    def best(key: str) -> float | None:
        ok = [r["target_reached"] for r in rows if r["method"] == method and r[key] >= lc[key]]
        return max(ok) if ok else None

    return {"identity": best("identity_cosine_original"), "kept": best("others_unchanged_vs_original")}


def markdown(res: dict) -> str:
    out = [
        "# Edits at equal identity: latent constraints, attribute vectors, a Fader network",
        "",
        f"`{res['command']}` ({res['n_images']} test images, one edit each, seed 0; judge = the bundle's). "
        "Kept and identity are against the original image. Regenerate with the command; never hand-edited.",
        "",
        "| bundle | method | strength | reached | worst direction | kept | identity | kept vs recon. |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for b in res["bundles"]:
        for r in b["points"]:
            knob = SWEEPS[r["method"]][0]
            strength = "search" if knob == "attrvec_scale" and r[knob] == 0 else f"{knob} {r[knob]:g}"
            out.append(
                f"| {b['name']} | {r['method']} | {strength} | {r['target_reached']:.3f} | "
                f"{r['worst_direction']} {r['worst_reached']:.3f} (n={r['worst_n']}) | "
                f"{r['others_unchanged_vs_original']:.3f} | {r['identity_cosine_original']:.3f} | "
                f"{r['kept_vs_reconstruction']:.3f} |"
            )
    main = res["bundles"][0]
    baselines = [m for m in SWEEPS if m != "actor" and any(r["method"] == m for r in main["points"])]
    if baselines:
        out += [
            "",
            f"At equal cost on {main['name']}: the most each baseline reaches, at any of its strengths, with no lower "
            "identity (and, apart, no fewer kept attributes) than the latent-constraints point. — : no strength of it "
            "keeps that much.",
            "",
            "| LC edit_confidence | LC reached | LC identity | LC kept | "
            + " | ".join(f"{m}: at identity ≥ | {m}: at kept ≥" for m in baselines)
            + " |",
            "|---|---|---|---|" + "---|---|" * len(baselines),
        ]
        fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
        for r in (p for p in main["points"] if p["method"] == "actor"):
            cells = [at_equal_cost(r, main["points"], m) for m in baselines]
            out.append(
                f"| {r['edit_confidence']:g} | {r['target_reached']:.3f} | {r['identity_cosine_original']:.3f} | "
                f"{r['others_unchanged_vs_original']:.3f} | "
                + " | ".join(f"{fmt(c['identity'])} | {fmt(c['kept'])}" for c in cells)
                + " |"
            )
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench.edit_tradeoff", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--bundle", required=True, help="a bundle whose baselines/ holds attrvec-mean and fader")
    ap.add_argument("--bundles-extra", default="", help="comma-separated bundles for the latent-constraints sweep only")
    ap.add_argument("--label-set", default="faces")
    ap.add_argument("--n", type=int, default=5000, help="test images (all of them when fewer)")
    ap.add_argument("--work", default="runs/edit-tradeoff")
    ap.add_argument("--out", default="docs")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    res = {"command": " ".join(["python -m bench.edit_tradeoff", *sys.argv[1:]]), "bundles": []}
    for i, b in enumerate([a.bundle, *filter(None, a.bundles_extra.split(","))]):
        bundle, rows = Path(b), []
        for method, (knob, values) in SWEEPS.items():
            if method != "actor" and (i > 0 or not (bundle / "baselines" / f"{method}-{a.label_set}").exists()):
                continue
            for v in values:
                rows.append(point(bundle, a.label_set, a.n, method, knob, v, Path(a.work) / f"b{i}"))
                print(json.dumps(rows[-1]), flush=True)
        res["bundles"].append({"name": str(bundle), "points": rows})
    res["n_images"] = json.loads(next(Path(a.work, "b0").glob("*/edits-*.json")).read_text())["n"]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "edit_tradeoff.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "edit_tradeoff.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
