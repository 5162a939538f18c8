"""Checking one layer's hand-written backward pass, and naming the first wrong layer of a network.

- :func:`check_layer` checks a layer's ``bwd`` (the input gradient and every parameter leaf) with
  :func:`jaxnet.check_vjp`: random cotangents ``dy``, ``jax.vjp`` of its ``fwd``, float64
  finite differences, the dot-product test against ``jax.jvp``; kinks handled as in
  :func:`jaxnet.check_grads`.
- :func:`find_wrong_layer` walks a network's layers from the output down, gives each layer's
  ``bwd`` the upstream ``dy`` that autodiff computes for it, compares its ``dx`` and ``dparams``
  with ``jax.vjp`` of that layer's ``fwd`` at the same point, and names the first layer that
  disagrees (index, kind, and which of its outputs). Each layer sees the *right* ``dy``, so a
  wrong layer cannot make the layers below it look wrong.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from .devices import device_name, on_device, to_device, working_device
from .devices import reference_device as device_for  # reference_device is an argument below
from .gradcheck import (
    DEFAULT_RTOL,
    NOT_TRACEABLE,
    GradReport,
    LeafReport,
    check_vjp,
    compare,
    count_kinks,
    count_layer_kinks,
    coupled_in,
    given_in_float64,
    handle_kinks,
)
from .layers import Layer
from .losses import get_loss
from .network import (
    Network,
    Params,
    State,
    apply_without_state,
    check_inputs,
    check_mode,
    forward_pass,
    layer_forwards,
    prepare_inputs,
)


def check_layer(
    layer: Layer,
    params: dict[str, jax.Array],
    x: ArrayLike,
    *,
    cotangents: int = 3,
    kinks: str = "exclude",
    kink_margin: float | None = None,
    eps: float = 1e-6,
    seed: int = 0,
    state: dict[str, jax.Array] | None = None,
    key: jax.Array | None = None,
    train: bool = True,
    **options: Any,
) -> GradReport:
    """Check ``layer.bwd`` against ``jax.vjp`` of ``layer.fwd`` and float64 finite differences.

    ``y = fwd(params, x)[0]``; for each random cotangent ``dy`` (``[batch, *out_shape]``),
    ``bwd(params, residuals, dy) = (dx, dparams)`` must equal ``Jᵀ dy`` for ``x`` and every
    parameter leaf (:func:`jaxnet.check_vjp`; rows ``x`` and ``params['W']`` …). Examples whose
    forward pass comes within ``kink_margin`` (default ``100 · eps``) of one of the layer's kinks
    (``kink_gaps``) are excluded (``kinks="exclude"``), their inputs nudged (``"nudge"``) or only
    counted (``"count"``), as in :func:`jaxnet.check_grads`. Integer ``x`` (token ids) is held
    fixed and only the parameters are checked.

    Args:
      layer: a :class:`jaxnet.Layer`.
      params: its parameters, ``{name: array}`` of ``layer.param_shapes(x.shape[1:])``.
      x: a batch of inputs, ``[batch, *in_shape]``.
      cotangents, eps, seed, options: as for :func:`jaxnet.check_vjp` (``rtol``, ``fd_rtol``, …).
      state, key, train: the mode of :meth:`jaxnet.Layer.apply` that is checked (default:
        training, no state, no key; Dropout needs ``key``, BatchNorm in evaluation ``state``).
        The same key gives the same mask to the forward pass, to ``bwd`` and to the references.
    """
    fwd = functools.partial(apply_without_state, layer, state=state, key=key, train=train)
    with jax.enable_x64(True) if given_in_float64((params, x)) else contextlib.nullcontext():  # float64 stays float64
        return _check_layer(layer, fwd, train, params, x, cotangents, kinks, kink_margin, eps, seed, options)


def _check_layer(layer, fwd, train, params, x, cotangents, kinks, kink_margin, eps, seed, options):
    """:func:`check_layer` in the working precision."""
    f: Callable[..., jax.Array]
    f_vjp: Callable[..., tuple[Any, ...]]
    primals: tuple[Any, ...]
    names: tuple[str, ...]
    x = _check_layer_inputs(layer, params, x)
    margin = 100 * eps if kink_margin is None else float(kink_margin)
    coupled = train and (layer.couples_examples or layer.needs_key)
    counter = lambda xs: count_layer_kinks(layer, params, xs, margin, fwd)
    (x,), notes = handle_kinks(counter, (x,), kinks, margin, seed, coupled=coupled)
    if jnp.issubdtype(jnp.result_type(x), jnp.floating):
        f, f_vjp, primals, names = *_layer_functions(layer, fwd), (params, x), ("params", "x")
    else:
        f = lambda p: fwd(p, x)[0]
        f_vjp = lambda primals, dy: (layer.bwd(primals[0], fwd(primals[0], x)[1], dy)[1],)
        primals, names = (params,), ("params",)
        notes.append(f"x has dtype {jnp.result_type(x)}: held fixed, only the parameters checked")
    report = check_vjp(f, f_vjp, *primals, cotangents=cotangents, names=names, eps=eps, seed=seed, **options)
    return GradReport(report.leaves, (*notes, *report.notes))


def _layer_functions(
    layer: Layer, fwd: Callable[..., tuple[jax.Array, Any]]
) -> tuple[Callable[..., jax.Array], Callable[..., tuple[Any, jax.Array]]]:
    """``f(params, x) = fwd(params, x)[0]`` and ``f_vjp((params, x), dy) = (dparams, dx)`` from ``bwd``
    (``fwd``: the layer's forward pass in the mode checked)."""

    def f(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
        return fwd(params, x)[0]

    def f_vjp(primals: tuple[dict[str, jax.Array], jax.Array], dy: jax.Array) -> tuple[Any, jax.Array]:
        params, x = primals
        dx, dparams = layer.bwd(params, fwd(params, x)[1], dy)
        return dparams, dx

    return f, f_vjp


def _check_layer_inputs(layer, params, x):
    """``x`` as an array, after checking the layer, ``x``'s batch axis and ``params``' names and shapes."""
    if not isinstance(layer, Layer):
        raise ValueError(f"layer: expected a jaxnet.Layer, got {type(layer).__name__}")
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"x: expected a batch [batch, *in_shape] with at least one example, got shape {x.shape}")
    expected = layer.param_shapes(x.shape[1:])
    if not isinstance(params, dict) or set(params) != set(expected):
        raise ValueError(
            f"params: expected keys {sorted(expected)}, got {sorted(params) if isinstance(params, dict) else params!r}"
        )
    for name, shape in expected.items():
        if tuple(jnp.shape(params[name])) != tuple(shape):
            raise ValueError(f"params[{name!r}]: expected shape {tuple(shape)}, got {tuple(jnp.shape(params[name]))}")
    return x


# --- the first wrong layer of a network -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LayerVerdict:
    """One layer's ``bwd`` against ``jax.vjp`` of its ``fwd``, given autodiff's upstream ``dy``."""

    index: int  # -1: the loss head's output delta
    kind: str
    report: GradReport  # rows "dx", "dparams['W']", …

    @property
    def ok(self) -> bool:
        """This layer's ``bwd`` agrees with the reference."""
        return self.report.ok

    @property
    def wrong(self) -> tuple[str, ...]:
        """The outputs that disagree, e.g. ``("dx", "dparams['W']")``."""
        return tuple(dict.fromkeys(row.path for row in self.report.failures()))


@dataclasses.dataclass(frozen=True)
class WrongLayerReport:
    """Every layer's verdict, from the output down; ``culprit`` is the first wrong one (or None)."""

    verdicts: tuple[LayerVerdict, ...]
    notes: tuple[str, ...] = ()

    @property
    def culprit(self) -> LayerVerdict | None:
        """The first wrong layer from the output down, or None."""
        return next((v for v in self.verdicts if not v.ok), None)

    @property
    def ok(self) -> bool:
        """Every layer agrees."""
        return self.culprit is None

    def __str__(self) -> str:
        lines = [f"{'layer':>5}  {'kind':<22}  {'worst rel':>9}  verdict"]
        for v in self.verdicts:
            worst = max((row.max_rel for row in v.report.leaves), default=0.0)
            name = "head" if v.index < 0 else str(v.index)
            lines.append(f"{name:>5}  {v.kind:<22}  {worst:9.2e}  {'ok' if v.ok else 'WRONG: ' + ', '.join(v.wrong)}")
        c = self.culprit
        lines.append(
            "every layer's backward agrees with jax.vjp"
            if c is None
            else f"first wrong layer from the output: {_where(c)} in {', '.join(c.wrong)}"
        )
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def _where(verdict: LayerVerdict) -> str:
    return f"the loss head ({verdict.kind})" if verdict.index < 0 else f"layers[{verdict.index}] ({verdict.kind})"


def find_wrong_layer(
    params: Params,
    net: Network,
    x: ArrayLike,
    y: ArrayLike,
    rtol: float | None = None,
    kinks: str = "exclude",
    kink_margin: float = 1e-4,
    seed: int = 0,
    reference_device: str | jax.Device = "default",
    *,
    state: State | None = None,
    key: jax.Array | None = None,
    train: bool = True,
) -> WrongLayerReport:
    """Name the first layer, from the output down, whose hand-written backward pass is wrong.

    The loss head's delta ``∂L/∂f`` is compared with ``jax.grad`` of the reduced loss value;
    then for ``l = L, …, 1`` layer ``l`` gets autodiff's ``dy_l = ∂L/∂a_l`` (``jax.vjp`` through
    the layers above it and the head), and its ``bwd(params_l, residuals_l, dy_l)`` is compared
    with ``jax.vjp`` of ``fwd_l`` at the same input, output by output (``dx``, each
    ``dparams`` leaf), with :func:`jaxnet.gradcheck.compare` at ``rtol`` (default: the dtype's
    ``jax.grad`` tolerance, 1e-10 in float64). The references run on
    :func:`jaxnet.devices.reference_device` (the CPU device in float64), your ``bwd`` on the
    working device. Examples near a kink are excluded (or nudged, or counted) as in
    :func:`jaxnet.check_grads`. The L2 term is not a layer's: it is checked by ``check_grads``.
    ``state``, ``key``, ``train``: the mode, as for :func:`jaxnet.loss` (every layer runs its
    :meth:`~jaxnet.Layer.apply` in it, with the same dropout masks on both sides).

    Returns:
      a :class:`WrongLayerReport`; ``.culprit`` is the first wrong :class:`LayerVerdict`
      (``index``, ``kind``, ``wrong`` outputs) or None; ``str()`` is a table, one row per layer.
    """
    check_inputs(params, net, x, y)
    mode: dict[str, Any] = {"state": check_mode(net, params, state, key, train), "key": key, "train": train}
    (x, y), notes = handle_kinks(
        lambda xs: count_kinks(params, net, xs, kink_margin, **mode),
        (x, y),
        kinks,
        kink_margin,
        seed,
        np.shape(x) == tuple(net.input_shape),
        coupled_in(net, mode),
    )
    x, y, _ = prepare_inputs(params, net, x, y)
    dtype = jnp.result_type(*jax.tree.leaves(params))
    rtol = DEFAULT_RTOL.get(jnp.dtype(dtype).name, DEFAULT_RTOL["float32"])[0] if rtol is None else rtol
    ref, working = device_for(dtype, reference_device, params), working_device(params)
    # each side one compiled program, traced afresh on every call (a redefined bwd is never a stale trace);
    # train is a Python bool, fixed in the closures, state and key are arguments
    references = jax.jit(lambda p, x, y, s, k: _references(p, net, x, y, {"state": s, "key": k, "train": train}))
    dys, head, refs = on_device(references, params, x, y, mode["state"], key, device=ref)
    yours_fn = lambda p, x, y, dys, s, k: _yours(p, net, x, y, dys, {"state": s, "key": k, "train": train})
    args = (params, x, y, to_device(dys, working), mode["state"], key)
    with jax.default_matmul_precision("highest"):
        try:
            delta, yours = jax.jit(yours_fn)(*args)
        except (*NOT_TRACEABLE, TypeError):  # a bwd JAX cannot compile (NumPy, control flow on values): eager
            delta, yours = yours_fn(*args)
    verdicts = [
        LayerVerdict(-1, net.loss, GradReport(tuple(compare("jax.grad", {"delta": delta}, {"delta": head}, rtol))))
    ]
    for i in reversed(range(len(net.layers))):
        (dx, dparams), (dparams_ref, dx_ref) = yours[i], refs[i]
        verdicts.append(
            LayerVerdict(i, type(net.layers[i]).__name__, _layer_rows(dx, dparams, dx_ref, dparams_ref, rtol))
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        notes.append(
            f"layers[0] ({type(net.layers[0]).__name__}): x has dtype {x.dtype}: held fixed, only its "
            "parameters checked"
        )
    notes.append(f"references on {device_name(ref)}; your bwd on {device_name(working)}")
    return WrongLayerReport(tuple(verdicts), tuple(notes))


def _layer_rows(dx, dparams, dx_ref, dparams_ref, rtol):
    """``dx`` and every ``dparams`` leaf against the references, one measure over both (the floor:
    1e-3 of their largest entry); an output of the wrong tree (a missing leaf, ``dx`` not an
    array) is one failing row ``dx (tree)`` / ``dparams (tree)``, and the other is still compared.
    ``dx_ref`` None (integer inputs, held fixed): ``dparams`` only."""
    yours, refs = {"dx": dx, "dparams": dparams}, {"dx": dx_ref, "dparams": dparams_ref}
    if dx_ref is None:
        yours, refs = {"dparams": dparams}, {"dparams": dparams_ref}
    same = [k for k in yours if jax.tree.structure(yours[k]) == jax.tree.structure(refs[k])]  # type: ignore[operator]  # PyTreeDef (C++) has no stub
    rows = compare("jax.vjp", {k: yours[k] for k in same}, {k: refs[k] for k in same}, rtol) if same else []
    rows = [dataclasses.replace(r, path=r.path.replace("['dx']", "dx").replace("['dparams']", "dparams")) for r in rows]
    rows += [
        LeafReport(
            "jax.vjp",
            f"{k} (tree)",
            (),
            float("inf"),
            float("inf"),
            f"{jax.tree.structure(yours[k])} != {jax.tree.structure(refs[k])}",
            float("nan"),
            float("nan"),
            1.0,
            rtol,
        )
        for k in yours
        if k not in same
    ]
    return GradReport(tuple(rows))


def _yours(params, net, x, y, dys, mode):
    """The hand-written side: the head's ``∂L/∂f = r · delta(f, y)`` ([batch, K]) and every layer's
    ``bwd(params_l, residuals_l, dy_l)`` given autodiff's ``dy_l``."""
    out, residuals, _ = forward_pass(params, net, x, **mode)
    r = 1.0 / out.shape[0] if net.reduction == "mean" else 1.0
    bwds = [layer.bwd(p, res, dy.astype(out.dtype)) for layer, p, res, dy in zip(net.layers, params, residuals, dys)]
    return r * get_loss(net.loss).delta(out, y), bwds


def _references(params, net, x, y, mode):
    """Autodiff's ``dy`` of every layer and ``∂L/∂f`` (:func:`_autodiff_upstream`), and every
    layer's ``jax.vjp`` at its input applied to its ``dy``: ``(dparams, dx)``."""
    fwds = layer_forwards(net.layers, **mode)
    inputs, dys, head = _autodiff_upstream(params, net, x, y, fwds)
    refs = [_layer_vjp(fwd, p, h, dy) for fwd, p, h, dy in zip(fwds, params, inputs, dys)]
    return dys, head, refs


def _autodiff_upstream(params, net, x, y, fwds):
    """Every layer's input ``h_l`` and autodiff's ``dy_l = ∂L/∂(output of layer l)``, and ``∂L/∂f``
    (``fwds``: each layer's forward pass in the mode checked, :func:`jaxnet.network.layer_forwards`)."""
    inputs, h = [], x
    for fwd, p in zip(fwds, params):
        inputs.append(h)
        h = fwd(p, h)[0]
    r = 1.0 / x.shape[0] if net.reduction == "mean" else 1.0
    dy = jax.grad(lambda f: r * jnp.sum(get_loss(net.loss).value(f, y)))(h)  # ∂L/∂f: [batch, K]
    head, dys = dy, [None] * len(net.layers)
    for i in reversed(range(len(net.layers))):
        dys[i] = dy
        if not jnp.issubdtype(inputs[i].dtype, jnp.floating):
            break  # integer inputs (token ids, the first layer's): nothing below to send a dy to
        _, pullback = jax.vjp(lambda a, i=i: fwds[i](params[i], a)[0], inputs[i])
        (dy,) = pullback(dy)
    return inputs, dys, head


def _layer_vjp(fwd, params, x, dy):
    """``(∂⟨dy, fwd⟩/∂params, ∂⟨dy, fwd⟩/∂x)`` by ``jax.vjp``; for integer ``x`` (token ids, held
    fixed) ``(∂⟨dy, fwd⟩/∂params, None)``."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        _, pullback = jax.vjp(lambda p: fwd(p, x)[0], params)
        return (*pullback(dy), None)
    _, pullback = jax.vjp(lambda p, a: fwd(p, a)[0], params, x)
    return pullback(dy)
