"""Miniature copies of public data sets in their official layouts, written by the tests (never
downloaded): the annotation files byte for byte as /work/shared/spec/datasets.md describes them
(names, record syntax, CRLF where the originals have it, quoting), with a few classes and clips,
and the videos in their real containers: MPEG-4 Part 2 in AVI (UCF101, HMDB51), VP9 in WebM
(Something-Something v2), H.264 in mp4 (Kinetics), JPEG frame folders (TSN / TRX).

Each ``make_*`` returns a :class:`Layout`: where things are and what a correct reader must find
(videos per split, class ids, names), so tests compare against it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helpers import synth_frames, write_h264, write_video

FRAMES, HEIGHT, WIDTH = 10, 32, 48  # per clip: tiny, enough for 4-8 sampled frames


@dataclass
class Layout:
    """A written miniature layout: its annotation files, video root and what should be read."""

    root: Path
    video_root: Path
    lists: dict[str, Path] = field(default_factory=dict)  # role -> annotation file (or folder)
    want: dict[str, dict[str, str]] = field(default_factory=dict)  # split -> {video path: class id}
    names: dict[str, str] = field(default_factory=dict)  # class id -> display name
    missing: dict[str, int] = field(default_factory=dict)  # split -> listed but absent videos
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------- containers
def write_avi_mpeg4(path, frames: np.ndarray, fps: int = 25) -> Path:
    """MPEG-4 Part 2 (the XviD family UCF101 and HMDB51 ship) in an AVI container."""
    return write_video(path, frames, "mpeg4", fps, {"qscale": "3"}, container="avi")


def write_webm_vp9(path, frames: np.ndarray, fps: int = 12) -> Path:
    """VP9 in WebM, as Something-Something v2 ships its clips (12 fps)."""
    return write_video(path, frames, "libvpx-vp9", fps, {"deadline": "realtime", "cpu-used": "8"}, container="webm")


def write_jpeg_folder(folder, frames: np.ndarray, pattern: str = "img_{:05d}.jpg", start: int = 1) -> Path:
    """A frame folder: one JPEG per frame named ``pattern.format(start + i)``."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / pattern.format(start + i), quality=90)
    return folder


def _clip(seed: int) -> np.ndarray:
    return synth_frames(seed, FRAMES, HEIGHT, WIDTH)


