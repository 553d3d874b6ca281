#!/usr/bin/env bash
# The GPU check of the fast path (issue 19), one prepared script for a lent GPU machine:
#   1. world-model sampling at the demo and full sizes, fp32 / bf16 autocast / bf16 + compile
#      (benchmarks/simulator_sampling.py; batches 1, 16, 64; 1 and 4 DDIM steps);
#   2. imagined env-steps/s of the rollout system with a demo-size world model on the GPU
#      (benchmarks/imagined_throughput.py, random weights: the cost, not the quality), fp32 and
#      bf16 + compile;
#   3. the oft-7b policy's act() at bf16 (benchmarks/policy_act.py, random weights).
# Each benchmark prints one JSON object; this script prints one line per run, {"run": ..., ...}.
# Budget: under 10 minutes on one H200. Every run has its own timeout and a failed run prints
# {"run": ..., "error": ...} and the script goes on.
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine (after scripts/setup.sh)
#   bash benchmarks/gpu_check.sh --smoke    # on a CPU: tiny sizes, checks the script itself
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py="${PYTHON:-.venv/bin/python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}"
if [[ "${1:-}" == "--smoke" ]]; then
  device=cpu; presets=(tiny); batches=1,2; steps=1; policy=tiny; gpus=0; limit=240
  throughput=(--workers 1 --group-sizes 2 --steps 8)
else
  device=cuda; presets=(demo full); batches=1,16,64; steps=1,4; policy=oft-7b; gpus=0.5; limit=150
  throughput=(--workers 1 4 --group-sizes 8 32 --steps 16)
  "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' || {
    echo '{"run": "gpu_check", "error": "no CUDA device (use --smoke on a CPU)"}'; exit 1; }
fi

run() {  # name, command...
  local name=$1; shift
  local out
  if out=$(timeout "$limit" "$@" 2>/tmp/gpu_check_err.txt | tail -n 1) && [[ -n "$out" ]]; then
    printf '{"run": "%s", "result": %s}\n' "$name" "$out"
  else
    printf '{"run": "%s", "error": %s}\n' "$name" \
      "$("$py" -c 'import json,sys; print(json.dumps(sys.stdin.read()[-400:]))' </tmp/gpu_check_err.txt)"
  fi
}

for preset in "${presets[@]}"; do
  for fast in "" "--bf16" "--bf16 --compile"; do
    # shellcheck disable=SC2086
    run "sampling $preset ${fast:-fp32}" "$py" benchmarks/simulator_sampling.py --preset "$preset" \
      --device "$device" --batches "$batches" --steps "$steps" --repeats 5 $fast
  done
done
wm="preset:demo"; [[ $device == cpu ]] && wm="fake"
for fast in "" "--bf16 --compile"; do
  # shellcheck disable=SC2086
  run "imagined throughput ${fast:-fp32}" "$py" benchmarks/imagined_throughput.py \
    --world-model "$wm" --service-gpus "$gpus" --latency-ms 0 "${throughput[@]}" $fast
done
run "policy act $policy bf16" "$py" benchmarks/policy_act.py --preset "$policy" \
  --device "$device" --dtype bfloat16 --batches 1,8 --repeats 5
