"""The energy sampler (issue 18, after LACE: Nie et al., NeurIPS 2021): any label set's latent classifier D_attr
becomes an energy, and a request composes them with AND / OR / NOT.

With z = G_realism(z_p): E(z_p) = E_query(z) + realism_weight · (−log D_realism(z)) + prior_weight · ‖z_p‖²/2, where
for a literal E = −log p(attribute | z) (NOT: −log(1 − p)), AND sums its children's energies and OR takes their soft
minimum −log Σ exp(−E_i). Why the realism mapper: LACE needs a dense latent prior (StyleGAN's w); our σ_x = 0.1 VAE
prior has holes, which the realism mapper and its critic exist to fix.

Sampling moves the realism mapper's *input* z_p (LACE's setting: an EBM over the prior of a mapping network,
E(G(z_p)) + ‖z_p‖²/2), so every step stays on the mapper's realistic outputs; moving z itself let the classifiers be
fooled (judged hit rates 0.60 against 1.00 on Fashion-MNIST footwear; docs/compose.md). It starts from the first of a
few prior draws that already satisfies the query, then takes Adam steps; an example stops once the query's truth
(fuzzy: a literal's probability, AND the minimum, OR the maximum) reaches ``confidence`` and the realism critic
accepts it, like optimisation mode's stop rule. Edits move z itself from the image's latent, with a distance term.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from conditioning import query
from conditioning.labelset import LabelSetVersion
from conditioning.specs import SpecError
from models.latent_table import REALISM


@dataclass(frozen=True, eq=False)
class Literal:
    """One attribute of one label set, asked on (or off: ``negate``)."""

    ls: LabelSetVersion
    col: int
    negate: bool = False

    @property
    def text(self) -> str:
        return ("not " if self.negate else "") + f"{self.ls.name}.{self.ls.attr_names[self.col]}"


@dataclass(frozen=True, eq=False)
class Rows:
    """The request's own label rows y on the attributes its mask names: ``attrs=a,-b`` and ``lcs eval``'s rows."""

    ls: LabelSetVersion


@dataclass(frozen=True, eq=False)
class All:
    children: tuple


@dataclass(frozen=True, eq=False)
class Any:
    children: tuple


Formula = Literal | Rows | All | Any


@dataclass(frozen=True)
class EnergyConfig:
    """Defaults measured on the avatars bundle with a ``hair_colour`` classifier label set (docs/compose.md)."""

    space: str = "prior"  # "prior": move the realism mapper's input z_p (sampling); "latent": move z itself (edits)
    candidates: int = 1024  # prior space: the first of this many draws G(z_p) that satisfies the query starts
    steps: int = 200
    lr: float = 0.05  # Adam's step on the moved variable
    realism_weight: float = 1.0
    prior_weight: float = 0.1  # prior space: weight of ‖z_p‖²/2, the N(0, I) prior of the mapper's input
    dist_weight: float = 0.0  # latent space (edits): mean(log(1 + (z − anchor)²) / σ̄²), as in optimisation edits
    confidence: float = 0.999  # stop once the query's truth reaches this ...
    threshold: float = 0.5  # ... and the realism critic's probability exceeds this ...
    min_steps: int = 0  # ... but not before this many steps


DEFAULT = EnergyConfig()


@dataclass(eq=False)
class Plan:
    """A compiled request: the realism label set (critic, and actor for the start) and the query's formula."""

    realism: LabelSetVersion
    formula: Formula
    text: str = ""


def _log_p(lit: Literal, logits: torch.Tensor) -> torch.Tensor:
    """log p(literal | z) per row, from the label set's D_attr logits."""
    if lit.ls.kind == "categorical":
        logp = torch.log_softmax(logits, 1)
        if not lit.negate:
            return logp[:, lit.col]
        others = torch.cat([logp[:, : lit.col], logp[:, lit.col + 1 :]], 1)
        return torch.logsumexp(others, 1)
    x = logits[:, lit.col]
    return F.logsigmoid(-x if lit.negate else x)


