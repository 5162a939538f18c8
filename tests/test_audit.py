"""The derivation audit (experiments/derivation_audit.py): the notes' formulas read literally, the
repairs one at a time, the Findings generated from the rows, the results file rewritten only when
its content changes.

The default tests are cheap (no full audit); the ones that run the whole audit (~1 min) are
marked slow and share one run through a module-scoped fixture."""

import dataclasses
import importlib.util
import os
import pathlib
import re
import sys

import jax.numpy as jnp
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SEEDS = ROOT.parent / "shared" / "seeds"


def _load():
    spec = importlib.util.spec_from_file_location("derivation_audit", ROOT / "experiments" / "derivation_audit.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def da():
    return _load()


@pytest.fixture(scope="module")
def audit(da):
    return da.audit()  # (checks, steps, conv, formulas)


# --- cheap: literal arithmetic, one perturbed formula, the results file -------------------------------


def test_a_product_that_does_not_conform_is_reported_with_its_shapes(da):
    with pytest.raises(da.NonConforming, match=r"h · df: \(7,\) · \(3,\)"):
        da.dot(jnp.ones(7), jnp.ones(3), "h · df")
    with pytest.raises(da.NonConforming, match=r"\(3, 7\) and \(3, 6\)"):
        da.plus(jnp.ones((3, 7)), jnp.ones((3, 6)), "x ⊗ dh + α w1")
    assert da.dot(jnp.ones((2, 3)), jnp.ones(3), "A x").shape == (2,)


def test_repair_rows_are_one_at_a_time_then_all_then_all_but_one(da):
    assert da.repair_sets(["a"]) == [(), ("a",)]
    assert da.repair_sets(["a", "b"]) == [(), ("a",), ("b",), ("a", "b")]
    assert da.repair_sets(["a", "b", "c"]) == [
        (),
        ("a",),
        ("b",),
        ("c",),
        ("a", "b", "c"),
        ("b", "c"),
        ("a", "c"),
        ("a", "b"),
    ]


def test_perturbing_a_printed_formula_flips_its_verdict(da, monkeypatch):
    """Note 002, (5)·(6) summed over the samples: eq. (6) as printed fails; with eq. (6)'s index
    changed (ŷ_i -> ŷ_j), the same row, with no repair of (6), passes."""
    formulas = next(f for f in da.audit_002(sizes=(2, 3, 3), n=4)[0] if f.name.startswith("(7) as (5) · (6)"))
    printed = da.check_row(formulas, ("Σ_n",))
    assert printed.verdict == "FAIL" and printed.failing_leaves() == {"W1", "b1", "W2", "b2"}
    original = da.eq6
    monkeypatch.setattr(da, "eq6", lambda y_hat, index_j: original(y_hat, True))
    assert da.check_row(formulas, ("Σ_n",)).verdict == "pass"


def test_the_file_is_rewritten_only_when_its_content_changes(da, tmp_path):
    path = tmp_path / "audit.md"
    first = da.DATE_LINE.format(date="2020-01-01", jax="0") + "\nrows\n"
    assert da.write_if_changed(path, first)
    os.utime(path, (1_000_000, 1_000_000))
    same_content = da.DATE_LINE.format(date="2030-12-31", jax="0") + "\nrows\n"
    assert not da.write_if_changed(path, same_content)  # only the date differs: left as it is
    assert path.read_text() == first and path.stat().st_mtime == 1_000_000
    changed = da.DATE_LINE.format(date="2030-12-31", jax="0") + "\nother rows\n"
    assert da.write_if_changed(path, changed)
    assert path.read_text() == changed  # new content, new date
    assert [p.name for p in tmp_path.iterdir()] == ["audit.md"]  # no temporary file left behind


def test_every_quoted_slip_is_in_its_note(da):
    if not SEEDS.is_dir():
        pytest.skip(f"the notes are not here ({SEEDS})")
    notes = {p.name[:3]: p.read_text() for p in SEEDS.glob("*.txt")}
    for note, where, printed, correct, why in da.SLIPS:
        assert printed in notes[note], (note, where, printed)
        assert printed != correct and why
    for note, where, printed, why in da.NOT_SLIPS:
        assert printed in notes[note] and why, (note, where, printed)


# --- the whole audit (slow) ------------------------------------------------------------------------


@pytest.mark.slow
def test_printed_rows_fail_and_all_repairs_pass(audit):
    checks, _, _, _formulas = audit
    for rows in _groups(checks).values():
        printed = rows[0]
        full = next(c for c in rows if c.applied == printed.labels)
        assert not printed.applied and printed.verdict == "FAIL", printed.formulas
        if printed.network.startswith("3-5-4-2") and printed.formulas.startswith("list"):
            assert full.verdict == "FAIL"  # in Table 2's sizes the list's products do not conform, repaired or not
            assert {leaf for leaf, _ in full.unevaluable} == {"W1", "W2", "W3", "b1", "b2"}
        else:
            assert full.applied == printed.labels and full.verdict == "pass", printed.formulas
        for c in rows[len(printed.labels) + 2 :]:  # all but one: each repair is needed
            assert len(c.applied) == len(printed.labels) - 1 and c.verdict == "FAIL", (c.formulas, c.applied)


@pytest.mark.slow
def test_what_each_printed_set_shows(audit):
    checks = {(c.note, c.formulas, c.network[:7], c.applied): c for c in audit[0]}
    saxon = checks[("000", "§3, the terms for our program", "2-6-3 R", ())]
    assert {leaf for leaf, _ in saxon.unevaluable} == {"w1", "w2"}  # h · df, df · w2 do not conform
    sai = checks[("001", "∂L/∂β_km, ∂L/∂α_ml", "3-5-2 s", ())]
    assert [leaf for leaf, _ in sai.unevaluable] == ["alpha"] and sai.failing_leaves() == {"alpha", "beta"}
    scalars = checks[("003", "list of ∂h/∂p with eq. (4)", "1-1-1-1", ())]
    assert scalars.failing_leaves() == {"W2"} and not scalars.unevaluable  # … a2 for a1
    eq11 = checks[("003", "the loss, eq. (11)", "conv2-t", ())]
    assert eq11.unevaluable[0][0] == "loss" and eq11.report is None  # J is an array: no sum


@pytest.mark.slow
def test_update_rules_and_eq10(audit):
    _, steps, conv, _ = audit
    assert [s.lowered for s in steps] == ["cannot be evaluated"] * 2 + ["yes", "yes", "NO", "yes", "NO"]
    assert conv["eq10_vs_conv2d"] < 1e-12 < 1e-3 < conv["eq10_flipped_vs_conv2d"]  # eq. (10) is a correlation


@pytest.mark.slow
def test_findings_follow_the_rows(da, audit):
    checks, steps, conv, _ = audit
    for rows in _groups(checks).values():
        sentence = da.finding(rows)
        printed = rows[0]
        assert ("as printed it cannot be evaluated" in sentence) == bool(printed.unevaluable), sentence
        singles = [c for c in rows if len(c.applied) == 1]
        for c in singles:
            assert (f"The single repair {c.applied[0]} makes it pass" in sentence) == c.ok, sentence
        if not any(c.ok for c in singles) and len(printed.labels) > 2:
            assert ("Leaving out any one of them fails" in sentence) == all(
                not c.ok for c in rows if len(c.applied) == len(printed.labels) - 1
            )
        # a changed row changes its sentence: the printed row made to pass
        passing = next((c for c in rows if c.ok), None)
        if passing is not None:
            flipped = [dataclasses.replace(printed, report=passing.report, unevaluable=())] + rows[1:]
            assert da.finding(flipped) != sentence and "as printed it passes" in da.finding(flipped)
    for s in steps:
        text = da.step_finding(s)
        assert (s.after is None) == ("cannot be evaluated" in text)
        if s.after is not None:
            assert f"{s.before:.6f} → {s.after:.6f}" in text and ("lowers" in text) == (s.lowered == "yes")
    assert "the cross-correlation that `Conv2D` computes" in da.conv_finding(conv)
    assert "not what `Conv2D` computes" in da.conv_finding({**conv, "eq10_vs_conv2d": 1.0})


@pytest.mark.slow
def test_the_committed_table_is_the_scripts_output(da, audit):
    normalise = lambda text: da._without_date(re.sub(r"\d+\.\d+(e[+-]\d+)?", "#", text))
    committed = (ROOT / "experiments" / "results" / "derivation_audit.md").read_text()
    assert normalise(committed) == normalise(da.markdown(*audit))


def _groups(checks):
    groups = {}
    for c in checks:
        groups.setdefault((c.note, c.formulas, c.network), []).append(c)
    return groups
