#!/usr/bin/env bash
# Sanity check of the whole clip-decoder loop (issue: "the decoder can fit"): pseudo masks of a
# small image set by `clip-es run`, a few hundred clip-decoder iterations on them (flips and
# crops on), predictions on the same images scored against those masks (>= 0.8 mIoU expected).
#
#   tools/sanity_decoder.sh IMAGES_DIR ANNOTATIONS_DIR SPLIT MODEL OUT [ITERS]
set -euo pipefail
IMAGES=$1 ANN=$2 SPLIT=$3 MODEL=$4 OUT=$5 ITERS=${6:-300}
BIN=${CLIP_ES:-target/release/clip-es}
"$BIN" run --images "$IMAGES" --annotations "$ANN" --split "$SPLIT" --model "$MODEL" --out "$OUT/run"
"$BIN" train --arch clip-decoder --images "$IMAGES" --masks "$OUT/run/masks" --split "$SPLIT" \
    --model "$MODEL" --out "$OUT/decoder" --iters "$ITERS" --batch 5 --iter-size 1 --save-every 100
"$BIN" predict --checkpoint "$OUT/decoder/final.safetensors" --images "$IMAGES" --split "$SPLIT" \
    --out "$OUT/pred"
"$BIN" eval --masks "$OUT/pred" --gt "$OUT/run/masks" --split "$SPLIT"
