"""Benchmark: training steps per second, measured side by side in one process.

    python experiments/benchmark.py [--repeats 5] [--out experiments/results/benchmark.md]

For each network (MLPs with ReLU + softmax cross-entropy, and the two CNNs of the CNN issue), float32,
plain SGD (lr 0.01), the same step in every variant:

- ``manual`` / ``jax.grad``: jaxnet's jitted step (``jaxnet.train.make_step``) called from Python,
  with hand-derived gradients or with ``jax.value_and_grad`` of the same loss;
- ``epoch manual`` / ``epoch jax.grad``: ``jaxnet.train.make_epoch``, the training path of ``fit``:
  one jitted call per epoch (shuffle, gather, ``lax.scan`` over its steps; a Python loop of jitted
  steps for the CNNs on the CPU); the 2-100-3 epoch is one full-batch step, the others K steps
  over the batch tiled K times;
- ``scan manual`` / ``scan jax.grad``: K steps on one device-resident batch in one compiled
  ``lax.scan`` (no shuffle): what a loop over many epochs in one call would reach;
- ``NumPy``: hand-written backprop in NumPy, float32 (what note 000 says it will code; MLPs only);
- ``PyTorch``: eager autograd (``loss.backward()``, ``torch.optim.SGD``), when torch is installed
  (``pip install -e ".[bench]"``); skipped with a message otherwise.

Every timing is the median over ``--repeats`` rounds after a warm-up, the variants interleaved
within each round. GFLOP/s counts ≈ 6 × batch × multiply-adds per example per step (forward 2,
backward 4), set against the float32 matmul GFLOP/s measured in this process (jnp, 2048³).
Compile time: ``lower().compile()`` of the jitted step. Memory: XLA's buffer assignment of the
compiled step from Python (arguments + temporaries + outputs − donated inputs reused as outputs),
not a sampled peak.
"""

from __future__ import annotations

import argparse
import datetime
import os

# PyTorch's OpenMP threads otherwise spin for a while after each call, stealing the cores from
# whatever runs next in the same round (measured: the variant timed right after PyTorch lost ~30%).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxnet
from jaxnet import data
from jaxnet.layers import Conv2D, Dense, Flatten, MaxPool2D
from jaxnet.presets import TRAIN_PRESETS
from jaxnet.train import make_epoch, make_step, sgd, value_and_grads_fn

LR = 0.01


def configs():
    """(name, network, batch, steps per scanned call, steps per timed Python block)."""
    return [
        ("MLP 2-100-3, N = 300 full batch", jaxnet.mlp([2, 100, 3], "relu"), 300, 200, 200),
        ("MLP 784-256-256-10, batch 128", jaxnet.mlp([784, 256, 256, 10], "relu"), 128, 50, 50),
        ("MLP 784-2048-2048-10, batch 512", jaxnet.mlp([784, 2048, 2048, 10], "relu"), 512, 4, 4),
        ("CNN digits 8x8x1 (preset cnn), batch 256", TRAIN_PRESETS["cnn"].build((8, 8, 1), 10), 256, 20, 20),
        ("CNN 28x28x1 conv32-conv64-maxpool-dense10, batch 128", jaxnet.sequential(
            (28, 28, 1), [Conv2D(32, 3, activation="relu"), Conv2D(64, 3, activation="relu"), MaxPool2D(2), Flatten(), Dense(10)]),
         128, 2, 2),
    ]


def multiply_adds(net) -> int:
    """Multiply-adds of one example's forward pass through the Dense and Conv2D layers."""
    total = 0
    for layer, shape in zip(net.layers, net.layer_input_shapes):
        if isinstance(layer, Dense):
            total += shape[-1] * layer.features
        elif isinstance(layer, Conv2D):
            ho, wo, c_out = layer.output_shape(shape)
            total += ho * wo * layer.kernel_size[0] * layer.kernel_size[1] * shape[-1] * c_out
    return total


def _data(net, batch, name, rng):
    if name.startswith("MLP 2-100-3"):
        x, y = data.spiral(n_per_class=100, classes=3, seed=0)
        return np.asarray(x, np.float32), np.asarray(y)
    x = rng.normal(size=(batch, *net.input_shape)).astype(np.float32)
    return x, rng.integers(0, net.output_shape[0], size=batch)


def _scanned(net, grads, k):
    """K SGD steps on one device-resident batch in one lax.scan: (params, opt_state, x, y) -> (params, opt_state, losses)."""
    vg = value_and_grads_fn(grads)
    opt = sgd(LR)

    def run(params, opt_state, x, y):
        def body(carry, _):
            params, opt_state = carry
            value, g = vg(params, net, x, y)
            updates, opt_state = opt.update(g, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value

        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), None, length=k)
        return params, opt_state, losses

    return jax.jit(run, donate_argnums=(0, 1))


