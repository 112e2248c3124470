"""`clipcache eval` and :func:`cachekit.evaluate.evaluate`: protocols, episodes, reported numbers.

Stores are written directly (as :mod:`cachekit.extract` writes them) from embeddings whose answer
is known: class c's frames point along the one-hot direction e_c (plus noise), class text = e_c.
"""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest

from cachekit.cache import FeatureCache
from cachekit.episodes import load_episodes
from cachekit.errors import ClipcacheError, InputError
from cachekit.evaluate import EvalConfig, evaluate as library_evaluate
from cachekit.extract import text_key
from cachekit.methods.base import CacheNeeds, Method
from cachekit.methods.proto import Config as ProtoConfig, Proto
from cachekit.video import file_key
from clipcache.stores import open_store

T, D = 4, 16


# ------------------------------------------------------------------------------ store builder
def write_store(path, emb, labels, *, paths=None, keys=None, text=None, templates=("{}", "a video of {}"),
                splits=None, missing=None, classes_text=None):
    """Write a store like :func:`cachekit.extract.extract` does.

    emb ``[V, T, D]`` (one view), labels ``[V]`` class names (None = unlabelled); paths/keys per
    video (default ``/videos/v<i>.mp4`` and ``<i>`` as a 64-hex key, so cache order = input
    order); text ``{class: [P, D]}`` (default: P copies of the class direction); splits
    ``{name: [video positions]}``; missing ``{name: [listed paths absent from the store]}``.
    """
    emb = np.asarray(emb, dtype=np.float32)
    v_n, t_n, d_n = emb.shape
    paths = paths or [f"/videos/v{i:04d}.mp4" for i in range(v_n)]
    keys = keys or [f"{i:064x}" for i in range(v_n)]
    key = {"model": "test-model", "frames": t_n, "views": 1, "tokens_at": [],
           "sampler": {"frames": t_n, "views": 1}, "dtype": {"emb": "float32"}}
    info = {"embed_dim": d_n, "width": 8, "layers": 2, "heads": 2, "grid": [2, 2], "image_size": 32,
            "text_width": 8}
    names = sorted({lab for lab in labels if lab})
    with open_store(str(path), "a", attrs={"cache_key": key, "model_info": info}) as st:
        for i in range(v_n):
            arrays = {"emb": emb[i][None], "cls": np.zeros((1, t_n, 8), np.float32),
                      "frame_idx": np.arange(t_n, dtype=np.int32)[None],
                      "timestamps": np.arange(t_n, dtype=np.float32)[None] / 25}
            st.commit("videos", keys[i], arrays, {
                "path": os.path.abspath(paths[i]), "size": 1, "label": labels[i], "n_frames": t_n, "fps": 25.0,
                "duration": t_n / 25, "backend": "test", "status": "ok"})
        for c in names:
            e = text[c] if text is not None else np.repeat(direction(names.index(c) if classes_text is None
                                                                     else classes_text[c], d_n)[None],
                                                            len(templates), 0)
            st.commit("text", text_key(c, tuple(templates)), {"emb": np.asarray(e, np.float32)},
                      {"name": c, "templates": list(templates)})
        for name, idx in (splits or {}).items():
            doc = {"videos": {os.path.abspath(paths[i]): [keys[i], labels[i]] for i in idx},
                   "missing": sorted((missing or {}).get(name, []))}
            st.put_json("splits", name, doc)
        st.finalize()
    return str(path)


def evaluate(cache, protocol, method=None, **kw):
    """:func:`cachekit.evaluate.evaluate` with ``EvalConfig(protocol=..., **kw)``; a built method
    goes beside the config."""
    if isinstance(method, Method):
        return library_evaluate(cache, EvalConfig(protocol=protocol, **kw), method=method)
    return library_evaluate(cache, EvalConfig(protocol=protocol, method=method, **kw))


def direction(c: int, dim: int = D) -> np.ndarray:
    e = np.zeros(dim, np.float32)
    e[c] = 1.0
    return e


