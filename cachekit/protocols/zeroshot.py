"""Zero-shot (protocols.md §4): train on the training classes' videos and text, test on classes
never seen in training, by their text only.

Split: the store's ``train`` list trains; its ``test`` list tests (else its ``val`` list), and
must share no class with training. A held-out list made only of training classes (Kinetics-400's
own validation videos) is no zero-shot test: the run then has no test split here and is scored
on another store (cross-dataset, EZ-CLIP A.5.1). Selection: the store's ``val`` list beside a
``test`` list, else a seeded set of training classes held out of training (zero-shot selection on
unseen classes). A store without split files: a seeded class-disjoint 60/20/20 split.

Training feed: all-way mini-batches over the training classes' text only
(:class:`~.base.VideoFeed`). Evaluator: the test videos among the test classes' text.
"""

from __future__ import annotations

import numpy as np

from .base import Protocol
from .plan import SplitPlan
from .scoring import EvalJob, class_names, class_text, plural, video_predictions, video_result
from .splitting import (disjoint_classes, disjoint_videos, finish, held_out_names, labelled_videos, listed_plan,
                        split_classes, store_lists)

TRAIN_SPLIT = "train"


class ZeroShotProtocol(Protocol):
    name = "zeroshot"
    class_disjoint = True
    scores_unseen_by_text = True
    claim_priority = 1

    def claims(self, cache, lists) -> bool:
        """A test list of classes without training videos."""
        test_name, _ = held_out_names(lists)
        if "train" not in lists or test_name is None:
            return False
        labels = cache.labels
        train_c = np.unique(labels[lists["train"]])
        test_c = np.unique(labels[lists[test_name]])
        return bool(test_c.size and not np.isin(test_c, train_c).any())

    def plan(self, cache, cfg) -> SplitPlan:
        labels, names = cache.labels, cache.classes
        lists = store_lists(cache)
        seed = cfg.seed
        if not lists:
            labelled = labelled_videos(cache)
            tr, va, te = split_classes(labels, labelled, (0.2, 0.2), seed, 1)
            plan = SplitPlan(self.name, tr, va, te, "generated", seed, True, class_disjoint=True)
            plan.notes.append(f"the store has no split files: made a seeded class-disjoint split (seed {seed}) of its "
                              f"classes: {np.unique(labels[tr]).size} train, {np.unique(labels[va]).size} val, "
                              f"{np.unique(labels[te]).size} test")
        else:
            plan, test_name, sel_name = listed_plan(self.name, cache, lists, seed)
            train_c = np.unique(labels[plan.train])
            if test_name is not None:
                test = lists[test_name]
                if np.isin(np.unique(labels[test]), train_c).all():
                    plan.notes.append(f"split '{test_name}' holds only training classes: no zero-shot test on this "
                                      "store (evaluate the run on another store: cross-dataset zero-shot)")
                    sel_name = None
                else:
                    plan.test = test
                    if test_name == "val":
                        plan.notes.append("split 'val' is the test list (no 'test' split); it never selects the "
                                          "checkpoint")
            if sel_name is not None:
                plan.val = np.setdiff1d(lists[sel_name], plan.test)
            if plan.val.size == 0 and cfg.val_episodes:
                plan.train, plan.val, _ = split_classes(labels, plan.train, (0.2, 0.0), seed, 1)
                plan.generated = True
                plan.notes.append(f"selection on {np.unique(labels[plan.val]).size} training classes held out of "
                                  f"training (seed {seed}): zero-shot selection on classes training never sees")
        disjoint_videos(plan, "the store's")
        disjoint_classes(plan, labels, names)
        return finish(plan, cache)

    def evaluate(self, job: EvalJob) -> list:
        cache, method, pools, data = job.cache, job.method, job.pools, job.data
        notes = list(pools.notes)
        labels = cache.labels
        idx = pools.eval_idx
        classes = np.unique(labels[idx])
        train = pools.get(TRAIN_SPLIT) if pools.eval_name not in (None, TRAIN_SPLIT) else None
        if pools.run is None and train is not None:
            seen = np.intersect1d(classes, np.unique(labels[train.indices[labels[train.indices] >= 0]]))
            if seen.size:
                notes.append(f"{seen.size} of the {classes.size} evaluated classes also appear in split "
                             f"'{TRAIN_SPLIT}': not a zero-shot setting for methods trained on it")
        elif pools.run is None and pools.eval_name is None:
            notes.append("no split files: cannot check that the evaluated classes are unseen in training")
        notes.append(f"classified among the {plural(classes.size, 'class', 'classes')} of the evaluated videos, "
                     "by their text only")
        text = class_text(data, classes, cache.model_info.embed_dim, job.device)
        pred = video_predictions(method, data, idx, text, classes, class_names(cache, classes))
        return [video_result(self.name, job, None, idx, pred, classes, notes)]


PROTOCOL = ZeroShotProtocol()
