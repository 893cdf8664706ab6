#!/usr/bin/env bash
# Sanity check of the whole clip-decoder loop (issue: "the decoder can fit"): pseudo masks of a
# small image set by `clip-es run`, a few hundred clip-decoder iterations on them (flips and
# crops on, class-balanced loss), predictions on the same images scored against those masks,
# without and with the CRF (>= 0.8 mIoU expected).
#
#   tools/sanity_decoder.sh IMAGES_DIR ANNOTATIONS_DIR SPLIT MODEL OUT [ITERS] [TRAIN OPTIONS...]
#
# Measured with the parity fixture's random ViT-B/16 (tools/parity) and its 7 photos: docs/training.md.
set -euo pipefail
IMAGES=$1 ANN=$2 SPLIT=$3 MODEL=$4 OUT=$5 ITERS=${6:-500}
shift $(( $# < 6 ? $# : 6 ))
BIN=${CLIP_ES:-target/release/clip-es}
"$BIN" run --images "$IMAGES" --annotations "$ANN" --split "$SPLIT" --model "$MODEL" --out "$OUT/run"
"$BIN" train --arch clip-decoder --images "$IMAGES" --masks "$OUT/run/masks" --split "$SPLIT" \
    --model "$MODEL" --out "$OUT/decoder" --iters "$ITERS" --batch 5 --iter-size 1 \
    --save-every 100 --loss balanced "$@"
for crf in "" --crf; do
    "$BIN" predict --checkpoint "$OUT/decoder/final.safetensors" --images "$IMAGES" \
        --split "$SPLIT" --out "$OUT/pred$crf" $crf
    echo "== fit of the training masks${crf:+ (predict $crf)}"
    "$BIN" eval --masks "$OUT/pred$crf" --gt "$OUT/run/masks" --split "$SPLIT" | tail -4
done
