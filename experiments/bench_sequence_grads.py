"""Benchmark: jitted hand-derived LSTM and attention-block gradients vs jax.grad of the same loss, side by side.

    python experiments/bench_sequence_grads.py [--repeats 50] [--out experiments/results/sequence_grad_benchmark.md]
    python experiments/bench_sequence_grads.py --quick [--out PATH]   # a smoke run: prints only unless --out
    python experiments/bench_sequence_grads.py --rows lstm-long,block-long --out PATH    # some rows only

For each network (float32, softmax cross-entropy with integer labels), ``jax.jit(jaxnet.manual_grads)``
and ``jax.jit(jax.grad(jaxnet.loss))`` are compiled (the first call's seconds), checked to agree,
warmed up, then timed in interleaved rounds in this one process (the two take turns going first,
so drifts in machine load hit both alike); the table reports medians, the ratio manual / jax.grad
(< 1: the hand-derived backward pass is faster) with the quartiles of the per-round ratios, and
whether the goal, manual no slower than jax.grad, is met on each row. A second table counts the
operations of both compiled programs (XLA's optimised HLO): for the LSTM, the work of every time
step sits in the bodies of the scans' while loops.

``--quick`` runs the same rows at tiny sizes with 2 repeats (a smoke test): it writes only to an
``--out`` given, and never to the committed results file.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from bench_cnn_grads import cpu_name  # the same machine line as the CNN benchmark

import jaxnet
from jaxnet.files import atomic_write

COMMITTED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "sequence_grad_benchmark.md")
CLASSES = 10
GRAD_TOLERANCE = 1e-3  # max |manual − jax.grad| / max |jax.grad| over all the parameters, float32


def _lstm(t, d, h):
    return jaxnet.sequential((t, d), [jaxnet.LSTM(h), jaxnet.Dense(CLASSES)])


def _block(t, d, f, heads, causal=False):
    """TokenDense(F) > LayerNorm > Residual(attention) > SequenceMean > Dense(10)."""
    attention = jaxnet.MultiHeadSelfAttention(heads, f, causal=causal)
    layers = [jaxnet.TokenDense(f), jaxnet.LayerNorm(), jaxnet.Residual((attention,)), jaxnet.SequenceMean()]
    return jaxnet.sequential((t, d), [*layers, jaxnet.Dense(CLASSES)])


def _attention(t, f, heads):
    """The attention layer alone (its input already F wide), then SequenceMean > Dense(10)."""
    return jaxnet.sequential(
        (t, f), [jaxnet.MultiHeadSelfAttention(heads, f), jaxnet.SequenceMean(), jaxnet.Dense(CLASSES)]
    )


# (row key, what it is, sizes of the full run, sizes of --quick); the sizes are the builder's
# arguments and the batch last.
ROWS = [
    ("lstm-rows", "LSTM, digits as rows", _lstm, dict(t=8, d=8, h=64, batch=128), dict(t=4, d=3, h=8, batch=8)),
    ("lstm-adding", "LSTM, adding problem", _lstm, dict(t=50, d=2, h=64, batch=64), dict(t=5, d=2, h=8, batch=8)),
    ("lstm-long", "LSTM, longer and wider", _lstm, dict(t=64, d=32, h=128, batch=32), dict(t=6, d=4, h=8, batch=4)),
    (
        "block-short",
        "attention block",
        _block,
        dict(t=8, d=8, f=32, heads=4, batch=128),
        dict(t=4, d=3, f=8, heads=2, batch=8),
    ),
    (
        "block-long",
        "attention block",
        _block,
        dict(t=64, d=32, f=64, heads=4, batch=32),
        dict(t=6, d=4, f=8, heads=2, batch=4),
    ),
    (
        "block-long-causal",
        "attention block, causal",
        _block,
        dict(t=64, d=32, f=64, heads=4, batch=32, causal=True),
        dict(t=6, d=4, f=8, heads=2, batch=4, causal=True),
    ),
    (
        "attention-alone",
        "attention layer alone",
        _attention,
        dict(t=64, f=64, heads=4, batch=32),
        dict(t=6, f=8, heads=2, batch=4),
    ),
]


def configs(quick: bool, keys=None):
    """``[(key, description, net, batch)]``: every row of the table, or those of ``keys``."""
    out = []
    for key, what, build, full, small in ROWS:
        if keys is not None and key not in keys:
            continue
        sizes = dict(small if quick else full)
        batch = sizes.pop("batch")
        net = build(**sizes)
        shape = ", ".join(
            f"{k.upper() if k in {'t', 'd', 'f', 'h'} else k}={v}" for k, v in sizes.items() if k != "causal"
        )
        out.append((key, f"{what} ({shape})", net, batch))
    return out


def describe(net) -> str:
    """The layers, short: ``LSTM(64) > Dense(10)``."""

    def one(layer):
        name = type(layer).__name__
        if isinstance(layer, jaxnet.Residual):
            return "Residual(" + " > ".join(one(sub) for sub in layer.layers) + ")"
        if isinstance(layer, jaxnet.MultiHeadSelfAttention):
            return f"MHSA({layer.heads}x{layer.head_size}{', causal' if layer.causal else ''})"
        features = getattr(layer, "features", None)
        return f"{name}({features})" if features is not None else name

    return " > ".join(one(layer) for layer in net.layers)


def _time(fn, *args):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def _grad_gap(manual, autodiff) -> float:
    """max |manual − jax.grad| / max |jax.grad|, both over every parameter: relative to the whole
    gradient's scale, as some entries are zero up to rounding (the attention's ``∂L/∂bk``)."""
    diff = max(
        float(np.max(np.abs(np.asarray(m) - np.asarray(a)))) for m, a in zip(*map(jax.tree.leaves, (manual, autodiff)))
    )
    scale = max(float(np.max(np.abs(np.asarray(a)))) for a in jax.tree.leaves(autodiff))
    return diff / max(scale, 1e-30)


_TRIVIAL = {"parameter", "get-tuple-element", "tuple", "constant", "bitcast"}


def hlo_counts(text: str) -> dict:
    """Operation counts of an optimised HLO module (``compiled.as_text()``): ``loops`` (while
    loops), ``step_ops`` (operations run per iteration, summed over the loop bodies), ``ops``
    (operations of the entry computation, loops counted once each), ``dots`` (matrix products
    anywhere, fused or not). Operations: instructions other than parameters, tuples and their
    elements, constants and bitcasts (a fusion is one)."""
    comps, current, entry = {}, None, None
    for line in text.splitlines():
        head = re.match(r"^(ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
        if head:
            current = head.group(2)
            comps[current] = []
            entry = current if head.group(1) else entry
        elif line.startswith("}"):
            current = None
        elif current is not None:
            op = re.match(r"^\s+(?:ROOT )?%?[\w.\-]+ = .*? ([a-z][a-z0-9\-]*)\(", line)
            if op:
                comps[current].append((op.group(1), line))
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text")

    def ops(name):
        return [o for o, _ in comps.get(name, []) if o not in _TRIVIAL]

    bodies = [
        re.search(r"body=%?([\w.\-]+)", line).group(1)
        for instructions in comps.values()
        for o, line in instructions
        if o == "while"
    ]
    return {
        "loops": len(bodies),
        "step_ops": sum(len(ops(b)) for b in bodies),
        "ops": len(ops(entry)),
        "dots": sum(o in ("dot", "convolution") for instructions in comps.values() for o, _ in instructions),
    }


def bench(net, batch, repeats, seed=0):
    k_p, k_x, k_y = jax.random.split(jax.random.key(seed), 3)
    params = jaxnet.init_params(k_p, net, jnp.float32)
    x = jax.random.normal(k_x, (batch, *net.input_shape), jnp.float32)
    y = jax.random.randint(k_y, (batch,), 0, net.output_shape[0])
    fns = {"manual": jax.jit(jaxnet.manual_grads), "autodiff": jax.jit(jax.grad(jaxnet.loss))}
    compile_s = {k: _time(f, params, net, x, y) for k, f in fns.items()}
    gap = _grad_gap(*(f(params, net, x, y) for f in fns.values()))
    if not gap < GRAD_TOLERANCE:
        raise AssertionError(f"{describe(net)}: manual and jax.grad gradients differ by {gap:.2e} (relative)")
    hlo = {k: hlo_counts(f.lower(params, net, x, y).compile().as_text()) for k, f in fns.items()}  # cached
    for _ in range(3):  # warm-up
        for f in fns.values():
            _time(f, params, net, x, y)
    times = {k: [] for k in fns}
    for i in range(repeats):  # interleaved, taking turns going first
        for k in list(fns)[:: 1 if i % 2 == 0 else -1]:
            times[k].append(_time(fns[k], params, net, x, y))
    med = {k: statistics.median(v) for k, v in times.items()}
    per_round = np.asarray(times["manual"]) / np.asarray(times["autodiff"])
    return {
        "manual_ms": med["manual"] * 1e3,
        "autodiff_ms": med["autodiff"] * 1e3,
        "ratio": med["manual"] / med["autodiff"],
        "ratio_q": (float(np.quantile(per_round, 0.25)), float(np.quantile(per_round, 0.75))),
        "compile_s": compile_s,
        "gap": gap,
        "hlo": hlo,
    }


def verdict(r) -> str:
    """Whether the goal (manual no slower than jax.grad) is met on a row, from its medians."""
    if r["ratio"] <= 1:
        return "yes"
    slower = f"no: manual {100 * (r['ratio'] - 1):.0f}% slower"
    lo, hi = r["ratio_q"]
    return slower + (" (per-round ratios' quartiles straddle 1)" if lo <= 1 <= hi else "")


def markdown(rows, command, repeats) -> str:
    device = jax.devices()[0]
    met = [key for key, _, _, _, r in rows if r["ratio"] <= 1]
    missed = [key for key, _, _, _, r in rows if r["ratio"] > 1]
    lines = [
        "# Hand-derived LSTM and attention gradients vs jax.grad (jitted, float32)",
        "",
        f"Measured {datetime.date.today().isoformat()} on {device.platform} "
        f"({cpu_name()}, {os.cpu_count()} cores visible), jax {jax.__version__}, by `{command}`: "
        "`jax.jit(jaxnet.manual_grads)` vs `jax.jit(jax.grad(jaxnet.loss))`, softmax cross-entropy with "
        f"integer labels (10 classes), medians of {repeats} interleaved rounds after warm-up, one process. "
        "Ratio quartiles: the 25% and 75% quantiles of the per-round ratios. Gradient gap: "
        "max |manual − jax.grad| / max |jax.grad|, both over all the parameters.",
        "",
        f"Goal (manual no slower than jax.grad, by the medians): met on {len(met)} of {len(rows)} rows"
        + (f"; not met on {', '.join(f'`{k}`' for k in missed)}." if missed else "."),
        "",
        "| row | network | layers | batch | manual_grads (ms) | jax.grad (ms) | manual / jax.grad "
        "| ratio quartiles | manual ≤ jax.grad | compile manual (s) | compile jax.grad (s) | gradient gap |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, name, net, batch, r in rows:
        lo, hi = r["ratio_q"]
        lines.append(
            f"| `{key}` | {name} | {describe(net)} | {batch} | {r['manual_ms']:.3f} | {r['autodiff_ms']:.3f} "
            f"| {r['ratio']:.2f} | {lo:.2f}–{hi:.2f} | {verdict(r)} | {r['compile_s']['manual']:.2f} "
            f"| {r['compile_s']['autodiff']:.2f} | {r['gap']:.1e} |"
        )
    lines += [
        "",
        "Compiled programs (XLA's optimised HLO, `jax.jit(f).lower(...).compile().as_text()`): while loops "
        "(the scans), operations per time step (summed over the loop bodies), operations outside the loops "
        "(a loop counts once) and matrix products anywhere (fused or not). Operations: instructions other "
        "than parameters, tuples and their elements, constants and bitcasts; a fusion counts once.",
        "",
        "| row | loops manual / jax.grad | ops per step manual / jax.grad | ops outside loops manual / jax.grad "
        "| dots manual / jax.grad |",
        "|---|---|---|---|---|",
    ]
    for key, _, _, _, r in rows:
        m, a = r["hlo"]["manual"], r["hlo"]["autodiff"]
        lines.append(
            f"| `{key}` | {m['loops']} / {a['loops']} | {m['step_ops']} / {a['step_ops']} "
            f"| {m['ops']} / {a['ops']} | {m['dots']} / {a['dots']} |"
        )
    return "\n".join(lines) + "\n"


def write(path, text):
    """``text`` into ``path`` by an atomic rename: a run that fails leaves the file as it was."""
    with atomic_write(path, "w") as f:
        f.write(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per network (default 50; --quick: 2)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny sizes, 2 repeats; prints only")
    parser.add_argument(
        "--out",
        help=f"the markdown file (default: {os.path.relpath(COMMITTED)}; with --quick: print only, and never "
        "the committed file)",
    )
    parser.add_argument(
        "--rows",
        help="comma-separated row keys to run (default: all of "
        + ", ".join(key for key, *_ in ROWS)
        + "); a subset is never written to the committed file",
    )
    args = parser.parse_args(argv)
    keys = None if args.rows is None else [k for k in args.rows.split(",") if k]
    unknown = sorted(set(keys or ()) - {key for key, *_ in ROWS})
    if unknown or keys == []:
        parser.error(f"--rows: unknown row(s) {', '.join(unknown) or '(none given)'}")
    if args.quick and args.out is not None and os.path.realpath(args.out) == os.path.realpath(COMMITTED):
        parser.error(f"--quick does not write the committed results {os.path.relpath(COMMITTED)}; give another --out")
    repeats = args.repeats if args.repeats is not None else 2 if args.quick else 50
    if repeats < 1:
        parser.error("--repeats must be at least 1")
    out = args.out or (None if args.quick else COMMITTED)
    if keys is not None and out is not None and os.path.realpath(out) == os.path.realpath(COMMITTED):
        parser.error("a subset of the rows (--rows) does not write the committed results; give --out")
    command = " ".join(
        ["python experiments/bench_sequence_grads.py"]
        + (["--quick"] if args.quick else [])
        + ([f"--repeats {repeats}"] if args.repeats is not None else [])
        + ([f"--rows {args.rows}"] if keys is not None else [])
    )
    rows = []
    for key, name, net, batch in configs(args.quick, keys):
        r = bench(net, batch, repeats)
        rows.append((key, name, net, batch, r))
        print(
            f"{key}: {name}, batch {batch}: manual {r['manual_ms']:.3f} ms, jax.grad {r['autodiff_ms']:.3f} ms, "
            f"ratio {r['ratio']:.2f}",
            flush=True,
        )
    text = markdown(rows, command, repeats)
    print(text)
    if out is None:
        print("a quick run: nothing written (give --out PATH to keep it)")
    else:
        write(out, text)
        print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
