"""Samplers: how a method turns requested labels into images.

``lcs eval`` scores any sampler the same way. A sampler is built from (bundle dir, label set,
VAE) and maps a float label matrix (n x K, 0/1) to images (n x C x H x W in [0, 1]). Methods
on the frozen VAE (prior, latent constraints, attribute vectors, latent GMM) produce latents
that the bundle's decoder turns into images; retrained conditional models (CVAE, CVAE-GAN, Triple-GAN)
and InfoGAN (through its code -> class map) use their own generator. BiGAN and GAIA are backbones, not samplers:
``lcs train-baseline`` makes a bundle of each, and the samplers above run on it. Add one by registering a
factory in SAMPLERS.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable, Protocol

import torch

from conditioning import backbone, energy, modes
from conditioning.labelset import LabelSetVersion
from conditioning.runtime import autocast
from models.artifacts import load_manifest
from models.latent_table import REALISM
from models.vae import VAE

Mask = torch.Tensor | None  # n x K bool: the attributes a request names (None: all)


class Sampler(Protocol):
    name: str
    conditional: bool

    def images(
        self, labels: torch.Tensor, generator: torch.Generator, device: torch.device, mask: Mask = None
    ) -> torch.Tensor:
        """Images (n x C x H x W, CPU floats in [0, 1]) for n rows of requested labels. ``mask`` (n x K bool):
        the attributes the request names (default: all). Only optimisation mode uses it, as the server does;
        the other methods condition on the full rows."""


class LatentSampler:
    """A method on the frozen VAE: ``sample`` gives latents, the bundle's decoder gives images."""

    name, conditional = "latent", True

    def __init__(self, vae: VAE):
        self.vae = vae

    def sample(self, labels: torch.Tensor, generator: torch.Generator, mask: Mask = None) -> torch.Tensor:
        raise NotImplementedError

    def images(
        self, labels: torch.Tensor, generator: torch.Generator, device: torch.device, mask: Mask = None
    ) -> torch.Tensor:
        return backbone.decode(self.vae, self.sample(labels, generator, mask), device)


class PriorSampler(LatentSampler):
    """z ~ N(0, I), ignoring the labels: the unconditional VAE, the floor every method must beat."""

    name, conditional = "prior", False

    def sample(self, labels: torch.Tensor, generator: torch.Generator, mask: Mask = None) -> torch.Tensor:
        return torch.randn(len(labels), self.vae.cfg.latent_dim, generator=generator)


def load_labelset(bundle: Path, name: str, artifact: str | Path = "") -> LabelSetVersion:
    """A label set's mappers from ARTIFACT (default BUNDLE/labelsets/NAME), checked against the bundle's decoder."""
    path = Path(artifact) if artifact else bundle / "labelsets" / name
    return LabelSetVersion.load(path, load_manifest(bundle, "vae")["decoder_fingerprint"], name, "bundle")


class ModeSampler(LatentSampler):
    """A conditioning mode of ``conditioning.modes`` on a label set, exactly as the server runs it: z drawn
    first from the generator; the mask says which attributes the request names (default all); ``candidates``: the
    server's setting of that name (actor mode: prior draws per row to select among)."""

    name, conditional, mode = "mode", True, "actor"
    chunk = 1024  # rows per call (optimisation holds a graph per row)

    def __init__(self, bundle: Path, label_set: str, vae: VAE, artifact: str | Path = "", candidates: int = 1):
        super().__init__(vae)
        self.candidates = candidates
        self.ls = load_labelset(bundle, label_set, artifact)
        if self.ls.m.actor is None and self.mode != "energy":
            raise ValueError(f"{label_set!r} is a classifier label set: score it with --sampler energy")
        self.converged: list[bool] = []  # per sampled row, in order: did its mode converge (see modes.Latents)
        self.plan = None

    def sample(self, labels: torch.Tensor, generator: torch.Generator, mask: Mask = None) -> torch.Tensor:
        z = torch.randn(len(labels), self.ls.m.cfg.latent_dim, generator=generator)
        mask = torch.ones(labels.shape, dtype=torch.bool) if mask is None else mask
        parts = [slice(s, s + self.chunk) for s in range(0, len(labels), self.chunk)]
        out = [modes.latents(self.mode, self.ls, z[p], labels[p], mask[p], self.plan, self.candidates) for p in parts]
        for o in out:
            self.converged += o.converged.tolist()
        return torch.cat([o.z for o in out]) if out else z


