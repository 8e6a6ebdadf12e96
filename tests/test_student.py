"""The student edition (coursekit.student): stripping rules, and the real notebooks' exercises.

Unit tests run on small notebooks made here with nbformat. The tests on the real chapters build the
student edition of every notebook in notebooks/ and check that no solution survives and that no later
cell calls an exercise's stub; then they execute each chapter's set-up cell with its stubs and checks
under the `smoke` profile and check that every check fails on its stub with a helpful AssertionError.
(The whole notebooks are executed by nbval and by the book build.)
"""

from __future__ import annotations

import ast
import copy
import os
import re
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from coursekit.student import UnbalancedSolutionGate, main, make_student_edition, strip_notebook

from conftest import REPO, chapter_notebooks

NOTEBOOKS = chapter_notebooks()
NB_IDS = [p.stem for p in NOTEBOOKS]
GATE_TEXT = re.compile(r"\{solution-(start|end)\}")
SOLUTION_DIRECTIVE = re.compile(r"(`{3,}|:{3,})\{solution\}")
#: What a helpful "not done yet" message says (case-insensitive).
NOT_DONE = re.compile(r"not (yet )?(been )?(implemented|done|complete|written|filled)|fill in|implement", re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# a synthetic notebook with every case


def code(src, tags=(), outputs=True):
    cell = new_code_cell(src, metadata={"tags": list(tags)} if tags else {})
    if outputs:
        cell.outputs = [new_output("stream", name="stdout", text="out\n")]
        cell.execution_count = 7
    return cell


def md(src, tags=()):
    return new_markdown_cell(src, metadata={"tags": list(tags)} if tags else {})


def synthetic():
    nb = new_notebook()
    nb.cells = [
        md("# Title"),  # 0
        code('REPO_URL = "x"', tags=["hide-input"]),  # 1
        md("```{exercise}\n:label: ex-a\nDo A.\n```"),  # 2
        code("def a():\n    raise NotImplementedError", tags=["student", "remove-cell"]),  # 3
        md("```{solution-start} ex-a\n:class: dropdown\n```"),  # 4
        md("The idea is..."),  # 5 (inside the gate)
        code("def a():\n    return 1", tags=["solution"]),  # 6 (inside the gate)
        code("helper = 2"),  # 7 (inside the gate, untagged)
        md("```{solution-end}\n```"),  # 8
        code("check(a)"),  # 9
        code("secret = 3", tags=["solution", "hide-input"]),  # 10 (tagged, outside a gate)
        md(":::{solution-start} ex-b\n:::"),  # 11 colon-fence gate
        md("Text answer."),  # 12
        md(":::{solution-end}\n:::"),  # 13
        md("```{solution} ex-c\n:class: dropdown\nA plain solution.\n```"),  # 14
        md("````{solution-start} ex-d\n````\nShort answer.\n````{solution-end}\n````"),  # 15 one-cell gate
        md("## Pitfalls: `{solution-start}` is mentioned in prose here"),  # 16 not a gate (not at the start)
        code("x = 1", tags=["remove-cell"]),  # 17 remove-cell without student: untouched
        md("```{exercise}\n:label: ex-e\nDo E.\n```\n\n```{solution-start} ex-e\n:class: dropdown\n```\n\nHint."),  # 18
        code("e = 5", tags=["solution"]),  # 19 (inside the gate)
        md("```{solution-end}\n```\n\n## Pitfalls\n\n````{solution} ex-f\n```python\nf = 6\n```\n````\nAfter."),  # 20
    ]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return nb


def test_strip_rules():
    nb = synthetic()
    out, report = strip_notebook(nb)
    sources = [c.source for c in out.cells]
    assert sources == [
        "# Title",
        'REPO_URL = "x"',
        "```{exercise}\n:label: ex-a\nDo A.\n```",
        "def a():\n    raise NotImplementedError",
        "check(a)",
        "## Pitfalls: `{solution-start}` is mentioned in prose here",
        "x = 1",
        "```{exercise}\n:label: ex-e\nDo E.\n```",  # the exercise stays, its gated solution goes
        "## Pitfalls\n\nAfter.",  # text after {solution-end} stays; the plain {solution} block goes
    ]
    assert report.gates == 4
    assert report.solution_cells == 1  # only the tagged cell outside a gate counts here
    assert report.plain_solutions == 2
    assert report.trimmed_cells == 2
    assert report.unhidden_stubs == 1
    assert report.removed == len(nb.cells) - len(out.cells) == 21 - 9


def test_strip_clears_outputs_and_tags():
    out, _ = strip_notebook(synthetic())
    for cell in out.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    stub = out.cells[3]
    assert stub.metadata["tags"] == ["student"], "the stub must lose remove-cell and keep student"
    assert out.cells[1].metadata["tags"] == ["hide-input"]
    assert out.cells[6].metadata["tags"] == ["remove-cell"], "remove-cell is dropped only from student stubs"
    assert "widgets" not in out.metadata
    nbformat.validate(out)


def test_strip_does_not_modify_its_input():
    nb = synthetic()
    before = nbformat.writes(nb)
    strip_notebook(nb)
    assert nbformat.writes(nb) == before


@pytest.mark.parametrize(
    "cells, match",
    [
        ([md("```{solution-start} e\n```"), code("x")], r"cell 0 is never closed"),
        ([code("x"), md("```{solution-end}\n```")], r"cell 1 has a \{solution-end\} without"),
        (
            [md("```{solution-start} e\n```"), md(":::{solution-start} f\n:::"), md("```{solution-end}\n```")],
            r"cell 1 opens a \{solution-start\} gate while the gate opened at cell 0",
        ),
        (
            [md("Task.\n\n```{solution-start} e\n```\nA.\n```{solution-end}\n```\n\n```{solution-end}\n```")],
            r"cell 0 has a \{solution-end\} without",
        ),
    ],
    ids=["start-without-end", "end-without-start", "nested", "double-end-mid-cell"],
)
def test_unbalanced_gate_is_an_error(cells, match):
    nb = new_notebook(cells=cells)
    with pytest.raises(UnbalancedSolutionGate, match=match) as info:
        strip_notebook(nb, name="demo.ipynb")
    assert "demo.ipynb" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_strip_rejects_non_notebooks():
    with pytest.raises(TypeError, match="expected an nbformat notebook"):
        strip_notebook({"no": "cells"})


def test_make_student_edition_writes_every_notebook(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(synthetic(), src / "01_a.ipynb")
    nbformat.write(new_notebook(cells=[code("print(1)")]), src / "02_b.ipynb")
    (src / "notes.txt").write_text("not a notebook")
    written = make_student_edition(src, tmp_path / "dst" / "student")
    assert [p.name for p in written] == ["01_a.ipynb", "02_b.ipynb"]
    student = nbformat.read(written[0], as_version=4)
    assert not any("solution" in c.metadata.get("tags", []) for c in student.cells)
    assert nbformat.read(written[1], as_version=4).cells[0].outputs == []
    assert nbformat.read(src / "01_a.ipynb", as_version=4).cells[6].source == "def a():\n    return 1", (
        "the source notebook must be left untouched"
    )


def test_make_student_edition_refuses_to_overwrite_the_sources(tmp_path):
    nbformat.write(synthetic(), tmp_path / "a.ipynb")
    with pytest.raises(ValueError, match="must differ"):
        make_student_edition(tmp_path, tmp_path)


def test_cli(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(synthetic(), src / "a.ipynb")
    assert main(["--src", str(src), "--dst", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "a.ipynb").is_file()
    assert "1 notebook(s)" in capsys.readouterr().out

    nbformat.write(new_notebook(cells=[md("```{solution-start} e\n```")]), src / "b.ipynb")
    assert main(["--src", str(src), "--dst", str(tmp_path / "out2"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "b.ipynb" in err and "never closed" in err

    assert main(["--src", str(tmp_path / "missing"), "--dst", str(tmp_path / "out3")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_cli_as_module(tmp_path):
    """`python -m coursekit.student` (what `make student` runs) works from the repository root."""
    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(synthetic(), src / "a.ipynb")
    proc = subprocess.run(
        [sys.executable, "-m", "coursekit.student", "--src", str(src), "--dst", str(tmp_path / "dst")],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "dst" / "a.ipynb").is_file()


# --------------------------------------------------------------------------------------------
# the real chapters


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    dst = tmp_path_factory.mktemp("student")
    written = make_student_edition(REPO / "notebooks", dst)
    assert [p.name for p in written] == [p.name for p in NOTEBOOKS]
    return dst


def exercises(nb) -> list[tuple[int, int]]:
    """(stub index, check index) for each code exercise: a `student` cell and the next code cell."""
    pairs = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "student" in cell.metadata.get("tags", []):
            j = next((k for k in range(i + 1, len(nb.cells)) if nb.cells[k].cell_type == "code"), None)
            assert j is not None, f"the stub in cell {i} has no check cell after it"
            pairs.append((i, j))
    return pairs


def test_there_are_chapters():
    assert NOTEBOOKS, "no chapter notebooks in notebooks/"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=NB_IDS)
def test_student_edition_has_no_solutions(student_dir, notebook):
    nb = nbformat.read(student_dir / notebook.name, as_version=4)
    full = nbformat.read(notebook, as_version=4)
    assert len(nb.cells) < len(full.cells)
    for i, cell in enumerate(nb.cells):
        tags = cell.metadata.get("tags", [])
        assert "solution" not in tags, f"cell {i} is tagged solution"
        assert not GATE_TEXT.search(cell.source), f"cell {i} still has a solution gate:\n{cell.source[:200]}"
        assert not SOLUTION_DIRECTIVE.search(cell.source), f"cell {i} still has a {{solution}} directive"
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"cell {i} has outputs"
            if "student" in tags:
                assert "remove-cell" not in tags, f"stub cell {i} is still hidden (remove-cell)"
    # every solution cell of the full notebook is gone, whatever its position
    solutions = {c.source for c in full.cells if "solution" in c.metadata.get("tags", [])}
    assert solutions, "the chapter has no solution cells"
    assert not solutions & {c.source for c in nb.cells}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=NB_IDS)
def test_every_code_exercise_has_stub_and_check(student_dir, notebook):
    nb = nbformat.read(student_dir / notebook.name, as_version=4)
    pairs = exercises(nb)
    assert pairs, "the chapter has no code exercise (a `student` stub followed by a check cell)"
    for stub, check in pairs:
        assert "NotImplementedError" in nb.cells[stub].source, f"stub cell {stub} should raise NotImplementedError"
        assert "check" in nb.cells[check].source, (
            f"cell {check} after the stub in cell {stub} should be the exercise's check (ck.check.<exercise>(fn)), "
            f"got:\n{nb.cells[check].source[:200]}"
        )


def python_source(source: str) -> str:
    """Cell source with IPython magics and shell lines replaced by `pass`, so `ast` can parse it."""
    return "\n".join(
        line[: len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!")) else line
        for line in source.splitlines()
    )


def defined_names(source: str) -> set[str]:
    tree = ast.parse(python_source(source))
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))} | {
        t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
    }


def used_names(source: str) -> set[str]:
    return {n.id for n in ast.walk(ast.parse(python_source(source))) if isinstance(n, ast.Name)}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=NB_IDS)
def test_no_later_cell_uses_an_exercise_stub(student_dir, notebook):
    """In the student edition the stubs stay stubs, so no cell other than its check may call one."""
    nb = nbformat.read(student_dir / notebook.name, as_version=4)
    pairs = exercises(nb)
    checks = {check for _, check in pairs}
    offenders = []
    for stub, check in pairs:
        names = defined_names(nb.cells[stub].source)
        for i in range(check + 1, len(nb.cells)):
            cell = nb.cells[i]
            if cell.cell_type != "code" or i in checks or "student" in cell.metadata.get("tags", []):
                continue
            if hits := names & used_names(cell.source):
                offenders.append((i, sorted(hits), cell.source.splitlines()[0][:80]))
    assert not offenders, (
        "cells of the student edition call an exercise function, which is still a stub there and raises "
        f"NotImplementedError (use the coursekit reference instead, e.g. ck.vae.<name>): {offenders}"
    )


@pytest.fixture(scope="module")
def executed_checks(student_dir):
    """For each student notebook, a small notebook [set-up cell, stub, check, stub, check, ...] executed
    under `smoke` with errors allowed. Returns {name: (executed notebook, [(stub, check) indices])}.

    Only these cells run (a few seconds), so each check cell must be self-contained given the set-up
    cell (the install cell, which imports coursekit as ck) and its stub."""
    from nbclient import NotebookClient

    results = {}
    env_before = {k: os.environ.get(k) for k in ("COURSEKIT_PROFILE", "MPLBACKEND")}
    os.environ["COURSEKIT_PROFILE"] = "smoke"  # the kernel inherits this process's environment
    os.environ["MPLBACKEND"] = "Agg"
    try:
        for path in sorted(student_dir.glob("*.ipynb")):
            nb = nbformat.read(path, as_version=4)
            setup = next(c for c in nb.cells if c.cell_type == "code")
            mini = new_notebook(metadata=nb.metadata)
            mini.cells.append(copy.deepcopy(setup))
            pairs = []
            for stub, check in exercises(nb):
                mini.cells += [copy.deepcopy(nb.cells[stub]), copy.deepcopy(nb.cells[check])]
                pairs.append((len(mini.cells) - 2, len(mini.cells) - 1))
            NotebookClient(
                mini, timeout=600, kernel_name="python3", allow_errors=True,
                resources={"metadata": {"path": str(student_dir)}},
            ).execute()
            results[path.name] = (mini, pairs)
    finally:
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return results


def errors(cell) -> list[dict]:
    return [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=NB_IDS)
def test_checks_fail_helpfully_on_the_stubs(executed_checks, notebook):
    nb, pairs = executed_checks[notebook.name]
    assert not errors(nb.cells[0]), f"the set-up cell fails: {errors(nb.cells[0])}"
    for stub, check in pairs:
        assert not errors(nb.cells[stub]), f"the stub cell itself fails: {errors(nb.cells[stub])}"
        errs = errors(nb.cells[check])
        where = f"check cell {nb.cells[check].source.strip()!r}"
        assert errs, f"{where} passed on the stub; it must fail until the exercise is done"
        err = errs[0]
        assert err["ename"] != "NameError", (
            f"{where} needs a name defined elsewhere in the notebook ({err['evalue']}); a check must run "
            "right after the set-up cell and its stub"
        )
        assert err["ename"] == "AssertionError", (
            f"{where} raised {err['ename']}: {err['evalue']!r}; the checker should turn the stub's "
            "NotImplementedError into an AssertionError that says the exercise is not done yet"
        )
        assert NOT_DONE.search(err["evalue"]), (
            f"{where}: the message does not say the exercise is not done: {err['evalue']!r}"
        )
        traceback = "\n".join(err.get("traceback", []))
        assert "During handling of the above exception" not in traceback, (
            f"{where}: the AssertionError is chained to the stub's NotImplementedError; raise it `from None`"
        )
