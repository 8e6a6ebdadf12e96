"""Write the *student edition* of the course notebooks: solutions stripped, outputs cleared.

The full notebooks in ``notebooks/`` contain every exercise's solution, so that they run end
to end (and are tested that way). The student edition is the same notebooks with

* every cell tagged ``solution`` removed (any cell type);
* every *gated* solution removed: everything from a ``{solution-start}`` directive through the
  matching ``{solution-end}`` directive, inclusive (the gated form of sphinx-exercise, which lets a
  solution span markdown and code cells). Usually the gate's directives sit in markdown cells of
  their own, which are removed whole; text before the ``{solution-start}`` or after the
  ``{solution-end}`` in the same cell (e.g. the exercise statement) is kept;
* every plain (non-gated) ``{solution}`` directive block removed from markdown cells;
* all outputs, execution counts and saved widget state cleared;
* the ``remove-cell`` tag dropped from cells tagged ``student`` (the exercise stubs), so that
  students see the stub that the book hides.

The exercise *check* cells stay, so a student who runs the notebook with the stub gets the
checker's message (an ``AssertionError`` saying the exercise is not done yet) at that cell.

Command line (used by ``make student``)::

    python -m coursekit.student --src notebooks --dst _build/student

The notebook format work is done by :mod:`nbformat`.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat

__all__ = [
    "UnbalancedSolutionGate",
    "StripReport",
    "strip_notebook",
    "make_student_edition",
    "main",
]

#: nbformat major version written for the student edition.
NB_VERSION = 4

SOLUTION_TAG = "solution"
STUDENT_TAG = "student"
REMOVE_CELL_TAG = "remove-cell"

# A MyST directive's opening line: at most 3 spaces, three or more backticks or colons, then ``{name}``.
_OPEN_RE = re.compile(r"^ {0,3}(?P<fence>`{3,}|:{3,})\{(?P<name>solution-start|solution-end|solution)\}")


class UnbalancedSolutionGate(ValueError):
    """A ``{solution-start}`` without its ``{solution-end}`` (or the reverse, or nested gates)."""


@dataclass(frozen=True)
class StripReport:
    """What :func:`strip_notebook` removed from one notebook.

    ``removed`` counts cells removed for any reason; ``gates`` and ``plain_solutions`` count the
    solution gates and plain ``{solution}`` blocks removed; ``solution_cells`` the cells tagged
    ``solution`` outside gates; ``trimmed_cells`` the markdown cells that kept only their text outside
    a gate or a ``{solution}`` block; ``unhidden_stubs`` the exercise stubs that lost ``remove-cell``.
    """

    removed: int = 0
    solution_cells: int = 0
    gates: int = 0
    trimmed_cells: int = 0
    plain_solutions: int = 0
    unhidden_stubs: int = 0


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []) or [])


def _closes(line: str, fence: str) -> bool:
    """Whether ``line`` closes a directive opened with ``fence`` (CommonMark: same character, at least as long)."""
    text = line.strip()
    return len(text) >= len(fence) and set(text) == {fence[0]}


class _Gates:
    """Walks the notebook's markdown line by line, tracking whether a solution gate is open."""

    def __init__(self, name: str):
        self.name = name
        self.open_at: int | None = None  # cell index of the open gate's {solution-start}
        self.gates = 0
        self.plain = 0

    def markdown(self, index: int, text: str) -> str:
        """The part of one markdown cell's text outside gates and ``{solution}`` blocks."""
        lines = text.splitlines(keepends=True)
        kept, i = [], 0
        while i < len(lines):
            match = _OPEN_RE.match(lines[i])
            if match is None:
                if self.open_at is None:
                    kept.append(lines[i])
                i += 1
                continue
            # skip the whole directive block, through its closing fence (or the end of the cell)
            j = i + 1
            while j < len(lines) and not _closes(lines[j], match["fence"]):
                j += 1
            name = match["name"]
            if name == "solution-start":
                if self.open_at is not None:
                    raise UnbalancedSolutionGate(
                        f"{self.name}: cell {index} opens a {{solution-start}} gate while the gate opened at "
                        f"cell {self.open_at} is still open (missing {{solution-end}} before cell {index})"
                    )
                self.open_at = index
                self.gates += 1
            elif name == "solution-end":
                if self.open_at is None:
                    raise UnbalancedSolutionGate(
                        f"{self.name}: cell {index} has a {{solution-end}} without a preceding {{solution-start}}"
                    )
                self.open_at = None
            elif self.open_at is None:
                self.plain += 1
            i = j + 1
        return "".join(kept)


