"""``clipcache pretrain-toy``: rebuild the toy CLIP's weights (:mod:`cachekit.toy.pretrain`).

Registered in :mod:`clipcache.cli.main` with ``cli.add_command(pretrain_toy)``.
"""

from __future__ import annotations

import click


@click.command("pretrain-toy")
@click.option("--out", default=None,
              help="Weights file to write (.safetensors; default: the one `--pretrained toy` loads, the "
                   "package's cachekit/data/toy-clip.safetensors unless CLIPCACHE_TOY_WEIGHTS names another).")
@click.option("--steps", type=int, default=None, help="Optimiser steps (default: the recipe's).")
@click.option("--batch-size", type=int, default=None, help="Captioned images per step (default: the recipe's).")
@click.option("--seed", type=int, default=None, help="Seed of the drawn images and the init (default: 0).")
@click.option("--threads", type=int, default=None,
              help="torch threads; part of what makes a rebuild byte-identical (default: the recipe's).")
@click.option("--probe-images", type=int, default=None,
              help="Held-out drawn images of the zero-shot probe (default: the recipe's).")
@click.option("--device", default=None, help="cpu or cuda[:N] (default: cpu).")
@click.option("--tower", default=None,
              help="Vision tower: stem_max (a normalised conv stem and max pooling, cachekit/toy/tower.py; the "
                   "default), vit (open_clip's ViT as the config builds it) or stem_max_scales (the stem shared "
                   "across input scales; measured, not shipped); saved in the file, which "
                   "--pretrained FILE then rebuilds.")
@click.option("--shape-loss", type=float, default=None,
              help="Weight of an auxiliary shape head on the image embedding, falling to 0 over the run "
                   "(default: 1; 0: none).")
@click.option("--sizing", type=click.Choice(["radius", "mixed"]), default=None,
              help="How a size word's radius is drawn per shape: radius (one radius for every shape, the default) or "
                   "mixed (scaled per object up to the disc's ink, so neither ink nor extent names the shape; measured, "
                   "not shipped).")
@click.option("--stem-dtype", type=click.Choice(["bfloat16", "float32"]), default=None,
              help="Autocast dtype of the conv stem while training (default: bfloat16, 0.8 of a float32 step "
                   "on 2 CPU cores; the weights are kept in float32 and saved in float16).")
@click.option("--size-words", type=click.FloatRange(0, 1), default=None,
              help="Probability that a lone subject's caption names its size, 'a small red square' (default: the "
                   "recipe's).")
@click.option("--no-progress", is_flag=True, help="No progress bar (none either when stderr is not a terminal).")
def pretrain_toy(out, steps, batch_size, seed, threads, probe_images, device, tower, shape_loss, sizing,
                 stem_dtype, size_words, no_progress):
    """Pretrain the toy CLIP contrastively on drawn, captioned still images and write its weights.

    Deterministic: the same options on the same machine give the same file. The toy encoder
    knows colours, shapes, places and words, not motion; what it measures says nothing about
    real CLIP on real videos.
    """
    from dataclasses import replace

    from cachekit.encoder import pick_device
    from cachekit.progress import wanted
    from cachekit.toy.files import toy_weights
    from cachekit.toy.pretrain import PretrainConfig, pretrain

    given = {"steps": steps, "batch_size": batch_size, "seed": seed, "threads": threads,
             "probe_images": probe_images, "device": None if device is None else pick_device(device), "tower": tower,
             "shape_loss": shape_loss, "sizing": sizing, "stem_dtype": stem_dtype,
             "size_words": size_words}
    recipe = PretrainConfig()
    if steps is not None and steps <= recipe.warmup:  # a short run warms up for a tenth of its steps
        given["warmup"] = steps // 10
    cfg = replace(recipe, **{k: v for k, v in given.items() if v is not None})
    path = toy_weights() if out is None else out
    report = pretrain(path, cfg, progress=wanted(no_progress))
    p = report["probe"]
    click.echo(f"wrote {path} ({report['seconds']:.1f}s, {cfg.steps} steps of {cfg.batch_size} images)")
    click.echo(f"probe on {p['images']} held-out drawn images, zero-shot: colour+shape {p['colour_and_shape']:.1f}%, "
               f"colour {p['colour']:.1f}%, shape {p['shape']:.1f}% (chance for colour+shape {p['chance']:.1f}%), "
               f"place {p['place']:.1f}% (chance {p['place_chance']:.1f}%)")
