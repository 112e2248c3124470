"""`clipcache extract` and `train` under torchrun: 2 CPU ranks over gloo write one store equal to
a single-process run's (same keys, same array hashes), for Zarr and HDF5; a backbone method trained
data-parallel ends with the weights of one process over the same global batches; more ranks than
GPUs fall back to the CPU and say so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cachekit.synth import SynthConfig, synth_dataset
from clipcache.stores import open_store

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "assets" / "tiny-clip.json")


def _extract(args: list[str], cwd: Path, torchrun: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               str(torchrun), "-m", "clipcache.cli.main", "extract", *args]
    else:
        cmd = [sys.executable, "-m", "clipcache.cli.main", "extract", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synth_dataset(out, SynthConfig(classes=("something falling", "something rising", "something appearing",
                                            "something disappearing"),
                                   videos_per_class=4, frames=12, size=64, seed=3))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_torchrun_two_ranks_equal_single_process(clips: Path, tmp_path: Path, suffix: str) -> None:
    common = ["videos.csv", "--model", TINY, "--pretrained", "random", "--frames", "4", "--tokens-at", "1",
              "--batch-size", "8"]
    single = tmp_path / f"single{suffix}"
    multi = tmp_path / f"multi{suffix}"
    r1 = _extract([*common, "--store", str(single)], clips)
    assert r1.returncode == 0, r1.stderr
    r2 = _extract([*common, "--store", str(multi)], clips, torchrun=2)
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout.count("store ") == 1, r2.stdout  # rank 0 alone reports, for the whole job
    assert "16 extracted" in r2.stdout
    with open_store(single) as a, open_store(multi) as b:
        ra, rb = a.records("videos"), b.records("videos")
        assert sorted(ra) == sorted(rb) and len(ra) == 16
        for k in ra:
            assert ra[k]["arrays"] == rb[k]["arrays"], k  # shapes, dtypes and sha256 of every array
        assert a.records("text").keys() == b.records("text").keys()
        assert b.verify("videos") == (16, [])
        if suffix == ".zarr":  # each rank appended to its own segment: disjoint, never shared
            segs = {loc[0].split("/", 1)[0] for r in rb.values() for loc in r["loc"].values()}
            assert len(segs) == 2
            per_seg = [{k for k, r in rb.items() if r["loc"]["emb"][0].startswith(sg)} for sg in segs]
            assert not (per_seg[0] & per_seg[1]) and len(per_seg[0] | per_seg[1]) == 16
    # Resuming the distributed run finds everything done and changes nothing.
    r3 = _extract([*common, "--store", str(multi)], clips, torchrun=2)
    assert r3.returncode == 0, r3.stderr
    assert "0 extracted, 16 already cached" in r3.stdout


def _train(args: list[str], cwd: Path, torchrun: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(torchrun)]
    cmd = [*(launch if torchrun else [sys.executable]), "-m", "clipcache.cli.main", "train", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


# Data-parallel vs one process: both sum the same float32 gradients in another order (the mean of
# two half-batch means against one mean of the batch), and Adam's update g / sqrt(v) magnifies such
# rounding where a gradient is near zero. Each step moves a weight by at most about lr = 1e-3, 8e-3
# over the 8 steps; the runs agree within 1e-4 of that (measured: at most 1.4e-5).
DP_ATOL = 1e-4


@pytest.mark.slow
def test_torchrun_training_backbone_data_parallel_and_cache_methods_on_rank0(clips: Path, tmp_path: Path) -> None:
    """A backbone method trains data-parallel on 2 gloo ranks (gradients averaged each step) and
    ends with the weights of a single process over the same global batches (2 ranks x 2 videos =
    4 videos per step, the same 8 steps); a from-cache method trains on rank 0 alone and says so.
    Only rank 0 writes and reports."""
    import json

    from safetensors.numpy import load_file

    store = tmp_path / "s.zarr"
    r = _extract(["splits/clip_fsar/train_few_shot.txt", "splits/clip_fsar/val_few_shot.txt",
                  "splits/clip_fsar/test_few_shot.txt", "--class-names", "splits/clip_fsar", "--video-root", ".",
                  "--store", str(store), "--model", TINY, "--pretrained", "random", "--frames", "4",
                  "--tokens-at", "2"], clips)
    assert r.returncode == 0, r.stderr
    common = ["--method", "ez_clip", "--opt", "from_block=2", "--store", str(store), "--protocol", "zeroshot",
              "--lr", "1e-3", "--threads", "1", "--device", "cpu", "--json"]
    # 8 training videos: 2 ranks x batch 2 for 2 epochs of 4 steps = one process x batch 4 for 4 epochs of 2
    bb = _train([*common, "--out", str(tmp_path / "ez"), "--epochs", "2", "--batch-size", "2"], clips, torchrun=2)
    assert bb.returncode == 0, bb.stderr[-3000:]
    assert bb.stdout.count('"run_dir"') == 1  # one report, from rank 0
    meta = json.loads((tmp_path / "ez" / "run.json").read_text())
    assert meta["status"] == "complete" and any("data-parallel over 2 ranks" in n for n in meta["notes"])
    assert meta["best"]["val_accuracy"] is not None and meta["step"] == 8
    one = _train([*common, "--out", str(tmp_path / "one"), "--epochs", "4", "--batch-size", "4"], clips, torchrun=0)
    assert one.returncode == 0, one.stderr[-3000:]
    assert json.loads((tmp_path / "one" / "run.json").read_text())["step"] == 8
    dp, single = load_file(tmp_path / "ez" / "last.safetensors"), load_file(tmp_path / "one" / "last.safetensors")
    assert dp.keys() == single.keys() and dp
    for k in dp:
        np.testing.assert_allclose(dp[k], single[k], rtol=0, atol=DP_ATOL, err_msg=k)
    # the tolerance tells runs apart: half the steps (4) of the same training are far outside it
    half = _train([*common, "--out", str(tmp_path / "half"), "--epochs", "2", "--batch-size", "4"], clips, torchrun=0)
    assert half.returncode == 0, half.stderr[-3000:]
    other = load_file(tmp_path / "half" / "last.safetensors")
    assert max(float(np.abs(dp[k] - other[k]).max()) for k in dp) > 10 * DP_ATOL
    fc = _train(["--method", "ma_fsar", "--store", str(store), "--out", str(tmp_path / "ma"), "--ways", "2",
                 "--queries", "1", "--episodes", "4", "--val-episodes", "0", "--opt", "ffn_dim=32", "--threads", "1",
                 "--json"], clips, torchrun=2)
    assert fc.returncode == 0, fc.stderr[-3000:]
    meta = json.loads((tmp_path / "ma" / "run.json").read_text())
    assert meta["status"] == "complete" and any("rank 0 alone" in n for n in meta["notes"])


@pytest.mark.parametrize("gpus, local_world, want", [(1, 2, "cpu"), (2, 2, "cuda:1"), (4, 2, "cuda:1"), (0, 2, None)])
def test_more_ranks_than_gpus_fall_back_to_the_cpu_and_say_so(monkeypatch, gpus, local_world, want):
    """CUDA visible with fewer GPUs than local ranks (the H200 box: 1 GPU, torchrun 2 ranks): every
    rank on the CPU with a note; enough GPUs: rank LOCAL_RANK on its own GPU. Simulated here by
    setting what torch.cuda reports; the lead's GPU run exercises the real thing."""
    import torch

    from cachekit.distributed import Dist, rank_device
    from cachekit.errors import InputError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world))
    dist = Dist(rank=1, world=local_world)
    if want is None:  # no GPU: auto is the CPU, an explicit cuda is one clear error
        assert rank_device("auto", dist) == ("cpu", None)
        with pytest.raises(InputError, match="no CUDA device"):
            rank_device("cuda", dist)
        return
    device, note = rank_device("auto", dist)
    assert device == want
    assert (note is None) == (want != "cpu")
    if note:
        assert "more ranks than GPUs" in note and "--nproc-per-node 1" in note
    assert rank_device("cpu", dist) == ("cpu", None)
    assert rank_device("auto", Dist()) == ("cuda", None)  # one process: as before


