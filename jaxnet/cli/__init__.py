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
import sys

from . import check, train
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
    if getattr(args, "batch", 1) < 1:
        parser.error("--batch must be a positive integer")
    for name in ("epochs", "patience", "check_every", "batch_size", "save_every", "devices", "seeds"):
        value = getattr(args, name, None)
        if value is not None and value < 0 or (name in ("epochs", "patience", "devices", "seeds") and value == 0):
            parser.error(f"--{name.replace('_', '-')} must be a positive integer")
    try:
        return args.run(args)
    except CommandFailed as e:
        print(f"jaxnet {args.command}: {e}", file=sys.stderr)
        return e.exit_code


def _network_flags(p, default_preset):
    from ..presets import TRAIN_PRESETS

    p.add_argument("--preset", choices=sorted(TRAIN_PRESETS), default=default_preset,
                   help="; ".join(f"{p.name}: {p.description}" for p in TRAIN_PRESETS.values()))
    p.add_argument("--hidden", type=_csv_ints, help="hidden layer sizes, e.g. 128,64 (input and output sizes come from the data; '' for none)")
    p.add_argument("--activation", type=_activations, help="one activation, or one per hidden layer (comma-separated)")
    p.add_argument("--loss", choices=["softmax_cross_entropy", "sigmoid_cross_entropy", "squared_error"])
    p.add_argument("--reduction", choices=["mean", "sum"])
    p.add_argument("--l2", type=_penalty, help="L2 strength (l2/2 sum W^2), a finite number >= 0")
    p.add_argument("--l2-bias", dest="l2_bias", action=argparse.BooleanOptionalAction, default=None, help="penalise biases too")
    p.add_argument("--data", help="your data: .npz (x, y), .npy (last column = target) or .csv")
    p.add_argument("--target", help="CSV: the name of the target column (default: the last column)")


def _add_check(sub) -> None:
    p = sub.add_parser(
        "check",
        help="check hand-derived gradients against autodiff and finite differences: every network of the notes, "
             "or the network that the train flags describe",
    )
    _network_flags(p, None)
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="working dtype (default float64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random params (and data)")
    p.add_argument("--batch", type=int, default=16, help="number of examples")
    p.add_argument("--kinks", choices=["exclude", "nudge", "count"], default="exclude",
                   help="examples within 1e-4 of a ReLU kink or a max-pool tie: excluded (default), nudged, or only counted")
    p.add_argument("--per-example", dest="per_example", action="store_true",
                   help="also check per-example gradients and their norms against vmapped autodiff")
    p.set_defaults(run=check.run)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a network of the notes (or your own data) with hand-derived gradients")
    _network_flags(p, DEFAULT_PRESET)
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--lr", type=_learning_rate, help="learning rate (a finite number > 0)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int, help="mini-batch size (0: full batch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grads", choices=["manual", "autodiff"], default="manual")
    p.add_argument("--check", action="store_true", help="verify the gradients against autodiff and finite differences first")
    p.add_argument("--check-every", dest="check_every", type=int, default=0, help="in-training gradient spot check every N steps")
    p.add_argument("--patience", type=int, help="early stopping on the validation loss")
    p.add_argument("--seeds", type=int, help="train this many seeds (seed, seed+1, ...) side by side (a sweep)")
    p.add_argument("--sweep", type=_sweep_spec,
                   help='a grid trained side by side, e.g. "lr=1e-3,1e-2 l2=0,1e-4 momentum=0,0.9 hidden=16;32,32"')
    p.add_argument("--devices", type=int, help="data-parallel over this many local devices (must divide the batch size); "
                   "with --seeds/--sweep, the replicas are split over them")
    p.add_argument("--out", help="output folder (default runs/PRESET)")
    p.add_argument("--resume", help="a checkpoint.npz to continue from")
    p.add_argument("--save-every", dest="save_every", type=int, default=0, help="checkpoint every N epochs (default: epochs/20)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=train.run)


def _learning_rate(text):
    """A finite learning rate > 0 (a negative one trains uphill, NaN poisons every step)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"a learning rate must be a finite number > 0, got {text!r}")
    return value


def _penalty(text):
    """A finite L2 strength >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"an L2 strength must be a finite number >= 0, got {text!r}")
    return value


_SWEPT_RANGE = {  # name: (test, what it must be)
    "lr": (lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
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
    names = [v.strip() for v in text.split(",")]
    return names[0] if len(names) == 1 else names


def _sweep_spec(text):
    """``"lr=1e-3,1e-2 l2=0,1e-4 momentum=0,0.9 hidden=16;32,32"`` -> {name: [values]}."""
    spec = {}
    for item in text.split():
        name, _, values = item.partition("=")
        if name not in SWEPT or not values:
            raise argparse.ArgumentTypeError(f"--sweep: expected name=v1,v2,... with name in {', '.join(SWEPT)}; got {item!r}")
        try:
            spec[name] = ([_csv_ints(v) for v in values.split(";")] if name == "hidden"
                          else [float(v) for v in values.split(",")])
        except (ValueError, argparse.ArgumentTypeError):
            raise argparse.ArgumentTypeError(f"--sweep: bad values in {item!r}") from None
        test, what = _SWEPT_RANGE.get(name, (lambda v: True, ""))
        bad = [v for v in spec[name] if name != "hidden" and not test(v)]
        if bad:
            raise argparse.ArgumentTypeError(f"--sweep: every {name} must be {what}, got {bad[0]!r} in {item!r}")
    return spec
