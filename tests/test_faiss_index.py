"""The FAISS prototype index of the stores layer: exact and approximate search, add, files, and an
index directory that is published atomically (a kill leaves the old or the new one, never a mix)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from helpers import ROOT, tree_digest
from clipcache.stores import StoreError, StoreFormatError, StoreLocked, StoreNotFound
from clipcache.stores.base import WriteLock
from cachekit.index.faiss_index import META_FILE, IndexConfig, PrototypeIndex, gpu_available, publish_dir, resolve_dir


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _clustered(n: int, dim: int, centres: int, seed: int = 0) -> np.ndarray:
    """Vectors around ``centres`` random directions: the structure real prototypes have."""
    rng = np.random.default_rng(seed)
    c = _unit(rng.standard_normal((centres, dim)))
    return (c[rng.integers(0, centres, n)] + 0.3 * rng.standard_normal((n, dim)) / np.sqrt(dim)).astype(np.float32)


def _leftovers(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.") and not p.name.endswith(".lock"))


def test_flat_index_is_exact_cosine():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 24)).astype(np.float32) * rng.uniform(0.1, 10, (300, 1)).astype(np.float32)
    q = rng.standard_normal((7, 24)).astype(np.float32)
    idx = PrototypeIndex.build(x)
    assert idx.kind == "flat" and len(idx) == 300 and idx.dim == 24 and not idx.on_gpu
    scores, ids = idx.search(q, 10)
    want = _unit(q) @ _unit(x).T  # [7, 300]
    assert np.array_equal(ids, np.argsort(-want, axis=1, kind="stable")[:, :10])
    np.testing.assert_allclose(scores, np.take_along_axis(want, ids, 1), atol=1e-5)
    np.testing.assert_allclose(idx.vectors(), _unit(x), atol=1e-6)


def test_k_is_clipped_to_the_index_size_and_empty_queries_work():
    idx = PrototypeIndex.build(np.eye(3, dtype=np.float32))
    scores, ids = idx.search(np.eye(3, dtype=np.float32), 10)
    assert ids.shape == (3, 3) and np.array_equal(ids[:, 0], [0, 1, 2])
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    empty = PrototypeIndex.empty(3)
    s, i = empty.search(np.eye(3, dtype=np.float32), 5)
    assert s.shape == (3, 0) and i.shape == (3, 0)


def test_add_appends_ids_in_order():
    rng = np.random.default_rng(1)
    idx = PrototypeIndex.build(rng.standard_normal((10, 8)))
    new = rng.standard_normal((3, 8)).astype(np.float32)
    assert idx.add(new).tolist() == [10, 11, 12]
    scores, ids = idx.search(new, 1)
    assert ids[:, 0].tolist() == [10, 11, 12]
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    with pytest.raises(StoreError, match="width"):
        idx.add(np.ones((1, 9), np.float32))
    with pytest.raises(StoreError, match="width"):
        idx.search(np.ones((1, 9), np.float32), 1)
    with pytest.raises(StoreError, match="2-d"):
        idx.add(np.ones(8, np.float32))


def test_auto_kind_switches_to_ivf_above_the_threshold_with_good_recall():
    x = _clustered(4000, 32, centres=40)
    q = x[:50] + 0.01
    cfg = IndexConfig(approx_above=1000, nlist=32, nprobe=8)
    ivf = PrototypeIndex.build(x, cfg)
    assert ivf.kind == "ivf" and len(ivf) == 4000
    _, exact = PrototypeIndex.build(x).search(q, 10)
    _, approx = ivf.search(q, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.9
    np.testing.assert_allclose(ivf.vectors(), _unit(x), atol=1e-6)
    assert ivf.search(q, 10)[1].tolist() == approx.tolist()  # vectors() leaves the index as it was
    assert PrototypeIndex.build(x[:999], cfg).kind == "flat"


def test_hnsw_index_finds_the_neighbours():
    x = _clustered(2000, 16, centres=20, seed=2)
    idx = PrototypeIndex.build(x, IndexConfig(kind="hnsw", hnsw_m=16, ef_search=64))
    assert idx.kind == "hnsw"
    _, exact = PrototypeIndex.build(x).search(x[:30], 10)
    _, approx = idx.search(x[:30], 10)
    assert np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)]) >= 0.9
    assert idx.add(x[:2]).tolist() == [2000, 2001]


def test_bad_config_is_a_store_error():
    with pytest.raises(StoreError, match="kind"):
        IndexConfig(kind="lsh")  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="nprobe"):
        IndexConfig(nprobe=0)
    with pytest.raises(StoreError, match="lists needs at least"):
        PrototypeIndex.build(np.eye(4, dtype=np.float32), IndexConfig(kind="ivf", nlist=8))


def test_gpu_is_used_only_when_detected(monkeypatch, caplog):
    import faiss

    idx = PrototypeIndex.build(np.eye(4, dtype=np.float32), IndexConfig(gpu=True))
    if not gpu_available():  # faiss-cpu (or no GPU): a GPU request falls back with a warning
        assert not idx.on_gpu
        assert "using faiss-cpu" in caplog.text
    # faiss-gpu present but the copy fails (e.g. "Invalid GPU device 0"): CPU, never a crash
    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: object(), raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)

    def broken(*_a, **_k):
        raise RuntimeError("Invalid GPU device 0")

    monkeypatch.setattr(faiss, "index_cpu_to_gpu", broken, raising=False)
    idx = PrototypeIndex.build(np.eye(4, dtype=np.float32))
    assert gpu_available() and not idx.on_gpu
    _, ids = idx.search(np.eye(4, dtype=np.float32), 1)
    assert ids[:, 0].tolist() == [0, 1, 2, 3]


def test_save_and_load_round_trip(tmp_path):
    x = _clustered(3000, 16, centres=30)
    cfg = IndexConfig(kind="ivf", nlist=16, nprobe=4)
    idx = PrototypeIndex.build(x, cfg)
    arrays = {"temporal": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "labels": np.array([3, 1])}
    out = idx.save(tmp_path / "idx", arrays, {"classes": ["a", "b"]},
                   extra=lambda d: (d / "note.txt").write_text("hi"))
    back, got, meta = PrototypeIndex.load(out)
    assert back.kind == "ivf" and back.cfg.nprobe == 4 and len(back) == 3000
    assert meta == {"classes": ["a", "b"]}
    assert set(got) == {"temporal", "labels"}
    np.testing.assert_array_equal(got["temporal"], arrays["temporal"])
    np.testing.assert_array_equal(back.search(x[:5], 3)[1], idx.search(x[:5], 3)[1])
    doc = json.loads((out / META_FILE).read_text())
    assert set(doc["files"]) == {"index.faiss", "temporal.npy", "labels.npy", "note.txt"}
    assert _leftovers(out) == []
    _, only, _ = PrototypeIndex.load(out, arrays=["labels"])
    assert set(only) == {"labels"}


def test_load_refuses_what_is_not_a_whole_index(tmp_path):
    with pytest.raises(StoreNotFound):
        PrototypeIndex.load(tmp_path / "nothing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreFormatError, match="not a clipcache index"):
        PrototypeIndex.load(tmp_path / "plain")
    out = PrototypeIndex.build(np.eye(4, dtype=np.float32)).save(tmp_path / "idx", {"a": np.zeros(3)})
    with open(out / "a.npy", "ab") as f:  # altered behind the index's back
        f.write(b"x")
    with pytest.raises(StoreFormatError, match="a.npy"):
        PrototypeIndex.load(out)


def test_save_replaces_an_existing_index_and_refuses_a_second_writer(tmp_path):
    path = tmp_path / "idx"
    PrototypeIndex.build(np.eye(4, dtype=np.float32)).save(path, meta={"v": 1})
    PrototypeIndex.build(np.eye(6, dtype=np.float32)).save(path, meta={"v": 2})
    idx, _, meta = PrototypeIndex.load(path)
    assert len(idx) == 6 and meta == {"v": 2}
    assert _leftovers(path) == []
    lock = WriteLock(tmp_path / ".idx.lock")
    lock.acquire("test")
    try:
        with pytest.raises(StoreLocked):
            PrototypeIndex.build(np.eye(3, dtype=np.float32)).save(path)
    finally:
        lock.release()
    with pytest.raises(StoreError, match="not a directory"):
        (tmp_path / "file").write_text("x")
        publish_dir(tmp_path / "file", lambda d: None)


_KILL = textwrap.dedent("""
    import os, shutil, sys
    import numpy as np
    import cachekit.index.faiss_index as fi
    where = sys.argv[2]
    def extra(d):
        if where == "mid-write":
            os._exit(137)  # the temporary directory holds index.faiss and the arrays, not index.json
    if where == "after-swap":  # the new version is in place, the old one not deleted yet
        shutil.rmtree = lambda *a, **k: os._exit(137)
    if where == "between-renames":  # no RENAME_EXCHANGE: path renamed away, the new one not yet in
        fi._exchange = lambda a, b: False
        real = os.rename
        calls = []
        def rename(a, b):
            calls.append(a)
            real(a, b)
            if len(calls) == 1:
                os._exit(137)
        os.rename = rename
    fi.PrototypeIndex.build(np.eye(8, dtype=np.float32)).save(sys.argv[1], {"t": np.ones((8, 2))}, {"v": 2}, extra)
