#!/usr/bin/env bash
# Same-budget comparison of FP-LIIF, SegFace-MNv3 and STN-iCNN (issue #13, docs/comparison.md): train each from
# scratch with configs/compare_*.yaml (the same data, 128² input, batch and 4,240 sample-passes; STN-iCNN's three
# stages split them), score the whole val split with `fpliif eval` (all 19 classes, and the inner classes that
# STN-iCNN labels: --score-labels inner), time training steps (`fpliif bench --train`, each config's batch, amp and
# queries: OUT/NAME/bench_train.json), write OUT/comparison.md and OUT/comparison.json (scripts/compare_table.py:
# params, MACs, FPS, train img/s, val mean F1, per-class F1) and fill the `‹run›` slots of docs/comparison.md from
# the JSON (scripts/fill_comparison.py).
#
#   scripts/compare_models.sh [OUT]                 # OUT: ../runs/compare (the configs' own output folders)
#
# Environment (for smoke runs; the defaults are the real comparison):
#   COMPARE_DATA        space-separated dataset roots (folder layout)  default: both shared CelebAMask-HQ folders
#   COMPARE_OVERRIDES   extra `key=value` overrides for every training default: none
#   COMPARE_EVAL_LIMIT  score only the first N val images (--limit)    default: the whole val split
#   COMPARE_BENCH_RUNS  timed runs of the FPS and train benches        default: 5
#   COMPARE_THREADS     torch threads for training and the benches     default: torch's choice
#   COMPARE_DOC         where the filled docs/comparison.md goes       default: docs/comparison.md (in place)
#   PYTHON              the Python with fpliif installed               default: python (e.g. .venv/bin/python)
# Smoke run (3 steps per stage, 3 val images, nothing written outside /tmp/compare):
#   COMPARE_OVERRIDES="train.max_steps_per_epoch=3 train.max_val_images=3 data.preload=false" COMPARE_EVAL_LIMIT=3 \
#   COMPARE_BENCH_RUNS=1 COMPARE_DOC=/tmp/compare/comparison_doc.md PYTHON=.venv/bin/python \
#   scripts/compare_models.sh /tmp/compare
# A stage whose OUT/NAME/last.pt exists is resumed (--resume), so a stopped run continues where it was.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-../runs/compare}
read -r -a DATA <<< "${COMPARE_DATA:-../shared/data/celebamask-mini ../shared/data/celebamask-extra}"
read -r -a EXTRA <<< "${COMPARE_OVERRIDES:-}"
PYTHON=${PYTHON:-python}
CMD=("$PYTHON" -m fpliif)
THREADS=() BENCH_THREADS=() LIMIT=()
[[ -n "${COMPARE_THREADS:-}" ]] && THREADS=("train.threads=$COMPARE_THREADS") BENCH_THREADS=(--threads "$COMPARE_THREADS")
[[ -n "${COMPARE_EVAL_LIMIT:-}" ]] && LIMIT=(--limit "$COMPARE_EVAL_LIMIT")
RUNS=${COMPARE_BENCH_RUNS:-5}
DOC=${COMPARE_DOC:-docs/comparison.md}

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

evaluate() {  # evaluate NAME: whole val split, all classes (eval.json) and the inner classes (eval_inner.json),
  local name=$1 data_args=()  # dense decoding for every model (FP-LIIF's default would be adaptive)
  for root in "${DATA[@]}"; do data_args+=(--data "$root"); done
  local args=(eval --weights "$OUT/$name/best.safetensors" "${data_args[@]}" --layout folder --split val
              --lowres "" --decode dense --workers 0 --no-progress --json "${LIMIT[@]}")
  echo "== eval $name"
  "${CMD[@]}" "${args[@]}" --sizes "$SIZE" --out "$OUT/$name/eval.json" > /dev/null
  "${CMD[@]}" "${args[@]}" --sizes "$SIZE" --score-labels inner --out "$OUT/$name/eval_inner.json" > /dev/null
}

setting() {  # setting CONFIG KEY.PATH: one value of a config with the overrides applied (null for none)
  "$PYTHON" -c 'import json, sys; from fpliif.train import load_config
value = load_config(sys.argv[1], sys.argv[3:])
for key in sys.argv[2].split("."): value = value.get(key) if isinstance(value, dict) else None
print(json.dumps(value) if not isinstance(value, str) else value)' "configs/$1" "$2" "$data_override" "${EXTRA[@]}"
}

bench_train() {  # bench_train CONFIG NAME: training img/s at the config's size, batch, amp, queries -> bench_train.json
  local config=$1 name=$2 queries
  queries=$(setting "$config" train.sample_queries)
  [[ "$queries" == null ]] && queries=full
  echo "== bench --train $name"
  "${CMD[@]}" bench --train --weights "$OUT/$name/best.safetensors" --input-size "$SIZE" --json \
    --batch-size "$(setting "$config" train.batch_size)" --amp "$(setting "$config" train.amp)" --queries "$queries" \
    --steps "$RUNS" "${BENCH_THREADS[@]}" > "$OUT/$name/bench_train.json"
}

SIZE=$(setting compare_fpliif.yaml data.size)

train compare_fpliif.yaml fpliif
train compare_segface_mnv3.yaml segface_mnv3
train compare_stn_icnn.yaml stn_icnn_coarse
train compare_stn_icnn_parts.yaml stn_icnn_parts stn_icnn_coarse
train compare_stn_icnn_end2end.yaml stn_icnn stn_icnn_parts
for name in fpliif segface_mnv3 stn_icnn; do evaluate "$name"; done
bench_train compare_fpliif.yaml fpliif
bench_train compare_segface_mnv3.yaml segface_mnv3
bench_train compare_stn_icnn_end2end.yaml stn_icnn

table_args=(--size "$SIZE" --runs "$RUNS" --out "$OUT/comparison.md" --json-out "$OUT/comparison.json")
[[ -n "${COMPARE_THREADS:-}" ]] && table_args+=(--threads "$COMPARE_THREADS")
"$PYTHON" scripts/compare_table.py "$OUT" "${table_args[@]}"
echo "== table: $OUT/comparison.md, $OUT/comparison.json"
"$PYTHON" scripts/fill_comparison.py "$OUT/comparison.json" --doc docs/comparison.md --out "$DOC"
echo "== filled: $DOC"
