"""``clipcache index`` (build, add) and ``clipcache query``: support prototypes in FAISS, and
classifying new videos against them.

Registered in :mod:`clipcache.cli.main` with ``cli.add_command(index)`` and ``cli.add_command(query)``.
Imports of torch, faiss and cachekit stay inside the commands; ``query`` never imports open_clip.
"""

from __future__ import annotations

import json
import logging
import sys

import click

from . import _params

log = logging.getLogger("clipcache.query")

# IndexBuildConfig's fields are the options (-o KEY=VALUE: method_options; --no-onnx: onnx), and
# --kind is its IndexConfig's
CONFIG = _params.ConfigFields("cachekit.index.build:IndexBuildConfig", rename={"run_dir": "run"},
                              hide=("method_options", "batch_size", "index"))
INDEX = _params.ConfigFields("cachekit.index.faiss_index:IndexConfig", only=("kind",))


def _build_options(f):
    f = _params.no_extend(f)
    f = _params.storage_options(f)
    f = click.option("--no-progress", is_flag=True, help="No progress bar (none either when stderr is not a terminal).")(f)
    f = click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")(f)
    f = INDEX.options(f)
    f = CONFIG.options(f)
    f = _params.method_options("Without --run: an option of the proto baseline; only metric changes an index "
                               "(-o metric=otam is --metric otam).")(f)
    f = click.option("--out", default=None, help="Index directory (default with --run: RUN_DIR/index).")(f)
    f = click.option("--store", default=None, help="Store made by `clipcache extract` (the support videos).")(f)
    return f


def _build(store, out, options, as_json, no_progress=False, no_extend=False, **params):
    from cachekit.errors import InputError
    from cachekit.index.build import IndexBuildConfig, build_index
    from cachekit.index.faiss_index import IndexConfig
    from cachekit.options import parse_pairs
    from cachekit.progress import wanted

    if store is None:
        raise InputError("index needs --store STORE (the support videos); to add a class to an index use "
                         "`clipcache index add INDEX_DIR --class NAME VIDEO...`")
    cfg = IndexBuildConfig(method_options=parse_pairs(options) or None, index=IndexConfig(**INDEX.values(params)),
                           **CONFIG.values(params))
    with _params.extension(no_extend, wanted(no_progress), cfg.pretrained):
        s = build_index(store, out, cfg=cfg, progress=wanted(no_progress))
    if as_json:
        click.echo(json.dumps(s.to_dict()))
        return
    how = {"faiss": "FAISS cosine", "metric": f"FAISS shortlist re-ranked by {s.metric}",
           "method": f"FAISS shortlist re-ranked by {s.method}",
           "classifier": f"scored by {s.method}'s own class vectors (its logits)"}[s.scorer]
    click.echo(f"index {s.path}: {s.classes} classes from {s.support_videos} support videos, "
               f"method {s.method}, {how}, {s.kind} index; {s.seconds.get('total', 0.0):.1f}s")
    for note in s.notes:
        click.echo(f"note: {note}")


@click.group("index", cls=_params.ConfigGroup, invoke_without_command=True)
@_build_options
@click.pass_context
def index(ctx, **params):
    """Build the class-prototype index of STORE's support videos (or: `index add`).

    With --run, prototypes come from the trained method's support path and the index is written
    to RUN_DIR/index; without it, from the cached embeddings (the proto baseline with --metric).
    The frozen encoder and the method's query path are exported beside the index for `query`.
    """
    if ctx.invoked_subcommand is not None:
        return
    _build(**params)


@index.command("build", cls=_params.ConfigCommand)
@_build_options
def index_build(**params):
    """Same as `clipcache index` with options: build an index from a store."""
    _build(**params)


