"""``lcs``: one entry point above the offline jobs (``training/``) and the server (``service/``).

Each subcommand's flags are generated from the config dataclass or job function it fills
(``cli/flags.py``), so every default lives in one place; this module adds only help texts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

from cli.flags import build, call, config_flags, env_defaults, function_flags

DEVICE_HELP = {
    "device": "auto (CUDA if present, else CPU) | cpu | cuda",
    "threads": "CPU threads (0 = every core for offline jobs; PyTorch's default for the server)",
    "precision": "auto (bf16 on CUDA and on CPUs with bf16 units, else fp32) | bf16 | fp32",
}


def parse_data_args(pairs: list[str]) -> dict:
    """``--data-arg n=32000 --data-arg crop=head`` -> {"n": 32000, "crop": "head"}."""
    out: dict = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SystemExit(f"--data-arg expects KEY=VALUE, got {pair!r}")
        k, v = pair.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def add_dataset_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--dataset", required=required, help="avatars | fashion-mnist | celeba | folder")
    p.add_argument(
        "--data-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dataset parameter, e.g. n=32000 (avatars), root=/data/celeba (celeba/folder)",
    )


def command() -> list[str]:
    return ["lcs"] + sys.argv[1:]


def cmd_data(a: argparse.Namespace) -> None:
    from conditioning.images import batch_to_float, save_grid
    from training.data import load_dataset

    data = load_dataset(a.dataset, **parse_data_args(a.data_arg))
    print(json.dumps(data.describe(), indent=2))
    if a.grid:
        path = save_grid(batch_to_float(data.images[:64]), a.grid, nrow=8, scale=2)
        print(f"wrote {path}", file=sys.stderr)


def cmd_train_vae(a: argparse.Namespace) -> None:
    from training.train_vae import TrainVAEConfig, train_vae

    train_vae(build(TrainVAEConfig, a, dataset_params=parse_data_args(a.data_arg)), command=command())


def cmd_encode(a: argparse.Namespace) -> None:
    from training.data import load_dataset
    from training.encode import encode_dataset

    data = load_dataset(a.dataset, **parse_data_args(a.data_arg)) if a.dataset else None
    encode_dataset(a.bundle, data=data, device=a.device, command=command(), precision=a.precision)


def cmd_train_judge(a: argparse.Namespace) -> None:
    from training.train_judge import TrainJudgeConfig, train_judge

    train_judge(build(TrainJudgeConfig, a, dataset_params=parse_data_args(a.data_arg)), command=command())


def cmd_train_labelset(a: argparse.Namespace) -> None:
    from training.train_labelset import TrainLabelSetConfig, train_labelset

    extra = {}
    if a.rule:  # zero-shot: labels from a rule on decoded prior samples
        from training.encode import build_rule_table

        table = build_rule_table(a.bundle, a.rule, n=a.rule_samples, seed=a.seed, command=command())
        extra = {"table": str(table), "label_set": a.rule}
    train_labelset(build(TrainLabelSetConfig, a, **extra), command=command())


def cmd_refine_attr(a: argparse.Namespace) -> None:
    from models.artifacts import load_manifest
    from training.refine_attr import RefineAttrConfig, agreement_table, refine_attr

    out = refine_attr(build(RefineAttrConfig, a), command=command())
    done = load_manifest(out, "mapper")["refined"][-1]
    print(agreement_table(done["before"], done["after"]))


def cmd_train_baseline(a: argparse.Namespace) -> None:
    from training.train_baseline import TrainBaselineConfig, train_baseline

    train_baseline(build(TrainBaselineConfig, a), command=command())


def cmd_pack(a: argparse.Namespace) -> None:
    from training.pack import pack

    pack(a.src, a.out, dtype=a.dtype, stems=tuple(a.stem or ("vae", "judge")), command=command())


def cmd_eval(a: argparse.Namespace) -> None:
    from training.evaluate import evaluate

    call(evaluate, a, command=command())


def cmd_eval_edits(a: argparse.Namespace) -> None:
    from training.eval_edits import evaluate_edits

    call(evaluate_edits, a, command=command())


def cmd_figures(a: argparse.Namespace) -> None:
    from training.figures import draw_all

    for path in call(draw_all, a, specs=a.spec, edits=a.edit):
        print(f"wrote {path}", file=sys.stderr)


def cmd_serve(a: argparse.Namespace) -> None:
    from service.app import serve
    from service.config import ServerConfig

    serve(build(ServerConfig, a))


def add_jobs(sub) -> None:
    from training.encode import RULE_SAMPLES
    from training.refine_attr import RefineAttrConfig
    from training.train_baseline import TrainBaselineConfig
    from training.train_judge import TrainJudgeConfig
    from training.train_labelset import TrainLabelSetConfig
    from training.train_vae import TrainVAEConfig

    p = sub.add_parser("data", help="build/cache a dataset, print its summary, optionally save a grid")
    add_dataset_args(p)
    p.add_argument("--grid", help="write a PNG grid of the first 64 images here")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("train-vae", help="train the unconditional fixed-σ VAE")
    add_dataset_args(p)
    config_flags(
        p,
        TrainVAEConfig,
        {
            "out": "bundle directory to write vae.safetensors/json into",
            "sigma_x": "fixed decoder σ (0.1 sharp; 1.0 for comparison)",
            "lr_final": "the schedule goes from --lr to this over the run",
            "lr_schedule": "exp | cosine",
            "res_blocks": "residual blocks per stage of the encoder and the decoder",
            "adv_weight": "VAE-GAN: weight of the image discriminator's adversarial term (0, 0: plain VAE)",
            "fm_weight": "VAE-GAN: weight of feature matching on the discriminator's features",
            "init": "fine-tune: start from this trained VAE directory (same sizes)",
            "max_steps": "stop early (0 = run all epochs)",
            "resume": "continue from --out/checkpoint.* if present",
            **DEVICE_HELP,
        },
        skip=("dataset", "dataset_params"),
        required=("out",),
    )
    p.set_defaults(func=cmd_train_vae)

    p = sub.add_parser("encode", help="encode a dataset with the frozen VAE into the bundle's latent table")
    p.add_argument("--bundle", required=True, help="directory holding vae.safetensors/json")
    add_dataset_args(p, required=False)
    p.add_argument("--device", default="auto", help=DEVICE_HELP["device"])
    p.add_argument("--precision", default="auto", help=DEVICE_HELP["precision"])
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("train-judge", help="train the image-space evaluation classifier")
    add_dataset_args(p)
    config_flags(
        p,
        TrainJudgeConfig,
        {
            "out": "bundle directory to write judge.safetensors/json into",
            "shift": "random translation (pixels) as augmentation",
            "flip": "random horizontal flips as augmentation",
            "pos_weight_cap": "class balancing: positive weight negatives/positives capped here (0 = off)",
            **DEVICE_HELP,
        },
        skip=("dataset", "dataset_params"),
        required=("out",),
    )
    p.set_defaults(func=cmd_train_judge)

    p = sub.add_parser("train-labelset", help="train a label set's latent critic/actor/classifier on the latent table")
    config_flags(
        p,
        TrainLabelSetConfig,
        {
            "bundle": "bundle with latents.safetensors/json (from lcs encode)",
            "label_set": "a label set of the latent table, or 'realism' for G(z)",
            "table": "directory of another latent table (default: the bundle's)",
            "out": "default: BUNDLE/labelsets/LABEL_SET",
            "edit_prob": "share of real-encoding actor rows asked for a one-attribute edit (0 = reference recipe)",
            "steps": "actor steps",
            "critic_steps": "critic steps per actor step",
            "labelled": "train on this many labelled training rows (0 = all)",
            "threads": DEVICE_HELP["threads"],
        },
        required=("bundle",),
    )
    p.add_argument("--rule", default="", help="zero-shot label set from a rule on decoded prior samples: bright | warm")
    p.add_argument(
        "--rule-samples",
        type=int,
        default=RULE_SAMPLES,
        help=f"prior samples the rule labels (default: {RULE_SAMPLES})",
    )
    p.set_defaults(func=cmd_train_labelset)

    p = sub.add_parser(
        "refine-attr", help="retrain a label set's D_attr (and actor) on what its decoded outputs show (issue 27)"
    )
    config_flags(
        p,
        RefineAttrConfig,
        {
            "bundle": "bundle with the VAE, the latent table and the label set",
            "labeler": "directory of an image classifier (lcs train-judge --seed 1) trained apart from the judge",
            "out": "default: the label set's own directory (refined in place)",
            "n": "actor outputs drawn per round (half from the prior, half edits of real encodings)",
            "n_check": "fresh drawn rows the agreement is measured on, before and after",
            "attr_steps": "D_attr steps per round",
            "actor_steps": "critic/actor steps per round after D_attr's (0: D_attr alone)",
            "drawn_share": "share of each D_attr batch from the drawn rows",
            **DEVICE_HELP,
        },
        required=("bundle", "labeler"),
    )
    p.set_defaults(func=cmd_refine_attr)

    p = sub.add_parser(
        "train-baseline",
        help="train or fit a baseline (CVAE, CVAE-GAN, Triple-GAN, Fader network, InfoGAN, BiGAN, GAIA, attribute "
        "vectors, latent GMM)",
    )
    config_flags(
        p,
        TrainBaselineConfig,
        {
            "bundle": "bundle whose VAE backbone, data and latent table the baseline uses",
            "method": "cvae | cvae-cmma | cvae-gan | triplegan | fader | infogan | bigan | gaia | attrvec-mean | "
            "attrvec-lsq | gmm (bigan, gaia: OUT becomes a bundle on their encoder and generator)",
            "label_set": "a label set of the dataset, or several joined by '+' (image methods)",
            "out": "default: BUNDLE/baselines/METHOD-LABEL_SET",
            "init": "fine-tune this CVAE / CVAE-GAN / Fader network directory",
            "labelled": "use only this many labelled training examples (0 = all; triplegan draws its unlabelled "
            "batches from every training image)",
            "steps": "training steps (image methods)",
            "components": "mixture components per label row (gmm)",
            "min_count": "fewest examples per label row (gmm)",
            "adv_weight": "fader: λ_E, the weight of the latent discriminator's term on the encoder (default: the "
            "authors')",
            "adv_ramp": "fader: share of the steps over which λ_E rises linearly from 0",
            **DEVICE_HELP,
        },
        required=("bundle", "method", "label_set"),
    )
    p.set_defaults(func=cmd_train_baseline)


def add_evaluation(sub) -> None:
    from training.eval_edits import evaluate_edits
    from training.evaluate import evaluate
    from training.figures import draw_all

    p = sub.add_parser("pack", help="copy a bundle's VAE/judge into a shipping bundle (fp16 by default)")
    p.add_argument("--src", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", default="float16", help="float16 | bfloat16 | float32")
    p.add_argument("--stem", action="append", default=None, help="artifacts to copy (default: vae and judge)")
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("eval", help="score a sampler on a bundle with the judge (JSON + PNG)")
    function_flags(
        p,
        evaluate,
        {
            "bundle": "directory with vae.* and judge.*",
            "sampler": "prior | realism | actor | optimize | energy | attrvec-mean | attrvec-lsq | gmm | cvae "
            "| cvae-cmma | cvae-gan",
            "artifact": "the trained mapper or baseline directory, if not at its default place in the bundle",
            "label_set": "label set to condition on (default: the dataset's first)",
            "n": "samples for accuracy and Fréchet distance",
            "n_spec3": "samples for 3-attribute specs",
            "boots": "bootstrap resamples for the Fréchet interval",
            "compare_vae": "a second VAE bundle (e.g. σx=1) for the σ trade-off figure",
            "out": "output directory (default: BUNDLE/eval)",
        },
    )
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "eval-edits", help="flip one attribute of real test images; judge target reached and the rest kept"
    )
    function_flags(
        p,
        evaluate_edits,
        {
            "mode": "actor (amortised) | optimize | energy, or a baseline on the same images and targets: "
            "attrvec-mean | attrvec-lsq | fader",
            "artifact": "the mapper or baseline directory, if not at its default place in the bundle",
            "candidates": "actor edits: starts per image the critics select among (the server's setting)",
            "edit_confidence": "actor edits: D_attr's probability of each asked attribute that accepts a step "
            "(the server's setting)",
            "fader_scale": "fader: the decoder is fed y + s (y' - y), s > 1 amplifying the change (the authors' alpha)",
            "attrvec_scale": "attribute vectors: a fixed step s in z + s (y' - y) V; 0: per image the smallest "
            "step (of 0.25, 0.5 .. 4) at which D_attr reads the target",
            "n": "test images, one edit each",
            "out": "output directory (default: BUNDLE/eval)",
        },
    )
    p.set_defaults(func=cmd_eval_edits)

    p = sub.add_parser("figures", help="PNG grids: prior vs realism-mapped, the same z under several specs, edits")
    function_flags(p, draw_all, skip=("specs", "edits"))
    p.add_argument("--spec", action="append", default=[], help="one row of the spec grid, e.g. 'smiling,-eyeglasses'")
    p.add_argument("--edit", action="append", default=[], help="an attribute to toggle in the edit grid")
    p.set_defaults(func=cmd_figures)


def add_serve(sub) -> None:
    from service.config import ServerConfig

    p = sub.add_parser("serve", help="run the HTTP service (FastAPI + uvicorn) on a frozen bundle")
    config_flags(
        p,
        ServerConfig,
        {
            "bundle": "VAE bundle (default: the shipped avatars bundle)",
            "data_dir": "registry, jobs and admin token (share it between replicas on one host)",
            "registry": "label-set registry: file://DIR or s3://BUCKET/PREFIX (default: DATA_DIR/registry)",
            "registry_endpoint": "S3 endpoint URL (MinIO, SeaweedFS, Ceph...); credentials from AWS_* variables",
            "notify": "redis://HOST:PORT/DB: change notices between replicas (pointer polling stays the fallback)",
            "max_batch": "samples per decoder forward",
            "max_wait_ms": "the longest a free model thread waits for requests it expects (a lone client never waits)",
            "model_workers": "batches run at once, one model thread each (with --threads 1: one per core)",
            "workers": "HTTP processes on the one port, each a whole server (with --threads 1: one per core); "
            "metrics are summed over them",
            "max_queue": "waiting samples before 429",
            "max_queue_wait_s": "estimated queue wait in seconds before /sample gets 429",
            "request_timeout_s": "per-request deadline in seconds (504 after)",
            "max_n": "images per /sample request",
            "candidates": "actor mode: latent candidates per image (or edit) the critics select among (1: off)",
            "max_image_bytes": "largest /transform upload",
            "max_decodes": "uploaded images decoded at once",
            "max_artifact_bytes": "largest label-set upload",
            "max_job_bytes": "largest training-job upload",
            "poll_interval_s": "registry sync period in seconds",
            "job_workers": "training jobs at once",
            "job_threads": "torch threads per training job",
            "access_log": "log a line per request (uvicorn's access log)",
            **DEVICE_HELP,
        },
        skip=("seed_bundle_labelsets",),
        rename={"request_timeout_s": "timeout", "poll_interval_s": "poll_interval"},
    )
    p.set_defaults(func=cmd_serve)
    env_defaults(p, "LCS_")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lcs", description="Latent-constraints conditioning: offline jobs and the server."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_jobs(sub)
    add_evaluation(sub)
    add_serve(sub)
    return parser


def limit_malloc_arenas() -> None:
    """Re-run this command with MALLOC_ARENA_MAX (default: service.config's) when the environment lacks it: glibc
    reads it only as a process starts, and a server's threads otherwise fragment many arenas (RSS creeps for good)."""
    from service.config import MALLOC_ARENA_MAX

    if "MALLOC_ARENA_MAX" in os.environ or platform.libc_ver()[0] != "glibc":
        return
    env = {**os.environ, "MALLOC_ARENA_MAX": str(MALLOC_ARENA_MAX)}
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)  # same PID, before torch is loaded


def main(argv: list[str] | None = None) -> None:
    if argv is None and sys.argv[1:2] == ["serve"]:  # as a command only: an in-process caller keeps its process
        limit_malloc_arenas()
    from conditioning.runtime import setup_logging

    setup_logging()
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except Exception as e:  # noqa: BLE001 - user-facing errors print one line, not a traceback
        from models.artifacts import ArtifactError
        from training.data import DataError

        if isinstance(e, (DataError, ArtifactError, ValueError, FileNotFoundError)):
            print(f"lcs {args.command}: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        raise
