"""Video decoding (decord, PyAV as fallback) and TSN-style segment sampling.

Only the sampled frames are decoded where the backend allows it. Frames come back as RGB uint8
``[V, T, H, W, 3]`` (V views of T frames), whatever the backend.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from clipcache.stores import file_sha256

from . import frames as frames_mod
from .errors import DecodeError, InputError

log = logging.getLogger(__name__)

Backend = Literal["auto", "decord", "pyav"]


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


def _decode_decord(path: str, cfg: SamplerConfig, key: str) -> DecodedVideo:
    import decord

    try:
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        n = len(vr)
        if n < cfg.frames:
            raise _too_short(path, n, cfg)
        fps = float(vr.get_avg_fps() or 0.0)
        idx = view_indices(n, cfg, key)
        uniq, inverse = np.unique(idx, return_inverse=True)
        frames = vr.get_batch(uniq.tolist()).asnumpy()  # [U, H, W, 3] RGB
    except DecodeError:
        raise
    except Exception as err:  # noqa: BLE001 - decord raises bare DECORDError/RuntimeError
        raise DecodeError(f"{path}: decord could not decode it ({_one_line(err)})") from err
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] != len(uniq):
        raise DecodeError(f"{path}: decord returned frames of shape {frames.shape}")
    frames = frames[inverse.reshape(idx.shape)]
    return DecodedVideo(frames, idx, idx / fps if fps > 0 else np.zeros(idx.shape), n, fps,
                        n / fps if fps > 0 else 0.0, "decord")


def _decode_pyav(path: str, cfg: SamplerConfig, key: str) -> DecodedVideo:
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
                    got[i] = frame.to_ndarray(format="rgb24")
                    if len(got) == len(wanted):
                        break
    except DecodeError:
        raise
    except Exception as err:  # noqa: BLE001 - PyAV raises many FFmpeg error types
        raise DecodeError(f"{path}: PyAV could not decode it ({_one_line(err)})") from err
    if len(got) < len(wanted):
        raise DecodeError(f"{path}: only {len(got)} of its {n} frames could be decoded")
    frames = np.stack([np.stack([got[i] for i in row]) for row in idx.tolist()])
    return DecodedVideo(frames, idx, idx / fps if fps > 0 else np.zeros(idx.shape), n, fps,
                        n / fps if fps > 0 else 0.0, "pyav")


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def decode_video(path: str | os.PathLike, cfg: SamplerConfig, key: str,
                 backend: Backend = "auto") -> DecodedVideo:
    """Decode the sampled frames of one video; decord first, PyAV when decord fails or is absent.

    ``key`` is the video's :func:`file_key` (it seeds the extra views). Raises
    :class:`DecodeError` with a one-line reason when no backend can read the file.
    """
    path = str(path)
    if os.path.isdir(path) and frames_mod.is_frame_folder(path):  # a folder of images: one video
        n = frames_mod.frame_count(path)
        if n < cfg.frames:
            raise _too_short(path, n, cfg)
        idx, fps = view_indices(n, cfg, key), frames_mod.DEFAULT_FPS
        return DecodedVideo(frames_mod.read_frames(path, idx), idx, idx / fps, n, fps, n / fps, "frames")
    _check_file(path)
    if backend == "pyav" or (backend == "auto" and not decord_available()):
        return _decode_pyav(path, cfg, key)
    try:
        return _decode_decord(path, cfg, key)
    except DecodeError as first:
        if backend == "decord":
            raise
        try:
            video = _decode_pyav(path, cfg, key)
        except DecodeError as second:
            raise second from first
        log.info("%s: decord failed (%s); read with PyAV", path, first)
        return video


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
    uniq, inverse = np.unique(idx, return_inverse=True)
    frames = None
    if backend != "pyav" and decord_available():
        import decord

        try:
            vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
            frames = vr.get_batch(uniq.tolist()).asnumpy()
        except Exception as err:  # noqa: BLE001 - decord raises bare DECORDError
            if backend == "decord":
                raise DecodeError(f"{path}: decord could not decode it ({_one_line(err)})") from err
    if frames is None:
        import av

        wanted = set(uniq.tolist())
        got: dict[int, np.ndarray] = {}
        try:
            with av.open(path) as container:
                for i, frame in enumerate(container.decode(video=0)):
                    if i in wanted:
                        got[i] = frame.to_ndarray(format="rgb24")
                        if len(got) == len(wanted):
                            break
        except Exception as err:  # noqa: BLE001
            raise DecodeError(f"{path}: PyAV could not decode it ({_one_line(err)})") from err
        if len(got) < len(wanted):
            raise DecodeError(f"{path}: frames {sorted(wanted - set(got))[:5]} could not be decoded")
        frames = np.stack([got[i] for i in uniq.tolist()])
    return frames[inverse.reshape(idx.shape)]
