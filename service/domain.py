"""Domain errors: what went wrong in storage, uploads or jobs, with no transport attached.

Each error carries a machine ``code`` (stable, for clients and job status files), a human ``message``,
a ``details`` dict and a ``kind`` that says what sort of failure it is. Which HTTP status a kind
becomes is decided once, at the API edge (``service.errors``); this module imports no web framework,
so the job worker (``python -m service.jobs``) and the CLI can raise and report these errors too.
"""

from __future__ import annotations

from enum import Enum


class Kind(str, Enum):
    MALFORMED = "malformed"  # the input could not be read at all (empty, undecodable, not a zip)
    INVALID = "invalid"  # read, but its content is refused (bad name, labels, artifact, settings)
    NOT_FOUND = "not_found"  # no such label set, version or job
    CONFLICT = "conflict"  # the request contradicts the current state (e.g. delete the serving version)
    UNSUPPORTED = "unsupported"  # a format this server does not accept (pickles, GIFs)
    TOO_LARGE = "too_large"  # over a size limit
    BUSY = "busy"  # refused for load; try again later
    UNAVAILABLE = "unavailable"  # cannot be served right now


class DomainError(Exception):
    def __init__(self, kind: Kind, code: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.kind, self.code, self.message, self.details = Kind(kind), code, message, details or {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind.value}, {self.code!r}, {self.message!r}, {self.details!r})"

    def to_dict(self) -> dict:
        """The ``{"code", "message", "details"}`` body clients (and job status files) get."""
        return {"code": self.code, "message": self.message, "details": self.details}
