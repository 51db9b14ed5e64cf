"""Issue 18's measurements: classifier label sets against latent-constraints (LC) label sets on the same labels, what
registering one costs against retraining a CVAE, and composed queries (AND / OR / NOT across label sets).

    python -m bench.compose --out docs --work runs/compose

For each dataset (service/bundles/DATASET, whose latent table must be encoded: ``lcs encode``):
1. ``same``: the held-out label set (avatars ``hair_colour``, Fashion-MNIST ``footwear``) trained as an LC label set
   (the shipped recipe of that dataset) and as a classifier label set, both scored by ``lcs eval``'s code
   (``training.evaluate``): each attribute asked on alone (hit rate) and off alone, balanced accuracy of test-row
   requests, Fréchet distance in judge features; plus ms per sample on the CPU and CPU-seconds to register.
2. ``register``: the classifier trained again with probes (exact match of energy samples to test rows, as the
   baselines bench probes LC and the CVAE): CPU-seconds to 95% of its final accuracy, ÷ the CVAE retrain's from
   docs/baselines.json (R_register), stated only at equal or better accuracy.
3. ``compose``: queries over the served LC set, the classifier set and the realism mapper, answered by the energy
   sampler; every clause judged on the images. The same queries by rejection sampling from the LC actor: label rows
   of the data that satisfy the query, drawn as the data has them (impossible for combinations the data lacks).
Writes OUT/compose.json and OUT/compose.md; never hand-edited.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.compose_report import markdown
from bench.protocol import ExactMatchProbe, to_95
from conditioning import backbone, energy, modes, query
from conditioning.labelset import LabelSetVersion
from conditioning.runtime import resolve_device, setup_logging
from evaluation.judging import decide, predict
from models.artifacts import load_manifest
from models.judge import load_judge
from models.latent_table import REALISM, load_table
from models.vae import load_vae
from training.data import load_dataset
from training.evaluate import evaluate
from training.train_labelset import TrainLabelSetConfig, train_labelset

ROOT = Path(__file__).resolve().parent.parent
COMMAND = ["python", "-m", "bench.compose"]
DATASETS = {
    "avatars": {
        "served": "faces",
        "new": "hair_colour",
        "held_out": ["Smiling", "Gray_Hair"],
        # the shipped faces recipe (training/recipes/default_bundle.sh)
        "lc": {"steps": 3000, "actor_attr_weight": 1.0},
        "queries": [
            "faces.smiling and faces.eyeglasses",
            "faces.eyeglasses and not faces.wearing_hat",
            "hair_colour.blond_hair or hair_colour.gray_hair",
            "hair_colour.gray_hair and faces.eyeglasses",
            "hair_colour.blond_hair and not faces.eyeglasses",
            "not faces.no_beard and not faces.mustache",
            "not faces.eyeglasses",
            # no training row has these (a hat hides the hair's colour; a beard never comes with a moustache)
            "faces.wearing_hat and hair_colour.blond_hair",
            "not faces.no_beard and faces.mustache",
        ],
    },
    "fashion-mnist": {
        "served": "category",
        "new": "footwear",
        "lc": {"steps": 600, "lambda_dist": 0.0},  # the shipped category recipe
        "queries": [
            "footwear.footwear and not category.sneaker",
            "category.bag or category.trouser",
            "not footwear.footwear and not category.bag",
            "footwear.footwear or category.bag",
            "not category.trouser",
        ],
    },
}


def train(bundle: Path, new: str, out: Path, **settings) -> Path:
    if not (out / "mapper.json").exists():
        train_labelset(
            TrainLabelSetConfig(bundle=str(bundle), label_set=new, out=str(out), threads=1, **settings),
            command=[*COMMAND, "train", new, json.dumps(settings)],
        )
    return out


def ms_per_sample(ls: LabelSetVersion, realism: LabelSetVersion, mode: str, n: int = 256) -> float:
    """Latents per request row on the CPU (one thread), through ``modes.latents`` as the server runs them."""
    plan = energy.Plan(realism, energy.Rows(ls)) if mode == "energy" else None
    z, y, mask = modes.draw(ls, {}, n, ls.m.cfg.latent_dim, torch.Generator().manual_seed(0))
    mask[:] = True
    started = time.perf_counter()
    modes.latents(mode, ls, z, y, mask, plan)
    return 1000 * (time.perf_counter() - started) / n


def same_labels(name: str, bundle: Path, spec: dict, work: Path, n: int, realism: LabelSetVersion) -> dict:
    new, fp = spec["new"], load_manifest(bundle, "vae")["decoder_fingerprint"]
    arts = {
        "lc": train(bundle, new, work / f"lc-{new}", **spec["lc"]),
        "classifier": train(bundle, new, work / f"classifier-{new}", method="classifier"),
    }
    out = {}
    for method, art in arts.items():
        sampler = "actor" if method == "lc" else "energy"
        r = evaluate(
            bundle,
            sampler,
            new,
            n=n,
            n_spec3=n,
            n_single=200,
            device="cpu",
            out=work / f"eval-{method}-{new}",
            artifact=art,
            command=[*COMMAND, "eval", sampler, new],
        )
        ls = LabelSetVersion.load(art, fp, new)
        per = r["per_attribute"]
        man = json.loads((art / "mapper.json").read_text())
        out[method] = {
            "asked_on": {a: per[a]["single_on"] for a in per},
            "asked_on_mean": float(np.mean([per[a]["single_on"] for a in per])),
            "asked_off_worst": float(min(per[a]["single_off"] for a in per)),
            "balanced_accuracy": float(np.mean([per[a]["balanced_accuracy"] for a in per])),
            "exact_match": r["exact_match"],
            "frechet": r["frechet"]["fd"],
            "converged": r.get("converged", 1.0),
            "ms_per_sample": ms_per_sample(ls, realism, sampler),
            "cpu_s_to_register": man["metrics"]["cpu_seconds"],
            "artifact": str(art),
        }
    lc, clf = out["lc"], out["classifier"]
    out["asked_on_ratio"] = clf["asked_on_mean"] / max(lc["asked_on_mean"], 1e-9)
    out["frechet_ratio"] = clf["frechet"] / lc["frechet"]
    return out


def register(name: str, bundle: Path, spec: dict, work: Path, n_probe: int, realism: LabelSetVersion) -> dict:
    """CPU-seconds to 95% of the classifier's final exact match, probed as the baselines bench probes LC and CVAE."""
    new = spec["new"]
    vae, vman = load_vae(bundle, "cpu")
    data = load_dataset(vman["dataset"]["name"], **vman["dataset"]["params"])
    judge = ExactMatchProbe(bundle, data, new, n_probe)
    sigma = torch.ones(vae.cfg.latent_dim)

    def probe(step, m):
        ls = LabelSetVersion("probe", "training", m, {}, judge.labels, sigma)
        z = torch.randn(len(judge.labels), vae.cfg.latent_dim, generator=torch.Generator().manual_seed(1))
        mask = torch.ones(judge.labels.shape, dtype=torch.bool)
        lat = modes.latents("energy", ls, z, judge.labels, mask, energy.Plan(realism, energy.Rows(ls))).z
        return {"accuracy": judge.accuracy(backbone.decode(vae, lat, torch.device("cpu")))}

    d = train_labelset(
        TrainLabelSetConfig(
            bundle=str(bundle),
            label_set=new,
            out=str(work / f"classifier-probed-{new}"),
            method="classifier",
            threads=1,
        ),
        command=[*COMMAND, "register", new],
        probe=probe,
        probe_every=50,
    )
    curve = to_95(json.loads((d / "mapper.json").read_text())["metrics"]["probes"])
    ref = json.loads((ROOT / "docs" / "baselines.json").read_text())["datasets"][name]["new_label_set"]["cvae_retrain"]
    out = {"classifier": curve, "cvae_retrain": {k: ref[k] for k in ("final_accuracy", "cpu_s_to_95", "cpu_s_total")}}
    out["equal_or_better"] = curve["final_accuracy"] >= ref["final_accuracy"]
    out["R_register"] = curve["cpu_s_to_95"] / ref["cpu_s_to_95"]
    return out


