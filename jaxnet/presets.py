"""The networks of the four notes in ``shared/seeds/``, as network descriptions.

Each entry: a short name, what the note derives, and the :class:`jaxnet.Network`.
Sizes the notes leave open are chosen small (D = 2 for the 2-D classification sets).
"""

from __future__ import annotations

import dataclasses

from .network import Network, mlp


@dataclasses.dataclass(frozen=True)
class Preset:
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
