"""Derivation audit: each note's gradient formulas read literally, then repaired one change at a time.

    python experiments/derivation_audit.py [--out experiments/results/derivation_audit.md]

For every note in ../shared/seeds/ this evaluates the printed formulas exactly as printed:
the note's indices and layer numbering, its transposes, its shapes (biases folded where the
note folds them), and only the sums it prints. A product whose factors do not conform is not
repaired quietly: the leaf is reported as "cannot be evaluated" with the factors' shapes, and
a gradient that keeps an example axis the note never sums over fails ``check_grads`` on its
shape. Each repair is then applied alone, each its own row; where more than one is needed, all
of them together, and all but each one (to show that every one is needed). Verdicts come from
``jaxnet.check_grads`` (against ``jax.grad`` of the loss and float64 finite differences).

Also: one step of each printed update rule (does it lower the loss?), eq. (10) of note 003
against ``jaxnet.Conv2D``, a table of the slips no number can catch (quoted from the notes),
and Findings, which are generated from the rows.

The results file carries the run date, rewritten only when its content (date aside) changed,
and is written atomically. Everything runs in float64 (x64 is switched on for this script).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import os
import re
import tempfile
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxnet

# --- literal arithmetic: the notes' products, checked for conformance ---------------------------------


class NonConforming(ValueError):
    """A printed product or sum whose operands' shapes do not conform."""


def _shape(a):
    return tuple(int(s) for s in jnp.shape(a))


def dot(a, b, text):
    """The notes' "·" and juxtaposition as NumPy's ``dot``: vector · vector (equal lengths, a number),
    vector · matrix, matrix · vector, matrix · matrix; a scalar factor scales.

    Raises :class:`NonConforming` naming ``text`` and the shapes when the inner sizes differ."""
    if jnp.ndim(a) == 0 or jnp.ndim(b) == 0:
        return a * b
    if jnp.ndim(a) > 2 or jnp.ndim(b) > 2 or _shape(a)[-1] != _shape(b)[0]:
        raise NonConforming(f"{text}: {_shape(a)} · {_shape(b)}")
    return jnp.dot(a, b)


def outer(a, b):
    """``a ⊗ b`` of two vectors: [m] ⊗ [n] -> [m, n]."""
    return jnp.outer(a, b)


def same_shape(op, a, b, text):
    """Elementwise ``op`` (a sum, ``∘``, ``.*``) of two operands of one shape; a scalar broadcasts."""
    if jnp.ndim(a) and jnp.ndim(b) and _shape(a) != _shape(b):
        raise NonConforming(f"{text}: {_shape(a)} and {_shape(b)}")
    return op(a, b)


def plus(a, b, text):
    return same_shape(jnp.add, a, b, text)


def times(a, b, text):
    return same_shape(jnp.multiply, a, b, text)


def per_example(term, reduce=None):
    """A leaf's value over the batch: ``term(x_i, y_i)`` for every example (``jax.vmap``), then
    ``reduce`` over the example axis; ``None`` keeps it (a sum the note does not print)."""

    def over_batch(xs, ys):
        stacked = jax.vmap(term)(xs, ys)
        return stacked if reduce is None else reduce(stacked, axis=0)

    return over_batch


# --- records ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Formulas:
    """One set of printed formulas and the repairs tried on it.

    ``loss(applied)`` -> ``loss_fn(params, *args)`` (may return a non-scalar: then it cannot be
    evaluated as a loss); ``grads(applied)`` -> ``fn(params, *args)`` returning either a dict
    ``{leaf: thunk}`` (each thunk may raise :class:`NonConforming`) or the gradient tree itself.
    ``repairs``: ``((label, what it changes), ...)``; ``applied`` is a tuple of labels."""

    note: str
    name: str
    network: str
    reading: str
    against: str
    repairs: tuple
    loss: Callable
    grads: Callable
    params: object
    args: tuple

    @property
    def labels(self):
        return tuple(label for label, _ in self.repairs)


@dataclasses.dataclass(frozen=True)
class Check:
    """One row: a formula set with some repairs applied, its ``check_grads`` report (``None`` when
    nothing could be evaluated) and the leaves (or the loss) that could not be evaluated, with why."""

    note: str
    formulas: str
    network: str
    labels: tuple  # every repair of the set, in order
    applied: tuple  # the repairs applied in this row
    report: object  # jaxnet.GradReport or None
    unevaluable: tuple  # ((leaf or "loss", reason), ...)

    @property
    def ok(self):
        return self.report is not None and self.report.ok and not self.unevaluable

    @property
    def verdict(self):
        return "pass" if self.ok else "FAIL"

    @property
    def repairs_text(self):
        n = len(self.labels)
        if not self.applied:
            return "as printed"
        if len(self.applied) == n > 1:
            return f"all {n}: " + " + ".join(self.applied)
        if len(self.applied) == n - 1 > 1:
            return "all but " + next(label for label in self.labels if label not in self.applied)
        return "+ " + " + ".join(self.applied)

    def failing(self, witness):
        """Failing leaves against one witness (leaves that cannot be evaluated are listed apart)."""
        if self.report is None:
            return "-"
        skip = {leaf for leaf, _ in self.unevaluable}
        rows = [r for r in self.report.failures() if r.witness == witness and _leaf_name(r.path) not in skip]
        return ", ".join(_failure_text(r) for r in rows) or "-"

    def failing_leaves(self):
        """Every leaf that fails against either witness or cannot be evaluated."""
        names = {leaf for leaf, _ in self.unevaluable}
        if self.report is not None:
            names |= {_leaf_name(r.path) for r in self.report.failures() if r.witness in ("jax.grad", "finite diff")}
        return names


def _leaf_name(path):
    """``['W1']`` -> ``W1``, ``[0]['W']`` -> ``W[0]``."""
    keys = re.findall(r"\[(?:'([^']*)'|(\d+))\]", path)
    names = [k for k, _ in keys if k]
    layers = [i for _, i in keys if i]
    return "".join(names) + "".join(f"[{i}]" for i in layers)


