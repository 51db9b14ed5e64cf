"""Triple-GAN (Li et al., NIPS 2017): the semi-supervised baseline, a conditional generator and a classifier that a
discriminator of (image, label) pairs trains against each other, so unlabelled images help both.

Three networks on our VAE's conv backbone and image size:
- generator G(z, y): the VAE's decoder fed [z, y], as ``models.cvae`` feeds it;
- classifier C(x) -> p_c(y|x): conv trunk + feature layer + one logit per label column (``FeatureNet``); softmax
  over the columns for a categorical label set, a sigmoid per column for binary attributes;
- discriminator D(x, y): the same kind of network on the image with y as constant planes beside the pixels (the
  CVAE encoder's input); the authors feed y to every layer, here it enters once, at the input.
Losses, in the authors' order (D, then C, then G), with α weighing C's fake pairs against G's:
- D: BCE(D(x, y) -> 1) on labelled pairs + α·BCE(D(x_u, y_c) -> 0), y_c ~ p_c(y|x_u) drawn for unlabelled images,
  + (1 − α)·BCE(D(G(z, y), y) -> 0);
- C: CE(C(x), y) on labelled pairs (R_L) + α·E_{y_c ~ p_c}[−log D(x_u, y_c)] (non-saturating, as G's; its gradient
  through the drawn labels is the score-function estimate with the batch mean as baseline) + α_P·CE(C(G(z, y)), y)
  (R_P, the pseudo-labels G's pairs give);
- G: BCE(D(G(z, y), y) -> 1) (non-saturating; the authors' (1 − α) factor is left out: Adam does not see a constant
  scale).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from models.cvaegan import FeatureNet
from models.latent import LabelKind
from models.vae import Decoder, OnBackbone, VAEConfig

ARCH = "conv-triple-gan-v1"


@dataclass(frozen=True)
class TripleGANConfig(OnBackbone):
    backbone: VAEConfig  # latent_dim is the size of G's noise z
    attr_names: list[str] = field(default_factory=list)
    kind: LabelKind = "binary"
    alpha: float = 0.5  # α: the share of C's pairs among D's fakes (the authors' 1/2)
    pseudo_weight: float = 0.1  # α_P: weight of R_P in C's loss (the authors' 0.1)
    feature_dim: int = 256  # width of C's and D's feature layers


class TripleGAN(nn.Module):
    adam_betas = (0.5, 0.999)  # DCGAN's Adam setting for adversarial games, read by ``lcs train-baseline``

    def __init__(self, cfg: TripleGANConfig):
        super().__init__()
        b, k = cfg.backbone, cfg.n_labels
        if k == 0:
            raise ValueError("a Triple-GAN needs label columns")
        self.cfg = cfg
        self.generator = Decoder(replace(b, latent_dim=b.latent_dim + k))
        self.classifier = FeatureNet(b, cfg.feature_dim, k)
        self.discriminator = FeatureNet(replace(b, channels=b.channels + k), cfg.feature_dim, 1)

    @property
    def label_config(self) -> TripleGANConfig:
        """The label columns it conditions on (shared name with the CVAE, CVAE-GAN and Fader network)."""
        return self.cfg

    def sample_latents(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(len(y), self.cfg.backbone.latent_dim, generator=generator).to(y.device)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """G(z, y): images in [0, 1]."""
        return self.generator(torch.cat([z, y.to(z.dtype)], 1))

    @torch.no_grad()
    def sample(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One image per label row of ``y``."""
        return self.decode(self.sample_latents(y, generator), y)

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """p_c(y|x) per label column: class probabilities (categorical) or each attribute's (binary)."""
        logits = self.classifier(x)[0].float()
        return logits.softmax(1) if self.cfg.kind == "categorical" else torch.sigmoid(logits)

    def discriminate(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """D's logit that (x, y) is a real labelled pair."""
        planes = y.to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:])
        return self.discriminator(torch.cat([x, planes], 1))[0]

    def class_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.cfg.kind == "categorical":
            return F.cross_entropy(logits, y.argmax(1))
        return F.binary_cross_entropy_with_logits(logits, y)

    def log_prob(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log p_c(y|x) per image of hard label rows y."""
        if self.cfg.kind == "categorical":
            return -F.cross_entropy(logits, y.argmax(1), reduction="none")
        return -F.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(1)

    def draw_labels(self, logits: torch.Tensor) -> torch.Tensor:
        """Hard label rows y ~ p_c(y|x): one class (categorical) or each attribute independently (binary)."""
        if self.cfg.kind == "categorical":
            picked = torch.multinomial(logits.float().softmax(1), 1).squeeze(1)
            return F.one_hot(picked, self.cfg.n_labels).float()
        return torch.bernoulli(torch.sigmoid(logits.float()))

    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "discriminator": list(self.discriminator.parameters()),
            "classifier": list(self.classifier.parameters()),
            "generator": list(self.generator.parameters()),
        }

    def step_losses(
        self, x: torch.Tensor, y: torch.Tensor, x_u: torch.Tensor | None = None
    ) -> Iterator[tuple[str, torch.Tensor, dict]]:
        """One training step as (optimiser group, loss, info), in order, as ``models.cvaegan``'s: the trainer steps D
        before C's loss is computed and C before G's. ``x_u``: an unlabelled batch (None: ``x`` without its labels)."""
        a, bce = self.cfg.alpha, F.binary_cross_entropy_with_logits
        y = y.float()
        x_g = self.decode(torch.randn(len(y), self.cfg.backbone.latent_dim, device=x.device), y)
        logits = self.classifier(x)[0].float()
        logits_u = logits if x_u is None else self.classifier(x_u)[0].float()
        x_u = x if x_u is None else x_u
        y_u = self.draw_labels(logits_u.detach())

        d_real, d_c, d_g = self.discriminate(x, y), self.discriminate(x_u, y_u), self.discriminate(x_g.detach(), y)
        loss_d = (
            bce(d_real, torch.ones_like(d_real))
            + a * bce(d_c, torch.zeros_like(d_c))
            + (1 - a) * bce(d_g, torch.zeros_like(d_g))
        )
        d_acc = torch.cat([d_real > 0, d_c < 0, d_g < 0]).float().mean().item()
        yield "discriminator", loss_d, {"loss_d": loss_d.item(), "d_acc": d_acc}

        with torch.no_grad():  # −log D(x_u, y_c) under the updated D: the cost of each drawn label
            cost = F.softplus(-self.discriminate(x_u, y_u)).squeeze(1)
        adv_c = ((cost - cost.mean()) * self.log_prob(logits_u, y_u)).mean()
        sup = self.class_loss(logits, y)
        pseudo = self.class_loss(self.classifier(x_g.detach())[0].float(), y)
        loss_c = sup + a * adv_c + self.cfg.pseudo_weight * pseudo
        yield "classifier", loss_c, {"loss_c": sup.item(), "adv_c": cost.mean().item(), "pseudo": pseudo.item()}

        self.discriminator.requires_grad_(False)
        try:
            d_fake = self.discriminate(x_g, y)
            loss_g = bce(d_fake, torch.ones_like(d_fake))
        finally:
            self.discriminator.requires_grad_(True)
        yield "generator", loss_g, {"loss_g": loss_g.item()}


def load_triplegan(directory, device: str | torch.device = "cpu") -> tuple[TripleGAN, dict, dict[str, torch.Tensor]]:
    """-> (model, manifest, extra tensors: ``label_rows``/``label_counts``, the distinct training label rows)."""
    from models.artifacts import load_model

    extra = ("label_rows", "label_counts")
    model, manifest, tensors = load_model(
        directory, "triplegan", ARCH, lambda cfg: TripleGAN(TripleGANConfig.from_json(cfg)), extra
    )
    return model.to(device), manifest, {k: tensors[k] for k in extra}