def strip_notebook(nb, *, name: str = "<notebook>"):
    """Return the student edition of one notebook (a new object; ``nb`` is not modified).

    Gates are found line by line, so a ``{solution-start}`` may follow the exercise in the same markdown
    cell and text may follow a ``{solution-end}``: that text is kept, the solution between is removed.
    A markdown cell left empty is dropped.

    Parameters
    ----------
    nb : nbformat.NotebookNode
        A version-4 notebook, e.g. from ``nbformat.read(path, as_version=4)``.
    name : str
        Used in error messages only (typically the notebook's path).

    Returns
    -------
    (nbformat.NotebookNode, StripReport)
        The stripped notebook and counts of what was removed.

    Raises
    ------
    UnbalancedSolutionGate
        If a ``{solution-start}`` has no later ``{solution-end}``, a ``{solution-end}`` appears without an
        open gate, or a gate is opened inside another gate. The message gives the notebook name and the
        (0-based) index of the offending cell.
    TypeError
        If ``nb`` is not a notebook (no ``cells`` list).
    """
    if not hasattr(nb, "get") or not isinstance(nb.get("cells"), list):
        raise TypeError(f"{name}: expected an nbformat notebook with a 'cells' list, got {type(nb).__name__}")
    out = nbformat.from_dict(copy.deepcopy(dict(nb)))  # a deep copy, as a NotebookNode

    gates = _Gates(name)
    kept = []
    counts = {"solution_cells": 0, "trimmed_cells": 0, "unhidden_stubs": 0}
    for i, cell in enumerate(out.cells):
        if cell.get("cell_type") == "markdown":
            was_open = gates.open_at is not None
            text = _source(cell)
            rest = gates.markdown(i, text)
            if rest == text and was_open:  # no directive in it, inside a gate
                continue
            if rest != text:
                if not rest.strip():
                    continue
                cell.source = rest.strip("\n") + ("\n" if text.endswith("\n") else "")
                counts["trimmed_cells"] += 1
        elif gates.open_at is not None:
            continue
        tags = _tags(cell)
        if SOLUTION_TAG in tags:
            counts["solution_cells"] += 1
            continue
        if STUDENT_TAG in tags and REMOVE_CELL_TAG in tags:
            cell.metadata["tags"] = [t for t in tags if t != REMOVE_CELL_TAG]
            counts["unhidden_stubs"] += 1
        if cell.get("cell_type") == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
        kept.append(cell)
    if gates.open_at is not None:
        raise UnbalancedSolutionGate(
            f"{name}: the {{solution-start}} gate opened at cell {gates.open_at} is never closed "
            f"(no {{solution-end}} after it)"
        )
    removed = len(out.cells) - len(kept)
    out.cells = kept
    out.metadata.pop("widgets", None)  # saved ipywidgets state belongs to an executed run
    return out, StripReport(removed=removed, gates=gates.gates, plain_solutions=gates.plain, **counts)


def _notebooks(src: Path) -> list[Path]:
    if src.is_file():
        if src.suffix != ".ipynb":
            raise ValueError(f"expected a .ipynb file or a directory of notebooks, got {src}")
        return [src]
    if not src.is_dir():
        raise FileNotFoundError(f"notebook source {src} does not exist (expected a directory of .ipynb files)")
    return sorted(p for p in src.glob("*.ipynb") if p.is_file())


def make_student_edition(src="notebooks", dst="_build/student", *, verbose: bool = False) -> list[Path]:
    """Write the student edition of every notebook in ``src`` into ``dst``.

    Parameters
    ----------
    src : str or Path
        A directory of ``*.ipynb`` chapters (not searched recursively) or a single notebook.
    dst : str or Path
        Output directory, created if missing. Files keep their names. Must differ from ``src``.
    verbose : bool
        Print one line per notebook with what was removed.

    Returns
    -------
    list[Path]
        The notebooks written, in sorted order of their names.

    Raises
    ------
    UnbalancedSolutionGate
        If any notebook has an unbalanced solution gate (nothing is written for that notebook;
        notebooks before it in sorted order have already been written).
    FileNotFoundError
        If ``src`` does not exist. ``ValueError`` if ``dst`` is the source directory or ``src`` is not a notebook.
    """
    src, dst = Path(src), Path(dst)
    paths = _notebooks(src)
    src_dir = src if src.is_dir() else src.parent
    if dst.resolve() == src_dir.resolve():
        raise ValueError(f"dst ({dst}) must differ from the source directory; it would overwrite the full notebooks")
    dst.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        nb = nbformat.read(path, as_version=NB_VERSION)
        student, report = strip_notebook(nb, name=str(path))
        nbformat.validate(student)
        target = dst / path.name
        nbformat.write(student, target)
        written.append(target)
        if verbose:
            print(
                f"{path} -> {target}: removed {report.gates} solution gate(s) and "
                f"{report.solution_cells} other solution cell(s) ({report.removed} cells in all), "
                f"unhid {report.unhidden_stubs} exercise stub(s)"
            )
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m coursekit.student [--src notebooks] [--dst _build/student]``."""
    parser = argparse.ArgumentParser(
        prog="python -m coursekit.student",
        description="Write the student edition of the course notebooks: solution cells and gated "
        "solutions removed, outputs cleared, exercise stubs visible.",
    )
    parser.add_argument(
        "--src", default="notebooks", help="directory of notebooks or one .ipynb (default: %(default)s)"
    )
    parser.add_argument("--dst", default="_build/student", help="output directory (default: %(default)s)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    args = parser.parse_args(argv)
    try:
        written = make_student_edition(args.src, args.dst, verbose=not args.quiet)
    except (UnbalancedSolutionGate, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not written:
        print(f"error: no notebooks found in {args.src}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"student edition: {len(written)} notebook(s) in {args.dst}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
