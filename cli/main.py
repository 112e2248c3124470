"""``clipcache``: each command parses its options, calls one cachekit function, prints.

User errors (:class:`cachekit.errors.ClipcacheError`, :class:`stores.StoreError`) become one
line on stderr and exit code 2; never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys

import click

from cachekit.errors import ClipcacheError
from clipcache.cli import _params
from clipcache.stores import StoreError


class _Group(click.Group):
    def invoke(self, ctx):
        from clipcache.cli._output import json_stdout, wants_json

        args = [*getattr(ctx, "_protected_args", []), *ctx.args]
        try:
            if wants_json(args):  # stdout carries the JSON result alone
                with json_stdout():
                    return super().invoke(ctx)
            return super().invoke(ctx)
        except (ClipcacheError, StoreError) as err:
            click.echo(f"error: {err}", err=True)
            ctx.exit(2)
        except BrokenPipeError:  # `clipcache info S | head -1`: the reader left; click exits quietly (1)
            raise
        except OSError as err:  # the machine, not the input: disk full, permissions, a lost mount
            where = f" ({err.filename})" if err.filename else ""
            click.echo(f"error: {err.strerror or err}{where}; nothing committed was lost, re-run the "
                       "command once it is fixed", err=True)
            ctx.exit(2)
        except Exception as err:
            if not _remote_storage_error(err):
                raise
            # an object store's client (botocore, gcsfs, ...): no endpoint, no credentials, no bucket
            click.echo(f"error: {type(err).__name__}: {err}; check --storage-option / AWS_* settings and the "
                       "bucket; nothing committed was lost", err=True)
            ctx.exit(2)
        except KeyboardInterrupt as err:  # Ctrl-C: one line, what was kept and how to go on
            again = _resume_command(args)
            click.echo("interrupted" + (f": {err}" if str(err) else "") + (f"; resume with: {again}" if again else ""),
                       err=True)
            ctx.exit(130)


_REMOTE_CLIENTS = ("botocore", "aiobotocore", "s3fs", "gcsfs", "google.auth", "google.api_core", "adlfs", "azure")


def _remote_storage_error(err: BaseException) -> bool:
    """Whether ``err`` comes from an object store's client library (their errors are not OSErrors;
    matched by module prefix, so google.protobuf's, say, are not taken for a storage error)."""
    return any(c.__module__ == m or c.__module__.startswith(m + ".")
               for c in type(err).__mro__ for m in _REMOTE_CLIENTS)


def _as_the_store_was(store: str, cfg, pretrained: str | None, device: str):
    """Extending a store with no INPUT: the encoder and sampler its cache key names, where the
    command did not give --model / --pretrained / --frames / --seed itself (their defaults name
    ViT-B-32's OpenAI weights and 8 frames, which a store of other settings refuses)."""
    import functools
    from dataclasses import replace

    from cachekit.cachekey import key_sampler
    from cachekit.encoder import load_clip
    from cachekit.runs import check_store_encoder, store_encoder_config
    from clipcache.stores import open_store

    ctx = click.get_current_context()
    given = functools.partial(_params.given, ctx)
    with open_store(store, "r") as st:
        key = st.attrs.get("cache_key") or {}
    enc = None
    if key and not given("model"):  # the config too: Ray's actors load the encoder from it themselves
        cfg = replace(cfg, encoder=store_encoder_config(key, pretrained if given("pretrained") else None, device))
        enc = check_store_encoder(load_clip(cfg.encoder), key)
    if key.get("frames") and not given("frames") and not given("seed"):
        cfg = replace(cfg, sampler=key_sampler(key, cfg.sampler.views if given("views") else None))
    return cfg, enc


def _resume_command(args: list[str]) -> str | None:
    """The command that continues an interrupted ``train`` (``--resume``) or ``extract`` (the same
    command: what is cached is skipped); None for other commands."""
    import shlex

    if not args or args[0] not in ("train", "extract"):
        return None
    rest = list(args)
    if args[0] == "train" and "--resume" not in rest:
        rest.append("--resume")
    return "clipcache " + shlex.join(rest)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Few-shot and zero-shot video action recognition on CLIP, trained from a feature cache."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _model_options(f):
    f = click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")(f)
    f = click.option("--quick-gelu/--no-quick-gelu", default=None,
                     help="Force QuickGELU on/off (default: from the tag or model name).")(f)
    f = click.option("--pretrained", default="openai", show_default=True,
                     help="open_clip tag, weights file, local-dir:DIR, 'toy' (clipcache's own small CLIP "
                          "pretrained on drawn still images, with its model config) or 'random'.")(f)
    f = click.option("--model", default="ViT-B-32", show_default=True,
                     help="open_clip model name or a JSON file with a model_cfg (with --pretrained toy: "
                          "the toy config).")(f)
    return f


