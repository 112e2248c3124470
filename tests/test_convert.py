"""Stores of the old layout (version 1: one array per video and name, one record per video).

The old writer is kept here, in its essentials, as a legacy writer: it rewrites a store that the
current code extracted into layout 1, so the test holds real layout-1 bytes. Such a store is
refused with one line naming ``clipcache convert``; the conversion gives exactly the arrays,
records and documents of the original, and ``extract`` resumes the converted store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from cachekit.cache import FeatureCache
from helpers import invoke, record_hashes, synth_frames, tree_digest, write_h264
from clipcache.stores import StoreFormatError, open_store
from clipcache.stores.base import JsonDir


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def write_legacy(src: Path, dst: Path) -> None:
    """Layout 1 as clipcache <= layout 1 wrote it, from the committed content of store ``src``."""
    with open_store(src) as s:
        attrs = {**s.attrs, "layout_version": 1}
        attrs["cache_key"] = {**attrs["cache_key"], "layout_version": 1}
        zs = zarr.storage.LocalStore(dst)
        zarr.open_group(zs, mode="a", attributes={"clipcache": attrs}, use_consolidated=False)
        commits, docs = JsonDir(dst / "meta" / "commits"), JsonDir(dst / "meta" / "docs")
        for group in ("videos", "text"):
            for key, rec in s.records(group).items():
                for name, arr in s.read(group, key).items():
                    z = zarr.create_array(zs, name=f"{group}/{key}/{name}", shape=arr.shape, dtype=arr.dtype,
                                          chunks=arr.shape if arr.ndim else (), fill_value=0, overwrite=True)
                    z[...] = arr
                commits.put(group, key, {**{k: v for k, v in rec.items() if k != "loc"}, "layout_version": 1})
        for group in ("failed", "splits"):
            for key, doc in s.json_items(group).items():
                docs.put(group, key, doc)


@pytest.fixture(scope="module")
def stores(tmp_path_factory, tiny_cfg, tiny_weights):
    d = tmp_path_factory.mktemp("legacy")
    for i, cls in enumerate(["jump", "jump", "wave"]):
        write_h264(d / "videos" / cls / f"{i}.mp4", synth_frames(30 + i, 12, 48, 64))
    (d / "videos" / "wave" / "broken.mp4").write_bytes(b"not a video")
    args = ["extract", str(d / "videos"), "--model", tiny_cfg, "--pretrained", str(tiny_weights),
            "--frames", "4", "--tokens-at", "1", "--no-progress"]
    rc, out, err = invoke([*args, "--store", str(d / "ref.zarr")])
    assert rc == 1, err  # the broken file is reported
    write_legacy(d / "ref.zarr", d / "old.zarr")
    return d, args


def test_old_layout_is_refused_with_the_convert_command(stores):
    d, args = stores
    old = d / "old.zarr"
    before = tree_digest(old)
    with pytest.raises(StoreFormatError, match="clipcache convert"):
        open_store(old)
    for cmd in (["info", str(old)], [*args, "--store", str(old)]):
        rc, out, err = invoke(cmd)
        assert rc == 2
        line = one_error_line(err)
        assert f"clipcache convert {old} NEW_STORE" in line and "layout" in line
    assert tree_digest(old) == before  # untouched (the writer-lock file aside)


def test_convert_gives_the_same_content_and_extract_resumes_it(stores):
    d, args = stores
    new = d / "new.zarr"
    rc, out, err = invoke(["convert", str(d / "old.zarr"), str(new)])
    assert rc == 0, err
    assert out.strip() == "converted text=2 videos=3 documents=1 bad=0"
    for group in ("videos", "text"):
        assert record_hashes(new, group) == record_hashes(d / "ref.zarr", group)
    with FeatureCache(str(new)) as a, FeatureCache(str(d / "ref.zarr")) as b:
        assert a.video_keys == b.video_keys and a.classes == b.classes == ["jump", "wave"]
        np.testing.assert_array_equal(a.emb(), b.emb())
        np.testing.assert_array_equal(a.tokens(1, [0, 2]), b.tokens(1, [0, 2]))
        np.testing.assert_array_equal(a.text(), b.text())
        assert a.failed() == b.failed() and len(a.failed()) == 1
        assert a.key == b.key
    rc, out, err = invoke([*args, "--store", str(new)])  # same options: nothing to redo
    assert "0 extracted, 3 already cached" in out, (out, err)
    rc, out, err = invoke(["convert", str(d / "old.zarr"), str(new)])  # never over a store
    assert rc == 2 and "already exists" in one_error_line(err)


def test_a_damaged_old_entry_is_left_out_and_reported(stores, tmp_path):
    d, _ = stores
    old = tmp_path / "old.zarr"
    write_legacy(d / "ref.zarr", old)
    key = sorted(p.stem for p in (old / "meta" / "commits" / "videos").glob("*.json"))[1]
    z = zarr.open_array(zarr.storage.LocalStore(old), path=f"videos/{key}/emb", mode="r+")
    z[0, 0, 0] = z[0, 0, 0] + 1
    rc, out, err = invoke(["convert", str(old), str(tmp_path / "new.zarr")])
    assert rc == 1 and "videos=2" in out and "bad=1" in out and f"videos/{key}" in err  # exit 1, as verify
    with open_store(tmp_path / "new.zarr") as s:
        assert key not in s.keys("videos") and s.verify("videos") == (2, [])
    h5 = tmp_path / "s.h5"
    with open_store(h5, "a", attrs={"cache_key": {}}) as s:
        s.commit("videos", "k", {"emb": np.zeros(2, np.float32)}, {})
    rc, out, err = invoke(["convert", str(h5), str(tmp_path / "h.zarr")])
    assert rc == 2 and "is an HDF5 store" in one_error_line(err), err
