"""A gradient checker for hand-derived gradients: which leaf is wrong, where, and by how much.

``check_grads(loss_fn, grad_fn, params, *args)`` compares the user's ``grad_fn`` with two
witnesses and returns a :class:`GradReport` (data; ``str(report)`` is a table):

1. ``jax.grad(loss_fn)`` in the working dtype, with matmul precision "highest" (in float64 on
   the CPU device by default, exact on every backend; see ``reference_device``);
2. central finite differences of ``loss_fn`` in float64 (params and floating args upcast,
   x64 enabled only for the duration of the check): every element for leaves of at most
   ``fd_max_elements`` entries, else ``directions`` random unit directions per leaf
   (O(1) loss evaluations per direction);
3. and, so that a failure can be blamed, ``jax.grad`` in float64 against the same finite
   differences, and forward mode (``jax.jvp`` of the loss along random directions) against
   reverse mode (``⟨jax.grad, v⟩``): the reference's own consistency.

Where: your gradient runs where your arrays are (the working device). Every float64
reference — finite differences, ``jax.grad`` in float64, its jvp, ``jax.hessian``'s product —
runs on :func:`jaxnet.devices.reference_device` (the CPU device by default: a GPU's float64
``jax.grad`` of a strided convolution was measured 2.4e-10 off, beyond the 1e-10 bar); a float32
``jax.grad`` witness stays on the working device. ``report.notes`` says which devices.

Second order: Hessian-vector products through your gradient (``jvp`` of ``grad_fn`` along a
random direction ``v``) against ``jax.hessian``'s, i.e. forward-over-reverse ``H v`` of the
loss, in float64: a gradient that is right at this point but wrong as a function (a
``stop_gradient`` where a dependence was dropped) fails here.

Kinks: given ``net=`` (a :class:`jaxnet.Network`; ``args`` start with ``x``), the checker
counts the pre-activations within ``kink_margin`` of a ReLU-family kink and the pooling
windows whose top two entries are that close, and excludes (default) or nudges the examples
that have any, saying which and how many in ``report.notes``.

:func:`check_per_example` checks per-example gradients and their norms against
``vmap(jax.grad)``.

Relative error of an element: ``|yours − reference| / max(|reference|, floor · R)`` with
``R`` the largest reference entry of the whole gradient and ``floor = 1e-3``: relative to the
element, except that entries that are essentially zero are measured against a thousandth of
the gradient's scale (finite differences leave rounding noise around exact zeros).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.typing import ArrayLike

from .devices import device_name, on_device, to_device, working_device
from .devices import reference_device as device_for  # the name reference_device is check_grads' argument
from .network import Network, Params, State, check_mode, forward_pass, prepare_inputs

DEFAULT_RTOL = {  # (vs jax.grad in the working dtype, vs float64 finite differences)
    "float64": (1e-10, 1e-6),
    "float32": (1e-4, 1e-3),
}


@dataclasses.dataclass(frozen=True)
class LeafReport:
    """One leaf against one witness."""

    witness: str
    path: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    worst: str  # the index (or direction) of the worst element
    yours: float
    reference: float
    frac_bad: float  # fraction of elements (or directions) out of tolerance
    rtol: float

    @property
    def ok(self) -> bool:
        """Every element (or direction) within tolerance."""
        return self.frac_bad == 0.0


@dataclasses.dataclass(frozen=True)
class GradReport:
    """Every leaf against every witness; ``ok`` when all pass. ``str()`` gives a table.

    ``notes``: what the checker did besides comparing (kinks found and excluded or nudged,
    witnesses skipped and why), printed under the table."""

    leaves: tuple[LeafReport, ...]
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Every row passed."""
        return all(leaf.ok for leaf in self.leaves)

    def failures(self) -> list[LeafReport]:
        """The rows that failed (empty when the report is ok)."""
        return [leaf for leaf in self.leaves if not leaf.ok]

    def __str__(self) -> str:
        header = (
            "witness",
            "leaf",
            "shape",
            "max abs",
            "max rel",
            "rtol",
            "worst at",
            "yours",
            "reference",
            "bad",
            "ok",
        )
        body = [
            (
                r.witness,
                r.path,
                "x".join(map(str, r.shape)) or "()",
                f"{r.max_abs:.2e}",
                f"{r.max_rel:.2e}",
                f"{r.rtol:.0e}",
                r.worst,
                f"{r.yours:.6g}",
                f"{r.reference:.6g}",
                f"{100 * r.frac_bad:.0f}%",
                "ok" if r.ok else "FAIL",
            )
            for r in self.leaves
        ]
        widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
        line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
        table = [line(header), line(["-" * w for w in widths])] + [line(b) for b in body]
        return "\n".join(table + [f"note: {n}" for n in self.notes])


_FLOOR = 1e-3  # entries below this fraction of the largest reference entry are measured against it


def _row(witness, path, shape, yours, reference, rtol, scale, atol=0.0, label=None):
    """One leaf: ``yours``/``reference`` flat ``[m]`` values (elements or directional derivatives).

    ``rel = max(|yours − reference| − atol, 0) / max(|reference|, scale)``; an entry is out of
    tolerance when ``rel > rtol``, and always when either value is NaN or infinite (its ``rel``
    and ``max abs`` are then inf: a NaN reference proves nothing). ``label(k)`` names entry k
    (default: its index in ``shape``)."""
    finite = np.isfinite(yours) & np.isfinite(reference)
    floor = max(scale if np.isfinite(scale) else 0.0, np.finfo(np.float64).tiny)
    with np.errstate(invalid="ignore"):  # inf − inf, inf / inf: replaced by inf below
        diff = np.where(finite, np.abs(yours - reference), np.inf)
        rel = np.where(finite, np.maximum(diff - atol, 0.0) / np.maximum(np.abs(reference), floor), np.inf)
    if rel.size == 0:
        return LeafReport(witness, path, tuple(shape), 0.0, 0.0, "-", 0.0, 0.0, 0.0, rtol)
    k = int(np.argmax(rel))
    name = label(k) if label else str(tuple(int(i) for i in np.unravel_index(k, shape)))
    return LeafReport(
        witness,
        path,
        tuple(shape),
        float(diff.max()),
        float(rel.max()),
        name,
        float(yours[k]),
        float(reference[k]),
        float(np.mean(rel > rtol)),
        rtol,
    )


