"""The read stage: hash an input's bytes, decode its sampled frames and preprocess them.

Decoding runs in a pool of threads sized by :func:`~cachekit.extract.config.pipeline_plan`; each
video comes out as a :class:`Pending`: its frames resized and centre-cropped (uint8, what the pixel
cache stores) and normalised for the encoder (float32). The full-size frames are dropped as soon
as they are resized, so a window of decoded videos stays small.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import DecodeError
from ..frames import is_frame_folder, set_rate
from ..inputs import VideoItem
from ..video import Backend, DecodedVideo, decode_video, file_key
from .config import ExtractConfig, PipelinePlan, lower_priority


def hash_input(path: str) -> tuple[str | None, str | None]:
    """(content key, None), or (None, the one-line reason) when the input cannot be read."""
    try:
        if os.path.isdir(path) and not is_frame_folder(path):
            raise DecodeError(f"{path}: is a directory, not a video file")
        return file_key(path), None
    except (OSError, DecodeError) as err:
        return None, (str(err) if isinstance(err, DecodeError) else f"{path}: cannot read ({err.strerror})")


@dataclass
class Pending:
    """A decoded video on its way through the encoder to the writer."""

    key: str
    item: VideoItem
    video: DecodedVideo  # indices, timestamps and facts; its full-size frames already dropped
    pixels: object  # [V*T, 3, S, S] float32, normalised; None once encoded
    outs: list = field(default_factory=list)  # encoded row blocks (host arrays per output), in order
    rows: int = 0  # V*T: the encoder's rows that are this video's
    u8: object = None  # [V*T, 3, S, S] uint8 when the pixel cache is asked for


def _decoder_thread(yield_cpu: bool) -> None:
    """Set up a decode thread: one torch thread (the resize); a lower priority with ``yield_cpu``."""
    import torch

    torch.set_num_threads(1)
    if yield_cpu:
        lower_priority()


class Reader:
    """Decode and preprocess videos for an encoder whose preprocessing is ``preprocess``
    (open_clip's config: size, mean, std, interpolation; :mod:`cachekit.pixels` applies it)."""

    def __init__(self, cfg: ExtractConfig, preprocess: dict, pin_memory: bool = False):
        self.cfg, self.preprocess, self.pin_memory = cfg, preprocess, pin_memory

    def pool(self, plan: PipelinePlan) -> ThreadPoolExecutor:
        """The decode threads: ``plan.workers`` of them, yielding the CPU to the encoder as planned."""
        return ThreadPoolExecutor(max_workers=plan.workers, thread_name_prefix="decode",
                                  initializer=_decoder_thread, initargs=(plan.yield_cpu,))

    def frames(self, path: str, key: str, backend: Backend, fps: float | None = None):
        """Decode ``path``'s sampled frames -> (video, uint8 ``[V*T, 3, S, S]`` resized and
        centre-cropped). ``fps``: a frame folder's rate (images carry none)."""
        from ..pixels import resize_crop

        video = decode_video(path, self.cfg.sampler, key, backend)
        if video.backend == "frames" and fps:
            set_rate(video, fps)
        v, t = video.frames.shape[:2]
        u8 = resize_crop(video.frames.reshape(v * t, *video.frames.shape[2:]), self.preprocess).contiguous()
        video.frames = None  # the full-size frames are not needed any more: bounded memory
        return video, u8

    def normalize(self, u8):
        """uint8 ``[..., 3, S, S]`` -> the encoder's float32 input (pinned for a CUDA copy)."""
        from ..pixels import normalise_pixels

        pixels = normalise_pixels(u8, self.preprocess)
        return pixels.pin_memory() if self.pin_memory else pixels

    def pending(self, key: str, item: VideoItem, video: DecodedVideo, u8) -> Pending:
        """A decoded video ready for the encoder; its uint8 frames kept when the pixel cache is asked for."""
        return Pending(key, item, video, self.normalize(u8), u8=u8.numpy() if self.cfg.pixels else None)

    def read(self, item: VideoItem, key: str) -> Pending:
        """Decode and preprocess one input (a decode thread's work)."""
        video, u8 = self.frames(item.path, key, self.cfg.backend, self.cfg.fps)
        return self.pending(key, item, video, u8)
