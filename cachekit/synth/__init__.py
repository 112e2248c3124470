"""A procedural, labelled action-video benchmark whose classes only motion can tell apart.

No public action data set can be downloaded on the project's machines, so this module draws its
own: every clip shows a textured background, one to three distractor objects and one *acting*
object whose motion defines the class ("moving something from left to right", "something
falling", ...). Appearance (background, shapes, colours, sizes, positions, speeds) is random per
clip and carries no class information; only the trajectory does.

Six pairs of classes are exact time reversals of each other (:data:`REVERSAL_PAIRS`): clip ``i``
of the second class is clip ``i`` of the first played backwards, frame for frame, so a model
that pools frames without temporal order cannot tell the two apart.

Challenges mimic what EV-CLIP targets: ``dark`` (low light with sensor noise), ``shake``
(egocentric camera motion), ``blur``, ``occlusion``, and ``mixed`` (one of those per clip).
The scene of clip ``i`` is the same under every challenge; only the degradation differs.

Everything is drawn with vectorised numpy and seeded per clip from
``SeedSequence([seed, class_id, index])``, so the same config gives the same frame bytes, and
libx264 runs single-threaded so the same frames give the same mp4 bytes.

Layout written by :func:`synth_dataset` (paths relative to ``out_dir``)::

    videos/<slug>/<slug>_<i:03d>.mp4            H.264, yuv420p
    videos.csv                                  path,label (label = class name)
    splits/clip_fsar/{train,val,test}_few_shot.txt   <split><classIdx>//videos/<slug>/<file>.mp4
    splits/clip_fsar/{train,val,test}_classes.txt    line i = name of classIdx i
    splits/vifi/{train,val,test}.txt            videos/<slug>/<file>.mp4 <label>
    splits/vifi/labels.csv                      id,name (label = index in the data set's classes)
    synth.json                                  resolved config, classes, splits, pairs

Modules, each importing only those before it: :mod:`.classes` (classes, challenges,
:class:`SynthConfig`), :mod:`.motions` (poses and one motion per class), :mod:`.drawing`,
:mod:`.challenges`, :mod:`.render` (one clip), :mod:`.splits` (class splits), :mod:`.dataset`
(the files). The names below are re-exported here.
"""

from .classes import CHALLENGES, CLASSES, CLIP_CHALLENGES, REVERSAL_PAIRS, ClassSpec, SynthConfig, slugify
from .dataset import SynthResult, synth_dataset, write_mp4
from .render import RenderedClip, clip_challenge, render, render_clip
from .splits import split_classes

__all__ = [
    "CHALLENGES",
    "CLASSES",
    "CLIP_CHALLENGES",
    "REVERSAL_PAIRS",
    "ClassSpec",
    "RenderedClip",
    "SynthConfig",
    "SynthResult",
    "clip_challenge",
    "render",
    "render_clip",
    "slugify",
    "split_classes",
    "synth_dataset",
    "write_mp4",
]