def _largest(a):
    """``max |a|`` over the finite entries of ``a`` (0 when none): the scale of a reference, which
    NaN or inf entries (themselves failures, see :func:`_row`) must not turn into NaN."""
    a = np.abs(np.asarray(a, np.float64))
    return float(np.max(a, where=np.isfinite(a), initial=0.0))


def _shape_mismatch(witness, path, yours_shape, shape, rtol):
    """A failing row for a gradient leaf of the wrong shape (e.g. a bias gradient not summed over the batch)."""
    return LeafReport(
        witness,
        path,
        tuple(shape),
        float("inf"),
        float("inf"),
        f"shape {tuple(yours_shape)} != {tuple(shape)}",
        float("nan"),
        float("nan"),
        1.0,
        rtol,
    )


def compare(witness, yours, reference, rtol, atol=0.0) -> list:
    """The one error measure of jaxnet: every element of every leaf of ``yours`` against
    ``reference`` (same tree), one :class:`LeafReport` per leaf.

    ``rel = max(|yours − reference| − atol, 0) / max(|reference|, 1e-3 · R)``, ``R`` the largest
    reference entry of the whole tree; NaN or inf on either side is a failure; a leaf of the
    wrong shape is a failing row."""
    paths_yours, treedef = jax.tree_util.tree_flatten_with_path(yours)
    ref_leaves, ref_def = jax.tree_util.tree_flatten(reference)
    if treedef != ref_def:  # type: ignore[operator]  # PyTreeDef (C++) has no stub: mypy sees no __ne__
        return [
            LeafReport(
                witness,
                "(tree)",
                (),
                float("inf"),
                float("inf"),
                f"{treedef} != {ref_def}",
                float("nan"),
                float("nan"),
                1.0,
                rtol,
            )
        ]
    refs = [np.asarray(r, np.float64) for r in ref_leaves]
    scale = _FLOOR * max((_largest(r) for r in refs), default=0.0)
    out = []
    for (path, g), r in zip(paths_yours, refs):
        g, name = np.asarray(g, np.float64), jax.tree_util.keystr(path)
        if g.shape != r.shape:
            out.append(_shape_mismatch(witness, name, g.shape, r.shape, rtol))
            continue
        out.append(_row(witness, name, r.shape, g.ravel(), r.ravel(), rtol, scale, atol))
    return out


@dataclasses.dataclass(frozen=True)
class LeafError:
    """The disagreement of one gradient leaf with its reference (:func:`leaf_errors`)."""

    path: str
    max_abs: float
    max_rel: float


def leaf_errors(grads, reference, atol: float = 0.0) -> list[LeafError]:
    """Per leaf, the largest absolute and relative error of ``grads`` against ``reference``
    (same tree), by :func:`compare`'s measure: ``max(|g − r| − atol, 0) / max(|r|, 1e-3 · R)`` per
    element, ``R`` the largest reference entry of the whole tree; inf for NaN/inf or a wrong
    shape. Against finite differences, ``atol`` is their round-off (:func:`fd_round_off`)."""
    return [LeafError(row.path, row.max_abs, row.max_rel) for row in compare("", grads, reference, np.inf, atol)]


def finite_difference_grads(f, params, eps: float = 1e-6, chunk: int = 256, jit: bool = False):
    """Central differences ``(f(p + eps e_j) − f(p − eps e_j)) / 2 eps`` for every element.

    Evaluated in chunks of ``chunk`` unit perturbations, each chunk one vmapped call of
    ``f`` over ``2 chunk`` parameter vectors (the last chunk padded with zero
    perturbations, so every call has the same batch shape and reuses compiled kernels).
    With ``jit=True`` that batched call is compiled once and fed each chunk's perturbations
    as an argument (memory: ``2 chunk × n`` numbers at a time). Use float64.
    """
    flat, unravel = ravel_pytree(params)
    n = flat.size
    chunk = max(1, int(chunk))
    batched = jax.vmap(lambda delta: f(unravel(flat + delta)))  # [2 chunk, n] -> [2 chunk]
    if jit:
        batched = jax.jit(batched)
    out = []
    for start in range(0, n, chunk):
        count = min(chunk, n - start)
        basis = np.zeros((chunk, n), dtype=flat.dtype)
        basis[np.arange(count), start + np.arange(count)] = eps  # [chunk, n]
        values = batched(jnp.asarray(np.concatenate([basis, -basis])))  # f(p + .), f(p − .)
        out.append((values[:count] - values[chunk : chunk + count]) / (2 * eps))  # [count]
    return unravel(jnp.concatenate(out))


def fd_round_off(loss_value: float, eps: float = 1e-6) -> float:
    """``100 · ε₆₄ · |L| / eps``: differences from float64 central differences of step ``eps`` below
    this are their own round-off (a fixed step cannot resolve gradient entries finer than that),
    the ``atol`` of every finite-difference comparison."""
    return 100 * np.finfo(np.float64).eps * abs(float(loss_value)) / eps


def _finite_differences(loss64, params64, directions, eps, seed, fd_max_elements):
    """Float64 finite differences, computed once for every witness that compares with them.

    Returns the full gradient when every leaf is small; otherwise, per leaf, the probe
    directions ``vs [m, *leaf.shape]`` (unit vectors: every element of a small leaf, random
    ones for a big leaf) and the directional derivatives ``[m]``. Only the probed leaf is
    batched (``2 m`` perturbed copies of it); the others are passed once.
    """
    leaves, treedef = jax.tree.flatten(params64)
    if all(a.size <= fd_max_elements for a in leaves):
        return finite_difference_grads(loss64, params64, eps, jit=True)
    probes = []
    for i, leaf in enumerate(leaves):
        if leaf.size <= fd_max_elements:  # every element of this leaf: unit directions
            vs = np.eye(leaf.size).reshape(leaf.size, *leaf.shape)
        else:
            vs = _unit_directions((*seed, i), directions, leaf.shape)
        values = jax.jit(
            jax.vmap(
                lambda li, others, i=i: loss64(jax.tree.unflatten(treedef, [*others[:i], li, *others[i:]])),
                in_axes=(0, None),
            )
        )
        perturbed = leaf[None] + eps * jnp.asarray(np.concatenate([vs, -vs]))  # [2m, *leaf.shape]
        f = np.asarray(values(perturbed, leaves[:i] + leaves[i + 1 :]))
        probes.append((vs, (f[: len(vs)] - f[len(vs) :]) / (2 * eps), leaf.size > fd_max_elements))
    return _Probes(probes)