# How the energy sampler moves z, compared on the classifier label set's attributes asked on alone (issue 18 asks for
# the dynamics to be chosen by measurement). "latent": Adam on z itself from G(z_p); the rest move z_p through G.
DYNAMICS = {
    "latent space, from G(z_p)": {"space": "latent", "candidates": 1},
    "prior space, steps only": {"candidates": 1},
    "prior space, first of 1024 draws only (no steps)": {"steps": 0},
    "prior space, first of 64 draws, then steps": {"candidates": 64},
    "prior space, first of 1024 draws, then steps (default)": {},
}


CLASSIFIERS = {
    "posterior samples (noise 1)": {"classifier_noise": 1.0},
    "noise 3 (default)": {},
    "noise 3, mixup 0.4": {"classifier_mixup": 0.4},
}


def asked_on(clf: LabelSetVersion, realism: LabelSetVersion, cfg: energy.EnergyConfig, n: int, vae, judge, jman):
    """Each attribute of ``clf`` asked on alone through the energy sampler: judged hit rates, converged, ms/sample."""
    row, seconds, converged = {}, 0.0, []
    for col, a in enumerate(clf.attr_names):
        plan = energy.Plan(realism, energy.Literal(clf, col))
        z = torch.randn(n, vae.cfg.latent_dim, generator=torch.Generator().manual_seed(11))
        started = time.perf_counter()
        if cfg.space == "latent":
            with torch.no_grad():
                z = realism.m.actor(z, None)
        lat, ok, _ = energy.sample(plan, z, cfg=cfg)
        seconds += time.perf_counter() - started
        probs = predict(judge, backbone.decode(vae, lat, torch.device("cpu")), torch.device("cpu"))[0]
        row[a] = float(decide(probs, jman, clf.attr_names)[:, col].mean())  # categorical: argmax among its classes
        converged += ok.tolist()
    return {"asked_on": row, "mean": float(np.mean(list(row.values()))), "converged": float(np.mean(converged)),
            "ms_per_sample": 1000 * seconds / (n * len(clf.attr_names))}  # fmt: skip


