"""The toy CLIP end to end, at toy sizes: its pretraining is deterministic, its weights load through
the ordinary weights path (``--pretrained toy``, or the file itself), the cache key names them,
and every output made with them says it is the toy encoder.

``--pretrained toy`` reads ``$CLIPCACHE_TOY_WEIGHTS`` when it is set (:func:`cachekit.toy.files.toy_weights`);
the tests point it at weights they pretrain themselves (a few steps), so they never need the
packaged file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import TINY_CFG, benchmark_script, cli_env, invoke, run_cli, synth_frames, write_h264

from cachekit.caveat import RANDOM_CAVEAT, TOY_CAVEAT, encoder_caveat, weights_kind
from cachekit.toy.files import TOY_WEIGHTS_ENV, is_toy_weights_file, toy_model_cfg, toy_model_config, toy_sizing

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(steps=3, warmup=1, batch_size=8, probe_images=20, threads=1)
CLASSES = ("bounce", "drift", "spin")


def _pretrain(out: Path) -> dict:
    """:func:`pretrain` at toy sizes, leaving torch's global settings as they were."""
    import torch

    from cachekit.toy.pretrain import PretrainConfig, pretrain

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        return pretrain(out, PretrainConfig(**TINY))
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


@pytest.fixture(scope="module")
def toy_pair(tmp_path_factory) -> tuple[Path, Path]:
    """Two pretraining runs with the same settings, into two folders."""
    root = tmp_path_factory.mktemp("toy")
    a, b = root / "a" / "toy-clip.safetensors", root / "b" / "toy-clip.safetensors"
    _pretrain(a)
    _pretrain(b)
    return a, b


@pytest.fixture(scope="module")
def toy_file(toy_pair) -> Path:
    return toy_pair[0]


@pytest.fixture
def toy_env(toy_file, monkeypatch) -> Path:
    """``--pretrained toy`` loads the test's own toy weights."""
    monkeypatch.setenv(TOY_WEIGHTS_ENV, str(toy_file))
    return toy_file


# ------------------------------------------------------------------------------------- pretraining
def test_pretraining_is_deterministic(toy_pair):
    a, b = toy_pair
    assert a.read_bytes() == b.read_bytes()
    assert is_toy_weights_file(a)
    report = json.loads((a.parent / "toy-clip-pretrain.json").read_text())
    assert report["config"]["steps"] == 3 and set(report["probe"]) >= {"colour_and_shape", "colour", "shape", "place", "place_chance"}
    assert "says nothing about real CLIP" in report["note"]


def test_pretraining_keeps_the_sin_cos_positions_fixed_and_uses_the_place_head(toy_file):
    """The toy's vision tower uses open_clip's fixed 2-D sin-cos positional embedding (a learnable
    one never learnt place here, benchmarks/toy_limits.py); pretraining must not move it."""
    import torch
    from open_clip.pos_embed import get_2d_sincos_pos_embed
    from safetensors.torch import load_file

    cfg = toy_model_cfg()["vision_cfg"]
    assert cfg["pos_embed_type"] == "sin_cos_2d"
    grid = cfg["image_size"] // cfg["patch_size"]
    want = torch.from_numpy(get_2d_sincos_pos_embed(cfg["width"], grid, cls_token=True)).to(torch.float16)
    assert torch.equal(load_file(toy_file)["visual.positional_embedding"], want)
    report = json.loads((toy_file.parent / "toy-clip-pretrain.json").read_text())
    assert report["config"]["place_loss"] > 0 and not any(k.startswith("place_head") for k in load_file(toy_file))


@pytest.mark.parametrize("head", ["place", "shape"])
def test_a_negative_head_loss_or_an_empty_schedule_is_refused(head):
    from cachekit.errors import InputError
    from cachekit.toy.pretrain import PretrainConfig

    with pytest.raises(InputError, match=f"{head}_loss must be >= 0"):
        PretrainConfig(**{f"{head}_loss": -1.0})
    with pytest.raises(InputError, match=f"{head}_until in"):
        PretrainConfig(**{f"{head}_until": 0.0})


