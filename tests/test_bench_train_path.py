"""experiments/bench_train_path.py without running it: the targets' verdicts and the tables on
made-up numbers, the refusal to write the committed results from a quick run, and that
experiments/baselines/torch_presets.py trains what ``jaxnet train --preset P`` trains (the
network, settings and split of every preset it covers; with PyTorch installed, the same initial
loss and the same first optimizer step from the same params)."""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet
from jaxnet.presets import TRAIN_PRESETS

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
try:
    import bench_train_path as btp
    from baselines import torch_presets, workloads
finally:  # the scripts put experiments/ on sys.path too: take every copy off
    while str(ROOT / "experiments") in sys.path:
        sys.path.remove(str(ROOT / "experiments"))

INFO = {"torch": "2.0", "cores": 2, "cpu": "a CPU", "python": "3", "jax": "0", "jaxlib": "0"}
INFO |= {"jax_backend": "cpu", "numpy": "2"}


def _preset(mlp=True, epochs=10):
    return {"mlp": mlp, "epochs": epochs, "steps_per_epoch": 6, "eval_every": None, "torch": True}


def _made_up(rounds=2):
    """Two presets (``fast`` meets every target, ``slow`` misses its warm time and its steady ratio),
    one call workload that meets its target and one that misses it."""
    settings = {"rounds": rounds, "calibration_rounds": 1, "presets": None, "epochs": None, "window_s": 0.5}
    settings |= {"fit_epochs": None, "timeout_s": 1.0, "quick": False, "command": "python bench"}
    data = btp.empty_data({"fast": _preset(), "slow": _preset()}, INFO, settings)
    data["meta"] |= {"date": "2026-01-01", "minutes": 1.0, "load_before": [0.1], "load_after": [0.2]}
    counts = {"programs": 15, "xla_compiles": 15, "cache_hits": 0, "compile_s": 1.5}
    walls = {"fast": (2.0, 1.0, 1.2), "slow": (2.5, 1.9, 1.5)}  # cold, warm, PyTorch
    for p, (cold, warm, torch) in walls.items():
        data["train"][p] = {
            "plain cold": [{"wall_s": cold, "test": {"accuracy": 0.9}}] * rounds,
            "plain warm": [{"wall_s": warm}] * rounds,
            "wrapper cold": [{"wall_s": cold, **counts}] * rounds,
            "wrapper warm": [{"wall_s": warm, **counts, "cache_hits": 15}] * rounds,
        }
        data["torch"][p] |= {"threads": 1, "runs": [{"wall_s": torch, "final": {"test": {"accuracy": 0.8}}}] * rounds}
        data["steady"][p]["make_epoch"]["runs"] = [{"steps_per_s": 1000.0}] * rounds
        fit = {"steps_per_s": 900.0 if p == "fast" else 700.0, "e1": 2, "e2": 50, "programs_in_timed_calls": 0}
        data["steady"][p]["fit"]["runs"] = [fit] * rounds
    for w, fit_rate in zip(data["call"], (2000.0, 500.0)):
        data["call"][w] |= {"threads": 1, "fit": [{"first_call_steps_per_s": fit_rate}] * rounds}
        data["call"][w]["torch"] = [{"steps_per_s": 1000.0}] * rounds
    return data


def test_the_targets_follow_from_the_numbers():
    rows = btp.targets(_made_up())
    by = {(r["subject"], r["target"]): r for r in rows}
    assert by[("fast", "`jaxnet train` cold ≤ 3 s")]["verdict"] == "met"
    assert by[("fast", "`jaxnet train` warm ≤ 1.5 s")]["verdict"] == "met"
    assert by[("fast", "`jaxnet train` warm ≤ the PyTorch script")]["verdict"] == "met"
    assert by[("slow", "`jaxnet train` warm ≤ 1.5 s")]["verdict"] == "missed"
    assert by[("slow", "`jaxnet train` warm ≤ the PyTorch script")]["verdict"] == "missed"  # 1.9 s vs 1.5 s
    assert by[("fast", "`fit` steady ≥ 0.8× `make_epoch`")]["verdict"] == "met"
    assert by[("slow", "`fit` steady ≥ 0.8× `make_epoch`")]["value"] == pytest.approx(0.7)
    assert by[("slow", "`fit` steady ≥ 0.8× `make_epoch`")]["verdict"] == "missed"
    calls = [r["verdict"] for r in rows if r["target"].startswith("one `fit` call")]
    assert calls == ["met", "missed"]


def test_the_rendered_tables_mark_a_missed_target_as_missed():
    text = btp.render(_made_up(rounds=1))
    assert "6 of 10 met, 4 missed." in text
    assert "| `jaxnet train` warm ≤ 1.5 s | slow | 1.90 s | missed |" in text
    assert "| `fit` steady ≥ 0.8× `make_epoch` | slow | 0.70× | missed |" in text
    assert "| `jaxnet train` cold ≤ 3 s | fast | 2.00 s | met |" in text
    assert "| slow | 10 × 6 | 2.50 | 1.90 | 1.50 [1 thr] | 1.27× | 1.67× | 15 (15) | 1.50 | 15 (15) |" in text
    assert "acc 0.900 / 0.800" in text
    assert "Failed runs" not in text