@index.command("add")
@click.argument("index_dir")
@click.argument("videos", nargs=-1, required=True)
@click.option("--class", "class_name", required=True, help="Name of the new class.")
@click.option("--run", "run_dir", default=None, help="The index's run (default: the one it remembers).")
@click.option("--pretrained", default=None, help="The store's weights, when its cache key names a file.")
@click.option("--backend", type=click.Choice(["auto", "torchcodec", "decord", "pyav"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--no-progress", is_flag=True, help="No progress bar (none either when stderr is not a terminal).")
def index_add(index_dir, videos, class_name, run_dir, pretrained, backend, as_json, no_progress):
    """Add a class to INDEX_DIR from a few VIDEOs of it, without retraining."""
    from cachekit.progress import wanted
    from cachekit.index.build import add_class

    s = add_class(index_dir, class_name, list(videos), run_dir, pretrained, backend, progress=wanted(no_progress))
    if as_json:
        click.echo(json.dumps(s.to_dict()))
    else:
        click.echo(f"index {s.path}: added class {class_name!r} from {s.support_videos} videos "
                   f"({s.classes} classes now)")
        for note in s.notes:
            click.echo(f"note: {note}")


@click.command("query")
@_params.storage_options  # the run's store, when query --run builds the run's index on first use
@click.argument("videos", nargs=-1, required=True)
@click.option("--run", "run_dir", default=None, help="Trained run (optional when --index is given).")
@click.option("--index", "index_dir", default=None, help="Index directory (default: RUN_DIR/index).")
@click.option("--top-k", default=5, show_default=True, help="Classes to print per video.")
@click.option("--shortlist", type=int, default=None,
              help="Classes FAISS passes to re-ranking (default: the index's setting).")
@click.option("--json", "as_json", is_flag=True,
              help='One JSON object per line and video: {"video": PATH, "top": [{"label", "score"}, ...]}, '
                   'with "encoder": the caveat when the encoder has TOY or RANDOM weights.')
@click.option("--explain", "explain_dir", default=None,
              help="Write one PNG per video here: its frames (with the method's mask) and per-frame scores.")
@click.option("--backend", type=click.Choice(["auto", "torchcodec", "decord", "pyav"]), default="auto", show_default=True)
@click.option("--pretrained", default=None,
              help="The store's weights (file or local-dir:DIR), when --run's index is built on first use "
                   "and the store's cache key names a file.")
@click.option("--engine", type=click.Choice(["auto", "onnx", "torch"]), default="auto", show_default=True,
              help="onnx: answer without importing torch (fast start; needs the index's encoder.onnx and "
                   "onnxruntime); torch: the exported torch graph; auto: onnx where the index allows it.")
@_params.no_extend
def query(videos, run_dir, index_dir, top_k, shortlist, as_json, explain_dir, backend, pretrained, engine, no_extend):
    """Classify VIDEO files: top-k classes of the index with their scores.

    With --run alone, the run's index (RUN_DIR/index) is used, and built from the run's store on
    first use (or again when the run was retrained since), which one line on stderr says (with -v
    also that an existing one was used).
    A video that cannot be decoded gets one error line on stderr naming it; the others are still
    answered, and the exit code is 1.
    """
    if index_dir is None and run_dir is not None:
        from cachekit.progress import wanted
        from cachekit.index.build import ensure_run_index

        with _params.extension(no_extend, wanted(), pretrained):
            index_dir, how, built = ensure_run_index(run_dir, pretrained, progress=wanted())
        if how == "existing":  # the usual case: said with -v only
            log.info("index: using %s (built before for this run)", index_dir)
        else:
            click.echo(f"index: {'built' if how == 'built' else 'rebuilt (the run was retrained, or its index predates this clipcache)'} {index_dir} "
                       f"from store {built.store}: {built.classes} classes, {built.support_videos} support videos "
                       f"({built.seconds.get('total', 0.0):.1f}s)", err=True)
    from cachekit.index.query import Classifier, QueryConfig, query_videos

    cfg = QueryConfig(top_k=top_k, shortlist=shortlist, backend=backend, explain_dir=explain_dir, engine=engine)
    clf = Classifier(index_dir, run_dir, shortlist, engine=engine)
    log.info("query engine: %s%s", clf.engine, f" ({clf.engine_note})" if clf.engine_note else "")
    if clf.caveat is not None:  # stderr; with --json also in every object (stdout: one answer per video)
        click.echo(f"note: {clf.caveat}", err=True)
    if clf.run_note is not None:  # the run was interrupted: its weights are not a finished training's
        click.echo(f"note: {clf.run_note}", err=True)
    failed = 0
    for res in query_videos(videos, cfg=cfg, classifier=clf):
        if res.error is not None:
            failed += 1
            click.echo(f"error: {' '.join(res.error.split())}", err=True)
            continue
        if as_json:
            click.echo(json.dumps(res.to_json(clf.caveat)))
        else:
            click.echo(res.video)
            width = max(len(h.label) for h in res.top) if res.top else 5
            for rank, h in enumerate(res.top, 1):
                click.echo(f"  {rank:>2}  {h.label:<{width}}  {h.score:9.4f}")
            if res.explanation:
                click.echo(f"  explanation: {res.explanation}")
        sys.stdout.flush()
    if failed:
        sys.exit(1)
