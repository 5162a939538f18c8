"""The settings of one ``jaxnet train`` / ``jaxnet check`` run, resolved once from the parsed flags.

:func:`resolve` turns the flags into a frozen :class:`Settings`: the preset, the data split (the
preset's data set or ``--data``, split with ``--seed`` and standardised), the network (the preset's,
with the flags' overrides), the optimizer, learning rate, epochs, batch size and output folder.
A flag that is not given takes the preset's value. ``jaxnet train`` (one run or a sweep) and
``jaxnet check`` both work from this one object, and so does ``experiments/presets_over_seeds.py``.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optax

    from ..data import Split
    from ..network import Network
    from ..presets import TrainPreset

DEFAULT_PRESET = "digits"
"""The preset of ``jaxnet train`` (and of ``jaxnet check`` given a network flag but no ``--preset``)."""

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
"""The ``--optimizer`` choices of ``jaxnet train``."""

NETWORK_FLAGS = ("preset", "hidden", "activation", "loss", "reduction", "l2", "l2_bias", "data", "target", "header")
"""The flags (argparse destinations) that describe the network and its data, shared by ``train`` and ``check``."""


@dataclasses.dataclass(frozen=True, eq=False)
class Settings:
    """Everything a run needs, resolved from the flags (see :func:`resolve`)."""

    preset_name: str
    preset: TrainPreset
    data: str | None  # --data: the user's file, else None (the preset's data set)
    data_sha256: str | None  # the SHA-256 of the --data file's bytes (None for a preset's data set)
    target: str | None
    header: bool | None  # --header / --no-header (None: a first row that is not all numbers)
    seed: int  # seeds the data split, initialisation and shuffling
    split: Split  # standardised
    net: Network
    optimizer: str
    lr: float
    epochs: int
    batch_size: int  # at most the training set (full batch for --batch-size 0)
    grads: str  # "manual" or "autodiff"
    devices: int | None
    seeds: int | None  # --seeds: a sweep over seed, seed + 1, ...
    sweep: dict | None  # --sweep: {name: [values]}
    out: str | None  # the output folder: --out, or a resumed DIR/checkpoint.npz's DIR; None: a new runs/<name>-<time>
    force: bool  # --force: replace the outputs of another run in --out
    check: bool  # --check: verify the gradients before training
    check_every: int
    eval_every: int  # --eval-every: epochs between evaluations of the whole splits
    patience: int | None
    resume: str | None
    save_every: int  # checkpoint every this many epochs
    quiet: bool

    @property
    def is_sweep(self) -> bool:
        """``--seeds`` or ``--sweep``: replicas trained side by side (``jaxnet.sweep``)."""
        return bool(self.seeds or self.sweep)

    @property
    def run_name(self) -> str:
        """The name of a new run folder: the preset, or the ``--data`` file's stem; ``-sweep`` for a sweep."""
        name = os.path.splitext(os.path.basename(self.data))[0] if self.data else self.preset_name
        return name + ("-sweep" if self.is_sweep else "")

    @property
    def data_name(self) -> str:
        """The data, as the messages name it: the ``--data`` file or the preset's data set."""
        return self.data or self.preset.dataset

    @property
    def config(self) -> dict:
        """The settings a checkpoint records; a resume with other values in :data:`RESUME_KEYS` is
        refused (the data by its content hash, not by the spelling of its path)."""
        return {
            "preset": self.preset_name,
            "data": self.data,
            "data_sha256": self.data_sha256,
            "target": self.target,
            "header": self.header,
            "seed": self.seed,
            "optimizer": self.optimizer,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "grads": self.grads,
        }

    def optimizer_transform(self) -> optax.GradientTransformation:
        """The optax transformation of ``optimizer`` at ``lr`` (``jaxnet.train.sgd`` for ``sgd``)."""
        import optax

        from ..train import sgd

        return {
            "sgd": lambda: sgd(self.lr),
            "momentum": lambda: optax.sgd(self.lr, momentum=0.9),
            "adam": lambda: optax.adam(self.lr),
            "adamw": lambda: optax.adamw(self.lr),
        }[self.optimizer]()


RESUME_KEYS = ("preset", "data_sha256", "target", "header", "seed", "optimizer", "lr", "batch_size", "grads")
"""The :attr:`Settings.config` entries a resumed run must share with its checkpoint."""


