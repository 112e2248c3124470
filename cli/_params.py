"""Click parameters shared by the commands, with choices read from the library's registries.

The registries are the one place a name is listed: ``cachekit.methods.METHODS``,
``cachekit.similarity.SIMILARITIES`` and ``cachekit.protocols.PROTOCOLS``. A :class:`RegistryChoice`
reads its registry the first time a value is checked or the help is shown, so importing a command
module stays light (the method registry imports torch).

The options of a run config (``TrainConfig``, ...) are made from its fields (:class:`ConfigFields`,
:func:`cachekit.options.field_options`): the CLI restates no default, choice list or help of theirs.
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


def registry_choice(source: str) -> RegistryChoice:
    """The :class:`RegistryChoice` of ``"module:NAME"``."""
    module, _, attr = source.partition(":")
    return RegistryChoice(module, attr)


def methods() -> RegistryChoice:
    return RegistryChoice("cachekit.methods", "METHODS")


def metrics() -> RegistryChoice:
    return RegistryChoice("cachekit.similarity", "SIMILARITIES")


def metrics_help(what: str) -> str:
    """``what``, then each metric of the registry with where it comes from (the papers, or
    clipcache's own variant); torch-free, so building the help imports nothing heavy."""
    from cachekit.similarity import SIMILARITIES

    return " ".join([what, *(f"{s.help}." for s in SIMILARITIES.values())])


# a registry whose entries say where they come from: the option's help lists them
_REGISTRY_HELP = {"cachekit.similarity:SIMILARITIES": metrics_help}


def protocols() -> RegistryChoice:
    return RegistryChoice("cachekit.protocols", "PROTOCOLS")


def formats() -> RegistryChoice:
    return RegistryChoice("cachekit.datasets", "FORMATS")


_KIND_HELP = {"episodes": "Episodic:", "videos": "All-way:"}  # a protocol's unit -> its options' help prefix


def given(ctx: click.Context, name: str) -> bool:
    """Whether option ``name`` was given on the command line (or its environment variable), not defaulted."""
    from click.core import ParameterSource

    return ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def unused_options(ctx: click.Context, unit: str) -> list[str]:
    """Options given on the command line that a protocol drawing ``unit`` ("episodes" or
    "videos") never reads: those whose help is the other kind's alone ("Episodic: ...", "All-way: ...")."""
    own = _KIND_HELP[unit]
    out = []
    for p in ctx.command.params:
        text = getattr(p, "help", None) or ""
        if text.startswith(tuple(_KIND_HELP.values())) and own not in text and given(ctx, p.name):
            out.append(p.opts[-1] if p.opts[-1].startswith("--") else p.opts[0])
    return out


def unused_note(ctx: click.Context, protocol: str) -> str | None:
    """A note naming the given options ``protocol`` did not use (None: every one was used)."""
    from cachekit.protocols import get_protocol

    unit = get_protocol(protocol).unit
    unused = unused_options(ctx, unit)
    if not unused:
        return None
    kind = "protocols that draw batches of videos (all-way, zero-shot, base-to-novel)" if unit == "episodes" \
        else "the episodic protocol"
    return (f"{', '.join(unused)} {'apply' if len(unused) > 1 else 'applies'} to {kind}; the {protocol} "
            f"protocol did not use {'them' if len(unused) > 1 else 'it'}")


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


# --------------------------------------------------------------------------- options from a config
class ConfigFields:
    """The options of a config dataclass's fields (:func:`cachekit.options.field_options`: its
    defaults, choices and help), declared once per command: ``@FIELDS.options`` puts them in the
    command's parameters, ``FIELDS.values(params)`` takes their values back out as the config's
    keyword arguments. ``config`` is the class or ``"module:Class"``, imported on first use: the
    config's module may import torch (``cachekit.evaluate``), and importing a command must not."""

    def __init__(self, config, rename: dict[str, str] | None = None, hide: tuple[str, ...] = (), only=None):
        self.config, self.kw = config, {"rename": rename, "hide": tuple(hide), "only": only}

    def config_class(self) -> type:
        if not isinstance(self.config, str):
            return self.config
        module, _, name = self.config.partition(":")
        return getattr(importlib.import_module(module), name)

    def specs(self) -> list:
        from cachekit.options import field_options

        return field_options(self.config_class(), **self.kw)

    def options(self, f):
        """Decorator: the options at this place of a :class:`ConfigCommand` / :class:`ConfigGroup`
        (made on first use of the command's ``params``)."""
        if isinstance(f, click.Command):  # applied after @click.command: expand now
            f.params.extend(_click_option(s) for s in self.specs())
        else:
            f.__dict__.setdefault("__click_params__", []).append(self)
        return f

    def values(self, params: dict) -> dict:
        """The config's keyword arguments, taken out of a command's ``params``."""
        from cachekit.options import config_kwargs

        return config_kwargs(self.specs(), params)


def _click_option(o) -> click.Option:
    """The click option of one :class:`cachekit.options.FieldOption`."""
    help = _REGISTRY_HELP[o.registry](o.help) if o.registry in _REGISTRY_HELP else o.help
    if o.is_flag:
        return click.Option([o.flag, o.dest], is_flag=True, default=False, help=help)
    if o.multiple:  # "--shots 1,5" or "--shots 1 --shots 5": typed by ConfigFields.values
        return click.Option([o.flag, o.dest], multiple=True, default=tuple(str(d) for d in o.default),
                            show_default=bool(o.default), help=help)
    kind = registry_choice(o.registry) if o.registry else click.Choice(o.choices) if o.choices else o.type
    return click.Option([o.flag, o.dest], type=kind, default=o.default, show_default=o.default is not None,
                        help=help)


class ConfigParams:
    """Mixin of a click command whose ``params`` hold :class:`ConfigFields` placeholders: they
    become the options of the config's fields on first use (parsing, help, a test's look)."""

    @property
    def params(self) -> list:
        ps = self.__dict__["_params"]
        if any(isinstance(p, ConfigFields) for p in ps):
            ps[:] = [o for p in ps for o in ([_click_option(s) for s in p.specs()]
                                             if isinstance(p, ConfigFields) else [p])]
        return ps

    @params.setter
    def params(self, value: list) -> None:
        self.__dict__["_params"] = value


class ConfigCommand(ConfigParams, click.Command):
    """A command with :class:`ConfigFields` options."""


class ConfigGroup(ConfigParams, click.Group):
    """A group with :class:`ConfigFields` options."""
