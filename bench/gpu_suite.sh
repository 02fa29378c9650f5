#!/usr/bin/env bash
# bench/gpu_suite.sh: every check of fastres that needs a GPU, as one command, in at most 480 s.
#
#   bash bench/gpu_suite.sh OUT             # on a GPU: writes OUT/summary.md and OUT/gpu-suite.tgz, nothing else
#   bash bench/gpu_suite.sh --dry-run [OUT] # without a GPU: every part in its CPU mode (OUT: a new folder)
#   bash bench/gpu_suite.sh --plan          # the parts in run order with their caps and CPU modes
#
# For a machine with one NVIDIA GPU and no package registry: torch with CUDA, nvcc, the Python
# headers, cmake, ninja, pybind11, scikit-build-core and pytest already installed; CuPy for the
# run-time compiled kernels, compute-sanitizer for the sanitizers (a part whose tool is missing
# says NOT AVAILABLE). The parts run in order of value, each under its cap (seconds; all caps
# together <= 480), and a failing part does not stop the others:
#
#   build      nvcc and Python.h checked, then `pip install --no-build-isolation --no-deps .` (CUDA
#              kernels for this GPU's architecture; FASTRES_CUDA_ARCHS overrides), then
#              `python -m fastres.doctor`: every op on cuda:0 must take fastres._C's CUDA kernel
#   memcheck   compute-sanitizer --tool memcheck on bench/gpu_kernels_once.py: every fastres
#   racecheck  kernel once, native and run-time compiled, on small unaligned inputs (the
#   synccheck  sanitizers check fastres's kernels only: --kernel-name kns=fastres); judged by
#              bench/sanitizer_summary.py: CUDA API errors raised inside torch or CuPy are
#              reported on their own line and not counted, every other error is fastres's
#   tests      the test suite's CUDA cases only (-k), with FASTRES_SYNC_CHECK=1; CI runs the rest
#   kernels    bench/gpu_kernels.py: device time per call (CUDA events, the host queue filled
#              first), bandwidth as a fraction of a copy of the same bytes, the LARS step against
#              torch's fused SGD and a foreach LARS
#   train      bench/gpu_train_step.py: the step fastres.train runs against a plain torch loop,
#              ResNet-50 bf16 channels_last batch 256, alternating rounds, GPU clocks recorded
#   reducer    bench/gpu_reducer_check.py on 4 processes (2 virtual nodes) sharing the GPU over
#              Gloo: CUDA pack/unpack and the reducer's streams, against the float64 mean
#   rtc        a CPU-only build (FASTRES_CUDA=OFF) installed into a folder of its own and put
#              first on PYTHONPATH: the ops take the kernels compiled at run time (NVRTC, loaded
#              with CuPy), and the CUDA tests run on them. The native install is never replaced,
#              so nothing can be left half-restored; a trap removes the side install however the
#              part ends, and the suite checks at the end that the native build still imports.
#
# --dry-run runs each part's CPU mode instead (`--plan` lists them), under the same caps: the
# sanitizers' script on the CPU kernels and then, for racecheck and synccheck, on the CUDA
# kernels executed on the CPU (fastres.kernels.sim: warps in random orders, barriers and shuffles
# checked, UBSan), the CUDA test cases (which must skip cleanly), bench/gpu_kernels.py,
# bench/gpu_train_step.py and bench/gpu_reducer_check.py on small CPU inputs, and the NVRTC
# compile the rtc part starts with. It installs and builds nothing. What it shows of a GPU: that
# every script and command line of the suite runs; no GPU figure.
#
# Every Python runs the installed package: PYTHONSAFEPATH=1 keeps the repository root (whose
# fastres/ has no _C) off sys.path, for pytest and for the processes tests start. OUT/summary.md
# has one line per part (PASS, FAIL, RUNNING, NOT RUN or NOT AVAILABLE) and its headline figures,
# and is written again before and after every part: a suite stopped at any point, even by
# SIGKILL, leaves the parts done so far there. OUT/gpu-suite.tgz (at the end) holds every log,
# report and JSON. Exit status: the number of failed parts.
# FASTRES_SUITE_PARTS="tests kernels" runs only the parts named (the others say NOT RUN).
set -uo pipefail

