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

**Assignments for nbgrader** (``make assignments``): :func:`make_assignment_source` writes an nbgrader
*source* tree, ``<dst>/<chapter>/<chapter>.ipynb``, from the same notebooks. Starting from the student
edition, each exercise stub and its solution become one nbgrader solution cell, in which the solution's body
stands between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` where the stub raised ``NotImplementedError``;
each exercise's check cell becomes a locked, autograded test cell worth one point (or
``metadata["coursekit"]["points"]`` of the check cell, when a notebook sets it); every other cell is locked
read-only. Only nbgrader's cell metadata (schema version 3) is written; nbgrader itself releases, collects and
grades (``nbgrader generate_assignment``, ``nbgrader autograde``)::

    python -m coursekit.student --nbgrader --src notebooks --dst _build/assignments/source

The notebook format work is done by :mod:`nbformat`.
"""

from __future__ import annotations

import argparse
import ast
import copy
import re
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat

__all__ = [
    "UnbalancedSolutionGate",
    "StripReport",
    "strip_notebook",
    "make_student_edition",
    "AssignmentError",
    "make_assignment",
    "make_assignment_source",
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


class AssignmentError(ValueError):
    """A notebook's exercises do not have the shape an nbgrader assignment needs (a stub without a solution,
    a stub without a check cell after it, two exercises of one name)."""


#: nbgrader's cell-metadata schema written by :func:`make_assignment`.
NBGRADER_SCHEMA_VERSION = 3
BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"


def _nbgrader_metadata(grade_id: str, *, solution=False, grade=False, locked=True, points=None) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": NBGRADER_SCHEMA_VERSION,
            "solution": solution, "task": False}
    if grade:
        meta["points"] = points
    return meta


def _parse(source: str, where: str) -> ast.Module:
    # IPython magics and shell escapes are not Python; blank them out (keeping line numbers) to parse the rest.
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError as exc:
        raise AssignmentError(f"{where} is not valid Python: {exc}") from exc


def _raises_not_implemented(stmt: ast.stmt) -> bool:
    exc = stmt.exc if isinstance(stmt, ast.Raise) else None
    target = exc.func if isinstance(exc, ast.Call) else exc
    return isinstance(target, ast.Name) and target.id == "NotImplementedError"


def _solution_functions(nb) -> dict[str, tuple[str, ast.FunctionDef, int]]:
    """``{function name: (cell source, its def, the cell's number of top-level statements)}`` for the functions
    defined at top level by ``solution`` cells."""
    found = {}
    for i, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code" or SOLUTION_TAG not in _tags(cell):
            continue
        source = _source(cell)
        body = _parse(source, f"solution cell {i}").body
        for node in body:
            if isinstance(node, ast.FunctionDef):
                found[node.name] = (source, node, len(body))
    return found


def _merge_stub_and_solution(stub: str, solutions: dict, where: str) -> tuple[str, str]:
    """The nbgrader solution cell of one exercise, and the exercise's function name.

    The stub's ``raise NotImplementedError`` statement is replaced by the solution's function body between the
    solution markers, re-indented to the stub's; the rest of the stub (its signature, docstring, comments) is
    kept. If the solution cell holds more than that one function (helpers, imports), the whole solution cell
    goes between the markers below the stub instead, so nothing of it is lost."""
    defs = [n for n in _parse(stub, where).body if isinstance(n, ast.FunctionDef)
            and any(_raises_not_implemented(s) for s in n.body)]
    if len(defs) != 1:
        raise AssignmentError(f"{where}: expected one function whose body raises NotImplementedError, "
                              f"found {len(defs)}")
    name = defs[0].name
    if name not in solutions:
        raise AssignmentError(f"{where}: no cell tagged {SOLUTION_TAG!r} defines {name}()")
    sol_source, sol_def, n_statements = solutions[name]
    stub_lines, sol_lines = stub.splitlines(), sol_source.splitlines()
    if n_statements != 1 or not sol_def.body:
        return f"{stub.rstrip()}\n\n{BEGIN_SOLUTION}\n{sol_source.strip()}\n{END_SOLUTION}\n", name
    raise_stmt = next(s for s in defs[0].body if _raises_not_implemented(s))
    indent = stub_lines[raise_stmt.lineno - 1][: raise_stmt.col_offset]
    body = textwrap.dedent("\n".join(sol_lines[sol_def.body[0].lineno - 1: sol_def.end_lineno]))
    inner = [indent + BEGIN_SOLUTION, textwrap.indent(body, indent).rstrip(), indent + END_SOLUTION]
    merged = stub_lines[: raise_stmt.lineno - 1] + inner + stub_lines[raise_stmt.end_lineno:]
    return "\n".join(merged) + "\n", name


def make_assignment(nb, *, name: str = "<notebook>"):
    """Return the nbgrader source version of one chapter notebook (a new object; ``nb`` is not modified).

    The notebook is first stripped as the student edition (:func:`strip_notebook`), then each exercise stub
    (a code cell tagged ``student``) becomes an nbgrader solution cell holding the solution between
    ``### BEGIN SOLUTION`` / ``### END SOLUTION`` (see :func:`_merge_stub_and_solution`), the next code cell (the
    exercise's check, ``ck.check.<name>(fn)``) an autograded test cell (``grade_id`` ``check_<name>``; one point,
    or ``cell.metadata["coursekit"]["points"]``), and every other cell a locked read-only cell.

    Returns:
        ``(notebook, points)``: the nbformat notebook and ``{grade_id: points}`` of its test cells.

    Raises:
        AssignmentError: a stub has no solution defining its function, no code cell after it, or two stubs
            define the same function.
        UnbalancedSolutionGate / TypeError: as :func:`strip_notebook`.
    """
    solutions = _solution_functions(nb)
    out, _ = strip_notebook(nb, name=name)
    points, roles = {}, {}
    for i, cell in enumerate(out.cells):
        if cell.get("cell_type") != "code" or STUDENT_TAG not in _tags(cell):
            continue
        where = f"{name}: exercise stub in cell {i} of the student edition"
        cell.source, fn = _merge_stub_and_solution(_source(cell), solutions, where)
        check = next((j for j in range(i + 1, len(out.cells)) if out.cells[j].get("cell_type") == "code"), None)
        if check is None:
            raise AssignmentError(f"{where}: no check cell (a code cell) follows it")
        if f"check_{fn}" in points:
            raise AssignmentError(f"{where}: a second exercise defines {fn}()")
        value = out.cells[check].metadata.get("coursekit", {}).get("points", 1)
        points[f"check_{fn}"] = value
        roles[i] = _nbgrader_metadata(f"{fn}_solution", solution=True, locked=False)
        roles[check] = _nbgrader_metadata(f"check_{fn}", grade=True, points=value)
    for i, cell in enumerate(out.cells):
        cell.metadata["nbgrader"] = roles.get(i, _nbgrader_metadata(f"cell_{i:03d}"))
    return out, points


def make_assignment_source(src="notebooks", dst="_build/assignments/source", *, verbose: bool = False) -> list[Path]:
    """Write an nbgrader source tree, ``dst/<stem>/<stem>.ipynb`` for each notebook of ``src`` that has exercises.

    Point ``nbgrader``'s course directory at the parent of ``dst`` (``source`` is nbgrader's default name for it)
    and release a chapter with ``nbgrader generate_assignment <stem>``. Raises as :func:`make_assignment`, and
    ``FileNotFoundError`` / ``ValueError`` as :func:`make_student_edition`. Returns the notebooks written.
    """
    src, dst = Path(src), Path(dst)
    written = []
    for path in _notebooks(src):
        nb = nbformat.read(path, as_version=NB_VERSION)
        assignment, points = make_assignment(nb, name=str(path))
        if not points:
            continue
        nbformat.validate(assignment)
        target = dst / path.stem / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(assignment, target)
        written.append(target)
        if verbose:
            print(f"{path} -> {target}: {len(points)} graded check(s), {sum(points.values())} point(s)")
    return written


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
        description="Write the student edition of the course notebooks (solution cells and gated solutions "
        "removed, outputs cleared, exercise stubs visible), or with --nbgrader an nbgrader source tree.",
    )
    parser.add_argument(
        "--src", default="notebooks", help="directory of notebooks or one .ipynb (default: %(default)s)"
    )
    parser.add_argument("--dst", default=None,
                        help="output directory (default: _build/student, or _build/assignments/source with --nbgrader)")
    parser.add_argument("--nbgrader", action="store_true",
                        help="write an nbgrader source tree (one folder per chapter) instead of the student edition")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    args = parser.parse_args(argv)
    write = make_assignment_source if args.nbgrader else make_student_edition
    dst = args.dst or ("_build/assignments/source" if args.nbgrader else "_build/student")
    try:
        written = write(args.src, dst, verbose=not args.quiet)
    except (UnbalancedSolutionGate, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not written:
        what = "notebooks with exercises" if args.nbgrader else "notebooks"
        print(f"error: no {what} found in {args.src}", file=sys.stderr)
        return 1
    if not args.quiet:
        what = "nbgrader source" if args.nbgrader else "student edition"
        print(f"{what}: {len(written)} notebook(s) in {dst}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
