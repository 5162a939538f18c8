"""Derivation audit: each note's gradient formulas exactly as printed, run through jaxnet.check_grads.

    python experiments/derivation_audit.py [--out experiments/results/derivation_audit.md]

For every note in ../shared/seeds/ this writes the printed formulas as one function per
note, named for its network, with the equation numbers in comments, in the note's own
parameter layout. Each is checked against ``jax.grad`` of the note's loss and against
float64 finite differences; the table says which leaves disagree and by how much, next to
the corrected version (which passes). Where a formula is ambiguous, the reading taken is
stated in the table. The update rules and losses are checked too: does one step of the
printed rule lower the loss?

Everything runs in float64 (x64 is switched on for this script).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import re

import jax
import jax.numpy as jnp
import numpy as np

import jaxnet


@dataclasses.dataclass(frozen=True)
class Check:
    note: str
    network: str
    version: str  # which formulas: as printed / corrected
    reading: str  # the reading taken where the print is ambiguous
    against: str  # the loss differentiated by the reference
    report: jaxnet.GradReport

    def failing(self, witness):
        rows = [r for r in self.report.failures() if r.witness == witness]
        return ", ".join(f"{_leaf_name(r.path)} ({r.max_rel:.1e})" for r in rows) or "-"

    @property
    def verdict(self):
        return "pass" if self.report.ok else "FAIL"


def _leaf_name(path):
    """``[0]['W']`` -> ``W[0]``, ``['w1']`` -> ``w1``."""
    keys = re.findall(r"\[(?:'([^']*)'|(\d+))\]", path)
    names = [k for k, _ in keys if k]
    layers = [i for _, i in keys if i]
    return "".join(names) + "".join(f"[{i}]" for i in layers)


@dataclasses.dataclass(frozen=True)
class Step:
    note: str
    rule: str
    loss: str
    before: float
    after: float

    @property
    def lowered(self):
        return "yes" if self.after < self.before else "NO"


def _rng(seed):
    return np.random.default_rng(seed)


def _check(note, network, version, reading, against, loss_fn, grad_fn, params, *args):
    return Check(note, network, version, reading, against, jaxnet.check_grads(loss_fn, grad_fn, params, *args, hvp_directions=0))


# --- note 000 (Saxon): one hidden ReLU layer, softmax, L2, biases folded into the weights -------------


def _ones(a):
    """Append the constant-1 bias unit: [N, n] -> [N, n + 1]."""
    return jnp.concatenate([a, jnp.ones((a.shape[0], 1), a.dtype)], axis=1)


def relu_softmax_l2_loss(w, x, y, alpha):
    """L = L_d / N + L_r,  L_d = Σ_i L_i,  L_i = −log(e^{f_{y_i}} / Σ_j e^{f_j}),  L_r = α/2 Σ w²."""
    h = jnp.maximum(0.0, _ones(x) @ w["w1"])  # g_j(Σ_i w_ji x_i), x with a 1: [N, D + 1] @ [D + 1, H]
    f = _ones(h) @ w["w2"]  # g_k = identity: [N, H + 1] @ [H + 1, K]
    data = jnp.sum(jax.scipy.special.logsumexp(f, axis=1) - f[jnp.arange(len(y)), y])
    return data / len(y) + alpha / 2 * (jnp.sum(w["w1"] ** 2) + jnp.sum(w["w2"] ** 2))


def relu_softmax_l2_grads(w, x, y, alpha, heaviside=False, per_n=False, literal_indicator=False):
    """Section 3, "the terms for our program", in matrix form over the batch (the note codes it
    "entirely with matrix multiplication": h · df sums the outer products over examples).

    Printed:  df ≡ p_k − 1(y_i − k);  dw2 = h · df + α w2;  dh = df · w2;  dw1 = x · dh + α w1.
    ``heaviside``: restore ∂g/∂h = Θ(h) of section 2, which section 3 leaves out;
    ``per_n``: the 1/N of L = L_d/N, which the per-example terms ∂L_i/∂w leave out.
    """
    n, k = len(y), w["w2"].shape[1]
    x1 = _ones(x)  # [N, D + 1]
    z = x1 @ w["w1"]  # hidden layer products: [N, H]
    h = jnp.maximum(0.0, z)  # hidden layer values
    p = jax.nn.softmax(_ones(h) @ w["w2"], axis=1)  # p_k = e^{f_k} / Σ_j e^{f_j}: [N, K]
    if literal_indicator:  # "1(y_i − k)" read literally: 1 where y_i − k ≠ 0
        indicator = (y[:, None] != jnp.arange(k)[None, :]).astype(p.dtype)
    else:  # the reading of section 2's result: 1(y_i = k)
        indicator = jax.nn.one_hot(y, k, dtype=p.dtype)
    df = p - indicator  # df ≡ p_k − 1(y_i = k): [N, K]
    if per_n:
        df = df / n
    dw2 = _ones(h).T @ df + alpha * w["w2"]  # dw2 = h · df + α w2: [H + 1, N] @ [N, K]
    dh = (df @ w["w2"].T)[:, :-1]  # dh = df · w2, without the constant unit: [N, K] @ [K, H + 1] -> [N, H]
    if heaviside:
        dh = dh * (z > 0)  # ∂g/∂h = Θ(h)
    dw1 = x1.T @ dh + alpha * w["w1"]  # dw1 = x · dh + α w1: [D + 1, N] @ [N, H]
    return {"w1": dw1, "w2": dw2}


def audit_000():
    rng = _rng(0)
    d, hidden, k, n, alpha = 2, 6, 3, 8, 1e-2
    w = {"w1": jnp.asarray(rng.normal(size=(d + 1, hidden))), "w2": jnp.asarray(rng.normal(size=(hidden + 1, k)) / 2)}
    x, y = jnp.asarray(rng.normal(size=(n, d))), jnp.asarray(rng.integers(0, k, size=n))
    loss = lambda w, x, y: relu_softmax_l2_loss(w, x, y, alpha)
    net = "relu_softmax_l2 (2-6-3, folded biases)"
    against = "L = L_d/N + α/2 Σw² (§2)"
    versions = [
        ("§3 as printed", "1(y_i − k) read as 1(y_i = k); h · df summed over the batch", {}),
        ("§3 as printed, indicator literal", "1(y_i − k) = 1 where y_i ≠ k", {"literal_indicator": True}),
        ("§3 + Θ(h) of §2, summed", "dh ∘ Θ(h); h · df summed over the batch (one matrix product)", {"heaviside": True}),
        ("§3 + Θ(h) of §2, averaged", "dh ∘ Θ(h); the per-example terms ∂L_i/∂w averaged over the batch",
         {"heaviside": True, "per_n": True}),
    ]
    checks = [_check("000", net, v, r, against, loss, lambda w, x, y, kw=kw: relu_softmax_l2_grads(w, x, y, alpha, **kw), w, x, y)
              for v, r, kw in versions]
    lr = 1e-2
    steps = [Step("000", f"steepest descent w − {lr} dw, {name}", "L (§2)", float(loss(w, x, y)),
                  float(loss(jax.tree.map(lambda a, g: a - lr * g, w, relu_softmax_l2_grads(w, x, y, alpha, **kw)), x, y)))
             for name, kw in [("dw as printed, summed", {}), ("dw with Θ(h), averaged", {"heaviside": True, "per_n": True})]]
    return checks, steps


# --- note 001 (Sai): one hidden sigmoid layer, regression with the RSS ---------------------------------


def _sigmoid_net(params, x):
    """Z_m = σ(α_0m + α_mᵀ X), T_k = β_0k + β_kᵀ Z, f_k = T_k (regression); biases folded as row 0."""
    z = jax.nn.sigmoid(_ones(x) @ params["alpha"])  # [N, P + 1] @ [P + 1, M]
    return z, _ones(z) @ params["beta"]  # [N, M + 1] @ [M + 1, K]


def sigmoid_rss_loss_as_printed(params, x, y):
    """L = Σ_i Σ_k (y_ik − f_k(x_i))   (the RSS as printed: no square)."""
    return jnp.sum(y - _sigmoid_net(params, x)[1])


def sigmoid_rss_loss(params, x, y):
    """L = Σ_i Σ_k (y_ik − f_k(x_i))²   (the residual sum of squares)."""
    return jnp.sum((y - _sigmoid_net(params, x)[1]) ** 2)


def sigmoid_rss_grads(params, x, y):
    """The derivatives as printed, summed over i as the update rule does (γ Σ_i ∂L/∂β_km):

    ∂L/∂β_km = −2 (y_ik − f_k(x_i)) G'_k(T_k) z_mi,  G'_k = 1 for the identity output;
    ∂L/∂α_ml = Σ_k −2 (y_ik − f_k(x_i)) G'_k(T_k) β_km σ'(α_mᵀ) x_il,
    reading σ'(α_mᵀ) as σ' at the hidden pre-activation α_0m + α_mᵀ x_i (biases folded).
    """
    x1 = _ones(x)  # x_il with x_i0 = 1: [N, P + 1]
    z, f = _sigmoid_net(params, x)
    r = -2 * (y - f)  # −2 (y_ik − f_k(x_i)) G'_k: [N, K]
    d_beta = _ones(z).T @ r  # Σ_i r_ik z_mi: [M + 1, N] @ [N, K]
    d_alpha = x1.T @ ((r @ params["beta"][:-1].T) * z * (1 - z))  # Σ_i Σ_k r_ik β_km σ' x_il: [P + 1, M]
    return {"alpha": d_alpha, "beta": d_beta}


def audit_001():
    rng = _rng(1)
    p, m, k, n = 3, 5, 2, 8
    params = {"alpha": jnp.asarray(rng.normal(size=(p + 1, m))), "beta": jnp.asarray(rng.normal(size=(m + 1, k)))}
    x, y = jnp.asarray(rng.normal(size=(n, p))), jnp.asarray(rng.normal(size=(n, k)))
    net = "sigmoid_rss (3-5-2, regression)"
    reading = "σ'(α_mᵀ) at α_0m + α_mᵀ x_i; summed over i as in the update rule"
    checks = [
        _check("001", net, "∂L/∂β, ∂L/∂α as printed", reading, "the RSS as printed, Σ(y − f)", sigmoid_rss_loss_as_printed,
               sigmoid_rss_grads, params, x, y),
        _check("001", net, "∂L/∂β, ∂L/∂α as printed", reading, "the RSS squared, Σ(y − f)²", sigmoid_rss_loss,
               sigmoid_rss_grads, params, x, y),
    ]
    lr = 1e-3
    stepped = jax.tree.map(lambda a, g: a - lr * g, params, sigmoid_rss_grads(params, x, y))
    steps = [
        Step("001", f"β, α ← β, α − γ Σ_i ∂L/∂(β, α) (γ = {lr})", "Σ(y − f)² (RSS)",
             float(sigmoid_rss_loss(params, x, y)), float(sigmoid_rss_loss(stepped, x, y))),
        Step("001", f"β, α ← β, α − γ Σ_i ∂L/∂(β, α) (γ = {lr})", "Σ(y − f) (as printed)",
             float(sigmoid_rss_loss_as_printed(params, x, y)), float(sigmoid_rss_loss_as_printed(stepped, x, y))),
    ]
    return checks, steps


# --- note 002 (Mortensen): tanh network of any depth, softmax, the layer recursion -------------------


def _deep_tanh(params, x):
    """a^(p) = z^(p−1) W^(p) + b^(p) (W_jk: j in, k out), z^(p) = tanh(a^(p)) (eq. 1), ŷ = softmax(a^(N)) (eq. 2)."""
    zs = [x]
    for layer in params[:-1]:
        zs.append(jnp.tanh(zs[-1] @ layer["W"] + layer["b"][None, :]))  # [N, n_{p−1}] @ [n_{p−1}, n_p]
    logits = zs[-1] @ params[-1]["W"] + params[-1]["b"][None, :]
    return zs, jax.nn.softmax(logits, axis=1)


def deep_tanh_loss(params, x, y):
    """Err(ŷ, y) = −1/N Σ_n Σ_i y_{n,i} log ŷ_{n,i}   (eq. 3)."""
    logits = _deep_tanh(params, x)[0][-1] @ params[-1]["W"] + params[-1]["b"][None, :]
    return -jnp.sum(y * jax.nn.log_softmax(logits, axis=1)) / len(x)


def deep_tanh_grads(params, x, y, output="eq7"):
    """The recursion, eqs. (5)–(12).

    ``output="eq5x6"``: the output delta composed from the local gradients as printed,
      ∂L/∂a_j = Σ_i ∂L/∂ŷ_i ∂ŷ_i/∂a_j with (5) ∂L/∂ŷ_i = −y_i / (N ŷ_i) and
      (6) ∂ŷ_i/∂a_j = ŷ_i (δ_ij − ŷ_i);
    ``output="eq7"``: the printed result of that product, (7) = (12): (ŷ − y) / N.
    Then (11) ∂L/∂b^(i) = ∂L/∂b^(i+1) · W^{T(i+1)} ∘ (1 − z^(i) ∘ z^(i)) and
    (12) ∂L/∂W^(i) = z^(i−1) ⊗ ∂L/∂b^(i) (x for i = 1), both summed over the samples.
    """
    n = len(x)
    zs, y_hat = _deep_tanh(params, x)
    if output == "eq5x6":
        d_yhat = -y / (n * y_hat)  # (5): [N, K]
        eye = jnp.eye(y_hat.shape[1])
        jac = y_hat[:, :, None] * (eye[None] - y_hat[:, :, None])  # (6): ŷ_i (δ_ij − ŷ_i): [N, K, K]
        delta = jnp.einsum("ni,nij->nj", d_yhat, jac)
    else:
        delta = (y_hat - y) / n  # (7), (12): [N, K]
    grads = [None] * len(params)
    for i in reversed(range(len(params))):
        grads[i] = {"W": zs[i].T @ delta, "b": jnp.sum(delta, axis=0)}  # (12): [n_{i−1}, N] @ [N, n_i]
        if i:
            delta = (delta @ params[i]["W"].T) * (1 - zs[i] * zs[i])  # (11): [N, n_i] @ [n_i, n_{i−1}]
    return grads


def audit_002():
    rng = _rng(2)
    sizes, n = [2, 6, 6, 6, 3], 8
    params = [{"W": jnp.asarray(rng.normal(size=(a, b)) / np.sqrt(a)), "b": jnp.asarray(rng.normal(size=b) / 2)}
              for a, b in zip(sizes[:-1], sizes[1:])]
    x = jnp.asarray(rng.normal(size=(n, sizes[0])))
    y = jnp.asarray(np.eye(sizes[-1])[rng.integers(0, sizes[-1], size=n)])
    net = "deep_tanh (2-6-6-6-3)"
    against = "Err, eq. (3)"
    checks = [
        _check("002", net, "(5)·(6) composed as printed, then (11), (12)", "δ_ij − ŷ_i as printed in (6)", against,
               deep_tanh_loss, lambda p, x, y: deep_tanh_grads(p, x, y, "eq5x6"), params, x, y),
        _check("002", net, "(7) = (12), then (11), (12)", "sums over samples in (11), (12)", against,
               deep_tanh_loss, deep_tanh_grads, params, x, y),
    ]
    return checks, []


# --- note 003 (draft): three-layer ReLU regression with MSE, and the CNN's loss -----------------------


def _relu_mse_forward(params, x):
    """z1 = W1 x + b1, a1 = f(z1), z2 = W2 a1 + b2, a2 = f(z2), z3 = W3 a2 + b3, h = z3 (f = ReLU, eq. 8);
    the note's column vectors, a batch as rows: z = x Wᵀ + b with W: [out, in] (Table 2)."""
    z1 = x @ params["W1"].T + params["b1"][None, :]  # [N, nx] @ [nx, L1]
    a1 = jnp.maximum(0.0, z1)
    z2 = a1 @ params["W2"].T + params["b2"][None, :]  # [N, L1] @ [L1, L2]
    a2 = jnp.maximum(0.0, z2)
    h = a2 @ params["W3"].T + params["b3"][None, :]  # [N, L2] @ [L2, ny]
    return z1, a1, z2, a2, h


