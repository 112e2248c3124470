"""A command that needs arrays its store lacks adds them to that same store, once.

``train``, ``eval``, ``index`` and ``query --run`` call :func:`ensure_cached` with what the method
reads (:class:`~cachekit.methods.base.CacheNeeds`) and the videos this command reads. When some
of those videos lack the tokens entering a block, or some class lacks text, the store is extended
in place through :meth:`cachekit.extract.Extractor.extend` (the same code ``extract`` extends
with, so the arrays equal a fresh extraction's), for those videos only: the encoder is rebuilt
from the store's cache key (:func:`cachekit.runs.load_store_encoder`), the writer lease is taken
as ``extract`` takes it, and one line says what is added, for how many videos, and that it
happens once. The key lists a block once every video of the store has it.

Refused instead, with the one-line error a command gave before this existed (it names the
``extract`` command that adds the arrays): under :func:`extension_policy` ``allow=False``
(``--no-extend``), when the videos' files are no longer where the store says, under torchrun,
and for a store the caller opened itself. Pixels are not added: a method that reads pixels
decodes them again from the files at the cached frame indices when the store has no pixel cache
(the same tensors), so only ``extract --pixels`` writes that cache.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from .errors import InputError
from .ids import unique_ids

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Policy:
    """Whether commands may extend their store, where the one line goes, and the weights to
    rebuild the encoder with when the store's key names a file."""

    allow: bool = True
    notify: Callable[[str], None] | None = None
    progress: bool = False
    pretrained: str | None = None


_POLICY: ContextVar[Policy] = ContextVar("clipcache_extension_policy", default=Policy())


@contextmanager
def extension_policy(allow: bool = True, notify: Callable[[str], None] | None = None, progress: bool = False,
                     pretrained: str | None = None) -> Iterator[Policy]:
    """The policy of the commands run inside the block (the CLI sets it from ``--no-extend``)."""
    token = _POLICY.set(Policy(allow, notify, progress, pretrained))
    try:
        yield _POLICY.get()
    finally:
        _POLICY.reset(token)


def missing_text(cache, classes) -> list[str]:
    have = {rec["name"] for rec in cache.text_entries().values()}
    return [c for c in dict.fromkeys(classes) if c not in have]


def ensure_cached(cache, needs, idx, *, command: str, classes=None, encoder=None, pretrained: str | None = None,
                  device: str = "cpu") -> None:
    """Make the videos ``idx`` of ``cache`` hold the token blocks ``needs`` names, and ``classes``
    (names) their text when ``needs.text``; extend the store in place when they do not (see the
    module). ``encoder``: an already loaded encoder of the store's key (else loaded here)."""
    idx = unique_ids(np.asarray(idx, dtype=np.int64))
    blocks = [b for b in needs.tokens_at if cache.lacking(f"tokens_{b}", idx).size]
    texts = missing_text(cache, classes) if needs.text and classes is not None else []
    if not blocks and not texts:
        return
    lacking = unique_ids(np.concatenate([cache.lacking(f"tokens_{b}", idx) for b in blocks])) if blocks \
        else np.zeros(0, np.int64)
    policy = _POLICY.get()
    gone = [cache.paths[i] for i in lacking if not os.path.exists(cache.paths[i])]
    refusal = None
    if not policy.allow:
        refusal = "--no-extend"
    elif gone:
        refusal = f"the files of {len(gone)} of these videos are not where the store says (e.g. {gone[0]})"
    elif not getattr(cache, "owns_store", False):
        refusal = "the store was opened by the caller"
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        refusal = "not extended under torchrun"
    if refusal is not None:
        raise _refusal(cache, blocks, texts, refusal)
    what = []
    if blocks:
        what.append(f"the tokens entering block {','.join(map(str, blocks))} of {lacking.size:,} videos")
    if texts:
        what.append(f"the text of {len(texts):,} classes")
    line = (f"{command}: adding {' and '.join(what)} to store {cache.store.path}, once (later commands read "
            "them from the store; --no-extend refuses instead)")
    (policy.notify or log.warning)(line)
    _extend(cache, blocks, [cache.video_keys[i] for i in lacking], texts, encoder,
            pretrained or policy.pretrained, device, policy.progress)


def _refusal(cache, blocks: list[int], texts: list[str], why: str) -> InputError:
    """The error a command gave before stores extended themselves, with why it is given now."""
    if blocks:
        return InputError(cache.missing_tokens_message(tuple(blocks)) + f" ({why})")
    return InputError(f"no text embeddings for class {texts[0]!r} in {cache.store.path}; re-run extract ({why})")


def _extend(cache, blocks: list[int], keys: list[str], texts: list[str], encoder, pretrained: str | None,
            device: str, progress: bool) -> None:
    from clipcache.stores import open_store

    from .distributed import Dist
    from .extract import ExtractConfig, ExtractSummary, Extractor
    from .cachekey import key_sampler, merged_key
    from .runs import load_store_encoder

    key = cache.key
    enc = encoder if encoder is not None else load_store_encoder(key, pretrained, device)
    cfg = ExtractConfig(sampler=key_sampler(key),
                        tokens_at=tuple(sorted(set(key.get("tokens_at") or ()) | set(blocks))),
                        pixels=bool(key.get("pixels")))
    templates = _store_templates(cache)
    path = str(cache.store.path)
    cache.store.close()
    try:
        store = open_store(path, "a")  # the writer lease, as extract takes it
        try:
            ex = Extractor(enc, store, cfg)
            if templates is not None:
                ex.templates = templates  # the store's own template set
            s = ExtractSummary(store=path)
            if keys:
                ex.extend(s, Dist(), progress=progress, only=set(keys))
            if s.extend_failed:
                raise InputError(f"could not add the arrays to {s.extend_failed} of {len(keys)} videos of store {path} "
                                 f"({s.failed[0][1] if s.failed else 'see clipcache info'})")
            if texts:
                ex.encode_classes(texts)
            have = store.attrs.get("cache_key", {})
            shapes = store.array_shapes("videos")  # from the index: no record per video
            none = [None] if store.keys("videos") else []  # an empty store lacks nothing
            full = [b for b in blocks if None not in shapes.get(f"tokens_{b}", none)]
            if full:  # every video has them now: the key says so (one atomic write)
                store.update_attrs(  # merged into the key as stored now: another writer's extension kept
                    lambda cur: {**cur, "cache_key": merged_key(cur.get("cache_key", have), {"tokens_at": full})})
            store.finalize()
        finally:
            store.close()
    finally:
        cache.reopen()


def _store_templates(cache) -> tuple[str, ...] | None:
    """The largest template set the store's text was encoded with (None: no text yet)."""
    best = None
    for rec in cache.text_entries().values():
        if best is None or len(rec["templates"]) > len(best):
            best = tuple(rec["templates"])
    return best
