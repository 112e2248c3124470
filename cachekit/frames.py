"""Frame folders: a folder of image files is one video (as TSN, TSM, TRX and mmaction2 prepare
data sets: ``img_00001.jpg``, ``000001.jpg``, ``frame_0001.png``, ...).

Frames are the images in natural order (``2.jpg`` before ``10.jpg``); a folder that mixes naming
patterns (``img_%05d`` and ``%06d``) is refused, except TSN's optical-flow images beside its RGB
frames (``flow_x_*``, ``flow_y_*`` next to ``img_*``), which are left out. A folder's identity in
the store (:func:`folder_key`) is the sha256 of its images' bytes in that order, so a copy of the
frames elsewhere is the same video. Images carry no frame rate: a folder is a video at
:data:`DEFAULT_FPS` frames per second unless ``extract --fps`` says otherwise; only timestamps and
durations depend on it. Nothing here imports :mod:`cachekit.video`: it calls these functions.
"""

from __future__ import annotations

import hashlib
import os
import re
from functools import lru_cache

import numpy as np

from .errors import DecodeError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DEFAULT_FPS = 30.0
_NUMBERED = re.compile(r"^(?P<prefix>.*?)(?P<digits>\d+)(?P<ext>\.[A-Za-z]+)$")
_FLOW = ("flow_x_", "flow_y_", "x_", "y_")


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def is_frame_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding image files (one video as frames)."""
    try:
        with os.scandir(path) as it:
            return any(e.is_file() and is_image_name(e.name) for e in it)
    except (NotADirectoryError, FileNotFoundError, PermissionError):
        return False


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


@lru_cache(maxsize=4096)
def _listing(path: str, mtime_ns: int) -> tuple[str, ...]:
    names = [n for n in os.listdir(path) if is_image_name(n) and os.path.isfile(os.path.join(path, n))]
    groups: dict[tuple[str, str], list[str]] = {}
    for n in names:
        m = _NUMBERED.match(n)
        if m is None:
            raise DecodeError(f"{path}: image {n} has no frame number; a frame folder holds numbered images")
        groups.setdefault((m["prefix"], m["ext"].lower()), []).append(n)
    if len(groups) > 1 and any(p == "img_" for p, _ in groups):  # TSN: RGB img_* beside flow_x_* / flow_y_*
        groups = {k: v for k, v in groups.items() if k[0] == "img_" or k[0] not in _FLOW}
    if len(groups) > 1:
        pats = sorted(f"{p}N{e}" for p, e in groups)
        raise DecodeError(f"{path}: images of {len(groups)} naming patterns ({', '.join(pats[:3])}); a frame "
                          "folder holds one numbered sequence")
    (files,) = groups.values()
    widths = {len(_NUMBERED.match(n)["digits"]) for n in files}
    padded = any(_NUMBERED.match(n)["digits"].startswith("0") for n in files)
    if padded and len(widths) > 1:
        raise DecodeError(f"{path}: frame numbers padded to {len(widths)} widths ({', '.join(map(str, sorted(widths)))} "
                          "digits): two sequences mixed")
    return tuple(sorted(files, key=_natural))


def frame_files(path: str | os.PathLike) -> list[str]:
    """The frame images of a folder, in natural order (full paths); :class:`DecodeError` if none."""
    path = str(path)
    try:
        names = _listing(path, os.stat(path).st_mtime_ns)
    except OSError as err:
        raise DecodeError(f"{path}: cannot list its frames ({err.strerror})") from err
    if not names:
        raise DecodeError(f"{path}: holds no image files")
    return [os.path.join(path, n) for n in names]


def frame_count(path: str | os.PathLike) -> int:
    return len(frame_files(path))


def folder_key(path: str | os.PathLike) -> str:
    """sha256 over the images' bytes in frame order (each prefixed by its length): the folder's
    identity in the store, as a file's sha256 is a video file's."""
    h = hashlib.sha256(b"clipcache-frames\0")
    for f in frame_files(path):
        with open(f, "rb") as fh:
            data = fh.read()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def read_frames(path: str | os.PathLike, indices: np.ndarray) -> np.ndarray:
    """The frames at ``indices`` (any shape, 0-based) -> ``[*indices.shape, H, W, 3]`` uint8 RGB;
    each image is read once. Images of different sizes in one folder are refused."""
    from PIL import Image, UnidentifiedImageError

    files = frame_files(path)
    idx = np.asarray(indices, dtype=np.int64)
    uniq, inverse = np.unique(idx, return_inverse=True)
    if uniq.size and (uniq[0] < 0 or uniq[-1] >= len(files)):
        raise DecodeError(f"{path}: frame {int(uniq[-1])} asked for, the folder has {len(files)}")
    out = []
    for i in uniq.tolist():
        try:
            with Image.open(files[i]) as im:
                out.append(np.asarray(im.convert("RGB")))
        except (OSError, UnidentifiedImageError) as err:
            raise DecodeError(f"{files[i]}: cannot be read as an image ({str(err).splitlines()[0][:200]})") from err
    if len({a.shape for a in out}) > 1:
        raise DecodeError(f"{path}: its frames differ in size ({', '.join(sorted({str(a.shape[:2]) for a in out}))})")
    frames = np.stack(out) if out else np.zeros((0, 1, 1, 3), np.uint8)
    return frames[inverse.reshape(idx.shape)]


def set_rate(video, fps: float) -> None:
    """Give a decoded frame folder (a :class:`cachekit.video.DecodedVideo`) the rate ``fps``."""
    video.fps = float(fps)
    video.timestamps = video.indices / video.fps
    video.duration = video.n_frames / video.fps
