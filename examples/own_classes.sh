#!/usr/bin/env bash
# Your own classes from a few videos each: no training, just support prototypes in FAISS.
#
# Lay your clips out as one folder per class:
#   my_actions/pouring/*.mp4   my_actions/stirring/*.mp4   my_actions/chopping/*.mp4
# then:
#   bash examples/own_classes.sh my_actions new_clip.mp4 [local-dir:/models/clip]
# Without real weights (third argument) it runs with random weights: the pipeline works, the
# answers mean nothing.
set -euo pipefail
DATA=${1:?folder with one sub-folder of videos per class}
QUERY=${2:?a video to classify}
WEIGHTS=${3:-random}
OUT=${OUT:-runs/own}
MODEL=${MODEL:-ViT-B-32}
mkdir -p "$OUT"

clipcache extract "$DATA" --store "$OUT/cache.zarr" --model "$MODEL" --pretrained "$WEIGHTS" --frames 8
clipcache index --store "$OUT/cache.zarr" --metric otam --out "$OUT/index"      # proto baseline
clipcache query "$QUERY" --index "$OUT/index" --top-k 3 --explain "$OUT/explain"

# A new class later, from a few clips, without re-extracting or retraining:
#   clipcache index add "$OUT/index" --class "whisking" whisk1.mp4 whisk2.mp4
