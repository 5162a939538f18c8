"""Benchmark: a sweep of R replicas in one compiled program against one run, side by side.

    python experiments/bench_sweep.py [--replicas 64] [--repeats 5] [--cpu-devices 2] [--quick]
                                      [--no-study] [--out experiments/results/sweep_benchmark.md]

On a GPU the default output is ``experiments/results/sweep_benchmark_gpu.md``.

Float32, plain SGD, hand-derived gradients; the R replicas are R/4 seeds × 4 learning rates (a
seed sweep over a small grid). Three measures per network, all in this one process:

1. training epochs only: ``jaxnet.train.make_epoch`` of one replica against the sweep's epoch of
   all R (no metrics), on one device and split over ``--cpu-devices`` devices; medians of
   interleaved repeats after warm-up;
2. end to end, steady state: ``jaxnet.train.fit`` of one replica against ``jaxnet.sweep.run`` of
   all R, both with their per-epoch metrics: the median time between consecutive ``on_epoch``
   calls, the first (compiling) epoch left out;
3. a whole study: R configurations × the preset's epochs, wall clock with compilation: R ``fit``
   calls one after another (each compiles its own optimizer's epoch) against one ``sweep.run``
   (``--no-study`` leaves it out: it is the slow part, minutes of compilation on a GPU).

Aggregate model-steps/s = replicas × steps / seconds. ``--cpu-devices N`` sets
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before JAX starts, so that the CPU's
cores are N devices (the single run uses one, as it always does).
"""

from __future__ import annotations

import argparse
import os
import sys


