#!/usr/bin/env bash
# The GPU check of the fast path (issue 19), one prepared script for a lent GPU machine:
#   1. world-model sampling at the demo and full sizes, fp32 / bf16 autocast / bf16 + compile
#      (benchmarks/simulator_sampling.py; batches 1, 16, 64; 1 and 4 DDIM steps; compiled: batch
#      16, 1 step);
#   2. imagined env-steps/s of the rollout system with a demo-size world model on the GPU
#      (benchmarks/imagined_throughput.py, random weights: the cost, not the quality), the
#      services and the colocated placement, fp32 and bf16 + compile;
#   3. the oft-7b policy's act() at bf16 (benchmarks/policy_act.py, random weights).
# Each benchmark prints one JSON object; this script prints one line per run, {"run": ..., ...}.
# Budget: GPU_CHECK_BUDGET_S seconds in all (default 540: under 10 minutes on one H200 with the
# packages' install); the runs go most-wanted first, each under its own timeout and never past
# what is left of the budget: a failed run prints {"run": ..., "error": ...}, a run the budget
# cannot fit {"run": ..., "skipped": ...}, and the script goes on.
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine (after scripts/setup.sh, or
#                                           # PYTHON=python3 where its torch has the packages)
#   bash benchmarks/gpu_check.sh --smoke    # on a CPU: tiny sizes, checks the script itself
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py="${PYTHON:-.venv/bin/python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}"
budget="${GPU_CHECK_BUDGET_S:-540}"
if [[ "${1:-}" == "--smoke" ]]; then
  device=cpu; presets=(tiny); batches=1,2; steps=1; compile_batch=2; policy=tiny
  gpus=0; colocated_gpus=0
  limit=240; budget="${GPU_CHECK_BUDGET_S:-900}"
  throughput=(--workers 1 --group-sizes 2 --steps 8)
else
  device=cuda; presets=(demo full); batches=1,16,64; steps=1,4; policy=oft-7b; gpus=0.5
  colocated_gpus=0.25; limit=150
  throughput=(--workers 1 4 --group-sizes 8 32 --steps 16)
  "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' || {
    echo '{"run": "gpu_check", "error": "no CUDA device (use --smoke on a CPU)"}'; exit 1; }
fi
start=$SECONDS

run() {  # name, command...
  local name=$1; shift
  local left=$((budget - (SECONDS - start)))
  local cap=$((left < limit ? left : limit))
  if ((cap < 20)); then
    printf '{"run": "%s", "skipped": "budget of %ss spent"}\n' "$name" "$budget"; return
  fi
  local out t0=$SECONDS
  if out=$(timeout "$cap" "$@" 2>/tmp/gpu_check_err.txt | tail -n 1) && [[ -n "$out" ]]; then
    printf '{"run": "%s", "wall_s": %s, "result": %s}\n' "$name" $((SECONDS - t0)) "$out"
  else
    printf '{"run": "%s", "wall_s": %s, "error": %s}\n' "$name" $((SECONDS - t0)) \
      "$("$py" -c 'import json,sys; print(json.dumps(sys.stdin.read()[-400:]))' </tmp/gpu_check_err.txt)"
  fi
}

sampling() {  # preset, fast flags...
  local preset=$1; shift
  local b=$batches s=$steps
  # compiled: one shape (every new batch or step count recompiles; session 21 saw 6 shapes of
  # the demo size take more than 150 s)
  [[ " $* " == *" --compile "* ]] && { b=${compile_batch:-16}; s=1; }
  run "sampling $preset ${*:-fp32}" "$py" benchmarks/simulator_sampling.py --preset "$preset" \
    --device "$device" --batches "$b" --steps "$s" --repeats 5 "$@"
}

throughput() {  # placement, GPU share, fast flags...
  local placement=$1 share=$2; shift 2
  local wm="preset:demo"; [[ $device == cpu ]] && wm="fake"
  run "imagined throughput $placement ${*:-fp32}" "$py" benchmarks/imagined_throughput.py \
    --world-model "$wm" --placement "$placement" --service-gpus "$share" --latency-ms 0 \
    "${throughput[@]}" "$@"
}

# most wanted first: the demo size in all three modes, the 7B policy, the rollout system, then
# the full size and the compiled rollout system
sampling "${presets[0]}"
sampling "${presets[0]}" --bf16
sampling "${presets[0]}" --bf16 --compile
run "policy act $policy bf16" "$py" benchmarks/policy_act.py --preset "$policy" \
  --device "$device" --dtype bfloat16 --batches 1,8 --repeats 5
throughput services "$gpus"
throughput colocated "$colocated_gpus"
for preset in "${presets[@]:1}"; do
  sampling "$preset"
  sampling "$preset" --bf16
  sampling "$preset" --bf16 --compile
done
throughput services "$gpus" --bf16 --compile
printf '{"run": "gpu_check", "wall_s": %s, "budget_s": %s}\n' $((SECONDS - start)) "$budget"
