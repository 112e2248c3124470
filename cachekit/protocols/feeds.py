"""The video-level training feed (all-way, zero-shot, base-to-novel) and the training data it
reads: mini-batches of training videos against the text of the training classes only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .plan import SplitPlan, rng

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..cache import FeatureCache


def training_data(cache: FeatureCache, needs, device, classes: np.ndarray, encoder=None,
                  videos: np.ndarray | None = None):
    """:class:`~cachekit.batches.CacheData` whose text table holds only ``classes``' rows (the
    training and selection classes): no other class's text is read, and a method that touched a
    NaN row of one would turn its loss NaN (the trainer stops). ``videos`` (the train and val
    videos): the only videos whose features are read; a batch of any other is an error."""
    from ..batches import CacheData

    return CacheData(cache, needs, device, encoder=encoder, text_classes=classes, videos=videos)


class VideoFeed:
    """All-way mini-batch training feed and validation (protocols.md §3, §4, §5).

    Labels and text rows are restricted to one class set at a time (the training classes while
    training, the selection classes while validating), and the method is told the names behind
    the rows (``bind_classes``) whenever the set changes: no other class's text or name is used.
    """

    def __init__(self, data, labels: np.ndarray, plan: SplitPlan, cfg):
        self.data, self.cfg = data, cfg
        self.train_idx, self.val_idx = plan.train, plan.val if cfg.val_episodes else np.zeros(0, np.int64)
        self.selects = bool(self.val_idx.size)  # False: the final weights are the model
        self.steps_per_epoch = math.ceil(plan.train.size / cfg.batch_size)
        self.steps = cfg.epochs * self.steps_per_epoch
        self.notes: list[str] = []
        self.names = list(data.cache.classes)
        self.train_classes = np.unique(labels[plan.train])
        self.val_classes = np.unique(labels[self.val_idx]) if self.val_idx.size else self.train_classes
        if np.isin(self.val_classes, self.train_classes).all():
            self.notes.append(f"training on the {self.train_classes.size} training classes' text only")
        else:
            self.notes.append(f"zero-shot training: {self.train_classes.size} training classes' text; validation on "
                              f"{self.val_classes.size} unseen classes")

    def _use(self, method, classes: np.ndarray):
        import torch

        method.bind_classes([self.names[i] for i in classes])
        remap = torch.full((len(self.names),), -1, dtype=torch.long)
        remap[torch.from_numpy(classes)] = torch.arange(classes.size)
        return self.data.text[torch.from_numpy(classes).to(self.data.text.device)], remap

    def first(self, method):
        text, _ = self._use(method, self.train_classes)
        return method.video_logits(self.data.batch(self.train_idx[: self.cfg.batch_size]), text)

    def step_loss(self, method, step: int) -> float:
        text, remap = self._use(method, self.train_classes)
        epoch, i = divmod(step, self.steps_per_epoch)
        order = rng(self.cfg.seed, 0xA11, epoch).permutation(self.train_idx)
        idx = order[i * self.cfg.batch_size:(i + 1) * self.cfg.batch_size]
        batch = self.data.batch(idx, view=None, rng=rng(self.cfg.seed, step))
        batch.labels = remap.to(batch.labels.device)[batch.labels]
        loss, _ = method.video_loss(batch, text)
        loss.backward()
        return float(loss.detach())

    def validate(self, method) -> tuple[float, float]:
        from ..episodes import accuracy_ci

        text, remap = self._use(method, self.val_classes)
        correct = []
        for i in range(0, self.val_idx.size, self.cfg.batch_size):
            batch = self.data.batch(self.val_idx[i:i + self.cfg.batch_size])
            hit = method.video_logits(batch, text).argmax(-1).cpu() == remap[batch.labels.cpu()]
            correct.append(hit.float().numpy())
        self._use(method, self.train_classes)
        return accuracy_ci(np.concatenate(correct))
