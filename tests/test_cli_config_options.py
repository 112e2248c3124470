"""``train``, ``eval`` and ``index`` take their run-config options from the config dataclasses
(:func:`cachekit.options.field_options`): every option named like a field has the field's default
and choices, so the CLI and the library cannot drift apart; the check itself catches a drifted copy."""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from typing import Literal

import click
import pytest

from cachekit.errors import InputError
from cachekit.evaluate import EvalConfig
from cachekit.index.build import IndexBuildConfig
from cachekit.index.faiss_index import IndexConfig
from cachekit.options import param
from cachekit.train import TrainConfig
from clipcache.cli import _params
from clipcache.cli.eval_cmd import eval_cmd
from clipcache.cli.index_cmd import index, index_build
from clipcache.cli.train_cmd import train


def _choices(cls, f: dataclasses.Field) -> tuple | None:
    """The values field ``f`` allows: its Literal's, or the keys of the registry it names."""
    if "registry" in f.metadata:
        module, _, name = f.metadata["registry"].partition(":")
        return tuple(getattr(importlib.import_module(module), name))
    tp = typing.get_type_hints(cls)[f.name]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    return typing.get_args(tp) if typing.get_origin(tp) is Literal else None


def drift(command: click.Command, cls) -> tuple[int, list[str]]:
    """(options named like a field of ``cls``, how their defaults or choices differ from it). A
    ``--no-X`` flag stands for a bool field ``X`` that defaults to True; a repeatable option for a
    tuple field, its default spelt as strings."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    matched, problems = 0, []
    for p in command.params:
        if not isinstance(p, click.Option):
            continue
        inverted = p.is_flag and p.name.startswith("no_") and p.name[3:] in fields
        name = p.name[3:] if inverted else p.name
        if name not in fields:
            continue
        matched += 1
        f = fields[name]
        want = f.default
        if inverted:
            want = not want
        elif p.multiple:
            want = tuple(str(v) for v in (want if isinstance(want, tuple) else (want,)))
        if p.default != want:
            problems.append(f"{p.opts[0]}: default {p.default!r}, {cls.__name__}.{name} {want!r}")
        have = tuple(p.type.choices) if isinstance(p.type, click.Choice) else None
        if have != _choices(cls, f):
            problems.append(f"{p.opts[0]}: choices {have}, {cls.__name__}.{name} {_choices(cls, f)}")
        if p.help is None or f.metadata.get("help", "") not in p.help:
            problems.append(f"{p.opts[0]}: help {p.help!r} is not {cls.__name__}.{name}'s")
    return matched, problems


@pytest.mark.parametrize("command, cls, least", [
    (train, TrainConfig, 16), (eval_cmd, EvalConfig, 17), (index, IndexBuildConfig, 8),
    (index_build, IndexBuildConfig, 8), (index, IndexConfig, 1), (index_build, IndexConfig, 1),
])
def test_options_have_the_configs_defaults_choices_and_help(command, cls, least):
    matched, problems = drift(command, cls)
    assert matched >= least and problems == []


def _help(cls, name: str) -> str:
    return next(f for f in dataclasses.fields(cls) if f.name == name).metadata["help"]


@dataclasses.dataclass(frozen=True)
class _DriftedTrain(TrainConfig):
    ways: int = param(6, help=_help(TrainConfig, "ways"))
    protocol: str | None = param(None, help=_help(TrainConfig, "protocol"))  # no registry: free text


@dataclasses.dataclass(frozen=True)
class _DriftedIndex(IndexConfig):
    kind: Literal["auto", "flat"] = param("auto", help="FAISS index.")


def test_the_check_catches_a_drifted_config():
    """The real commands against drifted copies of their configs, and a command built from a
    drifted copy against the real config: each difference is named."""
    _, problems = drift(train, _DriftedTrain)
    assert any(p.startswith("--ways: default 5") for p in problems)
    assert any(p.startswith("--protocol: choices") for p in problems)
    _, problems = drift(index, _DriftedIndex)
    assert problems == ["--kind: choices ('auto', 'flat', 'ivf', 'hnsw'), _DriftedIndex.kind ('auto', 'flat')",
                        f"--kind: help {_help(IndexConfig, 'kind')!r} is not _DriftedIndex.kind's"]

    @click.command(cls=_params.ConfigCommand)
    @_params.ConfigFields(_DriftedTrain, hide=("val_queries",)).options
    def drifted(**params):
        """A train command generated from the drifted config."""

    matched, problems = drift(drifted, TrainConfig)
    assert matched == 16 and len(problems) == 2 and problems[0].startswith("--protocol: choices None")
    assert problems[1] == "--ways: default 6, TrainConfig.ways 5"


def test_generated_options_read_back_as_the_config():
    """Renamed (``--run``), inverted (``--no-onnx``), nested (``--kind``) and repeated /
    comma-separated (``--shots 1,5 --shots 10``) options give the config the CLI always built."""
    from clipcache.cli.eval_cmd import CONFIG as EVAL
    from clipcache.cli.index_cmd import CONFIG as INDEX_BUILD, INDEX

    ctx = eval_cmd.make_context("eval", ["--store", "s", "--run", "r", "--shots", "1,5", "--shots", "10",
                                         "--out", "o", "--allow-overlap"])
    cfg = EvalConfig(**EVAL.values(dict(ctx.params)))
    assert (cfg.run_dir, cfg.shots, cfg.out_dir, cfg.allow_overlap, cfg.protocol) == ("r", (1, 5, 10), "o", True, None)
    assert EvalConfig(**EVAL.values(dict(eval_cmd.make_context(
        "eval", ["--store", "s", "--protocol", "episodic"]).params))).shots == (1,)  # the default, as a list
    with pytest.raises(InputError, match="--shots must be an integer, not 'x'"):
        EVAL.values(dict(eval_cmd.make_context("eval", ["--store", "s", "--shots", "1,x"]).params))

    params = dict(index_build.make_context("build", ["--store", "s", "--no-onnx", "--kind", "hnsw",
                                                     "--run", "r"]).params)
    cfg = IndexBuildConfig(index=IndexConfig(**INDEX.values(params)), **INDEX_BUILD.values(params))
    assert (cfg.onnx, cfg.index.kind, cfg.run_dir, cfg.metric) == (False, "hnsw", "r", None)
    assert set(params) == {"store", "out", "options", "as_json", "no_progress", "no_extend"}
    with pytest.raises(click.BadParameter):
        index_build.make_context("build", ["--kind", "annoy"])


@pytest.mark.parametrize("kwargs, message", [
    (dict(run_dir="r", metric="otam"), "--metric is the proto baseline's"),
    (dict(run_dir="r", method_options={"metric": "otam"}), "--opt is the proto baseline's"),
    (dict(metric="mean", method_options={"metric": "otam"}), "disagree"),
    (dict(method_options={"logit_scale": "2"}), "does not change a prototype index"),
    (dict(metric="cosine"), "--metric must be one of"),
])
def test_index_rules_live_in_the_config(kwargs, message):
    """The rules ``clipcache index`` checked by itself are IndexBuildConfig's, for library callers too."""
    with pytest.raises(InputError, match=message):
        IndexBuildConfig(**kwargs)


def test_index_config_types_the_baseline_options():
    cfg = IndexBuildConfig(method_options={"metric": "otam"})
    assert cfg.metric == cfg.baseline_metric == "otam" and IndexBuildConfig().baseline_metric == "mean"