PARTS=(build memcheck racecheck synccheck tests kernels train reducer rtc)
declare -A CAP=([build]=90 [memcheck]=40 [racecheck]=35 [synccheck]=30 [tests]=75 [kernels]=45 [train]=55
  [reducer]=40 [rtc]=70)
declare -A WHAT=(
  [build]="build (nvcc, Python.h, pip install .) and python -m fastres.doctor"
  [memcheck]="compute-sanitizer memcheck, every kernel once"
  [racecheck]="compute-sanitizer racecheck, every kernel once"
  [synccheck]="compute-sanitizer synccheck, every kernel once"
  [tests]="the CUDA test cases (FASTRES_SYNC_CHECK=1)"
  [kernels]="kernel timings (CUDA events, host queue filled first)"
  [train]="ResNet-50 training step: fastres vs a plain torch loop"
  [reducer]="gradient reducer, 4 processes on one GPU over Gloo"
  [rtc]="run-time compiled kernels (CPU-only build in a side folder)"
)
# each part's CPU mode: what --dry-run runs
declare -A DRY=(
  [build]="python -m fastres.doctor on the installed package (nothing built or installed)"
  [memcheck]="bench/gpu_kernels_once.py --device cpu: the sanitizers' script on the CPU kernels"
  [racecheck]="bench/gpu_kernels_once.py --device cpu --sim: its calls on the CUDA kernels, run on the CPU"
  [synccheck]="bench/gpu_kernels_once.py --device cpu --sim again, under other schedules (FASTRES_SIM_SEED=1000)"
  [tests]="the same pytest command, collecting only: its files and -k select the CUDA cases (CI runs them all)"
  [kernels]="bench/gpu_kernels.py --device cpu --small --calls 2 --rounds 1"
  [train]="bench/gpu_train_step.py --device cpu --precision fp32 --batch-size 2 --image-size 32 --steps 1 --rounds 1 --warmup 0"
  [reducer]="bench/gpu_reducer_check.py --cpu --steps 0 --image-size 32 --arch resnet18 on 2 processes (2 virtual nodes)"
  [rtc]="every kernel file compiled by fastres's NVRTC for sm_90, as the part does before CuPy loads it"
)
TOTAL=0
for p in "${PARTS[@]}"; do TOTAL=$((TOTAL + CAP[$p])); done

plan() {
  echo "fastres GPU suite: ${#PARTS[@]} parts, in run order, each with its cap (and its CPU mode: --dry-run)"
  for p in "${PARTS[@]}"; do
    printf '%-10s %4d s  %s\n' "$p" "${CAP[$p]}" "${WHAT[$p]}"
    printf '%-10s %6s  CPU mode: %s\n' "" "" "${DRY[$p]}"
  done
  printf '%-10s %4d s\n' total "$TOTAL"
}

DRY_RUN=0
case "${1:-}" in
--plan)
  plan
  exit 0
  ;;
