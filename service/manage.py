"""HTTP routes that manage label sets: list, describe, register, delete, roll back, and training jobs.
Admin routes need the bearer token (``service.auth``); storage errors map to HTTP in ``service.errors``."""

from __future__ import annotations

import shutil

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from conditioning.labelset import LabelSetVersion
from conditioning.rules import RULES
from models.latent import LabelKind, Method
from service.api import state
from service.auth import AdminRoute, admin_scheme
from service.errors import ApiError, documented
from service.jobs import read_status, training_params
from service.registry import check_name
from service.uploads import open_zip, parse_labels_csv

router = APIRouter()
# writes: the token is checked before the body is read (AdminRoute); the dependency declares it in the contract
admin = APIRouter(route_class=AdminRoute, tags=["admin"], dependencies=[Depends(admin_scheme)])


def _summary(ls: LabelSetVersion) -> dict:
    return {
        "name": ls.name,
        "version": ls.version,
        "labels": ls.attr_names,
        "kind": ls.kind,
        "method": ls.m.cfg.method,  # classifier label sets serve only mode=energy
        **({"rule": ls.manifest["rule"]} if ls.manifest.get("rule") else {}),
        "trained_as": ls.manifest.get("name"),
        "metrics": ls.manifest.get("metrics", {}),
    }


@router.get("/labelsets", summary="Label sets serving now", responses=documented(503))
async def list_labelsets(request: Request):
    st = state(request)
    return {"labelsets": [_summary(ls) for _, ls in sorted(st.live.sets.items())]}


@router.get(
    "/labelsets/{name}", summary="One label set: its versions, labels and metrics", responses=documented(404, 422, 503)
)
async def get_labelset(request: Request, name: str):
    st = state(request)
    return await run_in_threadpool(st.registry.describe, check_name(name))


@admin.put(
    "/labelsets/{name}",
    status_code=201,
    summary="Register a new immutable version (mapper.json + mapper.safetensors from lcs train-labelset)",
    responses=documented(400, 401, 413, 415, 422, 503),
)
async def put_labelset(
    request: Request,
    name: str,
    manifest: UploadFile = File(..., description="mapper.json"),
    weights: UploadFile = File(..., description="mapper.safetensors"),
):
    st = state(request)
    check_name(name)
    staged = st.registry.stage()
    try:
        for up, fname in ((manifest, "mapper.json"), (weights, "mapper.safetensors")):
            with open(staged / fname, "wb") as f:
                while chunk := await up.read(1 << 20):
                    f.write(chunk)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    vid = await run_in_threadpool(
        st.registry.publish, name, staged, st.backbone.decoder_fingerprint, st.backbone.latent_dim, "upload"
    )
    await run_in_threadpool(st.live.sync)
    ls = st.live.get(name)
    return JSONResponse(_summary(ls) if ls is not None and ls.version == vid else {"name": name, "version": vid}, 201)


@admin.delete(
    "/labelsets/{name}",
    summary="Delete a label set and all its versions",
    responses=documented(401, 404, 422, 503),
)
async def delete_labelset(request: Request, name: str):
    st = state(request)
    await run_in_threadpool(st.registry.delete, name)
    await run_in_threadpool(st.live.sync)
    return {"deleted": name}


@admin.delete(
    "/labelsets/{name}/versions/{version}",
    summary="Delete one earlier (not serving) version",
    responses=documented(401, 404, 409, 422, 503),
)
async def delete_version(request: Request, name: str, version: str):
    st = state(request)
    await run_in_threadpool(st.registry.delete_version, name, version)
    return {"deleted": name, "version": version}


@admin.post(
    "/labelsets/{name}/rollback",
    summary="Serve an earlier version again (default: the previous one)",
    responses=documented(401, 404, 409, 422, 503),
)
async def rollback(request: Request, name: str, version: str | None = Query(None)):
    st = state(request)
    vid = await run_in_threadpool(st.registry.rollback, name, version)
    await run_in_threadpool(st.live.sync)
    return {"name": name, "version": vid}


@admin.post(
    "/labelsets/{name}/jobs",
    status_code=202,
    summary="Train a new label set on the frozen model from uploaded labels, images or a rule",
    responses=documented(400, 401, 413, 415, 422, 503),
)
async def create_job(
    request: Request,
    name: str,
    labels: UploadFile = File(None, description="CSV: id|file, then one 0/1 column per attribute"),
    images: UploadFile = File(None, description="zip of the images the CSV's 'file' column names"),
    rule: str = Form(None, description=f"label decoded prior samples by a rule: {', '.join(sorted(RULES))}"),
    kind: LabelKind = Form("binary"),
    method: Method = Form(
        "lc", description="lc: critic + actor + classifier (minutes); classifier: the classifier alone (seconds)"
    ),
    steps: int = Form(None),
    classifier_steps: int = Form(None),
    lambda_dist: float = Form(None),
    width: int = Form(None),
    depth: int = Form(None),
    batch_size: int = Form(None),
    lr: float = Form(None),
    edit_prob: float = Form(None),
    rule_samples: int = Form(None),
):
    st = state(request)
    check_name(name)
    train = training_params(
        {
            "steps": steps,
            "lambda_dist": lambda_dist,
            "width": width,
            "depth": depth,
            "batch_size": batch_size,
            "lr": lr,
            "edit_prob": edit_prob,
            "rule_samples": rule_samples,
            "classifier_steps": classifier_steps,
        }
    ) | {"method": method}
    files: dict[str, bytes] = {}
    if rule is not None:
        if labels is not None or images is not None:
            raise ApiError(422, "invalid_request", "send either a rule or labels (with optional images), not both")
        if rule not in RULES:
            raise ApiError(422, "unknown_rule", f"unknown rule {rule!r}", {"valid": sorted(RULES)})
        request_doc, rows = {"source": "rule", "rule": rule}, train["rule_samples"]
    elif labels is not None:
        files["labels.csv"] = await labels.read()
        key = "file" if images is not None else "id"
        keys, names, _ = await run_in_threadpool(parse_labels_csv, files["labels.csv"], key)
        if images is not None:
            files["images.zip"] = await images.read()
            await run_in_threadpool(open_zip, files["images.zip"], keys)
        request_doc, rows = (
            {"source": "images" if images is not None else "ids", "attrs": names, "rows": len(keys)},
            len(keys),
        )
    else:
        raise ApiError(422, "invalid_request", "send a labels CSV (optionally with an images zip) or a rule")
    if rows - rows // 10 < train["batch_size"]:
        raise ApiError(
            422,
            "too_few_rows",
            f"{rows} rows leave fewer training rows than one batch of {train['batch_size']}; "
            "send more rows or a smaller batch_size",
            {"rows": rows, "batch_size": train["batch_size"]},
        )
    status = await run_in_threadpool(st.jobs.create, name, {**request_doc, "kind": kind, "train": train}, files)
    await run_in_threadpool(st.jobs.pump)
    return JSONResponse(
        {**status, "status_url": f"/jobs/{status['id']}"}, 202, headers={"Location": f"/jobs/{status['id']}"}
    )


@router.get("/jobs/{job_id}", summary="A training job's state, progress, result or error", responses=documented(404))
async def get_job(request: Request, job_id: str):
    return await run_in_threadpool(read_status, request.app.state.lcs.registry, job_id)
