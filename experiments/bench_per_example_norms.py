"""Benchmark: per-example gradient norms (what DP-SGD clips) without per-example gradients.

    python experiments/bench_per_example_norms.py [--repeats 20] [--out experiments/results/per_example_norms.md]

Three jitted ways to get ``||g_i||`` for every example of a batch, float32, side by side in
this one process (compiled and warmed up first, then timed in interleaved rounds; medians):

- ``closed form``: :func:`jaxnet.per_example_grad_norms` (dense layers ``||a_i||² ||δ_i||² + ||δ_i||²``,
  conv layers from patch/δ products, nothing per-example stored beyond one layer's need);
- ``vmap(jax.grad)``: every per-example gradient by autodiff, then the norms;
- ``vmap(manual)``: every per-example gradient from :func:`jaxnet.per_example_grads`, then the norms.

Memory is XLA's own buffer assignment for each compiled function (temporaries + outputs,
``compiled.memory_analysis()``), not a sampled peak. The norms of the three agree (checked
here before timing).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxnet
from jaxnet.layers import Conv2D, Dense, Flatten, MaxPool2D
from jaxnet.presets import TRAIN_PRESETS


def networks():
    return [
        ("MLP 784-256-256-10 relu", jaxnet.mlp([784, 256, 256, 10], "relu"), 256),
        ("digits CNN 8x8x1 (preset cnn)", TRAIN_PRESETS["cnn"].build((8, 8, 1), 10), 256),
        (
            "28x28x1 CNN conv32-conv64-maxpool-dense10",
            jaxnet.sequential(
                (28, 28, 1),
                [
                    Conv2D(32, 3, activation="relu"),
                    Conv2D(64, 3, activation="relu"),
                    MaxPool2D(2),
                    Flatten(),
                    Dense(10),
                ],
            ),
            64,
        ),
    ]


def _norms_of(grads):
    n = jax.tree.leaves(grads)[0].shape[0]
    return jnp.sqrt(sum(jnp.sum(g.reshape(n, -1) ** 2, axis=1) for g in jax.tree.leaves(grads)))


def methods(net):
    single = dataclasses.replace(net, reduction="sum", l2=0.0)
    return {
        "closed form": jax.jit(lambda p, x, y: jaxnet.per_example_grad_norms(p, net, x, y)),
        "vmap(jax.grad)": jax.jit(
            lambda p, x, y: _norms_of(jax.vmap(jax.grad(jaxnet.loss), (None, None, 0, 0))(p, single, x, y))
        ),
        "vmap(manual)": jax.jit(lambda p, x, y: _norms_of(jaxnet.per_example_grads(p, net, x, y))),
    }


def _memory(fn, *args):
    stats = fn.lower(*args).compile().memory_analysis()
    return (stats.temp_size_in_bytes + stats.output_size_in_bytes) if stats is not None else float("nan")


def _time(fn, *args):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def bench(repeats):
    rows = []
    for name, net, batch in networks():
        rng = np.random.default_rng(0)
        params = jaxnet.init_params(jax.random.key(0), net, jnp.float32)
        params = [  # nonzero biases
            {k: v + 0.1 * jnp.asarray(rng.normal(size=v.shape), v.dtype) if v.ndim == 1 else v for k, v in p.items()}
            for p in params
        ]
        x = jnp.asarray(rng.normal(size=(batch, *net.input_shape)), jnp.float32)
        y = jnp.asarray(rng.integers(0, net.output_shape[0], size=batch))
        fns = methods(net)
        values = {k: np.asarray(f(params, x, y)) for k, f in fns.items()}  # compile + warm up
        for k, v in values.items():
            np.testing.assert_allclose(v, values["vmap(jax.grad)"], rtol=1e-3, err_msg=f"{name}: {k}")
        times = {k: [] for k in fns}
        for _ in range(repeats):
            for k, f in fns.items():
                times[k].append(_time(f, params, x, y))
        median = {k: statistics.median(v) for k, v in times.items()}
        memory = {k: _memory(f, params, x, y) for k, f in fns.items()}
        rows.append((name, batch, median, memory))
        print(
            name,
            {k: f"{1e3 * v:.3f} ms" for k, v in median.items()},
            {k: f"{v / 2**20:.1f} MiB" for k, v in memory.items()},
        )
    return rows


def markdown(rows, repeats) -> str:
    device = jax.devices()[0]
    lines = [
        "# Per-example gradient norms without per-example gradients",
        "",
        f"`python experiments/bench_per_example_norms.py --repeats {repeats}` on {datetime.date.today()}: "
        f"{device.platform} ({device.device_kind}), {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores, jax {jax.__version__}, float32, medians of {repeats} interleaved rounds after "
        "warm-up. Memory: XLA's buffer assignment (temporaries + outputs) of each compiled function.",
        "",
        "| network | batch | closed form ms | vmap(jax.grad) ms | vmap(manual) ms | time closed / vmap(jax.grad) "
        "| closed form MiB | vmap(jax.grad) MiB | vmap(manual) MiB | memory closed / vmap(jax.grad) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, batch, t, m in rows:
        lines.append(
            f"| {name} | {batch} | {1e3 * t['closed form']:.3f} | "
            f"{1e3 * t['vmap(jax.grad)']:.3f} | {1e3 * t['vmap(manual)']:.3f} "
            f"| {t['closed form'] / t['vmap(jax.grad)']:.2f} | "
            f"{m['closed form'] / 2**20:.2f} | {m['vmap(jax.grad)'] / 2**20:.2f} "
            f"| {m['vmap(manual)'] / 2**20:.2f} | {m['closed form'] / m['vmap(jax.grad)']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "per_example_norms.md"))
    args = parser.parse_args(argv)
    text = markdown(bench(args.repeats), args.repeats)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
