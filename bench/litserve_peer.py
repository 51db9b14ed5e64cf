"""LitServe peer for bench.serve: the work of ``GET /sample?n=1`` behind LitServe, on the same model.

    python -m bench.litserve_peer --bundle DIR --labelset faces --device auto --precision auto --threads 0 \
        --port 8001 --workers 1 --batch-timeout-ms 5 --candidates 8

``POST /predict`` with ``{"attrs": "smiling"}`` answers one image/png, doing per request what our route does: parse
the spec, draw (z, y) from a fresh seed (``modes.draw``), then per batch the actor on --candidates draws per row and
the re-step (``modes.latents``), the critic's realism score and one decoder forward (as ``service.batcher``), then
PNG (``conditioning.images.png_bytes``). LitServe runs all of it in its inference-worker process; its HTTP process
only parses, queues and answers. Started by bench.serve, which
holds every default; the LitServe settings are its defaults but for batching.
"""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path

import litserve as ls
import torch
from fastapi import Response

from conditioning import modes
from conditioning.backbone import Backbone
from conditioning.images import png_bytes, to_uint8
from conditioning.labelset import LabelSetVersion
from conditioning.runtime import resolve_device
from conditioning.specs import parse_spec

# The configuration the issue measured: at least one request per connection of the widest load (32) fits one batch.
MAX_BATCH = 32


class SampleAPI(ls.LitAPI):
    def __init__(
        self, bundle: Path, labelset: str, threads: int, precision: str, batch_timeout_s: float, candidates: int
    ):
        super().__init__(max_batch_size=MAX_BATCH, batch_timeout=batch_timeout_s)
        self.bundle, self.labelset, self.threads, self.precision = bundle, labelset, threads, precision
        self.candidates = candidates

    def setup(self, device: str) -> None:
        """Loaded as bench.serve's bare() loads it, in the worker process."""
        self.bb = Backbone(self.bundle, device, self.threads, self.precision)
        self.ls = LabelSetVersion.load(
            self.bundle / "labelsets" / self.labelset, self.bb.decoder_fingerprint, self.labelset, "bench"
        )

    def decode_request(self, request: dict) -> tuple[torch.Tensor, ...]:
        spec = parse_spec(request.get("attrs"), self.ls.attr_names)
        gen = torch.Generator().manual_seed(secrets.randbits(63))
        return modes.draw(self.ls, spec, 1, self.bb.latent_dim, gen)

    def batch(self, inputs: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
        return tuple(torch.cat(parts) for parts in zip(*inputs, strict=True))

    def predict(self, x: tuple[torch.Tensor, ...]):
        z, y, mask = x
        out, _ = modes.latents("actor", self.ls, z, y, mask, None, self.candidates)  # as our route
        modes.realism(self.ls, out, y)  # our route computes it for its metrics; the same cost here
        return to_uint8(self.bb.decode(out))

    def unbatch(self, output):
        return list(output)

    def encode_response(self, image) -> Response:
        return Response(png_bytes(image), media_type="image/png")


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.litserve_peer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for flag in ("--bundle", "--labelset", "--device", "--precision"):
        p.add_argument(flag, required=True)
    for flag in ("--threads", "--port", "--workers", "--candidates"):
        p.add_argument(flag, type=int, required=True)
    p.add_argument("--batch-timeout-ms", type=float, required=True)
    a = p.parse_args()
    api = SampleAPI(Path(a.bundle), a.labelset, a.threads, a.precision, a.batch_timeout_ms / 1000, a.candidates)
    server = ls.LitServer(api, accelerator=resolve_device(a.device).type, devices=1, workers_per_device=a.workers)
    server.run(host="127.0.0.1", port=a.port, generate_client_file=False)


if __name__ == "__main__":
    main()