def clustered(n_cls: int, per_class: int, noise: float, seed: int = 0, offset: int = 0):
    """Videos of class c = e_(c+offset) on every frame + Gaussian noise; labels 'class NN'."""
    rng = np.random.default_rng(seed)
    emb, labels = [], []
    for c in range(n_cls):
        for _ in range(per_class):
            emb.append(direction(c + offset)[None].repeat(T, 0) + noise * rng.standard_normal((T, D)))
            labels.append(f"class {c:02d}")
    return np.stack(emb).astype(np.float32), labels


def by_class(labels, classes):
    return [i for i, lab in enumerate(labels) if lab in classes]


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_stores")
    out = {}
    # 10 classes x 5 videos; train = classes 0-4, test = classes 5-9 (+2 listed videos missing)
    emb, labels = clustered(10, 5, noise=0.05)
    names = [f"class {c:02d}" for c in range(10)]
    out["clean"] = write_store(root / "clean.h5", emb, labels, splits={
        "train": by_class(labels, names[:5]), "test": by_class(labels, names[5:])},
        missing={"test": ["/videos/gone1.mp4", "/videos/gone2.mp4"]})
    # 8 classes x 6 videos, heavy noise: accuracy well inside (0, 100)
    emb, labels = clustered(8, 6, noise=1.2, seed=1)
    out["noisy"] = write_store(root / "noisy.h5", emb, labels, splits={"test": list(range(len(labels)))})
    # no split files (a CSV / class-folder extraction)
    emb, labels = clustered(5, 4, noise=0.05, seed=2)
    out["nosplit"] = write_store(root / "nosplit.h5", emb, labels)
    return out


def register_eval():
    from clipcache.cli.eval_cmd import eval_cmd
    from clipcache.cli.main import cli

    if "eval" not in cli.commands:
        cli.add_command(eval_cmd)


def invoke(args):
    register_eval()
    from helpers import invoke as run

    return run(args)


def hand_mean_pool_episodes(store, episodes_path):
    """Per-episode accuracy of mean-pool prototypes (K shots), computed plainly with numpy."""
    eps, _ = load_episodes(episodes_path)
    with FeatureCache(store) as cache:
        emb = cache.emb()
    vec = emb.mean(axis=1)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    per_ep = []
    for e in eps:
        protos = []
        for shots in e.support:
            p = vec[list(shots)].mean(axis=0)
            protos.append(p / np.linalg.norm(p))
        protos = np.stack(protos)
        right = [int(np.argmax(protos @ vec[q]) == w) for w, qs in enumerate(e.query) for q in qs]
        per_ep.append(np.mean(right))
    per_ep = np.array(per_ep)
    return 100 * per_ep.mean(), 100 * 1.96 * per_ep.std(ddof=1) / math.sqrt(len(per_ep))


# ------------------------------------------------------------------------------ episodic
def test_clean_store_is_solved_by_every_baseline(stores):
    for method, metric in (("proto", "mean"), ("proto", "otam"), ("proto", "bimhm"), ("zeroshot", None)):
        r = evaluate(stores["clean"], "episodic", method=method, metric=metric, episodes=200, shots=2)
        assert (r.accuracy, r.ci95, r.episodes, r.ways, r.shots, r.queries) == (100.0, 0.0, 200, 5, 2, 1)
        # test split only: classes 5-9
        assert r.class_names == [f"class {c:02d}" for c in range(5, 10)]
        assert r.confusion.trace() == r.confusion.sum() == 200 * 5
    assert evaluate(stores["clean"], "episodic", method="proto", metric="otam", episodes=5).metric == "otam"


