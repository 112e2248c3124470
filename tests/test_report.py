"""Evaluation results and report files."""

from __future__ import annotations

import csv
import json
import struct

import numpy as np
import pytest

from cachekit.errors import InputError
from cachekit.report import EvalResult, markdown_table, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def episodic(method: str, shots: int, acc: float, ci: float, **kw) -> EvalResult:
    return EvalResult(protocol="episodic", method=method, metric="top1", ways=5, shots=shots,
                      queries=1, episodes=10_000, accuracy=acc, ci95=ci, **kw)


def with_confusion() -> EvalResult:
    conf = np.array([[8, 2, 0], [1, 9, 0], [0, 3, 7]])
    names = ["brush hair", "clap", "dive"]
    return EvalResult(
        protocol="allway", method="linear-probe", metric="top1", ways=None, shots=8, queries=None,
        episodes=30, accuracy=80.0, ci95=0.0,
        per_class={n: 100.0 * conf[i, i] / conf[i].sum() for i, n in enumerate(names)},
        confusion=conf, class_names=names,
        notes=["store has no split files: evaluated over all 3 classes"],
    )


def test_to_dict_is_json_and_round_trips():
    r = with_confusion()
    r.extra = {"base": np.float64(77.0), "novel": np.float32(58.0)}
    d = r.to_dict()
    text = json.dumps(d)  # plain JSON, no numpy left
    assert json.loads(text)["confusion"] == [[8, 2, 0], [1, 9, 0], [0, 3, 7]]
    back = EvalResult.from_dict(json.loads(text))
    assert np.array_equal(back.confusion, r.confusion)
    assert back.per_class == pytest.approx(r.per_class)
    assert back.notes == r.notes and back.extra == {"base": 77.0, "novel": 58.0}
    with pytest.raises(InputError, match="unknown result fields"):
        EvalResult.from_dict({**d, "acuracy": 1.0})


def test_bad_confusion_is_input_error():
    with pytest.raises(InputError, match="square"):
        episodic("m", 1, 50.0, 1.0, confusion=np.zeros((2, 3)))
    with pytest.raises(InputError, match="class_names has 2"):
        episodic("m", 1, 50.0, 1.0, confusion=np.zeros((3, 3)), class_names=["a", "b"])


def test_markdown_contains_numbers_and_notes():
    results = [
        episodic("proto-net", 1, 61.234, 0.4567, notes=["3 videos named in split 'test' are "
                                                         "missing from the store"]),
        episodic("proto-net", 5, 80.5, 0.31, video_ci95=2.5, videos=240, classes=24),
    ]
    md = markdown_table(results)
    assert ("| protocol | method | metric | ways | shots | episodes | videos | classes | accuracy | ± episode CI "
            "| ± video CI |") in md
    assert "| 1 | episodic | proto-net | top1 | 5 | 1 | 10000 | – | – | 61.23 | 0.46 | – |" in md
    assert "| 2 | episodic | proto-net | top1 | 5 | 5 | 10000 | 240 | 24 | 80.50 | 0.31 | 2.50 |" in md
    assert not md.startswith("**NOT A HELD-OUT")
    results[1].overlap = "3 of the 240 evaluated videos were training or selection videos of the run"
    assert markdown_table(results).startswith("**NOT A HELD-OUT RESULT (--allow-overlap):** 3 of the 240")
    assert "- [1] 3 videos named in split 'test' are missing from the store" in md
    assert "not comparable" not in md


def test_markdown_separates_protocols_and_shows_extra():
    b2n = EvalResult(protocol="base2novel", method="zs|clip", metric="top1", ways=None,
                     shots=16, queries=None, episodes=1530, accuracy=66.3, ci95=0.0,
                     extra={"base": 77.0, "novel": 58.2, "hm": 66.3})
    md = markdown_table([episodic("a", 1, 50.0, 1.0), b2n])
    assert "### episodic" in md and "### base2novel" in md and "not comparable" in md
    assert "zs\\|clip" in md  # pipes escaped
    assert "base=77.00, novel=58.20, hm=66.30" in md
    assert "| 2 | base2novel | zs\\|clip | top1 | – | 16 | 1530 | – | – | 66.30 | 0.00 | – |" in md
    assert markdown_table([]).strip() == "_no results_"


def test_write_report_files(tmp_path):
    results = [with_confusion()]
    paths = write_report(tmp_path / "out", results)
    names = sorted(p.name for p in paths)
    assert names == ["confusion.png", "per_class.csv", "results.json", "results.md"]
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    w, h = png_size(tmp_path / "out" / "confusion.png")
    assert w > 100 and h > 100

    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["results"][0]["accuracy"] == 80.0
    assert doc["results"][0]["class_names"] == ["brush hair", "clap", "dive"]

    rows = list(csv.DictReader((tmp_path / "out" / "per_class.csv").open()))
    assert [r["class"] for r in rows] == ["brush hair", "clap", "dive"]
    assert float(rows[1]["accuracy"]) == pytest.approx(90.0)
    assert rows[0]["ways"] == "" and rows[0]["shots"] == "8"

    md = (tmp_path / "out" / "results.md").read_text()
    assert "| 80.00 | 0.00 |" in md and "evaluated over all 3 classes" in md


def test_write_report_accuracy_vs_shots(tmp_path):
    results = [
        episodic("proto-net", 1, 60.0, 0.4),
        episodic("proto-net", 5, 80.0, 0.3),
        episodic("otam", 1, 62.0, 0.4),
        episodic("otam", 5, 81.0, 0.3),
    ]
    paths = write_report(tmp_path, results)
    names = {p.name for p in paths}
    assert "accuracy_vs_shots.png" in names
    assert not any(n.startswith("confusion") for n in names)
    w, h = png_size(tmp_path / "accuracy_vs_shots.png")
    assert (w, h) == (600, 400)


def test_no_shot_plot_without_shot_variation(tmp_path):
    results = [episodic("proto-net", 1, 60.0, 0.4), episodic("otam", 1, 62.0, 0.4)]
    names = {p.name for p in write_report(tmp_path, results)}
    assert names == {"results.json", "results.md", "per_class.csv"}


def test_several_confusions_and_shot_groups_get_distinct_names(tmp_path):
    a, b = with_confusion(), with_confusion()
    b.shots = 16
    results = [a, b, episodic("m", 1, 50.0, 1.0), episodic("m", 5, 70.0, 1.0)]
    paths = write_report(tmp_path, results)
    names = sorted(p.name for p in paths)
    confusions = [n for n in names if n.startswith("confusion_")]
    shot_plots = [n for n in names if n.startswith("accuracy_vs_shots_")]
    assert len(confusions) == 2 and len(set(confusions)) == 2
    assert len(shot_plots) == 2  # allway (8, 16) and episodic (1, 5)
    for n in confusions + shot_plots:
        png_size(tmp_path / n)
