"""The Python blocks of the READMEs, found by their section, so tests can run them as printed.

A block is a fenced ```` ```python ```` block (or ``py``, ``python3``, ``pycon``, any case,
with backticks or tildes). One that is not meant to run on its own (a
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
FENCE = re.compile(r"^(`{3,}|~{3,})\s*([^\s`{]*)")  # the fence and its info word
HEADING = re.compile(r"^#{1,6}\s")
PYTHON = {"python", "py", "python3", "pycon"}


@dataclasses.dataclass(frozen=True)
class Block:
    """One ```` ```python ```` block: where it is, the section it sits in, its code."""

    path: str  # relative to the repository root
    line: int  # 1-based line of its first code line
    section: str  # the nearest heading above it, without the leading #s
    code: str
    fragment: bool  # marked <!-- fragment: ... --> on purpose

    @property
    def padded(self) -> str:
        """The code after blank lines, so that line numbers in a traceback are the README's."""
        return "\n" * (self.line - 1) + self.code

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line} ({self.section})"


def blocks(path: str, text: str | None = None) -> list[Block]:
    """The Python blocks of ``path`` (or of ``text`` read as that file), in order: fenced with
    three or more backticks or tildes, info word ``python``, ``py``, ``python3`` or ``pycon`` in
    any case. Headings are read outside fences only."""
    lines = (ROOT / path).read_text().splitlines() if text is None else text.splitlines()
    found, section, i = [], "", 0
    while i < len(lines):
        fence = FENCE.match(lines[i].strip())
        if fence is None:
            if HEADING.match(lines[i]):
                section = lines[i].lstrip("#").strip()
            i += 1
            continue
        marker, info = fence[1], fence[2].lower()
        end = next((j for j in range(i + 1, len(lines)) if _closes(lines[j], marker)), None)
        if end is None:
            raise ValueError(f"{path}:{i + 1}: a fenced block that is never closed")
        if info in PYTHON:
            fragment = i > 0 and bool(FRAGMENT.match(lines[i - 1].strip()))
            found.append(Block(path, i + 2, section, "\n".join(lines[i + 1 : end]) + "\n", fragment))
        i = end + 1
    return found


def _closes(line: str, marker: str) -> bool:
    """Whether ``line`` closes a fence opened by ``marker`` (the same character, at least as many)."""
    s = line.strip()
    return len(s) >= len(marker) and set(s) == {marker[0]}


def block(path: str, section: str) -> Block:
    """The one Python block under the heading ``section`` of ``path``."""
    matches = [b for b in blocks(path) if b.section == section]
    if len(matches) != 1:
        raise LookupError(f"{path}: {len(matches)} Python blocks under the heading {section!r}, expected one")
    return matches[0]


def run(b: Block, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``b`` as a script in a fresh process from the repository root; tracebacks name README lines."""
    code = b.padded  # line numbers in a traceback are the README's
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{b.where} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return result
