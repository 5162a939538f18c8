"""Layer kinds on one small protocol, forward and backward side by side.

A layer kind is a frozen dataclass that subclasses :class:`Layer`: a hashable description
(static under jit) whose parameters live outside it, in the params pytree. It writes three
methods, four when it has parameters:

- ``output_shape(in_shape) -> tuple``: per-example shapes, without the batch axis;
- ``param_shapes(in_shape) -> dict``: parameter name -> shape (default: none);
- ``fwd(params, x) -> (y, residuals)``: the forward value and what backward needs, *named*
  (a NamedTuple or a dict; every leaf with the batch axis first);
- ``bwd(params, residuals, dy) -> (dx, dparams)``: given ``dy = ∂L/∂y``, return ``∂L/∂x``
  and ``∂L/∂params``, derived by hand (no autodiff).

Everything else has a default, derived from those:

- initialisation (:meth:`Layer.init`): weights from :meth:`Layer.weight_init` (Glorot-normal),
  every other parameter zero;
- which parameters are *weights* (:meth:`Layer.weights`): those named in ``weight_names``,
  by default the ones with two or more axes; L2 penalises the weights, and every other
  parameter too with ``l2_bias`` (:meth:`Layer.l2_names`); a weight's fan-in is the product
  of all but its last axis;
- kinks (:meth:`Layer.kink_gaps`): none;
- per-example gradient norms (:meth:`Layer.grad_sq_norms`): by running ``bwd`` on each
  example alone (layers with a cheaper exact formula, :class:`Dense` and :class:`Conv2D`,
  override it);
- checkpoints: every public subclass is registered when it is defined, under
  :func:`kind_name` (``"module:Name"`` for kinds outside jaxnet), so a checkpoint of a network
  that uses it can be read back in any process that has defined (imported) it
  (:func:`layer_kind`); its fields must survive JSON (numbers, strings, booleans, None and
  tuples of them), or be layers themselves (a composite such as
  :class:`jaxnet.composite.Residual`, whose sub-layers are stored with their kinds);
- inputs: real numbers. A kind whose input is integer token ids sets the class attribute
  ``integer_inputs = True`` and has a positive int field ``vocab`` (see
  :class:`jaxnet.embedding.Embedding`); it must be a network's first layer, and the network
  then keeps its ``x`` integer (:func:`jaxnet.network.takes_token_ids`);
- state and randomness (:meth:`Layer.apply`): none. A layer with *state* that is not a
  parameter (BatchNorm's running statistics) returns it from :meth:`Layer.init_state`; a layer
  that draws random numbers in training (Dropout's mask) sets ``needs_key``; both override
  :meth:`Layer.apply`, the forward pass in a mode (``train`` or evaluation) that takes the
  layer's state and PRNG key and returns ``(y, residuals, new_state)``. The residuals carry
  what ``bwd`` needs (the mask, the statistics used), so ``bwd`` keeps its signature. Nothing
  is mutated and no global RNG is used: state goes in and comes out, keys are passed in
  (:func:`jaxnet.init_state`, :func:`jaxnet.loss_with_state`). A layer whose training-mode
  output for one example depends on the other examples of the batch sets
  ``couples_examples`` (per-example gradients are then not defined).

:func:`jaxnet.forward` and :func:`jaxnet.manual_grads` run one loop over these,
whatever the layer kinds.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from .activations import get_activation


def positive_int(value: Any, what: str) -> int:
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


def unit_fraction(value: Any, what: str) -> float:
    """``value`` as a float in ``[0, 1)`` (a rate, a momentum), or a ``ValueError`` naming ``what``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} must be a number in [0, 1), got {value!r}")
    if not 0.0 <= value < 1.0:  # NaN fails here too
        raise ValueError(f"{what} must be in [0, 1), got {value!r}")
    return float(value)


def activation_gaps(activation: str, z: jax.Array) -> jax.Array | None:
    """|z| per unit, flattened to [batch, m], when the activation has a kink at 0; else None
    (the :meth:`Layer.kink_gaps` of a layer that applies ``activation`` to ``z``)."""
    if not get_activation(activation).kink:
        return None
    return jnp.abs(z).reshape(z.shape[0], -1)


_INITS = {
    "he": jax.nn.initializers.he_normal(),  # Var W = 2 / fan_in
    "glorot": jax.nn.initializers.glorot_normal(),  # Var W = 2 / (fan_in + fan_out)
}


