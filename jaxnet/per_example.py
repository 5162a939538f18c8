"""Per-example gradients and their norms, from the hand-derived backward pass.

The gradient of the training loss is a weighted sum of per-example gradients plus the L2
term,

    ∂L/∂θ = r Σ_i g_i + l2 θpenalised_names,      g_i = ∂ℓ_i/∂θ,  ℓ_i = ℓ(f(x_i), y_i),

with ``r = 1/N`` for ``reduction="mean"`` and ``1`` for ``"sum"``. ``g_i`` is the gradient
of example i's own loss (no reduction weight, no L2): the quantity that DP-SGD clips.

- :func:`per_example_grads` returns every ``g_i`` (leaves ``[batch, *param.shape]``);
- :func:`per_example_grad_norms` returns ``||g_i||`` ([batch]) without forming them:
  one forward pass, one backward pass of the per-example deltas, and at each layer the
  closed form of its ``grad_sq_norms`` (dense: ``||a_i||² ||δ_i||² + ||δ_i||²``; conv: see
  :meth:`jaxnet.layers.Conv2D.grad_sq_norms`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import network as _network
from .losses import get_loss


def example_loss_net(net: _network.Network) -> _network.Network:
    """The same network with each example's own loss: no 1/N, no L2."""
    return dataclasses.replace(net, reduction="sum", l2=0.0)


def check_per_example_defined(net: _network.Network) -> None:
    """``ValueError`` when per-example gradients of ``net`` are not defined: a layer couples the
    examples of a batch in training (BatchNorm: every output depends on the batch's mean and
    variance, so ``ℓ_i`` is a function of every example), or draws a random mask per batch
    (Dropout: an example's gradient would depend on the batch it was drawn in)."""
    for i, layer in enumerate(net.layers):
        if layer.couples_examples:
            raise ValueError(
                f"layers[{i}] ({type(layer).__name__}) couples the examples of a batch in training (each output "
                "depends on the batch's statistics), so per-example gradients are not defined for this network"
            )
        if layer.needs_key:
            raise ValueError(
                f"layers[{i}] ({type(layer).__name__}) draws a random mask for the whole batch in training, so "
                "per-example gradients are not defined for this network (they would depend on the batch's mask)"
            )


def per_example_grads(params: _network.Params, net: _network.Network, x: ArrayLike, y: ArrayLike) -> _network.Params:
    """``g_i = ∂ℓ_i/∂params`` for every example: the hand-derived backward pass on each example alone.

    Args:
      params, net, x, y: as for :func:`jaxnet.loss` (``x``: ``[batch, ...]``).

    Returns:
      the params' structure with a leading batch axis on every leaf
      (``[batch, *leaf.shape]``). ``r · Σ_i g_i`` (``r = 1/N`` for a mean) plus the L2 term
      is :func:`jaxnet.manual_grads`.
    """
    x, y, _ = _network.prepare_inputs(params, net, x, y)
    check_per_example_defined(net)
    single = example_loss_net(net)
    # one example at a time: [1, ...] through the same forward and backward loops
    return jax.vmap(lambda xi, yi: _network.manual_grads(params, single, xi[None], yi[None]))(x, y)


def per_example_grad_norms(params: _network.Params, net: _network.Network, x: ArrayLike, y: ArrayLike) -> jax.Array:
    """``||g_i||`` (Euclidean norm over every leaf) for every example: [batch].

    One batched forward pass, the closed-form output delta of each example's own loss
    (``δ_L,i = ∂ℓ_i/∂f_i``, no 1/N), and the backward loop; at each layer,
    ``layer.grad_sq_norms(params, residuals, dy)`` adds ``||∂ℓ_i/∂params_layer||²``
    computed from the layer's input and δ (see the layers' docstrings), so the
    per-example gradients are never stored whole.
    """
    x, y, _ = _network.prepare_inputs(params, net, x, y)
    check_per_example_defined(net)
    out, residuals, _ = _network.forward_pass(params, net, x)  # out: [batch, K]
    dh = get_loss(net.loss).delta(out, y)  # ∂ℓ_i/∂f_i: [batch, K]
    squares = jnp.zeros(x.shape[:1], out.dtype)  # [batch]
    for i in reversed(range(len(net.layers))):
        layer = net.layers[i]
        squares = squares + layer.grad_sq_norms(params[i], residuals[i], dh)
        dh, _ = layer.bwd(params[i], residuals[i], dh)  # the unused batch dparams are dead code under jit
    return jnp.sqrt(squares)
