"""InfoGAN (Chen et al., NIPS 2016): the unsupervised baseline, a GAN whose generator is made to keep a categorical
code readable in its images, so the code's values can be matched to classes afterwards without labels in training.

On our VAE's conv backbone and image size:
- generator G(z, c): the VAE's decoder fed [z, one-hot(c_cat), c_cont]; z ~ N(0, I) (``backbone.latent_dim`` wide),
  c_cat uniform over ``n_categories``, c_cont uniform in [−1, 1]^``n_continuous``;
- discriminator D(x): conv trunk -> feature layer f(x) -> one real/fake logit (``models.cvaegan.FeatureNet``);
- Q(c|x): an MLP head on D's feature layer (the trunk is shared, as the authors'), its hidden layer batch-normalised
  (as theirs): logits of c_cat and a Gaussian N(μ, σ²) per continuous code, σ = 1 or learned.
Losses, with the information term I = CE(Q's logits, c_cat) + Σ Gaussian NLL(c_cont) = −(the mutual-information lower
bound) + H(c), a constant:
- D: BCE(D(x) -> 1) + BCE(D(G(z, c)) -> 0) + λ·I on the same (detached) fakes, Q's head frozen: the shared trunk
  learns the features Q reads, as the authors' released code adds the term to the discriminator's loss too;
- G and Q: BCE(D(G(z, c)) -> 1) (non-saturating) + λ·I, D frozen.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from models.cvaegan import FeatureNet
from models.vae import Decoder, HasBackbone, VAEConfig

ARCH = "conv-infogan-v1"


@dataclass(frozen=True)
class InfoGANConfig(HasBackbone):
    backbone: VAEConfig  # image shape and widths; latent_dim is the size of the noise z
    n_categories: int = 10  # values of the categorical code (Fashion-MNIST's 10 classes)
    n_continuous: int = 2  # continuous codes, uniform in [-1, 1]
    info_weight: float = 1.0  # λ: the authors' weight for discrete codes
    learn_sigma: bool = False  # Q's σ of the continuous codes: fixed at 1 (as the authors' released code) or learned
    feature_dim: int = 256  # width of D's feature layer and of Q's hidden layer


class InfoGAN(nn.Module):
    adam_betas = (0.5, 0.999)  # DCGAN's Adam setting for adversarial games, read by ``lcs train-baseline``

    def __init__(self, cfg: InfoGANConfig):
        super().__init__()
        b, f, k, m = cfg.backbone, cfg.feature_dim, cfg.n_categories, cfg.n_continuous
        if k < 2:
            raise ValueError("InfoGAN needs a categorical code of at least 2 values")
        self.cfg = cfg
        self.generator = Decoder(replace(b, latent_dim=b.latent_dim + k + m))
        self.discriminator = FeatureNet(b, f, 1)
        # batch norm, as the authors': D's trunk at initialisation passes on little of an image's variation (Q's logits
        # varied by 1e-3 across images whose pixels varied by 0.4), and normalising over the batch lets Q read the code
        # from the first steps rather than once D's own training has grown the trunk's gain
        q_out = k + m * (2 if cfg.learn_sigma else 1)
        self.q = nn.Sequential(nn.Linear(f, f), nn.BatchNorm1d(f), nn.LeakyReLU(0.2), nn.Linear(f, q_out))

    def codes(
        self, n: int, generator: torch.Generator | None = None, category: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z, c_cat indices, c_cont) for n images, drawn on the CPU; ``category`` fixes c_cat."""
        z = torch.randn(n, self.cfg.backbone.latent_dim, generator=generator)
        if category is None:
            category = torch.randint(self.cfg.n_categories, (n,), generator=generator)
        cont = torch.rand(n, self.cfg.n_continuous, generator=generator) * 2 - 1
        return z, category.long().cpu(), cont

    def generate(self, z: torch.Tensor, category: torch.Tensor, cont: torch.Tensor) -> torch.Tensor:
        """G(z, c): images in [0, 1]."""
        one_hot = F.one_hot(category, self.cfg.n_categories).to(z.dtype)
        return self.generator(torch.cat([z, one_hot, cont.to(z.dtype)], 1))

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, category: torch.Tensor | None = None
    ) -> torch.Tensor:
        """n images; ``category`` (n code indices) fixes the categorical code, None draws it."""
        device = next(self.parameters()).device
        return self.generate(*(t.to(device) for t in self.codes(n, generator, category)))

    def posterior(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Q(c|x) from D's features: (c_cat logits, μ, log σ) of the continuous codes (log σ = 0 unless learned)."""
        k, m = self.cfg.n_categories, self.cfg.n_continuous
        out = self.q(features).float()
        mu = out[:, k : k + m]
        log_sigma = out[:, k + m :].clamp(-5, 2) if self.cfg.learn_sigma else torch.zeros_like(mu)
        return out[:, :k], mu, log_sigma

    def info(self, features: torch.Tensor, category: torch.Tensor, cont: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(I, Q's accuracy on c_cat): I is the negative mutual-information bound up to constants, per image."""
        logits, mu, log_sigma = self.posterior(features)
        nll = 0.5 * ((cont - mu) * torch.exp(-log_sigma)).pow(2) + log_sigma
        acc = (logits.argmax(1) == category).float().mean().item()
        return F.cross_entropy(logits, category) + nll.sum(1).mean(), acc

    @torch.no_grad()
    def code_of(self, x: torch.Tensor) -> torch.Tensor:
        """Q's most likely categorical code for images in [0, 1], what ``match_codes`` maps to classes; in eval mode, so
        an image's code does not depend on the batch it comes in."""
        was = self.training
        self.eval()
        try:
            return self.posterior(self.discriminator(x)[1])[0].argmax(1)
        finally:
            self.train(was)

    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        # Q's head steps with G: both minimise the same term λ·I on the same forward pass, and the adversarial term
        # never reaches Q's head, so one step on G's loss trains both (the authors maximise the bound over G and Q
        # together); Q so reads the generator's current samples, and the trainer needs no third step.
        return {
            "discriminator": list(self.discriminator.parameters()),
            "generator": list(self.generator.parameters()) + list(self.q.parameters()),
        }

    def step_losses(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Iterator[tuple[str, torch.Tensor, dict]]:
        """One training step as (optimiser group, loss, info), in order, as ``models.cvaegan``'s: the trainer steps D
        before G's loss is computed. Unsupervised: ``y`` is taken for the trainer's interface and never read."""
        lam, bce = self.cfg.info_weight, F.binary_cross_entropy_with_logits
        z, category, cont = (t.to(x.device) for t in self.codes(len(x)))
        x_g = self.generate(z, category, cont)

        d_real, _ = self.discriminator(x)
        d_fake, f_fake = self.discriminator(x_g.detach())
        loss_d = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
        self.q.requires_grad_(False)
        try:
            info_d, _ = self.info(f_fake, category, cont)
        finally:
            self.q.requires_grad_(True)
        d_acc = torch.cat([d_real > 0, d_fake < 0]).float().mean().item()
        yield "discriminator", loss_d + lam * info_d, {"loss_d": loss_d.item(), "d_acc": d_acc}

        self.discriminator.requires_grad_(False)
        try:
            logit, features = self.discriminator(x_g)
            adv = bce(logit, torch.ones_like(logit))
            info, q_acc = self.info(features, category, cont)
        finally:
            self.discriminator.requires_grad_(True)
        yield "generator", adv + lam * info, {"adv": adv.item(), "info": info.item(), "q_acc": q_acc}


def match_codes(pred_codes: torch.Tensor, labels: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, float]:
    """The one-to-one map code -> class under which most codes read as their image's class, and that accuracy.

    ``pred_codes`` and ``labels`` are index tensors of the same images (``code_of`` and the true classes). Exact, by
    dynamic programming over the set of classes already taken (codes · 2^classes · classes steps: instant for 10
    classes, and no scipy). Returns ``mapping`` (mapping[code] = its class; −1 for a code left without one when there
    are more codes than classes), so ``mapping[model.code_of(x)]`` classifies images."""
    if n_classes > 16:
        raise ValueError(f"match_codes enumerates subsets of the classes: {n_classes} classes are too many")
    pred, lab = pred_codes.long().flatten(), labels.long().flatten()
    n_codes = max(int(pred.max()) + 1 if len(pred) else 0, n_classes)
    counts = torch.zeros(n_codes, n_classes, dtype=torch.long)
    counts.index_put_((pred, lab), torch.ones_like(pred), accumulate=True)
    best = {0: (0, ())}  # classes taken (bitmask) -> (images matched, class of each code so far)
    for row in counts.tolist():
        nxt: dict[int, tuple[int, tuple]] = {}
        for taken, (score, assigned) in best.items():
            free = [(score + row[c], c, taken | 1 << c) for c in range(n_classes) if not taken >> c & 1]
            for s, c, t in [(score, -1, taken), *free]:
                if t not in nxt or s > nxt[t][0]:
                    nxt[t] = (s, (*assigned, c))
        best = nxt
    score, assigned = max(best.values())
    return torch.tensor(assigned, dtype=torch.long), score / max(len(pred), 1)


def load_infogan(directory, device: str | torch.device = "cpu") -> tuple[InfoGAN, dict, dict[str, torch.Tensor]]:
    """-> (model, manifest, extra tensors stored beside the weights: ``label_rows``/``label_counts`` as every image
    baseline's, and ``code_class``, the code -> class map, where ``lcs train-baseline`` fitted one)."""
    from models.artifacts import load_model

    extra = ("label_rows", "label_counts", "code_class")
    model, manifest, tensors = load_model(
        directory, "infogan", ARCH, lambda cfg: InfoGAN(InfoGANConfig.from_json(cfg)), extra
    )
    return model.to(device), manifest, {k: tensors[k] for k in extra if k in tensors}
