"""``jaxnet train``: one run with a progress bar, checkpoints, a summary table and plots; with
``--seeds`` / ``--sweep``, a sweep (:mod:`jaxnet.cli.sweep`). Both from one :class:`Settings`."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from typing import TYPE_CHECKING, Any

from . import folders, processes, sweep
from .output import CommandFailed, all_finite, number, write_json
from .settings import RESUME_KEYS, Settings, resolve

if TYPE_CHECKING:
    import jax

    from ..network import Params
    from ..train import FitResult

SINGLE_RUN_FLAGS = {
    "resume": None,
    "patience": None,
    "check": False,
    "check_every": 0,
    "save_every": 0,
    "eval_every": 1,
}
"""The flags (and their unset values) of a single run that a sweep (``--seeds``/``--sweep``) does not support."""


def run(args) -> int:
    """The settings of the flags ``args``, resolved once, then a sweep or one training run; with
    ``--processes``, the launcher of the processes or one of them (:mod:`jaxnet.cli.processes`)."""
    try:
        how = processes.layout(args)
    except ValueError as e:
        raise CommandFailed(str(e)) from None
    code = processes.start(args, how)  # joins the others before any JAX computation
    if code is not None:  # the launcher: the processes ran
        return code
    if getattr(args, "seeds", None) or getattr(args, "sweep", None):
        given = [name for name, unset in SINGLE_RUN_FLAGS.items() if getattr(args, name, unset) != unset]
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise CommandFailed(
                f"{flags}: not supported with --seeds/--sweep (a sweep trains every replica "
                "from scratch, without checks, early stopping or checkpoints)"
            )
    try:
        settings = resolve(args)
    except ValueError as e:
        raise CommandFailed(str(e)) from None
    if settings.is_sweep:
        return sweep.run(settings)
    return train(settings)


@dataclasses.dataclass
class _Start:
    """Where training starts: fresh parameters at epoch 0, or a resumed checkpoint's state."""

    params: Params
    opt_state: object
    epoch: int
    step: int
    key: jax.Array  # the training (shuffling) key
    history: dict  # the metrics so far, per name
    state: list | None = None  # the network's state (BatchNorm's running statistics), None without one


def train(settings: Settings) -> int:
    """One training run: initialise (or resume), check first if asked, fit, evaluate, write
    ``metrics.json``, ``checkpoint.npz`` and the plots into ``settings.out``, print the summary.
    With several processes, each trains and only process 0 prints and writes; should one stop
    before training (a refused folder, an unreadable checkpoint), all stop."""
    optimizer = settings.optimizer_transform()
    from ..distributed import is_main_process

    if is_main_process():  # the one that plots
        _import_in_background("jaxnet.plots")  # matplotlib loads while JAX compiles and trains
    with processes.starting_together() as ready:
        start = _initial_state(settings, optimizer)
        if settings.patience and not len(settings.split.x_val):
            raise CommandFailed(
                f"--patience needs a validation split, and the {len(settings.split.x_train)} "
                f"examples of {settings.data_name} leave none"
            )
        with _run_folder(settings) as out:
            ready(_fingerprint(settings, start))
            return _train(dataclasses.replace(settings, out=out), optimizer, start)


def _fingerprint(s: Settings, start: _Start) -> bytes:
    """The SHA-256 of what every process must hold alike: the split's arrays, the initial params,
    optimizer state, network state and key, the epoch and step (with several processes; ``b""``
    in one, which has nothing to compare)."""
    import hashlib

    import jax
    import numpy as np

    if jax.process_count() == 1:
        return b""
    split, digest = s.split, hashlib.sha256(repr((start.epoch, start.step)).encode())
    arrays = [split.x_train, split.y_train, split.x_val, split.y_val, split.x_test, split.y_test]
    for a in arrays + jax.tree.leaves((start.params, start.opt_state, start.state, jax.random.key_data(start.key))):
        digest.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    return digest.digest()


def _run_folder(s: Settings) -> contextlib.AbstractContextManager[str | None]:
    """The run's folder (:func:`folders.run_folder`) in process 0; ``None`` in the others, which write nothing."""
    from ..distributed import is_main_process

    if not is_main_process():
        return contextlib.nullcontext(None)
    return folders.run_folder(s.out, s.run_name, force=s.force, resume=s.resume)


