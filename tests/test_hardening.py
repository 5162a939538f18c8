"""Issue 17, first part: clear errors instead of tracebacks or silent wrong numbers, and files that
are never half written (learning rates, complex arrays, check_grads' inputs, atomic JSON, stale
temporaries)."""

import json
import os
import time

import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet
from jaxnet import cli, data, files
from jaxnet.cli import output


@pytest.mark.parametrize("lr", ["-1", "0", "nan", "inf"])
def test_a_learning_rate_that_cannot_train_is_refused(lr, capsys, tmp_path):
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "--lr", lr, "--out", str(tmp_path), "--quiet"])
    assert stop.value.code == 2
    assert (
        f"--lr: a learning rate must be a number > 0 that float32 holds (1.2e-38 to 3.4e38), got '{lr}'"
        in capsys.readouterr().err
    )
    assert not os.listdir(tmp_path)  # refused before anything ran


@pytest.mark.parametrize("l2", ["-1", "nan"])
def test_an_l2_strength_below_zero_is_refused(l2, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["check", "--l2", l2])
    assert (
        stop.value.code == 2
        and f"--l2: an L2 strength must be a finite number >= 0, got '{l2}'" in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    "spec, message",
    [
        ("lr=0.1,nan", "every lr must be a number > 0 that float32 holds (1.2e-38 to 3.4e38), got nan"),
        ("lr=-0.1", "every lr must be a number > 0 that float32 holds (1.2e-38 to 3.4e38), got -0.1"),
        ("l2=0,-1e-4", "every l2 must be a finite number >= 0, got -0.0001"),
        ("momentum=0,1", "every momentum must be in [0, 1), got 1.0"),
    ],
)
def test_a_sweep_value_that_cannot_train_is_refused(spec, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "--sweep", spec, "--out", str(tmp_path), "--quiet"])
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_complex_arrays_are_refused(tmp_path):
    path = tmp_path / "complex.npz"
    np.savez(path, x=np.ones((4, 2)) + 1j, y=np.arange(4) % 2)
    with pytest.raises(
        ValueError, match=r"complex.npz: array 'x' is complex \(dtype complex128\); expected real numbers"
    ):
        data.load_file(str(path))
    path = tmp_path / "complex.npy"
    np.save(path, np.ones((4, 3), np.complex64))
    with pytest.raises(ValueError, match=r"complex.npy: array is complex"):
        data.load_file(str(path))


def _loss(p, x):
    return jnp.sum(jnp.tanh(x @ p["W"]))


def _grad(p, x):
    t = jnp.tanh(x @ p["W"])  # [batch, 2]
    return {"W": x.T @ (1 - t**2)}


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p, x: jaxnet.check_grads(_loss, _grad, {}, x), "params holds no arrays"),
        (
            lambda p, x: jaxnet.check_grads(_loss, _grad, {"W": jnp.ones((3, 2), jnp.int32)}, x),
            r"params\['W'\] has dtype int32; a gradient is taken with respect to floating-point arrays only",
        ),
        (
            lambda p, x: jaxnet.check_grads(lambda p, x: jnp.tanh(x @ p["W"]), _grad, p, x),
            r"loss_fn must return a scalar, got shape \(4, 2\); .* use jaxnet.check_vjp",
        ),
        (
            lambda p, x: jaxnet.check_grads(
                lambda p, x: float(np.sum(np.tanh(np.asarray(x) @ np.asarray(p["W"])))), _grad, p, x
            ),
            "loss_fn calls NumPy on the params, so jax.grad cannot differentiate it",
        ),
        (
            lambda p, x: jaxnet.check_grads(_loss, lambda p, x: {"W": jnp.ones((3, 2), jnp.int32)}, p, x),
            r"your gradient\['W'\] has dtype int32; expected floating point",
        ),
    ],
    ids=["empty", "integer-params", "vector-loss", "numpy-loss", "integer-gradient"],
)
def test_check_grads_says_what_it_needs(call, message):
    with pytest.raises(ValueError, match=message):
        call({"W": jnp.ones((3, 2))}, jnp.ones((4, 3)))


def test_numpy_on_the_data_arguments_is_still_fine():
    """Only the params are traced (as jax.grad traces them): NumPy on x or y is allowed."""

    def loss(p, x, y):
        onehot = np.eye(2)[np.asarray(y)]  # NumPy on the labels
        return jnp.sum((jnp.tanh(x @ p["W"]) - onehot) ** 2)

    def grads(p, x, y):
        t = jnp.tanh(x @ p["W"])  # [batch, 2]
        return {"W": x.T @ (2 * (t - np.eye(2)[np.asarray(y)]) * (1 - t**2))}

    report = jaxnet.check_grads(
        loss, grads, {"W": jnp.full((3, 2), 0.3)}, jnp.ones((4, 3)) * 0.5, np.array([0, 1, 1, 0]), hvp_directions=0
    )
    assert report.ok, str(report)


def test_json_results_are_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    output.write_json(str(path), {"loss": 1.0, "bad": float("nan")})
    assert json.loads(path.read_text()) == {"loss": 1.0, "bad": None}

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(json, "dump", crash)
    with pytest.raises(KeyboardInterrupt):
        output.write_json(str(path), {"loss": 2.0})
    assert json.loads(path.read_text()) == {"loss": 1.0, "bad": None}  # the old file, whole
    assert sorted(os.listdir(tmp_path)) == ["metrics.json"]  # no temporary left


def test_stale_temporaries_are_removed_and_fresh_ones_kept(tmp_path):
    old = [tmp_path / ".ckpt-abc.tmp", tmp_path / ".jaxnet-def.tmp"]
    fresh = tmp_path / ".jaxnet-ghi.tmp"
    for path in (*old, fresh, tmp_path / "checkpoint.npz"):
        path.write_bytes(b"x")
    for path in old:
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    (tmp_path / ".jaxnet-dir.tmp").mkdir()  # not a file: left alone, no traceback
    os.utime(tmp_path / ".jaxnet-dir.tmp", (time.time() - 3600, time.time() - 3600))
    assert sorted(files.remove_stale_temporaries(tmp_path)) == sorted(map(str, old))
    assert sorted(os.listdir(tmp_path)) == [".jaxnet-dir.tmp", ".jaxnet-ghi.tmp", "checkpoint.npz"]


def test_a_run_removes_the_temporaries_a_killed_run_left(tmp_path):
    old = tmp_path / ".ckpt-killed.tmp"
    old.write_bytes(b"half a checkpoint")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert cli.main(["train", "--preset", "000-spiral", "--epochs", "1", "--out", str(tmp_path), "--quiet"]) == 0
    assert not old.exists() and (tmp_path / "metrics.json").exists()


def test_atomic_files_get_the_permissions_open_would_give(tmp_path):
    mask = os.umask(0o022)
    try:
        output.write_json(str(tmp_path / "metrics.json"), {"a": 1})
        with open(tmp_path / "plain.json", "w") as f:
            f.write("{}")
    finally:
        os.umask(mask)
    assert (
        os.stat(tmp_path / "metrics.json").st_mode & 0o777 == os.stat(tmp_path / "plain.json").st_mode & 0o777 == 0o644
    )
