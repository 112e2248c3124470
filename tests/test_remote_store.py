"""Stores at fsspec URLs: an in-memory fsspec file system stands in for s3:// or gs://."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from cachekit.cache import FeatureCache
from cachekit.encoder import EncoderConfig
from cachekit.extract import ExtractConfig, extract
from cachekit.inputs import collect_inputs
from cachekit.synth import SynthConfig, synth_dataset
from cachekit.video import SamplerConfig
from clipcache.stores import StoreLocked, open_store
from clipcache.stores.zarr_store import ZarrStore

TINY = str(Path(__file__).resolve().parent / "assets" / "tiny-clip.json")


@pytest.fixture(scope="module")
def csv(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("remote-synth")
    res = synth_dataset(out, SynthConfig(classes=("something falling", "something rising", "something bouncing"), videos_per_class=2,
                                         frames=8, size=64, seed=1))
    return str(res.csv)


def _cfg() -> ExtractConfig:
    return ExtractConfig(encoder=EncoderConfig(model=TINY, pretrained="random"),
                         sampler=SamplerConfig(frames=4), tokens_at=(1,), batch_size=8)


def test_extract_to_fsspec_url_equals_local(csv: str, tmp_path: Path) -> None:
    url = f"memory://bucket-{uuid.uuid4().hex[:8]}/cache.zarr"
    s_remote = extract(collect_inputs([csv]), url, _cfg(), progress=False)
    s_local = extract(collect_inputs([csv]), str(tmp_path / "local.zarr"), _cfg(), progress=False)
    assert s_remote.extracted == s_local.extracted == 6
    with FeatureCache(url) as r, FeatureCache(str(tmp_path / "local.zarr")) as loc:
        assert r.video_keys == loc.video_keys
        np.testing.assert_array_equal(r.emb(), loc.emb())
        np.testing.assert_array_equal(r.tokens(1, [0, 1]), loc.tokens(1, [0, 1]))
        np.testing.assert_array_equal(r.text(), loc.text())
        assert r.classes == ["something bouncing", "something falling", "something rising"]
    # resume against the URL skips everything
    again = extract(collect_inputs([csv]), url, _cfg(), progress=False)
    assert again.extracted == 0 and again.already_done == 6


def test_remote_lease_refuses_a_second_writer_with_the_same_id_and_is_released() -> None:
    url = f"memory://bucket-{uuid.uuid4().hex[:8]}/lease.zarr"
    first = open_store(url, "a", attrs={"cache_key": {}}, writer="w1")
    with pytest.raises(StoreLocked, match="writer w1 of .* is already running"):
        open_store(url, "a", writer="w1")
    other = open_store(url, "a", writer="w2")  # another writer id writes along
    other.commit("videos", "k2", {"emb": np.ones((1, 2, 3), np.float32)}, {})
    first.commit("videos", "k1", {"emb": np.zeros((1, 2, 3), np.float32)}, {})
    assert first.keys("videos") == other.keys("videos") == ["k1", "k2"]
    first.close()
    other.close()
    open_store(url, "a", writer="w1").close()  # the lease went with the first writer


def test_file_url_uses_atomic_local_store(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/x.zarr", "a", attrs={"cache_key": {}})
    try:
        # the local store (zarr's LocalStore: atomic writes), which alone reports its files on disk
        assert isinstance(store, ZarrStore) and store.path == f"{tmp_path}/x.zarr"
        store.commit("videos", "k", {"emb": np.ones((1, 2, 3), np.float32)}, {})
        assert store.layout_stats()["files"] > 0
    finally:
        store.close()
    with open_store(str(tmp_path / "x.zarr")) as again:
        assert again.keys("videos") == ["k"]
