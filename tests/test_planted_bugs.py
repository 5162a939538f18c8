"""Planted bugs: each small mistake below, made in a copy of ``jaxnet/``, turns a default test red.

For each bug the package, the tests and ``pyproject.toml`` are copied to a temporary directory,
the bug's textual replacements are made in the copy (each original text must occur exactly once),
and the tests that should catch it run against the copy in a subprocess (``pytest -x``, the
selection named with the bug). Its pytest must exit 1 — tests ran and one failed — not 0, and not
2–4, which would mean a collection or usage error rather than a caught bug. The subprocess records
which ``jaxnet`` it imported, and that must be the mutated copy (not the editable install). A
``no bug`` case runs one test of every file used on an unmutated copy and must pass, so that the
copy itself is sound.

Slow (about a subprocess per bug): ``python -m pytest -q -n 0 -m slow tests/test_planted_bugs.py``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Bug:
    name: str
    path: str  # the file to mutate, relative to the repository root
    edits: tuple  # ((original text, replacement), ...): each original occurs exactly once
    tests: tuple  # pytest arguments: the files (and -k selection) that must catch it

    def __str__(self):
        return self.name


BUGS = [
    # the loss's definition, shared by manual_grads and jax.grad (the 1e-10 grid cannot see these)
    Bug(
        "reduction='sum' divides by N",
        "jaxnet/network.py",
        (('return 1.0 / n if net.reduction == "mean" else 1.0', "return 1.0 / n"),),
        ("tests/test_loss_definitions.py", "-k", "sum"),
    ),
    Bug(
        "l2_bias ignored in the L2 penalty",
        "jaxnet/layers.py",
        (("return tuple(self.param_shapes(in_shape)) if l2_bias else weights", "return weights"),),
        ("tests/test_loss_definitions.py", "-k", "0.3-True"),
    ),
    Bug(
        "squared error as 1/2 Σ (value and delta together)",
        "jaxnet/losses.py",
        (
            ("return jnp.sum(r * r, axis=-1)  # [batch]", "return 0.5 * jnp.sum(r * r, axis=-1)  # [batch]"),
            (
                "return 2.0 * (_marked(f, _target_mask(y)) - y)  # [batch, K]",
                "return (_marked(f, _target_mask(y)) - y)  # [batch, K]",
            ),
        ),
        ("tests/test_loss_definitions.py", "-k", "squared_error"),
    ),
    # Conv2D's and the pools' input gradient (seen only through a layer with parameters before them)
    Bug(
        "Conv2D dx: padding shifted by one row",
        "jaxnet/layers.py",
        (("back = ((kh - 1 - pt, h - 1 - (ho - 1) * sh + pt),", "back = ((kh - pt, h - 2 - (ho - 1) * sh + pt),"),),
        ("tests/test_cnn.py", "-k", "test_conv2d"),
    ),
    Bug(
        "Conv2D dx: top padding used for left",
        "jaxnet/layers.py",
        (("(pt, _), (pl, _) = pads", "(pt, _), (pl, _) = pads[0], pads[0]"),),
        ("tests/test_cnn.py", "-k", "test_conv2d and explicit"),
    ),  # VALID and SAME (square kernel): top = left
    Bug(
        "Conv2D dx: kernel not flipped",
        "jaxnet/layers.py",
        (('params["W"][::-1, ::-1],\n', 'params["W"],\n'),),
        ("tests/test_cnn.py", "-k", "test_conv2d"),
    ),
    Bug(
        "MaxPool2D: δ to every entry of the window",
        "jaxnet/layers.py",
        (("dx = dx.at[index].add(jnp.where(first, dy, 0.0))", "dx = dx.at[index].add(dy)"),),
        ("tests/test_cnn.py", "-k", "test_pooling and MaxPool2D"),
    ),
    Bug(
        "AvgPool2D: δ not divided by the window size",
        "jaxnet/layers.py",
        (("share = dy / (kh * kw)", "share = dy"),),
        ("tests/test_cnn.py", "-k", "test_pooling and AvgPool2D"),
    ),
    # classic derivation mistakes
    Bug(
        "Dense: activation derivative dropped",
        "jaxnet/layers.py",
        (
            (
                "dz = da * g.deriv(z, a)  # δ: [batch, n_out]\n        dW = x.T @ dz",
                "dz = da  # δ: [batch, n_out]\n        dW = x.T @ dz",
            ),
        ),
        ("tests/test_grads.py", "-k", "float64_grid and tanh"),
    ),
    Bug(
        "Dense: ∂W from da instead of δ",
        "jaxnet/layers.py",
        (("dW = x.T @ dz  # [n_in, batch] @ [batch, n_out]", "dW = x.T @ da  # [n_in, batch] @ [batch, n_out]"),),
        ("tests/test_grads.py", "-k", "float64_grid and tanh"),
    ),
    Bug(
        "output delta without the 1/N",
        "jaxnet/network.py",
        (("dout = r * head.delta(out, y)", "dout = head.delta(out, y)"),),
        ("tests/test_grads.py", "-k", "float64_grid and mean"),
    ),
    Bug(
        "L2 gradient doubled",
        "jaxnet/network.py",
        (
            (
                "{name: g + l2 * params[i][name] if name in names else g",
                "{name: g + 2 * l2 * params[i][name] if name in names else g",
            ),
        ),
        ("tests/test_grads.py", "-k", "float64_grid and 0.1"),
    ),
    # training
    Bug(
        "epoch key without fold_in (the same shuffle every epoch)",
        "jaxnet/train.py",
        (("    return jax.random.fold_in(key, epoch)\n", "    return key\n"),),
        ("tests/test_train.py", "-k", "documented_key"),
    ),
    Bug(
        "data-parallel: one device's shard only (no all-reduce)",
        "jaxnet/train.py",
        (
            (
                "return lambda a: jax.lax.with_sharding_constraint(a, sharding)",
                "return lambda a: jax.lax.with_sharding_constraint(a, sharding)[: a.shape[0] // devices]",
            ),
        ),
        ("tests/test_parallel.py", "-k", "two_devices"),
    ),
    # where the references run (a GPU's float64 jax.grad was 2e-10 off; TF32 in the spot check)
    Bug(
        "float64 references on the working device",
        "jaxnet/devices.py",
        (('                return jax.devices("cpu")[0]\n', "                return working_device(like)\n"),),
        ("tests/test_reference_backend.py", "-k", "inexact_working_backend"),
    ),
    Bug(
        "spot check's reference at the default matmul precision",
        "jaxnet/train.py",
        (
            (
                '    with jax.default_matmul_precision("highest"):  # applies when traced',
                "    if True:  # applies when traced",
            ),
        ),
        ("tests/test_reference_backend.py", "-k", "spot_check"),
    ),
    # the checker's own comparison
    Bug(
        "gradcheck: a NaN reference compares as ok",
        "jaxnet/gradcheck.py",
        (("    finite = np.isfinite(yours) & np.isfinite(reference)\n", "    finite = np.isfinite(yours)\n"),),
        ("tests/test_gradcheck.py", "-k", "nan_or_inf"),
    ),
    Bug(
        "gradcheck: every row of the table says ok",
        "jaxnet/gradcheck.py",
        (('"ok" if r.ok else "FAIL"', '"ok"'),),
        ("tests/test_gradcheck.py", "-k", "table_says"),
    ),
]

NO_BUG = Bug(
    "no bug",
    "jaxnet/__init__.py",
    (),
    (  # cases of the main run: the copy runs without -m slow
        "tests/test_loss_definitions.py::test_the_numpy_reference_sees_the_definitions",
        "tests/test_cnn.py::test_conv2d_other_explicit_padding[2-even]",
        "tests/test_cnn.py::test_pooling[MaxPool2D-overlap-s2-odd-1ch]",
        "tests/test_grads.py::test_float64_grid[2-leaky_relu-softmax_cross_entropy-mean-0.1-True]",
        "tests/test_train.py::test_each_epoch_is_shuffled_by_its_own_documented_key",
        "tests/test_parallel.py::test_two_devices_train_like_one",
        "tests/test_gradcheck.py::test_nan_or_inf_on_either_side_is_a_failure",
        "tests/test_gradcheck.py::test_the_table_says_which_rows_fail",
        "tests/test_reference_backend.py::test_the_spot_check_reference_runs_at_highest_precision",
    ),
)

_RECORD = """