class _Probes(list):
    """Per-leaf ``(directions, directional derivatives, random?)``, as opposed to a full gradient."""


def _against_fd(witness, grads, fd, rtol, atol):
    """Compare ``grads`` with the output of :func:`_finite_differences` (the floor: ``1e-3 ·``
    the largest finite difference of the whole gradient)."""
    if not isinstance(fd, _Probes):
        return compare(witness, grads, fd, rtol, atol)
    scale = _FLOOR * max(_largest(d) for _, d, _ in fd)
    out = []
    for (path, g), (vs, d, random) in zip(jax.tree_util.tree_flatten_with_path(grads)[0], fd):
        g, name, shape = np.asarray(g, np.float64), jax.tree_util.keystr(path), vs.shape[1:]
        if g.shape != shape:
            out.append(_shape_mismatch(witness, name, g.shape, shape, rtol))
            continue
        yours_d = np.tensordot(vs, g, axes=g.ndim)  # [m]: ⟨g, v⟩ per probe
        out.append(
            _row(witness, name, shape, yours_d, d, rtol, scale, atol, (lambda k: f"dir {k}") if random else None)
        )
    return out


def _unit_directions(seed, m, shape):
    """``m`` random unit vectors of ``shape``: [m, *shape] (float64 NumPy; ``seed`` a flat tuple of ints:
    NumPy 2.5 refuses nested ones)."""
    vs = np.random.default_rng(seed).normal(size=(m, *shape))
    return vs / np.linalg.norm(vs.reshape(m, -1), axis=1).reshape(-1, *([1] * len(shape)))


def _forward_vs_reverse(loss64, params64, grads64, directions, seed, rtol, witness="jvp vs jax.grad"):
    """Forward mode against reverse mode: per leaf, ``jvp(loss)(p; v)`` vs ``⟨grads64, v⟩``
    along ``directions`` random unit directions of that leaf (the floor: ``1e-3 ·`` the largest
    directional derivative over all leaves). ``grads64``: the reference's ``jax.grad`` (its own
    consistency) or your gradient in float64 (the dot-product test of a backward pass). A leaf
    of the wrong shape is a failing row."""
    leaves, treedef = jax.tree.flatten(params64)
    along = jax.jit(
        jax.vmap(lambda tangents: jax.jvp(loss64, (params64,), (jax.tree.unflatten(treedef, tangents),))[1])
    )
    pairs: list[tuple[str, tuple[int, ...], Any, np.ndarray | None]] = []  # (path, shape, reverse, forward)
    for i, ((path, g), leaf) in enumerate(zip(jax.tree_util.tree_flatten_with_path(grads64)[0], leaves)):
        vs = _unit_directions((*seed, i), directions, leaf.shape)  # [m, *leaf.shape]
        if np.shape(g) != leaf.shape:
            pairs.append((jax.tree_util.keystr(path), leaf.shape, np.shape(g), None))
            continue
        tangents = [jnp.zeros((directions, *a.shape), a.dtype) for a in leaves]
        tangents[i] = jnp.asarray(vs)
        forward = np.asarray(along(tangents))  # [m]
        reverse = np.tensordot(vs, np.asarray(g, np.float64), axes=leaf.ndim)  # [m]
        pairs.append((jax.tree_util.keystr(path), leaf.shape, reverse, forward))
    scale = _FLOOR * max((float(np.max(np.abs(f), initial=0.0)) for *_, f in pairs if f is not None), default=0.0)
    return [
        _row(witness, path, shape, rev, fwd, rtol, scale, label=lambda k: f"dir {k}")
        if fwd is not None
        else _shape_mismatch(witness, path, rev, shape, rtol)
        for path, shape, rev, fwd in pairs
    ]


def _hessian_vector(grad_fn, loss_fn, params64, args64, directions, seed, rtol, devices):
    """``H v`` through your gradient (``jvp`` of ``grad_fn``) against ``jax.hessian``'s
    (forward-over-reverse) along ``directions`` random unit directions ``v`` of the whole
    tree; the rows compare stacked ``[m, *leaf.shape]`` products. ``devices``: where each
    side runs, ``(yours, reference)``."""
    leaves, treedef = jax.tree.flatten(params64)
    flat = _unit_directions(seed, directions, (sum(a.size for a in leaves),))  # [m, n]
    splits = np.cumsum([a.size for a in leaves])[:-1]
    vs = jax.tree.unflatten(
        treedef, [jnp.asarray(c.reshape(directions, *a.shape)) for c, a in zip(np.split(flat, splits, axis=1), leaves)]
    )

    def products(gradient, p, v, *a):  # [m, *leaf.shape] per leaf: jvp of gradient(·, *a) at p along each v
        return jax.jit(jax.vmap(lambda t: jax.jvp(lambda q: gradient(q, *a), (p,), (t,))[1]))(v)

    yours = on_device(lambda *pa: products(grad_fn, *pa), params64, vs, *args64, device=devices[0])
    reference = on_device(lambda *pa: products(jax.grad(loss_fn), *pa), params64, vs, *args64, device=devices[1])
    return compare("hessian-vector", yours, reference, rtol)


@dataclasses.dataclass(frozen=True)
class KinkCount:
    """Places within ``margin`` of a kink in a jaxnet network's forward pass."""

    margin: float
    elements: int  # pre-activations near a ReLU-family kink + pooling windows near a tie
    examples: int  # examples with at least one
    batch: int


@functools.partial(jax.jit, static_argnames="train")
def _kink_gaps(params, net, x, state, key, train):
    """Every layer's ``kink_gaps`` on ``x``: a list of [batch, m_l]."""
    _, residuals, _ = forward_pass(params, net, x, state=state, key=key, train=train)
    return [gaps for layer, r in zip(net.layers, residuals) if (gaps := layer.kink_gaps(r)) is not None]


def _tally(gap_list, margin, batch):
    """``(KinkCount, near [batch])`` from a list of ``[batch, m]`` gaps."""
    near = np.zeros(batch, bool)
    elements = 0
    for gaps in gap_list:
        close = np.asarray(gaps) <= margin  # [batch, m]
        elements += int(close.sum())
        near |= close.any(axis=1)
    return KinkCount(float(margin), elements, int(near.sum()), int(batch)), near


