"""Dynamic batcher and engine padding: one decoder forward per batch, 429 on a full queue or an estimated wait over
budget, 504 past the deadline, no work for clients that left, and results that do not depend on what a request was
batched with."""

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conditioning import backbone
from conditioning.backbone import Backbone
from conditioning.images import to_uint8
from conditioning.modes import PAD_ROWS, pad
from service.batcher import EWMA_WEIGHT, INITIAL_SEC_PER_SAMPLE, Batcher, SampleWork
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
        actor=lambda z, y: z + 1,
        critic=lambda z, y: torch.zeros(len(z)),
        attr=None,  # no attributes: the actor's sample is served as drawn (a realism label set)
        cfg=SimpleNamespace(n_labels=0),
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


def test_a_lone_client_never_waits_for_company():
    """Nothing else in flight: a free model thread takes the one request at once, however long max_wait_ms is."""
    eng = SlowBackbone()

    async def go():
        b = Batcher(eng, Metrics(), max_batch=64, max_wait_ms=2000)
        b.start()
        took = []
        for i in range(3):
            t0 = time.monotonic()
            await b.sample(work(1, float(i)), 5)
            took.append(time.monotonic() - t0)
        await b.stop()
        return took

    took = run(go())
    assert max(took) < 0.5, took  # a wait for company would take 2 s
    assert eng.decode_rows == [1, 1, 1]


def test_clients_just_answered_are_waited_for():
    """Four clients in a loop, coming back 0-30 ms after their answers: each batch waits for all four (they were in
    flight before), rather than taking whoever is back first and leaving the rest for the next batch."""
    eng = SlowBackbone(delay=0.05)

    async def client(b, i):
        for _ in range(3):
            await b.sample(work(1, float(i)), 5)
            await asyncio.sleep(0.01 * i)

    async def go():
        b = Batcher(eng, Metrics(), max_batch=64, max_wait_ms=500)
        b.start()
        t0 = time.monotonic()
        await asyncio.gather(*[client(b, i) for i in range(4)])
        took = time.monotonic() - t0
        await b.stop()
        return took

    took = run(go())
    assert eng.decode_rows == [4, 4, 4]
    assert took < 1.0, took  # three batches of 50 ms and waits of ~30 ms, not the 500 ms cap


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


SHIPPED_AVATARS = Path(__file__).resolve().parents[1] / "service" / "bundles" / "avatars"


@pytest.mark.parametrize(
    "which,precision,threads",
    [("tiny", "fp32", 1), ("tiny", "bf16", 1), ("tiny", "fp32", 2), ("avatars", "fp32", 1), ("avatars", "fp32", 2)],
)
def test_a_rows_bytes_do_not_depend_on_its_batch(service_bundle, which, precision, threads):
    """Same seed, same bytes: a row decodes alike alone, in any batch, in any position, at the padding the backbone
    measured for this engine and thread count (on the shipped VAE too: its layer shapes take other kernels)."""
    before = torch.get_num_threads()
    try:
        bb = Backbone(service_bundle if which == "tiny" else SHIPPED_AVATARS, "cpu", threads, precision)
        assert bb.engine == f"cpu/{precision}" and 1 <= bb.decode_rows <= PAD_ROWS
        z = torch.randn(70, bb.latent_dim, generator=torch.Generator().manual_seed(3))
        alone = np.concatenate([to_uint8(bb.decode(z[i : i + 1])) for i in range(5)])
        for n in (2, 3, 5, 7, 16, 70):  # rows 0-4 first in batches of n
            assert np.array_equal(to_uint8(bb.decode(z[:n]))[:5], alone[:n]), (n, bb.decode_rows)
        shuffled = to_uint8(bb.decode(torch.cat([z[20:33], z[:5]])))[13:]  # last in a batch of 18
        assert np.array_equal(shuffled, alone), bb.decode_rows
    finally:
        torch.set_num_threads(before)
    assert len(pad(z[:3])) == PAD_ROWS and len(pad(z)) == 72 and len(pad(z, 1)) == 70


