"""``jaxnet check``: hand-derived gradients against autodiff and finite differences."""

from __future__ import annotations

from typing import Any

from .output import CommandFailed
from .settings import NETWORK_FLAGS, resolve


def run(args) -> int:
    """Without network flags: every network of the notes on random problems. With them: that
    network (as ``jaxnet train`` would build it) with random params (nonzero biases) on the
    first ``--batch`` training examples of its data. 0 when every leaf agrees, 1 on a mismatch."""
    import jax
    import jax.numpy as jnp

    dtype = jnp.dtype(args.dtype)
    with jax.enable_x64(True):  # float64 when asked for; scoped to the check
        if all(getattr(args, name) is None for name in NETWORK_FLAGS):
            return _check_notes(args, dtype)
        return _check_described(args, dtype)


def _check_notes(args, dtype) -> int:
    from ..verify import check_notes

    report, ok = check_notes(dtype, seed=args.seed, batch=args.batch, kinks=args.kinks, per_example=args.per_example)
    print(report)
    return 0 if ok else 1


def _check_described(args, dtype) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ..gradcheck import check_grads, check_per_example
    from ..network import loss, manual_grads, needs_key
    from ..verify import draw_params, wrong_layer_section

    try:
        settings = resolve(args)
    except ValueError as e:
        raise CommandFailed(str(e)) from None
    net, split = settings.net, settings.split
    params = draw_params(net, np.random.default_rng(args.seed), dtype)
    n = min(args.batch, len(split.x_train))
    x, y = jnp.asarray(split.x_train[:n], dtype), jnp.asarray(split.y_train[:n])
    mode: dict[str, Any] = {"key": jax.random.key(args.seed)} if needs_key(net) else {}  # Dropout: masks from --seed
    print(
        f"jaxnet check: {net}; random params (seed {args.seed}, nonzero biases), the first {n} training "
        f"examples of {settings.data_name}, {dtype.name}"
    )
    try:
        report = check_grads(
            lambda p, x, y: loss(p, net, x, y, **mode),
            lambda p, x, y: manual_grads(p, net, x, y, **mode),
            params,
            x,
            y,
            net=net,
            mode=mode,
            kinks=args.kinks,
            seed=args.seed,
        )
    except ValueError as e:
        raise CommandFailed(str(e)) from None
    print(report)
    failures = report.failures()
    if failures:
        print(wrong_layer_section(params, net, x, y, kinks=args.kinks, seed=args.seed, **mode))
    if args.per_example:
        try:
            per_example = check_per_example(params, net, x, y)
        except ValueError as e:  # not defined for this network (BatchNorm, Dropout)
            raise CommandFailed(f"--per-example: {e}") from None
        print(per_example)
        failures += per_example.failures()
    print(
        "all leaves agree"
        if not failures
        else "MISMATCH in " + ", ".join(sorted({f"{r.path} ({r.witness})" for r in failures}))
    )
    return 0 if not failures else 1
