"""Layer normalisation and the sequence layers around it, forward and backward side by side.

Three kinds on the layer protocol of :mod:`jaxnet.layers`, each backward pass derived by hand:

- :class:`LayerNorm`: normalises every position over its last (feature) axis, then scales and
  shifts; per-example inputs ``[D]`` or ``[T, D]``;
- :class:`SequenceMean`: ``[batch, T, D]`` -> ``[batch, D]``, the mean over the sequence axis;
- :class:`TokenDense`: a dense layer with its activation applied at every position,
  ``[batch, T, D]`` -> ``[batch, T, features]``.

A small sequence classifier built from them::

    sequential((T, D), [TokenDense(8, "tanh"), LayerNorm(), SequenceMean(), Dense(3)])
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from .activations import get_activation
from .layers import Activated, Layer, activation_gaps, activation_init, positive_int, unit_fraction


def _positive_float(value: Any, what: str) -> float:
    """``value`` as a float, or a ``ValueError`` naming ``what`` unless it is a positive finite number."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} must be a positive finite number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{what} must be a positive finite number, got {value!r}")
    return float(value)


def _features_first(shape: tuple[int, ...], vector: jax.Array) -> jax.Array:
    """A per-feature vector [D] reshaped to broadcast against ``[batch, *lead, D]`` of ``shape``."""
    return vector.reshape((1,) * (len(shape) - 1) + (vector.shape[0],))  # [D] -> [1, …, 1, D]


class Normalized(NamedTuple):
    """Residuals of :class:`LayerNorm`: what its backward pass needs."""

    xhat: jax.Array  # x̂ = (x − μ) r: [batch, *lead, D]
    r: jax.Array  # r = 1 / sqrt(σ² + eps): [batch, *lead, 1]


