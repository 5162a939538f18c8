"""The derivation audit (experiments/derivation_audit.py): the printed formulas fail where the
notes are wrong, the corrected ones pass, and the committed table is what the script writes."""

import importlib.util
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # the whole audit, ~15 s: run by .ci/run after the main suite


@pytest.fixture(scope="module")
def audit():
    spec = importlib.util.spec_from_file_location("derivation_audit", ROOT / "experiments" / "derivation_audit.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module, *module.audit()


EXPECTED = {  # (note, formulas, against) -> leaves that fail against jax.grad and finite differences
    ("000", "§3 as printed", "L = L_d/N + α/2 Σw² (§2)"): {"w1", "w2"},
    ("000", "§3 as printed, indicator literal", "L = L_d/N + α/2 Σw² (§2)"): {"w1", "w2"},
    ("000", "§3 + Θ(h) of §2, summed", "L = L_d/N + α/2 Σw² (§2)"): {"w1", "w2"},
    ("000", "§3 + Θ(h) of §2, averaged", "L = L_d/N + α/2 Σw² (§2)"): set(),
    ("001", "∂L/∂β, ∂L/∂α as printed", "the RSS as printed, Σ(y − f)"): {"alpha", "beta"},
    ("001", "∂L/∂β, ∂L/∂α as printed", "the RSS squared, Σ(y − f)²"): set(),
    ("002", "(5)·(6) composed as printed, then (11), (12)", "Err, eq. (3)"): {f"{k}[{i}]" for k in "Wb" for i in range(4)},
    ("002", "(7) = (12), then (11), (12)", "Err, eq. (3)"): set(),
    ("003", "list of ∂h/∂p under eq. (4)", "J, eq. (2)"): {"W2"},
    ("003", "eqs. (5)–(7) as printed", "J, eq. (2)"): {"W1", "W2", "W3", "b1", "b2", "b3"},
    ("003", "corrected: δ^(4) = 2 (h − y) / N, then (6), (7)", "J, eq. (2)"): set(),
    ("003", "jaxnet.manual_grads (sigmoid CE)", "eq. (11) as printed"): {"W[0]", "b[0]", "W[3]", "b[3]"},
    ("003", "jaxnet.manual_grads (sigmoid CE)", "eq. (11) with the sign of its second term fixed"): set(),
}


def test_printed_formulas_fail_in_the_right_leaves_and_corrections_pass(audit):
    module, checks, steps, conv = audit
    found = {}
    for c in checks:
        for witness in ("jax.grad", "finite diff"):
            names = {module._leaf_name(r.path) for r in c.report.failures() if r.witness == witness}
            assert names == EXPECTED[(c.note, c.version, c.against)], (c.note, c.version, c.against, witness)
        found[(c.note, c.version, c.against)] = c.verdict
    assert set(found) == set(EXPECTED)


def test_update_rules(audit):
    _, _, steps, conv = audit
    assert [s.lowered for s in steps] == ["yes", "yes", "yes", "yes", "NO", "yes", "NO"]  # 003: eq. (3)'s + and eq. (11)
    assert conv["eq10_vs_conv2d"] < 1e-12 < 1e-3 < conv["eq10_flipped_vs_conv2d"]  # eq. (10) is a correlation


def test_the_committed_table_is_the_scripts_output(audit):
    module, checks, steps, conv = audit
    normalise = lambda text: re.sub(r"on \d{4}-\d\d-\d\d \(jax [^,]+,", "on DATE (jax V,", re.sub(r"\d+\.\d+(e[+-]\d+)?", "#", text))
    committed = (ROOT / "experiments" / "results" / "derivation_audit.md").read_text()
    assert normalise(committed) == normalise(module.markdown(checks, steps, conv))
