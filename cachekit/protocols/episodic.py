"""Episodic W-way K-shot (protocols.md §2): class-disjoint train / selection / test classes.

Split: the store's ``train`` list trains; its ``test`` list tests (without one, its ``val`` list:
the test list of a ViFi-CLIP / SSv2 layout); ``val`` selects only beside a ``test`` list. Where
no selection (or no test) list exists, classes of the training list are held out, seeded: the
checkpoint is never chosen on test classes. A store without split files gets a seeded
class-disjoint 60/20/20 split of its classes.

Training feed: :class:`Episodic` (episodes from the training classes, ``episode_loss``).
Evaluator: episodes drawn from one seed on the test classes (or read from an episode file),
mean episode accuracy with the episode interval and the video-level interval.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..ids import union_ids
from ..progress import bar
from .base import Protocol
from .plan import SplitPlan, rng as _rng
from .scoring import EvalJob, class_names, confusion, per_class
from .splitting import (NO_TEST_LIST, disjoint_classes, disjoint_videos, finish, labelled_videos, listed_plan,
                        split_classes, store_lists)


class Episodic:
    """Episodic training feed and validation (protocols.md §2)."""

    def __init__(self, data, labels: np.ndarray, plan: SplitPlan, cfg):
        from ..episodes import EpisodeBatcher, EpisodeIndex, EpisodeSampler
        from ..resident import ResidentFeatures

        self.data, self.cfg = data, cfg
        self.batcher = EpisodeBatcher(labels, plan.train, cfg.ways, cfg.shots, cfg.queries, cfg.episodes_per_step,
                                      cfg.seed, data.views, "train")  # a step's episodes as index arrays
        self.sampler = self.batcher.sampler
        self.val_specs = []
        if cfg.val_episodes:
            val = EpisodeSampler(labels, plan.val, cfg.ways, cfg.shots, cfg.val_queries, cfg.seed, "val")
            self.val_specs = val.sample(cfg.val_episodes)
        self.val_index = EpisodeIndex.of(self.val_specs)
        self.selects = bool(self.val_specs)  # False: the final weights are the model
        # features stay resident on the device (no store I/O in a step); pixels are decoded per episode
        self.feats = None if data.needs.pixels else ResidentFeatures.load(data, union_ids(plan.train, plan.val))
        self.steps = math.ceil(cfg.episodes / cfg.episodes_per_step)
        self.steps_per_epoch = self.steps
        self.notes = self.sampler.notes + (self.feats.notes if self.feats is not None else [])

    def first(self, method):
        return method.episode_logits(self.data.episode(self.sampler.episode(0)))

    def step_loss(self, method, step: int) -> float:
        """Forward and backward one optimiser step's episodes; returns the mean loss."""
        from ..resident import episodic_step_loss

        k = self.cfg.episodes_per_step
        index = self.batcher.sample(step, max(1, min(k, self.cfg.episodes - step * k)))
        if self.feats is not None:
            return episodic_step_loss(method, self.feats, index)
        rng = _rng(self.cfg.seed, step)
        total = 0.0
        for spec in index.specs():
            ep = self.data.episode(spec, view=None, rng=rng)
            loss, _ = method.episode_loss(ep)
            (loss / len(index)).backward()
            total += float(loss.detach())
        return total / len(index)

    def validate(self, method) -> tuple[float, float]:
        from ..episodes import accuracy_ci
        from ..resident import episodic_accuracy

        if self.feats is not None:
            chunk = max(32, self.cfg.episodes_per_step)
            return accuracy_ci(episodic_accuracy(method, self.feats, self.val_index, chunk))
        per = []
        for spec in self.val_specs:
            ep = self.data.episode(spec)
            per.append(float((method.episode_logits(ep).argmax(-1) == ep.query_labels).float().mean()))
        return accuracy_ci(np.array(per))


# --------------------------------------------------------------------------- evaluation helpers
def store_fingerprint(cache) -> str:
    """Identifies the store's video order: episode files hold positions into it."""
    h = hashlib.sha256()
    for k in cache.video_keys:
        h.update(k.encode() + b"\n")
    return h.hexdigest()[:16]


