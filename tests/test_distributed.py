"""Several processes for real (issue 20): ``jaxnet train --processes 2 --devices 4`` starts two
processes on localhost, two CPU devices each, joined by ``jax.distributed.initialize`` (Gloo
collectives), and trains to the params of one process with four devices; a checkpoint written by
either layout resumes in the other. The slow tests run the processes (each in a subprocess with a
bounded timeout, its whole process group killed on overrun); the others check the flags, the
launcher's handling of processes that fail (with stand-in commands that do not start JAX) and
the single-process behaviour of :mod:`jaxnet.distributed`."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnet import cli, distributed, train
from jaxnet.cli import processes, settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPIRAL = ["train", "--preset", "000-spiral", "--quiet"]  # 210 examples, batch 32: 6 steps an epoch


def flags(*argv):
    """The parsed ``jaxnet`` flags of ``argv``."""
    return cli.build_parser().parse_args(list(argv))


# --- the flags ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--processes", "2"], "--processes 2: give --devices N"),
        (["--processes", "2", "--devices", "3"], "--devices 3 --processes 2: every process holds the same number"),
        (["--processes", "2", "--devices", "4", "--seeds", "2"], "not supported with --seeds/--sweep"),
        (["--process-id", "1"], "--process-id: names this process"),
        (["--processes", "2", "--devices", "4", "--process-id", "1"], "give --coordinator HOST:PORT"),
        (["--coordinator", "localhost:1234"], "--coordinator: joins several processes"),
        (["--processes", "2", "--devices", "4", "--coordinator", "localhost:1234"], "give --process-id I too"),
        (["--processes", "2", "--devices", "4", "--coordinator", "localhost", "--process-id", "0"], "'host:port'"),
        (["--processes", "2", "--devices", "4", "--coordinator", "h:99999", "--process-id", "0"], "1..65535"),
        (["--processes", "2", "--devices", "4", "--coordinator", "h:1", "--process-id", "2"], "expected 0 .. 1"),
    ],
)
def test_flags_that_do_not_go_together_are_refused(argv, message):
    with pytest.raises(ValueError) as e:
        processes.layout(flags("train", *argv))
    assert message in str(e.value)


def test_each_way_to_run():
    """One process; the launcher; one of the processes."""
    assert processes.layout(flags("train")) == processes.Layout()
    assert processes.layout(flags("train", "--processes", "1", "--devices", "3")) == processes.Layout()
    launcher = processes.layout(flags("train", "--processes", "2", "--devices", "4"))
    assert launcher.launches and not launcher.joins and launcher.processes == 2
    one = processes.layout(
        flags("train", "--processes", "2", "--devices", "4", "--coordinator", "10.0.0.1:1234", "--process-id", "1")
    )
    assert one == processes.Layout(2, "10.0.0.1:1234", 1) and one.joins and not one.launches


def test_the_command_refuses_them_before_anything_runs(capsys, tmp_path):
    """Exit code 2 and the reason, before any folder is made; a non-positive count is argparse's error."""
    out = tmp_path / "run"
    assert cli.main([*SPIRAL, "--processes", "2", "--devices", "3", "--out", str(out)]) == 2
    assert "--devices must be a multiple of 2" in capsys.readouterr().err and not out.exists()
    for argv in (["--processes", "0"], ["--process-id", "-1"]):
        with pytest.raises(SystemExit) as e:
            cli.main([*SPIRAL, *argv])
        assert e.value.code == 2
    assert "must be a positive integer, got 0" in capsys.readouterr().err


def test_joined_processes_train_on_all_devices(monkeypatch):
    """With several processes (here pretended), --devices must be all devices of all of them."""
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "device_count", lambda: 4)
    for devices, message in (("2", "with 2 processes, train on all 4 devices"), ("8", r"only 4 cpu device\(s\)")):
        with pytest.raises(ValueError, match=message):
            settings.resolve(flags(*SPIRAL, "--devices", devices))
    assert settings.resolve(flags(*SPIRAL, "--devices", "4")).devices == 4


