"""Hidden-layer activations, each forward value next to its hand-written derivative.

Every activation is a pair ``g(z)`` / ``g'(z)``. The derivative receives both the
pre-activation ``z`` and the already computed ``a = g(z)``, because several
derivatives are cheapest in terms of ``a`` (tanh: ``1 - a²``; sigmoid:
``a (1 - a)``). Forward values come from :mod:`jax.nn` so that autodiff of
:func:`jaxnet.loss` differentiates exactly the function we differentiate by hand.

Conventions at kinks (chosen to match JAX's autodiff of the ``jax.nn`` function):

- ``relu``: ``g'(0) = 0``.
- ``leaky_relu``: ``g'(0) = 1`` (``jax.nn.leaky_relu`` takes the ``z >= 0`` branch).
- ``elu``: ``g'(0) = 1`` (both sides agree for ``alpha = 1``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

LEAKY_RELU_SLOPE = 0.01  # jax.nn.leaky_relu's default negative_slope
ELU_ALPHA = 1.0  # jax.nn.elu's default alpha
_GELU_C = float(np.sqrt(2.0 / np.pi))  # sqrt(2/pi) of the tanh approximation
_GELU_K = 0.044715  # cubic coefficient of the tanh approximation


@dataclasses.dataclass(frozen=True)
class Activation:
    """An elementwise nonlinearity and its derivative.

    Attributes:
      name: the name used in network descriptions.
      fn: ``g(z)``, elementwise.
      deriv: ``g'(z)`` written by hand, as a function of ``(z, a)`` with ``a = g(z)``.
      init: ``"he"`` (ReLU family) or ``"glorot"`` (saturating and linear units):
        the weight initialisation of a layer followed by this activation.
      kink: whether ``g'`` jumps at ``z = 0`` (finite differences must not straddle it).
    """

    name: str
    fn: Callable[[jax.Array], jax.Array]
    deriv: Callable[[jax.Array, jax.Array], jax.Array]
    init: str
    kink: bool = False


def _gelu_tanh_deriv(z, a):
    # g(z) = z/2 (1 + t),  t = tanh(u),  u = c (z + k z³)
    # g'(z) = (1 + t)/2 + z/2 (1 - t²) c (1 + 3 k z²)
    del a
    t = jnp.tanh(_GELU_C * (z + _GELU_K * z**3))
    return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * _GELU_C * (1.0 + 3.0 * _GELU_K * z * z)


def _gelu_erf_deriv(z, a):
    # g(z) = z Φ(z)  ->  g'(z) = Φ(z) + z φ(z),  φ(z) = exp(-z²/2) / sqrt(2π)
    del a
    cdf = 0.5 * jax.lax.erfc(-z * float(np.sqrt(0.5)))
    pdf = jnp.exp(-0.5 * z * z) * float(1.0 / np.sqrt(2.0 * np.pi))
    return cdf + z * pdf


_ALL = (
    # relu: g = max(0, z);  g' = 1[z > 0]  (0 at the kink, as jax.nn.relu)
    Activation("relu", jax.nn.relu, lambda z, a: (z > 0).astype(z.dtype), "he", kink=True),
    # leaky_relu: g = z if z >= 0 else s z;  g' = 1 if z >= 0 else s
    Activation(
        "leaky_relu",
        lambda z: jax.nn.leaky_relu(z, LEAKY_RELU_SLOPE),
        lambda z, a: jnp.where(z >= 0, 1.0, LEAKY_RELU_SLOPE).astype(z.dtype),
        "he",
        kink=True,
    ),
    # elu: g = z if z > 0 else α(eᶻ − 1);  g' = 1 if z > 0 else g + α
    Activation(
        "elu",
        lambda z: jax.nn.elu(z, ELU_ALPHA),
        lambda z, a: jnp.where(z > 0, 1.0, a + ELU_ALPHA).astype(z.dtype),
        "he",
    ),
    # softplus: g = log(1 + eᶻ);  g' = σ(z)
    Activation("softplus", jax.nn.softplus, lambda z, a: jax.nn.sigmoid(z), "he"),
    # gelu (tanh approximation, jax.nn.gelu's default): see _gelu_tanh_deriv
    Activation("gelu", lambda z: jax.nn.gelu(z, approximate=True), _gelu_tanh_deriv, "he"),
    # gelu_exact: g = z Φ(z) with the erf;  g' = Φ(z) + z φ(z)
    Activation("gelu_exact", lambda z: jax.nn.gelu(z, approximate=False), _gelu_erf_deriv, "he"),
    # tanh: g = tanh z;  g' = 1 − g²
    Activation("tanh", jnp.tanh, lambda z, a: 1.0 - a * a, "glorot"),
    # sigmoid: g = 1 / (1 + e⁻ᶻ);  g' = g (1 − g)
    Activation("sigmoid", jax.nn.sigmoid, lambda z, a: a * (1.0 - a), "glorot"),
    # identity: g = z;  g' = 1
    Activation("identity", lambda z: z, lambda z, a: jnp.ones_like(z), "glorot"),
)

ACTIVATIONS: dict[str, Activation] = {act.name: act for act in _ALL}
"""Every activation by name. Looked up at call time, so tests can swap in a broken one."""


def get_activation(name: str) -> Activation:
    """Look up an activation by name; a ``ValueError`` lists the known names."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None
