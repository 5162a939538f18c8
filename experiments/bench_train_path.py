"""Benchmark of issue 20's targets: the whole ``jaxnet train`` command per preset, cold and warm,
next to a PyTorch eager script of the same preset; ``fit``'s steady state against ``make_epoch``;
one ``fit`` call against a PyTorch eager loop.

    python experiments/bench_train_path.py               # full run: results/train_path_benchmark.md and .json
    python experiments/bench_train_path.py --quick       # smoke run: 1 round, 2 presets, 20 epochs; prints only
    python experiments/bench_train_path.py --presets 000-spiral,digits --rounds 3 --out /tmp/train_path.md

Every measurement runs in a process of its own, one at a time. A round runs each of them once,
in an order rotated from round to round (after calibration rounds that choose PyTorch's thread
count); a time or rate is the median over the rounds with its min–max, a ratio the ratio of two
medians with the min–max of the per-round ratios. The targets are judged on the medians.

1. ``jaxnet train --preset P --quiet --out <new folder> --compile-cache <folder>``: the wall time
   of the whole process, from the parent (interpreter start to exit), as ``python -m jaxnet``
   (what the ``jaxnet`` console script runs): **cold** with an empty cache folder, then **warm**
   with the same folder. The same pair again through :data:`WRAPPER` (``python -c WRAPPER train
   ...``), which registers ``jax.monitoring`` listeners and calls ``jaxnet.cli.main``, for the
   counts: programs (``/jax/core/compile/backend_compile_duration`` fires once per program JAX
   compiles or loads from the persistent cache), cache hits (``/jax/compilation_cache/cache_hits``),
   XLA compilations = programs − hits, and the seconds of lowering (``jaxpr_to_mlir_module_duration``)
   plus backend compilation or cache load (``backend_compile_duration``). The tables' wall times are
   the plain command's; the wrapper's stand beside them (it should add no measurable time).
2. ``python experiments/baselines/torch_presets.py --preset P --threads T`` (the MLP presets and
   ``cnn``): the same network, data split, steps, batch size and optimizer in PyTorch eager, then
   the splits evaluated; the whole process's wall time, at the thread count (1 or all cores) whose
   median was the lower in calibration. Its test metric is printed next to ``jaxnet train``'s.
3. ``fit`` in steady state vs ``make_epoch`` for every preset's network (float32, the preset's
   optimizer, batch size and data, as ``jaxnet train`` resolves them): ``make_epoch``'s epochs back
   to back (``benchmark.make_epoch_rate``); ``fit`` measured from outside, in one process: after
   warm-up calls, ``fit`` with E1 and with E2 > E1 epochs (same settings and optimizer object, so
   nothing compiles again: counted), steps/s = (E2 − E1) × steps per epoch / (t(E2) − t(E1)), the
   medians of 3 alternating calls each. ``fit`` as ``jaxnet train`` calls it (validation set,
   default ``eval_every``; also the preset's ``eval_every`` where a preset has one).
4. One ``fit`` call (compilation included) vs the PyTorch eager loop at MLP 2-100-3 batch 32 and
   784-256-256-10 batch 128: ``benchmark.py``'s workers (its "fit one call" and "PyTorch eager"
   columns, its workloads and epoch counts).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import benchmark as bm  # noqa: E402  (its workers, statistics and formatting)
from baselines import torch_presets  # noqa: E402

RESULTS = HERE / "results" / "train_path_benchmark.md"
MARK = "TRAIN-PATH-RESULT "
TORCH_SCRIPT = HERE / "baselines" / "torch_presets.py"
CALL_WORKLOADS = ("spiral-b32", "mlp784-b128")
QUICK_PRESETS = ("000-spiral", "digits")
QUICK_EPOCHS = 20
TARGETS = {"cold_s": 3.0, "warm_s": 1.5, "fit_vs_make_epoch": 0.8, "fit_call_vs_torch": 1.0}
E1 = 2  # the shorter fit call of the steady-state measure
PILOT = 10  # epochs beyond E1 of the call that estimates the time per epoch
EVENTS = {
    "programs": "/jax/core/compile/backend_compile_duration",
    "lowerings": "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "traces": "/jax/core/compile/jaxpr_trace_duration",
    "cache_hits": "/jax/compilation_cache/cache_hits",
    "cache_requests": "/jax/compilation_cache/compile_requests_use_cache",
}
WRAPPER = f"""
import collections, json, sys, time
T0 = time.perf_counter()
import jax.monitoring
counts, seconds = collections.Counter(), collections.Counter()
jax.monitoring.register_event_listener(lambda name, **kw: counts.update([name]))
def duration(name, secs, **kw):
    counts.update([name])
    seconds[name] += secs
jax.monitoring.register_event_duration_secs_listener(duration)
import jaxnet.network, jaxnet.train
from jaxnet.cli import main
phases = {{"imports": time.perf_counter() - T0}}
def timed(module, name):
    f = getattr(module, name)
    def g(*a, **k):
        start = time.perf_counter()
        phases.setdefault(name + "_start", start - T0)
        try:
            return f(*a, **k)
        finally:
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - start
            phases[name + "_end"] = time.perf_counter() - T0
    setattr(module, name, g)