def _failure_text(r):
    if r.worst.startswith("shape"):  # check_grads' row for a leaf of the wrong shape
        return f"{_leaf_name(r.path)} ({r.worst.replace('!=', '≠')})"
    return f"{_leaf_name(r.path)} ({r.max_rel:.1e})"


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of an update rule: the loss before and after (``after`` None: the gradient the rule
    uses cannot be evaluated as printed; ``reason`` says why)."""

    note: str
    rule: str
    gradient: str
    loss: str
    before: float
    after: float | None
    reason: str = ""

    @property
    def lowered(self):
        if self.after is None:
            return "cannot be evaluated"
        return "yes" if self.after < self.before else "NO"


def _rng(seed):
    return np.random.default_rng(seed)


def repair_sets(labels):
    """The rows for a set of repairs: none (as printed), each alone, and where there are more than
    one, all together; where there are more than two, also all but each one."""
    labels = tuple(labels)
    sets = [()] + [(label,) for label in labels]
    if len(labels) > 1:
        sets.append(labels)
    if len(labels) > 2:
        sets += [tuple(x for x in labels if x != label) for label in labels]
    return sets


def _unevaluable_leaves(thunks):
    """Trace each thunk once for its shapes only (``jax.eval_shape``: conformance is a matter of
    shapes); ``{leaf: reason}`` for those that do not conform."""
    reasons = {}
    for name, thunk in thunks.items():
        try:
            jax.eval_shape(thunk)
        except NonConforming as e:
            reasons[name] = str(e)
    return reasons


def check_row(formulas: Formulas, applied=()) -> Check:
    """Evaluate ``formulas`` with the repairs ``applied`` and check them with ``jaxnet.check_grads``.

    A loss that is not a number, or leaves whose products do not conform, are recorded as
    "cannot be evaluated" (such leaves enter ``check_grads`` as NaN, so they fail there too)."""
    applied = tuple(label for label in formulas.labels if label in applied)
    loss_fn, grad_maker = formulas.loss(applied), formulas.grads(applied)
    params, args = formulas.params, formulas.args
    row = lambda report, unevaluable: Check(
        formulas.note, formulas.name, formulas.network, formulas.labels, applied, report, tuple(unevaluable)
    )
    try:
        value = jax.eval_shape(loss_fn, params, *args)
    except NonConforming as e:
        return row(None, [("loss", str(e))])
    if value.shape:
        return row(None, [("loss", f"the loss is a {tuple(value.shape)} array, not a number")])
    made = grad_maker(params, *args)
    if not (isinstance(made, dict) and all(callable(v) for v in made.values())):  # a ready gradient tree
        return row(jaxnet.check_grads(loss_fn, grad_maker, params, *args, hvp_directions=0), [])
    reasons = _unevaluable_leaves(made)
    unevaluable = [(leaf, reasons[leaf]) for leaf in params if leaf in reasons]
    if len(reasons) == len(params):
        return row(None, unevaluable)

    def grad_fn(p, *a):
        thunks = grad_maker(p, *a)
        return {leaf: jnp.full(jnp.shape(p[leaf]), jnp.nan) if leaf in reasons else thunks[leaf]() for leaf in p}

    return row(jaxnet.check_grads(loss_fn, grad_fn, params, *args, hvp_directions=0), unevaluable)


def check_all(formulas: Formulas):
    return [check_row(formulas, applied) for applied in repair_sets(formulas.labels)]


# --- note 000 (Saxon): one hidden ReLU layer, softmax, L2, biases folded into the weights ------------


def _with_one(v):
    """Append the constant-1 bias unit: [n] -> [n + 1] (or [N, n] -> [N, n + 1])."""
    return jnp.concatenate([v, jnp.ones((*jnp.shape(v)[:-1], 1), v.dtype)], axis=-1)


def relu_softmax_l2_loss(w, x, y, alpha):
    """L = L_d / N + L_r,  L_d = Σ_i L_i,  L_i = −log(e^{f_{y_i}} / Σ_j e^{f_j}),  L_r = α/2 Σ w²  (§2).

    w1: (D + 1) × H, w2: (H + 1) × K, the sizes the note states; x, h extended by a 1."""
    h = jnp.maximum(0.0, _with_one(x) @ w["w1"])  # [N, D + 1] @ [D + 1, H]
    f = _with_one(h) @ w["w2"]  # g_k = identity: [N, H + 1] @ [H + 1, K]
    data = jnp.sum(jax.scipy.special.logsumexp(f, axis=1) - f[jnp.arange(len(y)), y])
    return data / len(y) + alpha / 2 * (jnp.sum(w["w1"] ** 2) + jnp.sum(w["w2"] ** 2))


SAXON_REPAIRS = (
    ("1(y_i = k)", "df ≡ p_k − 1(y_i = k), the indicator of §2's result, for the printed 1(y_i − k)"),
    ("h ⊗ df", "dw2 = h ⊗ df (outer product) for h · df, a dot product of an [H + 1] and a [K] vector"),
    ("df · w2ᵀ", "dh = df · w2ᵀ for df · w2 (w2 is (H + 1) × K)"),
    ("x ⊗ dh", "dw1 = x ⊗ dh (outer product) for x · dh"),
    ("dh without the 1", "drop dh's entry for the constant unit of h, which has no weights into it"),
    ("∘ Θ(h)", "dh ∘ Θ(h), the ReLU derivative that §2 lists as ∂g/∂h and §3 leaves out"),
    ("mean over i", "average the per-example terms ∂L_i/∂w over the N examples (L = L_d/N + L_r); §3 prints no sum"),
)


def saxon_terms(w, alpha, applied):
    """§3, "the terms for our program", for one example (x_i [D], label y_i), as printed:

        df ≡ p_k − 1(y_i − k);  dw2 = h · df + α w2;  dh = df · w2;  dw1 = x · dh + α w1,

    with x and h extended by their constant 1 (x [D + 1], h [H + 1]), "·" a product that must
    conform, and ``1(y_i − k)`` read as 1 where y_i − k is nonzero. Returns ``{leaf: term(x_i, y_i)}``."""
    k = w["w2"].shape[1]

    def forward(xi, yi):
        x = _with_one(xi)  # [D + 1]
        z = x @ w["w1"]  # hidden layer products: [H]
        h = _with_one(jnp.maximum(0.0, z))  # hidden layer values and the 1: [H + 1]
        p = jax.nn.softmax(h @ w["w2"])  # p_k: [K]
        if "1(y_i = k)" in applied:
            indicator = (yi == jnp.arange(k)).astype(p.dtype)
        else:  # 1(y_i − k), literally: 1 where y_i − k ≠ 0
            indicator = (yi - jnp.arange(k) != 0).astype(p.dtype)
        return x, z, h, p - indicator  # df: [K]

    def dw2(xi, yi):
        _, _, h, df = forward(xi, yi)
        product = outer(h, df) if "h ⊗ df" in applied else dot(h, df, "h · df")
        return plus(product, alpha * w["w2"], "h ⊗ df + α w2")

    def dh(xi, yi):
        _, z, _, df = forward(xi, yi)
        v = dot(df, w["w2"].T, "df · w2ᵀ") if "df · w2ᵀ" in applied else dot(df, w["w2"], "df · w2")
        if "dh without the 1" in applied:
            v = v[:-1]
        if "∘ Θ(h)" in applied:
            theta = (z > 0).astype(v.dtype)
            theta = theta if v.shape[0] == z.shape[0] else _with_one(theta)  # the constant unit: Θ(1) = 1
            v = times(v, theta, "dh ∘ Θ(h)")
        return v

    def dw1(xi, yi):
        x = forward(xi, yi)[0]
        product = outer(x, dh(xi, yi)) if "x ⊗ dh" in applied else dot(x, dh(xi, yi), "x · dh")
        return plus(product, alpha * w["w1"], "x ⊗ dh + α w1")

    return {"w1": dw1, "w2": dw2}


def audit_000():
    rng = _rng(0)
    d, hidden, k, n, alpha = 2, 6, 3, 8, 1e-2
    w = {"w1": jnp.asarray(rng.normal(size=(d + 1, hidden))), "w2": jnp.asarray(rng.normal(size=(hidden + 1, k)) / 2)}
    x, y = jnp.asarray(rng.normal(size=(n, d))), jnp.asarray(rng.integers(0, k, size=n))

    def grads(applied):
        reduce = jnp.mean if "mean over i" in applied else None
        return lambda w, x, y: {
            leaf: (lambda t=term: per_example(t, reduce)(x, y)) for leaf, term in saxon_terms(w, alpha, applied).items()
        }

    formulas = Formulas(
        "000",
        "§3, the terms for our program",
        "2-6-3 ReLU, softmax, L2 (α = 0.01), biases folded",
        "per example, x [D + 1] and h [H + 1] with their 1; w1 (D + 1) × H, w2 (H + 1) × K as the note states; "
        "· a product that must conform; 1(y_i − k) is 1 where y_i − k ≠ 0",
        "L = L_d/N + α/2 Σw² (§2)",
        SAXON_REPAIRS,
        lambda applied: lambda w, x, y: relu_softmax_l2_loss(w, x, y, alpha),
        grads,
        w,
        (x, y),
    )
    return [formulas], []


# --- note 001 (Sai): one hidden sigmoid layer, regression with the RSS --------------------------------


def _with_one_first(v):
    """Prepend the constant x_0 = 1 that the combined α_m, β_k multiply: [n] -> [n + 1]."""
    return jnp.concatenate([jnp.ones((*jnp.shape(v)[:-1], 1), v.dtype), v], axis=-1)


def _sai_forward(params, x):
    """Z_m = σ(α_0m + α_mᵀ X), T_k = β_0k + β_kᵀ Z, f_k = T_k (regression); row 0 of α, β holds the biases."""
    z = jax.nn.sigmoid(_with_one_first(x) @ params["alpha"])  # [.., P + 1] @ [P + 1, M]
    return z, _with_one_first(z) @ params["beta"]  # [.., M + 1] @ [M + 1, K]


def sai_loss(applied):
    """L = Σ_i Σ_k (y_ik − f_k(x_i)) as printed; with the repair ``(y − f)²``, the residual sum of squares."""
    square = "(y − f)²" in applied
    return lambda params, x, y: jnp.sum((y - _sai_forward(params, x)[1]) ** (2 if square else 1))


SAI_REPAIRS = (
    ("(y − f)²", "the loss squared, as its name (residual sum of squares) and its derivative −2 (y − f) say"),
    ("σ'(α_0m + α_mᵀ x_i)", "σ' at the hidden pre-activation, for σ'(α_mᵀ), σ' of the weight vector α_m"),
)


def sai_terms(params, applied):
    """The derivatives as printed, for one example i (the update rule sums them: γ Σ_i ∂L/∂β_km):

        ∂L/∂β_km = −2 (y_ik − f_k(x_i)) G'_k(T_k) z_mi,
        ∂L/∂α_ml = Σ_k −2 (y_ik − f_k(x_i)) G'_k(T_k) β_km σ'(α_mᵀ) x_il,

    with G'_k = 1 (regression: G_k(T_k) = T_k), σ the sigmoid (σ' = σ (1 − σ)), and α_m, β_k the
    combined vectors (index 0 the bias, x_i0 = z_0i = 1). σ'(α_mᵀ) read literally is σ' of the
    vector α_m, which cannot stand in the scalar formula for ∂L/∂α_ml."""
    alpha, beta = params["alpha"], params["beta"]

    def common(xi, yi):
        x = _with_one_first(xi)  # x_il: [P + 1]
        z, f = _sai_forward(params, xi)  # z_mi: [M], f_k(x_i): [K]
        return x, z, -2 * (yi - f) * 1.0  # −2 (y_ik − f_k(x_i)) G'_k(T_k): [K]

    def d_beta(xi, yi):
        _, z, r = common(xi, yi)
        return jnp.einsum("k,m->mk", r, _with_one_first(z))  # [M + 1, K]: z_0i = 1 for β_0k

    def d_alpha(xi, yi):
        x, z, r = common(xi, yi)
        if "σ'(α_0m + α_mᵀ x_i)" in applied:
            sigma_prime = z * (1 - z)  # σ'(α_0m + α_mᵀ x_i): [M], a number for each m
        else:
            s = jax.nn.sigmoid(alpha.T)  # σ'(α_mᵀ): σ' of each weight vector α_m: [M, P + 1]
            raise NonConforming(
                f"σ'(α_mᵀ) is σ' of the vector α_m, shape {_shape(s[0])}, "
                "where the formula for the number ∂L/∂α_ml needs a number"
            )
        return jnp.einsum("k,mk,m,l->lm", r, beta[1:], sigma_prime, x)  # [P + 1, M]

    return {"alpha": d_alpha, "beta": d_beta}


def audit_001():
    rng = _rng(1)
    p, m, k, n = 3, 5, 2, 8
    params = {"alpha": jnp.asarray(rng.normal(size=(p + 1, m))), "beta": jnp.asarray(rng.normal(size=(m + 1, k)))}
    x, y = jnp.asarray(rng.normal(size=(n, p))), jnp.asarray(rng.normal(size=(n, k)))

    def grads(applied):
        return lambda params, x, y: {
            leaf: (lambda t=term: per_example(t, jnp.sum)(x, y)) for leaf, term in sai_terms(params, applied).items()
        }

    formulas = Formulas(
        "001",
        "∂L/∂β_km, ∂L/∂α_ml",
        "3-5-2 sigmoid, regression, biases combined into α_m, β_k",
        "per example, summed over i as the update rule prints (γ Σ_i ∂L/∂β_km); G'_k = 1; σ the sigmoid",
        "L = Σ_i Σ_k (y_ik − f_k(x_i)), as printed",
        SAI_REPAIRS,
        sai_loss,
        grads,
        params,
        (x, y),
    )
    lr = 1e-3
    squared, printed = sai_loss(("(y − f)²",)), sai_loss(())
    rule = f"β, α ← β, α − γ Σ_i ∂L/∂(β, α) (γ = {lr})"
    steps = []
    for applied, gradient in [((), "as printed"), (("σ'(α_0m + α_mᵀ x_i)",), "with σ'(α_0m + α_mᵀ x_i)")]:
        made = grads(applied)(params, x, y)
        reasons = _unevaluable_leaves(made)
        stepped = None if reasons else jax.tree.map(lambda a, g: a - lr * g, params, {k: t() for k, t in made.items()})
        for loss, name in [(squared, "Σ(y − f)², the RSS"), (printed, "Σ(y − f), as printed")]:
            steps.append(
                Step(
                    "001",
                    rule,
                    gradient,
                    name,
                    float(loss(params, x, y)),
                    None if stepped is None else float(loss(stepped, x, y)),
                    "; ".join(reasons.values()),
                )
            )
    return [formulas], steps


# --- note 002 (Mortensen): tanh network of any depth, softmax, the layer recursion -------------------


def _mortensen_forward(params, x, depth):
    """a^(p) = z^(p−1) W^(p) + b^(p) (W_jk: j in, k out, eqs. 8–10), z^(p) = tanh(a^(p)) (eq. 1), z^(0) = x;
    ŷ = softmax(a^(N_layer)) (eq. 2). Returns the z's and ŷ."""
    zs = [x]
    for p in range(1, depth):
        zs.append(jnp.tanh(_affine(params, p, zs[-1])))
    return zs, jax.nn.softmax(_affine(params, depth, zs[-1]), axis=-1)


