"""Read-only view of an extracted store: the arrays every trainer and evaluator reads.

Videos are indexed 0..V-1 in sorted content-key order; ``labels[i]`` is the class index of
video i in ``classes`` (sorted class names), or -1 when the video has no label.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from clipcache.stores import FeatureStore, open_store

from .caveat import encoder_caveat
from .encoder import ModelInfo
from .errors import InputError
from .splitdocs import read_splits


def extend_command(store: str, key: dict, tokens_at: tuple[int, ...] = (), pixels: bool = False) -> str:
    """``clipcache extract`` with the store's own options plus the arrays asked for: run on an
    existing store, it computes only those arrays for the videos it holds."""
    blocks = sorted(set(key.get("tokens_at") or ()) | set(tokens_at))
    parts = ["clipcache extract --store", shlex.quote(store)]
    if blocks:
        parts.append(f"--tokens-at {','.join(map(str, blocks))}")
    if pixels or key.get("pixels"):
        parts.append("--pixels")
    sampler = key.get("sampler") or {}
    parts += [f"--model {shlex.quote(str(key.get('model')))}",
              f"--pretrained {shlex.quote(str(key.get('weights')))}",
              f"--frames {key.get('frames')}", f"--views {key.get('views')}"]
    if "seed" in sampler:
        parts.append(f"--seed {sampler['seed']}")
    return " ".join(parts)


@dataclass(frozen=True)
class Split:
    """Videos a split file named: indices into the cache and how many it named but lacks."""

    name: str
    indices: np.ndarray  # [n] int64
    missing: int  # named in the split file but not (successfully) in the store
    listed: int | None = None  # a split read from a file at evaluation: how many videos it names
    absent: int = 0  # of those, neither on disk nor in the store


class FeatureCache:
    """Open a store read-only and expose its per-video arrays with named axes."""

    def __init__(self, path: str | os.PathLike | FeatureStore):
        self.owns_store = not isinstance(path, FeatureStore)  # opened here: may be re-opened (reopen)
        self.store = path if isinstance(path, FeatureStore) else open_store(path, "r")
        attrs = self.store.attrs
        self.key: dict = attrs.get("cache_key", {})
        self.model_info = ModelInfo(**{**attrs["model_info"], "grid": tuple(attrs["model_info"]["grid"])})
        # keys and the few record fields every reader needs, from the store's index: a store of a
        # million videos opens without a million records (records: on demand)
        self.video_keys: list[str] = self.store.keys("videos")

    @cached_property
    def records(self) -> dict[str, dict]:
        """Every video's commit record (costly on big stores: prefer the per-field lists)."""
        return self.store.records("videos")

    @cached_property
    def _pos(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.video_keys)}

    def close(self) -> None:
        self.store.close()

    def reopen(self) -> None:
        """Read the store again after it was extended (:mod:`cachekit.autoextend`): the same videos,
        their arrays and the key as they are now."""
        path = self.store.path
        self.store.close()
        self.store = open_store(path, "r")
        self.key = self.store.attrs.get("cache_key", {})
        self.video_keys = self.store.keys("videos")
        for name, value in vars(type(self)).items():  # every cached view of the old state
            if isinstance(value, cached_property):
                self.__dict__.pop(name, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self) -> int:
        return len(self.video_keys)

    # ----------------------------------------------------------------- labels
    @cached_property
    def paths(self) -> list[str]:
        return self.store.field("videos", "path", self.video_keys)

    @cached_property
    def _label_names(self) -> list[str | None]:
        return self.store.field("videos", "label", self.video_keys)

    @cached_property
    def classes(self) -> list[str]:
        return sorted({lb for lb in self._label_names if lb})

    @cached_property
    def labels(self) -> np.ndarray:
        idx = {c: i for i, c in enumerate(self.classes)}
        return np.array([idx.get(lb, -1) for lb in self._label_names], dtype=np.int64)

    @cached_property
    def class_ids(self) -> dict[str, str]:
        """class name -> the data set's own id of it (UCF101's ``ApplyEyeMakeup``, an SSv2 labels.json
        id), for the classes whose videos came from a data set's own files."""
        ids = self.store.field("videos", "class_id", self.video_keys)
        return {lb: c for lb, c in zip(self._label_names, ids) if lb and c}

    @property
    def frames(self) -> int:
        return int(self.key.get("frames", 0))

    @property
    def tokens_at(self) -> tuple[int, ...]:
        return tuple(self.key.get("tokens_at", ()))

    @property
    def has_pixels(self) -> bool:
        """Whether every video's resized, centre-cropped frames are cached (``extract --pixels``)."""
        return bool(self.key.get("pixels"))

    def extend_command(self, tokens_at: tuple[int, ...] = (), pixels: bool = False) -> str:
        """The one command that adds these arrays to this same store (only they are computed)."""
        return extend_command(str(self.store.path), self.key, tokens_at, pixels)

    def lacking(self, name: str, idx: np.ndarray | list[int] | None = None) -> np.ndarray:
        """Indices among ``idx`` (default: every video) of the videos without array ``name``."""
        idx = np.arange(len(self.video_keys)) if idx is None else np.asarray(idx, dtype=np.int64)
        shapes = self._shapes.get(name, [None] * len(self.video_keys))
        return np.array([i for i in idx.tolist() if shapes[i] is None], dtype=np.int64)

    @cached_property
    def _shapes(self) -> dict[str, list]:
        """Array name -> each video's shape of it (None where it lacks it), from the store's index."""
        return self.store.array_shapes("videos", self.video_keys)

    def missing_tokens_message(self, blocks: tuple[int, ...]) -> str:
        """One line: these token blocks are not cached, and the command that adds them."""
        return (f"tokens at block {','.join(map(str, blocks))} are not cached in {self.store.path} "
                f"(cached: {','.join(map(str, self.tokens_at)) or 'none'}); add them to this store with: "
                f"{self.extend_command(tokens_at=tuple(blocks))}")

    # ----------------------------------------------------------------- arrays
    def _column(self, name: str, idx: np.ndarray | None = None, dtype: type | None = None) -> np.ndarray:
        """Array ``name`` of every video (or of ``idx``), as cached or as ``dtype``."""
        if not self.video_keys:
            raise InputError(f"store {self.store.path} holds no extracted videos")
        keys = self.video_keys if idx is None else [self.video_keys[int(i)] for i in idx]
        a = self.store.read_column("videos", name, keys)
        return a if dtype is None else a.astype(dtype, copy=False)

    def emb(self, view: int | None = 0, idx: np.ndarray | None = None,
            dtype: type | None = np.float32) -> np.ndarray:
        """Per-frame projected embeddings: ``[V, T, D']`` for one view, ``[V, views, T, D']`` for all;
        only the videos ``idx`` (``[n, ...]``) when given: a big store never loads what is not read.
        ``dtype=None``: as cached (float16 by default: half the memory, and no float32 copy of a
        whole column; float16 -> float32 is exact, so converting later gives the same values)."""
        a = self._column("emb", idx, dtype)  # [V, views, T, D']
        return a if view is None else a[:, view]

    def cls(self, view: int | None = 0, idx: np.ndarray | None = None,
            dtype: type | None = np.float32) -> np.ndarray:
        """Class token before the projection: ``[V, T, W]`` (or ``[V, views, T, W]``); ``idx`` and
        ``dtype`` as for :meth:`emb`."""
        a = self._column("cls", idx, dtype)
        return a if view is None else a[:, view]

    def frame_indices(self, view: int | None = 0) -> np.ndarray:
        a = self._column("frame_idx")
        return a if view is None else a[:, view]

    def tokens(self, block: int, idx: np.ndarray | list[int], view: int | None = 0) -> np.ndarray:
        """Tokens entering ``block`` for videos ``idx``: ``[n, T, N+1, W]`` float16 (one view)."""
        if block not in self.tokens_at and self.lacking(f"tokens_{block}", idx).size:
            raise InputError(self.missing_tokens_message((block,)))
        keys = [self.video_keys[int(i)] for i in idx]
        a = self.store.read_column("videos", f"tokens_{block}", keys)  # [n, views, T, N+1, W]
        return a if view is None else a[:, view]

    def pixels(self, idx: np.ndarray | list[int], view: int | None = 0) -> np.ndarray:
        """Cached frames of videos ``idx``, resized and centre-cropped, before normalisation:
        ``[n, T, 3, S, S]`` uint8 for one view (``[n, views, T, 3, S, S]`` for ``view=None``)."""
        if not self.has_pixels:
            raise InputError(f"pixels are not cached in {self.store.path}; add them to this store with: "
                             f"{self.extend_command(pixels=True)}")
        keys = [self.video_keys[int(i)] for i in idx]
        a = self.store.read_column("videos", "pixels", keys)  # [n, views, T, 3, S, S] uint8
        return a if view is None else a[:, view]

    # ----------------------------------------------------------------- text
    def text_entries(self) -> dict[str, dict]:
        return self.store.records("text")

    def text(self, classes: list[str] | None = None, templates: list[str] | None = None) -> np.ndarray:
        """Class text embeddings ``[C, P, D']`` for ``classes`` (default: all), one template set."""
        out = [self.store.read("text", k, ["emb"])["emb"] for k, _ in self._text_choice(classes, templates)]
        if len({o.shape for o in out}) > 1:
            raise InputError("classes were cached with different template sets; pass templates=")
        return np.stack(out).astype(np.float32)  # [C, P, D']

    def text_templates(self, classes: list[str] | None = None) -> list[tuple[str, ...]]:
        """The template sets :meth:`text` reads for ``classes``, each once (what a result records)."""
        return list(dict.fromkeys(tuple(rec["templates"]) for _, rec in self._text_choice(classes, None)))

    def _text_choice(self, classes: list[str] | None, templates: list[str] | None) -> list[tuple[str, dict]]:
        """(text key, record) per class: the largest cached template set (or ``templates``)."""
        classes = self.classes if classes is None else classes
        by_name: dict[str, list[tuple[str, dict]]] = {}
        for k, rec in self.text_entries().items():
            by_name.setdefault(rec["name"], []).append((k, rec))
        out = []
        for c in classes:
            cands = by_name.get(c, [])
            if templates is not None:
                cands = [(k, r) for k, r in cands if r["templates"] == list(templates)]
            if not cands:
                raise InputError(f"no text embeddings for class {c!r} in {self.store.path}; re-run extract")
            out.append(max(cands, key=lambda kr: len(kr[1]["templates"])))
        return out

    # ----------------------------------------------------------------- splits
    def splits(self) -> dict[str, Split]:
        """Splits from the split files the store was extracted from (may be empty): every
        writer's documents merged (:mod:`cachekit.splitdocs`)."""
        merged = read_splits(self.store)
        out = {}
        for name, doc in merged.items():
            idx, missing = [], len(doc["missing"] - set(doc["videos"]))
            for _path, (vkey, _label) in sorted(doc["videos"].items()):
                if vkey is not None and vkey in self._pos:
                    idx.append(self._pos[vkey])
                else:
                    missing += 1
            out[name] = Split(name, np.array(sorted(set(idx)), dtype=np.int64), missing)
        return out

    def failed(self) -> dict[str, dict]:
        return self.store.json_items("failed")

    # ----------------------------------------------------------------- summary
    def info(self) -> dict:
        """What ``clipcache info --json`` prints."""
        arrays: dict[str, list[int]] = {}
        if self.video_keys:  # each array over the videos that have it (an extension under way: some lack it)
            for name, shapes in self.store.array_shapes("videos", self.video_keys).items():
                have = [s for s in shapes if s is not None]
                if have:
                    arrays[name] = [len(have), *have[0]]
        text = self.text_entries()
        if text:
            first = next(iter(text.values()))["arrays"]["emb"]["shape"]
            arrays["text"] = [len({r["name"] for r in text.values()}), *first]
        backends: dict[str, int] = {}
        for b in self.store.field("videos", "backend", self.video_keys):
            backends[b or "?"] = backends.get(b or "?", 0) + 1
        from .coverage import store_coverage

        return {
            "store": self.store.path,
            "coverage": store_coverage(self.store, self.video_keys),
            "videos": len(self.video_keys),
            "failed": len(self.failed()),
            "classes": len(self.classes),
            "class_ids": self.class_ids,
            "labelled": int((self.labels >= 0).sum()) if self.video_keys else 0,
            "splits": {n: {"videos": int(len(s.indices)), "missing": s.missing} for n, s in self.splits().items()},
            "decode_backends": backends,
            "cache_key": self.key,
            "encoder": encoder_caveat(self.key),  # random / toy weights say so (None: real CLIP)
            "model_info": self.model_info.to_dict(),
            "arrays": arrays,
        }
