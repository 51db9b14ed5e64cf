"""Conditional fidelity as users get it: requests to a running server, images read by the bundle's judge.

    lcs serve --bundle service/bundles/avatars &
    python -m bench.fidelity --url http://127.0.0.1:8000 --bundle service/bundles/avatars --labelset faces \
        --mode actor --n 64 --out docs --name fidelity_avatars

For every attribute of the label set, ``n`` images asked with it on alone (``GET /sample?attrs=smiling``) and ``n``
with it off alone (``attrs=-smiling``), in requests of at most the server's max_n, seeds 0, 1, ...; the judge reads
each image. Reported per attribute: the share present when asked on, absent when asked off, each also ÷ the
decoder's own rate on reconstructions of real test images (recall / specificity: no sampler does much better), and
the images the server said had not converged (X-LCS-Converged). With ``--edits N`` (actor mode), also N real test
images uploaded to ``POST /transform``, each asked to flip one attribute (drawn at random, seed 0) from what the judge
reads on it, as a user asks for what they see: per direction the share the judge reads at the asked value, and the
attributes the server's target row keeps that the judge reads the same on the edit as on the server's reconstruction.
Refuses a server whose decoder is not the bundle's. Writes NAME.json and NAME.md.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from conditioning.images import png_bytes
from conditioning.runtime import resolve_device
from evaluation.judging import decide, predict
from evaluation.reconstruction import reconstruction_scores
from models.artifacts import load_manifest
from models.judge import load_judge
from models.vae import load_vae
from training.data import load_dataset


def fetch(client: httpx.Client, labelset: str, spec: str, n: int, mode: str, max_n: int) -> tuple[np.ndarray, int]:
    """``n`` images for one spec as uint8 N x C x H x W, and how many the server says converged."""
    images, converged, seed = [], 0, 0
    while len(images) < n:
        params = {"labelset": labelset, "attrs": spec, "n": min(max_n, n - len(images)), "seed": seed}
        r = client.get("/sample", params={**params, "mode": mode, "format": "json"})
        r.raise_for_status()
        images += [read_png(im["png_base64"]) for im in r.json()["images"]]
        converged += int(r.headers["x-lcs-converged"].split("/")[0])
        seed += 1
    return np.stack(images), converged


def read_png(b64: str) -> np.ndarray:
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def edits_through_http(
    client: httpx.Client, labelset: str, mode: str, attrs: list[str], images: np.ndarray, read
) -> dict:
    """``images`` (uint8 N x C x H x W) each uploaded with one attribute flipped from ``read``'s (the judge's) reading
    of it; the judge reads the returned edit and reconstruction. -> reached per direction and overall, kept."""
    seen = read(images)
    pick = np.random.default_rng(0).integers(len(attrs), size=len(images))
    edited, recon, keep, converged = [], [], [], 0
    for x, j, row in zip(images, pick, seen, strict=True):
        spec = attrs[j] if row[j] == 0 else f"-{attrs[j]}"
        png = png_bytes(x.transpose(1, 2, 0))
        data = {"labelset": labelset, "attrs": spec, "format": "json", "mode": mode}
        r = client.post("/transform", files={"image": ("x.png", png, "image/png")}, data=data)
        r.raise_for_status()
        out = r.json()
        edited.append(read_png(out["edited_png_base64"]))
        recon.append(read_png(out["reconstruction_png_base64"]))
        keep.append([out["target"][a] for a in attrs])
        converged += out["converged"]
    got, base = read(np.stack(edited)), read(np.stack(recon))
    rows = np.arange(len(images))
    asked = 1 - seen[rows, pick]
    reached = got[rows, pick] == asked
    keep = np.asarray(keep) == base  # what the target leaves as the reconstruction reads it ...
    keep[rows, pick] = False  # ... except the asked attribute
    per = {}
    for j, a in enumerate(attrs):
        for v in (0, 1):
            sel = (pick == j) & (asked == v)
            if sel.any():
                per[f"{a}={v}"] = {"n": int(sel.sum()), "reached": float(reached[sel].mean())}
    worst = min(per, key=lambda k: per[k]["reached"])
    return {
        "n": len(images),
        "reached": float(reached.mean()),
        "worst_direction": worst,
        "worst_reached": per[worst]["reached"],
        "kept_vs_reconstruction": float((got == base)[keep].mean()) if keep.any() else None,  # None: nothing to keep
        "converged": converged / len(images),
        "per_direction": per,
    }


def measure(
    url: str,
    bundle: Path,
    labelset: str,
    mode: str,
    n: int,
    max_n: int = 64,
    device: str = "auto",
    judge_dir: Path = None,
    n_edits: int = 0,
) -> dict:
    """The table's numbers; ``judge_dir``: where the judge is, when not in the bundle; ``n_edits``: test images
    edited through ``POST /transform`` (0: none)."""
    dev = resolve_device(device)
    judge, jman = load_judge(judge_dir or bundle, dev)
    vae, vman = load_vae(bundle, dev)
    data = load_dataset(vman["dataset"]["name"], **vman["dataset"]["params"])
    test = data.indices("test")
    with httpx.Client(base_url=url, timeout=600) as client:
        info = client.get("/info").json()
        want = load_manifest(bundle, "vae")["decoder_fingerprint"]
        if info.get("decoder_fingerprint") != want:
            raise SystemExit(f"{url} serves decoder {info.get('decoder_fingerprint')}, the bundle's is {want}")
        served = {ls["name"]: ls for ls in client.get("/labelsets").json()["labelsets"]}
        if labelset not in served:
            raise SystemExit(f"{url} does not serve label set {labelset!r} (it serves {sorted(served)})")
        attrs, version = served[labelset]["labels"], served[labelset]["version"]
        read = lambda x: decide(predict(judge, x, dev)[0], jman, attrs)  # noqa: E731
        started, per_attr = time.time(), {}
        for j, a in enumerate(attrs):
            row = {}
            for v, key in ((1, "on"), (0, "off")):
                images, ok = fetch(client, labelset, a if v else f"-{a}", n, mode, max_n)
                got = read(images)
                row[key], row[f"{key}_converged"] = float((got[:, j] == v).mean()), ok / len(images)
            per_attr[a] = row
        http_seconds = time.time() - started
        edits = None
        if n_edits:
            edits = edits_through_http(client, labelset, mode, attrs, data.images[test[:n_edits]], read)
            edits["http_seconds"] = round(time.time() - started - http_seconds, 1)
    rec, _ = reconstruction_scores(vae, judge, jman, data.images[test], data.columns(attrs)[test], attrs, dev)
    for a, row in per_attr.items():
        row["decoder_recall"], row["decoder_specificity"] = rec[a]["recall"], rec[a]["specificity"]
        row["on_over_decoder"] = row["on"] / rec[a]["recall"] if rec[a]["recall"] else None
        row["off_over_decoder"] = row["off"] / rec[a]["specificity"] if rec[a]["specificity"] else None
    on = {a: r["on"] for a, r in per_attr.items()}
    off = {a: r["off"] for a, r in per_attr.items()}
    return {
        "url": url,
        "labelset": labelset,
        "version": version,
        "mode": mode,
        "n": n,
        "per_attribute": per_attr,
        "asked_on": {
            "mean": float(np.mean(list(on.values()))),
            "min": min(on.values()),
            "min_attribute": min(on, key=on.get),
        },
        "asked_off": {
            "mean": float(np.mean(list(off.values()))),
            "min": min(off.values()),
            "min_attribute": min(off, key=off.get),
        },
        "converged": float(np.mean([r[k] for r in per_attr.values() for k in ("on_converged", "off_converged")])),
        "http_seconds": round(http_seconds, 1),
        "edits": edits,
    }


def summary(rates: dict[str, float]) -> dict:
    worst = min(rates, key=rates.get)
    return {"mean": float(np.mean(list(rates.values()))), "min": rates[worst], "min_attribute": worst}


def markdown(name: str, r: dict, command: str) -> str:
    out = [
        f"# Conditional fidelity through HTTP ({name})",
        "",
        f"Generated by `{command}`; do not edit by hand. Label set `{r['labelset']}` version `{r['version']}`, mode "
        f"`{r['mode']}`, {r['n']} images per attribute and value, read by the bundle's judge. *Decoder*: the judge on "
        "the VAE's reconstructions of real test images (recall / specificity), the most any sampler can reach.",
        "",
        "| attribute | asked on alone: present | ÷ decoder | asked off alone: absent | ÷ decoder | "
        "decoder recall / specificity |",
        "|---|---|---|---|---|---|",
    ]
    na = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
    for a, x in r["per_attribute"].items():
        out.append(
            f"| {a} | {x['on']:.2f} | {na(x['on_over_decoder'])} | {x['off']:.2f} | {na(x['off_over_decoder'])} | "
            f"{x['decoder_recall']:.2f} / {x['decoder_specificity']:.2f} |"
        )
    q, p = r["asked_on"], r["asked_off"]
    out += [
        "",
        f"Asked on alone: mean {q['mean']:.3f}, worst {q['min']:.3f} ({q['min_attribute']}). Asked off alone: mean "
        f"{p['mean']:.3f}, worst {p['min']:.3f} ({p['min_attribute']}). Converged (as the server reports): "
        f"{r['converged']:.3f}. HTTP time {r['http_seconds']:.0f} s.",
    ]
    e = r.get("edits")
    if e:
        out += [
            "",
            f"## Edits through `POST /transform` ({e['n']} test images, one attribute each flipped from what the judge "
            "reads on it)",
            "",
            f"Target reached {e['reached']:.3f}, worst direction {e['worst_direction']} {e['worst_reached']:.3f}; "
            f"kept vs the server's reconstruction {na(e['kept_vs_reconstruction'])}; converged (as the server "
            f"reports) {e['converged']:.3f}. HTTP time {e['http_seconds']:.0f} s.",
            "",
            "| direction | n | reached |",
            "|---|---|---|",
            *(f"| {k} | {v['n']} | {v['reached']:.3f} |" for k, v in e["per_direction"].items()),
        ]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench.fidelity", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--bundle", required=True, help="the bundle the server serves: its judge reads the images")
    ap.add_argument("--labelset", required=True)
    ap.add_argument("--mode", default="actor", choices=["actor", "optimize"])
    ap.add_argument("--n", type=int, default=64, help="images per attribute and value")
    ap.add_argument("--max-n", type=int, default=64, help="images per request (the server's max_n)")
    ap.add_argument("--out", default="docs")
    ap.add_argument("--name", default="fidelity")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--judge", default="", help="the judge's directory (default: the bundle's)")
    ap.add_argument("--edits", type=int, default=0, help="test images edited through POST /transform")
    a = ap.parse_args()
    judge = Path(a.judge) if a.judge else None
    r = measure(a.url, Path(a.bundle), a.labelset, a.mode, a.n, a.max_n, a.device, judge, a.edits)
    command = (
        f"python -m bench.fidelity --url {a.url} --bundle {a.bundle} --labelset {a.labelset} --mode {a.mode} "
        f"--n {a.n} --out {a.out} --name {a.name}" + (f" --edits {a.edits}" if a.edits else "")
    )
    r["command"] = command
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{a.name}.json").write_text(json.dumps(r, indent=2) + "\n")
    md = markdown(a.name, r, command)
    (out / f"{a.name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
