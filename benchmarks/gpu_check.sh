#!/usr/bin/env bash
# The prepared GPU check of nasx: on a machine with an NVIDIA GPU and a CUDA torch,
# in one go and within a time budget (8 minutes by default):
#
#   1. env       what is there: GPU, driver, python, torch + CUDA, nvcc, cmake, peers
#   2. build     nasx with its CUDA kernels, for this GPU's architecture only
#   3. tests     every CUDA test (pytest -k "cuda or mixed_devices"); test files that
#                cannot be imported for want of an optional package (pycocotools, ...)
#                are left out and listed
#   4. bench_*   the GPU rows of the benchmarks against their peers, in one process
#                each: boxes (nms, batched_nms vs torchvision), conv_ops (roi_align,
#                deform_conv2d dense and depthwise vs torchvision), targets
#                (sigmoid_focal_loss, fcos_targets, match_anchors, atss_assign),
#                pareto (non_dominated_sort vs moocore on the CPU at N = 100k and 1M,
#                partial_order_prune at 1M x 2k x 10); each writes
#                benchmarks/results/<name>-cuda.json
#
# and a summary: one line per step (PASS / FAIL / SKIP / TIMEOUT, seconds, note) and
# the speed goals the benchmarks report as missed. Exit status 0 only if no step failed.
#
# Usage:  bash benchmarks/gpu_check.sh [options]      (or: make gpu-check)
#   --python PY      the Python with the CUDA torch (default: python3)
#   --budget S       total seconds for all steps (default 480); each step also has its own cap
#   --skip-build     use the nasx already importable by PY
#   --wheels DIR     install the wheels in DIR first (offline: e.g. moocore, pymoo and
#                    their dependencies), into a private folder put on PYTHONPATH
#   --out DIR        where the log, the summary and copies of the results go
#                    (default: $OUT when set, as on the lent machines, else
#                    benchmarks/results/gpu-check)
#   --device cpu     a smoke test of this script on a machine without a GPU: no build
#                    unless asked, CPU tests only by name, benchmarks with --quick
#                    --no-write on the CPU (checks the plumbing, measures nothing)
#   --only STEPS     comma-separated subset of: env,build,tests,boxes,conv_ops,targets,pareto
# The step functions run through `export -f` and a child bash: shellcheck cannot see the calls.
# shellcheck disable=SC2317
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=python3
BUDGET=480
SKIP_BUILD=0
WHEELS=""
OUT_DIR="${OUT:-}"
DEVICE=cuda
ONLY=""

usage() { sed -n '2,/^# The step functions/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --python) PYTHON=$2; shift 2 ;;
    --budget) BUDGET=$2; shift 2 ;;
    --skip-build) SKIP_BUILD=1; shift ;;
    --wheels) WHEELS=$2; shift 2 ;;
    --out) OUT_DIR=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cuda|cpu) ;; *) echo "gpu_check: --device must be cuda or cpu, got '$DEVICE'" >&2; exit 2 ;; esac
[[ "$BUDGET" =~ ^[0-9]+$ ]] || { echo "gpu_check: --budget takes whole seconds, got '$BUDGET'" >&2; exit 2; }
if [[ "$DEVICE" == cpu && -z "$ONLY" ]]; then SKIP_BUILD=1; fi

OUT_DIR=${OUT_DIR:-$ROOT/benchmarks/results/gpu-check}
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
SUMMARY="$OUT_DIR/gpu_check_summary.txt"
: >"$LOG"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/nasx-gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

START=$(date +%s)
STEPS=()      # "name|status|seconds|note"
FAILED=0

log() { printf '%s\n' "$*" | tee -a "$LOG"; }
remaining() { echo $((BUDGET - ($(date +%s) - START))); }
wanted() { [[ -z "$ONLY" || ",$ONLY," == *",$1,"* ]]; }