def activation_init(activation: str) -> jax.nn.initializers.Initializer:
    """The weight initializer for a layer followed by ``activation``: He-normal
    (``Var W = 2 / fan_in``) for the ReLU family, Glorot-normal otherwise."""
    return _INITS[get_activation(activation).init]


_KINDS: dict[str, type[Layer]] = {}  # kind name -> Layer subclass, filled as subclasses are defined


def kind_name(cls: type) -> str:
    """The name a checkpoint gives a layer class: the class name for jaxnet's own kinds
    (``"Dense"``), ``"module:QualifiedName"`` for everyone else's (``"__main__:ScaledTanh"``), so
    that two libraries' kinds of the same name never clash."""
    own = cls.__module__ == "jaxnet" or cls.__module__.startswith("jaxnet.")
    return cls.__name__ if own else f"{cls.__module__}:{cls.__qualname__}"


def layer_kind(name: str) -> type[Layer]:
    """The :class:`Layer` subclass registered under ``name`` (see :func:`kind_name`). A kind that
    a script or notebook defined (``"__main__:Name"``) is also found in an importable module,
    and the other way round, when exactly one defined kind has that qualified name (the class
    moved into a module, or was pasted into a notebook); two libraries' kinds never stand in for
    each other. Otherwise a ``KeyError`` that says how to register it."""
    if name in _KINDS:
        return _KINDS[name]
    module, _, qualname = name.rpartition(":")
    moved = [
        cls
        for key, cls in _KINDS.items()
        if key.partition(":")[2] == qualname and "__main__" in (module, cls.__module__)
    ]
    if module and len(moved) == 1:
        return moved[0]
    raise KeyError(
        f"unknown layer kind {name!r}: define (import) that jaxnet.Layer subclass first; "
        f"known kinds: {', '.join(sorted(_KINDS))}"
    )


