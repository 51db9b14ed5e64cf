"""``lcs``: one entry point, one subcommand per job. Imports are lazy so ``lcs --help`` is instant."""
from __future__ import annotations

import argparse
import json
import sys


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
    p.add_argument("--data-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset parameter, e.g. n=32000 (avatars), root=/data/celeba (celeba/folder)")


def add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU) | cpu | cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = PyTorch default)")


def cmd_data(a: argparse.Namespace) -> None:
    from training.data import load_dataset
    from conditioning.images import save_grid, batch_to_float

    data = load_dataset(a.dataset, **parse_data_args(a.data_arg))
    info = data.describe()
    print(json.dumps(info, indent=2))
    if a.grid:
        path = save_grid(batch_to_float(data.images[:64]), a.grid, nrow=8, scale=2)
        print(f"wrote {path}", file=sys.stderr)


def cmd_train_vae(a: argparse.Namespace) -> None:
    from training.train_vae import TrainVAEConfig, train_vae

    cfg = TrainVAEConfig(
        dataset=a.dataset, dataset_params=parse_data_args(a.data_arg), out=a.out, latent_dim=a.latent_dim,
        width=a.width, sigma_x=a.sigma_x, beta=a.beta, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
        lr_final=a.lr_final, seed=a.seed, device=a.device, threads=a.threads, grid_every=a.grid_every,
        ckpt_every=a.ckpt_every, resume=a.resume, max_steps=a.max_steps,
    )
    train_vae(cfg, command=["lcs"] + sys.argv[1:])


def cmd_encode(a: argparse.Namespace) -> None:
    from training.data import load_dataset
    from training.encode import encode_dataset

    data = load_dataset(a.dataset, **parse_data_args(a.data_arg)) if a.dataset else None
    encode_dataset(a.bundle, data=data, device=a.device, command=["lcs"] + sys.argv[1:])


def cmd_train_judge(a: argparse.Namespace) -> None:
    from training.train_judge import TrainJudgeConfig, train_judge

    cfg = TrainJudgeConfig(
        dataset=a.dataset, dataset_params=parse_data_args(a.data_arg), out=a.out, width=a.width, epochs=a.epochs,
        batch_size=a.batch_size, lr=a.lr, seed=a.seed, device=a.device, threads=a.threads, max_steps=a.max_steps,
    )
    train_judge(cfg, command=["lcs"] + sys.argv[1:])


def cmd_train_labelset(a: argparse.Namespace) -> None:
    from training.train_labelset import TrainLabelSetConfig, train_labelset

    table, label_set = "", a.label_set
    if a.rule:  # zero-shot: labels from a rule on decoded prior samples
        from training.encode import build_rule_table

        table = str(build_rule_table(a.bundle, a.rule, n=a.rule_samples, seed=a.seed, command=["lcs"] + sys.argv[1:]))
        label_set = a.rule
    cfg = TrainLabelSetConfig(
        bundle=a.bundle, label_set=label_set, table=table, out=a.out, width=a.width, depth=a.depth, label_embed=a.label_embed,
        lambda_dist=a.lambda_dist, edit_prob=a.edit_prob, steps=a.steps, critic_steps=a.critic_steps, batch_size=a.batch_size, lr=a.lr,
        gp_weight=a.gp_weight, diag_every=a.diag_every, seed=a.seed, threads=a.threads,
    )
    train_labelset(cfg, command=["lcs"] + sys.argv[1:])


def cmd_train_baseline(a: argparse.Namespace) -> None:
    from training.train_baseline import TrainBaselineConfig, train_baseline

    cfg = TrainBaselineConfig(bundle=a.bundle, method=a.method, label_set=a.label_set, out=a.out, init=a.init, labelled=a.labelled,
                              steps=a.steps, batch_size=a.batch_size, lr=a.lr, lr_final=a.lr_final, components=a.components,
                              seed=a.seed, device=a.device, threads=a.threads)
    train_baseline(cfg, command=["lcs"] + sys.argv[1:])


def cmd_pack(a: argparse.Namespace) -> None:
    from training.pack import pack

    pack(a.src, a.out, dtype=a.dtype, stems=tuple(a.stem or ("vae", "judge")), command=["lcs"] + sys.argv[1:])


def cmd_eval(a: argparse.Namespace) -> None:
    from training.evaluate import evaluate

    evaluate(a.bundle, sampler=a.sampler, label_set=a.label_set, n=a.n, n_spec3=a.n_spec3, seed=a.seed, device=a.device,
             out=a.out, compare_vae=a.compare_vae, boots=a.boots, command=["lcs"] + sys.argv[1:], artifact=a.artifact)