class ActorSampler(ModeSampler):
    """Amortised: z = G(z_p, y) for z_p ~ N(0, I), one forward pass."""

    name, mode = "actor", "actor"


class EnergySampler(ModeSampler):
    """The energy sampler (``conditioning.energy``) on the request's rows, through the bundle's realism mapper: how
    the server answers ``mode=energy`` and every request to a classifier label set."""

    name, mode = "energy", "energy"
    chunk = 64  # the sampler scans 1,024 candidates per row: bound what one call holds

    def __init__(self, bundle: Path, label_set: str, vae: VAE, artifact: str | Path = ""):
        super().__init__(bundle, label_set, vae, artifact)
        self.plan = energy.Plan(load_labelset(bundle, REALISM), energy.Rows(self.ls), self.ls.name)


class RealismSampler(ModeSampler):
    """Unconditional realism mapper G(z_p): prior samples moved onto the data manifold."""

    name, conditional, mode = "realism", False, "actor"

    def __init__(self, bundle: Path, label_set: str, vae: VAE, artifact: str | Path = "", candidates: int = 1):
        super().__init__(bundle, "realism", vae, artifact, candidates)

    def sample(self, labels: torch.Tensor, generator: torch.Generator, mask: Mask = None) -> torch.Tensor:
        return super().sample(torch.zeros(len(labels), 0), generator)


class OptimizeSampler(ModeSampler):
    """Optimisation mode: Adam on z from z_p ~ N(0, I) against D(z, y) and D_attr (all attributes specified)."""

    name, mode = "optimize", "optimize"


def baseline_dir(bundle: Path, method: str, label_set: str) -> Path:
    """Where ``lcs train-baseline`` writes by default."""
    return Path(bundle) / "baselines" / f"{method}-{label_set}"


def label_set_attrs(bundle: Path, label_set: str) -> list[str]:
    sets = load_manifest(bundle, "vae")["dataset"]["label_sets"]
    if label_set not in sets:
        raise ValueError(f"label set {label_set!r} not in {sorted(sets)}")
    return sets[label_set]["attrs"]


def load_latent_baseline(method: str, bundle: Path, label_set: str, artifact: str | Path = ""):
    """Attribute vectors or a latent GMM from ARTIFACT (default: where ``lcs train-baseline`` writes), refused if fitted
    on another decoder's latents or for other label columns."""
    from models.artifacts import ArtifactError
    from models.attrvec import load_attrvec
    from models.latent_gmm import load_latent_gmm

    path = Path(artifact) if artifact else baseline_dir(bundle, method, label_set)
    model, manifest = load_latent_gmm(path) if method == "gmm" else load_attrvec(path)
    if manifest.get("decoder_fingerprint") != load_manifest(bundle, "vae")["decoder_fingerprint"]:
        raise ArtifactError(f"{path} was fitted on another decoder's latents")
    if model.cfg.attr_names != label_set_attrs(bundle, label_set):
        raise ValueError(f"{path} models {model.cfg.attr_names}, not label set {label_set!r}")
    return model


class LatentBaselineSampler(LatentSampler):
    """Attribute vectors or a per-condition latent GMM, fitted on the frozen VAE's encodings."""

    def __init__(self, method: str, bundle: Path, label_set: str, vae: VAE, artifact: str | Path = ""):
        super().__init__(vae)
        self.name = method
        self.model = load_latent_baseline(method, bundle, label_set, artifact)

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, generator: torch.Generator, mask: Mask = None) -> torch.Tensor:
        return self.model.sample(labels, generator)


