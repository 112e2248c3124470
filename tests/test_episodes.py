"""Episode sampling, shot lists, splits and statistics (protocols.md §2, §3, §5)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cachekit.episodes import (
    EpisodeSampler,
    EpisodeSpec,
    accuracy_ci,
    allway_kshot,
    base_novel_split,
    episode_arrays,
    harmonic_mean,
    load_episodes,
    save_episodes,
)
from cachekit.errors import InputError, InputNotFound


def balanced(classes: int, per_class: int) -> np.ndarray:
    """Labels [classes * per_class], videos of a class contiguous."""
    return np.repeat(np.arange(classes), per_class)


def check_episode(e: EpisodeSpec, labels, pool, ways, shots, queries) -> None:
    pool_set = set(int(v) for v in pool)
    assert len(e.class_ids) == ways and len(set(e.class_ids)) == ways
    assert len(e.support) == ways and len(e.query) == ways
    seen: set[int] = set()
    for c, sup, qry in zip(e.class_ids, e.support, e.query):
        assert len(sup) == shots and len(qry) == queries
        vids = list(sup) + list(qry)
        assert len(set(vids)) == len(vids), "support and query overlap"
        assert set(vids) <= pool_set
        assert all(labels[v] == c for v in vids)
        assert not (seen & set(vids))
        seen |= set(vids)


# --- EpisodeSampler --------------------------------------------------------------------------


def test_same_seed_same_episodes():
    labels = balanced(10, 8)
    pool = np.arange(labels.size)
    a = EpisodeSampler(labels, pool, 5, 1, 1, seed=3).sample(50)
    b = EpisodeSampler(labels, pool, 5, 1, 1, seed=3).sample(50)
    assert a == b


def test_different_seed_different_episodes():
    labels = balanced(10, 8)
    pool = np.arange(labels.size)
    a = EpisodeSampler(labels, pool, 5, 1, 1, seed=0).sample(20)
    b = EpisodeSampler(labels, pool, 5, 1, 1, seed=1).sample(20)
    assert a != b
    # not merely a permutation of the same episodes
    assert sum(x == y for x, y in zip(a, b)) < 3


def test_prefix_property_and_stream():
    labels = balanced(12, 10)
    s = EpisodeSampler(labels, np.arange(labels.size), 5, 5, 2, seed=7)
    long = s.sample(30)
    assert s.sample(10) == long[:10]
    assert s.sample(0) == []
    assert s.episode(17) == long[17]
    stream = s.stream(start=25)
    assert [next(stream) for _ in range(5)] == long[25:30]
    it = iter(s)
    assert [next(it) for _ in range(3)] == long[:3]


def test_pool_order_does_not_matter():
    labels = balanced(8, 6)
    pool = np.arange(labels.size)
    a = EpisodeSampler(labels, pool, 3, 2, 1, seed=5).sample(10)
    b = EpisodeSampler(labels, pool[::-1].copy(), 3, 2, 1, seed=5).sample(10)
    assert a == b


def test_episode_contents_from_pool_only():
    labels = balanced(20, 7)
    # the split holds only the odd classes
    pool = np.flatnonzero(labels % 2 == 1)
    s = EpisodeSampler(labels, pool, 5, 5, 1, seed=0)
    assert s.classes == tuple(range(1, 20, 2))
    for e in s.sample(40):
        check_episode(e, labels, pool, 5, 5, 1)
        assert all(c % 2 == 1 for c in e.class_ids)
    assert (e.ways, e.shots, e.queries) == (5, 5, 1)


def test_boolean_mask_pool_equals_index_pool():
    labels = balanced(6, 5)
    mask = labels < 4
    a = EpisodeSampler(labels, mask, 3, 1, 1, seed=2).sample(5)
    b = EpisodeSampler(labels, np.flatnonzero(mask), 3, 1, 1, seed=2).sample(5)
    assert a == b


def test_zero_shot_episodes_have_no_support():
    labels = balanced(6, 3)
    e = EpisodeSampler(labels, np.arange(labels.size), 5, 0, 1).episode(0)
    assert e.support == ((),) * 5 and e.shots == 0
    assert all(len(q) == 1 for q in e.query)


def test_too_few_classes_message_names_counts():
    # 3 classes with 2, 3 and 4 videos
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])
    with pytest.raises(InputError) as info:
        EpisodeSampler(labels, np.arange(labels.size), 5, 5, 1, split_name="test")
    msg = str(info.value)
    assert "\n" not in msg
    assert "5-way 5-shot with 1 query needs 5 classes with >= 6 videos" in msg
    assert "split 'test' has 3 classes, 2-4 videos per class" in msg


def test_too_few_classes_plural_queries_and_empty_pool():
    labels = balanced(4, 10)
    with pytest.raises(InputError, match=r"5-way 1-shot with 3 queries needs 5 classes with >= 4 "
                                         r"videos; the pool has 4 classes, 10 videos per class"):
        EpisodeSampler(labels, np.arange(labels.size), 5, 1, 3)
    with pytest.raises(InputError, match="split 'val' has no videos"):
        EpisodeSampler(labels, np.array([], dtype=np.int64), 5, 1, 1, split_name="val")


def test_excluded_classes_reported():
    # classes 0..5 with 6 videos, class 6 with 2, class 7 with 5
    labels = np.concatenate([balanced(6, 6), [6, 6], [7] * 5])
    s = EpisodeSampler(labels, np.arange(labels.size), 5, 5, 1, split_name="test")
    assert s.excluded_classes == (6, 7)
    assert s.classes == (0, 1, 2, 3, 4, 5)
    assert s.class_counts[6] == 2 and s.class_counts[7] == 5
    assert len(s.notes) == 1 and "6 (2)" in s.notes[0] and "7 (5)" in s.notes[0]
    for e in s.sample(30):
        assert not set(e.class_ids) & {6, 7}
    assert s.meta["excluded_classes"] == [6, 7]
    full = EpisodeSampler(balanced(5, 6), np.arange(30), 5, 5, 1)
    assert full.excluded_classes == () and full.notes == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(ways=0), "ways must be an integer >= 1"),
        (dict(shots=-1), "shots must be an integer >= 0"),
        (dict(queries=0), "queries must be an integer >= 1"),
        (dict(seed=-3), "seed must be an integer >= 0"),
        (dict(pool=np.array([0, 99])), "outside 0..19"),
        (dict(pool=np.array([0, 1, 1])), "more than once"),
        (dict(labels=np.zeros((4, 5), dtype=int)), "1-D integer array"),
        (dict(labels=np.zeros(20)), "1-D integer array"),
    ],
)
def test_bad_arguments_raise_input_error(kwargs, match):
    args = dict(labels=balanced(4, 5), pool=np.arange(20), ways=2, shots=1, queries=1, seed=0)
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        EpisodeSampler(**args)


def test_sampler_meta():
    s = EpisodeSampler(balanced(6, 4), np.arange(24), 5, 1, 1, seed=9, split_name="test")
    assert s.meta["seed"] == 9 and s.meta["split"] == "test" and s.meta["pool_size"] == 24
    assert (s.meta["ways"], s.meta["shots"], s.meta["queries"]) == (5, 1, 1)


def test_class_choice_roughly_uniform():
    labels = balanced(10, 4)
    eps = EpisodeSampler(labels, np.arange(40), 5, 1, 1, seed=0).sample(2000)
    counts = np.bincount(np.array([e.class_ids for e in eps]).ravel(), minlength=10)
    # each class expected in half of the episodes: 1000 +- a wide margin
    assert counts.min() > 900 and counts.max() < 1100


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    counts=st.lists(st.integers(0, 9), min_size=1, max_size=12),
    ways=st.integers(1, 6),
    shots=st.integers(0, 4),
    queries=st.integers(1, 3),
    seed=st.integers(0, 2**32),
    data=st.data(),
)
def test_property_random_labels(counts, ways, shots, queries, seed, data):
    labels = np.repeat(np.arange(len(counts)), counts)
    perm = np.random.default_rng(0).permutation(labels.size)
    labels = labels[perm]  # videos of a class scattered over the cache
    pool = np.flatnonzero(data.draw(st.lists(st.booleans(), min_size=labels.size,
                                             max_size=labels.size)) if labels.size else [])
    pool = pool.astype(np.int64)
    per_class = np.bincount(labels[pool], minlength=len(counts)) if pool.size else np.zeros(1)
    eligible = int((per_class >= shots + queries).sum())
    if eligible < ways:
        with pytest.raises(InputError, match=f"needs {ways} class"):
            EpisodeSampler(labels, pool, ways, shots, queries, seed=seed)
        return
    s = EpisodeSampler(labels, pool, ways, shots, queries, seed=seed)
    assert len(s.classes) == eligible
    eps = s.sample(4)
    for e in eps:
        check_episode(e, labels, pool, ways, shots, queries)
    assert s.sample(2) == eps[:2]
    c, sup, qry = episode_arrays(eps)
    assert c.shape == (4, ways) and sup.shape == (4, ways, shots) and qry.shape == (4, ways, queries)


# --- save / load / arrays --------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    s = EpisodeSampler(balanced(8, 7), np.arange(56), 5, 5, 1, seed=4, split_name="test")
    eps = s.sample(25)
    path = tmp_path / "episodes.json"
    save_episodes(path, eps, s.meta)
    loaded, meta = load_episodes(path)
    assert loaded == eps
    assert meta == s.meta
    text = path.read_text()
    assert "\n" not in text and ": " not in text  # compact
    assert json.loads(text)["count"] == 25


def test_save_accepts_numpy_meta(tmp_path):
    path = tmp_path / "e.json"
    save_episodes(path, [], {"seed": np.int64(3), "pool_size": np.int32(10)})
    eps, meta = load_episodes(path)
    assert eps == [] and meta == {"seed": 3, "pool_size": 10}


def test_load_errors(tmp_path):
    with pytest.raises(InputNotFound):
        load_episodes(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="invalid JSON"):
        load_episodes(bad)
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(InputError, match="not an episode file"):
        load_episodes(bad)
    bad.write_text(json.dumps({"format": "clipcache-episodes", "version": 1, "count": 1,
                               "class_ids": [[0, 1]], "support": [[[3]]], "query": [[[4]]]}))
    with pytest.raises(InputError, match="one support and one query list per class"):
        load_episodes(bad)


def test_episode_arrays_shapes_and_values():
    eps = EpisodeSampler(balanced(10, 9), np.arange(90), 5, 3, 2, seed=1).sample(7)
    c, sup, qry = episode_arrays(eps)
    assert c.shape == (7, 5) and sup.shape == (7, 5, 3) and qry.shape == (7, 5, 2)
    assert c.dtype == sup.dtype == qry.dtype == np.int64
    assert tuple(c[3]) == eps[3].class_ids
    assert tuple(sup[3, 2]) == eps[3].support[2] and tuple(qry[6, 4]) == eps[6].query[4]
    labels = balanced(10, 9)
    # every support / query video has the class of its row
    assert np.all(labels[sup] == c[:, :, None]) and np.all(labels[qry] == c[:, :, None])


def test_episode_arrays_empty_and_ragged():
    c, sup, qry = episode_arrays([])
    assert c.shape == (0, 0) and sup.shape == (0, 0, 0) and qry.shape == (0, 0, 0)
    a = EpisodeSampler(balanced(6, 6), np.arange(36), 5, 1, 1).episode(0)
    b = EpisodeSampler(balanced(6, 6), np.arange(36), 5, 5, 1).episode(0)
    with pytest.raises(InputError, match="episode 1 is not 5-way 1-shot"):
        episode_arrays([a, b])


# --- allway_kshot / base_novel_split -----------------------------------------------------------


def test_allway_kshot_exactly_k_per_class_and_deterministic():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, size=300)
    pool = np.arange(0, 300, 2)
    picked = allway_kshot(labels, pool, 4, seed=1)
    assert picked.dtype == np.int64 and np.all(np.diff(picked) > 0)
    assert set(picked) <= set(pool)
    assert np.array_equal(np.bincount(labels[picked]), np.full(7, 4))
    assert np.array_equal(picked, allway_kshot(labels, pool, 4, seed=1))
    assert not np.array_equal(picked, allway_kshot(labels, pool, 4, seed=2))


def test_allway_kshot_class_pick_independent_of_other_classes():
    labels = balanced(5, 20)
    full = allway_kshot(labels, np.arange(100), 3, seed=0)
    only_two = allway_kshot(labels, np.flatnonzero(labels >= 3), 3, seed=0)
    assert np.array_equal(full[labels[full] >= 3], only_two)


def test_allway_kshot_names_short_classes():
    labels = np.array([0] * 5 + [1] * 2 + [2] * 8 + [3] * 1)
    with pytest.raises(InputError) as info:
        allway_kshot(labels, np.arange(labels.size), 4, split_name="train")
    msg = str(info.value)
    assert "needs >= 4 videos in every class" in msg
    assert "split 'train' has 2 classes with fewer" in msg
    assert "1 (2 videos)" in msg and "3 (1 video)" in msg and "0 (" not in msg
    picked = allway_kshot(labels, np.arange(labels.size), 4, allow_fewer=True)
    assert np.array_equal(np.bincount(labels[picked]), [4, 2, 4, 1])


def test_base_novel_split():
    base, novel = base_novel_split(np.arange(51), seed=1)
    assert (base.size, novel.size) == (26, 25)
    assert np.array_equal(np.sort(np.concatenate([base, novel])), np.arange(51))
    b2, n2 = base_novel_split(np.arange(51)[::-1], seed=1)
    assert np.array_equal(base, b2) and np.array_equal(novel, n2)
    b3, _ = base_novel_split(np.arange(51), seed=2)
    assert not np.array_equal(base, b3)
    b4, n4 = base_novel_split([10, 20, 30, 40], n_base=1)
    assert b4.size == 1 and n4.size == 3
    with pytest.raises(InputError, match="more than once"):
        base_novel_split([1, 1, 2])
    with pytest.raises(InputError, match="n_base must be between 1 and 3"):
        base_novel_split([1, 2, 3, 4], n_base=4)


# --- statistics ---------------------------------------------------------------------------------


def test_accuracy_ci_hand_computed():
    # 5-way 1-query episodes: accuracies are multiples of 0.2
    acc = np.array([1.0, 0.8, 0.6, 0.8])
    mean = (1.0 + 0.8 + 0.6 + 0.8) / 4  # 0.8
    var = ((0.2) ** 2 + 0 + (0.2) ** 2 + 0) / 3
    half = 1.96 * math.sqrt(var) / math.sqrt(4)
    m, h = accuracy_ci(acc)
    assert m == pytest.approx(100 * mean) and h == pytest.approx(100 * half)
    assert h == pytest.approx(16.003333, abs=1e-5)  # 1.96 * 0.163299 / 2 * 100


def test_accuracy_ci_from_query_flags_and_edge_cases():
    flags = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], bool)
    assert accuracy_ci(flags) == pytest.approx(accuracy_ci([1.0, 0.8, 0.6, 0.8]))
    assert accuracy_ci([0.4]) == (pytest.approx(40.0), 0.0)
    assert accuracy_ci(np.ones(100)) == (100.0, 0.0)
    with pytest.raises(InputError, match="zero episodes"):
        accuracy_ci([])
    with pytest.raises(InputError, match="not percent"):
        accuracy_ci([80.0, 60.0])


def test_harmonic_mean():
    # EZ-CLIP UCF101 base-to-novel row: 94.4 / 77.9 -> 85.4
    assert harmonic_mean(94.4, 77.9) == pytest.approx(85.36, abs=0.01)
    assert harmonic_mean(50.0, 50.0) == 50.0
    assert harmonic_mean(0.0, 0.0) == 0.0
    with pytest.raises(InputError):
        harmonic_mean(-1.0, 5.0)


@pytest.mark.slow
def test_ten_thousand_test_episodes():
    labels = balanced(24, 100)
    s = EpisodeSampler(labels, np.arange(labels.size), 5, 5, 1, seed=0, split_name="test")
    c, sup, qry = episode_arrays(s.sample(10_000))
    assert c.shape == (10_000, 5) and sup.shape == (10_000, 5, 5) and qry.shape == (10_000, 5, 1)
    assert np.all(labels[sup] == c[:, :, None])


# ------------------------------------------------------------------------------------------
# sample(n) draws all episodes as arrays: exactly episode(0..n-1)'s draws


@pytest.mark.parametrize("seed, classes, per_class, ways, shots, queries", [
    (0, 100, 60, 5, 1, 1),  # the evaluation benchmark's shape
    (7, 64, 10, 5, 5, 1),
    (2**40 + 3, 30, 6, 5, 1, 5),  # a seed of two 32-bit words; K + Q = every video of a class
    (123, 5, 2, 5, 1, 1),  # W = C: every class, in a drawn order
    (1, 20, [3, 4, 5, 6] * 5, 5, 2, 1),  # uneven classes, some excluded
    (5, 12, 9, 1, 0, 3),  # one way, zero-shot
])
def test_sample_equals_drawing_episodes_one_by_one(seed, classes, per_class, ways, shots, queries):
    labels = np.repeat(np.arange(classes), per_class)
    rng = np.random.default_rng(seed % 1000)
    pool = rng.permutation(labels.size)  # pool order must not matter
    s = EpisodeSampler(labels, pool, ways, shots, queries, seed=seed)
    assert s.sample(700) == [s.episode(i) for i in range(700)]
    assert s.sample(5) == s.sample(700)[:5]


def test_array_draws_replay_numpy_and_flag_what_numpy_would_reject():
    """PCG64 seeded by SeedSequence((seed, i)), as NumPy draws it; Lemire's draw in [0, 2] rejects
    the 32-bit value 0 (so an episode that meets it is drawn one by one)."""
    from cachekit.episodes import _bounded, _pcg64_uint32

    index = np.arange(50)
    ours = _pcg64_uint32(11, index, 7)
    for i in (0, 1, 49):
        g = np.random.Generator(np.random.PCG64(np.random.SeedSequence((11, i))))
        assert ours[i].tolist() == g.integers(0, 2**32, size=7, dtype=np.uint64).tolist()
    val, rejected = _bounded(np.array([0, 1 << 31], np.uint64), np.array([2, 2]))
    assert rejected.tolist() == [True, False] and val.tolist() == [0, 1]
# --- the video-level interval (issue 23) --------------------------------------------------------
# The whole chain, as a benchmark run meets it: a population of videos (classes that differ in
# where they lie and how spread they are: class effects; each video its own offset from its class:
# video effects), a test set of 30 classes x 8 videos drawn from it, 1,000 5-way episodes drawn
# from the test set and classified by nearest prototype, the mean accuracy and its interval. The
# truth is the expected accuracy over re-drawn test sets and episodes (the test classes fixed):
# an episode with fresh videos from every class, averaged over 200,000 of them.
SIM_C, SIM_N, SIM_W, SIM_D = 30, 8, 5, 16


def _sim_population(seed: int = 7):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((SIM_C, SIM_D)), np.exp(rng.normal(0.0, 0.3, SIM_C))  # centres, spreads


def _sim_episodes(rng, n: int, shots: int, queries: int, n_classes: int = SIM_C, per_class: int = SIM_N):
    """classes [E, W], support [E, W, K], query [E, W, Q]: W distinct classes, K + Q distinct
    videos of each (video v of class c is c * per_class + i)."""
    cls = np.argsort(rng.random((n, n_classes)), axis=1)[:, :SIM_W]
    pick = np.argsort(rng.random((n, SIM_W, per_class)), axis=2)[:, :, :shots + queries]
    vids = cls[:, :, None] * per_class + pick
    return cls, vids[:, :, :shots], vids[:, :, shots:]


def _sim_correct(rng, emb, spread, cls, sup, qry, jitter: float) -> np.ndarray:
    """[E, W, Q] nearest-prototype correctness; ``jitter`` redraws part of a video each time it
    is used (all of it when the videos have no effects of their own)."""
    def look(v):
        return emb[v] + jitter * spread[v // SIM_N][..., None] * rng.standard_normal(v.shape + (SIM_D,))

    proto = look(sup).mean(axis=2)  # [E, W, D]
    dist = ((look(qry)[:, :, :, None, :] - proto[:, None, None, :, :]) ** 2).sum(-1)  # [E, W, Q, W]
    return (dist.argmin(-1) == np.arange(SIM_W)[None, :, None]).astype(np.float64)


def _sim_truth(centres, spread, shots: int, queries: int, sd: float, n: int = 200_000) -> float:
    rng = np.random.default_rng(123)
    hits = 0.0
    for _ in range(n // 20_000):
        cls = np.argsort(rng.random((20_000, SIM_C)), axis=1)[:, :SIM_W]

        def fresh(m):
            c = np.broadcast_to(cls[:, :, None], cls.shape + (m,))
            return centres[c] + sd * spread[c][..., None] * rng.standard_normal(c.shape + (SIM_D,))

        proto = fresh(shots).mean(axis=2)
        dist = ((fresh(queries)[:, :, :, None, :] - proto[:, None, None, :, :]) ** 2).sum(-1)
        hits += float((dist.argmin(-1) == np.arange(SIM_W)[None, :, None]).mean())
    return hits / (n // 20_000)


def _coverage(shots: int, video_sd: float, jitter: float, reps: int, episodes: int = 1000, seed: int = 1):
    from cachekit.episodes import video_ci

    centres, spread = _sim_population()
    truth = 100.0 * _sim_truth(centres, spread, shots, 1, math.hypot(video_sd, jitter))
    rng = np.random.default_rng(seed)
    hit, ep_hit = 0, 0
    for _ in range(reps):
        labels = np.repeat(np.arange(SIM_C), SIM_N)
        emb = centres[labels] + video_sd * spread[labels, None] * rng.standard_normal((SIM_C * SIM_N, SIM_D))
        cls, sup, qry = _sim_episodes(rng, episodes, shots, 1)
        correct = _sim_correct(rng, emb, spread, cls, sup, qry, jitter)
        acc, ep_half = accuracy_ci(correct.reshape(episodes, -1))
        hit += abs(acc - truth) <= video_ci(correct, cls, sup, qry)
        ep_hit += abs(acc - truth) <= ep_half
    return hit / reps, ep_hit / reps


@pytest.mark.slow
@pytest.mark.parametrize("shots", [1, 5])
@pytest.mark.parametrize("effects", ["video effects", "no video effects"])
def test_video_interval_covers_the_truth_95_percent_of_the_time(shots, effects):
    """30 classes x 8 videos, 1,000 5-way episodes with one query per class (the README's
    accuracy scale): between 92% and 98% of the intervals cover the truth, at 1-shot and 5-shot,
    with video effects (each video keeps its offset) and without (every use of a video is a fresh
    draw, so episodes are independent). The episode interval alone covers far less with video
    effects (printed)."""
    video_sd, jitter = (1.0, 0.2) if effects == "video effects" else (0.0, 1.0)
    cov, ep_cov = _coverage(shots, video_sd, jitter, reps=400)
    print(f"{shots}-shot, {effects}: coverage {cov:.3f} (episode interval alone {ep_cov:.3f})")
    assert 0.92 <= cov <= 0.98, (cov, ep_cov)
    if effects == "video effects":
        assert ep_cov < 0.75  # what the interval is for: the episode interval misses most of the spread


def test_video_interval_widens_when_the_same_episodes_come_from_fewer_videos():
    from cachekit.episodes import video_ci

    for seed in range(3):
        rng = np.random.default_rng(seed)
        widths = {}
        for per_class in (8, 400):
            easy = rng.random(SIM_C * per_class) < 0.5  # a video is easy (always right as a query) or hard
            cls, sup, qry = _sim_episodes(rng, 2000, 1, 1, per_class=per_class)
            correct = easy[qry].astype(np.float64)  # [E, W, Q]
            widths[per_class] = (video_ci(correct, cls, sup, qry), accuracy_ci(correct.reshape(2000, -1))[1])
        (few, ep_few), (many, ep_many) = widths[8], widths[400]
        assert few > 3 * many and few > 3 * ep_few
        assert many == pytest.approx(ep_many, rel=0.25)  # 400 videos a class: barely any re-use


def test_video_interval_without_re_used_videos_is_the_episode_interval():
    """Every video in one episode only: nothing is shared, the episodes are independent samples."""
    from cachekit.episodes import video_ci, video_variance

    rng = np.random.default_rng(0)
    e_n = 500
    cls = np.tile(np.arange(SIM_W), (e_n, 1))  # [E, W]: 5 classes, fresh videos every episode
    sup = (np.arange(e_n)[:, None, None] * SIM_W + np.arange(SIM_W)[None, :, None]) * 2  # [E, W, 1]
    qry = sup + 1
    correct = (rng.random((e_n, SIM_W, 1)) < 0.7).astype(np.float64)
    episode, video = video_variance(correct, cls, sup, qry)
    assert episode == pytest.approx((accuracy_ci(correct.reshape(e_n, -1))[1] / 196) ** 2)
    assert video <= 0.2 * episode  # no shared video: the video term is noise around 0, clamped
    assert video_ci(correct, cls, sup, qry) == pytest.approx(accuracy_ci(correct.reshape(e_n, -1))[1], rel=0.1)


def test_video_interval_of_query_only_episodes_and_bad_shapes():
    from cachekit.episodes import video_ci

    rng = np.random.default_rng(1)
    hard = rng.random(SIM_C * SIM_N) < 0.3
    cls, sup, qry = _sim_episodes(rng, 300, 0, 2)  # 5-way zero-shot episodes: queries only
    correct = (~hard[qry]).astype(np.float64)
    assert sup.shape == (300, SIM_W, 0)
    half = video_ci(correct, cls, sup, qry)
    assert half > 1.5 * accuracy_ci(correct.reshape(300, -1))[1]  # 240 hard-or-easy videos, re-used
    assert video_ci(correct.reshape(300, -1), cls, sup, qry) == half  # [E, W*Q] is the same
    with pytest.raises(InputError, match="episodes must be"):
        video_ci(correct, cls[:, :3], sup, qry)
    with pytest.raises(InputError, match="fractions"):
        video_ci(correct * 100, cls, sup, qry)


def test_sample_pauses_the_collector_and_restores_it():
    """sample() builds its tuples with Python's cyclic collector paused (a full collection over a
    torch-sized heap cost most of drawing 10,000 episodes) and leaves the collector as it found it."""
    import gc

    s = EpisodeSampler(np.repeat(np.arange(8), 4), np.arange(32), 3, 1, 1, seed=5)
    assert gc.isenabled()
    assert s.sample(50) == [s.episode(i) for i in range(50)]
    assert gc.isenabled()
    gc.disable()
    try:
        s.sample(5)
        assert not gc.isenabled()
    finally:
        gc.enable()
