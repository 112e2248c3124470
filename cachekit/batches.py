"""Assemble :class:`VideoBatch` and :class:`Episode` tensors from a cache, for what a method needs.

Small arrays (embeddings, class tokens, text) are loaded once into memory; mid-block tokens are
read per batch; pixels are read per batch from the pixel cache when the store has one
(``extract --pixels``), else decoded again from the videos' paths at the cached frame indices.
Both give the same normalised tensors: the cache holds exactly the resized, centre-cropped
uint8 frames that decoding produces before normalisation. Everything but pixels is assembled by
:meth:`cachekit.resident.ResidentFeatures.gather` (the one place that picks a video's cached
view), over host tables of every video with tokens streamed from the store.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .cache import FeatureCache
from .episodes import EpisodeSpec
from .errors import InputError
from .ids import unique_ids
from .methods.base import CacheNeeds, Episode, VideoBatch
from .resident import ResidentFeatures
from .video import decode_at


def method_data(cache: FeatureCache, method, device: str | torch.device = "cpu") -> "CacheData":
    """The :class:`CacheData` an evaluation of ``method`` reads; a method that reads pixels gets its
    own frozen encoder (``method.backbone.clip``) for their preprocessing."""
    encoder = method.backbone.clip if method.needs.pixels else None
    return CacheData(cache, method.needs, device, encoder=encoder)


class CacheData:
    """The tensors a method reads, on ``device``; ``view`` picks the cached view (None: random).

    ``text_classes``: read the text of these class ids only; the table keeps global row ids
    ``[C_all, P, D']`` and other classes' rows are NaN (never read from the store), so a method
    that touched one would turn its loss NaN. None: every class's text.
    ``videos``: read the features of these cache indices only (a training run's train and val
    videos: no test video's features are read, and asking for one is an error); ``rows [V]``
    maps a cache index to its row of the tables (-1: not read). None: every video.
    """

    def __init__(self, cache: FeatureCache, needs: CacheNeeds, device: str | torch.device = "cpu",
                 encoder=None, text_classes: np.ndarray | None = None, videos: np.ndarray | None = None):
        self.cache = cache
        self.needs = needs
        self.device = torch.device(device)
        self.encoder = encoder
        if needs.pixels and encoder is None:
            raise ValueError("a method that reads pixels needs the encoder (for its preprocessing)")
        # blocks no video has (a command extends the videos it reads: cachekit.autoextend); a video
        # read without a block another has is refused when read (FeatureCache.tokens)
        missing = [b for b in needs.tokens_at if b not in cache.tokens_at
                   and cache.lacking(f"tokens_{b}").size == len(cache)]
        if missing:  # one line naming the one command that adds them to this same store
            raise InputError(cache.missing_tokens_message(tuple(missing)))
        self.labels = torch.from_numpy(cache.labels)  # [V]
        loaded = None if videos is None else unique_ids(np.asarray(videos, dtype=np.int64))  # [R]
        rows = np.arange(len(cache), dtype=np.int64)
        if loaded is not None:
            rows = np.full(len(cache), -1, dtype=np.int64)
            rows[loaded] = np.arange(loaded.size)
        self.rows = torch.from_numpy(rows)  # [V] cache index -> row of emb / cls (-1: not read)
        read = needs.emb or needs.cls
        if read and loaded is not None and not loaded.size:
            raise InputError("no videos to read features from")
        # as cached (float16 by default), made float32 per gathered batch: a million-video store's
        # column stays 4 GB instead of a float32 copy of 8 GB beside it
        self.emb = (torch.from_numpy(cache.emb(view=None, idx=loaded, dtype=None))
                    if needs.emb else None)  # [R, views, T, D']
        self.cls = (torch.from_numpy(cache.cls(view=None, idx=loaded, dtype=None))
                    if needs.cls else None)  # [R, views, T, W]
        self.text = self._text(text_classes) if needs.text else None  # [C, P, D']
        self.cached_pixels = bool(needs.pixels and cache.has_pixels)
        self._frame_idx = (cache.frame_indices(view=None) if needs.pixels and not self.cached_pixels
                           else None)  # [V, views, T]
        self.views = int(cache.key.get("views", 1))
        # the one VideoBatch assembler (view picking included): every video's host tables, tokens
        # read from the store per batch, as a resident feature set that does not fit would do
        self._host = ResidentFeatures(device=self.device, rows=self.rows, labels=self.labels,
                                      views=self.views, resident=False, emb=self.emb, cls=self.cls, cache=cache,
                                      streamed_tokens=tuple(needs.tokens_at))

    def _text(self, classes: np.ndarray | None) -> torch.Tensor:
        cache = self.cache
        if classes is None:
            return torch.from_numpy(cache.text()).to(self.device)
        rows = torch.from_numpy(cache.text([cache.classes[int(c)] for c in classes]))  # [c, P, D']
        table = torch.full((len(cache.classes), *rows.shape[1:]), float("nan"))
        table[torch.from_numpy(np.asarray(classes, dtype=np.int64))] = rows
        return table.to(self.device)

    def _views(self, n: int, view: int | None, rng: np.random.Generator | None) -> np.ndarray:
        if view is not None or self.views == 1 or rng is None:
            return np.full(n, view or 0, dtype=np.int64)
        return rng.integers(0, self.views, size=n)

    def batch(self, idx: Sequence[int] | np.ndarray, view: int | None = 0,
              rng: np.random.Generator | None = None) -> VideoBatch:
        """Videos ``idx`` (cache indices) as one batch; ``view=None`` with ``rng`` draws views."""
        idx = np.asarray(idx, dtype=np.int64)
        unread = idx[self.rows.numpy()[idx] < 0] if self.emb is not None or self.cls is not None else idx[:0]
        if unread.size:
            raise ValueError(f"videos {unread[:5].tolist()} were not read "
                             "(CacheData(videos=...): this run reads its train and val videos only)")
        views = self._views(len(idx), view, rng)
        b = self._host.gather(torch.from_numpy(idx), torch.from_numpy(views))
        if self.needs.pixels:
            b.pixels = self._pixels(idx, views).to(self.device)
        return b

    def _pixels(self, idx: np.ndarray, views: np.ndarray) -> torch.Tensor:
        if self.cached_pixels:
            u8 = self.cache.pixels(idx, view=None)[np.arange(len(idx)), views]  # [B, T, 3, S, S] uint8
            return self.encoder.normalize(torch.from_numpy(np.ascontiguousarray(u8)))
        out = []
        for i, v in zip(idx.tolist(), views.tolist()):
            frames = decode_at(self.cache.paths[i], self._frame_idx[i, v])  # [T, H, W, 3]
            out.append(self.encoder.preprocess(frames))  # [T, 3, S, S]
        return torch.stack(out)  # [B, T, 3, S, S]

    def episode(self, spec: EpisodeSpec, view: int | None = 0,
                rng: np.random.Generator | None = None) -> Episode:
        """An episode's support and query batches, class-major, with episode-local labels."""
        ways = len(spec.class_ids)
        shots = len(spec.support[0])
        queries = len(spec.query[0])
        s_idx = [i for row in spec.support for i in row]
        q_idx = [i for row in spec.query for i in row]
        class_ids = torch.tensor(spec.class_ids, dtype=torch.long)
        text = self.text[class_ids.to(self.device)] if self.text is not None else None  # [W, P, D']
        return Episode(
            support=self.batch(s_idx, view, rng) if shots else VideoBatch(
                index=torch.empty(0, dtype=torch.long), labels=torch.empty(0, dtype=torch.long)),
            query=self.batch(q_idx, view, rng),
            support_labels=torch.arange(ways).repeat_interleave(shots).to(self.device),
            query_labels=torch.arange(ways).repeat_interleave(queries).to(self.device),
            class_ids=class_ids.to(self.device),
            text=text,
        )
