"""The synthetic benchmark's probes (cachekit.probes) on a real compositional data set and store."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from cachekit.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")

OBJECTS = ("red square", "blue disc")
MOTIONS = ("moving {} from left to right", "moving {} from right to left", "moving {} up", "moving {} down")


@pytest.fixture(scope="module")
def comp_store(tmp_path_factory, tiny_cfg):
    """Two objects x four motions (one time-reversed pair each), 5 clips per class, extracted."""
    from cachekit.encoder import EncoderConfig
    from cachekit.extract import ExtractConfig, extract
    from cachekit.inputs import collect_inputs
    from cachekit.synth import SynthConfig, compose, synth_dataset
    from cachekit.video import SamplerConfig

    classes = tuple(compose(o, m.replace("{}", "something")) for o in OBJECTS for m in MOTIONS)
    cfg = SynthConfig(objects=OBJECTS, classes=classes, size=32, frames=6, videos_per_class=5,
                      splits=(0.5, 0.25, 0.25))
    root = tmp_path_factory.mktemp("probes")
    res = synth_dataset(root / "data", cfg)
    fsar = res.out_dir / "splits" / "clip_fsar"
    store = str(root / "store.zarr")
    extract(collect_inputs([str(fsar / f"{s}_few_shot.txt") for s in ("train", "val", "test")],
                           video_root=str(res.out_dir), class_names=str(fsar)), store,
            ExtractConfig(encoder=EncoderConfig(model=tiny_cfg, pretrained="random", device="cpu"),
                          sampler=SamplerConfig(frames=4), workers=1), progress=False)
    return res, store


def test_zeroshot_groups_pool_the_groups_by_their_videos(comp_store):
    from cachekit.evaluate import EvalConfig, evaluate
    from cachekit.probes import zeroshot_groups

    res, store = comp_store
    files = sorted((res.out_dir / "splits" / "groups").glob("object_*.txt"))
    assert len(files) == len(OBJECTS)
    got = zeroshot_groups(store, files, res.out_dir)
    parts = [evaluate(store, EvalConfig(protocol="zeroshot", method="zeroshot", split_file=str(f),
                                        video_root=str(res.out_dir))) for f in files]
    n = sum(r.videos for r in parts)
    assert got.videos == n == len(OBJECTS) * len(MOTIONS) * 5 and got.groups == len(files)
    assert got.accuracy == pytest.approx(sum(r.accuracy * r.videos for r in parts) / n)
    var = sum(r.videos * r.accuracy / 100 * (1 - r.accuracy / 100) for r in parts) / n**2
    assert got.ci95 == pytest.approx(196 * math.sqrt(var))
    assert got.chance == pytest.approx(100 / len(MOTIONS))  # each object's group: its 4 motions
    with pytest.raises(InputError):
        zeroshot_groups(store, [], res.out_dir)


def test_reversal_episodes_are_pairs_from_four_scenes_and_evaluate(comp_store, tmp_path):
    from cachekit.cache import FeatureCache
    from cachekit.episodes import episode_arrays, load_episodes
    from cachekit.evaluate import EvalConfig, evaluate
    from cachekit.probes import reversal_episodes

    res, store = comp_store
    pairs = json.loads((res.out_dir / "synth.json").read_text())["reversal_pairs"]
    assert len(pairs) == len(OBJECTS) * 2
    path = tmp_path / "pairs.json"
    assert reversal_episodes(store, pairs, 40, 0, path) == len(pairs)
    eps, meta = load_episodes(path)
    assert len(eps) == 40 and meta["ways"] == 2
    with FeatureCache(store) as cache:
        names, paths = cache.classes, cache.paths
    cls, sup, qry = episode_arrays(eps)
    pair_set = {tuple(p) for p in pairs}
    for c, s, q in zip(cls, sup, qry):
        assert (names[c[0]], names[c[1]]) in pair_set
        scenes = {int(re.search(r"_(\d+)\.mp4$", paths[v]).group(1)) for v in np.concatenate([s.ravel(), q.ravel()])}
        assert len(scenes) == 4  # no clip shares its scene (played backwards) with another
    assert {(names[c[0]], names[c[1]]) for c in cls} == pair_set  # cycles over every pair
    means = [evaluate(store, EvalConfig(protocol="episodic", method="proto", metric=m, episodes_file=str(path)))
             for m in ("mean", "otam")]
    assert all(r.episodes == 40 and r.ways == 2 for r in means)
    assert reversal_episodes(store, pairs, 40, 0, tmp_path / "again.json") and \
        (tmp_path / "again.json").read_bytes() == path.read_bytes()  # seeded
    with pytest.raises(InputError, match="no time-reversed pair"):
        reversal_episodes(store, [["not a class", "nor this"]], 4, 0, tmp_path / "none.json")
