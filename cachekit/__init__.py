"""clipcache library: decode and sample videos, run the frozen CLIP encoder once, cache its
outputs, and train / evaluate few-shot and zero-shot action recognition from that cache.

Kept light on purpose: torch, open_clip, zarr and the decoders are imported where used.
"""

__version__ = "0.1.0"
