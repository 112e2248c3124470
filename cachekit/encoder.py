"""The frozen open_clip encoder, wrapped (never copied).

Loads a model from an open_clip name or a JSON model config, with weights from a tag in the
Hugging Face cache, a file, ``local-dir:`` or seeded random init; then gives what the cache
needs: batched preprocessing equal to open_clip's transform, per-frame embeddings, the
pre-projection class token, the tokens entering chosen blocks, the remaining blocks run from
cached tokens, and text embeddings with prompts truncated to their longest length.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence


from clipcache.stores import file_sha256

from .errors import InputError, ModelError, WeightsNotFound
from .toy.files import TOY_TAG, is_toy_weights_file, toy_model_cfg, toy_model_config, toy_tower, toy_weights
from .toy.tower import apply_tower

log = logging.getLogger(__name__)

WEIGHT_SOURCES_HELP = (
    "supply weights one of three ways: --pretrained /path/to/weights.safetensors (or a state-dict "
    ".bin/.pt), --pretrained local-dir:DIR (a folder with open_clip_config.json and the weights), "
    "or the Hugging Face cache (HF_HOME) holding the tag's files; --pretrained toy loads clipcache's own "
    "small toy CLIP; --pretrained random runs without weights (random features, for smoke tests only)"
)
DEFAULT_MODEL = "ViT-B-32"
TOY_MODEL_NAMES = ("toy", "clipcache-toy-clip")  # --model spellings of the toy config besides its JSON path


@dataclass(frozen=True)
class EncoderConfig:
    """Which model and weights to load; resolved fields end up in the store's cache key."""

    model: str = DEFAULT_MODEL  # with pretrained="toy": the toy config (cachekit/data/toy-clip.json)
    pretrained: str = "openai"
    quick_gelu: bool | None = None  # None: from the tag, or the model name's -quickgelu suffix
    seed: int = 0  # for pretrained="random"
    device: str = "auto"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ModelInfo:
    """Sizes a method needs to build itself for a model, with named axes."""

    embed_dim: int  # D' joint embedding width
    width: int  # W ViT width
    layers: int  # L blocks
    heads: int
    grid: tuple[int, int]  # patch grid (h, w); N = h * w
    image_size: int
    text_width: int

    @property
    def n_tokens(self) -> int:  # N + 1
        return self.grid[0] * self.grid[1] + 1

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FrameOutputs:
    emb: "object"  # [F, D'] projected, not normalised
    cls: "object"  # [F, W] pooled token after ln_post, before the projection (the class token, or the tower's max)
    tokens: dict = field(default_factory=dict)  # {L: [F, N+1, W]} tokens entering block L


def _state_sha256(model) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def resolve_model_name(model: str) -> tuple[str, dict | None]:
    """An open_clip model name, or a JSON model config registered under its file stem.

    Returns (name to create, the model config dict or None for built-in names).
    """
    import open_clip

    if model.lower().endswith(".json"):
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"model config {model} not found")
        try:
            cfg = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ModelError(f"model config {model} is not valid JSON: {err}") from err
        cfg = cfg.get("model_cfg", cfg)
        if not {"embed_dim", "vision_cfg", "text_cfg"} <= set(cfg):
            raise ModelError(
                f"model config {model} must hold an open_clip model_cfg with embed_dim, vision_cfg and text_cfg"
            )
        name = f"clipcache-{path.stem}"
        tmp = Path(tempfile.mkdtemp(prefix="clipcache-cfg-")) / f"{name}.json"
        tmp.write_text(json.dumps(cfg))
        open_clip.add_model_config(tmp)
        return name, cfg
    if model not in open_clip.list_models():
        close = [m for m in open_clip.list_models() if model.lower() in m.lower()][:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ModelError(
            f"unknown model {model!r}{hint}; pass an open_clip model name (see open_clip.list_models()) "
            "or a JSON file with a model_cfg"
        )
    return model, None


def _online(timeout: float = 0.5) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _cached_tag_file(model: str, tag: str) -> str | None:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, tag)
    hub = (cfg or {}).get("hf_hub", "")
    if not hub:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    repo = hub.rstrip("/")
    for fname in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        got = try_to_load_from_cache(repo, fname)
        if isinstance(got, str):
            return got
    return None


class _StopForward(Exception):
    """Raised by a hook to end a forward once the last tokens asked for are captured."""


