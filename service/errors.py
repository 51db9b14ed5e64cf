"""One JSON error envelope for every 4xx/5xx: ``{"error": {"code", "message", "details"}}``.

Routes raise ``ApiError``; storage, uploads and jobs raise transport-neutral ``DomainError``s
(``service.domain``) whose kind becomes an HTTP status here and only here (``HTTP_STATUS``). FastAPI's
own errors (validation, unknown route, wrong method) and any unexpected exception are rewritten into
the same envelope, so clients parse one shape and never see a traceback.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.domain import DomainError, Kind

log = logging.getLogger("lcs.service")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: dict | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details, self.headers = details or {}, headers or {}


def envelope(
    status: int, code: str, message: str, details: dict | None = None, headers: dict | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "details": details or {}}}, status, headers=headers
    )


class ErrorBody(BaseModel):
    code: str  # machine-readable, e.g. unknown_attributes
    message: str  # for people
    details: dict  # what the code needs: the valid names, the limit, ...


class ErrorEnvelope(BaseModel):
    """The body of every 4xx/5xx answer."""

    error: ErrorBody


WHEN = {
    400: "malformed input (an image or archive that cannot be decoded)",
    401: "missing or wrong admin token",
    404: "no such label set, version, job or route",
    405: "method not allowed (the Allow header lists the allowed ones)",
    409: "conflicts with the registry's state (e.g. deleting the serving version)",
    413: "body, image or archive over its limit",
    414: "request line or query string over its limit",
    415: "not a format this route reads",
    422: "invalid request: unknown, contradictory or unseen attributes, bad parameters, invalid artifact",
    429: "overloaded: the request would wait longer than the queue budget (see Retry-After)",
    503: "not ready yet (see Retry-After)",
    504: "no result within the request deadline",
}


def documented(*statuses: int) -> dict[int, dict]:
    """OpenAPI ``responses`` for these error statuses and 414 (any route), all with the envelope's schema (this also
    replaces FastAPI's default 422 schema, which is not what this server sends)."""
    return {s: {"model": ErrorEnvelope, "description": WHEN[s]} for s in sorted({*statuses, 414})}


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


# The one place a domain error's kind becomes an HTTP status.
HTTP_STATUS = {
    Kind.MALFORMED: 400,
    Kind.NOT_FOUND: 404,
    Kind.CONFLICT: 409,
    Kind.TOO_LARGE: 413,
    Kind.UNSUPPORTED: 415,
    Kind.INVALID: 422,
    Kind.BUSY: 429,
    Kind.UNAVAILABLE: 503,
}


def http_status(e: DomainError) -> int:
    return HTTP_STATUS[e.kind]


def allowed_methods(request: Request) -> str:
    """Every method some route has for this path (Starlette's 405 names only the first matching route's: GET for
    /labelsets/{name}, which also takes PUT and DELETE)."""
    path = request.scope["path"]
    return ", ".join(sorted({m for regex, ms in request.app.state.route_methods if regex.match(path) for m in ms}))


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, e: ApiError):
        return envelope(e.status, e.code, e.message, e.details, e.headers)

    @app.exception_handler(DomainError)
    async def _domain(_: Request, e: DomainError):
        return envelope(http_status(e), e.code, e.message, e.details)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, e: RequestValidationError):
        errors = [
            {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
            for err in e.errors()
        ]
        where = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in errors)
        return envelope(422, "invalid_request", f"invalid request: {where}", {"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        headers = getattr(e, "headers", None)
        if e.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        return envelope(e.status_code, _HTTP_CODES.get(e.status_code, "http_error"), str(e.detail), headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return envelope(500, "internal_error", "the server hit an unexpected error; it is logged")
