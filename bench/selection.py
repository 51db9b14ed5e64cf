"""What selection among latent candidates (``ServerConfig.candidates``, ``modes.actor_best``) buys and costs.

    python -m bench.selection --bundle service/bundles/avatars --labelset faces --n 200 --k 1 8 16

For every attribute of the label set, ``n`` requests asking it on alone (``GET /sample?attrs=eyeglasses``), drawn as
the server draws them (``modes.draw``, seed 0) and answered by the actor with K candidates per image, exactly as the
server's batcher runs it (``modes.latents``); the bundle's judge reads each image. Reported per K: the share of
images the judge reads with the asked attribute (per attribute and their mean), the share the server would report
converged, and the model-thread time of one request of 1 and of 16 images (mapper, realism score, decode; median of
``--repeats``). Edits: ``lcs eval-edits --candidates K``. Writes OUT/selection.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from conditioning import modes
from conditioning.backbone import Backbone
from conditioning.images import to_uint8
from evaluation.judging import decide, predict
from evaluation.samplers import load_labelset
from models.judge import load_judge


def hit_rates(bb: Backbone, ls, judge, jman, n: int, k: int) -> dict:
    """Per attribute asked on alone: the judged hit rate and the converged share over ``n`` images."""
    out = {}
    for j, a in enumerate(ls.attr_names):
        z, y, mask = modes.draw(ls, {a: 1}, n, bb.latent_dim, torch.Generator().manual_seed(0))
        got = modes.latents("actor", ls, z, y, mask, candidates=k)
        images = to_uint8(bb.decode(got.z)).transpose(0, 3, 1, 2)
        judged = decide(predict(judge, images, bb.device)[0], jman, ls.attr_names)
        out[a] = {"hit": float((judged[:, j] == 1).mean()), "converged": float(got.converged.float().mean())}
    return out


def request_seconds(bb: Backbone, ls, n: int, k: int, repeats: int) -> float:
    """Median model-thread seconds of one actor request of ``n`` images, as the batcher runs it."""
    times = []
    for seed in range(repeats + 1):
        z, y, mask = modes.draw(ls, {ls.attr_names[0]: 1}, n, bb.latent_dim, torch.Generator().manual_seed(seed))
        started = time.perf_counter()
        out, _ = modes.latents("actor", ls, z, y, mask, candidates=k)
        modes.realism(ls, out, y)
        to_uint8(bb.decode(out))
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])  # the first warms up


def main() -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench.selection", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--bundle", default="service/bundles/avatars")
    ap.add_argument("--labelset", default="faces")
    ap.add_argument("--n", type=int, default=200, help="requests per attribute")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 8, 16], help="candidates per image to compare")
    ap.add_argument("--repeats", type=int, default=5, help="timed requests per size")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    bundle = Path(a.bundle)
    bb = Backbone(bundle, "cpu", a.threads)
    ls = load_labelset(bundle, a.labelset)
    judge, jman = load_judge(bundle, bb.device)
    result = {"bundle": str(bundle), "labelset": a.labelset, "n": a.n, "decoder_fingerprint": bb.decoder_fingerprint}
    print(f"{'K':>3} {'hit (mean)':>10} {'converged':>9} {'1 image s':>9} {'16 images s':>11}  per attribute hit")
    for k in a.k:
        per = hit_rates(bb, ls, judge, jman, a.n, k)
        row = {
            "hit": statistics.mean(v["hit"] for v in per.values()),
            "converged": statistics.mean(v["converged"] for v in per.values()),
            "seconds_1": request_seconds(bb, ls, 1, k, a.repeats),
            "seconds_16": request_seconds(bb, ls, 16, k, a.repeats),
            "per_attribute": per,
        }
        result[f"k{k}"] = row
        attrs = " ".join(f"{name}={v['hit']:.2f}" for name, v in per.items())
        print(
            f"{k:>3} {row['hit']:>10.3f} {row['converged']:>9.3f} {row['seconds_1']:>9.4f} {row['seconds_16']:>11.4f}"
            f"  {attrs}",
            flush=True,
        )
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "selection.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