def relu_mse_loss(params, x, y):
    """J = 1/N Σ_i (h(x_i; W, b) − y_i)²   (eq. 2; the square summed over the outputs)."""
    return jnp.sum((_relu_mse_forward(params, x)[-1] - y) ** 2) / len(x)


def relu_mse_grads(params, x, y, version="corrected"):
    """``"chain list"``: the list of ∂h/∂p under eq. (4), as printed, in the order of eq. (6) —
      ∂h/∂W3 = a2, ∂h/∂W2 = W3ᵀ f'(z2) a2, ∂h/∂W1 = W2ᵀ W3ᵀ f'(z2) f'(z1) x, ∂h/∂b3 = 1,
      ∂h/∂b2 = W3 f'(z2), ∂h/∂b1 = W2ᵀ W3ᵀ f'(z2) f'(z1) — with eq. (4)'s 2/N Σ_i (h − y);
    ``"eqs 5-7"``: δ^(4) = h − y (5), δ^(l−1) = W^T δ^(l) .* f'(z) (6), Δ^(l) = δ^(l) a^(l) (7),
      read in the indexing where a^(1) = x, so Δ for W_l pairs δ^(l+1) with a^(l) (the literal
      same-index pairing δ^(4) a^(4) has the wrong shape), as printed: without eq. (4)'s 2/N;
    ``"corrected"``: eqs. (5)–(7) with δ^(4) = 2 (h − y) / N.
    """
    z1, a1, z2, a2, h = _relu_mse_forward(params, x)
    fp = lambda z: (z > 0).astype(z.dtype)  # eq. (9)
    if version == "chain list":
        d3 = 2 * (h - y) / len(x)  # eq. (4): 2/N Σ_i (h − y) ∂h/∂p: [N, ny]
        d2 = (d3 @ params["W3"]) * fp(z2)  # W3ᵀ f'(z2) (transposed to rows): [N, L2]
        d1 = (d2 @ params["W2"]) * fp(z1)  # W2ᵀ W3ᵀ f'(z2) f'(z1): [N, L1]
        return {"W1": d1.T @ x, "b1": d1.sum(0), "W2": d2.T @ a2,  # ∂h/∂W2 = … a2 (as printed)
                "b2": d2.sum(0), "W3": d3.T @ a2, "b3": d3.sum(0)}
    d4 = h - y if version == "eqs 5-7" else 2 * (h - y) / len(x)  # δ^(4), eq. (5): [N, ny]
    d3 = (d4 @ params["W3"]) * fp(z2)  # eq. (6): δ = W^T δ .* f'(z): [N, L2]
    d2 = (d3 @ params["W2"]) * fp(z1)  # [N, L1]
    return {"W3": d4.T @ a2, "b3": d4.sum(0),  # eq. (7): Δ = δ aᵀ, [ny, N] @ [N, L2]
            "W2": d3.T @ a1, "b2": d3.sum(0), "W1": d2.T @ x, "b1": d2.sum(0)}


