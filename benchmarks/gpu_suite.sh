#!/usr/bin/env bash
# The GPU benchmarks in one run (CUDA check, CAM, preprocessing + whole analysis, model), for a
# CUDA machine with PyTorch installed. Results land in $OUT (or benchmarks/results/).
# CHECK_CKPT / CHECK_IMAGES / CHECK_EXPECTED: the official fixture, by default the copy in
# tests/fixtures/ (preprocess_bench's parity rows read the same folder).
set -u
OUT="${OUT:-benchmarks/results}"; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:-}:$PWD"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
FIXTURE=tests/fixtures/poundnet-official-tiny
CHECK_CKPT="${CHECK_CKPT:-$FIXTURE/last.ckpt}" CHECK_IMAGES="${CHECK_IMAGES:-$FIXTURE/images}"
CHECK_EXPECTED="${CHECK_EXPECTED:-$FIXTURE/expected.json}"
# STEPS: which benchmarks, in this order; each has its own time limit in seconds. The default
# fits a 15-minute GPU lease with its start (about 6 minutes on an H200: check, cam and model
# 140 s together, preprocess 200 s); the compiling steps take minutes each (roundtrip-compile
# had not finished compiling after 250 s), so they are asked for by name:
#   STEPS="cam-compile roundtrip-compile" bash benchmarks/gpu_suite.sh
STEPS="${STEPS:-check cam model preprocess}"
# each step's results reach $OUT as it ends, so a lease that runs out keeps the steps done
run() {
    local limit=$1; shift; echo "=== $*"; timeout "$limit" "$@" 2>&1 | tee -a "$OUT/gpu_suite.log"
    cp -n benchmarks/results/*.json "$OUT"/ 2>/dev/null || true
}
for step in $STEPS; do
    case $step in
    check) run 120 python3 benchmarks/gpu_check.py --ckpt "$CHECK_CKPT" \
               --images "$CHECK_IMAGES" ${CHECK_EXPECTED:+--expected "$CHECK_EXPECTED"} ;;
    preprocess) run 360 python3 benchmarks/preprocess_bench.py --device cuda --n "${N_IMAGES:-1024}" \
               --batch-size 128 --threads "$(nproc)" --model vit-l --profile --out "$OUT" ;;
    # compiling the tensor re-encode can take minutes: a step of its own, so it cannot starve the rest
    roundtrip-compile) run 300 python3 benchmarks/preprocess_bench.py --device cuda --n 512 \
               --batch-size 128 --threads "$(nproc)" --no-analysis --no-parity --compiled-roundtrip \
               --out "$OUT" ;;
    cam) run 180 python3 benchmarks/cam_bench.py --device cuda --size L14 --batch 128 --relevance ;;
    cam-compile) run 300 python3 benchmarks/cam_bench.py --device cuda --size L14 --batch 128 --compile ;;
    model) run 120 python3 benchmarks/model_bench.py --device cuda --size L14 --batch 128 ;;
    *) echo "unknown step $step"; exit 2 ;;
    esac
done