def warn_encoder(caveat: str | None) -> None:
    """The encoder's caveat (:func:`cachekit.caveat.encoder_caveat`: random or toy weights), one
    bold line on stderr; nothing for real CLIP weights."""
    if caveat is None:
        return
    from cachekit.caveat import RANDOM_CAVEAT

    click.secho(f"{'WARNING' if caveat == RANDOM_CAVEAT else 'NOTE'}: {caveat}.", fg="yellow", err=True, bold=True)


@cli.command()
@click.argument("inputs", nargs=-1, required=False)
@click.option("--store", required=True, help="Store path (Zarr directory; a path ending .h5 uses HDF5).")
@_model_options
@click.option("--frames", default=8, show_default=True, help="Frames sampled per video (T).")
@click.option("--views", default=1, show_default=True, help="Views per video (view 0: segment centres).")
@click.option("--seed", default=0, show_default=True, help="Seed of extra views and random weights.")
@click.option("--tokens-at", default="", help="Cache the tokens entering these blocks, e.g. 6 or 6,9.")
@click.option("--pixels", is_flag=True,
              help="Also cache the resized, centre-cropped uint8 frames (read by backbone methods).")
@click.option("--templates", default="single", show_default=True, help="single, ma_fsar16, or a file.")
@click.option("--video-root", default=None,
              help="Folder the lists' videos are under (UCF-101/, hmdb51_org/, the SSv2 or Kinetics video folder).")
@click.option("--format", "fmt", type=_params.formats(), default=None,
              help="Read every list / folder INPUT as this layout instead of the one its content names.")
@click.option("--fold", type=int, default=None,
              help="UCF101 / HMDB51 split folder given as INPUT: which fold's lists [1].")
@click.option("--fps", type=float, default=None,
              help="Frame folders: their frame rate (timestamps only) [30].")
@click.option("--class-names", default=None,
              help="Names for text: an id,name CSV (ids 0.. in the data set's class order, or its own class ids), "
                   "a names file, or a folder of {train,val,test}_classes.txt for CLIP-FSAR splits.")
@click.option("--batch-size", default=32, show_default=True, help="Frames per encoder forward.")
@click.option("--workers", default=None, type=int, help="Decoding threads (default: cores a CPU encoder leaves, >= 1; all with CUDA).")
@click.option("--backend", type=click.Choice(["auto", "torchcodec", "decord", "pyav"]), default="auto", show_default=True)
@click.option("--retry-failed", is_flag=True, help="Retry videos that failed in an earlier run.")
@click.option("--commit-every", default=32, show_default=True,
              help="Videos per batch commit (a kill loses at most this many videos' work).")
@click.option("--shard", default=None, metavar="I/N",
              help="Extract share I of N of the inputs (0 <= I < N, by path: the same share on every rerun and "
                   "machine), e.g. --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT. Shares write one store "
                   "at once, each as writer shard-I-of-N.")
@click.option("--writer", default=None, metavar="ID",
              help="This run's writer id in the store (default: shard-I-of-N with --shard, else a fresh one); "
                   "a second live writer with the same id is refused.")
@click.option("--status", "status_only", is_flag=True,
              help="Print what STORE holds of the inputs (done, failed, pending; per share with --shard I/N) "
                   "and exit without extracting.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: decode as Ray tasks and encode in a pool of Ray actors (pip install 'clipcache[ray]').")
@click.option("--address", default=None, help="Ray cluster to join (--engine ray; default: RAY_ADDRESS, "
                                              "else a local Ray started for this run).")
