"""The ``jaxnet`` command line."""

from __future__ import annotations

import argparse
import sys

import jax.numpy as jnp


def _check(args) -> int:
    from .verify import check_notes

    report, ok = check_notes(jnp.dtype(args.dtype), seed=args.seed, batch=args.batch)
    print(report)
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxnet", description="Neural networks with hand-derived gradients on JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser(
        "check",
        help="check the hand-derived gradients of every network of the notes against autodiff and finite differences",
    )
    check.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="working dtype (default float64)")
    check.add_argument("--seed", type=int, default=0, help="seed of the random params and data")
    check.add_argument("--batch", type=int, default=16, help="batch size of the random data")
    check.set_defaults(run=_check)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "batch", 1) < 1:
        build_parser().error("--batch must be a positive integer")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
