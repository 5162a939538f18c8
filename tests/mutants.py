"""Two derivations written from scratch the way a user would, each with deliberate mistakes.

``mlp_grads(params, x, y, mistake=None)``: a tanh MLP with softmax cross-entropy (mean) and
L2 on the weights; ``cnn_grads(...)``: conv → tanh → conv → tanh → max-pool → dense with the
same head. ``mistake`` names one entry of ``MLP_MISTAKES`` / ``CNN_MISTAKES``, which also say
which leaves the mistake makes wrong (what the checker must name).
"""

import jax
import jax.numpy as jnp
import numpy as np

L2 = 0.05


# --- a one-hidden-layer tanh MLP: [N, 3] -> 4 -> 4 classes -----------------------------------


def mlp_loss(params, x, y):
    a1 = jnp.tanh(x @ params["W1"] + params["b1"][None])  # [N, 4]
    f = a1 @ params["W2"] + params["b2"][None]  # [N, 4]
    logp = f - jax.scipy.special.logsumexp(f, axis=1, keepdims=True)
    data = -jnp.mean(jnp.sum(y * logp, axis=1))
    return data + L2 / 2 * (jnp.sum(params["W1"] ** 2) + jnp.sum(params["W2"] ** 2))


MLP_MISTAKES = {  # mistake -> the leaves it makes wrong
    "dropped activation derivative": {"W1", "b1"},
    "transposed weight": {"W1", "b1"},
    "missing 1/N": {"W1", "b1", "W2", "b2"},
    "wrong sign": {"W2"},
    "bias not summed over the batch": {"b2"},
    "softmax Jacobian wrong index": {"W1", "b1", "W2", "b2"},
    "L2 missing": {"W1", "W2"},
    "L2 doubled": {"W1", "W2"},
}


def mlp_grads(params, x, y, mistake=None):
    n = x.shape[0]
    z1 = x @ params["W1"] + params["b1"][None]  # [N, 3] @ [3, 4] -> [N, 4]
    a1 = jnp.tanh(z1)
    f = a1 @ params["W2"] + params["b2"][None]  # [N, 4] @ [4, 4] -> [N, 4]
    p = jax.nn.softmax(f, axis=1)
    # dL/df through the softmax Jacobian J[n, i, j] = ∂p_i/∂f_j = p_i (δ_ij − p_j)
    dp = -y / p / (1 if mistake == "missing 1/N" else n)  # ∂L/∂p: [N, 4]
    eye = jnp.eye(p.shape[1])
    if mistake == "softmax Jacobian wrong index":
        jac = p[:, :, None] * (eye[None] - p[:, :, None])  # p_i (δ_ij − p_i)
    else:
        jac = p[:, :, None] * (eye[None] - p[:, None, :])  # p_i (δ_ij − p_j)
    df = jnp.einsum("ni,nij->nj", dp, jac)  # δ2: [N, 4]
    l2 = {"L2 missing": 0.0, "L2 doubled": 2 * L2}.get(mistake, L2)
    dW2 = a1.T @ df + l2 * params["W2"]  # [4, N] @ [N, 4]
    if mistake == "wrong sign":
        dW2 = -a1.T @ df + l2 * params["W2"]
    db2 = df if mistake == "bias not summed over the batch" else jnp.sum(df, axis=0)  # left [N, 4]: a shape mistake
    da1 = df @ (params["W2"] if mistake == "transposed weight" else params["W2"].T)  # [N, 4] @ [4, 4]
    dz1 = da1 if mistake == "dropped activation derivative" else da1 * (1 - a1**2)
    dW1 = x.T @ dz1 + l2 * params["W1"]  # [3, N] @ [N, 4]
    db1 = jnp.sum(dz1, axis=0)
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def mlp_problem(dtype, seed=0):
    rng = np.random.default_rng(seed)
    params = {
        "W1": rng.normal(size=(3, 4)),
        "b1": rng.normal(size=4) / 2,
        "W2": rng.normal(size=(4, 4)) / 2,
        "b2": rng.normal(size=4) / 2,
    }
    x = rng.normal(size=(6, 3))
    y = np.eye(4)[rng.integers(0, 4, size=6)]
    return (jax.tree.map(lambda a: jnp.asarray(a, dtype), params), jnp.asarray(x, dtype), jnp.asarray(y, dtype))


# --- a small CNN: [N, 7, 7, 1] -> conv 3x3 (2) -> tanh -> conv 2x2 (3) -> tanh -> max-pool 2 -> dense 3 ---


