"""Every Python block of README.md and experiments/README.md runs as printed, in a fresh process.

A renamed function or argument cannot leave a broken example behind: each block is run here
(with checks of what it prints where that says more than "it ran"), or by the one test named in
``ELSEWHERE`` (which needs the objects the block leaves behind), or it is marked
``<!-- fragment: why -->`` on purpose (see ``tests/readme_blocks.py``).
"""

import re

import pytest

from tests import readme_blocks
from tests.readme_blocks import READMES, Block


def _example(out):  # the float64 comparison prints "shape max-abs-error" per leaf
    errors = [float(line.split()[-1]) for line in out.splitlines()]
    assert len(errors) == 4 and max(errors) < 1e-12, out


def _training(out):
    # the digits preset's setup with keys 0 and 1 (not one of the seeds measured); the worst of seeds 0-4
    # in experiments/results/presets.md (digits, test) is 0.9667; bar = that - 0.01
    assert eval(out.strip())["accuracy"] >= 0.956, out


def _checker(out):  # the user-written layer checks out: every witness, every leaf, ok
    assert len(re.findall(r"^[a-z. -]+\['[Wb]'\] .* ok$", out, re.M)) == 10 and "FAIL" not in out, out


def _sequences(out):  # the attention classifier's gradients check out and no layer is named
    assert out.strip() == "True None", out


def _state_and_keys(out):  # BatchNorm + Dropout: the gradients check out; evaluation mode runs on the state
    assert out.strip() == "True (6, 3)", out


# section -> (what its output must show, whether it runs in the main suite)
CHECKS = {
    ("README.md", "Example"): (_example, True),
    ("README.md", "Training"): (_training, False),  # trains the digits preset (~20 s)
    ("README.md", "Checking your own derivation"): (_checker, False),  # a fresh process, every witness
    ("README.md", "Sequences, normalisation, embeddings and residual blocks"): (_sequences, False),  # compiles 5 kinds
    ("README.md", "Batch normalisation and dropout: state and keys"): (_state_and_keys, True),
}
# blocks run by another test, which needs the objects the block leaves behind
ELSEWHERE = {
    ("README.md", "Your own layer"): (
        "tests/test_layer_protocol.py::test_readme_layer_trains_checkpoints_resumes_and_checks"
    ),
}


def _cases():
    cases = []
    for path in READMES:
        for b in readme_blocks.blocks(path):
            if b.fragment or (path, b.section) in ELSEWHERE:
                continue
            _, in_main = CHECKS.get((path, b.section), (None, False))
            marks = () if in_main else (pytest.mark.slow,)
            cases.append(pytest.param(b, id=f"{path}:{b.section}", marks=marks))
    return cases


@pytest.mark.parametrize("block", _cases())
def test_readme_block_runs_as_printed(block: Block):
    result = readme_blocks.run(block)
    check, _ = CHECKS.get((block.path, block.section), (None, None))
    if check is not None:
        check(result.stdout)


def test_every_block_is_run_checked_or_marked():
    """Each block is accounted for once, and every entry of CHECKS and ELSEWHERE still names a block."""
    found = {(path, b.section): b for path in READMES for b in readme_blocks.blocks(path)}
    assert len(found) == sum(len(readme_blocks.blocks(path)) for path in READMES), "two blocks under one heading"
    assert set(CHECKS) <= set(found) and set(ELSEWHERE) <= set(found)
    assert not set(CHECKS) & set(ELSEWHERE)
    for key, test_id in ELSEWHERE.items():
        module, name = test_id.split("::")
        source = (readme_blocks.ROOT / module).read_text()
        runs_it = f'readme_blocks.block("{key[0]}", "{key[1]}")'
        assert f"def {name}(" in source and runs_it in source, (key, test_id)


def test_a_broken_block_fails_naming_its_readme_line():
    """The runner goes red on a block that calls a name that no longer exists, naming the README line."""
    text = "# Demo\n\nSome prose.\n\n```python\nimport math\n\nmath.renamed_function(1)\n```\n"
    (b,) = readme_blocks.blocks("README.md", text)
    assert (b.line, b.section, b.fragment) == (6, "Demo", False)
    with pytest.raises(AssertionError, match=r"README\.md:6 \(Demo\) failed") as failure:
        readme_blocks.run(b)
    assert "line 8, in <module>" in str(failure.value) and "renamed_function" in str(failure.value)


def test_fragments_are_skipped_only_when_marked():
    text = "## A\n<!-- fragment: continues the block above -->\n```python\nx + 1\n```\n\n```python\ny\n```\n"
    first, second = readme_blocks.blocks("README.md", text)
    assert first.fragment and not second.fragment
    with pytest.raises(ValueError, match="never closed"):
        readme_blocks.blocks("README.md", "```python\nx = 1\n")


@pytest.mark.parametrize(
    "fence", ["```python", "```py", "```Python3", "~~~python", "````python", "  ```pycon", "```py {.x}"]
)
def test_every_python_fence_is_a_block(fence):
    closing = fence.strip()[:3] if "`" not in fence else "`" * (len(fence.strip()) - len(fence.strip().lstrip("`")))
    text = f"## Real\n```bash\n# install, not a heading\n```\n{fence}\nimport nope\n{closing}\n```text\nplain\n```\n"
    (b,) = readme_blocks.blocks("README.md", text)
    assert (b.section, b.code, b.line) == ("Real", "import nope\n", 6)
