"""Base-to-novel (protocols.md §5): train on base classes (videos and names), test base and novel
classes each against their own class set; report base, novel and their harmonic mean.

Split: the store's ``train`` list (base classes: ViFi-CLIP ``fs_base_s1_train.txt`` extracted as
split ``train``) trains; ``base_val`` and ``novel_val`` test. Neither selects: a seeded 20 % of
each base class's training videos is held out for selection. Novel classes must have no training
video. A store without split files: classes halved by :func:`~cachekit.episodes.base_novel_split`
(seeded, not by frequency), each base class's videos split 60/20/20 into train / selection / base
test, every novel video tested. Training binds and reads the base classes' text only; novel
names first appear at evaluation.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from .allway import kshot_and_selection
from .base import Protocol
from .plan import SplitPlan
from .scoring import EvalJob, Pools, class_names, class_text, video_predictions, video_result
from .splitting import disjoint_videos, finish, labelled_videos, split_videos, store_lists

BASE_SPLIT, NOVEL_SPLIT = "base_val", "novel_val"  # ViFi-CLIP base-to-novel list names (§5)
TRAIN_SPLIT = "train"


class Base2NovelProtocol(Protocol):
    name = "base2novel"
    class_disjoint = True  # the novel part
    scores_unseen_by_text = True
    test_parts = ("base", "novel")
    claim_priority = 2

    def claims(self, cache, lists) -> bool:
        """The ViFi-CLIP base-to-novel lists beside a training list."""
        return {TRAIN_SPLIT, BASE_SPLIT, NOVEL_SPLIT} <= set(lists)

    def store_lists_evaluated(self, splits) -> tuple[str, ...]:
        return (BASE_SPLIT, NOVEL_SPLIT) if BASE_SPLIT in splits and NOVEL_SPLIT in splits else ()

    def _parts_line(self, r) -> str:
        x = r.extra
        return (f"; base {x['base']:.2f} ± {x['base_ci95']:.2f}, novel {x['novel']:.2f} ± {x['novel_ci95']:.2f}, "
                f"HM {x['hm']:.2f}")

    def plan(self, cache, cfg) -> SplitPlan:
        from ..episodes import base_novel_split

        labels, names = cache.labels, cache.classes
        lists = store_lists(cache)
        seed = cfg.seed
        if not lists:
            labelled = labelled_videos(cache)
            base_c, novel_c = base_novel_split(np.unique(labels[labelled]), seed=seed)
            base_pool = labelled[np.isin(labels[labelled], base_c)]
            tr, va, te = split_videos(labels, base_pool, (0.2, 0.2), seed)
            novel = labelled[np.isin(labels[labelled], novel_c)]
            plan = SplitPlan(self.name, tr, np.zeros(0, np.int64), np.union1d(te, novel), "generated", seed, True,
                             test_parts={"base": te, "novel": novel})
            plan.notes.append(f"the store has no split files: classes halved at random (seed {seed}; "
                              f"{base_c.size} base, {novel_c.size} novel), base videos 60/20/20")
            kshot_and_selection(plan, labels, cfg, va, "val")
        else:
            missing = [n for n in (TRAIN_SPLIT, BASE_SPLIT, NOVEL_SPLIT) if n not in lists]
            if missing:
                raise InputError(f"the base2novel protocol needs splits '{TRAIN_SPLIT}', '{BASE_SPLIT}' and "
                                 f"'{NOVEL_SPLIT}' (ViFi-CLIP lists); store {cache.store.path} lacks "
                                 f"{', '.join(repr(m) for m in missing)}")
            base, novel = lists[BASE_SPLIT], lists[NOVEL_SPLIT]
            plan = SplitPlan(self.name, lists[TRAIN_SPLIT], np.zeros(0, np.int64), np.union1d(base, novel),
                             f"store split files ({', '.join(sorted(lists))})", seed,
                             test_parts={"base": base, "novel": novel})
            train_c = np.unique(labels[plan.train])
            shared = np.intersect1d(np.unique(labels[novel]), train_c)
            if shared.size:
                raise InputError(f"{shared.size} classes of split '{NOVEL_SPLIT}' have training videos (e.g. "
                                 f"{names[int(shared[0])]!r}): novel classes must be unseen in training")
            lacking = np.setdiff1d(np.unique(labels[base]), train_c)
            if lacking.size:
                raise InputError(f"{lacking.size} classes of split '{BASE_SPLIT}' have no training video (e.g. "
                                 f"{names[int(lacking[0])]!r}): base classes are the training classes")
            kshot_and_selection(plan, labels, cfg, None, None)
        disjoint_videos(plan, "the store's")
        plan.class_disjoint = True  # novel classes: checked above (or halved apart)
        return finish(plan, cache)

    def _parts(self, job_cache, pools: Pools, seed: int):
        """(base videos, novel videos, base classes, novel classes, notes) of an evaluation."""
        from ..episodes import base_novel_split

        labels = job_cache.labels
        notes: list[str] = []
        if pools.parts:
            base_idx, novel_idx = pools.parts["base"], pools.parts["novel"]
            notes += pools.notes
        else:
            base_s, novel_s = pools.get(BASE_SPLIT), pools.get(NOVEL_SPLIT)
            if pools.eval_name is None and base_s is not None and novel_s is not None:
                base_idx = base_s.indices[labels[base_s.indices] >= 0]
                novel_idx = novel_s.indices[labels[novel_s.indices] >= 0]
                notes.append(f"base classes from split '{BASE_SPLIT}', novel classes from split '{NOVEL_SPLIT}'")
                for s, name in ((base_s, BASE_SPLIT), (novel_s, NOVEL_SPLIT)):
                    if s.missing:
                        listed = s.indices.size + s.missing
                        notes.append(f"split '{name}': {s.missing:,} of {listed:,} listed videos are missing from "
                                     f"the store (coverage {100.0 * s.indices.size / listed:.1f}%); evaluated on "
                                     f"the {s.indices.size:,} present")
            else:
                notes += pools.notes
                idx = pools.eval_idx
                base_cls, novel_cls = base_novel_split(np.unique(labels[idx]), seed=seed)
                base_idx = idx[np.isin(labels[idx], base_cls)]
                novel_idx = idx[np.isin(labels[idx], novel_cls)]
                notes.append(f"no '{BASE_SPLIT}'/'{NOVEL_SPLIT}' splits: classes halved at random by base_novel_split "
                             f"(seed {seed}), not by frequency as the published splits")
        base_cls, novel_cls = np.unique(labels[base_idx]), np.unique(labels[novel_idx])
        shared = np.intersect1d(base_cls, novel_cls)
        if shared.size:
            notes.append(f"{shared.size} classes appear in both the base and the novel part")
        return base_idx, novel_idx, base_cls, novel_cls, notes

    def disjoint_part(self, pools: Pools, labels: np.ndarray) -> np.ndarray | None:
        if pools.parts:
            return pools.parts["novel"]
        novel = pools.get(NOVEL_SPLIT)
        if pools.eval_name is None and novel is not None:
            return novel.indices[labels[novel.indices] >= 0]
        return pools.eval_idx  # a chosen split: its classes are halved at random, any may be novel

    def evaluate(self, job: EvalJob) -> list:
        from ..episodes import accuracy_ci, harmonic_mean

        cache, method, data = job.cache, job.method, job.data
        labels = cache.labels
        base_idx, novel_idx, base_cls, novel_cls, notes = self._parts(cache, job.pools, job.seed)
        if base_idx.size == 0 or novel_idx.size == 0:
            raise InputError(f"base2novel needs videos of both base and novel classes (base {base_idx.size}, "
                             f"novel {novel_idx.size})")
        res = []
        for idx, cls in ((base_idx, base_cls), (novel_idx, novel_cls)):
            text = class_text(data, cls, cache.model_info.embed_dim, job.device)
            res.append((labels[idx], video_predictions(method, data, idx, text, cls, class_names(cache, cls))))
        (bt, bp), (nt, np_) = res
        b, b_ci = accuracy_ci((bp == bt).astype(np.float64))
        n, n_ci = accuracy_ci((np_ == nt).astype(np.float64))
        hm = harmonic_mean(b, n)
        # delta method: HM = 2BN/(B+N), independent base and novel estimates
        if b + n > 0:
            d_b, d_n = 2 * n * n / (b + n) ** 2, 2 * b * b / (b + n) ** 2
            hm_ci = math.sqrt((d_b * b_ci) ** 2 + (d_n * n_ci) ** 2)
        else:
            hm_ci = 0.0
        notes.append("accuracy = harmonic mean of base and novel; its CI by the delta method")
        classes = np.union1d(base_cls, novel_cls)
        idx = np.concatenate([base_idx, novel_idx])
        pred = np.concatenate([bp, np_])
        extra = {"base": b, "base_ci95": b_ci, "novel": n, "novel_ci95": n_ci, "hm": hm,
                 "base_classes": int(base_cls.size), "novel_classes": int(novel_cls.size),
                 "base_videos": int(bt.size), "novel_videos": int(nt.size)}
        shots = job.pools.run.shots(labels) if job.pools.run is not None else None
        r = video_result(self.name, job, shots, idx, pred, classes, notes, extra)
        r.accuracy, r.ci95, r.video_ci95 = hm, hm_ci, hm_ci
        return [r]


PROTOCOL = Base2NovelProtocol()
