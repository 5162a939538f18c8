"""The ``jaxnet`` command line."""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp


def _check(args) -> int:
    from .presets import NOTE_NETWORKS
    from .verify import check_network, format_table, random_problem

    rows = []
    with jax.enable_x64(True):
        dtype = jnp.dtype(args.dtype)
        for i, preset in enumerate(NOTE_NETWORKS):
            params, x, y = random_problem(preset.net, seed=args.seed + i, n=args.batch, dtype=dtype)
            rows += check_network(preset.name, preset.net, params, x, y)
    print(f"manual_grads vs jax.grad ({args.dtype}) and vs central finite differences (float64), "
          f"batch {args.batch}, seed {args.seed}; rel = max|diff| / max|reference| per leaf\n")
    print(format_table(rows))
    bad = [r for r in rows if not r.ok]
    print()
    for preset in NOTE_NETWORKS:
        print(f"  {preset.name}: {preset.net}  ({preset.description})")
    print(f"\n{len(rows) - len(bad)}/{len(rows)} leaves agree"
          + ("" if not bad else f"; MISMATCH in {', '.join(sorted({r.network + r.leaf for r in bad}))}"))
    return 1 if bad else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxnet", description="Neural networks with hand-derived gradients on JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser(
        "check",
        help="check the hand-derived gradients of every network of the notes against jax.grad and finite differences",
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
