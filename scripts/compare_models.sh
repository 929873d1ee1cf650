#!/usr/bin/env bash
# Same-budget comparison of FP-LIIF, SegFace-MNv3 and STN-iCNN (issue #13, docs/comparison.md): train each from
# scratch with configs/compare_*.yaml (the same data, 128² input, batch and 4,240 sample-passes; STN-iCNN's three
# stages split them), score the whole val split with `fpliif eval` (all 19 classes, and the inner classes that
# STN-iCNN labels: --score-labels inner), and write OUT/comparison.md: params, MACs, FPS, val mean F1, per-class F1.
#
#   scripts/compare_models.sh [OUT]                 # OUT: ../runs/compare (the configs' own output folders)
#
# Environment (for smoke runs; the defaults are the real comparison):
#   COMPARE_DATA       space-separated dataset roots (folder layout)   default: both shared CelebAMask-HQ folders
#   COMPARE_OVERRIDES  extra `key=value` overrides for every training  e.g. "train.max_steps_per_epoch=2"
#   COMPARE_THREADS    torch threads for training and FPS              default: torch's choice
#   PYTHON             the Python with fpliif installed                default: python (e.g. .venv/bin/python)
# A stage whose OUT/NAME/last.pt exists is resumed (--resume), so a stopped run continues where it was.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-../runs/compare}
read -r -a DATA <<< "${COMPARE_DATA:-../shared/data/celebamask-mini ../shared/data/celebamask-extra}"
read -r -a EXTRA <<< "${COMPARE_OVERRIDES:-}"
PYTHON=${PYTHON:-python}
CMD=("$PYTHON" -m fpliif)
THREADS=()
[[ -n "${COMPARE_THREADS:-}" ]] && THREADS=("train.threads=$COMPARE_THREADS")

roots=$(printf '%s, ' "${DATA[@]}")
data_override="data.root=[${roots%, }]"

train() {  # train CONFIG NAME [INIT]: one run into OUT/NAME (resumed if it has a last.pt)
  local config=$1 name=$2 init=${3:-}
  local args=(train --config "configs/$config" "out=$OUT/$name" "$data_override" --no-progress)
  [[ -n "$init" ]] && args+=("train.init_weights=$OUT/$init/last.safetensors")
  [[ -f "$OUT/$name/last.pt" ]] && args+=(--resume)
  echo "== train $name ($config)"
  "${CMD[@]}" "${args[@]}" "${THREADS[@]}" "${EXTRA[@]}"
}

evaluate() {  # evaluate NAME: whole val split, all classes (eval.json) and the inner classes (eval_inner.json)
  local name=$1 data_args=()
  for root in "${DATA[@]}"; do data_args+=(--data "$root"); done
  local args=(eval --weights "$OUT/$name/best.safetensors" "${data_args[@]}" --layout folder --split val
              --lowres "" --workers 0 --no-progress --json)
  echo "== eval $name"
  "${CMD[@]}" "${args[@]}" --sizes "$SIZE" --out "$OUT/$name/eval.json" > /dev/null
  "${CMD[@]}" "${args[@]}" --sizes "$SIZE" --score-labels inner --out "$OUT/$name/eval_inner.json" > /dev/null
}

SIZE=$("$PYTHON" -c 'import sys; from fpliif.train import load_config
print(load_config(sys.argv[1], sys.argv[2:])["data"]["size"])' configs/compare_fpliif.yaml "$data_override" "${EXTRA[@]}")

train compare_fpliif.yaml fpliif
train compare_segface_mnv3.yaml segface_mnv3
train compare_stn_icnn.yaml stn_icnn_coarse
train compare_stn_icnn_parts.yaml stn_icnn_parts stn_icnn_coarse
train compare_stn_icnn_end2end.yaml stn_icnn stn_icnn_parts
for name in fpliif segface_mnv3 stn_icnn; do evaluate "$name"; done

table_args=(--size "$SIZE" --out "$OUT/comparison.md")
[[ -n "${COMPARE_THREADS:-}" ]] && table_args+=(--threads "$COMPARE_THREADS")
"$PYTHON" scripts/compare_table.py "$OUT" "${table_args[@]}"
echo "== table: $OUT/comparison.md"
