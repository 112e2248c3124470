"""``clipcache index`` / ``index add`` / ``query``: prototypes from a real store of H.264 clips,
the exported query encoder against the open_clip path, re-ranking against brute force, and the
command line (table, JSON lines, undecodable videos, mismatched cache keys)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import ROOT, TINY_CFG, cli_env, synth_frames, tree_digest, write_h264
from cachekit.similarity import SIMILARITIES

CLASSES = ("bounce", "drift", "spin")


def _invoke(args):
    """Run the CLI in this process with the index / query commands registered."""
    from click.testing import CliRunner

    from clipcache.cli.index_cmd import index, query
    from clipcache.cli.main import cli

    for cmd in (index, query):
        if cli.commands.get(cmd.name) is not cmd:
            cli.add_command(cmd)
    r = CliRunner().invoke(cli, [str(a) for a in args], prog_name="clipcache")
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


_SUBPROCESS = ("import sys; from clipcache.cli.main import cli; from clipcache.cli.index_cmd import index, query; "
               "cli.add_command(index); cli.add_command(query); "
               "cli(sys.argv[1:], prog_name='clipcache', standalone_mode=True)")


def _clip(seed: int, shift: int = 0) -> np.ndarray:
    """A class's clip; ``shift`` > 0 gives a second shot: the same waves, slightly brighter."""
    f = synth_frames(seed, frames=12, height=64, width=80).astype(np.int16)
    return np.clip(f + 6 * shift, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Clips of 3 classes x 2 shots, a store of them (tiny model, random weights, T = 4) from
    a ViFi-CLIP split file (train lists every clip: a trainer's episodes; no test list, so a run
    trained on it holds no test data), and the mean-metric baseline index built through the CLI."""
    from cachekit.encoder import EncoderConfig
    from cachekit.extract import ExtractConfig, extract
    from cachekit.inputs import collect_inputs
    from cachekit.video import SamplerConfig

    root = tmp_path_factory.mktemp("query")
    rows, clips = [], {}
    for c, name in enumerate(CLASSES):
        for k in range(2):
            p = write_h264(root / "videos" / name / f"{name}_{k}.mp4", _clip(100 + c, k))
            rows.append(f"videos/{name}/{name}_{k}.mp4 {c}")
            clips.setdefault(name, []).append(p)
    (root / "train.txt").write_text("\n".join(rows) + "\n")
    new = write_h264(root / "new" / "wave.mp4", _clip(999))
    broken = root / "new" / "broken.mp4"
    broken.write_bytes(b"this is not a video" * 100)
    store = root / "store.zarr"
    cfg = ExtractConfig(encoder=EncoderConfig(model=str(TINY_CFG), pretrained="random", device="cpu"),
                        sampler=SamplerConfig(frames=4), batch_size=8, workers=1)
    s = extract(collect_inputs([str(root / "train.txt")]), str(store), cfg, progress=False)
    assert s.extracted == 6 and not s.failed
    index = root / "index"
    code, out, err = _invoke(["index", "--store", store, "--out", index])
    assert code == 0, err
    return {"root": root, "store": store, "index": index, "clips": clips, "new": new, "broken": broken}


@pytest.fixture(scope="module")
def encoder(data):
    from cachekit.cache import FeatureCache
    from cachekit.runs import load_store_encoder

    with FeatureCache(data["store"]) as cache:
        return load_store_encoder(cache.key, device="cpu")


# ----------------------------------------------------------------------------- the index
def test_index_directory_holds_index_labels_prototypes_and_encoder(data):
    from cachekit.cache import FeatureCache
    from cachekit.index.build import load_index, support_prototypes

    idx = load_index(data["index"])
    files = set(os.listdir(data["index"]))
    assert {"index.faiss", "index.json", "temporal.npy", "encoder.pt2", "encoder_graph.py",
            "encoder_weights.pt"} <= files
    meta = idx.meta
    assert idx.classes == list(CLASSES) and meta["shots"] == {c: 2 for c in CLASSES}
    assert meta["method"] == {"name": "proto", "config": {"metric": "mean"}} and meta["scorer"] == "faiss"
    assert meta["run"] is None and idx.index.kind == "flat" and len(idx.index) == 3
    with FeatureCache(data["store"]) as cache:
        assert meta["cache_key"] == cache.key
        emb = cache.emb()
        labels = np.array([list(CLASSES).index(cache.classes[i]) for i in cache.labels])
    temporal, pooled = support_prototypes(emb, labels, 3)
    np.testing.assert_allclose(idx.temporal, temporal, atol=1e-6)
    np.testing.assert_allclose(idx.index.vectors(), pooled, atol=1e-6)
    # §6.4: each shot pooled and normalised, shots averaged, re-normalised
    v = emb.mean(1) / np.linalg.norm(emb.mean(1), axis=1, keepdims=True)
    want = v[labels == 0].mean(0)
    np.testing.assert_allclose(pooled[0], want / np.linalg.norm(want), atol=1e-6)
    if meta["encoder"]["onnx"] is None:
        assert any("ONNX" in n for n in meta["encoder"]["notes"])


def test_preprocessing_without_open_clip_equals_the_encoders(encoder):
    from cachekit.index.pixels import preprocess_frames

    rng = np.random.default_rng(0)
    for h, w in ((64, 80), (300, 224), (224, 224), (97, 131)):
        frames = rng.integers(0, 256, (3, h, w, 3), dtype=np.uint8)
        for interp in ("bicubic", "bilinear"):
            for mode in ("shortest", "squash"):
                pre = {**encoder.preprocess_cfg, "interpolation": interp, "resize_mode": mode}
                old = encoder.preprocess_cfg
                encoder.preprocess_cfg = pre
                try:
                    want = encoder.preprocess(frames)
                finally:
                    encoder.preprocess_cfg = old
                got = preprocess_frames(frames, pre)
                assert torch.equal(got, want), (h, w, interp, mode)


def test_exported_encoder_equals_the_open_clip_path(data, encoder):
    """The fast graph (and encoder.pt2) give the open_clip embeddings within 1e-5, and the cached ones."""
    from cachekit.cache import FeatureCache
    from cachekit.index.build import load_index
    from cachekit.index.export import ENCODER_PT2, load_query_encoder
    from cachekit.index.pixels import decode_frames, preprocess_frames

    idx = load_index(data["index"])
    run = load_query_encoder(idx.path, idx.meta)
    path = data["clips"]["drift"][1]
    pixels = preprocess_frames(decode_frames(path, idx.meta), idx.cache_key["preprocess"])
    with torch.no_grad():
        want = encoder.encode_frames(pixels).emb
    got = run(pixels)
    assert got.shape == want.shape == (4, 64)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    with FeatureCache(data["store"]) as cache:
        i = cache.paths.index(os.path.abspath(path))
        torch.testing.assert_close(got, torch.from_numpy(cache.emb()[i]), atol=1e-5, rtol=0)
    assert (idx.path / ENCODER_PT2).is_file()
    # the graph runs attention as eager inference does (torch's fused kernel), not as projections + SDPA
    graph = (idx.path / idx.meta["encoder"]["graph"]).read_text()
    assert "_native_multi_head_attention" in graph and "scaled_dot_product_attention" not in graph
    # an index whose method could not be exported encodes eagerly (open_clip): the same features
    eager = load_query_encoder(idx.path, {**idx.meta, "encoder": {**idx.meta["encoder"], "graph": None, "pt2": None}})
    torch.testing.assert_close(eager(pixels), want, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_encoder_pt2_gives_the_same_features(data):
    """The deployable torch.export artefact (slow to load: the export deserialiser) agrees too."""
    from cachekit.index.build import load_index
    from cachekit.index.export import load_query_encoder

    idx = load_index(data["index"])
    fast = load_query_encoder(idx.path, idx.meta)
    pt2 = load_query_encoder(idx.path, {**idx.meta, "encoder": {**idx.meta["encoder"], "graph": None}})
    x = torch.randn(4, 3, 224, 224)
    torch.testing.assert_close(pt2(x), fast(x), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- ranking
def _synthetic_index(metric: str, n_classes=40, shots=3, frames=5, dim=16, seed=0):
    """A LoadedIndex over random support features (no encoder), scored by ``metric``."""
    from cachekit.index.build import LoadedIndex, support_prototypes
    from cachekit.index.faiss_index import PrototypeIndex

    rng = np.random.default_rng(seed)
    support = rng.standard_normal((n_classes * shots, frames, dim)).astype(np.float32)
    labels = np.repeat(np.arange(n_classes), shots)
    temporal, pooled = support_prototypes(support, labels, n_classes)
    scorer = "method" if metric == "method" else ("faiss" if metric == "mean" else "metric")
    meta = {"scorer": scorer, "metric": None if metric == "method" else metric}
    idx = LoadedIndex(Path("synthetic"), PrototypeIndex.build(pooled), [f"c{i}" for i in range(n_classes)],
                      temporal, meta, support, labels)
    queries = torch.from_numpy(rng.standard_normal((6, frames, dim)).astype(np.float32))
    return idx, queries, torch.from_numpy(support), torch.from_numpy(labels)


@pytest.mark.parametrize("metric", list(SIMILARITIES))
def test_shortlist_as_large_as_the_index_gives_the_brute_force_ranking(metric):
    from cachekit.index.query import rank

    idx, queries, _, _ = _synthetic_index(metric)
    n = len(idx.classes)
    pooled = torch.from_numpy(idx.index.vectors())
    for q in queries:
        if SIMILARITIES[metric].pooled:
            brute = (torch.nn.functional.normalize(q.mean(0), dim=-1) @ pooled.t()).numpy()
        else:
            brute = SIMILARITIES[metric](q[None], torch.from_numpy(idx.temporal))[0].numpy()
        order = np.lexsort((np.arange(n), -brute))
        hits = rank(idx, q, top_k=n, shortlist=n)
        assert [h.label for h in hits] == [idx.classes[i] for i in order]
        np.testing.assert_allclose([h.score for h in hits], brute[order], atol=1e-5)
        short = rank(idx, q, top_k=3, shortlist=8)  # the best 3 of FAISS's 8 nearest pooled vectors
        _, near = idx.index.search(torch.nn.functional.normalize(q.mean(0, keepdim=True), dim=-1).numpy(), 8)
        assert {h.label for h in short} <= {idx.classes[i] for i in near[0]}
        assert [h.score for h in short] == sorted((h.score for h in short), reverse=True)


def test_method_scored_index_reranks_like_the_methods_episode_logits():
    """A method whose score is its own (prototype_metric None): the default score_supports runs
    its episode_logits on the shortlisted classes' shots; the full shortlist = brute force."""
    from cachekit.encoder import ModelInfo
    from cachekit.methods.base import Episode, VideoBatch
    from cachekit.methods.proto import Config, Proto
    from cachekit.index.query import rank

    idx, queries, support, labels = _synthetic_index("method")
    n = len(idx.classes)
    info = ModelInfo(embed_dim=16, width=16, layers=1, heads=1, grid=(1, 1), image_size=32, text_width=16)
    method = Proto(Config(metric="otam"), info, frames=5)
    ep = Episode(support=VideoBatch(index=torch.arange(len(labels)), labels=labels, emb=support),
                 query=VideoBatch(index=torch.arange(len(queries)), labels=torch.zeros(len(queries)), emb=queries),
                 support_labels=labels, query_labels=torch.zeros(len(queries), dtype=torch.long),
                 class_ids=torch.arange(n))
    brute = method.episode_logits(ep).numpy()  # [Q, C]
    for q, b in zip(queries, brute):
        hits = rank(idx, q, top_k=5, shortlist=n, method=method)
        order = np.lexsort((np.arange(n), -b))[:5]
        assert [h.label for h in hits] == [idx.classes[i] for i in order]
        np.testing.assert_allclose([h.score for h in hits], b[order], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- query
def test_a_support_clip_finds_its_own_class_first(data):
    from cachekit.index.query import QueryConfig, query_videos

    paths = [data["clips"][c][0] for c in CLASSES]
    results = list(query_videos(paths, data["index"], cfg=QueryConfig(top_k=3)))
    for c, r in zip(CLASSES, results):
        assert r.error is None and r.top[0].label == c, r
        assert len(r.top) == 3 and r.top[0].score > r.top[1].score
        assert set(r.seconds) == {"decode", "preprocess", "encode", "search"}


def test_query_json_lines_and_an_undecodable_video(data):
    good = [data["clips"]["spin"][1], data["clips"]["bounce"][0]]
    code, out, err = _invoke(["query", good[0], data["broken"], good[1], "--index", data["index"],
                              "--top-k", 2, "--json"])
    assert code == 1
    lines = [json.loads(ln) for ln in out.splitlines()]
    assert [d["video"] for d in lines] == [str(p) for p in good]
    for d, want in zip(lines, ("spin", "bounce")):
        assert set(d) == {"video", "top", "encoder"} and len(d["top"]) == 2
        assert "RANDOM weights" in d["encoder"]  # a consumer of the JSON alone sees the caveat too
        assert all(set(h) == {"label", "score"} and isinstance(h["score"], float) for h in d["top"])
        assert d["top"][0]["label"] == want
    assert "note: the encoder has RANDOM weights" in err  # the encoder's caveat, once, on stderr
    err_lines = [ln for ln in err.strip().splitlines() if not ln.startswith("note: ")]
    assert len(err_lines) == 1 and str(data["broken"]) in err_lines[0] and err_lines[0].startswith("error:")


def test_query_prints_a_table_and_explains(data, tmp_path):
    code, out, err = _invoke(["query", data["clips"]["drift"][0], "--index", data["index"], "--top-k", 3,
                              "--explain", tmp_path])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == str(data["clips"]["drift"][0])
    assert lines[1].split()[:2] == ["1", "drift"] and len(lines) == 5
    png = tmp_path / "drift_0.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert lines[4] == f"  explanation: {png}"
    code, out, err = _invoke(["query", data["clips"]["drift"][0], "--index", data["index"], "--top-k", 3,
                              "--explain", tmp_path / "j", "--json"])
    assert code == 0 and json.loads(out)["explanation"] == str(tmp_path / "j" / "drift_0.png"), out  # JSON too


def test_explain_overlays_the_methods_mask(data, tmp_path):
    """A method with an explain mask (EV-CLIP-like): the mask is taken from the method's hook."""
    from cachekit.methods.base import CacheNeeds, Method
    from cachekit.index.query import Classifier

    seen = {}

    class Masked(Method):
        name = "masked"

        def explain_mask(self, batch):
            seen["pixels"] = tuple(batch.pixels.shape)
            return torch.linspace(0, 1, 224 * 224).view(1, 224, 224)

    clf = Classifier(data["index"])
    clf.run_dir, clf._method = "run", Masked(None, 4, CacheNeeds(emb=False, pixels=True), "masked")
    res = clf.classify(data["clips"]["spin"][0], top_k=2, explain_dir=tmp_path)
    assert seen["pixels"] == (1, 4, 3, 224, 224) and Path(res.explanation).is_file()


def test_index_add_adds_a_class_that_queries_then_find(data, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(data["index"], index)
    code, out, err = _invoke(["index", "add", index, "--class", "wave", data["new"]])
    assert code == 0, err
    assert "added class 'wave'" in out
    assert "note: the encoder has RANDOM weights" in out  # the index's encoder, labelled like every output
    from cachekit.index.build import load_index

    idx = load_index(index)
    assert idx.classes == [*CLASSES, "wave"] and idx.meta["shots"]["wave"] == 1 and len(idx.index) == 4
    code, out, _ = _invoke(["query", data["new"], data["clips"]["drift"][0], "--index", index, "--json"])
    tops = [json.loads(ln)["top"][0]["label"] for ln in out.splitlines()]
    assert code == 0 and tops == ["wave", "drift"]
    # refused: a name already there, an undecodable video (and nothing changes)
    before = tree_digest(index)
    code, _, err = _invoke(["index", "add", index, "--class", "wave", data["new"]])
    assert code == 2 and "already in index" in err
    code, _, err = _invoke(["index", "add", index, "--class", "other", data["new"], data["broken"]])
    assert code == 2 and str(data["broken"]) in err and len(err.strip().splitlines()) == 1
    assert tree_digest(index) == before


def _write_run(run_dir: Path, cache_key: dict, model_info: dict) -> Path:
    """A run directory as cachekit.runs defines it, of the zeroshot method (nothing to train)."""
    from cachekit.runs import MODEL_FILE, RUN_FORMAT, RUN_JSON, RUN_VERSION, save_weights, write_json

    run_dir.mkdir(parents=True, exist_ok=True)
    sha = save_weights(run_dir / MODEL_FILE, {})
    write_json(run_dir / RUN_JSON, {
        "format": RUN_FORMAT, "version": RUN_VERSION,
        "method": {"name": "zeroshot", "config": {"template": None, "logit_scale": 100.0}},
        "store": {"cache_key": cache_key}, "model_info": model_info, "frames": cache_key["frames"],
        "checkpoints": {MODEL_FILE: sha},
    })
    return run_dir


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """A run directory (zeroshot, which reads the class text) and its index, built with ``index --run``."""
    from cachekit.cache import FeatureCache

    with FeatureCache(data["store"]) as cache:
        run = _write_run(tmp_path_factory.mktemp("run") / "run", cache.key, cache.model_info.to_dict())
    code, out, err = _invoke(["index", "--run", run, "--store", data["store"], "--json"])
    assert code == 0, err
    summary = json.loads(out)
    assert summary["path"] == str(run / "index") and summary["method"] == "zeroshot"
    return run


def test_index_from_a_run_and_query_with_it(data, run):
    """``index --run`` (default out RUN/index) and ``query --run`` without --index."""
    from cachekit.index.build import load_index

    idx = load_index(run / "index")
    assert idx.meta["run"] == str(run) and idx.meta["method"]["name"] == "zeroshot"
    assert idx.meta["templates"] and idx.meta["run_weights_sha256"]
    code, out, err = _invoke(["query", data["clips"]["spin"][0], "--run", run, "--json"])
    assert code == 0, err
    assert json.loads(out)["top"][0]["label"] == "spin"


def test_index_add_through_a_runs_method(data, run, tmp_path):
    """A class added to a zeroshot run's index gets the method's class vector of its name (its text
    through the frozen text tower), and queries answer as zeroshot over the four classes."""
    from cachekit.cache import FeatureCache
    from cachekit.cache import FeatureCache
    from cachekit.index.build import load_index
    from cachekit.index.pixels import decode_frames, preprocess_frames
    from cachekit.methods.base import VideoBatch
    from cachekit.runs import load_run, load_store_encoder
    from cachekit.templates import fill

    shutil.copytree(run, tmp_path / "run")
    code, out, err = _invoke(["index", "add", tmp_path / "run" / "index", "--class", "wave", data["new"]])
    assert code == 0, err
    idx = load_index(tmp_path / "run" / "index")
    assert idx.classes == [*CLASSES, "wave"] and idx.class_vectors.shape[0] == 4
    method, _ = load_run(run)
    with FeatureCache(data["store"]) as cache:
        enc = load_store_encoder(cache.key, device="cpu")
        text = torch.from_numpy(cache.text(list(CLASSES)))  # [3, P, D']
    with torch.no_grad():
        wave = enc.encode_text(fill(tuple(idx.meta["templates"]), "wave")).float()[None]  # [1, P, D']
        text = torch.cat([text, wave])
        np.testing.assert_allclose(idx.class_vectors, method.class_vectors(text).numpy(), atol=1e-5)
        pixels = preprocess_frames(decode_frames(data["new"], idx.meta), idx.cache_key["preprocess"])
        emb = enc.encode_frames(pixels, ()).emb[None].float()  # [1, T, D']
        want = method.video_logits(VideoBatch(index=torch.zeros(1, dtype=torch.long),
                                              labels=torch.full((1,), -1), emb=emb), text)[0]
    code, out, err = _invoke(["query", data["new"], "--index", tmp_path / "run" / "index", "--json", "--top-k", 4])
    assert code == 0, err
    top = json.loads(out)["top"]
    assert top[0]["label"] == idx.classes[int(want.argmax())]
    got = {h["label"]: h["score"] for h in top}
    np.testing.assert_allclose([got[c] for c in idx.classes], want.numpy(), atol=1e-2)


def test_index_and_query_with_a_trained_run(data, tmp_path):
    """A run the trainer made (CLIP-FSAR head, 2 episodes): its own score (prototype_metric None)
    re-ranks FAISS's shortlist from the kept shots and class text, through its episode_logits."""
    from cachekit.index.build import load_index
    from cachekit.train import TrainConfig, train

    run = tmp_path / "clip_fsar"
    train(str(data["store"]), str(run), "clip_fsar", None,
          TrainConfig(ways=2, shots=1, queries=1, episodes=2, val_episodes=0, device="cpu"), progress=False)
    code, _, err = _invoke(["index", "--run", run, "--store", data["store"], "--split", "train"])
    assert code == 0, err
    idx = load_index(run / "index")
    assert idx.meta["method"]["name"] == "clip_fsar" and idx.meta["scorer"] == "method"
    assert idx.support.shape == (6, 4, 64) and idx.text is not None and idx.text.shape[0] == 3
    code, out, err = _invoke(["query", data["clips"]["spin"][0], data["clips"]["bounce"][1], "--run", run,
                              "--json", "--top-k", 3])
    assert code == 0, err
    tops = [json.loads(ln)["top"] for ln in out.splitlines()]
    assert [t[0]["label"] for t in tops] == ["spin", "bounce"] and all(len(t) == 3 for t in tops)


def test_a_run_and_an_index_of_different_cache_keys_are_refused(data, tmp_path):
    from cachekit.cache import FeatureCache

    with FeatureCache(data["store"]) as cache:
        key = {**cache.key, "frames": 8, "sampler": {**cache.key["sampler"], "frames": 8}}
        run = _write_run(tmp_path / "other", key, cache.model_info.to_dict())
    code, out, err = _invoke(["query", data["clips"]["spin"][0], "--index", data["index"], "--run", run])
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "different cache keys (frames, sampler)" in err
    code, _, err = _invoke(["index", "--run", run, "--store", data["store"], "--out", tmp_path / "x"])
    assert code == 2 and "different cache key" in err and not (tmp_path / "x").exists()


def test_user_errors_are_one_line(data, tmp_path):
    code, _, err = _invoke(["query", data["clips"]["spin"][0]])
    assert code == 2 and "--index" in err
    code, _, err = _invoke(["query", data["clips"]["spin"][0], "--index", tmp_path / "none"])
    assert code == 2 and "not found" in err
    code, _, err = _invoke(["index", "--out", tmp_path / "x"])
    assert code == 2 and "--store" in err
    code, _, err = _invoke(["index", "build", "--out", tmp_path / "x"])
    assert code == 2 and "--store" in err
    code, _, err = _invoke(["index", "--run", tmp_path, "--store", data["store"], "--metric", "otam"])
    assert code == 2 and "--metric is the proto baseline's" in err
    code, _, err = _invoke(["index", "--store", data["store"], "--out", tmp_path / "x", "--split", "nosuch"])
    assert code == 2 and "not a split" in err


@pytest.mark.slow
def test_split_file_shots_and_a_temporal_metric(data, tmp_path):
    """--split FILE, --shots 1 and --metric otam: the index has the listed classes' first shots."""
    from cachekit.index.build import load_index

    listed = data["root"] / "two.csv"
    listed.write_text("path,label\n" + "".join(f"{p},{c}\n" for c in ("bounce", "spin") for p in data["clips"][c]))
    out = tmp_path / "otam"
    code, _, err = _invoke(["index", "--store", data["store"], "--out", out, "--split", listed,
                            "--shots", 1, "--metric", "otam", "--no-onnx"])
    assert code == 0, err
    idx = load_index(out)
    assert idx.classes == ["bounce", "spin"] and idx.meta["shots"] == {"bounce": 1, "spin": 1}
    assert idx.meta["scorer"] == "metric" and idx.temporal.shape == (2, 4, 64)
    code, out_text, _ = _invoke(["query", data["clips"]["spin"][0], "--index", out, "--json", "--top-k", 2])
    top = json.loads(out_text)["top"]
    assert code == 0 and top[0]["label"] == "spin" and top[0]["score"] >= top[1]["score"]


@pytest.mark.slow
def test_kill_during_index_then_rerun_gives_the_same_index(data, tmp_path):
    """``kill -9`` while ``index`` writes its directory: the old index stays whole; a re-run
    publishes exactly the index an uninterrupted run publishes."""
    out = tmp_path / "idx"
    shutil.copytree(data["index"], out)
    reference = tree_digest(data["index"])
    other = tmp_path / "other"  # an older index at the same path, to be replaced
    code, _, err = _invoke(["index", "--store", data["store"], "--out", other, "--metric", "bimhm"])
    assert code == 0, err
    shutil.rmtree(out)
    shutil.copytree(other, out)
    old = tree_digest(out)
    cmd = [sys.executable, "-c", _SUBPROCESS, "index", "--store", str(data["store"]), "--out", str(out)]
    proc = subprocess.Popen(cmd, env=cli_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while not any(p.name.startswith(".idx.tmp-") for p in tmp_path.iterdir()) and proc.poll() is None:
        time.sleep(0.01)  # a hang is pytest-timeout's to catch, not a wall-clock guess
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert tree_digest(out) == old  # killed mid-write: the old index, whole
    code, _, err = _invoke(["index", "--store", data["store"], "--out", out])
    assert code == 0, err
    assert tree_digest(out) == reference
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".idx")) == [".idx.lock"]


def test_cli_modules_import_nothing_heavy():
    code = ("import sys, clipcache.cli.main, clipcache.cli.index_cmd; "
            "print([m for m in ('torch', 'faiss', 'open_clip', 'cachekit.index.query') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], env=cli_env(), cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


@pytest.mark.slow
def test_query_process_does_not_import_open_clip(data):
    """``clipcache query`` runs from the exported graph: no open_clip, torchvision, torch.export."""
    code = (_SUBPROCESS.replace("standalone_mode=True", "standalone_mode=False")
            + "; bad = [m for m in ('open_clip', 'torchvision', 'torch._dynamo', 'sympy') if m in sys.modules]"
            + "; print('HEAVY', bad)")
    proc = subprocess.run([sys.executable, "-c", code, "query", str(data["clips"]["spin"][0]), "--index",
                           str(data["index"]), "--json"], env=cli_env(), cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[0])["top"][0]["label"] == "spin"
    assert proc.stdout.splitlines()[-1] == "HEAVY []"


def test_query_with_a_run_alone_builds_its_index_on_first_use(data, tmp_path, caplog):
    """The third of the three commands: ``query clip --run R`` with no ``clipcache index`` before.
    First use builds RUN/index from the run's store and says so on stderr (stdout: the JSON alone);
    later uses say so with -v; a retrained run's stale index is rebuilt."""
    from cachekit.index.build import load_index
    from cachekit.runs import MODEL_FILE, RUN_JSON, load_weights, read_run, save_weights, write_json
    from cachekit.train import TrainConfig, train

    run = tmp_path / "run"
    train(str(data["store"]), str(run), "clip_fsar", None,
          TrainConfig(ways=2, shots=1, queries=1, episodes=2, val_episodes=0, device="cpu"), progress=False)
    assert not (run / "index").exists()
    clip = data["clips"]["spin"][0]
    code, out, err = _invoke(["query", clip, "--run", run, "--json"])
    assert code == 0, err
    assert json.loads(out)["top"][0]["label"] == "spin"
    assert f"index: built {run / 'index'} from store {data['store']}" in err and "3 classes" in err
    idx = load_index(run / "index")
    assert idx.meta["run"] == str(run) and idx.meta["method"]["name"] == "clip_fsar"
    code, out, err = _invoke(["query", clip, "--run", run, "--json"])
    assert code == 0 and "index:" not in err  # used as it is: said with -v only
    assert json.loads(out)["top"][0]["label"] == "spin"
    with caplog.at_level(logging.INFO, logger="clipcache.query"):
        code, out, err = _invoke(["-v", "query", clip, "--run", run, "--json"])
    assert code == 0 and f"index: using {run / 'index'}" in caplog.text and json.loads(out)["top"][0]["label"] == "spin"
    # the run trained again (other weights): its index is of the old weights, so it is rebuilt
    meta = read_run(run)
    weights = {k: v + 0.01 for k, v in load_weights(run / MODEL_FILE).items()}
    meta["checkpoints"][MODEL_FILE] = save_weights(run / MODEL_FILE, weights)
    write_json(run / RUN_JSON, meta)
    code, out, err = _invoke(["query", clip, "--run", run, "--json"])
    assert code == 0, err
    assert "index: rebuilt (the run was retrained" in err
    assert load_index(run / "index").meta["run_weights_sha256"] == meta["checkpoints"][MODEL_FILE]
    # an index scored the older way (before run_scoring; zeroshot and probe runs answered by support
    # prototypes) is rebuilt once too
    from cachekit.index.faiss_index import resolve_dir

    doc_path = resolve_dir(run / "index") / "index.json"
    doc = json.loads(doc_path.read_text())
    del doc["meta"]["run_scoring"]
    doc_path.write_text(json.dumps(doc))
    code, out, err = _invoke(["query", clip, "--run", run, "--json"])
    assert code == 0 and "index: rebuilt" in err, err
    assert load_index(run / "index").meta["run_scoring"] == 2
    # a run whose store is gone: one line naming the way out
    shutil.copytree(run, tmp_path / "moved")
    shutil.rmtree(tmp_path / "moved" / "index")
    meta["store"]["path"] = str(tmp_path / "nowhere.zarr")
    write_json(tmp_path / "moved" / RUN_JSON, meta)
    code, out, err = _invoke(["query", clip, "--run", tmp_path / "moved"])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "clipcache index --run" in err


# ----------------------------------------------------------------------------- the torch-free engine
onnx_installed = pytest.mark.skipif(
    __import__("importlib").util.find_spec("onnxruntime") is None or __import__("importlib").util.find_spec("onnx") is None,
    reason="the [export] extra (onnx, onnxscript, onnxruntime) is not installed")


def test_numpy_resize_equals_torchs_uint8_kernel_bit_for_bit():
    """query_onnx.resize_crop reproduces torch's antialiased uint8 resize (int16 fixed-point
    weights, horizontal pass first) exactly, down and up, for both interpolations and modes, also
    when only the centre crop's window is computed."""
    from cachekit.index import query_onnx
    from cachekit.index.pixels import normalise_pixels, resize_crop

    rng = np.random.default_rng(1)
    sizes = ((64, 80), (300, 224), (224, 224), (97, 131), (240, 320), (100, 50), (500, 333), (720, 1280),
             (1080, 1920), (230, 4000))  # the last squashed: a 17.9x shrink, 73 taps a pixel
    for h, w in sizes:
        frames = np.concatenate([rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8),
                                 synth_frames(h + w, frames=2, height=h, width=w)])
        for interp in ("bicubic", "bilinear"):
            for mode in ("shortest", "squash"):
                pre = {"size": 224, "interpolation": interp, "resize_mode": mode,
                       "mean": [0.48, 0.45, 0.40], "std": [0.27, 0.26, 0.28]}
                want = resize_crop(frames, pre)
                got = query_onnx.resize_crop(frames, pre)
                assert got.dtype == np.uint8 and np.array_equal(got, want.numpy()), (h, w, interp, mode)
                np.testing.assert_array_equal(query_onnx.normalise_pixels(got, pre), normalise_pixels(want, pre).numpy())


@pytest.mark.parametrize("metric", list(SIMILARITIES))
def test_numpy_metrics_equal_the_torch_ones(metric):
    from cachekit.index import query_onnx

    rng = np.random.default_rng(2)
    q = rng.standard_normal((6, 32)).astype(np.float32)
    s = rng.standard_normal((9, 6, 32)).astype(np.float32)
    want = SIMILARITIES[metric](torch.from_numpy(q)[None], torch.from_numpy(s))[0].numpy()
    np.testing.assert_allclose(query_onnx.similarity(metric, q, s), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("metric", [n for n, e in SIMILARITIES.items() if e.min_frames > 1])
def test_numpy_metrics_refuse_clips_shorter_than_they_need(metric):
    from cachekit.errors import InputError
    from cachekit.index import query_onnx

    with pytest.raises(InputError, match="at least 2 frames"):
        query_onnx.similarity(metric, np.ones((1, 8), np.float32), np.ones((3, 1, 8), np.float32))


@onnx_installed
def test_onnx_engine_answers_as_the_torch_engine(data, run, tmp_path):
    """For every index here (proto baseline with each metric, a run's index): the ONNX
    encoder's features equal the torch graph's within 1e-4 and the onnx engine's top-k equals
    the torch engine's (labels, and scores within 1e-4)."""
    from cachekit.index.pixels import decode_frames
    from cachekit.index.query import Classifier

    indexes = {"mean": data["index"], "run": run / "index"}
    for metric in (n for n, e in SIMILARITIES.items() if not e.pooled):
        out = tmp_path / metric
        code, _, err = _invoke(["index", "--store", data["store"], "--out", out, "--metric", metric])
        assert code == 0, err
        indexes[metric] = out
    videos = [data["clips"][c][k] for c in CLASSES for k in (0, 1)] + [data["new"]]
    for name, index in indexes.items():
        fast, slow = Classifier(index, engine="onnx"), Classifier(index, engine="torch")
        assert fast.engine == "onnx" and slow.engine == "torch"
        for v in videos:
            frames = decode_frames(v, fast.meta)
            small, pixels = fast.preprocess(frames)
            t_small, t_pixels = slow.preprocess(frames)
            assert np.array_equal(small, t_small.numpy())
            feats, t_feats = fast.encode(pixels), slow.encode(t_pixels)
            np.testing.assert_allclose(feats, t_feats.numpy(), rtol=0, atol=1e-4, err_msg=f"{name} {v}")
            a, b = fast.classify(v, top_k=3, shortlist=3), slow.classify(v, top_k=3, shortlist=3)
            assert [h.label for h in a.top] == [h.label for h in b.top], (name, v)
            np.testing.assert_allclose([h.score for h in a.top], [h.score for h in b.top], rtol=0, atol=1e-4)


@onnx_installed
def test_a_method_scored_index_falls_back_to_torch_and_onnx_is_refused_with_one_line(data, tmp_path):
    from cachekit.index.query import Classifier
    from cachekit.train import TrainConfig, train

    run = tmp_path / "clip_fsar"
    train(str(data["store"]), str(run), "clip_fsar", None,
          TrainConfig(ways=2, shots=1, queries=1, episodes=2, val_episodes=0, device="cpu"), progress=False)
    code, _, err = _invoke(["index", "--run", run, "--store", data["store"]])
    assert code == 0, err
    clf = Classifier(run / "index")
    assert clf.engine == "torch" and "method" in clf.engine_note
    code, out, err = _invoke(["query", data["clips"]["spin"][0], "--run", run, "--engine", "onnx"])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "--engine onnx" in err


@onnx_installed
def test_onnx_query_process_imports_no_torch(data, run):
    """``clipcache query`` on the onnx engine, as a real process: the answer, and no torch (nor
    open_clip, torchvision, FAISS for an exact index) among its modules."""
    code = (_SUBPROCESS.replace("standalone_mode=True", "standalone_mode=False")
            + "; bad = [m for m in ('torch', 'open_clip', 'torchvision', 'faiss') if m in sys.modules]"
            + "; print('HEAVY', bad)")
    for args in (["--index", str(data["index"])], ["--run", str(run)]):
        proc = subprocess.run([sys.executable, "-c", code, "query", str(data["clips"]["spin"][0]), *args, "--json"],
                              env=cli_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout.splitlines()[0])["top"][0]["label"] == "spin"
        assert proc.stdout.splitlines()[-1] == "HEAVY []", args


@onnx_installed
@pytest.mark.slow
@pytest.mark.parametrize("method, cfg", [
    ("linear_probe", dict(protocol="allway", epochs=1, batch_size=4, val_episodes=0)),
    ("ma_fsar", dict(ways=2, shots=1, queries=1, episodes=2, val_episodes=0)),
    ("clip_fsar", dict(ways=2, shots=1, queries=1, episodes=2, val_episodes=0)),
])
def test_every_trained_methods_onnx_encoder_equals_its_torch_graph(data, tmp_path, method, cfg):
    """A trained run's exported query encoder: encoder.onnx (onnxruntime) gives the torch graph's
    features within 1e-4; where the index's score allows the onnx engine, the same top-k too."""
    from cachekit.cache import FeatureCache
    from cachekit.index.build import load_index
    from cachekit.index.pixels import decode_frames
    from cachekit.index.query import Classifier
    from cachekit.index.query_onnx import OnnxEncoder
    from cachekit.train import TrainConfig, train

    run = tmp_path / method
    train(str(data["store"]), str(run), method, {"ffn_dim": 32} if method == "ma_fsar" else None,
          TrainConfig(device="cpu", **cfg), progress=False)
    code, _, err = _invoke(["index", "--run", run, "--store", data["store"]])
    assert code == 0, err
    idx = load_index(run / "index")
    assert idx.meta["encoder"]["onnx"] == "encoder.onnx", idx.meta["encoder"]["notes"]
    slow = Classifier(run / "index", engine="torch")
    onnx = OnnxEncoder(idx.path / "encoder.onnx")
    for v in (data["clips"]["spin"][0], data["clips"]["drift"][1], data["new"]):
        _, pixels = slow.preprocess(decode_frames(v, slow.meta))
        np.testing.assert_allclose(onnx(pixels.numpy()), slow.encode(pixels).numpy(), rtol=0, atol=1e-4)
    if idx.meta["scorer"] != "method":
        fast = Classifier(run / "index", engine="onnx")
        for v in (data["clips"]["spin"][0], data["new"]):
            a, b = fast.classify(v, top_k=3), slow.classify(v, top_k=3)
            assert [h.label for h in a.top] == [h.label for h in b.top]
            np.testing.assert_allclose([h.score for h in a.top], [h.score for h in b.top], rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------- what `index --out` replaces
def test_index_out_refuses_a_folder_that_is_not_an_index(data, tmp_path):
    """``index --out DIR`` on a run directory or any non-empty folder that is not an index: one
    line, exit 2, and the folder is left as it was; an empty folder or an existing index is fine."""
    from cachekit.cache import FeatureCache
    from cachekit.index.build import load_index

    with FeatureCache(data["store"]) as cache:
        run = _write_run(tmp_path / "run", cache.key, cache.model_info.to_dict())
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("keep me\n")
    for folder in (run, notes):
        before = tree_digest(folder)
        code, out, err = _invoke(["index", "--store", data["store"], "--out", folder, "--no-onnx"])
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        assert "is not a clipcache index; pass a new or empty folder" in err
        assert tree_digest(folder) == before
        assert not [p for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.tmp-")]
    (tmp_path / "empty").mkdir()
    code, _, err = _invoke(["index", "--store", data["store"], "--out", tmp_path / "empty", "--no-onnx"])
    assert code == 0, err
    code, _, err = _invoke(["index", "--store", data["store"], "--out", tmp_path / "empty", "--no-onnx",
                            "--metric", "otam"])
    assert code == 0, err  # an index is rebuilt in place
    assert load_index(tmp_path / "empty").meta["metric"] == "otam"


def test_the_support_note_says_what_shots_used(data, tmp_path):
    code, out, err = _invoke(["index", "--store", data["store"], "--out", tmp_path / "a", "--no-onnx", "--json"])
    assert code == 0, err
    assert "support set: all 6 labelled videos of the store" in json.loads(out)["notes"]
    code, out, err = _invoke(["index", "--store", data["store"], "--out", tmp_path / "b", "--no-onnx", "--json",
                              "--shots", 1])
    assert code == 0, err
    summary = json.loads(out)
    assert summary["support_videos"] == 3
    support = [n for n in summary["notes"] if n.startswith("support set:")]
    assert support == ["support set: 3 of the 6 labelled videos of the store (--shots 1: at most 1 per class)"]
    code, out, err = _invoke(["index", "--store", data["store"], "--out", tmp_path / "c", "--no-onnx",
                              "--split", "train", "--shots", 1])
    assert code == 0, err
    assert "note: support set: 3 of the 6 labelled videos of split 'train' (--shots 1" in out


# ----------------------------------------------------------------------------- a classifier run answers as itself
def _own_predictions(run, store, classes):
    """The run's method forward on the cached features of every video of ``store``: ``(paths,
    logits [V, C], query features [V, T, D])`` over ``classes`` (the index's)."""
    from cachekit.cache import FeatureCache
    from cachekit.methods.base import VideoBatch
    from cachekit.runs import load_run

    method, _ = load_run(run)
    with FeatureCache(store) as cache:
        emb = torch.from_numpy(cache.emb(view=0))  # [V, T, D']
        text = torch.from_numpy(cache.text(list(classes)))  # [C, P, D']
        paths = list(cache.paths)
    method.bind_classes(list(classes))
    batch = VideoBatch(index=torch.arange(emb.shape[0]), labels=torch.full((emb.shape[0],), -1), emb=emb)
    with torch.no_grad():
        return paths, method.video_logits(batch, text), method.query_features(batch)


@pytest.fixture(scope="module")
def probes(data, tmp_path_factory):
    """Two linear-probe runs of different weights (text init, 1 epoch; zeros init, 2 epochs)."""
    from cachekit.train import TrainConfig, train

    root = tmp_path_factory.mktemp("probes")
    runs = []
    for name, options, epochs in (("text", None, 1), ("zeros", {"init": "zeros"}, 2)):
        run = root / name
        train(str(data["store"]), str(run), "linear_probe", options,
              TrainConfig(protocol="allway", epochs=epochs, batch_size=4, val_episodes=0, device="cpu"),
              progress=False)
        runs.append(run)
    return runs


@pytest.mark.parametrize("which", ["probe", "zeroshot"])
def test_query_of_a_classifier_run_answers_as_its_method(data, run, probes, which):
    """``query --run`` of a linear probe / zeroshot run: the index holds the method's class vectors
    (probe rows and bias; class text), and the query's top-1 (and scores: the logits) equal the
    method's own forward on the cached features, through the ranking and end to end."""
    from cachekit.index.build import load_index
    from cachekit.index.query import Classifier

    r = probes[0] if which == "probe" else run
    code, out, err = _invoke(["index", "--run", r, "--store", data["store"], "--json"])
    assert code == 0, err
    summary = json.loads(out)
    assert summary["scorer"] == "classifier" and summary["support_videos"] == 0
    idx = load_index(r / "index")
    assert idx.classes == list(CLASSES) and idx.meta["scorer"] == "classifier"
    paths, logits, feats = _own_predictions(r, data["store"], idx.classes)
    want = [idx.classes[int(i)] for i in logits.argmax(dim=1)]
    for engine in ("torch", "onnx") if idx.meta["encoder"].get("onnx") else ("torch",):
        clf = Classifier(r / "index", engine=engine)
        for v in range(len(paths)):
            q = feats[v] if engine == "torch" else feats[v].numpy()
            top = clf.scores(q, top_k=3)
            assert top[0].label == want[v]
            got = {h.label: h.score for h in top}
            np.testing.assert_allclose([got[c] for c in idx.classes], logits[v].numpy(), rtol=1e-5, atol=1e-3)
    code, out, err = _invoke(["query", *paths, "--run", r, "--json", "--top-k", 1])
    assert code == 0, err
    answers = {json.loads(ln)["video"]: json.loads(ln)["top"][0]["label"] for ln in out.splitlines()}
    assert [answers[p] for p in paths] == want


def test_two_probe_runs_of_different_weights_answer_differently(data, probes):
    outs = []
    for r in probes:
        code, out, err = _invoke(["query", *data["clips"]["spin"], "--run", r, "--json", "--top-k", 3])
        assert code == 0, err
        outs.append(out)
    assert outs[0] != outs[1]
    from cachekit.index.build import load_index

    a, b = (load_index(r / "index").class_vectors for r in probes)
    assert not np.allclose(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("method, options", [("ez_clip", None), ("ev_clip", {"prompts": "mask", "z_block": 1})])
def test_a_text_method_through_the_backbone_answers_as_its_method(data, tmp_path, method, options):
    """EZ-CLIP and EV-CLIP (mask prompts) classify by class text from features of the adapted or
    masked frames: the index holds their class vectors, and the exported query path's scores are
    the method's own logits on the same pixels (it ranked frozen features before)."""
    from cachekit.cache import FeatureCache
    from cachekit.index.build import load_index
    from cachekit.index.pixels import decode_frames
    from cachekit.index.query import Classifier
    from cachekit.methods.base import VideoBatch
    from cachekit.runs import load_run, load_store_encoder
    from cachekit.train import TrainConfig, train

    run = tmp_path / method
    train(str(data["store"]), str(run), method, options,
          TrainConfig(protocol="allway", epochs=1, batch_size=6, val_episodes=0, device="cpu"), progress=False)
    code, out, err = _invoke(["index", "--run", run, "--store", data["store"], "--no-onnx", "--json"])
    assert code == 0, err
    assert json.loads(out)["scorer"] == "classifier"
    idx = load_index(run / "index")
    clf = Classifier(run / "index", engine="torch")
    enc = load_store_encoder(idx.cache_key, None, device="cpu")
    m, _ = load_run(run, backbone=enc)
    m.bind_classes(list(idx.classes))
    with FeatureCache(data["store"]) as cache:
        text = torch.from_numpy(cache.text(list(idx.classes)))  # [C, P, D']
    for clip in (data["clips"]["spin"][0], data["clips"][CLASSES[-1]][0]):
        _, pixels = clf.preprocess(decode_frames(clip, idx.meta, "auto"))  # [T, 3, S, S]
        pixels = torch.as_tensor(pixels)
        o = enc.encode_frames(pixels, tuple(m.needs.tokens_at))
        one = torch.zeros(1, dtype=torch.long)
        batch = VideoBatch(index=one, labels=one - 1, emb=o.emb[None].float(), cls=o.cls[None].float(),
                           tokens={k: v[None].float() for k, v in o.tokens.items()}, pixels=pixels[None])
        with torch.no_grad():
            logits = m.eval().video_logits(batch, text)[0]  # [C]
            top = clf.scores(clf.encode(pixels), top_k=len(idx.classes))
        got = {h.label: h.score for h in top}
        assert top[0].label == idx.classes[int(logits.argmax())]
        np.testing.assert_allclose([got[c] for c in idx.classes], logits.numpy(), rtol=1e-4, atol=1e-3)


def test_an_unfinished_run_is_noted_by_index_and_query(data, probes, tmp_path):
    from cachekit.runs import RUN_JSON, read_run, write_json

    run = tmp_path / "stopped"
    shutil.copytree(probes[0], run, ignore=shutil.ignore_patterns("index"))
    meta = read_run(run)
    assert meta["status"] == "complete"
    code, out, err = _invoke(["index", "--run", probes[0], "--store", data["store"], "--no-onnx", "--json"])
    assert code == 0 and not any("checkpoint's" in n for n in json.loads(out)["notes"])
    meta["status"] = "stopped"
    write_json(run / RUN_JSON, meta)
    code, out, err = _invoke(["index", "--run", run, "--store", data["store"], "--no-onnx"])
    assert code == 0, err
    assert "note: run stopped did not finish (status 'stopped'" in out
    code, out, err = _invoke(["query", data["clips"]["spin"][0], "--run", run, "--json"])
    assert code == 0, err
    assert json.loads(out)["top"] and "note: run stopped did not finish (status 'stopped'" in err
    code, out, err = _invoke(["query", data["clips"]["spin"][0], "--run", probes[0], "--json"])
    assert code == 0 and "checkpoint's" not in err