def test_the_shape_head_trains_the_tower_and_is_thrown_away(tmp_path):
    """``shape_loss``: an auxiliary 4-way shape head on the image embedding moves the weights and,
    like the place head, is not written; the report records its weight."""
    import torch
    from safetensors.torch import load_file

    from cachekit.toy.pretrain import PretrainConfig, pretrain

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        for name, w in (("plain", 0.0), ("shape", 1.0)):
            pretrain(tmp_path / f"{name}.safetensors", PretrainConfig(**TINY, shape_loss=w))
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    plain, shaped = (load_file(str(tmp_path / f"{n}.safetensors")) for n in ("plain", "shape"))
    assert set(plain) == set(shaped) and not any("_head" in k for k in shaped)
    assert not torch.equal(plain["visual.proj"], shaped["visual.proj"])  # the head's gradient reached the tower
    report = json.loads((tmp_path / "shape-pretrain.json").read_text())
    assert report["config"]["shape_loss"] == 1.0 and report["config"]["shape_until"] == 1.0


def test_the_stem_trains_under_bfloat16_autocast_and_is_saved_as_the_plain_stem(tmp_path):
    """``stem_dtype``: the default runs the conv stem under bfloat16 autocast while training (0.8 of
    a float32 step on 2 cores) and puts the plain stem back, so the file has the same keys as a
    float32 run and loads as the same tower; the two runs' weights differ (the autocast ran)."""
    import torch
    from safetensors.torch import load_file

    from cachekit.errors import InputError
    from cachekit.toy.pretrain import PretrainConfig, pretrain

    assert PretrainConfig().stem_dtype == "bfloat16"
    with pytest.raises(InputError, match="stem_dtype must be float32 or bfloat16"):
        PretrainConfig(stem_dtype="float16")
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        for d in ("float32", "bfloat16"):
            pretrain(tmp_path / f"{d}.safetensors", PretrainConfig(**TINY, stem_dtype=d))
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    f32, b16 = (load_file(str(tmp_path / f"{d}.safetensors")) for d in ("float32", "bfloat16"))
    assert set(f32) == set(b16) and "visual.conv1.0.weight" in b16
    assert not torch.equal(f32["visual.conv1.0.weight"], b16["visual.conv1.0.weight"])
    report = json.loads((tmp_path / "bfloat16-pretrain.json").read_text())
    assert report["config"]["stem_dtype"] == "bfloat16"


def test_the_stem_dtype_timing_runs_both_dtypes_side_by_side():
    """``toy_limits.py --only-stem-dtype``: both stems timed in one process, their ratio printed."""
    import torch

    limits = benchmark_script("toy_limits")
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        res = limits.stem_dtype_timing(2, rounds=1)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    assert set(res["seconds"]) == {"float32", "bfloat16"} and all(len(v) == 1 for v in res["seconds"].values())
    assert res["ratio"] > 0 and "bfloat16 / float32" in limits.stem_dtype_markdown(res)


def test_an_unknown_sizing_is_refused_and_radius_is_the_default():
    from cachekit.errors import InputError
    from cachekit.toy.pretrain import PretrainConfig

    assert PretrainConfig().sizing == "radius"
    with pytest.raises(InputError, match="sizing must be one of radius, mixed"):
        PretrainConfig(sizing="area")


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_size_words_must_be_a_probability(p):
    from cachekit.errors import InputError
    from cachekit.toy.pretrain import PretrainConfig

    with pytest.raises(InputError, match="size_words must be a probability in"):
        PretrainConfig(size_words=p)


