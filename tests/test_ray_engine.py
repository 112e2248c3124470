"""The Ray Data engine on a local Ray cluster (``ray.init(num_cpus=2)``): decoding as Ray tasks,
encoding in a pool of CPU actors that each commit as their own writer. The store equals one
process's extraction bit for bit, a rerun resumes from the store's records, failures are
recorded, and ``clipcache extract --engine ray`` runs the same."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'clipcache[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'clipcache[ray]')")

from cachekit.encoder import EncoderConfig  # noqa: E402
from cachekit.extract import ExtractConfig, extract  # noqa: E402
from cachekit.inputs import collect_inputs  # noqa: E402
from cachekit.synth import SynthConfig, synth_dataset  # noqa: E402
from cachekit.video import SamplerConfig  # noqa: E402
from helpers import TINY_CFG, invoke, record_hashes  # noqa: E402
from clipcache.stores import open_store  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rayclips")
    synth_dataset(out, SynthConfig(classes=("something falling", "something rising", "something appearing"),
                                   videos_per_class=3, frames=12, size=64, seed=11))
    (out / "videos" / "something_rising" / "broken.mp4").write_bytes(b"not a video at all")
    return out


def _cfg(**kw) -> ExtractConfig:
    return ExtractConfig(encoder=EncoderConfig(model=str(TINY_CFG), pretrained="random"),
                         sampler=SamplerConfig(frames=4), tokens_at=(1,), commit_every=2, **kw)


@pytest.mark.slow
def test_ray_engine_equals_one_process_and_resumes(cluster, clips, tmp_path):
    from cachekit.ray_engine import extract_ray

    inputs = collect_inputs([str(clips / "videos")])
    ref = extract(inputs, str(tmp_path / "ref.zarr"), _cfg(), progress=False)
    store = tmp_path / "ray.zarr"
    s = extract_ray(collect_inputs([str(clips / "videos")]), str(store), _cfg(), progress=False)
    assert s.extracted == ref.extracted == 9 and len(s.failed) == 1 and "broken.mp4" in s.failed[0][0]
    assert record_hashes(store) == record_hashes(tmp_path / "ref.zarr")
    assert record_hashes(store, "text") == record_hashes(tmp_path / "ref.zarr", "text")
    with open_store(store) as st:
        writers = {r["loc"]["emb"][0].split(".")[0] for r in st.records("videos").values()}
        assert all(w.startswith("ray-") for w in writers)  # committed by the actors, each its own writer
        assert st.verify("videos") == (9, []) and len(st.json_keys("failed")) == 1
    # a rerun resumes from the store's records: nothing to encode, the failure is not retried
    again = extract_ray(collect_inputs([str(clips / "videos")]), str(store), _cfg(), progress=False)
    assert again.extracted == 0 and again.already_done == 9 and again.skipped_failed == 1


@pytest.mark.slow
def test_cli_engine_ray_resumes_a_partial_store(cluster, clips, tmp_path):
    """A store with some videos already (another engine's): --engine ray adds the rest, equal to
    one process's; the command as the README shows it."""
    part = tmp_path / "part"
    shutil.copytree(clips / "videos" / "something_falling", part / "something_falling")
    store = tmp_path / "s.zarr"
    args = ["--store", str(store), "--model", str(TINY_CFG), "--pretrained", "random", "--frames", "4",
            "--tokens-at", "1", "--no-progress"]
    assert invoke(["extract", str(part), *args])[0] == 0
    rc, out, err = invoke(["extract", str(clips / "videos"), *args, "--engine", "ray", "--commit-every", "2"])
    assert rc == 1 and "6 extracted, 3 already cached, 1 failed" in out, (out, err)  # exit 1: broken.mp4
    ref = tmp_path / "ref.zarr"
    extract(collect_inputs([str(clips / "videos")]), str(ref), _cfg(), progress=False)
    assert record_hashes(store) == record_hashes(ref)
    # no INPUT: the store's own videos are extended with the encoder its key names (the actors
    # load it too), not with --model's default, equal to one process extending them
    rc, out, err = invoke(["extract", "--store", str(store), "--tokens-at", "0", "--engine", "ray", "--no-progress"])
    assert rc == 0 and "9 extended" in out, (out, err)
    assert invoke(["extract", "--store", str(ref), "--tokens-at", "0", "--no-progress"])[0] == 0
    assert record_hashes(store) == record_hashes(ref)
    rc, out, err = invoke(["extract", str(part), "--store", str(tmp_path / "x.h5"), "--model",
                           str(TINY_CFG), "--pretrained", "random", "--engine", "ray"])
    assert rc == 2 and "Zarr stores only" in err
