"""Every ``jaxnet train`` preset over seeds 0–4: the quoted preset results as mean ± std and min.

    python experiments/presets_over_seeds.py [--quick] [--presets digits,cnn]

Per preset, the problem ``jaxnet train --preset P`` sets up (its data set split with seed 0 and
standardised, its network, optimizer, learning rate, epochs and batch size), trained from seeds
0–4 side by side with the hand-derived gradients as ``jaxnet train --preset P --seeds 5`` trains
them (``jaxnet.sweep``; seed s is ``jaxnet train --preset P`` with ``init_params`` from
``split(key(s))[0]``, on the split of ``--seed 0``), then every seed's final params evaluated on
the train, validation and test splits. Writes ``presets.json`` (per seed and mean / std / min /
max) and ``presets.md`` (the table, rendered from it) into experiments/results/.
"""

import argparse
import json
import os

from _common import RESULTS, arguments, evaluate_all, over_seeds, staged, write_metrics
from summarize import presets_table, seeds_text

from jaxnet import sweep
from jaxnet.cli.settings import resolve
from jaxnet.presets import TRAIN_PRESETS

SPLIT_SEED = 0  # jaxnet train's default --seed, which also seeds the split


def problem(preset):
    """``(split, net, batch_size)`` as ``jaxnet train --preset <preset>`` builds them with its
    default flags: the CLI's own settings (``jaxnet.cli.settings.resolve``)."""
    settings = resolve(argparse.Namespace(preset=preset.name, seed=SPLIT_SEED))
    return settings.split, settings.net, settings.batch_size


def run_preset(preset, seeds, epochs):
    """The preset trained from every seed side by side; its final metrics per seed and over seeds."""
    split, net, batch = problem(preset)
    result = sweep.run(
        sweep.grid(net, seeds=seeds, lr=(preset.learning_rate,)),
        split.x_train,
        split.y_train,
        preset.optimizer,
        epochs,
        batch,
        val=(split.x_val, split.y_val),
    )
    return {
        "description": preset.description,
        "network": str(net),
        "optimizer": preset.optimizer,
        "learning_rate": preset.learning_rate,
        "epochs": epochs,
        "batch_size": batch,
        "final": over_seeds([evaluate_all(p, net, split) for p in result.params]),
    }


def preset_names(text):
    """``--presets a,b``: known preset names, else an argparse error."""
    names = text.split(",")
    unknown = [n for n in names if n not in TRAIN_PRESETS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown preset(s) {unknown}; the presets are {', '.join(TRAIN_PRESETS)}")
    return names


def main():
    args = arguments(
        "presets",
        __doc__,
        committed=RESULTS,
        extra=lambda p: p.add_argument(
            "--presets", type=preset_names, default=list(TRAIN_PRESETS), help="comma-separated (default: all)"
        ),
    )
    names = args.presets
    if len(names) < len(TRAIN_PRESETS) and os.path.realpath(args.out) == os.path.realpath(RESULTS):
        raise SystemExit(
            "presets_over_seeds.py: a subset of the presets is not written over the committed results; give --out"
        )
    presets = {}
    for name in names:
        preset = TRAIN_PRESETS[name]
        print(f"{name}: {len(args.seeds)} seeds side by side ...", flush=True)
        presets[name] = run_preset(preset, args.seeds, 2 if args.quick else preset.epochs)
    with staged(args.out) as out:
        write_metrics(
            out,
            args.seeds,
            {"split_seed": SPLIT_SEED, "presets": presets, "note": f"every value over {seeds_text(args.seeds)}"},
        )
        os.replace(os.path.join(out, "metrics.json"), os.path.join(out, "presets.json"))
        with open(os.path.join(out, "presets.json")) as f:
            table = presets_table(json.load(f))
        with open(os.path.join(out, "presets.md"), "w") as f:
            f.write(table)
    print(table)


if __name__ == "__main__":
    main()
