"""Baselines side by side with latent constraints (LC), and what a new label set costs.

    python -m bench.baselines                                   # the full protocol, both datasets
    python -m bench.baselines --profile small --threads 1 --jobs 2  # docs/baselines.md: both datasets side by side
    python -m bench.baselines --datasets fashion-mnist --profile small

A model the work directory holds from the same settings is reused (``train_once``, ``train_lc``), so a run stopped
midway resumes and a rerun retrains only what its settings changed.

For each dataset, on the shipped bundle's backbone and data (service/bundles/DATASET):
1. Quality on the served label set: LC actor and optimisation mode (the shipped mappers) and every
   baseline (attribute vectors, latent GMM, CVAE, CVAE-CMMA, CVAE-GAN; each trained here per seed),
   scored by ``lcs eval``: judge accuracy raw and ÷ ceiling, exact match, Fréchet distance and
   precision/recall (k = 3) in judge features.
2. A new label set nobody has seen (hold-one-out): LC trains a new mapper on the frozen VAE; the CVAE
   is fine-tuned from its served model for the wider label set, or retrained from scratch. Every method
   is probed during training (judge accuracy on the new labels); cost = CPU-seconds (process time) and
   FLOPs (torch.utils.flop_counter) until it first reaches 95% of its own final accuracy; parameters
   trained and stored; drift of the previously served label set. R_register = LC cost ÷ CVAE retrain cost.
3. Label efficiency: final accuracy on the new labels with 100 / 1,000 / 10,000 labelled examples.
4. The GAN systems (bench/gan_parts.py): Triple-GAN and InfoGAN as samplers, BiGAN and GAIA as backbones that an
   LC label set is trained on, each with its training curve; Triple-GAN vs LC with 1%, 10% and 100% of the labels.
Writes docs/baselines.json and docs/baselines.md (and sample grids in the work dir); never hand-edited.
The protocol is in bench/protocol.py, the experiments in bench/runners.py, FLOP counting in bench/flops.py and
the markdown and figures in bench/render.py; this module only runs them.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import torch

from bench.protocol import (
    COMMAND,
    DATASETS,
    NEW_PARTS,
    PROFILES,
    QUALITY_PARTS,
    STUDY_PARTS,
    aggregate,
    bundle_dir,
    equal_accuracy,
)
from bench.render import figure, markdown
from bench.runners import new_label_set, quality, triplegan_labels
from conditioning.runtime import setup_logging
from training.encode import encode_dataset


def _redraw_figures(result: dict, work: Path, out: Path, path: Path) -> None:
    """--figures-only: redraw each dataset's sample figure from the work dir's models, rewrite the JSON and markdown."""
    for name, d in result["datasets"].items():
        d["figure"] = figure(
            name,
            bundle_dir(name),
            DATASETS[name],
            work / name,
            list(dict.fromkeys(r["method"] for r in d["quality_raw"])),
            out,
        )
    path.write_text(json.dumps(result, indent=2) + "\n")
    (out / "baselines.md").write_text(markdown(result) + "\n")


def _measure(name: str, bundle: Path, spec: dict, prof: dict, work: Path, parts: list[str], entry: dict, out: Path):
    """Run ``parts`` on one dataset and merge what they measure into its ``entry``."""
    print(f"== {name}: quality on {spec['label_set']}", flush=True)
    fresh = quality(name, bundle, spec, prof, work, parts)
    done = {r["method"] for r in fresh}
    entry["quality_raw"] = [r for r in entry["quality_raw"] if r["method"] not in done] + fresh
    order = {m: i for i, m in enumerate(QUALITY_PARTS)}
    entry["quality_raw"].sort(key=lambda r: (r["seed"], order[r["method"]]))
    entry["quality"] = aggregate(entry["quality_raw"])
    if spec["new"] and any(p.startswith("new:") for p in parts):
        print(f"== {name}: new label set {spec['new']}", flush=True)
        entry["new_label_set"] = new_label_set(name, bundle, spec, prof, work, parts, entry["new_label_set"] or {})
    if "triplegan-labels" in parts:
        print(f"== {name}: Triple-GAN and LC with a share of the labels", flush=True)
        entry["triplegan_labels"] = triplegan_labels(name, bundle, spec, prof, work)
    if entry["quality"]:
        entry["figure"] = figure(name, bundle, spec, work, [r["method"] for r in entry["quality"]], out)
    if entry["new_label_set"]:
        entry["new_label_set"]["equal_accuracy"] = equal_accuracy(entry["new_label_set"])


def _run_dataset(name: str, a: argparse.Namespace, parts: list[str], skip: list[str], command: str) -> None:
    """Measure one dataset and merge its entry into OUT/baselines.json (under a lock: with ``--jobs`` another dataset's
    process writes the same file), then re-render baselines.md."""
    if a.threads:
        torch.set_num_threads(a.threads)
    started, prof, only = time.time(), PROFILES[a.profile], bool(a.only)
    spec, bundle, out = DATASETS[name], bundle_dir(name), Path(a.out)
    path, work = out / "baselines.json", Path(a.work) / name
    parts = [p for p in parts if only or p not in spec.get("skip", {})]  # --only asks for a part by name
    if not (bundle / "latents.safetensors").exists():
        encode_dataset(bundle, device="cpu")
    if only:
        result = json.loads(path.read_text()) if path.exists() else {"datasets": {}}
        if name not in result["datasets"]:
            raise SystemExit(f"--only merges into existing results; run {name} in full first")
        entry = result["datasets"][name]
        if entry["profile"] != a.profile:
            raise SystemExit(f"{name} was measured with profile {entry['profile']!r}; --only must use the same")
        entry["profile_settings"] = prof  # a profile's settings can change; --only re-measures what they touch
    else:
        entry = {
            "commands": [],
            "profile": a.profile,
            "profile_settings": prof,
            "skipped": skip + [p for p in spec.get("skip", {}) if p not in skip],
            "skip_reasons": spec.get("skip", {}),
            "label_set": spec["label_set"],
            "quality_raw": [],
            "new_label_set": None,
            "wall_minutes": 0.0,
        }
    entry["machine"] = f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}"
    _measure(name, bundle, spec, prof, work, parts, entry, out)
    entry["wall_minutes"] += (time.time() - started) / 60
    entry["commands"].append(command)
    lock = os.open(out, os.O_RDONLY)  # the directory: no lock file left behind
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # merged into the file as it is now: another dataset may have written it
        result = json.loads(path.read_text()) if path.exists() else {"datasets": {}}
        result["datasets"][name] = entry
        path.write_text(json.dumps(result, indent=2) + "\n")
        (out / "baselines.md").write_text(markdown(result) + "\n")
    finally:
        os.close(lock)  # closing releases the lock


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.baselines", description=__doc__.split("\n")[0])
    p.add_argument("--datasets", default="fashion-mnist,avatars")
    p.add_argument("--profile", default="full", choices=sorted(PROFILES))
    p.add_argument("--skip", default="", help="comma-separated parts not to run (recorded in the output)")
    p.add_argument(
        "--only",
        default="",
        help="comma-separated parts to (re)measure, merged into the dataset's existing results; "
        f"parts: {', '.join(QUALITY_PARTS + NEW_PARTS + STUDY_PARTS)}",
    )
    p.add_argument("--work", default="runs/bench-baselines", help="trained models; reused where settings match")
    p.add_argument(
        "--out", default="docs", help="baselines.json there is updated per dataset run; baselines.md re-rendered"
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads per dataset's process (0: torch's default)")
    p.add_argument("--jobs", type=int, default=1, help="datasets measured side by side, a process each")
    p.add_argument(
        "--figures-only",
        action="store_true",
        help="redraw the sample figures from the work dir's models, re-render the markdown",
    )
    a = p.parse_args()
    setup_logging("WARNING")
    skip, only = [m for m in a.skip.split(",") if m], [m for m in a.only.split(",") if m]
    unknown = [m for m in skip + only if m not in QUALITY_PARTS + NEW_PARTS + STUDY_PARTS]
    if unknown:
        raise SystemExit(f"unknown parts {unknown}; parts: {', '.join(QUALITY_PARTS + NEW_PARTS + STUDY_PARTS)}")
    parts = only or [m for m in QUALITY_PARTS + NEW_PARTS + STUDY_PARTS if m not in skip]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "baselines.json"
    if a.figures_only:
        _redraw_figures(json.loads(path.read_text()), Path(a.work), out, path)
        return
    command, names = " ".join([*COMMAND, *sys.argv[1:]]), a.datasets.split(",")
    if a.jobs > 1 and len(names) > 1:
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_run_dataset, args=(n, a, parts, skip, command)) for n in names]
        for i in range(0, len(procs), a.jobs):
            for proc in procs[i : i + a.jobs]:
                proc.start()
            for proc in procs[i : i + a.jobs]:
                proc.join()
        failed = [n for n, proc in zip(names, procs, strict=True) if proc.exitcode]
        if failed:
            raise SystemExit(f"measuring {', '.join(failed)} failed (see above)")
    else:
        for name in names:
            _run_dataset(name, a, parts, skip, command)
    print(markdown(json.loads(path.read_text())))


if __name__ == "__main__":
    main()
