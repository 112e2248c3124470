"""What users of the field expect around training: TensorBoard curves in the run directory (read
back with TensorBoard's own reader), progress bars that stay off stderr when it is not a terminal,
and Ctrl-C (a real SIGINT to a real process) during train or extract leaving a resumable state
and the command that resumes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ROOT, TINY_CFG, cli_command, cli_env, synth_frames, write_h264

CLASSES = ("bounce", "drift", "spin", "swirl")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A store of 4 classes x 5 clips (tiny model, random weights, T = 4)."""
    from cachekit.encoder import EncoderConfig
    from cachekit.extract import ExtractConfig, extract
    from cachekit.inputs import collect_inputs
    from cachekit.video import SamplerConfig

    root = tmp_path_factory.mktemp("ux")
    for c, name in enumerate(CLASSES):
        for k in range(5):
            write_h264(root / "videos" / name / f"{name}_{k}.mp4", synth_frames(20 * c + k, frames=10, height=48, width=64))
    cfg = ExtractConfig(encoder=EncoderConfig(model=str(TINY_CFG), pretrained="random", device="cpu"),
                        sampler=SamplerConfig(frames=4), batch_size=16, workers=1)
    s = extract(collect_inputs([str(root / "videos")]), str(root / "s.zarr"), cfg, progress=False)
    assert s.extracted == 20
    return root / "s.zarr"


def test_tensorboard_curves_in_the_run_directory(store, tmp_path):
    """loss, learning rate, throughput every --log-every steps (and the last partial interval),
    validation accuracy at each validation; read back with tensorboard's EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cachekit.train import TrainConfig, train

    run = tmp_path / "run"
    cfg = TrainConfig(protocol="allway", epochs=7, batch_size=4, val_every=5, device="cpu", lr=1e-3)
    r = train(str(store), str(run), "linear_probe", None, cfg, progress=False, log_every=3)
    assert r.status == "complete"
    steps = r.steps
    assert list(run.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/videos_per_s", "val/accuracy", "val/ci95"} <= tags
    want = sorted({*range(3, steps + 1, 3), steps})  # every 3 steps, and the last one
    for tag in ("train/loss", "train/lr", "train/videos_per_s"):
        assert [e.step for e in acc.Scalars(tag)] == want, tag
    assert all(e.value > 0 for e in acc.Scalars("train/videos_per_s"))
    meta = json.loads((run / "run.json").read_text())
    val = [(h["step"], h["val_accuracy"]) for h in meta["history"] if h.get("val_accuracy") is not None]
    got = [(e.step, e.value) for e in acc.Scalars("val/accuracy")]
    assert [s for s, _ in got] == [s for s, _ in val] and len(val) >= 3
    assert all(abs(a - b) < 1e-4 for (_, a), (_, b) in zip(got, val))  # float32 in the event file
    lrs = [e.value for e in acc.Scalars("train/lr")]
    assert lrs[-1] < max(lrs)  # the cosine schedule, as trained


def test_log_every_must_be_positive(store, tmp_path):
    from cachekit.errors import InputError
    from cachekit.tblog import TrainCurves

    with pytest.raises(InputError, match="--log-every"):
        TrainCurves(tmp_path, log_every=0)
