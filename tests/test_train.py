"""The trainer and run directories, and proof that the from-cache methods learn.

The proof store: six motion classes in three time-reversal pairs (clip i of "shrinking" is clip i
of "growing" played backwards, frame for frame), rendered as H.264 and extracted with the tiny
random-weight model. Random weights keep little more than global image statistics, so the motions
change the area or brightness of a large object; "left to right" / "right to left" (position only)
is the hard pair. Splits (ViFi-CLIP lists) hold out videos of every class: held-out episodes
test generalisation to new clips, and the reversal pairs test temporal order.

(cachekit.synth's benchmark is used for the end-to-end CLI test: its random textured backgrounds
and distractors swamp the tiny random encoder's features, so no method can learn it at this scale.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cachekit.errors import CacheKeyMismatch, InputError, RunError
from cachekit.train import TrainConfig, train

MOTIONS = ("left to right", "right to left", "growing", "shrinking", "brightening", "darkening")
PAIRS = (("growing", "shrinking"), ("brightening", "darkening"))  # order-only pairs random features see
FRAMES = 8
SIZE = 64


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny heads: one thread (conftest)


def motion_clip(motion: str, i: int) -> np.ndarray:
    """Clip ``i`` of a motion class: ``[T, SIZE, SIZE, 3]`` uint8; the reversed classes are the
    forward clips played backwards."""
    base = {"left to right": "slide", "right to left": "slide", "growing": "grow", "shrinking": "grow",
            "brightening": "fade", "darkening": "fade"}[motion]
    rng = np.random.default_rng([i, 7])
    bg, col = rng.uniform(70, 110), rng.uniform(180, 255, 3)
    cy, half = rng.uniform(0.35, 0.65), rng.uniform(0.18, 0.24)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    out = np.empty((FRAMES, SIZE, SIZE, 3), np.float32)
    for t in range(FRAMES):
        f = t / (FRAMES - 1)
        img = np.full((SIZE, SIZE, 3), bg, np.float32) + rng.normal(0, 4, (SIZE, SIZE, 1))
        if base == "slide":
            img[(abs(xx - (0.2 + 0.6 * f)) < half) & (abs(yy - cy) < half)] = col
        elif base == "grow":
            h = 0.06 + 0.34 * f
            img[(abs(xx - 0.5) < h) & (abs(yy - 0.5) < h)] = col
        else:
            img[(abs(xx - 0.5) < 0.3) & (abs(yy - cy) < 0.3)] = bg + (col - bg) * f
        out[t] = img
    out = np.clip(out, 0, 255).astype(np.uint8)
    return out[::-1].copy() if motion in ("right to left", "shrinking", "darkening") else out


@pytest.fixture(scope="module")
def motion_store(tmp_path_factory, tiny_cfg) -> str:
    """10 clips per class: 6 train, 2 val, 2 test (ViFi-CLIP split files); all 16 MA-FSAR templates."""
    from helpers import write_h264

    from cachekit.encoder import EncoderConfig
    from cachekit.extract import ExtractConfig, extract
    from cachekit.inputs import collect_inputs
    from cachekit.video import SamplerConfig

    d = tmp_path_factory.mktemp("motion")
    rows: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for c, motion in enumerate(MOTIONS):
        for i in range(10):
            rel = f"videos/{motion.replace(' ', '_')}_{i}.mp4"
            write_h264(d / rel, motion_clip(motion, i), fps=8)
            rows["val" if i % 5 == 1 else "test" if i % 5 == 3 else "train"].append(f"{rel} {c}")
    (d / "labels.csv").write_text("id,name\n" + "".join(f"{i},{m}\n" for i, m in enumerate(MOTIONS)))
    for split, lines in rows.items():
        (d / f"{split}.txt").write_text("\n".join(lines) + "\n")
    cfg = ExtractConfig(encoder=EncoderConfig(model=tiny_cfg, pretrained="random", device="cpu"),
                        sampler=SamplerConfig(frames=FRAMES), templates="ma_fsar16", workers=1, batch_size=64)
    inputs = collect_inputs([str(d / f"{s}.txt") for s in rows], class_names=str(d / "labels.csv"))
    store = str(d / "store.zarr")
    s = extract(inputs, store, cfg, progress=False)
    assert not s.failed and s.extracted == 60
    return store


def pair_accuracy(method, store: str, split: str = "test", episodes: int = 40) -> float:
    """Accuracy (%) of 2-way 1-shot episodes inside the reversal pairs, on ``split``'s videos."""
    from cachekit.batches import CacheData
    from cachekit.cache import FeatureCache
    from cachekit.episodes import EpisodeSampler

    with FeatureCache(store) as cache:
        data = CacheData(cache, method.needs)
        pool = cache.splits()[split].indices
        correct = []
        for a, b in PAIRS:
            ids = [cache.classes.index(a), cache.classes.index(b)]
            sampler = EpisodeSampler(cache.labels, pool[np.isin(cache.labels[pool], ids)], 2, 1, 1, seed=3)
            with torch.no_grad():
                for spec in sampler.sample(episodes):
                    ep = data.episode(spec)
                    correct.append(float((method.episode_logits(ep).argmax(-1) == ep.query_labels).float().mean()))
    return 100.0 * float(np.mean(correct))


