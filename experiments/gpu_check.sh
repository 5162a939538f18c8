#!/usr/bin/env bash
# The GPU checks, as one prepared run on a machine with one GPU and JAX for CUDA installed
# (the project's `cuda` extra, or an image that has it); results under OUTDIR:
#
#   bash experiments/gpu_check.sh OUTDIR
#
# 1. the sweep benchmark (issue 8) without the whole-study measure: OUTDIR/sweep_benchmark_gpu.md;
# 2. where the float64 references run (issue 15): a stride-2 conv's manual_grads against jax.grad
#    on the CPU device (the default reference) and on the GPU itself: OUTDIR/reference_backend.txt;
# 3. the default (non-slow) test selection on the GPU, float64 checks included: OUTDIR/tests.log,
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
timeout "${REFERENCE_S:-120}" python3 - <<'EOF' 2>&1 | tee "$out/reference_backend.txt"
import jax
jax.config.update("jax_enable_x64", True)
import jaxnet
from jaxnet import verify
from jaxnet.layers import Conv2D, Dense, Flatten

net = jaxnet.sequential((5, 5, 3), [Conv2D(2, 3, 2, "SAME", "tanh"), Flatten(), Dense(3)], l2=0.01)
params, x, y = verify.random_problem(net, seed=0, n=2)
mine = jaxnet.manual_grads(params, net, x, y)
here = verify.device_name(verify.working_device(params))
for where in ("default", "same"):
    ref = verify.reference_grads(jaxnet.loss, params, net, x, y, device=where)
    worst = max(e.max_rel for e in verify.leaf_errors(mine, ref))
    print(f"stride-2 conv, float64: manual_grads on {here} vs jax.grad on "
          f"{verify.device_name(verify.working_device(ref))}: max rel {worst:.2e}")
report = jaxnet.check_grads(lambda p, x, y: jaxnet.loss(p, net, x, y), lambda p, x, y: jaxnet.manual_grads(p, net, x, y),
                            params, x, y, net=net)
print(f"check_grads: {'ok' if report.ok else 'FAIL'}; {report.notes[-1]}")
EOF
echo "reference exit: ${PIPESTATUS[0]}"
timeout "${TESTS_S:-180}" python3 -m pytest -q -p no:cacheprovider -n "${WORKERS:-8}" -rfE --tb=short \
    --junitxml "$out/junit.xml" 2>&1 | tee "$out/tests.log" | grep -v "^\.*\s*\[" | tail -60
echo "tests exit: ${PIPESTATUS[0]}"
