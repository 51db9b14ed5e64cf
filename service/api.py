"""HTTP routes for sampling, edits and operations (label-set and job admin: ``service.manage``).
Model work goes through the batcher's model thread, PNG encoding through the thread
pool, so the event loop only parses, routes and answers."""

from __future__ import annotations

import base64
import math
import secrets
from typing import Literal

import numpy as np
import torch
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field

from conditioning import edits, modes, query
from conditioning.images import grid, png_bytes, to_uint8
from conditioning.labelset import LabelSetVersion
from conditioning.specs import SpecError
from service.batcher import SampleWork
from service.errors import ApiError, documented, envelope
from service.request_meaning import (
    Attrs,
    default_mode,
    energy_plan,
    openapi_query,
    pick_labelset,
    query_params,
    query_plan,
    served_realism,
    spec_error,
    spec_for,
)
from service.uploads import decode_image

router = APIRouter()
# The query grammar's alphabet (conditioning.query), so a schema-valid query fits in an 8 KB URL. Documented, not
# enforced by validation: the parser refuses other characters itself, saying at which position.
QUERY_PATTERN = {"pattern": r"^[A-Za-z0-9_.:() \t\r\n-]*$"}
PNG = {"image/png": {"schema": {"type": "string", "format": "binary"}}}


def state(request: Request):
    st = request.app.state.lcs
    if not st.ready:
        raise ApiError(
            503,
            "not_ready",
            "the server is still starting" if st.startup_error is None else "start-up failed",
            {"pending": dict(st.pending), "error": st.startup_error},
            headers={"Retry-After": "1"},
        )
    return st


def headers(st, ls: LabelSetVersion | None, mode: str, **extra) -> dict[str, str]:
    h = {"X-LCS-Decoder-Fingerprint": st.backbone.decoder_fingerprint, "X-LCS-Mode": mode}
    if ls is not None:
        h.update({"X-LCS-Labelset": ls.name, "X-LCS-Labelset-Version": ls.version})
    return {**h, **{f"X-LCS-{k.replace('_', '-').title()}": str(v) for k, v in extra.items()}}


def label_rows(ls: LabelSetVersion | None, y: torch.Tensor) -> list[dict[str, int]]:
    return [] if ls is None else [{a: int(v) for a, v in zip(ls.attr_names, row.tolist(), strict=False)} for row in y]


def _png(images: np.ndarray) -> bytes:
    n = len(images)
    if n == 1:
        return png_bytes(images[0])
    return png_bytes(grid(images, nrow=math.ceil(math.sqrt(n))))


def _pngs_base64(images: np.ndarray) -> list[str]:
    return [base64.b64encode(png_bytes(im)).decode() for im in images]


# /sample's response images by format, made on the model thread (``SampleWork.encode``)
BODY_ENCODERS = {"png": _png, "json": _pngs_base64}


class SampleQuery(BaseModel):
    """/sample's query parameters (``request_meaning.query_params`` validates them, the OpenAPI document lists them)."""

    attrs: str | None = Field(None, description="comma-separated attributes, '-' negates: smiling,-eyeglasses")
    q: str | None = Field(
        None,
        max_length=query.MAX_QUERY_CHARS,
        json_schema_extra=QUERY_PATTERN,
        description="a query over every served label set, e.g. smiling and (eyeglasses or wearing_hat) and not bald "
        "(terms: attr, labelset.attr, rule:NAME; not > and > or); answered by the energy sampler",
    )
    labelset: str | None = Field(
        None, description="inferred when the attributes name exactly one label set; with q=, where bare names go first"
    )
    n: int = Field(1, ge=1, description="images (a grid when > 1); at most the server's max_n")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="same seed, same bytes")
    mode: modes.Mode | None = Field(None, description="default: actor (energy for q= and classifier label sets)")
    format: Literal["png", "json"] = "png"
    allow_unseen: bool = Field(False, description="allow attribute combinations the data never shows")


