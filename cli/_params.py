"""Click parameters shared by the commands, with choices read from the library's registries.

The registries are the one place a name is listed: ``cachekit.methods.METHODS``,
``cachekit.similarity.SIMILARITIES`` and ``cachekit.protocols.PROTOCOLS``. A :class:`RegistryChoice`
reads its registry the first time a value is checked or the help is shown, so importing a command
module stays light (the method registry imports torch).
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


def metrics() -> RegistryChoice:
    return RegistryChoice("cachekit.similarity", "SIMILARITIES")


def metrics_help(what: str) -> str:
    """``what``, then each metric of the registry with where it comes from (the papers, or
    clipcache's own variant); torch-free, so building the help imports nothing heavy."""
    from cachekit.similarity import SIMILARITIES

    return " ".join([what, *(f"{s.help}." for s in SIMILARITIES.values())])


def protocols() -> RegistryChoice:
    return RegistryChoice("cachekit.protocols", "PROTOCOLS")


def formats() -> RegistryChoice:
    return RegistryChoice("cachekit.datasets", "FORMATS")


def no_extend(f):
    """``--no-extend``: refuse (one line) instead of adding missing arrays to the store."""
    return click.option("--no-extend", is_flag=True,
                        help="Refuse instead of adding arrays the store lacks (tokens at a block, class text) "
                             "to it; by default they are added once, for the videos this command reads.")(f)


def extension(no_extend: bool, progress: bool = False, pretrained: str | None = None):
    """The :func:`cachekit.autoextend.extension_policy` of a command: its one line goes to stderr."""
    from cachekit.autoextend import extension_policy

    return extension_policy(allow=not no_extend, notify=lambda line: click.echo(line, err=True),
                            progress=progress, pretrained=pretrained)


def method_options(help: str):
    """``-o / --opt / --option KEY=VALUE`` (repeatable), the same spelling on every command; the
    values are typed by the method's Config (:mod:`cachekit.options`)."""
    return click.option("-o", "--opt", "--option", "options", multiple=True, metavar="KEY=VALUE", help=help)


def _set_storage_options(ctx, param, values) -> None:
    """``KEY=VALUE`` pairs (a VALUE that parses as JSON is taken as such: numbers, true, {...})."""
    if not values:
        return
    import json

    from clipcache.stores import set_storage_options

    opts = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--storage-option must be KEY=VALUE, not {item!r}")
        try:
            opts[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            opts[key.strip()] = raw
    set_storage_options(opts)


def storage_options(f):
    """``--storage-option KEY=VALUE`` (repeatable): fsspec options for stores at URLs
    (``s3://...``), beside the standard ones (``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, ...)."""
    return click.option("--storage-option", "storage_option", multiple=True, metavar="KEY=VALUE",
                        expose_value=False, is_eager=True, callback=_set_storage_options,
                        help="fsspec option for a store at a URL, e.g. endpoint_url=http://host:9000 "
                             "(repeatable; AWS_ENDPOINT_URL and the other AWS_* variables work as usual).")(f)