import os as _planted_os

if _planted_os.environ.get("JAXNET_IMPORTED_FROM"):  # appended by test_planted_bugs: which jaxnet ran
    import jaxnet as _planted_jaxnet

    with open(_planted_os.environ["JAXNET_IMPORTED_FROM"], "w") as _f:
        _f.write(_planted_jaxnet.__file__)
"""


def _planted_copy(tmp: Path, bug: Bug) -> Path:
    """The package, tests and pyproject.toml copied under ``tmp`` with ``bug``'s edits made."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "jaxnet", tmp / "jaxnet", ignore=ignore)
    shutil.copytree(ROOT / "tests", tmp / "tests", ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tmp / "pyproject.toml")
    with open(tmp / "tests" / "conftest.py", "a") as f:
        f.write(_RECORD)
    target = tmp / bug.path
    text = target.read_text()
    for old, new in bug.edits:
        assert text.count(old) == 1, f"{bug}: {old!r} occurs {text.count(old)} times in {bug.path}, not once"
        text = text.replace(old, new)
    target.write_text(text)
    return tmp


@pytest.mark.slow
@pytest.mark.parametrize("bug", [NO_BUG, *BUGS], ids=str)
def test_a_planted_bug_turns_a_test_red(bug, tmp_path):
    tmp = _planted_copy(tmp_path, bug)
    record = tmp / "imported.txt"
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp),
        "JAXNET_IMPORTED_FROM": str(record),
        "JAX_PLATFORMS": "cpu",
        "COLUMNS": "1000",
    }  # the summary's FAILED line in full
    env.pop("XLA_FLAGS", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-n", "0", "-p", "no:cacheprovider", *bug.tests],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    tail = (result.stdout + result.stderr)[-3000:]
    assert Path(record.read_text()) == tmp / "jaxnet" / "__init__.py", record.read_text()  # the mutated copy ran
    expected = 0 if bug is NO_BUG else 1
    assert result.returncode == expected, f"{bug}: pytest exited {result.returncode}, expected {expected}\n{tail}"
    if bug is NO_BUG:
        assert " passed" in tail and "deselected" not in tail, tail
    else:  # a test failed on an assertion (a check saw the bug), not on an error such as a shape mismatch
        failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED ")]
        assert len(failed) == 1 and (" - AssertionError" in failed[0] or " - assert " in failed[0]), (
            f"{bug}: {failed}\n{tail}"
        )
        print(f"{bug}: {failed[0][:300]}")  # which test saw it (shown with -s or -rP)
