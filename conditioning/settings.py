"""The one check every settings dataclass runs when it is built (the server's and each offline job's): a run that
cannot do what it is set to (zero steps, zero candidates, a negative wait) refuses to start, naming the setting,
instead of failing deep inside with a message about tensors, or writing an untrained artifact and exiting 0."""

from __future__ import annotations


def require_at_least(settings: object, least: dict[str, float], above: dict[str, float] | None = None) -> None:
    """ValueError naming each field of ``settings`` below its least value in ``least``, or not above its bound in
    ``above`` (NaN fails both)."""
    bad = []
    for name, low in least.items():
        if not (got := getattr(settings, name)) >= low:
            bad.append(f"{name} must be at least {low}, got {got}")
    for name, low in (above or {}).items():
        if not (got := getattr(settings, name)) > low:
            bad.append(f"{name} must be above {low}, got {got}")
    if bad:
        raise ValueError("; ".join(bad))
