"""How a protocol plans its split from a store: the store's labelled lists, the held-out list
rule, seeded class- and video-level splits, and the guards that keep test videos (and, for the
class-disjoint protocols, test classes) out of training and selection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from .plan import SplitPlan, rng

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..cache import FeatureCache


def store_lists(cache: FeatureCache) -> dict[str, np.ndarray]:
    """Labelled videos of every split the store was extracted with (name -> sorted indices)."""
    labels = cache.labels
    return {name: s.indices[labels[s.indices] >= 0] for name, s in cache.splits().items()}


def held_out_names(names) -> tuple[str | None, str | None]:
    """(test list, selection list) among a store's split names.

    ``test`` is the test list and ``val`` then selects; without ``test``, ``val`` is the test
    list (ViFi-CLIP ``val1.txt``, SSv2 ``validation.txt``) and there is no selection list.
    """
    names = set(names)
    if "test" in names:
        return "test", ("val" if "val" in names else None)
    if "val" in names:
        return "val", None
    return None, None


def labelled_videos(cache: FeatureCache) -> np.ndarray:
    """Every labelled video of a store without split files; an error when there is none."""
    labelled = np.flatnonzero(cache.labels >= 0)
    if labelled.size == 0:
        raise InputError(f"store {cache.store.path} holds no labelled videos; training needs class labels")
    return labelled


NO_TEST_LIST = ("the store has no test list: the run has no test split (score it with --split / --split-file on "
                "videos it never saw, or on another store; eval checks them for overlap)")


def listed_plan(protocol: str, cache: FeatureCache, lists: dict[str, np.ndarray],
                seed: int) -> tuple["SplitPlan", str | None, str | None]:
    """A plan that trains on the store's ``train`` list, and the (test, selection) list names
    (:func:`held_out_names`); the caller decides what tests and what selects."""
    if "train" not in lists:
        raise InputError(f"store {cache.store.path} has split files but no 'train' split "
                         f"({', '.join(sorted(lists))}); training needs one")
    test_name, sel_name = held_out_names(lists)
    plan = SplitPlan(protocol, lists["train"], np.zeros(0, np.int64), np.zeros(0, np.int64),
                     f"store split files ({', '.join(sorted(lists))})", seed)
    return plan, test_name, sel_name



def split_classes(labels: np.ndarray, pool: np.ndarray, fractions: tuple[float, float], seed: int,
                  least: int = 1):
    """Seeded class-disjoint split of ``pool`` into (train, val, test) by fractions (val, test).

    Val (and test, when its fraction is > 0) get at least ``least`` classes (the episode ways)
    where the class count allows, so that validation episodes can be drawn.
    """
    classes = np.unique(labels[pool])
    n = classes.size
    n_val = round(fractions[0] * n)
    n_test = round(fractions[1] * n)
    held = 2 if fractions[1] > 0 else 1
    if n - held * least >= 1:
        n_val, n_test = max(n_val, least), (max(n_test, least) if fractions[1] > 0 else 0)
    n_val = max(n_val, 1)
    n_test = max(n_test, 1) if fractions[1] > 0 else 0
    if n - n_val - n_test < 1:
        raise InputError(f"cannot split {n} classes into train/val{'/test' if fractions[1] else ''} "
                         "class-disjointly; give the store split files")
    perm = rng(seed, 0x5917).permutation(classes)
    val_c, test_c = perm[:n_val], perm[n_val:n_val + n_test]
    lab = labels[pool]
    return (np.sort(pool[~np.isin(lab, np.concatenate([val_c, test_c]))]),
            np.sort(pool[np.isin(lab, val_c)]), np.sort(pool[np.isin(lab, test_c)]))


def split_videos(labels: np.ndarray, pool: np.ndarray, fractions: tuple[float, float], seed: int):
    """Seeded per-class split of ``pool``'s videos into (train, val, test); train keeps >= 1 per class."""
    parts: tuple[list, list, list] = ([], [], [])
    for c in np.unique(labels[pool]):
        vids = rng(seed, 0x5918, int(c)).permutation(pool[labels[pool] == c])
        n = vids.size
        n_val = min(n - 1, max(1 if n >= 2 else 0, round(fractions[0] * n)))
        n_test = min(n - 1 - n_val, round(fractions[1] * n))
        parts[1].append(vids[:n_val])
        parts[2].append(vids[n_val:n_val + n_test])
        parts[0].append(vids[n_val + n_test:])
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64) for p in parts)


def disjoint_videos(plan: SplitPlan, where: str) -> None:
    """Drop test videos from train and val, and val videos from train, saying how many.

    Published lists overlap (ViFi-CLIP's train split 1 and its test splits 2 and 3,
    protocols.md §6.2): a video never trains or selects and also tests.
    """
    held = np.concatenate([plan.test, *plan.test_parts.values()]) if plan.test_parts else plan.test
    for part, against in (("train", held), ("val", held)):
        idx = getattr(plan, part)
        shared = np.intersect1d(idx, against)
        if shared.size and part == "train" and shared.size == idx.size:
            raise InputError(f"every video of {where} training list is also a test video: nothing is left to "
                             "train on without training on the test list; give split files whose train and test "
                             "lists differ")
        if shared.size:
            setattr(plan, part, np.setdiff1d(idx, shared))
            plan.notes.append(f"{shared.size} videos of {where} {part} list are also test videos: left out of {part}")
    shared = np.intersect1d(plan.train, plan.val)
    if shared.size:
        plan.train = np.setdiff1d(plan.train, shared)
        plan.notes.append(f"{shared.size} videos are in both the training and the selection list: left out of training")


def disjoint_classes(plan: SplitPlan, labels: np.ndarray, names: list[str], test_part: str = "test") -> None:
    """Class-disjoint protocols: no test class trains or selects (one-line error naming one)."""
    plan.class_disjoint = True
    test_c = plan.classes(labels, test_part)
    for part in ("train", "val"):
        shared = np.intersect1d(plan.classes(labels, part), test_c)
        if shared.size:
            raise InputError(
                f"the {plan.protocol} protocol tests on classes never seen in training, but {shared.size} test "
                f"classes are also {'training' if part == 'train' else 'selection'} classes (e.g. "
                f"{names[int(shared[0])]!r}); use --protocol allway for a test list of the training classes")


def finish(plan: SplitPlan, cache: FeatureCache) -> SplitPlan:
    if plan.train.size == 0:
        raise InputError(f"the {plan.protocol} protocol found no labelled training videos in {cache.store.path}")
    return plan
