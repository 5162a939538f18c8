"""Layer kinds on one protocol, forward and backward side by side.

A layer is a frozen, hashable description (static under jit). Its parameters live
outside it, in the params pytree. Every layer kind implements

- ``param_shapes(in_shape) -> dict`` and ``output_shape(in_shape) -> tuple``
  (per-example shapes, without the batch axis);
- ``init(key, in_shape, dtype) -> params``;
- ``fwd(params, x) -> (y, residuals)``: the forward value and what backward needs;
- ``bwd(params, residuals, dy) -> (dx, dparams)``: given ``dy = ∂L/∂y``, return
  ``∂L/∂x`` and ``∂L/∂params``, derived by hand (no autodiff);
- ``weight_names`` / ``bias_names``: which parameter leaves L2 penalises
  (biases only with ``l2_bias=True``); a weight's fan-in is the product of all
  but its last axis;
- ``kink_distance(residuals) -> [batch]``: per example, how far the forward pass
  came from a point where the layer's derivative jumps (``inf`` for smooth layers),
  so that verification can draw inputs that finite differences can trust.

:func:`jaxnet.forward` and :func:`jaxnet.manual_grads` run one loop over these,
whatever the layer kinds.
"""

from __future__ import annotations

import dataclasses
import operator

import jax
import jax.numpy as jnp

from .activations import get_activation


def positive_int(value, what: str) -> int:
    """``value`` as an int, or a ``ValueError`` naming ``what``."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be a positive integer, got {value!r}") from None
    if number <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return number


_INITS = {
    "he": jax.nn.initializers.he_normal(),  # Var W = 2 / fan_in
    "glorot": jax.nn.initializers.glorot_normal(),  # Var W = 2 / (fan_in + fan_out)
}


@dataclasses.dataclass(frozen=True)
class Dense:
    """Fully connected layer with its activation: ``a = g(x W + b)``.

    Parameters ``{"W": [n_in, n_out], "b": [n_out]}`` (row-vector convention).

    Attributes:
      features: ``n_out``.
      activation: the name of ``g`` (see :data:`jaxnet.activations.ACTIVATIONS`);
        ``"identity"`` for an output layer.
    """

    features: int
    activation: str = "identity"

    weight_names = ("W",)
    bias_names = ("b",)

    def __post_init__(self):
        object.__setattr__(self, "features", positive_int(self.features, "Dense.features"))
        get_activation(self.activation)  # fail early on an unknown name

    def param_shapes(self, in_shape):
        return {"W": (in_shape[-1], self.features), "b": (self.features,)}

    def output_shape(self, in_shape):
        if len(in_shape) != 1:
            raise ValueError(
                f"Dense expects flat per-example inputs [n_in], got shape {tuple(in_shape)}"
            )
        return (self.features,)

    def init(self, key, in_shape, dtype):
        """He-normal weights for the ReLU family, Glorot-normal otherwise; zero biases."""
        n_in = in_shape[-1]
        w_init = _INITS[get_activation(self.activation).init]
        return {
            "W": w_init(key, (n_in, self.features), dtype),
            "b": jnp.zeros((self.features,), dtype),
        }

    def fwd(self, params, x):
        """``x``: [batch, n_in] -> ``a``: [batch, n_out].

        z = x W + b,  a = g(z).  Residuals: ``(x, z, a)``.
        """
        g = get_activation(self.activation)
        z = x @ params["W"] + params["b"][None, :]  # [batch, n_in] @ [n_in, n_out] -> [batch, n_out]
        a = g.fn(z)  # [batch, n_out]
        return a, (x, z, a)

    def bwd(self, params, residuals, da):
        """``da`` = ∂L/∂a: [batch, n_out] -> (∂L/∂x: [batch, n_in], {∂L/∂W, ∂L/∂b}).

        δ = ∂L/∂z = da ∘ g'(z)      (the layer recursion δ_{l−1} = (δ_l W_lᵀ) ∘ g'(z_{l−1}))
        ∂L/∂W = xᵀ δ,  ∂L/∂b = Σ_batch δ,  ∂L/∂x = δ Wᵀ.
        """
        g = get_activation(self.activation)
        x, z, a = residuals
        dz = da * g.deriv(z, a)  # δ: [batch, n_out]
        dW = x.T @ dz  # [n_in, batch] @ [batch, n_out] -> [n_in, n_out]
        db = jnp.sum(dz, axis=0)  # [n_out]
        dx = dz @ params["W"].T  # [batch, n_out] @ [n_out, n_in] -> [batch, n_in]
        return dx, {"W": dW, "b": db}

    def kink_distance(self, residuals):
        """Per example, min |z| over units when g has a kink at 0, else inf: [batch]."""
        _, z, _ = residuals
        if not get_activation(self.activation).kink:
            return jnp.full(z.shape[:1], jnp.inf, z.dtype)
        return jnp.min(jnp.abs(z), axis=1)