# --- NumPy: hand-written backprop for ReLU MLPs with softmax cross-entropy --------------------------


def numpy_step(params, x, y):
    """One SGD step in NumPy (float32): forward, δ_L = (p − y)/N, δ_{l−1} = δ_l W_lᵀ ∘ 1[z > 0]."""
    acts, zs = [x], []
    for i, p in enumerate(params):
        z = acts[-1] @ p["W"] + p["b"]  # [N, n_in] @ [n_in, n_out]
        zs.append(z)
        acts.append(np.maximum(z, 0) if i < len(params) - 1 else z)
    f = acts[-1]
    e = np.exp(f - f.max(axis=1, keepdims=True))
    prob = e / e.sum(axis=1, keepdims=True)
    delta = prob
    delta[np.arange(len(y)), y] -= 1
    delta /= len(y)  # δ_L: [N, K]
    for i in reversed(range(len(params))):
        dW = acts[i].T @ delta  # [n_in, N] @ [N, n_out]
        db = delta.sum(axis=0)
        if i:
            delta = (delta @ params[i]["W"].T) * (zs[i - 1] > 0)
        params[i]["W"] -= LR * dW
        params[i]["b"] -= LR * db
    return params


# --- PyTorch eager (optional) -------------------------------------------------------------------------


def torch_model(net):
    import torch

    modules = []
    for layer, shape in zip(net.layers, net.layer_input_shapes):
        if isinstance(layer, Dense):
            modules.append(torch.nn.Linear(shape[-1], layer.features))
        elif isinstance(layer, Conv2D):
            modules.append(torch.nn.Conv2d(shape[-1], layer.features, layer.kernel_size,
                                           padding="same" if layer.padding == "SAME" else 0))
        elif isinstance(layer, MaxPool2D):
            modules.append(torch.nn.MaxPool2d(layer.window, layer.strides))
        elif isinstance(layer, Flatten):
            modules.append(torch.nn.Flatten())
        if getattr(layer, "activation", "identity") == "relu":
            modules.append(torch.nn.ReLU())
    return torch.nn.Sequential(*modules)


def torch_runner(net, x, y):
    import torch

    torch.set_num_threads(os.cpu_count())
    model = torch_model(net)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2) if x.ndim == 4 else x))  # NHWC -> NCHW
    yt = torch.from_numpy(np.asarray(y, np.int64))
    lossf = torch.nn.CrossEntropyLoss()

    def steps(k):
        for _ in range(k):
            opt.zero_grad(set_to_none=True)
            loss = lossf(model(xt), yt)
            loss.backward()
            opt.step()
        return float(loss)

    return steps


def matmul_gflops(repeats, sizes=(512, 1024, 2048)):
    """Float32 jnp matmul GFLOP/s of n×n @ n×n for each n (median of repeats): {n: GFLOP/s}."""
    rates = {}
    mm = jax.jit(lambda a, b: a @ b)
    for n in sizes:
        a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), jnp.float32)
        b = jnp.asarray(np.random.default_rng(1).normal(size=(n, n)), jnp.float32)
        jax.block_until_ready(mm(a, b))
        times = []
        for _ in range(max(repeats, 5)):
            start = time.perf_counter()
            jax.block_until_ready(mm(a, b))
            times.append(time.perf_counter() - start)
        rates[n] = 2 * n**3 / statistics.median(times) / 1e9
    return rates


def _memory(compiled):
    stats = compiled.memory_analysis()
    if stats is None:
        return float("nan")
    return (stats.argument_size_in_bytes + stats.temp_size_in_bytes + stats.output_size_in_bytes
            - stats.alias_size_in_bytes) / 2**20  # donated inputs are reused for outputs: counted once