def resolve(args) -> Settings:
    """The :class:`Settings` of the parsed flags ``args`` of ``jaxnet train`` or ``jaxnet check``
    (an ``argparse.Namespace`` from :func:`jaxnet.cli.build_parser`). Flags the command does not
    have (``check`` has no ``--optimizer``) and flags left unset take the preset's values; no
    ``--preset`` means :data:`DEFAULT_PRESET`. Loads and splits the data.

    Raises ``ValueError`` on data or flags that do not fit (an unreadable ``--data`` file,
    non-integer class labels, ``--hidden`` on a CNN preset, ...).
    """
    from ..presets import TRAIN_PRESETS
    from .folders import resumed_folder

    def flag(name, default=None):
        return getattr(args, name, default)

    preset_name = flag("preset") or DEFAULT_PRESET
    preset = TRAIN_PRESETS[preset_name]
    # the preset's loss, read off the network it builds for a stand-in input shape
    preset_loss = preset.build(_STAND_IN_SHAPES[preset.inputs], 2).loss
    loss_name = flag("loss") or preset_loss
    seed = flag("seed", 0)
    split = _split(
        preset, flag("data"), flag("target"), flag("header"), seed, loss_name, flag("dtype", "float32")
    )  # train: float32 params; check: its --dtype
    net = _network(args, preset, split.x_train.shape[1:], _outputs(split, loss_name), loss_name)
    epochs = flag("epochs") or preset.epochs
    _check_devices(flag("devices"))
    return Settings(
        preset_name=preset_name,
        preset=preset,
        data=flag("data"),
        data_sha256=_sha256(flag("data")),
        target=flag("target"),
        header=flag("header"),
        seed=seed,
        split=split,
        net=net,
        optimizer=flag("optimizer") or preset.optimizer,
        lr=flag("lr") if flag("lr") is not None else preset.learning_rate,
        epochs=epochs,
        batch_size=_batch_size(flag("batch_size"), preset, len(split.x_train)),
        grads=flag("grads", "manual"),
        devices=flag("devices"),
        seeds=flag("seeds"),
        sweep=flag("sweep"),
        out=flag("out") or resumed_folder(flag("resume")),
        force=bool(flag("force", False)),
        check=bool(flag("check", False)),
        check_every=flag("check_every", 0),
        eval_every=flag("eval_every", 1),
        patience=flag("patience"),
        resume=flag("resume"),
        save_every=flag("save_every", 0) or max(1, epochs // 20),
        quiet=bool(flag("quiet", False)),
    )


def _sha256(path) -> str | None:
    """The SHA-256 of the file's bytes (``None`` for no file)."""
    import hashlib

    if not path:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_STAND_IN_SHAPES = {"rows": (2,), "images": (8, 8, 1), "sequences": (8, 2)}
"""A per-example input shape of each kind of :attr:`TrainPreset.inputs`, to read the preset's loss
off the network it builds before the data is loaded."""


def _split(
    preset: TrainPreset, path: str | None, target, header: bool | None, seed: int, loss_name: str, dtype
) -> Split:
    """The standardised split of ``--data`` (``path``) or of the preset's data set; ``dtype``:
    the working dtype the run casts the data to (every value must stay finite in it)."""
    import numpy as np

    from .. import data

    if not path:
        if target is not None or header is not None:
            raise ValueError("--target and --header describe a --data CSV file; without --data they mean nothing")
        x, y = data.DATASETS[preset.dataset](**preset.dataset_kwargs)
        return data.standardize(data.split(x, y, seed=seed))
    if preset.inputs != "rows":
        from ..presets import INPUT_KINDS

        raise ValueError(
            f"--data gives flat feature rows [examples, features]; the preset {preset.name!r} takes "
            f"{INPUT_KINDS[preset.inputs]} per example (from its data set {preset.dataset!r}), so it cannot "
            f"take them: give --data with an MLP preset (e.g. --preset {DEFAULT_PRESET})"
        )
    x, y = data.load_file(path, target, header=header, dtype=dtype)  # refuses values dtype cannot hold
    if loss_name == "softmax_cross_entropy":
        y = data.class_labels(path, y)  # K = the largest label + 1, within data.MAX_CLASSES
        if np.unique(y).size < 2:
            raise ValueError(f"{path}: every label is {y[0]}; a classifier needs examples of at least 2 classes")
    if loss_name == "squared_error":
        _check_square_fits(path, y, dtype)
    split = data.standardize(data.split(x, y, seed=seed), path)
    for name in ("train", "val", "test"):  # standardised in float64; the run casts to dtype
        data.check_finite_in(
            f"{path} ({name} split, standardised)", getattr(split, "x_" + name), getattr(split, "y_" + name), dtype
        )
    empty = [name for name, xs in (("validation", split.x_val), ("test", split.x_test)) if not len(xs)]
    if empty:
        warnings.warn(
            f"{path}: {len(x)} examples leave no {' and no '.join(empty)} split, so there are no "
            f"{' or '.join(empty)} metrics",
            UserWarning,
            stacklevel=2,
        )
    return split


def _check_devices(devices) -> None:
    """``--devices`` beyond the devices present (those of every process, after
    ``jax.distributed.initialize``), or with several processes not all of them, is refused here,
    before any folder is made."""
    import jax

    present, processes = jax.device_count(), jax.process_count()
    if devices and devices > present:
        raise ValueError(f"--devices {devices}: only {present} {jax.default_backend()} device(s) are present")
    if processes > 1 and devices != present:
        raise ValueError(
            f"--devices {devices}: with {processes} processes, train on all {present} devices of all of them "
            "(every process holds a share of each batch)"
        )


def _check_square_fits(path, y, dtype) -> None:
    """Squared-error targets whose squares (summed over a batch) overflow ``dtype`` are refused."""
    import numpy as np

    limit = float(np.sqrt(np.finfo(dtype).max / max(1, np.size(y))))
    top = float(np.max(np.abs(y)))
    if top > limit:
        raise ValueError(
            f"{path}: targets reach {top:.4g}, so the squared error overflows {np.dtype(dtype).name}; "
            f"expected targets within ±{limit:.3g} for {np.size(y)} values: rescale the targets"
        )


def _outputs(split, loss_name) -> int:
    """K: the classes in the split (softmax), else the target's columns."""
    if loss_name == "softmax_cross_entropy":
        return int(max(split.y_train.max(), split.y_val.max(initial=0), split.y_test.max(initial=0))) + 1
    return 1 if split.y_train.ndim == 1 else split.y_train.shape[1]


def _batch_size(flag, preset, n_train) -> int:
    """``--batch-size`` (0: full batch) or the preset's, at most the training set."""
    batch = flag if flag is not None else (preset.batch_size or n_train)
    return n_train if batch == 0 else min(batch, n_train)


def _network(args, preset: TrainPreset, shape: tuple, k: int, loss_name: str) -> Network:
    """The preset's network for this data, with the flags' overrides."""
    from ..layers import Dense
    from ..network import mlp

    hidden_flag, activation_flag = getattr(args, "hidden", None), getattr(args, "activation", None)
    base = preset.build(tuple(shape), max(k, 2))  # the preset's own loss may need 2 outputs
    if base.output_shape[0] != k:  # one output (sigmoid / regression on a K = 1 target)
        last = dataclasses.replace(base.layers[-1], features=k)
        base = dataclasses.replace(base, layers=base.layers[:-1] + (last,), loss=loss_name)
    if hidden_flag is not None or activation_flag is not None:
        if not all(isinstance(layer, Dense) for layer in base.layers) or len(shape) != 1:
            raise ValueError(
                f"--hidden and --activation apply to MLP presets (dense layers on flat feature rows), not "
                f"{preset.name!r}, whose network is {' > '.join(type(layer).__name__ for layer in base.layers)}"
            )
        preset_hidden = [layer.features for layer in base.layers[:-1]]
        hidden = hidden_flag if hidden_flag is not None else preset_hidden
        preset_acts = [layer.activation for layer in base.layers[:-1]]
        # the preset's activation(s): per layer when the widths are the preset's, else its first one
        activation = activation_flag or (preset_acts if hidden == preset_hidden else (preset_acts or ["relu"])[0])
        base = mlp([shape[0], *hidden, k], activation, base.loss, base.reduction, base.l2, base.l2_bias)
    reduction, l2, l2_bias = (getattr(args, name, None) for name in ("reduction", "l2", "l2_bias"))
    return dataclasses.replace(
        base,
        loss=loss_name,
        reduction=reduction or base.reduction,
        l2=base.l2 if l2 is None else l2,
        l2_bias=base.l2_bias if l2_bias is None else l2_bias,
    )
