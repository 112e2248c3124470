"""Writing the data set: mp4 files, ``videos.csv``, the CLIP-FSAR and ViFi-CLIP split files, for
compositional classes also the base-to-novel lists and the probe groups, and ``synth.json``
(layout in :mod:`cachekit.synth`), resumable."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from clipcache.stores.base import atomic_write_bytes

from ..cpu import usable_cores
from ..errors import InputError
from .classes import SPLITS, SynthConfig, describe, slugify
from .render import clip_challenge, render_clip
from .splits import (BASE_VAL_FRACTION, MOTION_FAMILIES, NOVEL_PERIOD, base_novel_compositions, base_novel_videos,
                     composition_groups, split_classes)


FORMAT_VERSION = 1
log = logging.getLogger(__name__)


@dataclass
class SynthResult:
    """What :func:`synth_dataset` wrote. ``splits`` maps split name -> class names (class-disjoint).

    Compositional data sets only (else None): ``b2n`` maps "base" / "novel" -> class names (None
    too when no composition could be held out); ``groups`` maps "motion" / "object" -> group name
    -> class names, each group's list written as ``splits/groups/<kind>_<slug>.txt``.
    """

    out_dir: Path
    csv: Path
    videos: list[Path]
    classes: list[str]
    splits: dict[str, list[str]]
    b2n: dict[str, list[str]] | None = None
    groups: dict[str, dict[str, list[str]]] | None = None


# --------------------------------------------------------------------------------------------
# Files


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: int) -> Path:
    """Write [T, H, W, 3] uint8 RGB as H.264 (libx264, yuv420p, crf 18). The same frames give the
    same bytes: one thread, and x264's C code instead of its assembly (``asm=0``; at 112 px the
    assembly's output varied with what the process had done before, a few grey levels per pixel).
    Written atomically and durably (:func:`clipcache.stores.base.atomic_write_bytes`)."""
    import av  # lazy: heavy

    path = Path(path)
    t_len, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise InputError(f"yuv420p needs even frame sizes, got {w}x{h}")
    buf = io.BytesIO()  # a clip is small: muxed in memory, then written durably in one step
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream(
            "libx264", rate=fps, options={"crf": "18", "preset": "veryfast", "x264-params": "asm=0"}
        )
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.thread_count = 1
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    atomic_write_bytes(path, buf.getvalue())
    return path


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _config_dict(cfg: SynthConfig) -> dict:
    d = asdict(cfg)
    d["classes"] = None if cfg.classes is None else list(cfg.classes)
    d["splits"] = list(cfg.splits)
    if cfg.objects is None:  # motion only: synth.json stays as it was before compositions existed
        del d["objects"]
    else:
        d["objects"] = list(cfg.objects)
    if cfg.style == "default":  # as before styles existed, so older data sets still resume
        del d["style"]
    return d


def _vifi_list(lines: list[tuple[str, int]]) -> str:
    """ViFi-CLIP list text: ``relpath label`` per line."""
    return "".join(f"{rel} {label}\n" for rel, label in lines)


def _labels_csv(classes: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "name"])
    writer.writerows([i, c] for i, c in enumerate(classes))
    return buf.getvalue()


def _compositional_meta(
    cfg: SynthConfig, classes: list[str], b2n: dict[str, list[str]] | None, groups: dict[str, dict[str, list[str]]]
) -> dict:
    """What ``synth.json`` adds for compositional classes: objects, each class's (object, motion
    class), the base-to-novel split and its rule, the probe groups and their files."""
    return {
        "objects": list(cfg.objects),
        "compositions": {c: list(cfg.resolve(c)) for c in classes},
        "b2n": None if b2n is None else {
            **b2n,
            "rule": f"object i x motion family j is novel when (i + j) % {NOVEL_PERIOD} == 0, unless "
                    "that leaves its object or its motion family without a base composition",
            "motion_families": [list(f) for f in MOTION_FAMILIES],
            "base_val_fraction": BASE_VAL_FRACTION,
            "files": {name: f"splits/b2n/{name}.txt" for name in ("train", "base_val", "novel_val")},
        },
        "groups": {
            kind: {name: {"file": f"splits/groups/{kind}_{slugify(name)}.txt", "classes": members}
                   for name, members in by_name.items()}
            for kind, by_name in groups.items()
        },
    }


def _write_compositional_lists(
    out_dir: Path, cfg: SynthConfig, classes: list[str], rel: dict[tuple[str, int], str],
    b2n: dict[str, list[str]] | None, groups: dict[str, dict[str, list[str]]],
) -> None:
    """ViFi-CLIP lists of a compositional data set, labels indexing ``classes`` (a labels.csv
    beside them): ``splits/b2n/{train,base_val,novel_val}.txt`` and ``splits/groups/*.txt``."""
    label = {c: i for i, c in enumerate(classes)}
    if b2n is not None:
        b2n_dir = out_dir / "splits" / "b2n"
        b2n_dir.mkdir(parents=True, exist_ok=True)
        for name, clips in base_novel_videos(b2n, cfg.videos_per_class, cfg.seed).items():
            _write_text(b2n_dir / f"{name}.txt", _vifi_list([(rel[job], label[job[0]]) for job in clips]))
        _write_text(b2n_dir / "labels.csv", _labels_csv(classes))
    group_dir = out_dir / "splits" / "groups"
    group_dir.mkdir(parents=True, exist_ok=True)
    for kind, by_name in groups.items():
        for name, members in by_name.items():
            lines = [(rel[(c, i)], label[c]) for c in members for i in range(cfg.videos_per_class)]
            _write_text(group_dir / f"{kind}_{slugify(name)}.txt", _vifi_list(lines))
    _write_text(group_dir / "labels.csv", _labels_csv(classes))


def synth_dataset(
    out_dir: str | os.PathLike, cfg: SynthConfig, progress: bool = False, workers: int | None = None
) -> SynthResult:
    """Render and write the benchmark under ``out_dir`` (layout in the module docstring), on
    ``workers`` threads (None: the cores this process may use; the files are the same either way).

    Resumable: ``synth.json`` is written first with ``"complete": false`` and last with
    ``true``; a rerun with the same config keeps the mp4s already there (each is renamed into
    place only once complete), and a rerun with a different config is refused.
    """
    out_dir = Path(out_dir)
    meta_path = out_dir / "synth.json"
    config = _config_dict(cfg)
    resume = False
    if meta_path.exists():
        try:
            old = json.loads(meta_path.read_text(encoding="utf-8"))["config"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise InputError(f"{meta_path} is not a synth.json; choose another out_dir") from err
        differ = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
        if differ:
            raise InputError(
                f"{out_dir} holds a synthetic data set made with other settings "
                f"({', '.join(differ)}); choose another out_dir or delete it"
            )
        resume = True

    classes = list(cfg.class_names)
    pairs = cfg.reversal_pairs()
    splits = split_classes(classes, cfg.splits, cfg.seed, cfg.keep_pairs_together, pairs)
    side = {c: part for part, names in splits.items() for c in names}
    apart = [[a, b] for a, b in pairs if side[a] != side[b] and "train" in (side[a], side[b])]
    if apart:  # keep_pairs_together=False, or split sizes that no whole pair fits
        log.warning("%d reversal pairs are split between training and held-out classes (e.g. %r / %r): a held-out "
                    "clip of one is a training clip of the other played backwards", len(apart), *apart[0])
    label = {c: i for i, c in enumerate(classes)}
    slugs = {c: slugify(c) for c in classes}
    if len(set(slugs.values())) != len(slugs):
        raise InputError(f"class names collide as file names: {slugs}")

    meta = {
        "format_version": FORMAT_VERSION,
        "generator": "cachekit.synth",
        "complete": False,
        "config": config,
        "classes": classes,
        "descriptions": {c: cfg.class_table[c].description if obj is None else describe(obj, motion)
                         for c, (obj, motion) in ((c, cfg.resolve(c)) for c in classes)},
        "reversal_pairs": [[a, b] for a, b in pairs],
        "splits": splits,
        "reversal_pairs_apart": apart,  # pairs whose classes train on one side and are held out on the other
    }
    b2n = groups = None
    if cfg.compositional:
        b2n = base_novel_compositions(classes, cfg.objects)
        groups = composition_groups(classes)
        if b2n is None:
            log.warning("no composition can be held out (every held-out one would leave its object or motion "
                        "unseen): no splits/b2n lists written; use two objects or more")
        elif cfg.videos_per_class < 2:
            log.warning("one video per class: splits/b2n/base_val.txt is empty (base classes' clips all train)")
        meta.update(_compositional_meta(cfg, classes, b2n, groups))
    out_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        _write_text(meta_path, json.dumps(meta, indent=2) + "\n")

    jobs = [(c, i) for c in classes for i in range(cfg.videos_per_class)]
    rel = {job: f"videos/{slugs[job[0]]}/{slugs[job[0]]}_{job[1]:03d}.mp4" for job in jobs}
    bar = None
    if progress:
        from tqdm import tqdm  # lazy

        bar = tqdm(total=len(jobs), desc="synth", unit="video")

    stop = threading.Event()  # set by the first failure: no thread starts another clip

    def write(job: tuple[str, int]) -> Path | None:
        path = out_dir / rel[job]
        if stop.is_set():
            return None  # never collected: an earlier job's failure is raised first
        try:
            if not (resume and path.exists()):
                path.parent.mkdir(parents=True, exist_ok=True)
                write_mp4(path, render_clip(job[0], job[1], cfg), cfg.fps)
        except BaseException:
            stop.set()
            raise
        return path

    # Clips are drawn and encoded on threads (x264 and much of NumPy release the GIL): each clip's
    # frames come from its own seed, and its encoder is single-threaded, so the bytes are the same.
    # A failure or Ctrl-C stops every clip not started (those being written finish, atomically).
    videos = []
    pool = ThreadPoolExecutor(max(1, min(workers or usable_cores(), len(jobs))))
    try:
        for path in pool.map(write, jobs):
            videos.append(path)
            if bar is not None:
                bar.update()
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label"])
    writer.writerows([rel[job], job[0]] for job in jobs)
    csv_path = out_dir / "videos.csv"
    _write_text(csv_path, buf.getvalue())

    fsar, vifi = out_dir / "splits" / "clip_fsar", out_dir / "splits" / "vifi"
    fsar.mkdir(parents=True, exist_ok=True)
    vifi.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        names = splits[split]
        few_shot = [
            f"{split}{k}//{rel[(c, i)]}"
            for k, c in enumerate(names)
            for i in range(cfg.videos_per_class)
        ]
        _write_text(fsar / f"{split}_few_shot.txt", "".join(line + "\n" for line in few_shot))
        _write_text(fsar / f"{split}_classes.txt", "".join(c + "\n" for c in names))
        vifi_lines = [
            f"{rel[(c, i)]} {label[c]}" for c in names for i in range(cfg.videos_per_class)
        ]
        _write_text(vifi / f"{split}.txt", "".join(line + "\n" for line in vifi_lines))
    _write_text(vifi / "labels.csv", _labels_csv(classes))
    if groups is not None:
        _write_compositional_lists(out_dir, cfg, classes, rel, b2n, groups)

    meta["complete"] = True
    meta["videos"] = len(jobs)
    if cfg.challenge == "mixed":
        meta["clip_challenges"] = {rel[(c, i)]: clip_challenge(c, i, cfg) for c, i in jobs}
    _write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    return SynthResult(out_dir, csv_path, videos, classes, splits, b2n, groups)
