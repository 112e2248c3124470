"""The toy CLIP: a small open_clip model that clipcache pretrains itself, contrastively, on drawn
still images with captions (:mod:`.scenes`, :mod:`.pretrain`; its vision towers: :mod:`.tower`),
so that methods have an encoder that knows colours, shapes, places and words, but not motion, as
real CLIP does. It is a toy: nothing measured with it says anything about real CLIP on real videos."""
