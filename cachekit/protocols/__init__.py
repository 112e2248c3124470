"""Protocols, one module each, found by name through one plain dict (protocols.md §1-§5).

Each module owns its whole policy in one :class:`~.base.Protocol` object: which videos and
classes train, which select the checkpoint and which test (:meth:`~.base.Protocol.plan`), its
training feed (:meth:`~.base.Protocol.feed`) and its evaluator
(:meth:`~.base.Protocol.evaluate`). ``clipcache train`` and ``clipcache eval`` resolve splits only
through these.
"""

from __future__ import annotations

import importlib

from ..errors import InputError
from .base import Protocol
from .plan import SplitPlan

PROTOCOLS: dict[str, str] = {
    "episodic": "cachekit.protocols.episodic",
    "allway": "cachekit.protocols.allway",
    "zeroshot": "cachekit.protocols.zeroshot",
    "base2novel": "cachekit.protocols.base2novel",
}


def get_protocol(name: str) -> Protocol:
    """The protocol object registered as ``name`` (one-line error naming the choices)."""
    if name not in PROTOCOLS:
        raise InputError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return importlib.import_module(PROTOCOLS[name]).PROTOCOL


def natural_protocol(method, cache) -> str:
    """The protocol ``train`` uses when none is given: the method's own (``Method.protocols[0]``),
    or, for a method that trains under several, the one whose :meth:`~.base.Protocol.claims`
    the store's split files (asked in :attr:`~.base.Protocol.claim_priority` order; e.g.
    ``base_val`` + ``novel_val``: base2novel; a test list of classes without training videos:
    zeroshot)."""
    own = [p for p in method.protocols if get_protocol(p).trains]
    if not own:
        raise InputError(f"method {method.name} trains under no protocol")
    lists = {n: s.indices for n, s in cache.splits().items()}
    for name in sorted(own, key=lambda p: -get_protocol(p).claim_priority):  # stable: ties keep the method's order
        if get_protocol(name).claims(cache, lists):
            return name
    return own[0]


__all__ = ["PROTOCOLS", "Protocol", "SplitPlan", "get_protocol", "natural_protocol"]