# run_step NAME CAP_SECONDS NOTE_IF_OK -- command...
# Runs the command under min(CAP, time left), output into the log (and on screen).
run_step() {
  local name=$1 cap=$2 note=$3
  shift 4
  if ! wanted "$name"; then return 0; fi
  local left
  left=$(remaining)
  if (( left < 5 )); then
    STEPS+=("$name|SKIP|0|no time left in the ${BUDGET}s budget")
    log "== $name: skipped, the budget is spent"
    return 0
  fi
  local limit=$(( cap < left ? cap : left ))
  log "== $name (limit ${limit}s): $*"
  local t0 rc
  t0=$(date +%s)
  rm -f "$WORK/skip_reason"
  set +e
  # The steps are shell functions (exported below): run in a child bash that timeout can stop.
  timeout --kill-after=10 "$limit" bash -euo pipefail -c '"$@"' step "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  set -e
  local dt=$(( $(date +%s) - t0 ))
  if (( rc == 0 )); then
    STEPS+=("$name|PASS|$dt|$note")
  elif (( rc == 124 || rc == 137 )); then
    STEPS+=("$name|TIMEOUT|$dt|stopped at ${limit}s")
    FAILED=1
  elif (( rc == 75 )); then  # EX_TEMPFAIL: the step says it could not run here
    STEPS+=("$name|SKIP|$dt|$(tail -n 1 "$WORK/skip_reason" 2>/dev/null || echo 'see log')")
  else
    STEPS+=("$name|FAIL|$dt|exit status $rc, see $LOG")
    FAILED=1
  fi
  log "== $name: exit status $rc after ${dt}s"
}

cd "$ROOT"
export PYTHONUNBUFFERED=1
export PYTHONDONTWRITEBYTECODE=1
export ROOT PYTHON WORK DEVICE OUT_DIR

