"""Bad videos and bad metadata that real data sets contain: each gets its reason or a one-line
error (exit 2), never a traceback, and never costs what is already cached. Plus property tests
of the input parsers."""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cachekit.errors import InputError
from cachekit.inputs import collect_inputs, read_class_names
from helpers import invoke, synth_frames, write_h264
from clipcache.stores import open_store


def _extract(tiny_cfg, store, *inputs, extra=()):
    return invoke(["extract", *map(str, inputs), "--store", str(store), "--model", tiny_cfg,
                   "--pretrained", "random", "--frames", "4", "--no-progress", *extra])


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        s.layout = "mono"
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            frame.pts = i * 1024
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _vfr(path: Path) -> Path:
    """H.264 with irregular frame durations (variable frame rate)."""
    frames = synth_frames(3, 12, 64, 64)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        pts = 0
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = pts, Fraction(1, 1000)
            pts += 20 if i % 2 else 80
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_bad_videos_each_recorded_with_a_reason(tiny_cfg, tmp_path):
    d = tmp_path / "v"
    d.mkdir()
    good = write_h264(d / "good.mp4", synth_frames(1, 12, 64, 64))
    big = write_h264(d / "big_4k.mp4", np.repeat(synth_frames(2, 5, 90, 160), 24, axis=1).repeat(24, axis=2))
    vfr = _vfr(d / "vfr.mp4")
    one = write_h264(d / "one_frame.mp4", synth_frames(4, 1, 64, 64))
    audio = _audio_only(d / "audio_only.mp4")
    (d / "dir.mp4").mkdir()
    store = tmp_path / "s.zarr"
    rc, out, err = _extract(tiny_cfg, store, good, big, vfr, one, audio, d / "dir.mp4")
    assert rc == 1, err  # some failed: non-zero, with a summary
    assert "3 extracted" in out and "3 failed" in out
    with open_store(store) as s:
        reasons = {Path(v["path"]).name: v["reason"] for v in s.json_items("failed").values()}
        done = {Path(r["path"]).name: r for r in s.records("videos").values()}
    assert set(done) == {"good.mp4", "big_4k.mp4", "vfr.mp4"}
    assert done["big_4k.mp4"]["arrays"]["emb"]["shape"] == [1, 4, 64]  # 3840x2160, resized like any other
    assert "fewer than the 4 asked" in reasons["one_frame.mp4"]
    assert "no video stream" in reasons["audio_only.mp4"] or "could not decode" in reasons["audio_only.mp4"]
    assert "directory" in reasons["dir.mp4"]
    assert all("\n" not in r for r in reasons.values())


def test_bad_metadata_one_line_errors_and_the_store_is_untouched(tiny_cfg, tmp_path):
    vids = tmp_path / "videos"
    for i in range(3):
        write_h264(vids / "a" / f"{i}.mp4", synth_frames(i, 8, 32, 32))
    store = tmp_path / "s.zarr"
    rc, out, err = _extract(tiny_cfg, store, vids)
    assert rc == 0, err
    before = sorted(str(p.relative_to(store)) for p in (store / "meta" / "log").rglob("*"))  # commit records

    # Windows line endings and duplicate lines in a ViFi-CLIP split: parsed, duplicates reported
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"id,name\r\n0,a\r\n")
    split = tmp_path / "test.txt"
    split.write_bytes(b"videos/a/0.mp4 0\r\nvideos/a/0.mp4 0\r\nvideos/a/1.mp4 0\r\nvideos/a/9.mp4 0\r\n")
    got = collect_inputs([str(split)], video_root=str(tmp_path), class_names=str(labels))
    assert [Path(i.path).name for i in got.items] == ["0.mp4", "1.mp4"] and {i.label for i in got.items} == {"a"}
    assert any("duplicate" in n for n in got.notes) and any("1 listed videos not found" in n for n in got.notes)

    cases = {
        "label 3 outside": (b"videos/a/0.mp4 3\n", ["--class-names", str(labels)]),  # unknown label
        "expected 'path,label'": (b"path,label\nvideos/a/0.mp4,\n", []),  # empty label in a CSV
    }
    for i, (expect, (content, extra)) in enumerate(cases.items()):
        f = tmp_path / (f"bad{i}.csv" if b"," in content else f"test_bad{i}.txt")
        f.write_bytes(content)
        rc, out, err = _extract(tiny_cfg, store, f, extra=["--video-root", str(tmp_path), *extra])
        assert rc == 2 and err.count("\n") == 1 and err.startswith("error:") and expect in err, err
    empty = tmp_path / "empty_names.csv"
    empty.write_text("id,name\n0,\n")
    with pytest.raises(InputError, match="empty class name|expected"):
        read_class_names(empty)
    assert sorted(str(p.relative_to(store)) for p in (store / "meta" / "log").rglob("*")) == before