def test_layout_checks_of_the_library():
    distributed.check_layout(2, 1, "host:1")
    for args, message in (
        ((0, 0, "h:1"), "processes must be a positive integer"),
        ((2, 2, "h:1"), "process_id must be an integer in [0, 2)"),
        ((2, True, "h:1"), "process_id must be"),
        ((2, 0, ":1"), "coordinator: expected 'host:port'"),
    ):
        with pytest.raises(ValueError) as e:
            distributed.check_layout(*args)
        assert message in str(e.value)
    assert distributed.parse_address("[::1]:80") == ("[::1]", 80)


# --- the launcher, with stand-in commands ---------------------------------------------------------


def stand_in(script):
    """A ``command(coordinator, i)`` for :func:`distributed.launch_local` that runs ``script`` (Python,
    no JAX) with ``sys.argv[1:] == [coordinator, i]``."""
    return lambda coordinator, i: [sys.executable, "-c", textwrap.dedent(script), coordinator, str(i)]


def test_the_launcher_runs_every_process_and_shows_process_0s_output(capsys, tmp_path):
    script = f"""
        import os, sys
        coordinator, i = sys.argv[1:]
        open(os.path.join({str(tmp_path)!r}, i), "w").write(coordinator)
        if i == "0":
            print("hello", os.environ["JAX_PLATFORMS"], os.environ["JAX_NUM_CPU_DEVICES"], os.environ["EXTRA"])
            print("[Gloo] Rank 0 is connected to 3 peer ranks.")
            print("bye")
        else:
            print("process 1 says nothing that is shown")
    """
    assert distributed.launch_local(stand_in(script), 2, 3, env={"EXTRA": "x"}) is None
    assert capsys.readouterr().out == "hello cpu 3 x\nbye\n"  # the Gloo line left out
    coordinators = {(tmp_path / i).read_text() for i in "01"}
    assert len(coordinators) == 1 and coordinators.pop().startswith("127.0.0.1:")


def test_a_failing_process_stops_the_others_and_names_itself(monkeypatch):
    """Process 1 fails at once while process 0 would run a minute, deaf to SIGINT (as a process blocked
    in a collective is): process 0 is killed, and the error names process 1, its code and its output."""
    monkeypatch.setattr(distributed, "STOP_GRACE", 0.5)
    script = """
        import signal, sys, time
        if sys.argv[2] == "0":
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            time.sleep(60)
        print("boom: the reason", file=sys.stderr)
        sys.exit(3)
    """
    begin = time.monotonic()
    with pytest.raises(distributed.ProcessFailed) as e:
        distributed.launch_local(stand_in(script), 2, 1)
    assert time.monotonic() - begin < 20
    assert (e.value.process_id, e.value.returncode) == (1, 3) and "boom: the reason" in e.value.output
    assert str(e.value) == "process 1 of 2 exited with code 3; the others were stopped"


def test_a_killed_process_and_an_overrun_fail_too(monkeypatch):
    monkeypatch.setattr(distributed, "STOP_GRACE", 0.5)
    killed = "import os, signal, sys, time\nif sys.argv[2] == '1': os.kill(os.getpid(), signal.SIGKILL)\ntime.sleep(60)"
    with pytest.raises(distributed.ProcessFailed, match="process 1 of 2 was killed by signal 9") as e:
        distributed.launch_local(stand_in(killed), 2, 1)
    assert e.value.returncode == -signal.SIGKILL
    begin = time.monotonic()
    with pytest.raises(TimeoutError, match=r"did not finish within 0\.5 s"):
        distributed.launch_local(stand_in("import time; time.sleep(60)"), 3, 1, timeout=0.5)
    assert time.monotonic() - begin < 20
    for bad in ((1, 1), (2, 0)):
        with pytest.raises(ValueError):
            distributed.launch_local(stand_in("pass"), *bad)


# --- one process: the functions are what they are there ------------------------------------------


def test_in_one_process():
    """``to_host`` fetches arrays (keys stay keys), ``replicate`` over one device leaves the tree, every
    process is process 0, and ``all_ok`` is its argument."""
    key = jax.random.key(3)
    tree = {"a": jnp.arange(3.0), "k": key, "s": 2.5, "n": np.ones(2), "none": None}
    host = distributed.to_host(tree)
    assert isinstance(host["a"], np.ndarray) and host["a"].tolist() == [0.0, 1.0, 2.0]
    assert jnp.array_equal(jax.random.key_data(host["k"]), jax.random.key_data(key)) and host["s"] == 2.5
    assert host["n"] is tree["n"] and host["none"] is None
    assert train.replicate(tree, None) is tree and train.replicate(tree, 1) is tree
    assert distributed.is_main_process() and distributed.all_ok(True) and not distributed.all_ok(False)