# --- wheels carried to an offline machine ------------------------------------
if [[ -n "$WHEELS" ]]; then
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    wheels=("$WHEELS"/*.whl)
    log "== wheels: installing ${#wheels[@]} from $WHEELS into $WORK/site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$WHEELS"/*.whl 2>&1 | tee -a "$LOG" || true
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
  else
    log "== wheels: no .whl in $WHEELS; going on without"
  fi
fi

# --- 1. env ------------------------------------------------------------------
env_report() {
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || echo "nvidia-smi: not found"
  command -v nvcc >/dev/null && nvcc --version | tail -n 2 || echo "nvcc: not on PATH (the build looks in CUDA_HOME and /usr/local/cuda)"
  "$PYTHON" - <<'EOF'
import importlib, os, platform
import torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"GPU available: {torch.cuda.is_available()}, cores {os.cpu_count()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU 0: {p.name}, compute capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs")
for name in ["torchvision", "moocore", "pymoo", "pycocotools", "cmake", "ninja", "scikit_build_core", "pybind11", "hypothesis", "xdist"]:
    try:
        m = importlib.import_module(name)
        print(f"  {name:18} {getattr(m, '__version__', 'present')}")
    except Exception as e:  # absent or broken: the steps that need it say so
        print(f"  {name:18} ABSENT ({type(e).__name__}: {e})")
EOF
}
export -f env_report
run_step env 60 "" -- env_report

# --- 2. build ----------------------------------------------------------------
build() {
  local arch
  arch=$("$PYTHON" -c "import torch; p = torch.cuda.get_device_capability(0); print(f'{p[0]}.{p[1]}')")
  echo "building nasx for compute capability $arch with $(nproc) jobs"
  # Only this GPU's architecture: a fraction of the default list's compile time.
  TORCH_CUDA_ARCH_LIST="$arch" NASX_CUDA=1 CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$PYTHON" -m pip install --no-build-isolation --no-deps --no-cache-dir -Cbuild-dir="$WORK/build" "$ROOT"
  (cd "$WORK" && "$PYTHON" -c "import nasx; assert nasx.cuda_enabled(), 'nasx was built without CUDA'; print('nasx', nasx.__version__, 'with CUDA kernels')")
}
export -f build
if [[ "$SKIP_BUILD" == 1 ]]; then
  wanted build && STEPS+=("build|SKIP|0|--skip-build: the installed nasx")
else
  run_step build 300 "CUDA kernels built" -- build
fi

# --- 3. tests ----------------------------------------------------------------
cuda_tests() {
  local selector="cuda or mixed_devices" ignores=() extra=()
  [[ "$DEVICE" == cpu ]] && selector="cuda"  # the smoke run: the CUDA tests skip here
  # Test files that cannot be imported for want of an optional package are left out, named.
  "$PYTHON" -m pytest tests --collect-only -q -p no:cacheprovider --continue-on-collection-errors >"$WORK/collect.txt" 2>&1 || true
  local missing
  missing=$(grep -E "^ERROR tests/.*(ModuleNotFoundError|ImportError)" "$WORK/collect.txt" || true)
  if grep -E "^ERROR tests/" "$WORK/collect.txt" | grep -vqE "ModuleNotFoundError|ImportError"; then
    echo "collection errors other than a missing package:"; grep -E "^ERROR " "$WORK/collect.txt"; return 1
  fi
  while IFS= read -r line; do
    [[ -z "$line" ]] && continue
    local file=${line#ERROR }; file=${file%% *}
    ignores+=("--ignore=$file")
    echo "left out (optional package missing): $line"
  done <<<"$missing"
  "$PYTHON" -c "import xdist" 2>/dev/null && extra+=(-n "$(( $(nproc) < 8 ? $(nproc) : 8 ))")
  "$PYTHON" -c "import pytest_timeout" 2>/dev/null && extra+=(--timeout=120)
  "$PYTHON" -m pytest tests -q -p no:cacheprovider -k "$selector" "${ignores[@]}" "${extra[@]}" -rfEs
}
export -f cuda_tests
run_step tests 150 "every selected CUDA test passed" -- cuda_tests

# --- 4. benchmarks -----------------------------------------------------------
bench() {
  local name=$1
  shift
  local args=(--device "$DEVICE")
  [[ "$DEVICE" == cpu ]] && args+=(--quick --no-write)
  if [[ "$DEVICE" == cuda ]] && ! "$PYTHON" -c "import torch, nasx, sys; sys.exit(0 if torch.cuda.is_available() and nasx.cuda_enabled() else 1)" 2>/dev/null; then
    echo "no CUDA GPU or no CUDA build of nasx" | tee "$WORK/skip_reason"; return 75
  fi
  local need
  for need in "$@"; do
    if ! "$PYTHON" -c "import $need" 2>/dev/null; then
      echo "$need absent: bench_$name not run (carry it with --wheels DIR)" | tee "$WORK/skip_reason"; return 75
    fi
  done
  "$PYTHON" "benchmarks/bench_$name.py" "${args[@]}"
  if [[ "$DEVICE" == cuda ]]; then
    [[ -f "benchmarks/results/$name-cuda.json" ]] || { echo "benchmarks/results/$name-cuda.json was not written"; return 1; }
    cp "benchmarks/results/$name-cuda.json" "$OUT_DIR/" 2>/dev/null || true
  fi
}
export -f bench
wrote() { [[ "$DEVICE" == cuda ]] && echo "wrote results/$1-cuda.json" || echo "CPU smoke: --quick, nothing written"; }
run_step boxes 60 "$(wrote boxes)" -- bench boxes torchvision
run_step conv_ops 75 "$(wrote conv_ops)" -- bench conv_ops torchvision
run_step targets 60 "$(wrote targets)" -- bench targets torchvision
# moocore is the peer; without it the GPU rows are checked against nasx's CPU kernel.
run_step pareto 90 "$(wrote pareto)" -- bench pareto

# --- summary -----------------------------------------------------------------
{
  echo
  echo "nasx GPU check, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), device $DEVICE, $(( $(date +%s) - START ))s of a ${BUDGET}s budget"
  printf '%-10s %-8s %6s  %s\n' step status seconds note
  for s in "${STEPS[@]}"; do
    IFS='|' read -r n st sec note <<<"$s"
    printf '%-10s %-8s %6s  %s\n' "$n" "$st" "$sec" "$note"
  done
  goals=$(grep -E "speed goal\(s\) missed|MISSED" "$LOG" || true)
  if [[ -n "$goals" ]]; then echo "speed goals missed:"; echo "$goals" | sort -u | sed 's/^/  /'; else echo "speed goals: none reported missed"; fi
} | tee "$SUMMARY" | tee -a "$LOG"
exit "$FAILED"