@pytest.mark.parametrize("which", ["tiny", "avatars"])
def test_the_bf16_engine_runs_a_bf16_copy_with_autocasts_bytes(service_bundle, which):
    """The bf16 engine decodes and encodes with weights cast once (not by autocast on every call): the same bytes as
    autocast on the stored weights, which stay as stored (the decoder's fingerprint)."""
    before = torch.get_num_threads()
    try:
        bb = Backbone(service_bundle if which == "tiny" else SHIPPED_AVATARS, "cpu", 1, "bf16")
        assert next(bb.net.parameters()).dtype == torch.bfloat16 and next(bb.vae.parameters()).dtype == torch.float32
        z = torch.randn(20, bb.latent_dim, generator=torch.Generator().manual_seed(5))
        images = bb.decode(z)
        assert torch.equal(images, backbone.decode(bb.vae, z, bb.device, precision="bf16", rows=bb.decode_rows))
        uint8 = torch.from_numpy(to_uint8(images)).permute(0, 3, 1, 2)  # N x C x H x W, as the routes give it
        assert torch.equal(bb.encode(uint8), backbone.encode(bb.vae, uint8, bb.device, precision="bf16")[0])
        assert bb.live_decoder_fingerprint() == bb.decoder_fingerprint
    finally:
        torch.set_num_threads(before)


def test_the_cpu_decodes_a_large_batch_in_forwards_of_32_rows_with_the_same_bytes():
    """Two workers side by side decoded 64 rows 20% faster in two forwards than in one (their shared cache): the CPU
    decodes in chunks of ``backbone.CPU_DECODE_CHUNK`` rows, which a row's bytes do not depend on."""
    before = torch.get_num_threads()
    try:
        bb = Backbone(SHIPPED_AVATARS, "cpu", 1, "auto")
        rows: list[int] = []
        hook = bb.net.decoder.conv.register_forward_pre_hook(lambda _, args: rows.append(len(args[0])))
        z = torch.randn(70, bb.latent_dim, generator=torch.Generator().manual_seed(4))
        images = bb.decode(z)
        hook.remove()
        assert rows == [32, 32, max(6, bb.decode_rows)]
        picked = [0, 31, 32, 63, 64, 69]  # each chunk's first and last rows: the same bytes as each decoded alone
        assert torch.equal(images[picked], torch.cat([bb.decode(z[i : i + 1]) for i in picked]))
    finally:
        torch.set_num_threads(before)


class CountingBackbone(SlowBackbone):
    """SlowBackbone that records how many decodes ran at once."""

    def __init__(self, delay: float):
        super().__init__(delay)
        self.lock, self.now, self.most = threading.Lock(), 0, 0

    def decode(self, z):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            return super().decode(z)
        finally:
            with self.lock:
                self.now -= 1


@pytest.mark.parametrize("workers", [1, 2])
def test_model_workers_run_that_many_batches_at_once_and_share_the_estimate(workers):
    eng = CountingBackbone(delay=0.2)

    async def go():
        b = Batcher(eng, Metrics(), max_batch=2, workers=workers)
        b.sec_per_sample = 0.01
        waits = [b.estimated_wait(8)]
        b.start()
        results = await asyncio.gather(*[b.sample(work(2, float(i)), 5) for i in range(4)])
        await b.stop()
        return results, waits

    results, waits = run(go())
    assert eng.most == workers and sorted(eng.decode_rows) == [2, 2, 2, 2]
    assert [int(r.images[0, 0, 0, 0]) for r in results] == [0, 1, 2, 3]  # each request its own rows
    assert waits[0] == pytest.approx(0.08 / workers)  # 8 samples at 10 ms, spread over the model threads


def test_a_rows_bytes_do_not_depend_on_the_model_thread_that_decodes_it(service_bundle):
    """With one torch thread an op runs on its calling thread: two model threads decoding at once give the bytes
    one thread gives (what lets --model-workers keep same seed, same bytes)."""
    from concurrent.futures import ThreadPoolExecutor

    before = torch.get_num_threads()
    try:
        bb = Backbone(service_bundle, "cpu", 1, "fp32")
        zs = [torch.randn(n, bb.latent_dim, generator=torch.Generator().manual_seed(n)) for n in (1, 3, 8, 16) * 4]
        alone = [to_uint8(bb.decode(z)) for z in zs]
        with ThreadPoolExecutor(2) as pool:
            together = list(pool.map(lambda z: to_uint8(bb.decode(z)), zs))
        assert all(np.array_equal(a, b) for a, b in zip(alone, together, strict=True))
    finally:
        torch.set_num_threads(before)


