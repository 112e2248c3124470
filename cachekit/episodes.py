"""Episodes and shot lists: what a few-shot protocol evaluates on, drawn reproducibly.

- :class:`EpisodeSampler` draws episodic N-way K-shot tasks (protocols.md §2): W distinct classes,
  K support and Q query videos per class, support and query disjoint. Episode ``i`` comes from its
  own generator seeded with ``SeedSequence((seed, i))``, so it never depends on how many episodes
  are drawn, and a short run is a prefix of a long one.
- :func:`allway_kshot` draws the ViFi-CLIP-style training list: K videos of every class (§3).
- :func:`base_novel_split` halves a class set for base-to-novel when no split file defines it (§5).
- :func:`accuracy_ci` and :func:`harmonic_mean` are the reported statistics (§2.1, §5);
  :func:`video_ci` is the video-level interval beside the episode one (episodes share videos:
  the test videos re-drawn from their classes, and the episodes).

Video indices are positions in the cache's video arrays; ``labels[v]`` is video ``v``'s global
class id. Inside an episode, label ``i`` is ``class_ids[i]``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cachekit.errors import InputError, InputNotFound
from cachekit.ids import unique_ids
from clipcache.stores.base import atomic_write_bytes

EPISODES_FORMAT = "clipcache-episodes"
EPISODES_VERSION = 1


@dataclass(frozen=True)
class EpisodeSpec:
    """One N-way K-shot task; episode-local label ``i`` is the class ``class_ids[i]``."""

    class_ids: tuple[int, ...]  # [W] global class ids
    support: tuple[tuple[int, ...], ...]  # [W][K] video indices
    query: tuple[tuple[int, ...], ...]  # [W][Q] video indices

    @property
    def ways(self) -> int:
        return len(self.class_ids)

    @property
    def shots(self) -> int:
        return len(self.support[0]) if self.support else 0

    @property
    def queries(self) -> int:
        return len(self.query[0]) if self.query else 0


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def _where(split_name: str | None) -> str:
    return f"split '{split_name}'" if split_name is not None else "the pool"


def _check_count(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_labels_pool(labels: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return ``labels`` [V] int64 and ``pool`` [P] int64 (a bool mask becomes indices)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not (labels.size == 0 or np.issubdtype(labels.dtype, np.integer)):
        raise InputError(
            f"labels must be a 1-D integer array (one class id per video), got shape "
            f"{labels.shape} dtype {labels.dtype}"
        )
    labels = labels.astype(np.int64, copy=False)
    pool = np.asarray(pool)
    if pool.dtype == bool:
        if pool.shape != labels.shape:
            raise InputError(
                f"a boolean pool must have one entry per video ({labels.size}), got shape {pool.shape}"
            )
        pool = np.flatnonzero(pool)
    if pool.ndim != 1 or not (pool.size == 0 or np.issubdtype(pool.dtype, np.integer)):
        raise InputError(
            f"pool must be a 1-D array of video indices, got shape {pool.shape} dtype {pool.dtype}"
        )
    pool = pool.astype(np.int64, copy=False)
    if pool.size and (pool.min() < 0 or pool.max() >= labels.size):
        bad = pool[(pool < 0) | (pool >= labels.size)]
        raise InputError(
            f"pool has {bad.size} video indices outside 0..{labels.size - 1} "
            f"(first: {int(bad[0])})"
        )
    uniq = unique_ids(pool)
    if uniq.size != pool.size:
        raise InputError(f"pool lists {pool.size - uniq.size} video indices more than once")
    if pool.size and labels[pool].min() < 0:
        raise InputError(f"class ids must be >= 0, got {int(labels[pool].min())}")
    return labels, pool


def _videos_by_class(labels: np.ndarray, pool: np.ndarray) -> dict[int, np.ndarray]:
    """Class id -> the pool's videos of that class, ascending (so pool order does not matter)."""
    pool = np.sort(pool)
    pool_labels = labels[pool]
    order = np.argsort(pool_labels, kind="stable")
    classes, starts = np.unique(pool_labels[order], return_index=True)
    groups = np.split(pool[order], starts[1:])
    return {int(c): g for c, g in zip(classes, groups)}