def count_kinks(
    params: Params,
    net: Network,
    x: ArrayLike,
    margin: float = 1e-3,
    *,
    state: State | None = None,
    key: jax.Array | None = None,
    train: bool = True,
) -> tuple[KinkCount, np.ndarray]:
    """Count kinks within ``margin`` in ``net``'s forward pass on ``x`` ([batch, ...]) using
    the layers' ``kink_gaps``; also return the ``[batch]`` mask of examples that have one.
    ``state``, ``key``, ``train``: the mode of the forward pass, as for :func:`jaxnet.loss`."""
    x, _, _ = prepare_inputs(params, net, x)
    state = check_mode(net, params, state, key, train)
    return _tally(_kink_gaps(params, net, x, state, key, train=train), margin, x.shape[0])


def coupled_in(net: Network, mode: dict[str, Any]) -> bool:
    """Whether, in ``mode`` (training by default), an example's forward pass through ``net``
    depends on the other examples of the batch: a layer couples them (BatchNorm) or draws a mask
    for the whole batch (Dropout)."""
    return bool(mode.get("train", True)) and any(layer.couples_examples or layer.needs_key for layer in net.layers)


def count_layer_kinks(layer, params, x, margin: float = 1e-3, fwd=None) -> tuple[KinkCount, np.ndarray]:
    """:func:`count_kinks` for one layer on its input ``x`` ([batch, ...]); ``fwd``: its forward
    pass in the mode checked (default ``layer.fwd``)."""
    gaps = layer.kink_gaps((layer.fwd if fwd is None else fwd)(params, jnp.asarray(x))[1])
    return _tally([] if gaps is None else [gaps], margin, jnp.shape(x)[0])


def handle_kinks(counter, args, kinks, margin, seed=0, single=False, coupled=False):
    """Exclude or nudge the examples of ``args = (x, y, ...)`` near a kink, or only count them;
    return ``(args, notes)``. ``counter(x [batch, ...]) -> (KinkCount, near [batch])`` finds them
    (:func:`count_kinks`, :func:`count_layer_kinks`); ``single``: ``x`` is one example without a
    batch axis. Only ``x`` (``args[0]``) and ``y`` (``args[1]``, when given) are sliced or
    changed; other arguments pass through. ``coupled``: one example's forward pass depends on the
    others (BatchNorm's batch statistics, Dropout's mask drawn for the batch's shape, in
    training), so excluding examples moves the others' kinks: the exclusion is repeated on what
    is left until no kink is within the margin."""
    if kinks not in ("exclude", "nudge", "count"):
        raise ValueError(f"kinks must be 'exclude', 'nudge' or 'count', got {kinks!r}")
    x = np.asarray(args[0])
    found, near = counter(x[None] if single else x)
    what = (
        f"{found.elements} pre-activation(s)/pooling window(s) within {margin:g} of a kink "
        f"in {found.examples} of {found.batch} example(s)"
    )
    if found.examples == 0 or kinks == "count":
        return args, [what + ("" if found.examples == 0 else "; counted only, not excluded")]
    if kinks == "exclude":
        keep = ~near
        if single or not keep.any():
            raise ValueError(
                f"every example has a kink within {margin:g} ({what}); nudge them instead "
                "(kinks='nudge', jaxnet check --kinks nudge) or use other inputs"
            )
        sliced = [np.asarray(a)[keep] for a in args[:2]]
        rounds = 1
        while coupled and rounds < 20:
            _, near = counter(sliced[0])
            if not near.any():
                break
            if near.all():
                raise ValueError(f"excluding the examples near a kink left none ({what}); use kinks='nudge'")
            sliced, rounds = [a[~near] for a in sliced], rounds + 1
        else:
            if coupled:
                raise ValueError(f"excluding the examples near a kink did not settle ({what}); use kinks='nudge'")
        kept = len(sliced[0])
        if rounds == 1:
            return (*map(jnp.asarray, sliced), *args[2:]), [
                what + f"; those {found.examples} excluded, checked on the other {kept}"
            ]
        coupled_note = (
            f"{len(x) - kept} excluded in {rounds} rounds (coupled examples: excluding some moves the others' kinks)"
        )
        return (*map(jnp.asarray, sliced), *args[2:]), [what + f"; {coupled_note}, checked on the other {kept}"]
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"kinks='nudge' moves the inputs x, which must be floating point, got dtype {x.dtype}")
    rng = np.random.default_rng(seed)
    x = np.array(x[None] if single else x)
    step = 10 * margin
    for attempt in range(100):
        x[near] += (step * rng.normal(size=x[near].shape)).astype(x.dtype)
        _, near = counter(x)
        if not near.any():
            break
        if attempt % 10 == 9:
            step *= 2
    else:
        raise ValueError(f"could not nudge the inputs away from kinks ({what}); use kinks='exclude'")
    args = (jnp.asarray(x[0] if single else x), *args[1:])
    return args, [what + f"; their inputs nudged by N(0, ({step:g})²) steps until every kink is {margin:g} away"]


# The errors of tracing code that JAX cannot trace (NumPy calls, Python control flow on values).
NOT_TRACEABLE = (
    jax.errors.TracerArrayConversionError,
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
)


def _cached(cache, key, make, size=64):
    """``cache[key]``, made by ``make()`` when missing; the least recently used of more than
    ``size`` entries is dropped, so one-off functions (new closures per call) do not crowd out
    the functions that checks share. Unhashable keys are not cached."""
    try:
        value = cache.pop(key) if key in cache else make()
    except TypeError:  # unhashable
        return make()
    cache[key] = value  # most recent last
    while len(cache) > size:
        del cache[next(iter(cache))]
    return value


# fn -> its jax.jit, so that checks of one loss or gradient share compilations
_COMPILED: dict[Callable[..., Any], Callable[..., Any]] = {}


def _maybe_jit(fn):
    """``fn`` compiled, or run as it is when it cannot be compiled with these arguments (NumPy
    code, Python control flow on values, a Python int used as a shape, a string argument)."""
    compiled = _cached(_COMPILED, fn, lambda: jax.jit(fn))

    def call(*args):
        try:
            return compiled(*args)
        except (*NOT_TRACEABLE, TypeError):
            return fn(*args)

    return call


def _grad_of(loss_fn):
    """``jax.grad(loss_fn)``, one object per loss (so that its compilation is shared)."""
    return _cached(_GRADS, loss_fn, lambda: jax.grad(loss_fn))


_GRADS: dict[Callable[..., Any], Callable[..., Any]] = {}


def _up(a):
    """Floating arrays and Python floats to float64; anything else (ints, strings, ...) as it is."""
    if isinstance(a, float) or (hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating)):
        return jnp.asarray(a, jnp.float64)
    return a


