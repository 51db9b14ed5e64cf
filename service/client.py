"""Python clients for the service (httpx): ``Client`` (sync) and ``AsyncClient``.

    from service.client import Client
    c = Client("http://127.0.0.1:8000", token="...")      # token only for admin calls
    png = c.sample("smiling,-eyeglasses", n=4, seed=7)     # bytes of a PNG grid
    c.register("faces-v2", "runs/avatars/labelsets/faces") # mapper.json + mapper.safetensors
    job = c.train("hats", labels_csv=open("hats.csv", "rb").read(), steps=1000)  # waits for the job

Every error response becomes ``ServiceError`` with the envelope's code, message and details.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx


class ServiceError(Exception):
    def __init__(self, status: int, code: str, message: str, details: dict | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details or {}


def _check(r: httpx.Response) -> httpx.Response:
    if r.status_code >= 400:
        try:
            err = r.json()["error"]
        except (ValueError, KeyError, TypeError):
            err = {"code": "http_error", "message": r.text[:200]}
        raise ServiceError(r.status_code, err.get("code", "http_error"), err.get("message", ""), err.get("details"))
    return r


def _sample_params(attrs, labelset, n, seed, mode, fmt, allow_unseen, q=None) -> dict:
    """mode None: the server's default (actor; energy for q= and classifier label sets)."""
    params = {"n": n, "format": fmt, "allow_unseen": str(allow_unseen).lower(), **({"mode": mode} if mode else {})}
    if attrs:
        params["attrs"] = attrs if isinstance(attrs, str) else ",".join(attrs)
    if q is not None:
        params["q"] = q
    if labelset:
        params["labelset"] = labelset
    if seed is not None:
        params["seed"] = seed
    return params


def _transform_request(image, attrs, labelset, mode, fmt, allow_unseen, q=None) -> dict:
    data = {
        "attrs": attrs if isinstance(attrs, str) else ",".join(attrs or []),
        "format": fmt,
        "allow_unseen": str(allow_unseen).lower(),
        **({"mode": mode} if mode else {}),
        **({"labelset": labelset} if labelset else {}),
        **({"q": q} if q is not None else {}),
    }
    return {"files": {"image": ("image.png", image, "image/png")}, "data": data}


def _artifact_files(directory: str | Path) -> dict:
    d = Path(directory)
    return {
        "manifest": ("mapper.json", (d / "mapper.json").read_bytes(), "application/json"),
        "weights": ("mapper.safetensors", (d / "mapper.safetensors").read_bytes(), "application/octet-stream"),
    }


def _job_request(labels_csv, images_zip, rule, settings) -> tuple[dict, dict]:
    files = {}
    if labels_csv is not None:
        files["labels"] = ("labels.csv", labels_csv, "text/csv")
    if images_zip is not None:
        files["images"] = ("images.zip", images_zip, "application/zip")
    data = {k: str(v) for k, v in settings.items() if v is not None}
    if rule is not None:
        data["rule"] = rule
    return files, data