def _fewer_gpus_than(n: int) -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.device_count() < n


@pytest.mark.slow
@pytest.mark.skipif(not _fewer_gpus_than(2), reason="needs CUDA with fewer than 2 GPUs (the suite's GPU run)")
def test_torchrun_with_more_ranks_than_gpus_trains_on_the_cpu_and_says_so(clips: Path, tmp_path: Path) -> None:
    """On a 1-GPU machine, 2 ranks with --device auto: no traceback, every rank on the CPU (gloo),
    and the run's notes say why."""
    import json

    store = tmp_path / "s.zarr"
    r = _extract(["splits/clip_fsar/train_few_shot.txt", "splits/clip_fsar/val_few_shot.txt",
                  "--class-names", "splits/clip_fsar", "--video-root", ".", "--store", str(store), "--model", TINY,
                  "--pretrained", "random", "--frames", "4", "--tokens-at", "2"], clips)
    assert r.returncode == 0, r.stderr
    bb = _train(["--method", "ez_clip", "--opt", "from_block=2", "--store", str(store), "--out", str(tmp_path / "ez"),
                 "--protocol", "zeroshot", "--epochs", "1", "--batch-size", "2", "--threads", "1", "--json"],
                clips, torchrun=2)
    assert bb.returncode == 0 and "Traceback" not in bb.stderr, bb.stderr[-3000:]
    meta = json.loads((tmp_path / "ez" / "run.json").read_text())
    assert meta["environment"]["device"] == "cpu"
    assert any("more ranks than GPUs" in n for n in meta["notes"]), meta["notes"]