QUICK = dict(ways=3, episodes=40, val_episodes=60, val_every=10, lr=1e-3)


def losses(result) -> list[float]:
    """Mean training loss of each validation interval (the step-0 entry has none)."""
    return [h["train_loss"] for h in result.history if h["train_loss"] is not None]


# ------------------------------------------------------------------ proof it learns
def test_ma_fsar_learns_and_separates_time_reversals(motion_store, tmp_path):
    from cachekit.runs import load_run

    r = train(motion_store, tmp_path / "run", "ma_fsar", {"alpha": 0.0, "ffn_dim": 256},
              TrainConfig(**QUICK), progress=False)
    assert r.status == "complete" and r.step == r.steps == 40
    assert losses(r)[-1] < 0.9 * losses(r)[0]
    untrained = r.history[0]
    assert untrained["step"] == 0 and untrained["val_accuracy"] < 55.0
    assert r.best_val_accuracy > 70.0  # 3-way, chance 33.3 %; held-out videos
    method, meta = load_run(r.run_dir)
    assert pair_accuracy(method, motion_store) >= 85.0  # chance 50 %: only order tells the pair apart
    assert meta["method"]["display_name"] == "MA-FSAR (TPCM only, frozen encoder)"


def test_mean_pooling_cannot_separate_time_reversals(motion_store, tmp_path):
    from cachekit.runs import load_run

    r = train(motion_store, tmp_path / "run", "ma_fsar", {"alpha": 0.0, "ffn_dim": 256, "metric": "mean"},
              TrainConfig(**QUICK), progress=False)
    assert losses(r)[-1] < losses(r)[0]
    method, _ = load_run(r.run_dir)
    assert pair_accuracy(method, motion_store) <= 65.0


def test_clip_fsar_learns(motion_store, tmp_path):
    r = train(motion_store, tmp_path / "run", "clip_fsar", {"ffn_dim": 256}, TrainConfig(**QUICK), progress=False)
    assert losses(r)[-1] < losses(r)[0]
    assert r.best_val_accuracy > 66.0


def test_linear_probe_learns_all_way(motion_store, tmp_path):
    cfg = TrainConfig(protocol="allway", epochs=20, batch_size=12, lr=1e-2, val_every=5)
    r = train(motion_store, tmp_path / "run", "linear_probe", {"init": "text"}, cfg, progress=False)
    assert r.trainable_params == 6 * (64 + 1)
    assert losses(r)[-1] < 0.7 * losses(r)[0]
    assert r.history[0]["val_accuracy"] < 25.0  # random text: the untrained probe is at chance
    assert r.best_val_accuracy >= 33.3  # 6 classes, chance 16.7 %; mean pooling merges each pair
    meta = json.loads((Path(r.run_dir) / "run.json").read_text())
    assert meta["splits"]["val"] == {"videos": 12, "classes": 6}


# ------------------------------------------------------------------ resume and run directories
def test_resume_reaches_the_same_weights(motion_store, tmp_path):
    from safetensors.torch import load_file

    cfg = TrainConfig(ways=3, episodes=12, val_episodes=10, val_every=4, lr=1e-3, seed=5)
    opts = {"ffn_dim": 64, "alpha": 0.25}
    straight = train(motion_store, tmp_path / "a", "ma_fsar", opts, cfg, progress=False)
    half = train(motion_store, tmp_path / "b", "ma_fsar", opts, cfg, progress=False, stop_after=6)
    assert half.status == "stopped" and half.step == 6
    resumed = train(motion_store, tmp_path / "b", "ma_fsar", opts, cfg, resume=True, progress=False)
    assert resumed.status == "complete" and resumed.step == 12
    for name in ("model.safetensors", "last.safetensors"):
        a, b = load_file(str(tmp_path / "a" / name)), load_file(str(tmp_path / "b" / name))
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert straight.best_val_accuracy == resumed.best_val_accuracy
    assert [h["val_accuracy"] for h in straight.history] == [h["val_accuracy"] for h in resumed.history]


