#!/usr/bin/env bash
# Every timing of docs/performance.md (issue #12), one command on an IDLE machine (~10 min on the 2-core VM):
#   * OUT/machine.json           CPU, flags, versions, weights, load average before the run
#   * OUT/aligned_{none,bf16,int8}.json   fpliif bench --json --decode dense,adaptive --sizes SIZES --amp ...
#   * OUT/aligned_onnx.json      the same on onnxruntime (the two-graph export, written to OUT/onnx/)
#   * OUT/aligned_onnx_int8.json the same with the int8 decoder graph (fpliif export onnx --int8)
#   * OUT/compile_{none,bf16}.json        torch.compile at 256² only (left out where compiling fails: see the log)
#   * OUT/photos_{none,bf16,int8}.json    fpliif bench --photos: the bundled astronaut + a 512x512 val portrait
# then fills the measured parts of docs/performance.md from them (scripts/fill_performance.py fill OUT).
#
#   scripts/speed_table.sh OUT
#
# Environment (for smoke runs; the defaults are the doc's settings):
#   SPEED_DATA        folder-layout dataset the portrait comes from   default: ../shared/data/celebamask-mini
#   SPEED_SIZES       output sizes of the aligned benches              default: 64,128,256,512 (256 is required)
#   SPEED_RUNS        timed runs per aligned cell                      default: 5
#   SPEED_PHOTO_RUNS  timed runs per photo and mode                    default: 3
#   SPEED_THREADS     threads (torch and onnxruntime)                  default: 2
#   SPEED_COMPILE     0 skips the torch.compile runs                   default: 1
#   SPEED_DOC         where the filled doc goes                        default: docs/performance.md (in place)
#   SPEED_WEIGHTS     weights to time (a .safetensors file)            default: the bundled model
#   PYTHON            the Python with fpliif installed                 default: python (e.g. .venv/bin/python)
# Smoke run (plumbing only, e.g. with a tiny model's weights; its numbers mean nothing, never commit them):
#   SPEED_WEIGHTS=tiny.safetensors SPEED_SIZES=256 SPEED_RUNS=1 SPEED_PHOTO_RUNS=1 SPEED_COMPILE=0 SPEED_DOC=/tmp/speed/performance.md \
#   PYTHON=.venv/bin/python scripts/speed_table.sh /tmp/speed
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:?usage: scripts/speed_table.sh OUT_DIR}
DATA=${SPEED_DATA:-../shared/data/celebamask-mini}
SIZES=${SPEED_SIZES:-64,128,256,512}
RUNS=${SPEED_RUNS:-5}
PHOTO_RUNS=${SPEED_PHOTO_RUNS:-3}
THREADS=${SPEED_THREADS:-2}
DOC=${SPEED_DOC:-docs/performance.md}
PYTHON=${PYTHON:-python}
FILL=("$PYTHON" scripts/fill_performance.py)
WEIGHTS=()
[[ -n "${SPEED_WEIGHTS:-}" ]] && WEIGHTS=(--weights "$SPEED_WEIGHTS")
BENCH=("$PYTHON" -m fpliif bench --json --threads "$THREADS" "${WEIGHTS[@]}")
ALIGNED=("${BENCH[@]}" --decode dense,adaptive --runs "$RUNS")

mkdir -p "$OUT/onnx"
"${FILL[@]}" machine "$OUT/machine.json" "${WEIGHTS[@]}"
load=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
  echo "speed_table: load average $load: the machine is not idle, the timings will be distorted" >&2
fi
PORTRAIT=$("${FILL[@]}" portrait "$DATA")

for amp in none bf16 int8; do
  echo "aligned crops, amp $amp" >&2
  "${ALIGNED[@]}" --sizes "$SIZES" --amp "$amp" > "$OUT/aligned_$amp.json"
done

for kind in fp32 int8; do
  echo "aligned crops, onnxruntime (two graphs, $kind decoder)" >&2
  flag=() name=aligned_onnx
  [[ "$kind" == int8 ]] && flag=(--int8) name=aligned_onnx_int8
  "$PYTHON" -m fpliif export onnx --out "$OUT/onnx/$kind.onnx" --dynamic --overwrite "${flag[@]}" "${WEIGHTS[@]}" >&2
  "${ALIGNED[@]}" --sizes "$SIZES" --backend onnxruntime --onnx "$OUT/onnx/$kind.onnx" > "$OUT/$name.json"
done

for amp in none bf16; do
  rm -f "$OUT/compile_$amp.json"
  [[ "${SPEED_COMPILE:-1}" == 0 ]] && continue
  echo "aligned crops at 256, torch.compile, amp $amp" >&2
  if ! "${ALIGNED[@]}" --sizes 256 --amp "$amp" --compile > "$OUT/compile_$amp.tmp"; then
    echo "speed_table: torch.compile with amp $amp failed (above); its cells stay empty" >&2
    rm -f "$OUT/compile_$amp.tmp"
    continue
  fi
  mv "$OUT/compile_$amp.tmp" "$OUT/compile_$amp.json"
done

for amp in none bf16 int8; do
  echo "photos, amp $amp" >&2
  "${BENCH[@]}" --photos src/fpliif/assets/astronaut.jpg "$PORTRAIT" --runs "$PHOTO_RUNS" --amp "$amp" \
    > "$OUT/photos_$amp.json"
done

mkdir -p "$(dirname "$DOC")"
[[ "$DOC" == docs/performance.md ]] || cp docs/performance.md "$DOC"
"${FILL[@]}" fill "$OUT" --doc "$DOC"
echo "speed_table: wrote $OUT/*.json and filled $DOC" >&2
