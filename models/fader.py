"""Fader network (Lample et al., NIPS 2017): the edit baseline that retrains an autoencoder so its latent carries no
label, on the same conv backbone and image size as our VAE.

- encoder E(x) -> h: the VAE's conv trunk and a linear head, deterministic (an autoencoder, not a VAE);
- decoder D(h, y) -> x̂: the VAE's decoder fed [h, y], as ``models.cvae`` feeds [z, y];
- latent discriminator P(h) -> y: an MLP (two hidden layers, dropout 0.3, as the authors'), trained by cross-entropy
  on E(x) with E frozen;
- E and D minimise the authors' loss: the mean squared pixel error on the [−1, 1] scale, plus λ_E times the
  discriminator's cross-entropy against the flipped labels 1 − y (categorical: the uniform over the other classes, the
  expectation of the authors' random other class). λ_E rises linearly from 0 over ``ramp_steps`` updates, as the
  authors ramp it: the autoencoder first learns to reconstruct, then is pushed to leave y to the decoder.
An edit encodes the image once and decodes it with the target label row: D(E(x), y').
Differences from the authors': y enters the decoder once, at its fully connected input (they concatenate it at every
layer), and binary labels are one logit each (their two-unit one-hot is the same model up to a bias).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from models.latent import LabelKind
from models.vae import VAE, Decoder, OnBackbone, VAEConfig, conv_trunk

ARCH = "conv-fader-v1"


@dataclass
class FaderConfig(OnBackbone):
    backbone: VAEConfig  # latent_dim is the size of E(x)
    attr_names: list[str] = field(default_factory=list)
    kind: LabelKind = "binary"
    adv_weight: float = 1e-4  # λ_E at the end of the ramp: the authors' weight
    ramp_steps: int = 0  # updates over which λ_E rises from 0 (0: the full weight from the first update)
    dis_width: int = 512  # the latent discriminator's hidden width (the authors')
    dis_dropout: float = 0.3  # after its first hidden layer (the authors')


class FaderNetwork(nn.Module):
    def __init__(self, cfg: FaderConfig):
        super().__init__()
        b, k, w = cfg.backbone, cfg.n_labels, cfg.dis_width
        if k == 0:
            raise ValueError("a Fader network needs label columns")
        self.cfg = cfg
        trunk, features = conv_trunk(b)
        self.encoder = nn.Sequential(trunk, nn.Flatten(), nn.Linear(features, b.latent_dim))
        self.decoder = Decoder(replace(b, latent_dim=b.latent_dim + k))
        self.discriminator = nn.Sequential(
            nn.Linear(b.latent_dim, w),
            nn.LeakyReLU(0.2),
            nn.Dropout(cfg.dis_dropout),
            nn.Linear(w, w),
            nn.LeakyReLU(0.2),
            nn.Linear(w, k),
        )
        self.updates = 0  # autoencoder updates so far, for λ_E's ramp; not saved (a trained model's ramp is over)

    @property
    def label_config(self) -> FaderConfig:
        """The label columns it conditions on (shared name with the CVAE and CVAE-GAN)."""
        return self.cfg

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) for images in [0, 1]: the latent the decoder redraws with any label row."""
        return self.encoder(x * 2 - 1).float()

    def decode(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([h, y.to(h.dtype)], 1))

    @torch.no_grad()
    def start_from_vae(self, vae: VAE) -> None:
        """Start as a trained VAE's autoencoder: E = its encoder with the μ head, D = its decoder with the label
        inputs at zero. Compared with latent constraints on that VAE, the Fader network then starts from the same
        autoencoder instead of from scratch (``lcs train-baseline --method fader --init BUNDLE``)."""
        b = self.cfg.backbone
        if vae.cfg.to_json() != b.to_json():
            raise ValueError(f"the VAE's sizes {vae.cfg.to_json()} are not this Fader network's {b.to_json()}")
        self.encoder[0].load_state_dict(vae.encoder.conv.state_dict())
        self.encoder[2].weight.copy_(vae.encoder.head.weight[: b.latent_dim])
        self.encoder[2].bias.copy_(vae.encoder.head.bias[: b.latent_dim])
        self.decoder.conv.load_state_dict(vae.decoder.conv.state_dict())
        self.decoder.fc.weight.zero_()
        self.decoder.fc.weight[:, : b.latent_dim] = vae.decoder.fc.weight
        self.decoder.fc.bias.copy_(vae.decoder.fc.bias)

    def adv_lambda(self) -> float:
        """λ_E of the next update."""
        r = self.cfg.ramp_steps
        return self.cfg.adv_weight * (min(self.updates / r, 1.0) if r else 1.0)

    def label_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the discriminator's logits against (soft) label rows, summed over attributes as the
        authors'; categorical: one distribution over the classes."""
        if self.cfg.kind == "categorical":
            return F.cross_entropy(logits, target)
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(1).mean()

    def flipped(self, y: torch.Tensor) -> torch.Tensor:
        """What the encoder wants the discriminator to read: every binary label flipped; categorical: the uniform
        over the other classes."""
        return 1 - y if self.cfg.kind == "binary" else (1 - y) / (self.cfg.n_labels - 1)

    @torch.no_grad()
    def discriminator_accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Share of labels the latent discriminator reads right from E(x) (categorical: the class), in eval mode:
        chance when the latent carries no label."""
        was = self.training
        self.eval()
        logits = self.discriminator(self.encode(x))
        self.train(was)
        if self.cfg.kind == "categorical":
            return float((logits.argmax(1) == y.argmax(1)).float().mean())
        return float(((logits > 0).float() == y).float().mean())

    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "discriminator": list(self.discriminator.parameters()),
            "autoencoder": list(self.encoder.parameters()) + list(self.decoder.parameters()),
        }

    def step_losses(self, x: torch.Tensor, y: torch.Tensor) -> Iterator[tuple[str, torch.Tensor, dict]]:
        """One training step as (optimiser group, loss, info), in order, as ``models.cvaegan``'s: the trainer steps
        the discriminator before the autoencoder's loss is computed, so the encoder fools the updated one."""
        y = y.float()
        h = self.encode(x)
        logits = self.discriminator(h.detach())
        loss_dis = self.label_loss(logits, y)
        read = logits.argmax(1) == y.argmax(1) if self.cfg.kind == "categorical" else (logits > 0).float() == y
        yield "discriminator", loss_dis, {"loss_dis": loss_dis.item(), "dis_acc": read.float().mean().item()}

        self.discriminator.requires_grad_(False)
        self.discriminator.eval()  # no dropout in the signal the encoder follows (as the authors')
        try:
            rec = (self.decode(h, y) - x).mul(2).pow(2).mean()
            fool = self.label_loss(self.discriminator(h), self.flipped(y))
        finally:
            self.discriminator.requires_grad_(True)
            self.discriminator.train(self.training)
        lam = self.adv_lambda()
        if self.training:
            self.updates += 1
        yield "autoencoder", rec + lam * fool, {"rec": rec.item(), "fool": fool.item(), "adv_lambda": lam}


def load_fader(directory, device: str | torch.device = "cpu") -> tuple[FaderNetwork, dict]:
    from models.artifacts import load_model

    extra = ("label_rows", "label_counts")  # stored beside every image baseline's weights (``lcs train-baseline``)
    model, manifest, _ = load_model(
        directory, "fader", ARCH, lambda cfg: FaderNetwork(FaderConfig.from_json(cfg)), extra
    )
    return model.to(device), manifest
