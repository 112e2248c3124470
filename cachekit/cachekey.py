"""The cache key: what determines a store's cached values, and how two keys compare.

A store holds one key (``store.attrs["cache_key"]``). Extraction writes it (:mod:`cachekit.extract`);
runs and indexes record the key of the store they read and refuse another one
(:mod:`cachekit.runs`, :mod:`cachekit.index.build`). Keys that differ only in which optional arrays
exist (tokens, pixels, views) merge instead of refusing: the store is extended to their union.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from clipcache.stores import LAYOUT_VERSION, FeatureStore

from .errors import CacheKeyMismatch

if TYPE_CHECKING:
    from .encoder import FrozenCLIP
    from .video import SamplerConfig

EMB_DTYPE = "float32"
TOKEN_DTYPE = "float16"
#: store groups whose small per-video arrays a store that publishes (HDF5) packs into one column
#: per array name, which :class:`cachekit.cache.Cache` reads by column; given when a store is created
PACKED_GROUPS = ("videos",)

# Fields that may differ without changing a single cached value.
_KEY_IGNORED = ("open_clip", "torch", "weights", "layout_version")
# Fields that say which optional arrays exist: a store is extended to the union, never refused.
KEY_EXTENSIBLE = ("tokens_at", "pixels", "views")


def cache_key(enc: FrozenCLIP, sampler: SamplerConfig, tokens_at: tuple[int, ...],
              pixels: bool = False) -> dict:
    """Everything that determines the cached values: a store holds one key only.

    ``tokens_at`` and ``pixels`` say which optional arrays every video of the store has; they
    grow when a store is extended (:func:`merged_key`), the other fields never change.
    """
    return {
        **enc.key_fields(),
        "sampler": sampler.to_dict(),
        "frames": sampler.frames,
        "views": sampler.views,
        "tokens_at": list(tokens_at),
        "pixels": bool(pixels),
        "dtype": {"emb": EMB_DTYPE, "cls": EMB_DTYPE, "tokens": TOKEN_DTYPE},
        "layout_version": LAYOUT_VERSION,
    }


def key_sampler(key: dict, views: int | None = None) -> SamplerConfig:
    """The frame sampler a store's cache key records (``views``: another view count; views are
    extensible), for commands that extend the store as it was extracted."""
    from .video import SamplerConfig

    sampler = key.get("sampler") or {}
    return SamplerConfig(frames=int(key["frames"]), views=int(views if views is not None else key.get("views") or 1),
                         seed=int(sampler.get("seed", 0)))


def _comparable(key: dict, f: str):
    v = key.get(f)
    if f == "sampler" and isinstance(v, dict):  # its view count is extensible too
        return {k: x for k, x in v.items() if k != "views"}
    return v


def key_differences(have: dict, want: dict) -> list[str]:
    """Key fields that differ in a way that changes cached values (extensible fields aside)."""
    fields = sorted(set(have) | set(want))
    return [f for f in fields if f not in _KEY_IGNORED and f not in KEY_EXTENSIBLE
            and _comparable(have, f) != _comparable(want, f)]


def merged_key(have: dict, want: dict) -> dict:
    """The key of a store ``have`` extended with what ``want`` asks: the union of the arrays
    and the larger number of views (views are seeded per view, so the first ones never change)."""
    out = dict(have)
    out["tokens_at"] = sorted(set(have.get("tokens_at") or ()) | set(want.get("tokens_at") or ()))
    out["pixels"] = bool(have.get("pixels")) or bool(want.get("pixels"))
    views = max(int(have.get("views") or 1), int(want.get("views") or 1))
    out["views"] = views
    if isinstance(have.get("sampler"), dict):
        out["sampler"] = {**have["sampler"], "views": views}
    return out


def check_key(store: FeatureStore, key: dict) -> dict:
    """Refuse a store whose cached values were computed differently; return the key the store
    has once extended with the arrays ``key`` asks for."""
    have = store.attrs.get("cache_key", {})
    diff = key_differences(have, key)
    if diff:
        detail = "; ".join(f"{f}: store has {have.get(f)!r}, asked {key.get(f)!r}" if f != "model_cfg"
                           else "model_cfg differs" for f in diff)
        raise CacheKeyMismatch(
            f"store {store.path} was extracted with a different configuration ({detail}); "
            "use a new --store for this configuration"
        )
    return merged_key(have, key)


def video_array_names(key: dict) -> set[str]:
    """Arrays every video of a store with this key has."""
    names = {"emb", "cls", "frame_idx", "timestamps"} | {f"tokens_{b}" for b in key.get("tokens_at") or ()}
    if key.get("pixels"):
        names.add("pixels")
    return names


def text_key(name: str, templates: tuple[str, ...]) -> str:
    """The store key of a class's text embeddings: its name and the prompt templates filled in."""
    h = hashlib.sha256(name.encode())
    for t in templates:
        h.update(b"\0" + t.encode())
    return h.hexdigest()[:32]
