"""The networks of the four notes in ``shared/seeds/``, as network descriptions, and the training
setups of ``jaxnet train --preset``.

:data:`NOTE_NETWORKS`: a short name, what the note derives, and the :class:`jaxnet.Network`.
Sizes the notes leave open are chosen small (D = 2 for the 2-D classification sets).
:data:`TRAIN_PRESETS`: the notes' networks on their data, the CNN on the digit images, and the
sequence presets (an LSTM and an attention classifier on the digits read row by row, an LSTM
on the adding problem).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .attention import MultiHeadSelfAttention
from .composite import Residual
from .dropout import Dropout
from .layers import Activation, Conv2D, Dense, Flatten, MaxPool2D
from .network import Network, mlp, sequential
from .normalization import BatchNorm, LayerNorm, SequenceMean, TokenDense
from .recurrent import LSTM


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named network of the notes with its description (see :data:`TRAIN_PRESETS` for the training
    settings each preset runs with)."""

    name: str
    note: str
    description: str
    net: Network


NOTE_NETWORKS: tuple[Preset, ...] = (
    Preset(
        "000-relu-softmax-l2",
        "000",
        "one hidden ReLU layer, softmax CE, L2 on every weight incl. the folded biases",
        mlp([2, 100, 3], "relu", "softmax_cross_entropy", "mean", l2=1e-3, l2_bias=True),
    ),
    Preset(
        "001-sigmoid-rss",
        "001",
        "one hidden sigmoid layer, regression with the residual sum of squares",
        mlp([3, 10, 1], "sigmoid", "squared_error", "sum"),
    ),
    Preset(
        "001-sigmoid-softmax",
        "001",
        "one hidden sigmoid layer, K-class softmax classification",
        mlp([4, 10, 3], "sigmoid", "softmax_cross_entropy", "mean"),
    ),
    Preset(
        "002-deep-tanh",
        "002",
        "tanh network of depth 3 with the layer recursion, softmax CE",
        mlp([2, 16, 16, 16, 3], "tanh", "softmax_cross_entropy", "mean"),
    ),
    Preset(
        "003-relu-mse",
        "003",
        "three-layer ReLU regression, J = 1/N sum ||h - y||^2",
        mlp([4, 16, 16, 2], "relu", "squared_error", "mean"),
    ),
)


INPUT_KINDS = {
    "rows": "flat feature rows [D]",
    "images": "images [H, W, C]",
    "sequences": "sequences [T, D]",
}
"""What a preset's network takes per example (:attr:`TrainPreset.inputs`), as the errors name it.
Only ``"rows"`` presets take ``jaxnet train --data`` files (flat feature rows) and ``--hidden``."""


@dataclasses.dataclass(frozen=True)
class TrainPreset:
    """A training setup for ``jaxnet train``: data set, network (given the per-example input
    shape and K), optimizer; ``inputs`` names the kind of per-example input (a key of
    :data:`INPUT_KINDS`)."""

    name: str
    description: str
    dataset: str
    dataset_kwargs: dict
    build: Callable[[tuple, int], Network]  # (per-example input shape, outputs K) -> Network
    optimizer: str
    learning_rate: float
    epochs: int
    batch_size: int | None  # None: full batch
    inputs: str = "rows"

    def __post_init__(self) -> None:
        if self.inputs not in INPUT_KINDS:
            raise ValueError(
                f"TrainPreset {self.name!r}: inputs must be one of {sorted(INPUT_KINDS)}, got {self.inputs!r}"
            )


def _digits_lstm(shape: tuple, k: int) -> Network:
    """An LSTM over the digit's 8 rows (``shape`` (8, 8): T = 8 steps of 8 pixels), its last
    state h_8 [64] into a dense softmax head of K outputs."""
    return sequential(shape, [LSTM(64), Dense(k)], l2=1e-3)


def _digits_attention(shape: tuple, k: int, features: int = 32, heads: int = 4) -> Network:
    """A small attention classifier on the 8 rows (``shape`` (8, 16): 8 pixels and the row's
    one-hot position): each row projected to ``features`` (TokenDense), LayerNorm, a residual
    self-attention block and a residual ReLU MLP block (pre-norm), the mean over the rows, a
    dense softmax head of K outputs."""
    return sequential(
        shape,
        [
            TokenDense(features),
            LayerNorm(),
            Residual((MultiHeadSelfAttention(heads, features),)),
            Residual((LayerNorm(), TokenDense(2 * features, "relu"), TokenDense(features))),
            SequenceMean(),
            Dense(k),
        ],
        l2=1e-3,
    )


def _digits_batchnorm_dropout(shape: tuple, k: int, hidden: int = 256, rate: float = 0.3) -> Network:
    """An MLP on the flat digits: Dense(``hidden``) (its bias redundant before BatchNorm, kept for
    the Dense kind), BatchNorm, ReLU, Dropout(``rate``), a dense softmax head of K outputs."""
    return sequential(shape, [Dense(hidden), BatchNorm(), Activation("relu"), Dropout(rate), Dense(k)], l2=1e-4)


def _adding_lstm(shape: tuple, k: int) -> Network:
    """An LSTM of 32 units over the adding problem's T steps (``shape`` (T, 2)), its last state
    into one linear output, squared error."""
    return sequential(shape, [LSTM(32), Dense(k)], "squared_error")


