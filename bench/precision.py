"""fp32 against bf16 on this machine, in one run (issue 26 item 1; issue 28 item 1): the shipped VAE's training step
and its decoder as the server runs it, plus what bf16 changes in the images (the judge's scores on both decodes).

    python -m bench.precision --out docs              # docs/precision.md + .json

Each figure is the median of ``--steps`` timed repeats after one warm-up. Whether bf16 pays depends on the CPU: with
bf16 units (avx512_bf16 / AMX; ``conditioning.runtime.cpu_has_bf16``) oneDNN runs it natively, without them it is
emulated, and ``--precision auto`` picks fp32 there.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from conditioning import backbone
from conditioning.runtime import autocast, cpu_has_bf16, job_threads, memory_format
from evaluation.judging import predict
from models.judge import load_judge
from models.vae import VAE, load_vae
from service.config import DEFAULT_BUNDLE

PRECISIONS = ("fp32", "bf16")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def train_step_seconds(vae_cfg, precision: str, batch: int, repeats: int) -> float:
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    vae = VAE(vae_cfg).to(memory_format=memory_format(cpu, precision))
    opt = torch.optim.Adam(vae.parameters(), 3e-4)
    x = torch.rand(batch, vae_cfg.channels, vae_cfg.image_size, vae_cfg.image_size)
    x = x.contiguous(memory_format=memory_format(cpu, precision))

    def step():
        with autocast(cpu, precision):
            loss = vae.loss(x)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return timed(step, repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    p.add_argument("--threads", type=int, default=0, help="0 = every core")
    p.add_argument("--steps", type=int, default=5, help="timed repeats per figure")
    p.add_argument("--judge-n", type=int, default=512, help="prior samples decoded both ways for the judge")
    p.add_argument("--out", default="docs")
    a = p.parse_args()
    torch.set_num_threads(job_threads(a.threads))
    cpu = torch.device("cpu")
    vae, _ = load_vae(a.bundle)
    rows = []
    for precision in PRECISIONS:
        vae.to(memory_format=memory_format(cpu, precision))
        row = {"precision": precision, "train_step_s": train_step_seconds(vae.cfg, precision, 64, a.steps)}
        for n in (1, 16, 64):
            z = torch.randn(n, vae.cfg.latent_dim, generator=torch.Generator().manual_seed(n))
            row[f"decode_{n}_ms"] = 1000 * timed(
                lambda z=z, p=precision: backbone.decode(vae, z, cpu, precision=p), a.steps
            )
        rows.append(row)
        print(json.dumps(row), flush=True)
    judge, jman = load_judge(a.bundle)
    z = torch.randn(a.judge_n, vae.cfg.latent_dim, generator=torch.Generator().manual_seed(0))
    imgs = {p: backbone.decode(vae, z, cpu, precision=p) for p in PRECISIONS}
    probs = {p: predict(judge, (imgs[p] * 255).round().to(torch.uint8), cpu)[0] for p in PRECISIONS}
    thresholds = np.array([jman["thresholds"][k] for k in jman["config"]["attr_names"]])
    same = ((probs["fp32"] > thresholds) == (probs["bf16"] > thresholds)).mean(0)
    images = {
        "max_pixel_diff": float((imgs["fp32"] - imgs["bf16"]).abs().max()),
        "mean_pixel_diff": float((imgs["fp32"] - imgs["bf16"]).abs().mean()),
        "judge_decisions_agree": {k: float(v) for k, v in zip(jman["config"]["attr_names"], same, strict=True)},
        "judge_prob_max_diff": float(np.abs(probs["fp32"] - probs["bf16"]).max()),
    }
    fp, bf = rows
    result = {
        "cpu": cpu_name(),
        "cpu_has_bf16": cpu_has_bf16(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "bundle": a.bundle,
        "repeats": a.steps,
        "rows": rows,
        "bf16_speedup": {k: fp[k] / bf[k] for k in fp if k != "precision"},
        "images": images,
        "command": "python -m bench.precision " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items()),
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "precision.json").write_text(json.dumps(result, indent=2))
    (out / "precision.md").write_text(report(result))
    print(report(result))


def report(r: dict) -> str:
    fp, bf = r["rows"]
    steps_s = lambda row: 1 / row["train_step_s"]  # noqa: E731
    lines = [
        "# fp32 and bf16 on this machine",
        "",
        f"`{r['command']}` — {r['cpu']}, bf16 units: **{'yes' if r['cpu_has_bf16'] else 'no'}** "
        f"(`--precision auto` picks **{'bf16' if r['cpu_has_bf16'] else 'fp32'}**), {r['threads']} threads, "
        f"torch {r['torch']}, median of {r['repeats']} repeats.",
        "",
        "| | fp32 | bf16 | bf16 speed-up |",
        "|---|---|---|---|",
        f"| VAE training steps/s (batch 64) | {steps_s(fp):.3f} | {steps_s(bf):.3f} | "
        f"{r['bf16_speedup']['train_step_s']:.2f}× |",
    ]
    for n in (1, 16, 64):
        k = f"decode_{n}_ms"
        lines.append(f"| decode {n} (ms, padded as served) | {fp[k]:.1f} | {bf[k]:.1f} | {r['bf16_speedup'][k]:.2f}× |")
    im = r["images"]
    worst = min(im["judge_decisions_agree"].items(), key=lambda kv: kv[1])
    lines += [
        "",
        f"What bf16 changes in the images ({r['bundle']}, prior samples): mean |pixel difference| "
        f"{im['mean_pixel_diff']:.5f}, max {im['max_pixel_diff']:.4f}; the judge's decisions agree on "
        f"{min(im['judge_decisions_agree'].values()):.3f}–{max(im['judge_decisions_agree'].values()):.3f} of images "
        f"per attribute (lowest: {worst[0]}), its probabilities differ by at most {im['judge_prob_max_diff']:.3f}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