def _affine(params, p, z):
    """a^(p) = z^(p−1) W^(p) + b^(p), for one sample [n] or a batch [N, n]."""
    a = z @ params[f"W{p}"]
    return a + jnp.broadcast_to(params[f"b{p}"], a.shape)


def mortensen_loss(depth):
    """Err(ŷ, y) = −1/N Σ_n Σ_i y_{n,i} log ŷ_{n,i}   (eq. 3)."""

    def loss(params, x, y):
        zs = _mortensen_forward(params, x, depth)[0]
        logits = _affine(params, depth, zs[-1])
        return -jnp.sum(y * jax.nn.log_softmax(logits, axis=-1)) / len(x)

    return loss


def eq6(y_hat, index_j):
    """Eq. (6), ∂ŷ_i/∂a_j = ŷ_i (δ_ij − ŷ_i) as printed ([i, j]); ``index_j``: ŷ_i (δ_ij − ŷ_j)."""
    eye = jnp.eye(y_hat.shape[0])
    return y_hat[:, None] * (eye - (y_hat[None, :] if index_j else y_hat[:, None]))


def mortensen_terms(params, depth, n_samples, output, applied):
    """The recursion for one sample, as printed:

        output delta, ``output="12"``: (12) ∂L/∂b^(N_layer) = (ŷ − y) / N_samples;
                      ``output="5·6"``: (7)'s product of the local gradients (5) ∂L/∂ŷ_i = −1/N y_i/ŷ_i
                      and (6) ∂ŷ_i/∂a_j = ŷ_i (δ_ij − ŷ_i);
        (11) ∂L/∂b^(i) = ∂L/∂b^(i+1) · W^{T(i+1)} ∘ (1 − z^(i) ∘ z^(i));
        (12) ∂L/∂W^(i) = z^(i−1) ⊗ dL/db^(i)  (x for i = 1).

    Returns ``{leaf: term(x_n, y_n)}``; the note prints no sum over the samples."""

    def deltas(xn, yn):
        zs, y_hat = _mortensen_forward(params, xn, depth)
        if output == "12":
            delta = (y_hat - yn) / n_samples
        else:
            jac = eq6(y_hat, "ŷ_j in (6)" in applied)  # [i, j]
            delta = dot(-yn / (n_samples * y_hat), jac, "(5) · (6)")
        out = {depth: delta}
        for i in range(depth - 1, 0, -1):
            back = dot(out[i + 1], params[f"W{i + 1}"].T, f"∂L/∂b^({i + 1}) · W^T({i + 1})")
            out[i] = times(back, 1 - zs[i] * zs[i], "∘ (1 − z ∘ z)")
        return zs, out

    terms = {}
    for i in range(1, depth + 1):
        terms[f"W{i}"] = lambda xn, yn, i=i: outer(deltas(xn, yn)[0][i - 1], deltas(xn, yn)[1][i])
        terms[f"b{i}"] = lambda xn, yn, i=i: deltas(xn, yn)[1][i]
    return terms


