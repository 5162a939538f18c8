"""Checkpoints: params, optimizer state, network, counters, PRNG key and training history in one
``.npz`` file.

No pickle anywhere: arrays are stored with ``np.savez`` and read with
``allow_pickle=False``; everything else is one JSON string (``meta``). Files are written
to a temporary name in the same folder, flushed to disk and renamed over the target, so a
crash mid-write leaves the previous checkpoint intact. A truncated or corrupted file (the
zip's CRC check), a file that is not a jaxnet checkpoint, or one for another network gets a
:class:`CheckpointError` (a ``ValueError``) that says which.

Everything read back is checked before it is used, so a forged or damaged file is a
:class:`CheckpointError` naming the file and the field, never another exception or a silently
wrong load: ``epoch``, ``step`` and the leaf counts are non-negative integers; ``extra`` is a
dict; the network description is a dict that builds a :class:`Network`; every params array is
floating (float16/32/64), finite, and of the shape the network gives it (so is the state, whose
variances are non-negative); the key data is uint32
of its implementation's shape; optimizer leaves have the template's shapes and kinds of dtype;
each history entry is a 1-D floating array (NaN allowed).

The training history (``history=``: metric name -> one float per epoch) is stored as float64
arrays ``history_0``, ``history_1``, ... with the names, in order, in the metadata's
``"history"`` list: a long run's history costs a few bytes per value, not a JSON text that
grows with every save. Checkpoints written before it existed load with ``history == {}``.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import os
import zipfile
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from .devices import as_array
from .files import atomic_write, numpy_format
from .layers import Layer, kind_name, layer_kind
from .network import Network, check_mode, has_state, state_shapes

FORMAT = "jaxnet-checkpoint/1"

MAX_COUNT = 2**31
"""Epoch and step counters stay below this: training counts steps in int32."""

# What reading a damaged or forged entry of the archive can raise (a header claiming a huge
# array: MemoryError; an unsupported compression method: NotImplementedError).
_UNREADABLE = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, MemoryError)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or does not match what it is loaded into."""


def network_to_dict(net: Network) -> dict:
    """A JSON-able description of ``net`` (inverse: :func:`network_from_dict`)."""
    return {
        "input_shape": list(net.input_shape),
        "layers": [layer_to_dict(layer) for layer in net.layers],
        "loss": net.loss,
        "reduction": net.reduction,
        "l2": net.l2,
        "l2_bias": net.l2_bias,
    }


def network_from_dict(d: dict) -> Network:
    """The :class:`Network` that :func:`network_to_dict` described. A description that is not
    one raises ``KeyError``, ``TypeError`` or ``ValueError`` (an unknown layer kind:
    :class:`CheckpointError`)."""
    layers = [layer_from_dict(spec) for spec in d["layers"]]
    return Network(tuple(d["input_shape"]), tuple(layers), d["loss"], d["reduction"], d["l2"], d["l2_bias"])


def layer_to_dict(layer: Layer) -> dict:
    """``{"kind": kind_name, field: value, ...}`` for one layer (inverse: :func:`layer_from_dict`);
    a field that holds layers (a composite's, e.g. :class:`jaxnet.composite.Residual`) holds
    their dicts, with their kinds."""
    names: list[str] = [f.name for f in dataclasses.fields(layer)] if dataclasses.is_dataclass(layer) else []
    return {"kind": kind_name(type(layer)), **{name: _plain(getattr(layer, name)) for name in names}}


def layer_from_dict(spec: dict) -> Layer:
    """The layer that :func:`layer_to_dict` described (nested layers included). An unknown kind is
    a :class:`CheckpointError`; a description that is not one raises ``KeyError``, ``TypeError``
    or ``ValueError``."""
    spec = dict(spec)
    kind = spec.pop("kind")
    try:
        cls = layer_kind(kind)
    except KeyError as e:
        raise CheckpointError(f"the checkpoint's network uses an {e.args[0]}") from None
    return cls(**{name: _tuples(value) for name, value in spec.items()})


