"""Network descriptions and the pure functions on them: init, forward, loss, manual gradients.

A :class:`Network` is a frozen, hashable description, registered as a pytree with no
array leaves, so it passes through jit, autodiff and vmap transformations as a
static value without ``static_argnums``. Parameters are a plain list with one entry per
layer (a dense layer's entry is ``{"W": [fan_in, fan_out], "b": [fan_out]}``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any, TypeAlias, overload

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from .activations import get_activation
from .devices import as_array
from .layers import Dense, Layer, positive_int
from .losses import REDUCTIONS, get_loss, is_concrete

Params: TypeAlias = list[dict[str, jax.Array]]
"""A network's parameters: one ``{name: array}`` dict per layer, as :func:`init_params` makes them
(and :func:`manual_grads` returns their gradients)."""

State: TypeAlias = list[dict[str, jax.Array]]
"""A network's state, what is not a parameter but changes in training (BatchNorm's running
statistics): one ``{name: array}`` dict per layer (``{}`` for a layer without state), as
:func:`init_state` makes it and :func:`loss_with_state` returns it updated."""


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Network:
    """A network description: layers, loss head, reduction and L2 penalty.

    Attributes:
      input_shape: per-example input shape, e.g. ``(D,)``.
      layers: the layer descriptions, in order (see :mod:`jaxnet.layers`).
      loss: ``"softmax_cross_entropy"``, ``"sigmoid_cross_entropy"`` or ``"squared_error"``.
      reduction: ``"mean"`` (average over samples) or ``"sum"``; outputs are always summed.
      l2: ``λ`` of the penalty ``λ/2 · Σ W²``.
      l2_bias: also penalise biases.
    """

    input_shape: tuple[int, ...]
    layers: tuple  # Layer instances (a bare tuple: callers read the attributes of their own kinds)
    loss: str = "softmax_cross_entropy"
    reduction: str = "mean"
    l2: float = 0.0
    l2_bias: bool = False

    def __post_init__(self) -> None:
        shape = tuple(positive_int(d, "input_shape entries") for d in _as_sequence(self.input_shape, "input_shape"))
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "layers", tuple(_as_sequence(self.layers, "layers")))
        if not self.layers:
            raise ValueError("layers: a network needs at least one layer")
        for i, layer in enumerate(self.layers):
            _check_layer_kind(i, layer)
            if takes_token_ids(layer):
                _check_token_layer(i, layer)
        head = get_loss(self.loss)
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {self.reduction!r}; expected one of {list(REDUCTIONS)}")
        if isinstance(self.l2, bool) or not isinstance(self.l2, (int, float, np.floating, np.integer)):
            raise ValueError(f"l2 must be a non-negative number, got {self.l2!r}")
        if not (math.isfinite(self.l2) and self.l2 >= 0):
            raise ValueError(f"l2 must be a non-negative finite number, got {self.l2!r}")
        object.__setattr__(self, "l2", float(self.l2))
        if not isinstance(self.l2_bias, (bool, np.bool_)):
            raise ValueError(f"l2_bias must be True or False, got {self.l2_bias!r}")
        object.__setattr__(self, "l2_bias", bool(self.l2_bias))
        out = self.output_shape  # validates the layer chain
        if len(out) != 1:
            raise ValueError(f"the last layer must produce flat outputs [K], got per-example shape {out}")
        if out[0] < head.min_outputs:
            raise ValueError(f"{self.loss} needs at least {head.min_outputs} outputs, got {out[0]}")

    @property
    def layer_input_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Per-example input shape of every layer."""
        shapes, shape = [], self.input_shape
        for layer in self.layers:
            shapes.append(shape)
            shape = layer.output_shape(shape)
        return tuple(shapes)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Per-example output shape, ``(K,)``."""
        return self.layers[-1].output_shape(self.layer_input_shapes[-1])

    @property
    def sizes(self) -> tuple[int, ...]:
        """``(D, H1, ..., K)`` for a network of dense layers."""
        if not all(isinstance(layer, Dense) for layer in self.layers):
            raise ValueError("sizes is defined for networks of Dense layers only")
        return self.input_shape + tuple(layer.features for layer in self.layers)

    def __str__(self) -> str:
        if all(isinstance(layer, Dense) for layer in self.layers):
            acts = [layer.activation for layer in self.layers[:-1]]
            arch = "-".join(map(str, self.sizes)) + (f" {'/'.join(dict.fromkeys(acts))}" if acts else "")
        else:
            arch = " > ".join(type(layer).__name__ for layer in self.layers)
        reg = f", l2={self.l2:g}{' incl. biases' if self.l2_bias else ''}" if self.l2 else ""
        return f"{arch}, {self.loss} ({self.reduction}){reg}"


def _check_layer_kind(i: int, layer: Any) -> None:
    """A layer must be a frozen dataclass subclassing :class:`jaxnet.Layer` (hashable: static under jit)."""
    if not isinstance(layer, Layer):
        raise ValueError(
            f"layers[{i}]: {layer!r} is not a layer: use a layer kind of jaxnet.layers (e.g. "
            "jaxnet.Dense) or a frozen dataclass subclassing jaxnet.Layer"
        )
    params = getattr(type(layer), "__dataclass_params__", None)
    if params is None or not params.frozen:
        raise ValueError(
            f"layers[{i}]: {type(layer).__name__} must be a frozen dataclass "
            "(@dataclasses.dataclass(frozen=True)): a network is static under jit and saved by its fields"
        )
    try:
        hash(layer)
    except TypeError as e:
        raise ValueError(f"layers[{i}]: {layer!r} must be hashable (a network is static under jit): {e}") from None


def takes_token_ids(layer: Layer) -> bool:
    """Whether ``layer``'s input is integer token ids rather than real numbers: its class sets
    ``integer_inputs = True`` (e.g. :class:`jaxnet.embedding.Embedding`); it must then have a
    positive int ``vocab`` (ids in ``[0, vocab)``, checked when a network is built) and come
    first in a network."""
    return getattr(layer, "integer_inputs", False) is True


def _check_token_layer(i: int, layer: Layer) -> None:
    """A layer of token ids (:func:`takes_token_ids`) comes first and has a positive int ``vocab``."""
    if i > 0:
        raise ValueError(f"layers[{i}]: {type(layer).__name__} takes integer token ids, so it must be the first layer")
    vocab = getattr(layer, "vocab", None)
    if isinstance(vocab, bool) or not isinstance(vocab, (int, np.integer)) or vocab < 1:
        raise ValueError(
            f"layers[0]: {type(layer).__name__} sets integer_inputs = True, so it needs a positive int vocab "
            f"(its ids are in [0, vocab)); got {vocab!r}"
        )


def token_vocab(net: Network) -> int | None:
    """``vocab`` of ``net``'s first layer when it takes integer token ids (:func:`takes_token_ids`):
    ``net``'s inputs ``x`` are then ids in ``[0, vocab)``, kept as integers; ``None`` for a
    network of real-valued inputs."""
    first = net.layers[0]
    return int(first.vocab) if takes_token_ids(first) else None


def inputs_as(net: Network, x: ArrayLike, dtype: DTypeLike) -> jax.Array:
    """``x`` as ``net`` takes it: integer token ids unchanged when its first layer takes them
    (:func:`token_vocab`), real-valued inputs as ``dtype`` (the params' dtype)."""
    return as_array(x) if token_vocab(net) is not None else as_array(x, dtype)


def check_token_ids(ids: ArrayLike, vocab: int, what: str) -> None:
    """``ValueError`` naming ``what``, the first id out of ``[0, vocab)`` and ``vocab``, when a
    (concrete) id of ``ids`` is out of range."""
    a = np.asarray(ids)
    bad = (a < 0) | (a >= vocab)
    if bad.any():
        raise ValueError(
            f"{what}: token id {int(a[bad][0])} is out of range [0, {vocab}) (vocab={vocab}); "
            f"{int(bad.sum())} of {a.size} ids are"
        )


def _as_sequence(value: Any, what: str) -> list[Any]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{what} must be a sequence, got {value!r}")
    return list(value)


def mlp(
    sizes: Sequence[int],
    activation: str | Sequence[str] = "relu",
    loss: str = "softmax_cross_entropy",
    reduction: str = "mean",
    l2: float = 0.0,
    l2_bias: bool = False,
) -> Network:
    """A fully connected network ``D → H1 → … → K``.

    Args:
      sizes: ``[D, H1, ..., K]``, positive integers; ``[D, K]`` is linear/softmax regression.
      activation: one name for every hidden layer, or a sequence with one name per
        hidden layer. The output layer is always linear (its nonlinearity is in the loss).
      loss, reduction, l2, l2_bias: see :class:`Network`.

    Returns:
      a frozen, hashable :class:`Network`.
    """
    sizes = [positive_int(s, f"sizes[{i}]") for i, s in enumerate(_as_sequence(sizes, "sizes"))]
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least an input and an output size, got {sizes}")
    hidden = sizes[1:-1]
    if isinstance(activation, str):
        activations = [activation] * len(hidden)
    else:
        activations = list(_as_sequence(activation, "activation"))
        if len(activations) != len(hidden):
            raise ValueError(
                f"activation: got {len(activations)} names for {len(hidden)} hidden layers; "
                "pass one name, or one per hidden layer"
            )
    for name in activations:
        get_activation(name)
    layers = [Dense(h, act) for h, act in zip(hidden, activations)] + [Dense(sizes[-1], "identity")]
    return Network((sizes[0],), tuple(layers), loss, reduction, l2, l2_bias)


def sequential(
    input_shape: Sequence[int],
    layers: Sequence[Layer],
    loss: str = "softmax_cross_entropy",
    reduction: str = "mean",
    l2: float = 0.0,
    l2_bias: bool = False,
) -> Network:
    """A network from a list of layer descriptions (:mod:`jaxnet.layers`), e.g. a CNN::

        sequential((8, 8, 1), [Conv2D(16, 3, padding="SAME", activation="relu"), MaxPool2D(2),
                               Flatten(), Dense(10)])

    ``input_shape`` is per example (``(H, W, C)`` for images, NHWC batches); the last layer
    must give flat outputs ``[K]``. :func:`mlp` builds the same kind of :class:`Network`.
    """
    return Network(
        tuple(_as_sequence(input_shape, "input_shape")),
        tuple(_as_sequence(layers, "layers")),
        loss,
        reduction,
        l2,
        l2_bias,
    )


def init_params(key: jax.Array, net: Network, dtype: DTypeLike = jnp.float32) -> Params:
    """Initial parameters: a list with one entry per layer, deterministic given ``key``.

    Dense layers get ``{"W": [fan_in, fan_out], "b": [fan_out]}``: He-normal weights
    when followed by a ReLU-family activation, Glorot-normal for tanh/sigmoid/identity,
    zero biases. ``key`` is a ``jax.random.key`` (or legacy ``PRNGKey``); it is split
    once, one subkey per layer.
    """
    check_net(net)
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    _check_key(key, "key")
    try:
        return _initial_params_jit(key, net, dtype)
    except Exception:  # a layer's init that JAX cannot trace (NumPy on the key, value-dependent shapes): eagerly,
        return _initial_params(key, net, dtype)  # where a real error is raised again, with its own traceback


def _initial_params(key: jax.Array, net: Network, dtype: np.dtype) -> Params:
    """:func:`init_params` after its checks: a key per layer, each layer's ``init``."""
    keys = jax.random.split(key, len(net.layers))
    return [layer.init(k, shape, dtype) for layer, k, shape in zip(net.layers, keys, net.layer_input_shapes)]


_initial_params_jit = jax.jit(_initial_params, static_argnames="dtype")
"""One compiled program per network and dtype: the same values as the layers' ``init`` run eagerly,
without compiling each of their small random ops on its own."""


def init_state(net: Network, dtype: DTypeLike = jnp.float32) -> State:
    """The network's initial state: one dict per layer, ``layer.init_state`` (BatchNorm: running
    mean 0 and variance 1 per feature; ``{}`` for a layer without state). Pass it to
    :func:`loss_with_state` / :func:`jaxnet.train.fit` and keep the state they return: it is
    never changed in place."""
    check_net(net)
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    return [layer.init_state(shape, dtype) for layer, shape in zip(net.layers, net.layer_input_shapes)]


def state_shapes(net: Network, dtype: DTypeLike = jnp.float32) -> list[dict[str, jax.ShapeDtypeStruct]]:
    """:func:`init_state`'s shapes and dtypes, without making the arrays."""
    return jax.eval_shape(lambda: init_state(net, dtype))


@functools.lru_cache(maxsize=256)
def has_state(net: Network) -> bool:
    """Whether a layer of ``net`` keeps state (:meth:`jaxnet.Layer.init_state` is not empty);
    cached per network (a hashable description)."""
    return any(state_shapes(net))


def needs_key(net: Network) -> bool:
    """Whether a layer of ``net`` draws random numbers in training (Dropout with a rate > 0)."""
    return any(layer.needs_key for layer in net.layers)


def couples_examples(net: Network) -> list[int]:
    """The indices of the layers whose training-mode output for one example depends on the other
    examples of the batch (BatchNorm): per-example gradients are not defined for them."""
    return [i for i, layer in enumerate(net.layers) if layer.couples_examples]


def check_mode(net: Network, params: Params, state: Any, key: Any, train: Any) -> State | None:
    """The mode arguments of :func:`loss` and friends, checked at trace time: ``train`` a bool,
    ``key`` one PRNG key (needed in training when :func:`needs_key`), ``state`` of
    :func:`init_state`'s structure in the params' dtype (needed in evaluation when
    :func:`has_state`). Returns ``state`` (``None`` for a network without state)."""
    if not isinstance(train, (bool, np.bool_)):
        raise ValueError(f"train must be True or False, got {train!r}")
    if key is not None:
        _check_key(key, "key")
    elif train and needs_key(net):
        first = next(i for i, layer in enumerate(net.layers) if layer.needs_key)
        raise ValueError(
            f"key: layers[{first}] ({type(net.layers[first]).__name__}) draws random numbers in training; "
            "pass key=jax.random.key(...) (the same key gives the same masks in loss, manual_grads and "
            "jax.grad(loss)), or train=False"
        )
    if state is None:
        if not train and has_state(net):
            first = next(i for i, shapes in enumerate(state_shapes(net)) if shapes)
            raise ValueError(
                f"state: layers[{first}] ({type(net.layers[first]).__name__}) in evaluation mode (train=False) uses "
                "its running statistics; pass state= (jaxnet.init_state(net), or the state training returned)"
            )
        return None
    _check_state(state, net, jax.tree.leaves(params)[0].dtype if jax.tree.leaves(params) else None)
    return list(state)


def _check_key(key: Any, what: str) -> None:
    """``ValueError`` unless ``key`` is one PRNG key (typed ``jax.random.key`` or legacy ``PRNGKey``)."""
    key_dtype = getattr(key, "dtype", None)
    is_typed = key_dtype is not None and jnp.issubdtype(key_dtype, jax.dtypes.prng_key) and jnp.shape(key) == ()
    is_raw = key_dtype == jnp.uint32 and jnp.shape(key) == (2,)
    if not (is_typed or is_raw):
        raise ValueError(f"{what} must be one PRNG key from jax.random.key(seed), got {key!r}")


def _check_state(state: Any, net: Network, dtype: Any) -> None:
    """Structure, shapes and dtype of ``state`` against :func:`init_state` of ``net``."""
    if not isinstance(state, (list, tuple)) or len(state) != len(net.layers):
        got = (
            f"a {type(state).__name__} of length {len(state)}"
            if isinstance(state, (list, tuple))
            else type(state).__name__
        )
        raise ValueError(
            f"state: expected a list with one dict per layer ({len(net.layers)}, from jaxnet.init_state), got {got}"
        )
    for i, (s, expected) in enumerate(zip(state, state_shapes(net, dtype or jnp.float32))):
        if not isinstance(s, dict) or set(s) != set(expected):
            keys = sorted(s) if isinstance(s, dict) else type(s).__name__
            raise ValueError(f"state[{i}]: expected keys {sorted(expected)}, got {keys}")
        for name, want in expected.items():
            if tuple(jnp.shape(s[name])) != want.shape:
                raise ValueError(f"state[{i}][{name!r}]: expected shape {want.shape}, got {tuple(jnp.shape(s[name]))}")
            if dtype is not None and jnp.result_type(s[name]) != dtype:
                raise ValueError(
                    f"state[{i}][{name!r}]: expected the params' dtype {dtype}, got {jnp.result_type(s[name])}"
                )


# --- input checks (at trace time: shapes and dtypes; values only when concrete) --------


def check_net(net: Any) -> None:
    """``ValueError`` unless ``net`` is a :class:`Network`."""
    if not isinstance(net, Network):
        raise ValueError(f"net must be a jaxnet Network (from jaxnet.mlp), got {type(net).__name__}")


def _check_params(params: Params, net: Network) -> Any:
    """Structure, shapes and dtype of ``params`` against ``net``; returns the dtype."""
    if not isinstance(params, (list, tuple)) or len(params) != len(net.layers):
        got = (
            f"a {type(params).__name__} of length {len(params)}"
            if isinstance(params, (list, tuple))
            else type(params).__name__
        )
        raise ValueError(f"params: expected a list with one entry per layer ({len(net.layers)}), got {got}")
    dtype = None
    for i, (layer, p, shape) in enumerate(zip(net.layers, params, net.layer_input_shapes)):
        expected = layer.param_shapes(shape)
        if not isinstance(p, dict) or set(p) != set(expected):
            keys = sorted(p) if isinstance(p, dict) else type(p).__name__
            raise ValueError(f"params[{i}]: expected keys {sorted(expected)}, got {keys}")
        for name, want in expected.items():
            leaf = p[name]
            if tuple(jnp.shape(leaf)) != tuple(want):
                raise ValueError(f"params[{i}][{name!r}]: expected shape {tuple(want)}, got {tuple(jnp.shape(leaf))}")
            leaf_dtype = jnp.result_type(leaf)
            if not jnp.issubdtype(leaf_dtype, jnp.floating):
                raise ValueError(f"params[{i}][{name!r}]: expected a floating dtype, got {leaf_dtype}")
            if dtype is None:
                dtype = leaf_dtype
            elif leaf_dtype != dtype:
                raise ValueError(
                    f"params[{i}][{name!r}]: dtype {leaf_dtype} differs from the other parameters' {dtype}"
                )
    return dtype


@overload
def prepare_inputs(params: Params, net: Network, x: ArrayLike, y: None = None) -> tuple[jax.Array, None, bool]: ...
@overload
def prepare_inputs(params: Params, net: Network, x: ArrayLike, y: ArrayLike) -> tuple[jax.Array, jax.Array, bool]: ...
def prepare_inputs(
    params: Params, net: Network, x: ArrayLike, y: ArrayLike | None = None
) -> tuple[jax.Array, jax.Array | None, bool]:
    """The input checks of :func:`loss` and friends, and their canonical inputs.

    Checks ``net``, ``params`` against it, ``x`` (and ``y`` when given) as described in
    :func:`check_inputs`; returns ``(x [batch, ...] in the params' dtype (integer token ids, in
    range, as they are when the first layer takes them: :func:`token_vocab`), y as the loss head's
    targets or None, batched)``, where ``batched`` is False when ``x`` was one example (it is
    returned with a batch axis of 1)."""
    check_net(net)
    dtype = _check_params(params, net)
    x = as_array(x)
    per_example = net.input_shape
    if x.shape == per_example:
        batched = False
        x = x[None]  # [...] -> [1, ...]
    elif x.ndim == len(per_example) + 1 and x.shape[1:] == per_example:
        batched = True
    else:
        raise ValueError(
            f"x: expected shape [batch, {', '.join(map(str, per_example))}] or a single example "
            f"{list(per_example)}, got {list(x.shape)}"
        )
    vocab = token_vocab(net)
    if vocab is not None and not jnp.issubdtype(x.dtype, jnp.integer):
        raise ValueError(
            f"x: layers[0] ({type(net.layers[0]).__name__}) takes integer token ids in [0, {vocab}), "
            f"got dtype {x.dtype}"
        )
    if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == jnp.bool_):
        raise ValueError(f"x: expected real numbers, got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"x: the batch is empty (shape {list(x.shape)}); expected at least one example")
    if vocab is not None:  # token ids stay integers
        if is_concrete(x):
            check_token_ids(x, vocab, f"x: layers[0] ({type(net.layers[0]).__name__}(vocab={vocab}))")
    else:
        x = x.astype(dtype)
        if is_concrete(x) and not bool(np.all(np.isfinite(np.asarray(x)))):
            raise ValueError("x contains NaN or Inf")
    if y is None:
        return x, None, batched
    y = as_array(y)
    if not (jnp.issubdtype(y.dtype, jnp.floating) or jnp.issubdtype(y.dtype, jnp.integer) or y.dtype == jnp.bool_):
        raise ValueError(f"y: expected real numbers or integer labels, got dtype {y.dtype}")
    n, k = x.shape[0], net.output_shape[0]
    if batched:
        return x, get_loss(net.loss).targets(y, n, k, dtype), batched
    try:
        return x, get_loss(net.loss).targets(y[None], n, k, dtype), batched  # a batch of one
    except ValueError as e:
        raise ValueError(
            f"{e} (x is one example, so y was given a batch axis: shape {y.shape} -> {(1, *y.shape)})"
        ) from None


def check_inputs(params: Params, net: Network, x: ArrayLike, y: ArrayLike | None = None) -> None:
    """Run every input check now, values included, and raise ``ValueError`` on bad input.

    :func:`loss`, :func:`manual_grads` and friends check shapes and dtypes at trace
    time; value checks (labels in range, targets in [0, 1], no NaN/Inf) run only when
    the arrays are concrete, i.e. not under ``jit``/``vmap``. Call this once on your
    data before a jitted training loop to get those value checks too.
    """
    prepare_inputs(params, net, np.asarray(x), None if y is None else np.asarray(y))


# --- the forward loop and the backward loop ---------------------------------------------


def layer_keys(layers, key):
    """Each layer's own PRNG key: ``fold_in(key, l)`` for layer ``l`` when it ``needs_key``, else
    ``None`` (every entry ``None`` when ``key`` is ``None``). The same ``key`` gives every layer the
    same key in :func:`loss`, :func:`manual_grads` and ``jax.grad(loss)``, hence the same masks."""
    return [
        jax.random.fold_in(key, i) if key is not None and layer.needs_key else None for i, layer in enumerate(layers)
    ]


def layer_forwards(layers, state=None, key=None, train=True):
    """Each layer's forward pass in one mode, as ``fwd(params_l, x) -> (y, residuals)``: its
    :meth:`~jaxnet.Layer.apply` with its own state ``state[l]`` and key (:func:`layer_keys`). What
    the checkers differentiate layer by layer (:func:`jaxnet.find_wrong_layer`)."""
    states = [None] * len(layers) if state is None else state
    return [
        functools.partial(apply_without_state, layer, state=s, key=k, train=train)
        for layer, s, k in zip(layers, states, layer_keys(layers, key))
    ]


def apply_without_state(layer, params, x, *, state, key, train):
    """``layer.apply(params, x, state=state, key=key, train=train)`` without its new state:
    ``(y, residuals)``, the layer's forward pass in that mode as its ``fwd`` gives it."""
    return layer.apply(params, x, state=state, key=key, train=train)[:2]


def forward_loop(layers, params, x, *, state=None, key=None, train=True):
    """The forward loop over a sequence of layers: ``x``: [batch, ...] -> ``(h, residuals, new_state)``,
    with ``h`` the last layer's output, ``residuals[l]`` what layer ``l``'s :meth:`~jaxnet.Layer.apply`
    returned for its ``bwd`` and ``new_state[l]`` its new state (``new_state`` is ``None`` when
    ``state`` is); ``params[l]`` and ``state[l]`` are layer ``l``'s dicts, ``key`` is split by
    :func:`layer_keys`. :func:`forward_pass` runs it over a network's layers, a composite layer
    (:class:`jaxnet.composite.Residual`) over its own."""
    residuals, new_state = [], []
    h = x
    states = [None] * len(layers) if state is None else state
    for layer, p, s, k in zip(layers, params, states, layer_keys(layers, key)):
        h, r, s = layer.apply(p, h, state=s, key=k, train=train)
        residuals.append(r)
        new_state.append(s)
    return h, residuals, None if state is None else new_state


def backward_loop(layers, params, residuals, dy):
    """The backward loop over a sequence of layers: ``dy`` = ∂L/∂h of :func:`forward_loop`'s output
    and its residuals -> ``(∂L/∂x, grads)``, ``grads[l]`` layer ``l``'s ``bwd`` dparams (a list),
    each layer's ``bwd`` given the ``dx`` of the layer above it."""
    grads: list[Any] = [None] * len(layers)  # each layer's dict, filled from the last layer down
    dh = dy
    for i in reversed(range(len(layers))):
        dh, grads[i] = layers[i].bwd(params[i], residuals[i], dh)
    return dh, grads


def forward_pass(params, net, x, *, state=None, key=None, train=True):
    """The forward loop: ``x``: [batch, ...] -> ``(outputs [batch, K], residuals, new_state)``, with
    ``residuals[l]`` what layer ``l`` returned for its ``bwd`` (see :func:`forward_loop` for
    ``state``, ``key`` and ``train``). No input checks (see :func:`prepare_inputs`)."""
    return forward_loop(net.layers, params, x, state=state, key=key, train=train)


def backward_pass(params, net, residuals, dout, l2):
    """The backward loop: ``dout`` = ∂L/∂outputs: [batch, K] and the residuals of
    :func:`forward_pass` -> gradients of every layer (each layer's ``bwd``, plus
    ``l2 · θ`` for the penalised leaves), in the container type of ``params`` (list or tuple).
    ``l2``: a float (0.0 skips the term) or a scalar array."""
    _, grads = backward_loop(net.layers, params, residuals, dout)
    if not _is_zero(l2):
        grads = [
            {name: g + l2 * params[i][name] if name in names else g for name, g in grads[i].items()}
            for i, names in enumerate(penalised_names(net))
        ]
    return type(params)(grads)


def penalised_names(net) -> list:
    """Per layer, the names of its L2-penalised parameters (:meth:`jaxnet.Layer.l2_names`:
    the weights, and every parameter when ``net.l2_bias``)."""
    return [layer.l2_names(shape, net.l2_bias) for layer, shape in zip(net.layers, net.layer_input_shapes)]


def l2_penalty(params: Params, net: Network, l2: float | jax.Array | None = None) -> jax.Array | float:
    """The L2 term of :func:`loss`: ``l2/2 · Σ θ²`` over the penalised leaves (:func:`penalised_names`),
    with ``l2`` as :func:`loss` takes it (``None``: ``net.l2``)."""
    return _l2_value(params, net, _l2_coefficient(net, l2))


def _l2_value(params, net, l2):
    """``l2/2 · Σ W²`` over the penalised leaves."""
    if _is_zero(l2):
        return 0.0
    total = sum(jnp.sum(params[i][name] ** 2) for i, names in enumerate(penalised_names(net)) for name in names)
    return 0.5 * l2 * total


def _is_zero(l2):
    """A static zero penalty (a traced one is never skipped)."""
    return isinstance(l2, float) and l2 == 0.0


def _l2_coefficient(net, l2):
    """``net.l2``, or the override: a number >= 0 or a scalar array (may be traced, e.g. vmapped)."""
    if l2 is None:
        return net.l2
    if isinstance(l2, (int, float, np.integer, np.floating)) and not isinstance(l2, bool):
        if not (math.isfinite(l2) and l2 >= 0):
            raise ValueError(f"l2 must be a non-negative finite number, got {l2!r}")
        return float(l2)
    kind = jnp.result_type(l2)
    if jnp.ndim(l2) != 0 or not (jnp.issubdtype(kind, jnp.floating) or jnp.issubdtype(kind, jnp.integer)):
        raise ValueError(f"l2: expected a non-negative number or a real scalar array, got {l2!r}")
    return l2


def _scale(net, n):
    return 1.0 / n if net.reduction == "mean" else 1.0


# --- public functions --------------------------------------------------------------------


def forward(
    params: Params,
    net: Network,
    x: ArrayLike,
    *,
    state: State | None = None,
    key: jax.Array | None = None,
    train: bool = False,
) -> jax.Array:
    """Raw network outputs: logits for classification heads, predictions for regression.

    Args:
      params: from :func:`init_params`.
      net: the :class:`Network`.
      x: ``[batch, D]`` (or one example ``[D]``).
      state, key, train: the mode, as for :func:`loss`; here evaluation by default
        (``train=False``: BatchNorm uses its running statistics, which ``state`` must then
        hold; Dropout passes its input through).

    Returns:
      ``[batch, K]`` (or ``[K]``).
    """
    x, _, batched = prepare_inputs(params, net, x)
    state = check_mode(net, params, state, key, train)
    out, _, _ = forward_pass(params, net, x, state=state, key=key, train=train)
    return out if batched else out[0]


def predict(
    params: Params,
    net: Network,
    x: ArrayLike,
    *,
    state: State | None = None,
    key: jax.Array | None = None,
    train: bool = False,
) -> jax.Array:
    """Probabilities for classification heads (softmax / sigmoid), predictions otherwise.

    ``x``: ``[batch, D]`` (or ``[D]``) -> ``[batch, K]`` (or ``[K]``); ``state``, ``key``,
    ``train`` as for :func:`forward` (evaluation mode by default).
    """
    check_net(net)
    return get_loss(net.loss).link(forward(params, net, x, state=state, key=key, train=train))


def loss(
    params: Params,
    net: Network,
    x: ArrayLike,
    y: ArrayLike,
    l2: float | jax.Array | None = None,
    *,
    state: State | None = None,
    key: jax.Array | None = None,
    train: bool = True,
) -> jax.Array:
    """The scalar training loss: data loss (reduced over samples) + L2 penalty.

    ``L = r · Σ_i ℓ_i(f(x_i), y_i) + l2/2 · Σ W²``, with ``r = 1/N`` for
    ``reduction="mean"`` and ``1`` for ``"sum"``; each ``ℓ_i`` sums over outputs.

    Args:
      params: from :func:`init_params`.
      net: the :class:`Network` (a static pytree: ``jax.jit(loss)`` works as is and
        autodiff of ``loss`` differentiates with respect to ``params`` only).
      x: ``[batch, D]`` (or one example ``[D]``).
      y: softmax: int labels ``[batch]`` or probabilities ``[batch, K]``;
        sigmoid: targets in [0, 1], ``[batch, K]`` (``[batch]`` when ``K = 1``);
        squared error: ``[batch, K]`` (``[batch]`` when ``K = 1``).
      l2: overrides ``net.l2`` when given: a number, or a scalar array that may be traced,
        so that ``jax.vmap`` can sweep it without recompiling.
      state: the network's state (:func:`init_state`) for layers that have one (BatchNorm);
        needed in evaluation mode, optional in training (the updated state is then
        :func:`loss_with_state`'s second output).
      key: a PRNG key (``jax.random.key``) for layers that draw random numbers in training
        (Dropout); layer ``l`` uses ``fold_in(key, l)``, so one key gives the same masks here,
        in :func:`manual_grads` and in ``jax.grad(loss)``.
      train: training mode (the default here: BatchNorm normalises with the batch's
        statistics, Dropout drops) or evaluation mode.

    Returns:
      a scalar of the params' dtype.
    """
    return loss_with_state(params, net, x, y, l2, state=state, key=key, train=train)[0]


def loss_with_state(
    params: Params,
    net: Network,
    x: ArrayLike,
    y: ArrayLike,
    l2: float | jax.Array | None = None,
    *,
    state: State | None = None,
    key: jax.Array | None = None,
    train: bool = True,
) -> tuple[jax.Array, State | None]:
    """``(loss, new_state)``: :func:`loss` and the state after this forward pass (in training,
    BatchNorm's running statistics moved towards this batch's; ``None`` when ``state`` is).
    ``jax.value_and_grad(loss_with_state, has_aux=True)`` is the autodiff counterpart of
    :func:`value_and_manual_grads_with_state`."""
    x, y, _ = prepare_inputs(params, net, x, y)
    state = check_mode(net, params, state, key, train)
    out, _, new_state = forward_pass(params, net, x, state=state, key=key, train=train)
    data = _scale(net, x.shape[0]) * jnp.sum(get_loss(net.loss).value(out, y))
    return data + _l2_value(params, net, _l2_coefficient(net, l2)), new_state


def value_and_manual_grads_with_state(
    params: Params,
    net: Network,
    x: ArrayLike,
    y: ArrayLike,
    l2: float | jax.Array | None = None,
    *,
    state: State | None = None,
    key: jax.Array | None = None,
    train: bool = True,
) -> tuple[tuple[jax.Array, State | None], Params]:
    """``((loss, new_state), manual_grads)`` from one forward pass: the structure that
    ``jax.value_and_grad(loss_with_state, has_aux=True)`` returns. See :func:`manual_grads` for
    the formulas and :func:`loss` for ``state``, ``key`` and ``train``."""
    x, y, _ = prepare_inputs(params, net, x, y)
    state = check_mode(net, params, state, key, train)
    l2 = _l2_coefficient(net, l2)
    head = get_loss(net.loss)
    r = _scale(net, x.shape[0])
    out, residuals, new_state = forward_pass(params, net, x, state=state, key=key, train=train)  # out: [batch, K]
    value = r * jnp.sum(head.value(out, y)) + _l2_value(params, net, l2)
    dout = r * head.delta(out, y)  # ∂L/∂f: [batch, K]
    return (value, new_state), backward_pass(params, net, residuals, dout, l2)


def value_and_manual_grads(
    params: Params,
    net: Network,
    x: ArrayLike,
    y: ArrayLike,
    l2: float | jax.Array | None = None,
    *,
    state: State | None = None,
    key: jax.Array | None = None,
    train: bool = True,
) -> tuple[jax.Array, Params]:
    """``(loss(params, net, x, y), manual_grads(params, net, x, y))`` from one forward pass.

    See :func:`manual_grads` for shapes, conventions and formulas, :func:`loss` for ``state``,
    ``key`` and ``train``.
    """
    (value, _), grads = value_and_manual_grads_with_state(params, net, x, y, l2, state=state, key=key, train=train)
    return value, grads


def manual_grads(
    params: Params,
    net: Network,
    x: ArrayLike,
    y: ArrayLike,
    l2: float | jax.Array | None = None,
    *,
    state: State | None = None,
    key: jax.Array | None = None,
    train: bool = True,
) -> Params:
    """Gradients of :func:`loss` with respect to ``params``, by hand-derived backprop.

    No autodiff transform is used: an explicit forward pass keeps each layer's input
    ``a_{l−1}``, pre-activation ``z_l`` and activation ``a_l``; then the output delta is
    written in closed form and the layer recursion runs backwards.

    Shapes (row-vector convention, batch first):
      x, a_{l−1}: ``[batch, n_{l−1}]``;  W_l: ``[n_{l−1}, n_l]``;  b_l: ``[n_l]``;
      z_l = a_{l−1} W_l + b_l and δ_l = ∂L/∂z_l: ``[batch, n_l]``;  outputs f = z_L: ``[batch, K]``.

    Output delta (``r = 1/N`` for ``reduction="mean"``, ``1`` for ``"sum"``):
      softmax cross-entropy:  δ_L = r (p − y),  p = softmax(f)  (labels as one-hot;
                              for probability rows not summing to 1: r (p Σ_k y_k − y));
      sigmoid cross-entropy:  δ_L = r (σ(f) − y);
      squared error:          δ_L = 2 r (f − y).

    Recursion, for l = L, …, 1:
      ∂L/∂W_l = a_{l−1}ᵀ δ_l + l2 W_l,    ∂L/∂b_l = Σ_batch δ_l  (+ l2 b_l if ``l2_bias``),
      δ_{l−1} = (δ_l W_lᵀ) ∘ g'(z_{l−1}),
    with g' the hand-written derivative of each activation (relu: 1[z > 0], so 0 at
    the kink, like ``jax.nn.relu``; tanh: 1 − a²; sigmoid: a (1 − a); …, see
    :mod:`jaxnet.activations`).

    Args:
      params, net, x, y, l2: as for :func:`loss`. ``x`` may be one example ``[D]`` (with
        its target), so ``jax.vmap(manual_grads, (None, None, 0, 0))`` gives
        per-example gradients (not for layers that couple the examples, BatchNorm in training).
      state, key, train: the mode, as for :func:`loss`: the same ``key`` gives the same dropout
        masks as ``jax.grad(loss)``, so the two agree to rounding.

    Returns:
      a list with the same structure, shapes and dtype as ``params``.

    Raises:
      ValueError: at trace time, for x or y of the wrong shape or dtype, params that do
        not match ``net``; and, outside jit, for labels out of range or NaN/Inf inputs.
    """
    return value_and_manual_grads(params, net, x, y, l2, state=state, key=key, train=train)[1]


def fold_biases(params: Params) -> list[jax.Array]:
    """Note 000's "ones" convention: each ``{"W": [n_in, n_out], "b": [n_out]}``
    becomes one ``[n_in + 1, n_out]`` matrix whose last row is the bias, so that
    ``[x, 1] @ folded == x @ W + b``.
    """
    folded = []
    for i, p in enumerate(params):
        if not isinstance(p, dict) or set(p) != {"W", "b"}:
            raise ValueError(f"params[{i}]: fold_biases expects dense layers {{'W', 'b'}}")
        folded.append(jnp.concatenate([p["W"], p["b"][None, :]], axis=0))  # [n_in + 1, n_out]
    return folded


def unfold_biases(folded: Sequence[jax.Array]) -> Params:
    """Inverse of :func:`fold_biases`: ``[n_in + 1, n_out]`` -> ``{"W", "b"}``."""
    out = []
    for i, m in enumerate(folded):
        if jnp.ndim(m) != 2 or jnp.shape(m)[0] < 2:
            raise ValueError(f"folded[{i}]: expected a matrix [n_in + 1, n_out], got shape {jnp.shape(m)}")
        out.append({"W": m[:-1], "b": m[-1]})
    return out
