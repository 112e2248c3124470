"""Extending a store in place (issue 12): more token blocks, the pixel cache, more templates.

Only the missing arrays are computed, under the same store and key, and the result is what a
fresh extraction with everything asked for at once gives, bit for bit (CPU, per-video forwards).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cachekit.batches import CacheData
from cachekit.cache import FeatureCache
from cachekit.errors import InputError
from cachekit.methods.base import CacheNeeds
from helpers import invoke, record_hashes, synth_frames, write_h264
from clipcache.stores import open_store


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("extend")
    for i, cls in enumerate(["jump", "wave", "wave"]):
        write_h264(d / "videos" / cls / f"{i}.mp4", synth_frames(50 + i, 12, 48, 64))
    return d / "videos"


@pytest.fixture(scope="module")
def model(tiny_cfg, tiny_weights):
    return ["--model", tiny_cfg, "--pretrained", str(tiny_weights), "--frames", "4", "--views", "2",
            "--batch-size", "5", "--no-progress"]


def run(*args):
    rc, out, err = invoke(["extract", *map(str, args)])
    assert rc == 0, err
    return out


def key_of(store):
    with open_store(store) as s:
        return s.attrs["cache_key"]


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_extending_equals_a_fresh_extraction(videos, model, tmp_path, suffix):
    ext, ref = tmp_path / f"ext{suffix}", tmp_path / f"ref{suffix}"
    run(videos, "--store", ext, *model, "--tokens-at", "1")
    before = record_hashes(ext)
    out = run(videos, "--store", ext, *model, "--tokens-at", "0,2", "--pixels")
    assert "0 extracted, 3 already cached, 3 extended" in out
    assert key_of(ext)["tokens_at"] == [0, 1, 2] and key_of(ext)["pixels"] is True
    run(videos, "--store", ref, *model, "--tokens-at", "0,1,2", "--pixels")
    got, want = record_hashes(ext), record_hashes(ref)
    assert got == want  # every array of every video, tokens and pixels included
    assert {k: {n: h for n, h in v.items() if n in before[k]} for k, v in got.items()} == before
    assert {k: v for k, v in key_of(ext).items()} == key_of(ref)
    with open_store(ext) as s:
        assert s.verify("videos") == (3, [])
    out = run(videos, "--store", ext, *model, "--tokens-at", "1")  # asking for less: nothing to do
    assert "0 extracted, 3 already cached, 0 failed" in out
    assert record_hashes(ext) == want


def test_no_inputs_extends_the_stores_own_videos_and_new_templates(videos, model, tmp_path):
    store = tmp_path / "s.zarr"
    run(videos, "--store", store, *model)
    out = run("--store", store, *model, "--tokens-at", "3", "--templates", "ma_fsar16")
    assert "3 extended" in out and "2 new classes' text" in out
    with FeatureCache(str(store)) as c:
        assert c.tokens_at == (3,) and c.tokens(3, [0, 1]).shape[:3] == (2, 4, 50)
        assert c.text().shape[:2] == (2, 16)  # the largest template set cached
        assert set(len(r["templates"]) for r in c.text_entries().values()) == {1, 16}
    rc, out, err = invoke(["extract", "--store", str(tmp_path / "none.zarr"), *model])
    assert rc == 2 and "no INPUT given" in err and err.count("\n") == 1


def test_info_counts_each_array_over_the_videos_that_have_it(videos, model, tmp_path):
    """An extension under way (killed, or another shard's): info gave every array the count of
    all videos, from the first video's record."""
    store = tmp_path / "s.zarr"
    run(videos, "--store", store, *model)
    with open_store(store, "a", writer="ext") as s:
        k = s.keys("videos")[1]
        s.commit_many("videos", [(k, {"tokens_1": np.zeros((1, 4, 50, 64), np.float32)}, {})], extends=True)
    with FeatureCache(str(store)) as c:
        arrays = c.info()["arrays"]
    assert arrays["emb"][0] == 3 and arrays["tokens_1"] == [1, 1, 4, 50, 64]


def test_key_mismatch_names_each_field_once(videos, model, tmp_path):
    store = tmp_path / "s.zarr"
    run(videos, "--store", store, *model)
    rc, out, err = invoke(["extract", str(videos), "--store", str(store), *model, "--frames", "6"])
    assert rc == 2 and "frames: store has 4, asked 6" in err and "frames: frames" not in err, err
    assert err.count("\n") == 1


def test_missing_tokens_name_the_one_command_that_adds_them(videos, model, tmp_path):
    store = tmp_path / "s.zarr"
    run(videos, "--store", store, *model, "--tokens-at", "1")
    with FeatureCache(str(store)) as c:
        with pytest.raises(InputError) as exc:
            CacheData(c, CacheNeeds(tokens_at=(2, 3)))
        msg = str(exc.value)
    assert "\n" not in msg and f"clipcache extract --store {store} --tokens-at 1,2,3" in msg
    assert "--frames 4 --views 2" in msg


def test_encoder_runs_only_as_far_as_the_blocks_asked_for(tiny_encoder):
    pixels = torch.randn(3, 3, 224, 224)
    calls = []
    blocks = tiny_encoder.visual.transformer.resblocks
    hooks = [b.register_forward_hook(lambda *_a, _i=i: calls.append(_i)) for i, b in enumerate(blocks)]
    try:
        with torch.inference_mode():
            toks = tiny_encoder.encode_tokens(pixels, [0, 2])
            assert calls == [0, 1]  # blocks 2 and 3 never ran
            full = tiny_encoder.encode_frames(pixels, [0, 2]).tokens
    finally:
        for h in hooks:
            h.remove()
    for b in (0, 2):
        assert torch.equal(toks[b], full[b])


def test_cached_pixels_give_the_same_normalised_tensors_as_decoding(videos, model, tmp_path, tiny_encoder):
    with_px, without = tmp_path / "px.zarr", tmp_path / "nopx.zarr"
    run(videos, "--store", with_px, *model, "--pixels")
    run(videos, "--store", without, *model)
    needs = CacheNeeds(emb=False, pixels=True)
    with FeatureCache(str(with_px)) as a, FeatureCache(str(without)) as b:
        da, db = CacheData(a, needs, encoder=tiny_encoder), CacheData(b, needs, encoder=tiny_encoder)
        assert da.cached_pixels and not db.cached_pixels
        rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
        for idx in ([0, 1, 2], [2, 0]):
            pa = da.batch(idx, view=None, rng=rng_a).pixels
            pb = db.batch(idx, view=None, rng=rng_b).pixels
            assert pa.shape == (len(idx), 4, 3, 224, 224) and pa.dtype == torch.float32
            assert torch.equal(pa, pb)
        u8 = a.pixels([1], view=1)
        assert u8.dtype == np.uint8 and u8.shape == (1, 4, 3, 224, 224)
        with pytest.raises(InputError, match="--pixels"):
            b.pixels([0])


def test_a_damaged_extension_is_repaired_by_redoing_the_whole_video(videos, model, tmp_path):
    """verify --repair drops the entry and its extension records; extract redoes the video whole."""
    import zarr

    store = tmp_path / "s.zarr"
    run(videos, "--store", store, *model, "--tokens-at", "1")
    run(videos, "--store", store, *model, "--tokens-at", "2")
    want = record_hashes(store)
    with open_store(store) as s:
        key = s.keys("videos")[1]
        apath, row = s.locate("videos", key, "tokens_2")
    z = zarr.open_array(zarr.storage.LocalStore(store), path=f"seg/videos/{apath}", mode="r+")
    z[row, 0, 0, 0, 0] = z[row, 0, 0, 0, 0] + 1
    rc, out, err = invoke(["verify", str(store), "--repair"])
    assert rc == 0 and "bad=1 repaired=1" in out, (out, err)
    with open_store(store) as s:
        assert key not in s.keys("videos") and s.verify("videos") == (2, [])
    out = run(videos, "--store", store, *model, "--tokens-at", "1,2")
    assert "1 extracted, 2 already cached" in out
    assert record_hashes(store) == want


def test_more_views_are_appended_and_the_cached_views_stay(videos, model, tmp_path):
    """--views 2 on a 1-view store: view 0 keeps its bytes; view 1 is what a fresh 2-view
    extraction samples (same frames, pixels equal) and encodes (to float rounding: its rows
    share forwards with other rows there)."""
    ext, ref = tmp_path / "ext.zarr", tmp_path / "ref.zarr"
    run(videos, "--store", ext, *model, "--views", "1", "--tokens-at", "1")
    with open_store(ext) as s:
        before = {k: s.read("videos", k) for k in s.keys("videos")}
    out = run("--store", ext, *model, "--views", "2", "--tokens-at", "1", "--pixels")
    assert "3 extended" in out
    key = key_of(ext)
    assert key["views"] == 2 and key["sampler"]["views"] == 2 and key["pixels"] is True
    run(videos, "--store", ref, *model, "--views", "2", "--tokens-at", "1", "--pixels")
    assert key == key_of(ref)
    with open_store(ext) as a, open_store(ref) as b:
        assert a.verify("videos") == (3, [])
        for k, old in before.items():
            got, want = a.read("videos", k), b.read("videos", k)
            assert sorted(got) == sorted(want)
            for n, arr in old.items():
                assert np.array_equal(got[n][:1], arr), n  # the cached view, byte for byte
            for n in ("frame_idx", "timestamps", "pixels"):
                assert np.array_equal(got[n], want[n]), n
            for n, tol in (("emb", 1e-4), ("cls", 1e-4), ("tokens_1", 4e-3)):
                assert got[n].shape == want[n].shape
                assert np.abs(got[n].astype(np.float32) - want[n].astype(np.float32)).max() <= tol, n
    with FeatureCache(str(ext)) as c:
        assert c.emb(view=None).shape[:2] == (3, 2)


def test_a_corrupt_cached_entry_is_not_copied_on(videos, model, tmp_path):
    """HDF5 store (its videos packed, as extract publishes them): one video's cached ``emb`` is
    damaged on disk. ``verify`` names it; extending to more views, whose cached views are copied
    into the new arrays, fails that video (reported, its record left as it was, still bad) instead
    of committing the damaged bytes under a fresh sha256; the others are extended. After
    ``verify --repair``, ``--retry-failed`` redoes it whole."""
    import h5py

    store = tmp_path / "s.h5"
    run(videos, "--store", store, *model, "--views", "1", "--tokens-at", "1")
    before = record_hashes(store)
    key = sorted(before)[1]
    with h5py.File(store, "r") as f:
        assert "videos" in f["packed"]  # read_column's copy is another one: the bug hid behind it
        offset = f[f"videos/{key}/emb"].id.get_offset()
    with open(store, "r+b") as fh:
        fh.seek(offset)
        fh.write(bytes(b ^ 0xA5 for b in fh.read(8)))
    rc, out, err = invoke(["verify", str(store)])
    assert rc != 0 and "bad=1" in out, (out, err)

    rc, out, err = invoke(["extract", "--store", store, *model, "--views", "2", "--tokens-at", "1"])
    assert rc == 1 and "2 extended, 1 failed" in out, (out, err)
    assert "cannot extend" in err and "emb do not match the sha256" in err and "--retry-failed" in err, err
    assert key_of(store)["views"] == 1  # not every video has the new view: the key says so
    after = record_hashes(store)
    assert after[key] == before[key]  # the damaged entry was not re-recorded
    assert all(after[k] != before[k] for k in before if k != key)
    with open_store(store) as s:
        assert s.verify("videos") == (3, [key])
        assert s.record("videos", key)["arrays"]["emb"]["shape"][0] == 1

    rc, out, err = invoke(["verify", str(store), "--repair"])
    assert "bad=1 repaired=1" in out, (out, err)
    out = run(videos, "--store", store, *model, "--views", "2", "--tokens-at", "1", "--retry-failed")
    assert "1 extracted, 2 already cached" in out
    assert key_of(store)["views"] == 2
    with open_store(store) as s:
        assert s.verify("videos") == (3, [])
        assert s.record("videos", key)["arrays"]["emb"]["shape"][0] == 2


def test_extending_without_input_uses_the_stores_own_encoder_and_sampler(videos, tiny_cfg, tmp_path):
    """``extract --store S --tokens-at 1`` alone: the model, weights and frames come from the store's
    key (the option defaults, ViT-B-32's OpenAI weights and 8 frames, are another configuration)."""
    store = tmp_path / "s.zarr"
    run(videos, "--store", store, "--model", tiny_cfg, "--pretrained", "random", "--frames", "4", "--no-progress")
    rc, out, err = invoke(["extract", "--store", str(store), "--tokens-at", "1", "--pixels", "--no-progress"])
    assert rc == 0, err
    assert "3 extended" in out
    assert key_of(store)["tokens_at"] == [1] and key_of(store)["pixels"] and key_of(store)["frames"] == 4