@_params.storage_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def extract(inputs, store, model, pretrained, quick_gelu, device, frames, views, seed, tokens_at,
            pixels, templates, video_root, fmt, fold, fps, class_names, batch_size, workers, backend, retry_failed,
            commit_every, shard, writer, status_only, engine, address, as_json, no_progress):
    """Decode INPUT videos, run the frozen encoder once, and cache its outputs in STORE.

    INPUT: video files or globs; a public data set's own lists as downloaded (UCF101
    ucfTrainTestlist/, HMDB51 testTrainMulti_7030_splits/, Something-Something v2 JSON, Kinetics
    CSV); CLIP-FSAR / OTAM / CMN / TRX / ViFi-CLIP split files; a CSV path,label; a list of
    paths; a folder with one sub-folder of videos per class; frame folders. Each is recognised
    by its content (--format overrides). An existing STORE asked for more arrays (--tokens-at,
    --pixels, --templates) is extended in place: only what is missing is computed. Without
    INPUT, only the videos already in STORE are extended.
    """
    from cachekit.coverage import coverage_lines
    from cachekit.encoder import EncoderConfig
    from cachekit.extract import ExtractConfig, extract as run_extract, parse_blocks
    from cachekit.inputs import collect_inputs
    from cachekit.shards import parse_shard
    from cachekit.video import SamplerConfig

    share = parse_shard(shard)
    if status_only:
        from cachekit.shards import input_status

        if not inputs:
            from cachekit.errors import InputError

            raise InputError("--status needs the INPUT videos to compare the store with")
        items = collect_inputs(list(inputs), video_root=video_root, class_names=class_names, fmt=fmt, fold=fold)
        _print_status(input_status(store, items, share.count if share else 1), as_json,
                      only=share.index if share else None)
        return

    cfg = ExtractConfig(
        encoder=EncoderConfig(model=model, pretrained=pretrained, quick_gelu=quick_gelu, seed=seed, device=device),
        sampler=SamplerConfig(frames=frames, views=views, seed=seed),
        tokens_at=parse_blocks(tokens_at),
        templates=templates,
        batch_size=batch_size,
        workers=workers,
        backend=backend,
        retry_failed=retry_failed,
        commit_every=commit_every,
        pixels=pixels,
        fps=fps,
    )
    enc = None
    if inputs:
        items = collect_inputs(list(inputs), video_root=video_root, class_names=class_names, fmt=fmt, fold=fold)
    else:
        from cachekit.inputs import InputSet
        from clipcache.stores import store_exists

        if not store_exists(store):
            from cachekit.errors import InputError

            raise InputError(f"no INPUT given and no store at {store} to extend; pass video files, "
                             "globs, a list/CSV/split file or a folder")
        items = InputSet()
        cfg, enc = _as_the_store_was(store, cfg, pretrained, device)
    if engine == "ray":
        from cachekit.ray_engine import extract_ray

        s = extract_ray(items, store, cfg, address=address, shard=share, writer=writer,
                        progress=not no_progress and sys.stderr.isatty(), enc=enc)
    else:
        s = run_extract(items, store, cfg, progress=not no_progress and sys.stderr.isatty(), shard=share,
                        writer=writer, enc=enc)
    if int(os.environ.get("RANK", "0")) > 0:
        return  # under torchrun, rank 0 reports for the whole job
    if as_json:
        click.echo(json.dumps(s.to_dict()))
    else:
        rate = s.frames / s.seconds["encode"] if s.seconds["encode"] else 0.0
        for line in coverage_lines(s.coverage, "in the store"):
            click.echo(line)
        click.echo(f"store {s.store}: {s.extracted} extracted, {s.already_done} already cached, "
                   + (f"{s.extended} extended, " if s.extended else "")
                   + f"{len(s.failed)} failed, {s.skipped_failed} skipped (failed before), "
                   f"{s.text_classes} new classes' text; {s.wall:.1f}s "
                   f"(decode {s.seconds['decode']:.1f}s, encode {s.seconds['encode']:.1f}s at {rate:.1f} frames/s)")
        for note in s.notes:
            click.echo(f"note: {note}")
        for path, reason in s.failed:
            click.echo(f"failed: {reason}", err=True)
    warn_encoder(s.encoder)
    if s.failed or s.skipped_failed:  # inputs that failed before still have no features
        sys.exit(1)


def _print_status(st, as_json: bool, only: int | None = None) -> None:
    """Per share: inputs done (in the store), failed (recorded failures), pending (neither)."""
    shares = [s for s in st.shards if only is None or s.shard == only]
    if as_json:
        d = st.to_dict()
        d["shards"] = [s for s in d["shards"] if only is None or s["shard"] == only]
        click.echo(json.dumps(d))
        return
    n = len(st.shards)
    for s in shares:
        who = f"shard {s.shard}/{n}" if n > 1 else "inputs"
        click.echo(f"{who}: {s.inputs} inputs, {s.done} done, {s.failed} failed, {s.pending} pending")
    if only is None and n > 1:
        t = st.totals
        click.echo(f"all: {t['inputs']} inputs, {t['done']} done, {t['failed']} failed, {t['pending']} pending")
    failed = [p for s in shares for p in s.failed_paths]
    if failed:
        click.echo(f"retry the {len(failed)} failed with the same command and --retry-failed", err=True)


