"""Dynamic batcher and engine padding: one decoder forward per batch, 429 on a full queue, 504 past the deadline,
and results that do not depend on what a request was batched with."""

import asyncio
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conditioning.backbone import Backbone
from conditioning.images import to_uint8
from conditioning.modes import PAD_ROWS, pad
from service.batcher import Batcher, SampleWork
from service.errors import ApiError
from service.metrics import Metrics


class SlowBackbone:
    """Counts decoder calls; decoding takes ``delay`` seconds; the 'image' of z is its first value (/255, one pixel)."""

    def __init__(self, delay: float = 0.0):
        self.delay, self.decode_rows = delay, []

    def decode(self, z):
        time.sleep(self.delay)
        self.decode_rows.append(len(z))
        return z[:, :1].reshape(len(z), 1, 1, 1) / 255


# a label-set version whose actor adds 1 and whose critic says 0.5, run through the real conditioning modes
FAKE_LS = SimpleNamespace(
    m=SimpleNamespace(
        actor=lambda z, y: z + 1, critic=lambda z, y: torch.zeros(len(z)), cfg=SimpleNamespace(n_labels=0)
    )
)


def work(n: int, value: float, ls=None, mode="prior") -> SampleWork:
    return SampleWork(ls, mode, torch.full((n, 4), value), torch.zeros(n, 0), torch.zeros(n, 0, dtype=torch.bool))


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_one_decoder_forward_and_get_their_own_rows():
    eng = SlowBackbone()

    async def go():
        b = Batcher(eng, Metrics(), max_batch=64, max_wait_ms=50)
        b.start()
        fake_ls = FAKE_LS
        results = await asyncio.gather(
            *[
                b.sample(work(i + 1, float(i), fake_ls if i % 2 else None, "actor" if i % 2 else "prior"), 5)
                for i in range(6)
            ]
        )
        await b.stop()
        return results

    results = run(go())
    assert eng.decode_rows == [21]  # 1 + 2 + ... + 6 rows, one forward
    for i, r in enumerate(results):
        assert r.images.shape[0] == i + 1
        assert np.all(
            r.images == (i + 1 if i % 2 else i)
        )  # actor rows went through the mapper (+1), prior rows did not
        assert r.batch_samples == 21


def test_batches_respect_max_batch():
    eng = SlowBackbone()

    async def go():
        b = Batcher(eng, Metrics(), max_batch=8, max_wait_ms=30)
        b.start()
        await asyncio.gather(*[b.sample(work(3, 0.0), 5) for _ in range(6)])
        await b.stop()

    run(go())
    assert sum(eng.decode_rows) == 18 and max(eng.decode_rows) <= 8


def test_full_queue_gives_429_with_retry_after():
    async def go():
        b = Batcher(SlowBackbone(delay=0.3), Metrics(), max_batch=2, max_wait_ms=1, max_queue=4)
        b.start()
        first = asyncio.ensure_future(b.sample(work(2, 0.0), 5))
        await asyncio.sleep(0.05)  # first batch is decoding; the queue fills behind it
        queued = [asyncio.ensure_future(b.sample(work(2, 0.0), 5)) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(ApiError) as e:
            await b.sample(work(2, 0.0), 5)
        await asyncio.gather(first, *queued)
        await b.stop()
        return e.value

    e = run(go())
    assert (e.status, e.code, e.headers["Retry-After"]) == (429, "queue_full", "1")


def test_deadline_gives_504_and_skips_the_rows():
    eng = SlowBackbone(delay=0.3)

    async def go():
        b = Batcher(eng, Metrics(), max_batch=1, max_wait_ms=1)
        b.start()
        slow = asyncio.ensure_future(b.sample(work(1, 0.0), 5))
        await asyncio.sleep(0.05)
        with pytest.raises(ApiError) as e:
            await b.sample(work(1, 1.0), 0.1)  # waits behind a 0.3 s batch
        await slow
        await asyncio.sleep(0.1)
        await b.stop()
        return e.value

    e = run(go())
    assert (e.status, e.code) == (504, "deadline_exceeded")
    assert eng.decode_rows == [1]  # the expired request was never decoded


def test_padded_forwards_do_not_depend_on_the_batch(service_bundle):
    """Why PAD_ROWS exists: a row's bytes must not change with what it was batched with."""
    bb = Backbone(service_bundle, "cpu", 1)
    z = torch.randn(40, bb.latent_dim, generator=torch.Generator().manual_seed(0))
    alone = np.concatenate([to_uint8(bb.decode(z[i : i + 1])) for i in range(5)])
    together = to_uint8(bb.decode(z))[:5]
    shuffled = to_uint8(bb.decode(torch.cat([z[20:33], z[:5]])))[13:]
    assert np.array_equal(alone, together) and np.array_equal(alone, shuffled)
    assert len(pad(z[:3])) == PAD_ROWS and len(pad(z)) == 40