for module, name in ((jaxnet.network, "init_params"), (jaxnet.train, "fit"), (jaxnet.train, "evaluate")):
    timed(module, name)
rc = main(sys.argv[1:])
phases["total"] = time.perf_counter() - T0
print({MARK!r} + json.dumps({{"rc": rc, "counts": counts, "seconds": seconds, "phases": phases}}), flush=True)
sys.exit(rc)
"""
"""The counting wrapper: ``jaxnet.cli.main`` with ``jax.monitoring`` listeners, and the phases of the
run timed from inside (:func:`phase_profile`): the imports (JAX, jaxnet, ``jaxnet.train``), and the
public functions the command calls at run time (``init_params``, ``fit``, ``evaluate``) wrapped."""


def phase_profile(phases: dict) -> dict:
    """Where a wrapper run's seconds went: ``imports``; ``setup`` (from the imports to ``fit``: the
    settings, data, ``init_params``, the run folder); ``fit``; ``evaluate`` (the final metrics of
    each split); ``after`` (from the last ``evaluate`` to the exit: checkpoint, ``metrics.json``,
    plots, summary)."""
    return {
        "imports": phases["imports"],
        "setup": phases["fit_start"] - phases["imports"],
        "fit": phases["fit"],
        "evaluate": phases.get("evaluate", 0.0),
        "after": phases["total"] - phases.get("evaluate_end", phases["fit_end"]),
        "total": phases["total"],
    }


# --- workers (each in its own process: ``--worker SPEC``) ----------------------------------------


def preset_settings(name: str):
    """What ``jaxnet train --preset name`` resolves: its split, network, optimizer, batch size, epochs."""
    from jaxnet.cli import build_parser
    from jaxnet.cli.settings import resolve

    return resolve(build_parser().parse_args(["train", "--preset", name, "--quiet"]))


def preset_start(s):
    """``(params, training key, state)`` as ``jaxnet train`` starts from them (float32)."""
    import jax

    import jaxnet
    from jaxnet.network import has_state

    key_init, key_train = jax.random.split(jax.random.key(s.seed))
    return jaxnet.init_params(key_init, s.net), key_train, jaxnet.init_state(s.net) if has_state(s.net) else None


def run_presets(spec: dict) -> dict:
    """Every preset's settings as the tables need them, and ``benchmark.run_info``'s versions (which
    also writes the call workloads' problem files)."""
    from jaxnet.layers import Dense
    from jaxnet.presets import TRAIN_PRESETS

    presets = {}
    for name, preset in TRAIN_PRESETS.items():
        s = preset_settings(name)
        presets[name] = {
            "mlp": all(isinstance(layer, Dense) for layer in s.net.layers),
            "network": str(s.net),
            "optimizer": s.optimizer,
            "lr": s.lr,
            "epochs": s.epochs,
            "batch": s.batch_size,
            "n_train": len(s.split.x_train),
            "steps_per_epoch": len(s.split.x_train) // s.batch_size,
            "eval_every": getattr(preset, "eval_every", None),
            "torch": name in torch_presets.PRESETS,
        }
    return {"presets": presets, "info": bm.run_info(spec)}


def run_make_epoch(spec: dict) -> dict:
    """``make_epoch``'s steady steps/s on a preset's network, data and optimizer."""
    import jax.numpy as jnp

    from jaxnet.network import inputs_as

    s = preset_settings(spec["preset"])
    params, _, state = preset_start(s)
    x, y = inputs_as(s.net, s.split.x_train, jnp.float32), jnp.asarray(s.split.y_train)
    rate = bm.make_epoch_rate(s.net, s.optimizer_transform(), params, x, y, s.batch_size, spec["window_s"], state)
    return {"steps_per_s": rate}


def run_fit_steady(spec: dict) -> dict:
    """``fit``'s steady steps/s from two call lengths (module notes, measure 3)."""
    import jax
    import jax.monitoring

    from jaxnet.train import fit

    s = preset_settings(spec["preset"])
    params, key, _ = preset_start(s)
    optimizer = s.optimizer_transform()  # one object: fit reuses its compiled program
    val = (s.split.x_val, s.split.y_val) if len(s.split.x_val) else None
    programs = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, secs, **kw: programs.append(secs) if name == EVENTS["programs"] else None
    )

    def seconds(epochs):
        start = time.perf_counter()
        result = fit(
            s.net,
            params,
            s.split.x_train,
            s.split.y_train,
            optimizer,
            epochs,
            s.batch_size,
            key,
            val=val,
            **spec["fit_kwargs"],
        )
        jax.block_until_ready(result.params)
        return time.perf_counter() - start

    seconds(E1)  # compiles
    seconds(E1 + PILOT)  # in case a longer call uses programs of its own
    per_epoch = (seconds(E1 + PILOT) - seconds(E1)) / PILOT
    e2 = E1 + max(PILOT, math.ceil(spec["window_s"] / max(per_epoch, 1e-9)))
    seconds(e2)
    before, t1, t2 = len(programs), [], []
    for _ in range(3):
        t1.append(seconds(E1))
        t2.append(seconds(e2))
    dt, steps = statistics.median(t2) - statistics.median(t1), len(s.split.x_train) // s.batch_size
    if dt <= 0:
        raise RuntimeError(f"fit({e2} epochs) took no longer than fit({E1}): {t2} vs {t1}")
    return {
        "steps_per_s": (e2 - E1) * steps / dt,
        "e1": E1,
        "e2": e2,
        "t1_s": t1,
        "t2_s": t2,
        "programs_in_timed_calls": len(programs) - before,
    }