def _import_in_background(module: str) -> None:
    """Start importing ``module`` in a daemon thread: a later ``import`` of it waits for that one
    (Python's per-module import lock) instead of starting over. An error is left to that later
    import to raise, where the command reports it."""
    import contextlib
    import importlib
    import threading

    def load():
        with contextlib.suppress(Exception):  # raised again, and reported, by the import that needs it
            importlib.import_module(module)

    threading.Thread(target=load, daemon=True).start()


def _train(settings: Settings, optimizer, start: _Start) -> int:
    """:func:`train` once the output folder is ``settings.out`` (``None`` in processes other than 0)."""
    from ..distributed import is_main_process, to_host

    main = is_main_process()
    if main:
        _print_header(settings)
    if settings.check:
        _check_first(settings, start.params, show=main)
    result, history = _fit(settings, optimizer, start)
    params, opt_state, state = to_host((result.params, result.opt_state, result.state))  # in every process
    result = dataclasses.replace(result, params=params, opt_state=opt_state, state=state)
    final = _evaluate(settings, result.params, result.state)  # in every process: the same exit code in each
    if main:
        _save(
            settings, history, start.key, result.params, result.opt_state, result.epoch, result.step, result.state
        )  # after early stopping: the best params
        _write_metrics(
            settings,
            history,
            result.epoch,
            result.step,
            final=final,
            stopped_early=result.stopped_early,
            **({"worst_grad_gap": result.worst_gap} if settings.check_every else {}),
        )
        _plot(settings, history, result.params, result.state)
        _print_summary(settings, final, result)
    if not all_finite(final):
        raise CommandFailed("the final metrics are not all finite (see the table); the run failed", exit_code=3)
    return 0


def _out(s: Settings) -> str:
    """The run's folder: ``s.out``, which :func:`train` sets (to the folder it made) before any output."""
    assert s.out is not None, "the run's folder is set before anything is written to it"
    return s.out


def _write_metrics(s: Settings, history: dict, epochs: int, steps: int, **results: object) -> None:
    """``metrics.json``: the network, settings, epochs and steps, the history and ``results``."""
    write_json(
        os.path.join(_out(s), "metrics.json"),
        {
            "network": str(s.net),
            "config": s.config,
            "epochs": epochs,
            "steps": steps,
            **results,
            "history": history,
            "devices": s.devices or 1,
            "processes": _process_count(),
        },
    )


def _process_count() -> int:
    """How many processes train together (``jax.process_count()``: 1 unless joined, see :mod:`jaxnet.distributed`)."""
    import jax

    return jax.process_count()


def _initial_state(settings: Settings, optimizer) -> _Start:
    """Fresh parameters from ``split(key(seed))[0]``, or the ``--resume`` checkpoint when its
    recorded settings are these (:class:`CommandFailed` otherwise)."""
    import jax

    from .. import checkpoint
    from ..network import init_params

    key_init, key_train = jax.random.split(jax.random.key(settings.seed))
    params = init_params(key_init, settings.net)
    if not settings.resume:
        return _Start(params, None, 0, 0, key_train, {})
    try:
        _check_same_settings(settings, checkpoint.load(settings.resume))  # before the network: says why it differs
        ck = checkpoint.load(settings.resume, settings.net, optimizer.init(params))
    except checkpoint.CheckpointError as e:
        raise CommandFailed(f"cannot resume: {e}") from None
    if ck.key is None:
        raise CommandFailed(f"cannot resume: {settings.resume} holds no training key (jaxnet train always saves one)")
    if len({len(v) for v in ck.history.values()}) > 1:
        raise CommandFailed(f"cannot resume: {settings.resume}: the history's metrics have different lengths")
    if settings.epochs <= ck.epoch:
        raise CommandFailed(
            f"cannot resume {settings.resume}: it is at epoch {ck.epoch} already and --epochs "
            f"{settings.epochs} asks for no more (give --epochs > {ck.epoch} to train on)"
        )
    history = ck.history or _older_history(ck.extra)
    return _Start(ck.params, ck.opt_state, ck.epoch, ck.step, ck.key, history, ck.state)


