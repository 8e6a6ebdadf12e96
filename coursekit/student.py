"""Write the *student edition* of the course notebooks: solutions stripped, outputs cleared.

The full notebooks in ``notebooks/`` contain every exercise's solution, so that they run end
to end (and are tested that way). The student edition is the same notebooks with

* every cell tagged ``solution`` removed (any cell type);
* every *gated* solution removed: from the markdown cell whose source starts with a
  ``{solution-start}`` directive through the markdown cell with the matching ``{solution-end}``
  directive, inclusive (the gated form of sphinx-exercise, which lets a solution contain code cells);
* every markdown cell that starts with a plain (non-gated) ``{solution}`` directive removed;
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
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

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

# A MyST directive opening: three or more backticks or colons, then ``{name}``.
_DIRECTIVE = r"(?:`{3,}|:{3,})\{%s\}"
_START_RE = re.compile(r"^\s*" + _DIRECTIVE % r"solution-start")
_END_RE = re.compile(r"^[ \t]*" + _DIRECTIVE % r"solution-end", re.MULTILINE)
_PLAIN_SOLUTION_RE = re.compile(r"^\s*" + _DIRECTIVE % r"solution")


class UnbalancedSolutionGate(ValueError):
    """A ``{solution-start}`` without its ``{solution-end}`` (or the reverse, or nested gates)."""


@dataclass(frozen=True)
class StripReport:
    """What :func:`strip_notebook` removed from one notebook (counts of cells)."""

    solution_cells: int = 0
    gated_cells: int = 0
    gates: int = 0
    plain_solution_cells: int = 0
    unhidden_stubs: int = 0

    @property
    def removed(self) -> int:
        """Total number of cells removed."""
        return self.solution_cells + self.gated_cells + self.plain_solution_cells


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []) or [])


def _is_gate_start(cell) -> bool:
    return cell.get("cell_type") == "markdown" and bool(_START_RE.match(_source(cell)))


def _is_gate_end(cell) -> bool:
    return cell.get("cell_type") == "markdown" and bool(_END_RE.search(_source(cell)))


def strip_notebook(nb, *, name: str = "<notebook>"):
    """Return the student edition of one notebook (a new object; ``nb`` is not modified).

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
        If a ``{solution-start}`` cell has no later ``{solution-end}`` cell, a ``{solution-end}``
        appears without an open gate, or a gate is opened inside another gate. The message gives
        the notebook name and the cell index (0-based) of the offending cell.
    TypeError
        If ``nb`` is not a notebook (no ``cells`` list).
    """
    if not hasattr(nb, "get") or not isinstance(nb.get("cells"), list):
        raise TypeError(f"{name}: expected an nbformat notebook with a 'cells' list, got {type(nb).__name__}")
    out = nbformat.from_dict(copy.deepcopy(dict(nb)))  # a deep copy, as a NotebookNode

    kept = []
    counts = dict(solution_cells=0, gated_cells=0, gates=0, plain_solution_cells=0, unhidden_stubs=0)
    open_gate: int | None = None  # index of the cell that opened the current gate
    for i, cell in enumerate(out.cells):
        starts, ends = _is_gate_start(cell), _is_gate_end(cell)
        if open_gate is not None:
            if starts:
                raise UnbalancedSolutionGate(
                    f"{name}: cell {i} opens a {{solution-start}} gate while the gate opened at "
                    f"cell {open_gate} is still open (missing {{solution-end}} before cell {i})"
                )
            counts["gated_cells"] += 1
            if ends:
                open_gate = None
            continue
        if starts:
            counts["gates"] += 1
            counts["gated_cells"] += 1
            if not ends:  # a start and end in the same markdown cell close at once
                open_gate = i
            continue
        if ends:
            raise UnbalancedSolutionGate(
                f"{name}: cell {i} has a {{solution-end}} without a preceding {{solution-start}}"
            )
        tags = _tags(cell)
        if SOLUTION_TAG in tags:
            counts["solution_cells"] += 1
            continue
        if cell.get("cell_type") == "markdown" and _PLAIN_SOLUTION_RE.match(_source(cell)):
            counts["plain_solution_cells"] += 1
            continue
        if STUDENT_TAG in tags and REMOVE_CELL_TAG in tags:
            cell.metadata["tags"] = [t for t in tags if t != REMOVE_CELL_TAG]
            counts["unhidden_stubs"] += 1
        if cell.get("cell_type") == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
        kept.append(cell)
    if open_gate is not None:
        raise UnbalancedSolutionGate(
            f"{name}: the {{solution-start}} gate opened at cell {open_gate} is never closed "
            f"(no {{solution-end}} markdown cell after it)"
        )
    out.cells = kept
    out.metadata.pop("widgets", None)  # saved ipywidgets state belongs to an executed run
    return out, StripReport(**counts)


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
                f"{path} -> {target}: removed {report.solution_cells} solution cell(s), "
                f"{report.gates} solution gate(s) ({report.gated_cells} cells), "
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
    parser.add_argument("--src", default="notebooks", help="directory of notebooks or one .ipynb (default: %(default)s)")
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