def test_non_utf8_file_names_round_trip(tiny_cfg, tmp_path):
    name = os.fsdecode(b"clip_\xe9t\xe9.mp4")  # Latin-1 bytes: not valid UTF-8
    path = write_h264(tmp_path / name, synth_frames(5, 8, 32, 32))
    listing = tmp_path / "list.txt"
    listing.write_bytes(os.fsencode(str(path)) + b"\n")
    store = tmp_path / "s.zarr"
    rc, out, err = _extract(tiny_cfg, store, listing)
    assert rc == 0, err
    with open_store(store) as s:
        (rec,) = s.records("videos").values()
    assert os.path.exists(rec["path"]) and os.fsencode(rec["path"]).endswith(b"clip_\xe9t\xe9.mp4")


def test_store_of_another_layout_version_is_refused(tiny_cfg, tmp_path):
    vids = tmp_path / "videos"
    write_h264(vids / "a" / "0.mp4", synth_frames(0, 8, 32, 32))
    store = tmp_path / "s.zarr"
    assert _extract(tiny_cfg, store, vids)[0] == 0
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"]["clipcache"]["layout_version"] = 99
    (store / "zarr.json").write_text(json.dumps(meta))
    for args in (["info", str(store)], ["extract", str(vids), "--store", str(store), "--model", tiny_cfg,
                                        "--pretrained", "random", "--frames", "4"]):
        rc, out, err = invoke(args)
        assert rc == 2 and err.count("\n") == 1 and "layout version 99" in err and "re-extract" in err


# --------------------------------------------------------------------------- property tests
names = st.text(alphabet=st.characters(whitelist_categories=("Ll", "Lu", "Nd"), whitelist_characters="_-"),
                min_size=1, max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(names, st.integers(0, 4), st.sampled_from(["train", "val", "test"])),
                     min_size=1, max_size=15),
       crlf=st.booleans(), fmt=st.sampled_from(["clip_fsar", "vifi"]))
def test_split_file_parsers_keep_every_existing_line(tmp_path_factory, rows, crlf, fmt):
    """Any CLIP-FSAR / ViFi-CLIP split file: each distinct existing video once, with its class
    and split; absent ones counted as missing; line endings do not matter."""
    root = tmp_path_factory.mktemp("p")
    classes = [f"class{i}" for i in range(5)]
    lines, want = [], {}
    for stem, c, split in rows:
        rel = f"videos/{classes[c]}/{stem}.mp4"
        exists = len(stem) % 3 != 0
        if exists:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(b"x")
        if fmt == "clip_fsar":
            lines.append(f"{split}{c}//{rel}")
            key = (str(root / rel), split)
            label = classes[c]
        else:
            split = "test"
            lines.append(f"{rel} {c}")
            key = (str(root / rel), split)
            label = classes[c]
        if exists:
            want.setdefault(key, label)
    f = root / ("test_few_shot.txt" if fmt == "clip_fsar" else "test.txt")
    f.write_bytes(("\r\n" if crlf else "\n").join(lines).encode())
    if fmt == "vifi":
        (root / "labels.csv").write_text("id,name\n" + "".join(f"{i},{c}\n" for i, c in enumerate(classes)))
    if not want:
        with pytest.raises(InputError):
            collect_inputs([str(f)], video_root=str(root),
                           class_names=str(root / "labels.csv") if fmt == "vifi" else None)
        return
    got = collect_inputs([str(f)], video_root=str(root),
                         class_names=str(root / "labels.csv") if fmt == "vifi" else None)
    assert {(i.path, i.split): i.label.replace(" ", "") for i in got.items} == \
        {k: v.replace(" ", "") for k, v in want.items()}
    missing = sum(len(v) for v in got.missing.values())
    assert missing == sum(1 for stem, _, _ in rows if len(stem) % 3 == 0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(names, names), min_size=1, max_size=10))
def test_csv_parser_reads_path_label_rows(tmp_path_factory, rows):
    root = tmp_path_factory.mktemp("c")
    csv = root / "v.csv"
    csv.write_text("path,label\n" + "".join(f"{p}.mp4,{lab}\n" for p, lab in rows))
    got = collect_inputs([str(csv)])
    first = {}
    for p, lab in rows:
        first.setdefault(str(root / f"{p}.mp4"), lab)
    assert {i.path: i.label for i in got.items} == first


def test_errors_name_the_line_of_the_file_blank_lines_included(tmp_path):
    """A bad row is named by its line in the file, not its place among the non-blank rows."""
    csv = tmp_path / "v.csv"
    csv.write_text('path,label\n\na.mp4,x\n\n"b\nc.mp4",y\nbad.mp4\n')  # a quoted field over two lines
    with pytest.raises(InputError, match=r"line 7: expected 'path,label'"):
        collect_inputs([str(csv)])
    lst = tmp_path / "ucf" / "trainlist01.txt"
    lst.parent.mkdir()
    (lst.parent / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    lst.write_text("\nApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n\nArchery/v_Archery_g01_c01.avi 1\n")
    with pytest.raises(InputError, match="line 4: Archery is classInd id 2"):
        collect_inputs([str(lst)])


def test_a_reader_that_leaves_the_pipe_early_gets_no_error_line():
    """``clipcache methods | head -1``: the reader closing stdout is not an error of the machine."""
    import subprocess

    from helpers import cli_command, cli_env

    p = subprocess.Popen(cli_command(["methods"]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    p.stdout.close()  # before the command writes: its first write meets a closed pipe
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 1
    assert "error" not in err and "Traceback" not in err, err