def _check_same_settings(settings: Settings, ck) -> None:
    """Refuse a checkpoint saved with other :data:`RESUME_KEYS` settings, naming each change."""
    saved = ck.extra.get("config", {}) if isinstance(ck.extra.get("config"), dict) else {}
    changed = {k: (saved.get(k), settings.config[k]) for k in RESUME_KEYS if saved.get(k) != settings.config[k]}
    if changed.pop("data_sha256", None) is not None:
        if settings.data and saved.get("data") and "data_sha256" not in saved:
            raise CommandFailed(
                f"cannot resume {settings.resume}: it records no hash of its data (written by an older "
                "jaxnet), so --data cannot be checked against it; train afresh"
            )
        if saved.get("data") is None or settings.data is None:
            raise CommandFailed(
                f"cannot resume {settings.resume}: it was trained on {saved.get('data') or 'a preset'}"
                f"'s data, not {settings.data_name}'s"
            )
        raise CommandFailed(
            f"cannot resume {settings.resume}: the contents of --data {settings.data} differ from the "
            f"data the checkpoint was trained on ({saved.get('data')}; their SHA-256 differ)"
        )
    if changed:
        what = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise CommandFailed(f"cannot resume {settings.resume} with other settings ({what})")


def _older_history(extra) -> dict:
    """The history that checkpoints written before ``history=`` kept in ``extra`` (null for NaN)."""
    old = extra.get("history")
    if not isinstance(old, dict):
        return {}
    return {k: [float("nan") if v is None else float(v) for v in vs] for k, vs in old.items() if isinstance(vs, list)}


def _print_header(s: Settings) -> None:
    import jax

    split = s.split
    print(
        f"jaxnet train: {s.net}; {len(split.x_train)}/{len(split.x_val)}/{len(split.x_test)} train/val/test; "
        f"{s.optimizer} lr={s.lr:g}, batch {s.batch_size}, "
        f"{s.epochs} epochs, {s.grads} gradients, device {jax.devices()[0].platform}"
        + (f" x {s.devices} (data-parallel{_over_processes()})" if s.devices and s.devices > 1 else "")
    )


def _over_processes() -> str:
    """``", 2 processes"`` when several processes train together, else ``""``."""
    count = _process_count()
    return f", {count} processes" if count > 1 else ""


def _check_first(s: Settings, params, show: bool = True) -> None:
    """``--check``: the gradients at the initial params against autodiff and finite differences on
    the first 64 training examples, the report printed (``show``); a failure stops the run (exit code 1)."""
    import jax
    import jax.numpy as jnp

    from ..gradcheck import check_grads
    from ..network import loss, manual_grads, needs_key

    net, n = s.net, min(64, len(s.split.x_train))
    mode: dict[str, Any] = (
        {"key": jax.random.key(0)} if needs_key(net) else {}
    )  # training mode; Dropout's masks from a fixed key
    report = check_grads(
        lambda p, x, y: loss(p, net, x, y, **mode),
        lambda p, x, y: manual_grads(p, net, x, y, **mode),
        params,
        jnp.asarray(s.split.x_train[:n]),
        jnp.asarray(s.split.y_train[:n]),
        net=net,
        mode=mode,
        kinks="nudge",
    )  # zero initial biases put units exactly at kinks on zero pixels
    if show:
        print(report)
    if not report.ok:
        raise CommandFailed("the gradient check failed; not training", exit_code=1)


def _checkpoint_path(s: Settings) -> str:
    return os.path.join(_out(s), "checkpoint.npz")


def _save(s: Settings, history, key, params, opt_state, epoch, step, state=None) -> None:
    from .. import checkpoint

    checkpoint.save(
        _checkpoint_path(s),
        net=s.net,
        params=params,
        opt_state=opt_state,
        epoch=epoch,
        step=step,
        key=key,
        extra={"config": s.config},
        history=history,
        state=state,
    )