class FrozenCLIP:
    """open_clip CLIP in eval mode with every weight frozen, plus what the cache needs from it."""

    def __init__(self, model, tokenizer, name: str, model_cfg: dict | None, weights: str,
                 weights_sha256: str, quick_gelu: bool, device):
        import torch

        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.model_cfg = model_cfg
        self.weights = weights
        self.weights_sha256 = weights_sha256
        self.quick_gelu = quick_gelu
        self.device = torch.device(device)
        self.preprocess_cfg = self._resolve_preprocess()

    # ----------------------------------------------------------------- facts
    @property
    def visual(self):
        return self.model.visual

    @property
    def info(self) -> ModelInfo:
        v = self.visual
        grid = tuple(int(g) for g in v.grid_size)
        blk = v.transformer.resblocks[0]
        return ModelInfo(
            embed_dim=int(v.output_dim),
            width=int(v.transformer.width),
            layers=len(v.transformer.resblocks),
            heads=int(blk.attn.num_heads),
            grid=grid,  # type: ignore[arg-type]
            image_size=int(self.preprocess_cfg["size"]),
            text_width=int(self.model.transformer.width),
        )

    def _resolve_preprocess(self) -> dict:
        import open_clip

        cfg = dict(open_clip.get_model_preprocess_cfg(self.model))
        size = cfg.get("size", 224)
        if isinstance(size, (tuple, list)):
            if size[0] != size[1]:
                raise ModelError(f"non-square input size {size} is not supported")
            size = size[0]
        out = {
            "size": int(size),
            "mean": [float(x) for x in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)],
            "std": [float(x) for x in cfg.get("std", open_clip.OPENAI_DATASET_STD)],
            "interpolation": cfg.get("interpolation", "bicubic"),
            "resize_mode": cfg.get("resize_mode", "shortest"),
        }
        if out["resize_mode"] not in ("shortest", "squash"):
            raise ModelError(f"resize mode {out['resize_mode']!r} is not supported (shortest, squash)")
        if out["interpolation"] not in ("bicubic", "bilinear"):
            raise ModelError(f"interpolation {out['interpolation']!r} is not supported")
        return out

    def key_fields(self) -> dict:
        """What identifies this encoder's outputs in a cache key."""
        import open_clip
        import torch

        return {
            "model": self.name,
            "model_cfg": self.model_cfg,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "quick_gelu": self.quick_gelu,
            "preprocess": self.preprocess_cfg,
            "open_clip": open_clip.__version__,
            "torch": torch.__version__.split("+")[0],
        }

    # ----------------------------------------------------------------- images
    def preprocess(self, frames):
        """uint8 RGB ``[F, H, W, 3]`` -> normalised ``[F, 3, S, S]`` float32, as open_clip's transform.

        Resize (shorter side to S, antialiased, on uint8 like PIL), centre crop, scale, normalise.
        """
        return self.normalize(self.resize_crop(frames))

    def resize_crop(self, frames):
        """uint8 RGB ``[F, H, W, 3]`` -> uint8 ``[F, 3, S, S]``: the geometric half of
        :meth:`preprocess` (what the pixel cache stores; :func:`cachekit.pixels.resize_crop`)."""
        from .pixels import resize_crop

        return resize_crop(frames, self.preprocess_cfg).contiguous()

    def normalize(self, pixels):
        """uint8 ``[..., 3, S, S]`` -> float32 scaled to [0, 1] and normalised with the model's
        mean and std (the second half of :meth:`preprocess`)."""
        from .pixels import normalise_pixels

        return normalise_pixels(pixels, self.preprocess_cfg)

    def _tokens_hooks(self, token_blocks: Sequence[int], captured: dict, stop: bool) -> list:
        """Pre-hooks that store the tokens entering each of ``token_blocks`` in ``captured``;
        ``stop``: the last one raises :class:`_StopForward` (nothing after it needs to run)."""
        last = max(token_blocks, default=None)
        handles = []
        for blk_idx in token_blocks:
            def pre_hook(_mod, args, kwargs, _i=blk_idx):
                captured[_i] = (args[0] if args else kwargs["x"]).detach()
                if stop and _i == last:
                    raise _StopForward

            handles.append(self.visual.transformer.resblocks[blk_idx].register_forward_pre_hook(
                pre_hook, with_kwargs=True))
        return handles

    def encode_tokens(self, pixels, token_blocks: Sequence[int]) -> dict:
        """Tokens entering ``token_blocks`` only: the forward stops before the last block asked
        for, so extending a store with early blocks costs a fraction of a full pass.

        ``pixels`` ``[F, 3, S, S]``; returns ``{L: [F, N+1, W]}``, equal to :meth:`encode_frames`'s.
        """
        captured: dict = {}
        handles = self._tokens_hooks(token_blocks, captured, stop=True)
        try:
            self.model.encode_image(pixels)
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        return captured

    def encode_frames(self, pixels, token_blocks: Sequence[int] = ()) -> FrameOutputs:
        """One forward: projected embeddings, class token before projection, tokens entering blocks.

        ``pixels`` ``[F, 3, S, S]``; returns ``emb [F, D']``, ``cls [F, W]``, ``tokens {L: [F, N+1, W]}``.
        """
        v = self.visual
        captured: dict = {}
        handles = self._tokens_hooks(token_blocks, captured, stop=False)
        handles.append(v.ln_post.register_forward_hook(lambda _m, _a, out: captured.__setitem__("post", out)))
        try:
            emb = self.model.encode_image(pixels)
        finally:
            for h in handles:
                h.remove()
        post = captured.pop("post")
        cls = post if post.ndim == 2 else v._global_pool(post)[0]
        return FrameOutputs(emb=emb, cls=cls, tokens=captured)

    def embed(self, pixels):
        """Patch embedding, class token, positions, ``ln_pre``: ``[F, 3, S, S] -> [F, N+1, W]``
        (the tokens entering block 0)."""
        return self.visual._embeds(pixels)

    def run_blocks(self, x, start: int = 0, stop: int | None = None, overrides=None, checkpointing: bool = False):
        """Visual blocks ``start..stop-1`` on the tokens entering ``start``: ``[F, N+1, W] -> [F, N+1, W]``.

        ``overrides[l](block, x)`` runs in place of block l (open_clip's own module is passed in);
        ``checkpointing``: per block, non-reentrant (recompute instead of keeping activations).
        """
        from torch.utils.checkpoint import checkpoint

        blocks = self.visual.transformer.resblocks
        overrides = overrides or {}
        for i in range(start, len(blocks) if stop is None else stop):
            blk, ov = blocks[i], overrides.get(i)
            if ov is None:
                x = checkpoint(blk, x, use_reentrant=False) if checkpointing else blk(x)
            else:
                x = checkpoint(ov, blk, x, use_reentrant=False) if checkpointing else ov(blk, x)
        return x

    def head(self, x):
        """``ln_post`` + pooling + projection: ``[F, N+1, W] -> [F, D']`` (open_clip's own ``_pool``)."""
        v = self.visual
        pooled, _ = v._pool(x)
        return pooled @ v.proj if v.proj is not None else pooled

    def forward_from_block(self, tokens, block: int):
        """Run blocks ``block..L-1``, pooling and projection on tokens entering ``block``.

        ``tokens [F, N+1, W]`` -> ``emb [F, D']``; equals :meth:`encode_frames` on the pixels
        those tokens came from. Differentiable (used by methods that sit inside the encoder).
        """
        return self.head(self.run_blocks(tokens, block))

    # ----------------------------------------------------------------- text
    def tokenize(self, texts: Sequence[str]):
        return self.tokenizer(list(texts))

    def encode_text(self, texts: Sequence[str], batch_size: int = 256):
        """Text embeddings ``[P, D']`` (projected, not normalised), in batches.

        With CLIP's causal mask and end-of-text pooling, positions after a prompt's end never
        influence it, so the transformer runs only up to the longest prompt of each batch.
        """
        import torch

        outs = []
        for i in range(0, len(texts), batch_size):
            tok = self.tokenize(texts[i: i + batch_size]).to(self.device)
            outs.append(self._encode_text_truncated(tok))
        return torch.cat(outs) if outs else torch.empty(0, self.info.embed_dim)

    @property
    def causal_text(self) -> bool:
        """A causal CLIP text tower with end-of-text (argmax) pooling: it can be run truncated."""
        m = self.model
        return getattr(m, "attn_mask", None) is not None and getattr(m, "text_pool_type", None) == "argmax"

    def _encode_text_truncated(self, tok):
        if not self.causal_text:
            return self.model.encode_text(tok)  # not a causal CLIP text tower: no safe truncation
        return self.text_tower(tok)

    def text_tower(self, tokens, overrides=None, checkpointing: bool = False):
        """Projected text embeddings ``[P, D']`` of token ids ``[P, n_ctx]``, the causal tower run
        only up to the longest prompt (later positions never reach an end-of-text token).

        ``overrides[l](block, x, mask)`` runs in place of text block l (mask: the causal ``[n, n]``).
        """
        from open_clip.transformer import text_global_pool
        from torch.utils.checkpoint import checkpoint

        m = self.model
        overrides = overrides or {}
        n = int(tokens.argmax(dim=-1).max()) + 1
        tokens = tokens[:, :n]  # [P, n]
        mask = m.attn_mask[:n, :n]
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(tokens).to(cast) + m.positional_embedding[:n].to(cast)  # [P, n, W_text]
        for i, blk in enumerate(m.transformer.resblocks):
            ov = overrides.get(i)
            if ov is None:
                x = (checkpoint(blk, x, None, None, mask, use_reentrant=False) if checkpointing
                     else blk(x, attn_mask=mask))
            else:
                x = checkpoint(ov, blk, x, mask, use_reentrant=False) if checkpointing else ov(blk, x, mask)
        x = m.ln_final(x)
        x = text_global_pool(x, tokens, "argmax")  # [P, W_text]
        proj = m.text_projection
        if proj is None:
            return x
        return proj(x) if hasattr(proj, "weight") else x @ proj


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device} asked for, but no CUDA device is available (use cpu or auto)")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise InputError(f"--device must be auto, cpu or cuda[:N], not {device!r}")
    return device