class _ScaleShift(Layer):
    """Shared by the normalisations: per-example inputs ``[..., D]`` kept as they are, a learnable
    per-feature ``scale`` and ``shift`` (``[D]`` each, initially 1 and 0: the plain normalisation),
    neither a weight (L2 leaves them alone unless ``l2_bias``)."""

    weight_names = ()  # scale and shift are per-feature, like biases: penalised only with l2_bias

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) < 1:
            raise ValueError(f"{type(self).__name__} expects per-example inputs [..., D], got shape {tuple(in_shape)}")
        return tuple(in_shape)

    def param_shapes(self, in_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        return {"scale": (in_shape[-1],), "shift": (in_shape[-1],)}

    def init(self, key: jax.Array, in_shape: tuple[int, ...], dtype: DTypeLike) -> dict[str, jax.Array]:
        """``scale`` ones, ``shift`` zeros: the layer starts as the plain normalisation (``key`` unused)."""
        d = in_shape[-1]
        return {"scale": jnp.ones((d,), dtype), "shift": jnp.zeros((d,), dtype)}


@dataclasses.dataclass(frozen=True)
class LayerNorm(_ScaleShift):
    """Layer normalisation over the last axis: ``y = scale ∘ (x − μ) / sqrt(σ² + eps) + shift``.

    Per-example inputs ``[D]`` or ``[T, D]`` (any rank ≥ 1; every position is normalised on its
    own): ``μ = 1/D Σ_d x_d`` and the biased ``σ² = 1/D Σ_d (x_d − μ)²`` over the last axis.
    Parameters ``{"scale": [D], "shift": [D]}``, initialised to ones and zeros (the identity
    map of the normalised input).

    Backward, with ``x̂ = (x − μ) r``, ``r = 1/sqrt(σ² + eps)`` and ``g = dy ∘ scale``::

        ∂L/∂x     = r (g − mean(g) − x̂ mean(g ∘ x̂))     (means over the last axis)
        ∂L/∂scale = Σ over all but the last axis of dy ∘ x̂
        ∂L/∂shift = Σ over all but the last axis of dy

    ``D = 1``: ``x − μ = 0``, so ``x̂ = 0`` and ``y = shift`` whatever ``x``; then ``∂L/∂x = 0``
    and ``∂L/∂scale = 0`` (exactly: ``mean`` of one entry is that entry), ``∂L/∂shift = Σ dy``.

    L2: neither parameter is a weight (``weight_names = ()``), so the default penalty leaves
    both alone: ``λ/2 · scale²`` would pull the scale towards 0, not towards its natural value 1,
    and shrink every normalised feature; with ``l2_bias`` both are penalised, as every other
    layer's biases are.

    Attributes:
      eps: the positive variance floor ``eps`` (default ``1e-5``).
    """

    eps: float = 1e-5

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", _positive_float(self.eps, "LayerNorm.eps"))

    def fwd(self, params: dict[str, jax.Array], x: jax.Array) -> tuple[jax.Array, Normalized]:
        """``x``: [batch, *lead, D] -> ``y``: [batch, *lead, D]; residuals :class:`Normalized` ``(x̂, r)``.

        μ = mean(x),  c = x − μ,  σ² = mean(c²),  r = 1/sqrt(σ² + eps),  x̂ = c r,
        y = scale ∘ x̂ + shift  (means over the last axis).
        """
        mu = jnp.mean(x, axis=-1, keepdims=True)  # [batch, *lead, 1]
        c = x - mu  # [batch, *lead, D]
        var = jnp.mean(c * c, axis=-1, keepdims=True)  # [batch, *lead, 1]
        r = 1.0 / jnp.sqrt(var + self.eps)  # [batch, *lead, 1]
        xhat = c * r  # [batch, *lead, D]
        y = _features_first(x.shape, params["scale"]) * xhat + _features_first(x.shape, params["shift"])
        return y, Normalized(xhat, r)

    def bwd(
        self, params: dict[str, jax.Array], residuals: Normalized, dy: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``dy`` = ∂L/∂y: [batch, *lead, D] -> (∂L/∂x: [batch, *lead, D], {∂L/∂scale, ∂L/∂shift}).

        One line per forward line, in reverse (sums over the batch and leading axes, means and
        sums ``Σ_D`` over the last axis)::

            y = scale ∘ x̂ + shift:  ∂shift = Σ dy,  ∂scale = Σ dy ∘ x̂,  ∂x̂ = dy ∘ scale
            x̂ = c r:                ∂r = Σ_D ∂x̂ ∘ c,  ∂c = ∂x̂ r
            r = (σ² + eps)^(−1/2):  ∂σ² = −½ r³ ∂r
            σ² = mean(c²):          ∂c += 2 c ∂σ² / D
            c = x − μ:              ∂μ = −Σ_D ∂c,  ∂x = ∂c
            μ = mean(x):            ∂x += ∂μ / D

        which sums to ``r (g − mean(g) − x̂ mean(g ∘ x̂))`` with ``g = dy ∘ scale`` (the class
        docstring's form), since ``mean(x̂) = 0``.
        """
        xhat, r = residuals.xhat, residuals.r  # [batch, *lead, D], [batch, *lead, 1]
        n = xhat.shape[-1]  # D
        axes = tuple(range(dy.ndim - 1))  # the batch and every leading axis
        c = xhat / r  # x − μ: [batch, *lead, D]
        dshift = jnp.sum(dy, axis=axes)  # [D]
        dscale = jnp.sum(dy * xhat, axis=axes)  # [D]
        dxhat = dy * _features_first(dy.shape, params["scale"])  # [batch, *lead, D]
        dr = jnp.sum(dxhat * c, axis=-1, keepdims=True)  # [batch, *lead, 1]
        dc = dxhat * r  # [batch, *lead, D]
        dvar = -0.5 * r**3 * dr  # [batch, *lead, 1]
        dc = dc + 2.0 * c * dvar / n  # [batch, *lead, D]
        dmu = -jnp.sum(dc, axis=-1, keepdims=True)  # [batch, *lead, 1]
        dx = dc + dmu / n  # [batch, *lead, D]
        return dx, {"scale": dscale, "shift": dshift}


def _sequence(in_shape: tuple[int, ...], kind: str) -> tuple[int, int]:
    """``(T, D)`` of a per-example sequence shape, or a ``ValueError`` naming ``kind``."""
    if len(in_shape) != 2:
        raise ValueError(
            f"{kind} expects per-example sequences [T, D] (batches [batch, T, D]), got shape {tuple(in_shape)}"
        )
    return in_shape[0], in_shape[1]


@dataclasses.dataclass(frozen=True)
class SequenceMean(Layer):
    """The mean over the sequence axis: ``y[n, d] = 1/T Σ_t x[n, t, d]``, ``[batch, T, D]`` -> ``[batch, D]``.

    No parameters. Backward spreads each entry evenly over the positions:
    ``∂L/∂x[n, t, d] = dy[n, d] / T``.
    """

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        _, d = _sequence(in_shape, "SequenceMean")
        return (d,)

    def fwd(self, params: dict[str, jax.Array], x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``x``: [batch, T, D] -> [batch, D]; the residual ``"positions"`` is an empty [batch, T, 0] carrying T."""
        y = jnp.mean(x, axis=1)  # [batch, D]
        return y, {"positions": jnp.zeros((*x.shape[:2], 0), x.dtype)}

    def bwd(
        self, params: dict[str, jax.Array], residuals: dict[str, jax.Array], dy: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``dy``: [batch, D] -> ∂L/∂x = broadcast(dy) / T: [batch, T, D]."""
        n, t = residuals["positions"].shape[:2]
        dx = jnp.broadcast_to(dy[:, None, :], (n, t, dy.shape[1])) / t  # [batch, 1, D] -> [batch, T, D]
        return dx, {}


@dataclasses.dataclass(frozen=True)
class TokenDense(Layer):
    """A dense layer with its activation at every position: ``a_t = g(x_t W + b)``.

    ``[batch, T, D]`` -> ``[batch, T, features]``, the same ``{"W": [D, features], "b": [features]}``
    at every position t (row-vector convention); He-normal weights for the ReLU family,
    Glorot-normal otherwise, zero biases, as :class:`jaxnet.Dense`. Kinks (ReLU's ``z = 0``)
    are reported per unit and position, as :class:`jaxnet.Dense` reports them.

    Attributes:
      features: the output width ``F``.
      activation: the name of ``g`` (see :data:`jaxnet.activations.ACTIVATIONS`).
    """

    features: int
    activation: str = "identity"

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", positive_int(self.features, "TokenDense.features"))
        get_activation(self.activation)  # fail early on an unknown name

    def param_shapes(self, in_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        return {"W": (in_shape[-1], self.features), "b": (self.features,)}

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        t, _ = _sequence(in_shape, "TokenDense")
        return (t, self.features)

    def weight_init(self) -> jax.nn.initializers.Initializer:
        """He-normal for the ReLU family, Glorot-normal otherwise (fan-in D, fan-out features)."""
        return activation_init(self.activation)

    def fwd(self, params: dict[str, jax.Array], x: jax.Array) -> tuple[jax.Array, Activated]:
        """``x``: [batch, T, D] -> ``a``: [batch, T, F].

        z_t = x_t W + b,  a_t = g(z_t).  Residuals: :class:`jaxnet.layers.Activated` ``(x, z, a)``.
        """
        g = get_activation(self.activation)
        z = jnp.einsum("ntd,df->ntf", x, params["W"]) + params["b"][None, None, :]  # [batch, T, D] @ [D, F]
        a = g.fn(z)  # [batch, T, F]
        return a, Activated(x, z, a)

    def bwd(
        self, params: dict[str, jax.Array], residuals: Activated, da: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``da`` = ∂L/∂a: [batch, T, F] -> (∂L/∂x: [batch, T, D], {∂L/∂W, ∂L/∂b}).

        δ_t = da_t ∘ g'(z_t),  ∂L/∂W = Σ_{batch, t} x_tᵀ δ_t,  ∂L/∂b = Σ_{batch, t} δ_t,  ∂L/∂x_t = δ_t Wᵀ.
        """
        g = get_activation(self.activation)
        x, z, a = residuals.x, residuals.z, residuals.a
        dz = da * g.deriv(z, a)  # δ: [batch, T, F]
        dW = jnp.einsum("ntd,ntf->df", x, dz)  # Σ_{n,t} [D, 1] [1, F] -> [D, F]
        db = jnp.sum(dz, axis=(0, 1))  # [F]
        dx = jnp.einsum("ntf,df->ntd", dz, params["W"])  # [batch, T, F] @ [F, D] -> [batch, T, D]
        return dx, {"W": dW, "b": db}

    def kink_gaps(self, residuals: Activated) -> jax.Array | None:
        """|z| of every unit at every position when the activation has a kink at 0 ([batch, T F]), else None."""
        return activation_gaps(self.activation, residuals.z)  # [batch, T, F] -> [batch, T F]


class BatchStats(NamedTuple):
    """Residuals of :class:`BatchNorm` in training mode: normalised with the batch's own statistics."""

    xhat: jax.Array  # x̂ = (x − μ_B) r: [batch, *lead, D]
    r: jax.Array  # r = 1 / sqrt(σ²_B + eps): [D]


class RunningStats(NamedTuple):
    """Residuals of :class:`BatchNorm` in evaluation mode: normalised with the running statistics."""

    xhat: jax.Array  # x̂ = (x − mean) r: [batch, *lead, D]
    r: jax.Array  # r = 1 / sqrt(var + eps): [D]


@dataclasses.dataclass(frozen=True)
class BatchNorm(_ScaleShift):
    """Batch normalisation of every feature (the last axis) over the batch:
    ``y = scale ∘ (x − μ) / sqrt(σ² + eps) + shift``.

    Per-example inputs ``[D]``, ``[T, D]`` or ``[H, W, D]``: the statistics of feature ``d`` are
    taken over every axis but the last (the batch, and the positions of a sequence or an image),
    ``m`` values per feature.

    - Training (``train=True``): ``μ = μ_B``, ``σ² = σ²_B``, the mean and the biased variance of
      this batch's ``m`` values; the state moves towards them,
      ``mean ← momentum · mean + (1 − momentum) · μ_B`` (and ``var`` likewise with ``σ²_B``).
    - Evaluation (``train=False``): ``μ``, ``σ²`` are the running ``mean`` and ``var`` of the
      state, constants; the state is returned unchanged.

    State ``{"mean": [D], "var": [D]}``, initially 0 and 1 (:func:`jaxnet.init_state`);
    parameters ``{"scale": [D], "shift": [D]}``, initially 1 and 0, not penalised by L2 unless
    ``l2_bias`` (as for :class:`LayerNorm`).

    Backward, with ``x̂ = (x − μ) r``, ``r = 1/sqrt(σ² + eps)``, ``g = dy ∘ scale`` and means and
    sums over the ``m`` values of each feature::

        training:    ∂L/∂x = r (g − mean(g) − x̂ mean(g ∘ x̂))
        evaluation:  ∂L/∂x = r g
        both:        ∂L/∂scale = Σ dy ∘ x̂,   ∂L/∂shift = Σ dy

    In training the two mean terms are there because ``μ_B`` and ``σ²_B`` depend on every
    example of the batch: one example's output depends on all the others'
    (``couples_examples``), so per-example gradients are not defined.

    A batch of one in training (``m = 1``: one value per feature) is refused with a
    ``ValueError``: ``x − μ_B = 0``, so the output would be ``shift`` whatever the input and
    every gradient but ``∂L/∂shift`` zero. In evaluation a batch of one is fine.

    Attributes:
      momentum: in ``[0, 1)``, the fraction of the running statistics kept at each training
        step (default 0.9).
      eps: the positive variance floor (default ``1e-5``).
    """

    momentum: float = 0.9
    eps: float = 1e-5

    couples_examples = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", _positive_float(self.eps, "BatchNorm.eps"))
        object.__setattr__(self, "momentum", unit_fraction(self.momentum, "BatchNorm.momentum"))

    def init_state(self, in_shape: tuple[int, ...], dtype: DTypeLike) -> dict[str, jax.Array]:
        """Running ``mean`` zeros and ``var`` ones, ``[D]``."""
        d = in_shape[-1]
        return {"mean": jnp.zeros((d,), dtype), "var": jnp.ones((d,), dtype)}

    def fwd(self, params: dict[str, jax.Array], x: jax.Array) -> tuple[jax.Array, BatchStats | RunningStats]:
        """Training mode with the batch's statistics, no state kept (:meth:`apply` with ``state=None``)."""
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
    ) -> tuple[jax.Array, BatchStats | RunningStats, dict[str, jax.Array] | None]:
        """``x``: [batch, *lead, D] -> ``(y [batch, *lead, D], residuals, new_state)``.

        Training: μ_B = mean(x),  c = x − μ_B,  σ²_B = mean(c²),  r = 1/sqrt(σ²_B + eps),  x̂ = c r
        (means over all but the last axis); evaluation: x̂ = (x − mean) r with r from ``var``.
        Both: y = scale ∘ x̂ + shift.
        """
        scale, shift = _features_first(x.shape, params["scale"]), _features_first(x.shape, params["shift"])
        if not train:
            if state is None:
                raise ValueError("BatchNorm in evaluation mode (train=False) needs its state (running mean and var)")
            r = 1.0 / jnp.sqrt(state["var"] + self.eps)  # [D]
            xhat = (x - _features_first(x.shape, state["mean"])) * _features_first(x.shape, r)  # [batch, *lead, D]
            return scale * xhat + shift, RunningStats(xhat, r), state
        axes = tuple(range(x.ndim - 1))  # the batch and every leading axis
        if math.prod(x.shape[:-1]) == 1:
            raise ValueError(
                f"BatchNorm in training mode normalises each feature over the batch, but x of shape {tuple(x.shape)} "
                "has one value per feature: x − μ_B = 0 and the output would be `shift` whatever x. Use a batch of "
                "two or more, or train=False (the running statistics)"
            )
        mu = jnp.mean(x, axis=axes)  # μ_B: [D]
        c = x - _features_first(x.shape, mu)  # [batch, *lead, D]
        var = jnp.mean(c * c, axis=axes)  # σ²_B: [D]
        r = 1.0 / jnp.sqrt(var + self.eps)  # [D]
        xhat = c * _features_first(x.shape, r)  # [batch, *lead, D]
        new_state = None
        if state is not None:
            keep = self.momentum
            new_state = {"mean": keep * state["mean"] + (1 - keep) * mu, "var": keep * state["var"] + (1 - keep) * var}
        return scale * xhat + shift, BatchStats(xhat, r), new_state

    def bwd(
        self, params: dict[str, jax.Array], residuals: BatchStats | RunningStats, dy: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``dy`` = ∂L/∂y: [batch, *lead, D] -> (∂L/∂x: [batch, *lead, D], {∂L/∂scale, ∂L/∂shift}).

        One line per forward line, in reverse (sums ``Σ`` and means over the ``m`` values of each
        feature: every axis but the last)::

            y = scale ∘ x̂ + shift:   ∂shift = Σ dy,  ∂scale = Σ dy ∘ x̂,  ∂x̂ = dy ∘ scale
            (evaluation: x̂ = (x − mean) r with constants mean, r:  ∂x = ∂x̂ r; done)
            x̂ = c r:                 ∂r = Σ ∂x̂ ∘ c,  ∂c = ∂x̂ r
            r = (σ²_B + eps)^(−1/2): ∂σ²_B = −½ r³ ∂r
            σ²_B = mean(c²):         ∂c += 2 c ∂σ²_B / m
            c = x − μ_B:             ∂μ_B = −Σ ∂c,  ∂x = ∂c
            μ_B = mean(x):           ∂x += ∂μ_B / m

        which sums to ``r (g − mean(g) − x̂ mean(g ∘ x̂))`` with ``g = dy ∘ scale``.
        """
        xhat, r = residuals.xhat, _features_first(dy.shape, residuals.r)  # [batch, *lead, D], [1, …, 1, D]
        axes = tuple(range(dy.ndim - 1))
        dshift = jnp.sum(dy, axis=axes)  # [D]
        dscale = jnp.sum(dy * xhat, axis=axes)  # [D]
        dxhat = dy * _features_first(dy.shape, params["scale"])  # [batch, *lead, D]
        if isinstance(residuals, RunningStats):
            return dxhat * r, {"scale": dscale, "shift": dshift}
        m = math.prod(dy.shape[:-1])  # values per feature
        c = xhat / r  # x − μ_B: [batch, *lead, D]
        dr = jnp.sum(dxhat * c, axis=axes, keepdims=True)  # [1, …, 1, D]
        dc = dxhat * r  # [batch, *lead, D]
        dvar = -0.5 * r**3 * dr  # [1, …, 1, D]
        dc = dc + 2.0 * c * dvar / m  # [batch, *lead, D]
        dmu = -jnp.sum(dc, axis=axes, keepdims=True)  # [1, …, 1, D]
        dx = dc + dmu / m  # [batch, *lead, D]
        return dx, {"scale": dscale, "shift": dshift}
