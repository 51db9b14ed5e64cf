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
    from training.images import save_grid, batch_to_float

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


def cmd_eval(a: argparse.Namespace) -> None:
    from training.evaluate import evaluate

    evaluate(a.bundle, sampler=a.sampler, label_set=a.label_set, n=a.n, n_spec3=a.n_spec3, seed=a.seed, device=a.device,
             out=a.out, compare_vae=a.compare_vae, boots=a.boots, command=["lcs"] + sys.argv[1:])


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

    p = sub.add_parser("eval", help="score a sampler on a bundle with the judge (JSON + PNG)")
    p.add_argument("--bundle", required=True, help="directory with vae.* and judge.*")
    p.add_argument("--sampler", default="prior", help="prior (more come with latent constraints and baselines)")
    p.add_argument("--label-set", default="", help="label set to condition on (default: the dataset's first)")
    p.add_argument("--n", type=int, default=10000, help="samples for accuracy and Fréchet distance")
    p.add_argument("--n-spec3", type=int, default=2000, help="samples for 3-attribute specs")
    p.add_argument("--boots", type=int, default=50, help="bootstrap resamples for the Fréchet interval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare-vae", default="", help="a second VAE bundle (e.g. σx=1) for the σ trade-off figure")
    p.add_argument("--out", default="", help="output directory (default: BUNDLE/eval)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> None:
    from training.runtime import setup_logging

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
