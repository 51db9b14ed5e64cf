"""CVAE-GAN (Bao et al., ICCV 2017): the strongest retrained conditional model among the related systems.

Four networks on our VAE's conv backbone: encoder E(x, y) and generator G(z, y) as in ``models.cvae``,
a classifier C(x) -> y and a discriminator D(x) -> real/fake, each a conv trunk + a feature layer + a head.
Losses (the authors' weights λ1..λ4 = 3, 1, 1e-3, 1e-3):
- D: cross-entropy, real x -> 1, reconstructions x_r = G(E(x, y), y) and samples x_p = G(z_p, y) -> 0;
- C: cross-entropy on real images;
- E, G: λ1·KL(q(z|x, y) ‖ N(0, I)) + λ2·L_G + λ3·L_GD + λ4·L_GC, where
  L_G  = ½(‖x − x_r‖² + ‖f_D(x) − f_D(x_r)‖² + ‖f_C(x) − f_C(x_r)‖²)   (pairwise feature matching),
  L_GD = ½‖mean f_D(x) − mean f_D(x_p)‖²                                 (mean feature matching),
  L_GC = ½ Σ_c ‖mean f_C(x | y_c = 1) − mean f_C(x_p | y_c = 1)‖²         (per class; per attribute for
  binary label sets), with x_p drawn for the batch's own labels so the class means are comparable.
Pixels enter L_G on the [−1, 1] scale of the authors' tanh generator; norms are summed per image, averaged over
the batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from models.cvae import CVAE, CVAEConfig, load_cvae
from models.vae import VAEConfig, conv_trunk

ARCH = "conv-cvae-gan-v1"


@dataclass
class CVAEGANConfig:
    cvae: CVAEConfig  # encoder + generator (standard normal prior)
    feature_dim: int = 256  # width of f_D and f_C
    weights: tuple[float, float, float, float] = (3.0, 1.0, 1e-3, 1e-3)  # λ1 KL, λ2 L_G, λ3 L_GD, λ4 L_GC

    def to_json(self) -> dict:
        return {**asdict(self), "cvae": self.cvae.to_json(), "weights": list(self.weights)}

    @classmethod
    def from_json(cls, d: dict) -> "CVAEGANConfig":
        return cls(**{**d, "cvae": CVAEConfig.from_json(d["cvae"]), "weights": tuple(d["weights"])})


class FeatureNet(nn.Module):
    """Conv trunk -> feature layer f(x) -> head; D and C differ only in the head's width."""

    def __init__(self, backbone: VAEConfig, feature_dim: int, outputs: int):
        super().__init__()
        self.conv, n = conv_trunk(backbone)
        self.features = nn.Sequential(nn.Linear(n, feature_dim), nn.LeakyReLU(0.2))
        self.head = nn.Linear(feature_dim, outputs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, features)."""
        f = self.features(self.conv(x * 2 - 1).flatten(1))
        return self.head(f), f


class CVAEGAN(nn.Module):
    def __init__(self, cfg: CVAEGANConfig):
        super().__init__()
        if cfg.cvae.learned_prior:
            raise ValueError("CVAE-GAN uses the standard normal prior")
        self.cfg = cfg
        self.cvae = CVAE(cfg.cvae)  # E and G
        self.classifier = FeatureNet(cfg.cvae.backbone, cfg.feature_dim, cfg.cvae.n_labels)
        self.discriminator = FeatureNet(cfg.cvae.backbone, cfg.feature_dim, 1)

    @property
    def label_config(self) -> CVAEConfig:
        return self.cfg.cvae

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.cvae.decode(z, y)

    def sample_latents(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.cvae.sample_latents(y, generator)

    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "discriminator": list(self.discriminator.parameters()),
            "classifier": list(self.classifier.parameters()),
            "generator": list(self.cvae.parameters()),
        }

    def _class_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.cfg.cvae.kind == "categorical":
            return F.cross_entropy(logits, y.argmax(1))
        return F.binary_cross_entropy_with_logits(logits, y.float())

    def step_losses(self, x: torch.Tensor, y: torch.Tensor) -> Iterator[tuple[str, torch.Tensor, dict]]:
        """One training step as (optimiser group, loss, info), in order; the trainer steps each group
        before the next loss is computed, so E and G see the updated D and C, as in the paper's algorithm."""
        l1, l2, l3, l4 = self.cfg.weights
        mu, logvar = self.cvae._encoder_params(x, y)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        x_r = self.cvae.decode(z, y)
        x_p = self.cvae.decode(torch.randn_like(mu), y)

        d_real, _ = self.discriminator(x)
        d_fake, _ = self.discriminator(torch.cat([x_r, x_p]).detach())
        loss_d = F.binary_cross_entropy_with_logits(
            d_real, torch.ones_like(d_real)
        ) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        yield "discriminator", loss_d, {"loss_d": loss_d.item()}

        loss_c = self._class_loss(self.classifier(x)[0], y)
        yield "classifier", loss_c, {"loss_c": loss_c.item()}

        self.discriminator.requires_grad_(False)
        self.classifier.requires_grad_(False)
        try:
            _, fd_x = self.discriminator(x)
            _, fd_r = self.discriminator(x_r)
            _, fd_p = self.discriminator(x_p)
            _, fc_x = self.classifier(x)
            _, fc_r = self.classifier(x_r)
            _, fc_p = self.classifier(x_p)
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean()
            sq = lambda a, b: (a - b).pow(2).flatten(1).sum(1).mean()  # noqa: E731
            l_g = 0.5 * (sq(x * 2 - 1, x_r * 2 - 1) + sq(fd_x, fd_r) + sq(fc_x, fc_r))
            l_gd = 0.5 * (fd_x.mean(0) - fd_p.mean(0)).pow(2).sum()
            yf = y.float()
            counts = yf.sum(0).clamp(min=1)[:, None]  # per class/attribute: mean features of its positive rows
            l_gc = 0.5 * ((yf.T @ fc_x - yf.T @ fc_p) / counts).pow(2).sum()
            loss_g = l1 * kl + l2 * l_g + l3 * l_gd + l4 * l_gc
        finally:
            self.discriminator.requires_grad_(True)
            self.classifier.requires_grad_(True)
        yield (
            "generator",
            loss_g,
            {
                "kl": kl.item(),
                "l_g": l_g.item(),
                "l_gd": l_gd.item(),
                "l_gc": l_gc.item(),
                "mse": (x - x_r).pow(2).mean().item(),
            },
        )


def load_cvaegan(directory, device: str | torch.device = "cpu") -> tuple[CVAEGAN, dict, dict[str, torch.Tensor]]:
    """-> (model, manifest, extra tensors: ``label_rows``/``label_counts``, the distinct training label rows)."""
    from models.artifacts import load_model

    extra = ("label_rows", "label_counts")
    model, manifest, tensors = load_model(
        directory, "cvaegan", ARCH, lambda cfg: CVAEGAN(CVAEGANConfig.from_json(cfg)), extra
    )
    return model.to(device), manifest, {k: tensors[k] for k in extra}


def load_conditional(directory: str | Path, device: str | torch.device = "cpu"):
    """A trained CVAE, CVAE-GAN or Triple-GAN -> (model, manifest, extra tensors)."""
    if (Path(directory) / "triplegan.json").exists():
        from models.triplegan import load_triplegan  # it builds on this module's FeatureNet

        return load_triplegan(directory, device)
    return (load_cvaegan if (Path(directory) / "cvaegan.json").exists() else load_cvae)(directory, device)
