"""The baselines bench's experiments on one dataset: quality of every method on the served label set
(``quality``) and the cost of serving a new label set with LC vs the CVAE (``new_label_set``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from bench.flops import image_step_flops, lc_step_flops
from bench.gan_parts import label_efficiency, train_backbone_part, train_lc, train_once, train_sampler_part
from bench.protocol import (
    ADVERSARIAL,
    BACKBONE_PARTS,
    COMMAND,
    GAN_SYSTEMS,
    LC_RECIPE,
    LC_SAMPLING,
    ExactMatchProbe,
    gain_95,
    sampler_of,
    summarise,
    to_95,
)
from conditioning import backbone, modes
from conditioning.labelset import LabelSetVersion
from evaluation.samplers import conditional_images
from models.cvaegan import load_conditional
from models.latent import LatentMappers
from models.vae import load_vae
from training.data import load_dataset
from training.evaluate import evaluate
from training.train_baseline import ARTIFACT_STEM, IMAGE_METHODS, LATENT_METHODS, TrainBaselineConfig, train_baseline
from training.train_labelset import TrainLabelSetConfig, train_labelset

CPU = torch.device("cpu")


def lc_images(vae, m: LatentMappers, labels: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """Images of the actor mode for ``labels`` from mappers in training (the probe of an LC run), as ``lcs eval``
    scores the quality table's actor rows and the server runs it at ``--candidates 1``: G(z, y), and rows the critics
    reject re-stepped (``modes.latents``). Why not G(z, y) alone: that is not what a user of the label set gets."""
    ls = LabelSetVersion(
        name="probe", version="training", m=m, manifest={}, table=None, sigma_bar=torch.ones(m.cfg.latent_dim)
    )
    z = torch.randn(len(labels), m.cfg.latent_dim, generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(labels.shape, dtype=torch.bool)
    return backbone.decode(vae, modes.latents("actor", ls, z, labels, mask).z, CPU)


def cvae_images(model, labels: torch.Tensor, attrs: list[str], rows, counts, seed: int = 1) -> torch.Tensor:
    return conditional_images(model, labels, attrs, rows, counts, torch.Generator().manual_seed(seed), CPU)


def evaluator(bundle: Path, spec: dict, prof: dict, work: Path):
    """``ev(sampler, seed, artifact="", on=bundle)``: ``lcs eval`` of one sampler on the quality label set, at the
    profile's sample count."""

    def ev(sampler: str, seed: int, artifact: str | Path = "", on: Path = bundle) -> dict:
        return evaluate(
            on,
            sampler=sampler,
            label_set=spec["label_set"],
            n=prof["n_eval"],
            n_spec3=prof["n_eval"] // 2,
            seed=seed,
            device="cpu",
            boots=20,
            out=work / "eval",
            artifact=artifact,
        )

    return ev


def triplegan_labels(name: str, bundle: Path, spec: dict, prof: dict, work: Path) -> list[dict]:
    """Triple-GAN vs an LC actor with the same 1%, 10%, 100% of the quality label set's labels."""
    vman = json.loads((bundle / "vae.json").read_text())
    train_rows = len(load_dataset(vman["dataset"]["name"], **vman["dataset"]["params"]).indices("train"))
    return label_efficiency(name, bundle, spec, prof, work, train_rows, evaluator(bundle, spec, prof, work))


def quality(name: str, bundle: Path, spec: dict, prof: dict, work: Path, parts: list[str]) -> list[dict]:
    """Rows for the quality table. ``actor-l0``: an LC actor trained here with λ_dist = 0 (the shipped mappers use 0.1,
    which serves edits); seeds of the shipped LC mappers are sampling seeds."""
    ls, rows, ev = spec["label_set"], [], evaluator(bundle, spec, prof, work)
    gan_seeds = min(prof["gan_seeds"], spec.get("gan_seeds", prof["gan_seeds"]))
    for seed in range(max(prof["seeds"], gan_seeds, 2)):
        for sampler in (p for p in ("prior", "actor", "optimize") if p in parts):
            rows.append(summarise(name, sampler, seed, ev(sampler, seed), {"trained_here": False}))
        # fits on the latent table cost seconds: always 2 seeds; trained networks: the profile's seeds, the GAN
        # systems' own count
        image = tuple(m for m in IMAGE_METHODS if m not in GAN_SYSTEMS)
        methods = LATENT_METHODS + (("actor-l0",) + image if seed < prof["seeds"] else ())
        methods += GAN_SYSTEMS if seed < gan_seeds else ()
        for method in (m for m in methods if m in parts):
            out, on = work / f"{method}-{ls}-s{seed}", bundle
            if method in BACKBONE_PARTS:
                on, extra = train_backbone_part(name, method, bundle, spec, prof, out, seed, ev)
            elif method in ("triplegan", "infogan"):
                extra = train_sampler_part(name, method, bundle, spec, prof, out, seed)
            else:
                extra = _train_part(name, method, bundle, spec, prof, out, seed)
            r = ev(sampler_of(method), seed, "" if on == out else out, on)
            rows.append(summarise(name, method, seed, r, {"trained_here": True, **extra}))
            print(
                f"  {name} {method} seed {seed}: accuracy {r['mean_accuracy']:.3f}, FD {r['frechet']['fd']:.2f}",
                flush=True,
            )
    return rows


