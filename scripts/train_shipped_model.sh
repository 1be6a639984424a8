#!/usr/bin/env bash
# Train and pack the estimator shipped in the package (src/discopose/pretrained/cube): the long CPU recipe in
# the default world (the cube in a hand), seed 0, then fp16 weights + fp16 ONNX graphs + a model card holding
# every figure the demo measured, the command, the seed and the code version. About 2 h on 2 CPU cores.
#   scripts/train_shipped_model.sh [SEED] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
SEED="${1:-0}"
OUT="${2:-runs/cube_long_s$SEED}"
.venv/bin/discopose demo --long --seed "$SEED" --out "$OUT" --resume
.venv/bin/discopose pack --demo "$OUT" --name cube --command "scripts/train_shipped_model.sh $SEED"
