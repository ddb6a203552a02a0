#!/usr/bin/env bash
# The GPU figures of docs/BENCHMARKS.md ("Diffusion path on a GPU") in one short run, so a lent
# machine's minutes go to measuring. About 9 minutes on one H100; each part has its own time limit
# and the most wanted figures come first. Usage, from the repository root:
#
#     OUT=gpu-figures bash scripts/gpu_figures.sh
#
# Needs CUDA and the project's Python dependencies (torch, diffusers, einops; aiortc and av for
# part 4). Weights are random (LatentSync-size stage2 / stage2_512 UNets built from
# configs/unet/*.yaml): speed does not depend on their values. Knobs: PY (python), COMPILE=1 (also
# time torch.compile, several minutes more), SKIP_REALTIME=1.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-gpu-figures}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

"$PY" - <<'PYEOF' || exit 2
import importlib, sys, torch
missing = [m for m in ("diffusers", "einops", "yaml", "numpy") if importlib.util.find_spec(m) is None]
if missing or not torch.cuda.is_available():
    sys.exit(f"gpu_figures.sh needs CUDA (available: {torch.cuda.is_available()}) and {missing or 'nothing more'}")
print("device:", torch.cuda.get_device_name(), "torch", torch.__version__)
PYEOF
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$OUT/device.csv" 2>&1 || true

run() {  # run SECONDS NAME CMD...: one part, its output kept in $OUT/NAME.log
    local limit=$1 name=$2; shift 2
    echo "== $name (limit ${limit}s): $*"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log" | grep -v -e Warning -e warn
    echo "== $name: exit ${PIPESTATUS[0]}"
}

# 1. Whole render path, 256 px: frames/s at 1, 2, 4 steps (distilled: guidance 1, TAESD decode),
#    sessions at 25 fps, first call of a new session.
run 150 render256 "$PY" scripts/gpu_figures.py --configs stage2:256 --json "$OUT/render256.json"
# 2. UNet step alone (fp16; batch 1 = distilled student, 2 = CFG), both sizes.
run 90 unet "$PY" -m realtime.cli bench unet --devices cuda --cuda-batch 1,2 --repeats 10 --json "$OUT/unet.json"
# 3. Whole render path, 512 px, and LatentSync's own sampling at 256 px (CFG 1.5, sd-vae-ft-mse).
run 150 render512 "$PY" scripts/gpu_figures.py --configs stage2_512:512 --sessions 1,4,8 --repeats 3 \
    --json "$OUT/render512.json"
run 90 render256_cfg "$PY" scripts/gpu_figures.py --configs stage2:256 --steps 4 --guidance 1.5 \
    --vae sd-vae-ft-mse --sessions 1,4,8 --repeats 3 --json "$OUT/render256_cfg.json"
if [ "${COMPILE:-0}" = 1 ]; then
    run 400 render256_compiled "$PY" scripts/gpu_figures.py --configs stage2:256 --steps 1 --compile \
        --channels-last --json "$OUT/render256_compiled.json"
fi
# 4. The server end to end (syncvid serve, WebRTC peers on loopback) with a random stage2 UNet at a
#    distilled student's settings: engine latency and sessions per GPU at 25 fps.
if [ "${SKIP_REALTIME:-0}" != 1 ]; then
    cat > "$OUT/server_1step.yaml" <<'YAML'
max_sessions: 16
diffusion: {steps: 1, guidance: 1.0, low_quality_steps: 1, device: cuda}
YAML
    run 240 realtime "$PY" -m realtime.cli bench realtime --random-weights stage2 \
        --server-config "$OUT/server_1step.yaml" --modes full --duration 15 --skip-echo \
        --max-sessions 12 --capacity-seconds 8 --peer-nice 19 --json "$OUT/realtime.json"
fi
echo "results in $OUT/"