def check_episodes(cache, eps, meta: dict, path) -> None:
    """An episode file must come from this store: same video order, labels that match."""
    from ..episodes import episode_arrays

    fp = meta.get("store_fingerprint")
    if fp is not None and fp != store_fingerprint(cache):
        raise InputError(f"episode file {path} was drawn on a different store (its videos differ from "
                         f"{cache.store.path}); draw new episodes with --seed")
    if not eps:
        raise InputError(f"episode file {path} holds no episodes")
    cls, sup, qry = episode_arrays(eps)
    n = len(cache)
    for name, a in (("support", sup), ("query", qry)):
        if a.size and (a.min() < 0 or a.max() >= n):
            raise InputError(f"episode file {path}: {name} video indices outside 0..{n - 1} of this store")
    labels = cache.labels
    if (sup.size and not np.array_equal(labels[sup], np.broadcast_to(cls[:, :, None], sup.shape))) or \
            not np.array_equal(labels[qry], np.broadcast_to(cls[:, :, None], qry.shape)):
        raise InputError(f"episode file {path}: video labels do not match the episodes' classes in this store")


def episode_videos(eps) -> np.ndarray:
    """Every video (support and query) of the episodes, sorted, distinct."""
    from ..episodes import episode_arrays

    _, sup, qry = episode_arrays(eps)
    return union_ids(sup, qry)


def _episodes_for(job: EvalJob, shots: int, notes: list[str]):
    """Episodes and their meta: re-used from a loaded file, or drawn from the evaluation split."""
    from ..episodes import EpisodeSampler

    if job.loaded is not None:
        eps, meta, name = job.loaded
        return eps, meta
    cache, pools = job.cache, job.pools
    sampler = EpisodeSampler(cache.labels, pools.eval_idx, job.ways, shots, job.queries, seed=job.seed,
                             split_name=pools.eval_name)
    notes.extend(sampler.notes)
    meta = {**sampler.meta, "store_fingerprint": store_fingerprint(cache), "store_videos": len(cache)}
    return sampler.sample(job.episodes), meta


def _score_episodes(job: EvalJob, eps) -> np.ndarray:
    """Predicted episode-local class per query: ``[E, W*Q]``."""
    import torch

    from ..episodes import episode_arrays

    method, cache, device = job.method, job.cache, job.device
    cls, sup, qry = episode_arrays(eps)  # [E, W], [E, W, K], [E, W, Q]
    e_n = cls.shape[0]
    method.bind_classes(list(cache.classes))  # Episode.class_ids and text rows are global class ids
    n = method.needs
    if method.batched_episodes and n.emb and not (n.cls or n.tokens_at or n.pixels or n.backbone):
        # only the videos the episodes read (a store of a million videos is not loaded whole),
        # the episodes' indices renumbered into that table
        used = episode_videos(eps)  # [U] sorted cache indices
        emb = torch.from_numpy(cache.emb(view=0, idx=used)).to(device)  # [U, T, D']
        sup, qry = np.searchsorted(used, sup), np.searchsorted(used, qry)
        text = torch.from_numpy(cache.text()).to(device) if method.needs.text else None  # [C, P, D']
        pred = np.empty((e_n, qry.shape[1] * qry.shape[2]), dtype=np.int64)
        for a in bar(range(0, e_n, job.batch_episodes), desc="eval", unit="chunk"):  # on in a progress scope
            b = min(a + job.batch_episodes, e_n)
            chunk = [torch.from_numpy(x[a:b]).to(device) for x in (cls, sup, qry)]  # [e, W], [e, W, K], [e, W, Q]
            logits = method.episodes_logits(emb, text, *chunk)  # [e, W*Q, W]
            pred[a:b] = logits.argmax(dim=-1).cpu().numpy()
        return pred
    from ..batches import method_data

    data = method_data(cache, method, device)
    rows = []
    with method.reusing_videos():  # the episodes draw the same videos again and again
        for spec in bar(eps, desc="eval", unit="episode"):  # on in a progress scope
            ep = data.episode(spec, view=0)
            rows.append(method.episode_logits(ep).argmax(dim=-1).cpu().numpy())  # [W*Q]
    return np.stack(rows)


