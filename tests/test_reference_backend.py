"""References that hold on every backend (issue 15): float64 references run on the CPU device,
the in-training spot check's reference runs at matmul precision "highest".

The placement is tested on the CPU with the reference forced elsewhere: a subprocess with two
host devices (``XLA_FLAGS=--xla_force_host_platform_device_count=2``) puts the working arrays on
cpu:1, standing in for a GPU, and checks that the references are computed on cpu:0, and that a
backend whose float64 autodiff is 2e-10 off (as an H200's ``jax.grad`` of a strided convolution
was) fails the check when the reference runs on it and passes when it runs on the CPU device.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxnet
from jaxnet import train, verify
from jaxnet.layers import Conv2D, Dense, Flatten

from .helpers import assert_grads_close, autodiff_grads

CNN = jaxnet.sequential(
    (5, 5, 2), [Conv2D(2, 3, 2, "SAME", "tanh"), Flatten(), Dense(3)], l2=0.01
)  # strided, as on the H200


def test_reference_device_choice():
    """float64: the CPU device; float32: the working device; "same", a device, and bad values."""
    cpu = jax.devices("cpu")[0]
    here = jnp.ones(2, jnp.float32)
    working = next(iter(here.devices()))
    assert verify.reference_device(jnp.float64) == cpu and verify.reference_device(jnp.float64, None) == cpu
    assert verify.reference_device(jnp.float32, like=here) == working
    assert verify.reference_device(jnp.float64, "same", here) == working
    assert verify.reference_device(jnp.float32, cpu, here) == cpu
    assert verify.working_device({"a": 1.0, "b": here}) == working
    with pytest.raises(ValueError, match=r"reference_device must be a jax\.Device, 'default' or 'same', got 'gpu'"):
        verify.reference_device(jnp.float64, "gpu")
    with pytest.raises(ValueError, match="reference_device must be"):
        jaxnet.check_grads(lambda p: jnp.sum(p**2), lambda p: 2 * p, jnp.ones(2), reference_device="cpu:0")


def test_autodiff_reference_helper():
    """tests/helpers.autodiff_grads: float64 on the CPU device, equal to the hand-derived gradient."""
    net = jaxnet.mlp([3, 4, 2], "tanh", l2=0.1)
    params, x, y = verify.random_problem(net, seed=0, n=4)
    ref = autodiff_grads(params, net, x, y, jit=True)
    assert {d.platform for g in jax.tree.leaves(ref) for d in g.devices()} == {"cpu"}
    assert_grads_close(jax.jit(jaxnet.manual_grads)(params, net, x, y), ref, 1e-10, "jax.grad (CPU)")


SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    import jaxnet
    from jaxnet import gradcheck, verify

    cpu1 = jax.devices()[1]  # plays the GPU: the working device; cpu:0 is the CPU device
    net = jaxnet.mlp([3, 4, 2], "tanh", "squared_error", l2=0.1)
    params, x, y = verify.to_device(verify.random_problem(net, seed=0, n=4), cpu1)
    exact = lambda p, x, y: jaxnet.loss(p, net, x, y)
    mine = lambda p, x, y: jaxnet.manual_grads(p, net, x, y)

    def inexact_on(device, rel=2e-10):
        # the same loss, except that its derivatives are rel off when traced for device (the
        # reference's device is jax.default_device while it is traced): a backend whose
        # float64 autodiff is 2e-10 off, as the H200's jax.grad of a strided conv was
        @jax.custom_jvp
        def loss(p, x, y):
            return exact(p, x, y)

        @loss.defjvp
        def loss_jvp(primals, tangents):
            value, tangent = jax.jvp(exact, primals, tangents)
            return value, tangent * (1 + rel) if jax.config.jax_default_device == device else tangent

        return loss

    placed = []  # devices of each result of gradcheck.on_device and of the finite differences, in call order
    on_device, fd = gradcheck.on_device, gradcheck.finite_difference_grads
    devices_of = lambda tree: sorted({str(d) for a in jax.tree.leaves(tree) for d in a.devices()})
    gradcheck.on_device = lambda fn, *a, device: placed.append(devices_of(r := on_device(fn, *a, device=device))) or r
    gradcheck.finite_difference_grads = lambda *a, **k: placed.append(devices_of(r := fd(*a, **k))) or r

    def check(loss, p=params, **kw):
        del placed[:]
        report = jaxnet.check_grads(loss, mine, p, x, y, **kw)
        return {"ok": report.ok, "failing": sorted({r.witness for r in report.failures()}),
                "failing_leaves": len(report.failures()), "note": report.notes[-1], "placed": list(placed)}

    if sys.argv[1] == "default":
        out = {"default": check(exact), "inexact_default": check(inexact_on(cpu1), hvp_directions=0),
               "inexact_same": check(inexact_on(cpu1), reference_device="same", hvp_directions=0)}
    else:
        out = {"float32": check(exact, p=jax.tree.map(lambda a: a.astype(jnp.float32), params)),
               "device": check(exact, reference_device=cpu1, hvp_directions=0)}
        del placed[:]
        per_example = gradcheck.check_per_example(params, net, x, y)
        out["per_example"] = {"ok": per_example.ok, "notes": list(per_example.notes), "placed": list(placed)}
        out["reference_grads"] = [devices_of(verify.reference_grads(exact, params, x, y, jit=True, **kw))
                                  for kw in ({}, {"device": "same"})]
        committed = jax.device_put(jnp.arange(6.0).reshape(3, 2), cpu1)  # closed over: cannot move to cpu:0
        square = lambda p: jnp.sum(jnp.tanh(committed @ p) ** 2)
        report = jaxnet.check_grads(square, jax.grad(square), jax.device_put(jnp.ones(2), cpu1), hvp_directions=0)
        out["committed_closure"] = {"ok": report.ok, "notes": list(report.notes)}
    print(json.dumps(out))
""")


