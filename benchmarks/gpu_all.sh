#!/usr/bin/env bash
# Every GPU measurement crossrec records, in one call on a machine with a CUDA GPU (a lent machine is
# short-lived: one prepared run, files back under $OUT). Uses the machine's own python3 + CUDA torch with this
# checkout on PYTHONPATH (no install). Each step has its own time limit; a step that fails or runs out of time
# does not stop the next, and what it wrote is kept. About 8 minutes without FRONT and .whl.
#
#   OUT=/tmp/gpu bash benchmarks/gpu_all.sh                       # then copy $OUT's files into the repo (below)
#   OUT=/tmp/gpu FRONT=runs/.../front.json bash benchmarks/gpu_all.sh   # also re-time a search's GPU front
#   (carry the FRONT file and, after benchmarks/gpu_wheels.sh, ".whl"; about 10 minutes with every step)
#
# 1. nvidia-smi and torch facts, GPU tests (pytest -m gpu)              -> $OUT/run.log
# 2. Table 1's GPU column, eager and with CUDA graphs                     -> $OUT/table1_gpu.md, $OUT/gpu.jsonl
#    (benchmarks/gpu_check.py --compile --compile-mode reduce-overhead)
# 3. with FRONT: every candidate of that search re-timed on the GPU       -> $OUT/gpu_front.json
#    (benchmarks/gpu_front.py FRONT --all)
# 4. with .whl (benchmarks/gpu_wheels.sh, carried): serving across a CPU and a GPU replica
#    (benchmarks/gpu_serve.py: round-robin vs latency-aware routing)   -> $OUT/gpu_serve.json
# 5. a measured latency data set on the GPU (benchmarks/predictor.py --device cuda; scoring it is CPU work:
#    run `predictor.py --score-only --device cuda --data profiles.jsonl` here afterwards)
#                                                                          -> $OUT/profiles.tgz (+ predictor_*.md if
#                                                                             the scoring finished there)
# At most 8 files come back from a lent machine: the step files above are all there is.
set -u
OUT=${OUT:?set OUT to a folder for the results}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
T_TESTS=${T_TESTS:-60} T_TABLE1=${T_TABLE1:-130} T_FRONT=${T_FRONT:-60} T_SERVE=${T_SERVE:-120}
T_PRED=${T_PRED:-150}  # all steps: ~9 min, under the 10-minute limit of one call
{
  echo "== facts $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv
  $PY -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"
  nproc
  echo "== tests (pytest -m gpu) $(date -u +%T)"
  timeout "$T_TESTS" $PY -m pytest -q -m gpu -p no:cacheprovider tests/gpu tests/runtime/test_runtime.py \
      tests/runtime/test_auto.py 2>&1 | tail -8
  echo "== table 1 GPU column $(date -u +%T)"
  timeout "$T_TABLE1" $PY benchmarks/gpu_check.py --out "$OUT" --compile --compile-mode reduce-overhead \
      --budget-s $((T_TABLE1 - 30)) 2>&1 | grep -v "^| "
  echo "rc=${PIPESTATUS[0]}"
  rm -f "$OUT/table1_gpu.json"  # the same record is the line in gpu.jsonl
  if [ -n "${FRONT:-}" ]; then
    echo "== search front re-timed on the GPU $(date -u +%T)"
    timeout "$T_FRONT" $PY benchmarks/gpu_front.py "$FRONT" --out "$OUT" --all --members 64 --rounds 10 2>&1 \
        | grep -v "^| "
    echo "rc=${PIPESTATUS[0]}"
  fi
  if [ -d .whl ]; then  # benchmarks/gpu_wheels.sh, carried: the serve extra the image lacks
    echo "== serving across the CPU and the GPU $(date -u +%T)"
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      && PYTHONPATH=src:/tmp/site timeout "$T_SERVE" $PY benchmarks/gpu_serve.py --out "$OUT" 2>&1 \
         | grep -v "^| \|INFO"
    echo "rc=${PIPESTATUS[0]}"
  fi
  echo "== latency data set on the GPU $(date -u +%T)"
  timeout "$T_PRED" $PY benchmarks/predictor.py --device cuda --n "${N_SPECS:-120}" --batch-sizes 1,64,512,4096 \
      --repeats 20 --min-time-s 0.05 --recheck-specs 15 --data "$OUT/profiles.jsonl" \
      --predictor-out "${PREDICTOR_OUT:-/tmp/predictor_gpu.json}" --out "$OUT" 2>&1 | grep -v "^\[[0-9]*\] "
  echo "rc=${PIPESTATUS[0]}"
  (cd "$OUT" && tar czf profiles.tgz profiles*.jsonl && rm -f profiles*.jsonl)
  rm -f "$OUT/gpu_front.md" "$OUT/gpu_serve.md"  # `--render` rebuilds them from the JSON (8 files come back)
  echo "== done $(date -u +%T)"
} 2>&1 | tee "$OUT/run.log"
