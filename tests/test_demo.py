"""`clipcache demo` end to end at a small size, with the shipped toy CLIP (real weights file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def test_demo_runs_every_step_labels_the_toy_encoder_and_queries_a_new_clip(tmp_path):
    from cachekit.demo import DemoConfig, run_demo
    from cachekit.toy.files import toy_weights

    if not toy_weights().is_file():
        pytest.fail(f"the toy CLIP weights {toy_weights()} are not in the package (make toy)")
    lines: list[str] = []
    out = tmp_path / "demo"
    res = run_demo(DemoConfig(out=str(out), objects=2, videos_per_class=4, frames=4, episodes=20,
                              eval_episodes=40, epochs=1, b2n_objects=2, b2n_videos_per_class=3), echo=lines.append)
    text = "\n".join(lines)
    assert lines[0].startswith("On your own videos")
    assert "TOY encoder" in text and text.count("TOY encoder") >= 2  # first and last word
    for i in range(1, 10):
        assert f"[{i}/9]" in text
    steps = {s["step"]: s for s in res.steps}
    assert steps["synth"]["classes"] == 2 * 20
    probes = steps["zero-shot probes"]
    assert len(probes["only_object"]) == 3 and len(probes["only_motion"]) == 3
    pairs = steps["time-reversed pairs"]
    assert pairs["pairs"] == 2 * 6  # six reversal pairs per object
    assert all(len(pairs[m]) == 2 for m in ("mean", "otam", "otam_centred"))
    head = steps["train few-shot head (from cache) + evaluate"]  # CLIP-FSAR's head by default
    assert head["method"] == "clip_fsar" and len(head["trained"]) == len(head["proto_otam"]) == 3
    assert "CLIP-FSAR's head trained from the cache" in text
    b2n = steps["synth + extract base-to-novel"]  # its own set: 3 clips per class of 2 objects
    assert b2n["videos"] == 2 * 20 * 3 and b2n["novel"] > 0 and b2n["base"] + b2n["novel"] == 2 * 20
    ez = steps["train ez_clip (backbone from block 4) + evaluate"]
    assert set(ez["zeroshot"]) >= {"base", "novel", "hm"} and set(ez["ez_clip"]) >= {"base", "novel", "hm"}
    assert "harmonic mean of base and novel" in text
    query = steps["query"]
    test_classes = json.loads((out / "synth" / "synth.json").read_text())["splits"]["test"]
    assert query["truth"] in test_classes and query["videos"] == len(test_classes)
    assert query["top"] and isinstance(query["right"], bool) and 0 <= query["top1_right"] <= len(test_classes)
    assert query["right"] == (query["top1_right"] > 0)  # a right one is shown when there is one
    assert len(list((out / "query").glob("new_*.mp4"))) == len(test_classes)
    summary = json.loads((out / "demo.json").read_text())
    assert "TOY encoder" in summary["encoder"] and len(summary["steps"]) == len(res.steps)
    # every step's output exists
    for s in res.steps:
        if "output" in s:
            assert Path(s["output"]).exists(), s


def test_the_demo_refuses_an_unknown_few_shot_head_in_one_line(tmp_path):
    from click.testing import CliRunner

    from clipcache.cli.main import cli

    res = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "d"), "--fewshot", "otam"])
    assert res.exit_code == 2 and "otam" in res.output and "Traceback" not in res.output
    from cachekit.demo import DemoConfig
    from cachekit.errors import InputError

    with pytest.raises(InputError, match="unknown few-shot head 'otam'"):
        DemoConfig(fewshot="otam")
