"""Data sets for the notes' kinds of problems, the user's own files, splits and scaling.

Every generator is deterministic given ``seed`` and returns NumPy arrays
``(x [N, D], y)`` (``x`` [N, T, D] for sequences, [N, H, W, C] for images): integer labels
``[N]`` for classification, ``[N, K]`` floats for regression. Arrays go to the device once, when training starts.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import os
import warnings
from collections.abc import Callable

import numpy as np

from .files import numpy_format


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


def spiral(
    n_per_class: int = 100, classes: int = 3, noise: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The K-armed spiral of note 000's kind (CS231n style): x [K n, 2], labels [K n]."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k in range(classes):
        r = np.linspace(0.0, 1.0, n_per_class)
        t = np.linspace(k * 4.0, (k + 1) * 4.0, n_per_class) + noise * rng.normal(size=n_per_class)
        xs.append(np.stack([r * np.sin(t), r * np.cos(t)], axis=1))
        ys.append(np.full(n_per_class, k))
    return np.concatenate(xs), np.concatenate(ys)


def moons(n: int = 400, noise: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles: x [n, 2], labels [n] in {0, 1}."""
    rng = np.random.default_rng(seed)
    n0 = n // 2
    t0, t1 = np.pi * rng.uniform(size=n0), np.pi * rng.uniform(size=n - n0)
    x = np.concatenate([np.stack([np.cos(t0), np.sin(t0)], 1), np.stack([1 - np.cos(t1), 0.5 - np.sin(t1)], 1)])
    y = np.concatenate([np.zeros(n0, int), np.ones(n - n0, int)])
    return x + noise * rng.normal(size=x.shape), y