def audit_002(sizes=(2, 6, 5, 4, 3), n=8):
    rng = _rng(2)
    depth = len(sizes) - 1
    params = {}
    for p, (a, b) in enumerate(itertools.pairwise(sizes), start=1):
        params[f"W{p}"] = jnp.asarray(rng.normal(size=(a, b)) / np.sqrt(a))
        params[f"b{p}"] = jnp.asarray(rng.normal(size=b) / 2)
    x = jnp.asarray(rng.normal(size=(n, sizes[0])))
    y = jnp.asarray(np.eye(sizes[-1])[rng.integers(0, sizes[-1], size=n)])

    def grads(output):
        def make(applied):
            reduce = jnp.sum if "Σ_n" in applied else None
            return lambda params, x, y: {
                leaf: (lambda t=term: per_example(t, reduce)(x, y))
                for leaf, term in mortensen_terms(params, depth, n, output, applied).items()
            }

        return make

    total = ("Σ_n", "sum each sample's term over the samples (the per-sample terms carry the 1/N_samples of eq. 3)")
    net = "-".join(map(str, sizes)) + " tanh, softmax"
    reading = "per sample, row vectors; W^(p) [n_(p−1), n_p] (W_jk: j in, k out, eq. 8); no sum over samples"
    loss = lambda applied: mortensen_loss(depth)
    return [
        Formulas(
            "002",
            "(12) for the output, then (11), (12)",
            net,
            reading,
            "Err, eq. (3)",
            (total,),
            loss,
            grads("12"),
            params,
            (x, y),
        ),
        Formulas(
            "002",
            "(7) as (5) · (6), then (11), (12)",
            net,
            reading,
            "Err, eq. (3)",
            (("ŷ_j in (6)", "∂ŷ_i/∂a_j = ŷ_i (δ_ij − ŷ_j), for ŷ_i (δ_ij − ŷ_i)"), total),
            loss,
            grads("5·6"),
            params,
            (x, y),
        ),
    ], []


# --- note 003 (draft): three-layer ReLU regression with MSE, and the CNN's loss -----------------------


def _draft_forward(params, x):
    """z1 = W1 x + b1, a1 = f(z1), z2 = W2 a1 + b2, a2 = f(z2), z3 = W3 a2 + b3, h = z3 (f = ReLU, eq. 8),
    for one example as a column vector x [nx, 1]; W [out, in], b [out, 1] (Table 2)."""
    z1 = params["W1"] @ x + params["b1"]
    a1 = jnp.maximum(0.0, z1)
    z2 = params["W2"] @ a1 + params["b2"]
    a2 = jnp.maximum(0.0, z2)
    return z1, a1, z2, a2, params["W3"] @ a2 + params["b3"]


def draft_loss(params, x, y):
    """J = 1/N Σ_i ‖h(x_i; W, b) − y_i‖²   (eq. 2, the square summed over the outputs)."""
    h = jax.vmap(lambda xi: _draft_forward(params, xi[:, None])[-1][:, 0])(x)
    return jnp.sum((h - y) ** 2) / len(x)


def _relu_prime(z):
    return (z > 0).astype(z.dtype)  # eq. (9)


def draft_chain_terms(params, applied):
    """The list of ∂h/∂p, combined by eq. (4) ∂J/∂p = 2/N Σ_i (h(x_i) − y_i) ∂h/∂p, as printed:

        ∂h/∂W3 = a2,  ∂h/∂W2 = W3ᵀ f'(z2) a2,  ∂h/∂W1 = W2ᵀ W3ᵀ f'(z2) f'(z1) x,
        ∂h/∂b3 = 1,   ∂h/∂b2 = W3 f'(z2),      ∂h/∂b1 = W2ᵀ W3ᵀ f'(z2) f'(z1),

    each juxtaposition a product that must conform (x, a, z, h, y column vectors)."""
    last = "a1" if "a1 in ∂h/∂W2" in applied else "a2"

    def term(dh_dp):
        def one(xi, yi):
            z1, a1, z2, a2, h = _draft_forward(params, xi[:, None])
            v = {"x": xi[:, None], "z1": z1, "a1": a1, "z2": z2, "a2": a2}
            return dot(h - yi[:, None], dh_dp(v), "(h − y) ∂h/∂p")

        return one

    def w2t(v):
        return params["W2"].T

    def w3t(v):
        return params["W3"].T

    def f1(v):
        return _relu_prime(v["z1"])

    def f2(v):
        return _relu_prime(v["z2"])

    def chain(*factors, names):
        return lambda v: _product([f(v) for f in factors], names)

    return {
        "W3": term(lambda v: v["a2"]),
        "W2": term(chain(w3t, f2, lambda v: v[last], names=("W3ᵀ", "f'(z2)", last))),
        "W1": term(chain(w2t, w3t, f2, f1, lambda v: v["x"], names=("W2ᵀ", "W3ᵀ", "f'(z2)", "f'(z1)", "x"))),
        "b3": term(lambda v: 1.0),
        "b2": term(chain(lambda v: params["W3"], f2, names=("W3", "f'(z2)"))),
        "b1": term(chain(w2t, w3t, f2, f1, names=("W2ᵀ", "W3ᵀ", "f'(z2)", "f'(z1)"))),
    }


def _product(factors, names):
    """Left-to-right product of printed factors, each step a product that must conform."""
    out, text = factors[0], names[0]
    for f, name in zip(factors[1:], names[1:]):
        text = f"{text} {name}"
        out = dot(out, f, text)
    return out


