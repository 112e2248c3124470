"""Contrastive pretraining of the toy CLIP on drawn, captioned still images (:mod:`.scenes`).

The recipe is CLIP's: symmetric InfoNCE between image and caption embeddings with a learnt
temperature, AdamW, linear warm-up then cosine decay. Captions that repeat inside a batch
("a red square" twice) are positives of each other rather than false negatives. Two additions,
each a linear head on the image embedding over single-object images, thrown away afterwards: one
names the object's place (one of nine), weighted ``place_loss`` falling to 0 by ``place_until`` of
the run; one names its shape (one of four), ``shape_loss`` falling to 0 by ``shape_until``. Without
them the encoder never learnt place and learnt shape slowly (image and text tower start blind to
both and each can learn them only through the other; see ``benchmarks/toy_limits.py``). The vision
tower is the stem tower (:mod:`.tower`), which finds small objects faster than 16-pixel patches;
its stem trains under bfloat16 autocast (``stem_dtype``), 0.8 of a float32 step on 2 CPU cores.
Every batch is drawn from ``SeedSequence([seed, step])``, torch is seeded and runs deterministic
kernels on a fixed number of threads, so one command rebuilds the same weights on the same machine.
The weights are written as float16 safetensors (open_clip loads them into its float32 model).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..synth.vocab import POSITIONS, SHAPES
from .files import METADATA_KEY, TOY_TAG, toy_model_cfg, toy_model_config, toy_weights  # paths re-exported
from .scenes import SIZINGS, scene_batch
from .tower import apply_tower, check_tower

PLACES = list(POSITIONS)
# Auxiliary heads (see _pretrain): name -> (the SceneObject field it names, its classes), in the
# order they are built (the place head first, as before the shape head existed: same init stream).
AUX_HEADS = {"place": ("position", PLACES), "shape": ("shape", list(SHAPES))}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig:
    """How the toy CLIP is pretrained; saved in the weights' metadata and the report."""

    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.1
    seed: int = 0
    threads: int = 2  # torch intra-op threads: fixed, so the float sums are always the same
    device: str = "cpu"
    probe_images: int = 600
    place_loss: float = 1.0  # weight of the auxiliary place head on the image embedding (see _pretrain) ...
    place_until: float = 0.5  # ... falling linearly to 0 over this fraction of the steps
    shape_loss: float = 1.0  # weight of an auxiliary shape head (4-way, single objects); 0: none ...
    shape_until: float = 1.0  # ... falling linearly to 0 over this fraction of the steps
    tower: str = "stem_max"  # the vision tower (:data:`.tower.TOWERS`); the loader rebuilds it from the metadata
    sizing: str = "radius"  # how a size word's radius is drawn per shape (:data:`.scenes.SIZINGS`)
    stem_dtype: str = "bfloat16"  # autocast dtype of the conv stem while training ("float32": none); see _stem_autocast
    size_words: float = 0.0  # probability that a lone subject's caption names its size (Scene.caption); 0.4 before
    # the shipped toy: size words put size on an axis of the embedding, along which sizes beyond the trained
    # ones went far out and took shape with them (benchmarks/toy_limits.py --only-shape-information)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "threads", "probe_images"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be an integer >= 1, got {v!r}")
        if not (0 <= self.warmup < self.steps):
            raise InputError(f"warmup must be in [0, steps), got {self.warmup}")
        for head in AUX_HEADS:
            loss, until = getattr(self, f"{head}_loss"), getattr(self, f"{head}_until")
            if not (loss >= 0 and 0 < until <= 1):
                raise InputError(f"{head}_loss must be >= 0 and {head}_until in (0, 1], got {loss}, {until}")
        check_tower(self.tower)
        if self.sizing not in SIZINGS:
            raise InputError(f"sizing must be one of {', '.join(SIZINGS)}, got {self.sizing!r}")
        if self.stem_dtype not in ("float32", "bfloat16"):
            raise InputError(f"stem_dtype must be float32 or bfloat16, got {self.stem_dtype!r}")
        if not (0 <= self.size_words <= 1):
            raise InputError(f"size_words must be a probability in [0, 1], got {self.size_words!r}")
        if not (self.lr > 0 and self.weight_decay >= 0):
            raise InputError(f"lr must be > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")


