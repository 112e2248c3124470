"""Methods, found by name through one plain dict: name -> module.

Each module exports ``Config`` (frozen dataclass), ``DESCRIPTION`` and
``build(cfg, info, frames, backbone=None) -> Method``. Nothing else knows method names.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType

from ..errors import InputError

METHODS: dict[str, str] = {
    # no training: the rows every table starts from
    "zeroshot": "cachekit.methods.zeroshot",
    "proto": "cachekit.methods.proto",
    # trained from the cache (after the frozen encoder)
    "linear_probe": "cachekit.methods.linear_probe",
    "ma_fsar": "cachekit.methods.ma_fsar",
    "clip_fsar": "cachekit.methods.clip_fsar",
    "ev_clip": "cachekit.methods.ev_clip",
    # through the backbone (prompts and adapters inside the encoder)
    "ez_clip": "cachekit.methods.ez_clip",
}


def method_module(name: str) -> ModuleType:
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return importlib.import_module(METHODS[name])


def make_config(name: str, overrides: dict | None = None):
    """The method's Config with ``overrides`` applied; unknown fields are an error."""
    mod = method_module(name)
    fields = {f.name for f in dataclasses.fields(mod.Config)}
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise InputError(f"method {name} has no option {', '.join(unknown)} (options: {', '.join(sorted(fields))})")
    try:
        return mod.Config(**overrides)
    except (TypeError, ValueError) as err:
        raise InputError(f"method {name}: {err}") from err


def build_method(name: str, overrides: dict | None, info, frames: int, backbone=None):
    """Build a method by name for a model (``ModelInfo``) and T frames."""
    mod = method_module(name)
    return mod.build(make_config(name, overrides), info, frames, backbone)
