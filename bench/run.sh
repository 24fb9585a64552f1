#!/usr/bin/env bash
# The whole benchmark in one command (run by hand, never in CI; see bench/README.md).
#
#   bench/run.sh [--shape tiny|tinyllama|llama2-7b] [--threads 2] [--prompt-tokens 128] [--decode-tokens 32]
#                [--machine NAME] [--systems LIST] [--rounds R] [--work DIR] [--no-build] [--rebuild] [--no-vulkan] [--check]
#
#   1. bench/setup_env.sh: the venv outside the repo, pinned peers, llama-cpp-python built from source
#   2. bench/make_weights.py: one set of random weights in every format (kept in --work, reused)
#   3. the runtime binary: ${SPHINX_BIN:-target/release/sphinx}, built with cargo if missing
#   4. bench/peers.py: every system in its own pinned process -> JSON lines
#   5. bench/report.py: bench/results/<machine>.md and .json
#
# --shape tiny is a correctness run: it adds the repository's reference forward, checks that
# torch f32 and llama.cpp f32 pick the same greedy tokens (exit 3 if not), and writes its
# report under --work instead of bench/results.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"

SHAPE=tinyllama
THREADS=2
PROMPT=128
DECODE=32
MACHINE=""
SYSTEMS=all
WORK=""
BUILD=1
REBUILD=0
VULKAN=1
CHECK=""
TIMEOUT=3600
ROUNDS=1

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --shape) SHAPE="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --prompt-tokens) PROMPT="$2"; shift 2 ;;
    --decode-tokens) DECODE="$2"; shift 2 ;;
    --machine) MACHINE="$2"; shift 2 ;;
    --systems) SYSTEMS="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    --timeout) TIMEOUT="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --rebuild) REBUILD=1; shift ;;
    --no-vulkan) VULKAN=0; shift ;;
    --check) CHECK=--check; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$SHAPE" in tiny|tinyllama|llama2-7b) ;; *) echo "run.sh: --shape must be tiny, tinyllama or llama2-7b" >&2; exit 2 ;; esac

WORK="${WORK:-${SPHINX_BENCH_WORK:-$HOME/.cache/sphinx-bench-data}/$SHAPE}"
export PYTHONDONTWRITEBYTECODE=1   # no __pycache__ in bench/
mkdir -p "$WORK"
log() { echo "[run] $*" >&2; }
T0=$SECONDS

# 1. Python environment -----------------------------------------------------------------------
SETUP_ARGS=()
[ "$VULKAN" = 1 ] || SETUP_ARGS+=(--no-vulkan)
PY="$("$HERE/setup_env.sh" "${SETUP_ARGS[@]}" | tail -1)"
log "python: $PY ($((SECONDS - T0)) s)"

# 2. Weights ------------------------------------------------------------------------------------
"$PY" "$HERE/make_weights.py" --shape "$SHAPE" --out "$WORK/weights"
log "weights in $WORK/weights ($((SECONDS - T0)) s)"

# 3. The runtime ----------------------------------------------------------------------------------
if [ -n "${SPHINX_BIN:-}" ]; then
  BIN="$SPHINX_BIN"
else
  BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/sphinx"
  if [ "$REBUILD" = 1 ] || { [ ! -x "$BIN" ] && [ "$BUILD" = 1 ]; }; then
    log "building the runtime: cargo build --release -p sphinx-native"
    if ! (cd "$REPO" && cargo build --release -p sphinx-native); then
      log "cargo build failed: the runtime rows will be reported as missing"
    fi
  fi
fi
[ -x "$BIN" ] || log "no runtime binary at $BIN: its rows will be reported as missing"
# The runtime's 8- and 4-bit models: its own quantizer on the bf16 weights (the same blocks
# gguf's quantizer writes for llama.cpp, bit for bit; the output head stays q8_0 at q4_0,
# and runtime-q4_0-pure has it in q4_0 too, as the gguf file does).
for q in q8_0 q4_0 q4_0-pure; do
  head=q8_0
  [ "$q" = q4_0-pure ] && head=q4_0
  if [ -x "$BIN" ] && [ ! -d "$WORK/weights/runtime-$q" ] && [ -d "$WORK/weights/runtime" ]; then
    "$BIN" quantize "$WORK/weights/runtime" --to "${q%-pure}" --head "$head" -o "$WORK/weights/runtime-$q" \
      || log "sphinx quantize --to $q failed"
  fi
done

# 4. Every system ------------------------------------------------------------------------------
if [ "$SHAPE" = tiny ]; then
  [ "$SYSTEMS" = all ] && SYSTEMS="reference-f32,$(
    "$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import peers; print(",".join(peers.ALL_SYSTEMS))' "$HERE")"
  CHECK=--check
fi
STAMP="$(date +%Y%m%d-%H%M%S)"
ROWS="$WORK/rows-$STAMP.jsonl"
VERSIONS="$WORK/versions-$STAMP.json"
"$PY" - "$VERSIONS" <<'EOF'
import json, sys
from importlib.metadata import version, PackageNotFoundError
out = {}
for p in ("torch", "transformers", "safetensors", "numpy", "sentencepiece", "gguf", "llama-cpp-python"):
    try:
        out[p] = version(p)
    except PackageNotFoundError:
        pass
json.dump(out, open(sys.argv[1], "w"))
EOF
set +e
"$PY" "$HERE/peers.py" --weights "$WORK/weights" --threads "$THREADS" --prompt-tokens "$PROMPT" \
  --decode-tokens "$DECODE" --systems "$SYSTEMS" --runtime-bin "$BIN" --timeout "$TIMEOUT" \
  --rounds "$ROUNDS" --out "$ROWS" --logdir "$WORK/logs-$STAMP" $CHECK > /dev/null
PEERS_RC=$?
set -e
log "measured in $((SECONDS - T0)) s: $ROWS (logs: $WORK/logs-$STAMP)"

# 5. Report -------------------------------------------------------------------------------------
REPORT_ARGS=(--weights "$WORK/weights" --shape "$SHAPE" --versions "$VERSIONS")
[ -n "$MACHINE" ] && REPORT_ARGS+=(--machine "$MACHINE")
if [ "$SHAPE" = tiny ]; then
  REPORT_ARGS+=(--outdir "$WORK/results")
elif [ "$SHAPE" != tinyllama ]; then
  M="${MACHINE:-$("$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import report; print(report.default_machine())' "$HERE")}"
  REPORT_ARGS+=(--stem "$M-$SHAPE")
fi
MD="$("$PY" "$HERE/report.py" "$ROWS" "${REPORT_ARGS[@]}")"
cat "$MD"
log "report: $MD and ${MD%.md}.json ($((SECONDS - T0)) s in all)"
exit "$PEERS_RC"
