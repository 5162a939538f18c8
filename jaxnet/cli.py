"""The ``jaxnet`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax.numpy as jnp

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")


_NETWORK_FLAGS = ("preset", "hidden", "activation", "loss", "reduction", "l2", "l2_bias", "data", "target")


def _check(args) -> int:
    """Without network flags: every network of the notes on random problems. With them: that
    network (as ``jaxnet train`` would build it) with random params (nonzero biases) on the
    first ``--batch`` training examples of its data."""
    import jax

    dtype = jnp.dtype(args.dtype)
    with jax.enable_x64(True):  # float64 when asked for; scoped to the check
        return _check_in_x64(args, dtype)


def _check_in_x64(args, dtype) -> int:
    import numpy as np

    from .gradcheck import check_grads, check_per_example
    from .network import loss, manual_grads
    from .verify import check_notes, draw_params

    if all(getattr(args, name) is None for name in _NETWORK_FLAGS):
        report, ok = check_notes(dtype, seed=args.seed, batch=args.batch, kinks=args.kinks, per_example=args.per_example)
        print(report)
        return 0 if ok else 1
    args.preset = args.preset or "digits"
    try:
        preset, split, net = _problem(args)
    except ValueError as e:
        print(f"jaxnet check: {e}", file=sys.stderr)
        return 2
    params = draw_params(net, np.random.default_rng(args.seed), dtype)
    n = min(args.batch, len(split.x_train))
    x, y = jnp.asarray(split.x_train[:n], dtype), jnp.asarray(split.y_train[:n])
    print(f"jaxnet check: {net}; random params (seed {args.seed}, nonzero biases), the first {n} training "
          f"examples of {args.data or preset.dataset}, {dtype.name}")
    try:
        report = check_grads(lambda p, x, y: loss(p, net, x, y), lambda p, x, y: manual_grads(p, net, x, y),
                             params, x, y, net=net, kinks=args.kinks, seed=args.seed)
    except ValueError as e:
        print(f"jaxnet check: {e}", file=sys.stderr)
        return 2
    print(report)
    failures = report.failures()
    if args.per_example:
        per_example = check_per_example(params, net, x, y)
        print(per_example)
        failures += per_example.failures()
    print("all leaves agree" if not failures else "MISMATCH in " + ", ".join(
        sorted({f"{r.path} ({r.witness})" for r in failures})))
    return 0 if not failures else 1


def _optimizer(name: str, lr: float):
    import optax

    from .train import sgd

    return {
        "sgd": lambda: sgd(lr),
        "momentum": lambda: optax.sgd(lr, momentum=0.9),
        "adam": lambda: optax.adam(lr),
        "adamw": lambda: optax.adamw(lr),
    }[name]()


def _data(args, preset, classification: bool):
    """(Split, classes or None) from --data or the preset's generator, standardised."""
    import numpy as np

    from . import data

    if args.data:
        if preset.dataset_kwargs.get("images"):
            raise ValueError(f"--data gives flat feature rows; the image preset {preset.name!r} cannot take them")
        x, y = data.load_file(args.data, args.target)
        if classification:
            if not np.all(np.equal(np.round(y), y)):
                raise ValueError(f"{args.data}: a classification loss needs integer labels in the target column")
            y = data._labels(args.data, y, int(np.max(y)) + 1)
    else:
        x, y = data.DATASETS[preset.dataset](**preset.dataset_kwargs)
    return data.standardize(data.split(x, y, seed=args.seed))


def _is_image_preset(preset):
    return bool(preset.dataset_kwargs.get("images"))