class EpisodicProtocol(Protocol):
    name = "episodic"
    class_disjoint = True
    unit = "episodes"
    default_shots = 1
    min_shots = 1
    takes_episode_file = True
    shot_curve = "always"
    training_text = "method"
    default_method = "proto"

    def items_per_step(self, cfg) -> int:
        return cfg.episodes_per_step

    def default_val_every(self, steps: int, steps_per_epoch: int) -> int:
        return max(1, steps // 10)  # ten validations per run

    def _what(self, r) -> str:
        what = f"all-way ({len(r.class_names)} classes)" if r.ways is None else f"{r.ways}-way"
        return what + (f" {r.shots}-shot" if r.shots is not None else "")

    def _second_interval(self, r) -> str:
        if r.video_ci95 is None:
            return ""
        return f", ± {r.video_ci95:.2f} (95% CI, test videos and episodes re-drawn)"

    def plan(self, cache, cfg) -> SplitPlan:
        labels, names = cache.labels, cache.classes
        lists = store_lists(cache)
        seed, ways = cfg.seed, cfg.ways
        select = bool(cfg.val_episodes)
        if not lists:
            labelled = labelled_videos(cache)
            tr, va, te = split_classes(labels, labelled, (0.2, 0.2), seed, ways)
            plan = SplitPlan(self.name, tr, va, te, "generated", seed, True, class_disjoint=True)
            plan.notes.append(f"the store has no split files: made a seeded class-disjoint split (seed {seed}) of its "
                              f"classes: {np.unique(labels[tr]).size} train, {np.unique(labels[va]).size} val, "
                              f"{np.unique(labels[te]).size} test")
            return finish(plan, cache)
        plan, test_name, sel_name = listed_plan(self.name, cache, lists, seed)
        if test_name is None:
            plan.notes.append(NO_TEST_LIST)
        else:
            plan.test = lists[test_name]
            if test_name == "val":
                plan.notes.append("split 'val' is the test list (no 'test' split): it never selects the checkpoint")
            if sel_name is not None:
                # test videos never select, and leave val before the fallback below sees it (a val
                # list equal to the test list is then empty, and selection falls back to train)
                plan.val = np.setdiff1d(lists[sel_name], plan.test)
                dropped = lists[sel_name].size - plan.val.size
                if dropped:
                    plan.notes.append(f"{dropped} of the {lists[sel_name].size} videos of split '{sel_name}' are also "
                                      "test videos: they never select the checkpoint"
                                      + ("" if plan.val.size else " (none of the list is left)"))
        if plan.val.size == 0 and select:
            plan.train, plan.val, _ = split_classes(labels, plan.train, (0.2, 0.0), seed, ways)
            plan.generated = True
            plan.notes.append(f"no selection list: held out {np.unique(labels[plan.val]).size} of the training "
                              f"classes to select the checkpoint (seed {seed})")
        disjoint_videos(plan, "the store's")
        seen = np.intersect1d(plan.classes(labels, "train"), plan.classes(labels, "test"))
        if seen.size:  # split files that hold out videos, not classes: new clips of seen classes
            plan.notes.append(f"{seen.size} test classes are training classes (the store's split files hold out "
                              "videos, not classes): episodes test new clips of seen classes, not the "
                              "class-disjoint benchmark (protocols.md §2)")
        else:
            disjoint_classes(plan, labels, names)
        shared = np.intersect1d(labels[plan.train], labels[plan.val]).size
        if shared:
            plan.notes.append(f"val shares {shared} classes with train: validation episodes are not class-disjoint")
        return finish(plan, cache)

    def feed(self, data, labels, plan, cfg):
        return Episodic(data, labels, plan, cfg)

    def evaluate(self, job: EvalJob) -> list:
        from ..episodes import episode_arrays, save_episodes, video_ci
        from ..report import EvalResult

        cache, method = job.cache, job.method
        notes = list(job.pools.notes)
        eps, ep_meta = _episodes_for(job, job.shots, notes)
        w, k, q = eps[0].ways, eps[0].shots, eps[0].queries
        if k > 0 and not method.uses_support:
            notes.append(f"{method.display_name} ignores the {k} support videos per class: it matches queries to "
                         "the class text only (5-way zero-shot; use --shots 0 for query-only episodes)")
        pred = _score_episodes(job, eps)  # [E, W*Q] local
        cls, sup, qry = episode_arrays(eps)
        local_true = np.repeat(np.arange(w), q)  # [W*Q]
        correct = (pred == local_true[None, :]).astype(np.float64)  # [E, W*Q]
        from ..episodes import accuracy_ci

        acc, ci = accuracy_ci(correct)
        vci = video_ci(correct.reshape(len(eps), w, q), cls, sup, qry)  # test videos and episodes re-drawn
        true_g = cls[:, local_true].ravel()  # [E*W*Q] global class ids
        pred_g = np.take_along_axis(cls, pred, axis=1).ravel()
        classes = np.unique(cls)
        conf = confusion(true_g, pred_g, classes)
        names = class_names(cache, classes)
        if job.out_dir is not None:
            Path(job.out_dir).mkdir(parents=True, exist_ok=True)
            save_episodes(Path(job.out_dir) / job.file_name, eps, ep_meta)
            notes.append(f"episodes saved to {job.file_name}")
        return [EvalResult(protocol=self.name, method=method.display_name, metric=job.metric, ways=w, shots=k,
                           queries=q, episodes=len(eps), accuracy=acc, ci95=ci, video_ci95=vci,
                           videos=int(union_ids(sup, qry).size), classes=int(classes.size),
                           per_class=per_class(conf, names), confusion=conf, class_names=names, notes=notes)]


PROTOCOL = EpisodicProtocol()