def check_grads(
    loss_fn: Callable[..., jax.Array],
    grad_fn: Callable[..., Any],
    params: Any,
    *args: Any,
    rtol: float | None = None,
    fd_rtol: float | None = None,
    fd_atol: float | None = None,
    eps: float = 1e-6,
    fd_max_elements: int = 256,
    directions: int = 4,
    hvp_directions: int = 1,
    hvp_rtol: float | None = None,
    net: Network | None = None,
    mode: dict[str, Any] | None = None,
    kinks: str = "exclude",
    kink_margin: float | None = None,
    seed: int = 0,
    reference_device: str | jax.Device = "default",
    jvp_of_yours: bool = False,
) -> GradReport:
    """Check ``grad_fn(params, *args)`` (your gradient of ``loss_fn(params, *args)``).

    Args:
      loss_fn: scalar loss ``loss_fn(params, *args)``.
      grad_fn: your gradient, same tree as ``params``.
      rtol: tolerance against ``jax.grad`` in the working dtype (default by dtype).
      fd_rtol: tolerance against float64 finite differences (default by dtype).
      fd_atol: differences from finite differences below this are not counted: their own
        round-off, default ``100 · ε₆₄ · |L| / eps`` (``ε₆₄`` the float64 machine epsilon,
        ``L`` the loss): a fixed step cannot resolve gradient entries finer than that.
      eps: finite-difference step (float64).
      fd_max_elements: leaves up to this size get every element differenced, bigger ones
        ``directions`` random unit directions.
      directions: also the number of forward-mode directions per leaf.
      hvp_directions: random directions for the Hessian-vector check (0: skip it; it is
        skipped with a note when ``grad_fn`` cannot be traced, e.g. NumPy code).
      hvp_rtol: its tolerance (default: the finite-difference one).
      net: a :class:`jaxnet.Network` whose inputs are ``args[0]``: turns on kink handling.
      mode: with ``net``, the keyword arguments ``state``, ``key``, ``train`` that your
        ``loss_fn`` runs ``net`` with (a dropout mask moves the kinks), for counting kinks.
      kinks: ``"exclude"`` the examples near a kink (``x`` and ``y``, the first two arguments
        after ``params``, are sliced; others pass unchanged), ``"nudge"`` their inputs until no
        kink is within the margin, or only ``"count"``.
      kink_margin: distance counted as near (default ``100 · eps``: a finite-difference
        step moves a pre-activation by about ``eps`` times the size of its inputs, ~10 ``eps``
        for standardised data).
      seed: of the random directions and nudges.
      reference_device: where the references are computed (:func:`jaxnet.devices.reference_device`):
        ``"default"``: every float64 reference (finite differences, ``jax.grad`` in float64, its
        jvp and Hessian-vector products) on the CPU device, exact on every backend — a GPU's
        float64 ``jax.grad`` can be off by more than the 1e-10 bar — and a ``jax.grad`` witness
        in float32 on the working device (it checks your float32 gradient at 1e-4, far above
        any backend's float32 rounding); ``"same"``: all on the working device (what the
        checker did before); a ``jax.Device``: all there. Your gradient always runs on the
        working device, the device of ``params``. ``report.notes`` ends with where each ran.
      jvp_of_yours: also the dot-product test of your gradient: ``⟨grad_fn(p), v⟩`` (your
        gradient run in float64, where the float64 references run) against forward mode,
        ``jvp(loss_fn)(p; v)``, along ``directions`` random unit
        directions per leaf (witness ``jvp vs yours``, float64 tolerance).

    Returns:
      a :class:`GradReport`; witnesses ``jax.grad``, ``finite diff`` (yours), then the
      reference's own consistency: ``ref vs finite diff`` (``jax.grad`` in float64) and
      ``jvp vs jax.grad`` (forward vs reverse mode), and ``hessian-vector``.
    """
    _check_params(params)
    notes = []
    if net is not None:
        margin = 100 * eps if kink_margin is None else float(kink_margin)
        if not args:
            raise ValueError("net= needs the inputs x as the first argument after params")
        single = np.shape(args[0]) == tuple(net.input_shape)  # one example, passed to your functions as it is
        counter = lambda x: count_kinks(params, net, x, margin, **(mode or {}))
        args, notes = handle_kinks(counter, args, kinks, margin, seed, single, coupled_in(net, mode or {}))
    _check_loss(loss_fn, params, args)
    dtype = jnp.result_type(*jax.tree.leaves(params))
    default_rtol, default_fd = DEFAULT_RTOL.get(jnp.dtype(dtype).name, DEFAULT_RTOL["float32"])
    rtol = default_rtol if rtol is None else rtol
    fd_rtol = default_fd if fd_rtol is None else fd_rtol
    working = working_device(params)
    devices = (working, *(device_for(d, reference_device, params) for d in (dtype, jnp.float64)))
    options = dict(
        rtol=rtol,
        fd_rtol=fd_rtol,
        fd_atol=fd_atol,
        eps=eps,
        fd_max_elements=fd_max_elements,
        directions=directions,
        hvp_directions=hvp_directions,
        hvp_rtol=hvp_rtol,
        seed=seed,
        jvp_of_yours=jvp_of_yours,
    )
    try:
        leaves, more = _witnesses(loss_fn, grad_fn, params, args, devices, **options)
    except ValueError as e:  # the functions close over arrays committed to the working device
        if "incompatible devices" not in str(e) or devices == (working,) * 3:
            raise
        leaves, more = _witnesses(loss_fn, grad_fn, params, args, (working,) * 3, **options)
        more.append(
            f"the references could not run on {device_name(devices[2])}: your functions use arrays "
            f"committed to another device (jax.device_put), so they ran on {device_name(working)}"
        )
        devices = (working,) * 3
    notes += more
    notes.append(_where(dtype, *devices))
    return GradReport(tuple(leaves), tuple(notes))