def _fit(s: Settings, optimizer, start: _Start) -> tuple[FitResult, dict]:
    """``jaxnet.train.fit`` from ``start`` with a progress bar and a checkpoint every ``save_every``
    epochs (at the end of the compiled call that reaches each multiple of it: ``fit`` runs about a
    second of epochs a call); ``(result, history)``. A divergence is exit code 3, data the network
    cannot take 2."""
    from tqdm import tqdm

    from ..distributed import is_main_process, to_host
    from ..train import TrainingDiverged, fit

    main = is_main_process()  # the others train along, printing and writing nothing
    bar = tqdm(total=s.epochs - start.epoch, desc="epochs", disable=s.quiet or not main, leave=False)
    history = {k: list(v) for k, v in start.history.items()}  # fit appends every epoch's metrics
    last_good = s.resume  # this run's last checkpoint (None before its first)
    reached = [start.epoch, start.step]  # the last finished epoch and its step

    def on_epoch(epoch, params, opt_state, step, metrics, state=None):  # after each compiled call
        nonlocal last_good
        if epoch // s.save_every > reached[0] // s.save_every:  # the last good checkpoint, should a later epoch diverge
            params, opt_state, state = to_host((params, opt_state, state))  # in every process (it may gather)
            if main:
                _save(s, history, start.key, params, opt_state, epoch, step, state)
                last_good = _checkpoint_path(s)
        bar.update(epoch - reached[0])
        reached[:] = epoch, step
        bar.set_postfix(
            {
                k: f"{v:.4g}"
                for k, v in metrics.items()
                if k in ("train_loss", "val_loss", "val_accuracy", "val_rmse", "train_step_loss") and math.isfinite(v)
            }
        )

    try:
        result = fit(s.net, start.params, s.split.x_train, s.split.y_train, optimizer, s.epochs, s.batch_size,
                     start.key, on_epoch=on_epoch, history=history, **_fit_options(s, start))  # fmt: skip
    except TrainingDiverged as e:
        bar.close()
        if main:
            _write_metrics(s, history, *reached, diverged=str(e), final=None)  # the history up to the divergence
        kept = f"; the last good checkpoint is {last_good}" if last_good else "; no checkpoint was written"
        raise CommandFailed(f"{e}{kept}", exit_code=3) from None
    except ValueError as e:  # data the network cannot take (targets out of range, ...)
        bar.close()
        raise CommandFailed(str(e)) from None
    bar.close()
    return result, history


def _fit_options(s: Settings, start: _Start) -> dict:
    """``fit``'s keyword arguments from the settings and the start (a resumed run's counters)."""
    split = s.split
    return {
        "grads": s.grads,
        "val": (split.x_val, split.y_val) if len(split.x_val) else None,
        "patience": s.patience,
        "check_every": s.check_every,
        "eval_every": s.eval_every,
        "opt_state": start.opt_state,
        "start_epoch": start.epoch,
        "start_step": start.step,
        "epochs_per_call": "auto",  # about a second a call: the bar moves, the host stays out of the way
        "devices": s.devices,
        "state": start.state,
    }


def _evaluate(s: Settings, params, state=None) -> dict:
    """The final metrics per split (train, val, test; empty splits left out), in evaluation mode
    (``state``: the network's, for BatchNorm)."""
    from ..train import evaluate

    split = s.split
    splits = {
        "train": (split.x_train, split.y_train),
        "val": (split.x_val, split.y_val),
        "test": (split.x_test, split.y_test),
    }
    return {name: evaluate(params, s.net, xs, ys, state=state) for name, (xs, ys) in splits.items() if len(xs)}


def _plot(s: Settings, history: dict, params, state=None) -> None:
    """The learning curves; the decision boundary of a 2-D classifier, the fit of a 1-D regression."""
    from .. import plots

    out = _out(s)
    if history:
        plots.curves(history, os.path.join(out, "curves.png"))
    shape = s.split.x_train.shape[1:]
    d = shape[0] if len(shape) == 1 else None
    classification = s.net.loss != "squared_error"
    if d == 2 and classification:
        plots.decision_boundary(
            params,
            s.net,
            s.split.x_train,
            s.split.y_train,
            os.path.join(out, "decision_boundary.png"),
            axis_labels=("feature 0 (standardised)", "feature 1 (standardised)"),
            state=state,
        )
    if d == 1 and not classification:
        plots.regression_fit(params, s.net, s.split.x_train, s.split.y_train, os.path.join(out, "fit.png"), state=state)


def _print_summary(s: Settings, final: dict, result: FitResult) -> None:
    names = sorted({k for m in final.values() for k in m})
    print(f"\n{'split':<6}" + "".join(f" {n:>11}" for n in names))
    for split_name, m in final.items():
        print(f"{split_name:<6}" + "".join(f" {number(m[n])}" for n in names))
    print(
        f"\n{result.epoch} epochs, {result.step} steps{' (stopped early)' if result.stopped_early else ''}; "
        f"wrote {s.out}/metrics.json, checkpoint.npz and plots"
    )