def bench(repeats, quick=False):
    rng = np.random.default_rng(0)
    try:
        import torch  # noqa: F401

        has_torch = True
    except ImportError:
        has_torch = False
        print("PyTorch is not installed (pip install -e '.[bench]'): its column is skipped")
    matmul = matmul_gflops(repeats)
    print("float32 matmul GFLOP/s:", {n: round(r, 1) for n, r in matmul.items()})
    rows = []
    for name, net, batch, k, block in configs()[:1] if quick else configs():
        x, y = _data(net, batch, name, rng)
        params0 = jaxnet.init_params(jax.random.key(0), net, jnp.float32)
        xd, yd = jnp.asarray(x), jnp.asarray(y)
        runners, compile_s, memory, xla_flops = {}, {}, {}, {}
        for grads, label in (("manual", "manual"), ("autodiff", "jax.grad")):
            step = make_step(net, sgd(LR), grads)
            params = jax.tree.map(jnp.array, params0)
            state = sgd(LR).init(params)
            start = time.perf_counter()
            compiled = step.lower(params, state, xd, yd).compile()
            compile_s[label] = time.perf_counter() - start
            memory[label] = _memory(compiled)
            cost = compiled.cost_analysis()
            xla_flops[label] = (cost[0] if isinstance(cost, list) else cost).get("flops", float("nan"))
            holder = {"p": params, "s": state}

            def python_loop(n, step=step, holder=holder):
                for _ in range(n):
                    holder["p"], holder["s"], value = step(holder["p"], holder["s"], xd, yd)
                return jax.block_until_ready(value)

            scan = _scanned(net, grads, k)
            sholder = {"p": jax.tree.map(jnp.array, params0), "s": sgd(LR).init(params0)}

            def scanned(n, scan=scan, sholder=sholder):
                for _ in range(n // k):
                    sholder["p"], sholder["s"], losses = scan(sholder["p"], sholder["s"], xd, yd)
                return jax.block_until_ready(losses)

            n_epoch = len(x) if batch == len(x) else batch * k  # full batch: an epoch is one step
            xe = xd if n_epoch == len(x) else jnp.tile(xd, (k,) + (1,) * (xd.ndim - 1))
            ye = yd if n_epoch == len(x) else jnp.tile(yd, k)
            epoch_fn = make_epoch(net, sgd(LR), batch, n_epoch, grads)
            eholder = {"p": jax.tree.map(jnp.array, params0), "s": sgd(LR).init(params0), "step": 0, "e": 0}
            steps_per_epoch = n_epoch // batch

            def epochs(n, epoch_fn=epoch_fn, eholder=eholder, xe=xe, ye=ye, spe=steps_per_epoch):
                for _ in range(max(1, n // spe)):
                    eholder["e"] += 1
                    eholder["p"], eholder["s"], eholder["step"], losses, _ = epoch_fn(
                        eholder["p"], eholder["s"], eholder["step"], jax.random.key(eholder["e"]), xe, ye)
                return jax.block_until_ready(losses)

            runners[label] = python_loop
            runners[f"epoch {label}"] = epochs
            runners[f"scan {label}"] = scanned
        if len(net.layers) and all(isinstance(layer, Dense) for layer in net.layers):
            np_params = [{"W": np.array(p["W"]), "b": np.array(p["b"])} for p in params0]
            runners["NumPy"] = lambda n, p=np_params: [numpy_step(p, x, y) for _ in range(n)]
        if has_torch:
            torch_steps = torch_runner(net, x, y)
            runners["PyTorch"] = torch_steps
        for run in runners.values():  # warm-up (compiles the scans)
            run(block if block >= k else k)
        times = {label: [] for label in runners}
        order = list(runners)
        for r in range(repeats):
            for label in order[r % len(order):] + order[: r % len(order)]:  # rotated: no variant always follows the same one
                run = runners[label]
                start = time.perf_counter()
                run(block)
                times[label].append((time.perf_counter() - start) / block)
        per_step = {label: statistics.median(v) for label, v in times.items()}
        flops = 6 * batch * multiply_adds(net)
        rows.append({"name": name, "batch": batch, "k": k, "per_step": per_step, "compile": compile_s, "memory": memory,
                     "xla_flops": xla_flops,
                     "gflops": {label: flops / t / 1e9 for label, t in per_step.items()}})
        print(name, {label: f"{1 / t:,.0f} steps/s" for label, t in per_step.items()})
    return rows, matmul, has_torch


TARGETS = [  # (what, network prefix, measure(row, peak) -> value, test(value) -> met, format)
    ("manual ≤ 1.0× the time of jax.grad, step from Python", None, lambda r, peak: r["per_step"]["manual"] / r["per_step"]["jax.grad"],
     lambda v: v <= 1.0, "{:.2f}×"),
    ("manual ≤ 1.0× the time of jax.grad, scanned epoch", None, lambda r, peak: r["per_step"]["epoch manual"] / r["per_step"]["epoch jax.grad"],
     lambda v: v <= 1.0, "{:.2f}×"),
    ("scanned epoch ≥ 5× PyTorch eager steps/s", "MLP 2-100-3", lambda r, peak: r["per_step"]["PyTorch"] / r["per_step"]["epoch manual"],
     lambda v: v >= 5, "{:.2f}×"),
    ("K steps in one scan ≥ 5× PyTorch eager steps/s", "MLP 2-100-3", lambda r, peak: r["per_step"]["PyTorch"] / r["per_step"]["scan manual"],
     lambda v: v >= 5, "{:.2f}×"),
    ("scanned epoch ≥ 2× PyTorch eager steps/s", "MLP 784-256-256-10", lambda r, peak: r["per_step"]["PyTorch"] / r["per_step"]["epoch manual"],
     lambda v: v >= 2, "{:.2f}×"),
    ("≥ 90% of the measured matmul GFLOP/s (epoch manual)", "MLP 784-2048-2048-10", lambda r, peak: r["gflops"]["epoch manual"] / peak,
     lambda v: v >= 0.9, "{:.0%}"),
]


def targets(rows, peak):
    """[(target, network, measured, met)] for every target whose inputs were measured."""
    out = []
    for what, prefix, measure, test, fmt in TARGETS:
        for row in rows:
            if prefix is not None and not row["name"].startswith(prefix):
                continue
            try:
                value = measure(row, peak)
            except KeyError:  # PyTorch absent
                continue
            out.append((what, row["name"], fmt.format(value), "met" if test(value) else "MISSED"))
    return out


def markdown(rows, matmul, has_torch, repeats, notes="") -> str:
    peak = max(matmul.values())
    device = jax.devices()[0]
    columns = ["manual", "jax.grad", "epoch manual", "epoch jax.grad", "scan manual", "scan jax.grad", "NumPy"] + (
        ["PyTorch"] if has_torch else [])

    def rate(row, c):
        if c not in row["per_step"]:
            return "n/a"
        r = 1 / row["per_step"][c]
        return f"{r:,.0f}" if r >= 10 else f"{r:.2f}"
    lines = [
        "# Training-step benchmark",
        "",
        f"`python experiments/benchmark.py --repeats {repeats}` on {datetime.date.today()}: {device.platform} "
        f"({device.device_kind}), {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"jax {jax.__version__}" + (f", torch {__import__('torch').__version__}" if has_torch else ", PyTorch not installed")
        + f". float32, SGD lr {LR}; medians of {repeats} interleaved rounds after warm-up. Measured float32 matmul "
        "(jnp, n×n @ n×n): " + ", ".join(f"{n}: {r:.1f}" for n, r in matmul.items())
        + f" GFLOP/s; the best, {peak:.1f} GFLOP/s, is the reference below.",
        "",
        "## Steps per second",
        "",
        "| network | " + " | ".join(columns) + " | manual / jax.grad time | epoch manual / jax.grad time "
        "| epoch manual / PyTorch steps/s | scan manual / PyTorch steps/s |",
        "|---|" + "---|" * (len(columns) + 4),
    ]
    for row in rows:
        t = row["per_step"]
        vs = lambda c: f"{t['PyTorch'] / t[c]:.2f}×" if "PyTorch" in t else "n/a"
        lines.append(f"| {row['name']} | " + " | ".join(rate(row, c) for c in columns)
                     + f" | {t['manual'] / t['jax.grad']:.2f} | {t['epoch manual'] / t['epoch jax.grad']:.2f} "
                     f"| {vs('epoch manual')} | {vs('scan manual')} |")
    lines += [
        "",
        "## Arithmetic rate, compile time, memory",
        "",
        "| network | steps per epoch / scan | GFLOP/step | GFLOP/s: manual, jax.grad, epoch manual, scan manual, NumPy, PyTorch "
        "| scan manual % of matmul | XLA flops manual / jax.grad | compile manual s | compile jax.grad s "
        "| XLA memory manual MiB | XLA memory jax.grad MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        g = row["gflops"]
        per_step_flops = g["manual"] * row["per_step"]["manual"]
        rates = ", ".join(f"{g[c]:.1f}" if c in g else "n/a" for c in ("manual", "jax.grad", "epoch manual", "scan manual", "NumPy", "PyTorch"))
        lines.append(
            f"| {row['name']} | {row['k']} | {per_step_flops:.3f} | {rates} | {100 * g['scan manual'] / peak:.0f}% "
            f"| {row['xla_flops']['manual'] / row['xla_flops']['jax.grad']:.4f} "
            f"| {row['compile']['manual']:.2f} | {row['compile']['jax.grad']:.2f} "
            f"| {row['memory']['manual']:.1f} | {row['memory']['jax.grad']:.1f} |"
        )
    lines += ["", "## Targets", "", "| target | network | measured | |", "|---|---|---|---|"]
    lines += [f"| {what} | {name} | {value} | {met} |" for what, name, value, met in targets(rows, peak)]
    if notes:
        lines += ["", "## Notes", "", notes.strip()]
    return "\n".join(lines) + "\n"


NOTES_FILE = os.path.join(os.path.dirname(__file__), "benchmark_notes.md")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="the smallest network only (a smoke test)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "benchmark.md"))
    args = parser.parse_args(argv)
    rows, matmul, has_torch = bench(args.repeats, args.quick)
    notes = open(NOTES_FILE).read() if os.path.exists(NOTES_FILE) else ""
    text = markdown(rows, matmul, has_torch, args.repeats, notes)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
