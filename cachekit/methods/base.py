"""What every method is: a module that says what it reads from the cache, and scores videos.

A method module exports ``Config`` (a frozen dataclass, defaults = the paper's), ``build(cfg,
info, frames, backbone=None) -> Method`` and ``DESCRIPTION``. The trainer and evaluator only
use the :class:`Method` interface below; they never look at method names.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ..encoder import ModelInfo
from ..errors import InputError



def require_positive(method: str, **values: float) -> None:
    """Config validation shared by the methods: each ``option=value`` must be a number > 0
    (NaN is not); else one :class:`InputError` line naming the method, option and value."""
    for option, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise InputError(f"{method} {option} must be > 0, got {value!r}")


def require_choice(method: str, option: str, value, choices) -> None:
    """Config validation shared by the methods: ``value`` must be one of ``choices``."""
    if value not in choices:
        raise InputError(f"{method} {option} {value!r} unknown; choose one of {', '.join(map(str, choices))}")


@dataclass(frozen=True)
class CacheNeeds:
    """What a method reads for each video."""

    emb: bool = True  # per-frame projected embeddings [T, D']
    cls: bool = False  # class token before projection [T, W]
    tokens_at: tuple[int, ...] = ()  # tokens entering these blocks [T, N+1, W]
    text: bool = False  # class text embeddings [C, P, D'] (all cached templates)
    pixels: bool = False  # decoded, preprocessed frames [T, 3, S, S]: the backbone runs
    backbone: bool = False  # runs (part of) the frozen encoder forward and backward

    def to_dict(self) -> dict:
        return {"emb": self.emb, "cls": self.cls, "tokens_at": list(self.tokens_at), "text": self.text,
                "pixels": self.pixels, "backbone": self.backbone}


@dataclass
class VideoBatch:
    """B videos, one cached view each, as tensors on one device."""

    index: torch.Tensor  # [B] video indices into the cache
    labels: torch.Tensor  # [B] global class ids (into FeatureCache.classes), -1 unknown
    emb: torch.Tensor | None = None  # [B, T, D']
    cls: torch.Tensor | None = None  # [B, T, W]
    tokens: dict[int, torch.Tensor] = field(default_factory=dict)  # {L: [B, T, N+1, W]} float32
    pixels: torch.Tensor | None = None  # [B, T, 3, S, S]

    def __len__(self) -> int:
        return int(self.index.shape[0])


@dataclass
class Episode:
    """One N-way K-shot episode; supports and queries are class-major (class 0's shots first)."""

    support: VideoBatch  # [W*K]
    query: VideoBatch  # [W*Q]
    support_labels: torch.Tensor  # [W*K] episode-local labels 0..W-1
    query_labels: torch.Tensor  # [W*Q] episode-local labels
    class_ids: torch.Tensor  # [W] global class ids
    text: torch.Tensor | None = None  # [W, P, D'] text embeddings of the episode's classes

    @property
    def ways(self) -> int:
        return int(self.class_ids.shape[0])


@dataclass
class EpisodeBatch:
    """E episodes of one shape (W ways, K shots, Q queries per class) stacked on a leading axis.

    ``support`` and ``query`` are :class:`VideoBatch` es whose tensors carry the episode axis
    first: ``index``/``labels`` ``[E, W*K]``, ``emb`` ``[E, W*K, T, D']``, ``cls``
    ``[E, W*K, T, W']``, ``tokens`` ``{L: [E, W*K, T, N+1, W']}`` (queries: ``W*Q``). Supports
    and queries are class-major in every episode, as in :class:`Episode`.
    """

    support: VideoBatch  # [E, W*K, ...]
    query: VideoBatch  # [E, W*Q, ...]
    support_labels: torch.Tensor  # [E, W*K] episode-local labels 0..W-1
    query_labels: torch.Tensor  # [E, W*Q]
    class_ids: torch.Tensor  # [E, W] global class ids
    text: torch.Tensor | None = None  # [E, W, P, D']

    def __len__(self) -> int:
        return int(self.class_ids.shape[0])

    @property
    def ways(self) -> int:
        return int(self.class_ids.shape[1])

    @staticmethod
    def _slice(b: VideoBatch, e: int) -> VideoBatch:
        return VideoBatch(index=b.index[e], labels=b.labels[e],
                          emb=None if b.emb is None else b.emb[e], cls=None if b.cls is None else b.cls[e],
                          tokens={k: v[e] for k, v in b.tokens.items()},
                          pixels=None if b.pixels is None else b.pixels[e])

    def episode(self, e: int) -> Episode:
        """Episode ``e`` alone (views into the batch's tensors)."""
        return Episode(support=self._slice(self.support, e), query=self._slice(self.query, e),
                       support_labels=self.support_labels[e], query_labels=self.query_labels[e],
                       class_ids=self.class_ids[e], text=None if self.text is None else self.text[e])

    @classmethod
    def of(cls, ep: Episode) -> "EpisodeBatch":
        """One episode as a batch of E = 1 (views, no copies)."""
        def one(b: VideoBatch) -> VideoBatch:
            return VideoBatch(index=b.index[None], labels=b.labels[None],
                              emb=None if b.emb is None else b.emb[None], cls=None if b.cls is None else b.cls[None],
                              tokens={k: v[None] for k, v in b.tokens.items()},
                              pixels=None if b.pixels is None else b.pixels[None])
        return cls(support=one(ep.support), query=one(ep.query), support_labels=ep.support_labels[None],
                   query_labels=ep.query_labels[None], class_ids=ep.class_ids[None],
                   text=None if ep.text is None else ep.text[None])


class Method(nn.Module):
    """Base class. Subclasses set ``needs`` and implement the protocol(s) they support.

    What a method can do is declared here, on the class, so the trainer and evaluator never
    probe it:

    - ``protocols``: the protocols (:data:`cachekit.protocols.PROTOCOLS`) it trains and is
      evaluated under, its natural one first (``train`` uses it when ``--protocol`` is not
      given). ``"episodic"``: ``episode_loss`` / ``episode_logits``; ``"allway"``,
      ``"zeroshot"``, ``"base2novel"``: ``video_loss`` / ``video_logits`` against the text (or
      the classifier) of a class set; only a method that scores by text can take classes it never
      trained on (zeroshot, base2novel).
    - ``predicts``: how it scores. ``"text"``: videos against class text; ``"support"``: against
      prototypes fitted from support videos (:meth:`fit_support` on all-way); ``"classifier"``:
      a head over the fixed class set it was trained on; ``"episode"``: queries against an
      episode's supports.
    - ``batched_episodes``: :meth:`episodes_logits` scores a chunk of episodes from the whole
      embedding table at once (evaluation). ``batched_training``: :meth:`episode_batch_loss` runs a
      training step's episodes as one batch (:mod:`cachekit.resident`). ``uses_support``: episodic scores depend on the support videos
      (False: 5-way zero-shot). ``can_index``: :meth:`support_features` / :meth:`query_features`
      give features a prototype index (``clipcache index``) can hold; a text or classifier method
      is indexed by its :meth:`index_class_vectors` instead.
    """

    name: ClassVar[str] = ""
    protocols: ClassVar[tuple[str, ...]] = ()
    predicts: ClassVar[str] = "episode"
    batched_episodes: ClassVar[bool] = False
    uses_support: ClassVar[bool] = True
    can_index: ClassVar[bool] = True
    batched_training: ClassVar[bool] = False
    """True: :meth:`episode_batch_loss` runs E episodes through one forward (the trainer sends a
    step's episodes at once). False: the defaults loop over :meth:`episode_loss`, and the trainer
    calls it episode by episode with a backward after each (memory of one episode)."""

    def __init__(self, info: ModelInfo, frames: int, needs: CacheNeeds, display_name: str):
        super().__init__()
        self.info = info
        self.frames = frames
        self.needs = needs
        self.display_name = display_name

    @property
    def needs_backbone(self) -> bool:
        return self.needs.backbone

    @property
    def metric_name(self) -> str:
        """What a report calls the method's scoring ("learned" for a trained head)."""
        return "learned"

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Exactly the parameters the optimiser updates (frozen CLIP weights excluded)."""
        return [p for p in self.parameters() if p.requires_grad]

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint holds: trainable parameters and persistent buffers, never frozen CLIP
        weights nor non-persistent buffers (derived at build time, e.g. Swin's window masks)."""
        keep = {id(p) for p in self.trainable_parameters()}
        out = {n: p.detach() for n, p in self.named_parameters() if id(p) in keep}
        persistent = set(self.state_dict(keep_vars=True))
        out.update({n: b.detach() for n, b in self.named_buffers()
                    if n in persistent and not n.startswith("backbone.")})
        return out

    def bind_classes(self, names: list[str]) -> None:
        """Tell the method the class names behind the text it will be given (default: ignored).

        The trainer and evaluator call this for every method whenever the label space changes:
        ``names[i]`` is the name of row i of the ``text`` passed to the following
        ``video_logits`` / ``video_loss`` calls, and of global class id i in ``Episode.class_ids``.
        Methods that run the text tower themselves (e.g. EZ-CLIP's text adapters) tokenise them.
        """

    # episodic protocol
    def episode_logits(self, ep: Episode) -> torch.Tensor:  # [W*Q, W]
        raise NotImplementedError(f"{self.name} does not support the episodic protocol")

    def episode_loss(self, ep: Episode) -> tuple[torch.Tensor, torch.Tensor]:  # (loss, [W*Q, W])
        logits = self.episode_logits(ep)
        return nn.functional.cross_entropy(logits, ep.query_labels), logits

    def episodes_logits(self, emb: torch.Tensor, text: torch.Tensor | None, class_ids: torch.Tensor,
                        support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Many episodes at once (``batched_episodes``): emb ``[V, T, D']``, text ``[C, P, D']`` or
        None, class_ids ``[E, W]``, support ``[E, W, K]``, query ``[E, W, Q]`` -> ``[E, W*Q, W]``."""
        raise NotImplementedError(f"{self.name} scores one episode at a time (batched_episodes is False)")

    def reusing_videos(self) -> contextlib.AbstractContextManager:
        """A scope of inference calls with fixed weights (a validation, an evaluation) in which the
        method may compute what depends on one video alone once and reuse it; default: nothing kept."""
        return contextlib.nullcontext()

    def episode_batch_logits(self, batch: EpisodeBatch) -> torch.Tensor:  # [E, W*Q, W]
        """Logits of E episodes at once; default: :meth:`episode_logits` episode by episode."""
        return torch.stack([self.episode_logits(batch.episode(e)) for e in range(len(batch))])

    def episode_batch_loss(self, batch: EpisodeBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean of the E episodes' losses, logits ``[E, W*Q, W]``); default: :meth:`episode_loss`
        episode by episode. With E = 1 it equals :meth:`episode_loss` of that episode."""
        losses, logits = zip(*(self.episode_loss(batch.episode(e)) for e in range(len(batch))))
        return torch.stack(losses).mean(), torch.stack(logits)

    # all-way / zero-shot protocol
    def fit_support(self, emb: torch.Tensor, labels: torch.Tensor, class_ids) -> None:
        """``predicts == "support"``: set one prototype per class of ``class_ids`` from training
        videos emb ``[N, T, D']`` with global labels ``[N]``."""
        raise NotImplementedError(f"{self.name} does not fit support prototypes (predicts {self.predicts!r})")

    def video_logits(self, batch: VideoBatch, text: torch.Tensor) -> torch.Tensor:  # text [C, P, D'] -> [B, C]
        raise NotImplementedError(f"{self.name} does not support the all-way protocol")

    def video_loss(self, batch: VideoBatch, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.video_logits(batch, text)
        return nn.functional.cross_entropy(logits, batch.labels), logits

    # prototype index and query (``clipcache index`` / ``clipcache query``): optional hooks
    def support_features(self, batch: VideoBatch, text: torch.Tensor | None = None) -> torch.Tensor:
        """Per-frame features ``[B, T, D]`` of support videos, as this method compares them.

        ``text`` ``[B, P, D']``: the cached text of each video's class when ``needs.text``, else
        None. Default: the cached embeddings. The index keeps, per class, the per-frame mean of
        its shots' features (a temporal prototype ``[T, D]``) and their pooled vector.
        """
        if batch.emb is None:
            raise NotImplementedError(f"{self.name} reads no cached embeddings: it must define "
                                      "support_features to build a prototype index")
        return batch.emb

    def query_features(self, batch: VideoBatch) -> torch.Tensor:
        """Per-frame features ``[B, T, D]`` of query videos (default: the embeddings).

        ``clipcache index`` exports the frozen encoder followed by this path with ``torch.export``,
        so it must be traceable: no data-dependent Python control flow.
        """
        if batch.emb is None:
            raise NotImplementedError(f"{self.name} reads no cached embeddings: it must define "
                                      "query_features to answer queries")
        return batch.emb

    def index_class_vectors(self, text: torch.Tensor | None) -> torch.Tensor | None:
        """Class vectors ``[C, D]`` of a method whose classifier is a per-class matrix (class text,
        head weights): the mean over T of :meth:`query_features` dotted with them gives its
        :meth:`video_logits`, so a ``clipcache index`` of them answers as the method does.

        ``text`` ``[C, P, D']``: the cached text of the bound classes (:meth:`bind_classes`) when
        ``needs.text``. None (default): the method is not such a classifier; a method that predicts
        by text or a trained head (``predicts`` "text" / "classifier") and returns None cannot be
        indexed, since support prototypes would make another classifier.
        """
        return None

    def prototype_metric(self) -> str | None:
        """The parameter-free score (a key of ``cachekit.similarity.SIMILARITIES``) of query features against
        class prototypes that ranks like this method does; None: :meth:`score_supports` scores."""
        return "mean"

    def score_supports(self, query: torch.Tensor, support: torch.Tensor, support_labels: torch.Tensor,
                       ways: int, text: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``[Q, W]`` (higher = better) of query features ``[Q, T, D]`` against the support
        features ``[S, T, D]`` of W classes (``support_labels [S]`` in 0..W-1; ``text [W, P, D']``
        when ``needs.text``). Used when :meth:`prototype_metric` is None. Default: one episode
        through :meth:`episode_logits`, with the features as the batches' embeddings.
        """
        dev = query.device
        ep = Episode(
            support=VideoBatch(index=torch.arange(support.shape[0], device=dev), labels=support_labels, emb=support),
            query=VideoBatch(index=torch.arange(query.shape[0], device=dev),
                             labels=torch.full((query.shape[0],), -1, dtype=torch.long, device=dev), emb=query),
            support_labels=support_labels,
            query_labels=torch.zeros(query.shape[0], dtype=torch.long, device=dev),
            class_ids=torch.arange(ways, device=dev),
            text=text,
        )
        return self.episode_logits(ep)

    def explain_mask(self, batch: VideoBatch) -> torch.Tensor | None:
        """The spatial mask the method applies to the preprocessed frames, ``[B, S, S]`` or
        ``[B, T, S, S]`` in [0, 1] (EV-CLIP mask prompts), for ``clipcache query --explain``;
        None (default) when it has none."""
        return None
