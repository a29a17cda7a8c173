#!/bin/bash
# tools/gpu-bench.sh — the issue-3 speed table on a GPU machine: synthetic
# models of the real shapes (tools/synth-gguf), timed with baleen-cli bench.
#
# On the GPU machine, from the repository root, with binaries built there
# (build-gpu/) or carried from here (tools/gpu-check.sh --prepare, then carry
# build-cuda/gpu-carry):
#     tools/gpu-bench.sh [quick]
# For each model it writes the GGUF file under $MODELS (default /tmp/models;
# a 7B BF16 file is 15 GB, each is deleted after its runs), then runs
#   baleen-cli bench --device cuda -p 2048 -n 128 -r 3 --json
# (prompt processing of 2,048 tokens, and decode of 128 tokens at batch 1 from
# an empty cache), and for R1-Distill-Qwen-7B Q4_K_M also decode at 32k tokens
# of context, decode without CUDA graphs and decode with RoPE and the KV store
# in their own kernel again (BALEEN_CUDA_ROPE_ATTN=0). Each JSON line carries the
# bandwidth ceiling (copy rate measured in the same run / bytes read per
# token). JSON lines go to $OUT/bench.jsonl, a table is printed last.
# `quick` only runs the 1.5B model (a smoke test).
set -u
OUT=${OUT:-$PWD/gpu-out}
MODELS=${MODELS:-/tmp/models}
mkdir -p "$OUT" "$MODELS"

if [ -x build-gpu/app/cli/baleen-cli ]; then
  CLI=build-gpu/app/cli/baleen-cli SYNTH=build-gpu/tools/synth-gguf
  TEST=build-gpu/tests/test-cuda-model
else
  B=build-cuda/gpu-carry
  export LD_LIBRARY_PATH=$PWD/$B/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  CLI=$B/baleen-cli SYNTH=$B/synth-gguf TEST=$B/test-cuda-model
fi
export BALEEN_GOLDEN_DIR=$PWD/tests/golden

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

run_model () {   # model type [extra bench runs...]
  local m=$1 t=$2 f=$MODELS/$1-$2.gguf
  echo "== $m $t"
  $SYNTH --model "$m" --type "$t" -o "$f" 2>&1 | tail -3 || return 1
  timeout 300 $CLI bench -m "$f" --device cuda -p 2048 -n 128 -r 3 --json \
    | sed "s/^{/{\"synth\": \"$m-$t\", /" | tee -a "$OUT/bench.jsonl"
  if [ "$m-$t" = "r1-qwen-7b-q4_k_m" ]; then
    BALEEN_CUDA_GRAPHS=0 timeout 300 $CLI bench -m "$f" --device cuda -p 16 -n 128 -r 3 --json \
      | sed "s/^{/{\"synth\": \"$m-$t\", \"graphs\": false, /" | tee -a "$OUT/bench.jsonl"
    BALEEN_CUDA_ROPE_ATTN=0 timeout 300 $CLI bench -m "$f" --device cuda -p 16 -n 128 -r 3 --json \
      | sed "s/^{/{\"synth\": \"$m-$t\", \"rope_attn\": false, /" | tee -a "$OUT/bench.jsonl"
    timeout 400 $CLI bench -m "$f" --device cuda -p 16 -d 32768 -n 64 -r 2 --json \
      | sed "s/^{/{\"synth\": \"$m-$t\", /" | tee -a "$OUT/bench.jsonl"
  fi
  rm -f "$f"
}

: > "$OUT/bench.jsonl"
if [ "${1:-}" = "quick" ]; then
  run_model r1-qwen-1.5b q4_k_m
else
  # GPU against CPU on a 2-layer cut of the 7B shapes (prompt over one chunk)
  $SYNTH --model r1-qwen-7b --type q4_k_m --layers 2 -o "$MODELS/cut.gguf" 2>&1 | tail -1
  BALEEN_CUDA_TEST_MODEL=$MODELS/cut.gguf G_DEBUG=fatal-warnings timeout 300 \
    $TEST -p /Baleen/CudaModel/cpu-vs-gpu --verbose 2>&1 | grep -E "^(ok|not ok)|GPU vs CPU"
  rm -f "$MODELS/cut.gguf"
  run_model r1-qwen-7b q4_k_m
  run_model r1-qwen-7b q8_0
  run_model r1-qwen-7b bf16
  run_model r1-qwen-1.5b q4_k_m
  run_model r1-qwen-1.5b bf16
fi

echo "== summary (tok/s; tg as a fraction of its bandwidth ceiling)"
python3 - "$OUT/bench.jsonl" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    tag = r["synth"] + ("" if r.get("graphs", True) else " (no graphs)") \
          + ("" if r.get("rope_attn", True) else " (rope apart)")
    print(f'{tag:28s} pp{r["n_prompt"]:<5d} {r["pp_tok_s"]:9.0f}  tg{r["n_gen"]}@d{r["depth"]:<6d}'
          f' {r["tg_tok_s"]:7.1f}  ceiling {r.get("tg_ceiling_tok_s", 0):7.0f}'
          f'  {100 * r.get("tg_fraction", 0):5.1f}%')
EOF
