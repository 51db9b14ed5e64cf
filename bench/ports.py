"""Loopback ports for the servers the benches and the tests start (uvicorn, LitServe, SeaweedFS, Redis)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    """The lowest port the kernel hands to outgoing connections (Linux; 32768, its default, elsewhere)."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port free on 127.0.0.1 now, below the kernel's ephemeral range and not handed out before in this process.
    Why below: a port from bind(0) lies in the range the kernel also gives outgoing connections, so between the
    pick and the server's bind a client could take it: SeaweedFS's own processes dialling each other took its
    volume server's port once in CI ("bind: address already in use")."""
    low = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(10000, low) if low > 11000 else 0
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port below {low} on 127.0.0.1")