def _conv_eq10(f, g):
    """Eq. (10) evaluated literally for a finite image f [H, W] and kernel g [kh, kw] (zero outside its
    support): z(i, j) = Σ_m Σ_n f(m, n) g(m − i, n − j), for the (i, j) where the kernel fits."""
    f, g = np.asarray(f), np.asarray(g)
    (hh, ww), (kh, kw) = f.shape, g.shape
    z = np.zeros((hh - kh + 1, ww - kw + 1))
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            for m in range(hh):
                for n in range(ww):
                    if 0 <= m - i < kh and 0 <= n - j < kw:
                        z[i, j] += f[m, n] * g[m - i, n - j]
    return z


def cnn_loss_eq11(params, net, x, y):
    """J = −y .* log(h) + (1 − y) .* log(1 − h)   (eq. 11 as printed), h = σ(outputs), summed, /N."""
    h = jax.nn.sigmoid(jaxnet.forward(params, net, x))
    return jnp.sum(-y * jnp.log(h) + (1 - y) * jnp.log(1 - h)) / len(x)


def audit_003():
    rng = _rng(3)
    nx, width, ny, n = 3, 5, 2, 8  # L1 = L2, so that the printed ∂h/∂W2 = … a2 has W2's shape
    shapes = {"W1": (width, nx), "b1": (width,), "W2": (width, width), "b2": (width,), "W3": (ny, width), "b3": (ny,)}
    params = {k: jnp.asarray(rng.normal(size=s) / (np.sqrt(s[1]) if len(s) == 2 else 2)) for k, s in shapes.items()}
    x, y = jnp.asarray(rng.normal(size=(n, nx))), jnp.asarray(rng.normal(size=(n, ny)))
    net = "relu_mse (3-5-5-2)"
    against = "J, eq. (2)"
    checks = [
        _check("003", net, "list of ∂h/∂p under eq. (4)", "printed ∂h/∂W2 = W3ᵀ f'(z2) a2; transposed to rows", against,
               relu_mse_loss, lambda p, x, y: relu_mse_grads(p, x, y, "chain list"), params, x, y),
        _check("003", net, "eqs. (5)–(7) as printed", "Δ for W_l = δ^(l+1) a^(l)ᵀ with a^(1) = x; δ^(4) = h − y", against,
               relu_mse_loss, lambda p, x, y: relu_mse_grads(p, x, y, "eqs 5-7"), params, x, y),
        _check("003", net, "corrected: δ^(4) = 2 (h − y) / N, then (6), (7)", "as above", against,
               relu_mse_loss, relu_mse_grads, params, x, y),
    ]
    mu = 1e-2
    grads = relu_mse_grads(params, x, y)
    steps = [Step("003", f"p + μ ∂J/∂p, eq. (3) as printed (μ = {mu})", "J, eq. (2)", float(relu_mse_loss(params, x, y)),
                  float(relu_mse_loss(jax.tree.map(lambda a, g: a + mu * g, params, grads), x, y))),
             Step("003", f"p − μ ∂J/∂p (μ = {mu})", "J, eq. (2)", float(relu_mse_loss(params, x, y)),
                  float(relu_mse_loss(jax.tree.map(lambda a, g: a - mu * g, params, grads), x, y)))]

    # the CNN: eq. (10) against what Conv2D computes, and the cross-entropy of eq. (11)
    f, g = rng.normal(size=(6, 5)), rng.normal(size=(3, 2))
    conv = jaxnet.Conv2D(1, (3, 2)).fwd({"W": jnp.asarray(g)[:, :, None, None], "b": jnp.zeros(1)}, jnp.asarray(f)[None, :, :, None])[0]
    gap = float(np.max(np.abs(np.asarray(conv)[0, :, :, 0] - _conv_eq10(f, g))))
    flipped = float(np.max(np.abs(np.asarray(conv)[0, :, :, 0] - _conv_eq10(f, g[::-1, ::-1]))))
    cnn = jaxnet.sequential((6, 6, 1), [jaxnet.Conv2D(2, 3, activation="tanh"), jaxnet.MaxPool2D(2), jaxnet.Flatten(),
                                        jaxnet.Dense(3)], loss="sigmoid_cross_entropy")
    cparams, cx, _ = jaxnet.verify.random_problem(cnn, seed=3, n=6)
    cy = jnp.asarray(np.eye(3)[rng.integers(0, 3, size=6)])  # "all zeros except for a single 1" (eq. 13)
    manual = lambda p, x, y: jaxnet.manual_grads(p, cnn, x, y)
    cnn_name = "CNN conv2-tanh-maxpool-dense3, sigmoid outputs"
    checks += [
        _check("003", cnn_name, "jaxnet.manual_grads (sigmoid CE)", "J = −[y log h + (1 − y) log(1 − h)]",
               "eq. (11) as printed", lambda p, x, y: cnn_loss_eq11(p, cnn, x, y), manual, cparams, cx, cy),
        _check("003", cnn_name, "jaxnet.manual_grads (sigmoid CE)", "J = −[y log h + (1 − y) log(1 − h)]",
               "eq. (11) with the sign of its second term fixed", lambda p, x, y: jaxnet.loss(p, cnn, x, y), manual,
               cparams, cx, cy),
    ]
    lr = 1e-2
    stepped = jax.tree.map(lambda a, g: a - lr * g, cparams, jax.grad(cnn_loss_eq11)(cparams, cnn, cx, cy))
    steps.append(Step("003", f"descent on eq. (11) as printed (lr {lr})", "the cross-entropy −[y log h + (1 − y) log(1 − h)]",
                      float(jaxnet.loss(cparams, cnn, cx, cy)), float(jaxnet.loss(stepped, cnn, cx, cy))))
    return checks, steps, {"eq10_vs_conv2d": gap, "eq10_flipped_vs_conv2d": flipped}


