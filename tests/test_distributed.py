"""`clipcache extract` under torchrun: 2 CPU ranks over gloo write one store equal to a
single-process run's (same keys, same array hashes), for Zarr and HDF5."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cachekit.synth import SynthConfig, synth_dataset
from stores import open_store

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "assets" / "tiny-clip.json")


def _extract(args: list[str], cwd: Path, torchrun: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               str(torchrun), "-m", "cli.main", "extract", *args]
    else:
        cmd = [sys.executable, "-m", "cli.main", "extract", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synth_dataset(out, SynthConfig(classes=("something falling", "something rising", "something appearing",
                                            "something disappearing"),
                                   videos_per_class=3, frames=12, size=64, seed=3))
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
    assert "12 extracted" in r2.stdout
    with open_store(single) as a, open_store(multi) as b:
        ra, rb = a.records("videos"), b.records("videos")
        assert sorted(ra) == sorted(rb) and len(ra) == 12
        for k in ra:
            assert ra[k]["arrays"] == rb[k]["arrays"], k  # shapes, dtypes and sha256 of every array
        assert a.records("text").keys() == b.records("text").keys()
        assert b.verify("videos") == (12, [])
        if suffix == ".zarr":  # each rank appended to its own segment: disjoint, never shared
            segs = {loc[0].split("/", 1)[0] for r in rb.values() for loc in r["loc"].values()}
            assert len(segs) == 2
            per_seg = [{k for k, r in rb.items() if r["loc"]["emb"][0].startswith(sg)} for sg in segs]
            assert not (per_seg[0] & per_seg[1]) and len(per_seg[0] | per_seg[1]) == 12
    # Resuming the distributed run finds everything done and changes nothing.
    r3 = _extract([*common, "--store", str(multi)], clips, torchrun=2)
    assert r3.returncode == 0, r3.stderr
    assert "0 extracted, 12 already cached" in r3.stdout


def _train(args: list[str], cwd: Path, torchrun: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(torchrun),
           "-m", "cli.main", "train", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_torchrun_training_backbone_data_parallel_and_cache_methods_on_rank0(clips: Path, tmp_path: Path) -> None:
    """A backbone method trains data-parallel on 2 gloo ranks (gradients averaged each step);
    a from-cache method trains on rank 0 alone and says so. Only rank 0 writes and reports."""
    import json

    store = tmp_path / "s.zarr"
    r = _extract(["splits/clip_fsar/train_few_shot.txt", "splits/clip_fsar/val_few_shot.txt",
                  "splits/clip_fsar/test_few_shot.txt", "--class-names", "splits/clip_fsar", "--video-root", ".",
                  "--store", str(store), "--model", TINY, "--pretrained", "random", "--frames", "4",
                  "--tokens-at", "2"], clips)
    assert r.returncode == 0, r.stderr
    bb = _train(["--method", "ez_clip", "--opt", "from_block=2", "--store", str(store), "--out", str(tmp_path / "ez"),
                 "--protocol", "zeroshot", "--epochs", "2", "--batch-size", "2", "--lr", "1e-3", "--threads", "1",
                 "--json"], clips, torchrun=2)
    assert bb.returncode == 0, bb.stderr[-3000:]
    assert bb.stdout.count('"run_dir"') == 1  # one report, from rank 0
    meta = json.loads((tmp_path / "ez" / "run.json").read_text())
    assert meta["status"] == "complete" and any("data-parallel over 2 ranks" in n for n in meta["notes"])
    assert meta["best"]["val_accuracy"] is not None
    fc = _train(["--method", "ma_fsar", "--store", str(store), "--out", str(tmp_path / "ma"), "--ways", "2",
                 "--queries", "1", "--episodes", "4", "--val-episodes", "0", "--opt", "ffn_dim=32", "--threads", "1",
                 "--json"], clips, torchrun=2)
    assert fc.returncode == 0, fc.stderr[-3000:]
    meta = json.loads((tmp_path / "ma" / "run.json").read_text())
    assert meta["status"] == "complete" and any("rank 0 alone" in n for n in meta["notes"])