def _check_params(params):
    """One sentence on what :func:`check_grads` needs instead of JAX's own error: a pytree of
    floating-point arrays to differentiate with respect to."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    if not leaves:
        raise ValueError(
            "check_grads: params holds no arrays; expected a pytree of floating-point arrays "
            "(the parameters your gradient is with respect to)"
        )
    for path, leaf in leaves:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(
                f"check_grads: params{jax.tree_util.keystr(path)} has dtype {jnp.result_type(leaf)}; "
                "a gradient is taken with respect to floating-point arrays only"
            )


def _check_loss(loss_fn, params, args):
    """One sentence instead of JAX's or NumPy's error: ``loss_fn`` must be JAX code
    (``jax.grad`` differentiates it) and return a scalar. Errors of another kind (a wrong call)
    are left to the check itself, which raises them as they are."""
    try:
        shape = jax.eval_shape(lambda p: loss_fn(p, *args), params).shape  # params traced, as jax.grad traces them
    except jax.errors.TracerArrayConversionError:
        raise ValueError(
            "check_grads: loss_fn calls NumPy on the params, so jax.grad cannot differentiate it; write "
            "it with jax.numpy, or check a NumPy loss and its gradient with jaxnet.check_vjp "
            "(finite differences only)"
        ) from None
    except (*NOT_TRACEABLE, TypeError, AttributeError):  # Python control flow on values, non-array arguments
        try:
            shape = np.shape(loss_fn(params, *args))
        except Exception:
            return
    if tuple(shape) != ():
        raise ValueError(
            f"check_grads: loss_fn must return a scalar, got shape {tuple(shape)}; for a vector "
            "output and its hand-written backward pass use jaxnet.check_vjp"
        )


def _gradient_dtypes(yours):
    """``ValueError`` for an integer (or other non-floating) leaf of your gradient."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(yours)[0]:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(
                f"check_grads: your gradient{jax.tree_util.keystr(path)} has dtype "
                f"{jnp.result_type(leaf)}; expected floating point, like the params"
            )


def _witnesses(
    loss_fn,
    grad_fn,
    params,
    args,
    devices,
    rtol,
    fd_rtol,
    fd_atol,
    eps,
    fd_max_elements,
    directions,
    hvp_directions,
    hvp_rtol,
    seed,
    jvp_of_yours,
):
    """:func:`check_grads`' rows and notes, with your gradient on ``devices[0]``, the ``jax.grad``
    witness on ``devices[1]`` and the float64 references on ``devices[2]``."""
    working, ref, ref64 = devices
    notes = []
    with jax.default_matmul_precision("highest"):
        yours = _maybe_jit(grad_fn)(params, *args)
    _gradient_dtypes(yours)
    # a leaf missing, extra or misnamed (the ignore: PyTreeDef (C++) has no stub, mypy sees no __ne__)
    if jax.tree.structure(yours) != jax.tree.structure(params):  # type: ignore[operator]
        return compare("jax.grad", yours, params, rtol), [
            f"your gradient's tree {jax.tree.structure(yours)} is not the params' {jax.tree.structure(params)}: "
            "no witness can pair their leaves"
        ]
    reference = on_device(_maybe_jit(_grad_of(loss_fn)), params, *args, device=ref)
    leaves = compare("jax.grad", yours, reference, rtol)
    with jax.enable_x64(True):
        params64 = jax.tree.map(_up, params)
        args64 = jax.tree.map(_up, args)
        with (
            jax.default_device(ref64),
            jax.default_matmul_precision("highest"),
        ):  # every float64 reference below runs on ref64
            p64, a64 = to_device((params64, args64), ref64)
            loss64 = lambda p: loss_fn(p, *a64)
            fd = _finite_differences(loss64, p64, directions, eps, (seed, 0), fd_max_elements)
            if fd_atol is None:
                fd_atol = fd_round_off(float(loss64(p64)), eps)
            grads64 = on_device(_maybe_jit(_grad_of(loss_fn)), p64, *a64, device=ref64)
            leaves += _against_fd("finite diff", yours, fd, fd_rtol, fd_atol)
            leaves += _against_fd("ref vs finite diff", grads64, fd, DEFAULT_RTOL["float64"][1], fd_atol)
            try:
                leaves += _forward_vs_reverse(loss64, p64, grads64, directions, (seed, 1), DEFAULT_RTOL["float64"][0])
                if jvp_of_yours:
                    yours64 = _maybe_jit(grad_fn)(p64, *a64)
                    leaves += _forward_vs_reverse(
                        loss64, p64, yours64, directions, (seed, 3), DEFAULT_RTOL["float64"][0], "jvp vs yours"
                    )
            except TypeError as e:  # e.g. a custom_vjp in the loss has no forward mode
                notes.append(
                    f"forward-vs-reverse check skipped: the loss has no forward mode ({str(e).splitlines()[0][:80]})"
                )
        if hvp_directions:
            try:
                leaves += _hessian_vector(
                    grad_fn,
                    loss_fn,
                    params64,
                    args64,
                    hvp_directions,
                    (seed, 2),
                    fd_rtol if hvp_rtol is None else hvp_rtol,
                    (working, ref64),
                )
            except NOT_TRACEABLE as e:
                notes.append(
                    f"hessian-vector check skipped: grad_fn cannot be differentiated by JAX ({type(e).__name__})"
                )
    return leaves, notes


def _where(dtype, working, ref, ref64):
    """The note saying where each side ran, e.g. ``"references computed on cpu:0 (jax.grad in
    float64, finite differences, jvp, H v); your gradient on cuda:0 (NVIDIA H200)"``."""
    name = jnp.dtype(dtype).name
    if name == "float64" or ref == ref64:
        refs = f"references computed on {device_name(ref64)} (jax.grad in {name}, finite differences"
        refs += ", jvp, H v)" if name == "float64" else ", jax.grad, jvp, H v in float64)"
    else:
        refs = (
            f"jax.grad ({name}, matmul precision highest) computed on {device_name(ref)}; float64 references "
            f"(finite differences, jax.grad, jvp, H v) on {device_name(ref64)}"
        )
    return f"{refs}; your gradient on {device_name(working)}"