def draft_delta_terms(params, n, applied):
    """Eqs. (5)–(7) as printed, in their numbering (a^(1) = x, a^(2) = a1, a^(3) = a2, a^(4) = h, so
    δ^(4) is the output's):

        δ^(4) = h − y  (5);   δ^(l−1) = W_{l−1}ᵀ δ^(l) .* f'(z^(l−1))  (6);   Δ^(l) = δ^(l) a^(l)  (7),

    Δ^(l) the gradient of the weights into layer l (W3 for l = 4); the biases' δ^(l) (Table 3:
    ∂z/∂b = 1; eqs. 5–7 give none). Repairs: ``a^(l−1)`` and ``a^(l−1)ᵀ`` in (7), eq. (4)'s ``2/N``."""

    def deltas(xi, yi):
        z1, a1, z2, a2, h = _draft_forward(params, xi[:, None])
        scale = 2 / n if "2/N" in applied else 1.0
        d = {4: scale * (h - yi[:, None])}  # (5)
        d[3] = times(dot(params["W3"].T, d[4], "W3ᵀ δ^(4)"), _relu_prime(z2), ".* f'(z)")  # (6)
        d[2] = times(dot(params["W2"].T, d[3], "W2ᵀ δ^(3)"), _relu_prime(z1), ".* f'(z)")
        return d, {1: xi[:, None], 2: a1, 3: a2, 4: h}

    def big_delta(layer):
        def one(xi, yi):
            d, a = deltas(xi, yi)
            act = a[layer - 1] if "a^(l−1)" in applied else a[layer]
            if "ᵀ" in applied:
                act = act.T
            return dot(
                d[layer],
                act,
                f"δ^({layer}) a^({layer - 1 if 'a^(l−1)' in applied else layer})" + ("ᵀ" if "ᵀ" in applied else ""),
            )

        return one

    terms = {f"W{layer - 1}": big_delta(layer) for layer in (4, 3, 2)}
    terms.update({f"b{layer - 1}": (lambda xi, yi, layer=layer: deltas(xi, yi)[0][layer]) for layer in (4, 3, 2)})
    return terms


DRAFT_DELTA_REPAIRS = (
    ("a^(l−1)", "(7) pairs δ^(l) with the layer below, a^(l−1), for a^(l)"),
    ("ᵀ", "(7) transposes the activation: δ^(l) a^(…)ᵀ, an outer product"),
    ("Σ_i", "sum over the examples, as eq. (4) does (Σ_i); eqs. (5)–(7) print none"),
    ("2/N", "eq. (4)'s factor 2/N in δ^(4) = 2/N (h − y)"),
)


def cnn_loss(net, kind, applied):
    """The CNN's cross-entropy as printed, h = σ(outputs), y one-hot (eq. 13):

    ``kind="11"``: J = −y .* log(h) + (1 − y) .* log(1 − h)   (eq. 11), elementwise: a [N, K] array;
    ``kind="12"``: J = −y_i log(h_i) if y_i = 1, (1 − y_i) log(h_i) if y_i = 0   (eq. 12).
    Repairs: ``"sign"`` (−(1 − y) …), ``"log(1 − h)"`` (eq. 12's second case), ``"Σ"``
    (sum over the outputs, mean over the examples, the reduction of ``jaxnet.loss``)."""

    def loss(params, x, y):
        h = jax.nn.sigmoid(jaxnet.forward(params, net, x))
        second = (1 - y) * jnp.log(1 - h if kind == "11" or "log(1 − h)" in applied else h)
        second = -second if "sign" in applied else second
        j = -y * jnp.log(h) + second if kind == "11" else jnp.where(y == 1, -y * jnp.log(h), second)
        return jnp.sum(j) / len(x) if "Σ" in applied else j

    return loss


def audit_003():
    rng = _rng(3)
    n = 8
    out = []

    def draw(sizes):
        nx, l1, l2, ny = sizes
        shapes = {"W1": (l1, nx), "b1": (l1, 1), "W2": (l2, l1), "b2": (l2, 1), "W3": (ny, l2), "b3": (ny, 1)}
        params = {
            k: jnp.asarray(rng.normal(size=s) / np.sqrt(s[1]) + (0.3 if k[0] == "b" else 0.0))
            for k, s in shapes.items()
        }
        return params, jnp.asarray(rng.normal(size=(n, nx))), jnp.asarray(rng.normal(size=(n, ny)))

    def chain_grads(applied):
        return lambda params, x, y: {
            leaf: (lambda t=term: 2 / len(x) * per_example(t, jnp.sum)(x, y))
            for leaf, term in draft_chain_terms(params, applied).items()
        }

    def delta_grads(applied):
        def make(params, x, y):
            terms = draft_delta_terms(params, len(x), applied)
            reduce = jnp.sum if "Σ_i" in applied else None
            return {leaf: (lambda t=term: per_example(t, reduce)(x, y)) for leaf, term in terms.items()}

        return make

    chain_repair = (("a1 in ∂h/∂W2", "∂h/∂W2 = W3ᵀ f'(z2) a1 (Table 3: ∂z2/∂W2 = a1), for … a2"),)
    against = "J, eq. (2), summed over the outputs"
    for sizes, label in [
        ((1, 1, 1, 1), '1-1-1-1 ReLU, scalars as the note says ("used as scalars")'),
        ((3, 5, 4, 2), "3-5-4-2 ReLU, vectors in Table 2's sizes"),
    ]:
        params, x, y = draw(sizes)
        out.append(
            Formulas(
                "003",
                "list of ∂h/∂p with eq. (4)",
                label,
                "eq. (4)'s 2/N Σ_i (h − y) ∂h/∂p; products left to right as printed",
                against,
                chain_repair,
                lambda applied: draft_loss,
                chain_grads,
                params,
                (x, y),
            )
        )
    params, x, y = draw((3, 5, 4, 2))
    out.append(
        Formulas(
            "003",
            "eqs. (5)–(7), W_i of (6) read as W_(l−1)",
            "3-5-4-2 ReLU, vectors in Table 2's sizes",
            "numbering a^(1) = x … a^(4) = h; W_i of (6) is W_(l−1), f'(z) is f'(z^(l−1)); "
            "Δ^(l) for the weights into layer l; biases get δ^(l) (Table 3)",
            against,
            DRAFT_DELTA_REPAIRS,
            lambda applied: draft_loss,
            delta_grads,
            params,
            (x, y),
        )
    )

    mu = 1e-2
    fixed = delta_grads(tuple(label for label, _ in DRAFT_DELTA_REPAIRS))(params, x, y)
    grads = {leaf: thunk() for leaf, thunk in fixed.items()}
    before = float(draft_loss(params, x, y))
    steps = [
        Step(
            "003",
            f"p_(i+1) = p_i + μ ∂J/∂p_i, eq. (3) as printed (μ = {mu})",
            "eqs. (5)–(7), all 4 repairs",
            "J, eq. (2)",
            before,
            float(draft_loss(jax.tree.map(lambda a, g: a + mu * g, params, grads), x, y)),
        ),
        Step(
            "003",
            f"p − μ ∂J/∂p (μ = {mu})",
            "eqs. (5)–(7), all 4 repairs",
            "J, eq. (2)",
            before,
            float(draft_loss(jax.tree.map(lambda a, g: a - mu * g, params, grads), x, y)),
        ),
    ]

    # the CNN: eq. (10) against what Conv2D computes, and the cross-entropy of eqs. (11), (12)
    f, g = rng.normal(size=(6, 5)), rng.normal(size=(3, 2))
    conv = jaxnet.Conv2D(1, (3, 2)).fwd(
        {"W": jnp.asarray(g)[:, :, None, None], "b": jnp.zeros(1)}, jnp.asarray(f)[None, :, :, None]
    )[0]
    gap = float(np.max(np.abs(np.asarray(conv)[0, :, :, 0] - _conv_eq10(f, g))))
    flipped = float(np.max(np.abs(np.asarray(conv)[0, :, :, 0] - _conv_eq10(f, g[::-1, ::-1]))))
    cnn = jaxnet.sequential(
        (6, 6, 1),
        [jaxnet.Conv2D(2, 3, activation="tanh"), jaxnet.MaxPool2D(2), jaxnet.Flatten(), jaxnet.Dense(3)],
        loss="sigmoid_cross_entropy",
    )
    cparams, cx, _ = jaxnet.verify.random_problem(cnn, seed=3, n=6)
    cy = jnp.asarray(np.eye(3)[rng.integers(0, 3, size=6)])  # "all zeros except for a single 1" (eq. 13)
    manual = lambda applied: lambda p, x, y: jaxnet.manual_grads(p, cnn, x, y)
    cnn_name = "conv2-tanh-maxpool-dense3, sigmoid outputs: jaxnet.manual_grads"
    total = ("Σ", "sum over the outputs, mean over the examples (jaxnet.loss's reduction); the note prints none")
    sign = ("sign", "−(1 − y) log(…) for +(1 − y) log(…)")
    out += [
        Formulas(
            "003",
            "the loss, eq. (11)",
            cnn_name,
            "J elementwise (.*), as printed",
            "eq. (11)",
            (total, sign),
            lambda applied: cnn_loss(cnn, "11", applied),
            manual,
            cparams,
            (cx, cy),
        ),
        Formulas(
            "003",
            "the loss, eq. (12)",
            cnn_name,
            "J case by case, as printed",
            "eq. (12)",
            (total, sign, ("log(1 − h)", "log(1 − h_i) for log(h_i) in the case y_i = 0")),
            lambda applied: cnn_loss(cnn, "12", applied),
            manual,
            cparams,
            (cx, cy),
        ),
    ]
    lr = 1e-2
    summed = cnn_loss(cnn, "11", ("Σ",))
    stepped = jax.tree.map(lambda a, g: a - lr * g, cparams, jax.grad(summed)(cparams, cx, cy))
    steps.append(
        Step(
            "003",
            f"descent on eq. (11) (lr {lr})",
            "jax.grad of eq. (11) summed, its sign as printed",
            "the cross-entropy −[y log h + (1 − y) log(1 − h)]",
            float(jaxnet.loss(cparams, cnn, cx, cy)),
            float(jaxnet.loss(stepped, cnn, cx, cy)),
        )
    )
    return out, steps, {"eq10_vs_conv2d": gap, "eq10_flipped_vs_conv2d": flipped}