def _train_part(name: str, method: str, bundle: Path, spec: dict, prof: dict, out: Path, seed: int) -> dict:
    """Train an LC actor (``actor-l0``), fit a latent baseline or train a CVAE-family model into OUT, once (a model
    OUT holds from the same settings is reused: ``train_once``, ``train_lc``); -> the row's cost: CPU-seconds, steps,
    stored parameters (as measured when it was trained)."""
    ls = spec["label_set"]
    if method == "actor-l0":
        train_lc(bundle, ls, out, prof["lc_steps"], seed, [name, method, f"seed={seed}"])
        man = json.loads((out / "mapper.json").read_text())
        stored = sum(t.numel() for t in _tensors(out / "mapper.safetensors").values())
    else:
        train_once(
            TrainBaselineConfig(
                bundle=str(bundle),
                method=method,
                label_set=ls,
                steps=prof["gan_steps"] if method in ADVERSARIAL else prof["image_steps"],
                seed=seed,
                batch_size=spec["batch"],
                device="cpu",
                out=str(out),
            ),
            [*COMMAND, name, method, f"seed={seed}"],
        )
        man = json.loads((out / f"{ARTIFACT_STEM[method]}.json").read_text())
        stored = man["metrics"]["params_stored"]
    return {"train_cpu_s": man["metrics"]["cpu_seconds"], "steps": man["metrics"].get("steps"), "params_stored": stored}


def lc_cost(
    name: str, bundle: Path, new: str, prof: dict, work: Path, recipe: dict, tag: str, judge: ExactMatchProbe, vae
) -> dict:
    d = train_labelset(
        TrainLabelSetConfig(
            bundle=str(bundle),
            label_set=new,
            out=str(work / f"{tag}-{new}"),
            diag_every=10**9,
            **{**recipe, "steps": prof["new_steps"]},
        ),
        command=[*COMMAND, name, tag, new],
        probe=lambda step, m: {"accuracy": judge.accuracy(lc_images(vae, m, judge.labels))},
        probe_every=prof["probe_every"],
    )
    man = json.loads((d / "mapper.json").read_text())
    flops = lc_step_flops(bundle, new, recipe)
    params = sum(
        t.numel() for k, t in _tensors(d / "mapper.safetensors").items() if k not in ("label_table", "sigma_bar")
    )
    curve = to_95(man["metrics"]["probes"])
    return {
        **curve,
        "lambda_dist": recipe.get("lambda_dist", 0.1),
        "flops_per_step": flops,
        "flops_to_95": flops * curve["steps_to_95"],
        "params_trained": params,
        "params_stored": params,
        "drift_on_served": 0.0,
        "drift_note": "by construction: the served label set's mapper and the decoder are not touched",
    }


def _register_ratios(out: dict) -> None:
    """Adds to the hold-out's ``out`` the 95%-of-the-gain costs and the LC ÷ CVAE cost ratios (R_register)."""
    methods = [k for k in ("lc_l0", "lc", "cvae_finetune", "cvae_retrain") if k in out]
    # 95% of a method's final value is trivial when the floor is already near it: also 95% of the gain
    if "floor_accuracy" in out:
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