def test_accuracy_and_ci_match_a_hand_computation(stores, tmp_path):
    for shots in (1, 3):
        r = evaluate(stores["noisy"], "episodic", method="proto", metric="mean", episodes=300, shots=shots,
                     queries=2, seed=3, out_dir=tmp_path / f"k{shots}")
        acc, ci = hand_mean_pool_episodes(stores["noisy"], tmp_path / f"k{shots}" / "episodes.json")
        assert 20 < r.accuracy < 95
        assert r.accuracy == pytest.approx(acc, abs=1e-9)
        assert r.ci95 == pytest.approx(ci, abs=1e-9)
        assert r.episodes == 300 and r.queries == 2
        # per-class accuracies and the confusion matrix describe the same predictions
        assert r.confusion.sum() == 300 * 5 * 2
        row = r.confusion.sum(axis=1)
        for i, name in enumerate(r.class_names):
            assert r.per_class[name] == pytest.approx(100 * r.confusion[i, i] / row[i])


def test_episodes_are_deterministic_and_a_saved_file_reproduces_the_result(stores, tmp_path):
    a = evaluate(stores["noisy"], "episodic", method="proto", metric="otam", episodes=200, seed=7, out_dir=tmp_path / "a")
    b = evaluate(stores["noisy"], "episodic", method="proto", metric="otam", episodes=200, seed=7)
    c = evaluate(stores["noisy"], "episodic", method="proto", metric="otam", episodes=200, seed=8, out_dir=tmp_path / "c")
    assert (a.accuracy, a.ci95) == (b.accuracy, b.ci95)
    np.testing.assert_array_equal(a.confusion, b.confusion)
    ep_a, meta = load_episodes(tmp_path / "a" / "episodes.json")
    ep_c, _ = load_episodes(tmp_path / "c" / "episodes.json")
    assert ep_a != ep_c and meta["seed"] == 7 and meta["ways"] == 5 and meta["split"] == "test"
    # re-use: the file wins over seed / ways / shots
    again = evaluate(stores["noisy"], "episodic", method="proto", metric="otam", seed=999, ways=3, shots=4,
                     episodes_file=tmp_path / "a" / "episodes.json")
    assert (again.accuracy, again.ci95, again.episodes, again.ways, again.shots) == (a.accuracy, a.ci95, 200, 5, 1)
    np.testing.assert_array_equal(again.confusion, a.confusion)
    assert any("episodes read from episodes.json" in n for n in again.notes)


def test_two_methods_on_the_same_episode_file(stores, tmp_path):
    first = evaluate(stores["noisy"], "episodic", method="proto", metric="mean", episodes=150, seed=2,
                     out_dir=tmp_path)
    path = tmp_path / "episodes.json"
    zs = evaluate(stores["noisy"], "episodic", method="zeroshot", episodes_file=path)
    otam = evaluate(stores["noisy"], "episodic", method="proto", metric="otam", episodes_file=path)
    assert first.episodes == zs.episodes == otam.episodes == 150
    assert zs.method == "Frozen CLIP zero-shot" and otam.method == first.method == "Support prototypes"
    assert any("ignores the 1 support videos" in n for n in zs.notes)
    # zero-shot on these episodes, by hand: pooled query vs class direction (text = e_c)
    eps, _ = load_episodes(path)
    with FeatureCache(stores["noisy"]) as cache:
        vec, labels = cache.emb().mean(axis=1), cache.labels
    hand = [np.mean([int(np.argmax(vec[q][list(e.class_ids)]) == w) for w, qs in enumerate(e.query) for q in qs])
            for e in eps]
    assert zs.accuracy == pytest.approx(100 * np.mean(hand), abs=1e-9)


def test_episode_file_from_another_store_is_refused(stores, tmp_path):
    evaluate(stores["noisy"], "episodic", episodes=5, out_dir=tmp_path)
    with pytest.raises(InputError, match="different store"):
        evaluate(stores["clean"], "episodic", episodes_file=tmp_path / "episodes.json")


class EpisodeOnly(Method):
    """A 'trained' method: only episode_logits (no batched path), wrapping prototypes."""

    name = "episode_only"
    protocols = ("episodic",)

    def __init__(self, info, frames):
        super().__init__(info, frames, CacheNeeds(emb=True), "episode-by-episode")
        self.inner = Proto(ProtoConfig(metric="otam"), info, frames)
        self.calls = 0

    def episode_logits(self, ep):
        self.calls += 1
        return self.inner.episode_logits(ep)


