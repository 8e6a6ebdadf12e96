"""Helpers shared by several test files (imported as ``from _helpers import ...``; pytest puts tests/ on
sys.path)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch


def stub(*args):
    """An exercise stub, as students receive it."""
    raise NotImplementedError


def assert_fails(checker, fn, *patterns, seed=None) -> str:
    """Assert that ``checker(fn)`` raises an AssertionError whose message contains every pattern."""
    with pytest.raises(AssertionError) as info:
        checker(fn, seed=seed)
    msg = str(info.value)
    for p in patterns:
        assert p.lower() in msg.lower(), f"expected {p!r} in the message:\n{msg}"
    return msg


def assert_rejects_bad_scores(call) -> None:
    """Assert that ``call(scores)``, a loss of one score per example, rejects NaN, a wrong shape, an empty batch,
    a non-tensor and integer scores, each with a message naming the problem."""
    with pytest.raises(ValueError, match="NaN"):
        call(torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match=r"\(N,\) or \(N, 1\)"):
        call(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="empty"):
        call(torch.zeros(0))
    with pytest.raises(TypeError, match="torch.Tensor"):
        call([0.0, 1.0])
    with pytest.raises(TypeError, match="floating"):
        call(torch.tensor([0, 1]))


def notebook_assignments(path: Path, names) -> dict:
    """First value assigned to each of ``names`` in the notebook's code cells: a literal, or the keyword dict of
    a ``ck.runtime.budget(smoke=..., cpu=..., gpu=...)`` call. Used to keep coursekit.bench's recipes equal to
    the chapters' budgets."""
    found = {}
    for cell in json.loads(Path(path).read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        lines = "".join(cell["source"]).splitlines()
        code = "\n".join(  # IPython magics (%pip, !cmd) -> pass, keeping the indentation
            line[: len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!")) else line
            for line in lines
        )
        for node in ast.walk(ast.parse(code)):
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
                continue
            name = node.targets[0].id
            if name not in names or name in found:
                continue
            value = node.value
            if isinstance(value, ast.Call) and ast.unparse(value.func).endswith("budget"):
                found[name] = {kw.arg: ast.literal_eval(kw.value) for kw in value.keywords}
            else:
                found[name] = ast.literal_eval(value)
    return found


def assert_fresh_inputs_and_seeded(checker, solution, seed: int):
    """A checker draws fresh random inputs on every call, and the same inputs for the same ``seed``.

    Spies on the first argument the checker passes to ``solution`` (a correct implementation)."""
    import torch

    seen = []

    def spy(first, *rest):
        seen.append(first.clone())
        return solution(first, *rest)

    for kwargs, same in (({}, False), ({"seed": seed}, True)):
        seen.clear()
        checker(spy, **kwargs)
        n = len(seen)
        checker(spy, **kwargs)
        assert torch.equal(seen[0], seen[n]) is same, f"first inputs of two calls with {kwargs or 'no seed'}"
