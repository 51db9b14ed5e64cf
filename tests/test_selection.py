"""Selection among latent candidates (``modes.select``): the actor on K prior draws per row (samples) or on K starts
around an image's latent (edits), kept by the critic and D_attr; K = 1 is the plain actor."""

import math

import pytest
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
    one = modes.latents("actor", ls, z, y, mask, candidates=1)  # the identity: re-stepping moves nothing
    assert torch.equal(one.z, modes.actor(ls, z, y, mask)) and one.converged.tolist() == (z[:, 0] > 0).tolist()
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
    plain = edits.edit(ls, z0, {"a": 1})  # the identity's step is nil at any length: reported unconverged
    assert torch.equal(plain.z, z0) and not plain.converged.any() and torch.equal(plain.target, got.target)


def short_stepping() -> LabelSetVersion:
    """The planted label set with an actor that goes half way from z[0] to 0.5: G(z)[0] = (z[0] + 0.5) / 2."""
    ls = planted()
    with torch.no_grad():
        ls.m.actor.net[-1].bias[D] = 0.0  # gate 1/2 on z[0]
        ls.m.actor.net[-1].bias[0] = 0.5  # towards 0.5
    return ls


def test_actor_edits_take_the_shortest_step_length_the_critics_accept():
    ls = short_stepping()
    z0 = torch.tensor([[-0.05, 0.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [-9.0, 0.0, 0.0, 0.0], [0.3, 1.0, 0.0, 0.0]])
    step = 0.5 * (0.5 - z0[:, 0])
    got = edits.edit(ls, z0, {"a": 1})
    # a = 1 from z[0] > 0: the actor's own step (s = 1) for row 0, s = 1.5 for -1 (-1 + 1.125), s = 2 for -9;
    # row 3 already has it (target = its reading): G moves it to 0.4, accepted at once
    assert got.converged.all()
    assert torch.allclose(got.z[:, 0], z0[:, 0] + torch.tensor([1.0, 1.5, 2.0, 1.0]) * step)
    assert torch.equal(got.z[:, 1:], z0[:, 1:])
    # asked off where the image is without it: the actor's own step (towards 0.5, still below 0) is accepted as is
    # (at the samples' bar: below 0 the planted logit is 20 z, so -0.25 reads off at 0.993)
    off = edits.edit(ls, z0[1:3], {"a": 0}, accept=modes.OptimizeConfig(attr_confidence=0.9))
    assert off.converged.all() and torch.allclose(off.z, ls.m.actor(z0[1:3], off.target))
    # with candidates the row's own step still comes first when a length of it is accepted
    assert torch.equal(edits.edit(ls, z0, {"a": 1}, candidates=8).z, got.z)


def test_actor_edits_are_accepted_only_where_d_attr_is_sure_and_the_bar_is_a_setting():
    """Edits keep the shortest accepted step, which lands where D_attr has only just flipped: they accept at
    ``EDIT_ACCEPT`` (0.999), samples at 0.9. The planted D_attr's logit is 100 z[0]."""
    ls = short_stepping()
    z0 = torch.tensor([[-0.4, 0.0, 0.0, 0.0]])  # the actor's own step reaches z[0] = 0.05: p = σ(5) = 0.993
    strict = edits.edit(ls, z0, {"a": 1})
    assert edits.EDIT_ACCEPT.attr_confidence == 0.999 and strict.converged.all()
    assert torch.allclose(strict.z[:, 0], torch.tensor([-0.4 + 1.25 * 0.45]))  # the next length: 0.1625
    assert torch.sigmoid(ls.m.attr(strict.z))[0, 0] >= 0.999
    loose = edits.edit(ls, z0, {"a": 1}, accept=modes.OptimizeConfig(attr_confidence=0.9))
    assert loose.converged.all() and torch.allclose(loose.z[:, 0], torch.tensor([0.05]))


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


def test_samples_the_critics_reject_are_re_stepped_towards_their_labels():
    ls = short_stepping()
    z, y, mask = modes.draw(ls, {"a": 1}, 20, D, torch.Generator().manual_seed(0))
    g = modes.actor(ls, z, y, mask)  # half way to 0.5: rows from z[0] < -0.5 stay without a
    got = modes.latents("actor", ls, z, y, mask)
    rejected = g[:, 0] <= 0
    assert rejected.any() and (~rejected).any() and got.converged.all() and (got.z[:, 0] > 0).all()
    assert torch.equal(got.z[~rejected], g[~rejected])  # accepted samples are served as the actor drew them
    # a rejected one: the actor's step from its own sample at the shortest length D_attr reads a at ≥ 0.9 (100 z ≥ ln 9)
    step, edge = 0.5 * (0.5 - g[rejected, 0]), math.log(9) / 100
    lengths = [
        next(s for s in modes.STEP_SCALES if x + s * d >= edge) for x, d in zip(g[rejected, 0], step, strict=True)
    ]
    first = torch.tensor(lengths)
    assert 1.25 in lengths  # some need a longer step than the actor's own
    assert torch.allclose(got.z[rejected, 0], g[rejected, 0] + first * step, atol=1e-6)
    # without a D_attr (a realism label set) G(z, y) is served as it is
    ls.m.attr = None
    assert torch.equal(modes.latents("actor", ls, z, y, mask).z, g)


def test_optimisation_starts_from_what_the_actor_mode_serves():
    """Optimisation (samples and edits) warm-starts from the actor's re-stepped sample or lengthened edit: where
    that already passes the stop rule, optimisation returns it unmoved."""
    ls = short_stepping()
    z0 = torch.tensor([[-0.05, 0.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [-9.0, 0.0, 0.0, 0.0]])
    actor, optimised = edits.edit(ls, z0, {"a": 1}), edits.edit(ls, z0, {"a": 1}, "optimize")
    assert optimised.converged.all() and torch.equal(optimised.z, actor.z)
    z, y, mask = modes.draw(ls, {"a": 1}, 20, D, torch.Generator().manual_seed(0))
    served, optimised = modes.latents("actor", ls, z, y, mask), modes.latents("optimize", ls, z, y, mask)
    assert optimised.converged.all() and torch.equal(optimised.z, served.z)


def test_a_versions_resolve_draws_what_specs_resolve_draws_and_keeps_a_bounded_match_cache(monkeypatch):
    """The request path's label rows: the matching rows are kept per spec (no rematch per request), the draws stay
    what ``specs.resolve`` gives for the same generator, and the kept specs are bounded."""
    from conditioning import labelset
    from conditioning.specs import SpecError, resolve

    names = ["Smiling", "Eyeglasses", "Wearing_Hat"]
    table = torch.tensor([[1, 0, 0]] * 30 + [[1, 0, 1]] * 10 + [[0, 1, 0]] * 5).float()
    m = LatentMappers(LatentConfig(latent_dim=D, attr_names=names, kind="binary", width=4, depth=1, label_embed=2))
    ls = LabelSetVersion("planted", "v1", m, {}, table, torch.ones(D))
    for spec in ({"Smiling": 1}, {"Wearing_Hat": 0, "Smiling": 1}, {}):
        for _ in range(2):  # the second from the kept match
            got = ls.resolve(spec, 50, torch.Generator().manual_seed(3))
            want = resolve(spec, names, ls.rows, 50, torch.Generator().manual_seed(3), counts=ls.counts)
            assert torch.equal(got, want)
    assert len(ls._matched) == 3
    with pytest.raises(SpecError):
        ls.resolve({"Smiling": 1, "Eyeglasses": 1}, 1, torch.Generator())
    unseen = ls.resolve({"Smiling": 1, "Eyeglasses": 1}, 8, torch.Generator().manual_seed(0), allow_unseen=True)
    assert (unseen[:, :2] == 1).all()
    monkeypatch.setattr(labelset, "MATCHED_KEPT", 2)
    ls.resolve({"Eyeglasses": 0}, 1, torch.Generator())
    assert len(ls._matched) == 1  # full: emptied, then this one kept


def test_restep_moves_only_the_rows_the_critics_rejected():
    ls = planted()
    z = torch.tensor([[2.0], [-3.0], [0.5]]) * torch.eye(D)[0]
    y, mask = torch.tensor([[1.0, 0.0]] * 3), torch.tensor([[True, False]] * 3)
    got = modes.Latents(z, torch.tensor([True, False, True]))
    out = modes.restep(ls, got, y, mask)
    assert torch.equal(out.z[[0, 2]], z[[0, 2]]) and out.converged[[0, 2]].all()
    # the rejected row alone gives what it gives in the batch: a row's result is its own
    alone = modes.restep(ls, modes.Latents(z[1:2], torch.tensor([False])), y[1:2], mask[1:2])
    assert torch.equal(out.z[1:2], alone.z) and torch.equal(out.converged[1:2], alone.converged)
    untouched = modes.Latents(z, torch.ones(3, dtype=torch.bool))
    assert modes.restep(ls, untouched, y, mask) is untouched
