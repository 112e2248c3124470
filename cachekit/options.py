"""Options typed by config dataclasses: ``KEY=VALUE`` method options and the commands' own options.

``-o`` / ``--opt``: :func:`parse_pairs` reads the syntax; :func:`typed_options` types the values by
the method's ``Config`` (its type hints: numbers, booleans, ``None``, ``Literal`` choices, tuples),
so a typo in a key or a value fails at once with a one-line :class:`InputError` naming the allowed ones.

A command's options for a run config (``TrainConfig``, ``EvalConfig``, ``IndexBuildConfig``) are
read from its fields by :func:`field_options`: the default is the field's, ``Literal`` values or a
registry (:func:`param`'s ``registry``) are the choices, the help is the field's :func:`param` help.
So the CLI restates none of them; ``clipcache.cli._params`` turns each into a click option.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Iterable, Literal

from .errors import InputError

FLAG = "--opt"
HELP, REGISTRY = "help", "registry"  # keys of a config field's metadata (:func:`param`)


def parse_pairs(pairs: Iterable[str], flag: str = FLAG) -> dict[str, str]:
    """``["alpha=0.25", "merge-before=true"]`` -> ``{"alpha": "0.25", "merge_before": "true"}``."""
    out = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise InputError(f"{flag} takes key=value, got {pair!r}")
        out[name] = text.strip()
    return out


def typed_options(method: str, raw: dict, flag: str = FLAG) -> dict:
    """``raw`` overrides typed by method ``method``'s Config: a string value is read as the field's
    type, any other value is kept as given (a library caller's ``{"template": 0}``)."""
    from .methods import method_module

    config = method_module(method).Config
    hints = typing.get_type_hints(config)
    fields = {f.name for f in dataclasses.fields(config)}
    out = {}
    for name, value in raw.items():
        if name not in fields:
            raise InputError(f"method {method} has no option {name} (options: {', '.join(sorted(fields))})")
        out[name] = _coerce(value, hints[name], f"{flag} {name}") if isinstance(value, str) else value
    return out


def parse_options(method: str, pairs: Iterable[str], flag: str = FLAG) -> dict:
    """``["alpha=0.25", "metric=otam"]`` -> Config overrides typed by method ``method``'s Config."""
    return typed_options(method, parse_pairs(pairs, flag), flag)


def _coerce(text: str, tp, what: str):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        for a in args:
            if a is not type(None):
                try:
                    return _coerce(text, a, what)
                except InputError:
                    continue
        raise InputError(f"{what}: cannot read {text!r} as {tp}")
    if origin is Literal:
        for a in args:
            if str(a) == text:
                return a
        raise InputError(f"{what} must be one of {', '.join(map(str, args))}, not {text!r}")
    if tp is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise InputError(f"{what} must be true or false, not {text!r}")
    if tp in (int, float):
        try:
            return tp(text)
        except ValueError as err:
            raise InputError(f"{what} must be {'an integer' if tp is int else 'a number'}, not {text!r}") from err
    if tp is str:
        return text
    if origin is tuple:
        elem = args[0] if args else str
        return tuple(_coerce(s.strip(), elem, what) for s in text.split(",") if s.strip())
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


# --------------------------------------------------------------------------- config fields as options
def param(default=None, *, help: str, registry: str | None = None):
    """A config field with its one-line help; ``registry`` (``"module:NAME"``, a dict whose keys are
    the allowed values) gives the choices of a name a registry lists. Its command-line option is
    built from it (:func:`field_options`), so the CLI restates neither default, choices nor help."""
    meta = {HELP: help} if registry is None else {HELP: help, REGISTRY: registry}
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class FieldOption:
    """One config field as a command-line option (``clipcache.cli._params`` makes the click option)."""

    field: str  # the config field
    flag: str  # "--batch-size"; "--no-onnx" for a bool field that defaults to True
    dest: str  # the command function's parameter: the field's name, "no_onnx" for an inverted flag
    type: type  # int, float, str or bool (of each value when ``multiple``)
    default: object  # the field's default (a tuple for ``multiple``)
    help: str
    choices: tuple | None = None  # a Literal's values
    registry: str | None = None  # "module:NAME": its keys are the choices, read on first use
    is_flag: bool = False
    invert: bool = False  # the flag sets the field False
    multiple: bool = False  # repeatable and comma-separated: a tuple field ("--shots 1,5")


def field_options(cls, rename: dict[str, str] | None = None, hide: Iterable[str] = (),
                  only: Iterable[str] | None = None) -> list[FieldOption]:
    """The options of dataclass ``cls``'s fields, in field order: ``rename`` maps a field to the
    CLI's spelling (``{"run_dir": "run"}``: ``--run``), ``hide`` drops fields the command takes
    otherwise (or not at all), ``only`` keeps just those. A field with no command-line form (a
    dict, a nested config) must be hidden: TypeError, a programming error."""
    rename, hide = rename or {}, set(hide)
    keep = None if only is None else set(only)
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in hide or (keep is not None and f.name not in keep):
            continue
        tp, multiple, choices = _option_type(hints[f.name])
        if tp is None or f.default is dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{f.name} ({hints[f.name]}) has no command-line form; hide it")
        name = rename.get(f.name, f.name).replace("_", "-")
        invert = tp is bool and f.default is True
        default = f.default
        if multiple:
            default = () if default is None else tuple(default) if isinstance(default, tuple) else (default,)
        out.append(FieldOption(
            field=f.name, flag=f"--no-{name}" if invert else f"--{name}",
            dest=f"no_{f.name}" if invert else f.name, type=tp, default=default,
            help=f.metadata.get(HELP, ""), choices=choices, registry=f.metadata.get(REGISTRY),
            is_flag=tp is bool, invert=invert, multiple=multiple))
    return out


def config_kwargs(options: Iterable[FieldOption], params: dict) -> dict:
    """The config's keyword arguments from a command's parsed ``params``; the options' values are
    taken out of ``params``. A repeated / comma-separated option becomes a tuple of typed values."""
    out = {}
    for o in options:
        value = params.pop(o.dest)
        if o.invert:
            value = not value
        elif o.multiple:
            value = tuple(_coerce(part.strip(), o.type, o.flag) for v in value for part in str(v).split(",")
                          if part.strip())
        out[o.field] = value
    return out


def _option_type(tp) -> tuple[type | None, bool, tuple | None]:
    """(value type, multiple, Literal choices) of a field's type hint; (None, ...) when the
    command line cannot spell it."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        args = tuple(a for a in args if a is not type(None))
        seq = [a for a in args if typing.get_origin(a) is tuple]
        if seq:
            elem = typing.get_args(seq[0])
            return (elem[0] if elem else str), True, None
        if str in args:  # str | os.PathLike: a path
            return str, False, None
        return _option_type(args[0]) if len(args) == 1 else (None, False, None)
    if origin is Literal:
        return type(args[0]), False, args
    return (tp if tp in (int, float, str, bool) else None), False, None


__all__ = ["FieldOption", "config_kwargs", "field_options", "param", "parse_options", "parse_pairs",
           "typed_options"]