def _is_toy_config(model: str) -> bool:
    """Whether ``--model`` names the toy CLIP's config: ``toy``, its registered name, or a JSON
    file with the same model_cfg (a run's cache key written back to a file is one)."""
    if model in TOY_MODEL_NAMES:
        return True
    if not model.lower().endswith(".json"):
        return False
    path = Path(model)
    try:
        if path.resolve() == toy_model_config().resolve():
            return True
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and cfg.get("model_cfg", cfg) == toy_model_cfg()


def resolve_toy(cfg: EncoderConfig) -> tuple[str, str, str | None]:
    """``(model, weights file, cache-key weights name)`` to load, with the toy CLIP resolved.

    ``pretrained="toy"``: the toy config and :func:`cachekit.toy.files.toy_weights` (the packaged
    file, or ``$CLIPCACHE_TOY_WEIGHTS``), named ``toy`` in the key; the model must be the default
    or the toy config. A weights file whose safetensors metadata says it is the toy CLIP: named
    ``toy:FILE``, loaded into the toy config when ``--model`` is left at its default. Anything else
    is returned as given, with no key name.
    """
    pre = cfg.pretrained
    if pre == TOY_TAG:
        if cfg.model != DEFAULT_MODEL and not _is_toy_config(cfg.model):
            raise ModelError(f"--pretrained toy: the toy weights go with the toy model config, not --model "
                             f"{cfg.model}; leave --model out (or pass --model toy)")
        path = toy_weights()
        if not path.is_file():
            raise WeightsNotFound(f"--pretrained toy: the toy CLIP weights {path} are not there; build them "
                                  f"with `clipcache pretrain-toy` (or `make toy`), or point CLIPCACHE_TOY_WEIGHTS "
                                  f"at a copy")
        return str(toy_model_config()), str(path), TOY_TAG
    if pre not in ("random",) and not pre.startswith("local-dir:") and is_toy_weights_file(pre):
        model = str(toy_model_config()) if cfg.model == DEFAULT_MODEL or _is_toy_config(cfg.model) else cfg.model
        return model, pre, f"{TOY_TAG}:{Path(pre).name}"
    if _is_toy_config(cfg.model) and not cfg.model.lower().endswith(".json"):
        return str(toy_model_config()), pre, None  # --model toy with other weights (random, a file)
    return cfg.model, pre, None