def test_starting_together_in_one_process():
    with processes.starting_together() as ready:
        ready()
    with pytest.raises(RuntimeError, match="before ready"), processes.starting_together():
        raise RuntimeError("before ready")


# --- the processes, for real (slow) ----------------------------------------------------------------


def run_bounded(argv, env=None, timeout=240):
    """``argv`` in ROOT in a session of its own, killed with all its processes after ``timeout``
    seconds: ``(exit code, stdout, stderr)``."""
    env = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(argv)} ran past {timeout} s:\n{out[-2000:]}\n{err[-3000:]}")
    return proc.returncode, out, err


FOUR_DEVICES = {"JAX_NUM_CPU_DEVICES": "4", "JAX_PLATFORMS": "cpu"}


def jaxnet_train(*argv, layout):
    """``python -m jaxnet train`` on the spiral preset: ``layout`` "2x2" (``--processes 2 --devices 4``) or
    "1x4" (one process with 4 CPU devices, ``--devices 4``)."""
    command = [sys.executable, "-m", "jaxnet", *SPIRAL, "--devices", "4", *argv]
    if layout == "2x2":
        return run_bounded([*command, "--processes", "2"])
    return run_bounded(command, FOUR_DEVICES)


def params_of(folder):
    """The params and step of ``folder``'s checkpoint, and its metrics.json."""
    with np.load(os.path.join(folder, "checkpoint.npz")) as ck:
        params = [ck[name] for name in sorted(ck.files) if name.startswith("params_")]
    with open(os.path.join(folder, "metrics.json")) as f:
        return params, json.load(f)