def _network(args, preset, shape, k, loss_name):
    """The preset's network for this data, with the flags' overrides."""
    import dataclasses

    from .layers import Dense
    from .network import mlp

    base = preset.build(tuple(shape), max(k, 2))  # the preset's own loss may need 2 outputs
    if base.output_shape[0] != k:  # one output (sigmoid / regression on a K = 1 target)
        last = dataclasses.replace(base.layers[-1], features=k)
        base = dataclasses.replace(base, layers=base.layers[:-1] + (last,), loss=loss_name)
    if args.hidden is not None or args.activation is not None:
        if not all(isinstance(layer, Dense) for layer in base.layers) or len(shape) != 1:
            raise ValueError(f"--hidden and --activation apply to MLP presets, not {preset.name!r}")
        preset_hidden = [layer.features for layer in base.layers[:-1]]
        hidden = args.hidden if args.hidden is not None else preset_hidden
        preset_acts = [layer.activation for layer in base.layers[:-1]]
        # the preset's activation(s): per layer when the widths are the preset's, else its first one
        activation = args.activation or (preset_acts if hidden == preset_hidden else (preset_acts or ["relu"])[0])
        base = mlp([shape[0], *hidden, k], activation, base.loss, base.reduction, base.l2, base.l2_bias)
    return dataclasses.replace(
        base,
        loss=loss_name,
        reduction=args.reduction or base.reduction,
        l2=base.l2 if args.l2 is None else args.l2,
        l2_bias=base.l2_bias if args.l2_bias is None else args.l2_bias,
    )


def _problem(args):
    """``(preset, split, net)`` for the flags shared by ``train`` and ``check``; ``ValueError`` on bad data or flags."""
    from .presets import TRAIN_PRESETS

    preset = TRAIN_PRESETS[args.preset]
    # the preset's loss, read off the network it builds for a stand-in input shape
    preset_loss = preset.build((8, 8, 1) if _is_image_preset(preset) else (2,), 2).loss
    loss_name = args.loss or preset_loss
    split = _data(args, preset, loss_name == "softmax_cross_entropy")
    shape = split.x_train.shape[1:]
    if loss_name == "softmax_cross_entropy":
        k = int(max(split.y_train.max(), split.y_val.max(initial=0), split.y_test.max(initial=0))) + 1
    else:
        k = 1 if split.y_train.ndim == 1 else split.y_train.shape[1]
    return preset, split, _network(args, preset, shape, k, loss_name)


def _sweep_spec(text):
    """``"lr=1e-3,1e-2 l2=0,1e-4 momentum=0,0.9 hidden=16;32,32"`` -> {name: [values]}."""
    spec = {}
    for item in text.split():
        name, _, values = item.partition("=")
        if name not in ("lr", "l2", "momentum", "hidden") or not values:
            raise argparse.ArgumentTypeError(f"--sweep: expected name=v1,v2,... with name in lr, l2, momentum, hidden; got {item!r}")
        try:
            spec[name] = ([_csv_ints(v) for v in values.split(";")] if name == "hidden"
                          else [float(v) for v in values.split(",")])
        except (ValueError, argparse.ArgumentTypeError):
            raise argparse.ArgumentTypeError(f"--sweep: bad values in {item!r}") from None
    return spec