def test_size_words_change_the_captions_and_nothing_else():
    """``size_words``: how often a lone subject's caption names its size. The draw is made either
    way, so the images, scenes and every other word of the captions are the same."""
    from cachekit.toy.scenes import scene_batch

    words = ("small ", "large ")
    runs = {p: scene_batch(0, 5, 64, 112, size_words=p) for p in (0.0, 0.4, 1.0)}
    # "a large orange ring" / "an orange ring": the same words once sizes and the article are set aside
    unsized = lambda c: ["a" if w == "an" else w for w in c.split() if w not in ("small", "large")]  # noqa: E731
    for p in (0.4, 1.0):
        assert np.array_equal(runs[p][0], runs[0.0][0]) and runs[p][2] == runs[0.0][2]
        for with_size, without in zip(runs[p][1], runs[0.0][1]):
            assert unsized(with_size) == unsized(without)
    sized = {p: sum(any(w in c for w in words) for c in caps) for p, (_, caps, _) in runs.items()}
    assert sized[0.0] == 0 < sized[0.4] < sized[1.0]
    lone = [sc for sc in runs[1.0][2] if len(sc.objects) == 1]
    assert sized[1.0] >= len(lone)  # every lone subject is sized at 1


# ------------------------------------------------------------------------------------- loading
def test_the_file_path_loads_into_the_toy_config_and_the_key_names_it(toy_file):
    import torch
    from safetensors.torch import load_file

    from cachekit.encoder import EncoderConfig, load_clip
    from clipcache.stores import file_sha256

    enc = load_clip(EncoderConfig(pretrained=str(toy_file), device="cpu"))  # --model left at its default
    assert enc.name == "clipcache-toy-clip" and enc.model_cfg == toy_model_cfg()
    key = enc.key_fields()
    assert key["weights"] == f"toy:{toy_file.name}" and key["weights_sha256"] == file_sha256(toy_file)
    assert encoder_caveat(key) == TOY_CAVEAT
    saved = load_file(str(toy_file))  # float16 on disk, float32 in the model, the same values
    state = enc.model.state_dict()
    assert saved.keys() <= state.keys()
    for name, t in saved.items():
        assert state[name].dtype == torch.float32
        assert torch.equal(state[name].half(), t), name


def test_pretrained_toy_uses_the_toy_config_and_its_weights(toy_env):
    from cachekit.encoder import EncoderConfig, load_clip
    from cachekit.runs import load_store_encoder
    from clipcache.stores import file_sha256

    enc = load_clip(EncoderConfig(pretrained="toy", device="cpu"))
    assert enc.name == "clipcache-toy-clip" and enc.weights == "toy"
    assert enc.weights_sha256 == file_sha256(toy_env)
    for model in ("toy", str(toy_model_config())):
        assert load_clip(EncoderConfig(model=model, pretrained="toy", device="cpu")).key_fields() == enc.key_fields()
    # a store's key names the encoder well enough to load it again (train, index)
    again = load_store_encoder(enc.key_fields(), device="cpu")
    assert again.weights_sha256 == enc.weights_sha256 and again.name == enc.name
    # a toy weights file passed by path is found again when it is the one --pretrained toy loads
    by_path = load_clip(EncoderConfig(pretrained=str(toy_env), device="cpu")).key_fields()
    assert load_store_encoder(by_path, device="cpu").weights_sha256 == enc.weights_sha256


def test_toy_weights_with_another_model_or_missing_are_one_line_errors(toy_file, tmp_path, monkeypatch):
    from cachekit.encoder import EncoderConfig, load_clip
    from cachekit.errors import ModelError, WeightsNotFound

    with pytest.raises(ModelError, match="toy weights go with the toy model config"):
        load_clip(EncoderConfig(model="ViT-B-16", pretrained="toy", device="cpu"))
    with pytest.raises(WeightsNotFound, match="cannot load weights"):  # an explicit other JSON: any file
        load_clip(EncoderConfig(model=str(TINY_CFG), pretrained=str(toy_file), device="cpu"))
    monkeypatch.setenv(TOY_WEIGHTS_ENV, str(tmp_path / "absent.safetensors"))
    with pytest.raises(WeightsNotFound, match="clipcache pretrain-toy") as err:
        load_clip(EncoderConfig(pretrained="toy", device="cpu"))
    assert "\n" not in str(err.value)


def test_toy_weights_are_the_packaged_file_unless_the_env_names_another(tmp_path, monkeypatch):
    import cachekit
    from cachekit.toy.files import packaged_toy_weights, toy_weights

    monkeypatch.delenv(TOY_WEIGHTS_ENV, raising=False)
    assert toy_weights() == packaged_toy_weights() == Path(cachekit.__file__).parent / "data" / "toy-clip.safetensors"
    monkeypatch.setenv(TOY_WEIGHTS_ENV, str(tmp_path / "mine.safetensors"))
    assert toy_weights() == tmp_path / "mine.safetensors"


