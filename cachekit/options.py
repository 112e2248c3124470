"""``KEY=VALUE`` method options (``-o`` / ``--opt``), one parser for ``train``, ``eval`` and ``index``.

:func:`parse_pairs` reads the syntax; :func:`typed_options` types the values by the method's
``Config`` (its type hints: numbers, booleans, ``None``, ``Literal`` choices, tuples), so a typo in
a key or a value fails at once with a one-line :class:`InputError` naming the allowed ones.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Iterable, Literal

from .errors import InputError

FLAG = "--opt"


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


__all__ = ["parse_options", "parse_pairs", "typed_options"]
