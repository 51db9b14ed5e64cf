"""Selection among latent candidates (``modes.select``): the actor on K prior draws per row (samples) or on K starts
around an image's latent (edits), kept by the critic and D_attr; K = 1 is the plain actor."""

import torch

from conditioning import edits, energy, modes
from conditioning.labelset import LabelSetVersion
from evaluation.samplers import load_labelset
from models.latent import LatentConfig, LatentMappers

D = 4


def planted(kind: str = "binary") -> LabelSetVersion:
    """Hand-built mappers: the actor is the identity (gate shut), the critic accepts everything, and D_attr reads
    attribute ``a`` on exactly where z[0] > 0 (categorical: class ``a`` there, class ``b`` elsewhere)."""
    names = ["a", "b"]
    m = LatentMappers(LatentConfig(latent_dim=D, attr_names=names, kind=kind, width=4, depth=1, label_embed=2))
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.actor.net[-1].bias[D:] = -40.0  # gate logits: G(z, y) = z
        m.critic.net[-1].bias.fill_(10.0)  # D = σ(10): real
        m.attr.net[0].weight[0, 0] = 1.0  # h = leaky(z[0]), same sign
        m.attr.net[-1].weight[0, 0] = 100.0  # logit a = 100 h
        if kind == "categorical":
            m.attr.net[-1].weight[1, 0] = -100.0  # logit b = −100 h
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    return LabelSetVersion("planted", "v1", m, {}, table, torch.full((D,), 0.5))


def test_select_keeps_the_first_accepted_candidate_else_the_nearest():
    ls = planted()
    z = torch.tensor([[-1.0, 2.0, 0.5], [-3.0, -0.1, -2.0], [4.0, 1.0, -1.0]])[..., None] * torch.eye(D)[0]
    y, mask = torch.tensor([[1.0, 0.0]] * 3), torch.tensor([[True, False]] * 3)
    out, ok = modes.select(ls.m, z, y, mask)
    assert torch.equal(out[:, 0], torch.tensor([2.0, -0.1, 4.0])) and ok.tolist() == [True, False, True]
    # a cost picks among the accepted ones (edits: the distance to the image's latent)
    out, ok = modes.select(ls.m, z, y, mask, cost=torch.tensor([[0.0, 5.0, 1.0], [0.0, 0.0, 0.0], [3.0, 2.0, 1.0]]))
    assert torch.equal(out[:, 0], torch.tensor([0.5, -0.1, 1.0])) and ok.tolist() == [True, False, True]
    # asked off: the first candidate D_attr reads without it
    out, _ = modes.select(ls.m, z, torch.zeros(3, 2), mask)
    assert torch.equal(out[:, 0], torch.tensor([-1.0, -3.0, -1.0]))
    # categorical: the asked class
    out, ok = modes.select(planted("categorical").m, z, torch.tensor([[0.0, 1.0]] * 3), mask)
    assert torch.equal(out[:, 0], torch.tensor([-1.0, -3.0, -1.0])) and ok.all()


def test_actor_candidates_are_the_rows_own_draws_and_k1_is_the_plain_actor():
    ls = planted()
    z, y, mask = modes.draw(ls, {"a": 1}, 20, D, torch.Generator().manual_seed(0))
    one = modes.latents("actor", ls, z, y, mask, candidates=1)
    assert torch.equal(one.z, modes.actor(ls, z, y, mask)) and one.converged.all()
    out, ok = modes.latents("actor", ls, z, y, mask, candidates=8)
    cand = energy.candidates(z, 8)
    first = (cand[..., 0] > 0).float().argmax(1)
    assert torch.equal(out[ok], cand[torch.arange(20), first][ok])
    assert ok.tolist() == (cand[..., 0] > 0).any(1).tolist() and (out[ok, 0] > 0).all()
    assert not torch.equal(out, one.z)  # some rows' own draw lacked the attribute and another was kept


def test_actor_edits_keep_the_accepted_start_nearest_the_image():
    ls = planted()
    z0 = torch.tensor([[-0.05, 0.0, 0.0, 0.0], [-0.5, 1.0, 0.0, 0.0], [-30.0, 0.0, 0.0, 0.0]])
    got = edits.edit(ls, z0, {"a": 1}, candidates=64)
    starts = z0[:, None] + ls.sigma_bar * energy.candidates(z0, 64)
    starts[:, 0] = z0
    dist = (torch.log1p((starts - z0[:, None]).pow(2)) / ls.sigma_bar.pow(2)).mean(2)
    best = dist.masked_fill(starts[..., 0] <= 0, torch.inf).argmin(1)
    assert got.converged.tolist() == [True, True, False]  # 60 σ̄ away: no start reaches it
    assert torch.equal(got.z[:2], starts[torch.arange(2), best[:2]]) and (got.z[:2, 0] > 0).all()
    plain = edits.edit(ls, z0, {"a": 1})
    assert torch.equal(plain.z, z0) and plain.converged.all() and torch.equal(plain.target, got.target)


def test_same_seed_same_latents_whatever_the_batch_with_candidates(service_bundle):
    """A row's selected latent and its converged flag do not depend on its batch-mates, for samples and edits."""
    ls = load_labelset(service_bundle, "category")
    z, y, mask = modes.draw(ls, {"sandal": 1}, 40, ls.m.cfg.latent_dim, torch.Generator().manual_seed(0))
    alone = [modes.latents("actor", ls, z[i : i + 1], y[i : i + 1], mask[i : i + 1], candidates=8) for i in range(3)]
    together = modes.latents("actor", ls, z, y, mask, candidates=8)
    shuffled = modes.latents("actor", ls, torch.cat([z[20:33], z[:3]]), y[:16], mask[:16], candidates=8)
    assert torch.equal(torch.cat([a.z for a in alone]), together.z[:3])
    assert torch.equal(torch.cat([a.converged for a in alone]), together.converged[:3])
    assert torch.equal(shuffled.z[13:], together.z[:3])
    assert not torch.equal(together.z, modes.latents("actor", ls, z, y, mask).z)  # selection changed some rows
    e_alone = torch.cat([edits.edit(ls, z[i : i + 1], {"bag": 1}, candidates=8).z for i in range(3)])
    assert torch.equal(e_alone, edits.edit(ls, z, {"bag": 1}, candidates=8).z[:3])
