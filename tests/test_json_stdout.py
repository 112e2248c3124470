"""``--json`` mode: stdout carries the result alone, for every command that has the option.

Every command line below runs as a real process (so writes to file descriptor 1 from C code are
seen too) with onnx installed where the ``[export]`` extra is, and each line of its stdout must
parse as JSON. The commands are enumerated from the click tree: a new ``--json`` command without
a recipe here fails :func:`test_every_json_command_has_a_recipe`.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import click
import pytest

from helpers import TINY_CFG, cli_command, cli_env, synth_frames, write_h264

CLASSES = ("bounce", "drift", "spin")


def json_commands() -> set[tuple[str, ...]]:
    """Every command path (``("index", "add")``) whose options include ``--json``."""
    from clipcache.cli.main import cli

    found = set()

    def walk(group: click.Group, prefix: tuple[str, ...]) -> None:
        for name, cmd in group.commands.items():
            path = (*prefix, name)
            if any("--json" in getattr(p, "opts", ()) for p in cmd.params):
                found.add(path)
            if isinstance(cmd, click.Group):
                walk(cmd, path)

    walk(cli, ())
    return found


def _recipes(root) -> list[tuple[tuple[str, ...], list[str]]]:
    """(command path, its arguments) in an order where each step's inputs exist."""
    store, run, index = root / "s.zarr", root / "run", root / "idx"
    clip = root / "videos" / "spin" / "spin_0.mp4"
    tiny = ["--model", str(TINY_CFG), "--pretrained", "random", "--device", "cpu"]
    return [
        (("extract",), [root / "videos", "--store", store, *tiny, "--frames", "4", "--no-progress"]),
        (("info",), [store]),
        (("verify",), [store]),
        (("methods",), ["linear_probe", "--model", TINY_CFG, "--frames", "4"]),
        (("train",), ["--method", "linear_probe", "--protocol", "allway", "--store", store, "--out", run,
                      "--epochs", "1", "--batch-size", "4", "--val-episodes", "0", "--device", "cpu",
                      "--no-progress"]),
        (("eval",), ["--store", store, "--method", "proto", "--protocol", "episodic", "--ways", "2",
                     "--episodes", "4"]),
        (("index",), ["--run", run, "--store", store]),  # exports ONNX where onnx is installed
        (("index", "build"), ["--store", store, "--out", index]),
        (("index", "add"), [index, "--class", "wave", root / "new.mp4"]),
        (("query",), [clip, "--run", run]),
    ]


def test_every_json_command_has_a_recipe(tmp_path):
    assert {path for path, _ in _recipes(tmp_path)} == json_commands()


@pytest.mark.slow
def test_stdout_of_every_json_command_is_json_alone(tmp_path):
    import subprocess

    for c, name in enumerate(CLASSES):
        for k in range(3):
            write_h264(tmp_path / "videos" / name / f"{name}_{k}.mp4",
                       synth_frames(10 * c + k, frames=12, height=64, width=80))
    write_h264(tmp_path / "new.mp4", synth_frames(99, frames=12, height=64, width=80))
    for path, args in _recipes(tmp_path):
        proc = subprocess.run(cli_command([*path, *args, "--json"]), env=cli_env(), capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, (path, proc.stderr[-2000:])
        lines = proc.stdout.splitlines()
        assert lines, path
        for line in lines:
            try:
                json.loads(line)
            except ValueError:
                pytest.fail(f"`clipcache {' '.join(path)} --json` printed a non-JSON line on stdout: {line!r}")
    meta = json.loads((tmp_path / "run" / "index" / "index.json").read_text())["meta"]
    if importlib.util.find_spec("onnx") is not None:  # the [export] extra: the ONNX path ran
        assert meta["encoder"]["onnx"] == "encoder.onnx", meta["encoder"]["notes"]


def test_a_library_print_in_json_mode_goes_to_stderr():
    """The guard itself, in a real process: Python prints and C-level writes to fd 1 leave stdout;
    JSON lines (also one written in two pieces) pass; stdout is whole again afterwards."""
    import subprocess

    code = ("import os, json, click; from clipcache.cli._output import json_stdout\n"
            "with json_stdout():\n"
            "    print('[torch.onnx] Obtain model graph ...')\n"
            "    os.write(1, b'from C\\n')\n"
            "    click.echo(json.dumps({'ok': True}))\n"
            "    print('{\"partial\": ', end='')\n"
            "    print('1}')\n"
            "    print(42)\n"
            "print('after')\n")
    proc = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ['{"ok": true}', '{"partial": 1}', "after"]
    assert "[torch.onnx] Obtain model graph" in proc.stderr and "from C" in proc.stderr
    assert "42" in proc.stderr  # valid JSON, but not an object or array: not a command's result
