#!/usr/bin/env bash
# The GPU checks in one command (GPU time is short): what the CUDA tests, the chunked backward and
# torch.compile, and the SGDS paper's LJ presets do on a GPU.
#   1. the CUDA tests (tests/test_cuda.py: energies equal the CPU's, equal energy-call counts, a GPU
#      run loads on the CPU);
#   2. experiments/chunk_speed.py: seconds and memory per iteration of the paper's LJ learners against
#      grad_chunk_steps (CHUNKS, default "25") and torch.compile of the drift (COMPILE_MODES, default
#      "none default");
#   3. the SGDS paper presets on CUDA, side by side, with the fastest setting of step 2:
#      LJ-55 (45K calls) and LJ-13 (370K calls), each stopped after SECONDS of training if the
#      budget is not spent by then (run directories come back as tarballs: evaluate them anywhere).
# Usage, from the repository root of a machine with a GPU and the package's dependencies:
#   OUT=dir bash experiments/gpu_check.sh [SECONDS]
#   OUT=dir NO_PRESETS=1 bash experiments/gpu_check.sh                            # steps 1 and 2
#   OUT=dir ONLY_PRESETS=1 M13=default bash experiments/gpu_check.sh [SECONDS]   # step 3 alone
#   bash experiments/gpu_check.sh --help                                          # this text
# Optional: .whl/ (wheels of missing packages, e.g. POT) and .devdata/ (reference samples, used as
# $DIFFSAMPLER_DATA). Writes env.txt, pytest_cuda.txt, chunk_speed.{json,md}, lj13.tgz and lj55.tgz
# under $OUT.
set -u
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0; fi
OUT=${OUT:-experiments/out/gpu_check}
SECONDS_TRAIN=${1:-200}
DEVICE=${DEVICE:-cuda}   # DEVICE=cpu: a dry run of this script on a machine without a GPU
mkdir -p "$OUT"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-}
[ -d .devdata ] && export DIFFSAMPLER_DATA=$PWD/.devdata
export PYTHONUNBUFFERED=1
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv;
  python3 -c "import sys, torch, ot; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name(), 'POT', ot.__version__)"; } \
  2>&1 | tee "$OUT/env.txt"

if [ -z "${ONLY_PRESETS:-}" ]; then   # ONLY_PRESETS=1: step 3 alone (C13 C55 M13 M55 from the environment)
echo "== CUDA tests"
t0=$(date +%s)
timeout "${PYTEST_SECONDS:-120}" python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py > "$OUT/pytest_cuda.txt" 2>&1
echo "pytest rc=$? in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/pytest_cuda.txt"
tail -5 "$OUT/pytest_cuda.txt"

echo "== seconds and memory per iteration against grad_chunk_steps (experiments/chunk_speed.py)"
timeout "${CHUNK_SECONDS:-150}" python3 experiments/chunk_speed.py --device "$DEVICE" --targets lj13 lj55 \
  --chunks ${CHUNKS:-25} --compile ${COMPILE_MODES:-none default} --iterations 3 --warmup 2 \
  --threads 8 --out "$OUT/chunk_speed" 2>&1 | grep -v Warning | tail -12
fastest() {  # key, target, fallback -> the fastest measured setting of that key
  python3 -c "import json,sys; print(json.load(open('$OUT/chunk_speed.json'))['$1'].get('$2', '$3'))" 2>/dev/null || echo "$3"
}
C13=$(fastest fastest_chunk lj13 25); C55=$(fastest fastest_chunk lj55 25)
M13=$(fastest fastest_compile lj13 default); M55=$(fastest fastest_compile lj55 default)
fi
[ -n "${NO_PRESETS:-}" ] && exit 0   # NO_PRESETS=1: steps 1 and 2 only
C13=${C13:-25}; C55=${C55:-25}; M13=${M13:-default}; M55=${M55:-default}   # the presets' own values

echo "== SGDS paper presets on $DEVICE, ${SECONDS_TRAIN} s of training each, side by side"
echo "   (grad_chunk_steps $C13 / $C55, compile $M13 / $M55)"
run_preset() {  # name, extra keys...
  local name=$1; shift
  local dir=/tmp/runs/$name
  rm -rf "$dir"; mkdir -p /tmp/runs
  local t=$(date +%s)
  timeout $(( SECONDS_TRAIN + ${REPORT_SECONDS:-200} )) python3 -m diffsampler train "$name" --config "experiments/configs/${name}_sgds_paper.json" \
    device="$DEVICE" threads=4 "$@" --out "$dir" --max-seconds "$SECONDS_TRAIN" -q > "/tmp/runs/$name.log" 2>&1
  echo "rc=$? wall=$(( $(date +%s) - t )) s" >> "/tmp/runs/$name.log"
  cp "/tmp/runs/$name.log" "$dir/" 2>/dev/null
  tar -C /tmp/runs -czf "$OUT/$name.tgz" "$name"
}
run_preset lj55 grad_chunk_steps="$C55" compile="$M55" &
run_preset lj13 grad_chunk_steps="$C13" compile="$M13" &
wait
for n in lj55 lj13; do echo "-- $n"; tail -25 "/tmp/runs/$n.log"; done
