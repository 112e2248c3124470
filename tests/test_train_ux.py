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


def _foreground_sigint() -> None:
    """Popen's preexec_fn: SIGINT back to its default in the child. A test suite started in the
    background (``pytest &``, nohup, some CI runners) ignores SIGINT, children inherit an ignored
    signal through exec, and Python then never raises KeyboardInterrupt: the Ctrl-C tests would
    test nothing (the command runs to the end with exit 0)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _sigint_when(proc: subprocess.Popen, ready, settle: float = 1.0) -> None:
    """Send SIGINT to ``proc`` once ``ready()`` holds (and ``settle`` seconds more). No wall-clock
    limit: a slow machine only waits longer; a hang is pytest-timeout's to catch."""
    while not ready():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    time.sleep(settle)
    assert proc.poll() is None, "the command finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)


@pytest.mark.slow
def test_ctrl_c_during_train_checkpoints_the_step_and_prints_the_resume_command(store, tmp_path):
    """A real SIGINT to a training process: exit 130, one line naming the step saved and the
    command that resumes; the run resumes to the weights of an uninterrupted run, bit for bit."""
    from safetensors.numpy import load_file

    from cachekit.train import TrainConfig, train

    run = tmp_path / "run"
    args = ["train", "--method", "linear_probe", "--protocol", "allway", "--store", str(store), "--out", str(run),
            "--epochs", "100000", "--batch-size", "4", "--val-episodes", "0", "--lr", "1e-3", "--device", "cpu",
            "--threads", "1", "--no-progress"]
    proc = subprocess.Popen(cli_command(args), env=cli_env(), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_foreground_sigint)
    _sigint_when(proc, lambda: any(run.glob("events.out.tfevents.*")))  # the writer opens just before the loop
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("WARNING")]
    assert len(lines) == 1 and lines[0].startswith("interrupted: training stopped at step "), err
    assert "Traceback" not in err and out == ""
    assert lines[0].endswith("resume with: clipcache " + " ".join(args[:]) + " --resume")
    meta = json.loads((run / "run.json").read_text())
    k = meta["step"]
    assert meta["status"] == "interrupted" and 0 < k < meta["train"]["steps"]
    assert f"step {k} of {meta['train']['steps']}" in lines[0]
    # resume for 5 more steps and compare with a straight run to the same step
    cfg = TrainConfig(**meta["train"]["config"])
    resumed = train(str(store), str(run), "linear_probe", None, cfg, resume=True, progress=False, threads=1,
                    stop_after=k + 5)
    straight = train(str(store), str(tmp_path / "straight"), "linear_probe", None, cfg, progress=False, threads=1,
                     stop_after=k + 5)
    assert resumed.step == straight.step == k + 5
    a, b = load_file(run / "last.safetensors"), load_file(tmp_path / "straight" / "last.safetensors")
    assert a.keys() == b.keys() and all((a[n] == b[n]).all() for n in a)


