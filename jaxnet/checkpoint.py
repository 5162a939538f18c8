"""Checkpoints: params, optimizer state, network, counters and PRNG key in one ``.npz`` file.

No pickle anywhere: arrays are stored with ``np.savez`` and read with
``allow_pickle=False``; everything else is one JSON string (``meta``). Files are written
to a temporary name in the same folder, flushed to disk and renamed over the target, so a
crash mid-write leaves the previous checkpoint intact. A truncated or corrupted file (the
zip's CRC check), a file that is not a jaxnet checkpoint, or one for another network gets a
:class:`CheckpointError` (a ``ValueError``) that says which.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from .files import atomic_write
from .layers import kind_name, layer_kind
from .network import Network

FORMAT = "jaxnet-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or does not match what it is loaded into."""


def network_to_dict(net: Network) -> dict:
    """A JSON-able description of ``net`` (inverse: :func:`network_from_dict`)."""
    return {
        "input_shape": list(net.input_shape),
        "layers": [{"kind": kind_name(type(layer)), **dataclasses.asdict(layer)} for layer in net.layers],
        "loss": net.loss,
        "reduction": net.reduction,
        "l2": net.l2,
        "l2_bias": net.l2_bias,
    }


def network_from_dict(d: dict) -> Network:
    layers = []
    for spec in d["layers"]:
        spec = dict(spec)
        kind = spec.pop("kind")
        try:
            cls = layer_kind(kind)
        except KeyError as e:
            raise CheckpointError(f"the checkpoint's network uses an {e.args[0]}") from None
        layers.append(cls(**{name: _tuples(value) for name, value in spec.items()}))
    return Network(tuple(d["input_shape"]), tuple(layers), d["loss"], d["reduction"], d["l2"], d["l2_bias"])


def _tuples(value):
    """JSON's lists back to the tuples a layer's fields held (a frozen layer must be hashable)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


@dataclasses.dataclass
class Checkpoint:
    net: Network
    params: list
    opt_state: object  # None unless an opt_state template was given to load()
    epoch: int
    step: int
    key: jax.Array | None
    extra: dict


def save(path, *, net: Network, params, opt_state=None, epoch: int = 0, step: int = 0, key=None, extra=None) -> None:
    """Write a checkpoint atomically (temporary file + fsync + rename)."""
    arrays = {}
    p_leaves = jax.tree.leaves(params)
    o_leaves = jax.tree.leaves(opt_state) if opt_state is not None else []
    for i, leaf in enumerate(p_leaves):
        arrays[f"params_{i}"] = np.asarray(leaf)
    for i, leaf in enumerate(o_leaves):
        arrays[f"opt_{i}"] = np.asarray(leaf)
    meta = {
        "format": FORMAT,
        "network": network_to_dict(net),
        "epoch": int(epoch),
        "step": int(step),
        "params_leaves": len(p_leaves),
        "opt_leaves": len(o_leaves) if opt_state is not None else None,
        "opt_structure": str(jax.tree.structure(opt_state)) if opt_state is not None else None,
        "key_impl": None,
        "extra": extra or {},
    }
    if key is not None:
        arrays["key"] = np.asarray(jax.random.key_data(key))
        meta["key_impl"] = str(jax.random.key_impl(key))
    arrays["meta"] = np.array(json.dumps(meta))
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def load(path, net: Network | None = None, opt_state_template=None) -> Checkpoint:
    """Read a checkpoint. With ``net``, refuse a checkpoint of another network; with
    ``opt_state_template`` (``optimizer.init(params)``), rebuild the optimizer state in its
    structure, refusing one of another optimizer."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "meta" not in f.files:
                raise CheckpointError(f"{path}: not a jaxnet checkpoint (no metadata)")
            arrays = {name: f[name] for name in f.files}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: truncated or corrupted checkpoint ({type(e).__name__}: {e})") from None
    try:
        meta = json.loads(str(arrays["meta"]))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupted checkpoint metadata ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{path}: unknown checkpoint format {got!r}, expected {FORMAT!r}")
    try:
        return _from_arrays(path, meta, arrays, net, opt_state_template)
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path}: inconsistent checkpoint ({type(e).__name__}: {e})") from None


def _from_arrays(path, meta, arrays, net, opt_state_template):
    saved_net = network_from_dict(meta["network"])
    if net is not None and net != saved_net:
        raise CheckpointError(f"{path}: the checkpoint is for the network {saved_net}, not {net}")
    params = _rebuild_params(path, saved_net, [arrays[f"params_{i}"] for i in range(meta["params_leaves"])])
    opt_state = None
    if opt_state_template is not None:
        if meta["opt_leaves"] is None:
            raise CheckpointError(f"{path}: the checkpoint holds no optimizer state")
        leaves, treedef = jax.tree.flatten(opt_state_template)
        saved = [arrays[f"opt_{i}"] for i in range(meta["opt_leaves"])]
        if str(treedef) != meta["opt_structure"] or len(saved) != len(leaves) or any(
            np.shape(a) != np.shape(b) for a, b in zip(saved, leaves)
        ):
            raise CheckpointError(f"{path}: the optimizer state was saved by another optimizer ({meta['opt_structure']})")
        opt_state = jax.tree.unflatten(treedef, [jnp.asarray(a) for a in saved])
    key = None
    if meta["key_impl"] is not None:
        key = jax.random.wrap_key_data(jnp.asarray(arrays["key"]), impl=meta["key_impl"])
    return Checkpoint(saved_net, params, opt_state, meta["epoch"], meta["step"], key, meta["extra"])


def _rebuild_params(path, net, leaves):
    template = [
        {name: shape for name, shape in layer.param_shapes(shape).items()}
        for layer, shape in zip(net.layers, net.layer_input_shapes)
    ]
    shapes, treedef = jax.tree.flatten(template, is_leaf=lambda s: isinstance(s, tuple))
    if len(shapes) != len(leaves) or any(tuple(s) != a.shape for s, a in zip(shapes, leaves)):
        raise CheckpointError(f"{path}: the stored parameters do not match the stored network")
    return jax.tree.unflatten(treedef, [jnp.asarray(a) for a in leaves])
