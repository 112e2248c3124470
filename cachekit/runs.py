"""Run directories: what a training run leaves behind, and how to rebuild its method from it alone.

A run directory holds::

    run.json            method name + resolved config, protocol + training config, the store's
                        cache key, ModelInfo, frames, trainable count, best validation accuracy,
                        sha256 of every checkpoint file, notes
    model.safetensors   the selected (best on validation) ``method.trainable_state_dict()``
    last.safetensors    the latest weights, with
    resume.pt           optimiser, scheduler and RNG state (for ``train --resume``)
    splits.json         the resolved split (cachekit.protocols): the videos (by key) and classes that
                        trained, selected the checkpoint and test

:func:`load_run` rebuilds the method from ``run.json`` and ``model.safetensors``, refusing a store
whose cache key differs and any checkpoint whose hash does not match ``run.json``.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

from clipcache.stores import file_sha256
from clipcache.stores.base import atomic_write_bytes

from .encoder import EncoderConfig, FrozenCLIP, ModelInfo, load_clip
from .errors import CacheKeyMismatch, RunError
from .toy.files import TOY_TAG, toy_weights

RUN_FORMAT = "clipcache-run"
RUN_VERSION = 1
RUN_JSON = "run.json"
MODEL_FILE = "model.safetensors"
LAST_FILE = "last.safetensors"
STATE_FILE = "resume.pt"
SPLITS_FILE = "splits.json"


# --------------------------------------------------------------------------- files
# Every file of a run is written whole, atomically and durably (fsync of the file and of its
# directory): clipcache.stores.base.atomic_write_bytes.
def write_json(path: str | os.PathLike, doc: dict) -> None:
    atomic_write_bytes(Path(path), (json.dumps(doc, indent=2) + "\n").encode("utf-8"))


PENDING = ".pending"


def pending(path: Path) -> Path:
    """Where a checkpoint file waits until ``run.json`` records its hash (the commit point)."""
    return path.with_name(path.name + PENDING)


def publish_pending(run_dir: str | os.PathLike, meta: dict) -> None:
    """Move each staged checkpoint file whose sha256 ``run.json`` records into place.

    Checkpoints are written in two steps so that a kill at any moment leaves a run that resumes:
    files are staged as ``NAME.pending``, then ``run.json`` records their hashes, then they
    replace ``NAME``. A kill before ``run.json`` leaves the old, recorded files; a kill after it
    leaves staged files that this completes (on the next resume or load).
    """
    for name, want in meta.get("checkpoints", {}).items():
        final, staged = Path(run_dir) / name, pending(Path(run_dir) / name)
        if staged.is_file() and file_sha256(staged) == want:
            os.replace(staged, final)


def save_weights(path: str | os.PathLike, state: dict) -> str:
    """Write a state dict as safetensors (atomically); returns the file's sha256."""
    from safetensors.torch import save

    path = Path(path)
    atomic_write_bytes(path, save({k: v.detach().contiguous().cpu() for k, v in state.items()}))
    return file_sha256(path)


def save_state(path: str | os.PathLike, state: dict) -> str:
    """Write resume state (optimiser, scheduler, RNG) with ``torch.save``; returns its sha256."""
    import torch

    path = Path(path)
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())
    return file_sha256(path)


def read_run(run_dir: str | os.PathLike) -> dict:
    """``run.json`` of a run directory; :class:`RunError` if missing or not a run file."""
    path = Path(run_dir) / RUN_JSON
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise RunError(f"{run_dir} is not a run directory (no {RUN_JSON})") from err
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunError(f"{path} cannot be read as JSON: {err}") from err
    if not isinstance(doc, dict) or doc.get("format") != RUN_FORMAT:
        raise RunError(f"{path} is not a clipcache run file (no \"format\": \"{RUN_FORMAT}\")")
    if doc.get("version") != RUN_VERSION:
        raise RunError(f"{path}: run format version {doc.get('version')!r} is not supported (this reads {RUN_VERSION})")
    return doc