def _write_lines(path: Path, lines: list[str], eol: str = "\n", final: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((eol.join(lines) + (eol if final else "")).encode())
    return path


# ------------------------------------------------------------------------------------- UCF101
UCF_CLASSES = ["ApplyEyeMakeup", "HandstandPushups", "YoYo", "PlayingDaf"]
UCF_NAMES = {"ApplyEyeMakeup": "apply eye makeup", "HandstandPushups": "handstand pushups", "YoYo": "yo yo",
             "PlayingDaf": "playing daf"}


def make_ucf101(root, classes: list[str] = UCF_CLASSES, groups=(1, 8, 15, 22), clips: int = 2) -> Layout:
    """``UCF-101/<Class>/v_<Class>_gGG_cCC.avi`` + ``ucfTrainTestlist/`` (classInd, 3 train/test
    lists, CRLF). Test split k = groups 7k-6..7k; HandstandPushups' files are spelt
    ``v_HandStandPushups_*`` as in the original."""
    root = Path(root)
    videos, lists = root / "UCF-101", root / "ucfTrainTestlist"
    lay = Layout(root, videos, names={c: UCF_NAMES.get(c, c) for c in classes})
    rows: list[tuple[str, str, int]] = []  # (class, file, group)
    seed = 0
    for c in classes:
        stem = "HandStandPushups" if c == "HandstandPushups" else c
        for g in groups:
            for k in range(1, clips + 1):
                name = f"v_{stem}_g{g:02d}_c{k:02d}.avi"
                write_avi_mpeg4(videos / c / name, _clip(1000 + seed))
                seed += 1
                rows.append((c, name, g))
    _write_lines(lists / "classInd.txt", [f"{i} {c}" for i, c in enumerate(classes, 1)], "\r\n")
    ids = {c: i for i, c in enumerate(classes, 1)}
    for fold in (1, 2, 3):
        test = [r for r in rows if 7 * fold - 6 <= r[2] <= 7 * fold]
        train = [r for r in rows if r not in test]
        _write_lines(lists / f"trainlist{fold:02d}.txt", [f"{c}/{n} {ids[c]}" for c, n, _ in train], "\r\n")
        _write_lines(lists / f"testlist{fold:02d}.txt", [f"{c}/{n}" for c, n, _ in test], "\r\n")
        if fold == 1:
            lay.want = {"train": {str(videos / c / n): c for c, n, _ in train},
                        "test": {str(videos / c / n): c for c, n, _ in test}}
    lay.lists = {"folder": lists, "classInd": lists / "classInd.txt", "train": lists / "trainlist01.txt",
                 "test": lists / "testlist01.txt"}
    return lay


# ------------------------------------------------------------------------------------- HMDB51
HMDB_CLASSES = ["brush_hair", "kick", "kick_ball"]
HMDB_SOURCES = ["April_09", "(Rad)Schlag_die_Bank!", "Brushing_Her_Hair__[_NEW_AUDIO_]_UPDATED!!!!", "Veoh_Alpha_Dog"]


def make_hmdb51(root, classes: list[str] = HMDB_CLASSES, per_class: int = 6) -> Layout:
    """``hmdb51_org/<class>/<name>.avi`` + ``testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt``
    (``name.avi 1|2|0``; per fold, of each class's clips half train, a third test, the rest unused)."""
    root = Path(root)
    videos, lists = root / "hmdb51_org", root / "testTrainMulti_7030_splits"
    lay = Layout(root, videos, names={c: c.replace("_", " ") for c in classes})
    seed = 0
    clips: dict[str, list[str]] = {}
    for c in classes:
        for i in range(per_class):
            name = f"{HMDB_SOURCES[i % len(HMDB_SOURCES)]}_{c}_{'fhul'[i % 4]}_cm_np1_{['fr', 'ba', 'le', 'ri'][i % 4]}_goo_{i}.avi"
            write_avi_mpeg4(videos / c / name, _clip(2000 + seed))
            seed += 1
            clips.setdefault(c, []).append(name)
    for fold in (1, 2, 3):
        for c, names in clips.items():
            marks = [("1", "2", "0", "1", "2", "1")[(i + fold) % 6] for i in range(len(names))]
            # whitespace after the mark is not pinned down by any verified copy: one line has it
            lines = [f"{n} {m}" + (" " if i == 0 else "") for i, (n, m) in enumerate(zip(names, marks))]
            _write_lines(lists / f"{c}_test_split{fold}.txt", lines)
            if fold == 1:
                for n, m in zip(names, marks):
                    if m != "0":
                        lay.want.setdefault({"1": "train", "2": "test"}[m], {})[str(videos / c / n)] = c
    lay.lists = {"folder": lists, "files": sorted(lists.glob("*_test_split1.txt"))}
    return lay


# ------------------------------------------------------------------------------------- SSv2
SSV2_TEMPLATES = ["Holding [something] next to [something]", "Pushing [something] from left to right",
                  "[Something] falling like a feather or paper"]


def make_ssv2(root, templates: list[str] = SSV2_TEMPLATES, train: int = 3, val: int = 2, test: int = 2) -> Layout:
    """``20bn-something-something-v2/<id>.webm`` + ``something-something-v2-{labels,train,validation,test}.json``
    (one record per line, as the 20BN files are laid out; parsed as JSON all the same)."""
    root = Path(root)
    videos = root / "20bn-something-something-v2"
    classes = sorted(t.replace("[", "").replace("]", "") for t in templates)
    lay = Layout(root, videos, names={str(i): c for i, c in enumerate(classes)})
    labels = {c: str(i) for i, c in enumerate(classes)}
    root.mkdir(parents=True, exist_ok=True)
    (root / "something-something-v2-labels.json").write_text(
        "{\n" + ",\n".join(f' "{c}":"{i}"' for c, i in labels.items()) + "\n}\n")
    vid = 78680
    for split, count, fname in (("train", train, "train"), ("val", val, "validation"), ("test", test, "test")):
        recs = []
        for t in templates:
            for _ in range(count):
                vid += 1
                write_webm_vp9(videos / f"{vid}.webm", _clip(vid))
                if split == "test":
                    recs.append({"id": str(vid)})
                else:
                    things = ["potato", "vicks vaporub bottle"][: t.count("[")]
                    label = t
                    for th in things:
                        label = label[:label.index("[")] + th + label[label.index("]") + 1:]
                    recs.append({"id": str(vid), "label": label.lower(), "template": t, "placeholders": things})
                lay.want.setdefault(split, {})[str(videos / f"{vid}.webm")] = (
                    None if split == "test" else labels[t.replace("[", "").replace("]", "")])
        text = "[\n" + ",\n".join(json.dumps(r, separators=(",", ":")) for r in recs) + "\n]\n"
        (root / f"something-something-v2-{fname}.json").write_text(text)
        lay.lists[split] = root / f"something-something-v2-{fname}.json"
    lay.lists["labels"] = root / "something-something-v2-labels.json"
    return lay


# ------------------------------------------------------------------------------------- Kinetics
K400_CLASSES = ["abseiling", "air drumming", "passing American football (not in game)"]
_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


def _ytid(rng: np.random.Generator, first_dash: bool = False) -> str:
    s = "".join(rng.choice(list(_ID_CHARS), 11))
    return ("-" + s[1:]) if first_dash else s


def make_kinetics(root, classes: list[str] = K400_CLASSES, train: int = 3, val: int = 2, missing: int = 1,
                  per_class_folders: bool = False, version: int = 400) -> Layout:
    """``kinetics400/{train,val}/<ytid>_<s:06d>_<e:06d>.mp4`` (CVDF: flat; ``per_class_folders``:
    mmaction2's ``<split>/<label_with_underscores>/``) + ``kinetics-400_{train,val}.csv`` (header,
    ``is_cc`` for 400, labels with spaces double-quoted), LF. ``missing`` listed val clips are not
    written (taken down on YouTube)."""
    root = Path(root)
    videos = root / f"kinetics{version}"
    lay = Layout(root, videos, names={c: c for c in classes})
    rng = np.random.default_rng(version)
    header = "label,youtube_id,time_start,time_end,split" + (",is_cc" if version == 400 else "")
    seed = 0
    for split, count in (("train", train), ("val", val)):
        lines = [header]
        gone = missing if split == "val" else 0
        for c in classes:
            for k in range(count):
                yid = _ytid(rng, first_dash=(k == 0))
                if k == 1:
                    yid = yid[:6] + "_" + yid[7:]  # an id with "_": clip names split from the right
                start = int(rng.integers(0, 300))
                label = f'"{c}"' if (" " in c and version == 400) else c
                lines.append(f"{label},{yid},{start},{start + 10},{split}" + (",0" if version == 400 else ""))
                clip = f"{yid}_{start:06d}_{start + 10:06d}.mp4"
                folder = videos / split / (c.replace(" ", "_") if per_class_folders else "")
                if gone and k == count - 1:
                    gone -= 1
                    lay.missing[split] = lay.missing.get(split, 0) + 1
                    continue
                write_h264(folder / clip, _clip(3000 + seed))
                seed += 1
                lay.want.setdefault(split, {})[str(folder / clip)] = c
        csv = _write_lines(root / f"kinetics-{version}_{split}.csv", lines)
        lay.lists[split] = csv
    return lay


# ------------------------------------------------------------------------------------- frame folders
def make_frame_folders(root, classes=("Archery", "brush_hair"), per_class: int = 3, pattern: str = "img_{:05d}.jpg") -> Layout:
    """TSN / mmaction2 ``rawframes/<Class>/<video>/img_00001.jpg`` (JPEG, 1-based), with the
    optical-flow images beside the RGB ones in one folder, as TSN writes them."""
    root = Path(root)
    frames = root / "rawframes"
    lay = Layout(root, frames, names={c: {"Archery": "archery", "brush_hair": "brush hair"}.get(c, c) for c in classes})
    seed = 0
    for c in classes:
        for i in range(per_class):
            folder = write_jpeg_folder(frames / c / f"v_{c}_g01_c{i + 1:02d}", _clip(4000 + seed), pattern)
            if i == 0:
                write_jpeg_folder(folder, _clip(4000 + seed)[:3], "flow_x_{:05d}.jpg")
            seed += 1
            lay.want.setdefault("", {})[str(folder)] = c
    lay.lists["folder"] = frames
    return lay


def write_fewshot_lists(root, layout: Layout, parts: tuple[int, int, int] | None = None, kind: str = "trx",
                        name_of: dict[str, str] | None = None) -> dict[str, Path]:
    """Class-disjoint few-shot lists over a layout's classes (``parts``: train / val / test class
    counts; default all but two / one / one), LF, no final blank line:

    - ``trx``: ``<class>/<video stem>`` (CMN / TRX / ARN; ``name_of`` maps a class id to the name the
      list spells: an SSv2 sentence, a Kinetics label), files ``{split}list03.txt``;
    - ``otam``: ``<split><k>/<id>`` (OTAM's SSv2-Full lists as TRX ships them, ``{split}list07.txt``),
      plus ``{split}_classes.txt`` (one name per line, k's order) under ``root/names``;
    - ``clip_fsar``: ``<split><k>//videos/<Class>/<file>`` (CLIP-FSAR, ``{split}_few_shot.txt``; ``root/videos``
      links to the layout's video root).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    by_class: dict[str, list[str]] = {}
    for split in layout.want.values():
        for path, c in split.items():
            if c is not None:
                by_class.setdefault(c, []).append(path)
    classes = sorted(by_class)
    n_tr, n_va, n_te = parts or (len(classes) - 2, 1, 1)
    chosen = {"train": classes[:n_tr], "val": classes[n_tr:n_tr + n_va], "test": classes[n_tr + n_va:n_tr + n_va + n_te]}
    name_of = name_of or {}
    out = {}
    for split, cs in chosen.items():
        if kind == "trx":
            lines = [f"{name_of.get(c, c)}/{Path(p).stem}" for c in cs for p in sorted(by_class[c])]
            out[split] = _write_lines(root / f"{split}list03.txt", lines)
        elif kind == "otam":
            lines = [f"{split}{k}/{Path(p).stem}" for k, c in enumerate(cs) for p in sorted(by_class[c])]
            out[split] = _write_lines(root / f"{split}list07.txt", lines)
            _write_lines(root / "names" / f"{split}_classes.txt", [name_of.get(c, c) for c in cs])
        else:
            if not (root / "videos").exists():
                (root / "videos").symlink_to(layout.video_root, target_is_directory=True)
            lines = [f"{split}{k}//videos/{c}/{Path(p).name}" for k, c in enumerate(cs) for p in sorted(by_class[c])]
            out[split] = _write_lines(root / f"{split}_few_shot.txt", lines)
    return out


def write_vifi_base2novel(root, layout: Layout, base: list[str], novel: list[str], shots: int = 2) -> Path:
    """ViFi-CLIP's base-to-novel files for a UCF101 layout: ``datasets_splits/base2novel_splits/
    ucf_splits/{fs_base_s1_train,base_val,novel_val}.txt`` (``v_x.avi <label>``, bare names, LF) and
    ``labels/ucf_101_{base,novel}_labels.csv`` (``id,name``, CRLF, each numbered from 0)."""
    root = Path(root)
    lists = root / "datasets_splits" / "base2novel_splits" / "ucf_splits"
    by_class: dict[str, list[str]] = {}
    for split in layout.want.values():
        for path, c in split.items():
            by_class.setdefault(c, []).append(Path(path).name)
    train, base_val = [], []
    for k, c in enumerate(base):
        names = sorted(by_class[c])
        train += [f"{n} {k}" for n in names[:shots]]
        base_val += [f"{n} {k}" for n in names[shots:]]
    novel_val = [f"{n} {k}" for k, c in enumerate(novel) for n in sorted(by_class[c])]
    _write_lines(lists / "fs_base_s1_train.txt", train)
    _write_lines(lists / "base_val.txt", base_val)
    _write_lines(lists / "novel_val.txt", novel_val)
    _write_lines(root / "labels" / "ucf_101_base_labels.csv", ["id,name", *(f"{k},{c}" for k, c in enumerate(base))], "\r\n")
    _write_lines(root / "labels" / "ucf_101_novel_labels.csv", ["id,name", *(f"{k},{c}" for k, c in enumerate(novel))], "\r\n")
    return root


def file_count(root) -> int:
    return sum(len(f) for _, _, f in os.walk(root))
