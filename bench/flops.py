"""FLOPs of one training step, counted with torch.utils.flop_counter's per-op formulas while the step runs.

``lc_step_flops`` runs the real label-set step (``models.latent_objective.step`` with the optimizers
``lcs train-labelset`` uses), so the count follows any change to training; ``image_step_flops`` runs
every loss of an image baseline's step (``step_losses``) forward and backward.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from models.latent import LatentMappers
from models.latent_objective import optimizers, step
from models.latent_table import load_table
from training.train_labelset import TrainLabelSetConfig


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


def flops_of(fn: Callable[[], object]) -> int:
    with FlopCount() as fc:
        fn()
    return int(fc.total)


def lc_step_flops(bundle: str | Path, label_set: str, recipe: dict, table: str | Path = "") -> int:
    """FLOPs of one LC training step as ``lcs train-labelset`` runs it with ``recipe`` (TrainLabelSetConfig fields):
    critic_steps critic updates (with gradient penalty), one actor and one D_attr update, optimizer steps included.
    ``table``: the latent table's directory when not the bundle's."""
    cfg = TrainLabelSetConfig(bundle=str(bundle), label_set=label_set, table=str(table), **recipe)
    t = load_table(cfg.table or cfg.bundle, label_set)
    m = LatentMappers(cfg.network(t))
    opts = optimizers(m, cfg.lr, cfg.attr_lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    rows = t.rows(0)
    batch = lambda: rows[torch.randint(len(rows), (cfg.batch_size,), generator=gen)]  # noqa: E731
    return flops_of(lambda: step(m, opts, t, batch, cfg.objective(), gen))


def image_step_flops(bundle: Path, method: str, label_set: str, batch: int) -> int:
    """FLOPs of one step of an image baseline: every loss of ``step_losses`` forward and backward."""
    from models.artifacts import load_manifest
    from models.vae import VAEConfig
    from training.data import load_dataset
    from training.train_baseline import TrainBaselineConfig, build_image_model, label_columns

    vman = load_manifest(bundle, "vae")
    data = load_dataset(vman["dataset"]["name"], **vman["dataset"]["params"])
    attrs, kind = label_columns(data, label_set)
    model = build_image_model(TrainBaselineConfig(method=method), VAEConfig(**vman["config"]), attrs, kind)
    c, h, w = data.image_shape
    x, y = torch.rand(batch, c, h, w), (torch.rand(batch, len(attrs)) > 0.5).float()
    return flops_of(lambda: [loss.backward() for _, loss, _ in model.step_losses(x, y)])
