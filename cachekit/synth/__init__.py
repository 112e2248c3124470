"""A procedural, labelled action-video benchmark whose classes only motion can tell apart.

No public action data set can be downloaded on the project's machines, so this module draws its
own: every clip shows a textured background, one to three distractor objects and one *acting*
object whose motion defines the class ("moving something from left to right", "something
falling", ...). Appearance (background, shapes, colours, sizes, positions, speeds) is random per
clip and carries no class information; only the trajectory does.

Six pairs of classes are exact time reversals of each other (:data:`REVERSAL_PAIRS`): clip ``i``
of the second class is clip ``i`` of the first played backwards, frame for frame, so a model
that pools frames without temporal order cannot tell the two apart.

**Compositional mode** (``SynthConfig(objects=...)``, ``clipcache synth --objects default``):
every class of :data:`CLASSES` once per object of :mod:`.vocab` ("red square", ...), named by
replacing "something" with the object ("moving a red square from left to right", "an orange disc
falling"; :func:`compose`, :func:`parse_composition`), object-major. The acting object is then the
class's object (its colour word jittered per clip), distractors are only grey, white or black,
and everything else stays random per clip. Reversal pairs hold per object. This is the benchmark
for a CLIP that knows appearance (the toy encoder of :mod:`cachekit.toy`): classes that differ
only by object, classes that differ only by motion, and base-to-novel over unseen compositions.

Challenges mimic what EV-CLIP targets: ``dark`` (low light with sensor noise), ``shake``
(egocentric camera motion), ``blur``, ``occlusion``, and ``mixed`` (one of those per clip).
The scene of clip ``i`` is the same under every challenge; only the degradation differs.

Everything is drawn with vectorised numpy and seeded per clip from
``SeedSequence([seed, class_id, index])`` (a composition adds a stream tag and its object's key),
so the same config gives the same frame bytes, and libx264 runs single-threaded on its C code
(:func:`write_mp4`) so the same frames give the same mp4 bytes.

Layout written by :func:`synth_dataset` (paths relative to ``out_dir``)::

    videos/<slug>/<slug>_<i:03d>.mp4            H.264, yuv420p
    videos.csv                                  path,label (label = class name)
    splits/clip_fsar/{train,val,test}_few_shot.txt   <split><classIdx>//videos/<slug>/<file>.mp4
    splits/clip_fsar/{train,val,test}_classes.txt    line i = name of classIdx i
    splits/vifi/{train,val,test}.txt            videos/<slug>/<file>.mp4 <label>
    splits/vifi/labels.csv                      id,name (label = index in the data set's classes)
    synth.json                                  resolved config, classes, splits, pairs (and
                                                ``reversal_pairs_apart``: pairs the class split
                                                put on both sides of training; empty by default)
  compositional mode only (ViFi-CLIP format, the same labels; each dir has its labels.csv):
    splits/b2n/{train,base_val,novel_val}.txt   base-to-novel over unseen compositions: base
                                                classes' clips 60/20 in train/base_val (the two
                                                classes of a reversal pair hold out the same
                                                clip indices, so no held-out clip is a training
                                                clip played backwards), every clip of a novel
                                                composition in novel_val
    splits/groups/motion_<motion slug>.txt      one motion, every object: differ only by object
    splits/groups/object_<object slug>.txt      one object, every motion: differ only by motion
    (synth.json adds objects, compositions, b2n and groups)

Modules, each importing only those before it: :mod:`.vocab` (the words of the drawn world, shared
with :mod:`cachekit.toy`; its colour helper borrows :func:`.motions.hsv`), :mod:`.classes`
(classes, compositions, challenges, :class:`SynthConfig`), :mod:`.motions` (poses and one motion
per class), :mod:`.drawing`, :mod:`.challenges`, :mod:`.render` (one clip), :mod:`.splits` (class
splits, base-to-novel, groups), :mod:`.dataset` (the files). The names below are re-exported here.
"""

from .classes import (CHALLENGES, CLASSES, CLIP_CHALLENGES, DEFAULT_OBJECTS, REVERSAL_PAIRS, ClassSpec, SynthConfig,
                      compose, composition_classes, parse_composition, slugify)
from .dataset import SynthResult, synth_dataset, write_mp4
from .render import RenderedClip, Scene, clip_challenge, render, render_clip, scene
from .splits import MOTION_FAMILIES, base_novel_compositions, base_novel_videos, composition_groups, split_classes

__all__ = [
    "CHALLENGES",
    "CLASSES",
    "CLIP_CHALLENGES",
    "DEFAULT_OBJECTS",
    "MOTION_FAMILIES",
    "REVERSAL_PAIRS",
    "ClassSpec",
    "RenderedClip",
    "Scene",
    "SynthConfig",
    "SynthResult",
    "base_novel_compositions",
    "base_novel_videos",
    "clip_challenge",
    "compose",
    "composition_classes",
    "composition_groups",
    "parse_composition",
    "render",
    "render_clip",
    "scene",
    "slugify",
    "split_classes",
    "synth_dataset",
    "write_mp4",
]
