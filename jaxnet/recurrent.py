"""Recurrent layers on sequences, forward and backward (backpropagation through time) by hand.

Both kinds take per-example sequences ``(T, D)`` (batches ``x``: [batch, T, D]) and keep a state
of ``H = features`` units, starting from zero; they output the last state ``h_T`` ([batch, H])
or, with ``return_sequences=True``, every state ``h_1 … h_T`` ([batch, T, H]). Their parameters
are ``{"Wx": [D, G H], "Wh": [H, G H], "b": [G H]}`` (row-vector convention, ``G`` = 1 for
:class:`SimpleRNN`, 4 for :class:`LSTM`); every step shares them.

Forward: the input projection ``u_t = x_t Wx + b`` of every step at once ([batch, T, G H]),
then a ``jax.lax.scan`` over time adds the recurrent term ``h_{t−1} Wh`` and applies the cell.

Backward (BPTT): ``∂L/∂h_t`` is the output's own ``dy_t`` (only ``dy_T`` without
``return_sequences``) plus what step ``t + 1`` sends back through ``Wh``. A reverse
``jax.lax.scan`` (``reverse=True``) carries that gradient (and the LSTM's ``∂L/∂c_t``) from
``t = T`` down to 1 and emits ``δ_t = ∂L/∂z_t`` of every step. Only the recurrence has to run
step by step: the weight gradients are sums over (batch, time) of products with ``δ_t``, so they
are one contraction each after the scan, ``∂L/∂Wh = Σ_{n,t} h_{t−1}ᵀ δ_t`` like the input
projection's ``∂L/∂Wx = Σ_{n,t} x_tᵀ δ_t``, ``∂L/∂b = Σ_{n,t} δ_t``, ``∂L/∂x_t = δ_t Wxᵀ``
(one large product instead of T small ones inside the loop, and a smaller carry).

Both layers are smooth (no kinks). Initialisation: Glorot-normal ``Wx`` and ``Wh`` (the base's
default, two keys split from the layer's), zero biases except the LSTM's forget gate, whose
bias starts at 1 (:meth:`LSTM.init`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from .layers import Layer, positive_int


class RNNResiduals(NamedTuple):
    """Residuals of :class:`SimpleRNN`: what its backward pass needs, batch first."""

    x: jax.Array  # the input sequences: [batch, T, D]
    h: jax.Array  # every state h_1 … h_T: [batch, T, H]


class LSTMResiduals(NamedTuple):
    """Residuals of :class:`LSTM`: what its backward pass needs, batch first."""

    x: jax.Array  # the input sequences: [batch, T, D]
    gates: jax.Array  # the activated gates [i, f, g, o] of every step: [batch, T, 4H]
    c: jax.Array  # every cell state c_1 … c_T: [batch, T, H]
    h: jax.Array  # every state h_1 … h_T: [batch, T, H]


def _time_major(tree: Any) -> Any:
    """Every leaf [batch, T, …] -> [T, batch, …] (what ``jax.lax.scan`` runs over)."""
    return jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), tree)


def _batch_major(tree: Any) -> Any:
    """Every leaf [T, batch, …] -> [batch, T, …]."""
    return jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), tree)


def _previous(s: jax.Array) -> jax.Array:
    """``s_{t−1}`` for every step, with ``s_0 = 0``: [batch, T, H] -> [batch, T, H]."""
    return jnp.concatenate([jnp.zeros_like(s[:, :1]), s[:, :-1]], axis=1)


class _Recurrent(Layer):
    """What both recurrent kinds share: fields, shapes, the input projection, the output, and the
    reverse scan of backpropagation through time."""

    features: int  # each subclass's dataclass fields
    return_sequences: bool
    _gates: ClassVar[int]  # G: blocks of H columns in Wx, Wh and b

    def __post_init__(self) -> None:
        kind = type(self).__name__
        object.__setattr__(self, "features", positive_int(self.features, f"{kind}.features"))
        if not isinstance(self.return_sequences, (bool, np.bool_)):
            raise ValueError(f"{kind}.return_sequences must be True or False, got {self.return_sequences!r}")
        object.__setattr__(self, "return_sequences", bool(self.return_sequences))

    def _sequence(self, in_shape: tuple[int, ...]) -> tuple[int, int]:
        """``(T, D)`` of a per-example input shape, or a ``ValueError`` naming the layer."""
        if len(in_shape) != 2 or min(in_shape) < 1:
            raise ValueError(
                f"{type(self).__name__} expects per-example sequences (T, D) with T, D ≥ 1 "
                f"(batches [batch, T, D]), got per-example shape {tuple(in_shape)}"
            )
        return in_shape[0], in_shape[1]

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        t, _ = self._sequence(in_shape)
        return (t, self.features) if self.return_sequences else (self.features,)

    def param_shapes(self, in_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        _, d = self._sequence(in_shape)
        width = self._gates * self.features
        return {"Wx": (d, width), "Wh": (self.features, width), "b": (width,)}

    def _project(self, params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
        """``u_t = x_t Wx + b`` of every step: [batch, T, D] @ [D, G H] -> [batch, T, G H]."""
        self._sequence(x.shape[1:])
        return jnp.einsum("btd,dk->btk", x, params["Wx"]) + params["b"][None, None, :]

    def _output(self, h: jax.Array) -> jax.Array:
        """The layer's output from every state ``h``: [batch, T, H] -> [batch, T, H] or ``h_T`` [batch, H]."""
        return h if self.return_sequences else h[:, -1]

    def _output_grad(self, dy: jax.Array, h: jax.Array) -> jax.Array:
        """``∂L/∂h_t`` from the output alone: ``dy`` [batch, T, H], or zero but ``dy`` at ``t = T``."""
        return dy if self.return_sequences else jnp.zeros_like(h).at[:, -1].set(dy)

    def _input_grads(
        self, params: dict[str, jax.Array], x: jax.Array, dz: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(∂L/∂x, ∂L/∂Wx, ∂L/∂b)`` of ``u_t = x_t Wx + b`` given ``δ = ∂L/∂u``: [batch, T, G H]."""
        dWx = jnp.einsum("btd,btk->dk", x, dz)  # Σ_{n,t} x_tᵀ δ_t: [D, batch T] @ [batch T, G H] -> [D, G H]
        db = jnp.sum(dz, axis=(0, 1))  # [G H]
        dx = jnp.einsum("btk,dk->btd", dz, params["Wx"])  # δ_t Wxᵀ: [batch, T, G H] @ [G H, D] -> [batch, T, D]
        return dx, dWx, db

    def _bwd_start(self, steps: Any) -> tuple[jax.Array, ...]:
        """The reverse scan's carry after step ``T``: zero gradients."""
        raise NotImplementedError

    def _bwd_step(self, wh: jax.Array, carry: Any, step: Any) -> tuple[Any, jax.Array]:
        """One step of the reverse scan: ``(carry into step t−1, δ_t)``."""
        raise NotImplementedError

    def _bptt(self, wh: jax.Array, steps: Any, h_prev: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The reverse scan of :meth:`_bwd_step` over time-major ``steps`` (leaves [T, batch, …]),
        from the zero carry of :meth:`_bwd_start`, then ``∂L/∂Wh = Σ_{n,t} h_{t−1}ᵀ δ_t`` with
        ``h_prev`` = every ``h_{t−1}`` ([T, batch, H]): ``(δ_t of every step [T, batch, G H], ∂L/∂Wh)``."""
        step = functools.partial(self._bwd_step, wh)
        _, dz = jax.lax.scan(step, self._bwd_start(steps), steps, reverse=True)  # δ: [T, batch, G H]
        dWh = jnp.einsum("tbh,tbk->hk", h_prev, dz)  # [H, T batch] @ [T batch, G H] -> [H, G H]
        return dz, dWh


@dataclasses.dataclass(frozen=True)
class SimpleRNN(_Recurrent):
    """Elman recurrent layer: ``h_t = tanh(x_t Wx + h_{t−1} Wh + b)``, ``h_0 = 0``.

    Parameters ``{"Wx": [D, H], "Wh": [H, H], "b": [H]}``: Glorot-normal weights, zero bias.
    Output: ``h_T`` ([batch, H]), or every ``h_t`` ([batch, T, H]) with ``return_sequences``.

    Backward, for ``t = T, …, 1`` (``dh_{T+1}^{rec} = 0``)::

        ∂L/∂h_t = dy_t + dh_{t+1}^{rec}           (dy_t = 0 for t < T without return_sequences)
        δ_t     = ∂L/∂h_t ∘ (1 − h_t²)             (tanh')
        dh_t^{rec} = δ_t Whᵀ                       (what step t sends to h_{t−1})
        ∂L/∂Wh = Σ_t h_{t−1}ᵀ δ_t,  ∂L/∂Wx = Σ_t x_tᵀ δ_t,  ∂L/∂b = Σ_{n,t} δ_t,  ∂L/∂x_t = δ_t Wxᵀ.

    Attributes:
      features: ``H``, the size of the state.
      return_sequences: output every state, not only the last.
    """

    features: int
    return_sequences: bool = False
    _gates: ClassVar[int] = 1

    def fwd(self, params: dict[str, jax.Array], x: jax.Array) -> tuple[jax.Array, RNNResiduals]:
        """``x``: [batch, T, D] -> ``h_T`` [batch, H] (or ``h`` [batch, T, H]); residuals
        :class:`RNNResiduals` ``(x, h)``."""
        u = self._project(params, x)  # x_t Wx + b: [batch, T, H]
        step = functools.partial(self._step, params["Wh"])
        h0 = jnp.zeros((x.shape[0], self.features), u.dtype)  # [batch, H]
        _, h = jax.lax.scan(step, h0, _time_major(u))  # [T, batch, H]
        h = _batch_major(h)  # [batch, T, H]
        return self._output(h), RNNResiduals(x, h)

    def _step(self, wh: jax.Array, h_prev: jax.Array, u_t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``h_t = tanh(u_t + h_{t−1} Wh)``: the new carry and this step's output, both [batch, H]."""
        h = jnp.tanh(u_t + h_prev @ wh)  # [batch, H] @ [H, H] -> [batch, H]
        return h, h

    def bwd(
        self, params: dict[str, jax.Array], residuals: RNNResiduals, dy: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``dy`` = ∂L/∂y: [batch, H] (or [batch, T, H]) -> ``(∂L/∂x [batch, T, D], {∂L/∂Wx, ∂L/∂Wh, ∂L/∂b})``;
        the formulas are in the class docstring."""
        x, h = residuals.x, residuals.h
        dh_out = self._output_grad(dy, h)  # ∂L/∂h_t through the output alone: [batch, T, H]
        dz, dWh = self._bptt(params["Wh"], _time_major((dh_out, h)), _time_major(_previous(h)))  # δ: [T, batch, H]
        dx, dWx, db = self._input_grads(params, x, _batch_major(dz))
        return dx, {"Wx": dWx, "Wh": dWh, "b": db}

    def _bwd_start(self, steps: Any) -> tuple[jax.Array, ...]:
        """``(dh_{T+1}^{rec} = 0 [batch, H],)``."""
        return (jnp.zeros_like(steps[0][0]),)

    def _bwd_step(
        self, wh: jax.Array, carry: tuple[jax.Array], step: tuple[jax.Array, jax.Array]
    ) -> tuple[tuple[jax.Array], jax.Array]:
        """Step ``t`` of BPTT. ``carry``: ``(dh_{t+1}^{rec},)``; ``step``: ``(dy_t, h_t)``, each
        [batch, H]. Returns ``((dh_t^{rec},), δ_t)``."""
        (dh_rec,) = carry
        dy_t, h_t = step
        dh = dy_t + dh_rec  # ∂L/∂h_t: [batch, H]
        dz = dh * (1 - h_t**2)  # δ_t = ∂L/∂z_t (tanh' = 1 − h²)
        return (dz @ wh.T,), dz  # dh_t^{rec} = δ_t Whᵀ: [batch, H] @ [H, H] -> [batch, H]


@dataclasses.dataclass(frozen=True)
class LSTM(_Recurrent):
    """Long short-term memory layer; ``h_0 = c_0 = 0``.

    Per step, with the gates in the order **i, f, g, o** (input, forget, candidate, output; the
    column blocks ``[0:H]``, ``[H:2H]``, ``[2H:3H]``, ``[3H:4H]`` of ``Wx``, ``Wh`` and ``b``)::

        z_t = x_t Wx + h_{t−1} Wh + b                      [batch, 4H]
        i = σ(z_i),  f = σ(z_f),  g = tanh(z_g),  o = σ(z_o)
        c_t = f ∘ c_{t−1} + i ∘ g
        h_t = o ∘ tanh(c_t)

    Parameters ``{"Wx": [D, 4H], "Wh": [H, 4H], "b": [4H]}``: Glorot-normal weights, zero bias
    except the forget gate's, 1 (:meth:`init`). Output: ``h_T`` ([batch, H]), or every ``h_t``
    ([batch, T, H]) with ``return_sequences``.

    Backward, for ``t = T, …, 1`` (``dh_{T+1}^{rec} = dc_{T+1}^{rec} = 0``)::

        ∂L/∂h_t = dy_t + dh_{t+1}^{rec}                              (dy_t = 0 for t < T without return_sequences)
        do = ∂L/∂h_t ∘ tanh(c_t)
        dc_t = ∂L/∂h_t ∘ o ∘ (1 − tanh² c_t) + dc_{t+1}^{rec}     (dc_{t+1}^{rec} = dc_{t+1} ∘ f_{t+1}: the cell path)
        di = dc_t ∘ g,  df = dc_t ∘ c_{t−1},  dg = dc_t ∘ i,  dc_t^{rec} = dc_t ∘ f
        δ_t = [di ∘ i(1 − i), df ∘ f(1 − f), dg ∘ (1 − g²), do ∘ o(1 − o)]     (∂L/∂z_t: [batch, 4H])
        dh_t^{rec} = δ_t Whᵀ
        ∂L/∂Wh = Σ_t h_{t−1}ᵀ δ_t,  ∂L/∂Wx = Σ_t x_tᵀ δ_t,  ∂L/∂b = Σ_{n,t} δ_t,  ∂L/∂x_t = δ_t Wxᵀ.

    Attributes:
      features: ``H``, the size of the state and of the cell.
      return_sequences: output every state, not only the last.
    """

    features: int
    return_sequences: bool = False
    _gates: ClassVar[int] = 4

    def init(self, key: jax.Array, in_shape: tuple[int, ...], dtype: DTypeLike) -> dict[str, jax.Array]:
        """:meth:`jaxnet.Layer.init` (Glorot-normal ``Wx`` and ``Wh`` from two keys split from
        ``key``, zero ``b``), then the forget gate's bias ``b[H:2H] = 1``: the cell keeps most of
        its state at first, so gradients reach early steps."""
        params = super().init(key, in_shape, dtype)
        h = self.features
        params["b"] = params["b"].at[h : 2 * h].set(1)
        return params

    def fwd(self, params: dict[str, jax.Array], x: jax.Array) -> tuple[jax.Array, LSTMResiduals]:
        """``x``: [batch, T, D] -> ``h_T`` [batch, H] (or ``h`` [batch, T, H]); residuals
        :class:`LSTMResiduals` ``(x, gates, c, h)``."""
        u = self._project(params, x)  # x_t Wx + b: [batch, T, 4H]
        step = functools.partial(self._step, params["Wh"])
        zero = jnp.zeros((x.shape[0], self.features), u.dtype)  # h_0 = c_0 = 0: [batch, H]
        _, (gates, c, h) = jax.lax.scan(step, (zero, zero), _time_major(u))  # [T, batch, …]
        gates, c, h = _batch_major((gates, c, h))  # [batch, T, 4H], [batch, T, H], [batch, T, H]
        return self._output(h), LSTMResiduals(x, gates, c, h)

    def _step(
        self, wh: jax.Array, state: tuple[jax.Array, jax.Array], u_t: jax.Array
    ) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array, jax.Array]]:
        """One step: ``state = (h_{t−1}, c_{t−1})`` -> ``((h_t, c_t), (gates_t, c_t, h_t))``."""
        h_prev, c_prev = state
        z = u_t + h_prev @ wh  # [batch, H] @ [H, 4H] -> [batch, 4H]
        z_i, z_f, z_g, z_o = jnp.split(z, 4, axis=-1)  # each [batch, H]
        i, f, g, o = jax.nn.sigmoid(z_i), jax.nn.sigmoid(z_f), jnp.tanh(z_g), jax.nn.sigmoid(z_o)
        c = f * c_prev + i * g  # [batch, H]
        h = o * jnp.tanh(c)  # [batch, H]
        return (h, c), (jnp.concatenate([i, f, g, o], axis=-1), c, h)

    def bwd(
        self, params: dict[str, jax.Array], residuals: LSTMResiduals, dy: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``dy`` = ∂L/∂y: [batch, H] (or [batch, T, H]) -> ``(∂L/∂x [batch, T, D], {∂L/∂Wx, ∂L/∂Wh, ∂L/∂b})``;
        the formulas are in the class docstring."""
        x, gates, c, h = residuals
        dh_out = self._output_grad(dy, h)  # ∂L/∂h_t through the output alone: [batch, T, H]
        steps = _time_major((dh_out, gates, c, _previous(c)))
        dz, dWh = self._bptt(params["Wh"], steps, _time_major(_previous(h)))  # δ: [T, batch, 4H]
        dx, dWx, db = self._input_grads(params, x, _batch_major(dz))
        return dx, {"Wx": dWx, "Wh": dWh, "b": db}

    def _bwd_start(self, steps: Any) -> tuple[jax.Array, ...]:
        """``(dh_{T+1}^{rec} = 0, dc_{T+1}^{rec} = 0)``, each [batch, H]."""
        zero = jnp.zeros_like(steps[0][0])
        return zero, zero

    def _bwd_step(
        self, wh: jax.Array, carry: tuple[jax.Array, jax.Array], step: tuple[jax.Array, ...]
    ) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
        """Step ``t`` of BPTT. ``carry``: ``(dh_{t+1}^{rec}, dc_{t+1}^{rec})``; ``step``:
        ``(dy_t, gates_t [batch, 4H], c_t, c_{t−1})``. Returns ``((dh_t^{rec}, dc_t^{rec}), δ_t)``."""
        dh_rec, dc_rec = carry
        dy_t, gates, c, c_prev = step
        i, f, g, o = jnp.split(gates, 4, axis=-1)  # each [batch, H]
        tanh_c = jnp.tanh(c)
        dh = dy_t + dh_rec  # ∂L/∂h_t: [batch, H]
        do = dh * tanh_c  # h = o ∘ tanh(c)
        dc = dh * o * (1 - tanh_c**2) + dc_rec  # ... and c_t -> c_{t+1} through the forget gate
        di, df, dg, dc_prev = dc * g, dc * c_prev, dc * i, dc * f  # c = f ∘ c_{t−1} + i ∘ g
        dz = jnp.concatenate(
            [di * i * (1 - i), df * f * (1 - f), dg * (1 - g**2), do * o * (1 - o)], axis=-1
        )  # δ_t = ∂L/∂z_t through σ', tanh', σ', σ': [batch, 4H]
        return (dz @ wh.T, dc_prev), dz  # dh_t^{rec} = δ_t Whᵀ: [batch, 4H] @ [4H, H] -> [batch, H]