def _conv_eq10(f, g):
    """Eq. (10) evaluated literally for a finite image f [H, W] and kernel g [kh, kw] (zero outside its
    support): z(i, j) = Σ_m Σ_n f(m, n) g(m − i, n − j), for the (i, j) where the kernel fits."""
    f, g = np.asarray(f), np.asarray(g)
    (hh, ww), (kh, kw) = f.shape, g.shape
    z = np.zeros((hh - kh + 1, ww - kw + 1))
    for i, j in itertools.product(range(z.shape[0]), range(z.shape[1])):
        for m, n in itertools.product(range(hh), range(ww)):
            if 0 <= m - i < kh and 0 <= n - j < kw:
                z[i, j] += f[m, n] * g[m - i, n - j]
    return z


# --- slips no number can catch ---------------------------------------------------------------------

# (note, where, printed (quoted from the note's text), correct, why)
SLIPS = (
    (
        "000",
        "§1, the net and the sizes",
        r"w_{ji}^{(1)} x_i",
        r"w_{ij}^{(1)} x_i (and w_{jk}^{(2)})",
        "the first index of w_ji is the hidden unit, so w1 as indexed is H × (D + 1), the transpose of the stated "
        '"(D + 1) × H" (likewise w_kj: K × (H + 1)); the audit uses the stated sizes',
    ),
    (
        "000",
        "§2, ∂L_d/∂w_1",
        r"\frac{\partial L_d}{\partial w_1} = \frac{\partial L}{\partial f_j}",
        r"\frac{\partial L_d}{\partial w_1} = \sum_k \frac{\partial L_d}{\partial f_k} …",
        'w1 reaches every output ("forwards to all outputs", as the note says), so the chain rule sums over them; '
        "L is not L_d (L = L_d/N + L_r); and j names the hidden units in §1",
    ),
    (
        "000",
        "§2, ∂g/∂h",
        "This just turns off the derivative when h is positive",
        "… when h is negative",
        "Θ(h) is 0 for h < 0 and 1 for h > 0",
    ),
    (
        "000",
        "§2, ∂L_i/∂f_k",
        r"- \log \left(e^{f_j} \right)",
        r"- \log \left(e^{f_{y_i}} \right)",
        "the loss is −log of the correct class's probability; the next step's 1(y_i = k) comes from f_{y_i}",
    ),
    (
        "000",
        "§3, dw2",
        r"d\mathbf{w}_2 \equiv \partial L_i/\partial \mathbf{w}_2 = \mathbf{h} \cdot d\mathbf{f} + \alpha \mathbf{w}_2",
        r"\partial L_i/\partial \mathbf{w}_2 = \mathbf{h} \otimes d\mathbf{f}; \partial L/\partial \mathbf{w}_2 = "
        r"\frac{1}{N} \sum_i \mathbf{h} \otimes d\mathbf{f} + \alpha \mathbf{w}_2",
        "L_i (§2) has no regularisation term: α w2 is ∂L_r/∂w2, so the sum carries the wrong label (likewise dw1)",
    ),
    (
        "000",
        "§3, h",
        r"Calling our hidden layer \mathbf{h}",
        r"the hidden layer values g (§2's name for them; h is §2's products)",
        "§2 names the hidden products h (∂g/∂h = Θ(h)) and the values g; §3's dw2 = h · df needs the values, so "
        "one letter names both. The audit reads §3's h as the values ([H + 1], with the 1): then dh = df · w2ᵀ is "
        "the derivative with respect to them, and the Θ(h) of the products that dw1 needs is missing (the repair "
        "∘ Θ(h) in the table above, a numeric finding)",
    ),
    (
        "001",
        "softmax",
        r"e^{T_{k}}/\sum_{k=1}^{K}e^{T_{k}}",
        r"e^{T_{k}}/\sum_{l=1}^{K}e^{T_{l}}",
        "the summation index k is also the free index of the numerator",
    ),
    (
        "001",
        "after the softmax",
        "The above gives us an array of size kk",
        "an array of size K",
        "k is the index of one output (k = 1, …, K); the array has K entries (likewise "
        '"a vector consisting of k classes" and "a matrix consisting of p columns": K, P)',
    ),
    (
        "001",
        "combined weights",
        r"\alpha_{m} = [\alpha_{m1}, \alpha_{m2}, ... , \alpha_{ml}]",
        r"\alpha_{m} = [\alpha_{m0}, \alpha_{m1}, ... , \alpha_{mP}] (and \beta_{k} = [\beta_{k0}, ... , \beta_{kM}])",
        "the combined vector must hold the bias α_0m (with x_i0 = 1) and run over the P inputs; l is the running "
        "index of ∂L/∂α_ml, not the last one (likewise β_k = [β_k1, …, β_km])",
    ),
    (
        "001",
        "∂L/∂β_km",
        r"\frac{\partial L}{\partial \beta_{km}} = -2 \left (y_{ik}-f_{k}",
        r"\frac{\partial L_i}{\partial \beta_{km}} = -2 \left (y_{ik}-f_{k} …, with L_i = \sum_k (y_{ik} - f_k(x_i))^2",
        "the right side has a free index i: it is one example's term (the update rule sums it, γ Σ_i ∂L/∂β_km); "
        "L itself sums over i (likewise ∂L/∂α_ml)",
    ),
    (
        "001",
        "∂T_k/∂β_km",
        r"\frac{\partial T_{k}}{\partial \beta_{km}} = Z",
        r"\frac{\partial T_{k}}{\partial \beta_{km}} = Z_m",
        "the derivative of the number T_k by one weight is one hidden value (z_mi, as the next line writes), not "
        "the vector Z",
    ),
    (
        "001",
        "after ∂L/∂β_km",
        r"G'_{k} \left (T_{k} \right) = T_{k}, the remaining derivative is just 1",
        r"G_{k} \left (T_{k} \right) = T_{k}, the remaining derivative G'_k is just 1",
        "the identity output is G_k(T_k) = T_k; G'_k = T_k would not give 1",
    ),
    (
        "002",
        "the output",
        r"the *i*'th entry is the estimated probability that the input belongs to the class  $\vec{y}_k",
        r"the k'th entry … the class \vec{y}_k = (\delta_{ik})_i",
        "the entry and the class must carry the same index",
    ),
    (
        "002",
        "eq. (4), the chain rule",
        r"\frac{\partial x}{\partial y} = \frac{\partial y}{\partial z} \frac{\partial z}{\partial x}",
        r"\frac{\partial x}{\partial y} = \frac{\partial x}{\partial z} \frac{\partial z}{\partial y}",
        "the printed right side is ∂y/∂x, the reciprocal of the left side: the chain rule the wrong way round",
    ),
    (
        "003",
        "eq. (2)",
        r"(h(x_i; W, b) - y_i)^2",
        r"\lVert h(x_i; W, b) - y_i \rVert^2",
        "h and y have ny entries (W3 is [ny L2]); the square of a vector is not a number: the sum over the outputs "
        "is missing (the audit sums them)",
    ),
    (
        "003",
        "eq. (4)",
        r"\frac{\partial J}{\partial p_i} = \frac{2}{N} \sum_{i}^{N}",
        r"\frac{\partial J}{\partial p} = \frac{2}{N} \sum_{n}^{N} "
        r"(h(x_n; W, b) - y_n) \frac{\partial h(x_n)}{\partial p}",
        "i is the step of eq. (3) (p_i) and, at once, the summed sample index",
    ),
    (
        "003",
        "∂h/∂b1",
        r"\frac{\partial a_1}{\partial z_1} \frac{\partial a_1}{\partial b_1}",
        r"\frac{\partial a_1}{\partial z_1} \frac{\partial z_1}{\partial b_1}",
        "b1 enters through z1 = W1 x + b1; the last factor differentiates the wrong variable",
    ),
    (
        "003",
        "∂h/∂b2",
        r"\frac{\partial z_2}{\partial b_2} = W_3 f'(z_2)",
        r"… = W_3^T f'(z_2)",
        "it shares ∂h/∂a2 ∂a2/∂z2 with ∂h/∂W2, printed there as W_3^T f'(z_2) (Table 1: ∂(Ax)/∂x = Aᵀ); as "
        "scalars, as the note evaluates them, no number tells the two apart",
    ),
    (
        "003",
        "Table 3, ∂z2/∂a1",
        "$\\partial z_2/\\partial a_1$\t$W_2$",
        r"W_2^T",
        "z2 = W2 a1 + b2, and Table 1 gives ∂(Ax)/∂x = Aᵀ (the layout of the note's eq. (1)); the list above "
        "uses W_2^T for this factor. As scalars, as the note evaluates them, no number tells the two apart",
    ),
    (
        "003",
        "Table 3, ∂z3/∂a2",
        "$\\partial z_3/\\partial a_2$\t$W_3$",
        r"W_3^T",
        "likewise: z3 = W3 a2 + b3, and the list uses W_3^T for ∂h/∂a2",
    ),
    (
        "003",
        "eq. (6)",
        r"\delta^{(l-1)} = W_i^T \delta^{(l)} \cdot * f'(z)",
        r"\delta^{(l-1)} = W_{l-1}^T \delta^{(l)} .* f'(z_{l-2})",
        "i is bound nowhere and f'(z) names no layer; with δ^(4) the output's (eq. 5), layer l's pre-activation "
        "is z_{l−1} of the forward pass, so δ^(l−1) takes W_{l−1} and f'(z_{l−2})",
    ),
)


