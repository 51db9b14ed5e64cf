"""The edit methods ``lcs eval-edits`` compares, each on the same images, asked attributes and target rows.

Every method reads an image's labels the same way (the label set's D_attr on the VAE's encoding z0) and aims at the
same target row (``conditioning.edits.edit_target``), so a difference in the judge's scores is the method's:
- the latent-constraints modes (actor, optimize, energy) move z0 as the server does (``conditioning.edits.edit``);
- attribute vectors (``attrvec-mean``, ``attrvec-lsq``) move z0 by s · (y' − y) V (``models.attrvec``). With a fixed
  ``scale`` s > 0 that is the textbook edit (s = 1: the mean difference between the groups). With scale 0 (the
  default), each image takes the smallest s of ATTRVEC_SCALES at which D_attr reads every changed attribute at its
  target, or the largest: one fixed step is too short for an image far from the boundary and too long for one near
  it, and D_attr is the latent classifier the latent-constraints edits are trained against, so the baseline gets the
  same information rather than a handicap;
- a Fader network (``models.fader``) redraws the image from its own encoding with the target row, D(E(x), y').
The first two decode with the bundle's VAE and their null edit is its reconstruction; the Fader network draws with its
own decoder and its null edit is D(E(x), y) with D_attr's reading y.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from conditioning import backbone
from conditioning.edits import EDIT_ACCEPT, edit, edit_target, read_labels
from conditioning.images import batch_to_float
from conditioning.labelset import LabelSetVersion
from conditioning.modes import OptimizeConfig
from evaluation.samplers import baseline_dir, load_labelset, load_latent_baseline
from models.latent_table import REALISM
from models.vae import VAE

LATENT_MODES = ("actor", "optimize", "energy")
BASELINES = ("attrvec-mean", "attrvec-lsq", "fader")
ATTRVEC_SCALES = torch.arange(1, 17) * 0.25  # the steps the D_attr search tries, smallest first: up to 4 · (y' − y) V
CHUNK = 256  # images per Fader network forward


class LatentEditor:
    """A method that moves the image's VAE latent z0: ``move(z0 rows, spec) -> (latents, target rows)``; ``summary()``:
    what the JSON records about the method."""

    latent = True  # edits are VAE latents: the σ̄-weighted shift is reported

    def __init__(self, vae: VAE, dev: torch.device, z0: torch.Tensor, move, summary=dict):
        self.vae, self.dev, self.z0, self.move, self.summary = vae, dev, z0, move, summary

    def edit(self, rows: torch.Tensor, spec: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(edited latents, target rows) of images ``rows``."""
        return self.move(self.z0[rows], spec)

    def images(self, edited: torch.Tensor) -> torch.Tensor:
        return backbone.decode(self.vae, edited, self.dev)

    def reconstruction(self) -> torch.Tensor:
        return self.images(self.z0)