WORKERS = {"presets": run_presets, "make_epoch": run_make_epoch, "fit_steady": run_fit_steady}


# --- processes -----------------------------------------------------------------------------------


def use_this_checkout() -> None:
    """This checkout's ``jaxnet`` first on the path of every process started from here (also
    ``benchmark.launch``'s, which passes the environment on), not an installed copy."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(ROOT)]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *paths])


def child_env() -> dict:
    """The environment of the train runs, PyTorch scripts and workers: no compile cache configured
    from outside (each run names its own folder)."""
    return {k: v for k, v in os.environ.items() if k not in ("JAXNET_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR")}


def timed_process(cmd: list, timeout_s: float, mark: str | None = None) -> dict:
    """Run ``cmd`` from the repository root; ``{"wall_s": ...}`` (from start to exit) with the JSON of
    its last line starting with ``mark``, or ``{"error": ...}``."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=child_env(), cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    wall = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if mark and line.startswith(mark)]
    if proc.returncode or (mark and not lines):
        tail = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:300]}"}
    return {"wall_s": wall, **(json.loads(lines[-1][len(mark) :]) if lines else {})}


def worker(spec: dict, timeout_s: float) -> dict:
    return timed_process(
        [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", json.dumps(spec)], timeout_s, MARK
    )


def train_command(preset: str, mode: str, cache: str, out: str, epochs: int | None) -> list:
    """``python -m jaxnet train ...`` (``mode`` "plain") or the same through :data:`WRAPPER`."""
    argv = ["train", "--preset", preset, "--quiet", "--compile-cache", cache, "--out", out]
    argv += ["--epochs", str(epochs)] if epochs else []
    return [sys.executable, *(["-m", "jaxnet"] if mode == "plain" else ["-c", WRAPPER]), *argv]


def compile_counts(result: dict) -> dict:
    """The wrapper's event counts and seconds as the tables use them."""
    counts, secs = result.pop("counts"), result.pop("seconds")
    c = {name: counts.get(event, 0) for name, event in EVENTS.items()}
    c["xla_compiles"] = c["programs"] - c["cache_hits"]
    c["compile_s"] = secs.get(EVENTS["programs"], 0.0) + secs.get(EVENTS["lowerings"], 0.0)
    c["trace_s"] = secs.get(EVENTS["traces"], 0.0)
    if "phases" in result:
        c["phases"] = phase_profile(result.pop("phases"))
    return c


def train_pair(preset: str, mode: str, settings: dict, tmp: str) -> dict:
    """A cold run (empty cache folder) and a warm run (the same folder) of ``jaxnet train``:
    ``{"cold": result, "warm": result}``, each with its wall time, the final test metrics and (for
    the wrapper) the compile counts."""
    cache, pair = tempfile.mkdtemp(prefix="cache-", dir=tmp), {}
    try:
        for phase in ("cold", "warm"):
            out = os.path.join(tempfile.mkdtemp(prefix="out-", dir=tmp), "run")
            cmd = train_command(preset, mode, cache, out, settings["epochs"])
            result = timed_process(cmd, settings["timeout_s"], MARK if mode == "wrapper" else None)
            if "error" not in result:
                if mode == "wrapper":
                    result.update(compile_counts(result))
                with open(os.path.join(out, "metrics.json")) as f:
                    result["test"] = json.load(f)["final"].get("test", {})
            shutil.rmtree(os.path.dirname(out), ignore_errors=True)
            pair[phase] = result
            if "error" in result:
                pair.setdefault("warm", {"error": "not run: the cold run failed"})
                break
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return pair


def torch_script(preset: str, threads: int, settings: dict) -> dict:
    cmd = [sys.executable, str(TORCH_SCRIPT), "--preset", preset, "--threads", str(threads)]
    cmd += ["--epochs", str(settings["epochs"])] if settings["epochs"] else []
    return timed_process(cmd, settings["timeout_s"], torch_presets.MARK)


# --- the driver ----------------------------------------------------------------------------------


def calibrate(data: dict, settings: dict, log) -> None:
    """PyTorch's thread count per preset script (the lower median wall time) and per call workload
    (the higher median steps/s, ``benchmark.best_threads``)."""
    cores = data["meta"]["info"]["cores"]
    plan = [("torch", p, t) for p in data["torch"] for t in bm.thread_choices(cores)]
    plan += [("call", w, t) for w in data["call"] for t in bm.thread_choices(cores)]
    for r in range(settings["calibration_rounds"]):
        for kind, name, t in bm.rotated(plan, r, settings["calibration_rounds"]):
            if kind == "torch":
                result = torch_script(name, t, settings)
            else:
                result = bm.launch(bm.spec_for(name, "torch", t, settings), settings["timeout_s"])
            data[kind][name]["calibration"].setdefault(str(t), []).append(result)
            log(f"calibration {r + 1}: {kind} {name} {t} thread(s): {describe(result)}")
    for entry in data["torch"].values():
        walls = {int(t): [r["wall_s"] for r in rs if "error" not in r] for t, rs in entry["calibration"].items()}
        entry["threads"] = min((t for t in walls if walls[t]), key=lambda t: statistics.median(walls[t]), default=1)
    for entry in data["call"].values():
        entry["threads"] = bm.best_threads({f"torch|{t}": rs for t, rs in entry["calibration"].items()}, "torch")


def round_jobs(data: dict) -> list:
    """What every round runs: ``(kind, name, variant)``."""
    jobs = []
    for p in data["presets"]:
        jobs += [("train", p, "plain"), ("train", p, "wrapper")]
        jobs += [("torch", p, None)] if p in data["torch"] else []
        jobs += [("steady", p, "make_epoch")] + [("steady", p, v) for v in data["steady"][p] if v != "make_epoch"]
    jobs += [("call", w, column) for w in data["call"] for column in ("fit", "torch")]
    return jobs


def run_job(job, data: dict, settings: dict, tmp: str) -> dict:
    kind, name, variant = job
    timeout = settings["timeout_s"]
    if kind == "train":
        pair = train_pair(name, variant, settings, tmp)
        for phase, result in pair.items():
            data["train"][name].setdefault(f"{variant} {phase}", []).append(result)
        return pair["warm"] if "error" not in pair["cold"] else pair["cold"]
    if kind == "torch":
        result = torch_script(name, data["torch"][name]["threads"], settings)
        data["torch"][name]["runs"].append(result)
    elif kind == "steady":
        spec = {"kind": "make_epoch" if variant == "make_epoch" else "fit_steady", "preset": name}
        spec |= {"window_s": settings["window_s"], "fit_kwargs": data["steady"][name][variant]["fit_kwargs"]}
        result = worker(spec, timeout)
        data["steady"][name][variant]["runs"].append(result)
    else:
        threads = data["call"][name]["threads"] if variant == "torch" else None
        result = bm.launch(bm.spec_for(name, variant, threads, settings), timeout)
        data["call"][name][variant].append(result)
    return result


def describe(result: dict) -> str:
    if "error" in result:
        return result["error"]
    if "first_call_steps_per_s" in result:
        return f"one call {result['first_call_steps_per_s']:,.1f} steps/s (steady {result['steps_per_s']:,.0f})"
    if "steps_per_s" in result:
        return f"{result['steps_per_s']:,.0f} steps/s"
    return f"{result['wall_s']:.2f} s"


def empty_data(presets: dict, info: dict, settings: dict) -> dict:
    """The layout the rounds fill in (see :func:`render`)."""
    steady = {}
    for p, preset in presets.items():
        steady[p] = {"make_epoch": {"fit_kwargs": {}, "runs": []}, "fit": {"fit_kwargs": {}, "runs": []}}
        if preset["eval_every"] not in (None, 1):
            steady[p][f"fit eval_every={preset['eval_every']}"] = {
                "fit_kwargs": {"eval_every": preset["eval_every"]},
                "runs": [],
            }
    has_torch = info["torch"] is not None
    return {
        "meta": {**{k: v for k, v in settings.items() if k != "problems"}, "info": info, "targets": TARGETS},
        "presets": presets,
        "train": {p: {} for p in presets},
        "torch": {p: {"calibration": {}, "runs": []} for p in presets if presets[p]["torch"] and has_torch},
        "steady": steady,
        "call": {
            w: {
                "calibration": {},
                "fit": [],
                "torch": [],
                "title": bm.WORKLOADS[w].title,
                "fit_epochs": settings["fit_epochs"] or bm.WORKLOADS[w].fit_epochs,
            }
            for w in CALL_WORKLOADS
        }
        if has_torch
        else {},
    }


def measure(settings: dict, log=print) -> dict:
    """The info worker, a warm-up run, the calibration rounds and the measured rounds: the data."""
    started, load = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="jaxnet-train-path-") as tmp:
        settings = {**settings, "problems": {w: os.path.join(tmp, f"{w}.npz") for w in CALL_WORKLOADS}}
        first = worker({"kind": "presets", "problems": settings["problems"]}, settings["timeout_s"])
        if "error" in first:
            raise RuntimeError(f"the presets worker failed: {first['error']}")
        unknown = sorted(set(settings["presets"] or []) - set(first["presets"]))
        if unknown:
            raise SystemExit(f"error: unknown preset(s) {unknown}; known: {', '.join(first['presets'])}")
        presets = {p: v for p, v in first["presets"].items() if p in (settings["presets"] or first["presets"])}
        data = empty_data(presets, first["info"], settings)
        if data["meta"]["info"]["torch"] is None:
            log("PyTorch is not installed (pip install -e '.[bench]'): its columns are skipped")
        warm_up = train_pair(next(iter(presets)), "plain", {**settings, "epochs": 1}, tmp)  # file caches, .pyc
        log(f"warm-up run: {describe(warm_up['cold'])}")
        calibrate(data, settings, log)
        jobs = round_jobs(data)
        for r in range(settings["rounds"]):
            for job in bm.rotated(jobs, r, settings["rounds"]):
                log(
                    f"round {r + 1}/{settings['rounds']}: {' '.join(str(j) for j in job if j)}: "
                    f"{describe(run_job(job, data, settings, tmp))}"
                )
    data["meta"].update(
        date=datetime.date.today().isoformat(),
        minutes=(time.perf_counter() - started) / 60,
        load_before=list(load),
        load_after=list(os.getloadavg()),
    )
    return data