def audit():
    """Run every note's audit: (checks, steps, eq. (10) comparison). Switches x64 on."""
    jax.config.update("jax_enable_x64", True)
    checks, steps = [], []
    for run in (audit_000, audit_001, audit_002):
        c, s = run()
        checks += c
        steps += s
    c, s, conv = audit_003()
    return checks + c, steps + s, conv


def markdown(checks, steps, conv) -> str:
    cell = lambda s: str(s).replace("|", "\\|")
    lines = [
        "# Derivation audit: the notes' printed gradients vs autodiff",
        "",
        f"Generated by `python experiments/derivation_audit.py` on {datetime.date.today()} (jax {jax.__version__}, float64). "
        "Each row checks one version of a note's formulas with `jaxnet.check_grads` against `jax.grad` of the "
        "loss named in *against* and against float64 finite differences of it (central, every element); a leaf "
        "fails when its max relative error exceeds 1e-10 (jax.grad) or 1e-6 (finite differences). "
        "The numbers in parentheses are the leaves' max relative errors.",
        "",
        "| note | network | formulas | reading taken | against | failing leaves vs jax.grad | vs finite differences | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in checks:
        lines.append("| " + " | ".join(cell(v) for v in (c.note, c.network, c.version, c.reading, c.against,
                                                           c.failing("jax.grad"), c.failing("finite diff"), c.verdict)) + " |")
    lines += ["", "## Update rules and losses: does one step lower the loss?", "",
              "| note | rule | loss | before | after | lowered |", "|---|---|---|---|---|---|"]
    for s in steps:
        lines.append(f"| {s.note} | {cell(s.rule)} | {cell(s.loss)} | {s.before:.6f} | {s.after:.6f} | {s.lowered} |")
    lines += [
        "",
        "## Eq. (10) of note 003, the convolution",
        "",
        f"Eq. (10) evaluated literally (a 6×5 image, a 3×2 kernel) against `jaxnet.Conv2D`: max |difference| "
        f"{conv['eq10_vs_conv2d']:.1e}; with the kernel flipped: {conv['eq10_flipped_vs_conv2d']:.1e}. "
        "Eq. (10) is the cross-correlation that `Conv2D` computes (a true convolution would flip the kernel).",
        "",
        "## Findings",
        "",
        "- **000** §3 drops the ReLU derivative: `dh = df · w2` then `dw1 = x · dh` has no Θ(h), though §2 lists "
        "∂g/∂h = Θ(h) (and says it \"turns off the derivative when h is positive\"; it turns it off where h is "
        "negative). With Θ(h) restored the terms are right as per-example terms ∂L_i/∂w averaged over the batch "
        "(L = L_d/N + L_r); coded \"entirely with matrix multiplication\" as one product summed over the batch, "
        "as the note announces, they need the 1/N. `1(y_i − k)` is a typo for `1(y_i = k)`: read literally, every "
        "leaf fails.",
        "- **001** prints the RSS without its square, L = ΣΣ(y − f); its derivatives (−2(y − f)…) are those of the "
        "squared RSS, which they match; against the printed loss they fail. A step of the printed update rule "
        "lowers the squared RSS (here it also lowers the printed sum, but that sum is unbounded below, so it is "
        "not a loss one can minimise). "
        "\"G'_k(T_k) = T_k\" means G_k(T_k) = T_k. No classification formula is printed (\"can be found in the "
        "same way\"); `jaxnet check` covers the 001-sigmoid-softmax network.",
        "- **002** eq. (6) has the wrong index: ∂ŷ_i/∂a_j = ŷ_i(δ_ij − ŷ_j), not ŷ_i(δ_ij − ŷ_i). Composed "
        "literally, (5)·(6) is not (7); every leaf fails. Eq. (7) itself, and the recursion (11)–(12), are right. "
        "(Two equations carry the number 12.) The note prints no update rule.",
        "- **003** eq. (3) adds the gradient (`p + μ ∂J/∂p`), so a step raises J; descent subtracts it. In the list "
        "of ∂h/∂p, ∂h/∂W2 ends in a2 where Table 3 (∂z2/∂W2 = a1) has a1: W2 fails. Eqs. (5)–(7) leave out eq. (4)'s "
        "2/N (δ^(4) = h − y): as ∂J/∂p every leaf is off by the factor N/2, a constant that a step size μ can absorb "
        "(the direction is right). Eq. (11) has the sign of its second term "
        "wrong (and eq. (12) writes log(h) for y = 0): minimising it as printed pushes every output towards 1, and "
        "a descent step on it raises the true cross-entropy.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "derivation_audit.md"))
    args = parser.parse_args(argv)
    checks, steps, conv = audit()
    text = markdown(checks, steps, conv)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
