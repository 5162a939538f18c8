"""Data-parallel training (issue 7) and replica-parallel sweeps (issue 8): 1 vs 4 CPU devices give
the same params, in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4 (the flag
must be set before jax starts)."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import jaxnet
from jaxnet import sweep, train

SCRIPT = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np, optax
    import jaxnet
    from jaxnet import data, train


    def gap(a, b):  # the largest elementwise difference between two pytrees
        return max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    x, y = data.spiral(40, 3, seed=0)  # 120 examples
    images = np.random.default_rng(0).normal(size=(120, 6, 6, 1)).astype(np.float32)
    nets = {
        "mlp": (jaxnet.mlp([2, 16, 3], "relu", l2=1e-3), x),
        "cnn": (jaxnet.sequential((6, 6, 1), [jaxnet.Conv2D(4, 3, padding="SAME", activation="relu"),
                                              jaxnet.MaxPool2D(2), jaxnet.Flatten(), jaxnet.Dense(3)]), images),
    }
    out = {"devices": len(jax.devices())}
    for name, (net, inputs) in nets.items():
        for grads in ("manual", "autodiff"):
            runs = {d: train.fit(net, jaxnet.init_params(jax.random.key(0), net), inputs, y, optax.adam(1e-2), 3, 24,
                                 jax.random.key(1), grads=grads, devices=d) for d in (1, 4)}
            out[f"{name}-{grads}"] = {"param_gap": gap(runs[1].params, runs[4].params),
                                      "loss": runs[4].history["train_loss"],
                                      "sharding": str(runs[4].params[0]["W"].sharding)}
    # the step's compiled program splits the batch: partial sums combined by an all-reduce
    net = nets["mlp"][0]
    step_epoch = train.make_epoch(net, optax.sgd(0.1), 24, 120, devices=4)
    p0 = jaxnet.init_params(jax.random.key(0), net)
    p, s, xs, ys = train.replicate((p0, optax.sgd(0.1).init(p0), jnp.asarray(x, jnp.float32), jnp.asarray(y)), 4)
    hlo = step_epoch.lower(p, s, 0, jax.random.key(0), xs, ys).compile().as_text()
    out["all_reduce"] = "all-reduce" in hlo
    cnn = nets["cnn"][0]  # the CNN's steps too (on the CPU its epochs run as a Python loop of this same body)
    cnn_epoch = train.make_epoch(cnn, optax.sgd(0.1), 24, 120, devices=4, loop="scan")
    pc = train.replicate(jaxnet.init_params(jax.random.key(0), cnn), 4)
    hlo = cnn_epoch.lower(pc, train.replicate(optax.sgd(0.1).init(pc), 4), 0, jax.random.key(0),
                          *train.replicate((jnp.asarray(images), jnp.asarray(y)), 4)).compile().as_text()
    out["cnn_all_reduce"] = "all-reduce" in hlo
    errors = []
    for kwargs in ({"batch_size": 25, "devices": 4}, {"batch_size": 24, "devices": 8}):
        try:
            train.fit(net, jaxnet.init_params(jax.random.key(0), net), x, y, optax.sgd(0.1), 1, kwargs["batch_size"],
                      jax.random.key(0), devices=kwargs["devices"])
        except ValueError as e:
            errors.append(str(e))
    out["errors"] = errors
    from jaxnet import sweep  # replicas split over the devices: 6 replicas padded to 8
    replicas = sweep.grid(jaxnet.mlp([2, 16, 3], "relu"), seeds=(0, 1, 2), lr=(0.1, 0.3))
    one, four = (sweep.run(replicas, x, y, "sgd", 3, 24, val=(x[:30], y[:30]), devices=d) for d in (None, 4))
    out["sweep_gap"] = gap(one.params, four.params)
    out["sweep_history_gap"] = max(abs(a - b) for h1, h4 in zip(one.history, four.history)
                                   for k in h1 for a, b in zip(h1[k], h4[k]))
    out["sweep_rows"] = len(four.params)
    one_replica = sweep.estimate_bytes(replicas[0].net, 24, 120, 1, "sgd")  # a budget of one replica per device
    groups = []
    chunked = sweep.run(replicas, x, y, "sgd", 3, 24, val=(x[:30], y[:30]), devices=4, max_bytes=one_replica,
                        on_epoch=lambda g, e, losses: groups.append((g, len(losses))))
    out["chunk_sizes"] = sorted(set(groups))
    out["chunked_gap"] = gap(one.params, chunked.params)
    import tempfile
    from jaxnet import cli
    out["cli_rc"] = cli.main(["train", "--preset", "000-spiral", "--epochs", "1", "--seeds", "3", "--devices", "4",
                              "--out", tempfile.mkdtemp()])
    mesh = train.device_mesh(4)  # independent replicas: the compiled sweep epoch has no collectives
    spread = sweep.spread_over(mesh)
    net = replicas[0].net
    params = jax.tree.map(lambda *a: jnp.stack(a), *[jaxnet.init_params(jax.random.key(i), net) for i in range(4)])
    hypers = {"learning_rate": jnp.ones(4), "momentum": jnp.zeros(4)}
    state = jax.vmap(lambda p, h: optax.inject_hyperparams(optax.sgd)(**h).init(p))(params, hypers)
    xs, ys, keys = spread((jnp.asarray(x, jnp.float32), jnp.asarray(y), jax.random.split(jax.random.key(0), 4)),
                          replicated=True)
    args = (*spread((params, state)), keys, 1, *spread((jnp.arange(4), jnp.zeros(4))), xs, ys, [(xs, ys)])
    hlo = sweep.group_epoch(net, sweep.replica_optimizer("sgd"), 24, 120, "manual").lower(*args).compile().as_text()
    out["sweep_collectives"] = [c for c in ("all-reduce", "all-gather", "all-to-all", "collective-permute") if c in hlo]
    out["sweep_sharding"] = str(args[0][0]["W"].sharding)
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_four_devices_train_like_one():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4 and out["all_reduce"] and out["cnn_all_reduce"]
    for name in ("mlp-manual", "mlp-autodiff", "cnn-manual", "cnn-autodiff"):
        assert out[name]["param_gap"] < 1e-5, (name, out[name])
        assert "NamedSharding" in out[name]["sharding"] and out[name]["loss"][-1] < out[name]["loss"][0]
    assert out["errors"] == [
        "devices=4 must divide the batch size 25 (each device takes an equal share)",
        "devices=8, but only 4 cpu device(s) are present",
    ]
    assert out["sweep_rows"] == 6 and out["sweep_gap"] < 1e-5 and out["sweep_history_gap"] < 1e-5
    assert out["chunk_sizes"] == [[0, 4], [1, 2]] and out["chunked_gap"] < 1e-5  # 4 replicas (one per device), then 2
    assert out["cli_rc"] == 0
    assert out["sweep_collectives"] == [] and "P('data',)" in out["sweep_sharding"]


QUICK = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, optax
    import jaxnet
    from jaxnet import data, train


    def gap(a, b):  # the largest elementwise difference between two pytrees
        return max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    x, y = data.spiral(16, 3, seed=0)  # 48 examples
    net = jaxnet.mlp([2, 8, 3], "tanh", l2=1e-3)
    runs = {d: train.fit(net, jaxnet.init_params(jax.random.key(0), net), x, y, optax.adam(1e-2), 2, 16,
                         jax.random.key(1), devices=d) for d in (1, 2)}
    print(json.dumps({"devices": len(jax.devices()), "param_gap": gap(runs[1].params, runs[2].params),
                      "steps": runs[2].step,
                      "moved": gap(runs[2].params[0]["W"], jaxnet.init_params(jax.random.key(0), net)[0]["W"]),
                      "sharding": str(runs[2].params[0]["W"].sharding)}))
""")


