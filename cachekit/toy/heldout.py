"""Held-out drawings for the toy CLIP's zero-shot probe, under the conditions it was trained on
and beyond them (:data:`CONDITIONS`): object sizes up to 1.5x beyond the trained range on either
side, and backgrounds it never saw (the second synthetic style's: :mod:`cachekit.synth.doodle`).

Every probe image shows one object of the vocabulary (:mod:`cachekit.synth.vocab`), drawn as the
pretraining draws it, from a seed stream the pretraining never draws. Each factor is probed with
the other two held fixed at the truth, as a class name would fix them: the shape among the four
phrases that share the object's colour and place ("a red square at the top left" against "a red
disc at the top left", ...), the colour among nine, the place among nine; and, as before, colour
and shape together among the 36 phrases without a place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..synth.doodle import DOODLE_BACKGROUNDS, pattern
from ..synth.vocab import BACKGROUNDS, COLOURS, POSITIONS, SHAPES, SIZES, object_phrase
from .scenes import SceneObject, place_phrase, render, scene_background, size_factor

SMALLEST, LARGEST = min(lo for lo, _ in SIZES.values()), max(hi for _, hi in SIZES.values())  # radius / side
BEYOND = 1.5


@dataclass(frozen=True)
class Condition:
    """Radii (fraction of the side) drawn uniformly in ``radius``, or from the size words' ranges
    (None); backgrounds drawn from ``backgrounds`` (pretraining's words or doodle kinds)."""

    radius: tuple[float, float] | None
    backgrounds: tuple[str, ...]


CONDITIONS: dict[str, Condition] = {
    "trained sizes and backgrounds": Condition(None, BACKGROUNDS),
    f"larger: {LARGEST:g} to {BEYOND * LARGEST:g} of the side": Condition((LARGEST, BEYOND * LARGEST), BACKGROUNDS),
    f"smaller: {SMALLEST / BEYOND:.3g} to {SMALLEST:g} of the side": Condition((SMALLEST / BEYOND, SMALLEST),
                                                                             BACKGROUNDS),
    "unseen backgrounds (checker, rings, cells, plaid)": Condition(None, DOODLE_BACKGROUNDS),
}
# Narrower bands of size on trained backgrounds: where inside and beyond the trained range a factor fails.
_BANDS = ((SMALLEST / BEYOND, SMALLEST / 1.25), (SMALLEST / 1.25, SMALLEST), (SMALLEST, SMALLEST * 1.25),
          (LARGEST / 1.25, LARGEST), (LARGEST, LARGEST * 1.25), (LARGEST * 1.25, BEYOND * LARGEST))
SIZE_BANDS: dict[str, Condition] = {
    f"{lo:.3g} to {hi:.3g}{'' if SMALLEST <= lo and hi <= LARGEST else ' (beyond)'}": Condition((lo, hi), BACKGROUNDS)
    for lo, hi in _BANDS}
FACTORS = ("shape", "colour", "place", "colour_and_shape")


def probe_images(condition: Condition, seed: int, n: int, size: int, stream: int = 0, sizing: str = "radius",
                 marks: bool = True) -> tuple[np.ndarray, list[SceneObject], np.ndarray]:
    """``n`` single-object images [n, H, W, 3] uint8 under ``condition``, their objects and
    owner maps [n, H, W] int8 (0 where the object covers a pixel at least half, -1 elsewhere), drawn
    from ``SeedSequence([seed, 0x9B0BE, stream])`` (pretraining draws ``[seed, step, 0x70C]``);
    shapes and colours cycle so that each is drawn about equally often, places at random; radii per
    ``sizing`` (:data:`~.scenes.SIZINGS`, as the toy was pretrained); ``marks`` off: no outline or
    marker dot (:func:`~.scenes.draw_object`), the same objects otherwise."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x9B0BE, stream]))
    shapes, colours, places, sizes = list(SHAPES), list(COLOURS), list(POSITIONS), list(SIZES)
    images, objects, owners = [], [], []
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for i in range(n):
        kind = condition.backgrounds[int(rng.integers(len(condition.backgrounds)))]
        bg = scene_background(rng, size, kind, xx, yy) if kind in BACKGROUNDS else pattern(rng, size, kind)
        word = sizes[int(rng.integers(len(sizes)))]
        lo, hi = SIZES[word] if condition.radius is None else condition.radius
        obj = SceneObject(colours[(i // len(shapes)) % len(colours)], shapes[i % len(shapes)], word,
                          places[int(rng.integers(len(places)))])
        cover = np.zeros((1, size, size), np.float32)
        images.append(render(rng, bg, [obj], lambda o: rng.uniform(lo, hi) * size * size_factor(o.shape, sizing, rng),
                             cover, marks))
        objects.append(obj)
        owners.append(np.where(cover[0] >= 0.5, 0, -1).astype(np.int8))
    return np.stack(images), objects, np.stack(owners)


def place_kind(position: str) -> str:
    """``centre``, ``edge`` (top, left, ...) or ``corner`` (top left, ...): how near a frame's
    corner the place puts an object."""
    return "centre" if position == "centre" else ("corner" if " " in position else "edge")


def _phrase_embeddings(clip):
    """Normalised text embeddings of every "colour shape at place" phrase [C, S, P, D'] and of
    every bare "colour shape" phrase [C*S, D']."""
    import torch
    import torch.nn.functional as F

    colours, shapes, places = list(COLOURS), list(SHAPES), list(POSITIONS)
    with torch.no_grad():
        placed = clip.encode_text([object_phrase(c, s) + place_phrase(p) for c in colours for s in shapes
                                   for p in places])
        placed = F.normalize(placed.float(), dim=-1).reshape(len(colours), len(shapes), len(places), -1)
        bare = F.normalize(clip.encode_text([object_phrase(c, s) for c in colours for s in shapes]).float(), dim=-1)
    return placed, bare


def _embedded(clip, condition: Condition, seed: int, n: int, stream: int, sizing: str, marks: bool = True):
    """Normalised image embeddings [n, D'] of :func:`probe_images` and the (colour, shape, place)
    indices [n] of their objects."""
    import torch
    import torch.nn.functional as F

    images, objects, _ = probe_images(condition, seed, n, clip.preprocess_cfg["size"], stream, sizing, marks)
    with torch.no_grad():
        emb = clip.encode_frames(clip.preprocess(images).to(clip.device)).emb
        emb = F.normalize(emb.float(), dim=-1).cpu()  # [n, D']
    labels = tuple(torch.tensor([vocab.index(getattr(o, field)) for o in objects])
                   for field, vocab in (("colour", list(COLOURS)), ("shape", list(SHAPES)), ("position", list(POSITIONS))))
    return emb, labels, objects


def factor_accuracy(clip, seed: int, n: int, conditions: dict[str, Condition] = CONDITIONS,
                    sizing: str = "radius", marks: bool = True) -> dict:
    """Zero-shot accuracy (%) of each of :data:`FACTORS` on ``n`` held-out images per condition of
    ``conditions`` (:data:`CONDITIONS`, or :data:`SIZE_BANDS`):
    ``{"images": n, "chance": {factor: %}, "conditions": {condition: {factor: %}},
    "shape_by": {condition: {true shape or place kind: shape %}}}``; the place kinds (centre, edge,
    corner) tell a failure of size from one of the frame cutting a large object off; ``marks`` as
    :func:`probe_images`."""
    import torch

    colours, shapes, places = list(COLOURS), list(SHAPES), list(POSITIONS)
    placed, bare = _phrase_embeddings(clip)
    out: dict = {"images": n, "chance": {"shape": round(100 / len(shapes), 1), "colour": round(100 / len(colours), 1),
                                        "place": round(100 / len(places), 1),
                                        "colour_and_shape": round(100 / (len(colours) * len(shapes)), 1)},
                 "conditions": {}, "shape_by": {}}
    for stream, (name, cond) in enumerate(conditions.items()):
        emb, (c, s, p), objects = _embedded(clip, cond, seed, n, stream, sizing, marks)
        score = lambda text: torch.einsum("nd,n...d->n...", emb, text)  # noqa: E731
        hits = {
            "shape": score(placed[c, :, p]).argmax(1) == s,  # [n, 4 shapes]
            "colour": score(placed[:, s, p].transpose(0, 1)).argmax(1) == c,  # [n, 9 colours]
            "place": score(placed[c, s]).argmax(1) == p,  # [n, 9 places]
            "colour_and_shape": (emb @ bare.T).argmax(1) == c * len(shapes) + s,
        }
        out["conditions"][name] = {k: round(100 * v.float().mean().item(), 1) for k, v in hits.items()}
        kind = [place_kind(o.position) for o in objects]
        groups = {sh: [o.shape == sh for o in objects] for sh in shapes}
        groups.update({k: [x == k for x in kind] for k in ("centre", "edge", "corner")})
        out["shape_by"][name] = {g: round(100 * hits["shape"][torch.tensor(m)].float().mean().item(), 1)
                                 for g, m in groups.items() if any(m)}
    return out


def _linear_shape(x, y, steps: int = 1000):
    """A 4-way linear classifier of shape fitted to embeddings ``x`` [N, D'] and shapes ``y`` [N]
    (Adam, full batch, seed 0, the caller's random state left as it was): the information a linear
    read-out finds."""
    import torch
    import torch.nn.functional as F

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        lin = torch.nn.Linear(x.shape[1], len(SHAPES))
    opt = torch.optim.Adam(lin.parameters(), 1e-2)
    for _ in range(steps):
        loss = F.cross_entropy(lin(10 * x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return lin.requires_grad_(False)


def shape_information(clip, seed: int, n: int, conditions: dict[str, Condition] = CONDITIONS,
                      sizing: str = "radius", fit: int = 2000) -> dict:
    """Where shape is lost beyond the trained sizes: to a common shift of the embedding, to a
    read-out that no longer fits, or from the embedding itself. Per condition, shape accuracy (%)
    on ``n`` held-out images: ``zero_shot`` (as :func:`factor_accuracy`); ``centred``, the same
    after moving the condition's mean embedding onto the trained condition's (a diagnostic that
    sees the test images, not a method); ``linear``, a linear read-out fitted on ``fit`` images at
    the trained sizes; ``linear_own``, one fitted on
    ``fit`` other images of the condition itself (what a linear read-out finds there at all); and
    ``shift``, the distance between the two mean embeddings (of unit-norm embeddings), and
    ``size_axis``, the cosine between that shift and the captions' size words (the mean of "a large
    red square" minus "a small red square" over every colour and shape): positive when the row
    moved towards "large"."""
    import torch
    import torch.nn.functional as F

    placed, _ = _phrase_embeddings(clip)
    with torch.no_grad():
        sized = {w: F.normalize(clip.encode_text([object_phrase(c, sh, w) for c in COLOURS for sh in SHAPES]).float(),
                                dim=-1) for w in ("large", "small")}
    axis = (sized["large"] - sized["small"]).mean(0).cpu()  # [D']
    trained = CONDITIONS["trained sizes and backgrounds"]
    ref, (_, ref_shape, _), _ = _embedded(clip, trained, seed + 1, fit, 0, sizing)  # another stream than the probes'
    read, ref_mean = _linear_shape(ref, ref_shape), ref.mean(0)  # [D']
    pct = lambda hit: round(100 * hit.float().mean().item(), 1)  # noqa: E731
    out: dict = {"images": n, "fit": fit, "conditions": {}}
    for stream, (name, cond) in enumerate(conditions.items()):
        emb, (c, s, p), _ = _embedded(clip, cond, seed, n, stream, sizing)
        shift = emb.mean(0) - ref_mean  # [D']
        centred = emb - shift
        shape_of = lambda x: torch.einsum("nd,nkd->nk", x, placed[c, :, p]).argmax(1)  # noqa: E731
        own_x, (_, own_y, _), _ = _embedded(clip, cond, seed + 1, fit, stream + 1, sizing)
        own = _linear_shape(own_x, own_y)
        out["conditions"][name] = {
            "zero_shot": pct(shape_of(emb) == s), "centred": pct(shape_of(centred) == s),
            "linear": pct(read(10 * emb).argmax(1) == s), "linear_own": pct(own(10 * emb).argmax(1) == s),
            "shift": round(float(shift.norm()), 3),
            "size_axis": round(float(F.cosine_similarity(shift, axis, dim=0)), 2)}
    return out


LAYER_BLOCKS = (0, 2, 4)  # the tokens entering these blocks: 0 is the stem's output (+ positions, ln_pre)


def shape_by_layer(clip, seed: int, n: int, conditions: dict[str, Condition], sizing: str = "radius",
                   fit: int = 2000) -> dict:
    """Where in the tower a row's shape is lost: per condition, a linear read-out of shape (fitted
    on ``fit`` other images of the row itself, tested on ``n``) from the tokens entering each of
    :data:`LAYER_BLOCKS`, pooled by a max over the grid (``"L max"``) or taken at the grid cell
    holding the object's centre (``"L cell"``), and from the embedding (``"embedding"``). A row that
    reads low already at block 0 lost its shape in the stem."""
    import torch
    import torch.nn.functional as F

    size = clip.preprocess_cfg["size"]

    def features(cond: Condition, seed_: int, count: int, stream: int):
        images, objects, owners = probe_images(cond, seed_, count, size, stream, sizing)
        with torch.no_grad():
            pixels = clip.preprocess(images).to(clip.device)
            out = clip.encode_frames(pixels, LAYER_BLOCKS)
        grid = round(math.sqrt(out.tokens[LAYER_BLOCKS[0]].shape[1] - 1))  # 7: tokens [n, 1 + grid^2, W]
        cells = []
        for own in owners:  # the cell of the centroid of the pixels the object covers
            ys, xs = np.nonzero(own == 0)
            cy, cx = (ys.mean(), xs.mean()) if len(ys) else (size / 2, size / 2)
            cells.append(min(int(cy * grid / size), grid - 1) * grid + min(int(cx * grid / size), grid - 1))
        rows = torch.arange(count)
        feats = {}
        for block in LAYER_BLOCKS:
            tokens = out.tokens[block].float().cpu()[:, 1:]  # [n, grid^2, W]
            feats[f"{block} max"] = F.normalize(tokens.amax(1), dim=-1)
            feats[f"{block} cell"] = F.normalize(tokens[rows, torch.tensor(cells)], dim=-1)
        feats["embedding"] = F.normalize(out.emb.float().cpu(), dim=-1)
        return feats, torch.tensor([list(SHAPES).index(o.shape) for o in objects])

    res: dict = {"images": n, "fit": fit, "blocks": list(LAYER_BLOCKS), "conditions": {}}
    for stream, (name, cond) in enumerate(conditions.items()):
        train_x, train_y = features(cond, seed + 1, fit, 2 * stream + 1)
        test_x, test_y = features(cond, seed, n, 2 * stream)
        res["conditions"][name] = {k: round(100 * (_linear_shape(train_x[k], train_y)(10 * test_x[k]).argmax(1)
                                                   == test_y).float().mean().item(), 1) for k in train_x}
    return res
