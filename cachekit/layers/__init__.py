"""Layers that more than one method builds on, or that a method may reuse, as plain ``nn.Module``\\ s.

A method module (``cachekit/methods/*.py``) never imports another method; what two methods share
lives here (style.md practice 9): :mod:`.attention` (the attention + FFN layer of TPCM and of the
CLIP-FSAR head), :mod:`.tpcm` (MA-FSAR's prototype head, used by its frozen and its FgMA
variants), :mod:`.fgma` (the FgMA adapted ViT block), :mod:`.swin` (the Swin-UNet-style decoder
pieces of EV-CLIP's mask generator). TRX lives with the other metrics in :mod:`cachekit.metrics`.
Module attribute names are the ones the methods had, so saved runs' state-dict keys are unchanged.
"""