def test_two_devices_train_like_one():
    """The cheap default version of the slow test above: 2 CPU devices, a 2-8-3 MLP, 2 epochs,
    hand-derived gradients; the same params as on one device."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", QUICK], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["devices"] == 2 and out["steps"] == 2 * 3 and "NamedSharding" in out["sharding"]
    assert out["moved"] > 1e-3 and out["param_gap"] < 1e-5, out


def test_devices_errors_in_this_process():
    """Here (one CPU device unless XLA_FLAGS says otherwise, or the GPUs) asking for more is a clear error."""
    net = jaxnet.mlp([2, 4, 3])
    with pytest.raises(
        ValueError, match=rf"devices=64, but only \d+ {jax.devices()[0].platform} device\(s\) are present"
    ):
        train.make_epoch(net, train.sgd(0.1), 64, 128, devices=64)
    with pytest.raises(
        ValueError, match=rf"devices=64, but only \d+ {jax.devices()[0].platform} device\(s\) are present"
    ):
        sweep.run(sweep.grid(net), np.zeros((8, 2)), np.zeros(8, int), "sgd", 1, 8, devices=64)
    with pytest.raises(ValueError, match="devices must be a positive integer"):
        train.make_epoch(net, train.sgd(0.1), 64, 128, devices=0)
    assert train.replicate({"a": 1}, 1) == {"a": 1} and train.replicate({"a": 1}, None) == {"a": 1}


def test_cli_devices_flag_errors_clearly(tmp_path, capsys):
    from jaxnet import cli

    args = ["train", "--preset", "000-spiral", "--epochs", "1", "--quiet", "--out", str(tmp_path)]
    assert cli.main(args + ["--devices", "64"]) == 2
    assert "--devices 64: only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(args + ["--devices", "0"])
