"""The ``jaxnet`` command line: :func:`build_parser` and :func:`main` (the ``jaxnet`` script and
``python -m jaxnet``).

One module per command: :mod:`jaxnet.cli.check`, :mod:`jaxnet.cli.train` and :mod:`jaxnet.cli.sweep`
(``jaxnet train --seeds`` / ``--sweep``); :mod:`jaxnet.cli.settings` resolves the flags of a run
once into a :class:`~jaxnet.cli.settings.Settings`. Heavy imports (JAX, optax, matplotlib) happen
inside the commands, so ``jaxnet --help`` stays fast.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings

from . import cache, check, train
from .output import CommandFailed
from .settings import DEFAULT_PRESET, OPTIMIZERS
from .sweep import SWEPT

__all__ = ["OPTIMIZERS", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``jaxnet check`` and ``jaxnet train``; each subcommand sets ``run`` to its command."""
    parser = argparse.ArgumentParser(prog="jaxnet", description="Neural networks with hand-derived gradients on JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_check(sub)
    _add_train(sub)
    return parser


def main(argv=None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the command; its exit code (argparse
    exits with 2 on bad flags)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the launcher of --processes repeats them
    if getattr(args, "batch", 1) < 1:
        parser.error("--batch must be a positive integer")
    counts = ("epochs", "patience", "check_every", "batch_size", "save_every", "devices", "seeds", "eval_every")
    positive = ("epochs", "patience", "devices", "seeds", "eval_every", "processes")
    for name in (*counts, "processes", "process_id"):
        value = getattr(args, name, None)
        if value is not None and (value < 0 or (name in positive and value == 0)):
            kind = "a positive integer" if name in positive else "an integer >= 0"
            args.parser.error(f"--{name.replace('_', '-')} must be {kind}, got {value}")
    if getattr(args, "seeds", None) and args.seed + args.seeds > 2**32:
        args.parser.error(f"--seed {args.seed} --seeds {args.seeds}: the seeds run past 2**32 - 1")
    with warnings.catch_warnings():
        warnings.showwarning = _warning_line(args.command)
        try:
            cache.configure(args.compile_cache, args.no_compile_cache)
        except ValueError as e:
            print(f"jaxnet {args.command}: {e}", file=sys.stderr)
            return 2
        try:
            return _finish(args.run(args))
        except CommandFailed as e:
            print(f"jaxnet {args.command}: {e}", file=sys.stderr)
            return _finish(e.exit_code)


def _finish(code: int) -> int:
    """``code``, the command's exit code; a process of several (``--processes``) that fails ends
    here at once (:func:`jaxnet.distributed.leave`), not in JAX's shutdown barrier, where it would
    wait for the others while they wait for it."""
    import jax

    if code and jax.distributed.is_initialized():
        from ..distributed import leave

        leave(code)
    return code


def _warning_line(command):
    """A ``warnings.showwarning`` that prints jaxnet's own warnings (about the data, ...) as
    ``jaxnet <command>: warning: <message>``, and others as Python does."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if category is UserWarning and f"{os.sep}jaxnet{os.sep}" in filename:
            print(f"jaxnet {command}: warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    return show


_PRESET_DEFAULT = "default: the preset's, listed below"
_NETWORK_DEFAULT = "default: the preset's network, which a run prints first"


def _network_flags(p, default_preset):
    from ..activations import ACTIVATIONS
    from ..presets import TRAIN_PRESETS

    p.add_argument(
        "--preset",
        choices=sorted(TRAIN_PRESETS),
        default=default_preset,
        metavar="PRESET",
        help=f"a network of the notes and its data: {', '.join(sorted(TRAIN_PRESETS))} "
        f"(default: {default_preset or 'every network of the notes'}; see the table below)",
    )
    p.add_argument(
        "--hidden",
        type=_csv_ints,
        metavar="N,N,...",
        help="hidden layer sizes of an MLP preset, e.g. 128,64; '' for none (input and output sizes "
        f"come from the data; {_NETWORK_DEFAULT})",
    )
    p.add_argument(
        "--activation",
        type=_activations,
        metavar="NAME[,NAME...]",
        help=f"one hidden activation, or one per hidden layer; choices: {', '.join(ACTIVATIONS)} ({_NETWORK_DEFAULT})",
    )
    p.add_argument(
        "--loss",
        choices=["softmax_cross_entropy", "sigmoid_cross_entropy", "squared_error"],
        help=f"the loss head ({_NETWORK_DEFAULT})",
    )
    p.add_argument("--reduction", choices=["mean", "sum"], help=f"the loss over the batch ({_NETWORK_DEFAULT})")
    p.add_argument(
        "--l2",
        type=_penalty,
        metavar="L2",
        help=f"L2 strength (l2/2 sum W^2), a finite number >= 0 ({_NETWORK_DEFAULT})",
    )
    p.add_argument(
        "--l2-bias",
        dest="l2_bias",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"penalise the biases too ({_NETWORK_DEFAULT})",
    )
    p.add_argument(
        "--data",
        metavar="PATH",
        help="your data instead of the preset's: .npz (arrays x [examples, features] and y), "
        ".npy (last column = target) or UTF-8 .csv",
    )
    p.add_argument("--target", metavar="COLUMN", help="CSV: the name of the target column (default: the last column)")
    p.add_argument(
        "--header",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="CSV: the first row is a header (--header) or data (--no-header) (default: a header "
        "when it is not all numbers)",
    )


def _presets_table(title: str) -> str:
    """The ``--help`` epilog under ``title``: each preset's training defaults and what it is."""
    from ..presets import TRAIN_PRESETS

    lines = [title, f"  {'preset':<20} {'optimizer':<9} {'lr':>7} {'epochs':>6} {'batch':>5}  what"]
    for name in sorted(TRAIN_PRESETS):
        p = TRAIN_PRESETS[name]
        lines.append(
            f"  {name:<20} {p.optimizer:<9} {p.learning_rate:>7g} {p.epochs:>6} "
            f"{p.batch_size or 'full':>5}  {p.description}"
        )
    return "\n".join(lines)


def _cache_flags(p) -> None:
    """``--compile-cache DIR`` / ``--no-compile-cache`` (see :mod:`jaxnet.cli.cache`)."""
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--compile-cache",
        metavar="DIR",
        help=f"keep compiled programs in DIR (default: ${cache.ENV}, else {cache.default_folder()}), so the next "
        "run of the same network skips compiling",
    )
    group.add_argument(
        "--no-compile-cache", action="store_true", help=f"compile afresh, keep nothing (also {cache.ENV}=off)"
    )


def _add_check(sub) -> None:
    p = sub.add_parser(
        "check",
        help="check hand-derived gradients against autodiff and finite differences: every network of the notes, "
        "or the network that the train flags describe",
        epilog=_presets_table("presets (--preset checks one preset's network on its data):"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _network_flags(p, None)
    p.add_argument(
        "--dtype", choices=["float64", "float32"], default="float64", help="working dtype (default: float64)"
    )
    p.add_argument(
        "--seed", metavar="N", type=_seed, default=0, help="seed of the random params (and data) (default: 0)"
    )
    p.add_argument("--batch", metavar="N", type=int, default=16, help="number of examples (default: 16)")
    p.add_argument(
        "--kinks",
        choices=["exclude", "nudge", "count"],
        default="exclude",
        help="examples within 1e-4 of a ReLU kink or a max-pool tie: excluded, nudged, or only counted "
        "(default: exclude)",
    )
    p.add_argument(
        "--per-example",
        dest="per_example",
        action="store_true",
        help="also check per-example gradients and their norms against vmapped autodiff",
    )
    _cache_flags(p)
    p.set_defaults(run=check.run, parser=p)


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a network of the notes (or your own data) with hand-derived gradients",
        epilog=_presets_table("presets (the defaults of the flags a run does not give):"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _network_flags(p, DEFAULT_PRESET)
    p.add_argument("--optimizer", choices=OPTIMIZERS, help=f"the optimizer ({_PRESET_DEFAULT})")
    p.add_argument(
        "--lr", type=_learning_rate, help=f"learning rate, a number > 0 that float32 holds ({_PRESET_DEFAULT})"
    )
    p.add_argument("--epochs", metavar="N", type=int, help=f"passes over the training set ({_PRESET_DEFAULT})")
    p.add_argument(
        "--batch-size",
        metavar="N",
        dest="batch_size",
        type=int,
        help=f"mini-batch size, 0 for the full batch ({_PRESET_DEFAULT})",
    )
    p.add_argument(
        "--seed",
        metavar="N",
        type=_seed,
        default=0,
        help="seeds the data split, initialisation and shuffling, an integer in [0, 2**32) (default: 0)",
    )
    p.add_argument(
        "--grads",
        choices=["manual", "autodiff"],
        default="manual",
        help="hand-derived gradients, or autodiff's for comparison (default: manual)",
    )
    p.add_argument(
        "--check", action="store_true", help="verify the gradients against autodiff and finite differences first"
    )
    p.add_argument(
        "--check-every",
        metavar="N",
        dest="check_every",
        type=int,
        default=0,
        help="a gradient spot check every N steps during training (default: 0, none)",
    )
    p.add_argument(
        "--eval-every",
        metavar="N",
        dest="eval_every",
        type=int,
        default=1,
        help="evaluate the metrics on the whole training and validation sets every N epochs and at the last "
        "(default: 1, every epoch); the mean step loss is recorded every epoch",
    )
    p.add_argument(
        "--patience",
        metavar="N",
        type=int,
        help="stop when the validation loss has not improved for N epochs (default: never)",
    )
    p.add_argument(
        "--seeds",
        metavar="N",
        type=int,
        help="train this many seeds (seed, seed+1, ...) side by side, a sweep (default: one run)",
    )
    p.add_argument(
        "--sweep",
        type=_sweep_spec,
        metavar="SPEC",
        help='a grid trained side by side, e.g. "lr=1e-3,1e-2 l2=0,1e-4 momentum=0,0.9 hidden=16;32,32"',
    )
    p.add_argument(
        "--devices",
        metavar="N",
        type=int,
        help="data-parallel over this many devices (must divide the batch size; with --processes, the devices "
        "of all processes); with --seeds/--sweep, the replicas are split over them (default: 1)",
    )
    _process_flags(p)
    p.add_argument(
        "--out",
        metavar="DIR",
        help="output folder (default: a new runs/<preset or data file>-<date-time>; "
        "with --resume, the checkpoint's folder)",
    )
    p.add_argument("--force", action="store_true", help="replace the outputs of another run in --out")
    p.add_argument(
        "--resume", metavar="CHECKPOINT", help="a checkpoint.npz to continue from (same settings, more --epochs)"
    )
    p.add_argument(
        "--save-every",
        metavar="N",
        dest="save_every",
        type=int,
        default=0,
        help="checkpoint every N epochs (default: 0, meaning every epochs/20)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _cache_flags(p)
    p.set_defaults(run=train.run, parser=p)


def _process_flags(p) -> None:
    """``--processes``, ``--coordinator``, ``--process-id`` (see :mod:`jaxnet.cli.processes`)."""
    p.add_argument(
        "--processes",
        metavar="P",
        type=int,
        help="train over P processes, --devices N being the devices of all of them (a multiple of P): alone, "
        "starts P processes on this machine with N/P CPU devices each; with --coordinator and --process-id, "
        "this command is one of them (run one per machine) (default: 1, this process)",
    )
    p.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="with --processes P and --process-id I: join the P processes through process 0's HOST:PORT",
    )
    p.add_argument(
        "--process-id",
        metavar="I",
        dest="process_id",
        type=int,
        help="with --processes P and --coordinator: this process's id, 0 (the one that prints and writes) to P-1",
    )


def _checked(convert, test, what: str):
    """An argparse ``type``: ``convert(text)`` (a number) that passes ``test``, else an error saying
    it must be ``what``."""

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if convert is int else 'a number'}, got {text!r}"
            ) from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"{what}, got {text!r}")
        return value

    return parse


_learning_rate = _checked(
    float, lambda v: _float32_positive(v), "a learning rate must be a number > 0 that float32 holds (1.2e-38 to 3.4e38)"
)
_seed = _checked(
    int, lambda v: 0 <= v < 2**32, "a seed must be an integer in [0, 2**32)"
)  # jax.random.key's and NumPy's
_penalty = _checked(float, lambda v: math.isfinite(v) and v >= 0, "an L2 strength must be a finite number >= 0")


def _float32_positive(value: float) -> bool:
    """Whether ``value`` is > 0 and a normal float32 number (training runs in float32: beyond its
    largest it is inf, below its smallest normal it underflows towards 0)."""
    import numpy as np

    info = np.finfo(np.float32)
    return math.isfinite(value) and float(info.smallest_normal) <= value <= float(info.max)


_SWEPT_RANGE = {  # name: (test, what it must be)
    "lr": (lambda v: _float32_positive(v), "a number > 0 that float32 holds (1.2e-38 to 3.4e38)"),
    "l2": (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
    "momentum": (lambda v: math.isfinite(v) and 0 <= v < 1, "in [0, 1)"),
}


def _csv_ints(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()] if text.strip() else []
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def _activations(text):
    from ..activations import ACTIVATIONS

    names = [v.strip() for v in text.split(",")]
    unknown = [n for n in names if n not in ACTIVATIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown activation {unknown[0]!r}; choices: {', '.join(ACTIVATIONS)}")
    return names[0] if len(names) == 1 else names


def _sweep_spec(text):
    """``"lr=1e-3,1e-2 l2=0,1e-4 momentum=0,0.9 hidden=16;32,32"`` -> {name: [values]}."""
    spec = {}
    if not text.split():
        raise argparse.ArgumentTypeError(
            f"--sweep: expected name=v1,v2,... with name in {', '.join(SWEPT)}; got nothing"
        )
    for item in text.split():
        name, _, values = item.partition("=")
        if name not in SWEPT or not values:
            raise argparse.ArgumentTypeError(
                f"--sweep: expected name=v1,v2,... with name in {', '.join(SWEPT)}; got {item!r}"
            )
        if name in spec:
            raise argparse.ArgumentTypeError(f"--sweep: {name} given twice; give its values once, e.g. {name}=a,b")
        try:
            spec[name] = (
                [_csv_ints(v) for v in values.split(";")] if name == "hidden" else [float(v) for v in values.split(",")]
            )
        except (ValueError, argparse.ArgumentTypeError):
            raise argparse.ArgumentTypeError(f"--sweep: bad values in {item!r}") from None
        test, what = _SWEPT_RANGE.get(name, (lambda v: True, ""))
        bad = [v for v in spec[name] if name != "hidden" and not test(v)]
        if bad:
            raise argparse.ArgumentTypeError(f"--sweep: every {name} must be {what}, got {bad[0]!r} in {item!r}")
    return spec