def _plain(value):
    """A field's value as JSON-able data (``dataclasses.asdict``'s copy, but layers as their dicts
    with their kinds)."""
    if isinstance(value, Layer):
        return layer_to_dict(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_plain(v) for v in value)
    return value


def _tuples(value):
    """JSON's lists back to the tuples a layer's fields held (a frozen layer must be hashable),
    and nested layers' dicts (with a ``"kind"``) back to layers."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict) and "kind" in value:
        return layer_from_dict(value)
    return value


@dataclasses.dataclass
class Checkpoint:
    """What :func:`load` read back: the network, params and optimizer state, the counters, the
    run's key, your ``extra`` JSON data and the per-epoch metric history."""

    net: Network
    params: list
    opt_state: object  # None unless an opt_state template was given to load()
    epoch: int
    step: int
    key: jax.Array | None
    extra: dict
    history: dict = dataclasses.field(default_factory=dict)  # metric name -> list of floats per epoch
    state: list | None = None  # the network's state (BatchNorm's running statistics); None without one


def save(
    path,
    *,
    net: Network,
    params,
    opt_state=None,
    epoch: int = 0,
    step: int = 0,
    key=None,
    extra=None,
    history=None,
    state=None,
) -> None:
    """Write a checkpoint atomically (temporary file + fsync + rename).

    ``state``: the network's state (:func:`jaxnet.init_state`'s structure), required when the
    network has one (BatchNorm's running statistics: without them the trained network cannot be
    evaluated), stored as ``state_<i>`` arrays.

    ``epoch``, ``step``: non-negative integers. ``extra``: a JSON-able dict, stored in the
    metadata. ``history``: a dict of metric name (a string) -> 1-D sequence of real numbers (NaN
    and ±inf allowed), stored as float64 arrays. Anything else is a ``ValueError`` before
    anything is written."""
    epoch, step = _counter(epoch, "epoch"), _counter(step, "step")
    s_leaves = _state_leaves(net, params, state)
    hist_names, arrays = _history_arrays(history)
    p_leaves = jax.tree.leaves(params)
    o_leaves = jax.tree.leaves(opt_state) if opt_state is not None else []
    for i, leaf in enumerate(p_leaves):
        arrays[f"params_{i}"] = np.asarray(leaf)
    for i, leaf in enumerate(o_leaves):
        arrays[f"opt_{i}"] = np.asarray(leaf)
    for i, leaf in enumerate(s_leaves or []):
        arrays[f"state_{i}"] = np.asarray(leaf)
    meta = {
        "format": FORMAT,
        "network": network_to_dict(net),
        "epoch": epoch,
        "step": step,
        "params_leaves": len(p_leaves),
        "opt_leaves": len(o_leaves) if opt_state is not None else None,
        "opt_structure": str(jax.tree.structure(opt_state)) if opt_state is not None else None,
        "key_impl": None,
        "extra": extra or {},
        "history": hist_names,
        "state_leaves": None if s_leaves is None else len(s_leaves),
    }
    if key is not None:
        arrays["key"] = np.asarray(jax.random.key_data(key))
        meta["key_impl"] = str(jax.random.key_impl(key))
    arrays["meta"] = np.array(json.dumps(meta))
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def _state_leaves(net: Network, params, state) -> list | None:
    """The leaves of ``state`` to store (None for a network without state); a ``ValueError`` when
    the network has state and ``state`` is missing or not of its structure, shapes and the
    params' dtype."""
    if not has_state(net):
        if state is not None and jax.tree.leaves(state):
            raise ValueError(f"state: the network {net} has no state, got {jax.tree.structure(state)}")
        return None
    if state is None:
        raise ValueError(
            f"state: the network {net} has state (BatchNorm's running statistics), which the checkpoint must keep; "
            "pass state= (FitResult.state, or the state fit's on_epoch gives)"
        )
    check_mode(net, params, state, None, False)  # structure, shapes, the params' dtype: a ValueError naming the leaf
    return jax.tree.leaves(state)