# --- statistics, targets and tables (pure functions of the data) ----------------------------------


def values(results, key: str) -> list | None:
    """Per-round ``key`` of ``results``; None where none ran or any round failed."""
    if not results or any("error" in r for r in results):
        return None
    return [r[key] for r in results]


def walls(data, preset, run) -> list | None:
    """Per-round wall seconds of ``run`` ("plain cold", "plain warm", "wrapper cold", "wrapper warm",
    or "torch")."""
    if run == "torch":
        return values(data["torch"].get(preset, {}).get("runs"), "wall_s")
    return values(data["train"][preset].get(run), "wall_s")


def seconds_cell(v) -> str:
    if v is None:
        return "n/a"
    med, lo, hi = bm.summary(v)
    return f"{med:.2f} ({lo:.2f}–{hi:.2f})" if len(v) > 1 else f"{med:.2f}"


def count_cell(results, key, fmt="{:.0f}") -> str:
    v = values(results, key)
    if v is None:
        return "n/a"
    med, lo, hi = bm.summary(v)
    return fmt.format(med) + (f" ({fmt.format(lo)}–{fmt.format(hi)})" if lo != hi else "")


def test_metric(final: dict) -> tuple[str, float] | None:
    """The test split's headline metric: accuracy, else R², else the loss."""
    for name in ("accuracy", "r2", "loss"):
        if name in final:
            return name, final[name]
    return None