--dry-run)
  DRY_RUN=1
  shift
  if [[ $# -gt 1 || "${1:-}" == -* ]]; then
    echo "usage: bash bench/gpu_suite.sh OUT | --dry-run [OUT] | --plan" >&2
    exit 2
  fi
  set -- "${1:-$(mktemp -d "${TMPDIR:-/tmp}/fastres-gpu-suite-dry-run.XXXXXX")}"
  ;;
*)
  if [[ $# -ne 1 || "$1" == -* ]]; then
    echo "usage: bash bench/gpu_suite.sh OUT | --dry-run [OUT] | --plan" >&2
    exit 2
  fi
  ;;
esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1" || exit 2
OUT=$(cd "$1" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fastres-gpu-suite.XXXXXX")
PY=${PYTHON:-python3}
export ROOT WORK PY
export PYTHONSAFEPATH=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
export FASTRES_RTC_CACHE=$WORK/rtc-cache
START=$SECONDS
declare -A RESULT TOOK
FAILED=0

# ------------------------------------------------------------------------- the parts
# Each runs in `bash -c` under `timeout`, its output in $WORK/NAME.log; exit 0 is PASS, 77 NOT
# AVAILABLE, anything else FAIL. Lines it prints as `FIGURES ...` go into the summary.

build() {
  set -e
  local nvcc inc arch
  nvcc=$(command -v nvcc || true)
  for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda; do
    [[ -z "$nvcc" && -n "$d" && -x "$d/bin/nvcc" ]] && nvcc=$d/bin/nvcc
  done
  [[ -n "$nvcc" ]] || { echo "FIGURES nvcc not found (PATH, \$CUDA_HOME/bin, /usr/local/cuda/bin)"; exit 1; }
  inc=$($PY -c "import sysconfig; print(sysconfig.get_paths()['include'])")
  [[ -f "$inc/Python.h" ]] || { echo "FIGURES Python.h not found in $inc (install the Python headers)"; exit 1; }
  $PY -c "import sys; assert sys.version_info >= (3, 11), 'PYTHONSAFEPATH needs Python 3.11 or newer'"
  arch=$($PY -c "import torch; print('%d%d' % torch.cuda.get_device_capability())")
  echo "nvcc: $nvcc ($("$nvcc" --version | tail -n 1)); Python.h: $inc; building for sm_${FASTRES_CUDA_ARCHS:-$arch}"
  FASTRES_CUDA_ARCHS=${FASTRES_CUDA_ARCHS:-$arch} $PY -m pip install --no-build-isolation --no-deps \
    --config-settings=build-dir="$WORK/build-native" "$ROOT" -v >"$WORK/build-pip.log" 2>&1 ||
    { tail -n 30 "$WORK/build-pip.log"; exit 1; }
  grep -E "fastres: CUDA" "$WORK/build-pip.log" || true
  cd "$WORK"
  $PY -m fastres.doctor | tee doctor.txt
  $PY -m fastres.doctor --json >doctor.json
  $PY - <<'EOF'
import json, fastres, fastres.kernels.ops as ops
info, report = ops.build_info(), json.load(open("doctor.json"))
assert "site-packages" in fastres.__file__ or "dist-packages" in fastres.__file__, f"not the installed package: {fastres.__file__}"
assert info["cuda"], f"fastres._C has no CUDA kernels: {info}"
paths = report["paths"].get("cuda:0", {})
wrong = {op: c["path"] for op, c in paths.items() if c["path"] != "cuda"}
assert paths and not wrong, f"ops on cuda:0 not on fastres._C's CUDA kernels: {wrong}"
print(f"FIGURES _C: CUDA {info['cuda_version']}, architectures {', '.join(info['cuda_archs'])}; "
      f"doctor: all {len(paths)} ops on cuda:0 take fastres._C's CUDA kernel ({paths['fused_step']['reason']})")
EOF
}

sanitize() {
  local tool=$1 cs="" filter=() extra=()
  cs=$(command -v compute-sanitizer || true)
  for d in "${CUDA_HOME:-}" /usr/local/cuda; do
    [[ -z "$cs" && -n "$d" && -x "$d/bin/compute-sanitizer" ]] && cs=$d/bin/compute-sanitizer
  done
  if [[ -z "$cs" ]]; then
    echo "FIGURES compute-sanitizer not found (PATH, \$CUDA_HOME/bin, /usr/local/cuda/bin)"
    return 77
  fi
  "$cs" --help 2>&1 | grep -q -- "--kernel-name" && filter=(--kernel-name kns=fastres)
  $PY -c "from fastres.kernels import rtc; assert rtc.available()[0]" 2>/dev/null && extra=(--rtc)
  cd "$WORK"
  # without torch's caching allocator every tensor is an allocation of its own: memcheck then
  # sees a read past a tensor's end
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$cs" --tool "$tool" --error-exitcode 9 --print-limit 100 "${filter[@]}" \
    $PY "$ROOT/bench/gpu_kernels_once.py" "${extra[@]}" >"$WORK/$tool-run.log" 2>&1
  local rc=$?
  tail -n 60 "$WORK/$tool-run.log"
  if ((rc != 0)) && grep -qiE "device (is )?not supported|unsupported (device|gpu)|not supported on this (device|gpu)" \
    "$WORK/$tool-run.log"; then
    echo "FIGURES compute-sanitizer $tool: NOT AVAILABLE on this device ($(grep -m1 -iE 'not supported|unsupported' \
      "$WORK/$tool-run.log"))"
    return 77
  fi
  # compute-sanitizer's exit status counts CUDA API errors raised inside torch and CuPy too: the
  # verdict is bench/sanitizer_summary.py's, which reports those on their own line
  local verdict=0
  $PY "$ROOT/bench/sanitizer_summary.py" "$WORK/$tool-run.log" --tool "$tool" || verdict=1
  echo "FIGURES   ($([[ ${#extra[@]} -gt 0 ]] && echo 'native and run-time compiled kernels' ||
    echo 'native kernels; no CuPy'); compute-sanitizer's own exit status $rc)"
  return "$verdict"
}
memcheck() { sanitize memcheck; }
racecheck() { sanitize racecheck; }
synccheck() { sanitize synccheck; }

# The CUDA cases: their names say cuda/gpu/rtc_/sync/stream (parametrised "cuda" device included),
# and the doctor's and the build's files whole. CI runs everything else. (Not PYTEST_TIMEOUT:
# pytest-timeout reads that variable as a number of seconds, in every pytest a test starts too.)
CUDA_TEST_FILES="tests/test_ops.py tests/test_wire.py tests/test_lars.py tests/test_rmsprop.py tests/test_rtc.py
  tests/test_no_host_sync.py tests/test_normalize.py tests/test_flat.py tests/test_doctor.py tests/test_build.py
  tests/test_dali.py"
CUDA_TEST_K="cuda or gpu or rtc_ or sync or stream or test_doctor or test_build"
PYTEST_TIMEOUT_ARGS=$($PY -c "import pytest_timeout" 2>/dev/null && echo "--timeout 120")
export CUDA_TEST_FILES CUDA_TEST_K PYTEST_TIMEOUT_ARGS

tests() {
  cd "$ROOT"
  # shellcheck disable=SC2086 # one word per file
  FASTRES_SYNC_CHECK=1 $PY -m pytest -p no:cacheprovider -q -rs $PYTEST_TIMEOUT_ARGS $CUDA_TEST_FILES -k "$CUDA_TEST_K" \
    --junitxml="$WORK/tests.xml" 2>&1 | tee "$WORK/tests.txt"
  local rc=${PIPESTATUS[0]}
  echo "FIGURES CUDA test cases (FASTRES_SYNC_CHECK=1): $(tail -n 1 "$WORK/tests.txt")"
  return "$rc"
}

kernels() {
  cd "$WORK"
  $PY "$ROOT/bench/gpu_kernels.py" --json "$WORK/kernels.json"
}

train() {
  cd "$WORK"
  $PY "$ROOT/bench/gpu_train_step.py" --batch-size 256 --steps 15 --rounds 3 --warmup 6 --json "$WORK/train.json"
}

reducer() {
  cd "$WORK"
  FASTRES_VIRTUAL_NODES=2 $PY -m torch.distributed.run --standalone --nproc-per-node 4 \
    "$ROOT/bench/gpu_reducer_check.py"
}

rtc() {
  local why
  why=$($PY -c "from fastres.kernels import rtc; print(rtc.available()[1])" 2>&1) || { echo "$why"; return 1; }
  [[ -z "$why" ]] || { echo "FIGURES no run-time compiled path to test: $why"; return 77; }
  $PY -c "from fastres.kernels import rtc; s = rtc.status()
print(f'FIGURES CuPy {s[\"cupy\"]} (runtime {s[\"runtime\"]}, torch\'s streams through {s[\"stream_api\"]}), NVRTC {s[\"nvrtc\"]}')"
  local site=$WORK/rtc-site
  trap 'rm -rf "$WORK/rtc-site"' EXIT # the side install goes whatever happens; the native one was never touched
  trap 'exit 143' TERM INT             # (so that the EXIT trap runs when the cap's timeout stops the part)
  FASTRES_CUDA=OFF $PY -m pip install --no-build-isolation --no-deps --target "$site" \
    --config-settings=build-dir="$WORK/build-rtc" \
    "$ROOT" -v >"$WORK/rtc-pip.log" 2>&1 || { tail -n 30 "$WORK/rtc-pip.log"; return 1; }
  export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
  cd "$WORK"
  $PY -m fastres.doctor >doctor-rtc.txt 2>&1
  $PY -m fastres.doctor --json >doctor-rtc.json || return 1
  $PY - <<'EOF' || return 1
import json, os, fastres, fastres.kernels.ops as ops
assert fastres.__file__.startswith(os.environ["WORK"]), f"not the side install: {fastres.__file__}"
assert not ops.build_info()["cuda"], "the FASTRES_CUDA=OFF build has CUDA kernels"
paths = json.load(open("doctor-rtc.json"))["paths"]["cuda:0"]
wrong = {op: c["path"] for op, c in paths.items() if c["path"] != "rtc"}
assert not wrong, f"ops on cuda:0 not on the run-time compiled kernels: {wrong}"
print("FIGURES CPU-only build: every op on cuda:0 takes the run-time compiled kernels")
EOF
  cd "$ROOT"
  # shellcheck disable=SC2086 # empty or two words
  FASTRES_SYNC_CHECK=1 $PY -m pytest -p no:cacheprovider -q -rs $PYTEST_TIMEOUT_ARGS tests/test_rtc.py tests/test_wire.py \
    tests/test_ops.py tests/test_lars.py tests/test_rmsprop.py tests/test_no_host_sync.py -k "cuda or rtc_ or sync" \
    -W "ignore::RuntimeWarning" --junitxml="$WORK/rtc-tests.xml" 2>&1 | tee "$WORK/rtc-tests.txt"
  local rc=${PIPESTATUS[0]}
  echo "FIGURES CUDA test cases on the run-time compiled kernels: $(tail -n 1 "$WORK/rtc-tests.txt")"
  return "$rc"
}

# ------------------------------------------------------------------------- the parts' CPU modes (--dry-run)

dry_build() {
  cd "$WORK"
  $PY -m fastres.doctor | tee doctor.txt
  $PY -c "import fastres, fastres.kernels.ops as o; i = o.build_info()
kind = 'CUDA kernels for ' + ', '.join(i['cuda_archs']) if i['cuda'] else 'CPU kernels only'
print(f'FIGURES installed fastres imports from {fastres.__file__} (_C: {kind}); the doctor reports every op')"
}

once() { # the sanitizers' script on the CPU: $1 its extra arguments, $2 what ran, $3 a name for its output
  cd "$WORK"
  # shellcheck disable=SC2086 # empty or one word
  $PY "$ROOT/bench/gpu_kernels_once.py" --device cpu $1 | tee "once-$3.txt"
  local rc=${PIPESTATUS[0]}
  echo "FIGURES $(grep -c ' ok$' "once-$3.txt") ops ok ($2): $(tail -n 1 "once-$3.txt")"
  return "$rc"
}
dry_memcheck() { once "" "the CPU kernels" cpu; }
dry_racecheck() { once --sim "the CPU kernels, then the CUDA kernels on the CPU, seeds from 0" sim; }
dry_synccheck() { FASTRES_SIM_SEED=1000 once --sim "the same, under other schedules: seeds from 1000" sim-1000; }

dry_tests() {
  cd "$ROOT"
  # shellcheck disable=SC2086 # one word per file
  $PY -m pytest -p no:cacheprovider -q --collect-only $CUDA_TEST_FILES -k "$CUDA_TEST_K" 2>&1 | tee "$WORK/tests.txt"
  local rc=${PIPESTATUS[0]}
  echo "FIGURES the tests part's command collects $(tail -n 1 "$WORK/tests.txt") (on a GPU they run; CI runs them here)"
  return "$rc"
}

dry_kernels() {
  cd "$WORK"
  $PY "$ROOT/bench/gpu_kernels.py" --device cpu --small --calls 2 --rounds 1 --json "$WORK/kernels.json"
}

dry_train() {
  cd "$WORK"
  $PY "$ROOT/bench/gpu_train_step.py" --device cpu --precision fp32 --batch-size 2 --image-size 32 --steps 1 \
    --rounds 1 --warmup 0 --json "$WORK/train.json"
}

dry_reducer() {
  cd "$WORK"
  FASTRES_VIRTUAL_NODES=2 $PY -m torch.distributed.run --standalone --nproc-per-node 2 \
    "$ROOT/bench/gpu_reducer_check.py" --cpu --steps 0 --image-size 32 --arch resnet18
}

dry_rtc() {
  cd "$WORK"
  $PY - <<'EOF'
import time

from fastres.kernels import nvrtc, rtc

t0 = time.perf_counter()
sizes = {f: rtc.cubin_for(f, 90)[0].stat().st_size for f in rtc.KERNELS}
st = rtc.status()
print(f"FIGURES NVRTC {'.'.join(map(str, nvrtc.load().version()))} compiled {len(sizes)} kernel files for sm_90 in "
      f"{time.perf_counter() - t0:.1f} s ({', '.join(f'{f} {n // 1024} KiB' for f, n in sizes.items())}); "
      f"CuPy: {st['cupy'] or st['reason']}")
EOF
}

export -f build sanitize memcheck racecheck synccheck tests kernels train reducer rtc
export -f dry_build once dry_memcheck dry_racecheck dry_synccheck dry_tests dry_kernels dry_train dry_reducer dry_rtc

# ------------------------------------------------------------------------- summary and archive

# OUT/summary.md as things stand: written before and after every part, through a rename, so
# that a suite stopped at any moment (SIGKILL included) leaves the parts done so far.
write_summary() {
  {
    echo "# fastres GPU suite$([[ $DRY_RUN == 1 ]] && echo ': dry run (CPU modes, no GPU figure)')"
    echo
    echo "commit ${FASTRES_COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')}," \
      "$(date -u +%FT%TZ), $((SECONDS - START)) s (caps $TOTAL s); $GPU_LINE"
    echo
    local q took
    for q in "${PARTS[@]}"; do
      took=${TOOK[$q]:-0}
      [[ "${RESULT[$q]:-}" == RUNNING ]] && took=$((SECONDS - T0))
      echo "- ${RESULT[$q]:-NOT RUN} $q ($took s of ${CAP[$q]} s): ${WHAT[$q]}${WHY[$q]:+: ${WHY[$q]}}"
      [[ $DRY_RUN == 1 ]] && echo "    - CPU mode: ${DRY[$q]}"
      [[ -f "$WORK/$q.log" ]] && grep -h '^FIGURES' "$WORK/$q.log" | sed 's/^FIGURES */    - /'
      if [[ "${RESULT[$q]:-}" == FAIL ]]; then
        tail -n 6 "$WORK/$q.log" | sed 's/^/        /'
      fi
    done
    echo
    [[ -n "${NATIVE:-}" ]] && echo "native build still installed and importable after the suite: $NATIVE"
    echo "everything else (logs, doctor reports, JSON, junit XML): gpu-suite.tgz, written at the end"
  } >"$OUT/.summary.md.tmp" && mv -f "$OUT/.summary.md.tmp" "$OUT/summary.md"
}

finish() {
  if [[ $DRY_RUN == 0 ]]; then
    NATIVE=$(cd "$WORK" && $PY -c "import fastres.kernels.ops as o; print('yes' if o.build_info()['cuda'] else 'NO')" \
      2>/dev/null || echo "NO (does not import)")
  fi
  write_summary
  rm -rf "$WORK/rtc-site"
  tar -C "$WORK" --exclude=build-native --exclude=build-rtc --exclude=rtc-site --exclude=rtc-cache \
    -czf "$OUT/gpu-suite.tgz" .
  rm -rf "$WORK"
  cat "$OUT/summary.md"
}
declare -A WHY
GPU_LINE="no GPU"
T0=$SECONDS
for p in "${PARTS[@]}"; do WHY[$p]="not reached yet"; done
trap finish EXIT

{
  date -u
  nvidia-smi || echo "nvidia-smi: not found or failed"
  $PY -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'CUDA', torch.version.cuda)"
  $PY -c "import cupy; print('cupy', cupy.__version__)" || echo "cupy: not importable"
  (command -v nvcc && nvcc --version) || echo "nvcc: not on PATH"
  (command -v compute-sanitizer && compute-sanitizer --version) || echo "compute-sanitizer: not on PATH"
  $PY -m pip list 2>/dev/null
} >"$WORK/environment.txt" 2>&1

if [[ $DRY_RUN == 1 ]]; then
  GPU_LINE="dry run on $(uname -n) ($($PY -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__)" 2>&1))"