def _rows_log_p(ls: LabelSetVersion, logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """n x K log-probabilities of the asked values (0 where the mask names nothing; categorical: one column)."""
    if ls.kind == "categorical":
        logp = torch.log_softmax(logits, 1).gather(1, y.argmax(1, keepdim=True))
        return logp * mask.any(1, keepdim=True)
    return torch.where(y > 0, F.logsigmoid(logits), F.logsigmoid(-logits)) * mask


def evaluate(
    f: Formula, z: torch.Tensor, y: torch.Tensor | None = None, mask: torch.Tensor | None = None, cache=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(energy, log truth) per row. Each label set's D_attr runs once per call (``cache``)."""
    cache = {} if cache is None else cache

    def logits(ls: LabelSetVersion) -> torch.Tensor:
        if id(ls) not in cache:
            cache[id(ls)] = ls.m.attr(z)
        return cache[id(ls)]

    if isinstance(f, Literal):
        logp = _log_p(f, logits(f.ls))
        return -logp, logp
    if isinstance(f, Rows):
        if not f.ls.attr_names:  # the realism set: nothing asked
            return torch.zeros(len(z)), torch.zeros(len(z))
        logp = _rows_log_p(f.ls, logits(f.ls), y, mask)
        return -logp.sum(1), logp.min(1).values if logp.shape[1] else torch.zeros(len(z))
    parts = [evaluate(c, z, y, mask, cache) for c in f.children]
    energies, truths = torch.stack([e for e, _ in parts]), torch.stack([t for _, t in parts])
    if isinstance(f, All):
        return energies.sum(0), truths.min(0).values
    return -torch.logsumexp(-energies, 0), truths.max(0).values


def candidates(z: torch.Tensor, k: int) -> torch.Tensor:
    """n x k x d prior draws per row, the row's own z first. Each row's extra draws are seeded by its own z, so a
    row gets the same candidates whatever it is batched with (same seed, same bytes)."""
    out = torch.empty(len(z), k, z.shape[1])
    for i, row in enumerate(z):
        seed = int.from_bytes(hashlib.blake2b(row.numpy().tobytes(), digest_size=8).digest(), "little") >> 1
        out[i] = torch.randn(k, z.shape[1], generator=torch.Generator().manual_seed(seed))
        out[i, 0] = row
    return out


@torch.no_grad()
def propose(
    plan: Plan, z: torch.Tensor, y: torch.Tensor | None, mask: torch.Tensor | None, cfg: EnergyConfig
) -> torch.Tensor:
    """Per row, the first of ``cfg.candidates`` prior draws whose G_realism(z_p) satisfies the query (rejection
    sampling from the realism mapper with a budget), else the one closest to satisfying it. Why: gradient steps alone
    leave rows where the realism mapper rarely goes (measured: 'first of 64, then steps' beats steps alone)."""
    n, k, d = len(z), cfg.candidates, z.shape[1]
    cand = candidates(z, k)
    flat = cand.reshape(n * k, d)
    rep = lambda t: None if t is None else t.repeat_interleave(k, 0)  # noqa: E731
    _, log_truth = evaluate(plan.formula, plan.realism.m.actor(flat, None), rep(y), rep(mask))
    truth = log_truth.reshape(n, k)
    ok = truth.exp() >= cfg.confidence
    pick = torch.where(ok.any(1), ok.float().argmax(1), truth.argmax(1))
    return cand[torch.arange(n), pick]


def sample(
    plan: Plan,
    z: torch.Tensor,
    y: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    cfg: EnergyConfig = DEFAULT,
    anchor: torch.Tensor | None = None,
    live: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latents that satisfy the plan, per row of ``z``: prior draws (``cfg.space`` "prior": the moved variable is
    the realism mapper's input) or starting latents ("latent": edits, with the distance to ``anchor``). Rows from
    ``live`` on are padding (``modes.pad``): they take part in every forward but are never searched or waited for.
    Returns (latents, converged, steps taken)."""
    n, live = len(z), len(z) if live is None else live
    prior_space = cfg.space == "prior"
    to_latent = (lambda v: plan.realism.m.actor(v, None)) if prior_space else (lambda v: v)  # noqa: E731
    start = z
    if prior_space and cfg.candidates > 1:
        part = lambda t: None if t is None else t[:live]  # noqa: E731
        start = torch.cat([propose(plan, z[:live], part(y), part(mask), cfg), z[live:]])
    sb2 = plan.realism.sigma_bar.to(z.dtype).pow(2)
    x = start.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg.lr)
    done = torch.arange(n) >= live
    frozen = torch.zeros_like(z)
    steps = torch.full((n,), cfg.steps)
    with torch.enable_grad():
        for step in range(cfg.steps + 1):
            latent = to_latent(x)
            energy, log_truth = evaluate(plan.formula, latent, y, mask)
            d = plan.realism.m.critic(latent, None)
            with torch.no_grad():
                ok = (log_truth.exp() >= cfg.confidence) & (torch.sigmoid(d) > cfg.threshold) & (step >= cfg.min_steps)
                newly = ok & ~done
                frozen[newly] = latent[newly].detach()
                steps[newly] = step
                done |= ok
            if done.all() or step == cfg.steps:
                break
            loss = energy + cfg.realism_weight * F.softplus(-d)
            if prior_space and cfg.prior_weight:
                loss = loss + cfg.prior_weight * 0.5 * x.pow(2).sum(1)
            if cfg.dist_weight and anchor is not None:
                loss = loss + cfg.dist_weight * (torch.log1p((latent - anchor).pow(2)) / sb2).mean(1)
            opt.zero_grad(set_to_none=True)
            (loss * ~done).sum().backward()
            opt.step()
    with torch.no_grad():
        out = torch.where(done[:, None], frozen, latent.detach())
    return out, done, steps


def realism_of(sets: dict[str, LabelSetVersion]) -> LabelSetVersion:
    """The served realism mapper (no attributes, an actor and a critic); the registry refuses anything else under
    that name, and so does this."""
    if REALISM not in sets or sets[REALISM].m.actor is None or sets[REALISM].attr_names:
        raise SpecError(
            "no_realism_labelset",
            f"energy sampling starts from the '{REALISM}' label set's mapper and needs its critic; register one",
            {"available": sorted(sets)},
        )
    return sets[REALISM]


def plan_query(text: str, sets: dict[str, LabelSetVersion], default: str | None = None) -> Plan:
    """A query (``conditioning.query``'s grammar) over the served label sets -> a Plan; SpecError (with the
    position) for syntax errors, unknown or ambiguous names. ``default``: where bare names are looked up first."""
    tree = query.parse(text)
    catalog = {name: ls.attr_names for name, ls in sets.items() if ls.attr_names and ls.m.attr is not None}
    rules: dict[str, list[str]] = {}
    for name in catalog:
        if rule := sets[name].manifest.get("rule"):
            rules.setdefault(rule, []).append(name)
    tree = query.to_nnf(query.resolve(tree, catalog, rules, default))
    return Plan(realism_of(sets), _formula(tree, sets), query.to_text(tree))


def _formula(node: query.Node, sets: dict[str, LabelSetVersion]) -> Formula:
    if isinstance(node, query.Ref):
        ls = sets[node.labelset]
        return Literal(ls, ls.attr_names.index(node.attr))
    if isinstance(node, query.Not):  # NNF: Not wraps a Ref
        lit = _formula(node.child, sets)
        return Literal(lit.ls, lit.col, negate=True)
    kids = tuple(_formula(c, sets) for c in node.children)
    return All(kids) if isinstance(node, query.And) else Any(kids)