def _create_unloaded(open_clip, name: str, quick: bool, kwargs: dict):
    """``open_clip.create_model`` without weights, without its root-logger "no pretrained weights
    loaded" warning (random weights are announced by the caller; a toy tower loads its file next)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        return open_clip.create_model(name, pretrained=None, force_quick_gelu=quick, **kwargs)
    finally:
        root.setLevel(level)


def load_clip(cfg: EncoderConfig) -> FrozenCLIP:
    """Build the frozen encoder from a name/config and a weights source; fail fast offline."""
    import open_clip
    import torch

    device = pick_device(cfg.device)
    model_arg, pre, toy_name = resolve_toy(cfg)
    name, model_cfg = resolve_model_name(model_arg)
    quick = cfg.quick_gelu
    if quick is None:
        quick = name.endswith("-quickgelu") or bool((model_cfg or {}).get("quick_gelu", False))
    kwargs = dict(device="cpu", precision="fp32")
    create_name = name
    if pre == "random":
        # Said once, by the caller (the CLI prints a banner with its summary), not per load.
        log.info("RANDOM WEIGHTS: %s is randomly initialised (seed %d); features carry no meaning",
                 name, cfg.seed)
        torch.manual_seed(cfg.seed)
        model = _create_unloaded(open_clip, name, quick, kwargs)
        weights, sha = f"random:{cfg.seed}", None
    elif pre.startswith("local-dir:"):
        d = Path(pre[len("local-dir:"):])
        if not (d / "open_clip_config.json").is_file():
            raise WeightsNotFound(f"{pre}: no open_clip_config.json in {d}; {WEIGHT_SOURCES_HELP}")
        files = [d / f for f in ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                                 "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth",
                                 "model.safetensors", "pytorch_model.bin") if (d / f).is_file()]
        if not files:
            raise WeightsNotFound(f"{pre}: no weights file in {d}; {WEIGHT_SOURCES_HELP}")
        create_name = f"local-dir:{d}"
        try:
            model_cfg = json.loads((d / "open_clip_config.json").read_text()).get("model_cfg")
        except (OSError, json.JSONDecodeError) as err:
            raise ModelError(f"{d}/open_clip_config.json is not valid JSON: {err}") from err
        quick = bool((model_cfg or {}).get("quick_gelu", quick)) if cfg.quick_gelu is None else quick
        name = f"local-dir:{d.name}"
        try:
            model = open_clip.create_model(create_name, force_quick_gelu=quick, **kwargs)
        except Exception as err:  # noqa: BLE001 - open_clip raises many types for bad files
            raise WeightsNotFound(f"cannot load {pre}: {str(err).splitlines()[0]}") from err
        weights, sha = pre, file_sha256(files[0])
    elif Path(pre).suffix or os.sep in pre or Path(pre).exists():
        path = Path(pre)
        if not path.is_file():
            raise WeightsNotFound(f"weights file {pre} not found; {WEIGHT_SOURCES_HELP}")
        if _is_torchscript(path):
            raise WeightsNotFound(
                f"{pre} is a TorchScript (JIT) archive, which clipcache does not load; pass a state-dict "
                "(.safetensors/.bin/.pt) or local-dir:DIR with open_clip_config.json, e.g. the "
                "timm/vit_base_patch32_clip_224.openai files from the Hugging Face hub"
            )
        tower = toy_tower(path) if toy_name else "vit"
        try:
            if tower == "vit":
                model = open_clip.create_model(name, pretrained=str(path), force_quick_gelu=quick, **kwargs)
            else:  # another toy tower: built first, then loaded (open_clip's config cannot describe it)
                model = _create_unloaded(open_clip, name, quick, kwargs)
                apply_tower(model, tower)
                open_clip.load_checkpoint(model, str(path))
        except Exception as err:  # noqa: BLE001
            raise WeightsNotFound(f"cannot load weights {pre} into {name}: {str(err).splitlines()[0]}") from err
        weights, sha = toy_name or str(path.name), file_sha256(path)
    else:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pre not in tags:
            raise ModelError(
                f"unknown pretrained tag {pre!r} for {name} (known: {', '.join(tags) or 'none'}); "
                f"or {WEIGHT_SOURCES_HELP}"
            )
        tag_cfg = open_clip.get_pretrained_cfg(name, pre) or {}
        if cfg.quick_gelu is None:
            quick = bool(tag_cfg.get("quick_gelu", quick))
        cached = _cached_tag_file(name, pre)
        if cached is None and not _online():
            raise WeightsNotFound(f"no cached weights for {name} '{pre}' and no network; {WEIGHT_SOURCES_HELP}")
        if cached is not None:
            os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            model = open_clip.create_model(name, pretrained=pre, force_quick_gelu=quick, **kwargs)
        except Exception as err:  # noqa: BLE001
            raise WeightsNotFound(f"cannot load {name} '{pre}': {str(err).splitlines()[0]}; {WEIGHT_SOURCES_HELP}") from err
        cached = cached or _cached_tag_file(name, pre)
        weights, sha = f"tag:{pre}", (file_sha256(cached) if cached else None)
    if sha is None:
        sha = _state_sha256(model)
    tokenizer = open_clip.get_tokenizer(create_name if create_name.startswith("local-dir:") else name)
    model = model.to(device)
    return FrozenCLIP(model, tokenizer, name, model_cfg, weights, sha, bool(quick), device)