def _counter(value, name) -> int:
    """``value`` as a non-negative int (an integer of any kind, not a bool or a float), else ValueError."""
    try:
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or isinstance(value, (bool, np.bool_)) or not 0 <= number < MAX_COUNT:
        raise ValueError(f"{name} must be a non-negative integer below 2**31, got {value!r}")
    return number


def _history_arrays(history) -> tuple[list, dict]:
    """``(names, {"history_<i>": float64 array})`` for ``save``'s ``history`` (None: none);
    ``ValueError`` for anything but a dict of string -> 1-D sequence of real numbers."""
    if history is None:
        return [], {}
    if not isinstance(history, dict):
        raise ValueError(
            f"history must be a dict of metric name -> 1-D sequence of floats, got {type(history).__name__}"
        )
    names, arrays = [], {}
    for i, (name, values) in enumerate(history.items()):
        if not isinstance(name, str):
            raise ValueError(f"history: metric names must be strings, got {name!r}")
        try:
            a = np.asarray(values)
        except (TypeError, ValueError) as e:
            raise ValueError(f"history[{name!r}] must be a 1-D sequence of floats ({e})") from None
        if a.ndim != 1 or a.dtype.kind not in "fiu":
            raise ValueError(f"history[{name!r}] must be a 1-D sequence of floats, got shape {a.shape} dtype {a.dtype}")
        names.append(name)
        arrays[f"history_{i}"] = a.astype(np.float64)
    return names, arrays


def load(path, net: Network | None = None, opt_state_template=None) -> Checkpoint:
    """Read a checkpoint. With ``net``, refuse a checkpoint of another network; with
    ``opt_state_template`` (``optimizer.init(params)``), rebuild the optimizer state in its
    structure, refusing one of another optimizer. Every field is checked (see the module's
    docstring); anything wrong is a :class:`CheckpointError` naming the file and the field."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: not a checkpoint file (a folder, a device or a pipe)")
    try:
        arrays = _read_arrays(path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
    meta = _read_meta(path, arrays["meta"])
    try:
        return _from_arrays(path, meta, arrays, net, opt_state_template)
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path}: inconsistent checkpoint ({type(e).__name__}: {e})") from None


def _read_arrays(path) -> dict:
    """Every array in the ``.npz`` at ``path``, read without pickle; a file that is not an
    ``.npz`` with a ``meta`` entry, or an entry that cannot be read, is a CheckpointError."""
    if numpy_format(path) != "npz":
        raise CheckpointError(f"{path}: not a jaxnet checkpoint (not an .npz archive)")
    try:
        f = np.load(path, allow_pickle=False)
    except _UNREADABLE as e:
        raise CheckpointError(f"{path}: truncated or corrupted checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise CheckpointError(f"{path}: not a jaxnet checkpoint (a single .npy array, not an .npz archive)")
    with f:
        if "meta" not in f.files:
            raise CheckpointError(f"{path}: not a jaxnet checkpoint (no metadata)")
        return {name: _read_entry(path, f, name) for name in f.files}


def _read_entry(path, f, name) -> np.ndarray:
    """``f[name]``; an object array (it would need unpickling), a damaged entry or one that is not
    an ``.npy`` array (``NpzFile`` hands those back as bytes): CheckpointError."""
    try:
        a = f[name]
    except _UNREADABLE as e:
        if isinstance(e, ValueError) and "allow_pickle" in str(e):
            raise CheckpointError(
                f"{path}: {name!r} is an object array, which would need unpickling; checkpoints are never unpickled"
            ) from None
        raise CheckpointError(
            f"{path}: truncated or corrupted checkpoint ({name!r}: {type(e).__name__}: {e})"
        ) from None
    if not isinstance(a, np.ndarray):
        raise CheckpointError(f"{path}: truncated or corrupted checkpoint ({name!r} is not an .npy array)")
    return a


def _read_meta(path, raw: np.ndarray) -> dict:
    """The metadata dict, from the 0-d string array ``meta``, of this module's format."""
    if raw.ndim != 0 or raw.dtype.kind != "U":
        raise CheckpointError(
            f"{path}: corrupted checkpoint metadata ('meta' is a {raw.dtype} array of shape "
            f"{raw.shape}, not a JSON string)"
        )
    try:
        meta = json.loads(str(raw))
    except (json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path}: corrupted checkpoint metadata ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{path}: unknown checkpoint format {got!r}, expected {FORMAT!r}")
    return meta