TRAIN_PRESETS: dict[str, TrainPreset] = {
    p.name: p
    for p in (
        TrainPreset(
            "digits",
            "default: MLP 64-128-10 ReLU + softmax CE on scikit-learn's 8x8 digits",
            "digits",
            {},
            lambda shape, k: mlp([*shape, 128, k], "relu", l2=1e-4),
            "adam",
            1e-3,
            30,
            64,
        ),
        TrainPreset(
            "000-spiral",
            "note 000: one hidden ReLU layer, softmax, L2 incl. biases, plain SGD on the spiral",
            "spiral",
            {"n_per_class": 100, "classes": 3},
            lambda shape, k: mlp([*shape, 100, k], "relu", l2=1e-3, l2_bias=True),
            "sgd",
            1.0,
            300,
            32,
        ),
        # Full-batch GD on the RSS is stable only for lr < 2 / λ_max of the loss's Hessian, which grows
        # with N and the hidden width (λ_max ≈ 2 N (M/4 + 1) at the initial params: N = 140 gives 1011
        # for M = 10, i.e. lr < 1.98e-3; 1719 for M = 20, lr < 1.16e-3). Above it the first steps
        # overshoot and saturate the sigmoids, and the fit stays a nearly straight line (1-20-1 at
        # lr 2e-3: test R² 0.03). At 1.5e-3 the loss falls every epoch; test R² 0.83 / 0.90 / 0.73
        # with --seed 0 / 1 / 2 (it climbs on slowly, > 0.9 after some 20000 epochs).
        TrainPreset(
            "001-regression",
            "note 001: one hidden sigmoid layer, RSS, full-batch gradient descent on a noisy curve",
            "regression_1d",
            {"n": 200},
            lambda shape, k: mlp([*shape, 10, k], "sigmoid", "squared_error", "sum"),
            "sgd",
            1.5e-3,
            3000,
            None,
        ),
        TrainPreset(
            "001-classification",
            "note 001: one hidden sigmoid layer, softmax classification on concentric circles",
            "circles",
            {"n": 400},
            lambda shape, k: mlp([*shape, 20, k], "sigmoid"),
            "adam",
            1e-2,
            200,
            32,
        ),
        TrainPreset(
            "002-tanh",
            "note 002: tanh network of depth 3 (the layer recursion), softmax CE on two moons",
            "moons",
            {"n": 400},
            lambda shape, k: mlp([*shape, 16, 16, 16, k], "tanh"),
            "sgd",
            0.1,
            200,
            32,
        ),
        TrainPreset(
            "cnn",
            "note 003's CNN finished: conv-pool-conv-pool-dense on the 8x8x1 digit images",
            "digits",
            {"images": True},
            lambda shape, k: sequential(
                shape,
                [
                    Conv2D(16, 3, padding="SAME", activation="relu"),
                    MaxPool2D(2),
                    Conv2D(32, 3, padding="SAME", activation="relu"),
                    MaxPool2D(2),
                    Flatten(),
                    Dense(64, "relu"),
                    Dense(k),
                ],
                l2=1e-4,
            ),
            "adam",
            2e-3,
            30,
            64,
            "images",
        ),
        TrainPreset(
            "003-regression",
            "note 003: three-layer ReLU regression with MSE on a 4-D, 2-output problem",
            "regression",
            {"n": 600, "d": 4, "outputs": 2},
            lambda shape, k: mlp([*shape, 32, 32, k], "relu", "squared_error"),
            "adam",
            3e-3,
            200,
            32,
        ),
        TrainPreset(
            "digits-bn-dropout",
            "MLP 64-256-10 with BatchNorm (running statistics as state) and Dropout(0.3) (masks from the run's key)",
            "digits",
            {},
            _digits_batchnorm_dropout,
            "adam",
            1e-3,
            30,
            64,
        ),
        TrainPreset(
            "digits-lstm",
            "an LSTM(64) over the 8 rows of each digit (T = 8 steps of 8 pixels), last state, dense head",
            "digits",
            {"rows": True},
            _digits_lstm,
            "adam",
            3e-3,
            60,
            32,
            "sequences",
        ),
        # Self-attention, LayerNorm, the per-row projection and the mean over the rows are each blind
        # to the order of the rows, so without positions the network sees a bag of rows (it then
        # stayed near 0.87-0.91 test accuracy while choosing these settings). Each row therefore
        # carries its one-hot row index (digits(rows=True, positions=True)): TokenDense's projection
        # of [pixels, one-hot(t)] is the pixels' projection plus a learned vector per position, a
        # learned positional embedding.
        TrainPreset(
            "digits-attention",
            "attention classifier on the 8 digit rows (+ one-hot row index): projection, LayerNorm, "
            "residual self-attention and MLP blocks, mean over the rows, dense head",
            "digits",
            {"rows": True, "positions": True},
            _digits_attention,
            "adam",
            3e-3,
            60,
            32,
            "sequences",
        ),
        TrainPreset(
            "adding-lstm",
            "the adding problem at T = 100 (memory over the whole sequence): an LSTM(32), last state, "
            "one linear output, MSE",
            "adding",
            {"n": 10_000, "T": 100},
            _adding_lstm,
            "adam",
            1e-2,
            10,
            64,
            "sequences",
        ),
    )
}
