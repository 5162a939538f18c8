#!/usr/bin/env bash
# The GPU checks, as one prepared run on a machine with one GPU and JAX for CUDA installed
# (the project's `cuda` extra, or an image that has it); results under OUTDIR:
#
#   bash experiments/gpu_check.sh OUTDIR
#
# 1. the sweep benchmark (issue 8) without the whole-study measure: OUTDIR/sweep_benchmark_gpu.md;
# 2. the default (non-slow) test selection on the GPU, float64 checks included: OUTDIR/tests.log,
#    OUTDIR/junit.xml.
# Each step has its own time limit so that one slow step cannot take the others' time.
set -u
out=${1:?usage: bash experiments/gpu_check.sh OUTDIR}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv 2>&1 | tee "$out/env.txt"
python3 -m pip list 2>/dev/null | grep -iE "^(jax\S*|nvidia-\S*|optax|chex|numpy) " | tee -a "$out/env.txt"
python3 -c "import sys, jax, optax, chex, numpy; print(sys.version.split()[0], 'jax', jax.__version__, 'optax', optax.__version__, 'chex', chex.__version__, 'numpy', numpy.__version__, jax.devices())" 2>&1 | tee -a "$out/env.txt"
timeout "${BENCH_S:-240}" python3 experiments/bench_sweep.py --no-study --cpu-devices 1 \
    --out "$out/sweep_benchmark_gpu.md" 2>&1 | tee "$out/bench.log"
echo "bench exit: ${PIPESTATUS[0]}"
timeout "${TESTS_S:-180}" python3 -m pytest -q -p no:cacheprovider -n "${WORKERS:-8}" -rfE --tb=short \
    --junitxml "$out/junit.xml" 2>&1 | tee "$out/tests.log" | grep -v "^\.*\s*\[" | tail -60
echo "tests exit: ${PIPESTATUS[0]}"
