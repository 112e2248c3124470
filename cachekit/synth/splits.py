"""Class-disjoint train / val / test splits that keep reversal pairs together (:func:`split_classes`)."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .classes import REVERSAL_PAIRS, SPLITS


def split_classes(
    classes: tuple[str, ...] | list[str],
    fractions: tuple[float, float, float],
    seed: int,
    keep_pairs_together: bool = True,
) -> dict[str, list[str]]:
    """Class-disjoint train / val / test split, seeded; each keeps the order of ``classes``.

    Sizes: round(fraction * C), at least 1 class per split, and at least 2 for val and test when
    C >= 6; train gets the rest. With ``keep_pairs_together`` both classes of a reversal pair go
    to one split, and test and val each get one whole pair first, when the sizes allow;
    otherwise classes are split one by one.
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
        for a, b in REVERSAL_PAIRS:
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
