"""Every recipe in examples/ runs end to end on a miniature copy of its data set's official layout
(tests/datasets_helpers.py; never downloaded), with the tiny model and small budgets.

bash runs each script as written (``set -euo pipefail``, its variables, globs and loops), with
``clipcache`` a shell function that records each command line; the recorded commands are then
run in order in this process (click's runner: no interpreter start-up per command), and each
must succeed. Every recipe names the paper number it aims at.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from datasets_helpers import (make_hmdb51, make_kinetics, make_ssv2, make_ucf101, write_fewshot_lists,
                              write_vifi_base2novel)
from helpers import ROOT, invoke

EXAMPLES = ROOT / "examples"
TINY = str(ROOT / "tests" / "assets" / "tiny-clip.json")  # no recipe reads tokens: the 4-block model
UCF9 = ["ApplyEyeMakeup", "Archery", "BabyCrawling", "Basketball", "Biking", "Bowling", "HandstandPushups",
        "PlayingDaf", "YoYo"]
SMALL = {"MODEL": TINY, "WEIGHTS": "random", "WAYS": "3", "EPISODES": "20", "TRAIN_EPISODES": "6", "VAL_EPISODES": "5", "SHOTS": "2",
         "EPOCHS": "1"}
PAPER_NUMBER = re.compile(r"\b\d{2}\.\d\b")


def recorded_commands(script: Path, env: dict[str, str], tmp: Path) -> list[list[str]]:
    """Run ``script`` with bash, ``clipcache`` replaced by a function that records its arguments."""
    log = tmp / "commands.bin"
    shim = (f'clipcache() {{ printf "%s\\0" "$@" >> "{log}"; printf "\\1\\0" >> "{log}"; }}; '
            f'source "{script}"')
    full = {**os.environ, **env, "PATH": os.environ.get("PATH", "")}
    proc = subprocess.run(["bash", "-c", shim], env=full, capture_output=True, text=True, cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    cmds, cur = [], []
    for part in log.read_bytes().split(b"\0")[:-1]:
        if part == b"\1":
            cmds.append(cur)
            cur = []
        else:
            cur.append(os.fsdecode(part))
    return cmds


def run_recipe(name: str, env: dict[str, str], tmp: Path) -> list[tuple[list[str], str, str]]:
    script = EXAMPLES / name
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    assert "Paper numbers it aims at" in text and PAPER_NUMBER.search(text), f"{name} names no paper number"
    out = []
    for cmd in recorded_commands(script, {**SMALL, "OUT": str(tmp / "out"), **env}, tmp):
        rc, stdout, stderr = invoke(cmd)
        assert rc == 0, (name, cmd, stdout, stderr)
        out.append((cmd, stdout, stderr))
    assert out and out[0][0][0] == "extract"
    return out


def by_command(results, name: str) -> list[str]:
    return [stdout for cmd, stdout, _ in results if cmd[0] == name]


@pytest.mark.slow
def test_ucf101_recipe_from_the_download_layout_to_a_query(tmp_path):
    lay = make_ucf101(tmp_path / "data")
    res = run_recipe("ucf101.sh", {"DATA": str(lay.root)}, tmp_path)
    assert [c[0] for c, _, _ in res] == ["extract", "info", "eval", "train", "eval", "query"]
    extract = by_command(res, "extract")[0]
    assert extract.startswith("coverage train: 24 listed, 24 present (100.0%), 0 failed to decode, 24 in the store")
    assert "coverage test: 8 listed" in extract
    assert "yo yo" in by_command(res, "query")[0] or "apply eye makeup" in by_command(res, "query")[0]


@pytest.mark.slow
def test_hmdb51_recipe(tmp_path):
    lay = make_hmdb51(tmp_path / "data")
    res = run_recipe("hmdb51.sh", {"DATA": str(lay.root)}, tmp_path)
    assert by_command(res, "extract")[0].startswith("coverage train: 9 listed")


@pytest.mark.slow
def test_ucf101_few_shot_recipe(tmp_path):
    lay = make_ucf101(tmp_path / "data", classes=UCF9, groups=(1, 8, 15), clips=2)
    splits = tmp_path / "clip_fsar"
    write_fewshot_lists(splits, lay, parts=(3, 3, 3), kind="clip_fsar")
    res = run_recipe("ucf101_few_shot.sh", {"UCF101": str(splits), "SPLITS": str(splits)}, tmp_path)
    assert "coverage test: 18 listed, 18 present" in by_command(res, "extract")[0]


def nine_class_ssv2(root: Path, verb: str):
    """SSv2 with 9 templates of 6 clips: 3 classes per few-shot split, enough for 5-shot episodes."""
    templates = [f"{verb} [something] {w}" for w in ("up", "down", "left", "right", "away", "closer", "around",
                                                     "in circles", "slowly")]
    return make_ssv2(root, templates=templates, train=6, val=0, test=0)


@pytest.mark.slow
def test_ssv2_small_recipe_on_cmn_lists(tmp_path):
    lay = nine_class_ssv2(tmp_path / "data", "Moving")
    lists = write_fewshot_lists(tmp_path / "smsm-100", lay, parts=(3, 3, 3), name_of=lay.names)
    for split, path in lists.items():  # CMN's file names
        path.rename(path.with_name(f"{split}.list"))
    res = run_recipe("ssv2_small.sh", {"SSV2": str(lay.video_root), "SPLITS": str(tmp_path / "smsm-100")}, tmp_path)
    assert "coverage train: 18 listed, 18 present" in by_command(res, "extract")[0]


@pytest.mark.slow
def test_ssv2_full_recipe_on_otam_lists(tmp_path):
    lay = nine_class_ssv2(tmp_path / "data", "Pushing")
    write_fewshot_lists(tmp_path / "ssv2_OTAM", lay, parts=(3, 3, 3), kind="otam", name_of=lay.names)
    res = run_recipe("ssv2_full.sh", {"SSV2": str(lay.video_root), "SPLITS": str(tmp_path / "ssv2_OTAM"),
                                      "NAMES": str(tmp_path / "ssv2_OTAM" / "names")}, tmp_path)
    assert "coverage val: 18 listed, 18 present" in by_command(res, "extract")[0]


@pytest.mark.slow
def test_kinetics100_recipe_finds_clips_anywhere_and_reports_a_missing_one(tmp_path):
    labels = ["abseiling", "air drumming", "archery", "arm wrestling", "baking cookies", "balloon blowing",
              "bandaging", "barbequing", "bartending"]
    lay = make_kinetics(tmp_path / "data", classes=labels, train=7, val=0, missing=0, per_class_folders=True)
    lists = write_fewshot_lists(tmp_path / "kinetics-100", lay, parts=(3, 3, 3))
    gone = next(p for p in sorted(lay.want["train"]) if lay.want["train"][p] == labels[-1])
    os.remove(gone)  # a YouTube takedown: listed, not there
    res = run_recipe("kinetics100.sh", {"KINETICS": str(lay.video_root), "SPLITS": str(lists["train"].parent)},
                     tmp_path)
    assert "coverage test: 21 listed, 20 present (95.2%), 0 failed to decode, 20 in the store" in \
        by_command(res, "extract")[0]


@pytest.mark.slow
def test_k400_zeroshot_recipe_to_ucf101_and_hmdb51(tmp_path):
    k = make_kinetics(tmp_path / "k400")
    u = make_ucf101(tmp_path / "ucf")
    h = make_hmdb51(tmp_path / "hmdb")
    res = run_recipe("k400_zeroshot.sh", {"K400": str(k.root), "TRAIN_CSV": str(k.lists["train"]),
                                          "UCF": str(u.root), "HMDB": str(h.root)}, tmp_path)
    evals = by_command(res, "eval")
    assert len(evals) == 12  # per split: frozen CLIP and the run, on UCF101 and on HMDB51
    assert "coverage test: 8 listed, 8 present (100.0%), 0 failed to decode, 8 evaluated" in evals[0]
    assert "coverage test: 6 listed" in evals[2] and "coverage test: 6 listed" in evals[3]  # HMDB split 1's marks
    assert "Frozen CLIP zero-shot" in evals[2] and "Frozen CLIP zero-shot" not in evals[3]


@pytest.mark.slow
def test_base2novel_recipe_on_vifi_lists(tmp_path):
    lay = make_ucf101(tmp_path / "data")
    vifi = write_vifi_base2novel(tmp_path / "ViFi-CLIP", lay, base=["ApplyEyeMakeup", "YoYo"],
                                 novel=["HandstandPushups", "PlayingDaf"])
    res = run_recipe("base2novel.sh", {"DATA": str(lay.root), "VIFI": str(vifi)}, tmp_path)
    last = by_command(res, "eval")[-1]
    assert "base" in last and "novel" in last and "HM" in last


def test_every_recipe_is_tested_and_names_paper_numbers():
    tested = set(re.findall(r'run_recipe\("([a-z0-9_]+\.sh)"', Path(__file__).read_text()))
    shipped = {p.name for p in EXAMPLES.glob("*.sh")} - {"own_classes.sh"}
    assert shipped == tested
    for name in shipped:
        assert PAPER_NUMBER.search((EXAMPLES / name).read_text().split("set -euo")[0]), name