def check_per_example(
    params: Params,
    net: Network,
    x: ArrayLike,
    y: ArrayLike,
    rtol: float | None = None,
    reference_device: str | jax.Device = "default",
) -> GradReport:
    """Per-example gradients and norms of :mod:`jaxnet.per_example` against ``vmap(jax.grad)``.

    Witnesses: ``per-example`` (every ``g_i = ∂ℓ_i/∂params`` from the hand-derived backward
    pass vs ``jax.vmap(jax.grad)`` of each example's own loss), ``norms`` (``||g_i||`` from
    the layers' closed forms vs the norms of those vmapped gradients), and ``r Σ g_i + L2``
    (the weighted sum plus the L2 term vs ``jax.grad`` of the batch loss), in the params'
    dtype with matmul precision "highest". Tolerance: ``rtol`` or the dtype's default
    against ``jax.grad``. The hand-derived side runs on the working device (that of
    ``params``), the ``jax.grad`` references on ``reference_device`` (as in
    :func:`check_grads`: the CPU device in float64 by default, the working device in float32);
    ``report.notes`` says which.
    """
    from . import network as _network
    from . import per_example as _pe

    dtype = jnp.result_type(*jax.tree.leaves(params))
    rtol = DEFAULT_RTOL.get(jnp.dtype(dtype).name, DEFAULT_RTOL["float32"])[0] if rtol is None else rtol
    _network.check_inputs(params, net, x, y)
    x, y, _ = _network.prepare_inputs(params, net, x, y)  # a single example becomes a batch of one
    _pe.check_per_example_defined(net)
    single = _pe.example_loss_net(net)
    working, ref = working_device(params), device_for(dtype, reference_device, params)
    with jax.default_matmul_precision("highest"):
        mine = jax.jit(_pe.per_example_grads)(params, net, x, y)  # leaves [batch, *shape]
        norms = jax.jit(_pe.per_example_grad_norms)(params, net, x, y)  # [batch]
    reference = on_device(
        jax.jit(jax.vmap(jax.grad(_network.loss), (None, None, 0, 0))), params, single, x, y, device=ref
    )
    batch_grads = on_device(jax.jit(jax.grad(_network.loss)), params, net, x, y, device=ref)
    n = jnp.shape(x)[0]
    ref_norms = np.sqrt(
        sum(np.sum(np.asarray(g, np.float64).reshape(n, -1) ** 2, axis=1) for g in jax.tree.leaves(reference))
    )
    r = 1.0 / n if net.reduction == "mean" else 1.0
    summed = [
        {
            name: r * np.sum(np.asarray(g, np.float64), axis=0)
            + (net.l2 * np.asarray(params[i][name], np.float64) if name in names else 0.0)
            for name, g in layer.items()
        }
        for i, (layer, names) in enumerate(zip(mine, _network.penalised_names(net)))
    ]
    return GradReport(
        tuple(
            compare("per-example", mine, reference, rtol)
            + compare("norms", {"norms": np.asarray(norms)}, {"norms": ref_norms}, rtol)
            + compare("r Σ g_i + L2", type(params)(summed), batch_grads, rtol)
        ),
        (
            f"jax.grad references ({jnp.dtype(dtype).name}) computed on {device_name(ref)}; "
            f"hand-derived ones on {device_name(working)}",
        ),
    )


def assert_grads_match(
    loss_fn: Callable[..., jax.Array], grad_fn: Callable[..., Any], params: Any, *args: Any, **kwargs: Any
) -> GradReport:
    """:func:`check_grads`, raising ``AssertionError`` with the table when anything fails."""
    report = check_grads(loss_fn, grad_fn, params, *args, **kwargs)
    if not report.ok:
        bad = ", ".join(sorted({f"{r.path} ({r.witness})" for r in report.failures()}))
        raise AssertionError(f"gradient mismatch in {bad}\n{report}")
    return report


# --- any hand-written backward pass: vector-Jacobian products --------------------------------


def check_vjp(
    f: Callable[..., Any],
    f_vjp: Callable[..., Sequence[Any]],
    *primals: Any,
    cotangents: int = 3,
    names: Sequence[str] | None = None,
    rtol: float | None = None,
    fd_rtol: float | None = None,
    fd_atol: float | None = None,
    eps: float = 1e-6,
    fd_max_elements: int = 256,
    directions: int = 4,
    hvp_directions: int = 1,
    seed: int = 0,
    reference_device: str | jax.Device = "default",
) -> GradReport:
    """Check a hand-written backward pass ``f_vjp(primals, dy)`` of ``y = f(*primals)``.

    ``f_vjp`` returns the cotangents of all primals, ``(∂⟨dy, y⟩/∂primals[0], ...)``: the
    vector-Jacobian product ``Jᵀ dy``. For each of ``cotangents`` random ``dy`` (standard normal,
    of ``y``'s shape; non-scalar outputs are the normal case) the scalar ``φ(primals) = ⟨dy, f(*primals)⟩``
    is checked with :func:`check_grads`, whose gradient is exactly that product: witnesses
    ``jax.vjp`` (``jax.grad`` of ``φ``, i.e. ``jax.vjp`` of ``f`` applied to ``dy``), float64
    ``finite diff``, the reference's own consistency, ``hessian-vector`` through ``f_vjp``, and
    ``jvp vs yours``, the dot-product test ``⟨f_vjp(dy), v⟩ = ⟨dy, J v⟩`` with ``J v`` from
    ``jax.jvp``. Same tolerances as :func:`check_grads`.

    NumPy: when ``f`` cannot be traced by JAX (NumPy code), the only witness is float64 central
    finite differences of ``φ`` (``f`` called on float64 copies of the primals, which must be
    arrays), and ``report.notes`` says so.

    Args:
      f: ``f(*primals) -> y``, an array (or a pytree of arrays, JAX only).
      f_vjp: ``f_vjp(primals, dy) -> cotangents``, a sequence with one entry per primal, each of
        its primal's structure and shape.
      primals: floating-point arrays (or pytrees of them, JAX only).
      cotangents: how many random ``dy``.
      names: a name per primal for the report (default: ``f``'s parameter names).
      rtol, fd_rtol, fd_atol, eps, fd_max_elements, directions, hvp_directions, seed,
        reference_device: as for :func:`check_grads`.

    Returns:
      a :class:`GradReport` whose rows name the primal (``x``, ``params['W']``) and, in the
      witness column, the cotangent (``jax.vjp · dy0``).
    """
    if not primals:
        raise ValueError("check_vjp needs at least one primal: check_vjp(f, f_vjp, x, ...)")
    names = _primal_names(f, len(primals)) if names is None else tuple(names)
    if len(names) != len(primals):
        raise ValueError(f"names: {len(names)} names for {len(primals)} primals")
    wide = given_in_float64(primals)
    with jax.enable_x64(True) if wide else contextlib.nullcontext():  # float64 primals stay float64
        rng = np.random.default_rng((seed, 4))
        dys = [
            jax.tree.map(lambda a: np.asarray(rng.normal(size=np.shape(a)), jnp.result_type(a)), f(*primals))
            for _ in range(int(cotangents))
        ]
        if _traceable(f, primals):
            options = dict(
                rtol=rtol,
                fd_rtol=fd_rtol,
                fd_atol=fd_atol,
                eps=eps,
                fd_max_elements=fd_max_elements,
                directions=directions,
                hvp_directions=hvp_directions,
                seed=seed,
                reference_device=reference_device,
            )
            return _check_vjp_jax(f, f_vjp, primals, dys, names, options)
        check = lambda dy, k: _numpy_vjp_report(
            f, f_vjp, primals, dy, fd_rtol, fd_atol, eps, fd_max_elements, directions, seed + k
        )
        return _merge(check, dys, names)