def dynamics(name: str, bundle: Path, spec: dict, work: Path, n: int, realism: LabelSetVersion) -> dict:
    """The sampler's dynamics (DYNAMICS) and the classifier's training (CLASSIFIERS), on the held-out label set."""
    vae, _ = load_vae(bundle, "cpu")
    judge, jman = load_judge(bundle, "cpu")
    fp = load_manifest(bundle, "vae")["decoder_fingerprint"]
    new = spec["new"]
    clf = LabelSetVersion.load(train(bundle, new, work / f"classifier-{new}", method="classifier"), fp)
    out = {"dynamics": {}, "classifiers": {}, "n": n}
    for label, settings in DYNAMICS.items():
        out["dynamics"][label] = {**asked_on(clf, realism, energy.EnergyConfig(**settings), n, vae, judge, jman),
                                  "settings": settings}  # fmt: skip
        print(f"{name}: {label}: {out['dynamics'][label]['mean']:.3f}", flush=True)
    for label, settings in CLASSIFIERS.items():
        tag = "-".join(f"{k}{v}" for k, v in settings.items()) or "default"
        variant = LabelSetVersion.load(
            train(bundle, new, work / f"classifier-{new}-{tag}", method="classifier", **settings), fp
        )
        out["classifiers"][label] = {**asked_on(variant, realism, energy.DEFAULT, n, vae, judge, jman),
                                     "settings": settings}  # fmt: skip
        print(f"{name}: classifier {label}: {out['classifiers'][label]['mean']:.3f}", flush=True)
    return out