def test_episode_by_episode_path_equals_the_batched_path(stores, tmp_path):
    batched = evaluate(stores["noisy"], "episodic", method="proto", metric="otam", shots=2, episodes=60,
                       batch_episodes=7, out_dir=tmp_path)
    with FeatureCache(stores["noisy"]) as cache:
        m = EpisodeOnly(cache.model_info, T)
        loop = evaluate(cache, "episodic", method=m, episodes_file=tmp_path / "episodes.json")
    assert m.calls == 60
    assert loop.accuracy == pytest.approx(batched.accuracy) and loop.shots == 2
    np.testing.assert_array_equal(loop.confusion, batched.confusion)


def test_several_shots_give_one_result_each_and_a_curve(stores, tmp_path):
    rs = evaluate(stores["noisy"], "episodic", method="proto", metric="mean", shots=[1, 3], episodes=50,
                  out_dir=tmp_path)
    assert [r.shots for r in rs] == [1, 3]
    for name in ("episodes_1shot.json", "episodes_3shot.json", "accuracy_vs_shots.png", "results.md"):
        assert (tmp_path / name).is_file(), name
    assert load_episodes(tmp_path / "episodes_3shot.json")[1]["shots"] == 3


def test_missing_videos_are_counted_not_hidden(stores):
    r = evaluate(stores["clean"], "episodic", episodes=5)
    assert any("2 of 27 listed videos are missing from the store" in n and "coverage 92.6%" in n for n in r.notes)


def test_eval_reads_no_commit_records(stores, monkeypatch):
    """Coverage and scoring read the index's keys and columns, never every video's record: on a
    million-video store the records alone were 2.5 GB, most of evaluating 10,000 episodes' peak."""
    from clipcache.stores.logstore import LogStore

    def records(self, group):
        raise AssertionError(f"evaluate read every {group} record")

    monkeypatch.setattr(LogStore, "records", records)
    for name in ("clean", "nosplit"):
        r = evaluate(stores[name], "episodic", episodes=5, metric="otam")
        assert r.episodes == 5
        assert any(n.startswith("coverage") or "listed videos are missing" in n or "no split files" in n
                   for n in r.notes), r.notes


def test_store_without_splits_is_evaluated_over_all_classes(stores):
    r = evaluate(stores["nosplit"], "episodic", episodes=20, metric="mean")
    assert any("store has no split files: evaluated over all 5 classes (20 videos)" in n for n in r.notes)
    assert len(r.class_names) == 5 and r.accuracy == 100.0
    with pytest.raises(InputError, match="without split files"):
        evaluate(stores["nosplit"], "episodic", episodes=2, split="test")
    # all-way prototypes: the K-shot list comes from the same videos and is not evaluated
    r = evaluate(stores["nosplit"], "allway", method="proto", metric="mean", shots=1)
    assert r.episodes == 20 - 5 and r.accuracy == 100.0
    assert any("store has no split files" in n for n in r.notes)


def test_too_many_ways_is_a_one_line_error(stores):
    with pytest.raises(InputError, match="split 'test' has 5 classes, 5 videos per class"):
        evaluate(stores["clean"], "episodic", ways=6, episodes=3)


# ------------------------------------------------------------------------------ all-way, zero-shot, b2n
@pytest.fixture(scope="module")
def disjoint_store(tmp_path_factory):
    """Train classes 0-3, test classes 4-7; a test video of class c points mostly to e_(c-4)
    (a train class): with train classes among the candidates every test video would be wrong."""
    rng = np.random.default_rng(5)
    emb, labels = [], []
    for c in range(8):
        for _ in range(4):
            v = direction(c) + (1.5 * direction(c - 4) if c >= 4 else 0)
            emb.append(v[None].repeat(T, 0) + 0.02 * rng.standard_normal((T, D)))
            labels.append(f"class {c:02d}")
    names = [f"class {c:02d}" for c in range(8)]
    return write_store(tmp_path_factory.mktemp("disjoint") / "s.h5", np.stack(emb), labels,
                       splits={"train": by_class(labels, names[:4]), "test": by_class(labels, names[4:])})


