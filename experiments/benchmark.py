"""Benchmark: training steps/s of what jaxnet's users run, against PyTorch and NumPy loops at their best.

    python experiments/benchmark.py [--rounds 5] [--calibration-rounds 2] [--out PATH]
    python experiments/benchmark.py --quick            # a smoke run: prints, writes nothing
    python experiments/benchmark.py --readme-only      # README's claims block from the committed table

Workloads (``baselines/workloads.py``; float32, plain SGD lr 0.01, the same initial params in
every variant, the last ``N mod B`` examples of an epoch dropped everywhere): MLP 2-100-3 on the
spiral (N = 300) at batch 32 and at full batch, MLP 784-256-256-10 at batch 128 (1,280 random
examples, 10 steps an epoch), the ``cnn`` preset's network on the digit images at batch 64.

Variants, each measured in **its own process** (``python benchmark.py --worker SPEC`` prints
its result as JSON), so that no thread pool of one variant runs beside another's:

- ``make_epoch``: ``jaxnet.train.make_epoch``'s epochs called back to back (keys made before the
  timed loop, one wait at the end): shuffle, gather, the steps; no metrics.
- ``fit`` steady: one ``jaxnet.train.fit`` call (what ``jaxnet train`` runs): the time between
  the ends of its epochs 2 and E (``on_epoch`` stamps), each epoch with fit's per-epoch work
  (training-set metrics, finiteness checks, one transfer).
- ``fit`` one call: the same call from its start to its return (E epochs, tracing and XLA
  compilation included; JAX was imported and the params made before it).
- PyTorch eager: the loop a PyTorch user writes (``baselines/torch_loop.py``: per-epoch
  ``torch.randperm``, gather, ``zero_grad``, forward, loss, ``backward``, ``torch.optim.SGD``).
  Its thread count, 1 or all cores, is chosen per workload by the calibration rounds (the
  faster median), with PyTorch's default OpenMP wait policy.
- ``torch.compile``: the same loop with ``torch.compile(model)`` (default mode), at the eager
  loop's chosen thread count; its first epoch (compilation) is not in its rate.
- NumPy: hand-written backprop (``baselines/numpy_loop.py``, MLPs only), OpenBLAS threads
  (threadpoolctl) chosen by calibration as for PyTorch, the BLAS kernel recorded. Where
  ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` are set (some machines here set them so that old
  OpenBLAS builds run), a second NumPy column runs with both removed from its process alone.

Rounds: each round runs every variant of every workload once, the order rotated by a fixed
offset each round; a rate is the median over rounds with its min–max, and a ratio is the ratio
of two medians with the min–max of the per-round ratios. Every worker also reports the initial
full-data loss: the run stops if the variants of a workload disagree (not the same function).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # the workers live in experiments/baselines

from baselines.workloads import LR, WORKLOADS  # noqa: E402

RESULTS = HERE / "results" / "benchmark.md"
README = ROOT / "README.md"
NOTES_FILE = HERE / "benchmark_notes.md"
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
DATA_TAG = "benchmark data"  # the results file ends in <!-- benchmark data: {json} -->
CLAIMS_BEGIN = "<!-- benchmark claims: experiments/benchmark.py -->"
CLAIMS_END = "<!-- end benchmark claims -->"
LOSS0_RTOL = 1e-4  # float32 forward passes of the same function agree far closer than this
MARK = "BENCHMARK-RESULT "
COLUMNS = ("make_epoch", "fit", "fit one call", "torch", "torch.compile", "numpy", "numpy unset")


# --- workers (each runs in its own process) ------------------------------------------------------


def run_make_epoch(spec: dict) -> dict:
    """``make_epoch``'s steady-state steps/s and the initial full-data loss."""
    import jax
    import jax.numpy as jnp
    from baselines.workloads import load_problem, network

    import jaxnet
    from jaxnet.train import sgd

    net, (_, x, y, params) = network(spec["workload"]), load_problem(spec["problem"])
    batch = min(spec["batch"], len(x))
    xd, yd = jnp.asarray(x), jnp.asarray(y)
    params = jax.tree.map(jnp.asarray, params)
    loss0 = float(jaxnet.loss(params, net, xd, yd))
    rate = make_epoch_rate(net, sgd(LR), params, xd, yd, batch, spec["window_s"])
    return {"steps_per_s": rate, "loss0": loss0}


