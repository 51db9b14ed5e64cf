"""Asyncio dynamic batcher: concurrent /sample requests share one decoder forward.

Requests wait at most ``max_wait_ms`` for company, up to ``max_batch`` samples. Each batch runs
on the single model thread (so the event loop never blocks and model work never races): every
(label set, mode) group goes through its mapper on its own sub-batch, then the whole batch goes
through the decoder once. Beyond ``max_queue`` waiting samples a request gets 429 with
Retry-After; past its deadline, 504 (its rows are skipped if the batch has not started).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from conditioning import modes
from conditioning.backbone import Backbone
from conditioning.images import to_uint8
from conditioning.labelset import LabelSetVersion
from service.errors import ApiError
from service.metrics import Metrics

log = logging.getLogger("lcs.batcher")


@dataclass(eq=False)
class SampleWork:
    ls: LabelSetVersion | None  # None: raw prior samples
    mode: modes.Mode
    z: torch.Tensor  # n x d prior draws
    y: torch.Tensor  # n x K requested labels
    mask: torch.Tensor  # n x K: which attributes the request named (optimisation only)
    deadline: float = 0.0
    future: asyncio.Future | None = None

    @property
    def n(self) -> int:
        return len(self.z)


@dataclass
class SampleResult:
    images: np.ndarray  # n x H x W x C uint8
    realism: torch.Tensor | None
    converged: torch.Tensor  # n bool (see modes.Latents)
    batch_samples: int = 0
    timings: dict = field(default_factory=dict)


class Batcher:
    def __init__(
        self, backbone: Backbone, metrics: Metrics, max_batch: int = 64, max_wait_ms: float = 5.0, max_queue: int = 1024
    ):
        self.backbone, self.metrics = backbone, metrics
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait_ms / 1000, max_queue
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="lcs-model")
        self.items: collections.deque[SampleWork] = collections.deque()
        self.waiting = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="lcs-batcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.executor.shutdown(wait=True, cancel_futures=True)

    def _admit(self, n: int) -> None:
        if self.waiting and self.waiting + n > self.max_queue:
            self.metrics.rejected.labels("queue_full").inc()
            raise ApiError(
                429,
                "queue_full",
                f"{self.waiting} samples are waiting; try again shortly",
                {"waiting": self.waiting, "max_queue": self.max_queue},
                headers={"Retry-After": "1"},
            )

    async def sample(self, work: SampleWork, timeout: float) -> SampleResult:
        self._admit(work.n)
        loop = asyncio.get_running_loop()
        work.deadline, work.future = time.monotonic() + timeout, loop.create_future()
        self.items.append(work)
        self.waiting += work.n
        self.metrics.queue_depth.set(self.waiting)
        self._wakeup.set()
        try:
            return await asyncio.wait_for(asyncio.shield(work.future), timeout)
        except TimeoutError:
            self.metrics.rejected.labels("deadline").inc()
            raise ApiError(504, "deadline_exceeded", f"no result within {timeout:g} s") from None

    async def call(self, fn, *args, timeout: float):
        """Other model work (edits) on the same model thread, with the same deadline rule."""
        fut = asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self.metrics.rejected.labels("deadline").inc()
            raise ApiError(504, "deadline_exceeded", f"no result within {timeout:g} s") from None

    def _take(self) -> list[SampleWork]:
        batch, total = [], 0
        while self.items and (not batch or total + self.items[0].n <= self.max_batch):
            w = self.items.popleft()
            self.waiting -= w.n
            if w.future.done() or time.monotonic() > w.deadline:  # its caller already got 504
                continue
            batch.append(w)
            total += w.n
        self.metrics.queue_depth.set(self.waiting)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.items:
                self._wakeup.clear()
                await self._wakeup.wait()
            first_seen = time.monotonic()
            while self.waiting < self.max_batch and (left := self.max_wait - (time.monotonic() - first_seen)) > 0:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except TimeoutError:
                    break
            batch = self._take()
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self.executor, self._run, batch)
            except Exception as e:  # noqa: BLE001 - handed to each waiting request, logged there
                log.exception("batch of %d requests failed", len(batch))
                for w in batch:
                    if not w.future.done():
                        w.future.set_exception(e)
                continue
            n = sum(w.n for w in batch)
            self.metrics.batch_size.observe(n)
            self.metrics.batch_requests.observe(len(batch))
            for w, r in zip(batch, results, strict=True):
                if not w.future.done():
                    w.future.set_result(r)
            del batch, results, w  # do not pin this batch's label-set versions while waiting for the next

    def _run(self, batch: list[SampleWork]) -> list[SampleResult]:
        """Model thread: mappers per (label set, mode) group, then one decoder forward for all rows."""
        latents: list[torch.Tensor | None] = [None] * len(batch)
        scores: list[torch.Tensor | None] = [None] * len(batch)
        converged: list[torch.Tensor | None] = [None] * len(batch)
        groups: dict[tuple, list[int]] = {}
        for i, w in enumerate(batch):
            groups.setdefault((id(w.ls), w.mode), []).append(i)
        for idx in groups.values():
            ls, mode = batch[idx[0]].ls, batch[idx[0]].mode
            z = torch.cat([batch[i].z for i in idx])
            y = torch.cat([batch[i].y for i in idx])
            out, ok = modes.latents(mode, ls, z, y, torch.cat([batch[i].mask for i in idx]))
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
            results.append(SampleResult(images[start : start + w.n], scores[i], converged[i], total))
            start += w.n
        return results
