"""Click parameters shared by the commands, with choices read from the library's registries.

The registries are the one place a name is listed: ``cachekit.methods.METHODS``,
``cachekit.metrics.SIMILARITIES`` and ``cachekit.protocols.PROTOCOLS``. A :class:`RegistryChoice`
reads its registry the first time a value is checked or the help is shown, so importing a command
module stays light (``cachekit.metrics`` imports torch).
"""

from __future__ import annotations

import importlib
from typing import Sequence

import click

from cachekit.errors import InputError


class RegistryChoice(click.Choice):
    """``click.Choice`` over the keys of ``module.attr``, read on first use. A value not among them
    is a user error like any other: one line naming it and the choices, exit 2."""

    def __init__(self, module: str, attr: str, case_sensitive: bool = True):
        self._source = (module, attr)
        self._choices: tuple[str, ...] | None = None
        self.case_sensitive = case_sensitive

    @property
    def choices(self) -> Sequence[str]:
        if self._choices is None:
            module, attr = self._source
            self._choices = tuple(getattr(importlib.import_module(module), attr))
        return self._choices

    def convert(self, value, param, ctx):
        if value in self.choices:
            return value
        flag = max(param.opts, key=len) if param is not None and param.opts else "value"
        raise InputError(f"{flag} must be one of {', '.join(self.choices)}, not {value!r}")


def methods() -> RegistryChoice:
    return RegistryChoice("cachekit.methods", "METHODS")


METRIC_NOTE = ("otam_centred is clipcache's own variant, not the papers' OTAM: OTAM on clip-centred frames, each "
               "clip's mean frame removed")


def metrics() -> RegistryChoice:
    return RegistryChoice("cachekit.metrics", "SIMILARITIES")


def protocols() -> RegistryChoice:
    return RegistryChoice("cachekit.protocols", "PROTOCOLS")


def method_options(help: str):
    """``-o / --opt / --option KEY=VALUE`` (repeatable), the same spelling on every command; the
    values are typed by the method's Config (:mod:`cachekit.options`)."""
    return click.option("-o", "--opt", "--option", "options", multiple=True, metavar="KEY=VALUE", help=help)