@router.get(
    "/sample",
    summary="Conditional (or realism-mapped) samples as PNG or JSON",
    responses={
        200: {"content": PNG, "description": "a PNG (a grid when n > 1), or with format=json the images and labels"},
        **documented(404, 422, 429, 503, 504),
    },
    openapi_extra=openapi_query(SampleQuery),
)
async def sample(request: Request):
    p = query_params(request, SampleQuery)
    attrs, q, labelset, n, seed, mode, allow_unseen = p.attrs, p.q, p.labelset, p.n, p.seed, p.mode, p.allow_unseen
    st = state(request)
    if n > st.cfg.max_n:
        raise ApiError(422, "n_out_of_range", f"n must be between 1 and {st.cfg.max_n}", {"max": st.cfg.max_n})
    if mode == "prior" and (attrs or labelset or q):
        raise ApiError(
            422,
            "prior_ignores_attrs",
            "mode=prior draws unconditional prior samples; drop attrs, q and labelset or use actor/optimize/energy",
        )
    if q is not None and attrs:
        raise ApiError(
            422, "query_and_attrs", "send either q= (a query) or attrs= (its shorthand for an AND), not both"
        )
    plan, asked = None, Attrs(attrs)
    if q is not None:
        ls, plan, mode = None, query_plan(st, q, labelset, mode), "energy"
    else:
        ls = None if mode == "prior" else pick_labelset(st, labelset, asked)
        mode = default_mode(ls, mode)
        if mode == "energy":
            plan = energy_plan(st, ls)
    seed = secrets.randbits(63) if seed is None else seed
    spec = spec_for(ls, asked) if ls is not None else {}
    try:
        z, y, mask = modes.draw(ls, spec, n, st.backbone.latent_dim, torch.Generator().manual_seed(seed), allow_unseen)
    except SpecError as e:
        raise spec_error(e, ls) from None
    result = await st.batcher.sample(
        SampleWork(ls, mode, z, y, mask, plan, st.cfg.candidates, BODY_ENCODERS[p.format]),
        st.cfg.request_timeout_s,
        st.cfg.max_queue_wait_s,
        request.receive,
    )
    name = ls.name if ls is not None else "(query)" if plan is not None else None
    if name is not None:
        st.metrics.labelset_requests.labels(name, mode).inc()
        for s in result.realism.tolist():
            st.metrics.realism.labels(name).observe(s)
    # converged: how many images met optimisation's stop rule (one-pass modes: all); the rest are returned as they
    # stood after the last step, so a client can tell and ask again
    converged = result.converged.tolist()
    h = headers(st, ls, mode, seed=seed, batch_samples=result.batch_samples, converged=f"{sum(converged)}/{n}")
    if q is not None:
        h["X-LCS-Query"] = plan.text
    if p.format == "json":
        pngs = result.encoded
        body = {
            "labelset": ls and ls.name,
            "version": ls and ls.version,
            "decoder_fingerprint": st.backbone.decoder_fingerprint,
            "seed": seed,
            "mode": mode,
            "query": plan.text if q is not None else None,
            "attr_names": ls.attr_names if ls else [],
            "images": [
                {
                    "png_base64": p,
                    "labels": lab,
                    "realism": None if result.realism is None else round(float(r), 4),
                    "converged": ok,
                }
                for p, lab, r, ok in zip(
                    pngs,
                    label_rows(ls, y) or [None] * n,
                    result.realism.tolist() if result.realism is not None else [None] * n,
                    converged,
                    strict=True,
                )
            ],
        }
        return JSONResponse(body, headers=h)
    if y.shape[1]:
        h["X-LCS-Attrs"] = ",".join(ls.attr_names)
        h["X-LCS-Labels"] = ";".join("".join(str(int(v)) for v in row.tolist()) for row in y)
    return Response(result.encoded, media_type="image/png", headers=h)