class _Prefetch:
    """Draws batch ``step + 1`` on a thread while the model trains on batch ``step`` (numpy drawing
    releases the GIL for most of its work)."""

    def __init__(self, seed: int, batch: int, size: int, start: int, sizing: str = "radius", size_words: float = 0.0):
        self.seed, self.batch, self.size, self.sizing, self.size_words = seed, batch, size, sizing, size_words
        self._next = start
        self._thread: threading.Thread | None = None
        self._result = None
        self._launch()

    def _launch(self) -> None:
        step = self._next

        def work():
            self._result = scene_batch(self.seed, step, self.batch, self.size, self.sizing, self.size_words)

        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()

    def get(self):
        self._thread.join()
        out = self._result
        self._next += 1
        self._launch()
        return out


@contextlib.contextmanager
def _stem_autocast(visual, dtype: str, device_type: str):
    """Runs the vision tower's stem (``visual.conv1``) under ``dtype`` autocast while pretraining and
    puts the plain stem back afterwards (same state-dict keys; weights stay float32, the file float16).
    The conv stem's 56- and 28-pixel layers cost half a float32 step on 2 CPU cores; with a bfloat16
    stem a step takes about 0.8 of the time."""
    import torch

    if dtype == "float32":
        yield
        return
    stem = visual.conv1

    class Stem(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = stem

        def forward(self, x):  # [F, 3, S, S] -> [F, W, S/16, S/16], float32 out
            with torch.autocast(device_type, dtype=getattr(torch, dtype)):
                return self.inner(x).float()

    visual.conv1 = Stem()
    try:
        yield
    finally:
        visual.conv1 = stem


def _clip_loss(img, txt, logit_scale, captions: list[str]):
    """Symmetric InfoNCE; identical captions in the batch share the probability mass."""
    import torch
    import torch.nn.functional as F

    img = F.normalize(img, dim=-1)  # [B, D']
    txt = F.normalize(txt, dim=-1)  # [B, D']
    logits = logit_scale.exp().clamp(max=100) * img @ txt.T  # [B, B]
    ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    cid = torch.tensor([ids[c] for c in captions], device=img.device)
    same = (cid[:, None] == cid[None, :]).float()  # [B, B]
    target = same / same.sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def probe(clip, seed: int, n: int, sizing: str = "radius") -> dict:
    """Zero-shot accuracy on held-out drawn images (a stream the training never draws), single
    objects only: the subject's colour x shape among all such phrases, colour and shape alone,
    and its place among the nine (``"a red square on the left"``, ... with its own colour and shape)."""
    import torch

    from ..synth.vocab import COLOURS, SHAPES, object_phrase
    from .scenes import place_phrase

    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    places = PLACES
    with torch.no_grad():
        text = clip.encode_text([object_phrase(c, s) for c, s in pairs])  # [P, D'] normalised
        placed = clip.encode_text([object_phrase(c, s) + place_phrase(p) for c, s in pairs for p in places])
        placed = placed.reshape(len(pairs), len(places), -1)  # [P, 9, D']
        images, _, scenes = scene_batch(seed + 1_000_003, 0, n, clip.preprocess_cfg["size"], sizing)
        single = [i for i, sc in enumerate(scenes) if len(sc.objects) == 1]
        emb = clip.encode_frames(clip.preprocess(images[single]).to(clip.device)).emb
        emb = torch.nn.functional.normalize(emb.float(), dim=-1)  # [I, D']
        pred = (emb @ text.T.to(emb.device)).argmax(1).cpu().numpy()
        truth = [(scenes[i].objects[0].colour, scenes[i].objects[0].shape) for i in single]
        own = placed[[pairs.index(t) for t in truth]].to(emb.device)  # [I, 9, D']
        where = torch.einsum("id,ipd->ip", emb, own).argmax(1).cpu().numpy()
    got = [pairs[p] for p in pred]
    return {
        "images": len(single),
        "colour_and_shape": round(100 * float(np.mean([g == t for g, t in zip(got, truth)])), 1),
        "colour": round(100 * float(np.mean([g[0] == t[0] for g, t in zip(got, truth)])), 1),
        "shape": round(100 * float(np.mean([g[1] == t[1] for g, t in zip(got, truth)])), 1),
        "chance": round(100 / len(pairs), 1),
        "place": round(100 * float(np.mean([places[w] == scenes[i].objects[0].position
                                             for w, i in zip(where, single)])), 1),
        "place_chance": round(100 / len(places), 1),
    }


def pretrain(out: str | Path, cfg: PretrainConfig = PretrainConfig(), progress: bool = False) -> dict:
    """Pretrain the toy CLIP and write ``out`` (safetensors) and ``<stem>-pretrain.json`` beside it
    (report). torch's thread count and deterministic mode are set for the run and restored after."""
    import torch

    out = Path(out)
    if out.suffix != ".safetensors":
        raise InputError(f"the toy weights are written as .safetensors, not {out.name}")
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _pretrain(out, cfg, progress)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def _pretrain(out: Path, cfg: PretrainConfig, progress: bool) -> dict:
    import torch
    from safetensors.torch import save_file

    from ..encoder import EncoderConfig, load_clip

    torch.manual_seed(cfg.seed)
    clip = load_clip(EncoderConfig(model=str(toy_model_config()), pretrained="random", seed=cfg.seed,
                                   device=cfg.device))
    apply_tower(clip.model, cfg.tower)
    model = clip.model.train().requires_grad_(True)
    if toy_model_cfg()["vision_cfg"].get("pos_embed_type") == "sin_cos_2d":  # fixed, as open_clip (and MAE) mean it
        model.visual.positional_embedding.requires_grad_(False)
    size = clip.preprocess_cfg["size"]
    # The auxiliary place head (a linear 9-way classifier of a single object's place from the image
    # embedding, thrown away after pretraining): contrastive learning alone leaves place unlearnt
    # (image and text tower both start blind to it and each learns it only through the other).
    # Its weight falls to 0 by ``place_until``: once both towers know place words, the contrastive
    # loss keeps them, and the rest of the run serves every word (a constant weight cost size and
    # shape: the approach / grow reversals fell from ~100% to ~60%).
    # An auxiliary shape head works the same way over the four shapes, at a weight falling to 0 over
    # the whole run: shape is the slowest factor to learn (see benchmarks/toy_limits.py), as place was
    # before its head; with it and the stem tower, shape at trained sizes went from 41% to 89%.
    heads = {name: torch.nn.Linear(model.visual.output_dim, len(classes)).to(clip.device)
             for name, (_, classes) in AUX_HEADS.items() if getattr(cfg, f"{name}_loss") > 0}
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params += [(f"{name}_head.{n}", p) for name, head in heads.items() for n, p in head.named_parameters()]
    decay = [p for n, p in params if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in params if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * frac))

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, desc="toy pretrain", unit="step")
    feed = _Prefetch(cfg.seed, cfg.batch_size, size, 0, cfg.sizing, cfg.size_words)
    curve, t0 = [], time.perf_counter()
    with _stem_autocast(model.visual, cfg.stem_dtype, torch.device(clip.device).type):
        for step in range(cfg.steps):
            images, captions, scenes = feed.get()
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            pixels = clip.preprocess(images).to(clip.device)  # [B, 3, S, S]
            tokens = clip.tokenize(captions).to(clip.device)  # [B, ctx]
            img = model.encode_image(pixels)
            txt = model.encode_text(tokens)
            loss = _clip_loss(img, txt, model.logit_scale, captions)
            single = [i for i, sc in enumerate(scenes) if len(sc.objects) == 1]  # one object: one place, one shape
            for name, head in heads.items():
                until = getattr(cfg, f"{name}_until") * cfg.steps
                weight = getattr(cfg, f"{name}_loss") * max(0.0, 1.0 - step / until)
                if single and weight > 0:
                    field, classes = AUX_HEADS[name]
                    truth = torch.tensor([classes.index(getattr(scenes[i].objects[0], field)) for i in single],
                                         device=clip.device)
                    loss = loss + weight * torch.nn.functional.cross_entropy(head(img[single]), truth)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 50 == 0 or step == cfg.steps - 1:
                curve.append([step, round(loss.item(), 4)])
                log.info("step %d loss %.4f", step, curve[-1][1])
            if bar is not None:
                bar.update()
                bar.set_postfix(loss=f"{float(loss):.3f}")
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    model.eval().requires_grad_(False)
    report = {
        "config": asdict(cfg),
        "model_config": json.loads(toy_model_config().read_text()),
        "seconds": round(seconds, 1),
        "loss_curve": curve,
        "probe": probe(clip, cfg.seed, cfg.probe_images, cfg.sizing),
        "torch": torch.__version__,
        "note": "toy encoder pretrained on drawn still images; says nothing about real CLIP on real videos",
    }
    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file(state, str(tmp), metadata={METADATA_KEY: json.dumps({"toy": True, "pretrain": asdict(cfg)})})
    tmp.chmod(0o644)  # safetensors creates it owner-only; the packaged file must be readable by all
    tmp.replace(out)
    from clipcache.stores.base import atomic_write_bytes

    atomic_write_bytes(out.with_name(out.stem + "-pretrain.json"), (json.dumps(report, indent=1) + "\n").encode())
    return report


__all__ = ["TOY_TAG", "PretrainConfig", "pretrain", "probe", "toy_model_config", "toy_weights"]
