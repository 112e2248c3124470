"""The CLI's choices come from the registries, and ``-o/--opt KEY=VALUE`` is spelled and read the
same way by ``train``, ``eval`` and ``index`` (one parser: :mod:`cachekit.options`)."""

from __future__ import annotations

import click
import pytest
from helpers import invoke

from cachekit.errors import InputError
from cachekit.methods import METHODS
from cachekit.similarity import SIMILARITIES
from cachekit.options import parse_options, parse_pairs, typed_options
from cachekit.protocols import PROTOCOLS


def _option(command: click.Command, flag: str) -> click.Option:
    return next(p for p in command.params if flag in p.opts)


def test_choices_are_the_registries():
    from clipcache.cli.eval_cmd import eval_cmd
    from clipcache.cli.index_cmd import index
    from clipcache.cli.train_cmd import train

    assert tuple(_option(eval_cmd, "--metric").type.choices) == tuple(SIMILARITIES)
    assert tuple(_option(index, "--metric").type.choices) == tuple(SIMILARITIES)
    assert tuple(_option(eval_cmd, "--protocol").type.choices) == tuple(PROTOCOLS)
    assert tuple(_option(train, "--protocol").type.choices) == tuple(PROTOCOLS)
    assert tuple(_option(train, "--method").type.choices) == tuple(METHODS)
    for command in (train, eval_cmd, index):  # one spelling everywhere
        assert set(_option(command, "--opt").opts) == {"-o", "--opt", "--option"}


def test_one_parser_types_by_the_config():
    assert parse_pairs(["merge-before=true", "a=b=c"]) == {"merge_before": "true", "a": "b=c"}
    assert parse_options("zeroshot", ["template=0"]) == {"template": 0}
    assert typed_options("zeroshot", {"template": "null", "logit_scale": 50.0}) == {"template": None,
                                                                                  "logit_scale": 50.0}
    with pytest.raises(InputError, match="key=value"):
        parse_pairs(["template"])
    with pytest.raises(InputError, match="has no option templat"):
        typed_options("zeroshot", {"templat": "0"})
    with pytest.raises(InputError, match="one of mean, otam, bimhm"):
        parse_options("proto", ["metric=cosine"])


@pytest.mark.parametrize("args, message", [
    (["train", "--method", "nope", "--store", "s", "--out", "o"], "--method must be one of"),
    (["train", "--method", "proto", "--store", "s", "--out", "o", "--protocol", "nope"], "--protocol must be one of"),
    (["eval", "--store", "s", "--metric", "cosine"], f"--metric must be one of {', '.join(SIMILARITIES)}, not 'cosine'"),
    (["index", "--store", "s", "--out", "o", "-o", "logit_scale=2"], "does not change a prototype index"),
    (["index", "--store", "s", "--out", "o", "--metric", "mean", "--opt", "metric=otam"], "disagree"),
    (["index", "--store", "s", "--run", "r", "-o", "metric=otam"], "proto baseline's"),
])
def test_bad_choices_and_options_are_one_line_user_errors(args, message):
    code, out, err = invoke(args)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert message in err


def test_train_options_are_config_fields_method_flags_or_arguments():
    """Every ``train`` option lands somewhere: a TrainConfig field (read back by one helper), a
    method option flag, or a named argument of the command function; none is dropped."""
    import dataclasses
    import inspect

    from cachekit.train import TrainConfig
    from clipcache.cli.train_cmd import CONFIG, METHOD_FLAGS, train

    named = set(inspect.signature(train.callback).parameters) - {"params"}
    config = {f.name for f in dataclasses.fields(TrainConfig)}
    params = {p.name for p in train.params if p.expose_value}  # --storage-option acts in its callback
    assert params == (params & config) | set(METHOD_FLAGS) | named
    assert not named & config and "val_queries" not in params  # validation queries: the default, 1
    ctx = train.make_context("train", ["--method", "proto", "--store", "s", "--out", "o", "--ways", "3",
                                       "--seed", "2", "--alpha", "0.5"])
    values = dict(ctx.params)
    assert TrainConfig(**CONFIG.values(values)) == TrainConfig(ways=3, seed=2)
    assert set(values) == set(METHOD_FLAGS) | named and values["alpha"] == 0.5
