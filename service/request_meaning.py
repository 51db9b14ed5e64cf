"""What a request means before any model work: its query parameters, its ``attrs=`` (split once), the label set it
names or implies, the spec, the mode and the energy plan. Every failure is an ApiError with a machine code (or
FastAPI's validation error, which becomes the envelope too), so routes stay thin."""

from __future__ import annotations

import functools
from collections.abc import Collection
from typing import TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from conditioning import energy
from conditioning.celeba import celeba_hint
from conditioning.labelset import LabelSetVersion
from conditioning.specs import SpecError, canonical_spec, split_spec
from models.latent_table import REALISM
from service.errors import ApiError
from service.registry import check_name

Params = TypeVar("Params", bound=BaseModel)


def refuse_repeated(request: Request, names: Collection[str]) -> None:
    """Each of ``names`` takes one value: ``seed=1&seed=2`` is a 422, not whichever value the framework keeps."""
    keys = [k for k, _ in request.query_params.multi_items() if k in names]
    if len(keys) != len(set(keys)):
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        raise ApiError(
            422, "repeated_parameter", f"{', '.join(repeated)} given more than once", {"parameters": repeated}
        )


def query_params(request: Request, model: type[Params]) -> Params:
    """A hot route's query parameters as one model, validated in one pydantic pass; FastAPI's solving of declared
    parameters took ~60 us of a /sample request's ~1.2 ms of CPU (8 parameters; py-spy, issue 28). Errors are
    FastAPI's own validation error (``loc`` ``["query", name]``), so clients see the same envelope."""
    refuse_repeated(request, model.model_fields)
    try:
        return model.model_validate({k: v for k, v in request.query_params.items() if k in model.model_fields})
    except ValidationError as e:
        errors = [{**err, "loc": ("query", *err["loc"])} for err in e.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def openapi_query(model: type[BaseModel]) -> dict:
    """``openapi_extra`` documenting ``model``'s fields as query parameters, as FastAPI documents declared ones."""
    schema = model.model_json_schema()
    parameters = []
    for name, prop in schema["properties"].items():
        parameters.append(
            {"name": name, "in": "query", "required": name in schema.get("required", ()), "schema": prop}
            | ({"description": prop["description"]} if "description" in prop else {})
        )
    return {"parameters": parameters}


class Attrs:
    """A request's ``attrs=``, split on first use and only once: picking the label set and building its spec share
    the items (a syntax error still surfaces where the split is first needed)."""

    def __init__(self, text: str | None):
        self.text = text

    @functools.cached_property
    def items(self) -> list[tuple[str, int]]:
        return split_spec(self.text)


def pick_labelset(st, labelset: str | None, attrs: Attrs) -> LabelSetVersion:
    """The named label set; else the one whose attributes include every requested name; else realism."""
    sets = st.live.sets
    if labelset is not None:
        ls = sets.get(check_name(labelset))
        if ls is None:
            raise ApiError(404, "unknown_labelset", f"no label set named {labelset!r}", {"available": sorted(sets)})
        return ls
    try:
        names = {name for name, _ in attrs.items}
    except SpecError as e:
        raise ApiError(422, e.code, str(e), e.details) from None
    if not names:
        if REALISM not in sets:
            raise ApiError(
                404,
                "unknown_labelset",
                "no attributes were asked for and no 'realism' label set is registered",
                {"available": sorted(sets)},
            )
        return sets[REALISM]
    found = [ls for ls in sets.values() if names <= {a.lower() for a in ls.attr_names}]
    if len(found) == 1:
        return found[0]
    if found:
        raise ApiError(
            422,
            "ambiguous_labelset",
            f"label sets {', '.join(sorted(ls.name for ls in found))} all have these attributes; pass labelset=",
            {"candidates": sorted(ls.name for ls in found)},
        )
    valid = {ls.name: ls.attr_names for ls in sets.values() if ls.attr_names}
    known = {a.lower() for v in valid.values() for a in v}
    raise ApiError(
        422,
        "unknown_attributes",
        f"no label set has all of {', '.join(sorted(names))}"
        + (f" (unknown: {', '.join(sorted(names - known))})" if names - known else "")
        + celeba_hint(sorted(names - known)),
        {"unknown": sorted(names - known), "valid": valid},
    )


def spec_error(e: SpecError, ls: LabelSetVersion, **extra) -> ApiError:
    """A request spec the label set cannot satisfy: 422 with the spec's code, naming the label set."""
    return ApiError(422, e.code, str(e), {**e.details, "labelset": ls.name, **extra})


def spec_for(ls: LabelSetVersion, attrs: Attrs) -> dict[str, int]:
    try:
        return canonical_spec(attrs.items, ls.attr_names)
    except SpecError as e:
        raise spec_error(e, ls, valid=ls.attr_names) from None


def default_mode(ls: LabelSetVersion | None, mode: str | None) -> str:
    """``actor`` unless the label set is a classifier (only the energy sampler serves it)."""
    if ls is not None and ls.m.cfg.method == "classifier":
        if mode not in (None, "energy"):
            raise ApiError(
                422,
                "mode_unavailable",
                f"label set {ls.name!r} is a classifier label set: it has no actor or critic; use mode=energy",
                {"labelset": ls.name, "modes": ["energy"]},
            )
        return "energy"
    return mode or "actor"


def query_plan(st, q: str, labelset: str | None, mode: str | None) -> energy.Plan:
    """A ``q=`` request's plan; 422 with the position for syntax errors and unknown or ambiguous names."""
    if mode not in (None, "energy"):
        raise ApiError(
            422, "mode_unavailable", "a query (q=) is answered by the energy sampler: drop mode or use mode=energy"
        )
    if labelset is not None and check_name(labelset) not in st.live.sets:
        raise ApiError(404, "unknown_labelset", f"no label set named {labelset!r}", {"available": sorted(st.live.sets)})
    try:
        return energy.plan_query(q, st.live.sets, labelset)
    except SpecError as e:
        raise ApiError(422, e.code, str(e), e.details) from None


def served_realism(st) -> LabelSetVersion:
    """The realism mapper every energy request moves through; 422 when none (or a wrong one) is served."""
    try:
        return energy.realism_of(st.live.sets)
    except SpecError as e:
        raise ApiError(422, e.code, str(e), e.details) from None


def energy_plan(st, ls: LabelSetVersion) -> energy.Plan:
    """mode=energy with ``attrs=``: the request's own label rows as the formula."""
    return energy.Plan(served_realism(st), energy.Rows(ls), ls.name)