def test_zeroshot_uses_only_the_test_classes(disjoint_store):
    r = evaluate(disjoint_store, "zeroshot")
    assert r.accuracy == 100.0 and r.episodes == 16 and r.ways is None and r.shots is None
    assert r.class_names == [f"class {c:02d}" for c in range(4, 8)] and r.confusion.shape == (4, 4)
    # the same videos among all classes' text: every one goes to a train class
    allway = evaluate(disjoint_store, "allway", method="zeroshot")
    assert allway.accuracy == 0.0 and len(allway.class_names) == 8


def test_allway_zeroshot_against_a_hand_computation(tmp_path):
    # 5 classes x 3 test videos; the last video of each class points to the next class
    emb, labels = [], []
    for c in range(5):
        for j in range(3):
            emb.append(direction((c + 1) % 5 if j == 2 else c)[None].repeat(T, 0))
            labels.append(f"class {c:02d}")
    store = write_store(tmp_path / "s.h5", np.stack(emb), labels, splits={"test": list(range(15))})
    r = evaluate(store, "allway")
    p, n = 2 / 3, 15
    s = math.sqrt(n / (n - 1) * p * (1 - p))
    assert r.accuracy == pytest.approx(100 * p) and r.ci95 == pytest.approx(100 * 1.96 * s / math.sqrt(n))
    assert r.episodes == 15 and r.method == "Frozen CLIP zero-shot" and r.shots is None
    assert all(v == pytest.approx(100 * p) for v in r.per_class.values())
    expected = 2 * np.eye(5, dtype=int) + np.roll(np.eye(5, dtype=int), 1, axis=1)
    np.testing.assert_array_equal(r.confusion, expected)


def test_allway_prototypes_from_the_train_split(tmp_path):
    emb, labels = clustered(6, 6, noise=0.05, seed=4)
    train = [i for i in range(36) if i % 6 < 3]
    val = [i for i in range(36) if i % 6 >= 3]
    store = write_store(tmp_path / "s.h5", emb, labels, splits={"train": train, "val": val})
    rs = evaluate(store, "allway", method="proto", metric="otam", shots=[1, 2], out_dir=tmp_path / "out")
    assert [(r.shots, r.accuracy, r.episodes) for r in rs] == [(1, 100.0, 18), (2, 100.0, 18)]
    notes = rs[1].notes
    assert any("no 'test' split: evaluated on split 'val'" in n for n in notes)
    assert any("2-shot list: 12 videos of split 'train'" in n for n in notes)
    assert (tmp_path / "out" / "accuracy_vs_shots.png").is_file()
    with pytest.raises(InputError, match="needs >= 4 videos in every class"):
        evaluate(store, "allway", method="proto", shots=4)
    with pytest.raises(InputError, match="cannot score unseen classes"):
        evaluate(store, "zeroshot", method="proto")


def test_base2novel_reports_base_novel_and_harmonic_mean(tmp_path):
    emb, labels = [], []
    for c in range(8):  # base 0-3 all right; novel 4-7: half of the videos point to the next novel class
        for j in range(4):
            target = c if (c < 4 or j < 2) else 4 + (c - 3) % 4
            emb.append(direction(target)[None].repeat(T, 0))
            labels.append(f"class {c:02d}")
    names = [f"class {c:02d}" for c in range(8)]
    store = write_store(tmp_path / "s.h5", np.stack(emb), labels,
                        splits={"base_val": by_class(labels, names[:4]), "novel_val": by_class(labels, names[4:])})
    r = evaluate(store, "base2novel")
    x = r.extra
    assert (x["base"], x["novel"]) == (100.0, 50.0)
    assert x["hm"] == pytest.approx(200 / 3) and r.accuracy == pytest.approx(200 / 3)
    assert (x["base_classes"], x["novel_classes"], x["base_videos"], x["novel_videos"]) == (4, 4, 16, 16)
    # delta-method CI: only the novel half varies
    n_ci = 100 * 1.96 * math.sqrt(16 / 15 * 0.25) / 4
    assert x["novel_ci95"] == pytest.approx(n_ci) and x["base_ci95"] == 0.0
    assert r.ci95 == pytest.approx(2 * 100**2 / 150**2 * n_ci)
    # without base/novel split files: classes halved by base_novel_split
    store2 = write_store(tmp_path / "t.h5", np.stack(emb), labels, splits={"test": list(range(32))})
    r2 = evaluate(store2, "base2novel", seed=1)
    assert r2.extra["base_classes"] == r2.extra["novel_classes"] == 4
    assert r2.extra["base_videos"] + r2.extra["novel_videos"] == 32
    assert any("base_novel_split" in n for n in r2.notes)


