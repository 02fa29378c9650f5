#!/usr/bin/env bash
# bench/gpu_suite.sh: every check of fastres that needs a GPU, as one command, in under 8 minutes.
#
#   bash bench/gpu_suite.sh [RESULTS_DIR]     # default bench/results/gpu-<UTC date>-<GPU>
#
# For a machine with one NVIDIA GPU and no package registry: torch with CUDA, CuPy, nvcc, cmake,
# ninja, pybind11, scikit-build-core, pytest and pytest-benchmark already installed (DALI only if
# its wheel was brought along). Everything goes into RESULTS_DIR: one log per part, the
# benchmark JSON, the doctor's reports, and summary.txt with each part's PASS/FAIL and figures.
# A failing part does not stop the others; the exit status is the number of failed parts.
#
# Parts (bench/README.md, "GPU suite"):
#   build        pip install --no-build-isolation --no-deps . (CUDA kernels for 80;90)
#   doctor       python -m fastres.doctor: the ops must take the native CUDA path on this GPU
#   tests        the kernel tests (ops, wire, optimizer, run-time compilation, no host sync, build,
#                doctor) with FASTRES_SYNC_CHECK=1
#   memcheck     compute-sanitizer --tool memcheck  on the CUDA kernel tests (fastres kernels only)
#   racecheck    compute-sanitizer --tool racecheck on the same
#   synccheck    compute-sanitizer --tool synccheck on the same (barriers and warp shuffles)
#   kernels      the kernel microbenchmarks (bench_*.py, CUDA groups): GB/s against a copy of the
#                same bytes, the fused step against torch's fused SGD, native against run-time compiled
#   train        ResNet-50 bf16 channels_last training at batch 256, synthetic data: img/s,
#                forward/backward/optimizer breakdown, peak memory (bench/gpu_train_step.py)
#   reducer      the gradient reducer on 2 and 4 processes sharing the GPU, Gloo with CUDA
#                tensors: CUDA pack/unpack and the stream handling (bench/gpu_reducer_check.py)
#   rtc          a second install with FASTRES_CUDA=OFF: the kernels compiled at run time with
#                CuPy/NVRTC, the same GPU tests on them; then the native build is put back
#   other-tests  the rest of the test suite's GPU tests (-k "cuda or gpu": data, training, ...)
#
# FASTRES_SUITE_SECONDS (default 470) bounds the whole run: each part gets its own cap or what is
# left, whichever is less, and a part with under 15 s left is reported NOT RUN.
# FASTRES_SUITE_PARTS="tests kernels" runs only the parts named (e.g. to rerun what failed).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export ROOT
PY=${PYTHON:-python}
export PY