def circles(n: int = 400, factor: float = 0.5, noise: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two concentric circles: x [n, 2], labels [n] (1 = inner)."""
    rng = np.random.default_rng(seed)
    n0 = n // 2
    t = 2 * np.pi * rng.uniform(size=n)
    radius = np.where(np.arange(n) < n0, 1.0, factor)
    x = np.stack([radius * np.cos(t), radius * np.sin(t)], 1) + noise * rng.normal(size=(n, 2))
    return x, (np.arange(n) >= n0).astype(int)


def regression_1d(n: int = 200, noise: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy curve y = sin(3x) + x/2 on [-2, 2]: x [n, 1], y [n, 1]."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2.0, 2.0, size=(n, 1))
    return x, np.sin(3 * x) + 0.5 * x + noise * rng.normal(size=(n, 1))


def regression(
    n: int = 500, d: int = 4, outputs: int = 2, noise: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A smooth nonlinear multi-output target of d inputs: x [n, d], y [n, outputs]."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    w1, w2 = rng.normal(size=(d, 8)) / np.sqrt(d), rng.normal(size=(8, outputs)) / np.sqrt(8)
    return x, np.tanh(x @ w1) @ w2 + noise * rng.normal(size=(n, outputs))


def digits(images: bool = False, rows: bool = False, positions: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8×8 digits (1797 images, no download), pixel values 0..16; labels [N].

    ``x`` is [N, 64] flattened by default; [N, 8, 8, 1] images (NHWC) with ``images=True``; or
    [N, 8, 8] sequences of the 8 rows (T = 8 steps of 8 features, top row first) with
    ``rows=True``, and with ``positions=True`` too each row followed by its one-hot row index:
    [N, 8, 16] (a network of position-blind layers, self-attention and a mean over the rows,
    learns from it where each row sits). ``images`` with ``rows``, or ``positions`` without
    ``rows``, is a ``ValueError``."""
    from sklearn.datasets import load_digits

    if images and rows:
        raise ValueError(
            "digits: images=True ([N, 8, 8, 1] images) and rows=True ([N, 8, 8] sequences of rows) "
            "ask for two layouts; expected at most one of them"
        )
    if positions and not rows:
        raise ValueError("digits: positions=True appends a one-hot row index to each row; expected rows=True with it")
    bunch = load_digits()
    x = bunch.images.astype(np.float64)  # [N, 8 rows, 8 columns]
    if images:
        x = x[..., None]
    elif positions:
        x = np.concatenate([x, np.broadcast_to(np.eye(8), x.shape)], axis=-1)  # [N, 8, 8 + 8]
    elif not rows:
        x = x.reshape(len(x), -1)
    return x, bunch.target.astype(np.int64)


def adding(n: int = 10_000, T: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The adding problem (Hochreiter & Schmidhuber 1997; as in Le et al. 2015): a regression that
    needs memory over the whole sequence.

    ``x`` [n, T, 2]: channel 0 holds values drawn uniformly from [0, 1); channel 1 is a marker,
    1 at exactly two positions (one drawn from the first half ``[0, T // 2)``, one from the
    second ``[T // 2, T)``) and 0 elsewhere. ``y`` [n, 1]: the sum of the two marked values, in
    [0, 2) (mean 1, variance 1/6, so always predicting the mean scores an MSE of about 1/6).
    Deterministic given ``seed``; ``T`` must be an integer ≥ 2, ``n`` one ≥ 1."""
    for name, value, least in (("n", n, 1), ("T", T, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"adding: {name} must be an integer >= {least}, got {value!r}")
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.0, 1.0, size=(n, T))
    first = rng.integers(0, T // 2, size=n)
    second = rng.integers(T // 2, T, size=n)
    marker = np.zeros((n, T))
    rows = np.arange(n)
    marker[rows, first] = marker[rows, second] = 1.0
    y = values[rows, first] + values[rows, second]
    return np.stack([values, marker], axis=-1), y[:, None]


DATASETS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "spiral": spiral,
    "moons": moons,
    "circles": circles,
    "regression_1d": regression_1d,
    "regression": regression,
    "digits": digits,
    "adding": adding,
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
    n_test, n_val = round(test * n), round(val * n)
    te, va, tr = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    if len(tr) == 0:
        raise ValueError(f"no training examples left from {n}")
    return Split(x[tr], y[tr], x[va], y[va], x[te], y[te])


def standardize(s: Split, path: str | None = None) -> Split:
    """Scale inputs to zero mean, unit variance with the training split's statistics
    (per feature, i.e. per entry of the last axis over every other axis: per channel over the
    pixels for images ``[N, H, W, C]``, per feature over the examples and time steps for
    sequences ``[N, T, D]``). A constant feature is centred only.

    Features too large for the mean or the variance to be computed directly (values near the
    dtype's largest, whose squares overflow) are first divided by their largest magnitude in the
    training split, which gives the same result. Raises ``ValueError`` (starting with ``path``
    when given) naming the split and the column when a standardised value is not finite."""
    axes = tuple(range(s.x_train.ndim - 1))
    scale, mean, std = _moments(s.x_train, axes)
    out = {}
    for name in ("x_train", "x_val", "x_test"):
        a = getattr(s, name)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out[name] = (a / scale - mean) / std
        _check_standardized(path, name, a, out[name])
    return dataclasses.replace(s, **out)


def _moments(x, axes):
    """``(scale, mean, std)`` of ``x / scale`` over ``axes``: ``scale`` is 1 unless the plain
    mean or std overflows, then each feature's largest finite magnitude. A zero std becomes 1."""
    with np.errstate(over="ignore", invalid="ignore"):
        mean, std = x.mean(axis=axes, keepdims=True), x.std(axis=axes, keepdims=True)
    scale: float | np.ndarray = 1.0
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
        with np.errstate(invalid="ignore"):
            scale = np.max(np.abs(x), axis=axes, keepdims=True)
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        with np.errstate(over="ignore", invalid="ignore"):
            mean, std = (x / scale).mean(axis=axes, keepdims=True), (x / scale).std(axis=axes, keepdims=True)
    return scale, mean, np.where(std > 0, std, 1.0)


def _check_standardized(path, name, raw, z):
    """Refuse a standardised split ``z`` (from ``raw``) that holds a non-finite value."""
    bad = ~np.isfinite(z)
    if not np.any(bad):
        return
    if np.any(bad & ~np.isfinite(raw)):  # name a NaN / Inf the split held, not one it spread to
        bad &= ~np.isfinite(raw)
    where = np.unravel_index(np.argmax(bad), z.shape)
    index = ", ".join(str(int(i)) for i in where)
    raise ValueError(
        f"{path or 'standardize'}: column {int(where[-1])} of the {name[2:]} split does not standardise to a "
        f"finite number ({name}[{index}] = {raw[where]:g} becomes {z[where]}); expected finite inputs on a scale "
        f"the training split's mean and std bring within float64's range"
    )


# --- the user's files -----------------------------------------------------------------------

MAX_CLASSES = 10_000
"""The most classes :func:`class_labels` infers from the labels (the largest label + 1). A label
beyond it is almost surely not a class (an id, a price, a typo such as 1e9) and would build a
network with that many outputs; pass ``classes`` explicitly to go beyond."""


def load_file(
    path: str, target: str | None = None, classes: int | None = None, *, header: bool | None = None, dtype=None
):
    """Load ``(x, y)`` from ``.npz`` (arrays ``x`` [examples, features] and ``y`` [examples] or
    [examples, outputs]), ``.npy`` (a 2-D array whose last column is the target) or ``.csv`` (UTF-8;
    the last column, or the column named ``target``, is the target).

    ``header`` (CSV only): ``None`` reads the first row as a header when none of its cells is a
    number, and warns when it is exactly ``0,1,...,D-1`` (pandas' integer column names) but reads it
    as data; ``True``: the first row is a header even if numeric (so ``target`` may be ``"2"``);
    ``False``: there is no header, and a first row that is not all numbers is an error.

    With ``classes`` given, the target must hold integer labels in ``[0, classes)`` (see
    :func:`class_labels`). Every value must be finite in ``dtype`` (see :func:`check_finite_in`;
    ``None``: :func:`working_dtype`). Returns ``x`` as float64 [examples, features].
    Raises ``ValueError`` starting with the file's path and saying what is wrong.
    """
    _check_readable(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npz", ".npy", ".csv"):
        raise ValueError(f"{path}: unknown file type {ext!r}; expected .npz, .npy or .csv")
    if ext != ".csv" and (target is not None or header is not None):
        what = "a target column name" if target is not None else "a header option"
        raise ValueError(f"{path}: {what} only applies to CSV files")
    if ext == ".npz":
        x, y = _load_npz(path)
    elif ext == ".npy":
        x, y = _split_columns(path, _load_npy(path), None, None)
    else:
        names, rows = _read_csv(path, header)
        x, y = _split_columns(path, rows, names, target)
    check_finite_in(path, x, y, dtype)
    if classes is not None:
        y = class_labels(path, y, classes)
    return x, y


def _check_readable(path):
    """Refuse a path that does not exist, is a folder or cannot be opened for reading."""
    if not os.path.exists(path):
        raise ValueError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a folder, expected a .npz, .npy or .csv file")
    if not os.path.isfile(path):  # a device, a pipe, a socket: endless or blocking reads
        raise ValueError(f"{path}: is not a regular file, expected a .npz, .npy or .csv file")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror or e})") from None


def working_dtype() -> np.dtype:
    """JAX's default floating dtype: float32, or float64 when ``jax_enable_x64`` is on."""
    import jax

    return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))


def check_finite_in(path: str, x, y, dtype=None) -> None:
    """Refuse inputs ``x`` or targets ``y`` holding a value that is NaN or infinite, or that
    overflows to infinity when cast to ``dtype`` (``None``: :func:`working_dtype`; 1e300 is finite
    in float64 but not in float32). The ``ValueError`` names ``path``, the array, the first such
    entry and the dtype's largest finite value."""
    dtype = working_dtype() if dtype is None else np.dtype(dtype)
    for what, letter, a in (("inputs", "x", x), ("targets", "y", y)):
        a = np.asarray(a)
        with np.errstate(over="ignore", invalid="ignore"):
            finite = np.isfinite(a.astype(dtype))
        if np.all(finite):
            continue
        where = np.unravel_index(np.argmin(finite), a.shape)
        entry = f"{letter}[{', '.join(str(int(i)) for i in where)}] = {a[where]:g}"
        if not np.isfinite(a[where]):
            raise ValueError(f"{path}: {what} contain NaN or Inf, first {entry}; expected finite numbers")
        top = np.finfo(dtype).max
        raise ValueError(
            f"{path}: {what} hold {entry}, which overflows {dtype.name} (largest finite value "
            f"{top:.4g}); expected values within ±{top:.4g}, so rescale the data"
        )


def _load_npz(path):
    if numpy_format(path) != "npz":
        raise ValueError(
            f"{path}: not a .npz file (it does not start as a zip archive does); expected NumPy's "
            f"np.savez output with arrays 'x' and 'y'"
        )
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
    _check_npz_shapes(path, x, y)
    return x.astype(np.float64), y


def _check_npz_shapes(path, x, y):
    """``x`` must be [examples, features] with both > 0; ``y`` [examples] or [examples, outputs]."""
    want = "expected a 2-D array [examples, features]"
    if x.ndim == 0:
        raise ValueError(f"{path}: array 'x' is a single number (shape ()), {want}")
    if x.ndim == 1:
        raise ValueError(
            f"{path}: array 'x' has shape {x.shape}, {want} (for one feature per example, save x.reshape(-1, 1))"
        )
    if x.ndim > 2:
        flat = (x.shape[0], int(np.prod(x.shape[1:])))
        raise ValueError(
            f"{path}: array 'x' has shape {x.shape}, {want}: --data gives flat feature rows, so save x.reshape{flat}"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        none = "no examples" if x.shape[0] == 0 else "no features"
        raise ValueError(f"{path}: array 'x' has shape {x.shape} ({none}), {want} with at least one of each")
    want_y = "expected [examples] labels or [examples, outputs] targets"
    if y.ndim == 0 or y.ndim > 2:
        raise ValueError(f"{path}: array 'y' has shape {y.shape}, {want_y}")
    if y.size == 0:
        raise ValueError(f"{path}: array 'y' has shape {y.shape} and holds no targets, {want_y}")
    if len(x) != len(y):
        raise ValueError(f"{path}: x has {len(x)} rows but y has {len(y)}")


def _load_npy(path):
    if numpy_format(path) != "npy":
        raise ValueError(f"{path}: not a .npy file (no NumPy header); expected NumPy's np.save output, a 2-D array")
    try:
        a = np.load(path, allow_pickle=False)
    except Exception as e:
        raise ValueError(f"{path}: not a readable .npy file of numbers ({e})") from None
    if a.ndim != 2 or a.shape[1] < 2:
        raise ValueError(f"{path}: expected a 2-D array [rows, features + target], got shape {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(
            f"{path}: the array has shape {a.shape} (no rows), expected [rows, features + target] with at least one row"
        )
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{path}: array is not numeric (dtype {a.dtype})")
    if np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError(f"{path}: array is complex (dtype {a.dtype}); expected real numbers")
    return a.astype(np.float64)


def _read_csv(path, header=None):
    """``(names or None, values [rows, columns])`` of a CSV file (see :func:`load_file` for ``header``)."""
    rows = _csv_rows(path)
    if not rows:
        raise ValueError(f"{path}: the file is empty")
    line, first = rows[0]
    names = [c.strip() for c in first]
    if header is None:
        header = not any(_is_number(c) for c in first)  # a header: no cell of the first row is a number
        if not header and _column_numbers(names):
            shown = ",".join(names[:3]) + (",..." if len(names) > 3 else "")
            warnings.warn(
                f"{path}: the first row {shown} looks like a header of column numbers; it is read as data "
                f"— pass --header to treat it as a header or --no-header to silence this",
                UserWarning,
                stacklevel=3,
            )
    elif not header:
        bad = [(j, c) for j, c in enumerate(first) if not _is_number(c)]
        if bad:
            raise ValueError(
                f"{path}: line {line}, column {bad[0][0] + 1}: {bad[0][1]!r} is not a number, and the "
                f"first row is data since no header was asked for (--no-header); expected numbers"
            )
    if header:
        rows = rows[1:]
        if not rows:
            raise ValueError(f"{path}: a header but no data rows")
    width = len(names) if header else len(rows[0][1])
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
    return (names if header else None), values


def _csv_rows(path):
    """``[(line number, cells)]`` of the non-blank rows of a UTF-8 CSV file (a byte-order mark is
    dropped); ``ValueError`` naming the line and byte offset of the first byte that is not UTF-8."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ValueError(
            f"{path}: the file is UTF-16 text (it starts with a UTF-16 byte-order mark), "
            f"expected UTF-8: save it as a UTF-8 CSV"
        )
    skip = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0  # Excel's byte-order mark
    try:
        text = raw[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        at = skip + e.start
        line = raw.count(b"\n", 0, at) + 1
        raise ValueError(
            f"{path}: byte 0x{raw[at]:02x} at line {line} (byte offset {at}) is not UTF-8 "
            f"({e.reason}), expected a UTF-8 text file: save it as a UTF-8 CSV"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        return [(reader.line_num, r) for r in reader if r and any(c.strip() for c in r)]
    except csv.Error as e:
        raise ValueError(f"{path}: line {reader.line_num} is not valid CSV ({e})") from None


def _column_numbers(names):
    """Whether ``names`` are exactly ``0, 1, ..., D-1`` (D >= 2), as pandas writes integer column names."""
    return len(names) >= 2 and names == [str(j) for j in range(len(names))]


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
            raise ValueError(
                f"{path}: no header row, so there is no column named {target!r} "
                f"(a first row of numbers is a header only with --header)"
            )
        if target not in header:
            raise ValueError(f"{path}: no column named {target!r}; columns are {header}")
        column = header.index(target)
    x = np.delete(values, column, axis=1)
    return x, values[:, column : column + 1]


def class_labels(path: str, y, classes: int | None = None):
    """``y`` as integer class labels ``[n]`` (int64): a target of one column (``[n]`` or ``[n, 1]``)
    of integer values in ``[0, classes)``. ``path`` names the file in the errors; raises
    ``ValueError`` when the target is not one column, holds a non-integer (or NaN / Inf) or a label
    out of range.

    ``classes=None`` infers the count as the largest label + 1: a negative label, no labels, or
    more than :data:`MAX_CLASSES` classes is an error, and labels that leave some of ``0..K-1``
    unused (so the network gets outputs no example has) draw a ``UserWarning`` naming them."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{path}: class labels must be one column, got shape {y.shape}")
    if y.dtype == bool:
        y = y.astype(np.int64)
    whole = np.isfinite(y) & np.equal(np.round(y), y)
    if not np.all(whole):
        i = int(np.argmin(whole))
        raise ValueError(f"{path}: class labels must be integers, got {y[i]:g} for example {i} (counting from 0)")
    if classes is None:
        classes = _inferred_classes(path, y)
    elif y.size and (y.min() < 0 or y.max() >= classes):
        raise ValueError(
            f"{path}: label out of range: labels must lie in [0, {classes}), got [{_label(y.min())}, {_label(y.max())}]"
        )
    return y.astype(np.int64)


def _inferred_classes(path, y) -> int:
    """The largest label + 1, checked (see :func:`class_labels`); warns of unused labels."""
    if y.size == 0:
        raise ValueError(f"{path}: no class labels to count the classes from, expected at least one example")
    if y.min() < 0:
        raise ValueError(f"{path}: label out of range: class labels must be 0 or more, got {_label(y.min())}")
    if y.max() >= MAX_CLASSES:
        raise ValueError(
            f"{path}: the largest class label is {_label(y.max())}, which would make "
            f"{_label(y.max() + 1)} classes (network outputs); expected at most MAX_CLASSES = "
            f"{MAX_CLASSES} classes, labels 0..{MAX_CLASSES - 1}"
        )
    classes = int(y.max()) + 1
    unused = np.setdiff1d(np.arange(classes), y.astype(np.int64))
    if unused.size:
        shown = ", ".join(str(int(k)) for k in unused[:5]) + (", ..." if unused.size > 5 else "")
        warnings.warn(
            f"{path}: the labels make {classes} classes (the largest is {classes - 1}), but {unused.size} "
            f"of them never occur ({shown}), so the network gets outputs no example has; relabel the "
            f"classes 0..K-1 to drop them",
            UserWarning,
            stacklevel=3,
        )
    return classes


def _label(v) -> str:
    """A label for a message: an integer, or ``%g`` when it is too large to print whole."""
    return str(int(v)) if abs(v) < 1e15 else f"{float(v):g}"