def test_split_file_maps_paths_and_content_keys(tmp_path):
    vids = tmp_path / "videos" / "clips"
    vids.mkdir(parents=True)
    paths = []
    for i in range(8):
        p = vids / f"v{i}.mp4"
        p.write_bytes(f"fake video {i}".encode())
        paths.append(str(p))
    emb, labels = clustered(2, 4, noise=0.05)
    keys = [file_key(p) for p in paths]
    store = write_store(tmp_path / "s.h5", emb, labels, paths=paths, keys=keys)
    shutil.copy(paths[0], vids / "moved.mp4")  # same bytes, new name: found by content key
    (vids / "other.mp4").write_bytes(b"not in the store")
    lines = [f"clips/v{i}.mp4 {i // 4}" for i in range(1, 8)] + ["clips/moved.mp4 0", "clips/absent.mp4 1",
                                                                 "clips/other.mp4 1"]
    split_file = tmp_path / "test_list.txt"
    split_file.write_text("\n".join(lines) + "\n")
    r = evaluate(store, "zeroshot", split_file=split_file, video_root=tmp_path / "videos")
    assert r.episodes == 8 and r.accuracy == 100.0
    assert any("2 of 10 listed videos are missing" in n for n in r.notes)
    # a stored video whose file was deleted after extraction is still found by its path
    os.remove(paths[7])
    r = evaluate(store, "zeroshot", split_file=split_file, video_root=tmp_path / "videos")
    assert r.episodes == 8 and any("2 of 10 listed videos are missing" in n for n in r.notes)


def test_trained_run_errors_are_user_errors(stores, tmp_path):
    with pytest.raises(ClipcacheError):
        evaluate(stores["clean"], "episodic", run_dir=tmp_path / "no-such-run", episodes=2)
    with pytest.raises(InputError, match="not both"):
        evaluate(stores["clean"], "episodic", method="proto", run_dir=tmp_path, episodes=2)


# ------------------------------------------------------------------------------ CLI
def test_cli_prints_accuracy_ci_and_notes(stores):
    code, out, err = invoke(["eval", "--store", stores["clean"], "--protocol", "episodic", "--episodes", "40",
                             "--metric", "mean"])
    assert code == 0, err
    assert ("Support prototypes [episodic, 5-way 1-shot, mean]: 100.00 ± 0.00 % (95% CI over 40 episodes), "
            "± 0.00 (95% CI, test videos and episodes re-drawn); ") in out
    assert " distinct test videos, 5 classes" in out
    assert "note: split 'test': 2 of 27 listed videos are missing from the store" in out


