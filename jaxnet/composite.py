"""Composite layers: layer kinds built from a sequence of other layers.

:class:`Residual` wraps a sub-sequence ``f`` of layers in a skip connection, ``y = x + f(x)``.
It is one layer of the protocol of :mod:`jaxnet.layers` with a *flat* parameter dict: the
sub-layers' parameters under prefixed names (``"0.W"``, ``"0.b"``, ``"2.W"``, …, the prefix the
sub-layer's index), so everything that handles one layer's flat params (init, L2, checkpoints,
:func:`jaxnet.check_layer`, :func:`jaxnet.verify.draw_params`) handles it as it is. Its forward
and backward passes are the network's own loops (:func:`jaxnet.network.forward_loop`,
:func:`jaxnet.network.backward_loop`) over the sub-layers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from .layers import Layer
from .network import backward_loop, forward_loop, takes_token_ids


def _check_sub_layer(i: int, layer: Any) -> None:
    """``layers[i]`` of a composite must be a frozen, hashable :class:`jaxnet.Layer` dataclass."""
    if not isinstance(layer, Layer):
        raise ValueError(f"Residual.layers[{i}]: {layer!r} is not a layer (a jaxnet.Layer subclass instance)")
    params = getattr(type(layer), "__dataclass_params__", None)
    if params is None or not params.frozen:
        raise ValueError(f"Residual.layers[{i}]: {type(layer).__name__} must be a frozen dataclass")
    try:
        hash(layer)
    except TypeError as e:
        raise ValueError(f"Residual.layers[{i}]: {layer!r} must be hashable: {e}") from None
    if takes_token_ids(layer):
        raise ValueError(
            f"Residual.layers[{i}]: {type(layer).__name__} takes integer token ids; it can only be a network's first "
            "layer (x + f(x) needs real-valued x)"
        )


@dataclasses.dataclass(frozen=True)
class Residual(Layer):
    """A skip connection around a sequence of layers: ``y = x + f(x)``, ``f = f_k ∘ … ∘ f_1``.

    Per example ``x``: ``in_shape`` -> ``y``: ``in_shape`` (``f`` must give back the input's
    shape). Parameters: every sub-layer's, flat, named ``"<i>.<name>"`` (``i`` the sub-layer's
    index in ``layers``); weights, L2 names and kinks are the sub-layers', under those names.

    Backward: the two paths add, ``∂L/∂x = dy + ∂L/∂x|_f``, with ``∂L/∂x|_f`` the sub-layers'
    ``bwd`` run from the last down starting at ``dy``; ``∂L/∂θ_i`` is sub-layer ``i``'s own.

    Attributes:
      layers: the sub-layers of ``f`` in order (a tuple of :class:`jaxnet.Layer` instances;
        a list is made a tuple).
    """

    layers: tuple

    def __post_init__(self) -> None:
        if isinstance(self.layers, (str, bytes)) or not hasattr(self.layers, "__iter__"):
            raise ValueError(f"Residual.layers must be a sequence of layers, got {self.layers!r}")
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise ValueError("Residual.layers: a residual block needs at least one layer")
        for i, layer in enumerate(self.layers):
            _check_sub_layer(i, layer)

    def _sub_shapes(self, in_shape: tuple[int, ...]) -> Iterator[tuple[int, Layer, tuple[int, ...]]]:
        """``(i, layer_i, input shape of layer_i)`` for every sub-layer."""
        shape = tuple(in_shape)
        for i, layer in enumerate(self.layers):
            yield i, layer, shape
            shape = tuple(layer.output_shape(shape))

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """``in_shape``; a ``ValueError`` naming both shapes when ``f`` gives another."""
        shape = tuple(in_shape)
        for layer in self.layers:
            shape = tuple(layer.output_shape(shape))
        if shape != tuple(in_shape):
            raise ValueError(
                f"Residual: y = x + f(x) needs f to keep the input's shape {tuple(in_shape)}, "
                f"but its layers give {shape}"
            )
        return shape

    def param_shapes(self, in_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """Every sub-layer's parameter shapes, named ``"<i>.<name>"``."""
        return {
            f"{i}.{name}": shape
            for i, layer, shape_i in self._sub_shapes(in_shape)
            for name, shape in layer.param_shapes(shape_i).items()
        }

    def weights(self, in_shape: tuple[int, ...]) -> tuple[str, ...]:
        """The sub-layers' weights (:meth:`jaxnet.Layer.weights`), under their prefixed names."""
        return tuple(f"{i}.{name}" for i, layer, shape in self._sub_shapes(in_shape) for name in layer.weights(shape))

    def l2_names(self, in_shape: tuple[int, ...], l2_bias: bool = False) -> tuple[str, ...]:
        """The sub-layers' L2-penalised parameters (:meth:`jaxnet.Layer.l2_names`), prefixed."""
        return tuple(
            f"{i}.{name}" for i, layer, shape in self._sub_shapes(in_shape) for name in layer.l2_names(shape, l2_bias)
        )

    def init(self, key: jax.Array, in_shape: tuple[int, ...], dtype: DTypeLike) -> dict[str, jax.Array]:
        """Every sub-layer's own :meth:`jaxnet.Layer.init`, with ``jax.random.split(key, k)``
        (one key per sub-layer, as a network splits its key), prefixed."""
        keys = jax.random.split(key, len(self.layers))
        return {
            f"{i}.{name}": value
            for (i, layer, shape), k in zip(self._sub_shapes(in_shape), keys)
            for name, value in layer.init(k, shape, dtype).items()
        }

    def split_params(self, params: dict[str, jax.Array]) -> list[dict[str, jax.Array]]:
        """The flat dict (params or state) as one ``{name: array}`` per sub-layer (names without
        the prefix)."""
        split: list[dict[str, jax.Array]] = [{} for _ in self.layers]
        for key, value in params.items():
            index, _, name = key.partition(".")
            split[int(index)][name] = value
        return split

    @property
    def needs_key(self) -> bool:  # type: ignore[override]  # a class attribute of Layer, here derived
        """Whether a sub-layer draws random numbers in training."""
        return any(layer.needs_key for layer in self.layers)

    @property
    def couples_examples(self) -> bool:  # type: ignore[override]  # a class attribute of Layer, here derived
        """Whether a sub-layer couples the examples of a batch in training."""
        return any(layer.couples_examples for layer in self.layers)

    def init_state(self, in_shape: tuple[int, ...], dtype: DTypeLike) -> dict[str, jax.Array]:
        """Every sub-layer's own :meth:`jaxnet.Layer.init_state`, flat and prefixed like the params."""
        return {
            f"{i}.{name}": value
            for i, layer, shape in self._sub_shapes(in_shape)
            for name, value in layer.init_state(shape, dtype).items()
        }

    def fwd(self, params: dict[str, jax.Array], x: jax.Array) -> tuple[jax.Array, tuple[Any, ...]]:
        """``x``: [batch, *in_shape] -> ``y``: [batch, *in_shape].

        h_0 = x,  h_i = f_i(h_{i−1}),  y = x + h_k.  Residuals: the sub-layers' residuals, a tuple.
        (:meth:`apply` in training mode, without state or key.)
        """
        y, residuals, _ = self.apply(params, x, state=None, key=None, train=True)
        return y, residuals

    def apply(
        self,
        params: dict[str, jax.Array],
        x: jax.Array,
        *,
        state: dict[str, jax.Array] | None,
        key: jax.Array | None,
        train: bool,
    ) -> tuple[jax.Array, tuple[Any, ...], dict[str, jax.Array] | None]:
        """:meth:`fwd` in a mode: the sub-layers run with their own state (the flat dict split by
        prefix) and keys (``fold_in(key, i)`` for sub-layer ``i``, as a network splits its key);
        the new state comes back flat."""
        states = None if state is None else self.split_params(state)
        h, residuals, new_states = forward_loop(
            self.layers, self.split_params(params), x, state=states, key=key, train=train
        )  # f(x): [batch, *in_shape]
        y = x + h  # [batch, *in_shape]
        new_state = (
            None if new_states is None else {f"{i}.{n}": v for i, s in enumerate(new_states) for n, v in s.items()}
        )
        return y, tuple(residuals), new_state

    def bwd(
        self, params: dict[str, jax.Array], residuals: tuple[Any, ...], dy: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``dy`` = ∂L/∂y: [batch, *in_shape] -> (∂L/∂x: [batch, *in_shape], {"<i>.<name>": ∂L/∂θ}).

        dh_k = dy;  (dh_{i−1}, ∂L/∂θ_i) = bwd_i(dh_i);  ∂L/∂x = dy + dh_0  (skip path + f's path).
        """
        dh, grads = backward_loop(self.layers, self.split_params(params), list(residuals), dy)  # dh_0 = ∂L/∂x via f
        dx = dy + dh  # [batch, *in_shape]
        return dx, {f"{i}.{name}": g for i, grad in enumerate(grads) for name, g in grad.items()}

    def kink_gaps(self, residuals: tuple[Any, ...]) -> jax.Array | None:
        """The sub-layers' ``kink_gaps`` side by side, ``[batch, Σ m_i]``; None when none has kinks."""
        gaps = [g for layer, r in zip(self.layers, residuals) if (g := layer.kink_gaps(r)) is not None]
        return jnp.concatenate(gaps, axis=1) if gaps else None

    def grad_sq_norms(self, params: dict[str, jax.Array], residuals: tuple[Any, ...], dy: jax.Array) -> jax.Array:
        """``Σ_i ||∂ℓ_n/∂θ_i||²`` per example: [batch], each sub-layer's own ``grad_sq_norms`` given
        the ``dh_i`` that the backward loop hands it (rows never mix examples)."""
        split = self.split_params(params)
        total = jnp.zeros(dy.shape[:1], dy.dtype)
        dh = dy
        for i in reversed(range(len(self.layers))):
            total = total + self.layers[i].grad_sq_norms(split[i], residuals[i], dh)
            dh, _ = self.layers[i].bwd(split[i], residuals[i], dh)
        return total
