"""One contract, every registered method and variant (issue 16; style.md practices 9-11).

Parametrised over :data:`cachekit.methods.METHODS` and each module's ``VARIANTS``, the rows
``clipcache methods`` lists. Every case runs on one real Zarr store extracted from real H.264
clips with a tiny random-init open_clip model (``tests/assets/tiny-clip-deep.json``: 12 blocks,
so every method's default options, e.g. EV-CLIP's ``z_block`` 6, are valid on it), with the
tokens at every block some variant reads and the cached pixels. Each case:

- builds the method with its variant's options;
- takes one optimiser step through the trainer's own data path (protocol plan, ``training_data``,
  the protocol's feed, AdamW);
- sends a gradient to every trainable parameter and to no frozen one (the method's or the
  encoder's), leaves every frozen weight unchanged, and moves a trainable one;
- round-trips save and load: ``trainable_state_dict`` -> safetensors file -> a freshly built
  method -> equal outputs;
- reads only what its ``CacheNeeds`` declares: the store is a :class:`ReadLogStore`, a real
  ``ZarrStore`` that records the (group, array) of every array read;
- has the trainable count that ``clipcache methods`` prints (:func:`cachekit.train.list_methods`,
  the function the CLI calls).
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from cachekit.methods import METHODS
from helpers import ROOT, build_tiny_model, synth_frames, write_h264
from clipcache.stores.zarr_store import ZarrStore

DEEP_CFG = ROOT / "tests" / "assets" / "tiny-clip-deep.json"
T = 4
CLASSES = tuple(f"action{c}" for c in range(10))  # a seeded 60/20/20 class split leaves 2+ training classes
PER_CLASS = 2  # an episodic 2-way 1-shot 1-query episode needs 2 videos of each training class


def _cases() -> list:
    out = []
    for name, module in METHODS.items():
        for variant in getattr(importlib.import_module(module), "VARIANTS", None) or [{}]:
            label = ",".join(f"{k}={v}" for k, v in variant.items()) or "default"
            out.append(pytest.param(name, dict(variant), id=f"{name}[{label}]"))
    return out


class ReadLogStore(ZarrStore):
    """A read-only Zarr store that records ``(group, array name)`` for every array it reads."""

    def __init__(self, path):
        super().__init__(path, "r")
        self.log: set[tuple[str, str]] = set()

    def read(self, group, key, names=None):
        out = super().read(group, key, names)
        self.log.update((group, n) for n in out)
        return out

    def read_column(self, group, name, keys):
        self.log.add((group, name))
        return super().read_column(group, name, keys)


@pytest.fixture(scope="module")
def rows():
    """What ``clipcache methods --model tests/assets/tiny-clip-deep.json`` lists, by (name, variant)."""
    from cachekit.train import list_methods

    return {(r["name"], tuple(sorted(r["variant"].items()))): r for r in list_methods(str(DEEP_CFG), T)}


@pytest.fixture(scope="module")
def deep_encoder(tmp_path_factory):
    """``FrozenCLIP`` for the 12-block tiny model, seed-0 weights loaded from a safetensors file."""
    from safetensors.torch import save_file

    from cachekit.encoder import EncoderConfig, load_clip

    path = tmp_path_factory.mktemp("weights") / "tiny-clip-deep.safetensors"
    model = build_tiny_model(DEEP_CFG, seed=0)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
    return load_clip(EncoderConfig(model=str(DEEP_CFG), pretrained=str(path), device="cpu"))


@pytest.fixture(scope="module")
def store(tmp_path_factory, deep_encoder, rows):
    """The module's one store: emb, text, pixels, and the tokens at every block a variant reads."""
    from cachekit.extract import ExtractConfig, extract
    from cachekit.inputs import collect_inputs
    from cachekit.video import SamplerConfig

    root = tmp_path_factory.mktemp("videos")
    for c, cls in enumerate(CLASSES):
        for i in range(PER_CLASS):
            seed = c * PER_CLASS + i
            write_h264(root / cls / f"clip{i}.mp4", synth_frames(seed, frames=16, height=64, width=80))
    blocks = sorted({b for r in rows.values() if r["available"] for b in r["needs"]["tokens_at"]})
    path = tmp_path_factory.mktemp("store") / "contract.zarr"
    cfg = ExtractConfig(sampler=SamplerConfig(frames=T), tokens_at=tuple(blocks), pixels=True, workers=0)
    summary = extract(collect_inputs([str(root)]), str(path), cfg, progress=False, enc=deep_encoder)
    assert summary.extracted == len(CLASSES) * PER_CLASS and not summary.failed
    return path


def _frozen(method, encoder) -> dict[str, torch.Tensor]:
    """Copies of every parameter and buffer that must not change: the method's (but its trainable
    parameters) and the encoder's."""
    trainable = {id(p) for p in method.trainable_parameters()}
    out = {f"method.{n}": t.detach().clone() for n, t in method.named_parameters() if id(t) not in trainable}
    out.update({f"method.{n}": t.detach().clone() for n, t in method.named_buffers()})
    out.update({f"encoder.{n}": t.detach().clone() for n, t in encoder.model.state_dict().items()})
    return out


def _expected_reads(needs) -> set[tuple[str, str]]:
    want = {("videos", f"tokens_{b}") for b in needs.tokens_at}
    for flag, name in ((needs.emb, "emb"), (needs.cls, "cls"), (needs.pixels, "pixels")):
        if flag:
            want.add(("videos", name))
    if needs.text:
        want.add(("text", "emb"))
    return want


