"""Data sets for the notes' kinds of problems, the user's own files, splits and scaling.

Every generator is deterministic given ``seed`` and returns NumPy arrays
``(x [N, D], y)``: integer labels ``[N]`` for classification, ``[N, K]`` floats for
regression. Arrays go to the device once, when training starts.
"""

from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np


@dataclasses.dataclass(frozen=True)
class Split:
    """Train / validation / test arrays."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


# --- generators -------------------------------------------------------------------------


def spiral(n_per_class: int = 100, classes: int = 3, noise: float = 0.2, seed: int = 0):
    """The K-armed spiral of note 000's kind (CS231n style): x [K n, 2], labels [K n]."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k in range(classes):
        r = np.linspace(0.0, 1.0, n_per_class)
        t = np.linspace(k * 4.0, (k + 1) * 4.0, n_per_class) + noise * rng.normal(size=n_per_class)
        xs.append(np.stack([r * np.sin(t), r * np.cos(t)], axis=1))
        ys.append(np.full(n_per_class, k))
    return np.concatenate(xs), np.concatenate(ys)


def moons(n: int = 400, noise: float = 0.1, seed: int = 0):
    """Two interleaving half circles: x [n, 2], labels [n] in {0, 1}."""
    rng = np.random.default_rng(seed)
    n0 = n // 2
    t0, t1 = np.pi * rng.uniform(size=n0), np.pi * rng.uniform(size=n - n0)
    x = np.concatenate([np.stack([np.cos(t0), np.sin(t0)], 1), np.stack([1 - np.cos(t1), 0.5 - np.sin(t1)], 1)])
    y = np.concatenate([np.zeros(n0, int), np.ones(n - n0, int)])
    return x + noise * rng.normal(size=x.shape), y


def circles(n: int = 400, factor: float = 0.5, noise: float = 0.05, seed: int = 0):
    """Two concentric circles: x [n, 2], labels [n] (1 = inner)."""
    rng = np.random.default_rng(seed)
    n0 = n // 2
    t = 2 * np.pi * rng.uniform(size=n)
    radius = np.where(np.arange(n) < n0, 1.0, factor)
    x = np.stack([radius * np.cos(t), radius * np.sin(t)], 1) + noise * rng.normal(size=(n, 2))
    return x, (np.arange(n) >= n0).astype(int)


def regression_1d(n: int = 200, noise: float = 0.1, seed: int = 0):
    """A noisy curve y = sin(3x) + x/2 on [-2, 2]: x [n, 1], y [n, 1]."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2.0, 2.0, size=(n, 1))
    return x, np.sin(3 * x) + 0.5 * x + noise * rng.normal(size=(n, 1))


def regression(n: int = 500, d: int = 4, outputs: int = 2, noise: float = 0.1, seed: int = 0):
    """A smooth nonlinear multi-output target of d inputs: x [n, d], y [n, outputs]."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    w1, w2 = rng.normal(size=(d, 8)) / np.sqrt(d), rng.normal(size=(8, outputs)) / np.sqrt(8)
    return x, np.tanh(x @ w1) @ w2 + noise * rng.normal(size=(n, outputs))


def digits(images: bool = False):
    """scikit-learn's bundled 8×8 digits (1797 images, no download): x [N, 64] flattened,
    or [N, 8, 8, 1] images (NHWC) with ``images=True``, pixel values 0..16; labels [N]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.float64)
    x = x[..., None] if images else x.reshape(len(x), -1)
    return x, bunch.target.astype(np.int64)


DATASETS = {
    "spiral": spiral,
    "moons": moons,
    "circles": circles,
    "regression_1d": regression_1d,
    "regression": regression,
    "digits": digits,
}


# --- splitting and scaling ----------------------------------------------------------------


def split(x, y, val: float = 0.15, test: float = 0.15, seed: int = 0) -> Split:
    """Shuffle (seeded) and split into train / validation / test."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"val and test fractions must be in [0, 1) with val + test < 1, got {val}, {test}")
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x and y hold different numbers of examples: {n} vs {len(y)}")
    order = np.random.default_rng(seed).permutation(n)
    n_test, n_val = int(round(test * n)), int(round(val * n))
    te, va, tr = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    if len(tr) == 0:
        raise ValueError(f"no training examples left from {n}")
    return Split(x[tr], y[tr], x[va], y[va], x[te], y[te])


def standardize(s: Split) -> Split:
    """Scale inputs to zero mean, unit variance with the training split's statistics
    (per feature; per channel for images)."""
    axes = tuple(range(s.x_train.ndim - 1))
    mean = s.x_train.mean(axis=axes, keepdims=True)
    std = s.x_train.std(axis=axes, keepdims=True)
    std = np.where(std > 0, std, 1.0)
    f = lambda a: (a - mean) / std
    return dataclasses.replace(s, x_train=f(s.x_train), x_val=f(s.x_val), x_test=f(s.x_test))


# --- the user's files -----------------------------------------------------------------------