def _bad(path, field, why) -> CheckpointError:
    return CheckpointError(f"{path}: invalid checkpoint field {field!r}: {why}")


def _field(path, meta, name):
    """``meta[name]``; a missing one is a CheckpointError."""
    if name not in meta:
        raise CheckpointError(f"{path}: inconsistent checkpoint: the metadata has no {name!r}")
    return meta[name]


def _array(path, arrays, name) -> np.ndarray:
    """``arrays[name]``; a missing one is a CheckpointError."""
    if name not in arrays:
        raise CheckpointError(f"{path}: inconsistent checkpoint: no array {name!r}")
    return arrays[name]


def _count(path, meta, name) -> int:
    """``meta[name]``, which must be a non-negative integer (not a bool, a float or a string)."""
    value = _field(path, meta, name)
    if type(value) is not int or not 0 <= value < MAX_COUNT:
        raise _bad(path, name, f"expected a non-negative integer below 2**31, got {value!r}")
    return value


def _from_arrays(path, meta, arrays, net, opt_state_template):
    saved_net = _network(path, meta)
    if net is not None and net != saved_net:
        raise CheckpointError(f"{path}: the checkpoint is for the network {saved_net}, not {net}")
    epoch, step = _count(path, meta, "epoch"), _count(path, meta, "step")
    extra = _field(path, meta, "extra")
    if not isinstance(extra, dict):
        raise _bad(path, "extra", f"expected a dict, got {type(extra).__name__}")
    params = _rebuild_params(path, saved_net, meta, arrays)
    opt_state = None if opt_state_template is None else _rebuild_opt_state(path, meta, arrays, opt_state_template)
    history, state = _history(path, meta, arrays), _rebuild_state(path, saved_net, meta, arrays)
    return Checkpoint(saved_net, params, opt_state, epoch, step, _key(path, meta, arrays), extra, history, state)


def _network(path, meta) -> Network:
    """The stored network description, built; anything that does not build is a CheckpointError."""
    d = _field(path, meta, "network")
    if not isinstance(d, dict):
        raise _bad(path, "network", f"expected a dict, got {type(d).__name__}")
    try:
        return network_from_dict(d)
    except CheckpointError as e:  # an unknown layer kind
        raise _bad(path, "network", str(e)) from None
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as e:
        raise _bad(path, "network", f"not a network description ({type(e).__name__}: {e})") from None


def _rebuild_params(path, net, meta, arrays):
    """The params pytree ``net`` expects, from ``params_<i>``: each floating, finite and of its shape."""
    template = [layer.param_shapes(shape) for layer, shape in zip(net.layers, net.layer_input_shapes)]
    entries, treedef = jax.tree_util.tree_flatten_with_path(template, is_leaf=lambda s: isinstance(s, tuple))
    n = _count(path, meta, "params_leaves")
    if n != len(entries):
        raise _bad(
            path,
            "params_leaves",
            f"{n} arrays, but the stored network has {len(entries)}: "
            "the stored parameters do not match the stored network",
        )
    leaves = []
    for i, (where, shape) in enumerate(entries):
        name = f"params_{i}"
        a = _array(path, arrays, name)
        what = f"params{jax.tree_util.keystr(where)}"
        if a.dtype.kind != "f":
            raise _bad(path, name, f"{what} has dtype {a.dtype}; parameters must be floating (float16/32/64)")
        if a.shape != tuple(shape):
            raise _bad(
                path,
                name,
                f"{what} has shape {a.shape}, the stored network's is {tuple(shape)}: "
                "the stored parameters do not match the stored network",
            )
        if not np.isfinite(a).all():
            raise _bad(path, name, f"{what} holds NaN or infinite values")
        leaves.append(as_array(a))
    return jax.tree.unflatten(treedef, leaves)


