#!/usr/bin/env bash
# Every GPU measurement crossrec records, in one call on a machine with a CUDA GPU (a lent machine is
# short-lived: one prepared run, files back under $OUT). Uses the machine's own python3 + CUDA torch with this
# checkout on PYTHONPATH (no install). Each step has its own time limit; a step that fails or runs out of time
# does not stop the next, and what it wrote is kept.
#
#   OUT=/tmp/gpu bash benchmarks/gpu_all.sh      # then copy $OUT's files into docs/results / benchmarks/results
#
# 1. nvidia-smi and torch facts                                    -> $OUT/run.log
# 2. tests that need a GPU (pytest -m gpu)                         -> $OUT/run.log
# 3. Table 1's GPU column (benchmarks/gpu_check.py, --compile)     -> $OUT/table1_gpu.{md,json}, $OUT/gpu.jsonl
# 4. a measured latency data set on the GPU and the predictor's held-out accuracy on it
#    (benchmarks/predictor.py --device cuda)                       -> $OUT/profiles*.jsonl, predictor_*.md, predictor.jsonl (8 files in all)
set -u
OUT=${OUT:?set OUT to a folder for the results}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
T_TESTS=${T_TESTS:-60} T_TABLE1=${T_TABLE1:-190} T_PRED=${T_PRED:-180}
{
  echo "== facts $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv
  $PY -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"
  nproc
  echo "== tests (pytest -m gpu) $(date -u +%T)"
  timeout "$T_TESTS" $PY -m pytest -q -m gpu -p no:cacheprovider tests/gpu tests/runtime/test_runtime.py \
      tests/runtime/test_auto.py 2>&1 | tail -25
  echo "== table 1 GPU column $(date -u +%T)"
  timeout "$T_TABLE1" $PY benchmarks/gpu_check.py --out "$OUT" --compile --budget-s $((T_TABLE1 - 30)) 2>&1
  echo "rc=$?"
  echo "== latency predictor on the GPU $(date -u +%T)"
  timeout "$T_PRED" $PY benchmarks/predictor.py --device cuda --n "${N_SPECS:-80}" --batch-sizes 1,64,512,4096 \
      --repeats 20 --min-time-s 0.05 --recheck-specs 10 --data "$OUT/profiles.jsonl" \
      --predictor-out "${PREDICTOR_OUT:-/tmp/predictor_gpu.json}" --out "$OUT" 2>&1 | grep -v "^\[[0-9]*\] "
  echo "rc=${PIPESTATUS[0]}"
  echo "== done $(date -u +%T)"
} 2>&1 | tee "$OUT/run.log"
