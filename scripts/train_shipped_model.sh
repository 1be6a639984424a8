#!/usr/bin/env bash
# Train and pack the estimator shipped in the package (src/discopose/pretrained/cube): the long CPU recipe in
# the default world (the cube in a hand), seed 0, then fp16 weights + fp16 ONNX graphs + a model card holding
# every figure the demo measured, the command, the seed and the code version; the working volume (0.12-1.3 m trained,
# 0.15-1.0 m stated) like the default demo. About 2 h on an avx512 2-core CPU, twice that on an AVX2-only one.
#   scripts/train_shipped_model.sh [SEED] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
SEED="${1:-0}"
OUT="${2:-runs/cube_long_s$SEED}"
.venv/bin/discopose demo --long --seed "$SEED" --out "$OUT" --resume
.venv/bin/discopose pack --demo "$OUT" --name cube --command "scripts/train_shipped_model.sh $SEED"