class Layer:
    """The base of every layer kind: subclass it as a frozen dataclass and write
    ``output_shape``, ``fwd`` and ``bwd`` (and ``param_shapes`` when it has parameters).

    Shapes: ``in_shape`` is one example's input shape (no batch axis); ``fwd`` and ``bwd`` see
    batches, ``x``: ``[batch, *in_shape]``, ``y``: ``[batch, *output_shape(in_shape)]``.
    See the module docstring for what each default does.
    """

    weight_names: tuple[str, ...] | None = None  # None: the parameters with two or more axes
    needs_key: bool = False  # True: apply(..., train=True) draws random numbers from its key
    couples_examples: bool = False  # True: in training, an example's output depends on the other examples

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):  # a shared private base is not a kind
            _KINDS[kind_name(cls)] = cls  # a redefinition (a notebook cell run again) replaces the old class

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-example output shape for per-example input shape ``in_shape``."""
        raise NotImplementedError(f"{type(self).__name__} must define output_shape(in_shape)")

    def fwd(self, params: dict[str, jax.Array], x: jax.Array) -> tuple[jax.Array, Any]:
        """``x``: [batch, *in_shape] -> ``(y [batch, *out_shape], residuals)``."""
        raise NotImplementedError(f"{type(self).__name__} must define fwd(params, x)")

    def bwd(
        self, params: dict[str, jax.Array], residuals: Any, dy: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``dy`` = ∂L/∂y: [batch, *out_shape] -> ``(∂L/∂x [batch, *in_shape], {name: ∂L/∂param})``."""
        raise NotImplementedError(f"{type(self).__name__} must define bwd(params, residuals, dy)")

    def param_shapes(self, in_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """Parameter name -> shape; default: no parameters."""
        return {}

    def init_state(self, in_shape: tuple[int, ...], dtype: DTypeLike) -> dict[str, jax.Array]:
        """The layer's initial state, ``{name: array}``: values that are not parameters and that
        training updates (running statistics); default: none."""
        return {}

    def apply(
        self,
        params: dict[str, jax.Array],
        x: jax.Array,
        *,
        state: dict[str, jax.Array] | None,
        key: jax.Array | None,
        train: bool,
    ) -> tuple[jax.Array, Any, dict[str, jax.Array] | None]:
        """The forward pass in a mode: ``x``: [batch, *in_shape] -> ``(y, residuals, new_state)``.

        ``train``: training (True) or evaluation (False) mode; ``state``: the layer's state
        (:meth:`init_state`'s structure; ``None`` when the caller keeps none); ``key``: the layer's
        own PRNG key (``None`` unless ``needs_key``). Default: :meth:`fwd`, the same in both
        modes, the state returned as it came in."""
        y, residuals = self.fwd(params, x)
        return y, residuals, state

    def weights(self, in_shape: tuple[int, ...]) -> tuple[str, ...]:
        """The names of the weights: ``weight_names`` when the class sets it, else the
        parameters with two or more axes."""
        shapes = self.param_shapes(in_shape)
        if self.weight_names is not None:
            unknown = set(self.weight_names) - set(shapes)
            if unknown:
                raise ValueError(
                    f"{type(self).__name__}.weight_names names {sorted(unknown)}, which are not its "
                    f"parameters {sorted(shapes)}"
                )
            return tuple(self.weight_names)
        return tuple(name for name, shape in shapes.items() if len(shape) >= 2)

    def l2_names(self, in_shape: tuple[int, ...], l2_bias: bool = False) -> tuple[str, ...]:
        """The parameters that L2 penalises: the weights, and every parameter with ``l2_bias``."""
        weights = self.weights(in_shape)
        return tuple(self.param_shapes(in_shape)) if l2_bias else weights

    def weight_init(self) -> jax.nn.initializers.Initializer:
        """The initializer of the weights (a ``jax.nn.initializers`` function): Glorot-normal,
        ``Var W = 2 / (fan_in + fan_out)``."""
        return _INITS["glorot"]

    def init(self, key: jax.Array, in_shape: tuple[int, ...], dtype: DTypeLike) -> dict[str, jax.Array]:
        """Initial parameters: each weight from :meth:`weight_init`, every other parameter zero.

        With one weight, the layer's ``key`` draws it; several get ``jax.random.split(key, n)``
        in the order of ``param_shapes``. An override must draw from ``key`` only (no global
        NumPy or Python RNG): :func:`jaxnet.init_params` compiles the layers' ``init`` once per
        network, so anything else would be drawn once and repeat for every key."""
        shapes = self.param_shapes(in_shape)
        weights = [name for name in shapes if name in self.weights(in_shape)]
        keys = [key] if len(weights) == 1 else list(jax.random.split(key, len(weights)))
        w_keys = dict(zip(weights, keys))
        init = self.weight_init()
        return {
            name: init(w_keys[name], shape, dtype) if name in w_keys else jnp.zeros(shape, dtype)
            for name, shape in shapes.items()
        }

    def kink_gaps(self, residuals: Any) -> jax.Array | None:
        """Per example, for each of ``m`` places where the derivative can jump (a ReLU
        pre-activation, a pooling window), how far the forward pass came from the jump:
        ``[batch, m]``; ``None`` (the default) for a smooth layer. Verification draws inputs
        away from kinks and the checker counts and excludes the rest."""
        return None

    def grad_sq_norms(self, params: dict[str, jax.Array], residuals: Any, dy: jax.Array) -> jax.Array:
        """``||∂ℓ_i/∂params||²`` of every example's own gradient: [batch].

        Default: ``bwd`` on each example alone (``jax.vmap`` over the batch axis of
        ``residuals`` and ``dy``; every residual leaf must have the batch axis first), or
        zeros for a layer without parameters. Override it with a closed form when one exists."""
        if not params:
            return jnp.zeros(dy.shape[:1], dy.dtype)
        one = lambda r, d: self.bwd(params, jax.tree.map(lambda a: a[None], r), d[None])[1]
        grads = jax.vmap(one)(residuals, dy)  # every leaf [batch, *param.shape]
        squares = sum(jnp.sum(g * g, axis=tuple(range(1, g.ndim))) for g in jax.tree.leaves(grads))
        return cast(jax.Array, squares)  # params is not empty: a sum of arrays, never the start value 0


class Activated(NamedTuple):
    """Residuals of a layer ``a = g(z)`` with ``z`` affine in its input ``x``."""

    x: jax.Array  # the layer's input
    z: jax.Array  # the pre-activation
    a: jax.Array  # g(z)


class _Activated(Layer):
    """Layers that apply their ``activation`` to pre-activations ``z``; He-normal weights for the
    ReLU family, Glorot-normal otherwise."""

    activation: str  # each subclass's dataclass field

    def kink_gaps(self, residuals: Activated) -> jax.Array | None:
        """|z| of every unit when the activation has a kink at 0 ([batch, m]), else None."""
        return activation_gaps(self.activation, residuals.z)

    def weight_init(self) -> jax.nn.initializers.Initializer:
        return activation_init(self.activation)


@dataclasses.dataclass(frozen=True)
class Dense(_Activated):
    """Fully connected layer with its activation: ``a = g(x W + b)``.

    Parameters ``{"W": [n_in, n_out], "b": [n_out]}`` (row-vector convention); He-normal
    weights for the ReLU family, Glorot-normal otherwise, zero biases.

    Attributes:
      features: ``n_out``.
      activation: the name of ``g`` (see :data:`jaxnet.activations.ACTIVATIONS`);
        ``"identity"`` for an output layer.
    """

    features: int
    activation: str = "identity"

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", positive_int(self.features, "Dense.features"))
        get_activation(self.activation)  # fail early on an unknown name

    def param_shapes(self, in_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        return {"W": (in_shape[-1], self.features), "b": (self.features,)}

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != 1:
            raise ValueError(f"Dense expects flat per-example inputs [n_in], got shape {tuple(in_shape)}")
        return (self.features,)

    def fwd(self, params: dict[str, jax.Array], x: jax.Array) -> tuple[jax.Array, Activated]:
        """``x``: [batch, n_in] -> ``a``: [batch, n_out].

        z = x W + b,  a = g(z).  Residuals: :class:`Activated` ``(x, z, a)``.
        """
        g = get_activation(self.activation)
        z = x @ params["W"] + params["b"][None, :]  # [batch, n_in] @ [n_in, n_out] -> [batch, n_out]
        a = g.fn(z)  # [batch, n_out]
        return a, Activated(x, z, a)

    def bwd(
        self, params: dict[str, jax.Array], residuals: Activated, da: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``da`` = ∂L/∂a: [batch, n_out] -> (∂L/∂x: [batch, n_in], {∂L/∂W, ∂L/∂b}).

        δ = ∂L/∂z = da ∘ g'(z)      (the layer recursion δ_{l−1} = (δ_l W_lᵀ) ∘ g'(z_{l−1}))
        ∂L/∂W = xᵀ δ,  ∂L/∂b = Σ_batch δ,  ∂L/∂x = δ Wᵀ.
        """
        g = get_activation(self.activation)
        x, z, a = residuals.x, residuals.z, residuals.a
        dz = da * g.deriv(z, a)  # δ: [batch, n_out]
        dW = x.T @ dz  # [n_in, batch] @ [batch, n_out] -> [n_in, n_out]
        db = jnp.sum(dz, axis=0)  # [n_out]
        dx = dz @ params["W"].T  # [batch, n_out] @ [n_out, n_in] -> [batch, n_in]
        return dx, {"W": dW, "b": db}

    def grad_sq_norms(self, params: dict[str, jax.Array], residuals: Activated, da: jax.Array) -> jax.Array:
        """Per example ``||x_i||² ||δ_i||² + ||δ_i||²``: [batch].

        The example's own gradient is the outer product ``∂ℓ_i/∂W = x_iᵀ δ_i`` (rank one), so
        ``||x_iᵀ δ_i||²_F = ||x_i||² ||δ_i||²``; and ``∂ℓ_i/∂b = δ_i``.
        """
        g = get_activation(self.activation)
        x, z, a = residuals.x, residuals.z, residuals.a
        dz = da * g.deriv(z, a)  # δ: [batch, n_out]
        dz2 = jnp.sum(dz * dz, axis=1)  # [batch]
        return jnp.sum(x * x, axis=1) * dz2 + dz2


# --- convolution and pooling (NHWC inputs, HWIO kernels) -------------------------------------


def _pair(value: int | Sequence[int], what: str) -> tuple[int, ...]:
    values = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(values) != 2:
        raise ValueError(f"{what} must be an int or a pair of ints, got {value!r}")
    return tuple(positive_int(v, what) for v in values)


def _padding(padding: str | Sequence[tuple[int, int]]) -> str | tuple[tuple[int, int], ...]:
    """'VALID', 'SAME', or explicit ((top, bottom), (left, right)) non-negative ints."""
    if isinstance(padding, str):
        if padding.upper() not in ("VALID", "SAME"):
            raise ValueError(f"padding must be 'VALID', 'SAME' or ((top, bottom), (left, right)), got {padding!r}")
        return padding.upper()
    try:
        pads = tuple((operator.index(lo), operator.index(hi)) for lo, hi in padding)
    except (TypeError, ValueError):
        raise ValueError(
            f"padding must be 'VALID', 'SAME' or ((top, bottom), (left, right)), got {padding!r}"
        ) from None
    if len(pads) != 2 or any(p < 0 for pair in pads for p in pair):
        raise ValueError(f"explicit padding must be two non-negative (low, high) pairs, got {padding!r}")
    return pads


def _image(in_shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
    if len(in_shape) != 3:
        raise ValueError(f"{kind} expects per-example images [height, width, channels], got shape {tuple(in_shape)}")
    return in_shape


@dataclasses.dataclass(frozen=True)
class Conv2D(_Activated):
    """2-D convolution with bias and activation: ``a = g(z)``, ``z = x ⋆ W + b``.

    Parameters ``{"W": [kh, kw, c_in, c_out] (HWIO), "b": [c_out]}``; inputs
    ``[batch, H, W, c_in]`` (NHWC). What is computed is the cross-correlation of deep-learning
    libraries, ``z[n, i, j, o] = Σ_{p, q, c} x_pad[n, s i + p, s j + q, c] W[p, q, c, o] + b[o]``.
    Note 003's definition ``(f * g)(i, j) = Σ_m Σ_n f(m, n) g(m − i, n − j)`` is the same
    correlation with ``f`` the image and ``g`` the kernel (its offsets ``m − i`` run over the
    kernel's support); a true convolution would flip the kernel, which only relabels the
    learned weights.

    Attributes:
      features: ``c_out``.  kernel_size, strides: ints or pairs.
      padding: ``"VALID"``, ``"SAME"`` or ``((top, bottom), (left, right))``.
      activation: as for :class:`Dense`.
    """

    features: int
    kernel_size: int | Sequence[int] = (3, 3)
    strides: int | Sequence[int] = (1, 1)
    padding: str | Sequence[tuple[int, int]] = "VALID"
    activation: str = "identity"

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", positive_int(self.features, "Conv2D.features"))
        object.__setattr__(self, "kernel_size", _pair(self.kernel_size, "Conv2D.kernel_size"))
        object.__setattr__(self, "strides", _pair(self.strides, "Conv2D.strides"))
        object.__setattr__(self, "padding", _padding(self.padding))
        get_activation(self.activation)

    @property
    def _kernel_pair(self) -> tuple[int, int]:
        """``kernel_size`` as the pair that ``__post_init__`` made of it."""
        return cast("tuple[int, int]", self.kernel_size)  # the field's type is what the constructor accepts

    @property
    def _stride_pair(self) -> tuple[int, int]:
        """``strides`` as the pair that ``__post_init__`` made of it."""
        return cast("tuple[int, int]", self.strides)  # the field's type is what the constructor accepts

    def _pads(self, in_shape: tuple[int, ...]) -> Sequence[tuple[int, int]]:
        return (
            jax.lax.padtype_to_pads(in_shape[:2], self._kernel_pair, self._stride_pair, self.padding)
            if isinstance(self.padding, str)
            else self.padding
        )

    def param_shapes(self, in_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        return {"W": (*self._kernel_pair, in_shape[-1], self.features), "b": (self.features,)}

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        h, w, _ = _image(in_shape, "Conv2D")
        (pt, pb), (pl, pr) = self._pads(in_shape)
        kh, kw = self._kernel_pair
        if h + pt + pb < kh or w + pl + pr < kw:
            raise ValueError(
                f"Conv2D: kernel {self.kernel_size} is larger than the padded input "
                f"{(h + pt + pb, w + pl + pr)} (input {(h, w)}, padding {self.padding})"
            )
        sh, sw = self._stride_pair
        return ((h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1, self.features)

    def fwd(self, params: dict[str, jax.Array], x: jax.Array) -> tuple[jax.Array, Activated]:
        """``x``: [batch, H, W, c_in] -> ``a``: [batch, H', W', c_out]; residuals :class:`Activated` ``(x, z, a)``."""
        g = get_activation(self.activation)
        z = (
            jax.lax.conv_general_dilated(
                x, params["W"], self._stride_pair, self._pads(x.shape[1:]), dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            + params["b"][None, None, None, :]
        )  # [batch, H', W', c_out]
        a = g.fn(z)
        return a, Activated(x, z, a)

    def _kernel_grad(self, x: jax.Array, dz: jax.Array) -> jax.Array:
        """Σ_{n,i,j} x_pad[n, s i + p, s j + q, c] δ[n,i,j,o]: [kh, kw, c_in, c_out].

        lhs x as [c_in (batch), H, W, batch (features)], rhs δ as [batch (in), H', W', c_out (out)],
        the stride as rhs dilation -> [kh + r, kw + r', c_in, c_out], cropped to the kernel."""
        kh, kw = self._kernel_pair
        return jax.lax.conv_general_dilated(
            x,
            dz,
            (1, 1),
            self._pads(x.shape[1:]),
            rhs_dilation=self._stride_pair,
            dimension_numbers=("CHWN", "IHWO", "HWNC"),
        )[:kh, :kw]

    def _gram_norms(self, in_shape: tuple[int, ...]) -> bool:
        """Whether :meth:`grad_sq_norms` uses the Gram form for per-example inputs ``in_shape``."""
        ho, wo, c_out = self.output_shape(in_shape)
        t, p = ho * wo, self._kernel_pair[0] * self._kernel_pair[1] * in_shape[-1]
        return t * t + t * p < p * c_out

    def bwd(
        self, params: dict[str, jax.Array], residuals: Activated, da: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """δ = da ∘ g'(z): [batch, H', W', c_out].

        ∂L/∂b[o] = Σ_{n,i,j} δ[n,i,j,o];
        ∂L/∂W[p,q,c,o] = Σ_{n,i,j} x_pad[n, s i + p, s j + q, c] δ[n,i,j,o]: the correlation of
          the input with δ dilated by the stride (a convolution with the batch as the feature axis);
        ∂L/∂x = δ dilated by the stride (zeros between entries), padded by k − 1 − pad_low, and
          correlated with the kernel flipped in space, in/out channels swapped: the transposed
          convolution.
        """
        g = get_activation(self.activation)
        x, z, a = residuals.x, residuals.z, residuals.a
        dz = da * g.deriv(z, a)  # δ: [batch, H', W', c_out]
        db = jnp.sum(dz, axis=(0, 1, 2))  # [c_out]
        pads = self._pads(x.shape[1:])
        kh, kw = self._kernel_pair
        dW = self._kernel_grad(x, dz)  # [kh, kw, c_in, c_out]
        # dx: δ with the stride as lhs dilation, full padding, kernel flipped and transposed
        h, w = x.shape[1:3]
        ho, wo = dz.shape[1:3]
        (pt, _), (pl, _) = pads
        sh, sw = self._stride_pair
        back = ((kh - 1 - pt, h - 1 - (ho - 1) * sh + pt), (kw - 1 - pl, w - 1 - (wo - 1) * sw + pl))
        dx = jax.lax.conv_general_dilated(
            dz,
            params["W"][::-1, ::-1],
            (1, 1),
            back,
            lhs_dilation=self._stride_pair,
            dimension_numbers=("NHWC", "HWOI", "NHWC"),
        )  # [batch, H, W, c_in]
        return dx, {"W": dW, "b": db}

    def grad_sq_norms(self, params: dict[str, jax.Array], residuals: Activated, da: jax.Array) -> jax.Array:
        """Per example ``||∂ℓ_i/∂W||² + ||∂ℓ_i/∂b||²``: [batch], exactly.

        The example's kernel gradient is ``U_iᵀ Δ_i`` (reshaped to HWIO), with ``U_i``: [T, P]
        its input patches (one row per output position t, ``P = kh kw c_in``) and ``Δ_i``:
        [T, c_out] its δ, so
        ``||U_iᵀ Δ_i||²_F = Σ_{t,s} (U_i U_iᵀ)_{ts} (Δ_i Δ_iᵀ)_{ts}``.
        When it keeps less per example (``T² + T P < P c_out``: few output positions, a big
        kernel) that Gram form is used, keeping the patches [batch, T, P] and [batch, T, T];
        otherwise each example's kernel gradient is formed by the layer's own kernel-gradient
        correlation, mapped over the examples, keeping [batch, kh, kw, c_in, c_out] — one
        layer's per-example gradients, never the whole tree.
        ``∂ℓ_i/∂b = Σ_t Δ_i``.
        """
        g = get_activation(self.activation)
        x, z, a = residuals.x, residuals.z, residuals.a
        dz = da * g.deriv(z, a)  # δ: [batch, H', W', c_out]
        n, ho, wo, c_out = dz.shape
        t, p = ho * wo, self._kernel_pair[0] * self._kernel_pair[1] * x.shape[-1]
        if self._gram_norms(x.shape[1:]):
            patches = jax.lax.conv_general_dilated_patches(
                x,
                self._kernel_pair,
                self._stride_pair,
                self._pads(x.shape[1:]),
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )  # [batch, H', W', P] (feature order differs from HWIO; the norm does not care)
            u = patches.reshape(n, t, p)  # U: [batch, T, P]
            d = dz.reshape(n, t, c_out)  # Δ: [batch, T, c_out]
            kernel = jnp.einsum(
                "nts,nts->n", u @ u.transpose(0, 2, 1), d @ d.transpose(0, 2, 1)
            )  # [batch, T, T] ∘ [batch, T, T]
        else:
            gw = jax.vmap(lambda xi, di: self._kernel_grad(xi[None], di[None]))(x, dz)  # [batch, kh, kw, c_in, c_out]
            kernel = jnp.sum(gw * gw, axis=(1, 2, 3, 4))
        db = jnp.sum(dz, axis=(1, 2))  # [batch, c_out]
        return kernel + jnp.sum(db * db, axis=1)


class _Pool(Layer):
    """Shared pooling geometry: VALID windows of ``window`` with ``strides`` (default: window)."""

    window: int | Sequence[int]  # each subclass's dataclass fields
    strides: int | Sequence[int] | None

    def __post_init__(self) -> None:
        kind = type(self).__name__
        object.__setattr__(self, "window", _pair(self.window, f"{kind}.window"))
        object.__setattr__(
            self, "strides", _pair(self.window if self.strides is None else self.strides, f"{kind}.strides")
        )

    def _geometry(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """``(window, strides)``, the pairs that ``__post_init__`` made of them (strides never None)."""
        pairs = (self.window, self.strides)  # the fields' types are what the constructor accepts
        return cast("tuple[tuple[int, int], tuple[int, int]]", pairs)

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        kind = type(self).__name__
        h, w, c = _image(in_shape, kind)
        (kh, kw), (sh, sw) = self._geometry()
        if h < kh or w < kw:
            raise ValueError(f"{kind}: window {self.window} is larger than the input {(h, w)}")
        return ((h - kh) // sh + 1, (w - kw) // sw + 1, c)

    def _offsets(self, x: jax.Array, ho: int, wo: int) -> Iterator[tuple[tuple[slice, slice, slice], jax.Array]]:
        """For each window offset (p, q): the slice of x that sits at that offset of every window."""
        (kh, kw), (sh, sw) = self._geometry()
        for p in range(kh):
            for q in range(kw):
                index = (slice(None), slice(p, p + (ho - 1) * sh + 1, sh), slice(q, q + (wo - 1) * sw + 1, sw))
                yield index, x[index]  # [batch, H', W', c]


@dataclasses.dataclass(frozen=True)
class MaxPool2D(_Pool):
    """Max over VALID windows: ``y[n,i,j,c] = max_{p,q} x[n, s i + p, s j + q, c]``.

    Backward routes each window's δ to its arg-max. Tie rule: when several entries of a
    window share the maximum, the whole δ goes to the first of them in row-major window order
    (``p`` then ``q``). Overlapping windows (stride < window) add their contributions.
    """

    window: int | Sequence[int] = (2, 2)
    strides: int | Sequence[int] | None = None

    def fwd(self, params: dict[str, jax.Array], x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``x``: [batch, H, W, c] -> [batch, H', W', c]; residuals ``{"x", "y"}``."""
        (kh, kw), (sh, sw) = self._geometry()
        y = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, kh, kw, 1), (1, sh, sw, 1), "VALID")
        return y, {"x": x, "y": y}

    def bwd(
        self, params: dict[str, jax.Array], residuals: dict[str, jax.Array], dy: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """∂L/∂x[n, s i + p, s j + q, c] += dy[n,i,j,c] where (p, q) is the window's (first) arg-max."""
        x, y = residuals["x"], residuals["y"]
        dx = jnp.zeros_like(x)
        taken = jnp.zeros(y.shape, bool)  # the window's arg-max has been found
        for index, xs in self._offsets(x, *y.shape[1:3]):
            first = (xs == y) & ~taken  # [batch, H', W', c]
            taken = taken | first
            dx = dx.at[index].add(jnp.where(first, dy, 0.0))
        return dx, {}

    def kink_gaps(self, residuals: dict[str, jax.Array]) -> jax.Array:
        """Per window, the gap between its maximum and the nearest other entry below it: [batch, H' W' c].

        Exact ties are not counted. In a network they come from identical computations (windows
        over identical input patches, e.g. a constant image background, or inactive ReLU units at
        0) that stay tied when the parameters move, so the parameter gradient does not jump there
        (and the tie rule decides where δ goes, which a check should see). A near tie
        (0 < gap ≤ margin) is what a finite-difference step can cross."""
        x, y = residuals["x"], residuals["y"]
        gap = jnp.full(y.shape, jnp.inf, y.dtype)
        for _, xs in self._offsets(x, *y.shape[1:3]):
            gap = jnp.minimum(gap, jnp.where(xs == y, jnp.inf, y - xs))
        return gap.reshape(gap.shape[0], -1)


@dataclasses.dataclass(frozen=True)
class AvgPool2D(_Pool):
    """Mean over VALID windows: ``y[n,i,j,c] = 1/(kh kw) Σ_{p,q} x[n, s i + p, s j + q, c]``;
    backward spreads each δ evenly: ``∂L/∂x[n, s i + p, s j + q, c] += dy[n,i,j,c] / (kh kw)``."""

    window: int | Sequence[int] = (2, 2)
    strides: int | Sequence[int] | None = None

    def fwd(self, params: dict[str, jax.Array], x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        (kh, kw), (sh, sw) = self._geometry()
        y = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, kh, kw, 1), (1, sh, sw, 1), "VALID") / (kh * kw)
        return y, {"x_shape": jnp.zeros((*x.shape, 0), x.dtype)}  # an empty array that carries x's shape

    def bwd(
        self, params: dict[str, jax.Array], residuals: dict[str, jax.Array], dy: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        (kh, kw), _ = self._geometry()
        dx = jnp.zeros(residuals["x_shape"].shape[:-1], dy.dtype)  # [batch, H, W, c]
        share = dy / (kh * kw)
        for index, _ in self._offsets(dx, *dy.shape[1:3]):
            dx = dx.at[index].add(share)
        return dx, {}


@dataclasses.dataclass(frozen=True)
class Flatten(Layer):
    """``[batch, *shape]`` -> ``[batch, prod(shape)]`` (row-major: an image ``[H, W, c]``, a
    sequence ``[T, F]``); backward reshapes back."""

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (int(np.prod(in_shape)),)

    def fwd(self, params: dict[str, jax.Array], x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        # [batch, H, W, c] -> [batch, H W c]; the residual is an empty array carrying x's shape
        return x.reshape(x.shape[0], -1), {"x_shape": jnp.zeros((*x.shape, 0), x.dtype)}

    def bwd(
        self, params: dict[str, jax.Array], residuals: dict[str, jax.Array], dy: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        return dy.reshape(residuals["x_shape"].shape[:-1]), {}  # [batch, H W c] -> [batch, H, W, c]


@dataclasses.dataclass(frozen=True)
class Activation(Layer):
    """An activation on its own: ``a = g(z)``, backward ``dz = da ∘ g'(z)``. No parameters."""

    name: str

    def __post_init__(self) -> None:
        get_activation(self.name)

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(in_shape)

    def fwd(self, params: dict[str, jax.Array], z: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        a = get_activation(self.name).fn(z)
        return a, {"z": z, "a": a}

    def bwd(
        self, params: dict[str, jax.Array], residuals: dict[str, jax.Array], da: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        z, a = residuals["z"], residuals["a"]
        return da * get_activation(self.name).deriv(z, a), {}

    def kink_gaps(self, residuals: dict[str, jax.Array]) -> jax.Array | None:
        return activation_gaps(self.name, residuals["z"])
