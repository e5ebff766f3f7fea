"""Stage settings declared once: a Config dataclass field carries default, help and meaning.

``setting(default, help=..., output=True)`` is a dataclass field whose metadata says what
the setting does and whether it changes a stage's outputs. From the Config alone follow:
the CLI flags (:func:`add_arguments` / :func:`from_args`), the flags that rebuild a config
in another process (:func:`to_argv`), the ``Args:`` help of a KFP component
(:func:`args_doc`), and the settings key that decides what a rerun may skip
(:func:`settings_key`: every ``output=True`` field; speed-only switches are declared
``output=False`` and never force a redo).

Conventions: "no limit" / "all" is ``0`` for every count or rate (never ``None``, never
``-1``), so the same value means the same thing in the CLI, a component and a pipeline.
Booleans get ``--flag`` / ``--no-flag``. Tuples of strings are comma-separated on the CLI
and in KFP parameters.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Any

_MISSING = dataclasses.MISSING


def setting(
    default: Any = _MISSING,
    *,
    help: str,  # noqa: A002 - the argparse word
    output: bool = True,
    choices: Sequence[Any] | None = None,
    flag: str | None = None,
    parse: Callable[[str], Any] | None = None,
    show: Callable[[Any], str] | None = None,
    cli: bool = True,
    default_factory: Callable[[], Any] | Any = _MISSING,
) -> Any:
    """A Config field. ``output=False``: changes speed or bookkeeping, never the outputs.

    ``parse`` turns the CLI/KFP text into the value and ``show`` turns the value back into
    that text (for tuples, points and the like); ``flag`` overrides the ``--field-name``
    spelling; ``cli=False`` keeps a field off the command line (set by the caller)."""
    meta = {
        "help": help,
        "output": output,
        "choices": tuple(choices) if choices is not None else None,
        "flag": flag,
        "parse": parse,
        "show": show,
        "cli": cli,
    }
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def fields_of(config_cls: type) -> list[dataclasses.Field]:
    """The declared settings of a Config class (fields made with :func:`setting`)."""
    return [f for f in dataclasses.fields(config_cls) if "help" in f.metadata]


def default_of(config_cls: type, name: str) -> Any:
    f = next(f for f in dataclasses.fields(config_cls) if f.name == name)
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:
        return f.default_factory()
    raise KeyError(f"{config_cls.__name__}.{name} has no default")


def help_of(config_cls: type, name: str) -> str:
    return next(f for f in dataclasses.fields(config_cls) if f.name == name).metadata["help"]


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def show_value(f: dataclasses.Field, value: Any) -> Any:
    """The value as the CLI and KFP spell it (tuples comma-joined, custom ``show``)."""
    if f.metadata.get("show"):
        return f.metadata["show"](value)
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return value


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return output_settings(value)
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def output_settings(config: Any) -> dict[str, Any]:
    """The settings that change outputs (nested configs included), JSON-ready."""
    out = {}
    for f in dataclasses.fields(config):
        if f.metadata.get("output", True):
            out[f.name] = _jsonable(getattr(config, f.name))
    return out


def all_settings(config: Any) -> dict[str, Any]:
    """Every setting, for the summary (what ran, speed switches included)."""
    return {f.name: _jsonable(getattr(config, f.name)) for f in dataclasses.fields(config)}


def settings_key(config: Any, **identity: Any) -> str:
    """16 hex digits over the output settings and ``identity`` (models, inputs' hashes):
    equal keys mean a finished item may be skipped on a rerun."""
    doc = {"settings": output_settings(config), **{k: _jsonable(v) for k, v in identity.items()}}
    text = json.dumps(doc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


KEY_FIELD = "{settings_key}"


def keyed_path(path: str, key: str) -> str:
    """``path`` with ``{settings_key}`` replaced by ``key``: one stable folder per settings,
    so a rerun of a pipeline writes where the last run did and other settings go beside it
    (never over it)."""
    return path.replace(KEY_FIELD, key)


# --- CLI ------------------------------------------------------------------------------


def _base_type(config_cls: type, f: dataclasses.Field) -> Any:
    hint = typing.get_type_hints(config_cls)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = args[0]
    return hint


def add_arguments(
    parser: argparse.ArgumentParser, config_cls: type, exclude: Iterable[str] = ()
) -> None:
    """One flag per setting of ``config_cls`` (help, default and choices from the field)."""
    skip = set(exclude)
    for f in fields_of(config_cls):
        if f.name in skip or not f.metadata["cli"]:
            continue
        default = default_of(config_cls, f.name)
        shown = show_value(f, default)
        text = f.metadata["help"]
        if not isinstance(default, bool) and shown not in (None, ""):
            text += f" (default {shown})"
        kw: dict[str, Any] = {"dest": f.name, "help": text, "default": argparse.SUPPRESS}
        base = _base_type(config_cls, f)
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = f.metadata["parse"] or (base if base in (int, float) else str)
            if f.metadata["choices"]:
                kw["choices"] = f.metadata["choices"]
        parser.add_argument(flag_of(f), **kw)


def from_args(config_cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """The Config for parsed ``args``: flags not given keep the field's default."""
    values = {f.name: getattr(args, f.name) for f in fields_of(config_cls) if hasattr(args, f.name)}
    return config_cls(**{**values, **overrides})


def check_finite(config: Any) -> None:
    """Refuse ``nan`` and ``inf`` in every setting of ``config`` (tuples too), naming it.

    They parse as floats but pass every ``x < 0`` check a Config makes (a NaN fps reached
    the decoder). Every stage Config calls this first in its ``__post_init__``, so the CLI,
    KFP and library paths share it; the message names the flag and the field."""
    for f in fields_of(type(config)):
        value = getattr(config, f.name)
        if not _all_finite(value):
            raise ValueError(
                f"{flag_of(f)} must be a finite number, got {value!r} "
                f"({type(config).__name__}.{f.name})"
            )


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, tuple | list):
        return all(_all_finite(v) for v in value)
    return True


