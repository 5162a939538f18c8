"""`jaxnet train` on a bad day, through the console script in a temporary folder: every run writes
into a folder of its own and never over another run's outputs, bad paths and flag combinations are
refused before training with the flag and the reason named, a resume checks the data's content and
that there is something left to train, a failed run never exits 0, and what it prints lines up.

The cases that need no subprocess to be believed (the refusals decided before any training) also
run in-process, where they cost nothing; the console-script versions of the rest are `-m slow`."""

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from jaxnet import checkpoint, cli, train
from jaxnet.cli.output import number
from tests.helpers import lean

FAST = ["--preset", "000-spiral", "--batch-size", "0", "--quiet"]  # 1 step an epoch


def jaxnet_script(*args, cwd):
    """``jaxnet ARGS`` (the installed console script) in ``cwd``: (exit code, stdout, stderr)."""
    script = shutil.which("jaxnet")
    assert script, "the jaxnet console script is not installed (python -m pip install -e .)"
    done = subprocess.run([script, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


def metrics(folder):
    with open(os.path.join(folder, "metrics.json")) as f:
        return json.load(f)


@pytest.mark.slow  # the console script trains twice; the in-process tests below cover the folder rules
def test_each_run_gets_its_own_folder(tmp_path):
    """Two runs without --out: two folders under runs/, each with its own outputs."""
    for _ in range(2):
        code, out, err = jaxnet_script("train", *FAST, "--epochs", "1", cwd=tmp_path)
        assert code == 0, err
    first, second = sorted((tmp_path / "runs").iterdir())
    assert re.fullmatch(r"000-spiral-\d{8}-\d{6}(-\d+)?", first.name) and first.name != second.name
    for run in (first, second):
        assert {"metrics.json", "checkpoint.npz", "curves.png", "decision_boundary.png"} <= {
            p.name for p in run.iterdir()
        }
    assert f"wrote {second.relative_to(tmp_path)}/metrics.json" in out


def test_a_folder_with_another_run_is_refused_and_force_replaces_all_of_it(tmp_path, capsys):
    """--out naming a folder that holds a run is refused (exit 2, before training); --force
    replaces every output, so nothing of the older run is left."""
    run = tmp_path / "run"
    assert cli.main(["train", *FAST, "--epochs", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    assert cli.main(["train", *FAST, "--epochs", "2", "--out", str(run)]) == 2
    printed = capsys.readouterr()
    assert "jaxnet train:" not in printed.out  # refused before the run starts
    assert (
        f"--out {run} holds another run's outputs (metrics.json, checkpoint.npz" in printed.err
        and "--force" in printed.err
    )
    assert metrics(run)["epochs"] == 1
    (run / "fit.png").write_bytes(b"a stale plot of an older regression run")
    assert cli.main(["train", *FAST, "--epochs", "2", "--out", str(run), "--force"]) == 0
    assert metrics(run)["epochs"] == 2 and not (run / "fit.png").exists()


@pytest.mark.slow  # the in-process test above; this one through the console script
def test_a_folder_with_another_run_is_refused_through_the_script(tmp_path):
    assert jaxnet_script("train", *FAST, "--epochs", "1", "--out", "run", cwd=tmp_path)[0] == 0
    code, out, err = jaxnet_script("train", *FAST, "--epochs", "2", "--out", "run", cwd=tmp_path)
    assert code == 2 and "jaxnet train:" not in out and "--out run holds another run's outputs" in err
    code, _, err = jaxnet_script("train", *FAST, "--epochs", "2", "--out", "run", "--force", cwd=tmp_path)
    assert code == 0 and metrics(tmp_path / "run")["epochs"] == 2, err


def _out_cases(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    return {
        "file": (str(tmp_path / "a-file"), "exists and is not a folder"),
        "under-a-file": (str(tmp_path / "a-file" / "run"), "cannot create or write the folder"),
        "read-only": (str(readonly / "run"), "cannot create or write the folder"),
    }


@pytest.mark.parametrize(
    "case", lean(["file", "under-a-file", "read-only"], lambda i, c: False)
)  # in-process: next test
def test_an_out_folder_that_cannot_be_written_is_refused_before_training(case, tmp_path):
    if case == "read-only" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    out, reason = _out_cases(tmp_path)[case]
    code, printed, err = jaxnet_script("train", *FAST, "--epochs", "1", "--out", out, cwd=tmp_path)
    assert code == 2 and "jaxnet train:" not in printed
    assert err.strip() == f"jaxnet train: --out {out}: {reason}" or (
        f"--out {out}: {reason}" in err and "Traceback" not in err
    )


@pytest.mark.parametrize("case", ["file", "under-a-file"])
def test_an_out_folder_that_cannot_be_written_is_refused_in_process(case, tmp_path):
    from jaxnet.cli.folders import prepare
    from jaxnet.cli.output import CommandFailed

    out, reason = _out_cases(tmp_path)[case]
    with pytest.raises(CommandFailed) as e:
        prepare(out, "x", force=False, resume=None)
    assert str(e.value) == f"--out {out}: {reason}" or str(e.value).startswith(f"--out {out}: {reason} (")


SWEEP_ONLY_FLAGS = [
    ("--resume", "x.npz"),
    ("--patience", "3"),
    ("--check",),
    ("--check-every", "5"),
    ("--save-every", "2"),
]


@pytest.mark.parametrize("flag", SWEEP_ONLY_FLAGS, ids=lambda f: f[0])
def test_a_sweep_refuses_the_flags_it_would_ignore(flag, tmp_path, capsys):
    assert cli.main(["train", *FAST, "--seeds", "2", *flag, "--out", str(tmp_path)]) == 2
    assert f"jaxnet train: {flag[0]}: not supported with --seeds/--sweep" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.slow  # the in-process test above covers each flag
def test_a_sweep_refuses_ignored_flags_through_the_script(tmp_path):
    code, _, err = jaxnet_script("train", *FAST, "--sweep", "lr=0.1,1", "--patience", "2", "--check", cwd=tmp_path)
    assert code == 2 and "--patience, --check: not supported with --seeds/--sweep" in err
    assert not (tmp_path / "runs").exists()


def test_a_resume_must_leave_epochs_to_train(tmp_path, capsys):
    assert cli.main(["train", *FAST, "--epochs", "3", "--out", str(tmp_path)]) == 0
    for epochs in ("2", "3"):
        assert cli.main(["train", *FAST, "--epochs", epochs, "--resume", str(tmp_path / "checkpoint.npz")]) == 2
        assert (
            f"it is at epoch 3 already and --epochs {epochs} asks for no more (give --epochs > 3 to train on)"
            in capsys.readouterr().err
        )
    assert metrics(tmp_path)["epochs"] == 3
    saved = checkpoint.load(tmp_path / "checkpoint.npz")  # the same run, saved by hand without its key
    ck = checkpoint.load(tmp_path / "checkpoint.npz", saved.net, train.sgd(1.0).init(saved.params))  # 000's sgd
    keyless = tmp_path / "keyless" / "checkpoint.npz"
    keyless.parent.mkdir()
    fields = ("net", "params", "opt_state", "epoch", "step", "extra", "history")
    checkpoint.save(keyless, **{f: getattr(ck, f) for f in fields})
    assert cli.main(["train", *FAST, "--epochs", "4", "--resume", str(keyless)]) == 2
    assert f"cannot resume: {keyless} holds no training key" in capsys.readouterr().err
    # resumed without --out: continues in the checkpoint's folder
    assert cli.main(["train", *FAST, "--epochs", "4", "--resume", str(tmp_path / "checkpoint.npz")]) == 0
    assert metrics(tmp_path)["epochs"] == 4 and len(metrics(tmp_path)["history"]["train_loss"]) == 4


def _csv(path, rows=40, shift=0):
    path.write_text("a,b,label\n" + "".join(f"{(i + shift) % 7},{(i * 3) % 5},{i % 2}\n" for i in range(rows)))


@pytest.mark.slow  # three trainings on a CSV
def test_a_resume_compares_the_data_by_content_not_by_path(tmp_path, capsys, monkeypatch):
    """The same bytes under another spelling of the path resume; other bytes at the same path are refused."""
    monkeypatch.chdir(tmp_path)
    _csv(tmp_path / "d.csv")
    args = ["--hidden", "4", "--quiet", "--batch-size", "0"]
    assert cli.main(["train", "--data", "d.csv", *args, "--epochs", "2", "--out", "run"]) == 0
    assert (
        cli.main(["train", "--data", str(tmp_path / "d.csv"), *args, "--epochs", "3", "--resume", "run/checkpoint.npz"])
        == 0
    )
    _csv(tmp_path / "d.csv", shift=1)  # the file changed under the same name
    assert cli.main(["train", "--data", "d.csv", *args, "--epochs", "4", "--resume", "run/checkpoint.npz"]) == 2
    assert re.search(
        r"cannot resume run/checkpoint.npz: the contents of --data d.csv differ from the data the "
        r"checkpoint was trained on \(\S*d.csv; their SHA-256 differ\)",
        capsys.readouterr().err,
    )
    assert cli.main(["train", *FAST, "--epochs", "4", "--resume", "run/checkpoint.npz"]) == 2  # the preset's data
    assert re.search(
        r"cannot resume run/checkpoint.npz: it was trained on \S*d.csv's data, not spiral's", capsys.readouterr().err
    )
    assert metrics(tmp_path / "run")["epochs"] == 3


def test_a_diverging_run_names_only_its_own_checkpoint_and_records_the_divergence(tmp_path, capsys):
    """An older run in --out is replaced (--force) and never reported as this run's "last good
    checkpoint"; metrics.json says the run diverged and holds its history up to the divergence."""
    diverge = ["--preset", "001-regression", "--lr", "0.05", "--epochs", "100", "--quiet"]
    assert cli.main(["train", *FAST, "--epochs", "1", "--out", str(tmp_path)]) == 0
    assert cli.main(["train", *diverge, "--save-every", "1000", "--out", str(tmp_path), "--force"]) == 3
    err = capsys.readouterr().err
    assert re.search(r"not finite at epoch \d+, step \d+; no checkpoint was written$", err.strip())
    assert not (tmp_path / "checkpoint.npz").exists() and not (tmp_path / "decision_boundary.png").exists()
    m = metrics(tmp_path)
    assert m["diverged"] and m["final"] is None and m["network"].startswith("1-")
    assert len(m["history"]["train_loss"]) == m["epochs"] and m["steps"] == m["epochs"]


def test_final_metrics_that_are_not_finite_never_exit_0_and_the_table_keeps_its_columns(tmp_path, capsys, monkeypatch):
    import jaxnet.train

    def evaluate(params, net, x, y, state=None):
        return {"accuracy": 0.9658482268477369, "loss": 9658482268477369876480.0, "r": float("nan")}

    monkeypatch.setattr(jaxnet.train, "evaluate", evaluate)
    assert cli.main(["train", *FAST, "--epochs", "1", "--out", str(tmp_path)]) == 3
    captured = capsys.readouterr()
    assert "the final metrics are not all finite" in captured.err
    rows = re.findall(r"^(train|val|test) +(\S+) +(\S+) +(\S+)$", captured.out, re.M)
    assert [r[1:] for r in rows] == [("0.9658", "9.6585e+21", "nan")] * 3


@pytest.mark.parametrize("value", [0.0, 1.0, -0.5, 123456.789, 1e-9, -3e12, 1e300, float("inf"), float("nan")])
def test_numbers_have_one_width(value):
    text = number(value)
    assert len(text) == 11 or (len(text) == 12 and text.startswith("-"))
    assert text == text.rjust(11) and (np.isnan(value) or float(text) == pytest.approx(value, rel=1e-3, abs=5e-5))


@pytest.mark.slow  # a sweep of 001-regression
def test_the_sweep_table_names_networks_by_their_sizes_and_a_diverged_config_never_wins(tmp_path, capsys):
    code = cli.main(
        [
            "train",
            "--preset",
            "001-regression",
            "--epochs",
            "30",
            "--quiet",
            "--sweep",
            "lr=0.001,0.05",
            "--out",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert re.search(r"^0 +1-10-1 +0 +lr=0\.001, l2=0 +\d+\.\d{4} ", out, re.M)
    assert re.search(r"^1 +1-10-1 +0 +lr=0\.05, l2=0 +inf +\S+ ", out, re.M)  # diverged
    assert "diverged (a loss that is not finite; their other metrics mean nothing): replica 1\n" in out
    assert code == 0 and re.search(r"^best by mean val_loss: .* lr=0\.001, l2=0 \(\d+\.\d{4}\)$", out, re.M)
    written = json.loads((tmp_path / "sweep.json").read_text())
    assert written["summary"]["best"]["config"] == "lr=0.001, l2=0"
    assert [r["diverged"] for r in written["replicas"]] == [False, True]


def test_help_gives_every_flag_a_line_its_default_and_its_choices(tmp_path):
    from jaxnet.activations import ACTIVATIONS
    from jaxnet.cli.settings import OPTIMIZERS
    from jaxnet.presets import TRAIN_PRESETS

    code, out, _ = jaxnet_script("train", "--help", cwd=tmp_path)
    assert code == 0
    for name in [*ACTIVATIONS, *OPTIMIZERS, "softmax_cross_entropy", "squared_error"]:
        assert name in out
    for name, preset in TRAIN_PRESETS.items():  # the per-preset defaults
        assert re.search(rf"^  {name} +{preset.optimizer} +{preset.learning_rate:g} +{preset.epochs} ", out, re.M)
    parser = cli.build_parser()
    for command in ("train", "check"):
        sub = parser._subparsers._group_actions[0].choices[command]
        for action in sub._actions:
            assert action.help, f"jaxnet {command} {action.option_strings}: no help line"
    with pytest.raises(SystemExit) as e:  # an unknown activation is refused while parsing, naming the choices
        cli.main(["train", "--activation", "rleu"])
    assert e.value.code == 2


def _bad_data(tmp_path, case):
    """A --data path for each case, and the words its error must contain."""
    x = np.arange(24.0).reshape(8, 3)
    if case == "folder":
        return tmp_path, "is a folder, expected a .npz, .npy or .csv file"
    path = tmp_path / ("d.npz" if case.startswith("npz") else "d.csv")
    if case == "not-utf8":
        path.write_bytes(b"a,b,label\n1,\xe9,0\n")
        return path, "is not UTF-8"
    if case == "npz-1d":
        np.savez(path, x=x[:, 0], y=np.zeros(8))
        return path, "array 'x' has shape (8,), expected a 2-D array [examples, features]"
    if case == "npz-3d":
        np.savez(path, x=x.reshape(8, 3, 1), y=np.zeros(8))
        return path, "--data gives flat feature rows, so save x.reshape(8, 3)"
    if case == "billion-classes":
        path.write_text("a,label\n1,0\n2,1000000000\n3,0\n4,1\n")
        return path, "the largest class label is 1000000000"
    if case == "overflow":
        path.write_text("a,label\n1,0\n1e300,1\n3,0\n4,1\n")
        return path, "overflows float32"
    raise ValueError(case)


DATA_CASES = ["folder", "not-utf8", "npz-1d", "npz-3d", "billion-classes", "overflow"]


@pytest.mark.parametrize("case", lean(DATA_CASES, lambda i, c: c == "billion-classes"))
def test_bad_data_is_refused_through_the_script(case, tmp_path):
    """Exit 2 and one line naming the file and the problem, no traceback, nothing written."""
    path, words = _bad_data(tmp_path, case)
    code, _out, err = jaxnet_script("train", "--data", str(path), "--out", "run", "--quiet", cwd=tmp_path)
    assert code == 2 and "Traceback" not in err and f"jaxnet train: {path}: " in err and words in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # two trainings on a CSV; tests/test_data_files.py covers the reading
def test_a_header_of_column_numbers_is_flagged_and_header_reads_it(tmp_path, capsys):
    """What pandas writes for integer column names: a warning without --header; read as a header with it."""
    path = tmp_path / "d.csv"
    path.write_text("0,1,2\n" + "".join(f"{i % 5},{i % 3},{i % 2}\n" for i in range(30)))
    args = ["train", "--data", str(path), "--hidden", "4", "--epochs", "1", "--quiet"]
    assert cli.main([*args, "--out", str(tmp_path / "a")]) == 0
    assert (
        f"jaxnet train: warning: {path}: the first row 0,1,2 looks like a header of column numbers"
        in capsys.readouterr().err
    )
    assert cli.main([*args, "--header", "--target", "2", "--out", str(tmp_path / "b")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert metrics(tmp_path / "a")["config"]["header"] is None and metrics(tmp_path / "b")["config"]["header"] is True


@pytest.mark.slow  # three trainings
def test_a_checkpoint_by_another_name_does_not_continue_a_folder_it_sits_in(tmp_path, capsys):
    """Only DIR/checkpoint.npz continues DIR's run: a spiral checkpoint copied into another run's
    folder under another name resumes into a new folder, never over that run's outputs."""
    import shutil

    other, run = tmp_path / "other", tmp_path / "run"
    for out in (other, run):
        assert cli.main(["train", *FAST, "--epochs", "1", "--out", str(out)]) == 0
    shutil.copy(run / "checkpoint.npz", other / "spiral.npz")
    before = (other / "metrics.json").read_bytes()
    assert cli.main(["train", *FAST, "--epochs", "2", "--resume", str(other / "spiral.npz"), "--out", str(other)]) == 2
    assert "holds another run's outputs" in capsys.readouterr().err
    monkeypatch_cwd = pytest.MonkeyPatch()
    monkeypatch_cwd.chdir(tmp_path)
    try:
        assert cli.main(["train", *FAST, "--epochs", "2", "--resume", str(other / "spiral.npz")]) == 0
    finally:
        monkeypatch_cwd.undo()
    assert (other / "metrics.json").read_bytes() == before
    (new,) = (tmp_path / "runs").iterdir()
    assert metrics(new)["epochs"] == 2


def test_default_folders_are_claimed_atomically_and_a_refused_run_leaves_none(tmp_path, monkeypatch, capsys):
    from jaxnet.cli.folders import claim_default_folder

    monkeypatch.chdir(tmp_path)
    names = {claim_default_folder("x", now=0.0) for _ in range(3)}  # the same second: three folders
    assert len(names) == 3 and all(os.path.isdir(n) for n in names)
    _csv(tmp_path / "three.csv")
    (tmp_path / "three.csv").write_text((tmp_path / "three.csv").read_text().replace(",1\n", ",2\n"))  # labels 0 and 2
    refused = ["train", "--data", "three.csv", "--loss", "sigmoid_cross_entropy", "--epochs", "1", "--quiet"]
    assert cli.main(refused) == 2  # refused in fit, after the folder was made: targets outside [0, 1]
    assert "targets must lie in [0.0, 1.0]" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(os.path.basename(n) for n in names)
    # --force: a refused run puts the older run's outputs back; files that are not outputs stay
    assert cli.main(["train", *FAST, "--epochs", "1", "--out", "old"]) == 0
    (tmp_path / "old" / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir()}
    assert cli.main([*refused, "--out", "old", "--force"]) == 2
    assert {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir()} == before
    assert cli.main(["train", *FAST, "--epochs", "2", "--out", "old", "--force"]) == 0
    assert (tmp_path / "old" / "notes.txt").read_text() == "mine" and metrics(tmp_path / "old")["epochs"] == 2
    assert not [p for p in (tmp_path / "old").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--seed", "-1"], "argument --seed: a seed must be an integer in [0, 2**32), got '-1'"),
        (["--seed", str(2**63)], "argument --seed: a seed must be an integer in [0, 2**32)"),
        (
            ["--lr", "1e39"],
            "argument --lr: a learning rate must be a number > 0 that float32 holds (1.2e-38 to 3.4e38)",
        ),
        (["--sweep", "lr=1e39"], "every lr must be a number > 0 that float32 holds"),
        (["--sweep", "lr=1e-3 lr=1"], "lr given twice"),
        (["--sweep", ""], "got nothing"),
        (["--save-every", "-3"], "--save-every must be an integer >= 0, got -3"),
        (["--lr", "1e-50"], "argument --lr: a learning rate must be a number > 0 that float32 holds"),
        (["--seed", str(2**32 - 1), "--seeds", "2"], "the seeds run past 2**32 - 1"),
    ],
)
def test_flags_out_of_range_are_refused_naming_the_flag(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", *argv])
    assert e.value.code == 2 and words in capsys.readouterr().err


def _write_csv(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.slow  # five CSV runs
def test_data_the_run_cannot_hold_is_refused_before_training(tmp_path, capsys):
    """A test value that overflows float32 once standardised; regression targets whose squares
    overflow; labels of one class; --patience without a validation split; tiny data warned about."""
    from jaxnet import data

    rows = "".join(f"{i % 7},{i % 2}\n" for i in range(39))
    in_test = int(data.split(np.arange(40.0)[:, None], np.zeros(40), seed=0).x_test[0, 0])  # a row of the test split
    huge = "a,label\n" + "".join(f"{3e38 if i == in_test else i % 3 / 10},{i % 2}\n" for i in range(40))
    cases = {  # 3e38 is finite in float32, but not once the training split's small std divides it
        "test-overflow": (["--preset", "000-spiral"], huge, "(test split, standardised): inputs hold"),
        "targets": (
            ["--loss", "squared_error"],
            "a,y\n1,1e30\n" + rows,
            "targets reach 1e+30, so the squared error overflows float32",
        ),
        "one-class": (
            [],
            "a,label\n" + "".join(f"{i},0\n" for i in range(20)),
            "every label is 0; a classifier needs examples of at least 2 classes",
        ),
        "patience": (
            ["--patience", "2"],
            "a,label\n1,0\n2,1\n3,0\n",
            "--patience needs a validation split, and the 3 examples",
        ),
    }
    for name, (flags, text, words) in cases.items():
        path = _write_csv(tmp_path / f"{name}.csv", text)
        assert (
            cli.main(["train", "--data", path, *flags, "--epochs", "1", "--quiet", "--out", str(tmp_path / name)]) == 2
        ), name
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, (name, err)
        assert not (tmp_path / name).exists() or not list((tmp_path / name).iterdir())
    tiny = _write_csv(tmp_path / "tiny.csv", "a,label\n1,0\n2,1\n3,0\n")
    assert cli.main(["train", "--data", tiny, "--epochs", "1", "--quiet", "--out", str(tmp_path / "tiny")]) == 0
    assert f"warning: {tiny}: 3 examples leave no validation and no test split" in capsys.readouterr().err


def test_a_checkpoint_whose_history_was_cut_is_refused(tmp_path, capsys):
    from jaxnet import checkpoint

    assert cli.main(["train", *FAST, "--epochs", "2", "--out", str(tmp_path)]) == 0
    with np.load(tmp_path / "checkpoint.npz") as f:
        arrays = {k: f[k] for k in f.files}
    names = json.loads(str(arrays["meta"]))["history"]
    i = names.index("train_loss")
    arrays[f"history_{i}"] = arrays[f"history_{i}"][:1]  # one epoch of train_loss, two of the others
    np.savez(tmp_path / "checkpoint.npz", **arrays)
    assert checkpoint.load(tmp_path / "checkpoint.npz").history["train_loss"] == arrays[f"history_{i}"].tolist()
    assert cli.main(["train", *FAST, "--epochs", "3", "--resume", str(tmp_path / "checkpoint.npz")]) == 2
    assert "the history's metrics have different lengths" in capsys.readouterr().err


def _old_run(folder):
    folder.mkdir()
    for file in ("metrics.json", "checkpoint.npz"):
        (folder / file).write_text(f"the older run's {file}")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_forced_outputs_come_back_after_ctrl_c_and_go_once_the_run_writes(tmp_path):
    """run_folder: Ctrl-C before the run writes puts the replaced outputs back; a run that wrote an
    output and then failed keeps only its own; no hidden folder is left either way."""
    from jaxnet.cli.folders import run_folder

    before = _old_run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt), run_folder(str(tmp_path / "a"), "x", force=True, resume=None) as folder:
        assert [n[:17] for n in os.listdir(folder)] == [".jaxnet-replaced-"]  # moved aside
        raise KeyboardInterrupt
    assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()} == before
    _old_run(tmp_path / "b")
    with pytest.raises(RuntimeError), run_folder(str(tmp_path / "b"), "x", force=True, resume=None) as folder:
        (tmp_path / "b" / "metrics.json").write_text("this run's")
        raise RuntimeError("diverged")
    assert {p.name: p.read_text() for p in (tmp_path / "b").iterdir()} == {"metrics.json": "this run's"}
