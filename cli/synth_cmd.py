"""``clipcache synth``: the synthetic motion benchmark (labelled H.264 clips + split files)."""

from __future__ import annotations

import click

from cachekit.demo import FEWSHOT_HEADS


@click.command("synth")
@click.argument("out_dir", required=False)
@click.option("--classes", default="all", show_default=True, help="'all' or comma-separated class names.")
@click.option("--objects", default=None,
              help="Compositional classes (object x motion): 'default' (the vocabulary's action objects) or "
                   "comma-separated 'colour shape' objects, e.g. 'red square,blue disc'. Without it: motion only.")
@click.option("--videos-per-class", default=20, show_default=True)
@click.option("--frames", default=32, show_default=True)
@click.option("--size", default=224, show_default=True, help="Frame side in pixels (even).")
@click.option("--challenge", type=click.Choice(["none", "dark", "shake", "blur", "occlusion", "mixed"]),
              default="none", show_default=True)
@click.option("--clutter", type=click.Choice(["full", "low"]), default="full", show_default=True,
              help="low: plain background, no distractors (for small random-weight encoders).")
@click.option("--style", type=click.Choice(["default", "doodle"]), default="default", show_default=True,
              help="doodle: a second, independently drawn style (other motions, shapes, backgrounds and speeds; "
                   "motion classes only), to check what transfers from the default benchmark.")
@click.option("--splits", default="0.6,0.2,0.2", show_default=True, metavar="TRAIN,VAL,TEST",
              help="Shares of the classes in the class-disjoint train, val and test splits (5-way episodes need "
                   "5 classes in val and test: 0.5,0.25,0.25 gives 10 / 5 / 5 of the 20 motion classes).")
@click.option("--seed", default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Threads drawing and encoding clips (default: the cores available); the files are the same.")
@click.option("--list-classes", is_flag=True, help="Print the class names and exit.")
@click.option("--no-progress", is_flag=True, help="No progress bar (none either when stderr is not a terminal).")
def synth(out_dir, classes, objects, videos_per_class, frames, size, challenge, clutter, style, splits, seed,
          workers, list_classes, no_progress):
    """Write procedurally drawn action clips to OUT_DIR, with a CSV and CLIP-FSAR / ViFi-CLIP splits.

    Classes differ by motion (some are exact time-reversals of each other); with --objects each is
    one per object ("moving a red square from left to right"), with base-to-novel lists over unseen
    compositions. Challenges add low light, camera shake, blur or occlusion. Same seed, same frames.
    """
    from cachekit.progress import wanted
    from cachekit.synth import SynthConfig, synth_dataset

    object_list = None if objects is None else tuple(o.strip() for o in objects.split(",") if o.strip())
    if list_classes:
        lister = SynthConfig(objects=object_list, style=style)
        reversed_of = dict(lister.reversal_pairs())
        reversed_of |= {b: a for a, b in reversed_of.items()}
        for name in lister.all_classes:
            click.echo(name + (f"    (time-reversal of: {reversed_of[name]})" if name in reversed_of else ""))
        return
    if not out_dir:
        raise click.UsageError("missing OUT_DIR")
    names = None if classes == "all" else tuple(c.strip() for c in classes.split(",") if c.strip())
    try:
        shares = tuple(float(f) for f in splits.split(","))
    except ValueError:
        raise click.BadParameter(f"expected three numbers TRAIN,VAL,TEST, got {splits!r}", param_hint="--splits")
    cfg = SynthConfig(classes=names, videos_per_class=videos_per_class, frames=frames, size=size,
                      challenge=challenge, seed=seed, clutter=clutter, objects=object_list, style=style,
                      splits=shares)
    res = synth_dataset(out_dir, cfg, progress=wanted(no_progress), workers=workers)
    click.echo(f"wrote {len(res.videos)} clips of {len(res.classes)} classes to {res.out_dir}")
    click.echo(f"labels: {res.csv}")
    for split, names_ in res.splits.items():
        click.echo(f"split {split}: {len(names_)} classes")
    if res.b2n is not None:
        click.echo(f"base-to-novel (splits/b2n): {len(res.b2n['base'])} base, {len(res.b2n['novel'])} novel "
                   "compositions")
    if res.groups is not None:
        click.echo(f"probe groups (splits/groups): {len(res.groups['motion'])} motion_*, "
                   f"{len(res.groups['object'])} object_*")


@click.command("demo")
@click.option("--out", default="demo-out", show_default=True, help="Where every step writes its output.")
@click.option("--model", default=None,
              help="open_clip model name or JSON config (default: a small embedded one; with --pretrained toy "
                   "the toy config).")
@click.option("--pretrained", default="toy", show_default=True,
              help="Weights: 'random', 'toy' (clipcache's own small CLIP pretrained on drawn still images), "
                   "an open_clip tag, a weights file or local-dir:DIR.")
@click.option("--seed", default=0, show_default=True)
@click.option("--fewshot", type=click.Choice(list(FEWSHOT_HEADS)), default="clip_fsar", show_default=True,
              help="The few-shot head trained from the cache: CLIP-FSAR's, or MA-FSAR's TPCM.")
@click.option("--no-progress", is_flag=True, help="No progress bars (none either when stderr is not a terminal).")
def demo(out, model, pretrained, seed, fewshot, no_progress):
    """The main job end to end: synth, extract, train (from cache and through the backbone),
    evaluate, index and query; prints each step and where its output went, and first the three
    commands that do the same on your own videos."""
    from cachekit.demo import DemoConfig, run_demo
    from cachekit.progress import wanted

    run_demo(DemoConfig(out=out, model=model, pretrained=pretrained, seed=seed, fewshot=fewshot,
                        progress=wanted(no_progress)),
             echo=click.echo)
