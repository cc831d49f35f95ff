"""The agent's own log (no logging module, so that start-up stays short) keeps the logging
module's contract:
levels per output, secrets scrubbed (tests/test_agent_security.py), and an output that fails
never fails the run nor prints a traceback."""

from __future__ import annotations

from pathlib import Path

from tests.support import require_path, run_agent
from tests.xapisim import SimHandle


def test_debug_file_that_cannot_be_written_stops_with_one_warning(sim: SimHandle) -> None:
    require_path("/dev/full")
    run = run_agent(stdin=sim.params(action="status", plug="vm-running",
                                     debug_file="/dev/full", verbose="1"))
    assert (run.returncode, run.stdout) == (0, "Status: ON\n"), run
    warnings = [line for line in run.stderr_lines if "debug_file=" in line]
    assert warnings == ["WARNING: debug_file=/dev/full: cannot write (No space left on "
                        "device); debug logging stopped"], run.stderr
    assert "Traceback" not in run.stderr
    assert any(line.startswith("DEBUG: ") for line in run.stderr_lines)  # stderr goes on
    assert sim.sessions_open() == 0


def test_debug_file_gets_every_level_with_a_timestamp(sim: SimHandle, tmp_path: Path) -> None:
    debug_file = tmp_path / "debug.log"
    run = run_agent(stdin=sim.params(action="off", plug="vm-running",
                                     debug_file=str(debug_file)))
    assert run.returncode == 0, run
    assert run.stderr == ""  # not verbose: nothing below WARNING on stderr
    lines = debug_file.read_text(encoding="utf-8").splitlines()
    assert lines, "nothing in the debug file"
    assert all(len(line) > 24 and line[4] == "-" and line[19] == "," for line in lines), lines
    levels = {line.split(" ", 3)[2] for line in lines}
    assert {"DEBUG:", "INFO:"} <= levels, levels
