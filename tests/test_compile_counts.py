"""How many programs jaxnet compiles: a regression here is seconds on every run (issue 20).

Counted with JAX's monitoring events: ``/jax/core/compile/jaxpr_to_mlir_module_duration`` fires
once per program lowered for compilation (also when the persistent cache then serves it, so the
test session's cache cannot hide a recompilation), ``backend_compile_duration`` once per program
XLA compiles."""

import collections
import os
import subprocess
import sys

import jax
import jax.monitoring
import numpy as np

import jaxnet
from jaxnet import data, train

LOWERED = "/jax/core/compile/jaxpr_to_mlir_module_duration"
COMPILED = "/jax/core/compile/backend_compile_duration"

_COUNTS: collections.Counter = collections.Counter()
jax.monitoring.register_event_duration_secs_listener(lambda name, secs, **kw: _COUNTS.update([name]))


def _lowered_by(fn):
    before = _COUNTS[LOWERED]
    fn()
    return _COUNTS[LOWERED] - before


def test_a_second_fit_with_the_same_settings_compiles_nothing():
    """A script's second fit (another seed, the same network, optimizer object, sizes and options)
    reuses the first one's programs, initialisation included."""
    net = jaxnet.mlp([2, 7, 3], "tanh")  # a network no other test compiles
    x, y = data.spiral(30, 3, seed=0)
    opt = train.sgd(0.1)

    def run(seed):
        params = jaxnet.init_params(jax.random.key(seed), net)
        return train.fit(net, params, x, y, opt, 3, 16, jax.random.key(seed + 1), val=(x[:20], y[:20]))

    first = _lowered_by(lambda: run(0))
    assert first > 0
    assert _lowered_by(lambda: run(1)) == 0


def test_one_program_runs_any_number_of_epochs_a_call():
    """fit's calls of 1, 3 or "auto" epochs, with or without evaluations, are one compiled program."""
    net = jaxnet.mlp([2, 6, 3], "tanh")  # a network no other test compiles
    x, y = data.spiral(30, 3, seed=0)
    opt, params = train.sgd(0.1), jaxnet.init_params(jax.random.key(0), net)
    run = lambda k, every: train.fit(
        net, params, x, y, opt, 7, 16, jax.random.key(1), eval_every=every, epochs_per_call=k
    )
    assert _lowered_by(lambda: run(1, 1)) > 0
    assert _lowered_by(lambda: [run(3, 2), run("auto", 5)]) == 0


def test_init_params_is_one_program_with_the_eager_values():
    net = jaxnet.sequential(
        (5,), [jaxnet.Dense(6, "relu"), jaxnet.LayerNorm(), jaxnet.Dense(4, "tanh"), jaxnet.Dense(2)]
    )
    lowered = _lowered_by(lambda: jaxnet.init_params(jax.random.key(3), net))
    assert lowered == 1
    eager = jaxnet.network._initial_params(jax.random.key(3), net, np.dtype("float32"))
    jaxnet_params = jaxnet.init_params(jax.random.key(3), net)
    for a, b in zip(jax.tree.leaves(jaxnet_params), jax.tree.leaves(eager)):
        np.testing.assert_array_equal(a, b)


COUNT = """
import sys, collections, jax, jax.monitoring
counts = collections.Counter()
jax.monitoring.register_event_duration_secs_listener(lambda name, secs, **kw: counts.update([name]))
from jaxnet import cli
rc = cli.main(sys.argv[1:])
print(rc, counts["/jax/core/compile/backend_compile_duration"])
"""
MAX_PROGRAMS = 9  # a whole `jaxnet train --preset 000-spiral` run: 8 measured when this was written (36 before)


def test_a_whole_jaxnet_train_run_compiles_few_programs(tmp_path):
    """Every program of ``jaxnet train --preset 000-spiral`` (initialisation, the epochs, the final
    evaluation of each split, the plots) in a fresh process without a compilation cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT"))}
    args = ["train", "--preset", "000-spiral", "--quiet", "--no-compile-cache", "--out", str(tmp_path / "r")]
    out = subprocess.run([sys.executable, "-c", COUNT, *args], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    rc, compiled = map(int, out.stdout.split()[-2:])
    assert rc == 0 and 0 < compiled <= MAX_PROGRAMS, compiled


def test_a_layer_changed_in_place_is_traced_again(monkeypatch):
    """The reused program is keyed by the code it was traced from: a bwd reassigned on the class
    (a notebook's fix, a planted mistake) after a first fit is what the second fit runs."""
    net = jaxnet.mlp([2, 5, 3], "tanh")  # a network no other test compiles
    x, y = data.spiral(20, 3, seed=0)
    opt = train.sgd(0.1)
    params = jaxnet.init_params(jax.random.key(0), net)
    first = train.fit(net, params, x, y, opt, 1, 20, jax.random.key(1))
    right_bwd = jaxnet.Dense.bwd

    def no_weight_gradient(self, p, residuals, da):
        dx, grads = right_bwd(self, p, residuals, da)
        return dx, {"W": 0 * grads["W"], "b": grads["b"]}

    monkeypatch.setattr(jaxnet.Dense, "bwd", no_weight_gradient)
    second = train.fit(net, params, x, y, opt, 1, 20, jax.random.key(1))
    np.testing.assert_array_equal(second.params[0]["W"], params[0]["W"])  # the planted bwd ran: W never moved
    assert not np.array_equal(first.params[0]["W"], params[0]["W"])


def test_an_init_jax_cannot_trace_runs_eagerly():
    """A layer whose init draws by rejection (a value-dependent shape) cannot be compiled: it runs
    eagerly, as before init_params was compiled."""
    import dataclasses

    import jax.numpy as jnp

    @dataclasses.dataclass(frozen=True)
    class Rejection(jaxnet.Layer):
        def output_shape(self, in_shape):
            return tuple(in_shape)

        def param_shapes(self, in_shape):
            return {"W": (in_shape[-1], in_shape[-1])}

        def init(self, key, in_shape, dtype):
            w = jax.random.normal(key, (4 * in_shape[-1] ** 2,), dtype)
            return {"W": w[jnp.abs(w) < 2][: in_shape[-1] ** 2].reshape(in_shape[-1], in_shape[-1])}

        def fwd(self, params, x):
            return x @ params["W"], {"x": x}

        def bwd(self, params, residuals, dy):
            return dy @ params["W"].T, {"W": residuals["x"].T @ dy}

    net = jaxnet.sequential((3,), [Rejection(), jaxnet.Dense(2)])
    params = jaxnet.init_params(jax.random.key(0), net)
    assert params[0]["W"].shape == (3, 3) and float(jnp.max(jnp.abs(params[0]["W"]))) < 2