def _rebuild_state(path, net, meta, arrays):
    """The network's state from ``state_<i>`` (None for a network without state): each leaf
    floating, finite and of :func:`jaxnet.network.state_shapes`' shape."""
    if not has_state(net):
        return None
    entries, treedef = jax.tree_util.tree_flatten_with_path(state_shapes(net))
    n = meta.get("state_leaves")
    if n is None:
        raise _bad(path, "state_leaves", "the network has state (BatchNorm's running statistics), but none is stored")
    if _count(path, meta, "state_leaves") != len(entries):
        raise _bad(path, "state_leaves", f"{n} arrays, but the stored network's state has {len(entries)}")
    leaves = []
    for i, (where, want) in enumerate(entries):
        name, what = f"state_{i}", f"state{jax.tree_util.keystr(where)}"
        a = _array(path, arrays, name)
        if a.dtype.kind != "f" or a.shape != want.shape or not np.isfinite(a).all():
            raise _bad(path, name, f"{what} is {a.dtype}{list(a.shape)}; expected finite floats of shape {want.shape}")
        if str(where[-1].key).endswith("var") and (a < 0).any():  # a variance: BatchNorm's running var
            raise _bad(path, name, f"{what} holds negative values; a variance is >= 0")
        leaves.append(as_array(a))
    return jax.tree.unflatten(treedef, leaves)


def _rebuild_opt_state(path, meta, arrays, template):
    """The optimizer state in ``template``'s structure; one of another optimizer (structure,
    leaf count, shapes or kinds of dtype) is a CheckpointError."""
    if _field(path, meta, "opt_leaves") is None:
        raise CheckpointError(f"{path}: the checkpoint holds no optimizer state")
    n, structure = _count(path, meta, "opt_leaves"), _field(path, meta, "opt_structure")
    leaves, treedef = jax.tree.flatten(template)
    if str(treedef) != structure or n != len(leaves):
        raise CheckpointError(f"{path}: the optimizer state was saved by another optimizer ({structure})")
    saved = [_array(path, arrays, f"opt_{i}") for i in range(n)]
    for i, (a, b) in enumerate(zip(saved, leaves)):
        if a.shape != np.shape(b) or a.dtype.kind != jnp.asarray(b).dtype.kind:
            raise CheckpointError(
                f"{path}: the optimizer state was saved by another optimizer ({structure}): "
                f"'opt_{i}' is {a.dtype}{list(a.shape)}, this optimizer's {jnp.asarray(b).dtype}"
                f"{list(np.shape(b))}"
            )
    return jax.tree.unflatten(treedef, [as_array(a) for a in saved])


def _key(path, meta, arrays):
    """The stored PRNG key (None when none was saved): uint32 data of its implementation's shape."""
    impl = _field(path, meta, "key_impl")
    if impl is None:
        return None
    try:
        if not isinstance(impl, str):
            raise TypeError(f"expected a string, got {impl!r}")
        expected = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=impl)))
    except (TypeError, ValueError) as e:
        raise _bad(path, "key_impl", f"not a PRNG implementation ({e})") from None
    data = _array(path, arrays, "key")
    if data.dtype != expected.dtype or data.shape != expected.shape:
        raise _bad(
            path, "key", f"{data.dtype}{list(data.shape)} where a {impl} key is {expected.dtype}{list(expected.shape)}"
        )
    return jax.random.wrap_key_data(as_array(data), impl=impl)


def _history(path, meta, arrays) -> dict:
    """Metric name -> list of floats, from the names in ``meta["history"]`` and the 1-D floating
    arrays ``history_<i>``; ``{}`` for a checkpoint written before histories were stored."""
    names = meta.get("history", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise _bad(path, "history", f"expected a list of distinct metric names, got {names!r}")
    history = {}
    for i, name in enumerate(names):
        a = _array(path, arrays, f"history_{i}")
        if a.ndim != 1 or a.dtype.kind != "f":
            raise _bad(path, f"history_{i}", f"history[{name!r}] is {a.dtype}{list(a.shape)}, not a 1-D floating array")
        history[name] = a.astype(np.float64).tolist()
    return history