def _run_sweep(args, preset, split, net) -> int:
    """``--seeds`` / ``--sweep``: every combination trained side by side (jaxnet.sweep)."""
    import dataclasses

    from . import sweep
    from .network import mlp

    spec = args.sweep or {}
    opt_name = args.optimizer or preset.optimizer
    if opt_name not in sweep.OPTIMIZERS:
        print(f"jaxnet train: sweeps support the optimizers {', '.join(sweep.OPTIMIZERS)}, not {opt_name!r}", file=sys.stderr)
        return 2
    nets = [net]
    if "hidden" in spec:
        if not all(hasattr(layer, "activation") and type(layer).__name__ == "Dense" for layer in net.layers):
            print(f"jaxnet train: --sweep hidden= applies to MLP presets, not {preset.name!r}", file=sys.stderr)
            return 2
        act = net.layers[0].activation if len(net.layers) > 1 else "relu"
        nets = [dataclasses.replace(mlp([net.sizes[0], *h, net.sizes[-1]], act), loss=net.loss, reduction=net.reduction,
                                    l2=net.l2, l2_bias=net.l2_bias) for h in spec["hidden"]]
    lr = args.lr if args.lr is not None else preset.learning_rate
    momentum = spec.get("momentum", [0.9 if opt_name == "momentum" else 0.0])
    replicas = sweep.grid(nets, seeds=range(args.seed, args.seed + (args.seeds or 1)), lr=spec.get("lr", [lr]),
                          l2=spec.get("l2", [None]), momentum=momentum)
    epochs = args.epochs or preset.epochs
    batch = args.batch_size if args.batch_size is not None else (preset.batch_size or len(split.x_train))
    batch = len(split.x_train) if batch == 0 else min(batch, len(split.x_train))
    out = args.out or os.path.join("runs", args.preset + "-sweep")
    os.makedirs(out, exist_ok=True)
    print(f"jaxnet train: sweep of {len(replicas)} replicas ({len({r.net for r in replicas})} network group(s)), "
          f"{opt_name}, batch {batch}, {epochs} epochs, {args.grads} gradients"
          + (f", replicas split over {args.devices} devices" if args.devices and args.devices > 1 else ""))
    try:
        result = sweep.run(replicas, split.x_train, split.y_train, opt_name, epochs, batch, grads=args.grads,
                           val=(split.x_val, split.y_val) if len(split.x_val) else None, devices=args.devices)
    except ValueError as e:
        print(f"jaxnet train: {e}", file=sys.stderr)
        return 2
    summary = sweep.summary(result)
    metric = summary["metric"]
    shown = [k for k in sorted(result.history[0]) if k.startswith(("train_", "val_"))]
    print("\n" + "  ".join(["replica", "network", "seed", "config"] + shown))
    for i, (r, h) in enumerate(zip(result.replicas, result.history)):
        print("  ".join([str(i), str(r.net.sizes), str(r.seed), r.label()] + [f"{h[k][-1]:.4f}" for k in shown]))
    print("\nmean ± std over seeds:")
    for row in summary["configs"]:
        print(f"  {row['network']} | {row['config']} ({row['seeds']} seeds): "
              + ", ".join(f"{k} {m:.4f} ± {sd:.4f}" for k, (m, sd) in row["final"].items() if k in shown))
    best = summary["best"]
    print(f"\nbest by mean {metric}: {best['network']} | {best['config']} ({best['final'][metric][0]:.4f})")
    with open(os.path.join(out, "sweep.json"), "w") as f:
        json.dump(_finite({"optimizer": opt_name, "epochs": epochs, "batch_size": batch, "grads": args.grads,
                           "replicas": [{"network": str(r.net), "seed": r.seed, "lr": r.lr, "l2": r.l2_value,
                                         "momentum": r.momentum, "final": fin, "history": h}
                                        for r, fin, h in zip(result.replicas, result.final, result.history)],
                           "summary": summary}), f, indent=1)
    from . import plots

    plots.sweep_curves(result, os.path.join(out, "sweep.png"))
    print(f"wrote {out}/sweep.json and sweep.png")
    return 0