def make_epoch_rate(net, optimizer, params, x, y, batch: int, window_s: float, state=None) -> float:
    """Steps/s of ``jaxnet.train.make_epoch``'s epochs called back to back from ``params`` on ``x``, ``y``
    (on the device): the epochs' keys drawn before the timed loop, one wait at the end
    (:func:`baselines.workloads.steady_rate`); ``state``: the network's (BatchNorm), carried along.
    The epoch donates ``params``' buffers."""
    import jax
    import jax.numpy as jnp
    from baselines.workloads import steady_rate, steps_per_epoch

    from jaxnet.train import epoch_key, make_epoch

    epoch = make_epoch(net, optimizer, batch, len(x))
    carry = {"params": params, "state": optimizer.init(params), "step": jnp.zeros((), jnp.int32), "epoch": 0}
    carry["net_state"] = state
    key = jax.random.key(1)

    def prepare(k):
        keys = [epoch_key(key, carry["epoch"] + i + 1) for i in range(k)]  # drawn before the timed loop

        def go():
            for kk in keys:
                carry["params"], carry["state"], carry["step"], losses, _, carry["net_state"] = epoch(
                    carry["params"], carry["state"], carry["step"], kk, x, y, carry["net_state"]
                )
            carry["epoch"] += k
            jax.block_until_ready((carry["params"], losses))

        return go

    return steady_rate(prepare, steps_per_epoch(len(x), batch), window_s)


def run_fit(spec: dict) -> dict:
    """One ``fit`` call of ``fit_epochs`` epochs in a fresh process: its steady rate (epochs 2..E,
    from ``on_epoch`` stamps), the whole call's rate and the seconds to the end of epoch 1."""
    import jax
    from baselines.workloads import load_problem, network, steps_per_epoch

    import jaxnet
    from jaxnet.train import fit, sgd

    net, (_, x, y, params) = network(spec["workload"]), load_problem(spec["problem"])
    batch = min(spec["batch"], len(x))
    epochs = spec["fit_epochs"]
    if epochs < 4:
        raise ValueError(f"fit_epochs must be at least 4 (2 skipped, 2 timed), got {epochs}")
    params = jax.tree.map(jax.numpy.asarray, params)
    jax.block_until_ready(params)
    stamps = []
    start = time.perf_counter()
    fit(
        net,
        params,
        x,
        y,
        sgd(LR),
        epochs,
        batch,
        jax.random.key(1),
        on_epoch=lambda *_: stamps.append(time.perf_counter()),
    )
    end = time.perf_counter()
    steps = steps_per_epoch(len(x), batch)
    start_at = 1  # stamps[1]: the end of epoch 2 (epoch 1 compiles, epoch 2 may still warm caches); epochs 3..E timed
    return {
        "steps_per_s": (len(stamps) - 1 - start_at) * steps / (stamps[-1] - stamps[start_at]),
        "first_call_steps_per_s": epochs * steps / (end - start),
        "first_call_s": end - start,
        "first_epoch_s": stamps[0] - start,
        "epochs": epochs,
        "loss0": float(jaxnet.loss(params, net, jax.numpy.asarray(x), jax.numpy.asarray(y))),
    }


