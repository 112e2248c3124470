"""Public data sets as downloaded (issue 22): each official layout, written in miniature with its
real containers by tests/datasets_helpers.py, gives the right videos, classes, labels and split
sizes; a near miss of each is refused in one line, never read as another layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cachekit.datasets import FORMATS, reader
from cachekit.datasets.base import words
from cachekit.errors import InputError
from cachekit.inputs import collect_inputs
from datasets_helpers import (make_frame_folders, make_hmdb51, make_kinetics, make_ssv2, make_ucf101,
                              write_fewshot_lists, write_jpeg_folder)
from helpers import invoke, synth_frames, write_h264


@pytest.fixture(scope="module")
def lay(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    return {"ucf": make_ucf101(root / "ucf"), "hmdb": make_hmdb51(root / "hmdb"), "ssv2": make_ssv2(root / "ssv2"),
            "k400": make_kinetics(root / "k400"), "frames": make_frame_folders(root / "frames")}


def by_split(got) -> dict:
    out: dict = {}
    for it in got.items:
        out.setdefault(it.split or "", {})[it.path] = it.class_id
    return out


def one_line_error(args) -> str:
    rc, out, err = invoke(["extract", *map(str, args), "--store", "/nonexistent/never-written.zarr"])
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, (rc, out, err)
    return err


# --------------------------------------------------------------------------- each layout, read right
def test_ucf101_lists_and_the_folder_give_classind_classes_and_fold_sizes(lay):
    u = lay["ucf"]
    for args in ([u.lists["train"], u.lists["test"]], [u.lists["folder"]]):
        got = collect_inputs([str(a) for a in args], video_root=str(u.video_root))
        assert by_split(got) == u.want  # every video of fold 1, with its folder as class, test videos too
        assert {it.class_id: it.label for it in got.items} == u.names
        assert {len(v) for v in u.want.values()} and len(u.want["test"]) == 8 and len(u.want["train"]) == 24
    # the class is the folder: HandstandPushups' files are spelt v_HandStandPushups_*
    assert any("v_HandStandPushups_" in p and c == "HandstandPushups" for p, c in u.want["train"].items())
    got = collect_inputs([str(u.lists["folder"])], video_root=str(u.video_root), fold=2)
    assert len(by_split(got)["test"]) == 8 and set(by_split(got)["test"]).isdisjoint(u.want["test"])


def test_hmdb51_split_files_marks_and_folder_with_fold(lay):
    h = lay["hmdb"]
    got = collect_inputs([str(h.lists["folder"])], video_root=str(h.video_root), fold=1)
    assert by_split(got) == h.want
    assert {it.class_id: it.label for it in got.items} == {"brush_hair": "brush hair", "kick": "kick",
                                                          "kick_ball": "kick ball"}
    assert any("marked 0" in n for n in got.notes)  # the unused clips are counted, not read
    files = collect_inputs([str(p) for p in h.lists["files"]], video_root=str(h.video_root))
    assert by_split(files) == h.want


def test_ssv2_json_lists_template_classes_and_an_unlabelled_test_list(lay):
    s = lay["ssv2"]
    got = collect_inputs([str(s.lists[k]) for k in ("train", "val", "test")], video_root=str(s.video_root))
    assert by_split(got) == s.want
    assert {it.class_id: it.label for it in got.items if it.class_id} == s.names
    assert "Something falling like a feather or paper" in s.names.values()
    assert all(it.label is None for it in got.items if it.split == "test")


def test_kinetics_csv_finds_clips_anywhere_and_counts_the_missing_one(lay, tmp_path):
    k = lay["k400"]
    got = collect_inputs([str(k.lists["train"]), str(k.lists["val"])], video_root=str(k.video_root))
    assert by_split(got) == k.want
    assert {len(v) for v in got.missing.values()} == {1} and set(got.missing) == {"val"}
    assert any("1 listed videos not found" in n for n in got.notes)
    assert {it.label for it in got.items} == set(k.names.values())  # quoted labels with spaces, as written
    # mmaction2's per-class folders (spaces as underscores): the same clips, the class from the CSV
    k2 = make_kinetics(tmp_path / "mm", per_class_folders=True, version=600)
    got = collect_inputs([str(k2.lists["train"]), str(k2.lists["val"])], video_root=str(k2.video_root))
    assert by_split(got) == k2.want


def test_frame_folders_in_class_folders_are_a_labelled_set(lay):
    f = lay["frames"]
    got = collect_inputs([str(f.lists["folder"])])
    assert {it.path: it.class_id for it in got.items} == f.want[""]
    assert {it.label for it in got.items} == {"archery", "brush hair"}
    one = next(iter(f.want[""]))
    assert [it.path for it in collect_inputs([one]).items] == [one]  # one frame folder: one video


def test_fewshot_lists_of_cmn_trx_find_videos_by_stem(lay, tmp_path):
    u = lay["ucf"]
    lists = write_fewshot_lists(tmp_path / "ucf_ARN", u)
    assert Path(lists["train"]).read_text().splitlines()[0].count("/") == 1
    got = collect_inputs([str(p) for p in lists.values()], video_root=str(u.video_root))
    classes = {s: {it.class_id for it in got.items if it.split == s} for s in ("train", "val", "test")}
    assert sum(map(len, classes.values())) == 4 and not classes["val"] & classes["test"]
    assert len(got.items) == sum(map(len, u.want.values()))


# --------------------------------------------------------------------------- names
def test_class_ids_become_words_as_vifi_clips_label_files_write_them():
    assert words("ApplyEyeMakeup") == "apply eye makeup"
    assert words("brush_hair") == "brush hair"
    assert words("YoYo") == "yo yo"
    assert words("hurling_(sport)") == "hurling (sport)"
    assert words("air drumming") == "air drumming"
    assert words("Archery") == "archery"


def test_class_names_file_overrides_by_own_id_and_refuses_a_swapped_order(lay, tmp_path):
    u, h = lay["ucf"], lay["hmdb"]
    own = tmp_path / "own.csv"
    own.write_text("id,name\n" + "".join(f"{c},the {c}\n" for c in u.names))
    got = collect_inputs([str(u.lists["folder"])], video_root=str(u.video_root), class_names=str(own))
    assert {it.class_id: it.label for it in got.items} == {c: f"the {c}" for c in u.names}
    rows = tmp_path / "vifi_ucf_labels.csv"  # 0-based rows in classInd order
    rows.write_text("id,name\n" + "".join(f"{i},{c}\n" for i, c in enumerate(u.names)))
    got = collect_inputs([str(u.lists["folder"])], video_root=str(u.video_root), class_names=str(rows))
    assert {it.class_id: it.label for it in got.items} == {c: c for c in u.names}
    # ViFi-CLIP / X-CLIP HMDB labels list "kick ball" before "kick": refused, never swapped silently
    swapped = tmp_path / "hmdb_51_labels.csv"
    swapped.write_text("id,name\n0,brush hair\n1,kick ball\n2,kick\n")
    with pytest.raises(InputError, match="kick") as exc:
        collect_inputs([str(h.lists["folder"])], video_root=str(h.video_root), class_names=str(swapped))
    assert "\n" not in str(exc.value)


# --------------------------------------------------------------------------- near misses, one line
def test_ucf_near_misses_are_refused(lay, tmp_path):
    u = lay["ucf"]
    alone = tmp_path / "trainlist01.txt"  # without classInd.txt beside it
    shutil.copy(u.lists["train"], alone)
    err = one_line_error([alone, "--video-root", u.video_root])
    assert "classInd.txt" in err
    vifi_like = tmp_path / "ucf" / "trainlist01.txt"  # classInd - 1: ViFi-CLIP's numbering
    vifi_like.parent.mkdir()
    shutil.copy(u.lists["classInd"], vifi_like.parent / "classInd.txt")
    ids = {c: i for i, c in enumerate(u.names, 1)}
    lines = [ln.split()[0] for ln in Path(u.lists["train"]).read_text().splitlines()]
    vifi_like.write_text("\r\n".join(f"{p} {ids[p.split('/')[0]] - 1}" for p in lines) + "\r\n")
    err = one_line_error([vifi_like, "--video-root", u.video_root])
    assert "--format vifi" in err
    labelled_test = vifi_like.parent / "testlist01.txt"
    labelled_test.write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\n")
    assert "testlist" in one_line_error([labelled_test, "--video-root", u.video_root])
    # said explicitly, the same file reads as a ViFi-CLIP list
    got = collect_inputs([str(vifi_like)], video_root=str(u.video_root), fmt="vifi")
    assert len(got.items) == len(lines)


def test_hmdb_near_misses_are_refused(lay, tmp_path):
    h = lay["hmdb"]
    src = h.lists["files"][0]
    lines = Path(src).read_text().split()
    names = lines[0::2]
    badname = tmp_path / src.name.replace("_test_split1", "_test_split_1")  # pytorchvideo's docstring spelling
    badname.write_text(Path(src).read_text())
    assert "_test_split<N>.txt" in one_line_error([badname, "--video-root", h.video_root])
    marks = tmp_path / src.name
    marks.write_text("".join(f"{n} {i + 3}\n" for i, n in enumerate(names)))  # class numbers, not marks
    assert "marks are 1 train, 2 test, 0 unused" in one_line_error([marks, "--video-root", h.video_root])
    other = tmp_path / "kick_test_split1.txt"  # brush_hair clips in kick's file
    other.write_text("".join(f"{n} 1\n" for n in names))
    assert "not a clip of class kick" in one_line_error([other, "--video-root", h.video_root])


def test_ssv2_near_misses_are_refused(lay, tmp_path):
    s = lay["ssv2"]
    d = tmp_path / "ssv2"
    d.mkdir()
    shutil.copy(s.lists["labels"], d / "something-something-v2-labels.json")
    recs = json.loads(Path(s.lists["train"]).read_text())
    test = d / "something-something-v2-test.json"
    test.write_text(json.dumps(recs))  # a test list that carries templates
    assert "unlabelled" in one_line_error([test, "--video-root", s.video_root])
    unknown = d / "something-something-v2-train.json"
    unknown.write_text(json.dumps([{**recs[0], "template": "Juggling [something]"}]))
    assert "not a key" in one_line_error([unknown, "--video-root", s.video_root])
    assert "class list" in one_line_error([d / "something-something-v2-labels.json"])


def test_kinetics_near_misses_are_refused(lay, tmp_path):
    k = lay["k400"]
    rows = Path(k.lists["val"]).read_text().splitlines()
    headless = tmp_path / "kinetics-400_val.csv"
    headless.write_text("\n".join(rows[1:]) + "\n")
    assert "header" in one_line_error([headless, "--video-root", k.video_root])
    short_id = tmp_path / "k_short.csv"
    short_id.write_text(rows[0] + "\n" + "abseiling,abc,1,11,val,0\n")
    assert "11 characters" in one_line_error([short_id, "--video-root", k.video_root])
    quote = tmp_path / "k_quote.csv"
    quote.write_text(rows[0] + '\n"air drumming,--nQbRBEz2s,104,114,val,0\n')
    assert "quote" in one_line_error([quote, "--video-root", k.video_root])


def test_frame_folder_near_misses_are_refused(tmp_path, tiny_cfg):
    mixed = write_jpeg_folder(tmp_path / "mixed" / "a" / "v1", synth_frames(1, 4, 16, 16), "{:05d}.jpg")
    write_jpeg_folder(mixed, synth_frames(2, 4, 16, 16), "{:06d}.jpg", start=10)
    rc, out, err = invoke(["extract", str(tmp_path / "mixed"), "--store", str(tmp_path / "s.zarr"),
                           "--pretrained", "random", "--model", tiny_cfg, "--frames", "2"])
    assert rc == 1 and "padded to 2 widths" in err  # a failed input, in one line, the store intact


def test_unknown_and_ambiguous_layouts_are_refused(tmp_path):
    tsn = tmp_path / "train_videofolder.txt"  # TSN / TSM frame list: <dir> <frames> <label>
    tsn.write_text("rawframes/a/v1 75 3\nrawframes/b/v2 60 1\n")
    assert "no layout clipcache knows" in one_line_error([tsn])
    both = tmp_path / "x.csv"  # "<path> <label>" lines in a .csv: a ViFi list or a CSV?
    both.write_text("a/v1.mp4 0\n")
    err = one_line_error([both])
    assert "--format" in err and "vifi" in err and "csv" in err


def test_every_format_has_a_reader_module_with_its_interface():
    for name in FORMATS:
        mod = reader(name)
        assert mod.NAME == name and mod.DESCRIPTION and callable(mod.sniff) and callable(mod.read)


# --------------------------------------------------------------------------- extracted, real containers
@pytest.mark.slow
def test_each_layout_extracts_from_its_real_containers_with_coverage(lay, tiny_cfg, tmp_path):
    """MPEG-4 in AVI, VP9 in WebM, H.264 in mp4 and JPEG folders decode; the store keeps each class's
    own id beside its name; a Kinetics copy with a missing clip reports it, in text and --json."""
    common = ["--model", tiny_cfg, "--pretrained", "random", "--frames", "4", "--no-progress"]
    cases = {
        "ucf": ([lay["ucf"].lists["folder"], "--video-root", lay["ucf"].video_root], {"train": 24, "test": 8}),
        "ssv2": ([lay["ssv2"].lists[k] for k in ("train", "val", "test")] + ["--video-root", lay["ssv2"].video_root],
                 {"train": 9, "val": 6, "test": 6}),
        "k400": ([lay["k400"].lists["train"], lay["k400"].lists["val"], "--video-root", lay["k400"].video_root],
                 {"train": 9, "val": 5}),
        "hmdb": ([lay["hmdb"].lists["folder"], "--video-root", lay["hmdb"].video_root], {"train": 9, "test": 6}),
        "frames": ([lay["frames"].lists["folder"], "--fps", "25"], {"all": 6}),
    }
    for name, (args, sizes) in cases.items():
        store = tmp_path / f"{name}.zarr"
        rc, out, err = invoke(["extract", *map(str, args), "--store", str(store), *common, "--json"])
        assert rc == 0, (name, err)
        s = json.loads(out)
        assert {k: v["used"] for k, v in s["coverage"].items()} == sizes, name
        assert all(v["failed"] == 0 for v in s["coverage"].values())
        # the writer thread's CPU seconds: spent, and never more than its wall seconds
        assert 0 < s["cpu_seconds"]["write"] <= s["seconds"]["write"] + 1e-3, (s["cpu_seconds"], s["seconds"])
        rc, out, err = invoke(["info", str(store)])
        assert out.splitlines()[0].startswith("coverage "), out
        rc, out, err = invoke(["info", str(store), "--json"])
        info = json.loads(out)
        if name == "k400":
            assert info["coverage"]["val"] == {"listed": 6, "present": 5, "failed": 0, "pending": 0, "used": 5}
        if name == "ucf":
            assert info["class_ids"]["apply eye makeup"] == "ApplyEyeMakeup"
        if name == "ssv2":
            assert info["class_ids"]["Something falling like a feather or paper"] == "2"
            assert info["labelled"] == 15 and info["videos"] == 21  # the test list is unlabelled
        if name == "frames":
            from clipcache.stores import open_store

            with open_store(store) as st:
                assert {r["backend"] for r in st.records("videos").values()} == {"frames"}
                assert {r["fps"] for r in st.records("videos").values()} == {25.0}


def test_a_frame_folders_key_is_its_images_bytes_in_order(tmp_path):
    from cachekit.frames import folder_key, frame_files, read_frames
    from cachekit.video import file_key

    frames = synth_frames(3, 12, 16, 24)
    a = write_jpeg_folder(tmp_path / "a", frames, "{}.jpg")  # unpadded: natural order, 2 before 10
    assert [Path(f).name for f in frame_files(a)][:3] == ["1.jpg", "2.jpg", "3.jpg"]
    assert Path(frame_files(a)[9]).name == "10.jpg"
    b = shutil.copytree(a, tmp_path / "elsewhere" / "b")
    assert file_key(a) == folder_key(b) and len(file_key(a)) == 64
    (Path(b) / "12.jpg").unlink()
    assert folder_key(b) != folder_key(a)
    got = read_frames(a, np.array([[0, 9]]))
    assert got.shape == (1, 2, 16, 24, 3) and got.dtype == np.uint8


def test_any_format_forced_on_any_file_reads_it_or_refuses_in_one_line(lay, tmp_path):
    """--format skips the content check: a reader then meets files of other layouts (and empty or
    binary ones) and must refuse them with an input error, never a traceback."""
    from cachekit.errors import ClipcacheError

    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "binary.bin").write_bytes(b"\0\1\2garbage")
    (tmp_path / "tsn.txt").write_text("rawframes/a/v1 75 3\n")
    samples = [lay["ucf"].lists["train"], lay["ucf"].lists["classInd"], lay["hmdb"].lists["files"][0],
               lay["ssv2"].lists["train"], lay["ssv2"].lists["labels"], lay["k400"].lists["val"],
               lay["frames"].lists["folder"], tmp_path / "empty.txt", tmp_path / "binary.bin", tmp_path / "tsn.txt"]
    for fmt in FORMATS:
        for sample in samples:
            try:
                collect_inputs([str(sample)], fmt=fmt, require_videos=False)
            except ClipcacheError as err:
                assert "\n" not in str(err), (fmt, sample, err)


# --------------------------------------------------------------------------- review findings
def test_numbered_class_names_keep_their_rows_when_a_class_has_no_video(lay, tmp_path):
    """Rows numbered 0.. index every class the files name, present on disk or not: a class missing
    on disk does not shift the later names (kick ball was named "kick" when kick/ was absent)."""
    h = lay["hmdb"]
    root = tmp_path / "hmdb"
    shutil.copytree(h.root, root)
    shutil.rmtree(root / "hmdb51_org" / "kick")
    names = tmp_path / "names.csv"
    names.write_text("id,name\n0,brush hair\n1,kick\n2,kick ball\n")
    got = collect_inputs([str(root / "testTrainMulti_7030_splits")], video_root=str(root / "hmdb51_org"),
                         class_names=str(names))
    assert {it.class_id: it.label for it in got.items} == {"brush_hair": "brush hair", "kick_ball": "kick ball"}
    # a folder of class folders with an empty one, and videos beside them (left out, with a note)
    folder = tmp_path / "own"
    for i, c in enumerate(("Archery", "Bowling", "Cycling")):
        (folder / c).mkdir(parents=True)
        if c != "Bowling":
            write_h264(folder / c / "a.mp4", synth_frames(i, frames=4, height=32, width=32))
    write_h264(folder / "loose.mp4", synth_frames(9, frames=4, height=32, width=32))
    (folder / ".ipynb_checkpoints").mkdir()  # hidden folders hold no class row
    rows = tmp_path / "names.txt"
    rows.write_text("archery\nbowling\ncycling\n")
    got = collect_inputs([str(folder)], class_names=str(rows))
    assert {it.class_id: it.label for it in got.items} == {"Archery": "archery", "Cycling": "cycling"}
    assert any("loose.mp4" in n and "no class" in n for n in got.notes)
    assert any("Bowling" in n and "no video" in n for n in got.notes)


def test_fold_given_beside_list_files_of_another_fold_is_refused(lay):
    u, h = lay["ucf"], lay["hmdb"]
    with pytest.raises(InputError, match="is fold 1, but --fold 2 was given"):
        collect_inputs([str(u.lists["train"]), str(u.lists["test"])], video_root=str(u.video_root), fold=2)
    with pytest.raises(InputError, match="is fold 1, but --fold 3 was given"):
        collect_inputs([str(p) for p in h.lists["files"]], video_root=str(h.video_root), fold=3)
    got = collect_inputs([str(u.lists["train"])], video_root=str(u.video_root), fold=1)  # the same fold: fine
    assert got.items


def test_vifi_lists_whose_folder_is_the_split_do_not_name_classes_after_it(lay, tmp_path):
    """ViFi-CLIP's Kinetics lists read ``val/<clip>.mp4 <label>``: the folder is not the class."""
    k = lay["k400"]
    clips = sorted(p for p in Path(k.video_root).rglob("*.mp4") if p.parent.name == "val")[:3]
    lst = tmp_path / "val.txt"
    lst.write_text("".join(f"val/{p.name} {i}\n" for i, p in enumerate(clips)))
    got = collect_inputs([str(lst)], video_root=str(clips[0].parent.parent), fmt="vifi")
    assert sorted(it.label for it in got.items) == [f"class {i}" for i in range(len(clips))]
    assert any("do not follow its labels" in n for n in got.notes)


def test_lookup_by_stem_follows_linked_folders(lay, tmp_path):
    k = lay["k400"]
    linked = tmp_path / "linked"
    linked.mkdir()
    for d in sorted(p for p in Path(k.video_root).iterdir() if p.is_dir()):
        (linked / d.name).symlink_to(d, target_is_directory=True)
    (linked / "loop").symlink_to(linked, target_is_directory=True)  # a link back up: walked once
    csvs = [str(k.lists["train"]), str(k.lists["val"])]
    want = collect_inputs(csvs, video_root=str(k.video_root))
    got = collect_inputs(csvs, video_root=str(linked))
    assert len(got.items) == len(want.items) > 0


def test_class_names_that_are_not_utf8_are_refused_in_one_line(tmp_path):
    (tmp_path / "v").mkdir()
    write_h264(tmp_path / "v" / "a.mp4", synth_frames(1, frames=4, height=32, width=32))
    csv = tmp_path / "latin1.csv"
    csv.write_bytes(b"path,label\r\nv/a.mp4,caf\xe9 au lait\r\n")  # cp1252, as Excel saves it
    with pytest.raises(InputError, match="is not UTF-8 text") as exc:
        collect_inputs([str(csv)])
    assert "\n" not in str(exc.value)
