"""Loopback ports for the servers the benches and the tests start (uvicorn, LitServe, SeaweedFS, Redis)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Picked from 10000 up, below Kubernetes' NodePorts (30000-32767) and outside the kernel's ephemeral range
PICK_FROM, PICK_BELOW = 10000, 30000
_handed_out: set[int] = set()


def ephemeral_range() -> tuple[int, int]:
    """The ports the kernel hands to outgoing connections (Linux; its default, 32768-60999, elsewhere)."""
    try:
        low, high = (int(x) for x in EPHEMERAL_RANGE.read_text().split()[:2])
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def pickable() -> list[range]:
    """The port ranges ``free_port`` draws from: none where the ephemeral range covers them all."""
    low, high = ephemeral_range()
    spans = (range(PICK_FROM, min(low, PICK_BELOW)), range(max(high + 1, PICK_FROM), 65536))
    return [r for r in spans if len(r)]


def free_port() -> int:
    """A port free on 127.0.0.1 now, outside the kernel's ephemeral range and not handed out before in this process.
    Why outside: a port from bind(0) lies in the range the kernel also gives outgoing connections, so between the
    pick and the server's bind a client could take it: SeaweedFS's own processes dialling each other took its
    volume server's port once in CI ("bind: address already in use"). Where no port is outside, bind(0)'s."""
    spans, rng = pickable(), random.SystemRandom()
    for _ in range(200):
        port = rng.choice(rng.choices(spans, weights=[len(r) for r in spans])[0]) if spans else 0
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port on 127.0.0.1 in {spans or 'the ephemeral range'}")