def held_out(name: str, bundle: Path, spec: dict, work: Path, n: int, served: dict[str, LabelSetVersion]) -> list[dict]:
    """A combination no label set has seen: a classifier label set of two attributes trained on a table without any
    row that has both, then asked for both (and, as controls, for each without the other). Why: on avatars every
    combination the data lacks is one its renderer never draws (a hat hides the hair; beard and moustache are one
    choice), so only a held-out combination tells composition apart from what the decoder can show."""
    from models.latent_table import write_latent_table

    a, b = spec["held_out"]
    t = load_table(bundle, spec["served"])
    ca, cb = t.attr_names.index(a), t.attr_names.index(b)
    keep = ~((t.labels[:, ca] > 0) & (t.labels[:, cb] > 0))
    table, label_set = work / "table-held-out", "held_out"
    write_latent_table(
        table, t.mu[keep], t.sigma[keep], t.labels[keep][:, [ca, cb]].to(torch.int8), t.split[keep],
        attr_names=[a, b], label_sets={label_set: {"name": label_set, "attrs": [a, b], "kind": "binary"}},
        decoder_fingerprint=t.decoder_fingerprint, sigma_bar=t.sigma_bar, command=[*COMMAND, "held-out", a, b],
        dataset={"name": name, "params": {"held_out": [a, b], "rows_removed": int((~keep).sum())}},
    )  # fmt: skip
    art = work / f"classifier-{label_set}"
    if not (art / "mapper.json").exists():
        train_labelset(
            TrainLabelSetConfig(bundle=str(bundle), table=str(table), label_set=label_set, out=str(art),
                                method="classifier", threads=1),
            command=[*COMMAND, "held-out", a, b],
        )  # fmt: skip
    sets = {REALISM: served[REALISM], label_set: LabelSetVersion.load(art, t.decoder_fingerprint, label_set)}
    queries = [f"{a} and {b}", f"{a} and not {b}", f"{b} and not {a}"]
    return compose(name, bundle, {**spec, "queries": queries}, work, n, sets, served=served[spec["served"]])


def _judged_truth(node: query.Node, got: dict[str, np.ndarray]) -> np.ndarray:
    """A resolved query's truth per image from the judge's 0/1 decisions (``got``: attribute -> n)."""
    if isinstance(node, query.Ref):
        return got[node.attr].astype(bool)
    if isinstance(node, query.Not):
        return ~_judged_truth(node.child, got)
    parts = [_judged_truth(c, got) for c in node.children]
    return np.all(parts, 0) if isinstance(node, query.And) else np.any(parts, 0)


