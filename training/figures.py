"""``lcs figures``: the grids a person looks at before reading numbers.

- realism: raw prior samples above the same z mapped by the realism actor G(z);
- specs: one row per attribute spec, the same prior z in every column (what the label changes);
- edits: real test images, their reconstructions and attribute toggles (``edits.edit_figure``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from conditioning import backbone, modes
from conditioning.images import save_grid
from conditioning.specs import parse_spec, resolve
from evaluation.samplers import load_labelset
from models.vae import load_vae

CPU = torch.device("cpu")


@torch.no_grad()
def realism_figure(bundle: Path, path: Path, n: int = 12, pairs: int = 3, seed: int = 0) -> Path:
    vae, _ = load_vae(bundle, CPU)
    ls, none = load_labelset(bundle, "realism"), torch.zeros(n, 0)
    z = torch.randn(pairs, n, vae.cfg.latent_dim, generator=torch.Generator().manual_seed(seed))
    rows = [
        backbone.decode(vae, zz, CPU) for p in range(pairs) for zz in (z[p], modes.actor(ls, z[p], none, none.bool()))
    ]
    return save_grid(torch.cat(rows), path, nrow=n, scale=2)


@torch.no_grad()
def spec_figure(bundle: Path, label_set: str, specs: list[str], path: Path, n: int = 10, seed: int = 0) -> Path:
    """Row r decodes G(z_c, y_rc) for the same z_c in every row; y_rc resolves spec r (one draw per column)."""
    vae, _ = load_vae(bundle, CPU)
    ls = load_labelset(bundle, label_set)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, vae.cfg.latent_dim, generator=g)
    rows = []
    for text in specs:
        y = resolve(
            parse_spec(text, ls.attr_names), ls.attr_names, ls.table, n, torch.Generator().manual_seed(seed), ls.kind
        )
        rows.append(backbone.decode(vae, modes.actor(ls, z, y, y.bool()), CPU))
    return save_grid(torch.cat(rows), path, nrow=n, scale=2)


def draw_all(
    bundle: str | Path, label_set: str, out: str | Path, specs: list[str], edits: list[str], seed: int = 0
) -> list[Path]:
    from training.eval_edits import edit_figure

    bundle, out = Path(bundle), Path(out)
    paths = [
        realism_figure(bundle, out / "realism.png", seed=seed),
        spec_figure(bundle, label_set, specs, out / f"specs-{label_set}.png", seed=seed),
    ]
    rows = {paths[0].name: ["prior z", "G(z)"] * 3, paths[1].name: [s or "(no attributes)" for s in specs]}
    if edits:
        paths.append(edit_figure(bundle, label_set, out / f"edits-{label_set}.png", edits, seed=seed))
        rows[paths[-1].name] = ["original", "reconstruction"] + [f"toggle {e}" for e in edits]
    (out / f"figures-{label_set}.json").write_text(json.dumps({"rows": rows, "seed": seed}, indent=2) + "\n")
    return paths
