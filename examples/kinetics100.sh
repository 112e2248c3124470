#!/usr/bin/env bash
# Kinetics-100 (CMN's split: 64 / 12 / 24 Kinetics-400 classes of 100 videos), 5-way 1-shot and
# 5-shot, as MA-FSAR reports it (protocols.md §2, datasets.md §6).
#
# You need: Kinetics-400 clips in any layout under $KINETICS (CVDF's flat train/ val/, or
# mmaction2's class folders; files <youtube_id>_<start:06d>_<end:06d>.mp4) and CMN's
# kinetics-100/{train,val,test}.list (or TRX's identical splits/kinetics_CMN/*list03.txt), lines
# `<label>/<clip name>`. Each clip is found by name anywhere under $KINETICS; YouTube takedowns
# make some missing (users report about 8 %): the coverage lines say how many.
#
#   KINETICS=/data/k400 SPLITS=/src/CMN/kinetics-100 WEIGHTS=local-dir:/models/vit-b-32-openai \
#     bash examples/kinetics100.sh
#
# Paper numbers it aims at (MA-FSAR, CLIP ViT-B/32, 5-way, 10,000 test episodes):
#   step 2, 5-way zero-shot, frozen CLIP (Table 11, CLIP-Freeze) ... 92.8 (MA-FSAR's matcher: 93.0)
#   MA-FSAR with FgMA (Table 1, PEFT; --modules all) ................ 1-shot 93.5, 5-shot 94.3
# Step 3 trains TPCM alone on the cached features (alpha 0.75: a spatial data set).
set -euo pipefail
: "${KINETICS:?set KINETICS to the folder under which the Kinetics clips are}"
: "${SPLITS:?set SPLITS to the folder with the CMN {train,val,test}.list}"
MODEL=${MODEL:-ViT-B-32}
WEIGHTS=${WEIGHTS:-openai}
WAYS=${WAYS:-5}
EPISODES=${EPISODES:-10000}
VAL_EPISODES=${VAL_EPISODES:-1000}
TRAIN_EPISODES=${TRAIN_EPISODES:-10000}
OUT=${OUT:-runs/kinetics100}
mkdir -p "$OUT"
lists=("$SPLITS"/train*list* "$SPLITS"/val*list* "$SPLITS"/test*list*)

# 1. Every listed clip found under $KINETICS, once (coverage: listed / present / failed / used).
clipcache extract "${lists[@]}" --video-root "$KINETICS" --store "$OUT/cache.zarr" \
    --model "$MODEL" --pretrained "$WEIGHTS" --frames 8 --templates ma_fsar16

# 2. No training: 5-way zero-shot from the class names (paper 92.8) and OTAM prototypes.
clipcache eval --store "$OUT/cache.zarr" --protocol episodic --method zeroshot --ways "$WAYS" --shots 0 \
    --episodes "$EPISODES"
clipcache eval --store "$OUT/cache.zarr" --protocol episodic --method proto --metric otam --ways "$WAYS" \
    --shots 1,5 --episodes "$EPISODES"

# 3. TPCM from the cache, then the test episodes.
clipcache train --method ma_fsar --modules tpcm --alpha 0.75 --store "$OUT/cache.zarr" --out "$OUT/ma_fsar" \
    --protocol episodic --ways "$WAYS" --shots 1 --episodes "$TRAIN_EPISODES" \
    --val-episodes "$VAL_EPISODES"
clipcache eval --store "$OUT/cache.zarr" --run "$OUT/ma_fsar" --ways "$WAYS" --shots 1 --episodes "$EPISODES"