@pytest.mark.slow
def test_ctrl_c_during_extract_keeps_what_is_cached_and_the_same_command_resumes(tmp_path):
    """A real SIGINT to an extraction: exit 130, one line with the command to run again; running
    it finishes the store, equal (every array's hash) to an uninterrupted extraction's."""
    from helpers import record_hashes

    n = 300  # enough that a fast machine is still extracting when the signal comes
    for i in range(n):
        write_h264(tmp_path / "videos" / f"c{i % 3}" / f"v{i}.mp4", synth_frames(1000 + i, frames=8, height=32, width=32))
    common = ["--model", str(TINY_CFG), "--pretrained", "random", "--frames", "4", "--device", "cpu",
              "--workers", "1", "--no-progress", "--commit-every", "4"]
    args = ["extract", str(tmp_path / "videos"), "--store", str(tmp_path / "s.zarr"), *common]
    proc = subprocess.Popen(cli_command(args), env=cli_env(), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_foreground_sigint)
    commits = tmp_path / "s.zarr" / "meta" / "log" / "videos"  # <segment>/<seq>.json: one per committed batch
    _sigint_when(proc, lambda: commits.is_dir() and any(True for _ in commits.glob("*/[0-9]*.json")), settle=0.0)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("WARNING")]
    assert len(lines) == 1 and lines[0].startswith("interrupted") and "Traceback" not in err, err
    assert lines[0].endswith("resume with: clipcache " + " ".join(args))
    again = subprocess.run(cli_command(args), env=cli_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"{n} extracted" not in again.stdout and "already cached" in again.stdout
    straight = subprocess.run(cli_command(["extract", str(tmp_path / "videos"), "--store", str(tmp_path / "t.zarr"),
                                           *common]), env=cli_env(), cwd=ROOT, capture_output=True, text=True,
                              timeout=600)
    assert straight.returncode == 0, straight.stderr
    assert record_hashes(tmp_path / "s.zarr") == record_hashes(tmp_path / "t.zarr")
    assert len(record_hashes(tmp_path / "t.zarr")) == n


# ----------------------------------------------------------------------------- progress bars
def _on_a_terminal(args: list[str], timeout: float = 600) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal (as a person at a shell): (rc, stdout, stderr)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a fresh pty is 0 columns wide
    proc = subprocess.Popen(cli_command(args), env=cli_env(COLUMNS="120"), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=slave, text=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    out = proc.stdout.read()
    proc.wait(timeout=timeout)
    os.close(master)
    return proc.returncode, out, b"".join(chunks).decode(errors="replace")


def _has_bar(err: str, desc: str) -> bool:
    """A tqdm bar named ``desc`` with its rate (x/s) and ETA (elapsed<remaining)."""
    import re

    return re.search(rf"{re.escape(desc)}[^\n\r]*\d+/\d+ \[\d\d:\d\d<\d\d:\d\d, +[\d.?]+ ?\w*/s[,\]]", err) is not None


@pytest.mark.slow
def test_long_steps_show_bars_with_eta_and_rate_on_a_terminal_only(store, tmp_path):
    """synth, eval, index and train draw a bar (ETA, rate) when stderr is a terminal; none with
    --no-progress, and none when stderr is a pipe."""
    from helpers import run_cli

    runs = {
        "synth": ["synth", str(tmp_path / "syn"), "--classes", "something falling,something rising,something appearing",
                  "--videos-per-class", "3", "--frames", "8", "--size", "32"],
        "eval": ["eval", "--store", str(store), "--method", "proto", "--protocol", "episodic", "--ways", "2",
                 "--episodes", "300", "--batch-episodes", "20"],
        "index": ["index", "--store", str(store), "--out", str(tmp_path / "idx"), "--no-onnx"],
        "train linear_probe": ["train", "--method", "linear_probe", "--protocol", "allway", "--store", str(store),
                               "--out", str(tmp_path / "run"), "--epochs", "3", "--batch-size", "4", "--device",
                               "cpu"],
    }
    for desc, args in runs.items():
        rc, out, err = _on_a_terminal(args)
        assert rc == 0, err
        assert _has_bar(err, desc), (desc, err[-1500:])
        if desc == "train linear_probe":
            continue  # a second train into the same --out is another test's business
        for extra in (["--no-progress"],):
            if desc == "index":
                args = [*args[:4], str(tmp_path / f"idx{len(extra)}"), *args[5:]]
            if desc == "synth":
                args = [args[0], str(tmp_path / "syn2"), *args[2:]]
            rc, out, err = _on_a_terminal([*args, *extra])
            assert rc == 0 and not _has_bar(err, desc) and "\r" not in err, (desc, err[-800:])
        rc, out, err = run_cli([*args[:1], *([str(tmp_path / "syn3")] if desc == "synth" else []),
                                *(args[2:] if desc == "synth" else args[1:])])  # stderr is a pipe
        assert rc == 0 and not _has_bar(err, desc) and "\r" not in err, (desc, err[-800:])


def test_allway_eval_shows_a_bar_on_a_terminal(store):
    """All-way scoring goes video by video over the whole test list (a million videos against a
    thousand classes is minutes of OTAM): a bar with its ETA, as the episodic loop has."""
    rc, out, err = _on_a_terminal(["eval", "--store", str(store), "--method", "proto", "--protocol", "allway",
                                   "--shots", "1"])
    assert rc == 0, err
    assert _has_bar(err, "eval") and "video/s" in err, err[-1500:]


def test_progress_is_wanted_on_a_terminal_without_no_progress():
    import io

    from cachekit.progress import bar, scope, wanted

    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert wanted(False, Tty()) and not wanted(True, Tty()) and not wanted(False, io.StringIO())
    assert bar(range(3)).disable  # outside a command: silent
    with scope(True):
        assert not bar(range(3)).disable
        assert bar(range(3), on=False).disable


def test_readme_and_demo_show_the_three_commands_first():
    """The README's first code block and the demo's first lines are the three commands."""
    import re

    from cachekit.demo import THREE_COMMANDS

    want = ["clipcache extract VIDEOS --store S", "clipcache train --method M --store S --out R",
            "clipcache query clip.mp4 --run R"]
    assert [c for c, _ in THREE_COMMANDS] == want
    readme = (ROOT / "README.md").read_text()
    first = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    assert [ln.split("#")[0].strip() for ln in first.strip().splitlines()] == want