class EpisodeSampler:
    """Seeded N-way K-shot episodes over a pool of videos; support and query disjoint per episode.

    Args:
        labels: [V] global class id of every video in the cache.
        pool: [P] indices of this split's videos (or a [V] boolean mask).
        ways, shots, queries: W, K, Q. ``shots=0`` gives query-only episodes (5-way zero-shot).
        seed: non-negative; episode ``i`` is drawn from ``SeedSequence((seed, i))``.
        split_name: used in messages only.

    Classes with fewer than ``shots + queries`` videos are never sampled; they are listed in
    :attr:`excluded_classes` (and :attr:`notes`). Raises :class:`InputError` when fewer than
    ``ways`` classes remain.
    """

    def __init__(
        self,
        labels: np.ndarray,
        pool: np.ndarray,
        ways: int,
        shots: int,
        queries: int,
        seed: int = 0,
        split_name: str | None = None,
    ) -> None:
        self.ways = _check_count("ways", ways, 1)
        self.shots = _check_count("shots", shots, 0)
        self.queries = _check_count("queries", queries, 1)
        self.seed = _check_count("seed", seed, 0)
        self.split_name = split_name
        labels, pool = _check_labels_pool(labels, pool)
        self.pool_size = int(pool.size)
        per_class = _videos_by_class(labels, pool)
        self.class_counts: dict[int, int] = {c: int(v.size) for c, v in per_class.items()}
        need = self.shots + self.queries
        self.classes: tuple[int, ...] = tuple(c for c, n in self.class_counts.items() if n >= need)
        self.excluded_classes: tuple[int, ...] = tuple(
            c for c, n in self.class_counts.items() if n < need
        )
        if len(self.classes) < self.ways:
            raise InputError(self._shortage_message())
        self._class_array = np.asarray(self.classes, dtype=np.int64)  # [C]
        self._videos = [per_class[c] for c in self.classes]  # C x [n_c]

    def _shortage_message(self) -> str:
        need = self.shots + self.queries
        head = (
            f"{self.ways}-way {self.shots}-shot with {_plural(self.queries, 'query', 'queries')} "
            f"needs {_plural(self.ways, 'class', 'classes')} with >= {need} videos; "
        )
        counts = list(self.class_counts.values())
        if not counts:
            return head + f"{_where(self.split_name)} has no videos"
        lo, hi = min(counts), max(counts)
        spread = f"{lo} videos" if lo == hi else f"{lo}-{hi} videos"
        return head + (
            f"{_where(self.split_name)} has {_plural(len(counts), 'class', 'classes')}, "
            f"{spread} per class ({len(self.classes)} with >= {need})"
        )

    @property
    def notes(self) -> list[str]:
        """Human-readable remarks for the report (empty when every class is used)."""
        if not self.excluded_classes:
            return []
        need = self.shots + self.queries
        shown = ", ".join(
            f"{c} ({self.class_counts[c]})" for c in self.excluded_classes[:10]
        )
        more = f" and {len(self.excluded_classes) - 10} more" if len(self.excluded_classes) > 10 else ""
        return [
            f"{_plural(len(self.excluded_classes), 'class', 'classes')} of {_where(self.split_name)} "
            f"with fewer than {need} videos never sampled: {shown}{more}"
        ]

    @property
    def meta(self) -> dict:
        """What :func:`save_episodes` should store beside the episodes."""
        return {
            "seed": self.seed,
            "ways": self.ways,
            "shots": self.shots,
            "queries": self.queries,
            "split": self.split_name,
            "pool_size": self.pool_size,
            "classes": list(self.classes),
            "excluded_classes": list(self.excluded_classes),
        }

    def episode(self, index: int) -> EpisodeSpec:
        """Episode number ``index`` (>= 0); the same for a given seed whatever else is drawn."""
        index = _check_count("episode index", index, 0)
        rng = np.random.default_rng(np.random.SeedSequence((self.seed, index)))
        picked = rng.choice(self._class_array.size, size=self.ways, replace=False)  # [W]
        need = self.shots + self.queries
        support, query = [], []
        for c in picked:
            videos = self._videos[c]
            chosen = videos[rng.choice(videos.size, size=need, replace=False)].tolist()  # [K + Q]
            support.append(tuple(chosen[: self.shots]))
            query.append(tuple(chosen[self.shots :]))
        return EpisodeSpec(
            class_ids=tuple(self._class_array[picked].tolist()),
            support=tuple(support),
            query=tuple(query),
        )

    def sample(self, n: int) -> list[EpisodeSpec]:
        """Episodes ``0..n-1``; ``sample(m)`` is a prefix of ``sample(n)`` for ``m <= n``.

        Equal to ``[episode(i) for i in range(n)]``, drawn for all episodes at once
        (:func:`_exact_draws`: NumPy's seeding, PCG64 and ``choice`` replayed on arrays)."""
        n = _check_count("number of episodes", n, 0)
        if n == 0:
            return []
        drawn = _exact_draws(self, n)
        if drawn is None:  # outside what the array replay covers (huge seeds, classes or indices)
            return [self.episode(i) for i in range(n)]
        picked, pos, redo = drawn  # [E, W], [E, W, K+Q], [E]
        videos = _padded_table(self._videos)[picked[:, :, None], pos]  # [E, W, K+Q]
        k = self.shots
        with _gc_paused():
            rows = [EpisodeSpec(tuple(c), tuple(map(tuple, sup)), tuple(map(tuple, qry)))
                    for c, sup, qry in zip(self._class_array[picked].tolist(), videos[:, :, :k].tolist(),
                                           videos[:, :, k:].tolist())]
        for i in np.flatnonzero(redo).tolist():
            rows[i] = self.episode(i)
        return rows

    def stream(self, start: int = 0) -> Iterator[EpisodeSpec]:
        """Endless episodes ``start, start+1, ...`` (training; resume by passing ``start``)."""
        i = _check_count("start", start, 0)
        while True:
            yield self.episode(i)
            i += 1

    def __iter__(self) -> Iterator[EpisodeSpec]:
        return self.stream(0)


# ------------------------------------------------------------------------------ exact array draws
# EpisodeSampler.episode(i) seeds a Generator with SeedSequence((seed, i)) and calls choice()
# W + 1 times: each call costs microseconds of Python, which made drawing 10,000 evaluation
# episodes take a second. The functions below replay exactly what NumPy does, for all episodes at
# once: SeedSequence's hash of (seed, i) (numpy/random/bit_generator.pyx), PCG64's seeding and
# XSL-RR output (numpy/random/src/pcg64), next_uint32 (low half of a 64-bit output, then the high
# half), Lemire's bounded draw (distributions.c), and choice(n, k, replace=False)
# (_generator.pyx; Floyd's algorithm, then a shuffle). A draw Lemire would reject (odds below 1e-7 per episode here) marks the
# episode, which is then drawn one by one; tests check the equality on many configurations.
_M32 = np.uint64(0xFFFFFFFF)
_SS_INIT_A, _SS_MULT_A, _SS_INIT_B, _SS_MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_SS_MIX_L, _SS_MIX_R = 0xCA01F9DD, 0x4973F715
_PCG_MULT = (2549297995355413924, 4865540595714422341)  # (high, low) 64-bit words


