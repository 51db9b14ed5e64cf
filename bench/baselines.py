"""Baselines side by side with latent constraints (LC), and what a new label set costs.

    python bench/baselines.py                                   # the full protocol, both datasets
    python bench/baselines.py --datasets fashion-mnist --profile small

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
Writes docs/baselines.json and docs/baselines.md (and sample grids in the work dir); never hand-edited.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.judge import load_judge  # noqa: E402
from models.latent import LatentConfig, LatentMappers  # noqa: E402
from models.vae import load_vae  # noqa: E402
from training.data import load_dataset  # noqa: E402
from training.encode import encode_dataset  # noqa: E402
from training.evaluate import evaluate  # noqa: E402
from conditioning.runtime import setup_logging  # noqa: E402
from conditioning.images import save_grid  # noqa: E402
from evaluation.samplers import build_sampler, conditional_images, decode_all  # noqa: E402
from training.train_baseline import (ARTIFACT_STEM, IMAGE_METHODS, LATENT_METHODS, TrainBaselineConfig,  # noqa: E402
                                     load_conditional, train_baseline)
from evaluation.judging import decide, predict  # noqa: E402
from training.train_labelset import (TrainLabelSetConfig, actor_loss, attr_loss, critic_batch, critic_loss,  # noqa: E402
                                     load_table, posterior_sample, train_labelset)

DATASETS = {
    # quality is measured on label_set; hold-one-out serves `served` (default label_set) and adds `new`; batch as the shipped VAE
    "fashion-mnist": {"label_set": "category", "new": "footwear", "batch": 128},
    "avatars": {"label_set": "faces", "served": "faces_no_hair_colour", "new": "hair_colour", "batch": 64},
}
PROFILES = {
    "full": {"seeds": 2, "n_eval": 5000, "image_steps": 3000, "gan_steps": 3000, "lc_steps": 1500, "new_steps": 1500,
             "probe_every": 100, "n_probe": 1000, "label_counts": [100, 1000, 10000], "efficiency_steps": 1000},
    "small": {"seeds": 1, "n_eval": 2000, "image_steps": 1200, "gan_steps": 600, "lc_steps": 600, "new_steps": 600,
              "probe_every": 50, "n_probe": 1000, "label_counts": [100, 1000, 10000], "efficiency_steps": 300},
    "smoke": {"seeds": 1, "n_eval": 200, "image_steps": 20, "gan_steps": 10, "lc_steps": 10, "new_steps": 10,
              "probe_every": 5, "n_probe": 100, "label_counts": [100], "efficiency_steps": 5},
}
LC_RECIPE = {"lr": 1e-3, "width": 256, "depth": 4, "critic_steps": 10, "batch_size": 256}  # as training/recipes/default_bundle.sh


class Judge:
    """Exact match of generated images to requested label rows of one label set: every attribute right (top-1 for a
    categorical set). The hold-out's probe: a per-attribute mean would hide a wrong hair colour among the right zeros."""

    def __init__(self, bundle: Path, data, label_set: str, n: int, seed: int = 0):
        self.judge, self.jman = load_judge(bundle, "cpu")
        self.ls = data.label_sets[label_set]
        table = data.columns(self.ls.attrs)[data.indices("test")]
        self.labels = torch.from_numpy(table[np.random.default_rng(seed).integers(len(table), size=n)]).float()

    def accuracy(self, images: torch.Tensor) -> float:
        got = decide(predict(self.judge, images, torch.device("cpu"))[0], self.jman, self.ls.attrs)
        hit = got == self.labels.numpy()
        return float(hit.all(1).mean())


def lc_images(vae, m: LatentMappers, labels: torch.Tensor, seed: int = 1) -> torch.Tensor:
    with torch.no_grad():
        z = torch.randn(len(labels), m.cfg.latent_dim, generator=torch.Generator().manual_seed(seed))
        return decode_all(vae, m.actor(z, labels), torch.device("cpu"))