def metric_cell(data, preset) -> str:
    """``jaxnet train``'s test metric and the PyTorch script's (first successful round of each)."""
    ours = next((r["test"] for r in data["train"][preset].get("plain cold", []) if "test" in r), None)
    theirs = next((r["final"]["test"] for r in data["torch"].get(preset, {}).get("runs", []) if "final" in r), None)
    a, b = test_metric(ours or {}), test_metric(theirs or {})
    if a is None:
        return "n/a"
    name = {"accuracy": "acc", "r2": "R²"}.get(a[0], a[0])
    return f"{name} {a[1]:.3f}" + (f" / {b[1]:.3f}" if b is not None and b[0] == a[0] else "")


def verdict(value: float | None, bound: float, at_most: bool) -> str:
    if value is None:
        return "n/a"
    return "met" if (value <= bound if at_most else value >= bound) else "missed"


def median_or_none(v):
    return None if v is None else statistics.median(v)


def ratio_or_none(a, b):
    return None if a is None or b is None else bm.ratio(a, b)[0]


def targets(data: dict) -> list[dict]:
    """Every target with its subject, the median it is judged on and ``met``/``missed``/``n/a``."""
    t, rows = data["meta"]["targets"], []
    for p, preset in data["presets"].items():
        if not preset["mlp"]:
            continue
        cold, warm = median_or_none(walls(data, p, "plain cold")), median_or_none(walls(data, p, "plain warm"))
        vs_torch = ratio_or_none(walls(data, p, "plain warm"), walls(data, p, "torch"))
        rows += [
            {
                "target": f"`jaxnet train` cold ≤ {t['cold_s']:g} s",
                "subject": p,
                "value": cold,
                "unit": "s",
                "verdict": verdict(cold, t["cold_s"], True),
            },
            {
                "target": f"`jaxnet train` warm ≤ {t['warm_s']:g} s",
                "subject": p,
                "value": warm,
                "unit": "s",
                "verdict": verdict(warm, t["warm_s"], True),
            },
            {
                "target": "`jaxnet train` warm ≤ the PyTorch script",
                "subject": p,
                "value": vs_torch,
                "unit": "×",
                "verdict": verdict(vs_torch, 1.0, True),
            },
        ]
    for p in data["presets"]:
        for variant in data["steady"][p]:
            if variant == "make_epoch":
                continue
            r = steady_ratio(data, p, variant)
            rows.append(
                {
                    "target": f"`{variant}` steady ≥ {t['fit_vs_make_epoch']:g}× `make_epoch`",
                    "subject": p,
                    "value": r,
                    "unit": "×",
                    "verdict": verdict(r, t["fit_vs_make_epoch"], False),
                }
            )
    for w, entry in data["call"].items():
        r = ratio_or_none(call_rates(data, w, "fit"), call_rates(data, w, "torch"))
        rows.append(
            {
                "target": f"one `fit` call ≥ {t['fit_call_vs_torch']:g}× the PyTorch eager loop",
                "subject": entry["title"],
                "value": r,
                "unit": "×",
                "verdict": verdict(r, t["fit_call_vs_torch"], False),
            }
        )
    return rows