class GatedBackbone(SlowBackbone):
    """Decoding waits for ``release``, so a test knows exactly what is queued behind the running batch; decodes with
    ``inner`` when given (a real backbone), else as SlowBackbone."""

    def __init__(self, inner=None):
        super().__init__()
        self.inner, self.entered, self.release = inner, threading.Event(), threading.Event()

    def decode(self, z):
        self.entered.set()
        self.release.wait(10)
        if self.inner is None:
            return super().decode(z)
        self.decode_rows.append(len(z))
        return self.inner.decode(z)


def client(left: asyncio.Event):
    """A request's ASGI receive channel: its (empty) GET body, then http.disconnect once ``left`` is set."""
    messages = iter([{"type": "http.request", "body": b"", "more_body": False}])

    async def receive():
        if (m := next(messages, None)) is not None:
            return m
        await left.wait()
        return {"type": "http.disconnect"}

    return receive


def rejected(m: Metrics, reason: str) -> float:
    return m.registry.get_sample_value("lcs_rejected_total", {"reason": reason}) or 0


async def enqueue(b: Batcher, *ns: int, **kw) -> list[asyncio.Future]:
    """Requests of these sizes, admitted and waiting (the batcher is not started, so nothing drains)."""
    tasks = [asyncio.ensure_future(b.sample(work(n, 0.0), 30, **kw)) for n in ns]
    await asyncio.sleep(0)
    assert not any(t.done() for t in tasks)
    return tasks


async def discard(b: Batcher, tasks) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await b.stop()


def test_admission_follows_the_estimated_wait_and_a_small_request_still_fits():
    """A planted throughput (10 ms a sample) and a 1 s budget, of which a request of n may use 1 - n/128 (n=16:
    0.875 s, n=1: 0.992 s). The queue holds 96; one more n=16 would wait 1.12 s and is refused, an n=1 (0.97 s)
    still gets in; the samples cap never bites."""
    m = Metrics()

    async def go():
        b = Batcher(SlowBackbone(), m, max_batch=64, max_queue=1024)
        b.sec_per_sample = 0.01
        tasks = await enqueue(b, *[16] * 5, *[1] * 16, max_queue_wait_s=1.0)
        assert b.waiting == 96
        with pytest.raises(ApiError) as big:
            await b.sample(work(16, 0.0), 30, max_queue_wait_s=1.0)
        tasks += await enqueue(b, 1, max_queue_wait_s=1.0)
        with pytest.raises(ApiError) as four:
            await b.sample(work(4, 0.0), 30, max_queue_wait_s=1.0)
        b.sec_per_sample = 0.05  # 4.9 s for one more sample
        with pytest.raises(ApiError) as slow:
            await b.sample(work(16, 0.0), 30, max_queue_wait_s=1.0)
        with pytest.raises(ApiError) as past_deadline:  # no budget given: a wait past the deadline is refused now
            await b.sample(work(1, 0.0), 2)
        waiting = b.waiting
        await discard(b, tasks)
        return big.value, four.value, slow.value, past_deadline.value, waiting

    big, four, slow, past_deadline, waiting = run(go())
    assert waiting == 97
    assert (big.status, big.code, big.headers["Retry-After"]) == (429, "queue_full", "1")
    assert big.details["estimated_wait_s"] == pytest.approx(1.12) and big.details["max_queue_wait_s"] == 1.0
    assert (four.status, four.details["estimated_wait_s"]) == (429, pytest.approx(1.01))
    assert slow.headers["Retry-After"] == "5"  # 5.65 s estimated, 0.875 s its share: back in about 4.8 s
    assert (past_deadline.status, past_deadline.details["max_queue_wait_s"]) == (429, 2)
    assert rejected(m, "queue_wait") == 4 and rejected(m, "queue_full") == 0


