"""``clipcache eval``: score a method from the cache under one protocol and print accuracy ± CI.

Registered in :mod:`clipcache.cli.main` with ``cli.add_command(eval_cmd)``.
"""

from __future__ import annotations

import json

import click

from . import _params

_JSON_DROP = ("confusion", "class_names")


def _parse_shots(values: tuple[str, ...]) -> list[int]:
    from cachekit.errors import InputError

    out: list[int] = []
    for v in values:
        for part in str(v).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                out.append(int(part))
            except ValueError as err:
                raise InputError(f"--shots must be integers like 1 or 1,5, not {v!r}") from err
    return out or [1]


def _line(r) -> str:
    from cachekit.protocols import get_protocol

    return get_protocol(r.protocol).result_line(r)


@click.command("eval")
@_params.storage_options
@click.option("--store", required=True, help="Store made by `clipcache extract`.")
@click.option("--run", "run_dir", default=None, help="Trained run directory (its cache key must match the store).")
@click.option("--method", type=_params.methods(), default=None,
              help="No-training method: proto or zeroshot (default: proto for episodic, zeroshot otherwise).")
@_params.method_options("Method option, e.g. -o template=0 (zeroshot: one template instead of the mean).")
@click.option("--protocol", type=_params.protocols(), default=None,
              help="Protocol (required unless --run gives one).")
@click.option("--ways", default=5, show_default=True, help="Episodic: classes per episode (W).")
@click.option("--shots", multiple=True, default=("1",), show_default=True,
              help="K; repeat or comma-separate for an accuracy-vs-shots curve (episodic: support shots, "
                   "0 = query-only; allway: the K-shot list of proto).")
@click.option("--queries", default=1, show_default=True, help="Episodic: queries per class (Q).")
@click.option("--episodes", default=10_000, show_default=True, help="Episodic: number of episodes.")
@click.option("--metric", type=_params.metrics(), default="otam", show_default=True,
              help=_params.metrics_help("Prototype matching metric (methods with a metric option)."))
@click.option("--seed", default=0, show_default=True, help="Seed of episodes, K-shot lists, base/novel split.")
@click.option("--split", default=None, help="Split to evaluate (default: test, else val, else all videos).")
@click.option("--split-file", default=None, help="CLIP-FSAR / ViFi-CLIP split file to evaluate instead.")
@click.option("--video-root", default=None, help="Folder the split file's paths are relative to.")
@click.option("--episodes-file", default=None, help="Re-use the episodes of an earlier --out (episodes.json).")
@click.option("--batch-episodes", default=200, show_default=True, help="Episodes scored at once (no-training methods).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda[:N] or auto.")
@click.option("--allow-overlap", is_flag=True,
              help="Evaluate a run on videos (or, class-disjoint protocols, classes) it trained or selected on; "
                   "the report then says so first.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per result (one line each).")
@click.option("--out", "out_dir", default=None,
              help="Write results.json/.md, per-class accuracy, confusion and shots plots, episodes here.")
@click.option("--no-progress", is_flag=True, help="No progress bar (none either when stderr is not a terminal).")
@click.option("--pretrained", default=None,
              help="The store's weights (file or local-dir:DIR) when arrays must be added to it and its cache "
                   "key names a file.")
@_params.no_extend
def eval_cmd(store, run_dir, method, options, protocol, ways, shots, queries, episodes, metric, seed, split,
             split_file, video_root, episodes_file, batch_episodes, device, allow_overlap, as_json, out_dir,
             no_progress, pretrained, no_extend):
    """Evaluate a method on STORE's cached features: mean accuracy ± 95% CI.

    Arrays the method reads that the store lacks (tokens at a block, class text) are added to
    the store first, once, for the evaluated videos (one line on stderr; --no-extend refuses).
    """
    from cachekit.cache import FeatureCache
    from cachekit.errors import InputError
    from cachekit.evaluate import EvalConfig, evaluate
    from cachekit.options import parse_pairs
    from cachekit.progress import scope, wanted
    from cachekit.protocols import PROTOCOLS

    shot_list = _parse_shots(shots)
    opts = parse_pairs(options)  # typed by the method's Config once the method is known
    if run_dir is not None and (method is not None or opts):
        raise InputError("--run evaluates a trained run; --method and --option apply without --run")
    with FeatureCache(store) as cache, scope(wanted(no_progress)), \
            _params.extension(no_extend, wanted(no_progress), pretrained):
        if protocol is None and run_dir is None:
            raise InputError(f"--protocol is required ({', '.join(PROTOCOLS)})")
        cfg = EvalConfig(protocol=protocol, method=method, method_options=opts or None, run_dir=run_dir, ways=ways,
                         shots=tuple(shot_list), queries=queries, episodes=episodes, metric=metric, seed=seed,
                         split=split, split_file=split_file, video_root=video_root, episodes_file=episodes_file,
                         batch_episodes=batch_episodes, out_dir=out_dir, device=device, allow_overlap=allow_overlap)
        results = evaluate(cache, cfg)
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
        if out_dir is not None:
            click.echo(f"wrote the report to {out_dir}")


def _nan_null(x):
    """NaN (e.g. a class with no evaluated video) -> null, so the line stays valid JSON."""
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: _nan_null(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_null(v) for v in x]
    return x