def given_in_float64(tree: Any) -> bool:
    """Whether every floating-point array of ``tree`` was given in float64 (a NumPy float64 array
    counts even with x64 off; Python numbers and lists do not decide): the checks then run with
    x64 on for their duration, in float64 throughout. Mixed float32/float64 inputs run as JAX
    would run them (float32 with x64 off)."""
    dtypes = [
        np.dtype(leaf.dtype)
        for leaf in jax.tree.leaves(tree)
        if hasattr(leaf, "dtype") and np.issubdtype(np.dtype(leaf.dtype), np.floating)
    ]
    return bool(dtypes) and all(d == np.float64 for d in dtypes)


def _check_vjp_jax(f, f_vjp, primals, dys, names, options):
    """:func:`check_vjp` of a JAX ``f``: :func:`check_grads` of ``⟨dy, f⟩`` per cotangent."""
    loss, grad = _vjp_functions(f, f_vjp)
    primals = jax.tree.map(jnp.asarray, tuple(primals))
    seed = options.pop("seed")
    check = lambda dy, k: check_grads(
        loss, grad, primals, jax.tree.map(jnp.asarray, dy), seed=seed + k, jvp_of_yours=True, **options
    )
    return _merge(check, dys, names)


def _merge(check, dys, names):
    """One report from ``check(dy, k)`` for every cotangent, rows relabelled (:func:`_relabel`)."""
    rows, notes = [], []
    for k, dy in enumerate(dys):
        report = check(dy, k)
        rows += [_relabel(row, names, k) for row in report.leaves]
        notes += [n for n in report.notes if n not in notes]
    return GradReport(tuple(rows), tuple(notes))


def _primal_names(f, n):
    """``f``'s positional parameter names when there are ``n``, else ``primal0, primal1, ...``."""
    import inspect

    try:
        params = [
            p.name
            for p in inspect.signature(f).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        params = []
    return tuple(params) if len(params) == n else tuple(f"primal{i}" for i in range(n))


def _relabel(row, names, k):
    """A row of the check of ``⟨dy_k, f⟩`` in the terms of ``f``: ``[0]['W']`` -> ``params['W']``,
    ``jax.grad`` -> ``jax.vjp``, and the cotangent ``· dy{k}`` in the witness column."""
    head, _, rest = row.path.partition("]")
    path = names[int(head[1:])] + rest if head.startswith("[") and head[1:].isdigit() else row.path
    return dataclasses.replace(row, path=path, witness=f"{row.witness.replace('jax.grad', 'jax.vjp')} · dy{k}")


def _traceable(f, primals):
    """Whether JAX can trace ``f`` (else it is NumPy code, checked by finite differences only)."""
    try:
        jax.eval_shape(f, *primals)
    except (*NOT_TRACEABLE, TypeError):
        return False
    return True


_VJP_FUNCTIONS: dict[tuple[Callable[..., Any], Callable[..., Any]], tuple[Callable[..., Any], Callable[..., Any]]] = {}


def _vjp_functions(f, f_vjp):
    """``(φ(primals, dy) = ⟨dy, f(*primals)⟩, (primals, dy) -> f_vjp(primals, dy))`` for
    :func:`check_grads`, one pair per ``(f, f_vjp)`` so that the cotangents share compilations."""

    def loss(primals, dy):
        return sum(jnp.sum(d * v) for d, v in zip(jax.tree.leaves(dy), jax.tree.leaves(f(*primals))))

    def grad(primals, dy):
        cotangents = f_vjp(primals, dy)
        if not isinstance(cotangents, (tuple, list)) or len(cotangents) != len(primals):
            raise ValueError(
                f"f_vjp must return a sequence with one cotangent per primal ({len(primals)}), "
                f"got {type(cotangents).__name__}"
            )
        return tuple(cotangents)

    return _cached(_VJP_FUNCTIONS, (f, f_vjp), lambda: (loss, grad))


def _numpy_vjp_report(f, f_vjp, primals, dy, fd_rtol, fd_atol, eps, fd_max_elements, directions, seed):
    """``f_vjp(primals, dy)`` against float64 central differences of ``⟨dy, f⟩``, all in NumPy."""
    arrays = [np.asarray(p) for p in primals]
    if not all(np.issubdtype(a.dtype, np.floating) for a in arrays):
        raise ValueError("check_vjp with a NumPy f: every primal must be a floating-point array")
    dtype = np.result_type(*arrays)
    fd_rtol = DEFAULT_RTOL.get(np.dtype(dtype).name, DEFAULT_RTOL["float32"])[1] if fd_rtol is None else fd_rtol
    dy64 = np.asarray(dy, np.float64)
    p64 = [a.astype(np.float64) for a in arrays]
    phi = lambda ps: float(np.sum(dy64 * np.asarray(f(*ps), np.float64)))
    yours = f_vjp(tuple(primals), dy)
    if not isinstance(yours, (tuple, list)) or len(yours) != len(primals):
        raise ValueError(f"f_vjp must return a sequence with one cotangent per primal ({len(primals)})")
    probes = []
    for i, p in enumerate(p64):
        small = p.size <= fd_max_elements
        vs = np.eye(p.size).reshape(p.size, *p.shape) if small else _unit_directions((seed, 0, i), directions, p.shape)
        moved = lambda v, sign: phi([q + sign * eps * v if j == i else q for j, q in enumerate(p64)])  # noqa: B023 (called in this iteration)
        probes.append((vs, np.array([(moved(v, 1) - moved(v, -1)) / (2 * eps) for v in vs]), not small))
    if fd_atol is None:
        fd_atol = fd_round_off(phi(p64), eps)
    rows = _against_fd("finite diff", tuple(np.asarray(g) for g in yours), _Probes(probes), fd_rtol, fd_atol)
    return GradReport(
        tuple(rows),
        (
            "f could not be traced by JAX (NumPy code, or Python control flow on traced "
            "values): the only witness is float64 central finite differences of ⟨dy, f⟩ "
            "(no jax.vjp, jvp or Hessian-vector witness)",
        ),
    )