@contextlib.contextmanager
def _gc_paused():
    """Python's cyclic collector off while many small tuples are built (restored after): they
    hold no cycles, but building 10,000 episodes' ~120,000 tuples set off full collections over
    the whole heap, which in a process with torch loaded (~400,000 tracked objects) took 0.27 s
    of sample(10,000)'s wall time against 0.05 s without (benchmarks/eval.py's drawing row)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _padded_table(videos: list[np.ndarray]) -> np.ndarray:
    """Each class's videos in a row ``[C, max n]``, zero-padded."""
    table = np.zeros((len(videos), max(v.size for v in videos)), dtype=np.int64)
    for c, v in enumerate(videos):
        table[c, : v.size] = v
    return table


def _u32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.uint64) & _M32


def _seed_words(x: int) -> list[int]:
    """NumPy's ``_int_to_uint32_array``: little-endian 32-bit words (0 -> [0])."""
    words = [x & 0xFFFFFFFF]
    x >>= 32
    while x:
        words.append(x & 0xFFFFFFFF)
        x >>= 32
    return words


def _seed_pool(seed: int, index: np.ndarray) -> list[np.ndarray]:
    """The 4-word pool of ``SeedSequence((seed, i))`` for each ``i`` (all ``< 2**32``)."""
    entropy = [np.full(index.shape, w, np.uint64) for w in _seed_words(seed)] + [index.astype(np.uint64)]
    hc = _SS_INIT_A

    def hashmix(value):
        nonlocal hc
        value = _u32(value ^ np.uint64(hc))
        hc = (hc * _SS_MULT_A) & 0xFFFFFFFF
        value = _u32(value * np.uint64(hc))
        return value ^ (value >> np.uint64(16))

    def mix(x, y):
        r = _u32(np.uint64(_SS_MIX_L) * x - np.uint64(_SS_MIX_R) * y)  # wraps mod 2**64, then 2**32
        return r ^ (r >> np.uint64(16))

    zero = np.zeros(index.shape, np.uint64)
    pool = [hashmix(entropy[i] if i < len(entropy) else zero) for i in range(4)]
    for src in range(4):
        for dst in range(4):
            if src != dst:
                pool[dst] = mix(pool[dst], hashmix(pool[src]))
    return pool


def _mul128(ah, al, bh: int, bl: int):
    """(ah, al) * (bh, bl) mod 2**128 on uint64 word arrays."""
    a0, a1 = al & _M32, al >> np.uint64(32)
    b0, b1 = np.uint64(bl & 0xFFFFFFFF), np.uint64(bl >> 32)
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    mid = (p00 >> np.uint64(32)) + (p01 & _M32) + (p10 & _M32)
    lo = (p00 & _M32) | (mid << np.uint64(32))
    hi = p11 + (p01 >> np.uint64(32)) + (p10 >> np.uint64(32)) + (mid >> np.uint64(32))
    return hi + ah * np.uint64(bl) + al * np.uint64(bh), lo


def _add128(ah, al, bh, bl):
    lo = al + bl
    return ah + bh + (lo < al).astype(np.uint64), lo


