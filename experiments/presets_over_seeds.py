"""Every ``jaxnet train`` preset over seeds 0–4: the quoted preset results as mean ± std and min.

    python experiments/presets_over_seeds.py [--quick] [--presets digits,cnn [--merge]]

Per preset, the problem ``jaxnet train --preset P`` sets up (its data set split with seed 0 and
standardised, its network, optimizer, learning rate, epochs and batch size), trained from seeds
0–4 side by side with the hand-derived gradients as ``jaxnet train --preset P --seeds 5`` trains
them (``jaxnet.sweep``; seed s is ``jaxnet train --preset P`` with ``init_params`` from
``split(key(s))[0]``, on the split of ``--seed 0``), then every seed's final params evaluated on
the train, validation and test splits. A network with state or randomness (BatchNorm, Dropout),
which the sweep does not carry, trains one seed after another through ``jaxnet.train.fit``
instead, exactly as ``jaxnet train --preset P`` on the split of ``--seed 0`` with seed s's
``key_init, key_train = split(key(s))``, and is evaluated with its final running statistics.
Writes ``presets.json`` (per seed and mean / std / min /
max) and ``presets.md`` (the table, rendered from it) into experiments/results/. A regression
preset's entry also holds its MSE and the MSE of the mean baseline (always predicting the
training targets' mean, per output).

``--presets`` alone trains a subset, which is never written over the committed results (the
table would lose the other presets). ``--presets P,Q --merge`` adds (or replaces) those presets'
entries in the ``presets.json`` already in the output folder and renders ``presets.md`` again
from the merged file; the other presets keep the entries of the run that measured them. A merge
is refused, before anything trains, unless that file was measured over the same seeds and split
with the same JAX version on the same kind of device (the table names one of each).
"""

import argparse
import json
import os

import jax
import numpy as np
from _common import RESULTS, arguments, evaluate_all, over_seeds, staged, write_metrics
from summarize import presets_table, seeds_text

from jaxnet import sweep
from jaxnet.cli.settings import resolve
from jaxnet.network import has_state, init_params, needs_key
from jaxnet.presets import TRAIN_PRESETS
from jaxnet.train import fit

SPLIT_SEED = 0  # jaxnet train's default --seed, which also seeds the split


def problem(preset):
    """``(split, net, batch_size)`` as ``jaxnet train --preset <preset>`` builds them with its
    default flags: the CLI's own settings (``jaxnet.cli.settings.resolve``)."""
    settings = resolve(argparse.Namespace(preset=preset.name, seed=SPLIT_SEED))
    return settings.split, settings.net, settings.batch_size


def run_preset(preset, seeds, epochs):
    """The preset trained from every seed side by side; its final metrics per seed and over seeds
    (with the MSE and the mean baseline's for a regression)."""
    split, net, batch = problem(preset)
    trained = train_seeds(preset, split, net, batch, seeds, epochs)
    entry = {
        "description": preset.description,
        "inputs": preset.inputs,
        "network": str(net),
        "optimizer": preset.optimizer,
        "learning_rate": preset.learning_rate,
        "epochs": epochs,
        "batch_size": batch,
        "final": over_seeds([with_mse(evaluate_all(p, net, split, state)) for p, state in trained]),
    }
    if net.loss == "squared_error":
        entry["mean_baseline_mse"] = mean_baseline(split)
    return entry


def train_seeds(preset, split, net, batch, seeds, epochs):
    """``[(params, state)]``, one per seed: side by side with ``jaxnet.sweep`` (state ``None``), or,
    for a network with state or Dropout, one ``fit`` per seed as ``jaxnet train`` runs it."""
    if not (has_state(net) or needs_key(net)):
        result = sweep.run(
            sweep.grid(net, seeds=seeds, lr=(preset.learning_rate,)),
            split.x_train,
            split.y_train,
            preset.optimizer,
            epochs,
            batch,
            val=(split.x_val, split.y_val),
        )
        return [(p, None) for p in result.params]
    optimizer = resolve(argparse.Namespace(preset=preset.name, seed=SPLIT_SEED)).optimizer_transform()
    trained = []
    for s in seeds:
        key_init, key_train = jax.random.split(jax.random.key(s))  # as jaxnet train --seed s makes them
        params = init_params(key_init, net)
        r = fit(net, params, split.x_train, split.y_train, optimizer, epochs, batch, key_train)
        trained.append((r.params, r.state))
    return trained