def checked_file(run_dir: str | os.PathLike, name: str, meta: dict) -> Path:
    """Path of checkpoint ``name`` after checking it exists and matches its sha256 in ``run.json``."""
    path = Path(run_dir) / name
    want = meta.get("checkpoints", {}).get(name)
    staged = pending(path)
    if want is not None and staged.is_file() and file_sha256(staged) == want:
        os.replace(staged, path)  # a checkpoint committed in run.json but killed before publishing
    if want is None:
        raise RunError(f"run {run_dir} has no {name} recorded (training did not reach a checkpoint)")
    if not path.is_file():
        raise RunError(f"run {run_dir}: {name} is missing")
    if file_sha256(path) != want:
        raise RunError(f"run {run_dir}: {name} does not match the sha256 in {RUN_JSON} (altered or truncated)")
    return path


def load_weights(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise RunError(f"{path} is not a readable safetensors file: {err}") from err


def check_cache_key(meta: dict, cache_key: dict, run_dir: str | os.PathLike = "run") -> None:
    """Refuse a store whose cache key differs from the run's, naming the differing fields."""
    from .cachekey import key_differences

    have = meta.get("store", {}).get("cache_key", {})
    diff = key_differences(have, cache_key)
    if diff:
        raise CacheKeyMismatch(
            f"run {run_dir} was trained on a store with a different cache key ({', '.join(diff)}); "
            "use the store it was trained on, or train again on this one"
        )


# --------------------------------------------------------------------------- encoder
def unfinished_run_note(meta: dict, run_dir) -> str | None:
    """A line for reports of a run whose training did not finish (Ctrl-C, ``--stop-after``, a
    crash): its weights are those of the last checkpoint, not the trained ones."""
    status = meta.get("status")
    if status in (None, "complete"):
        return None
    train = meta.get("train") or {}
    steps = train.get("steps")
    return (f"run {Path(str(run_dir)).name} did not finish (status {status!r} at step {meta.get('step')} of "
            f"{steps}): its weights are that checkpoint's (clipcache train --resume finishes it)")


class DeferredEncoder(FrozenCLIP):
    """A :class:`FrozenCLIP` that loads on first use.

    Methods are built with one as ``backbone``: a method that never touches it (every method
    trained from the cache) never pays for loading weights; one that does gets the real encoder.
    Loading runs under a forked RNG, so it never shifts the caller's random stream.
    """

    def __init__(self, load: Callable[[], FrozenCLIP]):  # noqa: D107 - no FrozenCLIP.__init__ until loaded
        self.__dict__["_load"] = load
        self.__dict__["_loaded"] = False

    def __getattr__(self, name: str):  # only called for attributes not set yet
        if name.startswith("__") or self.__dict__["_loaded"]:
            raise AttributeError(name)
        self.load()
        return getattr(self, name)

    @property
    def loaded(self) -> bool:
        return self.__dict__["_loaded"]

    def load(self) -> FrozenCLIP:
        if not self.__dict__["_loaded"]:
            import torch

            with torch.random.fork_rng(devices=[]):
                enc = self.__dict__["_load"]()
            self.__dict__.update(enc.__dict__)
            self.__dict__["_loaded"] = True
        return self


_KEY_CHECKED = ("model_cfg", "weights_sha256", "quick_gelu", "preprocess")


def _toy_file_is(cache_key: dict) -> bool:
    """Whether ``--pretrained toy`` would load the very file a store's key names as ``toy:FILE``."""
    path = toy_weights()
    return path.is_file() and file_sha256(path) == cache_key.get("weights_sha256")


def store_encoder_config(cache_key: dict, pretrained: str | None = None, device: str = "auto") -> EncoderConfig:
    """The :class:`EncoderConfig` that loads the frozen encoder a store was extracted with (model and
    weights from its cache key): what a process that loads it itself (a Ray actor) is given.

    Random, tag and toy weights are found from the key; weights from a file or ``local-dir:`` must be
    passed as ``pretrained``.
    """
    model = cache_key.get("model")
    weights = str(cache_key.get("weights", ""))
    if not model:
        raise CacheKeyMismatch("the store's cache key names no model")
    seed = 0
    if pretrained is None:
        if weights.startswith("random:"):
            pretrained, seed = "random", int(weights.split(":", 1)[1])
        elif weights.startswith("tag:"):
            pretrained = weights[4:]
        elif weights == TOY_TAG or (weights.startswith(f"{TOY_TAG}:") and _toy_file_is(cache_key)):
            pretrained = TOY_TAG  # the packaged toy CLIP (or $CLIPCACHE_TOY_WEIGHTS); its hash is checked on loading
        else:
            raise RunError(
                f"the store was extracted with weights {weights!r}; pass --pretrained with that file or "
                "local-dir:DIR to load the encoder this method needs"
            )
    model_cfg = cache_key.get("model_cfg")
    if model_cfg is not None:  # a JSON model config: register it under the same name
        stem = model.removeprefix("clipcache-")
        path = Path(tempfile.mkdtemp(prefix="clipcache-run-cfg-")) / f"{stem}.json"
        path.write_text(json.dumps(model_cfg))
        model = str(path)
    return EncoderConfig(model=model, pretrained=pretrained, quick_gelu=cache_key.get("quick_gelu"),
                         seed=seed, device=device)


def check_store_encoder(enc: FrozenCLIP, cache_key: dict) -> FrozenCLIP:
    """``enc`` if it reproduces the key's model config, weights hash and preprocessing, else refused."""
    have = enc.key_fields()
    diff = [f for f in _KEY_CHECKED if f in cache_key and have.get(f) != cache_key.get(f)]
    if diff:
        raise CacheKeyMismatch(f"the loaded encoder differs from the store's ({', '.join(diff)}); "
                               "pass --pretrained with the weights the store was extracted with")
    return enc


def load_store_encoder(cache_key: dict, pretrained: str | None = None, device: str = "auto") -> FrozenCLIP:
    """Load the frozen encoder a store was extracted with (see :func:`store_encoder_config`); it must
    reproduce the key's weights hash."""
    return check_store_encoder(load_clip(store_encoder_config(cache_key, pretrained, device)), cache_key)


# --------------------------------------------------------------------------- rebuild
def build_from_meta(meta: dict, backbone=None, device: str = "cpu", pretrained: str | None = None):
    """The run's method with fresh weights (on the CPU: load a checkpoint, then move it), and the
    backbone it was given; name, resolved config, ModelInfo and frames come from ``meta``.
    ``device`` is where a backbone loaded from the cache key goes."""
    from .methods import method_module, make_config

    m = meta["method"]
    info = ModelInfo(**{**meta["model_info"], "grid": tuple(meta["model_info"]["grid"])})
    mod = method_module(m["name"])
    cfg = make_config(m["name"], m["config"])
    if backbone is None:
        key = meta["store"]["cache_key"]
        backbone = DeferredEncoder(lambda: load_store_encoder(key, pretrained, device))
    method = mod.build(cfg, info, int(meta["frames"]), backbone)
    if method.needs.backbone and isinstance(backbone, DeferredEncoder):
        backbone.load()
    return method, backbone


def load_into(method, state: dict, what: str) -> None:
    """Load a trainable state dict; it must hold exactly the method's trainable entries.

    Entries named like the method's non-persistent buffers (derived at build time; checkpoints
    written before ``trainable_state_dict`` left them out hold them) are dropped, not loaded.
    """
    transient = {n for n, _ in method.named_buffers()} - set(method.state_dict(keep_vars=True))
    state = {k: v for k, v in state.items() if k not in transient}
    result = method.load_state_dict(state, strict=False)
    expected = set(method.trainable_state_dict())
    missing = sorted(expected - set(state))
    if result.unexpected_keys or missing:
        bad = (result.unexpected_keys or missing)[0]
        raise RunError(f"{what} does not fit the method's configuration "
                       f"({len(missing)} missing, {len(result.unexpected_keys)} unexpected entries, e.g. {bad})")


def load_run(run_dir: str | os.PathLike, cache_key: dict | None = None, backbone=None,
             device: str = "cpu", pretrained: str | None = None):
    """Rebuild a trained method from a run directory alone: returns ``(method, meta)``.

    ``cache_key``: the store the caller will read; a different key raises
    :class:`CacheKeyMismatch`. ``backbone``: a loaded :class:`FrozenCLIP` for methods that run the
    encoder (else it is loaded from the run's cache key when the method needs it). The method is
    returned in eval mode with the selected weights (``model.safetensors``, hash-checked).
    """
    meta = read_run(run_dir)
    if cache_key is not None:
        check_cache_key(meta, cache_key, run_dir)
    path = checked_file(run_dir, MODEL_FILE, meta)
    method, _ = build_from_meta(meta, backbone, device, pretrained)
    load_into(method, load_weights(path), f"{path}")
    return method.to(device).eval(), meta