def cmd_eval_edits(a: argparse.Namespace) -> None:
    from training.eval_edits import evaluate_edits

    evaluate_edits(a.bundle, label_set=a.label_set, n=a.n, mode=a.mode, seed=a.seed, device=a.device, out=a.out,
                   command=["lcs"] + sys.argv[1:])


def cmd_figures(a: argparse.Namespace) -> None:
    from training.figures import draw_all

    for path in draw_all(a.bundle, a.label_set, a.out, a.spec, a.edit, seed=a.seed):
        print(f"wrote {path}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lcs", description="Latent-constraints conditioning: offline jobs and the server.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="build/cache a dataset, print its summary, optionally save a grid")
    add_dataset_args(p)
    p.add_argument("--grid", help="write a PNG grid of the first 64 images here")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("train-vae", help="train the unconditional fixed-σ VAE")
    add_dataset_args(p)
    p.add_argument("--out", required=True, help="bundle directory to write vae.safetensors/json into")
    p.add_argument("--latent-dim", type=int, default=128)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--sigma-x", type=float, default=0.1, help="fixed decoder σ (0.1 sharp; 1.0 for comparison)")
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-final", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid-every", type=int, default=1000)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--max-steps", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.* if present")
    add_device_args(p)
    p.set_defaults(func=cmd_train_vae)

    p = sub.add_parser("encode", help="encode a dataset with the frozen VAE into the bundle's latent table")
    p.add_argument("--bundle", required=True, help="directory holding vae.safetensors/json")
    add_dataset_args(p, required=False)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("train-judge", help="train the image-space evaluation classifier")
    add_dataset_args(p)
    p.add_argument("--out", required=True, help="bundle directory to write judge.safetensors/json into")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=0)
    add_device_args(p)
    p.set_defaults(func=cmd_train_judge)

    p = sub.add_parser("train-labelset", help="train a label set's latent critic/actor/classifier on the latent table")
    p.add_argument("--bundle", required=True, help="bundle with latents.safetensors/json (from lcs encode)")
    p.add_argument("--label-set", default="realism", help="a label set of the latent table, or 'realism' for G(z)")
    p.add_argument("--rule", default="", help="zero-shot label set from a rule on decoded prior samples: bright | warm")
    p.add_argument("--rule-samples", type=int, default=20000, help="prior samples the rule labels")
    p.add_argument("--out", default="", help="default: BUNDLE/labelsets/LABEL_SET")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--label-embed", type=int, default=64)
    p.add_argument("--lambda-dist", type=float, default=0.1)
    p.add_argument("--edit-prob", type=float, default=0.5,
                   help="share of real-encoding actor rows asked for a one-attribute edit (0 = reference recipe)")
    p.add_argument("--steps", type=int, default=2000, help="actor steps")
    p.add_argument("--critic-steps", type=int, default=10, help="critic steps per actor step")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--gp-weight", type=float, default=10.0)
    p.add_argument("--diag-every", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=cmd_train_labelset)

    p = sub.add_parser("train-baseline", help="train or fit a baseline (CVAE, CVAE-GAN, attribute vectors, latent GMM) on a bundle's data")
    p.add_argument("--bundle", required=True, help="bundle whose VAE backbone, data and latent table the baseline uses")
    p.add_argument("--method", required=True, help="cvae | cvae-cmma | cvae-gan | attrvec-mean | attrvec-lsq | gmm")
    p.add_argument("--label-set", required=True, help="a label set of the dataset, or several joined by '+' (image methods)")
    p.add_argument("--out", default="", help="default: BUNDLE/baselines/METHOD-LABEL_SET")
    p.add_argument("--init", default="", help="fine-tune this CVAE / CVAE-GAN directory for the (wider) label set")
    p.add_argument("--labelled", type=int, default=0, help="use only this many labelled training examples (0 = all)")
    p.add_argument("--steps", type=int, default=3000, help="training steps (image methods)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-final", type=float, default=1e-5)
    p.add_argument("--components", type=int, default=4, help="mixture components per label row (gmm)")
    p.add_argument("--seed", type=int, default=0)
    add_device_args(p)
    p.set_defaults(func=cmd_train_baseline)

    p = sub.add_parser("pack", help="copy a bundle's VAE/judge into a shipping bundle (fp16 by default)")
    p.add_argument("--src", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", default="float16", help="float16 | bfloat16 | float32")
    p.add_argument("--stem", action="append", default=None, help="artifacts to copy (default: vae and judge)")
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("eval", help="score a sampler on a bundle with the judge (JSON + PNG)")
    p.add_argument("--bundle", required=True, help="directory with vae.* and judge.*")
    p.add_argument("--sampler", default="prior", help="prior | realism | actor | optimize | attrvec-mean | attrvec-lsq | gmm | cvae | cvae-cmma | cvae-gan")
    p.add_argument("--artifact", default="", help="the trained mapper or baseline directory, if not at its default place in the bundle")
    p.add_argument("--label-set", default="", help="label set to condition on (default: the dataset's first)")
    p.add_argument("--n", type=int, default=10000, help="samples for accuracy and Fréchet distance")
    p.add_argument("--n-spec3", type=int, default=2000, help="samples for 3-attribute specs")
    p.add_argument("--boots", type=int, default=50, help="bootstrap resamples for the Fréchet interval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare-vae", default="", help="a second VAE bundle (e.g. σx=1) for the σ trade-off figure")
    p.add_argument("--out", default="", help="output directory (default: BUNDLE/eval)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("eval-edits", help="flip one attribute of real test images; judge target reached and the rest kept")
    p.add_argument("--bundle", required=True)
    p.add_argument("--label-set", default="faces")
    p.add_argument("--mode", default="actor", help="actor (amortised) | optimize")
    p.add_argument("--n", type=int, default=1000, help="test images, one edit each")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="output directory (default: BUNDLE/eval)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_eval_edits)

    p = sub.add_parser("figures", help="PNG grids: prior vs realism-mapped, the same z under several specs, edits")
    p.add_argument("--bundle", required=True)
    p.add_argument("--label-set", default="faces")
    p.add_argument("--out", required=True)
    p.add_argument("--spec", action="append", default=[], help="one row of the spec grid, e.g. 'smiling,-eyeglasses'")
    p.add_argument("--edit", action="append", default=[], help="an attribute to toggle in the edit grid")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_figures)

    from service.config import ServerConfig

    d = ServerConfig()
    p = sub.add_parser("serve", help="run the HTTP service (FastAPI + uvicorn) on a frozen bundle")
    p.add_argument("--bundle", default=d.bundle, help="VAE bundle (default: the shipped avatars bundle)")
    p.add_argument("--data-dir", default=d.data_dir, help="registry, jobs and admin token (share it between replicas)")
    p.add_argument("--host", default=d.host)
    p.add_argument("--port", type=int, default=d.port)
    add_device_args(p)
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="samples per decoder forward")
    p.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms, help="how long a batch waits to fill")
    p.add_argument("--max-queue", type=int, default=d.max_queue, help="waiting samples before 429")
    p.add_argument("--timeout", type=float, default=d.request_timeout_s, help="per-request deadline in seconds (504 after)")
    p.add_argument("--max-n", type=int, default=d.max_n, help="images per /sample request")
    p.add_argument("--poll-interval", type=float, default=d.poll_interval_s, help="registry sync period in seconds")
    p.add_argument("--job-workers", type=int, default=d.job_workers, help="training jobs at once")
    p.add_argument("--job-threads", type=int, default=d.job_threads, help="torch threads per training job")
    p.set_defaults(func=cmd_serve)
    env_defaults(p, "LCS_")
    return parser


def env_defaults(p: argparse.ArgumentParser, prefix: str) -> None:
    """Each flag also reads PREFIX + its name in capitals (``--max-batch`` <- LCS_MAX_BATCH): containers configure by env."""
    import os

    for action in p._actions:
        env = prefix + action.dest.upper()
        if action.dest != "help" and env in os.environ and action.type in (None, str, int, float):
            value = os.environ[env]
            try:
                p.set_defaults(**{action.dest: (action.type or str)(value)})
            except ValueError:
                raise SystemExit(f"{env}={value!r} is not a valid {action.dest}") from None


def cmd_serve(a: argparse.Namespace) -> None:
    from service.app import serve
    from service.config import ServerConfig

    serve(ServerConfig(bundle=a.bundle, data_dir=a.data_dir, host=a.host, port=a.port, device=a.device, threads=a.threads,
                       max_batch=a.max_batch, max_wait_ms=a.max_wait_ms, max_queue=a.max_queue, request_timeout_s=a.timeout,
                       max_n=a.max_n, poll_interval_s=a.poll_interval, job_workers=a.job_workers, job_threads=a.job_threads))


def main(argv: list[str] | None = None) -> None:
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


if __name__ == "__main__":
    main()