def test_cli_notes_the_options_the_protocol_did_not_use(stores):
    """Options of the other kind of protocol are not silently dropped: a note names them."""
    code, out, err = invoke(["eval", "--store", stores["clean"], "--protocol", "zeroshot", "--ways", "7",
                             "--episodes", "3"])
    assert code == 0, err
    assert "note: --ways, --episodes apply to the episodic protocol; the zeroshot protocol did not use them" in out
    code, out, err = invoke(["eval", "--store", stores["clean"], "--protocol", "episodic", "--episodes", "20"])
    assert code == 0 and "did not use" not in out, out
    # --shots where no K-shot list is drawn, and --metric where the method has none, are not dropped silently
    code, out, err = invoke(["eval", "--store", stores["clean"], "--protocol", "zeroshot", "--shots", "4"])
    assert code == 0 and "note: --shots 4 was not used: " in out and "draws no K-shot list" in out, out
    # the prompt set behind a text method's number is said with it (protocols.md 6.7), in the JSON too
    assert "prompts: 2 from a file: {} | a video of {}" in out, out  # the store's own template file
    code, out, err = invoke(["eval", "--store", stores["clean"], "--protocol", "zeroshot", "--json"])
    assert json.loads(out.splitlines()[0])["templates"] == "2 from a file: {} | a video of {}", out
    code, out, err = invoke(["eval", "--store", stores["clean"], "--protocol", "episodic", "--episodes", "20",
                             "--shots", "1"])
    assert code == 0 and "was not used" not in out, out
    code, out, err = invoke(["eval", "--store", stores["clean"], "--protocol", "zeroshot", "--metric", "otam"])
    assert code == 2 and "--metric: method zeroshot has no metric option" in err and err.count("\n") == 1, err
    code, out, err = invoke(["eval", "--store", stores["clean"], "--protocol", "episodic", "--episodes", "20",
                             "-o", "metric=mean", "--metric", "bimhm"])
    assert code == 2 and "--metric bimhm and -o metric=mean disagree" in err, err


def test_cli_json_one_line_per_shot(stores):
    code, out, err = invoke(["eval", "--store", stores["noisy"], "--protocol", "episodic", "--episodes", "30",
                             "--shots", "1,2", "--json"])
    assert code == 0, err
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert [r["shots"] for r in rows] == [1, 2]
    for r in rows:
        assert {"accuracy", "ci95", "episodes", "protocol", "ways", "shots", "metric", "method"} <= set(r)
        assert (r["protocol"], r["ways"], r["episodes"], r["metric"], r["method"]) == (
            "episodic", 5, 30, "otam", "Support prototypes")
    # the JSON carries what the library computes for the same configuration
    lib = library_evaluate(str(stores["noisy"]), EvalConfig(protocol="episodic", episodes=30, shots=(1, 2)))
    assert [(r["accuracy"], r["ci95"]) for r in rows] == [(x.accuracy, x.ci95) for x in lib]


def test_cli_out_writes_the_report_files(stores, tmp_path):
    out_dir = tmp_path / "report"
    code, out, err = invoke(["eval", "--store", stores["noisy"], "--protocol", "episodic", "--episodes", "30",
                             "--shots", "1", "--shots", "2", "--out", out_dir])
    assert code == 0, err
    for name in ("results.json", "results.md", "per_class.csv", "episodes_1shot.json", "episodes_2shot.json",
                 "accuracy_vs_shots.png"):
        assert (out_dir / name).is_file(), name
    assert len(list(out_dir.glob("confusion*.png"))) == 2
    doc = json.loads((out_dir / "results.json").read_text())
    assert [r["shots"] for r in doc["results"]] == [1, 2]
    code, out, err = invoke(["eval", "--store", stores["noisy"], "--protocol", "episodic", "--method", "zeroshot",
                             "--episodes-file", out_dir / "episodes_1shot.json", "--json"])
    assert code == 0, err
    assert json.loads(out)["episodes"] == 30 and json.loads(out)["method"] == "Frozen CLIP zero-shot"


def test_cli_too_many_ways_names_the_counts(stores):
    code, out, err = invoke(["eval", "--store", stores["clean"], "--protocol", "episodic", "--ways", "20"])
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("error: 20-way 1-shot") and "has 5 classes, 5 videos per class" in err