# (note, where, printed, why it is not in the table above): read, and left out on purpose
NOT_SLIPS = (
    (
        "000",
        "§1, the net",
        r"\sum_j^H w_{kj}^{(2)}",
        "the ranges do not show the constant-1 bias terms, and the note says right after the formula that it does "
        'not write them ("we are not explicitly writing the bias nodes"): a stated convention, not a slip',
    ),
    (
        "002",
        "eqs. (12)",
        r"\frac{\hat{\vec{y}} - \vec{y}}{N_{\text{samples}}} \tag{12}",
        "(12) labels both ∂L/∂b^(N_layer) and ∂L/∂W^(i), and ∂L/∂b^(N_layer) is printed again untagged: the "
        "untagged repeat is an artefact of the text extraction, and the double label may be one too (the text "
        "cannot tell); no formula is wrong either way",
    ),
    (
        "003",
        "the list of ∂h/∂p",
        "The order is not correct yet",
        "the factors stand in the reverse of eq. (1)'s order, but the note says so itself, and the rows above "
        "evaluate the products in the printed order (a numeric finding, not a textual one)",
    ),
)


# --- findings, generated from the rows -------------------------------------------------------------


def _row_text(c):
    """What one row shows, in words."""
    if c.ok:
        return "passes"
    parts = []
    if c.unevaluable:
        parts.append("cannot be evaluated (" + "; ".join(f"{leaf}: {why}" for leaf, why in c.unevaluable) + ")")
    failing = sorted(c.failing_leaves() - {leaf for leaf, _ in c.unevaluable})
    if failing:
        parts.append("fails in " + ", ".join(failing))
    return " and ".join(parts) or "fails"


def _groups(checks):
    groups = {}
    for c in checks:
        groups.setdefault((c.note, c.formulas, c.network), []).append(c)
    return groups