def test_an_energy_sample_is_priced_as_what_it_costs_the_model_thread():
    """An energy-mode sample counts ENERGY_UNITS actor samples in the queue and in admission: at 10 ms a unit and
    a 1 s budget, 4 energy samples (32 units: 0.33 s against their 0.75 s share) get in; 16 (128 units, 1.29 s against
    half the budget) do not, where 16 actor samples (0.17 s) would."""
    from service.batcher import ENERGY_UNITS

    async def go():
        b = Batcher(SlowBackbone(), Metrics(), max_batch=64)
        b.sec_per_sample = 0.01
        tasks = await enqueue(b, 1, max_queue_wait_s=1.0)  # something ahead, so admission is judged
        tasks += [asyncio.create_task(b.sample(work(4, 0.0, mode="energy"), 30, max_queue_wait_s=1.0))]
        await asyncio.sleep(0)
        waiting = b.waiting
        with pytest.raises(ApiError) as refused:
            await b.sample(work(16, 0.0, mode="energy"), 30, max_queue_wait_s=1.0)
        await discard(b, tasks)
        return waiting, refused.value

    waiting, refused = run(go())
    assert waiting == 1 + 4 * ENERGY_UNITS
    assert refused.status == 429 and refused.details["estimated_wait_s"] > 1.0


def test_the_estimate_counts_what_the_running_batch_has_left():
    """Nothing queued is not idle while a slow batch runs; once nothing is ahead, even a request that alone costs
    more than the budget is taken (else it could never run)."""

    async def go():
        b = Batcher(SlowBackbone(), Metrics())
        b.sec_per_sample = 0.01
        b.runs[0] = (64, time.monotonic())
        fresh = b.estimated_wait(1)
        with pytest.raises(ApiError) as e:  # 0.64 s left of the running batch + its own 0.64 s
            await b.sample(work(64, 0.0), 30, max_queue_wait_s=1.0)
        b.runs[0] = (64, time.monotonic() - 10)  # that batch should long be done: only the request's own sample is left
        late = b.estimated_wait(1)
        b.sec_per_sample = 0.1  # 6.4 s for the request alone
        tasks = await enqueue(b, 64, max_queue_wait_s=1.0)
        await discard(b, tasks)
        return fresh, e.value, late

    fresh, e, late = run(go())
    assert 0.5 < fresh <= 0.65 and late == pytest.approx(0.01)
    assert (e.status, e.details["waiting"]) == (429, 0)


def test_batch_timings_move_the_estimate_in_proportion_to_the_batch_size():
    async def go():
        full, single = Batcher(SlowBackbone(), Metrics()), Batcher(SlowBackbone(), Metrics())
        full._observe(0.32, 64)  # 5 ms a sample
        single._observe(0.05, 1)  # a padded batch of one: 50 ms says little about throughput
        eng = SlowBackbone(delay=0.2)
        live = Batcher(eng, Metrics(), max_batch=4, max_wait_ms=1)
        live.start()
        await live.sample(work(4, 0.0), 5)  # at least 50 ms a sample
        for b in (full, single, live):
            await b.stop()
        return full.sec_per_sample, single.sec_per_sample, live.sec_per_sample, len(live.runs)

    full, single, live, running = run(go())
    gap = 0.005 - INITIAL_SEC_PER_SAMPLE
    assert full == pytest.approx(INITIAL_SEC_PER_SAMPLE + EWMA_WEIGHT * gap)
    assert single == pytest.approx(INITIAL_SEC_PER_SAMPLE + EWMA_WEIGHT / 64 * (0.05 - INITIAL_SEC_PER_SAMPLE))
    assert live >= INITIAL_SEC_PER_SAMPLE + EWMA_WEIGHT * (0.05 - INITIAL_SEC_PER_SAMPLE) and running == 0


def test_a_batch_packs_smaller_requests_behind_one_that_does_not_fit_and_keeps_the_order():
    async def go():
        b = Batcher(SlowBackbone(), Metrics(), max_batch=8)
        tasks = await enqueue(b, 5, 4, 3, 1)
        first = [w.n for w in b._take()]
        second = [w.n for w in b._take()]
        waiting = b.waiting
        await discard(b, tasks)
        return first, second, waiting

    assert run(go()) == ([5, 3], [4, 1], 0)  # the 4 that did not fit leads the next batch