def compose(
    name: str,
    bundle: Path,
    spec: dict,
    work: Path,
    n: int,
    sets: dict[str, LabelSetVersion],
    served: LabelSetVersion | None = None,
) -> list[dict]:
    """Each query by the energy sampler over ``sets``, and by rejection sampling from the ``served`` LC actor."""
    vae, vman = load_vae(bundle, "cpu")
    judge, jman = load_judge(bundle, "cpu")
    data = load_dataset(vman["dataset"]["name"], **vman["dataset"]["params"])
    names = jman["config"]["attr_names"]
    served = served or sets[spec["served"]]
    catalog = {k: v.attr_names for k, v in sets.items() if v.attr_names}
    groups = [ls.attrs for ls in data.label_sets.values()]
    train_rows = data.columns(names)[data.indices("train")].astype(bool)
    rows = []

    def judged(z: torch.Tensor) -> dict[str, np.ndarray]:
        probs = predict(judge, backbone.decode(vae, z, torch.device("cpu")), torch.device("cpu"))[0]
        got = {}
        for attrs in groups:  # a categorical set's classes by argmax, binary attributes by threshold
            got.update(zip(attrs, decide(probs, jman, attrs).T, strict=True))
        return got

    for text in spec["queries"]:
        tree = query.resolve(query.parse(text), catalog)
        clauses = list(tree.children) if isinstance(tree, query.And) else [tree]
        plan = energy.plan_query(text, sets)
        z = torch.randn(n, vae.cfg.latent_dim, generator=torch.Generator().manual_seed(7))
        started = time.perf_counter()
        lat = modes.latents("energy", None, z, torch.zeros(n, 0), torch.zeros(n, 0, dtype=torch.bool), plan)
        seconds = time.perf_counter() - started
        got = judged(lat.z)
        row = {
            "query": plan.text,
            "clauses": [query.to_text(c) for c in clauses],
            "energy": [float(_judged_truth(c, got).mean()) for c in clauses],
            "energy_all": float(_judged_truth(tree, got).mean()),
            "converged": float(lat.converged.float().mean()),
            "ms_per_sample": 1000 * seconds / n,
        }
        # rejection sampling from the LC actor: the data's rows that satisfy the query, as often as the data has them
        ok = _judged_truth(tree, {a: train_rows[:, i] for i, a in enumerate(names)})
        row["rows_in_data"] = int(ok.sum())
        if ok.any():
            pick = np.random.default_rng(7).choice(np.flatnonzero(ok), n)
            y = torch.from_numpy(train_rows[pick][:, [names.index(a) for a in served.attr_names]]).float()
            got_a = judged(modes.latents("actor", served, z, y, torch.ones(y.shape, dtype=torch.bool)).z)
            row["actor"] = [float(_judged_truth(c, got_a).mean()) for c in clauses]
            row["actor_all"] = float(_judged_truth(tree, got_a).mean())
        rows.append(row)
        print(f"{name}: {row['query']}: energy {row['energy']} actor {row.get('actor')}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="avatars,fashion-mnist")
    p.add_argument("--parts", default="same,register,compose,dynamics,held-out")
    p.add_argument("--bundles", default=str(ROOT / "service" / "bundles"))
    p.add_argument("--work", default="runs/compose")
    p.add_argument("--out", default="docs")
    p.add_argument("--n", type=int, default=1000, help="requests per evaluation and per query")
    p.add_argument("--n-probe", type=int, default=500)
    p.add_argument("--n-dynamics", type=int, default=200, help="requests per attribute and dynamics")
    a = p.parse_args()
    setup_logging()
    resolve_device("cpu", 1)
    out = Path(a.out)
    # a run of some datasets and parts updates what earlier runs wrote; every command is kept
    result = json.loads((out / "compose.json").read_text()) if (out / "compose.json").exists() else {"datasets": {}}
    started, command = time.time(), " ".join(COMMAND + sys.argv[1:])
    if not isinstance(result.get("minutes"), dict):  # written by an earlier version of this bench
        result.update(minutes={result.pop("command", ""): result.pop("minutes", 0)}, commands=[])
    result["commands"] = [c for c in result.get("commands", []) if c != command] + [command]
    result.update(
        machine=f"{torch.get_num_threads()} thread(s), torch {torch.__version__}", date=time.strftime("%Y-%m-%d")
    )
    for name in a.datasets.split(","):
        spec, bundle = DATASETS[name], Path(a.bundles) / name
        if not (bundle / "latents.safetensors").exists():
            sys.exit(f"{bundle} has no latent table: run `lcs encode --bundle {bundle}` first")
        work = Path(a.work) / name
        fp = load_manifest(bundle, "vae")["decoder_fingerprint"]
        sets = {k: LabelSetVersion.load(bundle / "labelsets" / k, fp, k) for k in (REALISM, spec["served"])}
        r = result["datasets"].setdefault(name, {"new": spec["new"]})
        if "same" in a.parts:
            r["same"] = same_labels(name, bundle, spec, work, a.n, sets[REALISM])
        if "register" in a.parts:
            r["register"] = register(name, bundle, spec, work, a.n_probe, sets[REALISM])
        if "dynamics" in a.parts:
            r["dynamics"] = dynamics(name, bundle, spec, work, a.n_dynamics, sets[REALISM])
        if "held-out" in a.parts and "held_out" in spec:
            r["held_out"] = held_out(name, bundle, spec, work, a.n, sets)
        if "compose" in a.parts:
            clf = train(bundle, spec["new"], work / f"classifier-{spec['new']}", method="classifier")
            sets[spec["new"]] = LabelSetVersion.load(clf, fp, spec["new"])
            r["compose"] = compose(name, bundle, spec, work, a.n, sets)
    result.setdefault("minutes", {})[command] = round((time.time() - started) / 60, 1)
    (out / "compose.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "compose.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