def cvae_images(model, labels: torch.Tensor, attrs: list[str], rows, counts, seed: int = 1) -> torch.Tensor:
    return conditional_images(model, labels, attrs, rows, counts, torch.Generator().manual_seed(seed), torch.device("cpu"))


class FlopCount(TorchDispatchMode):
    """torch.utils.flop_counter's per-op formulas without FlopCounterMode's module hooks, which refuse the
    gradient penalty's autograd.grad(create_graph=True) ("leaf node passed to _will_engine_execute_node")."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def flops_of(step) -> int:
    with FlopCount() as fc:
        step()
    return int(fc.total)


def lc_step_flops(bundle: Path, label_set: str, recipe: dict) -> int:
    """FLOPs of one LC training step: critic_steps critic updates (with gradient penalty), one actor and one D_attr update."""
    t = load_table(bundle, label_set)
    cfg = TrainLabelSetConfig(bundle=str(bundle), label_set=label_set, **recipe)
    m = LatentMappers(LatentConfig(latent_dim=t.mu.shape[1], attr_names=t.attr_names, kind=t.kind, width=cfg.width, depth=cfg.depth))
    g = torch.Generator().manual_seed(0)
    rows = t.rows(0)
    idx = lambda: rows[torch.randint(len(rows), (cfg.batch_size,), generator=g)]  # noqa: E731

    def step():
        for _ in range(cfg.critic_steps):
            critic_loss(m, critic_batch(m, t, idx(), cfg, g), cfg.gp_weight)[0].backward()
        actor_loss(m, t, idx(), cfg, g)[0].backward()
        i = idx()
        attr_loss(m, posterior_sample(t, i, g), t.labels[i], t.kind).backward()
    return flops_of(step)


def image_step_flops(bundle: Path, method: str, label_set: str, batch: int) -> int:
    from models.vae import VAEConfig
    from models.artifacts import load_manifest
    from training.train_baseline import build_image_model, label_columns

    vman = load_manifest(bundle, "vae")
    data = load_dataset(vman["dataset"]["name"], **vman["dataset"]["params"])
    attrs, kind = label_columns(data, label_set)
    model = build_image_model(TrainBaselineConfig(method=method), VAEConfig(**vman["config"]), attrs, kind)
    c, h, w = data.image_shape
    x, y = torch.rand(batch, c, h, w), (torch.rand(batch, len(attrs)) > 0.5).float()
    return flops_of(lambda: [loss.backward() for _, loss, _ in model.step_losses(x, y)])


def to_95(probes: list[dict]) -> dict:
    """First probe reaching 95% of the final accuracy: its step, CPU-seconds, and the final accuracy."""
    final = probes[-1]["accuracy"]
    hit = next(p for p in probes if p["accuracy"] >= 0.95 * final)
    return {"final_accuracy": final, "steps_to_95": hit["step"], "cpu_s_to_95": round(hit["cpu_s"], 2),
            "cpu_s_total": round(probes[-1]["cpu_s"], 2), "curve": [[p["step"], round(p["cpu_s"], 2), round(p["accuracy"], 4)] for p in probes]}


QUALITY_PARTS = ("prior", "actor", "optimize", "actor-l0") + LATENT_METHODS + IMAGE_METHODS
NEW_PARTS = ("new:floor", "new:lc", "new:lc-l0", "new:cvae", "new:efficiency")
LC_SAMPLING = {**LC_RECIPE, "lambda_dist": 0.0}  # conditional sampling only: no distance penalty (see docs/baselines.md)


def gain_95(curve: list, floor: float) -> dict:
    """First probe reaching 95% of the final gain over the floor (unconditional samples' accuracy)."""
    final = curve[-1][2]
    hit = next(c for c in curve if c[2] - floor >= 0.95 * (final - floor))
    return {"gain_over_floor": final - floor, "steps_to_95_gain": hit[0], "cpu_s_to_95_gain": hit[1]}


def equal_accuracy(h: dict) -> dict:
    """R_register at equal accuracy: the CPU-seconds each method needs to reach 95% of LC's final accuracy. A CVAE
    that never gets there within its budget bounds the ratio from above (LC's cost ÷ the CVAE's whole budget)."""
    best = "lc_l0" if "lc_l0" in h else "lc"
    if best not in h:
        return {}
    target = 0.95 * h[best]["final_accuracy"]
    reach = lambda curve: next((c[1] for c in curve if c[2] >= target), None)  # noqa: E731
    lc_cpu = reach(h[best]["curve"])
    out = {"target_accuracy": target, "lc": best, "lc_cpu_s": lc_cpu}
    for ref in ("cvae_retrain", "cvae_finetune"):
        if ref in h:
            cpu, budget = reach(h[ref]["curve"]), h[ref]["cpu_s_total"]
            out[ref] = {"cpu_s": cpu, "budget_cpu_s": budget, "ratio": lc_cpu / cpu if cpu else None,
                        "ratio_upper_bound": None if cpu else lc_cpu / budget}
    return out


def quality(name: str, bundle: Path, spec: dict, prof: dict, work: Path, parts: list[str]) -> list[dict]:
    """Rows for the quality table. ``actor-l0``: an LC actor trained here with λ_dist = 0 (the shipped mappers use 0.1,
    which serves edits); seeds of the shipped LC mappers are sampling seeds."""
    ls, rows = spec["label_set"], []
    ev = lambda sampler, seed, artifact="": evaluate(bundle, sampler=sampler, label_set=ls, n=prof["n_eval"],  # noqa: E731
                                                      n_spec3=prof["n_eval"] // 2, seed=seed, device="cpu", boots=20,
                                                      out=work / "eval", artifact=artifact)
    for seed in range(max(prof["seeds"], 2)):
        for sampler in (p for p in ("prior", "actor", "optimize") if p in parts):
            rows.append(summarise(name, sampler, seed, ev(sampler, seed), {"trained_here": False}))
        # fits on the latent table cost seconds: always 2 seeds; trained networks: the profile's seeds
        methods = LATENT_METHODS + (("actor-l0",) + IMAGE_METHODS if seed < prof["seeds"] else ())
        for method in (m for m in methods if m in parts):
            out = work / f"{method}-{ls}-s{seed}"
            if method == "actor-l0":
                train_labelset(TrainLabelSetConfig(bundle=str(bundle), label_set=ls, out=str(out), steps=prof["lc_steps"], seed=seed,
                                                   diag_every=10 ** 9, **LC_SAMPLING), command=["bench/baselines.py", name, method, f"seed={seed}"])
                man = json.loads((out / "mapper.json").read_text())
                stored = sum(t.numel() for t in _tensors(out / "mapper.safetensors").values())
            else:
                steps = prof["gan_steps"] if method == "cvae-gan" else prof["image_steps"]
                train_baseline(TrainBaselineConfig(bundle=str(bundle), method=method, label_set=ls, steps=steps, seed=seed,
                                                   batch_size=spec["batch"], device="cpu", out=str(out)),
                               command=["bench/baselines.py", name, method, f"seed={seed}"])
                man = json.loads((out / f"{ARTIFACT_STEM[method]}.json").read_text())
                stored = man["metrics"]["params_stored"]
            r = ev(sampler_of(method), seed, out)
            rows.append(summarise(name, method, seed, r, {"trained_here": True, "train_cpu_s": man["metrics"]["cpu_seconds"],
                                                          "steps": man["metrics"].get("steps"), "params_stored": stored}))
            print(f"  {name} {method} seed {seed}: accuracy {r['mean_accuracy']:.3f}, FD {r['frechet']['fd']:.2f}", flush=True)
    return rows


def sampler_of(method: str) -> str:
    return "actor" if method == "actor-l0" else method


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
    images = []
    for method in methods:
        trained = method not in ("prior", "actor", "optimize")
        smp = build_sampler(sampler_of(method), bundle, ls, vae, work / f"{method}-{ls}-s0" if trained else "")
        images.append(smp.images(labels, torch.Generator().manual_seed(0), torch.device("cpu")))
    path = save_grid(torch.cat(images), out / f"baselines_{name}.png", nrow=len(labels), scale=2)
    attrs = data.label_sets[ls].attrs
    return {"figure": path.name, "rows": methods,
            "columns": [",".join(a for a, v in zip(attrs, r.tolist()) if v) or "(none)" for r in labels]}


def summarise(dataset: str, method: str, seed: int, r: dict, extra: dict) -> dict:
    return {"dataset": dataset, "method": method, "seed": seed, "accuracy": r["mean_accuracy"],
            "accuracy_over_ceiling": r["mean_accuracy_over_ceiling"], "exact_match": r["exact_match"],
            "exact_match_3attr": r.get("exact_match_3attr"), "frechet": r["frechet"]["fd"],
            "frechet_real": r["frechet_real_test_vs_train"]["fd"], "precision": r["precision_recall"]["precision"],
            "recall": r["precision_recall"]["recall"], **extra}


def lc_cost(name: str, bundle: Path, new: str, prof: dict, work: Path, recipe: dict, tag: str, judge: "Judge", vae) -> dict:
    d = train_labelset(TrainLabelSetConfig(bundle=str(bundle), label_set=new, out=str(work / f"{tag}-{new}"), diag_every=10 ** 9,
                                           **{**recipe, "steps": prof["new_steps"]}),
                       command=["bench/baselines.py", name, tag, new],
                       probe=lambda step, m: {"accuracy": judge.accuracy(lc_images(vae, m, judge.labels))}, probe_every=prof["probe_every"])
    man = json.loads((d / "mapper.json").read_text())
    flops = lc_step_flops(bundle, new, {k: v for k, v in recipe.items() if k != "lambda_dist"})
    params = sum(t.numel() for k, t in _tensors(d / "mapper.safetensors").items() if k not in ("label_table", "sigma_bar"))
    curve = to_95(man["metrics"]["probes"])
    return {**curve, "lambda_dist": recipe.get("lambda_dist", 0.1), "flops_per_step": flops, "flops_to_95": flops * curve["steps_to_95"],
            "params_trained": params, "params_stored": params, "drift_on_served": 0.0,
            "drift_note": "by construction: the served label set's mapper and the decoder are not touched"}


def new_label_set(name: str, bundle: Path, spec: dict, prof: dict, work: Path, parts: list[str], out: dict) -> dict:
    """Hold-one-out: the cost of serving spec['new'] with LC vs fine-tuning / retraining the CVAE; updates ``out``."""
    ls, new = spec.get("served", spec["label_set"]), spec["new"]
    vae, vman = load_vae(bundle, "cpu")
    data = load_dataset(vman["dataset"]["name"], **vman["dataset"]["params"])
    judge_new = Judge(bundle, data, new, prof["n_probe"])
    judge_old = Judge(bundle, data, ls, prof["n_probe"])
    new_attrs, old_attrs = data.label_sets[new].attrs, data.label_sets[ls].attrs
    out.update(dataset=name, served=ls, new=new)

    if "new:floor" in parts:  # unconditional samples scored against the requested new labels: what no conditioning gets
        with torch.no_grad():
            z = torch.randn(len(judge_new.labels), vae.cfg.latent_dim, generator=torch.Generator().manual_seed(1))
            out["floor_accuracy"] = judge_new.accuracy(decode_all(vae, z, torch.device("cpu")))
    if "new:lc" in parts:
        out["lc"] = lc_cost(name, bundle, new, prof, work, LC_RECIPE, "lc", judge_new, vae)
    if "new:lc-l0" in parts:
        out["lc_l0"] = lc_cost(name, bundle, new, prof, work, LC_SAMPLING, "lc-l0", judge_new, vae)

    base = work / f"cvae-{ls}-s0"  # trained in the quality step when the served set is the quality set
    wide = f"{ls}+{new}"
    # every (served, new) label combination the training data has, to complete requests for the new labels
    rows, counts = np.unique(data.columns(old_attrs + new_attrs)[data.indices("train")].astype(np.int8), axis=0, return_counts=True)
    rows, counts = torch.from_numpy(rows), torch.from_numpy(counts)

    def cvae_probe(step, model):
        return {"accuracy": judge_new.accuracy(cvae_images(model, judge_new.labels, new_attrs, rows, counts))}

    if {"new:cvae", "new:efficiency"} & set(parts) and not (base / "cvae.json").exists():
        train_baseline(TrainBaselineConfig(bundle=str(bundle), method="cvae", label_set=ls, steps=prof["image_steps"],
                                           batch_size=spec["batch"], device="cpu", out=str(base)),
                       command=["bench/baselines.py", name, "cvae", ls, "served"])
    if "new:cvae" in parts:
        base_model, _, base_extra = load_conditional(base)
        old_before = judge_old.accuracy(cvae_images(base_model, judge_old.labels, old_attrs, base_extra["label_rows"], base_extra["label_counts"]))
        flops_cvae = image_step_flops(bundle, "cvae", wide, spec["batch"])
        for variant, init, steps in (("cvae_finetune", str(base), prof["new_steps"]), ("cvae_retrain", "", prof["image_steps"])):
            d = train_baseline(TrainBaselineConfig(bundle=str(bundle), method="cvae", label_set=wide, init=init, steps=steps,
                                                   batch_size=spec["batch"], device="cpu", out=str(work / f"{variant}-{wide}")),
                               command=["bench/baselines.py", name, variant, wide], probe=cvae_probe, probe_every=prof["probe_every"])
            model, man, extra = load_conditional(d)
            old_after = judge_old.accuracy(cvae_images(model, judge_old.labels, old_attrs, extra["label_rows"], extra["label_counts"]))
            curve = to_95(man["metrics"]["probes"])
            out[variant] = {**curve, "flops_per_step": flops_cvae, "flops_to_95": flops_cvae * curve["steps_to_95"],
                            "params_trained": man["metrics"]["params_trained"], "params_stored": man["metrics"]["params_stored"],
                            "served_accuracy_before": old_before, "served_accuracy_after": old_after,
                            "drift_on_served": old_after - old_before}
    methods = [k for k in ("lc_l0", "lc", "cvae_finetune", "cvae_retrain") if k in out]
    if "floor_accuracy" in out:  # 95% of a method's final value is trivial when the floor is already near it: also 95% of the gain
        for k in methods:
            out[k].update(gain_95(out[k]["curve"], out["floor_accuracy"]))
    for lc in ("lc", "lc_l0"):
        for ref in ("cvae_retrain", "cvae_finetune"):
            if lc in out and ref in out:
                out[f"R_register_{lc}_vs_{ref}"] = out[lc]["cpu_s_to_95"] / max(out[ref]["cpu_s_to_95"], 1e-9)
                if "cpu_s_to_95_gain" in out[lc] and "cpu_s_to_95_gain" in out[ref]:
                    out[f"R_gain_{lc}_vs_{ref}"] = out[lc]["cpu_s_to_95_gain"] / max(out[ref]["cpu_s_to_95_gain"], 1e-9)
    best = "lc_l0" if "lc_l0" in out else "lc"
    if f"R_register_{best}_vs_cvae_retrain" in out:
        out["R_register"] = out[f"R_register_{best}_vs_cvae_retrain"]

    if "new:efficiency" in parts:
        eff = []
        for n in prof["label_counts"]:
            lc = train_labelset(TrainLabelSetConfig(bundle=str(bundle), label_set=new, out=str(work / f"lc-l0-{new}-n{n}"), labelled=n,
                                                    diag_every=10 ** 9, **{**LC_SAMPLING, "steps": prof["efficiency_steps"]}),
                                command=["bench/baselines.py", name, "lc-l0", new, f"labelled={n}"],
                                probe=lambda step, m: {"accuracy": judge_new.accuracy(lc_images(vae, m, judge_new.labels))},
                                probe_every=prof["efficiency_steps"])
            cv = train_baseline(TrainBaselineConfig(bundle=str(bundle), method="cvae", label_set=wide, init=str(base), labelled=n,
                                                    steps=prof["efficiency_steps"], batch_size=spec["batch"], device="cpu",
                                                    out=str(work / f"cvae_finetune-{wide}-n{n}")),
                                command=["bench/baselines.py", name, "cvae_finetune", wide, f"labelled={n}"],
                                probe=cvae_probe, probe_every=prof["efficiency_steps"])
            eff.append({"labelled": n, "lc_lambda_dist": 0.0,
                        "lc_accuracy": json.loads((lc / "mapper.json").read_text())["metrics"]["probes"][-1]["accuracy"],
                        "cvae_finetune_accuracy": json.loads((cv / "cvae.json").read_text())["metrics"]["probes"][-1]["accuracy"]})
            print(f"  {name} labelled {n}: LC {eff[-1]['lc_accuracy']:.3f}, CVAE fine-tune {eff[-1]['cvae_finetune_accuracy']:.3f}", flush=True)
        out["label_efficiency"] = eff
    return out


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean and spread (max − min) over seeds per (dataset, method)."""
    keys = ["accuracy", "accuracy_over_ceiling", "exact_match", "exact_match_3attr", "frechet", "precision", "recall"]
    out = []
    for ds, method in dict.fromkeys((r["dataset"], r["method"]) for r in rows):
        group = [r for r in rows if r["dataset"] == ds and r["method"] == method]
        agg = {"dataset": ds, "method": method, "seeds": len(group), "frechet_real": group[0]["frechet_real"],
               "trained_here": group[0]["trained_here"], "train_cpu_s": group[0].get("train_cpu_s"), "params_stored": group[0].get("params_stored")}
        for k in keys:
            vals = [r[k] for r in group if r[k] is not None]
            agg[k] = float(np.mean(vals)) if vals else None
            agg[f"{k}_spread"] = float(np.ptp(vals)) if len(vals) > 1 else None
        out.append(agg)
    return out


def markdown(result: dict) -> str:
    f = lambda v, p=3: "–" if v is None else f"{v:.{p}f}"  # noqa: E731
    lines = ["# Baselines vs latent constraints", "",
             "Generated by `bench/baselines.py`; each dataset's section names the command, profile and machine that "
             "produced it. Never hand-edited.", "",
             "Samplers: `prior` (unconditional VAE, the floor), `actor` / `optimize` (LC, the shipped mappers), `attrvec-*` "
             "(attribute vectors), `gmm` (per-condition latent GMM), `cvae` / `cvae-cmma` (learned prior) / `cvae-gan` "
             "(retrained conditional models on the same backbone). Accuracy: judge accuracy of the requested labels "
             "(top-1 for categorical sets, mean over attributes for binary ones); FD and precision/recall (k = 3) in judge "
             "features against real training images. ± is the spread (max − min) over seeds where more than one ran; "
             "LC rows use the shipped mappers (one training seed), so their spread is over sampling seeds.", ""]
    for ds, d in result["datasets"].items():
        lines += [f"## {ds}", "", f"{d['profile']} profile ({json.dumps(d['profile_settings'])}"
                  + (f"; skipped: {', '.join(skipped)}" if (skipped := [m for m in d["skipped"] if m not in {r["method"] for r in d["quality"]}]) else "") + f") on {d['machine']}; {d['wall_minutes']:.0f} min in all, by:", ""]
        lines += [f"    {c}" for c in d["commands"]] + ["",
                  f"### Quality on `{d['label_set']}`", "",
                  f"| method | accuracy | ÷ ceiling | exact match | 3-attr exact | FD (real test: {f(d['quality'][0]['frechet_real'], 2)}) "
                  "| precision | recall | train CPU-s | stored params |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in d["quality"]:
            pm = lambda k, p=3: f(r[k], p) + (f" ± {f(r[k + '_spread'], p)}" if r.get(k + "_spread") else "")  # noqa: E731
            lines.append(f"| {r['method']} | {pm('accuracy')} | {pm('accuracy_over_ceiling')} | {pm('exact_match')} | {pm('exact_match_3attr')} | "
                         f"{pm('frechet', 2)} | {pm('precision')} | {pm('recall')} | {f(r['train_cpu_s'], 0) if r['train_cpu_s'] is not None else '–'} | "
                         f"{r['params_stored'] if r['params_stored'] is not None else '–'} |")
        lines.append("")
        if d.get("figure"):
            fig = d["figure"]
            lines += [f"![Rows, top to bottom: {', '.join(fig['rows'])}; columns: the {len(fig['columns'])} most frequent label rows.]({fig['figure']})", "",
                      f"Rows, top to bottom: {', '.join(fig['rows'])}. Columns (requested labels): {'; '.join(fig['columns'])}.", ""]
        h = d.get("new_label_set")
        if not h:
            continue
        lines += [f"### A new label set: `{h['new']}` (served before: `{h['served']}`)", ""]
        if "floor_accuracy" in h:
            lines += [f"Floor: unconditional VAE samples score {f(h['floor_accuracy'])} on the requested `{h['new']}` labels "
                      "(what a method that ignores them gets). Accuracy here is exact match: every requested attribute "
                      "of the label set right (top-1 for a categorical set).", ""]
        lines += ["| method | final accuracy | gain over floor | steps to 95% | CPU-s to 95% | CPU-s to 95% of the gain | CPU-s total "
                  "| FLOPs to 95% | params trained | params stored | drift on served |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for k, label in (("lc_l0", "LC, λ_dist 0 (sampling recipe): new mapper, frozen VAE"), ("lc", "LC, λ_dist 0.1 (edit recipe)"),
                         ("cvae_finetune", "CVAE fine-tuned from the served model"), ("cvae_retrain", "CVAE retrained from scratch")):
            if k not in h:
                continue
            m = h[k]
            lines.append(f"| {label} | {f(m['final_accuracy'])} | {f(m.get('gain_over_floor'))} | {m['steps_to_95']} | {f(m['cpu_s_to_95'], 1)} | "
                         f"{f(m.get('cpu_s_to_95_gain'), 1)} | {f(m['cpu_s_total'], 1)} | "
                         f"{m['flops_to_95']:.3g} | {m['params_trained']:,} | {m['params_stored']:,} | {f(m['drift_on_served'])} |")
        ratios = [f"{lc} ÷ {ref} = {h[f'R_register_{lc}_vs_{ref}']:.3f}"
                  + (f" (to 95% of the gain: {h[f'R_gain_{lc}_vs_{ref}']:.3f})" if f"R_gain_{lc}_vs_{ref}" in h else "")
                  for lc in ("lc_l0", "lc") for ref in ("cvae_retrain", "cvae_finetune") if f"R_register_{lc}_vs_{ref}" in h]
        lines += [""]
        if "R_register" in h:
            lines += [f"**R_register = {h['R_register']:.3f}** (CPU-seconds to 95% of final accuracy, LC ÷ CVAE retrain; target ≤ 0.02). "
                      f"All ratios: {'; '.join(ratios)}."]
        eq = h.get("equal_accuracy") or {}
        for ref, label in (("cvae_retrain", "CVAE retrained"), ("cvae_finetune", "CVAE fine-tuned")):
            if ref in eq:
                r = eq[ref]
                lines += [f"At equal accuracy ({f(eq['target_accuracy'])}, 95% of LC's final): LC needs {f(eq['lc_cpu_s'], 1)} CPU-s; {label} "
                          + (f"needs {f(r['cpu_s'], 1)}, **R = {r['ratio']:.3f}**." if r["cpu_s"] is not None else
                             f"never gets there in its {f(r['budget_cpu_s'], 0)} CPU-s, so **R < {r['ratio_upper_bound']:.3f}**.")]
        if "cvae_finetune" in h:
            lines += [f"Served-set accuracy of the CVAE before / after fine-tuning: {f(h['cvae_finetune']['served_accuracy_before'])} / "
                      f"{f(h['cvae_finetune']['served_accuracy_after'])}."]
        if h.get("label_efficiency"):
            lc_l = "LC (λ_dist 0)" if h["label_efficiency"][0].get("lc_lambda_dist") == 0.0 else "LC (λ_dist 0.1)"
            lines += ["", "Label efficiency (final accuracy on the new labels):", "", f"| labelled examples | {lc_l} | CVAE fine-tune |", "|---|---|---|"]
            lines += [f"| {e['labelled']:,} | {f(e['lc_accuracy'])} | {f(e['cvae_finetune_accuracy'])} |" for e in h["label_efficiency"]]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", default="fashion-mnist,avatars")
    p.add_argument("--profile", default="full", choices=sorted(PROFILES))
    p.add_argument("--skip", default="", help="comma-separated parts not to run (recorded in the output)")
    p.add_argument("--only", default="", help="comma-separated parts to (re)measure, merged into the dataset's existing results; "
                                              f"parts: {', '.join(QUALITY_PARTS + NEW_PARTS)}")
    p.add_argument("--work", default="runs/bench-baselines")
    p.add_argument("--out", default="docs", help="baselines.json there is updated per dataset run; baselines.md re-rendered")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--figures-only", action="store_true", help="redraw the sample figures from the work dir's models, re-render the markdown")
    a = p.parse_args()
    setup_logging("WARNING")
    if a.threads:
        torch.set_num_threads(a.threads)
    prof, skip = PROFILES[a.profile], [m for m in a.skip.split(",") if m]
    only = [m for m in a.only.split(",") if m]
    unknown = [m for m in skip + only if m not in QUALITY_PARTS + NEW_PARTS]
    if unknown:
        raise SystemExit(f"unknown parts {unknown}; parts: {', '.join(QUALITY_PARTS + NEW_PARTS)}")
    parts = only or [m for m in QUALITY_PARTS + NEW_PARTS if m not in skip]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "baselines.json"
    result = json.loads(path.read_text()) if path.exists() else {"datasets": {}}
    command = "python bench/baselines.py " + " ".join(sys.argv[1:])
    if a.figures_only:
        for name, d in result["datasets"].items():
            d["figure"] = figure(name, ROOT / "service" / "bundles" / name, DATASETS[name], Path(a.work) / name,
                                 list(dict.fromkeys(r["method"] for r in d["quality_raw"])), out)
        path.write_text(json.dumps(result, indent=2) + "\n")
        (out / "baselines.md").write_text(markdown(result) + "\n")
        return
    for name in a.datasets.split(","):
        started = time.time()
        spec, bundle = DATASETS[name], ROOT / "service" / "bundles" / name
        work = Path(a.work) / name
        if not (bundle / "latents.safetensors").exists():
            encode_dataset(bundle, device="cpu")
        if only:
            if name not in result["datasets"]:
                raise SystemExit(f"--only merges into existing results; run {name} in full first")
            entry = result["datasets"][name]
            if entry["profile"] != a.profile:
                raise SystemExit(f"{name} was measured with profile {entry['profile']!r}; --only must use the same")
        else:
            entry = {"commands": [], "profile": a.profile, "profile_settings": prof, "skipped": skip, "label_set": spec["label_set"],
                     "quality_raw": [], "new_label_set": None, "wall_minutes": 0.0}
        entry["machine"] = f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}"
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
        if entry["quality"]:
            entry["figure"] = figure(name, bundle, spec, work, [r["method"] for r in entry["quality"]], out)
        if entry["new_label_set"]:
            entry["new_label_set"]["equal_accuracy"] = equal_accuracy(entry["new_label_set"])
        entry["wall_minutes"] += (time.time() - started) / 60
        entry["commands"].append(command)
        result["datasets"][name] = entry
        path.write_text(json.dumps(result, indent=2) + "\n")
        (out / "baselines.md").write_text(markdown(result) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