""")


@pytest.mark.parametrize("where", ["mid-write", "after-swap", "between-renames"])
def test_a_kill_while_saving_leaves_the_old_or_the_new_index(tmp_path, where):
    path = tmp_path / "idx"
    PrototypeIndex.build(np.eye(4, dtype=np.float32)).save(path, {"t": np.zeros((4, 2))}, {"v": 1})
    before = tree_digest(path)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", _KILL, str(path), where], env=env, capture_output=True, text=True)
    assert proc.returncode == 137, proc.stderr
    assert _leftovers(path), "the killed writer should leave its temporary directory behind"
    idx, arrays, meta = PrototypeIndex.load(path)  # readable right after the kill
    if where == "mid-write":
        assert tree_digest(path) == before and meta == {"v": 1} and len(idx) == 4
    elif where == "after-swap":
        assert meta == {"v": 2} and len(idx) == 8
    else:  # path itself is missing until the next writer restores it; readers use the old version
        assert not path.exists() and resolve_dir(path) != path
        assert meta == {"v": 1} and tree_digest(resolve_dir(path)) == before
    # the next save cleans up after the killed one and publishes normally
    PrototypeIndex.build(np.eye(5, dtype=np.float32)).save(path, meta={"v": 3})
    assert _leftovers(path) == []
    assert PrototypeIndex.load(path)[2] == {"v": 3}


def test_exact_numpy_search_equals_the_flat_faiss_index_and_loads_without_faiss(tmp_path):
    """ExactVectors (query's FAISS-free start) gives IndexFlatIP's ids and scores; load_exact reads
    a flat index saved with its vectors, in a process that never imports faiss."""
    from cachekit.index.faiss_index import ExactVectors, load_exact

    vecs = _clustered(300, 24, 12, seed=4)
    flat = PrototypeIndex.build(vecs, IndexConfig(kind="flat"))
    exact = ExactVectors(vecs)
    q = _clustered(7, 24, 3, seed=5)
    s1, i1 = flat.search(q, 10)
    s2, i2 = exact.search(q, 10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, rtol=0, atol=1e-6)
    assert len(exact) == 300 and exact.dim == 24 and exact.search(q, 1000)[1].shape == (7, 300)
    flat.save(tmp_path / "idx", {"pooled": flat.vectors(), "other": np.arange(3)}, {"note": "x"})
    PrototypeIndex.build(vecs, IndexConfig(kind="ivf", nlist=4)).save(tmp_path / "ivf", {"pooled": vecs})
    code = textwrap.dedent(f"""
        import sys
        from cachekit.index.faiss_index import load_exact
        index, arrays, meta = load_exact({str(tmp_path / 'idx')!r}, "pooled", ["other"])
        assert len(index) == 300 and list(arrays) == ["other"] and meta == {{"note": "x"}}
        assert load_exact({str(tmp_path / 'ivf')!r}, "pooled", []) is None  # approximate: FAISS it is
        print("faiss" in sys.modules)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr
