"""Class-disjoint train / val / test splits that keep reversal pairs together (:func:`split_classes`);
for compositional classes, base-to-novel over unseen compositions (:func:`base_novel_compositions`,
:func:`base_novel_videos`) and the zero-shot probe groups (:func:`composition_groups`)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..errors import InputError
from .classes import CLASSES, REVERSAL_PAIRS, SPLITS, parse_composition


def split_classes(
    classes: tuple[str, ...] | list[str],
    fractions: tuple[float, float, float],
    seed: int,
    keep_pairs_together: bool = True,
    pairs: Iterable[tuple[str, str]] = REVERSAL_PAIRS,
) -> dict[str, list[str]]:
    """Class-disjoint train / val / test split, seeded; each keeps the order of ``classes``.

    Sizes: round(fraction * C), at least 1 class per split, and at least 2 for val and test when
    C >= 6; train gets the rest. With ``keep_pairs_together`` both classes of a reversal pair go
    to one split, and test and val each get one whole pair first, when the sizes allow;
    otherwise classes are split one by one. ``pairs``: the reversal pairs (per object for
    compositional classes: ``SynthConfig.reversal_pairs()``).
    """
    classes = list(classes)
    n = len(classes)
    if n < 3:
        raise InputError(f"a train/val/test class split needs at least 3 classes, got {n}")
    least = 2 if n >= 6 else 1
    n_val = max(least, int(round(fractions[1] * n)))
    n_test = max(least, int(round(fractions[2] * n)))
    # Train keeps at least one class. n - 1 >= 2 * least, so the larger of val / test is above
    # its minimum whenever the two overflow.
    while n_val + n_test > n - 1:
        if n_test >= n_val:
            n_test -= 1
        else:
            n_val -= 1
    targets = {"test": n_test, "val": n_val}

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5E_11_75]))
    chosen = set(classes)
    units: list[list[str]] = []
    paired: set[str] = set()
    if keep_pairs_together:
        for a, b in pairs:
            if a in chosen and b in chosen:
                units.append([a, b])
                paired.update((a, b))
    units += [[c] for c in classes if c not in paired]
    order = [units[i] for i in rng.permutation(len(units))]

    def allocate(units_left: list[list[str]]) -> dict[str, list[str]] | None:
        got: dict[str, list[str]] = {}
        rest = list(units_left)
        for split in ("test", "val"):
            want, take = targets[split], []
            # An evaluation split starts with a reversal pair (when one fits), so it holds
            # classes that only temporal order separates.
            pair = next((u for u in rest if len(u) == 2 and len(u) <= want), None)
            if pair is not None:
                take.append(pair)
                rest.remove(pair)
            for unit in list(rest):
                if sum(map(len, take)) + len(unit) <= want:
                    take.append(unit)
                    rest.remove(unit)
            if sum(map(len, take)) < least:
                return None
            got[split] = [c for u in take for c in u]
        got["train"] = [c for u in rest for c in u]
        if not got["train"]:
            return None
        return got

    got = allocate(order)
    if got is None:  # pairs did not fit the sizes: split class by class
        got = allocate([[c] for u in order for c in u])
    rank = {c: i for i, c in enumerate(classes)}
    return {split: sorted(got[split], key=rank.__getitem__) for split in SPLITS}


# --------------------------------------------------------------------------------------------
# Compositional classes: base-to-novel over unseen compositions, probe groups

# Motion families: each reversal pair is one (its two classes are never split apart), every
# other class of CLASSES one of its own; in CLASSES order.
MOTION_FAMILIES: tuple[tuple[str, ...], ...] = tuple(
    tuple(c for c in CLASSES if c == name or CLASSES[c].reverse_of == name)
    for name in CLASSES
    if CLASSES[name].reverse_of is None
)
NOVEL_PERIOD = 3  # object i x motion family j is novel when (i + j) % NOVEL_PERIOD == 0
BASE_VAL_FRACTION = 0.25  # of a base class's videos: train 60 / base_val 20, as ViFi-CLIP's lists


def _family(motion_class: str) -> int:
    return next(j for j, fam in enumerate(MOTION_FAMILIES) if motion_class in fam)


def base_novel_compositions(
    classes: Iterable[str], objects: tuple[str, ...] | list[str], offset: int = 0
) -> dict[str, list[str]] | None:
    """Split compositional classes into base and novel by a Latin-square rule: object ``i`` (its
    position in ``objects``) x motion family ``j`` (:data:`MOTION_FAMILIES`) is novel when
    ``(i + j) % NOVEL_PERIOD == offset``, so both classes of a reversal pair fall on the same side
    and about a third of the compositions are novel. ``offset`` 1 or 2 picks another third (a
    selection split inside the base compositions of offset 0: ``benchmarks/b2n_select.py``).

    A novel composition is only held out while its object and its motion family each also appear
    in some base composition (with another partner); otherwise it moves to base, which happens
    only when ``classes`` is a narrow selection. Returns ``{"base": [...], "novel": [...]}`` in
    the order of ``classes``, or None when no composition can be held out (one object only).
    """
    classes = list(classes)
    rank = {obj: i for i, obj in enumerate(objects)}
    parts = {c: parse_composition(c) for c in classes}
    novel = {c for c, (obj, motion) in parts.items()
             if (rank[obj] + _family(motion)) % NOVEL_PERIOD == offset % NOVEL_PERIOD}
    while True:  # moving a class to base only adds base partners: this settles
        base = [c for c in classes if c not in novel]
        base_objects = {parts[c][0] for c in base}
        base_families = {_family(parts[c][1]) for c in base}
        orphans = {c for c in novel
                   if parts[c][0] not in base_objects or _family(parts[c][1]) not in base_families}
        if not orphans:
            break
        novel -= orphans
    if not novel:
        return None
    return {"base": [c for c in classes if c not in novel], "novel": [c for c in classes if c in novel]}


def base_novel_videos(
    split: dict[str, list[str]], videos_per_class: int, seed: int
) -> dict[str, list[tuple[str, int]]]:
    """(class, clip index) lists of ViFi-CLIP's three base-to-novel lists: each base class's clips
    split ``1 - BASE_VAL_FRACTION`` / ``BASE_VAL_FRACTION`` (at least one each, seeded) into
    ``train`` and ``base_val``; every clip of a novel class in ``novel_val``.

    Both classes of a reversal pair hold out the same clip indices: clip ``i`` of the reversed
    class is clip ``i`` of its partner played backwards, so a held-out clip whose twin trained
    would be a training clip seen backwards. The indices are drawn once per (object, forward
    motion), in the order of ``split["base"]``."""
    n = videos_per_class
    n_val = max(1, int(round(n * BASE_VAL_FRACTION))) if n >= 2 else 0
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xB2_4E]))
    out: dict[str, list[tuple[str, int]]] = {"train": [], "base_val": [], "novel_val": []}
    held_by_scene: dict[tuple[str, str], set[int]] = {}
    for c in split["base"]:
        obj, motion = parse_composition(c)
        scene = (obj, CLASSES[motion].reverse_of or motion)  # a pair's two classes share their scenes
        if scene not in held_by_scene:
            held_by_scene[scene] = set(rng.permutation(n)[:n_val].tolist())
        held = held_by_scene[scene]
        out["train"] += [(c, i) for i in range(n) if i not in held]
        out["base_val"] += [(c, i) for i in range(n) if i in held]
    out["novel_val"] = [(c, i) for c in split["novel"] for i in range(n)]
    return out


def composition_groups(classes: Iterable[str]) -> dict[str, dict[str, list[str]]]:
    """Groups of compositional classes for two zero-shot probes, each of at least two classes,
    in the order of ``classes``: ``"motion"``: motion class -> its compositions with every object
    (they differ only by object); ``"object"``: object -> its compositions with every motion (they
    differ only by motion)."""
    by_motion: dict[str, list[str]] = {}
    by_object: dict[str, list[str]] = {}
    for c in classes:
        obj, motion = parse_composition(c)
        by_motion.setdefault(motion, []).append(c)
        by_object.setdefault(obj, []).append(c)
    order = {m: i for i, m in enumerate(CLASSES)}
    return {
        "motion": {m: v for m, v in sorted(by_motion.items(), key=lambda kv: order[kv[0]]) if len(v) >= 2},
        "object": {o: v for o, v in by_object.items() if len(v) >= 2},
    }
