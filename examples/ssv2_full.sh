#!/usr/bin/env bash
# Something-Something v2, SSv2-Full (OTAM's split: 64 / 12 / 24 classes, all their videos), 5-way
# 1-shot and 5-shot, as MA-FSAR reports it (protocols.md §2, datasets.md §6).
#
# You need: the SSv2 videos as downloaded ($SSV2/<id>.webm), OTAM's lists as TRX ships them
# (splits/ssv2_OTAM/{train,val,test}list07.txt, lines `train8/78687`), and the class names those
# numbers index: CLIP-FSAR's CLIPFSAR_SSv2_Full_1shot_v1.yaml lists them (TRAIN.CLASS_NAME,
# TEST.CLASS_NAME, in labels.json order); write one name per line into
# $NAMES/{train,val,test}_classes.txt.
#
#   SSV2=/data/20bn-something-something-v2 SPLITS=/src/trx/splits/ssv2_OTAM NAMES=/data/ssv2_full_names \
#     WEIGHTS=local-dir:/models/vit-b-32-openai bash examples/ssv2_full.sh
#
# Paper numbers it aims at (MA-FSAR, CLIP ViT-B/32, 5-way, 10,000 test episodes):
#   step 2, frozen multimodal baseline (Table 3) ................. 1-shot 30.2
#   step 3, TPCM on the frozen encoder (Table 3) ................. 1-shot 46.5
#   MA-FSAR with FgMA (Table 2, PEFT; --modules all) ............. 1-shot 61.9, 5-shot 64.5
set -euo pipefail
: "${SSV2:?set SSV2 to the folder holding <id>.webm}"
: "${SPLITS:?set SPLITS to the folder with the OTAM {train,val,test}list07.txt}"
: "${NAMES:?set NAMES to the folder with {train,val,test}_classes.txt}"
MODEL=${MODEL:-ViT-B-32}
WEIGHTS=${WEIGHTS:-openai}
WAYS=${WAYS:-5}
EPISODES=${EPISODES:-10000}
VAL_EPISODES=${VAL_EPISODES:-1000}
TRAIN_EPISODES=${TRAIN_EPISODES:-100000}
OUT=${OUT:-runs/ssv2_full}
mkdir -p "$OUT"

# 1. Every listed video once; `trainK/<id>` opens <id>.webm, K indexes $NAMES/train_classes.txt.
clipcache extract "$SPLITS"/{train,val,test}list07.txt --class-names "$NAMES" --video-root "$SSV2" \
    --store "$OUT/cache.zarr" --model "$MODEL" --pretrained "$WEIGHTS" --frames 8 --templates ma_fsar16

# 2. No training: the frozen multimodal baseline (paper 30.2) and OTAM prototypes.
clipcache eval --store "$OUT/cache.zarr" --protocol episodic --method zeroshot --ways "$WAYS" --shots 0 \
    --episodes "$EPISODES"
clipcache eval --store "$OUT/cache.zarr" --protocol episodic --method proto --metric otam --ways "$WAYS" \
    --shots 1,5 --episodes "$EPISODES"

# 3. TPCM from the cache, alpha 0.25, 100,000 episodes (paper, frozen encoder: 46.5).
clipcache train --method ma_fsar --modules tpcm --alpha 0.25 --store "$OUT/cache.zarr" --out "$OUT/ma_fsar" \
    --protocol episodic --ways "$WAYS" --shots 1 --episodes "$TRAIN_EPISODES" \
    --val-episodes "$VAL_EPISODES"
clipcache eval --store "$OUT/cache.zarr" --run "$OUT/ma_fsar" --ways "$WAYS" --shots 1 --episodes "$EPISODES"