def _conv(x, k):  # VALID, stride 1, NHWC / HWIO: [N, H, W, C] -> [N, H − kh + 1, W − kw + 1, O]
    return jax.lax.conv_general_dilated(x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _cnn_forward(params, x):
    z1 = _conv(x, params["K1"]) + params["c1"][None, None, None]  # [N, 5, 5, 2]
    a1 = jnp.tanh(z1)
    z2 = _conv(a1, params["K2"]) + params["c2"][None, None, None]  # [N, 4, 4, 3]
    a2 = jnp.tanh(z2)
    n = x.shape[0]
    m = a2.reshape(n, 2, 2, 2, 2, 3).max(axis=(2, 4))  # 2x2 windows: [N, 2, 2, 3]
    f = m.reshape(n, 12) @ params["W"] + params["b"][None]  # [N, 12] @ [12, 3]
    return z1, a1, z2, a2, m, f


def cnn_loss(params, x, y):
    f = _cnn_forward(params, x)[-1]
    logp = f - jax.scipy.special.logsumexp(f, axis=1, keepdims=True)
    weights = sum(jnp.sum(params[k] ** 2) for k in ("K1", "K2", "W"))
    return -jnp.mean(jnp.sum(y * logp, axis=1)) + L2 / 2 * weights


CNN_MISTAKES = {
    "conv kernel not flipped": {"K1", "c1"},
    "max-pool gradient to every element": {"K1", "c1", "K2", "c2"},
}


def _kernel_grad(a, dz):  # ∂L/∂K[p, q, c, o] = Σ_{n,i,j} a[n, i + p, j + q, c] dz[n, i, j, o]
    return jax.lax.conv_general_dilated(a, dz, (1, 1), "VALID", dimension_numbers=("CHWN", "IHWO", "HWNC"))


def cnn_grads(params, x, y, mistake=None):
    _z1, a1, _z2, a2, m, f = _cnn_forward(params, x)
    n = x.shape[0]
    df = (jax.nn.softmax(f, axis=1) - y) / n  # [N, 3]
    dW = m.reshape(n, 12).T @ df + L2 * params["W"]  # [12, N] @ [N, 3]
    db = jnp.sum(df, axis=0)
    dm = (df @ params["W"].T).reshape(n, 2, 2, 3)  # [N, 12] -> [N, 2, 2, 3]
    up = jnp.repeat(jnp.repeat(dm, 2, axis=1), 2, axis=2)  # each window's δ on its 4 entries: [N, 4, 4, 3]
    if mistake == "max-pool gradient to every element":
        da2 = up
    else:
        winner = a2 == jnp.repeat(jnp.repeat(m, 2, axis=1), 2, axis=2)  # no ties with random inputs
        da2 = jnp.where(winner, up, 0.0)
    dz2 = da2 * (1 - a2**2)
    dK2 = _kernel_grad(a1, dz2) + L2 * params["K2"]
    dc2 = jnp.sum(dz2, axis=(0, 1, 2))
    kernel = params["K2"] if mistake == "conv kernel not flipped" else params["K2"][::-1, ::-1]
    # ∂L/∂a1: full correlation of dz2 with the flipped kernel, in/out swapped: [N, 5, 5, 2]
    da1 = jax.lax.conv_general_dilated(
        dz2, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWOI", "NHWC")
    )
    dz1 = da1 * (1 - a1**2)
    dK1 = _kernel_grad(x, dz1) + L2 * params["K1"]
    dc1 = jnp.sum(dz1, axis=(0, 1, 2))
    return {"K1": dK1, "c1": dc1, "K2": dK2, "c2": dc2, "W": dW, "b": db}


def cnn_problem(dtype, seed=0):
    rng = np.random.default_rng(seed)
    params = {
        "K1": rng.normal(size=(3, 3, 1, 2)) / 3,
        "c1": rng.normal(size=2) / 2,
        "K2": rng.normal(size=(2, 2, 2, 3)) / 3,
        "c2": rng.normal(size=3) / 2,
        "W": rng.normal(size=(12, 3)) / 3,
        "b": rng.normal(size=3) / 2,
    }
    x = rng.normal(size=(4, 7, 7, 1))
    y = np.eye(3)[rng.integers(0, 3, size=4)]
    return (jax.tree.map(lambda a: jnp.asarray(a, dtype), params), jnp.asarray(x, dtype), jnp.asarray(y, dtype))