def gap(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """3 epochs in each layout: ``{layout: (folder, exit code, stdout, stderr, seconds)}``."""
    runs = {}
    for layout in ("2x2", "1x4"):
        folder = tmp_path_factory.mktemp("run") / layout
        begin = time.monotonic()
        runs[layout] = (folder, *jaxnet_train("--epochs", "3", "--out", str(folder), layout=layout))
        runs[layout] += (time.monotonic() - begin,)
    return runs


@pytest.mark.slow
def test_two_processes_train_like_one_process_with_four_devices(uninterrupted):
    """The same params (float32, 1e-5) and metrics; process 0 alone prints (one summary, no Gloo
    lines) and writes (one set of outputs)."""
    (two, code, out, err, _), (one, code_one, _, err_one, _) = uninterrupted["2x2"], uninterrupted["1x4"]
    assert code == 0 and code_one == 0, err + err_one
    assert "device cpu x 4 (data-parallel, 2 processes)" in out and out.count("3 epochs, 18 steps") == 1
    assert "[Gloo]" not in out
    (p2, m2), (p1, m1) = params_of(two), params_of(one)
    assert gap(p2, p1) < 1e-5 < gap(p1, [p + 1e-4 for p in p1])  # a gap of 1e-4 would fail it
    assert (m2["processes"], m1["processes"], m2["devices"], m2["steps"]) == (2, 1, 4, 18)
    for name in ("train_loss", "val_loss", "val_accuracy", "train_step_loss"):
        assert np.allclose(m2["history"][name], m1["history"][name], rtol=0, atol=1e-5), name
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("first, then", [("2x2", "1x4"), ("1x4", "2x2")])
def test_a_checkpoint_resumes_in_the_other_layout(uninterrupted, tmp_path, first, then):
    """2 epochs in one layout, resumed to 3 in the other: the uninterrupted run's params and history."""
    folder = tmp_path / "run"
    code, _, err = jaxnet_train("--epochs", "2", "--out", str(folder), layout=first)
    assert code == 0, err
    code, _, err = jaxnet_train("--epochs", "3", "--resume", str(folder / "checkpoint.npz"), layout=then)
    assert code == 0, err
    (params, metrics), (reference, ref_metrics) = params_of(folder), params_of(uninterrupted["1x4"][0])
    assert gap(params, reference) < 1e-5 and metrics["steps"] == 18
    assert metrics["processes"] == (2 if then == "2x2" else 1)
    assert np.allclose(metrics["history"]["val_loss"], ref_metrics["history"]["val_loss"], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_a_refused_start_stops_every_process(uninterrupted):
    """Process 0 refuses --out (another run's outputs there): every process stops before training, exit 2."""
    begin = time.monotonic()
    code, _, err = jaxnet_train("--epochs", "3", "--out", str(uninterrupted["1x4"][0]), layout="2x2")
    assert code == 2 and time.monotonic() - begin < 120
    assert "holds another run's outputs" in err
    assert re.search(r"(process 0 of 2|processes 0, 1 of 2 failed: 0) exited with code 2", err), err


def joined_by_hand(per_process):
    """Two ``jaxnet train`` commands joined by --coordinator/--process-id (as on two machines), each
    with its own flags ``per_process[i]``: ``(processes, [(stdout, stderr)])``."""
    coordinator = f"127.0.0.1:{distributed.free_port()}"
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_NUM_CPU_DEVICES": "2", "JAX_PLATFORMS": "cpu"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "jaxnet", *SPIRAL, *argv]
            + ["--devices", "4", "--processes", "2", "--coordinator", coordinator, "--process-id", str(i)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for i, argv in enumerate(per_process)
    ]
    try:
        results = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    return procs, results


@pytest.mark.slow
def test_only_process_0_prints_and_writes(tmp_path):
    """Each process is given its own --out: process 0's gets the run's files and its stdout the
    summary; process 1 prints nothing (the Gloo library's connection lines aside) and makes no folder."""
    procs, results = joined_by_hand([["--epochs", "2", "--out", str(tmp_path / f"run{i}")] for i in range(2)])
    assert [proc.returncode for proc in procs] == [0, 0], results
    ours = [line for line in results[1][0].splitlines() if not line.startswith("[Gloo]")]  # Gloo's own lines aside
    assert "2 epochs, 12 steps" in results[0][0] and ours == []
    assert (tmp_path / "run0" / "checkpoint.npz").exists() and not (tmp_path / "run1").exists()


@pytest.mark.slow
def test_processes_started_by_hand_refuse_to_start_from_different_data(tmp_path):
    """Two commands joined by --coordinator/--process-id (as on two machines), each given its own --data
    file: both stop before training, exit 2, and process 0 removes the folder it made."""
    for name in "ab":
        x = np.random.default_rng(ord(name)).normal(size=(60, 2))
        np.savez(tmp_path / f"{name}.npz", x=x, y=(x[:, 0] > 0).astype(int))
    procs, results = joined_by_hand(
        [["--epochs", "2", "--data", str(tmp_path / f"{name}.npz"), "--out", str(tmp_path / "run")] for name in "ab"]
    )
    assert [proc.returncode for proc in procs] == [2, 2], results
    assert all("the processes do not start alike" in err for _, err in results)
    assert not (tmp_path / "run").exists()


FIT = textwrap.dedent("""
    import json, os, sys
    import jax
    from jaxnet import distributed
    if len(sys.argv) > 1:  # one of two processes
        distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
    import jax.numpy as jnp, numpy as np, optax
    import jaxnet
    from jaxnet import data, train

    x, y = data.spiral(24, 3, seed=0)  # 72 examples
    net = jaxnet.sequential((2,), [jaxnet.Dense(16), jaxnet.BatchNorm(), jaxnet.Activation("relu"),
                                   jaxnet.Dropout(0.2), jaxnet.Dense(3)])

    def on_epoch(epoch, params, opt_state, step, metrics, state):
        if epoch == 2 and os.environ.get("DIE") == str(jax.process_index()):
            raise RuntimeError("planted failure")

    opt = optax.sgd(0.1, momentum=0.9)
    r = train.fit(net, jaxnet.init_params(jax.random.key(0), net), x, y, opt, 3, 24,
                  jax.random.key(1), val=(x[:20], y[:20]), devices=4, on_epoch=on_epoch)
    train.CALL_SECONDS = 1e3 if jax.process_index() == 0 else 1e-9  # clocks that ask for other counts
    several = train.fit(net, jaxnet.init_params(jax.random.key(0), net), x, y, opt, 7, 24,
                        jax.random.key(1), val=(x[:20], y[:20]), devices=4, epochs_per_call="auto")
    placed = train.replicate({"key": jax.random.key(5), "step": 7, "w": np.ones(3, np.float32)}, 4)
    sharded = jax.device_put(jnp.arange(8.0), jax.sharding.NamedSharding(train.device_mesh(4),
                                                                         jax.sharding.PartitionSpec("data")))
    out = {
        "processes": jax.process_count(),
        "params": [a.tolist() for a in jax.tree.leaves(distributed.to_host(r.params))],
        "state": [a.tolist() for a in jax.tree.leaves(distributed.to_host(r.state))],
        "history": r.history, "step": r.step,
        "several": [a.tolist() for a in jax.tree.leaves(distributed.to_host((several.params, several.state)))],
        "several_history": several.history,
        "global": [bool(a.is_fully_replicated) for a in jax.tree.leaves(placed)],
        "key": jax.random.key_data(distributed.to_host(placed["key"])).tolist(),
        "gathered": distributed.to_host(sharded).tolist(),
        "all_ok": [distributed.all_ok(True), distributed.all_ok(jax.process_index() == 0)],
        "same": [distributed.same_everywhere(b"x"), distributed.same_everywhere(bytes([jax.process_index()]))],
        "from_main": distributed.from_main(jax.process_index() + 5),
    }
    assert out["from_main"] == 5, out["from_main"]  # in every process: a failure fails the launch
    if distributed.is_main_process():
        print(json.dumps(out))
""")


LAUNCH = textwrap.dedent("""
    import sys
    from jaxnet import distributed
    try:
        distributed.launch_local(lambda c, i: [sys.executable, sys.argv[1], c, str(i)], 2, 2)
    except distributed.ProcessFailed as e:
        sys.exit(f"{e}\\n{e.output}")
""")


@pytest.mark.slow
def test_fit_over_two_processes(tmp_path):
    """``fit`` on a network with BatchNorm and Dropout (its state and keys), through the library: 2
    processes of 2 devices as 1 process of 4; ``replicate`` places keys and scalars, ``to_host`` gathers
    a sharded array, ``all_ok`` is false when one process says no. A process that raises mid-training
    fails the launch at once, naming it."""
    script = tmp_path / "fit.py"
    script.write_text(FIT)
    code, out, err = run_bounded([sys.executable, "-c", LAUNCH, str(script)])
    assert code == 0, err[-3000:]
    two = json.loads(out.strip().splitlines()[-1])
    code, out, err = run_bounded([sys.executable, str(script)], FOUR_DEVICES)
    assert code == 0, err[-3000:]
    one = json.loads(out.strip().splitlines()[-1])
    assert (two["processes"], one["processes"], two["step"]) == (2, 1, 9)
    for name in ("params", "state"):
        assert gap([np.array(a) for a in two[name]], [np.array(a) for a in one[name]]) < 1e-5, name
    for name, values in one["history"].items():
        assert np.allclose(two["history"][name], values, rtol=0, atol=1e-5), name
    # several epochs a call, each process's clock asking for another count (fit takes process 0's: from_main)
    assert two["from_main"] == one["from_main"] == 5
    assert gap([np.array(a) for a in two["several"]], [np.array(a) for a in one["several"]]) < 1e-5
    assert all(len(v) == 7 for v in two["several_history"].values())
    for name, values in one["several_history"].items():
        assert np.allclose(two["several_history"][name], values, rtol=0, atol=1e-5, equal_nan=True), name
    assert two["global"] == [True, True, True] and two["key"] == one["key"]
    assert two["gathered"] == list(range(8)) and two["all_ok"] == [True, False] and two["same"] == [True, False]

    begin = time.monotonic()
    code, out, err = run_bounded(
        [sys.executable, "-c", LAUNCH, str(script)],
        {"DIE": "1"},
    )
    assert code == 1 and time.monotonic() - begin < 120
    assert re.search(r"process 1 of 2|processes 0, 1 of 2 failed:", err) and "RuntimeError: planted failure" in err