def to_argv(config: Any, exclude: Iterable[str] = ()) -> list[str]:
    """Flags that rebuild ``config`` through :func:`from_args` (e.g. in launched ranks)."""
    skip = set(exclude)
    argv: list[str] = []
    for f in fields_of(type(config)):
        if f.name in skip or not f.metadata["cli"]:
            continue
        value = getattr(config, f.name)
        if isinstance(value, bool):
            argv.append(flag_of(f) if value else "--no-" + flag_of(f)[2:])
        elif value is not None:
            shown = show_value(f, value)
            argv += [flag_of(f), repr(shown) if isinstance(shown, float) else str(shown)]
    return argv


# --- KFP ------------------------------------------------------------------------------


def from_params(config_cls: type, params: dict[str, Any], rename=None, **overrides: Any) -> Any:
    """The Config for a component's parameters, passed through unchanged (a setting means
    the same in the UI as on the CLI): text is parsed only where the field declares
    ``parse`` (tuples, points). ``rename`` maps parameter -> field; unknown names are
    ignored (the component's own inputs)."""
    names = {f.name: f for f in fields_of(config_cls)}
    values: dict[str, Any] = {}
    for param, value in params.items():
        f = names.get((rename or {}).get(param, param))
        if f is None:
            continue
        if isinstance(value, str) and f.metadata.get("parse"):
            value = f.metadata["parse"](value)
        values[f.name] = value
    return config_cls(**{**values, **overrides})


def component_defaults_drift(func: Callable) -> list[str]:
    """Where a component's parameter defaults differ from its Config's (empty: none).

    Each parameter named after a setting must default to the setting's default as the
    CLI/KFP spell it, so the UI, the CLI and the library start from the same run."""
    import inspect

    config_cls, rename = func.lanepaint_config
    names = {f.name: f for f in fields_of(config_cls)}
    problems = []
    for param in inspect.signature(func).parameters.values():
        f = names.get(rename.get(param.name, param.name))
        if f is None or param.default is inspect.Parameter.empty:
            continue
        want = show_value(f, default_of(config_cls, f.name))
        if param.default != want or type(param.default) is not type(want):
            problems.append(
                f"{func.__name__}.{param.name} defaults to {param.default!r}, "
                f"{config_cls.__name__}.{f.name} to {want!r}"
            )
    return problems


def args_doc(config_cls: type, extra: dict[str, str] | None = None, rename=None) -> str:
    """Google-style ``Args:`` lines for a component: the Config's help per setting, plus
    ``extra`` for the component's own parameters. ``rename`` maps parameter -> field."""
    lines = ["Args:"]
    for name, text in (extra or {}).items():
        lines.append(f"    {name}: {text}")
    names = {v: k for k, v in (rename or {}).items()}
    for f in fields_of(config_cls):
        lines.append(f"    {names.get(f.name, f.name)}: {f.metadata['help']}")
    return "\n".join(lines)


def component_doc(
    config_cls: type, summary: str, extra: dict[str, str] | None = None, rename=None
) -> Callable[[Callable], Callable]:
    """Decorator (below ``@dsl.component``): the component's docstring is ``summary`` plus
    the ``Args:`` help of its parameters, taken from the stage's Config. Only parameters the
    function has are documented, so the compiled spec's descriptions match its inputs."""

    def decorate(func: Callable) -> Callable:
        import inspect

        params = set(inspect.signature(func).parameters)
        full = args_doc(config_cls, extra, rename).splitlines()
        kept = [full[0]] + [ln for ln in full[1:] if ln.strip().split(":", 1)[0] in params]
        func.__doc__ = summary.strip() + "\n\n" + "\n".join(kept) + "\n"
        # Read by the drift test (tests/test_settings_drift.py) through kfp's python_func.
        func.lanepaint_config = (config_cls, dict(rename or {}))
        return func

    return decorate
