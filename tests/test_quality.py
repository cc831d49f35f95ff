"""Code quality gates, run as the tools' own command lines: ruff and mypy are clean on the
agent and the tests, vermin confirms the agent runs on Python 3.9, and on a 3.9 interpreter
the agent really does (without lxml, which only metadata needs)."""

from __future__ import annotations

import glob
import os
import subprocess
from pathlib import Path

import pytest

from tests.support import AGENT, ROOT, require, require_path, run_agent
from tests.xapisim import SimHandle

VENV_BIN = ROOT / ".venv" / "bin"
CHECKED = [str(AGENT), str(ROOT / "tests")]


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    tool = VENV_BIN / name
    require_path(tool)
    return subprocess.run([str(tool), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)


def test_ruff_is_clean() -> None:
    done = run_tool("ruff", "check", "--no-cache", *CHECKED)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_is_clean() -> None:
    # tests/ is no package: explicit package bases make tests/support.py the module
    # `tests.support` that the tests import, rather than a second module `support`.
    done = run_tool("mypy", "--explicit-package-bases", *CHECKED)
    assert done.returncode == 0, done.stdout + done.stderr


def test_vermin_agent_needs_at_most_python_3_9() -> None:
    done = run_tool("vermin", "--target=3.9-", "--no-tips", "--violations", str(AGENT))
    assert done.returncode == 0, done.stdout + done.stderr


def python39() -> Path:
    """A Python 3.9 interpreter: $FX_PYTHON39 or pyenv's (this project's machines, CI's
    included, come with pyenv's 3.9; its python3.9 shim on PATH may refuse to run). Debian 12
    packages none and CI may download no interpreter, so where there is none the test skips
    locally and fails under CI=true (tests/support.py)."""
    candidates = [os.environ.get("FX_PYTHON39", ""),
                  *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python")),
                          reverse=True)]
    found = [path for path in candidates if path and os.access(path, os.X_OK)]
    require(bool(found), "no Python 3.9 interpreter",
            "set FX_PYTHON39 to one, or `pyenv install 3.9`")
    return Path(found[0])


def test_status_runs_on_python_3_9(sim: SimHandle) -> None:
    interpreter = python39()
    run = run_agent([str(AGENT)], stdin=sim.params(action="status", plug="vm-running"),
                    agent=interpreter)
    assert run.returncode == 0, run
    assert run.stdout == "Status: ON\n"
    assert sim.sessions_open() == 0


@pytest.mark.parametrize("ci,outcome", [("true", "1 failed"), ("", "1 skipped")])
def test_a_skip_fails_under_ci(tmp_path: Path, ci: str, outcome: str) -> None:
    """tests/conftest.py turns any skip into a failure under CI=true, wherever it comes from."""
    (tmp_path / "test_skipper.py").write_text(
        "import pytest\n\n\ndef test_skips() -> None:\n    pytest.skip('no frobnicator')\n")
    done = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-p", "tests.conftest", str(tmp_path / "test_skipper.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "CI": ci, "PYTHONPATH": str(ROOT)})
    assert outcome in done.stdout, done.stdout + done.stderr


def test_planted_bug_catalogue_is_current() -> None:
    """tests/mutation/planted.py runs for minutes, so not in CI; its catalogue is checked
    here: each bug's text occurs exactly once in the agent, its planting still compiles,
    and every test it names exists (a renamed test would make the bug 'not found')."""
    import ast
    import re

    from tests.mutation.planted import BUGS

    source = AGENT.read_text(encoding="utf-8")
    for bug in BUGS:
        assert source.count(bug.old) == 1, f"{bug.name}: its text is not in the agent once"
        compile(source.replace(bug.old, bug.new), bug.name, "exec")
        for test in bug.tests:
            path, _, name = test.partition("::")
            module = ast.parse((ROOT / path).read_text(encoding="utf-8"))
            defined = {node.name for node in ast.walk(module)
                       if isinstance(node, ast.FunctionDef)}
            assert re.sub(r"\[.*\]$", "", name) in defined, f"{bug.name}: {test} is gone"