def _set_cpu_devices(argv):
    """Apply --cpu-devices before JAX is imported (XLA reads the flag once)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--cpu-devices", dest="cpu_devices", type=int, default=2)
    known, _ = parser.parse_known_args(argv)
    if known.cpu_devices > 1:
        flag = f"--xla_force_host_platform_device_count={known.cpu_devices}"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()


_set_cpu_devices(sys.argv[1:])

import datetime  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import jaxnet  # noqa: E402
from jaxnet import data, presets, sweep, train  # noqa: E402

SPIRAL_LRS = (0.1, 0.3, 1.0, 3.0)  # around the preset's 1.0
BIG_LRS = (0.001, 0.003, 0.01, 0.03)


def configs(quick):
    """(name, network, x, y, batch size, the study's epochs, learning rates)."""
    preset = presets.TRAIN_PRESETS["000-spiral"]
    x, y = data.spiral(**preset.dataset_kwargs, seed=0)
    net = preset.build(x.shape[1:], 3)  # 2-100-3 relu, L2 1e-3 on weights and biases
    rng = np.random.default_rng(0)
    big = jaxnet.mlp([784, 256, 256, 10], "relu")
    xb, yb = rng.normal(size=(1280, 784)).astype(np.float32), rng.integers(0, 10, size=1280)
    study = 10 if quick else None
    return [
        (
            "2-100-3 relu, spiral N = 300, batch 32 (preset 000-spiral)",
            net,
            x,
            y,
            32,
            study or preset.epochs,
            SPIRAL_LRS,
        ),
        ("2-100-3 relu, spiral N = 300, full batch", net, x, y, 300, study or preset.epochs, SPIRAL_LRS),
        ("784-256-256-10 relu, N = 1280, batch 128", big, xb, yb, 128, study or 10, BIG_LRS),
    ]


def _replicas(net, r, lrs):
    """``r`` replicas: ``r / 4`` seeds × the 4 learning rates."""
    return sweep.grid(net, seeds=range(max(1, r // len(lrs))), lr=lrs)[:r]


def _interleaved(runs, repeats, calls):
    """{label: median seconds per call} over ``repeats`` rounds that alternate the runs."""
    for run in runs.values():
        jax.block_until_ready(run(0))
    times = {label: [] for label in runs}
    for _ in range(repeats):
        for label, run in runs.items():
            start = time.perf_counter()
            for i in range(calls):
                out = run(i + 1)
            jax.block_until_ready(out)
            times[label].append((time.perf_counter() - start) / calls)
    return {label: statistics.median(v) for label, v in times.items()}


def epochs_only(name, net, x, y, batch, lrs, replicas, repeats, devices):
    """Measure 1: seconds per epoch of one run and of the sweep on 1 and ``devices`` devices."""
    xd, yd = jnp.asarray(x, jnp.float32), jnp.asarray(y)
    n = len(xd)
    opt = optax.sgd(lrs[0])
    single = train.make_epoch(net, opt, batch, n, loop="scan")
    p1 = jaxnet.init_params(jax.random.key(0), net)
    one = {"p": p1, "s": opt.init(p1), "step": 0}

    def run_single(epoch):
        one["p"], one["s"], one["step"], losses, _, _ = single(
            one["p"], one["s"], one["step"], jax.random.key(epoch), xd, yd
        )
        return losses

    rs = _replicas(net, replicas, lrs)
    seeds = sorted({r.seed for r in rs})
    runs = {"one run": run_single}
    variants = {
        "sweep on 1, batched products": (1, False, False),
        "sweep on 1, products only": (1, True, False),
        "sweep on 1": (1, True, True),
        "sweep as run": (devices, None, True),
    }  # None: sweep.run's default
    for label, (d, small, reductions) in variants.items():
        spread = sweep.spread_over(train.device_mesh(d))
        params = jax.tree.map(lambda *a: jnp.stack(a), *[jaxnet.init_params(jax.random.key(r.seed), net) for r in rs])
        state = jax.vmap(lambda p, h: optax.inject_hyperparams(optax.sgd)(**h).init(p))(
            params, sweep.replica_hyperparams("sgd", rs, jnp.float32)
        )
        params, state, l2, which = spread(
            (params, state, jnp.full(len(rs), net.l2, jnp.float32), jnp.asarray([seeds.index(r.seed) for r in rs]))
        )  # the net's L2, as the one run
        keys, xs, ys = spread((jnp.stack([jax.random.key(s) for s in seeds]), xd, yd), replicated=True)
        group = sweep.group_epoch(
            net,
            sweep.replica_optimizer("sgd"),
            batch,
            n,
            "manual",
            small_contractions=small,
            small_reductions=reductions,
        )
        st = {"p": params, "s": state}

        def run_sweep(epoch, st=st, group=group, keys=keys, which=which, l2=l2, xs=xs, ys=ys):
            st["p"], st["s"], losses, _ = group(st["p"], st["s"], keys, epoch, which, l2, xs, ys, [])
            return losses

        runs[label] = run_sweep
    calls = max(1, 100 // (n // batch)) if n // batch < 10 else 3
    per_epoch = _interleaved(runs, repeats, calls)
    print("epochs only:", name, {k: f"{1e3 * v:.3f} ms" for k, v in per_epoch.items()})
    return per_epoch


def end_to_end(name, net, x, y, batch, lrs, replicas, repeats, devices, quick):
    """Measure 2: fit vs sweep.run, seconds per epoch with per-epoch metrics, compilation excluded:
    the median gap between consecutive ``on_epoch`` calls after the first epoch, over repeats."""
    rs = _replicas(net, replicas, lrs)
    epochs = 4 if quick else 60 if len(x) // batch < 100 and len(x) <= 300 else 6

    def timed(train_once):
        stamps = []
        train_once(lambda *_: stamps.append(time.perf_counter()))
        return list(np.diff(stamps))  # epoch 2 on: the first epoch's call compiled

    def fit(on_epoch):
        train.fit(
            net,
            jaxnet.init_params(jax.random.key(0), net),
            x,
            y,
            optax.sgd(lrs[0]),
            epochs,
            batch,
            jax.random.key(1),
            on_epoch=on_epoch,
        )

    def the_sweep(on_epoch):
        sweep.run(rs, x, y, "sgd", epochs, batch, devices=devices, on_epoch=on_epoch)

    gaps = {"fit": [], "sweep.run": []}
    for _ in range(max(1, repeats // 2)):
        gaps["fit"] += timed(fit)
        gaps["sweep.run"] += timed(the_sweep)
    per_epoch = {k: statistics.median(v) for k, v in gaps.items()}
    print("end to end:", name, {k: f"{1e3 * v:.3f} ms/epoch" for k, v in per_epoch.items()})
    return per_epoch


def study(name, net, x, y, batch, lrs, replicas, epochs, devices):
    """Measure 3: wall clock of R configurations × ``epochs``, compilation included."""
    rs = _replicas(net, replicas, lrs)
    start = time.perf_counter()
    for r in rs:
        key_init, key_train = jax.random.split(jax.random.key(r.seed))
        train.fit(net, jaxnet.init_params(key_init, net), x, y, optax.sgd(r.lr), epochs, batch, key_train)
    fits = time.perf_counter() - start
    start = time.perf_counter()
    sweep.run(rs, x, y, "sgd", epochs, batch, devices=devices)
    swept = time.perf_counter() - start
    print("study:", name, f"{len(rs)} fit calls {fits:.1f} s, one sweep.run {swept:.1f} s")
    return fits, swept


def shuffles(repeats, n=300, keys=16):
    """Seconds for ``keys`` shuffles of ``n`` (one epoch of a 64-replica sweep of 16 seeds):
    ``jax.random.permutation`` vs ``train.permutation``, and whether they are equal."""
    ks = jax.random.split(jax.random.key(0), keys)
    fns = {
        name: jax.jit(jax.vmap(lambda k, f=f: f(k, n)))
        for name, f in (("jax.random.permutation", jax.random.permutation), ("train.permutation", train.permutation))
    }
    equal = bool(jnp.all(fns["jax.random.permutation"](ks) == fns["train.permutation"](ks)))
    times = _interleaved({name: (lambda i, f=f: f(ks)) for name, f in fns.items()}, repeats, 20)
    print("shuffles:", {k: f"{1e3 * v:.3f} ms" for k, v in times.items()}, "equal" if equal else "DIFFERENT")
    return times, equal


def markdown(rows, shuffle, args, devices):
    r = args.replicas
    lines = [
        "# Sweep benchmark: R replicas in one program vs one run",
        "",
        f"`python experiments/bench_sweep.py --replicas {r} --repeats {args.repeats} --cpu-devices {args.cpu_devices}"
        f"{' --no-study' if args.no_study else ''}` on {datetime.date.today()}: {_where()}, jax {jax.__version__}. "
        "Float32, plain SGD, "
        f"hand-derived gradients; the {r} replicas are {max(1, r // 4)} seeds × 4 learning rates "
        f"({SPIRAL_LRS} at 2-100-3, {BIG_LRS} at 784-256-256-10). "
        "Model-steps/s = replicas × steps / seconds.",
        "",
        "## 1. Training epochs only: `make_epoch` of one run vs the sweep's epoch of all replicas",
        "",
        "Medians of interleaved repeats after warm-up; no per-epoch metrics. The sweep on 1 device three ways: "
        '"no rewrite" leaves XLA its batched products and reductions '
        "(`sweep.group_epoch(..., small_contractions=False)`), "
        '"products" rewrites the small products only (`small_reductions=False`), the next column both. '
        f'"As run": as `sweep.run(..., devices={devices})` runs it '
        f"(the rewrite on the CPU only), on {devices} device(s); "
        "the one run uses one.",
        "",
        "| network | steps per epoch | one run model-steps/s | sweep, 1 device, no rewrite | products | "
        f"products and reductions | as run, {devices} device(s) | sweep / one run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, steps, ep, _, _ in rows:
        one = steps / ep["one run"]
        s0, sp, s1 = (r * steps / ep[f"sweep on 1{k}"] for k in (", batched products", ", products only", ""))
        sd = r * steps / ep["sweep as run"]
        lines.append(
            f"| {name} | {steps} | {one:,.0f} | {s0:,.0f} | {sp:,.0f} | {s1:,.0f} | {sd:,.0f} | {sd / one:.1f}× |"
        )
    times, equal = shuffle
    lines += [
        "",
        "Shuffles of one sweep epoch at 2-100-3 (16 seeds, n = 300): `jax.random.permutation` "
        f"{1e3 * times['jax.random.permutation']:.3f} ms, "
        f"`train.permutation` {1e3 * times['train.permutation']:.3f} ms "
        f"({times['jax.random.permutation'] / times['train.permutation']:.1f}× faster; "
        f"{'the same permutations' if equal else 'DIFFERENT permutations'}).",
        "",
        f"## 2. End to end, steady state: `fit` of one run vs `sweep.run` of all ({devices} devices)",
        "",
        "Both record the training-set metrics after every epoch. Seconds per epoch: the median time between "
        "consecutive epochs' `on_epoch` calls (the first epoch, which "
        f"compiles, left out), over {max(1, args.repeats // 2)} runs.",
        "",
        "| network | fit ms/epoch | fit model-steps/s | sweep.run "
        "ms/epoch | sweep.run model-steps/s | sweep / one run |",
        "|---|---|---|---|---|---|",
    ]
    for name, steps, _, e2e, _ in rows:
        a, b = steps / e2e["fit"], r * steps / e2e["sweep.run"]
        lines.append(
            f"| {name} | {1e3 * e2e['fit']:.2f} | {a:,.0f} | {1e3 * e2e['sweep.run']:.2f} | {b:,.0f} | {b / a:.1f}× |"
        )
    if not args.no_study:
        lines += [
            "",
            f"## 3. A whole study: {r} configurations, wall clock with compilation ({devices} devices for the sweep)",
            "",
            f"| network | epochs | {r} `fit` calls one after another, s | one `sweep.run`, s | speed-up |",
            "|---|---|---|---|---|",
        ]
        for name, _, _, _, (epochs, fits, swept) in rows:
            lines.append(f"| {name} | {epochs} | {fits:.1f} | {swept:.1f} | {fits / swept:.1f}× |")
    lines += ["", "## Notes", "", notes(rows, r, devices)]
    return "\n".join(lines) + "\n"


def _where():
    """The machine, in words: the platform, its device kind and count, the CPU cores."""
    d = jax.devices()
    if d[0].platform == "cpu":
        return f"cpu, {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores ({len(d)} XLA devices)"
    return f"{d[0].platform}, {len(d)} × {d[0].device_kind}, {os.cpu_count()} CPU cores"


def notes(rows, r, devices):
    """The notes, with the figures taken from this run's rows (the first is 2-100-3, batch 32)."""
    _, steps, ep, e2e, whole = rows[0]
    one = steps / ep["one run"]
    s0, sp, s1, sd = (
        r * steps / ep[k]
        for k in ("sweep on 1, batched products", "sweep on 1, products only", "sweep on 1", "sweep as run")
    )
    macs = 32 * 2 * 100 + 32 * 100 * 3 + 100 * 32 * 3 + 32 * 3 * 100 + 2 * 32 * 100  # forward 2, backward 3 products
    end_to_end = (r * steps / e2e["sweep.run"]) / (steps / e2e["fit"])
    cpu = jax.devices()[0].platform == "cpu"
    one_device = s1 if cpu else s0  # sweep.run's default on one device (on a GPU: no rewrite)
    split = f" and {sd / one:.1f}× with the replicas split over {devices} devices" if devices > 1 else ""
    rewrite = (
        "batched products with a side ≤ 8 (`x W` with 2 inputs, `δ Wᵀ` with 3 outputs, the weight gradients "
        "`aᵀ δ`) and float reductions over ≤ 8 elements with ≥ 1024 outputs (the softmax's max and sum over 3 "
        "classes) are rewritten from the jaxpr into fused elementwise code"
    )
    effect = (
        f"{sp / s0:.2f}× the throughput of XLA's batched products from the products, {s1 / sp:.2f}× more from "
        f"the reductions, {s1 / s0:.2f}× in all (table 1)"
    )
    bullets = [
        f"**Steady-state throughput {'meets' if min(sd / one, end_to_end) >= 20 else 'misses'} it**: "
        f"{one_device / one:.1f}× on one device{split} (table 1; the one run uses one device), {end_to_end:.1f}× end "
        f"to end (table 2). One run's step is bound by per-step overhead ({1e6 / one:.0f} µs for {macs / 1e3:.1f} k "
        f"multiply-adds). The sweep shares that overhead among the replicas: {1e6 / one_device:.2f} µs per "
        f"replica-step on one device, about {macs * one_device / 1e9:.0f} G multiply-adds/s.",
        (
            f"What the sweep does about it (`jaxnet/contractions.py`): {rewrite}: {effect}. "
            if cpu
            else "On the CPU the sweep's small products and reductions are rewritten into fused elementwise code "
            f"(`jaxnet/contractions.py`); on a GPU that is off by default: here the rewrite gives {effect}, "
            "and without it the replicas' products are computed as `fit`'s are (float32 products may run in TF32 on a "
            "GPU, the elementwise form is exact float32). "
        )
        + "Shuffles use `train.permutation` and are drawn once per seed; metrics are computed inside the epoch's call"
        + (
            "; `devices=N` splits the replicas over devices "
            f"({sd / one_device:.1f}× from the other devices here; one run "
            "has no replicas to split)."
            if devices > 1
            else "."
        ),
    ]
    if cpu:
        bullets.append(
            "**The baseline got faster in an earlier change**: the version of this file at commit 4d676af, "
            "before `fit` was made to one call and one transfer per epoch, measured `fit` at 2,816 "
            "model-steps/s at 2-100-3, batch 32, and the sweep at 17.7× that; table 2 has `fit` at "
            f"{steps / e2e['fit']:,.0f}."
        )
    if whole is not None:
        epochs, fits, swept = whole
        bullets.append(
            f"**A whole study (table 3) is where the sweep pays most** ({fits / swept:.1f}× for {r} configurations "
            f"× {epochs} epochs): every `fit` call compiles its own epoch (a new optimizer), the sweep compiles "
            "once per network."
        )
    big = [row for row in rows if row[0].startswith("784")]
    if big:
        bep = big[0][2]
        bullets.append(
            f"**At 784-256-256-10** the sweep's epoch gives {bep['one run'] * r / bep['sweep as run']:.1f}× "
            "the one run's model-steps/s (table 1)."
        )
    bullets.append(
        "Measured on " + _where() + "."
        if not cpu
        else "On a GPU: `experiments/results/sweep_benchmark_gpu.md` (`--no-study --cpu-devices 1` there)."
    )
    text = "The issue aimed at ≥ 20× the single run's aggregate model-steps/s at 2-100-3. On this machine:\n\n"
    return text + "\n".join("- " + b for b in bullets)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--cpu-devices",
        dest="cpu_devices",
        type=int,
        default=2,
        help="CPU cores made into XLA devices for the sweep (set before JAX starts)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 8 replicas, few repeats and epochs")
    parser.add_argument("--no-study", dest="no_study", action="store_true", help="leave out measure 3 (a whole study)")
    parser.add_argument(
        "--out",
        help="default: experiments/results/sweep_benchmark.md, on a GPU sweep_benchmark_gpu.md "
        "(with --quick: print only)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.replicas, args.repeats = 8, 2
    devices = min(args.cpu_devices, len(jax.devices()))
    rows = []
    for name, net, x, y, batch, epochs, lrs in configs(args.quick)[: 1 if args.quick else None]:
        problem = (name, net, x, y, batch, lrs, args.replicas)
        ep = epochs_only(*problem, args.repeats, devices)
        e2e = end_to_end(*problem, args.repeats, devices, args.quick)
        whole = None if args.no_study else (epochs, *study(*problem, epochs, devices))
        rows.append((name, len(x) // batch, ep, e2e, whole))
    text = markdown(rows, shuffles(args.repeats), args, devices)
    name = "sweep_benchmark.md" if jax.devices()[0].platform == "cpu" else "sweep_benchmark_gpu.md"
    out = args.out or (None if args.quick else os.path.join(os.path.dirname(__file__), "results", name))
    if out is not None:
        with open(out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
