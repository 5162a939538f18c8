"""``jaxnet train --seeds N`` / ``--sweep SPEC``: every combination trained side by side (``jaxnet.sweep``)."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import TYPE_CHECKING

from . import folders
from .output import CommandFailed, number, write_json
from .settings import Settings

if TYPE_CHECKING:
    from ..network import Network
    from ..sweep import Replica, SweepResult

SWEPT = ("lr", "l2", "momentum", "hidden")
"""The names a ``--sweep`` spec may sweep."""


def run(settings: Settings) -> int:
    """Train the sweep of ``settings`` (its seeds, network and ``sweep`` grid), print the per-replica
    and per-configuration tables and the best configuration, write ``sweep.json`` and ``sweep.png``
    into ``settings.out``. Raises :class:`CommandFailed` on a sweep the settings cannot make."""
    from .. import sweep

    if settings.optimizer not in sweep.OPTIMIZERS:
        raise CommandFailed(f"sweeps support the optimizers {', '.join(sweep.OPTIMIZERS)}, not {settings.optimizer!r}")
    replicas = _replicas(settings)
    with folders.run_folder(settings.out, settings.run_name, force=settings.force, resume=None) as out:
        return _sweep(dataclasses.replace(settings, out=out), replicas)


def _sweep(settings: Settings, replicas: list[Replica]) -> int:
    """:func:`run` once the output folder is ``settings.out``."""
    from .. import sweep

    print(
        f"jaxnet train: sweep of {len(replicas)} replicas ({len({r.net for r in replicas})} network group(s)), "
        f"{settings.optimizer}, batch {settings.batch_size}, {settings.epochs} epochs, {settings.grads} gradients"
        + (f", replicas split over {settings.devices} devices" if settings.devices and settings.devices > 1 else "")
    )
    split = settings.split
    try:
        result = sweep.run(
            replicas,
            split.x_train,
            split.y_train,
            settings.optimizer,
            settings.epochs,
            settings.batch_size,
            grads=settings.grads,
            val=(split.x_val, split.y_val) if len(split.x_val) else None,
            devices=settings.devices,
        )
    except ValueError as e:
        raise CommandFailed(str(e)) from None
    summary = sweep.summary(result)
    _print_tables(result, summary)
    _write(settings, result, summary)
    if summary["best"] is None:
        raise CommandFailed(f"no configuration ended with a finite {summary['metric']}", exit_code=3)
    return 0


def _networks(settings: Settings) -> list[Network]:
    """The settings' network, or one MLP per ``hidden=`` entry of the sweep (the network's
    activation, loss and L2)."""
    from ..network import mlp

    net, spec = settings.net, settings.sweep or {}
    if "hidden" not in spec:
        return [net]
    if not all(hasattr(layer, "activation") and type(layer).__name__ == "Dense" for layer in net.layers):
        raise CommandFailed(f"--sweep hidden= applies to MLP presets, not {settings.preset.name!r}")
    act = net.layers[0].activation if len(net.layers) > 1 else "relu"
    return [
        dataclasses.replace(
            mlp([net.sizes[0], *h, net.sizes[-1]], act),
            loss=net.loss,
            reduction=net.reduction,
            l2=net.l2,
            l2_bias=net.l2_bias,
        )
        for h in spec["hidden"]
    ]


def _replicas(settings: Settings) -> list[Replica]:
    """Every (network, seed, lr, l2, momentum) of the sweep."""
    from .. import sweep

    spec = settings.sweep or {}
    momentum = spec.get("momentum", [0.9 if settings.optimizer == "momentum" else 0.0])
    return sweep.grid(
        _networks(settings),
        seeds=range(settings.seed, settings.seed + (settings.seeds or 1)),
        lr=spec.get("lr", [settings.lr]),
        l2=spec.get("l2", [None]),
        momentum=momentum,
    )


def _print_tables(result, summary) -> None:
    """Each replica's final metrics, the mean ± std over seeds per configuration, and the best one."""
    from ..plots import network_label

    metric = summary["metric"]
    shown = [k for k in sorted(result.history[0]) if k.startswith(("train_", "val_"))]
    rows = [
        [str(i), network_label(r.net), str(r.seed), r.label()] + [number(h[k][-1]).strip() for k in shown]
        for i, (r, h) in enumerate(zip(result.replicas, result.history))
    ]
    print()
    _print_columns(["replica", "network", "seed", "config"] + shown, rows)
    diverged = [str(i) for i, h in enumerate(result.history) if _diverged(h)]
    if diverged:
        print(f"diverged (a loss that is not finite; their other metrics mean nothing): replica {', '.join(diverged)}")
    print("\nmean ± std over seeds:")
    for row in summary["configs"]:
        print(
            f"  {row['network']} | {row['config']} ({row['seeds']} seed{'s' if row['seeds'] > 1 else ''}): "
            + ", ".join(
                f"{k} {number(m).strip()} ± {number(sd).strip()}" for k, (m, sd) in row["final"].items() if k in shown
            )
        )
    best = summary["best"]
    if best is not None:
        value = number(best["final"][metric][0]).strip()
        print(f"\nbest by mean {metric}: {best['network']} | {best['config']} ({value})")


def _diverged(history) -> bool:
    """Whether a replica's final training (or validation) loss is not finite."""
    return any(k in history and not math.isfinite(history[k][-1]) for k in ("train_loss", "val_loss"))


def _print_columns(names, rows) -> None:
    """A table: each column as wide as its widest cell, text left-aligned and numbers right-aligned."""
    widths = [max(len(c) for c in column) for column in zip(names, *rows)]
    for cells in [names, *rows]:
        print("  ".join(c.ljust(w) if j < 4 else c.rjust(w) for j, (c, w) in enumerate(zip(cells, widths))).rstrip())


def _write(settings: Settings, result: SweepResult, summary: dict) -> None:
    """``sweep.json`` (settings, every replica's final metrics and history, the summary) and ``sweep.png``."""
    from .. import plots

    out = settings.out
    assert out is not None, "the sweep's folder is set (by run) before anything is written to it"
    write_json(
        os.path.join(out, "sweep.json"),
        {
            "optimizer": settings.optimizer,
            "epochs": settings.epochs,
            "batch_size": settings.batch_size,
            "grads": settings.grads,
            "replicas": [
                {
                    "network": str(r.net),
                    "seed": r.seed,
                    "lr": r.lr,
                    "l2": r.l2_value,
                    "momentum": r.momentum,
                    "diverged": _diverged(h),
                    "final": fin,
                    "history": h,
                }
                for r, fin, h in zip(result.replicas, result.final, result.history)
            ],
            "summary": summary,
        },
    )
    plots.sweep_curves(result, os.path.join(out, "sweep.png"))
    print(f"wrote {out}/sweep.json and sweep.png")