@cli.command()
@click.argument("store")
@click.option("--inputs", "inputs", multiple=True, metavar="INPUT",
              help="Compare the store with these inputs (as extract takes them; repeatable): per share, "
                   "done, failed and pending.")
@click.option("--shards", default=1, show_default=True, help="With --inputs: how many shares (extract --shard I/N).")
@click.option("--video-root", default=None, help="With --inputs: the folder split-file paths are relative to.")
@click.option("--class-names", default=None, help="With --inputs: as extract's --class-names.")
@click.option("--format", "fmt", type=_params.formats(), default=None, help="With --inputs: as extract's --format.")
@click.option("--fold", type=int, default=None, help="With --inputs: as extract's --fold (the store's fold).")
@_params.storage_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info(store, inputs, shards, video_root, class_names, fmt, fold, as_json):
    """Summarise STORE: videos, failures, cache key, array shapes."""
    from cachekit.cache import FeatureCache
    from cachekit.coverage import coverage_lines

    if inputs:
        from cachekit.inputs import collect_inputs
        from cachekit.shards import input_status

        items = collect_inputs(list(inputs), video_root=video_root, class_names=class_names, fmt=fmt, fold=fold)
        _print_status(input_status(store, items, shards), as_json)
        return

    with FeatureCache(store) as cache:
        d = cache.info()
        if as_json:
            d["failed_videos"] = {v["path"]: v["reason"] for v in cache.failed().values()}
            click.echo(json.dumps(d, indent=None))
            return
        k = d["cache_key"]
        for line in coverage_lines(d["coverage"], "in the store"):
            click.echo(line)
        click.echo(f"store      {d['store']}")
        click.echo(f"videos     {d['videos']} complete, {d['failed']} failed, {d['classes']} classes"
                   + (f" ({len(d['class_ids'])} with the data set's own ids, e.g. {next(iter(d['class_ids'].values()))!r}"
                      f" -> {next(iter(d['class_ids']))!r})" if d["class_ids"] else ""))
        click.echo(f"model      {k.get('model')} ({k.get('weights')}, sha256 {str(k.get('weights_sha256'))[:12]}, "
                   f"quick_gelu={k.get('quick_gelu')})")
        click.echo(f"sampling   T={k.get('frames')} views={k.get('views')} tokens_at={k.get('tokens_at')} "
                   f"pixels={bool(k.get('pixels'))}")
        if d.get("encoder"):
            click.echo(f"encoder    {d['encoder']}")
        for name, s in d["splits"].items():
            click.echo(f"split      {name}: {s['videos']} videos" + (f", {s['missing']} missing" if s["missing"] else ""))
        for name, shape in d["arrays"].items():
            click.echo(f"array      {name} {shape}")


@cli.command()
@click.argument("store")
@click.option("--repair", is_flag=True, help="Uncommit bad entries so that extract redoes them.")
@click.option("--gc", "gc_", is_flag=True,
              help="Remove leftovers of interrupted writes and duplicate copies of videos (not live writers').")
@_params.storage_options
@click.option("--json", "as_json", is_flag=True)
def verify(store, repair, gc_, as_json):
    """Re-hash every cached entry of STORE against its commit record (exit 1 if any is bad)."""
    from cachekit.verify import verify_store

    rep = verify_store(store, repair=repair, gc=gc_)
    click.echo(json.dumps(rep.to_dict()) if as_json else rep.line())
    for b in rep.bad:
        click.echo(f"bad: {b}", err=True)
    if rep.duplicates and not gc_ and not as_json:
        n = {g: sum(d.startswith(f"{g}/") for d in rep.duplicates) for g in ("videos", "text")}
        what = " and ".join(f"{c} {'videos' if g == 'videos' else 'class texts'}" for g, c in n.items() if c)
        click.echo(f"{what} were committed twice (by two writers); readers take one copy, "
                   "`clipcache verify --gc` removes the others", err=True)
    if rep.bad and not repair:
        sys.exit(1)


def _register() -> None:
    """Commands defined in their own modules (imports there stay lazy)."""
    from clipcache.cli.eval_cmd import eval_cmd
    from clipcache.cli.index_cmd import index, query
    from clipcache.cli.store_cmd import convert
    from clipcache.cli.synth_cmd import demo, synth
    from clipcache.cli.toy_cmd import pretrain_toy
    from clipcache.cli.train_cmd import methods, train

    for cmd in (synth, train, methods, eval_cmd, index, query, demo, convert, pretrain_toy):
        cli.add_command(cmd)


_register()


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cli(prog_name="clipcache")


if __name__ == "__main__":
    main()
