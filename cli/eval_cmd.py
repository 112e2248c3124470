"""``clipcache eval``: score a method from the cache under one protocol and print accuracy ± CI.

Registered in :mod:`clipcache.cli.main` with ``cli.add_command(eval_cmd)``.
"""

from __future__ import annotations

import json

import click

from . import _params

_JSON_DROP = ("confusion", "class_names")


def _line(r) -> str:
    from cachekit.protocols import get_protocol

    return get_protocol(r.protocol).result_line(r)


# EvalConfig's fields are its options (-o KEY=VALUE: method_options, typed once the method is known)
CONFIG = _params.ConfigFields("cachekit.evaluate:EvalConfig", rename={"run_dir": "run", "out_dir": "out"},
                              hide=("method_options",))


@click.command("eval", cls=_params.ConfigCommand)
@_params.storage_options
@click.option("--store", required=True, help="Store made by `clipcache extract`.")
@_params.method_options("Method option, e.g. -o template=0 (zeroshot: one template instead of the mean).")
@CONFIG.options  # --protocol, --method, --run, --ways .. --allow-overlap
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per result (one line each).")
@click.option("--no-progress", is_flag=True, help="No progress bar (none either when stderr is not a terminal).")
@click.option("--pretrained", default=None,
              help="The store's weights (file or local-dir:DIR) when arrays must be added to it and its cache "
                   "key names a file.")
@_params.no_extend
def eval_cmd(store, options, as_json, no_progress, pretrained, no_extend, **params):
    """Evaluate a method on STORE's cached features: mean accuracy ± 95% CI.

    Arrays the method reads that the store lacks (tokens at a block, class text) are added to
    the store first, once, for the evaluated videos (one line on stderr; --no-extend refuses).
    """
    from cachekit.cache import FeatureCache
    from cachekit.evaluate import EvalConfig, evaluate
    from cachekit.options import parse_pairs
    from cachekit.progress import scope, wanted

    # the method's options are typed by its Config once the method is known
    cfg = EvalConfig(method_options=parse_pairs(options) or None, **CONFIG.values(params))
    with FeatureCache(store) as cache, scope(wanted(no_progress)), \
            _params.extension(no_extend, wanted(no_progress), pretrained):
        results = evaluate(cache, cfg)
    ctx = click.get_current_context()
    for r in results:
        unused = _params.unused_note(ctx, r.protocol)
        if unused:
            r.notes.append(unused)
        if _params.given(ctx, "shots") and r.shots not in cfg.shot_list:
            r.notes.append(f"--shots {','.join(map(str, cfg.shot_list))} was not used: "
                           + (f"the result is {r.shots}-shot (a trained run's K, or the episodes file's)"
                              if r.shots is not None else f"{r.method} under the {r.protocol} protocol draws "
                              "no K-shot list"))
    overlap = next((r.overlap for r in results if r.overlap), None)
    if overlap and not as_json:
        click.echo(f"NOT A HELD-OUT RESULT (--allow-overlap): {overlap}")
    if results and results[0].coverage and not as_json:
        from cachekit.coverage import coverage_lines

        for line in coverage_lines(results[0].coverage, "evaluated"):
            click.echo(line)
    caveat = next((r.encoder for r in results if r.encoder), None)
    if caveat and not as_json:
        click.echo(f"encoder: {caveat}")
    prompts = list(dict.fromkeys(r.templates for r in results if r.templates))
    if prompts and not as_json:  # the prompt set is part of a text method's number (protocols.md 6.7)
        click.echo(f"prompts: {'; '.join(prompts)}")
    for r in results:
        if as_json:
            d = {k: v for k, v in r.to_dict().items() if k not in _JSON_DROP}
            click.echo(json.dumps(_nan_null(d), allow_nan=False, default=str))
        else:
            click.echo(_line(r))
    if not as_json:
        notes = list(dict.fromkeys(n for r in results for n in r.notes))
        for n in notes:
            click.echo(f"note: {n}")
        if cfg.out_dir is not None:
            click.echo(f"wrote the report to {cfg.out_dir}")


def _nan_null(x):
    """NaN (e.g. a class with no evaluated video) -> null, so the line stays valid JSON."""
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: _nan_null(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_null(v) for v in x]
    return x
