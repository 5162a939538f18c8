"""Multi-head self-attention on the layer protocol (:mod:`jaxnet.layers`), backward derived by hand.

Per example a sequence ``x``: [T, D] (T positions, D input features) becomes ``y``: [T, F]
(``F = features``), each position attending to every position (or, ``causal``, to itself and
the positions before it). Shapes below carry the batch axis ``b`` first; ``H`` heads of
``d = F / H`` features each.

Forward::

    Q = x Wq + bq,  K = x Wk + bk,  V = x Wv + bv                  [b, T, F]
    Q_h, K_h, V_h = the heads of Q, K, V                           [b, H, T, d]
    S = Q_h K_hᵀ / √d                                              [b, H, T, T] (query, key)
    S̃ = S, or causal: S̃[.., t, s] = −∞ for every key s > t
    P = softmax(S̃) over the key axis                               [b, H, T, T]
    O_h = P V_h,  O = the heads of O_h side by side                [b, H, T, d] -> [b, T, F]
    y = O Wo + bo                                                  [b, T, F]

Backward, from ``dy = ∂L/∂y`` (sums over the batch ``b`` and the positions ``t`` for the parameters)::

    ∂L/∂bo = Σ_{b,t} dy,  ∂L/∂Wo = Σ_b Oᵀ dy,  dO = dy Woᵀ
    dP = dO_h V_hᵀ,  dV_h = Pᵀ dO_h
    dS̃ = P ∘ (dP − Σ_keys (dP ∘ P))            (the softmax's Jacobian, row by row)
    dS = dS̃, causal: 0 at the masked entries    (there P = 0, so dS̃ is 0 already)
    dQ_h = dS K_h / √d,  dK_h = dSᵀ Q_h / √d
    ∂L/∂Wq = Σ_b xᵀ dQ,  ∂L/∂bq = Σ_{b,t} dQ   (and the same for K and V)
    ∂L/∂x = dQ Wqᵀ + dK Wkᵀ + dV Wvᵀ

The softmax subtracts each row's maximum first (the same ``P``, no overflow); the diagonal is
never masked, so every row keeps a finite maximum and the masked entries are exactly 0 in ``P``,
``dS̃`` and ``dS``: no NaN, even for ``T = 1``. A change of ``x`` at positions after ``t``
leaves ``y`` at ``t`` exactly unchanged under ``causal``.

``∂L/∂bk`` is 0: adding ``bk`` adds ``Q_h bk_h / √d`` to a whole row of ``S``, which the softmax
ignores (``Σ_keys dS̃ = 0``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .layers import Layer, positive_int


class AttentionResiduals(NamedTuple):
    """Residuals of :class:`MultiHeadSelfAttention` (batch axis first)."""

    x: jax.Array  # the layer's input: [b, T, D]
    q: jax.Array  # Q_h: [b, H, T, d]
    k: jax.Array  # K_h: [b, H, T, d]
    v: jax.Array  # V_h: [b, H, T, d]
    p: jax.Array  # P = softmax over the keys: [b, H, T, T]
    o: jax.Array  # O, the heads side by side: [b, T, F]


def _split_heads(a: jax.Array, heads: int) -> jax.Array:
    """[b, T, F] -> [b, T, H, d] -> [b, H, T, d]: head ``h`` is features ``h d … (h + 1) d − 1``."""
    b, t, f = a.shape
    return a.reshape(b, t, heads, f // heads).transpose(0, 2, 1, 3)


def _merge_heads(a: jax.Array) -> jax.Array:
    """[b, H, T, d] -> [b, T, H, d] -> [b, T, F]: the inverse of :func:`_split_heads`."""
    b, h, t, d = a.shape
    return a.transpose(0, 2, 1, 3).reshape(b, t, h * d)


def _softmax(s: jax.Array) -> jax.Array:
    """``P = exp(S − m) / Σ_keys exp(S − m)`` over the last (key) axis, ``m`` the row's maximum: [..., T, T]."""
    e = jnp.exp(s - jnp.max(s, axis=-1, keepdims=True))  # [..., T, T]; −∞ -> 0
    return e / jnp.sum(e, axis=-1, keepdims=True)


def _causal_mask(t: int) -> jax.Array:
    """``mask[q, k] = k ≤ q``: the keys a query may see, [1, 1, T, T]."""
    return jnp.tril(jnp.ones((t, t), bool))[None, None]