@pytest.mark.parametrize("name, variant", _cases())
def test_method_contract(name, variant, store, deep_encoder, rows, tmp_path):
    from cachekit.cache import FeatureCache
    from cachekit.methods import build_method
    from cachekit.protocols import get_protocol, natural_protocol
    from cachekit.protocols.feeds import training_data
    from cachekit.runs import load_into, load_weights, save_weights
    from cachekit.train import TrainConfig, make_optimizer

    row = rows[(name, tuple(sorted(variant.items())))]
    assert row["available"], row.get("error")
    log = ReadLogStore(store)
    with FeatureCache(log) as cache:
        # builds
        torch.manual_seed(0)
        m = build_method(name, variant, cache.model_info, cache.frames, deep_encoder)
        assert m.needs.to_dict() == row["needs"]
        lazy = any(torch.nn.parameter.is_lazy(p) for p in m.parameters())
        assert (row["trainable_params"] is None) == lazy
        if not lazy:  # the count `clipcache methods` prints
            assert m.num_trainable() == row["trainable_params"]

        # the trainer's data path, sized for one step
        protocol = natural_protocol(m, cache)
        cfg = TrainConfig(protocol=protocol, ways=2, shots=1, queries=1, episodes=1, epochs=1,
                          batch_size=len(cache), val_episodes=0, device="cpu")
        proto = get_protocol(protocol)
        plan = proto.plan(cache, cfg)
        known = np.union1d(plan.classes(cache.labels, "train"), plan.classes(cache.labels, "val"))
        data = training_data(cache, m.needs, "cpu", known, encoder=deep_encoder if m.needs.pixels else None)
        feed = proto.feed(data, cache.labels, plan, cfg)
        assert feed.steps == 1
        if lazy:  # lazy parameters take their shapes from the first input, as in train()
            with torch.no_grad():
                m.eval()
                feed.first(m)
        params = m.trainable_parameters()
        assert m.num_trainable() == sum(p.numel() for p in params)
        assert all(p.requires_grad for p in params)

        # one optimiser step: frozen weights stay, some trainable weight moves
        frozen = _frozen(m, deep_encoder)
        before = [p.detach().clone() for p in params]
        m.train()
        if params:
            for p in (*m.parameters(), *deep_encoder.model.parameters()):
                p.grad = None
            loss = feed.step_loss(m, 0)  # forward + backward of the step's batch or episodes
            assert np.isfinite(loss)
            trainable = {id(p) for p in params}
            no_grad = [n for n, p in m.named_parameters() if id(p) in trainable and p.grad is None]
            assert not no_grad, f"no gradient reached trainable parameters {no_grad[:5]}"
            assert all(bool(torch.isfinite(p.grad).all()) for p in params)
            leaked = [f"method.{n}" for n, p in m.named_parameters() if id(p) not in trainable and p.grad is not None]
            leaked += [f"encoder.{n}" for n, p in deep_encoder.model.named_parameters() if p.grad is not None]
            assert not leaked, f"gradients reached frozen parameters {leaked[:5]}"
            opt = make_optimizer(params, 1e-2, 0.01)
            opt.step()
            assert any(not torch.equal(b, p) for b, p in zip(before, params)), "the step moved no trainable weight"
        else:  # nothing to train (zeroshot, proto): the contract is that scoring changes nothing
            assert row["trainable_params"] == 0
            with torch.no_grad():
                feed.first(m)
        after = _frozen(m, deep_encoder)
        changed = sorted(k for k in frozen if not torch.equal(frozen[k], after[k]))
        assert not changed, f"frozen weights changed: {changed[:5]}"

        # round trip: trainable_state_dict -> safetensors -> a freshly built method -> equal outputs
        m.eval()
        with torch.no_grad():
            want = feed.first(m)
        path = tmp_path / "weights.safetensors"
        save_weights(path, m.trainable_state_dict())
        torch.manual_seed(1)
        m2 = build_method(name, variant, cache.model_info, cache.frames, deep_encoder).eval()
        if lazy:
            with torch.no_grad():
                feed.first(m2)
        load_into(m2, load_weights(path), str(path))
        with torch.no_grad():
            got = feed.first(m2)
        torch.testing.assert_close(got, want, rtol=0, atol=0)

        # read only what CacheNeeds declares (and all of it)
        assert log.log == _expected_reads(m.needs), f"read {sorted(log.log)}, declared {m.needs}"


def test_checkpoints_holding_non_persistent_buffers_still_load(store, deep_encoder, tmp_path):
    """Runs saved before ``trainable_state_dict`` left out non-persistent buffers (EV-CLIP's Swin
    window masks and index tables) hold them; they load, and new checkpoints no longer hold them."""
    from cachekit.cache import FeatureCache
    from cachekit.methods import build_method
    from cachekit.runs import load_into, load_weights, save_weights

    with FeatureCache(store) as cache:
        m = build_method("ev_clip", {"prompts": "mask"}, cache.model_info, cache.frames, deep_encoder)
    transient = {n: b for n, b in m.named_buffers() if n not in m.state_dict()}
    assert transient and not set(transient) & set(m.trainable_state_dict())
    path = tmp_path / "old.safetensors"
    save_weights(path, {**m.trainable_state_dict(), **transient})
    load_into(m, load_weights(path), str(path))