@router.post(
    "/transform",
    summary="Identity-preserving edit of an uploaded image",
    responses={
        200: {"content": PNG, "description": "the edited image as PNG, or with format=json with its reconstruction"},
        **documented(400, 404, 413, 415, 422, 429, 503, 504),
    },
)
async def transform(
    request: Request,
    image: UploadFile = File(..., description="PNG or JPEG"),
    attrs: str = Form("", description="attributes to set, e.g. eyeglasses or -smiling"),
    q: str = Form(
        None,
        max_length=query.MAX_QUERY_CHARS,
        json_schema_extra=QUERY_PATTERN,
        description="or a query the edit should satisfy (the energy sampler)",
    ),
    labelset: str = Form(None),
    mode: edits.EditMode = Form(None, description="default: actor (energy for q= and classifier label sets)"),
    format: Literal["png", "json"] = Form("png"),
    allow_unseen: bool = Form(False),
):
    st = state(request)
    data = await image.read()
    if len(data) > st.cfg.max_image_bytes:
        raise ApiError(
            413, "payload_too_large", f"the image is {len(data)} bytes; the limit is {st.cfg.max_image_bytes}"
        )
    if q is not None and attrs:
        raise ApiError(
            422, "query_and_attrs", "send either q= (a query) or attrs= (its shorthand for an AND), not both"
        )
    plan, ls, spec = None, None, {}
    if q is not None:
        plan, mode = query_plan(st, q, labelset, mode), "energy"
    else:
        asked = Attrs(attrs)
        ls = pick_labelset(st, labelset, asked)
        spec = spec_for(ls, asked)
        if not spec:
            raise ApiError(422, "nothing_to_edit", "name at least one attribute to change", {"valid": ls.attr_names})
        mode = default_mode(ls, mode)
        realism = served_realism(st) if mode == "energy" else None
    c, size = st.backbone.image_shape[0], st.backbone.image_shape[1]
    async with st.decode_slots:  # each decode may hold up to uploads.MAX_DECODED_PIXELS: bound how many at once
        pixels = await run_in_threadpool(decode_image, data, c, size)

    def body(z: torch.Tensor, z0: torch.Tensor):
        """The edit and the reconstruction drawn and encoded on the model thread, as /sample's images are."""
        images = to_uint8(st.backbone.decode(torch.cat([z, z0])))
        return _pngs_base64(images) if format == "json" else png_bytes(images[0])

    def edit():
        z0 = st.backbone.encode(torch.from_numpy(pixels)[None])
        if plan is not None:
            z, ok = edits.edit_query(plan, z0)
            return body(z, z0), None, modes.realism(plan.realism, z, torch.zeros(1, 0)), ok
        try:
            z, target, ok = edits.edit(ls, z0, spec, mode, allow_unseen, realism=realism, candidates=st.cfg.candidates)
        except SpecError as e:
            raise spec_error(e, ls) from None
        score = modes.realism(realism, z, torch.zeros(1, 0)) if realism is not None else modes.realism(ls, z, target)
        return body(z, z0), target, score, ok

    encoded, target, realism_score, ok = await st.batcher.call(edit, timeout=st.cfg.request_timeout_s)
    name = ls.name if ls is not None else "(query)"
    st.metrics.labelset_requests.labels(name, f"transform-{mode}").inc()
    st.metrics.realism.labels(name).observe(float(realism_score[0]))
    if plan is not None:
        h = headers(st, None, mode, query=plan.text, converged=f"{int(ok.sum())}/1")
    else:
        h = headers(
            st,
            ls,
            mode,
            attrs=",".join(ls.attr_names),
            target="".join(str(int(v)) for v in target[0].tolist()),
            converged=f"{int(ok.sum())}/1",
        )
    if format == "json":
        edited, recon = encoded
        return JSONResponse(
            {
                "labelset": ls and ls.name,
                "version": ls and ls.version,
                "mode": mode,
                "query": plan and plan.text,
                "target": label_rows(ls, target)[0] if ls is not None else None,
                "converged": bool(ok[0]),
                "edited_png_base64": edited,
                "reconstruction_png_base64": recon,
                "realism": round(float(realism_score[0]), 4),
                "decoder_fingerprint": st.backbone.decoder_fingerprint,
            },
            headers=h,
        )
    return Response(encoded, media_type="image/png", headers=h)


# ---- operations -------------------------------------------------------------------------------


@router.get("/info", summary="What this server serves (the web page is at /)", responses=documented())
async def info(request: Request):
    st = request.app.state.lcs
    out = {"service": "latent-constraints", "ready": st.ready, "bundle": st.cfg.bundle, "candidates": st.cfg.candidates}
    if st.backbone is not None:
        out.update(
            dataset=st.backbone.manifest["dataset"]["name"],
            image_shape=list(st.backbone.image_shape),
            latent_dim=st.backbone.latent_dim,
            device=str(st.backbone.device),
            engine=st.backbone.engine,
            decode_rows=st.backbone.decode_rows,
            decoder_fingerprint=st.backbone.decoder_fingerprint,
            live_decoder_fingerprint=await run_in_threadpool(st.backbone.live_decoder_fingerprint),
        )
    if st.live is not None:
        out["labelsets"] = {k: v.version for k, v in sorted(st.live.sets.items())}
    return out


@router.get("/livez", summary="The process is up", responses=documented())
async def livez():
    return {"status": "alive"}


@router.get("/readyz", summary="Decoder loaded, warmed up and registry synced", responses=documented(503))
async def readyz(request: Request):
    """200 once serving. ``degraded`` names what went away since (the registry's store, the notice channel): the
    replica still serves the label sets it holds, so it stays ready: every replica shares the store, and failing
    readiness on all of them would take the whole Service down for an outage sampling does not need."""
    st = request.app.state.lcs
    if st.ready:
        return {"ready": True, **({"degraded": st.degraded} if st.degraded else {})}
    return envelope(
        503,
        "not_ready",
        "not ready: " + (st.startup_error or ", ".join(f"{k} {v}" for k, v in st.pending.items())),
        {"pending": dict(st.pending), "error": st.startup_error},
        headers={"Retry-After": "1"},
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **documented()},
)
async def metrics(request: Request):
    st = request.app.state.lcs
    if st.live is not None:
        st.metrics.labelsets_loaded.set(len(st.live.sets))
        st.metrics.versions_alive.set(st.live.live_versions)
    return PlainTextResponse(st.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