def steady_ratio(data, preset, variant):
    runs = data["steady"][preset]
    return ratio_or_none(
        values(runs[variant]["runs"], "steps_per_s"), values(runs["make_epoch"]["runs"], "steps_per_s")
    )


def call_rates(data, workload, column) -> list | None:
    """Per-round steps/s: one ``fit`` call's whole rate, or the PyTorch loop's steady rate."""
    return values(data["call"][workload][column], "first_call_steps_per_s" if column == "fit" else "steps_per_s")


def time_ratio_cell(a, b) -> str:
    return "n/a" if a is None or b is None else bm.ratio_cell(a, b)


def header(data: dict) -> list[str]:
    meta, info = data["meta"], data["meta"]["info"]
    load = " / ".join(f"{x:.2f}" for x in meta["load_before"][:1] + meta["load_after"][:1])
    return [
        "# Issue 20's targets: `jaxnet train`, `fit` and PyTorch, side by side",
        "",
        f"`{meta['command']}` on {meta['date']} ({meta['minutes']:.1f} min): {info['cpu']}, {info['cores']} CPU "
        f"cores, Python {info['python']}, jax {info['jax']} (jaxlib {info['jaxlib']}, backend {info['jax_backend']}), "
        + (f"torch {info['torch']}, " if info["torch"] else "PyTorch not installed, ")
        + f"numpy {info['numpy']}; load average (1 min) {load} before / after the run. "
        f"{bm.plural(meta['rounds'], 'round')} after {bm.plural(meta['calibration_rounds'], 'calibration round')}; "
        "every measurement in its own process; medians over the rounds (min–max). How each number is measured: "
        "the docstring of `experiments/bench_train_path.py`."
        + (f" Every run trained {meta['epochs']} epochs (not the presets' own)." if meta["epochs"] else ""),
    ]


def targets_section(data: dict) -> list[str]:
    rows = targets(data)
    missed = [r for r in rows if r["verdict"] == "missed"]
    met = sum(r["verdict"] == "met" for r in rows)
    lines = [
        "",
        "## Targets",
        "",
        f"{met} of {len(rows)} met, {len(missed)} missed"
        + (f", {len(rows) - met - len(missed)} not measured" if len(rows) - met - len(missed) else "")
        + ".",
        "",
        "| target | preset / workload | median | verdict |",
        "|---|---|---|---|",
    ]
    for r in rows:
        value = "n/a" if r["value"] is None else f"{r['value']:.2f} {r['unit']}".replace(" ×", "×")
        lines.append(f"| {r['target']} | {r['subject']} | {value} | {r['verdict']} |")
    return lines


