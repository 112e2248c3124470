"""Protocols (cachekit.protocols): a run is scored on the split it was trained for, and nothing
from test or novel classes reaches training.

Stores are written directly, as cachekit.extract writes them (class c's frames point along e_c,
class text = e_c, mid-block tokens for EV-CLIP's context prompts), so each is built in
milliseconds. The first three tests reproduce the three leaks of issue 11; each fails on the
code before it (selection on the test list, a seeded split forgotten by eval, every class's text
in training).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from cachekit.cache import FeatureCache
from cachekit.errors import InputError
from cachekit.evaluate import EvalConfig, evaluate
from cachekit.extract import text_key
from cachekit.protocols import PROTOCOLS, get_protocol
from cachekit.protocols.plan import SplitPlan
from cachekit.train import TrainConfig, train
from clipcache.stores import open_store

T, D, W, BLOCK = 4, 16, 8, 1  # frames, embedding dim, token width, the cached block


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny heads: one thread (conftest)


def direction(c: int) -> np.ndarray:
    e = np.zeros(D, np.float32)
    e[c % D] = 1.0
    return e


def make_store(path, per_class: list[int], splits: dict[str, list[int]] | None = None, noise: float = 0.3,
               seed: int = 0) -> str:
    """Classes 'class 00'.. with ``per_class[c]`` videos each; ``splits`` {name: video positions}.
    Videos are committed in label order, so video i of the store is position i here."""
    rng = np.random.default_rng(seed)
    labels = [f"class {c:02d}" for c, n in enumerate(per_class) for _ in range(n)]
    key = {"model": "test-model", "frames": T, "views": 1, "tokens_at": [BLOCK],
           "sampler": {"frames": T, "views": 1}, "dtype": {"emb": "float32"}}
    info = {"embed_dim": D, "width": W, "layers": 2, "heads": 2, "grid": [2, 2], "image_size": 32, "text_width": 8}
    keys = [f"{i:064x}" for i in range(len(labels))]
    paths = [os.path.abspath(f"/videos/v{i:04d}.mp4") for i in range(len(labels))]
    with open_store(str(path), "a", attrs={"cache_key": key, "model_info": info}) as s:
        for i, lab in enumerate(labels):
            c = int(lab.split()[1])
            emb = direction(c)[None].repeat(T, 0) + noise * rng.standard_normal((T, D))
            s.commit("videos", keys[i], {
                "emb": emb[None].astype(np.float32), "cls": np.zeros((1, T, W), np.float32),
                "frame_idx": np.arange(T, dtype=np.int32)[None],
                "timestamps": np.arange(T, dtype=np.float32)[None] / 25,
                f"tokens_{BLOCK}": rng.standard_normal((1, T, 5, W)).astype(np.float16)},
                {"path": paths[i], "size": 1, "label": lab, "n_frames": T, "fps": 25.0, "duration": T / 25,
                 "backend": "test", "status": "ok"})
        for c in range(len(per_class)):
            name = f"class {c:02d}"
            s.commit("text", text_key(name, ("{}", "a video of {}")),
                     {"emb": np.repeat(direction(c)[None], 2, 0)}, {"name": name, "templates": ["{}", "a video of {}"]})
        for name, idx in (splits or {}).items():
            s.put_json("splits", name, {"videos": {paths[i]: [keys[i], labels[i]] for i in idx}, "missing": []})
        s.finalize()
    return str(path)


def of_classes(per_class: list[int], classes, part=slice(None)) -> list[int]:
    """Positions of the videos of ``classes`` (``part`` of each class's videos)."""
    out, start = [], 0
    for c, n in enumerate(per_class):
        if c in classes:
            out += list(range(start, start + n))[part]
        start += n
    return out


class ReadLog:
    """Wrap a real store so that every text embedding it reads is logged by class name."""

    def __init__(self, path: str):
        store = open_store(path, "r")
        names = {k: r["name"] for k, r in store.records("text").items()}
        log = self.classes = set()
        base = type(store)

        class Logged(base):
            def read(self, group, key, names_=None, **kw):
                if group == "text":
                    log.add(names[key])
                return base.read(self, group, key, names_, **kw)

            def read_column(self, group, name, keys, **kw):
                if group == "text":
                    log.update(names[k] for k in keys)
                return base.read_column(self, group, name, keys, **kw)

        store.__class__ = Logged
        self.store = store


def fast(protocol: str | None = None, **kw) -> TrainConfig:
    base = dict(protocol=protocol, ways=2, queries=1, episodes=2, val_episodes=2, epochs=1, batch_size=8, lr=1e-3,
                device="cpu")
    base.update(kw)
    return TrainConfig(**base)


METHOD = {"episodic": ("ma_fsar", {"ffn_dim": 16}), "allway": ("linear_probe", {}),
          "zeroshot": ("ev_clip", {"z_block": BLOCK}), "base2novel": ("ev_clip", {"z_block": BLOCK})}


# ------------------------------------------------------------------------------ the three leaks
def test_vifi_layout_selects_on_training_videos_never_on_the_test_list(tmp_path):
    """Leak 1: a store from train1_few_shot + val1.txt (the test list) has splits train and val."""
    per = [6] * 4
    train_idx = of_classes(per, range(4), slice(0, 4))
    val1 = of_classes(per, range(4), slice(4, 6))
    store = make_store(tmp_path / "s.h5", per, {"train": train_idx, "val": val1})
    run = tmp_path / "run"
    r = train(store, str(run), "linear_probe", None, fast("allway", epochs=2), progress=False)
    with FeatureCache(store) as cache:
        split = SplitPlan.load(run, cache)
        val1_keys = {cache.video_keys[i] for i in val1}
    assert split.keys["test"] == val1_keys  # val1 is the test list...
    assert split.keys["val"] and split.keys["val"].isdisjoint(val1_keys)  # ...and never selects
    assert split.keys["val"] <= {cache.video_keys[i] for i in train_idx}
    assert split.keys["train"].isdisjoint(split.keys["val"])
    assert any("never selects" in n for n in r.notes) and any("selection on a seeded 20%" in n for n in r.notes)
    res = evaluate(store, EvalConfig(run_dir=str(run)))
    assert res.videos == len(val1) and res.episodes == len(val1)
    assert any("the run's own test split" in n for n in res.notes)


def test_kshot_list_taking_every_training_video_trains_on_all_k(tmp_path):
    """ViFi-CLIP's train1_few_shot_K list with --shots K: no selection videos are taken out of the
    K shots (a 4-shot run trained on 3 before); a fixed epoch budget instead, said in a note."""
    per = [6] * 4
    train_idx = of_classes(per, range(4), slice(0, 4))
    store = make_store(tmp_path / "s.h5", per, {"train": train_idx, "val": of_classes(per, range(4), slice(4, 6))})
    run = tmp_path / "run"
    r = train(store, str(run), "linear_probe", None, fast("allway", epochs=2, shots=4), progress=False)
    with FeatureCache(store) as cache:
        split = SplitPlan.load(run, cache)
        assert split.keys["train"] == {cache.video_keys[i] for i in train_idx} and not split.keys["val"]
    assert any("no selection: the 4-shot list takes every video" in n for n in r.notes), r.notes
    assert evaluate(store, EvalConfig(run_dir=str(run))).shots == 4


def test_eval_run_scores_the_seeded_test_split_of_a_store_without_split_files(tmp_path):
    """Leak 2: train made a seeded class-disjoint split; eval --run must score its test classes only."""
    per = [4] * 6
    store = make_store(tmp_path / "s.h5", per)
    run = tmp_path / "run"
    train(store, str(run), "clip_fsar", None, fast("episodic"), progress=False)
    with FeatureCache(store) as cache:
        split = SplitPlan.load(run, cache)
    res = evaluate(store, EvalConfig(run_dir=str(run), ways=2, episodes=6))
    assert set(res.class_names) == set(split.class_names["test"]) and len(res.class_names) < 6
    assert set(res.class_names).isdisjoint(split.class_names["train"])
    # asking for the whole store is refused: it holds the run's training videos and classes
    with FeatureCache(store) as cache:
        listing = tmp_path / "all.txt"
        listing.write_text("".join(f"{p} 0\n" for p in cache.paths))
    with pytest.raises(InputError, match="training or selection videos of the run"):
        evaluate(store, EvalConfig(run_dir=str(run), split_file=str(listing), ways=2, episodes=4))


def test_allway_training_reads_and_binds_only_the_training_classes(tmp_path):
    """Leak 3: a base-to-novel store (train, base_val, novel_val); novel text never enters training."""
    per = [5] * 6
    base, novel = range(3), range(3, 6)
    store = make_store(tmp_path / "s.h5", per, {"train": of_classes(per, base, slice(0, 3)),
                                               "base_val": of_classes(per, base, slice(3, 5)),
                                               "novel_val": of_classes(per, novel)})
    log = ReadLog(store)
    r = train(log.store, str(tmp_path / "probe"), "linear_probe", None, fast("allway"), progress=False)
    assert r.trainable_params == 3 * (D + 1)  # a probe over the 3 base classes, not all 6
    assert log.classes <= {f"class {c:02d}" for c in base}
    # base-to-novel: EV-CLIP trains on base names and text only; novel names first appear at eval
    log = ReadLog(store)
    r = train(log.store, str(tmp_path / "ev"), "ev_clip", {"z_block": BLOCK}, fast("base2novel"), progress=False)
    assert r.protocol == "base2novel" and log.classes <= {f"class {c:02d}" for c in base}
    res = evaluate(store, EvalConfig(run_dir=str(tmp_path / "ev")))
    assert (res.extra["base_classes"], res.extra["novel_classes"]) == (3, 3)


# ------------------------------------------------------------------------------ the guard on the CLI
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("guard")
    per = [5] * 8
    names = list(range(8))
    store = make_store(root / "s.h5", per, {"train": of_classes(per, names[:4]), "val": of_classes(per, names[4:6]),
                                           "test": of_classes(per, names[6:])})
    run = root / "run"
    train(store, str(run), "clip_fsar", None, fast("episodic"), progress=False)
    return store, str(run)


def test_cli_refuses_an_evaluation_set_the_run_trained_on(trained):
    from helpers import invoke

    store, run = trained
    code, out, err = invoke(["eval", "--store", store, "--run", run, "--split", "train", "--ways", "2",
                             "--episodes", "4"])
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "training or selection videos of the run" in err and "--allow-overlap" in err
    code, out, err = invoke(["eval", "--store", store, "--run", run, "--split", "val", "--ways", "2",
                             "--episodes", "4"])
    assert code == 2 and "training or selection videos" in err
    code, out, err = invoke(["eval", "--store", store, "--run", run, "--split", "train", "--ways", "2",
                             "--episodes", "4", "--allow-overlap"])
    assert code == 0, err
    assert out.splitlines()[0].startswith("NOT A HELD-OUT RESULT (--allow-overlap): 20 of the 20 evaluated videos")
    code, out, err = invoke(["eval", "--store", store, "--run", run, "--ways", "2", "--episodes", "4", "--json"])
    assert code == 0, err
    r = json.loads(out)
    assert r["overlap"] is None and 4 <= r["videos"] <= 10 and r["classes"] == 2  # the distinct episode videos


def test_a_run_without_a_split_record_is_evaluated_only_with_allow_overlap(trained, tmp_path):
    import shutil

    from cachekit.errors import RunError

    store, run = trained
    old = tmp_path / "old-run"
    shutil.copytree(run, old)
    (old / "splits.json").unlink()  # a run trained before split records
    with pytest.raises(RunError, match="does not record the split"):
        evaluate(store, EvalConfig(run_dir=str(old), ways=2, episodes=4))
    r = evaluate(store, EvalConfig(run_dir=str(old), ways=2, episodes=4, allow_overlap=True))
    assert r.overlap and "not checked" in r.notes[0]


def test_eval_config_is_validated_in_one_line():
    for bad, match in (({"protocol": "episodic", "ways": 0}, "--ways"), ({"protocol": "nope"}, "unknown protocol"),
                       ({}, "protocol is required"), ({"protocol": "episodic", "shots": (1, 1)}, "twice"),
                       ({"protocol": "zeroshot", "shots": (1, 2)}, "does not apply"),
                       ({"run_dir": "r", "method": "proto"}, "not both")):
        with pytest.raises(InputError, match=match):
            EvalConfig(**bad)
    assert EvalConfig(protocol="episodic", shots=[1, 5]).shot_list == (1, 5)


def test_train_defaults_to_the_methods_natural_protocol_and_says_so(trained, tmp_path):
    from helpers import invoke

    store, _ = trained
    code, out, err = invoke(["train", "--method", "clip_fsar", "--store", store, "--out", tmp_path / "a",
                             "--ways", "2", "--queries", "1", "--episodes", "2", "--val-episodes", "2"])
    assert code == 0, err
    assert "complete, episodic protocol" in out and "protocol episodic: the natural protocol of clip_fsar" in out
    assert "split (store split files (test, train, val); recorded in splits.json)" in out
    # ev_clip on class-disjoint split files: zero-shot transfer
    code, out, err = invoke(["train", "--method", "ev_clip", "--store", store, "--out", tmp_path / "b",
                             "--opt", f"z_block={BLOCK}", "--epochs", "1"])
    assert code == 0, err
    assert "complete, zeroshot protocol" in out


# ------------------------------------------------------------------------------ the two report fixes
def test_a_run_on_a_two_shot_list_reports_two_shots(tmp_path):
    per = [6] * 3
    store = make_store(tmp_path / "s.h5", per, {"train": of_classes(per, range(3), slice(0, 2)),
                                               "val": of_classes(per, range(3), slice(2, 4)),
                                               "test": of_classes(per, range(3), slice(4, 6))})
    run = tmp_path / "run"
    train(store, str(run), "linear_probe", None, fast("allway"), progress=False)
    res = evaluate(store, EvalConfig(run_dir=str(run)))
    assert res.shots == 2 and res.videos == 6


def test_an_episode_file_is_described_by_its_own_split(tmp_path):
    per = [4] * 10
    store = make_store(tmp_path / "s.h5", per, {"val": of_classes(per, range(5)), "test": of_classes(per, range(5, 10))},
                       noise=0.05)
    first = evaluate(store, EvalConfig(protocol="episodic", episodes=10, out_dir=tmp_path / "a"))
    eps = tmp_path / "a" / "episodes.json"
    again = evaluate(store, EvalConfig(protocol="episodic", episodes_file=eps, split="test"))
    assert again.accuracy == first.accuracy
    assert any("episodes read from episodes.json (seed 0, split 'test')" in n for n in again.notes)
    assert not any("evaluated on split" in n for n in again.notes)
    with pytest.raises(InputError, match="not in split 'val'"):
        evaluate(store, EvalConfig(protocol="episodic", episodes_file=eps, split="val"))


def test_a_val_list_equal_to_the_test_list_falls_back_to_held_out_training_classes(tmp_path):
    """Issue 23: with split 'val' listing exactly the test videos, the fallback ran before the test
    videos left val; val then emptied and training stopped with a message about drawing episodes.
    Now the test videos leave val first, and selection uses training classes held out."""
    per = [4] * 10
    test = of_classes(per, range(7, 10))
    store = make_store(tmp_path / "s.h5", per, {"train": of_classes(per, range(7)), "val": test, "test": test})
    run = tmp_path / "run"
    r = train(store, str(run), "clip_fsar", None, fast("episodic", val_episodes=4), progress=False)
    assert r.status == "complete" and r.best_val_accuracy is not None
    record = json.loads((run / "splits.json").read_text())
    assert record["classes"]["test"] == [f"class {c:02d}" for c in range(7, 10)]
    assert record["classes"]["val"] and set(record["classes"]["val"]) <= {f"class {c:02d}" for c in range(7)}
    assert not set(record["classes"]["val"]) & set(record["classes"]["train"])
    notes = " | ".join(record["notes"])
    assert "12 of the 12 videos of split 'val' are also test videos" in notes and "held out" in notes


# ------------------------------------------------------------------------------ resume keeps its split
def add_videos(path, per_class: dict[int, int], start: int) -> None:
    """Commit ``per_class[c]`` more videos of class ``c`` (new classes too) to a make_store store,
    keys and paths numbered from ``start``: what an extract that grew the store leaves."""
    rng = np.random.default_rng(start)
    with open_store(str(path), "a") as s:
        i = start
        for c, n in per_class.items():
            name = f"class {c:02d}"
            for _ in range(n):
                s.commit("videos", f"{i:064x}", {
                    "emb": (direction(c)[None].repeat(T, 0) + 0.3 * rng.standard_normal((T, D)))[None].astype(np.float32),
                    "cls": np.zeros((1, T, W), np.float32), "frame_idx": np.arange(T, dtype=np.int32)[None],
                    "timestamps": np.arange(T, dtype=np.float32)[None] / 25,
                    f"tokens_{BLOCK}": rng.standard_normal((1, T, 5, W)).astype(np.float16)},
                    {"path": os.path.abspath(f"/videos/v{i:04d}.mp4"), "size": 1, "label": name, "n_frames": T,
                     "fps": 25.0, "duration": T / 25, "backend": "test", "status": "ok"})
                i += 1
            if not s.has("text", text_key(name, ("{}", "a video of {}"))):
                s.commit("text", text_key(name, ("{}", "a video of {}")), {"emb": np.repeat(direction(c)[None], 2, 0)},
                         {"name": name, "templates": ["{}", "a video of {}"]})
        s.finalize()


def test_resume_trains_on_the_recorded_split_after_videos_were_added(tmp_path):
    """Issue 23: `train --resume` re-planned the split of a store that had grown (a seeded split of
    its classes, now more of them), so the resumed run could train on a class its own splits.json
    lists as test. The record is the split: the resumed run ends where a straight run on the old
    store ends, bit for bit."""
    from safetensors.torch import load_file

    per = [4] * 8
    grown, same = make_store(tmp_path / "grown.h5", per), make_store(tmp_path / "same.h5", per)
    cfg = fast("episodic", episodes=8, val_episodes=4, val_every=2)
    run = tmp_path / "run"
    half = train(grown, str(run), "clip_fsar", None, cfg, progress=False, stop_after=4)
    assert half.status == "stopped"
    record = json.loads((run / "splits.json").read_text())
    first = json.loads((run / "run.json").read_text())["splits"]
    add_videos(grown, {c: 4 for c in range(8, 20)} | {0: 2}, start=len(per) * 4)
    with FeatureCache(grown) as cache:  # what re-planning the grown store gives: another split
        fresh = get_protocol("episodic").plan(cache, cfg).record(cache)
    assert fresh["classes"]["test"] != record["classes"]["test"]

    resumed = train(grown, str(run), "clip_fsar", None, cfg, resume=True, progress=False)
    assert resumed.status == "complete"
    assert json.loads((run / "splits.json").read_text()) == record
    assert json.loads((run / "run.json").read_text())["splits"] == first
    straight = train(same, str(tmp_path / "straight"), "clip_fsar", None, cfg, progress=False)
    a, b = load_file(str(run / "last.safetensors")), load_file(str(tmp_path / "straight" / "last.safetensors"))
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    assert [h["val_accuracy"] for h in resumed.history] == [h["val_accuracy"] for h in straight.history]


def test_resume_refuses_in_one_line_when_the_store_lost_a_recorded_video(tmp_path):
    from cachekit.errors import RunError
    from helpers import invoke

    per = [4] * 8
    store = make_store(tmp_path / "s.h5", per)
    fewer = make_store(tmp_path / "fewer.h5", per[:-1] + [3])  # the last class's last video is gone
    cfg = fast("episodic", episodes=8, val_episodes=4, val_every=2)
    train(store, str(tmp_path / "run"), "clip_fsar", None, cfg, progress=False, stop_after=2)
    with pytest.raises(RunError, match=r"no longer holds 1 of the \d+ \w+ videos its recorded split"):
        train(fewer, str(tmp_path / "run"), "clip_fsar", None, cfg, resume=True, progress=False)
    code, out, err = invoke(["train", "--method", "clip_fsar", "--store", fewer, "--out", tmp_path / "run",
                             "--protocol", "episodic", "--ways", "2", "--queries", "1", "--episodes", "8",
                             "--val-episodes", "4", "--val-every", "2", "--epochs", "1", "--batch-size", "8",
                             "--lr", "1e-3", "--device", "cpu", "--resume"])
    assert code == 2 and err.strip().startswith("error: cannot resume") and "no longer holds" in err
    assert len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------ the video-level interval
# (the estimator itself, and its coverage simulated through the whole chain: tests/test_episodes.py)
def test_episodic_reports_name_their_distinct_videos_and_classes(tmp_path):
    per = [3] * 5
    store = make_store(tmp_path / "s.h5", per, {"test": of_classes(per, range(5))}, noise=1.5)
    r = evaluate(store, EvalConfig(protocol="episodic", metric="mean", episodes=400))
    assert (r.videos, r.classes) == (15, 5)
    assert r.video_ci95 > r.ci95  # 400 episodes from 15 videos are far from 400 independent samples


# ------------------------------------------------------------------------------ property
LAYOUTS = ("none", "clipfsar", "vifi", "vifi_test", "b2n")


def _layout(kind: str, per: list[int], rng: np.random.Generator) -> dict[str, list[int]] | None:
    n = len(per)
    classes = rng.permutation(n).tolist()
    if kind == "none":
        return None
    if kind == "clipfsar":  # class-disjoint train / val / test
        a, b = max(2, n - 4), max(3, n - 2)
        return {"train": of_classes(per, classes[:a]), "val": of_classes(per, classes[a:b]),
                "test": of_classes(per, classes[b:])}
    if kind == "vifi":  # K-shot train list + val1 (the test list), every class in both
        return {"train": of_classes(per, range(n), slice(0, 2)), "val": of_classes(per, range(n), slice(2, None))}
    if kind == "vifi_test":  # train / val / test lists over the same classes, with a train/test overlap
        return {"train": of_classes(per, range(n), slice(0, 2)), "val": of_classes(per, range(n), slice(2, 3)),
                "test": of_classes(per, range(n), slice(1, None))}
    half = n // 2
    return {"train": of_classes(per, classes[:half], slice(0, 2)),
            "base_val": of_classes(per, classes[:half], slice(2, None)), "novel_val": of_classes(per, classes[half:])}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(n=st.integers(4, 7), per=st.integers(3, 5), kind=st.sampled_from(LAYOUTS),
       protocol=st.sampled_from(list(PROTOCOLS)), seed=st.integers(0, 3), select=st.booleans(),
       data=st.data())
def test_every_protocol_keeps_test_data_out_of_training(tmp_path_factory, n, per, kind, protocol, seed, select, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="layout seed"))
    counts = [per + int(x) for x in rng.integers(0, 2, n)]
    root = tmp_path_factory.mktemp("prop")
    store = make_store(root / "s.h5", counts, _layout(kind, counts, rng), seed=seed)
    cfg = fast(protocol, seed=seed, val_episodes=2 if select else 0)
    proto = get_protocol(protocol)
    with FeatureCache(store) as cache:
        try:
            plan = proto.plan(cache, cfg)
        except InputError:
            event(f"{protocol} refuses layout {kind}")
            return  # a layout this protocol cannot use is refused in one line, never trained on
        labels = cache.labels
    test = np.concatenate([plan.test, *plan.test_parts.values()])
    assert np.intersect1d(plan.train, test).size == 0
    assert np.intersect1d(plan.val, test).size == 0
    assert np.intersect1d(plan.train, plan.val).size == 0
    trained_c = set(labels[plan.train].tolist())
    held_c = set(labels[plan.test_parts.get("novel", plan.test)].tolist())
    if plan.class_disjoint:
        assert trained_c.isdisjoint(held_c) and set(labels[plan.val].tolist()).isdisjoint(held_c)
    if protocol in ("zeroshot", "base2novel"):
        assert plan.class_disjoint
    if protocol == "episodic" and kind in ("none", "clipfsar"):
        assert plan.class_disjoint
    # training reads the text of training and selection classes only, never another class's
    method, options = METHOD[protocol]
    log = ReadLog(store)
    try:
        r = train(log.store, str(root / "run"), method, options, cfg, progress=False)
    except InputError as err:
        event(f"{protocol} on {kind}: training refused ({str(err)[:40]})")
        return  # e.g. fewer selection classes than ways: refused before training
    event(f"{protocol} on {kind}: trained")
    known = {f"class {c:02d}" for c in trained_c | set(labels[plan.val].tolist())}
    assert log.classes <= known
    if plan.class_disjoint:
        assert log.classes.isdisjoint({f"class {c:02d}" for c in held_c})
    with FeatureCache(store) as cache:
        split = SplitPlan.load(r.run_dir, cache)
    assert split.keys["test"].isdisjoint(split.seen_keys)
