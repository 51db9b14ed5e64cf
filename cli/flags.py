"""Command-line flags generated from the config dataclasses and job signatures they fill.

Why: a default lives in exactly one place, the dataclass field or the job function's keyword; the
CLI only adds help texts (and, where a flag keeps an older name, the rename). A field the CLI does
not expose is listed in ``skip``; everything else becomes ``--field-name``.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
from typing import Any, Callable

SCALARS = (int, float, str)
REQUIRED = inspect.Parameter.empty


def _add(p: argparse.ArgumentParser, name: str, default: Any, help_text: str | None, flag: str | None = None) -> None:
    flag = "--" + (flag or name).replace("_", "-")
    if default is REQUIRED:
        p.add_argument(flag, dest=name, required=True, help=help_text)
    elif isinstance(default, bool):
        p.add_argument(flag, dest=name, action="store_true", default=default, help=help_text)
    elif isinstance(default, SCALARS):
        shown = f"(default: {default!r})" if default != "" else ""
        p.add_argument(
            flag, dest=name, type=type(default), default=default, help=" ".join(filter(None, [help_text, shown]))
        )
    else:
        raise TypeError(f"{name}: no flag for a default of type {type(default).__name__}")


def config_flags(
    p: argparse.ArgumentParser,
    cls: type,
    help: dict[str, str] | None = None,
    skip: tuple[str, ...] = (),
    rename: dict[str, str] | None = None,
    required: tuple[str, ...] = (),
) -> None:
    """One flag per field of dataclass ``cls``, its default taken from the field; ``required`` fields must be given
    on the command line (their dataclass default suits library callers, not a person typing a command)."""
    help, rename = help or {}, rename or {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        _add(p, f.name, REQUIRED if f.name in required else default, help.get(f.name), rename.get(f.name))


def function_flags(
    p: argparse.ArgumentParser, fn: Callable, help: dict[str, str] | None = None, skip: tuple[str, ...] = ("command",)
) -> None:
    """One flag per keyword of job function ``fn``; a parameter without a default becomes a required flag."""
    help = help or {}
    for name, param in inspect.signature(fn).parameters.items():
        if name in skip:
            continue
        default = param.default
        _add(p, name, "" if default is None else default, help.get(name))


def build(cls: type, a: argparse.Namespace, **extra: Any) -> Any:
    """The dataclass ``cls`` from parsed flags (fields without a flag keep their defaults, ``extra`` wins)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{**{k: v for k, v in vars(a).items() if k in names}, **extra})


def call(fn: Callable, a: argparse.Namespace, **extra: Any) -> Any:
    """``fn`` called with the parsed flags that match its parameters (``extra`` wins)."""
    names = set(inspect.signature(fn).parameters)
    return fn(**{**{k: v for k, v in vars(a).items() if k in names}, **extra})


def env_defaults(p: argparse.ArgumentParser, prefix: str) -> None:
    """Each flag also reads PREFIX + its name in capitals (``--max-batch`` <- LCS_MAX_BATCH): containers configure by
    env."""
    for action in p._actions:
        env = prefix + action.option_strings[-1].lstrip("-").replace("-", "_").upper() if action.option_strings else ""
        if action.nargs == 0 or env not in os.environ:  # --help and on/off switches are not configured by env
            continue
        if action.type in (None, str, int, float):
            value = os.environ[env]
            try:
                p.set_defaults(**{action.dest: (action.type or str)(value)})
            except ValueError:
                raise SystemExit(f"{env}={value!r} is not a valid {action.option_strings[-1]}") from None
