"""Where a computation runs: the working device of your arrays, and the device of the references.

A float64 reference (autodiff's gradient, finite differences, a forward-mode product) must be exact to float64
rounding on every backend, or a right gradient fails the 1e-10 bar. XLA's CPU kernels are
(the hand-derived gradients agree with them to ~1e-15 throughout the tests). A GPU's need not
be: on an NVIDIA H200 the float64 autodiff gradient of a strided convolution was 2.4e-10 (relative)
away from the CPU's while the hand-derived gradient on that GPU matched the CPU's to 2e-16 — an
error no tolerance derived from float64 rounding (~1e-16) accounts for, and loosening 1e-10 to
cover it would blunt the check everywhere. So float64 references run on the CPU device, which
every JAX install has (the host platform), by default; the checked problems are small, so moving
them there is cheap. A reference in float32 (or a lower dtype) stays on the working device at
matmul precision "highest": it is checked against your gradient in that dtype at 1e-4, far above
any backend's float32 rounding, and where the working dtype runs is what that witness is about.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def working_device(tree=None) -> jax.Device:
    """The device ``tree``'s arrays live on: that of its first ``jax.Array`` leaf (the
    lowest-numbered one of an array spread over several), else JAX's default device
    (``jax.default_device`` when set, else ``jax.devices()[0]``)."""
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array):
            return min(leaf.devices(), key=lambda d: d.id)
    default = jax.config.jax_default_device  # type: ignore[attr-defined]  # config options are dynamic, not in the stub
    if isinstance(default, jax.Device):
        return default
    return jax.devices(default)[0] if default else jax.devices()[0]


def reference_device(dtype, device="default", like=None) -> jax.Device:
    """The device a reference computed in ``dtype`` runs on.

    Args:
      dtype: the reference's dtype.
      device: ``"default"`` (or ``None``): the CPU device (``jax.devices("cpu")[0]``) for
        float64, exact on every backend (see the comment above), the working device for other
        dtypes (and for float64 when JAX has no CPU backend, ``JAX_PLATFORMS`` without ``cpu``);
        ``"same"``: the working device; a ``jax.Device``: that device, for every dtype.
      like: a tree whose arrays name the working device (see :func:`working_device`).
    """
    if isinstance(device, jax.Device):
        return device
    if device is None or device == "default":
        if jnp.dtype(dtype) == jnp.float64:
            try:
                return jax.devices("cpu")[0]
            except RuntimeError:  # no CPU backend
                return working_device(like)
        return working_device(like)
    if device == "same":
        return working_device(like)
    raise ValueError(f"reference_device must be a jax.Device, 'default' or 'same', got {device!r}")


def device_name(device: jax.Device) -> str:
    """``"cpu:0"``, ``"cuda:0 (NVIDIA H200)"``: the device and, when it says more, its kind."""
    kind = device.device_kind
    return f"{device}" if kind.lower() == device.platform else f"{device} ({kind})"


def to_device(tree, device: jax.Device):
    """``tree`` with its ``jax.Array`` leaves that live elsewhere placed on ``device``
    (``jax.device_put``: committed, so jitted calls on them run there); arrays already there
    alone, and other leaves (NumPy arrays, Python scalars, a :class:`jaxnet.Network`) as they are."""
    elsewhere = lambda a: isinstance(a, jax.Array) and a.devices() != {device}
    return jax.tree.map(lambda a: jax.device_put(a, device) if elsewhere(a) else a, tree)


def on_device(fn, *args, device: jax.Device):
    """``fn(*args)`` computed on ``device``: the arrays of ``args`` placed there
    (:func:`to_device`), under ``jax.default_device(device)`` (so arrays ``fn`` creates land
    there too) and matmul precision "highest". The result lives on ``device``. Arrays that
    ``fn`` closes over should be on ``device`` or uncommitted."""
    with jax.default_device(device), jax.default_matmul_precision("highest"):
        return fn(*to_device(args, device))


def as_array(x, dtype=None) -> jax.Array:
    """``jnp.asarray(x, dtype)`` without a compiled program for host data: ``jnp.asarray`` of a
    NumPy array lowers and compiles a small program per shape, each a few milliseconds of a
    command's start; a NumPy array, nested list or scalar is converted on the host and sent
    with ``jax.device_put`` instead (the same dtype rules: 64-bit types become 32-bit ones unless
    ``jax_enable_x64``). A ``jax.Array`` (or a tracer) goes through ``jnp.asarray``."""
    if isinstance(x, jax.Array):
        return jnp.asarray(x, dtype)
    return jax.device_put(np.asarray(x, dtype))