def fill_columns(
    labels: torch.Tensor,
    attrs: list[str],
    model_attrs: list[str],
    rows: torch.Tensor,
    counts: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Full label rows for a model trained on more columns than were asked for: each request keeps its
    values and takes the other columns from a training row that agrees with it, drawn by frequency."""
    if attrs == model_attrs:
        return labels
    cols = [model_attrs.index(a) for a in attrs]
    out = torch.empty(len(labels), len(model_attrs))
    want, inverse = torch.unique(labels, dim=0, return_inverse=True)
    for i, row in enumerate(want):
        match = (rows[:, cols].float() == row).all(1)
        if not match.any():
            raise ValueError(f"no training row has {dict(zip(attrs, row.tolist(), strict=False))}")
        sel = torch.nonzero(inverse == i).squeeze(1)
        pick = torch.multinomial(counts.float() * match, len(sel), replacement=True, generator=generator)
        out[sel] = rows[pick].float()
    return out


@torch.no_grad()
def conditional_images(
    model,
    labels: torch.Tensor,
    attrs: list[str],
    rows: torch.Tensor,
    counts: torch.Tensor,
    generator: torch.Generator,
    device: torch.device,
    batch: int = 256,
) -> torch.Tensor:
    """Images from a CVAE / CVAE-GAN for requested labels of ``attrs`` (its other columns drawn by ``fill_columns``)."""
    model.to(device)
    y = fill_columns(labels, attrs, model.label_config.attr_names, rows, counts, generator)
    z = model.sample_latents(y, generator)
    out = []
    for s in range(0, len(y), batch):
        with autocast(device):
            out.append(model.decode(z[s : s + batch].to(device), y[s : s + batch].to(device)).float().cpu())
    return torch.cat(out)


class ConditionalModelSampler:
    """A retrained conditional model (CVAE, CVAE-CMMA, CVAE-GAN, Triple-GAN) with its own decoder: z ~ p(z|y),
    x = G(z, y)."""

    conditional = True

    def __init__(self, method: str, bundle: Path, label_set: str, vae: VAE, artifact: str | Path = ""):
        from models.cvaegan import load_conditional

        self.name = method
        path = Path(artifact) if artifact else baseline_dir(bundle, method, label_set)
        self.model, self.manifest, extra = load_conditional(path)
        self.attrs = label_set_attrs(bundle, label_set)
        trained_on = self.model.label_config.attr_names
        if not set(self.attrs) <= set(trained_on):
            raise ValueError(f"{path} was trained on {trained_on}, which lacks label set {label_set!r}")
        self.rows, self.counts = extra["label_rows"], extra["label_counts"]

    def images(
        self, labels: torch.Tensor, generator: torch.Generator, device: torch.device, mask: Mask = None
    ) -> torch.Tensor:
        return conditional_images(self.model, labels, self.attrs, self.rows, self.counts, generator, device)


class InfoGANSampler:
    """InfoGAN, conditioned after the fact: each requested class fixes the categorical code that ``lcs train-baseline``
    matched to it (``code_class``); the noise and continuous codes are drawn. A class no code took is refused."""

    name, conditional = "infogan", True

    def __init__(self, bundle: Path, label_set: str, vae: VAE, artifact: str | Path = ""):
        from models.infogan import load_infogan

        path = Path(artifact) if artifact else baseline_dir(bundle, "infogan", label_set)
        self.model, self.manifest, extra = load_infogan(path)
        if self.manifest.get("label_set") != label_set or "code_class" not in extra:
            raise ValueError(f"{path} has no code -> class map for label set {label_set!r}")
        self.code = torch.full((len(label_set_attrs(bundle, label_set)),), -1, dtype=torch.long)
        for code, cls in enumerate(extra["code_class"].tolist()):
            if cls >= 0:
                self.code[cls] = code

    @torch.no_grad()
    def images(
        self, labels: torch.Tensor, generator: torch.Generator, device: torch.device, mask: Mask = None
    ) -> torch.Tensor:
        codes = self.code[labels.argmax(1)]
        if (codes < 0).any():
            raise ValueError("a requested class has no InfoGAN code matched to it")
        self.model.to(device)
        out = []
        for s in range(0, len(codes), 256):
            with autocast(device):
                out.append(self.model.sample(len(codes[s : s + 256]), generator, codes[s : s + 256]).float().cpu())
        return torch.cat(out)


SAMPLERS: dict[str, Callable[..., Sampler]] = {
    "prior": lambda bundle, label_set, vae, artifact="": PriorSampler(vae),
    "realism": RealismSampler,
    "actor": ActorSampler,
    "optimize": OptimizeSampler,
    "energy": EnergySampler,
    **{m: partial(LatentBaselineSampler, m) for m in ("attrvec-mean", "attrvec-lsq", "gmm")},
    **{m: partial(ConditionalModelSampler, m) for m in ("cvae", "cvae-cmma", "cvae-gan", "triplegan")},
    "infogan": InfoGANSampler,
}


def build_sampler(name: str, bundle: Path, label_set: str, vae: VAE, artifact: str | Path = "") -> Sampler:
    """``artifact``: the trained mapper/baseline directory, when not at its default place in the bundle."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose from {sorted(SAMPLERS)}")
    return SAMPLERS[name](Path(bundle), label_set, vae, artifact)