def train_section(data: dict) -> list[str]:
    lines = [
        "",
        "## 1–2. `jaxnet train --preset P` and the PyTorch script, whole processes",
        "",
        "Seconds from process start to exit. Cold: an empty `--compile-cache` folder; warm: the same folder, "
        "the second run. PyTorch: `experiments/baselines/torch_presets.py` at its calibrated thread count "
        "(no compile cache to warm; every measured run follows the calibration runs). Programs: compiled or "
        "loaded by JAX (`backend_compile_duration` events), of them XLA compilations (cold) and persistent-cache "
        "hits (warm); compile s: lowering + XLA compilation or cache load. Test metric: `jaxnet train` / "
        "PyTorch, the same split.",
        "",
        "| preset | epochs × steps | cold s | warm s | PyTorch s | warm / PyTorch | cold / PyTorch | programs cold "
        "(XLA compiles) | compile s cold | programs warm (cache hits) | compile s warm | test metric |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p, preset in data["presets"].items():
        torch = walls(data, p, "torch")
        threads = f" [{data['torch'][p]['threads']} thr]" if torch else ""
        cold, warm = data["train"][p].get("wrapper cold"), data["train"][p].get("wrapper warm")
        epochs = data["meta"]["epochs"] or preset["epochs"]
        lines.append(
            f"| {p}{'' if preset['mlp'] else ' (not an MLP)'} | {epochs} × {preset['steps_per_epoch']} "
            f"| {seconds_cell(walls(data, p, 'plain cold'))} | {seconds_cell(walls(data, p, 'plain warm'))} "
            f"| {seconds_cell(torch)}{threads} | {time_ratio_cell(walls(data, p, 'plain warm'), torch)} "
            f"| {time_ratio_cell(walls(data, p, 'plain cold'), torch)} | {count_cell(cold, 'programs')} "
            f"({count_cell(cold, 'xla_compiles')}) | {count_cell(cold, 'compile_s', '{:.2f}')} "
            f"| {count_cell(warm, 'programs')} ({count_cell(warm, 'cache_hits')}) "
            f"| {count_cell(warm, 'compile_s', '{:.2f}')} | {metric_cell(data, p)} |"
        )
    return lines


def steady_section(data: dict) -> list[str]:
    variants = sorted({v for p in data["steady"] for v in data["steady"][p] if v != "make_epoch"}, key=len)
    lines = [
        "",
        "## 3. `fit` in steady state vs `make_epoch`, steps/s",
        "",
        "`fit` as `jaxnet train` calls it (with the validation set, its per-epoch metrics), timed from outside: "
        "(E2 − E1) × steps per epoch / (t(E2) − t(E1)) after warm-up calls (programs compiled during the timed "
        "calls in the last column; 0 expected).",
        "",
        "| preset | steps/epoch | `make_epoch` | "
        + " | ".join(f"`{v}` | `{v}` / `make_epoch`" for v in variants)
        + " | E1, E2 | programs in timed calls |",
        "|---|---|---|" + "---|---|" * len(variants) + "---|---|",
    ]
    for p, entry in data["steady"].items():
        base = values(entry["make_epoch"]["runs"], "steps_per_s")
        cells = []
        for v in variants:
            rates = values(entry.get(v, {}).get("runs"), "steps_per_s")
            cells += [bm.rate_cell(rates), bm.ratio_cell(rates, base)]
        fit_runs = entry["fit"]["runs"]
        es = "; ".join(f"{a}, {b}" for a, b in sorted({(r["e1"], r["e2"]) for r in fit_runs if "error" not in r}))
        lines.append(
            f"| {p} | {data['presets'][p]['steps_per_epoch']} | {bm.rate_cell(base)} | "
            + " | ".join(cells)
            + f" | {es or 'n/a'} | {count_cell(fit_runs, 'programs_in_timed_calls')} |"
        )
    return lines


def call_section(data: dict) -> list[str]:
    if not data["call"]:
        return ["", "## 4. One `fit` call vs the PyTorch eager loop", "", "PyTorch not installed: not measured."]
    lines = [
        "",
        "## 4. One `fit` call (compilation included) vs the PyTorch eager loop, steps/s",
        "",
        "`experiments/benchmark.py`'s workers: float32, plain SGD lr 0.01; `fit` from the call to its return "
        "over E epochs (JAX imported and the params made before it), the PyTorch loop's steady rate.",
        "",
        "| workload | E | one `fit` call | PyTorch eager | one `fit` call / PyTorch |",
        "|---|---|---|---|---|",
    ]
    for w, entry in data["call"].items():
        fit, torch = call_rates(data, w, "fit"), call_rates(data, w, "torch")
        lines.append(
            f"| {entry['title']} | {entry['fit_epochs']} | {bm.rate_cell(fit)} | {bm.rate_cell(torch)} "
            f"[{entry['threads']} thr] | {bm.ratio_cell(fit, torch)} |"
        )
    return lines


PHASES = ("imports", "setup", "fit", "evaluate", "after")


def profile_section(data: dict) -> list[str]:
    """Where the wall time of a ``jaxnet train`` run goes (the wrapper's runs, medians)."""
    lines = [
        "",
        "## Where the time goes: `jaxnet train`, phase by phase",
        "",
        "The wrapper runs timed from inside, medians over the rounds (seconds): imports (JAX, jaxnet, "
        "`jaxnet.train` with optax and chex); setup (settings, data, `init_params`, the run folder); "
        "`fit`; the final `evaluate` of each split; after (checkpoint, `metrics.json`, plots, summary). "
        "Interpreter start-up is the rest of the wall time. Compile s (lowering + XLA or cache load) "
        "falls inside setup, `fit`, evaluate and after.",
        "",
        "| preset | run | " + " | ".join(PHASES) + " | total | compile s |",
        "|---|---|" + "---|" * (len(PHASES) + 2),
    ]
    for p in data["presets"]:
        for phase in ("cold", "warm"):
            runs = [r for r in data["train"][p].get(f"wrapper {phase}", []) if "phases" in r]
            if not runs:
                continue
            cell = lambda key, runs=runs: f"{statistics.median(r['phases'][key] for r in runs):.2f}"
            compile_s = statistics.median(r["compile_s"] for r in runs)
            cells = [cell(k) for k in (*PHASES, "total")]
            lines.append(f"| {p} | {phase} | " + " | ".join(cells) + f" | {compile_s:.2f} |")
    return lines


def checks_section(data: dict) -> list[str]:
    lines = [
        "",
        "## Checks",
        "",
        "The wrapper that counts the compilations against the plain command (wall seconds; the tables use "
        "the plain command's):",
        "",
        "| preset | plain cold | wrapper cold | plain warm | wrapper warm |",
        "|---|---|---|---|---|",
    ]
    for p in data["presets"]:
        cells = [seconds_cell(walls(data, p, f"{m} {ph}")) for ph in ("cold", "warm") for m in ("plain", "wrapper")]
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    cores = data["meta"]["info"]["cores"]
    lines += ["", "PyTorch thread calibration (median over the calibration rounds; the chosen one in the tables):", ""]
    lines += ["| script or loop | " + " | ".join(f"{t} thread(s)" for t in bm.thread_choices(cores)) + " | chosen |"]
    lines += ["|---|" + "---|" * (len(bm.thread_choices(cores)) + 1)]
    for kind, key, fmt in (("torch", "wall_s", "{:.2f} s"), ("call", "steps_per_s", "{:,.0f} steps/s")):
        for name, entry in data[kind].items():
            cells = []
            for t in bm.thread_choices(cores):
                v = [r[key] for r in entry["calibration"].get(str(t), []) if "error" not in r]
                cells.append(fmt.format(statistics.median(v)) if v else "n/a")
            lines.append(f"| {entry.get('title', name)} | " + " | ".join(cells) + f" | {entry.get('threads', 'n/a')} |")
    jax_in_torch = [p for p, e in data["torch"].items() if any(r.get("jax_imported") for r in e["runs"])]
    if jax_in_torch:
        lines += ["", f"**The PyTorch script imported JAX** for {', '.join(jax_in_torch)}: its times are not clean."]
    return lines


def errors_section(data: dict) -> list[str]:
    errors = []
    for p, runs in data["train"].items():
        errors += [f"- {p}, jaxnet train {k}: {r['error']}" for k, rs in runs.items() for r in rs if "error" in r]
    for p, e in data["torch"].items():
        errors += [f"- {p}, PyTorch script: {r['error']}" for r in e["runs"] if "error" in r]
    for p, e in data["steady"].items():
        errors += [f"- {p}, {v}: {r['error']}" for v, x in e.items() for r in x["runs"] if "error" in r]
    for w, e in data["call"].items():
        errors += [f"- {w}, {c}: {r['error']}" for c in ("fit", "torch") for r in e[c] if "error" in r]
    return ["", "## Failed runs", "", *sorted(set(errors))] if errors else []


def render(data: dict) -> str:
    """The results markdown: every number in it comes from ``data``."""
    sections = [header(data), targets_section(data), train_section(data), steady_section(data)]
    sections += [call_section(data), profile_section(data), checks_section(data), errors_section(data)]
    return "\n".join(line for s in sections for line in s) + "\n"


# --- command line --------------------------------------------------------------------------------


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=bm.positive_int, default=None, help="measured rounds (default 3; --quick: 1)")
    parser.add_argument(
        "--calibration-rounds",
        type=bm.positive_int,
        default=None,
        help="PyTorch thread-count rounds (default 1; --quick: 1)",
    )
    parser.add_argument(
        "--presets",
        type=lambda s: [p.strip() for p in s.split(",") if p.strip()],
        default=None,
        help=f"comma-separated presets (default: all; --quick: {','.join(QUICK_PRESETS)})",
    )
    parser.add_argument(
        "--epochs",
        type=bm.positive_int,
        default=None,
        help=f"epochs of every train run and PyTorch script (default: each preset's; --quick: {QUICK_EPOCHS})",
    )
    parser.add_argument(
        "--window",
        type=bm.positive_float,
        default=None,
        help="seconds per steady-state loop (default 0.5; --quick: 0.05)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run; prints only unless --out")
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=None,
        help=f"results file, a .json beside it (default {RESULTS.relative_to(ROOT)} for a full run; "
        "a quick or partial run writes only where --out says)",
    )
    parser.add_argument("--timeout", type=bm.positive_float, default=900.0, help="seconds per process")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def settings_of(args, argv) -> dict:
    return {
        "rounds": args.rounds or (1 if args.quick else 3),
        "calibration_rounds": args.calibration_rounds or 1,
        "presets": args.presets or (list(QUICK_PRESETS) if args.quick else None),
        "epochs": args.epochs or (QUICK_EPOCHS if args.quick else None),
        "window_s": args.window or (0.05 if args.quick else 0.5),
        "fit_epochs": 4 if args.quick else None,  # the call workloads' (benchmark.py's quick setting)
        "timeout_s": args.timeout,
        "quick": args.quick,
        "command": ("python experiments/bench_train_path.py " + shlex.join(argv)).strip(),
    }


