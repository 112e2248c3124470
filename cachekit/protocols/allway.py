"""All-way K-shot (ViFi-CLIP protocol, protocols.md §3): every test video classified among the
training classes.

Split: the store's ``train`` list trains (``--shots K``: a seeded K-shot list drawn from it); its
``test`` list tests, else its ``val`` list, which in the ViFi-CLIP and SSv2 layouts *is* the test
list (``val1.txt``, ``validation.txt``). Selection: the store's ``val`` list only beside a
``test`` list; otherwise the training videos left out of the K-shot list, or a seeded 20 % of
every class's training videos (none where ``--shots K`` takes them all: a fixed epoch budget).
A store without split files: each class's videos 60/20/20. Training binds and reads the text
of the training classes only.

Evaluator: a trained run classifies among its training classes; a support-fitting method
(``predicts == "support"``) first fits prototypes on a K-shot list of the ``train`` split.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .base import Protocol
from .plan import SplitPlan
from .scoring import EvalJob, class_names, class_text, plural, video_predictions, video_result
from .splitting import NO_TEST_LIST, disjoint_videos, finish, labelled_videos, listed_plan, split_videos, store_lists

TRAIN_SPLIT = "train"


def kshot_and_selection(plan: SplitPlan, labels: np.ndarray, cfg, sel: np.ndarray | None, sel_name: str | None):
    """Apply ``cfg.shots`` (a K-shot list from the training videos) and choose the selection videos:
    ``sel`` (a store list over the training classes), else the training videos the K-shot list
    leaves out, else a seeded 20 % of each class's training videos (none with ``val_episodes=0``, nor
    where a K-shot list takes every training video: a K-shot run trains on K videos of every class)."""
    from ..episodes import allway_kshot

    seed = cfg.seed
    rest = np.zeros(0, np.int64)
    if cfg.shots:
        chosen = allway_kshot(labels, plan.train, cfg.shots, seed, "train")
        rest = np.setdiff1d(plan.train, chosen)
        plan.train = chosen
        plan.notes.append(f"all-way {cfg.shots}-shot training list drawn from split 'train' (seed {seed})")
    train_classes = set(np.unique(labels[plan.train]).tolist())
    if sel is not None and sel.size and not set(np.unique(labels[sel]).tolist()) - train_classes:
        plan.val = sel
        return
    if sel is not None and sel.size:
        plan.notes.append(f"split '{sel_name}' has classes without training videos: not used for selection")
    if not cfg.val_episodes:
        plan.notes.append("no selection (--val-episodes 0): the final weights are the model")
        return
    if cfg.shots and not rest.size:  # holding shots out would train a K-shot run on fewer than K
        plan.notes.append(f"no selection: the {cfg.shots}-shot list takes every video of split 'train', and "
                          "selecting on some of them would train on fewer shots; a fixed epoch budget, the "
                          "final weights are the model")
        return
    plan.generated = True
    if rest.size:
        plan.val = rest
        plan.notes.append("selection on the split-'train' videos left out of the K-shot list")
    else:
        plan.train, plan.val, _ = split_videos(labels, plan.train, (0.2, 0.0), seed)
        if plan.val.size == 0:
            raise InputError("no video is left to select the checkpoint on (every training class has a single "
                             "training video, and the store's held-out list is its test list); pass "
                             "--val-episodes 0 to train without selection and keep the final weights")
        plan.notes.append(f"selection on a seeded 20% of each class's training videos (seed {seed}), "
                          "held out of training: the store has no selection list apart from its test list")


class AllWayProtocol(Protocol):
    name = "allway"
    class_disjoint = False
    shot_curve = "support"  # several K: K-shot lists of a support-fitting method

    def _what(self, r) -> str:
        return f"all-way ({len(r.class_names)} classes)" + (f" {r.shots}-shot" if r.shots is not None else "")

    def plan(self, cache, cfg) -> SplitPlan:
        labels = cache.labels
        lists = store_lists(cache)
        seed = cfg.seed
        sel = sel_name = None
        if not lists:
            labelled = labelled_videos(cache)
            tr, va, te = split_videos(labels, labelled, (0.2, 0.2), seed)
            plan = SplitPlan(self.name, tr, np.zeros(0, np.int64), te, "generated", seed, True)
            plan.notes.append(f"the store has no split files: split every class's videos 60/20/20 into "
                              f"train/val/test (seed {seed})")
            sel, sel_name = va, "val"
        else:
            plan, test_name, sel_name = listed_plan(self.name, cache, lists, seed)
            if test_name is None:
                plan.notes.append(NO_TEST_LIST)
            else:
                plan.test = lists[test_name]
                sel = lists[sel_name] if sel_name else None
                if test_name == "val":
                    plan.notes.append("split 'val' is the test list (no 'test' split: ViFi-CLIP val1.txt, SSv2 "
                                      "validation.txt); it never selects the checkpoint")
            plan.train = np.setdiff1d(plan.train, plan.test)
            unseen = set(np.unique(labels[plan.test]).tolist()) - set(np.unique(labels[plan.train]).tolist())
            if unseen:
                raise InputError(
                    f"the all-way protocol tests on the training classes, but {len(unseen)} test classes have no "
                    "training videos (class-disjoint split files are for --protocol episodic or zeroshot)")
        if sel is not None:
            sel = np.setdiff1d(sel, plan.test)  # a listed selection video that also tests never selects
        kshot_and_selection(plan, labels, cfg, sel, sel_name)
        disjoint_videos(plan, "the store's")
        return finish(plan, cache)

    def evaluate(self, job: EvalJob) -> list:
        from ..episodes import allway_kshot

        cache, method, pools, data, device = job.cache, job.method, job.pools, job.data, job.device
        notes = list(pools.notes)
        labels = cache.labels
        eval_idx = pools.eval_idx
        shots = job.shots
        if pools.run is not None:
            by_name = {n: i for i, n in enumerate(cache.classes)}
            trained = pools.run.class_names.get("train", [])
            absent = [n for n in trained if n not in by_name]
            if absent:
                raise InputError(f"the run was trained on {len(trained)} classes, {len(absent)} of which this store "
                                 f"does not hold (e.g. {absent[0]!r}); all-way scoring needs every one")
            classes = np.array(sorted(by_name[n] for n in trained), dtype=np.int64)
            lacking = np.setdiff1d(np.unique(labels[eval_idx]), classes)
            if lacking.size:
                raise InputError(f"all-way: {lacking.size} evaluated classes are not training classes of the run "
                                 f"(e.g. {cache.classes[int(lacking[0])]!r}); use --protocol zeroshot for unseen classes")
            res_shots = pools.run.shots(labels)
            if res_shots is None:
                notes.append("the run's classes had different numbers of training videos (no single K)")
        elif method.predicts == "support":
            train = pools.get(TRAIN_SPLIT) if pools.eval_name not in (None, TRAIN_SPLIT) else None
            train_idx = train.indices[labels[train.indices] >= 0] if train is not None else None
            if pools.eval_name is None:  # no splits: shots come from the pool, the rest is evaluated
                shot_idx = allway_kshot(labels, eval_idx, shots, seed=job.seed)
                eval_idx = np.setdiff1d(eval_idx, shot_idx)
                classes = np.unique(labels[shot_idx])
                notes.append(f"{shots}-shot list drawn from the same videos (seed {job.seed}); the other "
                             f"{eval_idx.size:,} are evaluated")
            else:
                if train_idx is None:
                    raise InputError(f"{method.display_name} on the allway protocol draws its K-shot list from a "
                                     f"'{TRAIN_SPLIT}' split; the store has {', '.join(sorted(pools.splits))}")
                eval_cls = np.unique(labels[eval_idx])
                lacking = np.setdiff1d(eval_cls, np.unique(labels[train_idx]))
                if lacking.size:
                    shown = ", ".join(repr(cache.classes[c]) for c in lacking[:5])
                    raise InputError(f"allway: split '{TRAIN_SPLIT}' has no video of {lacking.size} of the "
                                     f"{eval_cls.size} classes of split '{pools.eval_name}' (e.g. {shown}); "
                                     "use --protocol zeroshot for disjoint classes")
                classes = np.union1d(eval_cls, np.unique(labels[train_idx]))
                shot_idx = allway_kshot(labels, train_idx, shots, seed=job.seed, split_name=TRAIN_SPLIT)
                overlap = np.intersect1d(eval_idx, shot_idx)
                if overlap.size:
                    eval_idx = np.setdiff1d(eval_idx, overlap)
                    notes.append(f"{overlap.size:,} videos of the {shots}-shot list are also in split "
                                 f"'{pools.eval_name}': removed from the evaluation")
                notes.append(f"{shots}-shot list: {shot_idx.size:,} videos of split '{TRAIN_SPLIT}' (seed {job.seed})")
            import torch

            t = torch.from_numpy(shot_idx)
            method.fit_support(data.emb[data.rows[t], 0].float().to(device), data.labels[t].to(device), classes)
            res_shots = shots
        else:
            classes = np.unique(labels[eval_idx])
            train = pools.get(TRAIN_SPLIT) if pools.eval_name not in (None, TRAIN_SPLIT) else None
            if train is not None:
                classes = np.union1d(classes, np.unique(labels[train.indices[labels[train.indices] >= 0]]))
            res_shots = None
        notes.append(f"classified among {plural(classes.size, 'class', 'classes')}")
        text = class_text(data, classes, cache.model_info.embed_dim, device)
        pred = video_predictions(method, data, eval_idx, text, classes, class_names(cache, classes))
        return [video_result(self.name, job, res_shots, eval_idx, pred, classes, notes)]


PROTOCOL = AllWayProtocol()