class Client:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", token: str | None = None, timeout: float = 60.0):
        self.http = httpx.Client(
            base_url=base_url, timeout=timeout, headers={"Authorization": f"Bearer {token}"} if token else {}
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def sample(self, attrs=None, labelset=None, n=1, seed=None, mode=None, format="png", allow_unseen=False, q=None):
        """PNG bytes (format='png') or the JSON body (format='json'). ``q``: a query, e.g. 'smiling and not bald'."""
        r = _check(
            self.http.get("/sample", params=_sample_params(attrs, labelset, n, seed, mode, format, allow_unseen, q))
        )
        return r.json() if format == "json" else r.content

    def transform(self, image: bytes, attrs=None, labelset=None, mode=None, format="png", allow_unseen=False, q=None):
        r = _check(
            self.http.post("/transform", **_transform_request(image, attrs, labelset, mode, format, allow_unseen, q))
        )
        return r.json() if format == "json" else r.content

    def labelsets(self) -> list[dict]:
        return _check(self.http.get("/labelsets")).json()["labelsets"]

    def labelset(self, name: str) -> dict:
        return _check(self.http.get(f"/labelsets/{name}")).json()

    def register(self, name: str, directory: str | Path) -> dict:
        return _check(self.http.put(f"/labelsets/{name}", files=_artifact_files(directory))).json()

    def delete(self, name: str, version: str | None = None) -> dict:
        path = f"/labelsets/{name}" + (f"/versions/{version}" if version else "")
        return _check(self.http.delete(path)).json()

    def rollback(self, name: str, version: str | None = None) -> dict:
        return _check(
            self.http.post(f"/labelsets/{name}/rollback", params={"version": version} if version else {})
        ).json()

    def job(self, job_id: str) -> dict:
        return _check(self.http.get(f"/jobs/{job_id}")).json()

    def train(
        self,
        name: str,
        labels_csv: bytes | None = None,
        images_zip: bytes | None = None,
        rule: str | None = None,
        wait: bool = True,
        poll: float = 1.0,
        timeout: float = 3600,
        **settings,
    ) -> dict:
        """Start a training job; with wait=True return its final status (raise ServiceError if it failed)."""
        files, data = _job_request(labels_csv, images_zip, rule, settings)
        status = _check(self.http.post(f"/labelsets/{name}/jobs", files=files or None, data=data)).json()
        deadline = time.monotonic() + timeout
        while wait and status["state"] not in ("succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(poll)
            status = self.job(status["id"])
        if status["state"] == "failed":
            e = status["error"] or {}
            raise ServiceError(500, e.get("code", "job_failed"), e.get("message", ""), {"job": status})
        return status


class AsyncClient:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        token: str | None = None,
        timeout: float = 60.0,
        max_connections: int = 100,
    ):
        self.http = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections),
            headers={"Authorization": f"Bearer {token}"} if token else {},
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()

    async def sample(
        self, attrs=None, labelset=None, n=1, seed=None, mode=None, format="png", allow_unseen=False, q=None
    ):
        params = _sample_params(attrs, labelset, n, seed, mode, format, allow_unseen, q)
        r = _check(await self.http.get("/sample", params=params))
        return r.json() if format == "json" else r.content

    async def transform(
        self, image: bytes, attrs=None, labelset=None, mode=None, format="png", allow_unseen=False, q=None
    ):
        request = _transform_request(image, attrs, labelset, mode, format, allow_unseen, q)
        r = _check(await self.http.post("/transform", **request))
        return r.json() if format == "json" else r.content

    async def labelsets(self) -> list[dict]:
        return _check(await self.http.get("/labelsets")).json()["labelsets"]

    async def register(self, name: str, directory: str | Path) -> dict:
        return _check(await self.http.put(f"/labelsets/{name}", files=_artifact_files(directory))).json()

    async def job(self, job_id: str) -> dict:
        return _check(await self.http.get(f"/jobs/{job_id}")).json()

    async def train(
        self,
        name: str,
        labels_csv: bytes | None = None,
        images_zip: bytes | None = None,
        rule: str | None = None,
        wait: bool = True,
        poll: float = 1.0,
        timeout: float = 3600,
        **settings,
    ) -> dict:
        files, data = _job_request(labels_csv, images_zip, rule, settings)
        status = _check(await self.http.post(f"/labelsets/{name}/jobs", files=files or None, data=data)).json()
        deadline = time.monotonic() + timeout
        while wait and status["state"] not in ("succeeded", "failed") and time.monotonic() < deadline:
            await asyncio.sleep(poll)
            status = await self.job(status["id"])
        if status["state"] == "failed":
            e = status["error"] or {}
            raise ServiceError(500, e.get("code", "job_failed"), e.get("message", ""), {"job": status})
        return status
