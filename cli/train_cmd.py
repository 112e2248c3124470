"""``clipcache train`` and ``clipcache methods``; registered in :mod:`clipcache.cli.main` with ``cli.add_command``."""

from __future__ import annotations

import json
import os
import sys

import click

from . import _params


# the TrainConfig fields that are options (validation queries: the default, 1)
CONFIG = _params.ConfigFields("cachekit.train:TrainConfig", hide=("val_queries",))


@click.command("train", cls=_params.ConfigCommand)
@_params.storage_options
@click.option("--method", type=_params.methods(), required=True, help="Method name (see `clipcache methods`).")
@click.option("--store", required=True, help="Feature store to train from.")
@click.option("--out", required=True, help="Run directory to create (or continue with --resume).")
@CONFIG.options  # --protocol .. --device: TrainConfig's fields
@click.option("--threads", default=0, show_default=True, type=click.IntRange(min=0),
              help="CPU threads (0: torch's default; 1 is often fastest for heads on a shared CPU).")
@click.option("--resume", is_flag=True, help="Continue the unfinished run in --out.")
@click.option("--pretrained", default=None,
              help="Encoder weights (file or local-dir:DIR) for methods that run the backbone, when the "
                   "store's key names a file.")
@_params.method_options("Method option (repeatable), e.g. -o ffn_dim=64 (see `clipcache methods`).")
@click.option("--modules", default=None, help="Method option modules (ma_fsar: tpcm, fgma, all).")
@click.option("--metric", default=None,
              help=_params.metrics_help("Method option metric (ma_fsar also takes trx, its trainable head)."))
@click.option("--prompts", default=None, help="Method option prompts (ev_clip: context, mask, both).")
@click.option("--alpha", type=float, default=None, help="Method option alpha (ma_fsar text weight).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@_params.no_extend
@click.option("--log-every", default=10, show_default=True,
              help="Steps between points of the TensorBoard curves written in --out (loss, lr, throughput).")
def train(method, store, out, options, resume, pretrained, threads, as_json, no_progress, no_extend, log_every,
          **params):
    """Train a method from a feature store into a run directory (best-on-validation weights).

    Arrays the method reads that the store lacks (tokens at a block, class text) are added to
    the store first, once, for the videos the run reads (one line on stderr; --no-extend refuses).
    """
    from cachekit.coverage import coverage_lines
    from cachekit.train import TrainConfig, train as run_train

    overrides = _method_overrides(method, options, params)  # -o KEY=VALUE and the shortcut flags
    cfg = TrainConfig(**CONFIG.values(params))  # --protocol .. --device
    if set(params) - set(METHOD_FLAGS):  # an option that reaches neither: a programming error
        raise TypeError(f"train options {sorted(set(params) - set(METHOD_FLAGS))} are neither TrainConfig "
                        "fields nor method flags")
    progress = not no_progress and sys.stderr.isatty()
    with _params.extension(no_extend, progress, pretrained):
        r = run_train(store, out, method, overrides, cfg, resume=resume, pretrained=pretrained,
                      progress=progress, threads=threads, log_every=log_every)
    if int(os.environ.get("RANK", "0")) > 0:
        return  # under torchrun, rank 0 reports for the job
    unused = _params.unused_note(click.get_current_context(), r.protocol)
    if unused:
        r.notes.append(unused)
    if as_json:
        click.echo(json.dumps(r.to_dict()))
        return
    for line in coverage_lines(r.coverage, "used by the run"):
        click.echo(line)
    best = "no validation" if r.best_val_accuracy is None else (
        f"best val accuracy {r.best_val_accuracy:.2f}% at step {r.best_step}")
    click.echo(f"run {r.run_dir}: {r.status}, {r.protocol} protocol, {r.step}/{r.steps} steps, {best}, "
               f"{r.trainable_params:,} trainable parameters, {r.seconds:.1f}s")
    sp = r.split
    if sp:
        parts = ", ".join(f"{n} {sp[n]['videos']:,} videos / {sp[n]['classes']:,} classes"
                          for n in ("train", "val", "test") if n in sp)
        selects = " (val selects the checkpoint)" if r.best_val_accuracy is not None else ""
        click.echo(f"split ({sp.get('source')}; recorded in {sp.get('file')}): {parts}{selects}")
    for note in r.notes:
        click.echo(f"note: {note}")


# method options that have a flag of their own (the others: -o KEY=VALUE)
METHOD_FLAGS = ("modules", "metric", "prompts", "alpha")


def _method_overrides(method: str, options: tuple[str, ...], flags: dict) -> dict:
    """Config overrides of ``method``: ``-o KEY=VALUE`` typed by its Config, then the flags given."""
    from cachekit.options import parse_options

    overrides = parse_options(method, options)
    overrides.update({k: flags[k] for k in METHOD_FLAGS if flags.get(k) is not None})
    return overrides


@click.command("methods")
@click.argument("names", nargs=-1)
@click.option("--model", default="ViT-B-32", show_default=True, help="open_clip model name or a JSON model config.")
@click.option("--frames", default=8, show_default=True, help="Frames per video (T).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def methods(names, model, frames, as_json):
    """List every method (or NAMES) and its variants: what it reads from the cache, whether it runs
    the backbone, its trainable parameters for --model (built with random weights)."""
    from cachekit.train import list_methods

    rows = list_methods(model, frames, names or None)
    if as_json:
        click.echo(json.dumps(rows))
        return
    table = [("method", "variant", "runs on", "reads", "protocols", "trainable", "name")]
    for r in rows:
        variant = ",".join(f"{k}={v}" for k, v in r["variant"].items()) or "-"
        if not r["available"]:
            table.append((r["name"], variant, "unavailable", r["error"], "", "", ""))
            continue
        needs = r["needs"]
        reads = [k for k in ("emb", "cls", "text", "pixels") if needs[k]]
        reads += [f"tokens@{','.join(map(str, needs['tokens_at']))}"] if needs["tokens_at"] else []
        count = f"{r['trainable_params']:,}" if r["trainable_params"] is not None else f"({r['trainable_note']})"
        table.append((r["name"], variant, "backbone" if r["needs_backbone"] else "cache", "+".join(reads),
                      "/".join(r["protocols"]), count, r["display_name"]))
    widths = [max(len(row[i]) for row in table if row[2] != "unavailable" or i < 3) for i in range(6)]
    for row in table:
        if row[2] == "unavailable":
            click.echo("  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3])
        else:
            click.echo("  ".join(c.ljust(w) for c, w in zip(row[:6], widths)) + "  " + row[6])
