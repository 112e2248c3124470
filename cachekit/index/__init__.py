"""The prototype index: ``clipcache index`` (build, add a class) and ``clipcache query``.

Modules, each importing only those listed before it (and :mod:`cachekit` / :mod:`stores` below):

- :mod:`.faiss_index` — prototype vectors in FAISS behind a small interface, a directory
  published atomically (knows nothing of CLIP or videos);
- :mod:`.pixels` — decode a video as at extraction and preprocess it as the encoder did;
- :mod:`.export` — the query encoder written beside the prototypes, and loaded back;
- :mod:`.build` — build an index from a store (and a run), load it, add a class;
- :mod:`.query` — classify videos against an index (:class:`~.query.Classifier`);
- :mod:`.query_onnx` — the torch-free query path (numpy + onnxruntime), on its own.

Nothing is imported here: ``import cachekit.index.query_onnx`` must not pull in torch, FAISS or
open_clip, so import names from the modules themselves.
"""