def _train(args) -> int:
    import jax
    from tqdm import tqdm

    from . import checkpoint, plots
    from .network import init_params
    from .train import TrainingDiverged, evaluate, fit

    try:
        preset, split, net = _problem(args)
    except ValueError as e:
        print(f"jaxnet train: {e}", file=sys.stderr)
        return 2
    shape = split.x_train.shape[1:]
    d = shape[0] if len(shape) == 1 else None
    if args.seeds or args.sweep:
        return _run_sweep(args, preset, split, net)
    opt_name = args.optimizer or preset.optimizer
    lr = args.lr if args.lr is not None else preset.learning_rate
    optimizer = _optimizer(opt_name, lr)
    epochs = args.epochs or preset.epochs
    batch = args.batch_size if args.batch_size is not None else (preset.batch_size or len(split.x_train))
    batch = len(split.x_train) if batch == 0 else min(batch, len(split.x_train))  # at most full batch
    key_init, key_train = jax.random.split(jax.random.key(args.seed))
    params = init_params(key_init, net)
    config = {"preset": args.preset, "data": args.data, "target": args.target, "seed": args.seed,
              "optimizer": opt_name, "lr": lr, "batch_size": batch, "grads": args.grads}
    opt_state, start_epoch, start_step, past = None, 0, 0, {}
    if args.resume:
        try:
            ck = checkpoint.load(args.resume, net, optimizer.init(params))
        except checkpoint.CheckpointError as e:
            print(f"jaxnet train: cannot resume: {e}", file=sys.stderr)
            return 2
        changed = {k: (ck.extra.get("config", {}).get(k), v) for k, v in config.items() if ck.extra.get("config", {}).get(k) != v}
        if changed:
            what = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
            print(f"jaxnet train: cannot resume {args.resume} with other settings ({what})", file=sys.stderr)
            return 2
        params, opt_state, start_epoch, start_step, key_train = ck.params, ck.opt_state, ck.epoch, ck.step, ck.key
        past = ck.extra.get("history", {})
    out = args.out or os.path.join("runs", args.preset)
    os.makedirs(out, exist_ok=True)
    ckpt_path = os.path.join(out, "checkpoint.npz")
    print(f"jaxnet train: {net}; {len(split.x_train)}/{len(split.x_val)}/{len(split.x_test)} train/val/test; "
          f"{opt_name} lr={lr:g}, batch {batch}, "
          f"{epochs} epochs, {args.grads} gradients, device {jax.devices()[0].platform}"
          + (f" x {args.devices} (data-parallel)" if args.devices and args.devices > 1 else ""))

    if args.check:
        from .gradcheck import check_grads
        from .network import loss, manual_grads

        n = min(64, len(split.x_train))
        report = check_grads(lambda p, x, y: loss(p, net, x, y), lambda p, x, y: manual_grads(p, net, x, y),
                             params, jnp.asarray(split.x_train[:n]), jnp.asarray(split.y_train[:n]), net=net,
                             kinks="nudge")  # zero initial biases put units exactly at kinks on zero pixels
        print(report)
        if not report.ok:
            print("jaxnet train: the gradient check failed; not training", file=sys.stderr)
            return 1

    bar = tqdm(total=epochs - start_epoch, desc="epochs", disable=args.quiet, leave=False)

    save_every = args.save_every or max(1, epochs // 20)
    history = {k: list(v) for k, v in past.items()}

    def save(params, opt_state, epoch, step):
        extra = {"config": config, "history": _finite(history)}
        checkpoint.save(ckpt_path, net=net, params=params, opt_state=opt_state, epoch=epoch, step=step, key=key_train, extra=extra)

    def on_epoch(epoch, params, opt_state, step, metrics):
        for k, v in metrics.items():
            history.setdefault(k, []).append(v)
        if epoch % save_every == 0:  # the last good checkpoint, should a later epoch diverge
            save(params, opt_state, epoch, step)
        bar.update(1)
        bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items() if k in ("train_loss", "val_loss", "val_accuracy", "val_rmse")})

    try:
        result = fit(
            net, params, split.x_train, split.y_train, optimizer, epochs, batch, key_train, grads=args.grads,
            val=(split.x_val, split.y_val) if len(split.x_val) else None, patience=args.patience,
            check_every=args.check_every, opt_state=opt_state, start_epoch=start_epoch, start_step=start_step,
            on_epoch=on_epoch, devices=args.devices,
        )
    except TrainingDiverged as e:
        bar.close()
        kept = f"; the last good checkpoint is {ckpt_path}" if os.path.exists(ckpt_path) else ""
        print(f"jaxnet train: {e}{kept}", file=sys.stderr)
        return 3
    except ValueError as e:  # data the network cannot take (targets out of range, ...)
        bar.close()
        print(f"jaxnet train: {e}", file=sys.stderr)
        return 2
    bar.close()
    final = {name: evaluate(result.params, net, xs, ys) for name, (xs, ys) in
             {"train": (split.x_train, split.y_train), "val": (split.x_val, split.y_val), "test": (split.x_test, split.y_test)}.items() if len(xs)}
    save(result.params, result.opt_state, result.epoch, result.step)  # after early stopping: the best params
    summary = {
        "network": str(net), "config": config, "epochs": result.epoch, "steps": result.step,
        "stopped_early": result.stopped_early, "final": final, "history": history, "devices": args.devices or 1,
        **({"worst_grad_gap": result.worst_gap} if args.check_every else {}),
    }
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(_finite(summary), f, indent=1)
    if history:
        plots.curves(history, os.path.join(out, "curves.png"))
    classification = net.loss != "squared_error"
    if d == 2 and classification:
        plots.decision_boundary(result.params, net, split.x_train, split.y_train, os.path.join(out, "decision_boundary.png"))
    if d == 1 and not classification:
        plots.regression_fit(result.params, net, split.x_train, split.y_train, os.path.join(out, "fit.png"))
    names = sorted({k for m in final.values() for k in m})
    print(f"\n{'split':<6}" + "".join(f"{n:>12}" for n in names))
    for split_name, m in final.items():
        print(f"{split_name:<6}" + "".join(f"{m[n]:>12.4f}" for n in names))
    print(f"\n{result.epoch} epochs, {result.step} steps{' (stopped early)' if result.stopped_early else ''}; "
          f"wrote {out}/metrics.json, checkpoint.npz and plots")
    return 0