gpu_name=$($PY -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-'))" 2>/dev/null || echo no-gpu)
OUT=${1:-bench/results/gpu-$(date -u +%Y%m%dT%H%M%SZ)-$gpu_name}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export OUT
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
DEADLINE=$((SECONDS + ${FASTRES_SUITE_SECONDS:-470}))
FAILED=0
BUILD_NATIVE="-C build-dir=$ROOT/build/gpu-suite-native"
BUILD_RTC="-C build-dir=$ROOT/build/gpu-suite-rtc"
export BUILD_NATIVE BUILD_RTC

say() { echo "$*" | tee -a "$SUMMARY"; }

# part NAME CAP_SECONDS FUNCTION: run FUNCTION (exported) under a time limit, log to NAME.log,
# report PASS/FAIL with the FIGURES lines it printed.
part() {
  local name=$1 cap=$2 fn=$3 left=$((DEADLINE - SECONDS))
  if [[ -n "${FASTRES_SUITE_PARTS:-}" && " $FASTRES_SUITE_PARTS " != *" $name "* ]]; then
    return
  fi
  if ((left < 15)); then
    say "NOT RUN $name: the suite's time is used up"
    return
  fi
  local limit=$((cap < left ? cap : left)) start=$SECONDS rc
  echo "--- $name (at most ${limit} s)"
  timeout -k 10 "$limit" bash -c "$fn" >"$OUT/$name.log" 2>&1
  rc=$?
  local took=$((SECONDS - start))
  if ((rc == 0)); then
    say "PASS $name (${took} s)"
  else
    FAILED=$((FAILED + 1))
    local why="exit $rc"
    ((rc == 124 || rc == 137)) && why="timed out after ${limit} s"
    say "FAIL $name (${took} s, $why): see $name.log"
    tail -n 5 "$OUT/$name.log" | sed 's/^/    /' | tee -a "$SUMMARY"
  fi
  grep -h '^FIGURES' "$OUT/$name.log" | sed 's/^FIGURES /    /' | tee -a "$SUMMARY"
}

# ------------------------------------------------------------------------- the parts

environment() {
  {
    date -u
    nvidia-smi || true
    $PY -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
    $PY -c "import cupy; print('cupy', cupy.__version__)" || true
    nvcc --version | tail -n 2 || true
    $PY -m pip list 2>/dev/null
  } >"$OUT/environment.txt" 2>&1
}

build() {
  set -e
  $PY -m pip install --no-build-isolation --no-deps $BUILD_NATIVE "$ROOT" -v 2>&1 | grep -E "fastres:|Successfully|error" || true
  cd "$OUT" # never the repository root: its fastres/ would shadow the installed package
  $PY -c "import fastres.kernels.ops as o; i = o.build_info(); assert i['cuda'], i; print('FIGURES _C:', i['cuda_archs'], 'CUDA', i['cuda_version'])"
}

doctor() {
  set -e
  cd "$OUT"
  $PY -m fastres.doctor | tee doctor.txt
  $PY -m fastres.doctor --json >doctor.json
  grep -q "cuda:0 fused_step     native CUDA" doctor.txt
  echo "FIGURES $(grep -m1 '  cuda:0  ' doctor.txt | sed 's/^ *//')"
}

KERNEL_TESTS="tests/test_ops.py tests/test_wire.py tests/test_lars.py tests/test_rtc.py tests/test_no_sync.py tests/test_build.py tests/test_doctor.py tests/test_flat.py"
export KERNEL_TESTS

tests() {
  cd "$ROOT"
  FASTRES_SYNC_CHECK=1 pytest -q -p no:cacheprovider $KERNEL_TESTS --junitxml="$OUT/tests-kernels.xml" -rs \
    >"$OUT/tests-kernels.txt" 2>&1
  local rc=$?
  echo "FIGURES kernel tests (FASTRES_SYNC_CHECK=1): $(tail -n 1 "$OUT/tests-kernels.txt")"
  grep -h "^SKIPPED" "$OUT/tests-kernels.txt" | head -n 20
  return "$rc"
}

other_tests() {
  cd "$ROOT"
  pytest -q -p no:cacheprovider tests -k "cuda or gpu" $(for f in $KERNEL_TESTS; do echo "--ignore=$f"; done) \
    --timeout 60 --junitxml="$OUT/tests-other.xml" >"$OUT/tests-other.txt" 2>&1
  local rc=$?
  echo "FIGURES other GPU tests: $(tail -n 1 "$OUT/tests-other.txt")"
  ((rc == 5)) && rc=0 # no test selected is not a failure
  return "$rc"
}

sanitizer() {
  local tool=$1
  local cs
  cs=$(command -v compute-sanitizer || true)
  [[ -z "$cs" && -x "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" ]] && cs=${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer
  if [[ -z "$cs" ]]; then
    echo "compute-sanitizer not found (PATH, \$CUDA_HOME/bin, /usr/local/cuda/bin)"
    return 3
  fi
  local filter=()
  # check fastres's kernels only (torch's are not ours, and checking them takes minutes)
  "$cs" --help 2>&1 | grep -q -- "--kernel-name" && filter=(--kernel-name kns=fastres)
  cd "$ROOT"
  # without torch's caching allocator every tensor is its own allocation: memcheck then sees a
  # read past a tensor's end
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$cs" --tool "$tool" --error-exitcode 9 "${filter[@]}" \
    pytest -q -p no:cacheprovider -x tests/test_ops.py tests/test_wire.py tests/test_lars.py tests/test_rtc.py \
    -k "(cuda or rtc_) and not nvrtc and not native_cuda_where and not sync_check and not stream and not resnet50" \
    2>&1 | tail -n 40
  local rc=${PIPESTATUS[0]}
  echo "FIGURES compute-sanitizer $tool: exit $rc"
  return "$rc"
}
memcheck() { sanitizer memcheck; }
racecheck() { sanitizer racecheck; }
synccheck() { sanitizer synccheck; }

kernels() {
  cd "$ROOT"
  pytest -p no:cacheprovider bench/bench_segment_sq_norms.py bench/bench_lars.py bench/bench_wire.py -k cuda \
    --benchmark-max-time=0.5 --benchmark-json="$OUT/kernels.json" >"$OUT/kernels.txt" 2>&1
  local rc=$?
  # bench/conftest.py's summaries: GB/s, ratios to the copy ceiling and to the peers
  awk '/^=+ .* on cuda/ {on=1; print "FIGURES " $0; next} /^=+/ {on=0} on {print "FIGURES   " $0}' "$OUT/kernels.txt"
  # every CUDA group must have run (a benchmark that skipped is a failure here)
  $PY -c "import json, sys; b = json.load(open(sys.argv[1]))['benchmarks']; groups = {x['group'] for x in b}
sys.exit(0 if {'segment_sq_norms-cuda', 'lars-cuda', 'wire-cuda'} <= groups else f'CUDA groups timed: {sorted(groups)}')" \
    "$OUT/kernels.json" || rc=1
  return "$rc"
}

train() {
  cd "$ROOT"
  $PY bench/gpu_train_step.py --batch-size 256 --steps 20 --warmup 5 --json "$OUT/train.json"
}

reducer() {
  cd "$ROOT"
  local rc=0
  torchrun --standalone --nproc-per-node 2 bench/gpu_reducer_check.py || rc=1
  FASTRES_VIRTUAL_NODES=2 torchrun --standalone --nproc-per-node 4 bench/gpu_reducer_check.py || rc=1
  return "$rc"
}

rtc() {
  set -e
  FASTRES_CUDA=OFF $PY -m pip install --no-build-isolation --no-deps $BUILD_RTC "$ROOT" -v 2>&1 | grep -E "fastres:|Successfully" || true
  cd "$OUT"
  $PY -c "import fastres.kernels.ops as o; assert not o.build_info()['cuda'], 'the FASTRES_CUDA=OFF build has CUDA kernels'"
  $PY -m fastres.doctor | tee doctor-rtc.txt
  grep -q "cuda:0 fused_step     run-time compiled" doctor-rtc.txt
  cd "$ROOT"
  set +e
  FASTRES_CUDA=OFF FASTRES_SYNC_CHECK=1 pytest -q -p no:cacheprovider tests/test_rtc.py tests/test_ops.py \
    tests/test_wire.py tests/test_lars.py tests/test_no_sync.py -W "ignore::RuntimeWarning" >"$OUT/rtc-tests.txt" 2>&1
  local rc=$?
  echo "FIGURES tests on the run-time compiled kernels (FASTRES_SYNC_CHECK=1): $(tail -n 1 "$OUT/rtc-tests.txt")"
  # put the native build back (its build folder is kept: a quick relink)
  $PY -m pip install --no-build-isolation --no-deps $BUILD_NATIVE "$ROOT" >/dev/null 2>&1 || echo "could not reinstall the native build"
  return "$rc"
}

export -f build doctor tests other_tests sanitizer memcheck racecheck synccheck kernels train reducer rtc

# ------------------------------------------------------------------------- run
say "fastres GPU suite: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') on $gpu_name, $(date -u +%FT%TZ)"
environment
if [[ "$gpu_name" == no-gpu ]]; then
  say "no CUDA GPU visible to torch ($PY): nothing to check here (environment.txt says what there is)"
  exit 2
fi
part build 150 build
part doctor 20 doctor
part tests 100 tests
part train 60 train
part kernels 80 kernels
part reducer 75 reducer
part rtc 110 rtc
part memcheck 50 memcheck
part racecheck 50 racecheck
part synccheck 35 synccheck
part other-tests 60 other_tests
say "suite: $FAILED part(s) failed, ${SECONDS} s; results in $OUT"
exit "$FAILED"
