"""Where the toy CLIP's files are, and how a weights file says it holds the toy CLIP.

Light on purpose (no torch, no open_clip): :mod:`cachekit.encoder` reads it to resolve
``--pretrained toy``, and :mod:`cachekit.toy.pretrain` writes what it describes.

``CLIPCACHE_TOY_WEIGHTS``: a path that replaces the packaged weights file for ``--pretrained toy``
(a rebuilt copy kept elsewhere, or a test's own small pretraining run).
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

TOY_TAG = "toy"
TOY_WEIGHTS_ENV = "CLIPCACHE_TOY_WEIGHTS"
METADATA_KEY = "clipcache"  # safetensors metadata entry: JSON, {"toy": true, "pretrain": {...}}
_MAX_HEADER = 16 << 20  # a safetensors header larger than this is not one we wrote


def toy_model_config() -> Path:
    """Path of the toy CLIP's open_clip model config in the package."""
    return Path(str(resources.files("cachekit") / "data" / "toy-clip.json"))


def packaged_toy_weights() -> Path:
    """Path of the toy CLIP weights shipped in the package (float16 safetensors)."""
    return Path(str(resources.files("cachekit") / "data" / "toy-clip.safetensors"))


def toy_weights() -> Path:
    """The toy CLIP weights ``--pretrained toy`` loads: ``$CLIPCACHE_TOY_WEIGHTS`` when set, else
    the packaged file (:func:`packaged_toy_weights`)."""
    env = os.environ.get(TOY_WEIGHTS_ENV, "").strip()
    return Path(env) if env else packaged_toy_weights()


def toy_model_cfg() -> dict:
    """The toy CLIP's open_clip ``model_cfg`` (the JSON file's content)."""
    cfg = json.loads(toy_model_config().read_text())
    return cfg.get("model_cfg", cfg)


def safetensors_metadata(path: str | os.PathLike) -> dict | None:
    """The ``__metadata__`` of a safetensors file (read from its header alone), or None when
    ``path`` is not a readable safetensors file."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    try:
        with path.open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n <= _MAX_HEADER:
                return None
            header = json.loads(f.read(n))
    except (OSError, ValueError):
        return None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else None


def _toy_info(path: str | os.PathLike) -> dict | None:
    """The clipcache entry of a toy weights file's metadata (``{"toy": true, "pretrain": {...}}``), else None."""
    meta = safetensors_metadata(path) or {}
    try:
        info = json.loads(meta.get(METADATA_KEY, "{}"))
    except (TypeError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("toy") is True else None


def is_toy_weights_file(path: str | os.PathLike) -> bool:
    """Whether a weights file says (in its safetensors metadata, as :func:`cachekit.toy.pretrain.pretrain`
    writes it) that it holds the toy CLIP."""
    return _toy_info(path) is not None


def _pretrain_field(path: str | os.PathLike, key: str, default: str) -> str:
    pretrain = (_toy_info(path) or {}).get("pretrain")
    return str(pretrain.get(key, default)) if isinstance(pretrain, dict) else default


def toy_tower(path: str | os.PathLike) -> str:
    """The vision tower a toy weights file was pretrained with (:mod:`cachekit.toy.tower`; files
    written before towers were named hold the plain ``"vit"``)."""
    return _pretrain_field(path, "tower", "vit")


def toy_sizing(path: str | os.PathLike) -> str:
    """How the objects a toy weights file was pretrained on were sized per shape
    (:data:`cachekit.toy.scenes.SIZINGS`; files written before sizings were named: ``"radius"``)."""
    return _pretrain_field(path, "sizing", "radius")
