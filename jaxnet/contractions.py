"""Small batched products and short reductions rewritten as fused elementwise code.

:func:`small_contractions` evaluates a function's jaxpr and replaces each batched matrix product
that has a small side, and each short float reduction with many outputs, by the same arithmetic
written elementwise, which XLA fuses. ``jaxnet.sweep`` applies it to the vmapped gradient and
metrics of a group of replicas on the CPU, where XLA runs such products and reductions far below
its usual rate. What the rewrite gains is measured by ``experiments/bench_sweep.py``: table 1 of
``experiments/results/sweep_benchmark.md`` (CPU) and ``sweep_benchmark_gpu.md`` (GPU), columns
"no rewrite", "products" and "products and reductions".
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core

_SMALL = 8  # a contraction, output size or reduction up to this is "small"
_MIN_REDUCED_OUT = 1024  # a small reduction with fewer outputs is left alone (see _small_reduce)
_FLOATS = (jnp.float32, jnp.float64)  # the dtypes rewritten (no low-precision accumulation)
_REDUCTIONS = {jax.lax.reduce_sum_p: jnp.add, jax.lax.reduce_max_p: jnp.maximum, jax.lax.reduce_min_p: jnp.minimum}


def small_contractions(fun, reductions=True):
    """``fun`` with its small batched matrix products written as fused elementwise sums.

    Under ``vmap`` over replicas, every matrix product of a layer (``x W``, ``xᵀ δ``, ``δ Wᵀ``)
    becomes a batched ``dot_general`` ``[R, M, K] × [R, K, N] -> [R, M, N]``. For the notes'
    small networks one side is tiny (``K = 2`` inputs, ``N = 3`` classes), and XLA:CPU runs such
    products one small product per replica, far below its matmul rate. The returned function
    traces ``fun`` to a jaxpr on each call, evaluates it equation by equation (inlining nested
    ``jit`` calls, as jnp functions make) and replaces each batched product with a small side by
    the same sum written elementwise, which XLA fuses:

    - contraction size ``K ≤ 8``: ``Σ_k lhs[..., :, k, None] · rhs[..., None, k, :]``,
      unrolled over k;
    - a weight gradient ``aᵀ δ`` (K the outer, example axis of both ``a`` and ``δ``) with
      ``min(M, N) ≤ 8``: one broadcast multiply ``[R, K, M, N]`` reduced over K, the larger of
      M and N innermost.

    Small float reductions are written out the same way: ``reduce_sum`` / ``reduce_max`` /
    ``reduce_min`` over 2 to 8 elements with at least 1024 outputs (the softmax and log-sum-exp
    over 3 classes of many replicas × examples) as a pairwise combination of slices. Longer
    reductions (a bias gradient's sum over a batch) are left to XLA.

    Args:
      fun: a function of arrays (pytrees allowed) to arrays; it is traced with the arguments of
        each call, so wrap the result in ``jax.jit`` to trace once per shape.
      reductions: ``False``: rewrite the products only and leave every reduction as it is.

    Returns:
      a function with ``fun``'s signature and output structure. The values are those of the
      products and reductions up to the order of float summation (only float32 and float64
      products whose output has the operands' dtype are rewritten); every other operation,
      unbatched products, products with no small side and larger reductions are left as they are.

    What each part gains: ``experiments/results/sweep_benchmark.md``, table 1 ("products" and
    "products and reductions" against "no rewrite").
    """

    def wrapped(*args):
        closed, out_shape = jax.make_jaxpr(fun, return_shape=True)(*args)
        outs = _eval_jaxpr(closed.jaxpr, closed.consts, jax.tree.leaves(args), reductions)
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return wrapped


def _eval_jaxpr(jaxpr, consts, args, reductions=True):
    env: dict[jex_core.Var, Any] = {}  # var -> its value

    def read(v):
        return v.val if isinstance(v, jex_core.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    # var -> (the array it is a transpose of, the permutation)
    transposed: dict[jex_core.Var, tuple[Any, tuple[int, ...]]] = {}
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        if eqn.primitive is jex_core.primitives.dot_general_p:
            small = _small_dot(eqn, *(transposed.get(v, (a, tuple(range(a.ndim)))) for v, a in zip(eqn.invars, ins)))
        elif eqn.primitive in _REDUCTIONS and reductions:
            small = _small_reduce(eqn, ins[0])
        else:
            small = None
        if eqn.primitive.name == "transpose":
            transposed[eqn.outvars[0]] = (ins[0], tuple(eqn.params["permutation"]))
        if small is not None:
            outs = [small]
        elif eqn.primitive is jex_core.primitives.jit_p:  # inline jitted helpers (jnp functions)
            outs = _eval_jaxpr(eqn.params["jaxpr"].jaxpr, eqn.params["jaxpr"].consts, ins, reductions)
        else:
            bound = eqn.primitive.get_bind_params(eqn.params)  # params (older JAX: (subfuns, params))
            subfuns, params = bound if isinstance(bound, tuple) else ((), bound)
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*subfuns, *ins, **params)
            outs = outs if eqn.primitive.multiple_results else [outs]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def _small_dot(eqn, lhs, rhs):
    """The elementwise form of a small batched ``dot_general`` (see :func:`small_contractions`), or None.

    ``lhs``, ``rhs``: ``(array, perm)``, the operand being ``transpose(array, perm)`` (``x.T`` in
    ``xᵀ δ``), so that the layout of ``array`` decides the form."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    (lhs, lperm), (rhs, rperm) = lhs, rhs
    out_dtype = eqn.outvars[0].aval.dtype
    if (
        not lb or len(lc) != 1 or not all(a.dtype == out_dtype for a in (lhs, rhs)) or out_dtype not in _FLOATS
    ):  # no mixed or low-precision accumulation
        return None
    lc, lb, rc, rb = ([perm[d] for d in dims] for perm, dims in ((lperm, lc), (lperm, lb), (rperm, rc), (rperm, rb)))
    lf = [d for d in range(lhs.ndim) if d not in (*lc, *lb)]
    rf = [d for d in range(rhs.ndim) if d not in (*rc, *rb)]
    if len(lf) != 1 or len(rf) != 1:
        return None
    k, m, n = lhs.shape[lc[0]], lhs.shape[lf[0]], rhs.shape[rf[0]]
    if k == 0:
        return None
    a = jnp.transpose(lhs, (*lb, lf[0], lc[0]))  # [batch..., M, K]
    b = jnp.transpose(rhs, (*rb, rc[0], rf[0]))  # [batch..., K, N]
    if k <= _SMALL:
        out = sum(a[..., :, i, None] * b[..., None, i, :] for i in range(k))  # [batch..., M, N]
    elif min(m, n) <= _SMALL and lc[0] < lf[0] and rc[0] < rf[0]:  # aᵀ δ: K is the outer axis of both
        at = jnp.swapaxes(a, -1, -2)  # [batch..., K, M]
        if n >= m:
            out = jnp.sum(at[..., :, :, None] * b[..., :, None, :], axis=-3)  # [batch..., M, N]
        else:
            out = jnp.swapaxes(jnp.sum(b[..., :, :, None] * at[..., :, None, :], axis=-3), -1, -2)
    else:
        return None
    return out


def _small_reduce(eqn, x):
    """The elementwise form of a small float reduction (see :func:`small_contractions`), or None.

    ``x``: the operand, ``[...]``. The reduced elements are taken as slices
    ``[extent, rest...]`` and combined pairwise with ``+`` / ``max`` / ``min``: NaNs propagate
    as in ``lax.max`` / ``lax.min`` and NumPy (XLA:CPU's own max and min reductions of a few
    thousand rows dropped them in jax 0.10.2), and a sum starts from +0.0 as XLA's does (a sum
    of -0.0s is +0.0). Only reductions with at least ``_MIN_REDUCED_OUT``
    outputs are rewritten: the softmaxes of 64 replicas × 32 examples run faster unrolled
    (``experiments/results/sweep_benchmark.md``, table 1: "products and reductions" against
    "products"); fewer rows are left to XLA (no committed measurement of them yet: it would be
    ``experiments/bench_sweep.py --replicas 8`` with this threshold lowered). A reduced axis
    sharded over an explicit mesh, or an explicit output sharding, is left to the reduction
    (slicing a sharded axis is not allowed there)."""
    aval = eqn.invars[0].aval  # shape and dtype (x may be a Python scalar literal)
    axes = tuple(int(a) for a in eqn.params["axes"])
    extent = int(np.prod([aval.shape[a] for a in axes]))
    spec = getattr(getattr(aval, "sharding", None), "spec", None) or ()
    if not (
        1 < extent <= _SMALL
        and aval.size // extent >= _MIN_REDUCED_OUT
        and aval.dtype in _FLOATS
        and eqn.params.get("out_sharding") is None
        and all(a >= len(spec) or spec[a] is None for a in axes)
    ):
        return None
    rest = [d for d in range(aval.ndim) if d not in axes]
    flat = jnp.transpose(x, (*axes, *rest)).reshape(extent, *(aval.shape[d] for d in rest))  # [extent, rest...]
    out = _pairwise(_REDUCTIONS[eqn.primitive], [flat[i] for i in range(extent)])
    if eqn.primitive is jax.lax.reduce_sum_p:  # XLA's sum starts from +0.0: an exact zero is +0.0
        out = jnp.where(out == 0, jnp.zeros_like(out), out)
    return out


def _pairwise(op, terms):
    """``op`` over ``terms``, combined in pairs (a tree of depth ⌈log2(len(terms))⌉)."""
    while len(terms) > 1:
        terms = [op(*terms[i : i + 2]) if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]