def test_a_client_that_leaves_takes_its_work_out_of_the_queue():
    eng, m = GatedBackbone(), Metrics()

    async def go():
        b = Batcher(eng, m, max_batch=1, max_wait_ms=1)
        b.start()
        first = asyncio.ensure_future(b.sample(work(1, 0.0), 5))
        await asyncio.to_thread(eng.entered.wait, 5)  # the first batch holds the model thread
        left = asyncio.Event()
        leaving = asyncio.ensure_future(b.sample(work(2, 1.0), 5, receive=client(left)))
        staying = asyncio.ensure_future(b.sample(work(1, 2.0), 5, receive=client(asyncio.Event())))
        await asyncio.sleep(0)
        before = b.waiting
        left.set()
        with pytest.raises(ApiError) as e:
            await leaving
        after = b.waiting  # out of the wait estimate at once, not when a batch is next taken
        eng.release.set()
        await first
        stayed = await staying
        await b.stop()
        return e.value, before, after, stayed

    e, before, after, stayed = run(go())
    assert (e.status, e.code) == (499, "client_gone")
    assert (before, after) == (3, 1)
    assert eng.decode_rows == [1, 1] and np.all(stayed.images == 2)  # the 2 rows of the client that left never ran
    assert rejected(m, "client_gone") == 1


def test_the_sample_route_drops_a_request_whose_client_disconnected(service_bundle, tmp_path):
    """The real app (middlewares, route, batcher) in process, driven over ASGI so the disconnect is exact."""
    from service.app import create_app
    from service.config import ServerConfig

    app = create_app(ServerConfig(bundle=str(service_bundle), data_dir=str(tmp_path), max_wait_ms=1))
    st = app.state.lcs
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/sample",
        "raw_path": b"/sample",
        "query_string": b"mode=prior&n=2&format=json",
        "headers": [],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "root_path": "",
    }

    async def get(left: asyncio.Event) -> int:
        sent = []

        async def send(message):
            sent.append(message)

        await app(dict(scope), client(left), send)
        return sent[0]["status"]

    async def go():
        async with app.router.lifespan_context(app):
            while not st.ready:
                assert st.startup_error is None
                await asyncio.sleep(0.05)
            eng = st.batcher.backbone = GatedBackbone(st.backbone)
            first = asyncio.ensure_future(get(asyncio.Event()))
            await asyncio.to_thread(eng.entered.wait, 5)
            left = asyncio.Event()
            leaving = asyncio.ensure_future(get(left))
            while not st.batcher.waiting and not leaving.done():  # until the route has queued its work
                await asyncio.sleep(0.01)
            left.set()
            gone_status = await leaving
            eng.release.set()
            return await first, gone_status, eng.decode_rows

    first, gone_status, rows = run(go())
    assert (first, gone_status) == (200, 499)
    assert rows == [2]  # only the first request's rows were decoded
    assert rejected(st.metrics, "client_gone") == 1


@pytest.mark.parametrize("sec_per_sample", [0.0125, 0.02, 0.031])
def test_a_flood_of_large_requests_leaves_room_for_a_small_one(sec_per_sample):
    """n=16 requests until one is refused (a flood at its fill level), then an n=1 must still get in, whatever the
    throughput: large requests may use less of the budget than small ones. (With one budget for all, the flood can
    fill it to the brim: at these rates the n=1 was refused.)"""

    async def go():
        b = Batcher(SlowBackbone(), Metrics(), max_batch=64, max_queue=1024)
        b.sec_per_sample = sec_per_sample
        tasks = []

        async def offer(n: int) -> bool:
            tasks.append(asyncio.ensure_future(b.sample(work(n, 0.0), 30, max_queue_wait_s=1.0)))
            await asyncio.sleep(0)
            return not tasks[-1].done()  # done at once: refused

        while await offer(16):
            pass
        small_admitted = await offer(1)
        await discard(b, tasks)
        return small_admitted

    assert run(go())
