#!/usr/bin/env bash
# Base-to-novel on UCF101 (protocols.md §5): EZ-CLIP trained on 16 videos of each base class,
# tested on the base classes and on the novel ones (never seen, names first met at test).
#
# You need: UCF101 as downloaded ($DATA/UCF-101/) and a checkout of ViFi-CLIP for its lists and
# label files: $VIFI/datasets_splits/base2novel_splits/ucf_splits/{fs_base_s1_train,base_val,novel_val}.txt
# and $VIFI/labels/ucf_101_{base,novel}_labels.csv (the lists name bare v_x.avi files: each is found
# under UCF-101/; base and novel lists number their classes in their own label files).
#
#   DATA=/data/ucf101 VIFI=/src/ViFi-CLIP WEIGHTS=local-dir:/models/vit-b-16-openai MODEL=ViT-B-16 \
#     bash examples/base2novel.sh
#
# Paper numbers it aims at (EZ-CLIP Table 2, ViT-B/16, 16 shots per base class, averaged over
# seeds s1-s3; base / novel / harmonic mean):
#   step 2, frozen CLIP ("Vanila CLIP") ..... 78.5 / 63.6 / 70.3
#   step 3, EZ-CLIP .......................... 94.4 / 77.9 / 85.4
# (HMDB51: 77.0 / 58.2 / 66.3, K400: 73.1 / 60.6 / 66.3, SSv2: 16.6 / 13.3 / 14.8: the same
# commands on their ViFi-CLIP lists.)
set -euo pipefail
: "${DATA:?set DATA to the folder holding UCF-101/}"
: "${VIFI:?set VIFI to a ViFi-CLIP checkout (datasets_splits/, labels/)}"
MODEL=${MODEL:-ViT-B-16}
WEIGHTS=${WEIGHTS:-openai}
SEED=${SEED:-1}
EPOCHS=${EPOCHS:-10}
OUT=${OUT:-runs/base2novel_ucf101}
B2N="$VIFI/datasets_splits/base2novel_splits/ucf_splits"
mkdir -p "$OUT"
common=(--video-root "$DATA/UCF-101" --store "$OUT/cache.zarr" --model "$MODEL" --pretrained "$WEIGHTS" --frames 8)

# 1. The base lists with the base labels, the novel list with the novel labels (two numberings).
clipcache extract "$B2N/fs_base_s${SEED}_train.txt" "$B2N/base_val.txt" \
    --class-names "$VIFI/labels/ucf_101_base_labels.csv" "${common[@]}"
clipcache extract "$B2N/novel_val.txt" --class-names "$VIFI/labels/ucf_101_novel_labels.csv" "${common[@]}"

# 2. Frozen CLIP (paper 78.5 / 63.6 / 70.3).
clipcache eval --store "$OUT/cache.zarr" --protocol base2novel --method zeroshot

# 3. EZ-CLIP on the base classes (paper 94.4 / 77.9 / 85.4).
clipcache train --method ez_clip --store "$OUT/cache.zarr" --out "$OUT/ez_clip_s$SEED" --protocol base2novel \
    --epochs "$EPOCHS"
clipcache eval --store "$OUT/cache.zarr" --run "$OUT/ez_clip_s$SEED"