def with_mse(metrics):
    """``evaluate_all``'s metrics with ``mse`` = rmse² (pooled over the outputs) beside each ``rmse``."""
    return {name: {**m, **({"mse": m["rmse"] ** 2} if "rmse" in m else {})} for name, m in metrics.items()}


def mean_baseline(split):
    """Per split, the MSE (pooled over the outputs) of always predicting the training targets'
    mean, per output: what a regression must beat to have learned anything from its inputs."""
    mean = np.mean(split.y_train, axis=0)
    return {
        name: float(np.mean((np.asarray(y, np.float64) - mean) ** 2))
        for name, y in (("train", split.y_train), ("val", split.y_val), ("test", split.y_test))
        if len(y)
    }


def preset_names(text):
    """``--presets a,b``: known preset names, else an argparse error."""
    names = text.split(",")
    unknown = [n for n in names if n not in TRAIN_PRESETS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown preset(s) {unknown}; the presets are {', '.join(TRAIN_PRESETS)}")
    return names


def merge_into(previous, current):
    """``previous`` presets.json contents with ``current``'s presets added or replacing theirs, in
    the order of ``TRAIN_PRESETS`` (entries of presets that no longer exist are dropped)."""
    check_mergeable(previous, current)
    presets = {**previous["presets"], **current["presets"]}
    return {**previous, "presets": {name: presets[name] for name in TRAIN_PRESETS if name in presets}}


def check_mergeable(previous, current):
    """``SystemExit`` naming the difference unless both results share the seeds, the split seed,
    the JAX version and the device kind (the rendered table states one of each)."""
    for key in ("seeds", "split_seed", "jax", "device"):
        if previous.get(key) != current.get(key):
            raise SystemExit(
                f"presets_over_seeds.py: --merge: the results there have {key} {previous.get(key)!r} and this "
                f"run {current.get(key)!r}; a table states one of each, so rerun every preset (no --presets)"
            )


def load_previous(out, seeds):
    """With ``--merge``: the presets.json in ``out``, checked against this run's settings before any training."""
    path = os.path.join(out, "presets.json")
    if not os.path.isfile(path):
        raise SystemExit(f"presets_over_seeds.py: --merge: no {path} to merge into; run every preset first")
    with open(path) as f:
        previous = json.load(f)
    check_mergeable(previous, {**run_facts(seeds), "jax": jax.__version__, "device": jax.devices()[0].platform})
    return previous


def run_facts(seeds):
    """The settings presets.json records besides the presets (``write_metrics`` adds jax and device)."""
    return {"seeds": list(seeds), "split_seed": SPLIT_SEED, "note": f"every value over {seeds_text(seeds)}"}


def main():
    def flags(p):
        p.add_argument(
            "--presets", type=preset_names, default=list(TRAIN_PRESETS), help="comma-separated (default: all)"
        )
        p.add_argument(
            "--merge",
            action="store_true",
            help="add the --presets to the presets.json already in the output folder (the others keep their entries)",
        )

    args = arguments("presets", __doc__, committed=RESULTS, extra=flags)
    names = args.presets
    if len(names) < len(TRAIN_PRESETS) and not args.merge and os.path.realpath(args.out) == os.path.realpath(RESULTS):
        raise SystemExit(
            "presets_over_seeds.py: a subset of the presets is not written over the committed results; give --out, "
            "or --merge to add them to the committed table"
        )
    previous = load_previous(args.out, args.seeds) if args.merge else None
    presets = {}
    for name in names:
        preset = TRAIN_PRESETS[name]
        print(f"{name}: {len(args.seeds)} seeds side by side ...", flush=True)
        presets[name] = run_preset(preset, args.seeds, 2 if args.quick else preset.epochs)
    with staged(args.out) as out:
        write_metrics(out, args.seeds, {**run_facts(args.seeds), "presets": presets})
        with open(os.path.join(out, "metrics.json")) as f:
            results = json.load(f)
        os.remove(os.path.join(out, "metrics.json"))
        if previous is not None:
            results = merge_into(previous, results)
        with open(os.path.join(out, "presets.json"), "w") as f:
            json.dump(results, f, indent=1)
        table = presets_table(results)
        with open(os.path.join(out, "presets.md"), "w") as f:
            f.write(table)
    print(table)


if __name__ == "__main__":
    main()
