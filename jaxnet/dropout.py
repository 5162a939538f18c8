"""Inverted dropout, with an explicit PRNG key.

:class:`Dropout` draws its mask from the key it is given (a network gives layer ``l`` the key
``fold_in(key, l)``, :func:`jaxnet.network.layer_keys`), so the same key gives the same mask in
:func:`jaxnet.loss`, :func:`jaxnet.manual_grads` and ``jax.grad(jaxnet.loss)``: the hand-derived
gradient can be checked exactly. Nothing is drawn from a global RNG.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import numpy as np

from .layers import Layer, unit_fraction


class Dropped(NamedTuple):
    """Residuals of :class:`Dropout` in training mode."""

    mask: jax.Array  # 1/(1 − p) where kept, 0 where dropped: [batch, *shape]


class PassedThrough(NamedTuple):
    """Residuals of :class:`Dropout` where it is the identity (evaluation, or ``rate = 0``): none."""


@dataclasses.dataclass(frozen=True)
class Dropout(Layer):
    """Inverted dropout: ``y = x ∘ mask``, ``mask = keep / (1 − p)``, ``keep ~ Bernoulli(1 − p)``
    drawn independently for every entry of the batch from the layer's key.

    Training (``train=True``): each entry is dropped with probability ``p = rate`` and the kept
    ones are scaled by ``1/(1 − p)``, so ``E[y] = x`` and evaluation needs no rescaling.
    Evaluation (``train=False``) and ``rate = 0``: the identity (no key needed).

    Backward: ``∂L/∂x = dy ∘ mask`` (the same mask: it is a residual); the identity where the
    forward pass was. No parameters, no state.

    Attributes:
      rate: the drop probability ``p`` in ``[0, 1)`` (``p = 1`` would drop everything and make
        the scale ``1/(1 − p)`` infinite).
    """

    rate: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", unit_fraction(self.rate, "Dropout.rate (the probability of dropping)"))

    @property
    def needs_key(self) -> bool:  # type: ignore[override]  # a class attribute of Layer, here derived
        """A key is needed in training when something can be dropped (``rate > 0``)."""
        return self.rate > 0.0

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(in_shape)

    def fwd(self, params: dict[str, jax.Array], x: jax.Array) -> tuple[jax.Array, Dropped | PassedThrough]:
        """Training mode without a key: only for ``rate = 0`` (else a ``ValueError``; use :meth:`apply`)."""
        y, residuals, _ = self.apply(params, x, state=None, key=None, train=True)
        return y, residuals

    def apply(
        self,
        params: dict[str, jax.Array],
        x: jax.Array,
        *,
        state: Any,
        key: jax.Array | None,
        train: bool,
    ) -> tuple[jax.Array, Dropped | PassedThrough, Any]:
        """``x``: [batch, *shape] -> ``(y [batch, *shape], residuals, state)``.

        keep ~ Bernoulli(1 − p) [batch, *shape],  mask = keep / (1 − p),  y = x ∘ mask.
        """
        if not train or self.rate == 0.0:
            return x, PassedThrough(), state
        if key is None:
            raise ValueError(
                f"Dropout(rate={self.rate}) in training mode draws its mask from a key: pass key=jax.random.key(...) "
                "(to jaxnet.loss / manual_grads / check_layer), or train=False"
            )
        # p as float32 whatever jax_enable_x64 says: the same key gives the same mask in float32 and
        # float64 code (the checkers' float64 references run under enable_x64)
        keep = jax.random.bernoulli(key, np.float32(1.0 - self.rate), x.shape)  # [batch, *shape]
        mask = keep.astype(x.dtype) / (1.0 - self.rate)  # [batch, *shape]
        return x * mask, Dropped(mask), state

    def bwd(
        self, params: dict[str, jax.Array], residuals: Dropped | PassedThrough, dy: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``dy`` = ∂L/∂y -> (∂L/∂x = dy ∘ mask, {}); ``dy`` itself where the layer was the identity."""
        if isinstance(residuals, PassedThrough):
            return dy, {}
        return dy * residuals.mask, {}
