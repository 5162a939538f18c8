"""Loss heads: per-sample loss values next to their closed-form output deltas.

A head turns the network's raw outputs ``f`` (``[batch, K]``: logits or
predictions) and the targets ``y`` into

- ``value(f, y)``: the per-sample loss ``ℓ_i`` (``[batch]``), summed over outputs;
- ``delta(f, y)``: ``∂ℓ_i/∂f_i`` (``[batch, K]``), derived by hand, in closed form;
- ``link(f)``: what :func:`jaxnet.predict` returns (probabilities or predictions).

The reduction over samples (mean or sum) is applied by the network, not here.
All values are stable at extreme logits: log-softmax goes through log-sum-exp and
the sigmoid cross-entropy through ``softplus(f) − y f``.

Invalid targets: under jit, out-of-range labels make the loss and the output layer's
gradients NaN (and what the sample reaches further back); outside jit they raise ValueError.
Each head's ``targets`` check reads concrete targets
(outside ``jit``/``vmap``) and raises ``ValueError`` for values out of their domain:
softmax labels outside ``[0, K)``, softmax probabilities that are negative or not
finite, sigmoid targets outside ``[0, 1]`` or not finite, squared-error targets that are
not finite. Traced targets (under ``jit``/``vmap``) cannot be read, so ``value`` and
``delta`` poison an invalid sample instead: its loss term ``ℓ_i`` and its whole delta
row ``∂ℓ_i/∂f_i`` are NaN. The reduced loss is then NaN, and so is every entry of the
output layer's gradients, hand-derived and autodiff alike; further back the NaN reaches
every entry that the invalid sample's backward pass reaches (all of them with smooth
activations; a ReLU unit switched off for that sample gets nothing from it, NaN or not).
A label of -1 no longer scores class ``K − 1``, nor does a label of ``K`` drop out of
the gradients.

How: a row mask ``m_i`` (1 for a valid sample, NaN for an invalid one) multiplies the
sample's row of outputs ``f_i`` on the way in, so that everything computed from the row
is NaN, and differentiating the loss by autodiff carries the NaN into the gradients too
(the derivative of ``f_i m_i`` is ``m_i``; a select would instead send no cotangent to
the rejected branch). For a valid sample ``m_i = 1`` and the product is exact. Concrete
targets skip the mask (the ``targets`` check has read them), so eager results are
bitwise unchanged and eager calls pay nothing. Under jit the label path gives bitwise
the results of the unmasked formulas (checked on XLA:CPU); real-valued targets can differ
in the last bit, where the extra operation changes how XLA fuses a reduction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(a) -> bool:
    """True when ``a`` holds values we can read now (not a tracer of jit, vmap or autodiff)."""
    return not isinstance(a, jax.core.Tracer)


# --- invalid targets under tracing ----------------------------------------------------------
# Concrete targets were read by the head's ``targets`` check (ValueError); traced ones cannot
# be, so value / delta multiply an invalid sample's row of outputs by NaN (module notes). The
# masks are built as floats through a gather or a reduction rather than as a broadcast
# boolean select, which XLA:CPU fuses into the loops of exp and log and slows several-fold.


def _marked(v, m):
    """``v``: [batch, K] outputs; ``m``: None (concrete targets, already checked)
    or the [batch, 1] row mask of :func:`_label_mask` / :func:`_target_mask` -> ``v · m``
    (exact where ``m_i = 1``)."""
    return v if m is None else v * m


def _label_mask(y, k, dtype):
    """int labels ``y`` [batch] -> None when concrete, else [batch, 1]: 1 for a label in
    ``[0, k)``, NaN otherwise: a gather from ones that fills NaN out of range (negative
    labels included: they do not wrap around)."""
    if is_concrete(y):
        return None
    ones = jnp.ones((1, k), dtype)
    return jnp.take_along_axis(
        ones, y[:, None], axis=-1, mode="fill", fill_value=jnp.nan, wrap_negative_indices=False
    )  # [batch, 1]


def _target_mask(y, lo=None, hi=None):
    """real targets ``y`` [batch, K] -> None when concrete, else [batch, 1]: 1 where every
    entry of the row is finite (and ``>= lo``, ``<= hi`` where given), NaN otherwise."""
    if is_concrete(y):
        return None
    ok = jnp.isfinite(y)
    if lo is not None:
        ok = ok & (y >= lo)
    if hi is not None:
        ok = ok & (y <= hi)
    poison = jnp.where(ok, jnp.zeros((), y.dtype), jnp.full((), jnp.nan, y.dtype))  # [batch, K]
    return 1 + jnp.sum(poison, axis=-1, keepdims=True)  # [batch, 1]


# --- softmax cross-entropy -------------------------------------------------------------
# ℓ_i = −Σ_k y_ik log p_ik,  p_i = softmax(f_i)   (labels: ℓ_i = −log p_{i, y_i}, note 000)
# ∂ℓ_i/∂f_ik = p_ik Σ_k' y_ik' − y_ik            (= p − y for one-hot or probability rows)


def _softmax_mask(y, f):
    return _label_mask(y, f.shape[-1], f.dtype) if y.ndim == 1 else _target_mask(y, lo=0.0)


def _softmax_ce_value(f, y):
    """``f``: [batch, K] logits; ``y``: [batch] int labels or [batch, K] probabilities."""
    logp = jax.nn.log_softmax(_marked(f, _softmax_mask(y, f)), axis=-1)  # [batch, K]
    if y.ndim == 1:
        return -jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]  # [batch]
    return -jnp.sum(y * logp, axis=-1)  # [batch]


def _softmax_ce_delta(f, y):
    p = jax.nn.softmax(_marked(f, _softmax_mask(y, f)), axis=-1)  # [batch, K]
    if y.ndim == 1:
        return p - jax.nn.one_hot(y, f.shape[-1], dtype=f.dtype)
    return p * jnp.sum(y, axis=-1, keepdims=True) - y


# --- sigmoid cross-entropy -------------------------------------------------------------
# ℓ_i = Σ_k −y_ik log σ(f_ik) − (1 − y_ik) log(1 − σ(f_ik)) = Σ_k softplus(f_ik) − y_ik f_ik
# ∂ℓ_i/∂f_ik = σ(f_ik) − y_ik


def _sigmoid_ce_value(f, y):
    """``f``: [batch, K] logits; ``y``: [batch, K] targets in [0, 1]."""
    f = _marked(f, _target_mask(y, 0.0, 1.0))
    return jnp.sum(jax.nn.softplus(f) - y * f, axis=-1)  # [batch]


def _sigmoid_ce_delta(f, y):
    return jax.nn.sigmoid(_marked(f, _target_mask(y, 0.0, 1.0))) - y  # [batch, K]


# --- squared error ---------------------------------------------------------------------
# ℓ_i = Σ_k (f_ik − y_ik)²   (mean over i: note 003's J; sum over i: note 001's RSS)
# ∂ℓ_i/∂f_ik = 2 (f_ik − y_ik)


def _squared_error_value(f, y):
    """``f``: [batch, K] predictions; ``y``: [batch, K] targets."""
    r = _marked(f, _target_mask(y)) - y  # [batch, K]
    return jnp.sum(r * r, axis=-1)  # [batch]


def _squared_error_delta(f, y):
    return 2.0 * (_marked(f, _target_mask(y)) - y)  # [batch, K]


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
                    f"y: labels must lie in [0, {k}) for {k} classes, got values in [{yv.min()}, {yv.max()}]"
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
                raise ValueError(f"y: {what} targets must lie in [{lo}, {hi}], got values in [{yv.min()}, {yv.max()}]")
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
