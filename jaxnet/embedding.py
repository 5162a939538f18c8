"""Token embeddings: integer ids in, one learned vector per id out, the backward pass a scatter-add.

:class:`Embedding` is a layer kind of the protocol of :mod:`jaxnet.layers` whose *input* is
integer token ids rather than real numbers. It sets ``integer_inputs = True``, which
:mod:`jaxnet.network` reads (:func:`jaxnet.network.takes_token_ids`): a network whose first layer
is an Embedding keeps its inputs ``x`` as integers (no cast to the params' dtype), refuses
floating ``x``, and checks the ids against ``vocab`` whenever they are concrete. Its ``dx`` is
zeros (ids are not differentiable), and the checkers hold integer ``x`` fixed and check the
parameters only (:func:`jaxnet.check_layer`, :func:`jaxnet.find_wrong_layer`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from .layers import Layer, positive_int
from .losses import is_concrete
from .network import check_token_ids


@dataclasses.dataclass(frozen=True)
class Embedding(Layer):
    """A lookup table: ``y[n, t] = E[ids[n, t]]``.

    Per example ``ids``: ``(T,)`` integers in ``[0, vocab)`` (any shape works; a feature axis is
    appended) -> ``y``: ``(T, features)``. Parameter ``{"E": [vocab, features]}``, drawn from
    ``N(0, 1/features)`` so that every row has an expected squared norm of 1.

    ``E`` is a weight (two axes), so L2 penalises it like a dense layer's ``W``: the lookup is
    ``onehot(ids) @ E``, a dense layer without bias on one-hot inputs, and decaying ``E`` is the
    usual weight decay of embedding tables (rows of ids that a batch does not use are only
    decayed, as their ``W`` rows would be for zero inputs).

    Ids out of range: outside ``jit`` (concrete ids) they are a ``ValueError`` naming the layer,
    the first bad id and ``vocab``. Under ``jit`` the ids cannot be read, so an id out of range
    gives a row of NaN (the row of the clipped id times NaN), as an invalid label makes the loss
    NaN (:mod:`jaxnet.losses`): the loss and the gradient of ``E`` at that row turn NaN, which
    training's divergence guard stops, instead of silently training row 0 for id −1 (or NumPy's
    wrap-around). :func:`jaxnet.check_inputs` runs the range check before a jitted loop.

    Attributes:
      vocab: the number of distinct ids.
      features: the length of each embedding vector.
    """

    vocab: int
    features: int

    integer_inputs = True  # a class attribute, not a field: the input is token ids (jaxnet.network reads it)

    def __post_init__(self) -> None:
        object.__setattr__(self, "vocab", positive_int(self.vocab, "Embedding.vocab"))
        object.__setattr__(self, "features", positive_int(self.features, "Embedding.features"))

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """``(*in_shape, features)``: one vector per id."""
        return (*in_shape, self.features)

    def param_shapes(self, in_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """``{"E": (vocab, features)}``, whatever the input shape."""
        return {"E": (self.vocab, self.features)}

    def weight_init(self) -> jax.nn.initializers.Initializer:
        """``N(0, 1/features)``: each row's expected squared norm is 1 (the fan-in rule of
        :class:`jaxnet.Layer` would use ``vocab``, which a lookup of one row never sums over)."""
        return jax.nn.initializers.normal(stddev=self.features**-0.5)

    def check_ids(self, ids: jax.Array) -> None:
        """``ValueError`` unless ``ids`` (concrete) are integers in ``[0, vocab)``; the dtype is
        checked even when ``ids`` are traced."""
        if not jnp.issubdtype(jnp.result_type(ids), jnp.integer):
            raise ValueError(
                f"{type(self).__name__}(vocab={self.vocab}) takes integer token ids, got dtype {jnp.result_type(ids)}"
            )
        if is_concrete(ids):
            check_token_ids(ids, self.vocab, f"{type(self).__name__}(vocab={self.vocab})")

    def fwd(self, params: dict[str, jax.Array], ids: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``ids``: [batch, T] integers -> ``y``: [batch, T, features].

        y[n, t] = E[ids[n, t]] · m[n, t],  m = 1 for an id in [0, vocab), NaN otherwise (only under
        jit: concrete ids are checked).  Residuals ``{"ids", "m"}`` (the clipped ids, the mask).
        """
        self.check_ids(ids)
        rows = jnp.clip(ids, 0, self.vocab - 1)  # [batch, T]; a no-op for valid ids
        m = jnp.where(rows == ids, 1.0, jnp.nan).astype(params["E"].dtype)  # [batch, T]
        y = jnp.take(params["E"], rows, axis=0) * m[..., None]  # E [vocab, F] at [batch, T] -> [batch, T, F]
        return y, {"ids": rows, "m": m}

    def bwd(
        self, params: dict[str, jax.Array], residuals: dict[str, jax.Array], dy: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``dy`` = ∂L/∂y: [batch, T, features] -> (zeros [batch, T], {∂L/∂E: [vocab, features]}).

        ∂L/∂E[v] = Σ_{n, t: ids[n, t] = v} m[n, t] dy[n, t]: a scatter-add, so a repeated id
        accumulates every one of its rows of ``dy`` (``m`` is 1 for valid ids, NaN for an id out of
        range under jit). Ids are not differentiable: ``dx`` is zeros of the ids' shape in
        ``dy``'s dtype.
        """
        ids, m = residuals["ids"], residuals["m"]  # [batch, T] each
        dE = jnp.zeros_like(params["E"]).at[ids].add(dy * m[..., None])  # [vocab, F]; repeated ids add up
        dx = jnp.zeros(ids.shape, dy.dtype)  # [batch, T]
        return dx, {"E": dE}

    def grad_sq_norms(self, params: dict[str, jax.Array], residuals: dict[str, jax.Array], dy: jax.Array) -> jax.Array:
        """Per example ``||∂ℓ_i/∂E||²``: [batch].

        ``∂ℓ_i/∂E[v] = Σ_{t: ids_t = v} dy_t``, so
        ``||∂ℓ_i/∂E||² = Σ_{t, s} [ids_t = ids_s] ⟨dy_t, dy_s⟩``: the Gram matrix of the example's
        ``dy`` rows, masked to the pairs of equal ids ([batch, T, T])."""
        n = dy.shape[0]
        ids = residuals["ids"].reshape(n, -1)  # [batch, T]
        d = dy.reshape(n, ids.shape[1], -1)  # [batch, T, features]
        same = ids[:, :, None] == ids[:, None, :]  # [batch, T, T]
        gram = d @ d.transpose(0, 2, 1)  # [batch, T, T]
        return jnp.sum(jnp.where(same, gram, 0.0), axis=(1, 2))
