"""Request semantics: what ``attrs=smiling,-eyeglasses`` means for a label set.

A spec names any subset of a label set's attributes, each positive or negated with a leading
``-`` (names are case-insensitive). Unspecified attributes are drawn from rows of the label
table that match the specified ones, i.e. from the data's own conditional distribution: asking
for ``Wearing_Hat`` never yields a bald head under the hat, because no such row exists. A spec
that matches no row is an error, unless the caller allows unseen combinations; then the
unspecified attributes are drawn from their marginal rates instead. For a categorical label
set a spec names at most one positive class.
"""

from __future__ import annotations

import torch

from models.latent import LabelKind
from models.latent_table import nearest_allowed


class SpecError(ValueError):
    """A request names unknown or contradictory attributes, or a combination the data never shows."""

    def __init__(self, code: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.details = code, details or {}


def parse_spec(text: str | list[str] | None, attr_names: list[str]) -> dict[str, int]:
    """``"smiling,-eyeglasses"`` -> {"Smiling": 1, "Eyeglasses": 0} (canonical attribute names)."""
    items = text if isinstance(text, list) else [p for p in (text or "").split(",")]
    lookup = {a.lower(): a for a in attr_names}
    spec: dict[str, int] = {}
    unknown = []
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        value = 0 if item.startswith("-") else 1
        name = lookup.get(item.lstrip("+-").strip().lower())
        if name is None:
            unknown.append(item.lstrip("+-").strip())
            continue
        if spec.get(name, value) != value:
            raise SpecError(
                "contradictory_attributes", f"attribute {name} is asked for both on and off", {"attribute": name}
            )
        spec[name] = value
    if unknown:
        raise SpecError(
            "unknown_attributes",
            f"unknown attribute(s) {', '.join(unknown)}; valid: {', '.join(attr_names)}",
            {"unknown": unknown, "valid": list(attr_names)},
        )
    return spec


def resolve(
    spec: dict[str, int],
    attr_names: list[str],
    table: torch.Tensor,
    n: int,
    generator: torch.Generator,
    kind: LabelKind = "binary",
    allow_unseen: bool = False,
    counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """n full label rows (float 0/1, n x K) honouring the spec, the rest drawn as documented above.

    ``table`` holds the data's label rows; or, with ``counts``, its distinct rows and how often each
    occurs (``distinct_rows``): the same distribution, ~100x faster per request on a big table."""
    k = len(attr_names)
    if k == 0:
        if spec:
            raise SpecError("unknown_attributes", "this label set has no attributes", {"valid": []})
        return torch.zeros(n, 0)
    if kind == "categorical" and sum(spec.values()) > 1:
        raise SpecError(
            "contradictory_attributes",
            "a categorical label set takes at most one positive class",
            {"positive": [a for a, v in spec.items() if v]},
        )
    cols = torch.tensor([attr_names.index(a) for a in spec], dtype=torch.long)
    want = torch.tensor(list(spec.values()), dtype=table.dtype)
    table = table.float()
    match = (table[:, cols] == want.float()).all(1) if len(cols) else torch.ones(len(table), dtype=torch.bool)
    rows = table[match]
    if len(rows) and counts is not None:
        return rows[torch.multinomial(counts[match].float(), n, replacement=True, generator=generator)].clone()
    if len(rows):
        return rows[torch.randint(len(rows), (n,), generator=generator)].clone()
    if not allow_unseen:
        raise SpecError(
            "unseen_combination",
            f"no example in the data has {format_spec(spec)}; "
            "pass allow_unseen to draw the other attributes from their marginals",
            {"spec": spec},
        )
    if kind == "categorical":  # only negatives can be unseen here: choose uniformly among the allowed classes
        allowed = torch.tensor([spec.get(a, 1) for a in attr_names], dtype=torch.float)
        pick = torch.multinomial(allowed.expand(n, -1), 1, generator=generator).squeeze(1)
        return torch.nn.functional.one_hot(pick, k).float()
    marginals = table.mean(0) if counts is None else (table * counts[:, None]).sum(0) / counts.sum()
    out = (torch.rand(n, k, generator=generator) < marginals).float()
    out[:, cols] = want.float()
    return out


def distinct_rows(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(distinct label rows, how often each occurs): what ``resolve(..., counts=)`` and edit targets need."""
    rows, counts = torch.unique(table.float(), dim=0, return_counts=True)
    return rows, counts


def format_spec(spec: dict[str, int]) -> str:
    return ",".join(a if v else f"-{a}" for a, v in spec.items()) or "(no attributes)"


def nearest_rows(
    current: torch.Tensor, spec: dict[str, int], attr_names: list[str], table: torch.Tensor, allow_unseen: bool = False
) -> torch.Tensor:
    """Edit targets: per row of ``current`` (n x K), the label-table row that honours the spec and
    differs from it in the fewest attributes (ties: the most frequent row in the data).

    Why: an edit should change only what was asked, but some attributes constrain others (asking
    a black-haired face for blond hair must also switch black hair off). The nearest row the data
    actually shows is the smallest consistent change. Without any such row the spec is an
    ``unseen_combination`` error, unless allowed; then only the named attributes are overwritten.
    """
    cols = torch.tensor([attr_names.index(a) for a in spec], dtype=torch.long)
    want = torch.tensor(list(spec.values()), dtype=torch.float)
    rows, counts = distinct_rows(table)
    match = (rows[:, cols] == want).all(1) if len(cols) else torch.ones(len(rows), dtype=torch.bool)
    if not match.any():
        if not allow_unseen:
            raise SpecError(
                "unseen_combination",
                f"no example in the data has {format_spec(spec)}; "
                "pass allow_unseen to change only the named attributes",
                {"spec": spec},
            )
        out = current.float().clone()
        out[:, cols] = want
        return out
    frequency = counts.float() / (counts.max() + 1)
    return nearest_allowed(current, rows, match.expand(len(current), -1), frequency.expand(len(current), -1))
