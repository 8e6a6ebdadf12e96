"""The nbgrader source tree (coursekit.student.make_assignment / make_assignment_source, `make assignments`).

Unit tests run on small notebooks made here; then every real chapter is converted and its cell metadata
checked; then one chapter goes through nbgrader itself, end to end, in a temporary course directory:
`nbgrader generate_assignment` must release it with no solution text, and `nbgrader autograde` must give the
unchanged release zero points and the source (the solutions filled back in) full points.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from coursekit.student import (
    BEGIN_SOLUTION,
    END_SOLUTION,
    AssignmentError,
    main,
    make_assignment,
    make_assignment_source,
    strip_notebook,
)

from conftest import REPO, chapter_notebooks

NOTEBOOKS = chapter_notebooks()
NB_IDS = [p.stem for p in NOTEBOOKS]
#: The chapter sent through nbgrader end to end (its smoke run is short).
ROUND_TRIP_CHAPTER = "07_wasserstein"
BIN = Path(sys.executable).parent  # nbgrader and alembic (which nbgrader calls) live beside the interpreter


def code(src, tags=(), **meta):
    metadata = {"tags": list(tags)} if tags else {}
    metadata.update(meta)
    return new_code_cell(src, metadata=metadata)


def exercise_notebook(solution_src="def f(x):\n    y = x + 1\n\n    return 2 * y", check_meta=None):
    nb = new_notebook()
    nb.cells = [
        new_markdown_cell("# Title"),
        code("import math"),
        new_markdown_cell("```{exercise}\n:label: ex-f\nWrite f.\n```"),
        code('def f(x):\n    """Twice x + 1."""\n    raise NotImplementedError("Exercise: f")',
             tags=["student", "remove-cell"]),
        new_markdown_cell("```{solution-start} ex-f\n:class: dropdown\n```"),
        code(solution_src, tags=["solution"]),
        new_markdown_cell("```{solution-end}\n```"),
        code("check(f)", **({"coursekit": check_meta} if check_meta else {})),
        new_markdown_cell("Done."),
    ]
    return nb


def roles(nb):
    return [(c.metadata["nbgrader"]["solution"], c.metadata["nbgrader"]["grade"], c.metadata["nbgrader"]["locked"])
            for c in nb.cells]


def test_stub_and_solution_become_one_solution_cell():
    nb = exercise_notebook()
    before = nbformat.writes(nb)
    out, points = make_assignment(nb)
    assert nbformat.writes(nb) == before, "the input notebook was modified"
    student, _ = strip_notebook(nb)
    assert len(out.cells) == len(student.cells)
    merged = out.cells[3].source
    assert merged == (
        'def f(x):\n    """Twice x + 1."""\n    ' + BEGIN_SOLUTION + "\n    y = x + 1\n\n    return 2 * y\n    "
        + END_SOLUTION + "\n"
    )
    namespace = {}
    exec(merged, namespace)  # noqa: S102 (the generated cell is run to show it is the working solution)
    assert namespace["f"](1) == 4
    assert points == {"check_f": 1}
    meta = out.cells[3].metadata["nbgrader"]
    assert meta == {"grade": False, "grade_id": "f_solution", "locked": False, "schema_version": 3,
                    "solution": True, "task": False}
    assert out.cells[4].metadata["nbgrader"]["grade_id"] == "check_f"
    assert out.cells[4].metadata["nbgrader"]["points"] == 1
    expected = [(False, False, True)] * len(out.cells)
    expected[3], expected[4] = (True, False, False), (False, True, True)
    assert roles(out) == expected
    ids = [c.metadata["nbgrader"]["grade_id"] for c in out.cells]
    assert len(set(ids)) == len(ids)
    assert "remove-cell" not in out.cells[3].metadata["tags"]


def test_points_come_from_the_check_cell_metadata():
    out, points = make_assignment(exercise_notebook(check_meta={"points": 3}))
    assert points == {"check_f": 3}
    assert out.cells[4].metadata["nbgrader"]["points"] == 3


def test_a_solution_with_more_than_the_function_goes_whole_between_the_markers():
    solution = "def helper(x):\n    return x + 1\n\n\ndef f(x):\n    return 2 * helper(x)"
    out, _ = make_assignment(exercise_notebook(solution))
    merged = out.cells[3].source
    assert merged.startswith('def f(x):\n    """Twice x + 1."""\n    raise NotImplementedError')
    assert f"{BEGIN_SOLUTION}\n{solution}\n{END_SOLUTION}\n" in merged
    namespace = {}
    exec(merged, namespace)  # noqa: S102 (as above)
    assert namespace["f"](1) == 4


@pytest.mark.parametrize("change, match", [
    (lambda nb: nb.cells.__setitem__(5, code("def g(x):\n    return x", tags=["solution"])), r"defines f\(\)"),
    (lambda nb: nb.cells.__setitem__(7, new_markdown_cell("no check")), "no check cell"),
    (lambda nb: nb.cells.__setitem__(3, code("f = 1", tags=["student"])), "raises NotImplementedError"),
    (lambda nb: nb.cells.extend(exercise_notebook().cells[2:8]), "second exercise defines f"),
])
def test_malformed_exercises_are_errors(change, match):
    nb = exercise_notebook()
    change(nb)
    with pytest.raises(AssignmentError, match=match):
        make_assignment(nb, name="nb.ipynb")


def test_a_notebook_without_exercises_is_skipped(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    plain = new_notebook(cells=[new_markdown_cell("# No exercises"), code("x = 1")])
    nbformat.write(plain, src / "00_plain.ipynb")
    nbformat.write(exercise_notebook(), src / "01_ex.ipynb")
    written = make_assignment_source(src, tmp_path / "source")
    assert written == [tmp_path / "source" / "01_ex" / "01_ex.ipynb"]


def test_cli_writes_the_source_tree(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(exercise_notebook(), src / "01_ex.ipynb")
    assert main(["--nbgrader", "--src", str(src), "--dst", str(tmp_path / "out")]) == 0
    assert "nbgrader source: 1 notebook(s)" in capsys.readouterr().out
    assert (tmp_path / "out" / "01_ex" / "01_ex.ipynb").is_file()
    nbformat.write(new_notebook(cells=[code("x = 1")]), src / "01_ex.ipynb")
    assert main(["--nbgrader", "--src", str(src), "--dst", str(tmp_path / "out2")]) == 1
    assert "no notebooks with exercises" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# the real chapters


@pytest.fixture(scope="module")
def source_tree(tmp_path_factory):
    dst = tmp_path_factory.mktemp("assignments") / "source"
    written = make_assignment_source(REPO / "notebooks", dst)
    assert [p.parent.name for p in written] == NB_IDS, "every chapter has exercises, so every chapter is written"
    return dst


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=NB_IDS)
def test_every_chapter_becomes_an_nbgrader_source(source_tree, notebook):
    nb = nbformat.read(source_tree / notebook.stem / notebook.name, as_version=4)
    nbformat.validate(nb)
    full = nbformat.read(notebook, as_version=4)
    stubs = [c for c in full.cells if "student" in c.metadata.get("tags", [])]
    metas = [c.metadata["nbgrader"] for c in nb.cells]
    solutions = [c for c, m in zip(nb.cells, metas, strict=True) if m["solution"]]
    tests = [m for m in metas if m["grade"]]
    assert len(solutions) == len(tests) == len(stubs) >= 3
    for cell in solutions:
        assert cell.cell_type == "code"
        assert cell.source.count(BEGIN_SOLUTION) == cell.source.count(END_SOLUTION) == 1
    assert all(m["locked"] for m in metas if not m["solution"])
    assert all(m["points"] == 1 for m in tests)
    ids = [m["grade_id"] for m in metas]
    assert len(set(ids)) == len(ids), "grade ids must be unique within a notebook"


# --------------------------------------------------------------------------------------------
# nbgrader itself, end to end


def nbgrader(*args, cwd, timeout=900):
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", COURSEKIT_PROFILE="smoke",
               MPLBACKEND="Agg")
    proc = subprocess.run([str(BIN / "nbgrader"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def solution_lines(source: str) -> list[str]:
    """The non-trivial lines between the solution markers of one solution cell."""
    inner = source.split(BEGIN_SOLUTION, 1)[1].split(END_SOLUTION, 1)[0]
    return [line.strip() for line in inner.splitlines() if len(line.strip()) > 12]


def test_nbgrader_round_trip(tmp_path):
    assert (BIN / "nbgrader").is_file(), "nbgrader is a dev dependency: pip install -e '.[dev]'"
    course, chapter = tmp_path / "course", ROUND_TRIP_CHAPTER
    (course / "nbgrader_config.py").parent.mkdir()
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.root = {str(course)!r}\n"
        f"c.CourseDirectory.db_url = 'sqlite:///{course / 'gradebook.db'}'\n"
        "c.Execute.timeout = 600\n"
    )
    [source] = make_assignment_source(REPO / "notebooks" / f"{chapter}.ipynb", course / "source")
    nbgrader("generate_assignment", chapter, cwd=course)
    release = course / "release" / chapter / f"{chapter}.ipynb"
    released = nbformat.read(release, as_version=4)
    text = "\n".join(c.source for c in released.cells)
    assert BEGIN_SOLUTION not in text
    answers = [line for c in nbformat.read(source, as_version=4).cells
               if c.metadata["nbgrader"]["solution"] for line in solution_lines(c.source)]
    assert answers and not [line for line in answers if line in text], "solution text survived the release"

    for student, notebook in (("unchanged", release), ("solved", source)):
        (course / "submitted" / student / chapter).mkdir(parents=True)
        shutil.copy(notebook, course / "submitted" / student / chapter / f"{chapter}.ipynb")
    nbgrader("autograde", chapter, "--create", cwd=course)
    nbgrader("export", "--to", str(course / "grades.csv"), cwd=course)
    with open(course / "grades.csv", newline="") as f:
        grades = {row["student_id"]: row for row in csv.DictReader(f)}
    n_checks = sum(c.metadata["nbgrader"]["grade"] for c in released.cells)
    assert float(grades["unchanged"]["max_score"]) == n_checks >= 3
    assert float(grades["unchanged"]["raw_score"]) == 0.0, "the unchanged release must score nothing"
    assert float(grades["solved"]["raw_score"]) == n_checks, "the solved notebook must score full points"
