"""One loaded, immutable version of a label set's mappers: what every conditioning mode runs on.

The server keeps one per registered version (requests hold a reference to the one they started
on); ``lcs eval``, ``lcs eval-edits`` and the figures load the same object from a bundle, so the
numbers in docs/ come from the objects the server serves. (Not to be confused with a dataset's
label set, ``training.data.LabelSet``: a named group of attribute columns.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from conditioning.specs import distinct_rows, matching, resolve
from models.latent import LabelKind, LatentMappers, load_mappers

MATCHED_KEPT = 4096  # specs whose matching rows a version keeps: bounded, since a request can name any combination


@dataclass(eq=False)
class LabelSetVersion:
    name: str
    version: str
    m: LatentMappers
    manifest: dict
    table: torch.Tensor | None  # label rows of the training data (n x K, float); None for realism
    sigma_bar: torch.Tensor
    rows: torch.Tensor | None = None  # the table's distinct rows and their counts: fast request resolution
    counts: torch.Tensor | None = None
    _matched: dict = field(default_factory=dict, repr=False)  # spec -> ``specs.matching``'s rows and counts

    def __post_init__(self):
        if self.table is not None and self.rows is None:
            self.rows, self.counts = distinct_rows(self.table)

    @classmethod
    def load(
        cls, directory: str | Path, decoder_fingerprint: str | None, name: str = "", version: str = ""
    ) -> LabelSetVersion:
        """mapper.json + mapper.safetensors from ``directory``, refused if trained for another decoder."""
        m, manifest, extra = load_mappers(directory, decoder_fingerprint)
        return cls(
            name=name or manifest.get("name", ""),
            version=version,
            m=m,
            manifest=manifest,
            table=extra["label_table"].float() if m.cfg.n_labels else None,
            sigma_bar=extra["sigma_bar"].float(),
        )

    def resolve(self, spec: dict[str, int], n: int, generator: torch.Generator, allow_unseen: bool = False):
        """``specs.resolve`` on the distinct rows, each spec's matching rows kept (at most MATCHED_KEPT specs): the
        match was a tenth of the event loop's time per request (py-spy at 32 connections, issue 28)."""
        key = tuple(sorted(spec.items()))
        matched = self._matched.get(key)
        if matched is None:
            if len(self._matched) >= MATCHED_KEPT:
                self._matched.clear()
            matched = self._matched[key] = matching(spec, self.attr_names, self.rows, self.kind, self.counts)
        return resolve(
            spec, self.attr_names, self.rows, n, generator, self.kind, allow_unseen, self.counts, matched=matched
        )

    @property
    def attr_names(self) -> list[str]:
        return list(self.m.cfg.attr_names)

    @property
    def kind(self) -> LabelKind:
        return self.m.cfg.kind