def test_the_caveat_of_each_kind_of_weights():
    assert weights_kind("random:3") == "random" and encoder_caveat({"weights": "random:0"}) == RANDOM_CAVEAT
    assert encoder_caveat({"weights": "toy"}) == encoder_caveat({"weights": "toy:x.safetensors"}) == TOY_CAVEAT
    assert encoder_caveat({"weights": "tag:openai"}) is None
    assert encoder_caveat({"weights": "open_clip_model.safetensors"}) is None
    assert encoder_caveat({}) is None


# ------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy-videos")
    for c, name in enumerate(CLASSES):
        for k in range(4):
            write_h264(root / name / f"{name}_{k}.mp4", synth_frames(10 * c + k, frames=10, height=48, width=64))
    return root


def test_every_output_of_a_toy_store_says_toy(toy_env, videos, tmp_path):
    store, run, out = tmp_path / "s.zarr", tmp_path / "run", tmp_path / "report"
    code, stdout, stderr = invoke(["extract", videos, "--store", store, "--pretrained", "toy", "--frames", "4",
                                   "--device", "cpu", "--workers", "1", "--no-progress"])
    assert code == 0, stderr
    assert "TOY encoder" in stderr and "RANDOM" not in stderr
    from cachekit.cache import FeatureCache

    with FeatureCache(str(store)) as cache:
        assert cache.key["weights"] == "toy" and cache.key["model"] == "clipcache-toy-clip"

    code, stdout, _ = invoke(["info", store])
    assert code == 0 and "TOY encoder" in stdout
    code, stdout, _ = invoke(["info", store, "--json"])
    assert json.loads(stdout)["encoder"] == TOY_CAVEAT

    code, stdout, stderr = invoke(["eval", "--store", store, "--protocol", "episodic", "--ways", "2",
                                   "--episodes", "5", "--out", out, "--no-progress"])
    assert code == 0, stderr
    assert f"encoder: {TOY_CAVEAT}" in stdout
    assert TOY_CAVEAT in (out / "results.md").read_text()
    doc = json.loads((out / "results.json").read_text())
    assert doc["encoder"] == TOY_CAVEAT and all(r["encoder"] == TOY_CAVEAT for r in doc["results"])
    code, stdout, _ = invoke(["eval", "--store", store, "--protocol", "episodic", "--ways", "2",
                              "--episodes", "5", "--json", "--no-progress"])
    assert code == 0 and json.loads(stdout.splitlines()[0])["encoder"] == TOY_CAVEAT

    code, stdout, stderr = invoke(["train", "--method", "linear_probe", "--protocol", "allway", "--store", store,
                                   "--out", run, "--epochs", "1", "--batch-size", "4", "--val-episodes", "0",
                                   "--device", "cpu", "--no-progress"])
    assert code == 0, stderr
    assert TOY_CAVEAT in stdout
    assert "split (" in stdout and "selects the checkpoint" not in stdout  # --val-episodes 0: nothing selects
    assert TOY_CAVEAT in json.loads((run / "run.json").read_text())["notes"]

    code, stdout, stderr = invoke(["index", "--store", store, "--out", tmp_path / "idx", "--no-onnx",
                                   "--no-progress"])
    assert code == 0, stderr
    assert f"note: {TOY_CAVEAT}" in stdout
    code, stdout, stderr = invoke(["query", videos / "spin" / "spin_0.mp4", "--index", tmp_path / "idx",
                                   "--json", "--top-k", "2"])
    assert code == 0, stderr
    assert json.loads(stdout)["encoder"] == TOY_CAVEAT  # in the JSON object itself, and on stderr
    assert set(json.loads(stdout)) == {"video", "top", "encoder"}
    assert f"note: {TOY_CAVEAT}" in stderr


