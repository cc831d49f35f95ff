"""Code quality gates, run as the tools' own command lines: ruff and mypy are clean on the
agent and the tests, vermin confirms the agent runs on Python 3.9, and when a 3.9 interpreter
is at hand the agent really does (without lxml, which only metadata needs)."""

from __future__ import annotations

import glob
import subprocess
from pathlib import Path

import pytest

from tests.support import AGENT, ROOT, require_path, run_agent
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
    """A Python 3.9 interpreter, if this machine has one (pyenv's); an extra check, so absent
    is a skip even in CI."""
    found = sorted(glob.glob("/root/.pyenv/versions/3.9*/bin/python"))
    if not found:
        pytest.skip("no Python 3.9 interpreter under /root/.pyenv/versions")
    return Path(found[-1])


def test_status_runs_on_python_3_9(sim: SimHandle) -> None:
    interpreter = python39()
    run = run_agent([str(AGENT)], stdin=sim.params(action="status", plug="vm-running"),
                    agent=interpreter)
    assert run.returncode == 0, run
    assert run.stdout == "Status: ON\n"
    assert sim.sessions_open() == 0
