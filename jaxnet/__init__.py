"""jaxnet: neural networks on JAX with hand-derived gradients, checked against autodiff."""

import importlib
from typing import TYPE_CHECKING, Any

from .activations import ACTIVATIONS as ACTIVATIONS
from .attention import MultiHeadSelfAttention as MultiHeadSelfAttention
from .check_layers import check_layer as check_layer
from .check_layers import find_wrong_layer as find_wrong_layer
from .composite import Residual as Residual
from .dropout import Dropout as Dropout
from .embedding import Embedding as Embedding
from .gradcheck import GradReport as GradReport
from .gradcheck import assert_grads_match as assert_grads_match
from .gradcheck import check_grads as check_grads
from .gradcheck import check_per_example as check_per_example
from .gradcheck import check_vjp as check_vjp
from .gradcheck import count_kinks as count_kinks
from .layers import Activation as Activation
from .layers import AvgPool2D as AvgPool2D
from .layers import Conv2D as Conv2D
from .layers import Dense as Dense
from .layers import Flatten as Flatten
from .layers import Layer as Layer
from .layers import MaxPool2D as MaxPool2D
from .losses import LOSSES as LOSSES
from .network import Network as Network
from .network import check_inputs as check_inputs
from .network import fold_biases as fold_biases
from .network import forward as forward
from .network import init_params as init_params
from .network import init_state as init_state
from .network import loss as loss
from .network import loss_with_state as loss_with_state
from .network import manual_grads as manual_grads
from .network import mlp as mlp
from .network import predict as predict
from .network import sequential as sequential
from .network import unfold_biases as unfold_biases
from .network import value_and_manual_grads as value_and_manual_grads
from .network import value_and_manual_grads_with_state as value_and_manual_grads_with_state
from .normalization import BatchNorm as BatchNorm
from .normalization import LayerNorm as LayerNorm
from .normalization import SequenceMean as SequenceMean
from .normalization import TokenDense as TokenDense
from .per_example import per_example_grad_norms as per_example_grad_norms
from .per_example import per_example_grads as per_example_grads
from .recurrent import LSTM as LSTM
from .recurrent import SimpleRNN as SimpleRNN

if TYPE_CHECKING:
    from . import distributed as distributed
    from . import sweep as sweep
    from . import train as train

__version__ = "0.1.0"

_LAZY_MODULES = ("distributed", "sweep", "train")
"""Submodules imported on first use (``jaxnet.train``, ``jaxnet.sweep``, ``jaxnet.distributed``):
``import jaxnet`` does not pull in optax, chex or the sweep machinery until a program trains."""


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)  # also sets the attribute for next time
    raise AttributeError(f"module 'jaxnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [  # the public API: these names, documented in the API reference
    "ACTIVATIONS",
    "LOSSES",
    "LSTM",
    "Activation",
    "AvgPool2D",
    "BatchNorm",
    "Conv2D",
    "Dense",
    "Dropout",
    "Embedding",
    "Flatten",
    "GradReport",
    "Layer",
    "LayerNorm",
    "MaxPool2D",
    "MultiHeadSelfAttention",
    "Network",
    "Residual",
    "SequenceMean",
    "SimpleRNN",
    "TokenDense",
    "__version__",
    "assert_grads_match",
    "check_grads",
    "check_inputs",
    "check_layer",
    "check_per_example",
    "check_vjp",
    "count_kinks",
    "distributed",
    "find_wrong_layer",
    "fold_biases",
    "forward",
    "init_params",
    "init_state",
    "loss",
    "loss_with_state",
    "manual_grads",
    "mlp",
    "per_example_grad_norms",
    "per_example_grads",
    "predict",
    "sequential",
    "sweep",
    "train",
    "unfold_biases",
    "value_and_manual_grads",
    "value_and_manual_grads_with_state",
]
