"""HTTP routes that manage label sets: list, describe, register, delete, roll back, and training jobs.
Admin routes need the bearer token (``service.auth``); storage errors map to HTTP in ``service.errors``."""

from __future__ import annotations

import shutil

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from conditioning.labelset import LabelSetVersion
from conditioning.rules import RULES
from models.latent import LabelKind
from service.api import state
from service.auth import require_admin
from service.errors import ApiError
from service.jobs import read_status, training_params
from service.registry import check_name
from service.uploads import open_zip, parse_labels_csv

router = APIRouter()


def _summary(ls: LabelSetVersion) -> dict:
    return {
        "name": ls.name,
        "version": ls.version,
        "labels": ls.attr_names,
        "kind": ls.kind,
        "trained_as": ls.manifest.get("name"),
        "metrics": ls.manifest.get("metrics", {}),
    }


@router.get("/labelsets", summary="Label sets serving now")
async def list_labelsets(request: Request):
    st = state(request)
    return {"labelsets": [_summary(ls) for _, ls in sorted(st.live.sets.items())]}


@router.get("/labelsets/{name}", summary="One label set: its versions, labels and metrics")
async def get_labelset(request: Request, name: str):
    st = state(request)
    return await run_in_threadpool(st.registry.describe, check_name(name))


@router.put(
    "/labelsets/{name}",
    status_code=201,
    dependencies=[Depends(require_admin)],
    summary="Register a new immutable version (mapper.json + mapper.safetensors from lcs train-labelset)",
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


@router.delete(
    "/labelsets/{name}", dependencies=[Depends(require_admin)], summary="Delete a label set and all its versions"
)
async def delete_labelset(request: Request, name: str):
    st = state(request)
    await run_in_threadpool(st.registry.delete, name)
    await run_in_threadpool(st.live.sync)
    return {"deleted": name}


@router.delete(
    "/labelsets/{name}/versions/{version}",
    dependencies=[Depends(require_admin)],
    summary="Delete one earlier (not serving) version",
)
async def delete_version(request: Request, name: str, version: str):
    st = state(request)
    await run_in_threadpool(st.registry.delete_version, name, version)
    return {"deleted": name, "version": version}


@router.post(
    "/labelsets/{name}/rollback",
    dependencies=[Depends(require_admin)],
    summary="Serve an earlier version again (default: the previous one)",
)
async def rollback(request: Request, name: str, version: str | None = Query(None)):
    st = state(request)
    vid = await run_in_threadpool(st.registry.rollback, name, version)
    await run_in_threadpool(st.live.sync)
    return {"name": name, "version": vid}


@router.post(
    "/labelsets/{name}/jobs",
    status_code=202,
    dependencies=[Depends(require_admin)],
    summary="Train a new label set on the frozen model from uploaded labels, images or a rule",
)
async def create_job(
    request: Request,
    name: str,
    labels: UploadFile | None = File(None, description="CSV: id|file, then one 0/1 column per attribute"),
    images: UploadFile | None = File(None, description="zip of the images the CSV's 'file' column names"),
    rule: str | None = Form(None, description=f"label decoded prior samples by a rule: {', '.join(sorted(RULES))}"),
    kind: LabelKind = Form("binary"),
    steps: int | None = Form(None),
    lambda_dist: float | None = Form(None),
    width: int | None = Form(None),
    depth: int | None = Form(None),
    batch_size: int | None = Form(None),
    lr: float | None = Form(None),
    edit_prob: float | None = Form(None),
    rule_samples: int | None = Form(None),
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
        }
    )
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
            await run_in_threadpool(open_zip, files["images.zip"], keys, 8 * st.cfg.max_job_bytes)
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
    status = st.jobs.create(name, {**request_doc, "kind": kind, "train": train}, files)
    st.jobs.pump()
    return JSONResponse(
        {**status, "status_url": f"/jobs/{status['id']}"}, 202, headers={"Location": f"/jobs/{status['id']}"}
    )


@router.get("/jobs/{job_id}", summary="A training job's state, progress, result or error")
async def get_job(request: Request, job_id: str):
    return await run_in_threadpool(read_status, request.app.state.lcs.cfg.data_dir, job_id)
