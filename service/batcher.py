"""Asyncio dynamic batcher: concurrent /sample requests share one decoder forward.

A free model thread takes what is queued, up to ``max_batch`` samples; it waits up to ``max_wait_ms`` for more only
while fewer are queued than were in flight since it last took a batch (the clients just answered are expected back),
so a lone client never waits. Why: at 32 keep-alive connections on two workers the queue otherwise settled into two
halves taking turns (8.8 samples a batch, the model at its batch-8 cost); waiting for the rest made batches of 15.7
and cut the CPU per request by a fifth (issue 28).

Each batch runs on a model thread (so the event loop never blocks): every (label set, mode) group goes through its
mapper on its own sub-batch, then the whole batch goes through the decoder once. With ``workers`` model threads,
that many batches run at once, each on its own core when the torch threads are 1 (an op then runs on the calling
thread, so a row's bytes are the same on any worker). Why: with one model thread and one torch thread, a 2-core box
left most of its second core idle under load (py-spy: the event loop used ~35% of it).

Overload is answered at admission, fast: a request gets 429 with Retry-After when its estimated wait
(the samples ahead of it and its own, at the throughput the model thread has measured) exceeds the
caller's budget, or beyond ``max_queue`` waiting samples. Past its deadline it gets 504, and a request
whose client disconnects leaves the queue; either way its rows are skipped if the batch has not started.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from conditioning import energy, modes
from conditioning.backbone import Backbone
from conditioning.images import to_uint8
from conditioning.labelset import LabelSetVersion
from service.errors import ApiError
from service.metrics import Metrics

log = logging.getLogger("lcs.batcher")

# Seconds a sample costs before any batch has been timed. A 2-core CPU runs a 64-row batch of the shipped avatars in
# 0.1-0.2 s (2-3 ms a sample); starting several times slower under- rather than over-admits the first burst.
INITIAL_SEC_PER_SAMPLE = 0.01
# How far a full batch's timing moves the estimate (a smaller batch moves it in proportion to its size).
EWMA_WEIGHT = 0.3
# What one energy-mode sample costs the model thread in actor samples: about 20 ms against 2-3 ms on a 2-core CPU
# (docs/compose.md; the actor's batch of 64 with its decode in 0.1-0.2 s). Admission, batch filling and the
# seconds-per-sample estimate count in these units, so a burst of energy requests is priced as what it costs.
ENERGY_UNITS = 8


@dataclass(eq=False)
class SampleWork:
    ls: LabelSetVersion | None  # None: raw prior samples
    mode: modes.Mode
    z: torch.Tensor  # n x d prior draws
    y: torch.Tensor  # n x K requested labels
    mask: torch.Tensor  # n x K: which attributes the request named (optimisation and energy)
    plan: energy.Plan | None = None  # what energy mode samples
    candidates: int = 1  # actor mode: prior draws per row to select among (``modes.actor_best``)
    # the response body's encoding of the request's images (n x H x W x C uint8), run on the model thread after the
    # decode: PNG encoding was a fifth of the event loop's time at 32 connections (py-spy, issue 28), where the model
    # thread sat idle three quarters of it
    encode: Callable[[np.ndarray], object] | None = None
    deadline: float = 0.0
    future: asyncio.Future | None = None
    queued: bool = False  # counted in Batcher.waiting; False once taken into a batch or dropped

    @property
    def n(self) -> int:
        return len(self.z)

    @property
    def units(self) -> int:
        """What the queue counts: samples, an energy-mode sample as ENERGY_UNITS of them."""
        return self.n * (ENERGY_UNITS if self.mode == "energy" else 1)


@dataclass
class SampleResult:
    images: np.ndarray  # n x H x W x C uint8
    realism: torch.Tensor | None
    converged: torch.Tensor  # n bool (see modes.Latents)
    batch_samples: int = 0
    timings: dict = field(default_factory=dict)
    encoded: object = None  # what SampleWork.encode made of the images


class Batcher:
    def __init__(
        self,
        backbone: Backbone,
        metrics: Metrics,
        max_batch: int = 64,
        max_wait_ms: float = 0.0,
        max_queue: int = 1024,
        workers: int = 1,
    ):
        self.backbone, self.metrics = backbone, metrics
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait_ms / 1000, max_queue
        self.workers = workers
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="lcs-model")
        self.items: collections.deque[SampleWork] = collections.deque()
        self.waiting = 0
        self.in_flight = 0  # samples admitted and not yet answered
        self.peak = 0  # the most in flight since the last batch was taken
        self.expected = 0  # ... and before that: what the next batch waits for
        self.runs: dict[int, tuple[int, float]] = {}  # batches on the model threads: samples and since when
        self.sec_per_sample = INITIAL_SEC_PER_SAMPLE
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(workers)
        self._task: asyncio.Task | None = None
        self._dispatched: set[asyncio.Task] = set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="lcs-batcher")

    async def stop(self) -> None:
        for t in [self._task, *self._dispatched]:
            if t:
                t.cancel()
        await asyncio.gather(*[t for t in [self._task, *self._dispatched] if t], return_exceptions=True)
        self.executor.shutdown(wait=True, cancel_futures=True)

    def estimated_wait(self, n: int) -> float:
        """Seconds until ``n`` samples queued now would be drawn: what the running batches have left, then every
        waiting sample and these, at the measured rate of one model thread times their number."""
        now = time.monotonic()
        left = sum(max(0.0, k * self.sec_per_sample - (now - t)) for k, t in self.runs.values())
        return (left + (self.waiting + n) * self.sec_per_sample) / self.workers

    def _observe(self, seconds: float, n: int) -> None:
        """Fold one batch's model-thread time into the seconds-per-sample EWMA, weighted by the batch's share of
        ``max_batch``. Why: a small batch is padded (``modes.PAD_ROWS``) and costs about as much as a bigger one, so
        it overstates the per-sample cost; full batches are what run when there is a queue to estimate."""
        weight = EWMA_WEIGHT * min(1.0, n / self.max_batch)
        self.sec_per_sample += weight * (seconds / n - self.sec_per_sample)

    def _admit(self, n: int, budget_s: float) -> None:
        """429 now rather than a late answer. With nothing ahead (nothing queued, the running batch due) any request
        is taken, however large. Otherwise each request is judged on its own estimated wait, its own n included.
        A request's share of the budget shrinks with its size (a full batch gets half of it). Why: under a flood of
        large requests the queue then settles below what small ones may wait, so they keep being served (with one
        budget for all, an n=1 client beside 64 connections of n=16 got 429 half the time: bench.abuse)."""
        if not (ahead := self.estimated_wait(0)):
            return
        wait = ahead + n * self.sec_per_sample
        if self.waiting and self.waiting + n > self.max_queue:
            reason, retry = "queue_full", 1
        elif wait > (share := budget_s * (1 - min(n, self.max_batch) / (2 * self.max_batch))):
            reason, retry = "queue_wait", max(1, math.ceil(wait - share))
        else:
            return
        self.metrics.rejected.labels(reason).inc()
        raise ApiError(
            429,
            "queue_full",
            f"{self.waiting} samples are waiting (about {wait:.1f} s); try again shortly",
            {
                "waiting": self.waiting,
                "max_queue": self.max_queue,
                "estimated_wait_s": round(wait, 3),
                "max_queue_wait_s": budget_s,
            },
            headers={"Retry-After": str(retry)},
        )

    async def sample(
        self,
        work: SampleWork,
        timeout: float,
        max_queue_wait_s: float | None = None,
        receive: Callable[[], Awaitable[dict]] | None = None,
    ) -> SampleResult:
        """Queue ``work`` and wait for its rows. ``max_queue_wait_s`` is the caller's admission budget (a wait that
        would outlast ``timeout`` is refused anyway: 429 now beats 504 later). ``receive``, the request's ASGI
        receive channel, tells when the client leaves: its work is dropped rather than drawn for nobody."""
        self._admit(work.units, timeout if max_queue_wait_s is None else min(max_queue_wait_s, timeout))
        self.in_flight += work.units
        self.peak = max(self.peak, self.in_flight)
        loop = asyncio.get_running_loop()
        work.deadline, work.future, work.queued = time.monotonic() + timeout, loop.create_future(), True
        self.items.append(work)
        self.waiting += work.units
        self.metrics.queue_depth.set(self.waiting)
        self._wakeup.set()
        gone = loop.create_task(_disconnected(receive)) if receive else None
        try:
            done, _ = await asyncio.wait(
                {work.future, gone} - {None}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if work.future in done:
                return work.future.result()
            if gone in done:
                gone.result()  # what receive raised (e.g. the body limit's 413) is the answer
                self.metrics.rejected.labels("client_gone").inc()
                raise ApiError(499, "client_gone", "the client disconnected before its samples were drawn")
            self.metrics.rejected.labels("deadline").inc()
            raise ApiError(504, "deadline_exceeded", f"no result within {timeout:g} s")
        finally:
            if gone:
                gone.cancel()
            work.future.cancel()  # no-op once answered; else the model loop must not answer nobody
            self._unqueue(work)
            self.in_flight -= work.units

    async def call(self, fn, *args, timeout: float):
        """Other model work (edits) on the same model threads, with the same deadline rule."""
        fut = asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self.metrics.rejected.labels("deadline").inc()
            raise ApiError(504, "deadline_exceeded", f"no result within {timeout:g} s") from None

    def _unqueue(self, w: SampleWork) -> None:
        if w.queued:
            w.queued = False
            self.waiting -= w.units
            self.metrics.queue_depth.set(self.waiting)

    def _take(self) -> list[SampleWork]:
        """The next batch, oldest first. An item too big for what is left of the batch stays queued while smaller
        ones behind it fill the gap. Why: fuller batches, and a small request is not held back by a big one; the
        oldest item left always leads the next batch, so packing delays nobody for long."""
        batch, total, skipped, now = [], 0, [], time.monotonic()
        while self.items and total < self.max_batch:
            w = self.items.popleft()
            if not w.queued:  # its caller already got an answer (504, client gone)
                continue
            if batch and total + w.units > self.max_batch:
                skipped.append(w)
                continue
            self._unqueue(w)
            if now <= w.deadline:  # else its caller is about to get 504
                batch.append(w)
                total += w.units
        self.items.extendleft(reversed(skipped))
        return batch

    async def _loop(self) -> None:
        while True:
            while not self.items:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._slots.acquire()  # a free model thread; what queues meanwhile joins this batch
            first_seen, running = time.monotonic(), sum(k for k, _ in self.runs.values())
            target = min(self.max_batch, self.expected - running)
            while self.waiting < target and (left := self.max_wait - (time.monotonic() - first_seen)) > 0:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except TimeoutError:
                    break
            batch = self._take()
            self.expected, self.peak = self.peak, self.in_flight
            if not batch:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._dispatch(batch))
            self._dispatched.add(task)
            task.add_done_callback(self._dispatched.discard)
            del batch, task  # do not pin this batch's label-set versions while waiting for the next

    async def _dispatch(self, batch: list[SampleWork]) -> None:
        """One batch on a model thread, its rows handed to the waiting requests."""
        n = sum(w.units for w in batch)
        self.runs[id(batch)] = (n, time.monotonic())
        try:
            results, seconds = await asyncio.get_running_loop().run_in_executor(self.executor, self._timed_run, batch)
        except Exception as e:  # noqa: BLE001 - handed to each waiting request, logged there
            log.exception("batch of %d requests failed", len(batch))
            for w in batch:
                if not w.future.done():
                    w.future.set_exception(e)
            return
        finally:
            del self.runs[id(batch)]
            self._slots.release()
        self._observe(seconds, n)
        self.metrics.batch_size.observe(sum(w.n for w in batch))
        self.metrics.batch_requests.observe(len(batch))
        for w, r in zip(batch, results, strict=True):
            if not w.future.done():
                w.future.set_result(r)

    def _timed_run(self, batch: list[SampleWork]) -> tuple[list[SampleResult], float]:
        """Timed on the model thread itself, so edits queued there do not count as sampling time."""
        started = time.perf_counter()
        return self._run(batch), time.perf_counter() - started

    def _run(self, batch: list[SampleWork]) -> list[SampleResult]:
        """Model thread: mappers per (label set, mode) group, then one decoder forward for all rows."""
        latents: list[torch.Tensor | None] = [None] * len(batch)
        scores: list[torch.Tensor | None] = [None] * len(batch)
        converged: list[torch.Tensor | None] = [None] * len(batch)
        groups: dict[tuple, list[int]] = {}
        for i, w in enumerate(batch):
            groups.setdefault((id(w.ls), w.mode, id(w.plan), w.candidates), []).append(i)
        for idx in groups.values():
            ls, mode, plan, k = batch[idx[0]].ls, batch[idx[0]].mode, batch[idx[0]].plan, batch[idx[0]].candidates
            z = torch.cat([batch[i].z for i in idx])
            y = torch.cat([batch[i].y for i in idx])
            out, ok = modes.latents(mode, ls, z, y, torch.cat([batch[i].mask for i in idx]), plan, k)
            if plan is not None:  # energy mode: the realism critic's score (a classifier set has no critic)
                realism = modes.realism(plan.realism, out, torch.zeros(len(out), 0))
            else:
                realism = modes.realism(ls, out, y) if ls is not None else None
            start = 0
            for i in idx:
                latents[i] = out[start : start + batch[i].n]
                converged[i] = ok[start : start + batch[i].n]
                scores[i] = None if realism is None else realism[start : start + batch[i].n]
                start += batch[i].n
        images = to_uint8(self.backbone.decode(torch.cat(latents)))
        results, start, total = [], 0, len(images)
        for i, w in enumerate(batch):
            mine = images[start : start + w.n]
            encoded = w.encode(mine) if w.encode else None
            results.append(SampleResult(mine, scores[i], converged[i], total, encoded=encoded))
            start += w.n
        return results


async def _disconnected(receive: Callable[[], Awaitable[dict]]) -> None:
    """Returns when the client has gone. Why the receive channel and not polling ``is_disconnected()``: it wakes on
    the disconnect itself, and costs nothing per waiting request while it waits."""
    while (await receive())["type"] != "http.disconnect":
        pass
