"""Loss heads: per-sample loss values next to their closed-form output deltas.

A head turns the network's raw outputs ``f`` (``[batch, K]``: logits or
predictions) and the targets ``y`` into

- ``value(f, y)``: the per-sample loss ``ℓ_i`` (``[batch]``), summed over outputs;
- ``delta(f, y)``: ``∂ℓ_i/∂f_i`` (``[batch, K]``), derived by hand, in closed form;
- ``link(f)``: what :func:`jaxnet.predict` returns (probabilities or predictions).

The reduction over samples (mean or sum) is applied by the network, not here.
All values are stable at extreme logits: log-softmax goes through log-sum-exp and
the sigmoid cross-entropy through ``softplus(f) − y f``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(a) -> bool:
    """True when ``a`` holds values we can read now (outside jit/vmap/grad tracing)."""
    return not isinstance(a, jax.core.Tracer)


# --- softmax cross-entropy -------------------------------------------------------------
# ℓ_i = −Σ_k y_ik log p_ik,  p_i = softmax(f_i)   (labels: ℓ_i = −log p_{i, y_i}, note 000)
# ∂ℓ_i/∂f_ik = p_ik Σ_k' y_ik' − y_ik            (= p − y for one-hot or probability rows)


def _softmax_ce_value(f, y):
    """``f``: [batch, K] logits; ``y``: [batch] int labels or [batch, K] probabilities."""
    logp = jax.nn.log_softmax(f, axis=-1)  # [batch, K]
    if y.ndim == 1:
        return -jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]  # [batch]
    return -jnp.sum(y * logp, axis=-1)  # [batch]


def _softmax_ce_delta(f, y):
    p = jax.nn.softmax(f, axis=-1)  # [batch, K]
    if y.ndim == 1:
        return p - jax.nn.one_hot(y, f.shape[-1], dtype=f.dtype)
    return p * jnp.sum(y, axis=-1, keepdims=True) - y


# --- sigmoid cross-entropy -------------------------------------------------------------
# ℓ_i = Σ_k −y_ik log σ(f_ik) − (1 − y_ik) log(1 − σ(f_ik)) = Σ_k softplus(f_ik) − y_ik f_ik
# ∂ℓ_i/∂f_ik = σ(f_ik) − y_ik


def _sigmoid_ce_value(f, y):
    """``f``: [batch, K] logits; ``y``: [batch, K] targets in [0, 1]."""
    return jnp.sum(jax.nn.softplus(f) - y * f, axis=-1)  # [batch]


def _sigmoid_ce_delta(f, y):
    return jax.nn.sigmoid(f) - y  # [batch, K]


# --- squared error ---------------------------------------------------------------------
# ℓ_i = Σ_k (f_ik − y_ik)²   (mean over i: note 003's J; sum over i: note 001's RSS)
# ∂ℓ_i/∂f_ik = 2 (f_ik − y_ik)


def _squared_error_value(f, y):
    """``f``: [batch, K] predictions; ``y``: [batch, K] targets."""
    r = f - y  # [batch, K]
    return jnp.sum(r * r, axis=-1)  # [batch]


def _squared_error_delta(f, y):
    return 2.0 * (f - y)  # [batch, K]


# --- target checks ---------------------------------------------------------------------


def _class_targets(y, n, k, dtype):
    """Softmax targets: integer labels [n] in [0, k), or probabilities [n, k]."""
    if y.ndim == 1:
        if not jnp.issubdtype(y.dtype, jnp.integer):
            raise ValueError(
                f"y: softmax_cross_entropy labels must be integers, got dtype {y.dtype}; "
                f"pass integer class labels of shape [{n}] or probabilities of shape [{n}, {k}]"
            )
        if y.shape != (n,):
            raise ValueError(f"y: expected labels of shape ({n},) to match x, got {y.shape}")
        if is_concrete(y):
            yv = np.asarray(y)
            if yv.size and (yv.min() < 0 or yv.max() >= k):
                raise ValueError(
                    f"y: labels must lie in [0, {k}) for {k} classes, got values in "
                    f"[{yv.min()}, {yv.max()}]"
                )
        return y
    if y.shape != (n, k):
        raise ValueError(
            f"y: softmax_cross_entropy expects integer labels of shape ({n},) or "
            f"probabilities of shape ({n}, {k}), got {y.shape}"
        )
    y = y.astype(dtype)
    if is_concrete(y):
        yv = np.asarray(y)
        if not bool(np.all(np.isfinite(yv) & (yv >= 0))):
            raise ValueError("y: softmax_cross_entropy probabilities must be finite and non-negative")
    return y


def _real_targets(what, lo=None, hi=None):
    def check(y, n, k, dtype):
        if y.shape == (n,) and k == 1:
            y = y.reshape(n, 1)  # [batch] -> [batch, 1]
        if y.shape != (n, k):
            extra = f" or ({n},)" if k == 1 else ""
            raise ValueError(f"y: {what} expects targets of shape ({n}, {k}){extra}, got {y.shape}")
        y = y.astype(dtype)
        if is_concrete(y):
            yv = np.asarray(y)
            if not np.all(np.isfinite(yv)):
                raise ValueError(f"y: {what} targets contain NaN or Inf")
            if lo is not None and yv.size and (yv.min() < lo or yv.max() > hi):
                raise ValueError(
                    f"y: {what} targets must lie in [{lo}, {hi}], got values in "
                    f"[{yv.min()}, {yv.max()}]"
                )
        return y

    return check


@dataclasses.dataclass(frozen=True)
class LossHead:
    """A loss: per-sample value, closed-form output delta, prediction link, target check."""

    name: str
    value: Callable[[jax.Array, jax.Array], jax.Array]
    delta: Callable[[jax.Array, jax.Array], jax.Array]
    link: Callable[[jax.Array], jax.Array]
    targets: Callable[[jax.Array, int, int, jnp.dtype], jax.Array]
    min_outputs: int = 1


LOSSES: dict[str, LossHead] = {
    "softmax_cross_entropy": LossHead(
        "softmax_cross_entropy",
        _softmax_ce_value,
        _softmax_ce_delta,
        lambda f: jax.nn.softmax(f, axis=-1),
        _class_targets,
        min_outputs=2,
    ),
    "sigmoid_cross_entropy": LossHead(
        "sigmoid_cross_entropy",
        _sigmoid_ce_value,
        _sigmoid_ce_delta,
        jax.nn.sigmoid,
        _real_targets("sigmoid_cross_entropy", 0.0, 1.0),
    ),
    "squared_error": LossHead(
        "squared_error",
        _squared_error_value,
        _squared_error_delta,
        lambda f: f,
        _real_targets("squared_error"),
    ),
}

REDUCTIONS = ("mean", "sum")


def get_loss(name: str) -> LossHead:
    """Look up a loss head by name; a ``ValueError`` lists the known names."""
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSSES)}") from None