@dataclasses.dataclass(frozen=True)
class MultiHeadSelfAttention(Layer):
    """Multi-head self-attention: per example ``x``: [T, D] -> ``y``: [T, features].

    ``y = concat_h(softmax(Q_h K_hᵀ / √d) V_h) Wo + bo`` with ``Q = x Wq + bq``, ``K = x Wk + bk``,
    ``V = x Wv + bv`` split into ``heads`` heads of ``d = features / heads`` features; under
    ``causal`` a position attends only to itself and the positions before it. The formulas of
    the backward pass are in the module docstring (:mod:`jaxnet.attention`).

    Parameters ``{"Wq", "Wk", "Wv": [D, features], "Wo": [features, features], "bq", "bk",
    "bv", "bo": [features]}``; the four matrices are the weights (Glorot-normal, L2), the
    biases start at zero.

    Attributes:
      heads: ``H``, which must divide ``features``.
      features: ``F``, the width of Q, K, V and of the output.
      causal: mask the keys after each query.
    """

    heads: int
    features: int
    causal: bool = False

    def __post_init__(self) -> None:
        heads = positive_int(self.heads, "MultiHeadSelfAttention.heads")
        features = positive_int(self.features, "MultiHeadSelfAttention.features")
        if features % heads:
            raise ValueError(
                f"MultiHeadSelfAttention: features ({features}) must be a multiple of heads ({heads}), "
                f"each head taking features / heads of them"
            )
        if not isinstance(self.causal, (bool, np.bool_)):
            raise ValueError(f"MultiHeadSelfAttention.causal must be True or False, got {self.causal!r}")
        object.__setattr__(self, "heads", heads)
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "causal", bool(self.causal))  # a plain bool: hashable, JSON in checkpoints

    @property
    def head_size(self) -> int:
        """``d = features / heads``, each head's width."""
        return self.features // self.heads

    def _sequence(self, in_shape: tuple[int, ...]) -> tuple[int, int]:
        """``(T, D)`` of a per-example input shape, or a ``ValueError``."""
        if len(in_shape) != 2:
            raise ValueError(
                f"MultiHeadSelfAttention expects per-example sequences [T, D] (positions, features), "
                f"got shape {tuple(in_shape)}"
            )
        return in_shape[0], in_shape[1]

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """``(T, features)`` for per-example input ``(T, D)``."""
        t, _ = self._sequence(in_shape)
        return (t, self.features)

    def param_shapes(self, in_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """``Wq, Wk, Wv``: [D, F], ``Wo``: [F, F], ``bq, bk, bv, bo``: [F]."""
        _, d_in = self._sequence(in_shape)
        f = self.features
        return {
            "Wq": (d_in, f),
            "Wk": (d_in, f),
            "Wv": (d_in, f),
            "Wo": (f, f),
            "bq": (f,),
            "bk": (f,),
            "bv": (f,),
            "bo": (f,),
        }

    def fwd(self, params: dict[str, jax.Array], x: jax.Array) -> tuple[jax.Array, AttentionResiduals]:
        """``x``: [b, T, D] -> ``y``: [b, T, F]; residuals :class:`AttentionResiduals`."""
        self._sequence(x.shape[1:])
        q_all = _project(x, params["Wq"], params["bq"])  # Q = x Wq + bq: [b, T, F]
        k_all = _project(x, params["Wk"], params["bk"])  # K: [b, T, F]
        v_all = _project(x, params["Wv"], params["bv"])  # V: [b, T, F]
        q, k, v = (_split_heads(a, self.heads) for a in (q_all, k_all, v_all))  # [b, T, F] -> [b, H, T, d]
        s = jnp.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(self.head_size)  # Q_h K_hᵀ: [b, H, T, T]
        s_masked = self._mask(s)  # S̃: −∞ at the keys after the query (causal): [b, H, T, T]
        p = _softmax(s_masked)  # over the keys: [b, H, T, T]
        o_h = jnp.einsum("bhqk,bhkd->bhqd", p, v)  # P V_h: [b, H, T, T] · [b, H, T, d] -> [b, H, T, d]
        o = _merge_heads(o_h)  # [b, H, T, d] -> [b, T, F]
        y = _project(o, params["Wo"], params["bo"])  # O Wo + bo: [b, T, F] · [F, F] -> [b, T, F]
        return y, AttentionResiduals(x, q, k, v, p, o)

    def bwd(
        self, params: dict[str, jax.Array], residuals: AttentionResiduals, dy: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``dy`` = ∂L/∂y: [b, T, F] -> (∂L/∂x: [b, T, D], {∂L/∂Wq, …, ∂L/∂bo}); formulas in the module docstring."""
        x, q, k, v, p, o = residuals
        do, dwo, dbo = _project_bwd(o, params["Wo"], dy)  # y = O Wo + bo
        do_h = _split_heads(do, self.heads)  # O = merge(O_h): [b, T, F] -> [b, H, T, d]
        dp, dv = self._value_bwd(p, v, do_h)  # O_h = P V_h
        ds_masked = self._softmax_bwd(p, dp)  # P = softmax(S̃)
        ds = self._mask_bwd(ds_masked)  # S̃ = mask(S)
        dq, dk = self._score_bwd(q, k, ds)  # S = Q_h K_hᵀ / √d
        dq_all, dk_all, dv_all = _merge_heads(dq), _merge_heads(dk), _merge_heads(dv)  # [b, H, T, d] -> [b, T, F]
        dxv, dwv, dbv = _project_bwd(x, params["Wv"], dv_all)  # V = x Wv + bv
        dxk, dwk, dbk = _project_bwd(x, params["Wk"], dk_all)  # K = x Wk + bk
        dxq, dwq, dbq = _project_bwd(x, params["Wq"], dq_all)  # Q = x Wq + bq
        dx = dxq + dxk + dxv  # x feeds all three projections: [b, T, D]
        grads = {"Wq": dwq, "Wk": dwk, "Wv": dwv, "Wo": dwo, "bq": dbq, "bk": dbk, "bv": dbv, "bo": dbo}
        return dx, grads

    def _mask(self, s: jax.Array) -> jax.Array:
        """``S̃``: ``S``, or (causal) −∞ at every key after the query: [b, H, T, T]."""
        if not self.causal:
            return s
        return jnp.where(_causal_mask(s.shape[-1]), s, -jnp.inf)  # [1, 1, T, T] selects in [b, H, T, T]

    def _mask_bwd(self, ds_masked: jax.Array) -> jax.Array:
        """``dS = dS̃`` where a key is seen, 0 where it is masked (the −∞ does not depend on S): [b, H, T, T]."""
        if not self.causal:
            return ds_masked
        return jnp.where(_causal_mask(ds_masked.shape[-1]), ds_masked, 0.0)

    def _value_bwd(self, p: jax.Array, v: jax.Array, do_h: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``O_h = P V_h``: ``dP = dO_h V_hᵀ`` [b, H, T, T] and ``dV_h = Pᵀ dO_h`` [b, H, T, d]."""
        dp = jnp.einsum("bhqd,bhkd->bhqk", do_h, v)  # [b, H, T, d] · [b, H, T, d] -> [b, H, T(q), T(k)]
        dv = jnp.einsum("bhqk,bhqd->bhkd", p, do_h)  # Pᵀ dO_h: [b, H, T(q), T(k)] · [b, H, T(q), d] -> [b, H, T(k), d]
        return dp, dv

    def _softmax_bwd(self, p: jax.Array, dp: jax.Array) -> jax.Array:
        """``P = softmax(S̃)`` over the keys: ``dS̃ = P ∘ (dP − Σ_keys (dP ∘ P))``: [b, H, T, T].

        Row by row, ``∂P_j/∂S̃_i = P_j (δ_ij − P_i)``, so ``dS̃_i = Σ_j dP_j P_j (δ_ij − P_i)``."""
        row = jnp.sum(dp * p, axis=-1, keepdims=True)  # Σ_keys dP ∘ P: [b, H, T, 1]
        return p * (dp - row)  # [b, H, T, T]

    def _score_bwd(self, q: jax.Array, k: jax.Array, ds: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``S = Q_h K_hᵀ / √d``: ``dQ_h = dS K_h / √d``, ``dK_h = dSᵀ Q_h / √d``: [b, H, T, d] each."""
        scale = 1.0 / math.sqrt(self.head_size)
        dq = jnp.einsum("bhqk,bhkd->bhqd", ds, k) * scale  # [b, H, T(q), T(k)] · [b, H, T(k), d] -> [b, H, T(q), d]
        dk = (
            jnp.einsum("bhqk,bhqd->bhkd", ds, q) * scale
        )  # dSᵀ Q_h: [b, H, T(q), T(k)] · [b, H, T(q), d] -> [b, H, T(k), d]
        return dq, dk


def _project(a: jax.Array, w: jax.Array, bias: jax.Array) -> jax.Array:
    """``a W + b`` at every position: [b, T, n] · [n, F] + [F] -> [b, T, F]."""
    return jnp.einsum("btn,nf->btf", a, w) + bias[None, None, :]


def _project_bwd(a: jax.Array, w: jax.Array, dz: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``z = a W + b``: ``(da = dz Wᵀ [b, T, n], dW = Σ_b aᵀ dz [n, F], db = Σ_{b,t} dz [F])``."""
    da = jnp.einsum("btf,nf->btn", dz, w)  # [b, T, F] · [n, F] -> [b, T, n]
    dw = jnp.einsum("btn,btf->nf", a, dz)  # [b, T, n] · [b, T, F] -> [n, F]
    db = jnp.sum(dz, axis=(0, 1))  # [F]
    return da, dw, db