def test_random_weights_keep_their_warning(videos, tmp_path):
    code, _, stderr = invoke(["extract", videos / "spin", "--store", tmp_path / "r.zarr", "--model", TINY_CFG,
                              "--pretrained", "random", "--frames", "4", "--device", "cpu", "--workers", "1",
                              "--no-progress"])
    assert code == 0, stderr
    assert "WARNING: the encoder has RANDOM weights" in stderr and "TOY" not in stderr


def test_toy_with_another_model_fails_in_one_line(toy_env, videos, tmp_path):
    code, _, stderr = invoke(["extract", videos / "spin", "--store", tmp_path / "x.zarr", "--pretrained", "toy",
                              "--model", "ViT-B-16", "--device", "cpu"])
    assert code == 2 and stderr.startswith("error: ") and len(stderr.strip().splitlines()) == 1, stderr
    assert "toy weights go with the toy model config" in stderr
    assert not (tmp_path / "x.zarr").exists()


def test_cli_pretrain_toy_writes_the_weights_and_prints_the_probe(tmp_path):
    out = tmp_path / "w" / "toy.safetensors"
    code, stdout, stderr = run_cli(["pretrain-toy", "--out", out, "--steps", "2", "--batch-size", "8",
                                    "--probe-images", "12", "--threads", "1", "--seed", "1", "--no-progress",
                                    "--sizing", "mixed", "--stem-dtype", "float32", "--size-words", "0.25"],
                                   env=cli_env())
    assert code == 0, stderr
    assert is_toy_weights_file(out) and (out.parent / "toy-pretrain.json").is_file()
    config = json.loads((out.parent / "toy-pretrain.json").read_text())["config"]
    assert config["sizing"] == "mixed" and config["stem_dtype"] == "float32" and config["size_words"] == 0.25
    assert toy_sizing(out) == "mixed" and toy_sizing(tmp_path / "missing.safetensors") == "radius"
    assert f"wrote {out}" in stdout and "probe on" in stdout and "colour+shape" in stdout
    probe = json.loads((out.parent / "toy-pretrain.json").read_text())["probe"]
    assert f"colour+shape {probe['colour_and_shape']:.1f}%" in stdout
    assert f"place {probe['place']:.1f}% (chance 11.1%)" in stdout
    assert np.isfinite(probe["colour"])


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "steps must be an integer >= 1"),
    (["--out", "toy.bin", "--steps", "2"], "written as .safetensors"),
    (["--device", "tpu"], "--device must be auto, cpu or cuda"),
    (["--tower", "cnn", "--steps", "2"], "unknown toy tower 'cnn'; choose one of vit, stem_max, stem_max_scales"),
    (["--shape-loss", "-1", "--steps", "2"], "shape_loss must be >= 0"),
])
def test_cli_pretrain_toy_bad_input_is_one_line(args, message, tmp_path):
    out = [] if "--out" in args else ["--out", tmp_path / "t.safetensors"]
    code, _, stderr = invoke(["pretrain-toy", *out, *args])
    assert code == 2 and stderr.startswith("error: ") and len(stderr.strip().splitlines()) == 1, stderr
    assert message in stderr


def test_the_shape_comparisons_stem_keeps_the_token_grid_and_every_tower_pools_one_vector():
    """``benchmarks/toy_limits.py``'s towers: the normalised conv stem replaces the patch embedding
    without changing the tokens the blocks see ([F, N+1, W]), and each tower gives one vector per image."""
    import torch

    from cachekit.encoder import EncoderConfig, load_clip

    limits = benchmark_script("toy_limits")
    pixels = torch.randn(2, 3, 112, 112)
    for kind in limits.TOWERS:
        clip = load_clip(EncoderConfig(model=str(toy_model_config()), pretrained="random", seed=0))
        vit = clip.model.visual.requires_grad_(True)  # as supervised() trains it
        tower = limits._tower(kind, vit)
        if kind.startswith("stem_"):
            assert vit._embeds(pixels).shape == (2, 50, 96)  # 7 x 7 grid + class token, width 96
            assert any(isinstance(m, torch.nn.GroupNorm) for m in vit.conv1.modules())
        out = tower(pixels)
        assert out.shape == (2, tower.output_dim), kind
        out.sum().backward()  # trainable end to end