def test_resume_with_several_episodes_per_step_reaches_the_same_weights(motion_store, tmp_path):
    """Episodes drawn per step from (seed, step) and run as one batch: a resumed run still lands on
    the straight run's weights bit for bit."""
    from safetensors.torch import load_file

    cfg = TrainConfig(ways=3, episodes=22, episodes_per_step=4, val_episodes=10, val_every=2, lr=1e-3, seed=2)
    opts = {"ffn_dim": 64}
    straight = train(motion_store, tmp_path / "a", "clip_fsar", opts, cfg, progress=False)
    assert straight.steps == 6  # the last step holds the 2 remaining episodes
    train(motion_store, tmp_path / "b", "clip_fsar", opts, cfg, progress=False, stop_after=3)
    resumed = train(motion_store, tmp_path / "b", "clip_fsar", opts, cfg, resume=True, progress=False)
    a, b = load_file(str(tmp_path / "a" / "last.safetensors")), load_file(str(tmp_path / "b" / "last.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert [h["val_accuracy"] for h in straight.history] == [h["val_accuracy"] for h in resumed.history]


def test_ma_fsar_learns_with_a_batch_of_episodes_per_step(motion_store, tmp_path):
    cfg = TrainConfig(**{**QUICK, "episodes": 160, "episodes_per_step": 4})
    r = train(motion_store, tmp_path / "run", "ma_fsar", {"alpha": 0.0, "ffn_dim": 256}, cfg, progress=False)
    assert r.steps == 40 and losses(r)[-1] < 0.9 * losses(r)[0]
    assert r.best_val_accuracy > 70.0


def test_resident_features_gather_what_the_cache_holds(motion_store):
    """Resident (on the device) or not (budget 0: host memory, copied per step), the features of
    an episode batch are the cached arrays of its videos."""
    from cachekit.batches import CacheData
    from cachekit.cache import FeatureCache
    from cachekit.episodes import EpisodeBatcher
    from cachekit.methods.base import CacheNeeds
    from cachekit.resident import ResidentFeatures, episode_batch

    with FeatureCache(motion_store) as cache:
        data = CacheData(cache, CacheNeeds(emb=True, cls=True, text=True))
        train_idx = cache.splits()["train"].indices
        index = EpisodeBatcher(cache.labels, train_idx, 3, 2, 2, episodes_per_step=5, seed=1).sample(3)
        for budget, resident in ((None, True), (0, False)):
            feats = ResidentFeatures.load(data, train_idx, budget=budget)
            assert feats.resident is resident and bool(feats.notes) is not resident
            if not resident:
                assert "do not fit" in feats.notes[0]
            # on the CPU the split's rows are gathered from data's own tables, kept as cached:
            # no second copy of the split's rows
            assert feats.emb is data.emb and data.emb.numpy().dtype == cache.emb(view=None, dtype=None).dtype
            batch = episode_batch(feats, index)
            assert batch.support.emb.dtype == batch.support.cls.dtype == torch.float32
            want = data.batch(index.support.reshape(-1))  # view 0, one video after another
            torch.testing.assert_close(batch.support.emb.flatten(0, 1), want.emb, rtol=0, atol=0)
            stored = torch.from_numpy(cache.emb(idx=index.support.reshape(-1)))  # float32, from the store
            torch.testing.assert_close(batch.support.emb.flatten(0, 1), stored, rtol=0, atol=0)
            torch.testing.assert_close(batch.support.cls.flatten(0, 1), want.cls, rtol=0, atol=0)
            assert batch.query.emb.shape == (5, 6, FRAMES, cache.model_info.embed_dim)
            assert torch.equal(batch.class_ids, torch.from_numpy(index.class_ids))
            torch.testing.assert_close(batch.text, data.text[batch.class_ids], rtol=0, atol=0)
            assert torch.equal(batch.query.labels, torch.from_numpy(index.class_ids).repeat_interleave(2, dim=1))
            assert batch.support_labels.tolist() == [[0, 0, 1, 1, 2, 2]] * 5


def test_training_reads_no_test_video_features(motion_store):
    """A run's data holds the features of its train and val videos only (a million-video store's
    test rows are not loaded); a batch of a test video is refused, not silently another row."""
    from cachekit.cache import FeatureCache
    from cachekit.train import TrainConfig, prepare

    with FeatureCache(motion_store) as cache:
        s = prepare(cache, "ma_fsar", {}, TrainConfig(episodes=4, val_episodes=4, seed=0))
        read = np.union1d(s.plan.train, s.plan.val)
        assert s.plan.test.size and not np.isin(s.plan.test, read).any()
        assert s.data.emb.shape[0] == read.size < len(cache)
        some = read[[0, -1]]
        np.testing.assert_array_equal(s.data.batch(some).emb.numpy(), cache.emb(idx=some))
        with pytest.raises(ValueError, match="not read"):
            s.data.batch(s.plan.test[:2])
        assert np.isfinite(s.feed.step_loss(s.method, 0))


def test_float16_embeddings_stay_float16_until_a_batch_is_gathered(tmp_path):
    """A store whose ``emb`` is float16 (half the bytes of a million-video column) is held as
    float16; each gathered batch is float32 and equals the store's values exactly."""
    from cachekit.batches import CacheData
    from cachekit.cache import FeatureCache
    from cachekit.episodes import EpisodeBatcher
    from cachekit.methods.base import CacheNeeds
    from cachekit.resident import ResidentFeatures, episode_batch
    from clipcache.stores import open_store

    rng = np.random.default_rng(0)
    key = {"model": "test-model", "frames": 4, "views": 1, "tokens_at": [], "sampler": {"frames": 4, "views": 1},
           "dtype": {"emb": "float16"}}
    info = {"embed_dim": 16, "width": 8, "layers": 2, "heads": 2, "grid": [2, 2], "image_size": 32, "text_width": 8}
    with open_store(str(tmp_path / "h.zarr"), "a", attrs={"cache_key": key, "model_info": info}) as st:
        for i in range(24):
            st.commit("videos", f"{i:064x}", {"emb": rng.standard_normal((1, 4, 16)).astype(np.float16)},
                      {"path": f"/v/{i}.mp4", "label": f"class {i % 4}", "status": "ok"})
    with FeatureCache(str(tmp_path / "h.zarr")) as cache:
        data = CacheData(cache, CacheNeeds(emb=True))
        assert data.emb.dtype == torch.float16
        videos = np.arange(24)
        index = EpisodeBatcher(cache.labels, videos, 3, 1, 2, episodes_per_step=4, seed=0).sample(0)
        batch = episode_batch(ResidentFeatures.load(data, videos), index)
        assert batch.query.emb.dtype == torch.float32
        stored = cache.emb(idx=index.query.reshape(-1))  # float32 from the store's float16
        assert np.array_equal(batch.query.emb.flatten(0, 1).numpy(), stored)


def test_run_directory_rebuilds_the_method_and_guards_it(motion_store, tmp_path):
    from cachekit.cache import FeatureCache
    from cachekit.runs import load_run, read_run

    cfg = TrainConfig(ways=3, episodes=4, val_episodes=5, val_every=2)
    r = train(motion_store, tmp_path / "run", "clip_fsar", {"ffn_dim": 64}, cfg, progress=False)
    run = Path(r.run_dir)
    meta = read_run(run)
    with FeatureCache(motion_store) as cache:
        key = cache.key
    for field in ("method", "train", "store", "model_info", "frames", "best", "checkpoints", "classes", "notes"):
        assert field in meta
    assert meta["store"]["cache_key"] == key and meta["frames"] == FRAMES
    assert meta["method"]["config"]["ffn_dim"] == 64 and meta["method"]["trainable_params"] == r.trainable_params
    assert set(meta["checkpoints"]) == {"model.safetensors", "last.safetensors", "resume.pt"}
    assert meta["splits"]["source"].startswith("store split files") and meta["splits"]["test"]["videos"] == 12

    method, _ = load_run(run, cache_key=key)
    assert not method.training
    from safetensors.torch import load_file

    for k, v in load_file(str(run / "model.safetensors")).items():
        torch.testing.assert_close(method.trainable_state_dict()[k], v)
    with pytest.raises(CacheKeyMismatch, match="weights_sha256"):
        load_run(run, cache_key={**key, "weights_sha256": "0" * 64})
    with pytest.raises(RunError, match="an unfinished run|a finished run"):
        train(motion_store, run, "clip_fsar", {"ffn_dim": 64}, cfg, progress=False)
    # --resume of a finished run returns its result, but only for the same run: another method,
    # options, training config or store was reported as that run's result, exit 0
    again = train(motion_store, run, "clip_fsar", {"ffn_dim": 64}, cfg, resume=True, progress=False)
    assert again.status == "complete" and again.step == r.step
    for other_run in (("proto", {}, cfg), ("clip_fsar", {"ffn_dim": 32}, cfg),
                      ("clip_fsar", {"ffn_dim": 64}, TrainConfig(ways=3, episodes=8, val_episodes=5, val_every=2))):
        with pytest.raises(RunError, match="a finished run whose (method|method config|training config) differ"):
            train(motion_store, run, *other_run, resume=True, progress=False)

    other = tmp_path / "altered"
    shutil.copytree(run, other)
    with open(other / "model.safetensors", "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
    with pytest.raises(RunError, match="sha256"):
        load_run(other)
    (other / "model.safetensors").unlink()
    with pytest.raises(RunError, match="missing"):
        load_run(other)
    with pytest.raises(RunError, match="not a run directory"):
        load_run(tmp_path)

    stopped = train(motion_store, tmp_path / "s", "clip_fsar", {"ffn_dim": 64}, cfg, progress=False, stop_after=2)
    with pytest.raises(RunError, match="method config"):
        train(motion_store, stopped.run_dir, "clip_fsar", {"ffn_dim": 32}, cfg, resume=True, progress=False)
    # a run trained data-parallel resumes only over as many ranks (each step draws one batch per rank)
    meta = json.loads((Path(stopped.run_dir) / "run.json").read_text())
    assert meta["train"]["ranks"] == 1
    meta["train"]["ranks"] = 2
    (Path(stopped.run_dir) / "run.json").write_text(json.dumps(meta))
    with pytest.raises(RunError, match="data-parallel over 2 ranks and this command runs 1"):
        train(motion_store, stopped.run_dir, "clip_fsar", {"ffn_dim": 64}, cfg, resume=True, progress=False)


def test_protocol_the_method_does_not_train_is_refused(motion_store, tmp_path):
    with pytest.raises(InputError, match="allway"):
        train(motion_store, tmp_path / "run", "linear_probe", {}, TrainConfig(protocol="episodic", ways=3, episodes=2),
              progress=False)
    with pytest.raises(InputError, match="episodic"):
        train(motion_store, tmp_path / "run2", "clip_fsar", {}, TrainConfig(protocol="allway"), progress=False)


def test_backbone_method_goes_through_the_same_trainer(motion_store, tmp_path):
    """ma_fsar modules=fgma reads pixels: the trainer loads the store's encoder (random:0) itself."""
    cfg = TrainConfig(ways=2, queries=1, episodes=2, val_episodes=2, val_every=2)
    r = train(motion_store, tmp_path / "run", "ma_fsar", {"modules": "fgma", "alpha": 0.25}, cfg, progress=False)
    meta = json.loads((Path(r.run_dir) / "run.json").read_text())
    assert r.status == "complete" and meta["method"]["needs"]["backbone"]
    assert r.trainable_params > 0


# ------------------------------------------------------------------ CLI, stores without splits
@pytest.fixture(scope="module")
def synth_store(tmp_path_factory, tiny_cfg) -> str:
    """cachekit.synth clips extracted from videos.csv alone: a store without split files."""
    from cachekit.encoder import EncoderConfig
    from cachekit.extract import ExtractConfig, extract
    from cachekit.inputs import collect_inputs
    from cachekit.synth import SynthConfig, synth_dataset
    from cachekit.video import SamplerConfig

    d = tmp_path_factory.mktemp("synth")
    classes = ("moving something from left to right", "moving something from right to left", "something appearing",
               "something disappearing", "something falling", "something staying still")
    res = synth_dataset(d / "data", SynthConfig(classes=classes, videos_per_class=3, frames=8, size=32))
    cfg = ExtractConfig(encoder=EncoderConfig(model=tiny_cfg, pretrained="random", device="cpu"),
                        sampler=SamplerConfig(frames=8), workers=1, batch_size=64)
    store = str(d / "store.zarr")
    extract(collect_inputs([str(res.csv)]), store, cfg, progress=False)
    return store


def test_train_cli_on_a_store_without_splits(synth_store, tmp_path):
    from click.testing import CliRunner

    from cachekit.cache import FeatureCache
    from cachekit.protocols.plan import SplitPlan
    from test_methods_cache import _cli

    out = tmp_path / "run"
    args = ["train", "--method", "ma_fsar", "--store", synth_store, "--out", str(out), "--ways", "2",
            "--queries", "1", "--episodes", "4", "--val-episodes", "3", "--opt", "ffn_dim=32", "--alpha", "0.25",
            "--threads", "1",
            "--json"]
    res = CliRunner().invoke(_cli(), args)
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["status"] == "complete" and any("no split files" in n for n in result["notes"])
    meta = json.loads((out / "run.json").read_text())
    assert meta["method"]["config"]["alpha"] == 0.25 and meta["train"]["config"]["ways"] == 2
    with FeatureCache(synth_store) as cache:
        split = SplitPlan.load(out, cache)
        classes = {k: set(cache.labels[v].tolist()) for k, v in split.indices.items()}
        assert {k: set(cache.classes[c] for c in v) for k, v in classes.items()} == {
            k: set(v) for k, v in split.class_names.items()}
    assert classes["train"].isdisjoint(classes["val"]) and classes["val"].isdisjoint(classes["test"])
    assert len(classes["val"]) >= 2 and len(classes["test"]) >= 2

    res = CliRunner().invoke(_cli(), args)  # the run exists: refused, one line, exit 2
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "--out" in res.output
    res = CliRunner().invoke(_cli(), ["train", "--method", "ma_fsar", "--store", synth_store, "--out",
                                      str(tmp_path / "x"), "--prompts", "both"])
    assert res.exit_code == 2 and "has no option prompts" in res.output

    res = CliRunner().invoke(_cli(), ["train", "--method", "linear_probe", "--store", synth_store, "--out",
                                      str(tmp_path / "probe"), "--protocol", "allway", "--epochs", "2"])
    assert res.exit_code == 0, res.output
    assert "split every class's videos" in res.output


def six_class_store(tmp_path, tiny_cfg, videos_per_class: int, frames: int, pixels: bool = False):
    """Six motion classes split 3 / 1 / 2 class-disjointly by their CLIP-FSAR lists, extracted with
    tokens at block 2 (and pixels when asked): (synth result, store path)."""
    from cachekit.encoder import EncoderConfig
    from cachekit.extract import ExtractConfig, extract
    from cachekit.inputs import collect_inputs
    from cachekit.synth import SynthConfig, synth_dataset
    from cachekit.video import SamplerConfig

    names = ("moving something up", "moving something down", "something falling", "something rising",
             "something bouncing", "something shaking")
    res = synth_dataset(tmp_path / "data", SynthConfig(classes=names, videos_per_class=videos_per_class,
                                                       frames=frames, size=32, splits=(0.5, 0.25, 0.25),
                                                       clutter="low"))
    splits = res.out_dir / "splits" / "clip_fsar"
    store = str(tmp_path / "store.zarr")
    extract(collect_inputs([str(splits / f"{s}_few_shot.txt") for s in ("train", "val", "test")],
                           video_root=str(res.out_dir), class_names=str(splits)), store,
            ExtractConfig(encoder=EncoderConfig(model=tiny_cfg, pretrained="random", device="cpu"),
                          sampler=SamplerConfig(frames=4), tokens_at=(2,), pixels=pixels, workers=1),
            progress=False)
    return res, store


def test_zeroshot_protocol_trains_on_train_classes_and_validates_on_unseen(tmp_path, tiny_cfg):
    """--protocol zeroshot: class-disjoint split files; the method sees only the training classes'
    text while training and only the unseen val classes' text while validating."""
    from cachekit.cache import FeatureCache

    res, store = six_class_store(tmp_path, tiny_cfg, videos_per_class=3, frames=8)
    seen: list[list[str]] = []

    def spy(names):  # records the class names bound before every scoring pass
        seen.append(list(names))

    cfg = TrainConfig(protocol="zeroshot", epochs=2, batch_size=4, lr=1e-3, seed=0)
    r = train(store, tmp_path / "run", "ev_clip", {"prompts": "context", "z_block": 2}, cfg, progress=False)
    assert r.status == "complete" and r.best_val_accuracy is not None
    assert any("zero-shot training" in n for n in r.notes)
    with FeatureCache(store) as cache:
        sp = cache.splits()
        train_names = {cache.classes[i] for i in np.unique(cache.labels[sp["train"].indices])}
        val_names = {cache.classes[i] for i in np.unique(cache.labels[sp["val"].indices])}
    assert train_names.isdisjoint(val_names) and set(res.splits["train"]) == train_names
    # the feed binds exactly one class set at a time: train classes for steps, val classes to validate
    from cachekit.train import prepare

    with FeatureCache(store) as cache:
        s = prepare(cache, "ev_clip", {"prompts": "context", "z_block": 2}, cfg)
        m, feed = s.method, s.feed
        m.bind_classes = spy
        feed.step_loss(m, 0)
        feed.validate(m)
    assert set(seen[0]) == train_names and set(seen[1]) == val_names and set(seen[-1]) == train_names


def test_a_run_that_reads_pixels_evaluates_under_zeroshot(tmp_path, tiny_cfg):
    """EV-CLIP mask prompts read the cached pixels: evaluating its run hands the run's own frozen
    encoder to the data reader (it crashed with a ValueError outside the training path)."""
    from cachekit.evaluate import EvalConfig, evaluate

    res, store = six_class_store(tmp_path, tiny_cfg, videos_per_class=2, frames=4, pixels=True)
    run = tmp_path / "run"
    train(store, run, "ev_clip", {"prompts": "mask", "z_block": 2},
          TrainConfig(protocol="zeroshot", epochs=1, batch_size=4, lr=1e-3, val_episodes=0), progress=False)
    r = evaluate(store, EvalConfig(protocol="zeroshot", run_dir=str(run)))
    assert r.videos == 2 * len(res.splits["test"])
    correct = r.accuracy * r.videos / 100  # a whole number of test videos right
    assert abs(correct - round(correct)) < 1e-6
    assert evaluate(store, EvalConfig(protocol="zeroshot", run_dir=str(run))).accuracy == r.accuracy


@pytest.mark.slow
def test_kill_9_during_training_then_resume_equals_an_uninterrupted_run(motion_store, tmp_path):
    """SIGKILL `clipcache train` at random moments (between or inside checkpoint writes), then
    `--resume` to the end: the weights equal an uninterrupted run's, bit for bit."""
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    from helpers import ROOT, cli_env

    def cmd(out, *extra):
        return [sys.executable, "-m", "clipcache.cli.main", "train", "--method", "ma_fsar", "--store", motion_store,
                "--out", str(out), "--ways", "3", "--episodes", "40", "--val-episodes", "6", "--val-every", "2",
                "--lr", "1e-3", "--seed", "3", "--opt", "ffn_dim=64", "--threads", "1", "--no-progress", *extra]

    ref = subprocess.run(cmd(tmp_path / "ref"), cwd=ROOT, env=cli_env(), capture_output=True, text=True,
                         timeout=300)
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "killed"
    rng = np.random.default_rng(0)
    kills = 0
    def step_of(d) -> int:
        try:
            return json.loads((d / "run.json").read_text())["step"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return -1

    for attempt in range(6):
        start = step_of(run)
        p = subprocess.Popen(cmd(run, *(["--resume"] if (run / "run.json").exists() else [])), cwd=ROOT,
                             env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while p.poll() is None and step_of(run) <= start:  # a hang is pytest-timeout's to catch
            time.sleep(0.005)  # until this attempt has written a new checkpoint
        time.sleep(float(rng.uniform(0.0, 0.3)))  # then anywhere: mid-step, mid-checkpoint
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait(timeout=60)
        if p.returncode == 0:
            break
        assert p.returncode == -signal.SIGKILL, p.stderr.read()
    assert kills >= 2
    done = subprocess.run(cmd(run, "--resume"), cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=300)
    if done.returncode != 0:  # the last attempt may have finished the run already
        assert "complete" in done.stderr or "already" in done.stderr, done.stderr
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "complete" and meta["step"] == 40
    for name in ("model.safetensors", "last.safetensors"):
        a, b = load_file(str(tmp_path / "ref" / name)), load_file(str(run / name))
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