def finding(rows):
    """One sentence per formula set, built from its rows: the printed verdict, which single repair
    passes, whether all of them together pass, and which of them are needed."""
    printed = next(c for c in rows if not c.applied)
    labels = printed.labels
    text = f"**{printed.note}** {printed.formulas} ({printed.network}): as printed it {_row_text(printed)}."
    if not labels:
        return text
    singles = [c for c in rows if len(c.applied) == 1]
    passing = [c.applied[0] for c in singles if c.ok]
    if printed.ok:
        return text
    if passing:
        return text + " " + " ".join(f"The single repair {label} makes it pass." for label in passing)
    if len(labels) == 1:
        same = _row_text(singles[0]) == _row_text(printed)
        return (
            text
            + f" The repair {labels[0]} does not make it pass: "
            + ("it fails the same way." if same else f"it {_row_text(singles[0])}.")
        )
    full = next(c for c in rows if c.applied == labels)
    if not full.ok:
        return text + f" No single repair makes it pass, nor all {len(labels)} together: it {_row_text(full)}."
    if len(labels) == 2:
        return text + f" No single repair makes it pass; it needs both, {labels[0]} and {labels[1]}."
    needed = [c for c in rows if len(c.applied) == len(labels) - 1]
    spare = [next(label for label in labels if label not in c.applied) for c in needed if c.ok]
    tail = (
        " Leaving out any one of them fails."
        if not spare
        else " Without " + ", or without ".join(spare) + " it still passes."
    )
    return text + f" No single repair makes it pass; all {len(labels)} together do." + tail


def step_finding(s):
    if s.after is None:
        return f"**{s.note}** {s.rule} with the gradient {s.gradient}: cannot be evaluated ({s.reason})."
    verb = "lowers" if s.after < s.before else "raises"
    return f"**{s.note}** one step of {s.rule} ({s.gradient}) {verb} {s.loss}: {s.before:.6f} → {s.after:.6f}."


def conv_finding(conv):
    same, flipped = conv["eq10_vs_conv2d"] < 1e-12, conv["eq10_flipped_vs_conv2d"] < 1e-12
    what = (
        "the cross-correlation that `Conv2D` computes, not a convolution (that would flip the kernel)"
        if same and not flipped
        else "not what `Conv2D` computes"
        if not same and not flipped
        else "a convolution (the kernel flipped)"
    )
    return (
        f"**003** eq. (10) evaluated literally differs from `jaxnet.Conv2D` by {conv['eq10_vs_conv2d']:.1e}, "
        f"with the kernel flipped by {conv['eq10_flipped_vs_conv2d']:.1e}: it is {what}."
    )


def findings(checks, steps, conv):
    """Every Findings sentence, generated from the rows (no fixed prose)."""
    sentences = (
        [finding(rows) for rows in _groups(checks).values()] + [step_finding(s) for s in steps] + [conv_finding(conv)]
    )
    return list(dict.fromkeys(sentences))  # two losses stepped with one unevaluable gradient: said once


# --- the results file ------------------------------------------------------------------------------


def audit():
    """Run every note's audit: (checks, steps, eq. (10) comparison). Switches x64 on."""
    jax.config.update("jax_enable_x64", True)
    formulas, steps = [], []
    for run in (audit_000, audit_001, audit_002):
        f, s = run()
        formulas += f
        steps += s
    f, s, conv = audit_003()
    checks = [c for fs in formulas + f for c in check_all(fs)]
    return checks, steps + s, conv, formulas + f


def _cell(s):
    return str(s).replace("|", "\\|")


DATE_LINE = "Generated by `python experiments/derivation_audit.py` on {date} (jax {jax}, float64)."


def markdown(checks, steps, conv, formulas, date=None) -> str:
    date = date or datetime.date.today().isoformat()
    lines = [
        "# Derivation audit: the notes' printed formulas, read literally, against autodiff",
        "",
        DATE_LINE.format(date=date, jax=jax.__version__),
        "",
        "Each table below takes one set of a note's printed formulas. The first row evaluates them exactly as "
        "printed (the note's indices, numbering, transposes, shapes and sums; the reading taken is stated above "
        "the table where the note leaves a choice); each further row applies repairs, one at a time, then all "
        "together, then all but one. Every row is checked with `jaxnet.check_grads` against `jax.grad` of the loss "
        "named under *against* and against float64 finite differences of it (central, every element); a leaf fails "
        "when its max relative error (in parentheses) exceeds 1e-10 (jax.grad) or 1e-6 (finite differences), or when "
        "its shape is wrong (a sum the note does not print leaves an example axis). A product whose factors do not "
        "conform cannot be evaluated: the row gives the factors' shapes and the verdict is FAIL.",
    ]
    groups = _groups(checks)
    for fs in formulas:
        rows = groups[(fs.note, fs.name, fs.network)]
        lines += [
            "",
            f"## {fs.note}: {fs.name} — {fs.network}",
            "",
            f"Reading: {fs.reading}. Against: {fs.against}.",
            "",
        ]
        lines += [f"- **{label}**: {what}" for label, what in fs.repairs]
        lines += [
            "",
            "| repairs | cannot be evaluated | failing leaves vs jax.grad | vs finite differences | verdict |",
            "|---|---|---|---|---|",
        ]
        for c in rows:
            uneval = "; ".join(f"{leaf}: {why}" for leaf, why in c.unevaluable) or "-"
            lines.append(
                "| "
                + " | ".join(
                    _cell(v)
                    for v in (c.repairs_text, uneval, c.failing("jax.grad"), c.failing("finite diff"), c.verdict)
                )
                + " |"
            )
    lines += [
        "",
        "## Update rules and losses: does one step lower the loss?",
        "",
        "| note | rule | gradient | loss | before | after | lowered |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in steps:
        after = "-" if s.after is None else f"{s.after:.6f}"
        lowered = s.lowered if s.after is not None else f"cannot be evaluated: {s.reason}"
        lines.append(
            "| "
            + " | ".join(_cell(v) for v in (s.note, s.rule, s.gradient, s.loss, f"{s.before:.6f}", after, lowered))
            + " |"
        )
    lines += [
        "",
        "## Eq. (10) of note 003, the convolution",
        "",
        f"Eq. (10) evaluated literally (a 6×5 image, a 3×2 kernel, the (i, j) where the kernel fits) against "
        f"`jaxnet.Conv2D`: max |difference| {conv['eq10_vs_conv2d']:.1e}; with the kernel flipped: "
        f"{conv['eq10_flipped_vs_conv2d']:.1e}.",
        "",
        "## Slips no number can catch",
        "",
        "Read, not computed: each *printed* text is quoted from the note (a test checks that it is there).",
        "",
        "| note | where | printed | correct | why |",
        "|---|---|---|---|---|",
    ]
    for note, where, printed, correct, why in SLIPS:
        lines.append("| " + " | ".join(_cell(v) for v in (note, where, f"`{printed}`", f"`{correct}`", why)) + " |")
    lines += ["", "Read and left out on purpose:", ""]
    lines += [f"- **{note}** {where}, `{printed}`: {why}." for note, where, printed, why in NOT_SLIPS]
    lines += ["", "## Findings", "", "Generated from the rows above.", ""]
    lines += [f"- {sentence}" for sentence in findings(checks, steps, conv)]
    return "\n".join(lines) + "\n"


def _without_date(text):
    return re.sub(r" on \d{4}-\d\d-\d\d \(jax", " on DATE (jax", text, count=1)


def write_if_changed(path, text) -> bool:
    """Write ``text`` to ``path`` atomically (temporary file, then ``os.replace``) unless the file
    already holds the same content apart from the run date; returns whether it wrote."""
    try:
        with open(path, encoding="utf-8") as f:
            if _without_date(f.read()) == _without_date(text):
                return False
    except FileNotFoundError:
        pass
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".derivation_audit.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "derivation_audit.md"))
    args = parser.parse_args(argv)
    checks, steps, conv, formulas = audit()
    text = markdown(checks, steps, conv, formulas)
    wrote = write_if_changed(args.out, text)
    print(text)
    print(f"wrote {args.out}" if wrote else f"{args.out} unchanged (same content): left as it is")


if __name__ == "__main__":
    main()
