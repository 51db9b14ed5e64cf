"""The one check every settings dataclass runs when it is built (the server's and each offline job's): a run that
cannot do what it is set to (zero steps, zero candidates, a negative wait) refuses to start, naming the setting,
instead of failing deep inside with a message about tensors, or writing an untrained artifact and exiting 0."""

from __future__ import annotations


def require_at_least(settings: object, least: dict[str, float]) -> None:
    """ValueError naming each field of ``settings`` below its least value in ``least`` (NaN counts as below)."""
    bad = [
        f"{name} must be at least {low}, got {getattr(settings, name)}"
        for name, low in least.items()
        if not getattr(settings, name) >= low
    ]
    if bad:
        raise ValueError("; ".join(bad))