@pytest.mark.parametrize("tower", ["stem_max", "vit", "stem_max_scales"])
def test_a_toy_loads_back_as_the_tower_it_was_pretrained_with(tower, tmp_path):
    """``pretrain-toy --tower``: the file says its tower (stem_max, the default; open_clip's plain
    vit; the stem shared across input scales), ``--pretrained FILE`` rebuilds it before loading,
    and the tokens entering block L still replace blocks 0..L-1 exactly."""
    import torch
    from safetensors.torch import load_file

    from cachekit.encoder import EncoderConfig, load_clip
    from cachekit.toy.files import toy_tower
    from cachekit.toy.pretrain import PretrainConfig, pretrain

    out = tmp_path / f"{tower}.safetensors"
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        pretrain(out, PretrainConfig(**TINY, tower=tower))
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    assert is_toy_weights_file(out) and toy_tower(out) == tower
    state = load_file(str(out))
    stem = tower != "vit"
    conv = {"vit": "visual.conv1.weight", "stem_max": "visual.conv1.0.weight",
            "stem_max_scales": "visual.conv1.stem.0.weight"}
    assert [k for k in conv.values() if k in state] == [conv[tower]]
    clip = load_clip(EncoderConfig(pretrained=str(out)))
    assert clip.weights == f"toy:{out.name}"
    got = clip.model.state_dict()
    assert got.keys() == state.keys() and all(torch.equal(got[k], v.float()) for k, v in state.items())
    pixels = torch.randn(3, 3, 112, 112)
    with torch.no_grad():
        frames = clip.encode_frames(pixels, token_blocks=(0, 3))
        assert frames.tokens[3].shape == (3, 50, 96)  # the 7 x 7 grid + class token, either tower
        torch.testing.assert_close(frames.emb, clip.model.encode_image(pixels), rtol=0, atol=0)
        torch.testing.assert_close(clip.forward_from_block(frames.tokens[3], 3), frames.emb, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(clip.forward_from_block(frames.tokens[0], 0), frames.emb, rtol=1e-5, atol=1e-5)
        tokens = clip.model.visual.ln_post(clip.run_blocks(frames.tokens[0]))  # [3, 50, 96]
        pooled = tokens.amax(1) if stem else tokens[:, 0]  # max over the tokens, or the class token
        torch.testing.assert_close(frames.emb, pooled @ clip.model.visual.proj, rtol=1e-5, atol=1e-5)


def test_shape_information_agrees_with_the_probe_and_reads_shape_at_trained_sizes():
    """``toy_limits.py --only-shape-information``: its zero-shot column is the goal probe's shape
    (same images, same phrases), the trained sizes' embeddings are the least shifted, and both
    linear read-outs find shape there far above chance (labels and embeddings stay aligned)."""
    import torch

    from cachekit.encoder import EncoderConfig, load_clip
    from cachekit.toy.heldout import CONDITIONS, factor_accuracy, shape_information

    torch.manual_seed(0)
    clip = load_clip(EncoderConfig(model="toy", pretrained="toy"))
    res = shape_information(clip, 0, 48, fit=240)
    probe = factor_accuracy(clip, 0, 48)
    rows = res["conditions"]
    assert list(rows) == list(CONDITIONS)
    assert all(rows[k]["zero_shot"] == probe["conditions"][k]["shape"] for k in CONDITIONS)
    trained = rows["trained sizes and backgrounds"]
    assert trained["shift"] == min(r["shift"] for r in rows.values())
    assert trained["linear"] > 60 and trained["linear_own"] > 60
    assert all(0 <= r[k] <= 100 for r in rows.values() for k in ("zero_shot", "centred", "linear", "linear_own"))
    assert all(-1 <= r["size_axis"] <= 1 for r in rows.values())
    limits = benchmark_script("toy_limits")
    text = limits.shape_information_markdown({"weights": "toy", **res})
    assert "| linear, trained sizes | linear, own |" in text and text.count("\n|") == len(rows) + 2  # header, rule, rows