def new_label_set(name: str, bundle: Path, spec: dict, prof: dict, work: Path, parts: list[str], out: dict) -> dict:
    """Hold-one-out: the cost of serving spec['new'] with LC vs fine-tuning / retraining the CVAE; updates ``out``."""
    ls, new = spec.get("served", spec["label_set"]), spec["new"]
    vae, vman = load_vae(bundle, "cpu")
    data = load_dataset(vman["dataset"]["name"], **vman["dataset"]["params"])
    judge_new = ExactMatchProbe(bundle, data, new, prof["n_probe"])
    judge_old = ExactMatchProbe(bundle, data, ls, prof["n_probe"])
    new_attrs, old_attrs = data.label_sets[new].attrs, data.label_sets[ls].attrs
    out.update(dataset=name, served=ls, new=new)

    if "new:floor" in parts:  # unconditional samples scored against the requested new labels: what no conditioning gets
        with torch.no_grad():
            z = torch.randn(len(judge_new.labels), vae.cfg.latent_dim, generator=torch.Generator().manual_seed(1))
            out["floor_accuracy"] = judge_new.accuracy(backbone.decode(vae, z, CPU))
    if "new:lc" in parts:
        out["lc"] = lc_cost(name, bundle, new, prof, work, LC_RECIPE, "lc", judge_new, vae)
    if "new:lc-l0" in parts:
        out["lc_l0"] = lc_cost(name, bundle, new, prof, work, LC_SAMPLING, "lc-l0", judge_new, vae)

    base = work / f"cvae-{ls}-s0"  # trained in the quality step when the served set is the quality set
    wide = f"{ls}+{new}"
    # every (served, new) label combination the training data has, to complete requests for the new labels
    rows, counts = np.unique(
        data.columns(old_attrs + new_attrs)[data.indices("train")].astype(np.int8), axis=0, return_counts=True
    )
    rows, counts = torch.from_numpy(rows), torch.from_numpy(counts)

    def cvae_probe(step, model):
        return {"accuracy": judge_new.accuracy(cvae_images(model, judge_new.labels, new_attrs, rows, counts))}

    if {"new:cvae", "new:efficiency"} & set(parts) and not (base / "cvae.json").exists():
        train_baseline(
            TrainBaselineConfig(
                bundle=str(bundle),
                method="cvae",
                label_set=ls,
                steps=prof["image_steps"],
                batch_size=spec["batch"],
                device="cpu",
                out=str(base),
            ),
            command=[*COMMAND, name, "cvae", ls, "served"],
        )
    if "new:cvae" in parts:
        base_model, _, base_extra = load_conditional(base)
        old_before = judge_old.accuracy(
            cvae_images(base_model, judge_old.labels, old_attrs, base_extra["label_rows"], base_extra["label_counts"])
        )
        flops_cvae = image_step_flops(bundle, "cvae", wide, spec["batch"])
        for variant, init, steps in (
            ("cvae_finetune", str(base), prof["new_steps"]),
            ("cvae_retrain", "", prof["image_steps"]),
        ):
            d = train_baseline(
                TrainBaselineConfig(
                    bundle=str(bundle),
                    method="cvae",
                    label_set=wide,
                    init=init,
                    steps=steps,
                    batch_size=spec["batch"],
                    device="cpu",
                    out=str(work / f"{variant}-{wide}"),
                ),
                command=[*COMMAND, name, variant, wide],
                probe=cvae_probe,
                probe_every=prof["probe_every"],
            )
            model, man, extra = load_conditional(d)
            old_after = judge_old.accuracy(
                cvae_images(model, judge_old.labels, old_attrs, extra["label_rows"], extra["label_counts"])
            )
            curve = to_95(man["metrics"]["probes"])
            out[variant] = {
                **curve,
                "flops_per_step": flops_cvae,
                "flops_to_95": flops_cvae * curve["steps_to_95"],
                "params_trained": man["metrics"]["params_trained"],
                "params_stored": man["metrics"]["params_stored"],
                "served_accuracy_before": old_before,
                "served_accuracy_after": old_after,
                "drift_on_served": old_after - old_before,
            }
    _register_ratios(out)

    if "new:efficiency" in parts:
        eff = []
        for n in prof["label_counts"]:
            lc = train_labelset(
                TrainLabelSetConfig(
                    bundle=str(bundle),
                    label_set=new,
                    out=str(work / f"lc-l0-{new}-n{n}"),
                    labelled=n,
                    diag_every=10**9,
                    **{**LC_SAMPLING, "steps": prof["efficiency_steps"]},
                ),
                command=[*COMMAND, name, "lc-l0", new, f"labelled={n}"],
                probe=lambda step, m: {"accuracy": judge_new.accuracy(lc_images(vae, m, judge_new.labels))},
                probe_every=prof["efficiency_steps"],
            )
            cv = train_baseline(
                TrainBaselineConfig(
                    bundle=str(bundle),
                    method="cvae",
                    label_set=wide,
                    init=str(base),
                    labelled=n,
                    steps=prof["efficiency_steps"],
                    batch_size=spec["batch"],
                    device="cpu",
                    out=str(work / f"cvae_finetune-{wide}-n{n}"),
                ),
                command=[*COMMAND, name, "cvae_finetune", wide, f"labelled={n}"],
                probe=cvae_probe,
                probe_every=prof["efficiency_steps"],
            )
            eff.append(
                {
                    "labelled": n,
                    "lc_lambda_dist": 0.0,
                    "lc_accuracy": json.loads((lc / "mapper.json").read_text())["metrics"]["probes"][-1]["accuracy"],
                    "cvae_finetune_accuracy": json.loads((cv / "cvae.json").read_text())["metrics"]["probes"][-1][
                        "accuracy"
                    ],
                }
            )
            print(
                f"  {name} labelled {n}: LC {eff[-1]['lc_accuracy']:.3f}, "
                f"CVAE fine-tune {eff[-1]['cvae_finetune_accuracy']:.3f}",
                flush=True,
            )
        out["label_efficiency"] = eff
    return out


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))
