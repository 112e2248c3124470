"""The :class:`Protocol` every protocol module subclasses: its policy (split, training feed,
evaluator) and the traits callers ask for instead of its name.

A protocol module (:mod:`.episodic`, :mod:`.allway`, :mod:`.zeroshot`, :mod:`.base2novel`) owns
its whole policy through one :class:`Protocol` object: :meth:`Protocol.plan` says which videos
train, which select the checkpoint and which test (a :class:`~.plan.SplitPlan`);
:meth:`Protocol.feed` is its training feed; :meth:`Protocol.evaluate` its evaluator. ``train``
and ``eval`` share the plan: ``eval --run`` and ``train --resume`` read back the one the run
recorded (:meth:`~.plan.SplitPlan.load`), so the split a run is scored on is the one it was
trained for. Shared pieces: :mod:`.plan` (the plan and its record), :mod:`.splitting` (planning
from a store's lists), :mod:`.feeds` (the video-level feed), :mod:`.scoring` (evaluation).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from .feeds import VideoFeed

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..cache import FeatureCache
    from .plan import SplitPlan
    from .scoring import EvalJob, Pools


class Protocol:
    """One protocol's policy: its split, its training feed, its evaluator, and the traits callers
    ask for instead of its name.

    ``class_disjoint``: its test classes are never training classes (episodic, zero-shot; the
    novel part of base-to-novel). ``trains``: ``train --protocol`` accepts it.
    ``unit``: what a training step draws and an evaluation counts (``"episodes"`` or ``"videos"``).
    ``default_shots`` / ``min_shots``: ``TrainConfig.shots`` when not given, and its least value.
    ``takes_episode_file``: ``eval --episodes-file`` applies (episodes re-used from a file).
    ``shot_curve``: what several ``eval --shots`` give: ``"always"`` one result per K, ``"support"``
    only for a method that fits support prototypes (else refused), ``"never"`` refused.
    ``training_text``: the class text training reads: ``"seen"`` the training and selection
    classes' rows always (the video-level feeds score against them), ``"method"`` those rows only
    when the method reads text. No protocol reads an unseen class's text while training.
    ``default_method``: the no-training method ``eval`` builds without ``--method``.
    ``scores_unseen_by_text``: it scores classes a method never trained on, which only a
    text-based method can (``predicts == "text"``).
    ``test_parts``: the named parts of its test split (base-to-novel: base and novel), each scored
    against its own class set.
    ``claim_priority``: the order in which :meth:`claims` is asked (higher first).
    """

    name: ClassVar[str] = ""
    class_disjoint: ClassVar[bool] = False
    trains: ClassVar[bool] = True
    unit: ClassVar[Literal["episodes", "videos"]] = "videos"
    default_shots: ClassVar[int] = 0
    min_shots: ClassVar[int] = 0
    takes_episode_file: ClassVar[bool] = False
    shot_curve: ClassVar[Literal["always", "support", "never"]] = "never"
    training_text: ClassVar[Literal["seen", "method"]] = "seen"
    default_method: ClassVar[str] = "zeroshot"
    scores_unseen_by_text: ClassVar[bool] = False
    test_parts: ClassVar[tuple[str, ...]] = ()
    claim_priority: ClassVar[int] = 0

    def plan(self, cache: FeatureCache, cfg) -> SplitPlan:
        raise NotImplementedError

    def claims(self, cache: FeatureCache, lists: dict[str, np.ndarray]) -> bool:
        """Whether the store's split files (``lists``: name -> indices) are laid out for this
        protocol, so that ``train`` picks it for a method that trains under several."""
        return False

    def feed(self, data, labels: np.ndarray, plan: SplitPlan, cfg):
        return VideoFeed(data, labels, plan, cfg)

    def items_per_step(self, cfg) -> int:
        """Videos or episodes (:attr:`unit`) one optimiser step reads on one process."""
        return cfg.batch_size

    def default_val_every(self, steps: int, steps_per_epoch: int) -> int:
        """Steps between validations when ``--val-every`` is 0: each epoch."""
        return steps_per_epoch

    def store_lists_evaluated(self, splits) -> tuple[str, ...]:
        """Store splits the evaluator reads by itself when no ``--split`` is given (then none is
        chosen); empty: one held-out split is chosen for it."""
        return ()

    def disjoint_part(self, pools: Pools, labels: np.ndarray) -> np.ndarray | None:
        """Evaluated videos whose classes must be unseen in training (None: no class check)."""
        return pools.eval_idx if self.class_disjoint else None

    def evaluate(self, job: EvalJob) -> list:
        raise NotImplementedError

    def result_line(self, r) -> str:
        """One line for an :class:`~cachekit.report.EvalResult` of this protocol."""
        text = (f"{r.method} [{r.protocol}, {self._what(r)}, {r.metric}]: {r.accuracy:.2f} ± {r.ci95:.2f} % "
                f"(95% CI over {r.episodes:,} {self.unit}){self._second_interval(r)}")
        if r.videos is not None:
            text += f"; {r.videos:,} distinct test videos, {r.classes:,} classes"
        return text + self._parts_line(r)

    def _what(self, r) -> str:
        """The set-up in the line's brackets (ways, shots, classes)."""
        return f"{len(r.class_names)} classes"

    def _second_interval(self, r) -> str:
        return ""  # video-level protocols: the video interval is the interval

    def _parts_line(self, r) -> str:
        return ""