class AttributeVectorMove:
    """z0 + s · (y' − y) V with a fixed s (``scale`` > 0), or the smallest s of ATTRVEC_SCALES at which D_attr reads
    the target (``scale`` 0); records the steps taken and how often D_attr read the target."""

    def __init__(self, ls: LabelSetVersion, model, scale: float):
        self.ls, self.model, self.scale = ls, model, scale
        self.steps: list[torch.Tensor] = []
        self.reached: list[torch.Tensor] = []

    @torch.no_grad()
    def __call__(self, z0: torch.Tensor, spec: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
        n, d = z0.shape
        target, current = edit_target(self.ls, z0, spec), read_labels(self.ls, z0)
        step = self.model.edit(z0, current, target) - z0
        scales = torch.tensor([float(self.scale)]) if self.scale > 0 else ATTRVEC_SCALES
        cand = z0[:, None] + scales[None, :, None] * step[:, None]
        read = read_labels(self.ls, cand.reshape(-1, d)).view(n, len(scales), -1)
        ok = ((read == target[:, None]) | (target == current)[:, None]).all(2)  # every changed column reads its target
        pick = torch.where(ok.any(1), ok.int().argmax(1), len(scales) - 1)  # argmax: the first True
        self.steps.append(scales[pick])
        self.reached.append(ok[torch.arange(n), pick])
        return cand[torch.arange(n), pick], target

    def summary(self) -> dict:
        steps = torch.cat(self.steps)
        return {
            "attrvec_scale": self.scale if self.scale > 0 else "smallest step D_attr reads as the target",
            "attrvec_mean_step": float(steps.mean()),
            "attrvec_d_attr_reads_target": float(torch.cat(self.reached).float().mean()),
        }


class FaderEditor:
    """A Fader network: E(x) once per image, decoded with each row's target (edits) or D_attr's reading (null edit).
    ``scale`` s feeds the decoder y + s · (y' − y) from D_attr's reading y: s > 1 pushes past the target, as the
    authors amplify an attribute (their α), to trade identity for reach."""

    latent = False  # the latent does not move; the label row does

    def __init__(
        self, ls: LabelSetVersion, model, z0: torch.Tensor, images: np.ndarray, dev: torch.device, path, scale=1.0
    ):
        self.ls, self.model, self.z0, self.dev, self.path, self.scale = ls, model.to(dev), z0, dev, path, scale
        with torch.no_grad():
            self.h = torch.cat(
                [model.encode(batch_to_float(images[s : s + CHUNK], dev)) for s in range(0, len(images), CHUNK)]
            )

    def edit(self, rows: torch.Tensor, spec: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(label rows to decode with, target rows)."""
        target = edit_target(self.ls, self.z0[rows], spec)
        current = read_labels(self.ls, self.z0[rows])
        return current + self.scale * (target - current), target

    @torch.no_grad()
    def images(self, labels: torch.Tensor) -> torch.Tensor:
        y = labels.to(self.dev)
        return torch.cat(
            [self.model.decode(self.h[s : s + CHUNK], y[s : s + CHUNK]).cpu() for s in range(0, len(y), CHUNK)]
        )

    def reconstruction(self) -> torch.Tensor:
        return self.images(read_labels(self.ls, self.z0))

    def summary(self) -> dict:
        return {"artifact": str(self.path), "fader_scale": self.scale}


def build_editor(
    mode: str,
    bundle: Path,
    ls: LabelSetVersion,
    vae: VAE,
    dev: torch.device,
    z0: torch.Tensor,
    images: np.ndarray,
    artifact: str | Path = "",
    candidates: int = 1,
    attrvec_scale: float = 0.0,
    edit_confidence: float = EDIT_ACCEPT.attr_confidence,
    fader_scale: float = 1.0,
):
    """The editor of ``mode`` for the images ``images`` encoded as ``z0``; ``artifact``: a baseline's directory when
    not where ``lcs train-baseline`` writes (the mapper's is ``ls``)."""
    if mode in LATENT_MODES:
        # energy edits (the only edits of a classifier label set) need the realism mapper's critic
        realism = load_labelset(bundle, REALISM) if mode == "energy" else None
        accept = OptimizeConfig(attr_confidence=edit_confidence)
        move = lambda z, spec: edit(ls, z, spec, mode, realism=realism, candidates=candidates, accept=accept)[:2]  # noqa: E731
        return LatentEditor(vae, dev, z0, move)
    if mode not in BASELINES:
        raise ValueError(f"unknown edit mode {mode!r}; choose from {LATENT_MODES + BASELINES}")
    path = Path(artifact) if artifact else baseline_dir(bundle, mode, ls.name)
    if mode == "fader":
        from models.fader import load_fader

        model, _ = load_fader(path)
        if model.cfg.attr_names != ls.attr_names:
            raise ValueError(f"{path} was trained on {model.cfg.attr_names}, not label set {ls.name!r}")
        b = model.cfg.backbone
        if (b.channels, b.image_size) != (vae.cfg.channels, vae.cfg.image_size):
            raise ValueError(f"{path} draws {b.channels} x {b.image_size} px images, not the bundle's")
        if fader_scale <= 0:
            raise ValueError(f"fader_scale must be > 0, got {fader_scale}")
        return FaderEditor(ls, model, z0, images, dev, path, fader_scale)
    if attrvec_scale < 0:
        raise ValueError(f"attrvec_scale must be > 0 (a fixed step) or 0 (search), got {attrvec_scale}")
    model = load_latent_baseline(mode, bundle, ls.name, path)
    if model.cfg.method != mode.split("-")[1]:
        raise ValueError(f"{path} holds {model.cfg.method!r} attribute vectors, not {mode!r}")
    move = AttributeVectorMove(ls, model, attrvec_scale)
    return LatentEditor(vae, dev, z0, move, lambda: {"artifact": str(path), **move.summary()})
