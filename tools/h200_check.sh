#!/usr/bin/env bash
# Issue 10's checks on a real NVIDIA GPU (an H200 lent for ~15 minutes of device time), in one call.
#
#   OUT=/some/dir bash tools/h200_check.sh        # on the device machine, from the repo root (OUT: default ./h200_out)
#   BAREGPU_EMULATE=nv BENCH_ARGS=--quick OUT=/tmp/h200 bash tools/h200_check.sh   # a dry run on the emulated NV GPU
#
# Steps, each under its own `timeout` (a failing or hanging step never eats the others' time), each writing
# $OUT/<step>.log; $OUT/summary.txt gets one line per step (exit status, seconds). The whole run stays inside
# H200_BUDGET_S (default 500 s): a step gets at most what is left, less a reserve, and is skipped under 15 s.
#   env       nvidia-smi -q (head), driver version, /proc/driver/nvidia/version, /dev/nvidia*, Python and packages
#   probe     python -m tools.gpu_probe --json (bring-up of the real card)
#   contract  pytest tests/hcq/test_contract.py -k "$CONTRACT_K" (default nvidia; tests use the real driver when
#             /dev/nvidiactl exists)
#   bench     python -m tools.bench --only nv --json: JSON in $OUT/bench_nv.json, progress in $OUT/bench.log
#   tensor    pytest tests/tensor -k "$TENSOR_K" (default nvidia)
# At most 8 files come back from the device machine: this writes 7.
#
# No network there: the image's python3 has numpy, llvmlite, msgpack, pytest (KINDS.md); the repo goes on
# PYTHONPATH (no install). Wheels for anything missing can be carried in ./.whl (device README, "Notes"): they
# are installed with pip --no-index --no-deps into /tmp/site first. ptxas comes from the image's CUDA toolkit.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/h200_out}
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"
BUDGET=${H200_BUDGET_S:-500}
RESERVE=15  # seconds kept back for the summary and the kill grace of the step in flight
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PY OUT BENCH_ARGS=${BENCH_ARGS:-}
# pytest -k is case-blind, so the NVIDIA cases carry "nvidia" in their ids ("NV" would match "env", "inverse")
export CONTRACT_K=${CONTRACT_K:-nvidia} TENSOR_K=${TENSOR_K:-nvidia}

if [ -d "$ROOT/.whl" ] && ls "$ROOT"/.whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$ROOT"/.whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
# ptxas: the CUDA toolkit's, where the image has one and it is not on PATH already
if ! command -v ptxas >/dev/null 2>&1; then
  for d in /usr/local/cuda/bin /usr/local/cuda-*/bin; do
    if [ -x "$d/ptxas" ]; then export PATH=$PATH:$d; break; fi
  done
fi

# step NAME LIMIT CMD...: run CMD (through bash -c) with at most LIMIT seconds (less if the budget is short),
# its stdout and stderr in $OUT/NAME.log; one line in the summary.
step() {
  local name=$1 limit=$2 cmd=$3
  local left=$((BUDGET - SECONDS - RESERVE))
  if [ "$left" -lt "$limit" ]; then limit=$left; fi
  if [ "$limit" -lt 15 ]; then
    echo "$name: SKIPPED (only ${left}s of the ${BUDGET}s budget left)" | tee -a "$SUMMARY"
    return
  fi
  echo "== $name (limit ${limit}s): $cmd" >&2
  local t0=$SECONDS rc
  timeout -k 5 "$limit" bash -c "$cmd" > "$OUT/$name.log" 2>&1
  rc=$?
  local why=""
  case $rc in 124|137) why=" TIMED OUT after ${limit}s";; esac
  echo "$name: rc=$rc in $((SECONDS - t0))s$why" | tee -a "$SUMMARY"
}

step env 20 '
  set -x
  nvidia-smi -q | head -n 60
  nvidia-smi --query-gpu=name,driver_version,memory.total,pci.bus_id,clocks.sm,clocks.mem --format=csv
  cat /proc/driver/nvidia/version; cat /sys/module/nvidia/version
  ls -l /dev/nvidia*; uname -a
  command -v ptxas && ptxas --version | tail -n 2
  "$PY" --version; "$PY" -c "import sys; print(sys.executable)"
  "$PY" -c "import numpy, llvmlite, msgpack, pytest; print(\"numpy\", numpy.__version__, \"llvmlite\", llvmlite.__version__, \"msgpack\", msgpack.version, \"pytest\", pytest.__version__)"
  "$PY" -c "import tools.cuda as c; cu = c.Cuda(0); print(\"libcuda:\", cu.info()); cu.close()"
'
step probe 50 '"$PY" -m tools.gpu_probe --json'
step contract 110 '"$PY" -m pytest -q -p no:cacheprovider --timeout 60 -rs tests/hcq/test_contract.py -k "$CONTRACT_K"'
step bench 200 '"$PY" -m tools.bench --only nv --json ${BENCH_ARGS:-} > "$OUT/bench_nv.json"'
step tensor 100 '"$PY" -m pytest -q -p no:cacheprovider --timeout 60 -rs tests/tensor -k "$TENSOR_K"'

echo "== total ${SECONDS}s (budget ${BUDGET}s); logs in $OUT" | tee -a "$SUMMARY"
for f in env probe contract bench tensor; do
  [ -f "$OUT/$f.log" ] || continue
  echo "---- $f.log (last 25 lines)"
  tail -n 25 "$OUT/$f.log"
done
if [ -s "$OUT/bench_nv.json" ]; then
  echo "---- bench_nv.json rows"
  "$PY" - "$OUT/bench_nv.json" <<'PYEOF'
import json, sys
doc = json.load(open(sys.argv[1]))
for line in doc.get("info", []):
    print(line)
for r in doc.get("rows", []):
    print("%12.3f us  %-7s %s  [%s]" % (r["p50_us"], r["verdict"] or "-", r["name"], r["note"]))
for f in doc.get("failed", []):
    print("FAILED:", f)
PYEOF
fi