def is_full(args, settings) -> bool:
    """A run that may write the committed results: every preset, the presets' epochs, the default
    window, at least 3 rounds and 1 calibration round, PyTorch installed."""
    return (
        not args.quick
        and args.presets is None
        and args.epochs is None
        and args.window is None
        and settings["rounds"] >= 3
        and settings["calibration_rounds"] >= 1
        and bm.has_torch()
    )


def write_results(out: pathlib.Path, data: dict) -> None:
    """The markdown and, beside it, the raw data as JSON; each written atomically."""
    bm.write_atomic(out.with_suffix(".json"), json.dumps(data, indent=1) + "\n")
    bm.write_atomic(out, render(data))
    print(f"wrote {out} and {out.with_suffix('.json').name}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.worker is not None:
        spec = json.loads(args.worker)
        print(MARK + json.dumps(WORKERS[spec["kind"]](spec)), flush=True)
        return 0
    settings = settings_of(args, argv)
    full = is_full(args, settings)
    out = args.out or (RESULTS if full else None)
    if out is not None and not full and out.resolve() == RESULTS.resolve():
        print(
            f"error: a quick or partial run never writes {RESULTS.relative_to(ROOT)}: give another --out",
            file=sys.stderr,
        )
        return 2
    use_this_checkout()
    data = measure(settings, log=lambda s: print(s, flush=True))
    print(render(data))
    if out is None:
        print("a quick or partial run: nothing written (give --out PATH to keep it)")
        return 0
    write_results(out, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
