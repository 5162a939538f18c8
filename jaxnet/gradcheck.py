"""A gradient checker for hand-derived gradients: which leaf is wrong, where, and by how much.

``check_grads(loss_fn, grad_fn, params, *args)`` compares the user's ``grad_fn`` with two
witnesses and returns a :class:`GradReport` (data; ``str(report)`` is a table):

1. ``jax.grad(loss_fn)`` in the working dtype, with matmul precision "highest";
2. central finite differences of ``loss_fn`` in float64 (params and floating args upcast,
   x64 enabled only for the duration of the check): every element for leaves of at most
   ``fd_max_elements`` entries, else ``directions`` random unit directions per leaf
   (O(1) loss evaluations per direction);
3. and, so that a failure can be blamed, ``jax.grad`` in float64 against the same finite
   differences (the reference's own consistency).

Relative error of an element: ``|yours − reference| / max(|reference|, floor · R)`` with
``R`` the largest reference entry of the whole gradient and ``floor = 1e-3``: relative to the
element, except that entries that are essentially zero are measured against a thousandth of
the gradient's scale (finite differences leave rounding noise around exact zeros).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from .verify import finite_difference_grads

DEFAULT_RTOL = {  # (vs jax.grad in the working dtype, vs float64 finite differences)
    "float64": (1e-10, 1e-6),
    "float32": (1e-4, 1e-3),
}


@dataclasses.dataclass(frozen=True)
class LeafReport:
    """One leaf against one witness."""

    witness: str
    path: str
    shape: tuple
    max_abs: float
    max_rel: float
    worst: str  # the index (or direction) of the worst element
    yours: float
    reference: float
    frac_bad: float  # fraction of elements (or directions) out of tolerance
    rtol: float

    @property
    def ok(self) -> bool:
        return self.frac_bad == 0.0


@dataclasses.dataclass(frozen=True)
class GradReport:
    """Every leaf against every witness; ``ok`` when all pass. ``str()`` gives a table."""

    leaves: tuple

    @property
    def ok(self) -> bool:
        return all(leaf.ok for leaf in self.leaves)

    def failures(self):
        return [leaf for leaf in self.leaves if not leaf.ok]

    def __str__(self):
        header = ("witness", "leaf", "shape", "max abs", "max rel", "rtol", "worst at", "yours", "reference", "bad", "ok")
        body = [
            (r.witness, r.path, "x".join(map(str, r.shape)) or "()", f"{r.max_abs:.2e}", f"{r.max_rel:.2e}", f"{r.rtol:.0e}",
             r.worst, f"{r.yours:.6g}", f"{r.reference:.6g}", f"{100 * r.frac_bad:.0f}%", "ok" if r.ok else "FAIL")
            for r in self.leaves
        ]
        widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
        line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
        return "\n".join([line(header), line(["-" * w for w in widths])] + [line(b) for b in body])


def _compare(witness, yours, reference, rtol, floor=1e-3):
    paths_yours, treedef = jax.tree_util.tree_flatten_with_path(yours)
    ref_leaves, ref_def = jax.tree_util.tree_flatten(reference)
    if treedef != ref_def:
        raise ValueError(f"your gradient's tree {treedef} differs from the reference's {ref_def}")
    refs = [np.asarray(r, np.float64) for r in ref_leaves]
    scale = floor * max((float(np.max(np.abs(r), initial=0.0)) for r in refs), default=0.0)
    out = []
    for (path, g), r in zip(paths_yours, refs):
        g = np.asarray(g, np.float64)
        name = jax.tree_util.keystr(path)
        if g.shape != r.shape:
            raise ValueError(f"{name}: your gradient has shape {g.shape}, the parameter {r.shape}")
        diff = np.abs(g - r)
        rel = diff / np.maximum(np.abs(r), scale if scale > 0 else np.finfo(np.float64).tiny)
        rel = np.where(np.isfinite(g), rel, np.inf)
        if rel.size == 0:
            out.append(LeafReport(witness, name, g.shape, 0.0, 0.0, "-", 0.0, 0.0, 0.0, rtol))
            continue
        worst = np.unravel_index(int(np.argmax(rel)), rel.shape)
        out.append(LeafReport(
            witness, name, g.shape, float(diff.max()), float(rel.max()), str(tuple(int(i) for i in worst)),
            float(g[worst]), float(r[worst]), float(np.mean(rel > rtol)), rtol,
        ))
    return out


def _finite_differences(loss64, params64, directions, eps, key, fd_max_elements):
    """Float64 finite differences, computed once for every witness that compares with them.

    Returns the full gradient when every leaf is small; otherwise, per leaf, the probe
    directions ``vs [m, *leaf.shape]`` (unit vectors: every element of a small leaf, random
    ones for a big leaf) and the directional derivatives ``[m]``.
    """
    leaves, treedef = jax.tree.flatten(params64)
    if all(a.size <= fd_max_elements for a in leaves):
        return finite_difference_grads(loss64, params64, eps, jit=True)
    values = jax.jit(jax.vmap(lambda flat_leaves: loss64(jax.tree.unflatten(treedef, flat_leaves))))
    probes = []
    for i, leaf in enumerate(leaves):
        if leaf.size <= fd_max_elements:  # every element of this leaf: unit directions
            vs = np.eye(leaf.size).reshape(leaf.size, *leaf.shape)
        else:
            vs = np.array(jax.random.normal(jax.random.fold_in(key, i), (directions, *leaf.shape), jnp.float64))
            vs /= np.linalg.norm(vs.reshape(len(vs), -1), axis=1).reshape(-1, *([1] * leaf.ndim))
        batch = [jnp.broadcast_to(a, (2 * len(vs), *a.shape)) for a in leaves]
        batch[i] = leaf[None] + eps * jnp.asarray(np.concatenate([vs, -vs]))
        f = np.asarray(values(batch))
        probes.append((vs, (f[: len(vs)] - f[len(vs):]) / (2 * eps), leaf.size > fd_max_elements))
    return _Probes(probes)


class _Probes(list):
    """Per-leaf ``(directions, directional derivatives, random?)``, as opposed to a full gradient."""


def _against_fd(witness, grads, fd, rtol):
    """Compare ``grads`` with the output of :func:`_finite_differences`."""
    if not isinstance(fd, _Probes):
        return _compare(witness, grads, fd, rtol)
    out = []
    for (path, g), (vs, d, random) in zip(jax.tree_util.tree_flatten_with_path(grads)[0], fd):
        g = np.asarray(g, np.float64)
        yours_d = np.tensordot(vs, g, axes=g.ndim)  # [m]: ⟨g, v⟩ per probe
        diff = np.abs(yours_d - d)
        rel = diff / np.maximum(np.abs(d), 1e-3 * max(np.max(np.abs(d)), np.finfo(np.float64).tiny))
        k = int(np.argmax(rel))
        label = f"dir {k}" if random else str(tuple(int(i) for i in np.unravel_index(k, g.shape)))
        out.append(LeafReport(witness, jax.tree_util.keystr(path), g.shape, float(diff.max()), float(rel.max()),
                              label, float(yours_d[k]), float(d[k]), float(np.mean(rel > rtol)), rtol))
    return out


def check_grads(loss_fn, grad_fn, params, *args, rtol=None, fd_rtol=None, eps=1e-6, fd_max_elements=256,
                directions=4, seed=0) -> GradReport:
    """Check ``grad_fn(params, *args)`` (your gradient of ``loss_fn(params, *args)``).

    Args:
      loss_fn: scalar loss ``loss_fn(params, *args)``.
      grad_fn: your gradient, same tree as ``params``.
      rtol: tolerance against ``jax.grad`` in the working dtype (default by dtype).
      fd_rtol: tolerance against float64 finite differences (default by dtype).
      eps: finite-difference step (float64).
      fd_max_elements: leaves up to this size get every element differenced, bigger ones
        ``directions`` random unit directions.
      seed: of the random directions.

    Returns:
      a :class:`GradReport`; witnesses ``jax.grad``, ``finite diff`` (yours) and
      ``ref vs finite diff`` (``jax.grad`` in float64, to tell your bug from a bad reference).
    """
    dtype = jnp.result_type(*jax.tree.leaves(params))
    default_rtol, default_fd = DEFAULT_RTOL.get(jnp.dtype(dtype).name, DEFAULT_RTOL["float32"])
    rtol = default_rtol if rtol is None else rtol
    fd_rtol = default_fd if fd_rtol is None else fd_rtol
    with jax.default_matmul_precision("highest"):
        yours = grad_fn(params, *args)
        reference = jax.grad(loss_fn)(params, *args)
    leaves = _compare("jax.grad", yours, reference, rtol)
    with jax.enable_x64(True):
        up = lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a
        params64 = jax.tree.map(up, params)
        args64 = jax.tree.map(up, args)
        loss64 = lambda p: loss_fn(p, *args64)
        fd = _finite_differences(loss64, params64, directions, eps, jax.random.key(seed), fd_max_elements)
        leaves += _against_fd("finite diff", yours, fd, fd_rtol)
        leaves += _against_fd("ref vs finite diff", jax.grad(loss_fn)(params64, *args64), fd, DEFAULT_RTOL["float64"][1])
    return GradReport(tuple(leaves))


def assert_grads_match(loss_fn, grad_fn, params, *args, **kwargs) -> GradReport:
    """:func:`check_grads`, raising ``AssertionError`` with the table when anything fails."""
    report = check_grads(loss_fn, grad_fn, params, *args, **kwargs)
    if not report.ok:
        bad = ", ".join(sorted({f"{r.path} ({r.witness})" for r in report.failures()}))
        raise AssertionError(f"gradient mismatch in {bad}\n{report}")
    return report