def load_file(path: str, target: str | None = None, classes: int | None = None):
    """Load ``(x, y)`` from ``.npz`` (arrays ``x`` and ``y``), ``.npy`` (a 2-D array whose
    last column is the target) or ``.csv`` (the last column, or the column named
    ``target``, is the target; a header row is recognised when its cells are not numbers).

    With ``classes`` given, the target must hold integer labels in ``[0, classes)``.
    Raises ``ValueError`` naming the file and what is wrong.
    """
    if not os.path.exists(path):
        raise ValueError(f"{path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        x, y = _load_npz(path)
    elif ext == ".npy":
        x, y = _split_columns(path, _load_npy(path), None, None)
    elif ext == ".csv":
        header, rows = _read_csv(path)
        x, y = _split_columns(path, rows, header, target)
    else:
        raise ValueError(f"{path}: unknown file type {ext!r}; expected .npz, .npy or .csv")
    if target is not None and ext != ".csv":
        raise ValueError(f"{path}: a target column name only applies to CSV files")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{path}: inputs contain NaN or Inf")
    if np.issubdtype(np.asarray(y).dtype, np.floating) and not np.all(np.isfinite(y)):
        raise ValueError(f"{path}: targets contain NaN or Inf")
    if classes is not None:
        y = class_labels(path, y, classes)
    return x, y


def _load_npz(path):
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # zipfile.BadZipFile, OSError, EOFError, ValueError (would need pickle) ...
        raise ValueError(f"{path}: not a readable .npz file of numeric arrays ({e})") from None
    if not isinstance(arrays, dict):
        raise ValueError(f"{path}: not a .npz archive")
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise ValueError(f"{path}: expected arrays 'x' and 'y', missing {missing} (found {sorted(arrays)})")
    x, y = arrays["x"], arrays["y"]
    for name, a in (("x", x), ("y", y)):
        if not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
            raise ValueError(f"{path}: array {name!r} is not numeric (dtype {a.dtype})")
        if np.issubdtype(a.dtype, np.complexfloating):
            raise ValueError(f"{path}: array {name!r} is complex (dtype {a.dtype}); expected real numbers")
    if len(x) != len(y):
        raise ValueError(f"{path}: x has {len(x)} rows but y has {len(y)}")
    return x.astype(np.float64), y


def _load_npy(path):
    try:
        a = np.load(path, allow_pickle=False)
    except Exception as e:
        raise ValueError(f"{path}: not a readable .npy file of numbers ({e})") from None
    if a.ndim != 2 or a.shape[1] < 2:
        raise ValueError(f"{path}: expected a 2-D array [rows, features + target], got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{path}: array is not numeric (dtype {a.dtype})")
    if np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError(f"{path}: array is complex (dtype {a.dtype}); expected real numbers")
    return a.astype(np.float64)


def _read_csv(path):
    with open(path, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: tolerate a BOM
        reader = csv.reader(f)
        rows = [(reader.line_num, r) for r in reader if r and any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"{path}: the file is empty")
    header = None
    if not any(_is_number(c) for c in rows[0][1]):  # a header: no cell of the first row is a number
        header, rows = [c.strip() for c in rows[0][1]], rows[1:]
    if not rows:
        raise ValueError(f"{path}: a header but no data rows")
    width = len(header) if header else len(rows[0][1])
    values = np.empty((len(rows), width))
    for i, (line, r) in enumerate(rows):
        if len(r) != width:
            raise ValueError(f"{path}: line {line} has {len(r)} columns, expected {width} (ragged rows)")
        for j, c in enumerate(r):
            if not _is_number(c):
                raise ValueError(f"{path}: line {line}, column {j + 1}: {c!r} is not a number")
            values[i, j] = float(c)
    if width < 2:
        raise ValueError(f"{path}: need at least one feature column and a target column")
    return header, values


def _is_number(cell):
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _split_columns(path, values, header, target):
    column = values.shape[1] - 1
    if target is not None:
        if header is None:
            raise ValueError(f"{path}: no header row, so there is no column named {target!r}")
        if target not in header:
            raise ValueError(f"{path}: no column named {target!r}; columns are {header}")
        column = header.index(target)
    x = np.delete(values, column, axis=1)
    return x, values[:, column : column + 1]


def class_labels(path: str, y, classes: int):
    """``y`` as integer class labels ``[n]`` (int64): a target of one column (``[n]`` or ``[n, 1]``)
    of integer values in ``[0, classes)``. ``path`` names the file in the errors; raises
    ``ValueError`` when the target is not one column, holds a non-integer (or NaN / Inf) or a label
    out of range."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{path}: class labels must be one column, got shape {y.shape}")
    if not np.all(np.isfinite(y)) or not np.all(np.equal(np.round(y), y)):
        raise ValueError(f"{path}: class labels must be integers")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise ValueError(f"{path}: label out of range: labels must lie in [0, {classes}), got [{y.min()}, {y.max()}]")
    return y
