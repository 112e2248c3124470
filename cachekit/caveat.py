"""What an encoder is, in one line every output carries: random weights and the toy CLIP know
nothing about real videos, and a number measured with them must say so where it is printed.

Reads only the cache key's ``weights`` field (no torch, no open_clip), so ``clipcache query``'s
light path can use it too.
"""

from __future__ import annotations

RANDOM_CAVEAT = "the encoder has RANDOM weights: features and accuracies carry no CLIP knowledge"
TOY_CAVEAT = ("TOY encoder: clipcache's own small CLIP, pretrained on drawn still images; its numbers "
              "say nothing about real CLIP on real videos")


def weights_kind(weights: str | None) -> str:
    """``"random"``, ``"toy"`` or ``"pretrained"`` for a cache key's ``weights`` field
    (``random:SEED``, ``toy``, ``toy:FILE`` for a toy weights file passed by path, or anything else)."""
    w = str(weights or "")
    if w.startswith("random:"):
        return "random"
    if w == "toy" or w.startswith("toy:"):
        return "toy"
    return "pretrained"


def encoder_caveat(key: dict | None) -> str | None:
    """The caveat of the encoder a cache key describes: random or toy weights get one line
    saying what their numbers are worth; real pretrained weights get None."""
    kind = weights_kind((key or {}).get("weights"))
    return {"random": RANDOM_CAVEAT, "toy": TOY_CAVEAT}.get(kind)


__all__ = ["RANDOM_CAVEAT", "TOY_CAVEAT", "encoder_caveat", "weights_kind"]
