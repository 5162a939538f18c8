"""Benchmark: jitted hand-derived CNN gradients vs jax.grad of the same loss, side by side.

    python experiments/bench_cnn_grads.py [--repeats 30] [--out experiments/results/cnn_grad_benchmark.md]

For each network, both gradient functions are compiled, warmed up, then timed in
interleaved rounds (manual, autodiff, manual, ...) in this one process; the table reports
medians and the ratio manual / autodiff (< 1: the hand-derived backward pass is faster).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp

import jaxnet
from jaxnet.layers import Conv2D, Dense, Flatten, MaxPool2D
from jaxnet.presets import TRAIN_PRESETS


def networks():
    digits = TRAIN_PRESETS["cnn"].build((8, 8, 1), 10)
    mnist_like = jaxnet.sequential(
        (28, 28, 1),
        [Conv2D(32, 3, activation="relu"), Conv2D(64, 3, activation="relu"), MaxPool2D(2), Flatten(), Dense(10)],
    )
    return [
        ("digits CNN 8x8x1 (preset cnn)", digits, 256),
        ("28x28x1 CNN conv32-conv64-maxpool-dense10", mnist_like, 128),
    ]


def _time(fn, *args):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def bench(net, batch, repeats, seed=0):
    k_p, k_x, k_y = jax.random.split(jax.random.key(seed), 3)
    params = jaxnet.init_params(k_p, net, jnp.float32)
    x = jax.random.normal(k_x, (batch, *net.input_shape), jnp.float32)
    y = jax.random.randint(k_y, (batch,), 0, net.output_shape[0])
    manual = jax.jit(jaxnet.manual_grads)
    autodiff = jax.jit(jax.grad(jaxnet.loss))
    compile_s = {"manual": _time(manual, params, net, x, y), "autodiff": _time(autodiff, params, net, x, y)}
    for _ in range(3):  # warm-up
        _time(manual, params, net, x, y), _time(autodiff, params, net, x, y)
    times = {"manual": [], "autodiff": []}
    for _ in range(repeats):  # interleaved, so drifts in machine load hit both alike
        times["manual"].append(_time(manual, params, net, x, y))
        times["autodiff"].append(_time(autodiff, params, net, x, y))
    med = {k: statistics.median(v) for k, v in times.items()}
    return med, compile_s


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "cnn_grad_benchmark.md"))
    args = parser.parse_args()
    device = jax.devices()[0]
    rows = []
    for name, net, batch in networks():
        med, comp = bench(net, batch, args.repeats)
        rows.append(
            (
                name,
                batch,
                med["manual"] * 1e3,
                med["autodiff"] * 1e3,
                med["manual"] / med["autodiff"],
                comp["manual"],
                comp["autodiff"],
            )
        )
        print(
            f"{name}, batch {batch}: manual {med['manual'] * 1e3:.2f} ms, jax.grad {med['autodiff'] * 1e3:.2f} ms, "
            f"ratio {med['manual'] / med['autodiff']:.2f}"
        )
    lines = [
        "# Hand-derived CNN gradients vs jax.grad (jitted, float32)",
        "",
        f"Measured {datetime.date.today().isoformat()} on {device.platform} "
        f"({cpu_name()}, {os.cpu_count()} cores visible), "
        f"jax {jax.__version__}, by `python experiments/bench_cnn_grads.py --repeats {args.repeats}`: "
        "medians of interleaved runs after warm-up, one process.",
        "",
        "| network | batch | manual_grads (ms) | jax.grad (ms) | manual / jax.grad "
        "| compile manual (s) | compile jax.grad (s) |",
        "|---|---|---|---|---|---|---|",
        *(f"| {r[0]} | {r[1]} | {r[2]:.2f} | {r[3]:.2f} | {r[4]:.2f} | {r[5]:.2f} | {r[6]:.2f} |" for r in rows),
        "",
    ]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