def test_a_failed_run_is_not_measured_and_listed():
    data = _made_up()
    data["train"]["slow"]["plain warm"][1] = {"error": "exit 1: boom"}
    text = btp.render(data)
    assert "| `jaxnet train` warm ≤ 1.5 s | slow | n/a | n/a |" in text
    assert "| `jaxnet train` warm ≤ the PyTorch script | slow | n/a | n/a |" in text
    assert "6 of 10 met, 2 missed, 2 not measured." in text
    assert "- slow, jaxnet train plain warm: exit 1: boom" in text


def test_a_non_mlp_preset_has_no_train_targets():
    data = _made_up()
    data["presets"]["slow"]["mlp"] = False
    subjects = {r["subject"] for r in btp.targets(data) if r["target"].startswith("`jaxnet train`")}
    assert subjects == {"fast"}


def test_compile_counts_of_the_wrapper():
    events = btp.EVENTS
    result = {"counts": {events["programs"]: 15, events["cache_hits"]: 12, events["lowerings"]: 15}}
    result["seconds"] = {events["programs"]: 1.0, events["lowerings"]: 0.5, events["traces"]: 0.25}
    counts = btp.compile_counts(result)
    assert counts["xla_compiles"] == 3 and counts["compile_s"] == 1.5 and counts["trace_s"] == 0.25
    assert "counts" not in result


def test_a_quick_run_refuses_the_committed_results(capsys):
    assert btp.main(["--quick", "--out", str(btp.RESULTS)]) == 2
    assert "never writes" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(torch_presets.PRESETS))
def test_the_torch_script_trains_the_preset_as_jaxnet_train_does(name):
    """The same network (layers, activations, loss, L2), data set, optimizer, lr, epochs and batch
    size, and the identical standardised split (loaded without JAX)."""
    s, p = btp.preset_settings(name), torch_presets.PRESETS[name]
    split = torch_presets.load_split(name)
    for a in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(split, a), getattr(s.split, a))
    k = torch_presets.outputs(name, split)
    assert torch_presets.description(name, split.x_train.shape[1:], k) == workloads.describe(s.net)
    assert (p["dataset"], p["kwargs"]) == (TRAIN_PRESETS[name].dataset, TRAIN_PRESETS[name].dataset_kwargs)
    assert (p["optimizer"], p["lr"], p["epochs"]) == (s.optimizer, s.lr, s.epochs)
    assert min(p["batch"] or len(split.x_train), len(split.x_train)) == s.batch_size


@pytest.mark.parametrize(
    "name",
    ["000-spiral"] + [pytest.param(n, marks=pytest.mark.slow) for n in ("001-regression", "digits", "cnn")],
)  # 000-spiral: SGD with L2 on the biases too; the others: the RSS, Adam with L2, the CNN's flattening
def test_the_torch_model_starts_from_jaxnets_loss_and_takes_its_first_step(name):
    """From jaxnet's initial params: the same loss (L2 included), and after one optimizer step on
    a batch (PyTorch: weight_decay for the L2 term) the same params."""
    torch = pytest.importorskip("torch")
    from baselines.torch_loop import torch_model

    s = btp.preset_settings(name)
    params = jaxnet.init_params(jax.random.key(0), s.net)
    net = workloads.describe(s.net)
    model = torch_model(net, [{k: np.array(v) for k, v in p.items()} for p in params])
    xs, ys = s.split.x_train[:64].astype(np.float32), s.split.y_train[:64]
    x, y = torch_presets.tensors(xs, ys, net["loss"])
    jx, jy = jaxnet.network.inputs_as(s.net, xs, jnp.float32), jnp.asarray(ys)
    expected, grads = jax.jit(jax.value_and_grad(jaxnet.loss))(params, s.net, jx, jy)  # one program: fast
    assert torch_presets.loss_value(net, model, x, y) == pytest.approx(float(expected), rel=1e-5)

    optimizer = s.optimizer_transform()
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    stepped = jax.tree.map(lambda p, u: p + u, params, updates)
    opt = torch_presets.optimizer(name, net, model)
    torch_presets.data_loss(net, model(x), y).backward()
    opt.step()
    twin = torch_model(net, [{k: np.array(v) for k, v in p.items()} for p in stepped])
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_the_phase_profile_splits_a_run_and_renders_its_medians():
    phases = {"imports": 1.0, "fit_start": 1.3, "fit": 0.5, "fit_end": 1.8, "evaluate": 0.1, "evaluate_end": 1.95}
    profile = btp.phase_profile({**phases, "init_params": 0.1, "total": 2.5})
    assert profile == pytest.approx(
        {"imports": 1.0, "setup": 0.3, "fit": 0.5, "evaluate": 0.1, "after": 0.55, "total": 2.5}
    )
    data = _made_up()
    for p in data["train"]:
        for phase in ("cold", "warm"):
            runs = data["train"][p][f"wrapper {phase}"]
            data["train"][p][f"wrapper {phase}"] = [dict(r, phases=profile) for r in runs]
    rows = [line for line in btp.profile_section(data) if line.startswith("| fast |")]
    assert rows == [
        "| fast | cold | 1.00 | 0.30 | 0.50 | 0.10 | 0.55 | 2.50 | 1.50 |",
        "| fast | warm | 1.00 | 0.30 | 0.50 | 0.10 | 0.55 | 2.50 | 1.50 |",
    ]