elif ! GPU_LINE=$($PY -c "import torch
p = torch.cuda.get_device_properties(0)
print(f'{p.name} (sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, CUDA {torch.version.cuda}')" \
  2>>"$WORK/environment.txt"); then
  GPU_LINE="no CUDA GPU visible to torch ($PY): nothing was run (environment.txt says what there is;"
  GPU_LINE+=" --dry-run runs the CPU modes)"
  for p in "${PARTS[@]}"; do WHY[$p]="no GPU"; done
  exit 2
fi
[[ $DRY_RUN == 1 ]] && plan
write_summary

for p in "${PARTS[@]}"; do
  if [[ -n "${FASTRES_SUITE_PARTS:-}" && " $FASTRES_SUITE_PARTS " != *" $p "* ]]; then
    WHY[$p]="not in FASTRES_SUITE_PARTS"
    continue
  fi
  if [[ "$p" != build && "${RESULT[build]:-}" != PASS && " ${FASTRES_SUITE_PARTS:-build} " == *" build "* ]]; then
    WHY[$p]="needs the build, which did not pass"
    continue
  fi
  left=$((START + TOTAL - SECONDS))
  limit=$((CAP[$p] < left ? CAP[$p] : left))
  if ((limit < 10)); then
    WHY[$p]="the suite's $TOTAL s are used up"
    continue
  fi
  echo "--- $p (at most $limit s)"
  T0=$SECONDS
  RESULT[$p]=RUNNING
  WHY[$p]="started; a summary that still says RUNNING was left by a suite stopped during this part"
  write_summary
  fn=$p
  [[ $DRY_RUN == 1 ]] && fn=dry_$p
  timeout -k 5 "$limit" bash -c "$fn" >"$WORK/$p.log" 2>&1
  rc=$?
  TOOK[$p]=$((SECONDS - T0))
  unset "WHY[$p]"
  case $rc in
  0) RESULT[$p]=PASS ;;
  77) RESULT[$p]="NOT AVAILABLE" ;;
  124 | 137)
    RESULT[$p]=FAIL
    WHY[$p]="timed out after $limit s"
    ;;
  *)
    RESULT[$p]=FAIL
    WHY[$p]="exit $rc, see $p.log"
    ;;
  esac
  [[ ${RESULT[$p]} == FAIL ]] && FAILED=$((FAILED + 1))
  echo "    ${RESULT[$p]} (${TOOK[$p]} s)"
  write_summary
done
exit "$FAILED"
