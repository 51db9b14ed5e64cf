"""Admin routes need ``Authorization: Bearer <token>``.

``AdminRoute`` checks it from the headers, before any body is read. The token is ``LCS_ADMIN_TOKEN``
when set; otherwise one is generated on first start and kept in DATA/admin_token (mode 0600), whose
path is logged, so a fresh install is never left open.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from pathlib import Path

from fastapi import Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer

from service.errors import ApiError

log = logging.getLogger("lcs.auth")


def admin_token(data_dir: str | Path) -> str:
    env = os.environ.get("LCS_ADMIN_TOKEN", "").strip()
    if env:
        return env
    path = Path(data_dir) / "admin_token"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = path.read_text().strip()
        if token:
            log.info("admin token: read from %s", path)
            return token
        raise RuntimeError(f"{path} is empty; delete it to generate a new token or set LCS_ADMIN_TOKEN") from None
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    log.warning("LCS_ADMIN_TOKEN is unset: generated an admin token and stored it in %s (mode 0600)", path)
    return token


def check_admin(authorization: str, expected: str) -> None:
    """Raise the 401 for a missing or wrong bearer token."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "unauthorized",
            "this route needs 'Authorization: Bearer <admin token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise ApiError(
            401, "unauthorized", "the admin token is not this server's", headers={"WWW-Authenticate": "Bearer"}
        )


class AdminRoute(APIRoute):
    """Admin routes check the token from the headers before a byte of the body is read: FastAPI runs dependencies
    only after it has parsed the whole multipart body (a 500 MB upload used to be received in full for a 401)."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def guarded(request: Request):
            check_admin(request.headers.get("authorization", ""), request.app.state.admin_token)
            return await handler(request)

        return guarded


# Declares the bearer scheme in the OpenAPI contract; AdminRoute has already checked the token when it runs.
admin_scheme = HTTPBearer(auto_error=False, description="the admin token (LCS_ADMIN_TOKEN or DATA/admin_token)")