def _pcg64_uint32(seed: int, index: np.ndarray, n32: int) -> np.ndarray:
    """The first ``n32`` ``next_uint32`` values of ``PCG64(SeedSequence((seed, i)))``: ``[E, n32]``."""
    pool = _seed_pool(seed, index)
    hc, words = _SS_INIT_B, []
    for k in range(8):  # generate_state(4, uint64): 8 words, cycling over the pool
        v = _u32(pool[k % 4] ^ np.uint64(hc))
        hc = (hc * _SS_MULT_B) & 0xFFFFFFFF
        v = _u32(v * np.uint64(hc))
        words.append(v ^ (v >> np.uint64(16)))
    seed64 = [words[2 * k] | (words[2 * k + 1] << np.uint64(32)) for k in range(4)]
    init_h, init_l, seq_h, seq_l = seed64  # state = seed[0]:seed[1], inc = seed[2]:seed[3] (high:low)
    inc_h = (seq_h << np.uint64(1)) | (seq_l >> np.uint64(63))
    inc_l = (seq_l << np.uint64(1)) | np.uint64(1)
    zero = np.zeros(index.shape, np.uint64)
    st_h, st_l = _add128(*_mul128(zero, zero, *_PCG_MULT), inc_h, inc_l)
    st_h, st_l = _add128(st_h, st_l, init_h, init_l)
    st_h, st_l = _add128(*_mul128(st_h, st_l, *_PCG_MULT), inc_h, inc_l)
    out = np.empty((index.size, 2 * ((n32 + 1) // 2)), np.uint64)
    for k in range(out.shape[1] // 2):
        st_h, st_l = _add128(*_mul128(st_h, st_l, *_PCG_MULT), inc_h, inc_l)
        x, rot = st_h ^ st_l, st_h >> np.uint64(58)
        r = (x >> rot) | (x << ((np.uint64(64) - rot) & np.uint64(63)))  # rotate right by rot
        out[:, 2 * k], out[:, 2 * k + 1] = r & _M32, r >> np.uint64(32)
    return out[:, :n32]


def _bounded(u: np.ndarray, top: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lemire's draw in ``[0, top]`` from 32-bit ``u`` -> (value, whether NumPy would reject u)."""
    excl = top.astype(np.uint64) + np.uint64(1)
    m = u * excl
    threshold = (np.uint64(0xFFFFFFFF) - top.astype(np.uint64)) % excl
    return (m >> np.uint64(32)).astype(np.int64), (m & _M32) < threshold


def _floyd_choice(stream: np.ndarray, at: np.ndarray, pop: np.ndarray, size: int):
    """``choice(pop, size, replace=False)`` per row (Floyd's sampling, then a shuffle of the
    ``size`` picks), reading its draws from ``stream[row, at[row]:]`` -> (chosen ``[R, size]``,
    the next unread position ``[R]``, rejected ``[R]``: a draw NumPy would have rejected). A
    bounded draw in ``[0, 0]`` reads nothing (NumPy returns 0 without drawing)."""
    ar = np.arange(pop.size)
    at = at.copy()
    out = np.empty((pop.size, size), np.int64)
    rejected = np.zeros(pop.size, bool)

    def draw(top):
        nonlocal rejected
        val, bad = _bounded(stream[ar, np.minimum(at, stream.shape[1] - 1)], top)
        live = top > 0
        rejected |= bad & live
        at[live] += 1
        return np.where(live, val, 0)

    for t in range(size):  # Floyd: j = pop - size + t; val in [0, j]; j itself if val was taken
        j = pop - size + t
        val = draw(j)
        taken = (out[:, :t] == val[:, None]).any(axis=1)
        out[:, t] = np.where(taken, j, val)
    for i in range(size - 1, 0, -1):  # Fisher-Yates over the picks
        k = draw(np.full(pop.size, i))
        a, b = out[ar, i].copy(), out[ar, k].copy()
        out[ar, i], out[ar, k] = b, a
    return out, at, rejected


def _exact_draws(s: "EpisodeSampler", n: int):
    """(picked class positions ``[E, W]``, video positions ``[E, W, K+Q]``, redo ``[E]``) of
    episodes ``0..n-1``, equal to :meth:`EpisodeSampler.episode`'s; None outside its cover."""
    counts = np.array([v.size for v in s._videos], dtype=np.int64)  # [C]
    c_n, w_n, need = counts.size, s.ways, s.shots + s.queries
    # choice() switches to Floyd's algorithm for populations over 10,000: not replayed here
    if n > 2 ** 32 or len(_seed_words(s.seed)) > 3 or c_n > 10_000 or counts.max() > 10_000:
        return None
    index = np.arange(n, dtype=np.int64)
    stream = _pcg64_uint32(s.seed, index, (2 * w_n - 1) + w_n * (2 * need - 1))  # [E, draws] (at most)
    picked, at, redo = _floyd_choice(stream, np.zeros(n, np.int64), np.full(n, c_n), w_n)  # [E, W]
    pos = np.empty((n, w_n, need), np.int64)
    for w in range(w_n):
        pos[:, w], at, bad = _floyd_choice(stream, at, counts[picked[:, w]], need)
        redo |= bad
    return picked, pos, redo


@dataclass(frozen=True)
class EpisodeIndex:
    """E episodes of one shape as index arrays (int64), class-major, ready to gather features.

    Episode-local label ``i`` of episode ``e`` is the class ``class_ids[e, i]``; support video
    ``support[e, i, k]`` is shot k of that class. ``*_views`` pick the cached view of each video
    (None: view 0).
    """

    class_ids: np.ndarray  # [E, W] global class ids
    support: np.ndarray  # [E, W, K] video indices
    query: np.ndarray  # [E, W, Q] video indices
    support_views: np.ndarray | None = None  # [E, W*K]
    query_views: np.ndarray | None = None  # [E, W*Q]

    def __len__(self) -> int:
        return int(self.class_ids.shape[0])

    @classmethod
    def of(cls, episodes: Sequence[EpisodeSpec]) -> "EpisodeIndex":
        """Episodes of one shape (view 0), e.g. a fixed validation set."""
        return cls(*episode_arrays(episodes))

    def specs(self) -> list[EpisodeSpec]:
        """The same episodes as :class:`EpisodeSpec` s (for the per-episode path)."""
        return [EpisodeSpec(class_ids=tuple(c.tolist()), support=tuple(map(tuple, s.tolist())),
                            query=tuple(map(tuple, q.tolist())))
                for c, s, q in zip(self.class_ids, self.support, self.query)]

    def __getitem__(self, sl: slice) -> "EpisodeIndex":
        """Episodes ``sl`` (a slice) of the batch."""
        pick = (lambda a: None if a is None else a[sl])
        return EpisodeIndex(self.class_ids[sl], self.support[sl], self.query[sl],
                            pick(self.support_views), pick(self.query_views))


class EpisodeBatcher:
    """The training episodes of each optimiser step, drawn together as index arrays.

    Step ``s`` holds ``episodes_per_step`` N-way K-shot episodes drawn from the generator
    ``SeedSequence((seed, 0xE915, s))``, all at once with array operations (no Python loop over
    episodes or classes): per episode, W distinct classes (uniform, in random order: label i is
    the i-th drawn), and per class K + Q distinct videos, the first K the shots. Classes and
    videos are the :class:`EpisodeSampler`'s (classes with fewer than K + Q videos are never
    drawn; same errors and notes). With ``views > 1`` each video's cached view is drawn too.
    A step's episodes depend only on (seed, step), so a resumed run draws what a straight one does.

    This replaces drawing episode ``i`` of the step from ``SeedSequence((seed, i))`` one by one
    (:meth:`EpisodeSampler.episode`, still used for fixed evaluation sets): the distribution is the
    same, the draws are not.
    """

    def __init__(self, labels: np.ndarray, pool: np.ndarray, ways: int, shots: int, queries: int,
                 episodes_per_step: int = 1, seed: int = 0, views: int = 1,
                 split_name: str | None = None) -> None:
        self.sampler = EpisodeSampler(labels, pool, ways, shots, queries, seed, split_name)
        self.episodes_per_step = _check_count("episodes_per_step", episodes_per_step, 1)
        self.views = _check_count("views", views, 1)
        s = self.sampler
        self._counts = np.array([v.size for v in s._videos], dtype=np.int64)  # [C]
        self._table = _padded_table(s._videos)  # [C, max n]
        self._pad = np.arange(self._table.shape[1])[None, None, :]  # [1, 1, max n]

    @property
    def notes(self) -> list[str]:
        return self.sampler.notes

    def sample(self, step: int, episodes: int | None = None) -> EpisodeIndex:
        """The episodes of optimiser step ``step`` (``episodes``: fewer, for a last partial step;
        episode e of a step is the same whatever the count)."""
        step = _check_count("step", step, 0)
        e_n = self.episodes_per_step if episodes is None else _check_count("episodes", episodes, 1)
        s = self.sampler
        w_n, k_n, need = s.ways, s.shots, s.shots + s.queries
        rng = np.random.default_rng(np.random.SeedSequence((s.seed, 0xE915, step)))
        # per episode: W classes = the W smallest of C uniform keys, in key order
        keys = rng.random((self.episodes_per_step, self._counts.size))[:e_n]  # [E, C]
        picked = np.argsort(keys, axis=1)[:, :w_n]  # [E, W] class positions
        # per class: K + Q videos = the smallest keys among its n videos (padding keys = 2 > any)
        vkeys = rng.random((self.episodes_per_step, w_n, self._table.shape[1]))[:e_n]  # [E, W, max n]
        vkeys = np.where(self._pad < self._counts[picked][:, :, None], vkeys, 2.0)
        if need < vkeys.shape[2]:
            part = np.argpartition(vkeys, need - 1, axis=2)[:, :, :need]  # [E, W, K+Q] unordered
            order = np.argsort(np.take_along_axis(vkeys, part, axis=2), axis=2)
            pos = np.take_along_axis(part, order, axis=2)  # [E, W, K+Q] by key
        else:
            pos = np.argsort(vkeys, axis=2)[:, :, :need]
        videos = self._table[picked[:, :, None], pos]  # [E, W, K+Q]
        views = None, None
        if self.views > 1:
            drawn = rng.integers(0, self.views, size=(self.episodes_per_step, w_n * need))[:e_n]
            views = drawn[:, : w_n * k_n], drawn[:, w_n * k_n:]  # [E, W*K], [E, W*Q]
        return EpisodeIndex(s._class_array[picked], videos[:, :, :k_n], videos[:, :, k_n:], *views)


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def save_episodes(path: str | os.PathLike, episodes: Sequence[EpisodeSpec], meta: dict) -> None:
    """Write ``episodes`` and ``meta`` (seed, ways, shots, queries, split, pool size) as compact JSON.

    Written to a temporary file and renamed, so a reader never sees half a file.
    """
    path = Path(path)
    doc = {
        "format": EPISODES_FORMAT,
        "version": EPISODES_VERSION,
        "meta": dict(meta),
        "count": len(episodes),
        "class_ids": [list(e.class_ids) for e in episodes],
        "support": [[list(s) for s in e.support] for e in episodes],
        "query": [[list(q) for q in e.query] for e in episodes],
    }
    try:
        text = json.dumps(doc, separators=(",", ":"), default=_json_default)
    except TypeError as err:
        raise InputError(f"episode meta cannot be written as JSON: {err}") from err
    atomic_write_bytes(path, text.encode("utf-8"))


def _as_int_tuple(x, what: str, path: Path) -> tuple[int, ...]:
    if not isinstance(x, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in x):
        raise InputError(f"{path}: {what} must be a list of integers")
    return tuple(x)


def load_episodes(path: str | os.PathLike) -> tuple[list[EpisodeSpec], dict]:
    """Read a file written by :func:`save_episodes`; returns ``(episodes, meta)``."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise InputNotFound(f"episode file not found: {path}") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not an episode file (invalid JSON: {err})") from err
    if not isinstance(doc, dict) or doc.get("format") != EPISODES_FORMAT:
        raise InputError(f"{path} is not an episode file (no '\"format\": \"{EPISODES_FORMAT}\"')")
    if doc.get("version") != EPISODES_VERSION:
        raise InputError(
            f"{path}: episode file version {doc.get('version')!r} is not supported "
            f"(this clipcache reads version {EPISODES_VERSION})"
        )
    cls, sup, qry = doc.get("class_ids"), doc.get("support"), doc.get("query")
    if not (isinstance(cls, list) and isinstance(sup, list) and isinstance(qry, list)) or not (
        len(cls) == len(sup) == len(qry) == doc.get("count")
    ):
        raise InputError(f"{path}: class_ids, support and query must be lists of 'count' episodes")
    episodes = []
    with _gc_paused():
        for i, (c, s, q) in enumerate(zip(cls, sup, qry)):
            c = _as_int_tuple(c, f"episode {i} class_ids", path)
            if not (isinstance(s, list) and isinstance(q, list) and len(s) == len(q) == len(c)):
                raise InputError(f"{path}: episode {i} needs one support and one query list per class")
            episodes.append(
                EpisodeSpec(
                    class_ids=c,
                    support=tuple(_as_int_tuple(x, f"episode {i} support", path) for x in s),
                    query=tuple(_as_int_tuple(x, f"episode {i} query", path) for x in q),
                )
            )
    meta = doc.get("meta")
    return episodes, (meta if isinstance(meta, dict) else {})


def episode_arrays(episodes: Sequence[EpisodeSpec]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack episodes of one shape into int64 arrays: class_ids [E, W], support [E, W, K], query [E, W, Q]."""
    if not episodes:
        return (
            np.zeros((0, 0), np.int64),
            np.zeros((0, 0, 0), np.int64),
            np.zeros((0, 0, 0), np.int64),
        )
    w, k, q = episodes[0].ways, episodes[0].shots, episodes[0].queries
    for i, e in enumerate(episodes):
        if (
            e.ways != w
            or len(e.support) != w
            or len(e.query) != w
            or any(len(s) != k for s in e.support)
            or any(len(x) != q for x in e.query)
        ):
            raise InputError(
                f"episode {i} is not {w}-way {k}-shot with {q} queries per class like episode 0; "
                f"episodes of different shapes cannot be stacked"
            )
    e_n = len(episodes)
    class_ids = np.array([e.class_ids for e in episodes], dtype=np.int64).reshape(e_n, w)  # [E, W]
    support = np.array([e.support for e in episodes], dtype=np.int64).reshape(e_n, w, k)  # [E, W, K]
    query = np.array([e.query for e in episodes], dtype=np.int64).reshape(e_n, w, q)  # [E, W, Q]
    return class_ids, support, query


def allway_kshot(
    labels: np.ndarray,
    pool: np.ndarray,
    shots: int,
    seed: int = 0,
    split_name: str | None = None,
    allow_fewer: bool = False,
) -> np.ndarray:
    """K training videos of every class in ``pool`` (ViFi-CLIP all-way K-shot, protocols.md §3).

    Each class draws from its own generator ``SeedSequence((seed, class_id))``, so a class's pick
    does not change when other classes are added or removed. Returns the chosen video indices,
    ascending, int64 [C*K]. Raises :class:`InputError` naming the classes with fewer than K videos,
    unless ``allow_fewer`` (then such a class contributes all its videos, as EV-CLIP does for rare
    EPIC-Kitchens verbs).
    """
    shots = _check_count("shots", shots, 1)
    seed = _check_count("seed", seed, 0)
    labels, pool = _check_labels_pool(labels, pool)
    per_class = _videos_by_class(labels, pool)
    if not per_class:
        raise InputError(f"{shots}-shot training list: {_where(split_name)} has no videos")
    short = {c: v.size for c, v in per_class.items() if v.size < shots}
    if short and not allow_fewer:
        listed = ", ".join(f"{c} ({_plural(n, 'video')})" for c, n in list(short.items())[:10])
        more = f" and {len(short) - 10} more" if len(short) > 10 else ""
        raise InputError(
            f"{shots}-shot training list needs >= {shots} videos in every class; "
            f"{_where(split_name)} has {_plural(len(short), 'class', 'classes')} with fewer "
            f"(class id (videos)): {listed}{more}"
        )
    chosen = []
    for c, videos in per_class.items():
        if videos.size <= shots:
            chosen.append(videos)
            continue
        rng = np.random.default_rng(np.random.SeedSequence((seed, c)))
        chosen.append(videos[rng.choice(videos.size, size=shots, replace=False)])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def base_novel_split(
    class_ids: Sequence[int] | np.ndarray, seed: int = 0, n_base: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split classes into (base, novel), each ascending int64.

    Base = the first ``n_base`` classes of a seeded permutation of the sorted ids (default
    ``ceil(C / 2)``, which gives 26/25 for HMDB51 and 51/50 for UCF101), novel = the rest. Only a
    fallback: the published splits put the most frequent classes in base (protocols.md §5).
    """
    seed = _check_count("seed", seed, 0)
    ids = np.asarray(class_ids)
    if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
        raise InputError(f"class_ids must be a 1-D integer array, got shape {ids.shape}")
    uniq = np.unique(ids.astype(np.int64))
    if uniq.size != ids.size:
        raise InputError(f"class_ids lists {ids.size - uniq.size} classes more than once")
    if uniq.size < 2:
        raise InputError(f"a base/novel split needs >= 2 classes, got {uniq.size}")
    if n_base is None:
        n_base = math.ceil(uniq.size / 2)
    if isinstance(n_base, bool) or not isinstance(n_base, (int, np.integer)) or not (
        1 <= n_base < uniq.size
    ):
        raise InputError(f"n_base must be between 1 and {uniq.size - 1}, got {n_base!r}")
    perm = np.random.default_rng(np.random.SeedSequence(seed)).permutation(uniq)  # [C]
    return np.sort(perm[:n_base]), np.sort(perm[n_base:])


def accuracy_ci(per_item_correct: np.ndarray) -> tuple[float, float]:
    """Mean accuracy and 95 % CI half-width ``1.96 * s / sqrt(n)``, both in percent.

    ``per_item_correct``: [E] per-episode accuracy as a fraction in [0, 1] (or 0/1 per test item),
    or [E, M] correct flags per query, averaged over M first. ``s`` is the sample std (ddof=1);
    the half-width is 0 when n == 1.
    """
    x = np.asarray(per_item_correct, dtype=np.float64)
    if x.ndim == 2:
        if x.shape[1] == 0:
            raise InputError("accuracy needs at least one query per episode")
        x = x.mean(axis=1)  # [E]
    if x.ndim != 1:
        raise InputError(f"per-item correctness must be [E] or [E, M], got shape {x.shape}")
    if x.size == 0:
        raise InputError("accuracy of zero episodes is undefined")
    if not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1:
        raise InputError(
            "per-item correctness must be fractions in [0, 1] (not percent), got values in "
            f"[{x.min():g}, {x.max():g}]"
        )
    mean = 100.0 * float(x.mean())
    half = 0.0 if x.size == 1 else 100.0 * 1.96 * float(x.std(ddof=1)) / math.sqrt(x.size)
    return mean, half


ROLE_TEST_Z = 1.0  # a support role's term joins the video term once it exceeds this many of its own SDs


@dataclass
class _Roles:
    """Per (episode, slot) contributions of one evaluation to each video's role means (see
    :func:`video_ci`). Slots: ``[E, W, K+Q]``, supports first; class index ``c`` of a block is
    ``blk[e, w]``; ``vid``: the slot's video (0..V-1), ``vcls``: each video's class index."""

    vid: np.ndarray  # [E, W, K+Q]
    vcls: np.ndarray  # [V]
    n: np.ndarray  # [C] distinct videos of each class in the episodes
    blk: np.ndarray  # [E, W]
    query: np.ndarray  # [E, W, K+Q] the slot's share of "as query" (A_v), zero on support slots
    own: np.ndarray  # [E, W, K+Q] share of "as support, its own class's queries" (B_v)
    other: np.ndarray  # [E, W, K+Q] share of "as support, the other classes' queries" (D_v)
    w_own: np.ndarray  # [C] share of all queries that are of class c
    w_other: np.ndarray  # [C] share of all queries in an episode holding class c, of another class
    shots: int


def _roles(correct: np.ndarray, classes: np.ndarray, support: np.ndarray, query: np.ndarray) -> _Roles:
    y = correct  # [E, W, Q]
    e_n, w, q = y.shape
    k = support.shape[2]
    slots = np.concatenate([support, query], axis=2)  # [E, W, K+Q]
    _, vid = np.unique(slots, return_inverse=True)
    vid = vid.reshape(slots.shape)
    uniq_c, blk = np.unique(classes, return_inverse=True)
    blk = blk.reshape(classes.shape)  # [E, W] class index of each block
    vcls = np.zeros(int(vid.max()) + 1, np.int64)
    vcls[vid] = blk[:, :, None]
    n = np.bincount(vcls, minlength=uniq_c.size).astype(np.float64)  # [C]
    blocks = np.bincount(blk.ravel(), minlength=uniq_c.size).astype(np.float64)  # [C] episodes holding c
    mean_c = np.bincount(blk.ravel(), weights=y.sum(axis=2).ravel(), minlength=uniq_c.size) / (blocks * q)
    r = y - mean_c[blk][:, :, None]  # [E, W, Q] correctness centred by the query's class
    own = r.sum(axis=2)  # [E, W]
    other = own.sum(axis=1, keepdims=True) - own  # [E, W]
    as_query = np.bincount(vid[:, :, k:].ravel(), minlength=vcls.size).astype(np.float64)  # [V]
    as_support = np.bincount(vid[:, :, :k].ravel(), minlength=vcls.size).astype(np.float64)  # [V]
    z_q, z_own, z_other = (np.zeros(slots.shape) for _ in range(3))
    z_q[:, :, k:] = r / as_query[vid[:, :, k:]]
    if k:
        sup = vid[:, :, :k]
        z_own[:, :, :k] = own[:, :, None] / (as_support[sup] * q)
        if w > 1:
            z_other[:, :, :k] = other[:, :, None] / (as_support[sup] * (w - 1) * q)
    return _Roles(vid, vcls, n, blk, z_q, z_own, z_other, blocks / (e_n * w), blocks * (w - 1) / (e_n * w), k)


def _video_term(roles: _Roles, c_query: np.ndarray, c_own: np.ndarray, c_other: np.ndarray) -> tuple[float, float]:
    """The video term for one projection ``g_v = sum_e z_ev`` (``z = c_query*query + c_own*own +
    c_other*other``, per-video coefficients [V]): each class's sum of squared centred ``g_v`` less
    the part that a single episode contributes to itself (the noise: episodes are independent
    given the test videos), times n/(n-1). Returns (term, a rough SD of it)."""
    vid, vcls, n, blk = roles.vid, roles.vcls, roles.n, roles.blk
    z = c_query[vid] * roles.query + c_own[vid] * roles.own + c_other[vid] * roles.other  # [E, W, K+Q]
    v_n, c_n = vcls.size, n.size
    g = np.bincount(vid.ravel(), weights=z.ravel(), minlength=v_n)  # [V]
    h = g - (np.bincount(vcls, weights=g, minlength=c_n) / np.maximum(n, 1))[vcls]  # [V] centred in its class
    m = z.sum(axis=2) / n[blk]  # [E, W] the block's share of its class mean
    zc = z - m[:, :, None]
    d_v = np.bincount(vid.ravel(), weights=(zc ** 2).ravel(), minlength=v_n)  # [V] own-episode part of h_v^2
    absent = (n[blk] - z.shape[2]) * m ** 2  # [E, W] the class's videos outside the block get -m each
    own_part = np.bincount(vcls, weights=d_v, minlength=c_n) + np.bincount(blk.ravel(), weights=absent.ravel(),
                                                                             minlength=c_n)  # [C]
    scale = np.where(n > 1, n / np.maximum(n - 1, 1), 0.0)  # [C] sample variance within a class
    term = float((scale * (np.bincount(vcls, weights=h ** 2, minlength=c_n) - own_part)).sum())
    signal = np.maximum(h ** 2 - d_v, 0.0)
    sd = float(np.sqrt((scale[vcls] ** 2 * (2 * d_v ** 2 + 4 * signal * d_v)).sum()))
    return term, sd


def video_variance(correct: np.ndarray, classes: np.ndarray, support: np.ndarray,
                   query: np.ndarray) -> tuple[float, float]:
    """(episode term, video term) of :func:`video_ci`'s variance, as fractions squared."""
    y = np.asarray(correct, dtype=np.float64)
    cls = np.asarray(classes, dtype=np.int64)
    sup = np.asarray(support, dtype=np.int64)
    qry = np.asarray(query, dtype=np.int64)
    if cls.ndim != 2 or qry.ndim != 3 or qry.shape[:2] != cls.shape or sup.shape[:2] != cls.shape:
        raise InputError(f"episodes must be classes [E, W], support [E, W, K] and query [E, W, Q], got "
                         f"{cls.shape}, {sup.shape}, {qry.shape}")
    e_n, w, q = qry.shape
    if e_n == 0:
        raise InputError("the interval of zero episodes is undefined")
    y = y.reshape(e_n, w, q)
    if not np.all(np.isfinite(y)) or y.min() < 0 or y.max() > 1:
        raise InputError("per-query correctness must be fractions in [0, 1]")
    episode = float(y.reshape(e_n, -1).mean(axis=1).var(ddof=1)) / e_n if e_n > 1 else 0.0
    roles = _roles(y, cls, sup, qry)
    n = roles.n[roles.vcls]  # [V] videos of each video's class
    k = roles.shots
    share_own = roles.w_own[roles.vcls] / n  # [V] weight of a video's query and own-support effects
    share_other = roles.w_other[roles.vcls] / n  # [V] ... of its effect on other classes' queries
    zero = np.zeros_like(n)
    if k == 0 or not np.any(n > k):  # query-only episodes (or supports that are every video): one role
        return episode, max(0.0, _video_term(roles, share_own, zero, zero)[0])
    # A video's role means are contaminated by its class's other videos filling the other slots
    # (with v a query, the supports come from the rest, whose centred effects sum to -beta_v):
    #   A_v = alpha_v - beta_v/(n-1),  B_v = -alpha_v/(n-1) + beta_v (n-K)/(K(n-1)),
    #   D_v = delta_v (n-K)/(K(n-1)); solved for alpha, beta, delta.
    safe = np.maximum(n - 1, 1)
    a12, a22 = -1.0 / safe, (n - k) / (k * safe)
    det = a22 - a12 ** 2
    ok = (n > k) & (det > 1e-9)
    det = np.where(ok, det, 1.0)
    alpha_a, alpha_b = np.where(ok, a22 / det, 1.0), np.where(ok, -a12 / det, 0.0)
    beta_a, beta_b = np.where(ok, -a12 / det, 0.0), np.where(ok, 1.0 / det, 0.0)
    delta_d = np.where(n > k, k * safe / np.maximum(n - k, 1e-9), 0.0)
    support_own, sd_own = _video_term(roles, share_own * beta_a, share_own * beta_b, zero)
    support_other, sd_other = _video_term(roles, zero, zero, share_other * delta_d)
    own = support_own > ROLE_TEST_Z * sd_own
    other = support_other > ROLE_TEST_Z * sd_other
    if own:
        c_query, c_own = share_own * (alpha_a + beta_a), share_own * (alpha_b + beta_b)
    else:
        c_query, c_own = share_own, zero
    term, _ = _video_term(roles, c_query, c_own, share_other * delta_d if other else zero)
    return episode, max(0.0, term)


def video_ci(correct: np.ndarray, classes: np.ndarray, support: np.ndarray, query: np.ndarray) -> float:
    """95 % half-width (percent) of the mean episode accuracy over re-draws of the test videos
    and of the episodes; the test classes are held fixed.

    ``correct`` [E, W, Q] (or [E, W*Q]): 0/1 per query; ``classes`` [E, W] the episodes' class ids;
    ``support`` [E, W, K] and ``query`` [E, W, Q] their videos. The episode interval ``1.96 s/√E``
    treats E episodes as independent, but E episodes drawn from a few hundred videos re-use each
    one many times, and a hard video lowers every episode it is in.

    Variance = ``s²/E`` (the episodes, given the test videos) + the video term: the variance of
    the mean over all episodes the test videos allow, as the videos are re-drawn from their
    classes. That mean depends on each video through its first-order (Hajek) projection
    ``g_v``: its effect as a query, as a support of its own class's queries, and as a support
    the other classes' queries are measured against, each estimated from the role means of the
    video (centred within its class, then freed of the slots its class's other videos fill).
    The video term is the within-class variance of ``g_v`` summed over videos; the part of
    each squared ``g_v`` that one episode contributes to itself is taken off, which makes it
    unbiased for independently drawn episodes. A support role whose term does not exceed its
    own SD (:data:`ROLE_TEST_Z`) is left out: with few queries per class the data cannot tell
    a support's effect from noise. Classes with one video add nothing. See README, Protocols.
    """
    episode, video = video_variance(correct, classes, support, query)
    return 100.0 * 1.96 * math.sqrt(episode + video)


def harmonic_mean(a: float, b: float) -> float:
    """``2ab / (a + b)`` (base/novel HM); 0 when both are 0."""
    if a < 0 or b < 0:
        raise InputError(f"harmonic mean needs non-negative accuracies, got {a} and {b}")
    return 0.0 if a + b == 0 else 2.0 * a * b / (a + b)


__all__ = [
    "EpisodeBatcher",
    "EpisodeIndex",
    "EpisodeSpec",
    "EpisodeSampler",
    "save_episodes",
    "load_episodes",
    "episode_arrays",
    "allway_kshot",
    "base_novel_split",
    "accuracy_ci",
    "video_ci",
    "video_variance",
    "harmonic_mean",
]