def _finite(tree):
    """JSON-safe copy: NaN and ±Inf become null."""
    import math

    if isinstance(tree, dict):
        return {k: _finite(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_finite(v) for v in tree]
    return None if isinstance(tree, float) and not math.isfinite(tree) else tree


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxnet", description="Neural networks with hand-derived gradients on JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    from .presets import TRAIN_PRESETS

    def network_flags(p, default_preset):
        p.add_argument("--preset", choices=sorted(TRAIN_PRESETS), default=default_preset,
                       help="; ".join(f"{p.name}: {p.description}" for p in TRAIN_PRESETS.values()))
        p.add_argument("--hidden", type=_csv_ints, help="hidden layer sizes, e.g. 128,64 (input and output sizes come from the data; '' for none)")
        p.add_argument("--activation", type=_activations, help="one activation, or one per hidden layer (comma-separated)")
        p.add_argument("--loss", choices=["softmax_cross_entropy", "sigmoid_cross_entropy", "squared_error"])
        p.add_argument("--reduction", choices=["mean", "sum"])
        p.add_argument("--l2", type=float, help="L2 strength (l2/2 sum W^2)")
        p.add_argument("--l2-bias", dest="l2_bias", action=argparse.BooleanOptionalAction, default=None, help="penalise biases too")
        p.add_argument("--data", help="your data: .npz (x, y), .npy (last column = target) or .csv")
        p.add_argument("--target", help="CSV: the name of the target column (default: the last column)")

    check = sub.add_parser(
        "check",
        help="check hand-derived gradients against autodiff and finite differences: every network of the notes, "
             "or the network that the train flags describe",
    )
    network_flags(check, None)
    check.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="working dtype (default float64)")
    check.add_argument("--seed", type=int, default=0, help="seed of the random params (and data)")
    check.add_argument("--batch", type=int, default=16, help="number of examples")
    check.add_argument("--kinks", choices=["exclude", "nudge", "count"], default="exclude",
                       help="examples within 1e-4 of a ReLU kink or a max-pool tie: excluded (default), nudged, or only counted")
    check.add_argument("--per-example", dest="per_example", action="store_true",
                       help="also check per-example gradients and their norms against vmapped autodiff")
    check.set_defaults(run=_check)

    train = sub.add_parser("train", help="train a network of the notes (or your own data) with hand-derived gradients")
    network_flags(train, "digits")
    train.add_argument("--optimizer", choices=OPTIMIZERS)
    train.add_argument("--lr", type=float, help="learning rate")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", dest="batch_size", type=int, help="mini-batch size (0: full batch)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--grads", choices=["manual", "autodiff"], default="manual")
    train.add_argument("--check", action="store_true", help="verify the gradients against autodiff and finite differences first")
    train.add_argument("--check-every", dest="check_every", type=int, default=0, help="in-training gradient spot check every N steps")
    train.add_argument("--patience", type=int, help="early stopping on the validation loss")
    train.add_argument("--seeds", type=int, help="train this many seeds (seed, seed+1, ...) side by side (a sweep)")
    train.add_argument("--sweep", type=_sweep_spec,
                       help='a grid trained side by side, e.g. "lr=1e-3,1e-2 l2=0,1e-4 momentum=0,0.9 hidden=16;32,32"')
    train.add_argument("--devices", type=int, help="data-parallel over this many local devices (must divide the batch size); "
                       "with --seeds/--sweep, the replicas are split over them")
    train.add_argument("--out", help="output folder (default runs/PRESET)")
    train.add_argument("--resume", help="a checkpoint.npz to continue from")
    train.add_argument("--save-every", dest="save_every", type=int, default=0, help="checkpoint every N epochs (default: epochs/20)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(run=_train)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "batch", 1) < 1:
        parser.error("--batch must be a positive integer")
    for name in ("epochs", "patience", "check_every", "batch_size", "save_every", "devices", "seeds"):
        value = getattr(args, name, None)
        if value is not None and value < 0 or (name in ("epochs", "patience", "devices", "seeds") and value == 0):
            parser.error(f"--{name.replace('_', '-')} must be a positive integer")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