def run_info(spec: dict) -> dict:
    """Versions, the CPU, and whether PyTorch imports; writes each workload's problem file
    (``spec["problems"]``: workload -> path) for the other workers."""
    import platform

    from baselines.workloads import save_problem

    for name, path in spec.get("problems", {}).items():
        save_problem(name, path)
    import jax
    import jaxlib
    import numpy as np
    from threadpoolctl import threadpool_info

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    blas = [
        {k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": np.__version__,
        "torch": torch_version,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "jax_backend": jax.default_backend(),
        "numpy_blas": blas,
    }


def run_worker(spec: dict) -> dict:
    kind = spec["kind"]
    if kind == "info":
        return run_info(spec)
    if kind == "make_epoch":
        return run_make_epoch(spec)
    if kind == "fit":
        return run_fit(spec)
    if kind == "torch":
        from baselines import torch_loop

        return torch_loop.run(spec)
    if kind == "numpy":
        from baselines import numpy_loop

        return numpy_loop.run(spec)
    raise ValueError(f"unknown worker kind {kind!r}")


# --- the driver ----------------------------------------------------------------------------------


def launch(spec: dict, timeout_s: float) -> dict:
    """Run one worker in a fresh process; its JSON result, or ``{"error": ...}``. ``spec["env"] ==
    "unset"`` removes OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE from that process's environment."""
    env = dict(os.environ)
    if spec.get("env") == "unset":
        for name in BLAS_ENV:
            env.pop(name, None)
    try:
        proc = subprocess.run(
            [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:300]}"}
    return json.loads(lines[-1][len(MARK) :])


def thread_choices(cores: int) -> list[int]:
    """1 and all cores: the two settings PyTorch's and OpenBLAS's docs leave to the user."""
    return sorted({1, max(1, cores)})


def calibration_plan(workloads, has_torch, blas_env_set, cores):
    """[(workload, family, threads)]: the variants whose thread count is chosen by measurement."""
    plan = []
    for w in workloads:
        families = (
            (["torch"] if has_torch else [])
            + (["numpy"] if is_mlp(w) else [])
            + (["numpy unset"] if is_mlp(w) and blas_env_set else [])
        )
        plan += [(w, family, t) for family in families for t in thread_choices(cores)]
    return plan


def round_plan(workloads, has_torch, blas_env_set, compile_torch):
    """[(workload, column)]: what every round runs."""
    plan = []
    for w in workloads:
        columns = (
            ["make_epoch", "fit"]
            + (["torch"] if has_torch else [])
            + (["torch.compile"] if has_torch and compile_torch else [])
            + (["numpy"] if is_mlp(w) else [])
            + (["numpy unset"] if is_mlp(w) and blas_env_set else [])
        )
        plan += [(w, c) for c in columns]
    return plan


def is_mlp(workload: str) -> bool:
    return workload != "cnn-b64"


def rotated(items: list, r: int, rounds: int) -> list:
    """Round r's order: ``items`` rotated by ⌊r · len / rounds⌋, so each variant's place moves
    through the round over the rounds."""
    offset = (r * len(items)) // max(rounds, 1) % max(len(items), 1)
    return items[offset:] + items[:offset]


def spec_for(workload, column, threads, settings):
    w = WORKLOADS[workload]
    base = {
        "workload": workload,
        "problem": settings["problems"][workload],
        "batch": w.batch,
        "window_s": settings["window_s"],
    }
    if column in ("make_epoch", "fit"):
        return {**base, "kind": column, "fit_epochs": settings["fit_epochs"] or w.fit_epochs}
    if column in ("torch", "torch.compile"):
        return {**base, "kind": "torch", "threads": threads, "compile": column == "torch.compile"}
    return {**base, "kind": "numpy", "threads": threads, "env": "unset" if column == "numpy unset" else "as set"}


class LossMismatch(RuntimeError):
    pass


def check_loss0(reference: dict, workload: str, label: str, result: dict) -> None:
    """Stop when a variant's initial full-data loss differs from the workload's first one by more
    than LOSS0_RTOL (relative): it would not be training the same function."""
    if "loss0" not in result:
        return
    ref = reference.setdefault(workload, (label, result["loss0"]))
    if abs(result["loss0"] - ref[1]) > LOSS0_RTOL * abs(ref[1]):
        raise LossMismatch(f"{workload}: {label}'s initial loss {result['loss0']!r} differs from {ref[0]}'s {ref[1]!r}")


def measure(workloads, settings, log=print) -> dict:
    """Run the info worker, the calibration rounds and the measured rounds: the results' data."""
    with tempfile.TemporaryDirectory(prefix="jaxnet-benchmark-") as tmp:
        problems = {w: os.path.join(tmp, f"{w}.npz") for w in workloads}
        return _measure(workloads, {**settings, "problems": problems}, log)


def _measure(workloads, settings, log):
    started = time.perf_counter()
    timeout = settings["timeout_s"]
    info = launch({"kind": "info", "problems": settings["problems"]}, timeout)
    if "error" in info:
        raise RuntimeError(f"the info worker failed: {info['error']}")
    has_torch = info["torch"] is not None
    if not has_torch:
        log("PyTorch is not installed (pip install -e '.[bench]'): its columns are skipped")
    blas_env = {name: os.environ.get(name) for name in BLAS_ENV}
    blas_env_set = any(v is not None for v in blas_env.values())
    reference: dict = {}

    calibration = {w: {} for w in workloads}
    plan = calibration_plan(workloads, has_torch, blas_env_set, info["cores"])
    for r in range(settings["calibration_rounds"]):
        for w, family, t in rotated(plan, r, settings["calibration_rounds"]):
            result = launch(spec_for(w, family, t, settings), timeout)
            check_loss0(reference, w, f"{family} ({t} threads)", result)
            calibration[w].setdefault(f"{family}|{t}", []).append(result)
            log(f"calibration {r + 1}: {w} {family} {t} thread(s): {describe(result)}")
    chosen = {
        w: {
            family: best_threads(calibration[w], family)
            for family in ("torch", "numpy", "numpy unset")
            if any(k.startswith(family + "|") for k in calibration[w])
        }
        for w in workloads
    }

    runs = {w: {} for w in workloads}
    plan = round_plan(workloads, has_torch, blas_env_set, settings["torch_compile"])
    for r in range(settings["rounds"]):
        for w, column in rotated(plan, r, settings["rounds"]):
            threads = chosen[w].get("torch" if column == "torch.compile" else column)
            result = launch(spec_for(w, column, threads, settings), timeout)
            if "error" in result and column in ("make_epoch", "fit"):
                raise RuntimeError(f"{w} {column}: {result['error']}")
            check_loss0(reference, w, column, result)
            runs[w].setdefault(column, []).append(result)
            log(f"round {r + 1}/{settings['rounds']}: {w} {column}: {describe(result)}")
    return {
        "meta": {
            **{k: v for k, v in settings.items() if k != "problems"},
            "info": info,
            "blas_env": blas_env,
            "date": datetime.date.today().isoformat(),
            "minutes": (time.perf_counter() - started) / 60,
            "lr": LR,
        },
        "workloads": {
            w: {
                "title": WORKLOADS[w].title,
                "batch": WORKLOADS[w].batch,
                "fit_epochs": settings["fit_epochs"] or WORKLOADS[w].fit_epochs,
            }
            for w in workloads
        },
        "loss0": {w: ref[1] for w, ref in reference.items()},
        "calibration": {
            w: {k: [res.get("steps_per_s") for res in v] for k, v in c.items()} for w, c in calibration.items()
        },
        "chosen_threads": chosen,
        "runs": runs,
    }


def describe(result: dict) -> str:
    return result["error"] if "error" in result else f"{result['steps_per_s']:,.0f} steps/s"


def best_threads(calibration: dict, family: str) -> int:
    """The thread count whose median calibration rate is the highest (failed runs ignored)."""
    medians = {}
    for key, results in calibration.items():
        fam, t = key.rsplit("|", 1)
        rates = [r["steps_per_s"] for r in results if "error" not in r]
        if fam == family and rates:
            medians[int(t)] = statistics.median(rates)
    if not medians:
        return 1
    return max(medians, key=medians.get)


# --- statistics and tables (pure functions of the data) ----------------------------------------------


def rates(data: dict, workload: str, column: str) -> list | None:
    """Per-round steps/s of a column (``fit one call``: the whole call's rate); None where it did
    not run or any round failed."""
    key = "fit" if column == "fit one call" else column
    results = data["runs"].get(workload, {}).get(key)
    if not results or any("error" in r for r in results):
        return None
    return [r["first_call_steps_per_s" if column == "fit one call" else "steps_per_s"] for r in results]


def summary(values: list) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def ratio(a: list, b: list) -> tuple[float, float, float]:
    """median(a) / median(b), with the min and max of the per-round ratios a_r / b_r."""
    if len(a) != len(b):
        raise ValueError(f"ratio of {len(a)} rounds to {len(b)} rounds")
    per_round = [x / y for x, y in zip(a, b)]
    return statistics.median(a) / statistics.median(b), min(per_round), max(per_round)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def fmt_rate(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def fmt_ratio(r: float) -> str:
    """Two decimals from 0.1 to 10, one above, two significant digits below 0.1."""
    return f"{r:.2g}" if r < 0.1 else f"{r:.2f}" if r < 10 else f"{r:.1f}"


def rate_cell(values) -> str:
    if values is None:
        return "n/a"
    med, lo, hi = summary(values)
    return f"{fmt_rate(med)} ({fmt_rate(lo)}–{fmt_rate(hi)})" if len(values) > 1 else fmt_rate(med)


def ratio_cell(a, b) -> str:
    if a is None or b is None:
        return "n/a"
    med, lo, hi = ratio(a, b)
    return f"{fmt_ratio(med)}× ({fmt_ratio(lo)}–{fmt_ratio(hi)})" if len(a) > 1 else f"{fmt_ratio(med)}×"


RATIOS = (  # (numerator column, denominator column, the claim's wording)
    ("make_epoch", "torch", "`make_epoch` vs the PyTorch eager loop"),
    ("fit", "torch", "`fit` in steady state (its per-epoch metrics included) vs the PyTorch eager loop"),
    ("fit one call", "torch", "one `fit` call of E epochs, its compilation included, vs the PyTorch eager loop"),
    ("make_epoch", "torch.compile", "`make_epoch` vs the `torch.compile` loop"),
    ("make_epoch", "numpy", "`make_epoch` vs the NumPy backprop loop (OPENBLAS_CORETYPE as set)"),
    ("make_epoch", "numpy unset", "`make_epoch` vs the NumPy backprop loop (OPENBLAS_CORETYPE unset)"),
)
HEADERS = {
    "make_epoch": "`make_epoch`",
    "fit": "`fit` steady",
    "fit one call": "`fit` one call (E epochs)",
    "torch": "PyTorch eager",
    "torch.compile": "`torch.compile`",
    "numpy": "NumPy",
    "numpy unset": "NumPy, OPENBLAS_CORETYPE unset",
}


def _threads(data, w, family):
    t = data["chosen_threads"].get(w, {}).get(family)
    return f" [{t} thr]" if t else ""


def _errors(data):
    out = []
    for w, cols in data["runs"].items():
        for c, results in cols.items():
            errs = sorted({r["error"] for r in results if "error" in r})
            out += [f"- {w}, {c}: {e}" for e in errs]
    return out


def _blas_summary(data, column):
    for w in data["runs"]:
        for r in data["runs"][w].get(column, []):
            for b in r.get("blas", []):
                return f"{b['internal_api']} {b['version']}, kernel {b['architecture']}"
    return "not run"


def render(data: dict) -> str:
    """The results markdown (without the notes): every number in it comes from ``data``."""
    meta, info = data["meta"], data["meta"]["info"]
    ws = list(data["workloads"])
    env = ", ".join(f"{k}={v}" if v is not None else f"{k} not set" for k, v in meta["blas_env"].items())
    lines = [
        "# Training-speed benchmark: jaxnet's training paths against PyTorch and NumPy loops",
        "",
        f"`{meta['command']}` on {meta['date']} ({meta['minutes']:.1f} min): {info['cpu']}, {info['cores']} CPU cores, "
        f"jax {info['jax']} (jaxlib {info['jaxlib']}, backend {info['jax_backend']}), "
        + (f"torch {info['torch']}, " if info["torch"] else "PyTorch not installed, ")
        + f"numpy {info['numpy']}, Python {info['python']}; {env}. NumPy's BLAS as it ran: "
        f"{_blas_summary(data, 'numpy')}"
        + (
            f"; with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset: {_blas_summary(data, 'numpy unset')}"
            if any("numpy unset" in c for c in data["runs"].values())
            else " (OPENBLAS_CORETYPE is not set here, so this column is already the unset figure)"
        )
        + ".",
        "",
        f"float32, plain SGD (lr {meta['lr']}), the same initial params in every variant (their initial "
        f"full-data losses agree to {LOSS0_RTOL:g} relative); each variant in its own process; "
        f"{plural(meta['rounds'], 'round')}, each running every variant once in a rotated order, after "
        f"{plural(meta['calibration_rounds'], 'calibration round')} that chose the thread counts; "
        f"timed loops of about {meta['window_s']} s after 2 warm-up epochs.",
        "",
        "## Steps per second",
        "",
        "Median over the rounds (min–max). `[n thr]`: the thread count the calibration chose. "
        "`fit` one call: E epochs from the call to its return, compilation included (E in the last column).",
        "",
        "| workload | " + " | ".join(HEADERS[c] for c in COLUMNS) + " | E |",
        "|---|" + "---|" * (len(COLUMNS) + 1),
    ]
    for w in ws:
        cells = []
        for c in COLUMNS:
            family = "torch" if c == "torch.compile" else c
            cells.append(rate_cell(rates(data, w, c)) + (_threads(data, w, family) if rates(data, w, c) else ""))
        lines.append(
            f"| {data['workloads'][w]['title']} | " + " | ".join(cells) + f" | {data['workloads'][w]['fit_epochs']} |"
        )
    lines += [
        "",
        "## Ratios of steps/s",
        "",
        "Ratio of the two columns' medians (min–max of the per-round ratios, each round's two "
        "processes run in the same round). Above 1: the jaxnet column is faster.",
        "",
        "| workload | " + " | ".join(f"{HEADERS[a]} / {HEADERS[b]}" for a, b, _ in RATIOS) + " |",
        "|---|" + "---|" * len(RATIOS),
    ]
    for w in ws:
        lines.append(
            f"| {data['workloads'][w]['title']} | "
            + " | ".join(ratio_cell(rates(data, w, a), rates(data, w, b)) for a, b, _ in RATIOS)
            + " |"
        )
    lines += [
        "",
        "## Calibration: thread counts",
        "",
        "Median steps/s of each setting over the calibration rounds; the faster one is used in the rounds "
        "(`torch.compile` runs at the eager loop's choice).",
        "",
        "| workload | setting | " + " | ".join(f"{t} thread(s)" for t in thread_choices(info["cores"])) + " | chosen |",
        "|---|---|" + "---|" * (len(thread_choices(info["cores"])) + 1),
    ]
    for w in ws:
        for family, t_best in data["chosen_threads"].get(w, {}).items():
            cells = []
            for t in thread_choices(info["cores"]):
                vals = [v for v in data["calibration"][w].get(f"{family}|{t}", []) if v is not None]
                cells.append(fmt_rate(statistics.median(vals)) if vals else "n/a")
            lines.append(
                f"| {data['workloads'][w]['title']} | {HEADERS[family]} | " + " | ".join(cells) + f" | {t_best} |"
            )
    lines += [
        "",
        "## Start-up",
        "",
        "Seconds, median over the rounds: `fit` from the call to the end of its first epoch (tracing, "
        "compilation, one epoch), the whole `fit` call, and the first epoch of the `torch.compile` loop "
        "(its compilation) and of the eager loop.",
        "",
        "| workload | `fit` to the end of epoch 1 | `fit` whole call (E "
        "epochs) | `torch.compile` first epoch | PyTorch eager first epoch |",
        "|---|---|---|---|---|",
    ]
    for w in ws:

        def seconds(column, key):
            results = data["runs"][w].get(column)  # noqa: B023 (called in this iteration)
            if not results or any("error" in r for r in results):
                return "n/a"
            return f"{statistics.median(r[key] for r in results):.2f}"

        lines.append(
            f"| {data['workloads'][w]['title']} | {seconds('fit', 'first_epoch_s')} | {seconds('fit', 'first_call_s')} "
            f"| {seconds('torch.compile', 'first_epoch_s')} | {seconds('torch', 'first_epoch_s')} |"
        )
    errors = _errors(data)
    if errors:
        lines += ["", "## Failed runs", ""] + errors
    return "\n".join(lines) + "\n"


def results_text(data: dict, notes: str) -> str:
    """The results file: the tables, the notes, and the data they were made from (one JSON comment)."""
    text = render(data)
    if notes.strip():
        text += "\n## Notes\n\n" + notes.strip() + "\n"
    return text + f"\n<!-- {DATA_TAG}: {json.dumps(data)} -->\n"  # key order kept: the tables' row order


def load_data(text: str) -> dict | None:
    """The data embedded in a results file; None for a file without it (an older layout)."""
    m = re.search(r"<!-- " + DATA_TAG + r": (\{.*\}) -->", text)
    return json.loads(m.group(1)) if m else None


def claims(data: dict | None) -> str:
    """README's claims block, generated from the results' data: one line per ratio, naming the
    columns it compares."""
    if data is None:
        return (
            f"{CLAIMS_BEGIN}\nNo results of this benchmark's layout are committed yet: `python "
            f"experiments/benchmark.py` writes them and regenerates this block.\n{CLAIMS_END}"
        )
    meta, info = data["meta"], data["meta"]["info"]
    lines = [
        CLAIMS_BEGIN,
        f"Measured on {info['cores']} CPU cores ({info['cpu']}), float32, plain SGD: ratios of steps/s, "
        f"medians of {meta['rounds']} rounds (min–max of the per-round ratios), from "
        f"[`experiments/results/benchmark.md`](experiments/results/benchmark.md):",
    ]
    blas_set = any(v is not None for v in meta["blas_env"].values())
    for a, b, wording in RATIOS:
        parts = []
        for w in data["workloads"]:
            cell = ratio_cell(rates(data, w, a), rates(data, w, b))
            if cell != "n/a":
                e = f" (E = {data['workloads'][w]['fit_epochs']})" if a == "fit one call" else ""
                parts.append(f"{cell} at {short_title(data, w)}{e}")
        if parts:
            if b == "numpy" and not blas_set:
                wording = wording.replace("OPENBLAS_CORETYPE as set", "OPENBLAS_CORETYPE not set on this machine")
            lines.append(f"- {wording}: " + "; ".join(parts) + ".")
    lines.append(CLAIMS_END)
    return "\n".join(lines)


def short_title(data, w):
    """ "MLP 2-100-3, batch 32" / "MLP 2-100-3, full batch": the title's network and the batch."""
    title = data["workloads"][w]["title"]
    return title.split(",")[0] + (
        ", full batch" if "full batch" in title else f", batch {data['workloads'][w]['batch']}"
    )


def replace_block(text: str, block: str) -> str:
    """``text`` with the claims block between the markers replaced by ``block``."""
    start, end = text.find(CLAIMS_BEGIN), text.find(CLAIMS_END)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no claims block ({CLAIMS_BEGIN} ... {CLAIMS_END})")
    return text[:start] + block + text[end + len(CLAIMS_END) :]


def write_atomic(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def update_readme(data: dict | None, readme: pathlib.Path = README) -> None:
    write_atomic(readme, replace_block(readme.read_text(), claims(data)))


# --- command line --------------------------------------------------------------------------------


def positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}")
    return v


def workload_list(s: str) -> list[str]:
    names = [n.strip() for n in s.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown workload(s) {unknown or s!r}; known: {', '.join(WORKLOADS)}")
    return names


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=positive_int, default=None, help="measured rounds (default 5; --quick: 1)")
    parser.add_argument(
        "--calibration-rounds", type=positive_int, default=None, help="thread-count rounds (default 2; --quick: 1)"
    )
    parser.add_argument(
        "--window", type=positive_float, default=None, help="seconds per timed loop (default 0.5; --quick: 0.05)"
    )
    parser.add_argument(
        "--fit-epochs",
        type=positive_int,
        default=None,
        help="epochs of every fit call (default: each workload's own; --quick: 4)",
    )
    parser.add_argument("--workloads", type=workload_list, default=list(WORKLOADS), help="comma-separated subset")
    parser.add_argument("--no-torch-compile", action="store_true", help="leave out the torch.compile column")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 1 round, short windows; prints only unless --out"
    )
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=None,
        help=f"results file (default {RESULTS.relative_to(ROOT)} for a full run; "
        "a quick or partial run writes only here)",
    )
    parser.add_argument("--timeout", type=positive_float, default=600.0, help="seconds per worker process")
    parser.add_argument(
        "--readme-only", action="store_true", help="regenerate README's claims block from the committed results"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fit_epochs is not None and args.fit_epochs < 4:
        parser.error(f"--fit-epochs must be at least 4 (2 epochs skipped, 2 timed), got {args.fit_epochs}")
    return args


def has_torch() -> bool:
    """PyTorch is installed (``pip install -e ".[bench]"``): without it the PyTorch columns are empty."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def main(argv=None):
    args = parse(argv)
    if args.worker is not None:
        print(MARK + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return 0
    if args.readme_only:
        update_readme(load_data(RESULTS.read_text()))
        print(f"rewrote the claims block in {README}")
        return 0
    settings = {
        "rounds": args.rounds or (1 if args.quick else 5),
        "calibration_rounds": args.calibration_rounds or (1 if args.quick else 2),
        "window_s": args.window or (0.05 if args.quick else 0.5),
        "fit_epochs": args.fit_epochs or (4 if args.quick else None),
        "torch_compile": not args.no_torch_compile,
        "timeout_s": args.timeout,
        "command": "python experiments/benchmark.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
    }
    settings["command"] = settings["command"].strip()
    full = (
        not args.quick
        and args.workloads == list(WORKLOADS)
        and settings["torch_compile"]
        and args.fit_epochs is None
        and args.window is None
        and settings["rounds"] >= 5
        and settings["calibration_rounds"] >= 2
        and has_torch()
    )
    out = args.out or (RESULTS if full else None)
    if out is not None and not full and out.resolve() == RESULTS.resolve():
        print(
            f"error: a quick or partial run (or one without PyTorch) never writes {RESULTS.relative_to(ROOT)}: "
            "give another --out",
            file=sys.stderr,
        )
        return 2
    try:
        data = measure(args.workloads, settings, log=lambda s: print(s, flush=True))
    except LossMismatch as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    notes = NOTES_FILE.read_text() if NOTES_FILE.exists() else ""
    text = results_text(data, notes)
    print(render(data))
    if out is None:
        print("a quick or partial run: nothing written (give --out PATH to keep it)")
        return 0
    write_atomic(out, text)
    print(f"wrote {out}")
    if out.resolve() == RESULTS.resolve():
        update_readme(data)
        print(f"rewrote the claims block in {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
