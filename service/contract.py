"""The OpenAPI document, made exact where FastAPI cannot derive it from the signatures: what the routes check in
code (name patterns, the job form's "labels or rule" and its ranges) and what comes from the server's config
(``n`` up to ``max_n``). Schemathesis holds the server to this document in the test suite."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from conditioning.rules import RULES
from service.config import ServerConfig
from service.jobs import JOB_ID_RE, TRAIN_FIELDS
from service.registry import NAME_RE

PATTERNS = {  # parameter -> the pattern its route checks
    "name": NAME_RE.pattern,
    "labelset": NAME_RE.pattern,
    "version": "[0-9a-f]{16}",  # registry.content_id
    "job_id": JOB_ID_RE.pattern,
}


def _exact(pattern: str) -> dict:
    return {"type": "string", "pattern": f"^{pattern}$"}


def _parameters(schema: dict, cfg: ServerConfig) -> None:
    for path, ops in schema["paths"].items():
        for op in ops.values():
            for p in op.get("parameters", []):
                if p["name"] in PATTERNS:
                    p["schema"] = {**_exact(PATTERNS[p["name"]]), "description": p.get("description", "")}
                if path == "/sample" and p["name"] == "n":
                    p["schema"]["maximum"] = cfg.max_n


def _forms(schema: dict) -> None:
    for form in schema["components"]["schemas"].values():
        props = form.get("properties", {})
        if "labelset" in props:
            props["labelset"] = _exact(PATTERNS["labelset"])
        if "rule" in props and "labels" in props:  # the job form: a rule, or labels (with images or not)
            for k, (typ, lo, hi) in TRAIN_FIELDS.items():
                props[k] = {"type": "integer" if typ is int else "number", "minimum": lo, "maximum": hi}
            props["rule"]["enum"] = sorted(RULES)
            form["oneOf"] = [{"required": ["rule"], "not": {"required": ["labels"]}}, {"required": ["labels"]}]
            form["dependentRequired"] = {"images": ["labels"]}


def install(app: FastAPI, cfg: ServerConfig) -> None:
    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            _parameters(schema, cfg)
            _forms(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