def _two_devices(part):
    """The SCRIPT's observations (``part``: "default" or "more"): JSON from a subprocess with two CPU devices."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", SCRIPT, part], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def two_devices():
    return _two_devices("default")


# Where check_grads' computations ran, in its order: the jax.grad witness, the finite differences,
# jax.grad in float64, then the Hessian-vector products through your gradient and through jax.grad
REFS_ON_CPU0 = [["cpu:0"], ["cpu:0"], ["cpu:0"], ["cpu:1"], ["cpu:0"]]


def test_float64_references_run_on_the_cpu_device_and_the_report_says_so(two_devices):
    default = two_devices["default"]
    assert default["ok"] and default["placed"] == REFS_ON_CPU0
    assert (
        default["note"]
        == "references computed on cpu:0 (jax.grad in float64, finite differences, jvp, H v); your gradient on cpu:1"
    )
    same = two_devices["inexact_same"]  # reference_device="same" moves them (no Hessian-vector products here)
    assert same["placed"] == [["cpu:1"]] * 3 and same["note"].startswith("references computed on cpu:1 ")


def test_an_inexact_working_backend_no_longer_fails_a_right_gradient(two_devices):
    """Autodiff 2e-10 off on the working device: with the reference there the right gradient
    fails the jax.grad witness in every leaf (and nothing else, as on the H200); with the
    default it passes."""
    assert two_devices["inexact_default"]["ok"], two_devices["inexact_default"]
    same = two_devices["inexact_same"]
    assert not same["ok"] and same["failing"] == ["jax.grad"] and same["failing_leaves"] == 4


@pytest.mark.slow
def test_float32_per_example_and_reference_grads_placement():
    """A float32 check: its jax.grad witness stays where your gradient runs, the float64 references
    go to the CPU device; a device passed as reference_device; check_per_example; reference_grads;
    a loss closing over arrays committed to the working device falls back to it, saying so."""
    more = _two_devices("more")
    float32 = more["float32"]
    assert float32["ok"] and float32["placed"] == [["cpu:1"], ["cpu:0"], ["cpu:0"], ["cpu:1"], ["cpu:0"]]
    assert float32["note"] == (
        "jax.grad (float32, matmul precision highest) computed on cpu:1; float64 references "
        "(finite differences, jax.grad, jvp, H v) on cpu:0; your gradient on cpu:1"
    )
    assert more["device"]["ok"] and more["device"]["placed"] == [["cpu:1"]] * 3
    per_example = more["per_example"]
    assert per_example["ok"] and per_example["placed"] == [["cpu:0"], ["cpu:0"]]
    assert per_example["notes"] == ["jax.grad references (float64) computed on cpu:0; hand-derived ones on cpu:1"]
    assert more["reference_grads"] == [["cpu:0"], ["cpu:1"]]
    assert more["committed_closure"] == {
        "ok": True,
        "notes": [  # a loss closing over arrays committed elsewhere
            "the references could not run on cpu:0: your functions "
            "use arrays committed to another device (jax.device_put), "
            "so they ran on cpu:1",
            "references computed on cpu:1 (jax.grad in float64, finite differences, jvp, H v); your gradient on cpu:1",
        ],
    }


def _products(jaxpr):
    """``(primitive, precision)`` of every dot_general and conv_general_dilated in ``jaxpr`` and the jaxprs in it."""
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
            out.append((eqn.primitive.name, str(eqn.params["precision"])))
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    out += _products(inner)
    return out


def test_the_spot_check_reference_runs_at_highest_precision():
    """Every product of _directional_gap (the jvp of the loss and ⟨g, v⟩) is traced at
    "highest"; in the epoch those are the only ones: the gradient training uses keeps the
    default precision."""
    net = jaxnet.sequential((5, 5, 1), [Conv2D(2, 3, 2, "SAME", "tanh"), Flatten(), Dense(3)])
    params = verify.draw_params(net, np.random.default_rng(0), jnp.float32)
    x, y = jnp.ones((8, 5, 5, 1), jnp.float32), jnp.zeros(8, jnp.int32)  # only traced
    g = params  # any tree of the params' shapes: only traced
    gap = _products(jax.make_jaxpr(train._directional_gap)(params, net, x, y, g, jax.random.key(0)).jaxpr)
    assert {name for name, _ in gap} == {"conv_general_dilated", "dot_general"}
    assert all("HIGHEST" in p for _, p in gap), gap
    opt = optax.sgd(0.1)
    epoch = lambda check: (
        jax.make_jaxpr(train.make_epoch(net, opt, 4, 8, check_every=check, loop="scan"))(
            params, opt.init(params), jnp.int32(0), jax.random.key(1), x, y
        ).jaxpr
    )
    with_check, without = _products(epoch(1)), _products(epoch(0))
    assert sorted(p for p in with_check if "HIGHEST" in p[1]) == sorted(gap)
    assert sorted(p for p in with_check if "HIGHEST" not in p[1]) == sorted(without)
    assert {p for _, p in without} == {"None"}


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU (experiments/gpu_check.sh runs it there)")
def test_on_a_gpu_float64_strided_conv_checks_pass_against_the_cpu_reference():
    """On a GPU: the float64 checks that failed on the H200 (strided conv, its per-example
    gradients) pass, with the references on the CPU and your gradient on the GPU."""
    gpu = jax.devices()[0]
    params, x, y = verify.random_problem(CNN, seed=0, n=2)
    assert verify.working_device(params) == gpu
    assert_grads_close(
        jaxnet.manual_grads(params, CNN, x, y), autodiff_grads(params, CNN, x, y), 1e-10, "jax.grad (CPU)"
    )
    report = jaxnet.check_grads(
        lambda p, x, y: jaxnet.loss(p, CNN, x, y),
        lambda p, x, y: jaxnet.manual_grads(p, CNN, x, y),
        params,
        x,
        y,
        net=CNN,
    )
    assert report.ok, str(report)
    assert report.notes[-1].startswith("references computed on cpu:0 ") and report.notes[-1].endswith(
        verify.device_name(gpu)
    )
    per_example = jaxnet.check_per_example(params, CNN, x, y)
    assert per_example.ok and "computed on cpu:0" in per_example.notes[0], str(per_example)
