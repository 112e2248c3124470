#!/usr/bin/env bash
# Something-Something v2, SSv2-Small (CMN's split: 64 / 12 / 24 classes of 100 videos), 5-way
# 1-shot and 5-shot, as MA-FSAR reports it (protocols.md §2, datasets.md §6).
#
# You need: the SSv2 videos as downloaded ($SSV2/<id>.webm: the 20bn-something-something-v2-??
# parts, cat | tar zx) and CMN's smsm-100/{train,val,test}.list (or TRX's identical
# splits/ssv2_CMN/{train,val,test}list03.txt). Their lines are `<class sentence>/<video id>`: the
# class name is the sentence, each video is found as <id>.webm under $SSV2.
#
#   SSV2=/data/20bn-something-something-v2 SPLITS=/src/CMN/smsm-100 \
#     WEIGHTS=local-dir:/models/vit-b-32-openai bash examples/ssv2_small.sh
#
# Paper numbers it aims at (MA-FSAR, CLIP ViT-B/32, 5-way, 10,000 test episodes):
#   step 2, frozen multimodal baseline (Table 3, no FgMA, no TPCM) ... 1-shot 28.8
#   step 3, TPCM on the frozen encoder (Table 3, the row this trains) . 1-shot 42.3
#   MA-FSAR with FgMA (Table 2, PEFT; --modules all) .................. 1-shot 56.5, 5-shot 62.3
set -euo pipefail
: "${SSV2:?set SSV2 to the folder holding <id>.webm}"
: "${SPLITS:?set SPLITS to the folder with the CMN {train,val,test}.list}"
MODEL=${MODEL:-ViT-B-32}
WEIGHTS=${WEIGHTS:-openai}
WAYS=${WAYS:-5}
EPISODES=${EPISODES:-10000}
VAL_EPISODES=${VAL_EPISODES:-1000}
TRAIN_EPISODES=${TRAIN_EPISODES:-100000}
OUT=${OUT:-runs/ssv2_small}
mkdir -p "$OUT"
lists=("$SPLITS"/train*list* "$SPLITS"/val*list* "$SPLITS"/test*list*)

# 1. Every listed video once (8 frames, MA-FSAR's 16 templates); missing ones are counted.
clipcache extract "${lists[@]}" --video-root "$SSV2" --store "$OUT/cache.zarr" \
    --model "$MODEL" --pretrained "$WEIGHTS" --frames 8 --templates ma_fsar16

# 2. No training: the frozen multimodal baseline (paper 28.8) and OTAM prototypes.
clipcache eval --store "$OUT/cache.zarr" --protocol episodic --method zeroshot --ways "$WAYS" --shots 0 \
    --episodes "$EPISODES"
clipcache eval --store "$OUT/cache.zarr" --protocol episodic --method proto --metric otam --ways "$WAYS" \
    --shots 1,5 --episodes "$EPISODES"

# 3. TPCM from the cache, alpha 0.25 (the paper's choice for temporal data sets), 100,000 episodes.
clipcache train --method ma_fsar --modules tpcm --alpha 0.25 --store "$OUT/cache.zarr" --out "$OUT/ma_fsar" \
    --protocol episodic --ways "$WAYS" --shots 1 --episodes "$TRAIN_EPISODES" \
    --val-episodes "$VAL_EPISODES"
clipcache eval --store "$OUT/cache.zarr" --run "$OUT/ma_fsar" --ways "$WAYS" --shots 1 --episodes "$EPISODES"
