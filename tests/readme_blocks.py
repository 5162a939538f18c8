"""The Python blocks of the READMEs, found by their section, so tests can run them as printed.

A block is a fenced ```` ```python ```` block. One that is not meant to run on its own (a
fragment that continues another, a signature) is marked on purpose by the line
``<!-- fragment: why -->`` right above its fence; every other block is run by
``tests/test_readme_blocks.py``.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).parents[1]
READMES = ("README.md", "experiments/README.md")
FRAGMENT = re.compile(r"^<!-- fragment: .+ -->$")


@dataclasses.dataclass(frozen=True)
class Block:
    """One ```` ```python ```` block: where it is, the section it sits in, its code."""

    path: str  # relative to the repository root
    line: int  # 1-based line of its first code line
    section: str  # the nearest heading above it, without the leading #s
    code: str
    fragment: bool  # marked <!-- fragment: ... --> on purpose

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line} ({self.section})"


def blocks(path: str, text: str | None = None) -> list[Block]:
    """The Python blocks of ``path`` (or of ``text`` read as that file), in order."""
    lines = (ROOT / path).read_text().splitlines() if text is None else text.splitlines()
    found, section, i = [], "", 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        if line.strip() == "```python":
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
            if end is None:
                raise ValueError(f"{path}:{i + 1}: a ```python block that is never closed")
            fragment = i > 0 and bool(FRAGMENT.match(lines[i - 1].strip()))
            found.append(Block(path, i + 2, section, "\n".join(lines[i + 1 : end]) + "\n", fragment))
            i = end
        i += 1
    return found


def block(path: str, section: str) -> Block:
    """The one Python block under the heading ``section`` of ``path``."""
    matches = [b for b in blocks(path) if b.section == section]
    if len(matches) != 1:
        raise LookupError(f"{path}: {len(matches)} Python blocks under the heading {section!r}, expected one")
    return matches[0]


def run(b: Block, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``b`` as a script in a fresh process from the repository root; tracebacks name README lines."""
    code = "\n" * (b.line - 1) + b.code  # line numbers in a traceback are the README's
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{b.where} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return result
