"""``clipcache extract``: decode, sample, run the frozen encoder once, cache the outputs.

Stages, one module each, laid out as clip-retrieval's inference is:

- :mod:`.reader`: hash inputs; decode + resize/crop + normalise (worker threads sized from the
  cores a CPU encoder leaves: :func:`pipeline_plan`, in :mod:`.config`);
- :mod:`.encode`: the encoder's forwards in row groups that keep a video's values independent of
  the other videos (reliability.md I4; CUDA packs whole videos instead);
- :mod:`.writer`: host copies and batch commits (``commit_every`` videos per commit record) on a
  thread behind a bounded queue, and the store's failure reports;
- :mod:`.extend`: committed videos that lack arrays the key now asks for get them;
- :mod:`.runner`: :class:`Extractor` runs the stages overlapped and times each one
  (:class:`ExtractSummary` ``seconds``: hash, decode, encode, write, text); :func:`extract` opens
  the store and checks its key (:mod:`cachekit.cachekey`) around it.
"""

from ..cachekey import (
    EMB_DTYPE, KEY_EXTENSIBLE, TOKEN_DTYPE, cache_key, check_key, key_differences, merged_key, text_key,
    video_array_names,
)
from .config import ExtractConfig, PipelinePlan, parse_blocks, pipeline_plan, usable_cores
from .encode import Encoder
from .extend import Extension, lacking
from .reader import Pending, Reader, hash_input
from ..splitdocs import record_splits
from .runner import Extractor, extract
from .summary import ExtractSummary, merge_summaries
from .writer import Writer, WriterThread

__all__ = [
    "EMB_DTYPE", "KEY_EXTENSIBLE", "TOKEN_DTYPE", "Encoder", "Extension", "ExtractConfig", "ExtractSummary",
    "Extractor", "Pending", "PipelinePlan", "Reader", "Writer", "WriterThread", "cache_key", "check_key",
    "extract", "hash_input", "key_differences", "lacking", "merged_key", "merge_summaries", "parse_blocks",
    "pipeline_plan", "record_splits", "text_key", "usable_cores", "video_array_names",
]
