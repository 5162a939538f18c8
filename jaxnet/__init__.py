"""jaxnet: neural networks on JAX with hand-derived gradients, checked against autodiff."""

from .activations import ACTIVATIONS as ACTIVATIONS
from .layers import Dense as Dense
from .losses import LOSSES as LOSSES
from .network import Network as Network
from .network import check_inputs as check_inputs
from .network import fold_biases as fold_biases
from .network import forward as forward
from .network import init_params as init_params
from .network import loss as loss
from .network import manual_grads as manual_grads
from .network import mlp as mlp
from .network import predict as predict
from .network import unfold_biases as unfold_biases
from .network import value_and_manual_grads as value_and_manual_grads

__version__ = "0.1.0"