def test_cli_user_errors_exit_2(stores):
    for args in (["--protocol", "episodic", "--shots", "one"],
                 ["--protocol", "zeroshot", "--method", "proto"],
                 ["--protocol", "episodic", "--method", "nope"],
                 ["--protocol", "episodic", "--split", "nope"],
                 ["--method", "proto"]):
        code, out, err = invoke(["eval", "--store", stores["clean"], *args])
        assert code == 2 and err.startswith("error: ") and "Traceback" not in err, (args, err)
    # a method with weights built by name (a lazy layer: a traceback before), and a --metric a run would ignore
    for args, message in ((["--protocol", "allway", "--method", "linear_probe"], "train it first"),
                          (["--protocol", "episodic", "--method", "linear_probe"], "train it first"),
                          (["--run", stores["clean"], "--metric", "mean"], "the metric it trained with")):
        code, out, err = invoke(["eval", "--store", stores["clean"], *args])
        assert code == 2 and message in err and err.count("\n") == 1, (args, err)


def test_cli_method_option_picks_one_template(tmp_path):
    # template 0 = the class direction, template 1 (3x larger) = the next class's: the mean is wrong
    emb, labels = clustered(4, 2, noise=0.01)
    text = {f"class {c:02d}": np.stack([direction(c), 3 * direction((c + 1) % 4)]) for c in range(4)}
    store = write_store(tmp_path / "s.h5", emb, labels, text=text, splits={"test": list(range(8))})
    accs = {}
    for opt in ([], ["-o", "template=0"], ["--option", "template=1"]):
        code, out, err = invoke(["eval", "--store", store, "--protocol", "zeroshot", "--json", *opt])
        assert code == 0, err
        accs[tuple(opt)] = json.loads(out)["accuracy"]
    assert accs == {(): 0.0, ("-o", "template=0"): 100.0, ("--option", "template=1"): 0.0}
    code, out, err = invoke(["eval", "--store", store, "--protocol", "zeroshot", "-o", "templat=0"])
    assert code == 2 and "has no option templat" in err


@pytest.mark.slow
def test_cli_evaluates_a_trained_run_under_its_protocol(tmp_path):
    from cachekit.train import TrainConfig, train

    emb, labels = clustered(15, 4, noise=0.3, seed=9)
    names = [f"class {c:02d}" for c in range(15)]
    store = write_store(tmp_path / "s.h5", emb, labels, splits={
        "train": by_class(labels, names[:5]), "val": by_class(labels, names[5:10]), "test": by_class(labels, names[10:])})
    run = tmp_path / "run"
    train(store, str(run), "clip_fsar", None, TrainConfig(protocol="episodic", episodes=2, epochs=1, queries=1,
                                                          val_episodes=2, device="cpu"), progress=False)
    code, out, err = invoke(["eval", "--store", store, "--run", run, "--episodes", "12", "--json"])
    assert code == 0, err
    r = json.loads(out)
    assert (r["protocol"], r["ways"], r["shots"], r["episodes"]) == ("episodic", 5, 1, 12)
    assert r["method"] == "CLIP-FSAR head (frozen encoder)"
    assert any("trained under the episodic protocol" in n for n in r["notes"])
    assert not any("checkpoint's" in n for n in r["notes"])
    # a run stopped before its last step is evaluated with a note saying so, first
    stopped = tmp_path / "stopped"
    train(store, str(stopped), "clip_fsar", None, TrainConfig(protocol="episodic", episodes=4, epochs=1, queries=1,
                                                              val_episodes=2, device="cpu"), progress=False,
          stop_after=1)
    code, out, err = invoke(["eval", "--store", store, "--run", stopped, "--episodes", "4", "--json"])
    assert code == 0, err
    assert json.loads(out)["notes"][0].startswith("run stopped did not finish (status 'stopped' at step 1 of 4)")
    # the run's cache key must match the store it is evaluated on (here: 2 frames, not 4)
    other = write_store(tmp_path / "other.h5", emb[:, :2], labels, splits={"test": by_class(labels, names[10:])})
    code, out, err = invoke(["eval", "--store", other, "--run", run, "--episodes", "2"])
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err and "frames" in err
    code, out, err = invoke(["eval", "--store", store, "--run", run, "--method", "proto"])
    assert code == 2 and "--method and --option apply without --run" in err
