#!/usr/bin/env bash
# UCF101 5-way 1-shot / 5-shot with the CLIP-FSAR split files (Zhang et al., ECCV 2020 split:
# 70 train / 10 val / 21 test classes), as MA-FSAR and CLIP-FSAR report it.
#
# You need: the UCF101 videos (UCF101/videos/<Class>/v_<Class>_gXX_cYY.avi) and the split files
# train_few_shot.txt, val_few_shot.txt, test_few_shot.txt from the CLIP-FSAR repository
# (configs/projects/CLIPFSAR/ucf101/). Their lines look like `train12//videos/SomeClass/v_...avi`;
# class names come from the folder in each path. Real CLIP weights: an open_clip state dict or a
# local-dir: snapshot (no download needed when they are in the Hugging Face cache).
#
#   UCF101=/data/UCF101 SPLITS=/data/clip_fsar/ucf101 WEIGHTS=local-dir:/models/vit-b-32-openai \
#     bash examples/ucf101_few_shot.sh
set -euo pipefail
: "${UCF101:?set UCF101 to the folder that the split-file paths are relative to}"
: "${SPLITS:?set SPLITS to the folder with {train,val,test}_few_shot.txt}"
WEIGHTS=${WEIGHTS:-openai}
OUT=${OUT:-runs/ucf101}
mkdir -p "$OUT"

# 1. One pass of the frozen encoder over every video: 8 frames, all 16 MA-FSAR templates,
#    the tokens entering block 6 (for EV-CLIP's generators and --from-block 6 training).
clipcache extract "$SPLITS"/{train,val,test}_few_shot.txt --video-root "$UCF101" \
    --store "$OUT/cache.zarr" --model ViT-B-32 --pretrained "$WEIGHTS" \
    --frames 8 --templates ma_fsar16 --tokens-at 6 --workers 4
clipcache info "$OUT/cache.zarr"

# 2. The rows every table starts from: no training.
clipcache eval --store "$OUT/cache.zarr" --protocol episodic --method proto --metric otam \
    --ways 5 --shots 1 --shots 5 --episodes 10000 --out "$OUT/eval/proto_otam"
clipcache eval --store "$OUT/cache.zarr" --protocol episodic --method zeroshot --ways 5 --shots 0 \
    --episodes 10000 --out "$OUT/eval/zeroshot"

# 3. MA-FSAR's TPCM from the cache (alpha 0.75 on a spatial data set), 10,000 training episodes,
#    model selection on the val classes; then the same 10,000 test episodes.
clipcache train --method ma_fsar --modules tpcm --alpha 0.75 --store "$OUT/cache.zarr" \
    --out "$OUT/ma_fsar" --protocol episodic --ways 5 --shots 1 --episodes 10000
clipcache eval --store "$OUT/cache.zarr" --run "$OUT/ma_fsar" --protocol episodic \
    --ways 5 --shots 1 --episodes 10000 --out "$OUT/eval/ma_fsar"

# 4. Query a video against the test classes' prototypes.
clipcache index --run "$OUT/ma_fsar" --store "$OUT/cache.zarr" --split test --out "$OUT/index"
clipcache query "$(find "$UCF101" -name '*.avi' | head -n 1)" --index "$OUT/index" --top-k 5
