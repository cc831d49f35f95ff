"""Smoke test of the benchmark (bench/run.py): one tiny run against the real
distro agent, as a subprocess, then checks that the report and the raw data hold what the full
benchmark promises: rows for ours installed (a meson install: the launcher and the
byte-compiled module), ours from the checkout, the distro agent and the floor (the same
requests by a minimal client), our request budget, no session left by ours, and measurements
that are the agents' own (the distro really walks the pool, peak RSS above the launcher's
floor)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

from bench.run import BUDGET, DISTRO_LINK, FENCING_LIB, command_output
from tests.support import ROOT, require_path, require_tools

ACTIONS = ("status", "monitor", "list", "off", "on", "reboot")
SIZE = 10
# "131 ms (130-130 ms)" or "1.02 s (1.02-1.02 s)" (an en dash): a median and a range, and
# no failure mark.
TIME_CELL = r"\d+(\.\d+)? m?s \(\d+(\.\d+)?\u2013\d+(\.\d+)? m?s\)"


def require_distro_agent() -> None:
    """fence-agents' fence_xenapi, wherever dpkg-divert put it: a skip on a developer machine
    without it, a failure under CI=true. (If it is only being replaced for a moment by another
    test, bench/run.py waits for it: --distro-wait.)"""
    require_path(FENCING_LIB)
    truename = command_output(["dpkg-divert", "--truename", str(DISTRO_LINK)])
    require_path(truename or DISTRO_LINK)


def table_rows(report: str, heading: str) -> Dict[str, List[str]]:
    """The cells of each row of the table under `heading`, by action."""
    section = report.split(heading, 1)[1].split("\n## ", 1)[0]
    rows: Dict[str, List[str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in BUDGET:
            rows[cells[0]] = cells
    return rows


def test_tiny_benchmark_run(tmp_path: Path) -> None:
    require_distro_agent()
    require_tools("meson", "ninja")
    output, raw = tmp_path / "RESULTS.md", tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--sizes", str(SIZE), "--runs", "1",
         "--latency", "0", "--actions", ",".join(ACTIONS), "--distro-wait", "300",
         "--no-sick-pool",
         "--output", str(output), "--json", str(raw)],
        cwd=ROOT, capture_output=True, text=True, timeout=500, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    data: Dict[str, Any] = json.loads(raw.read_text())
    runs = data["runs"]

    for agent in ("floor", "ours", "checkout", "distro"):
        measured = {run["action"] for run in runs if run["agent"] == agent}
        assert measured == set(ACTIONS), (agent, measured)
    for run in runs:
        # Every run did its job: exit 0, the right output, the VM in the right state after.
        assert run["problem"] == "", run
        assert run["seconds"] > 0 and not run["timed_out"], run
        # its own CPU time (wait4), never more than its wall time can hold on this machine
        assert 0 < run["cpu_seconds"] <= run["seconds"] * (os.cpu_count() or 1), run
    ours = [run for run in runs if run["agent"] == "ours"]
    for run in ours + [run for run in runs if run["agent"] == "checkout"]:
        assert 3 <= run["requests"] <= BUDGET[run["action"]], run
        assert run["sessions_left"] == 0, run
        # The agent's own peak RSS, not the launcher's (see bench/spawn.py).
        assert run["maxrss_kb"] > data["floor_kb"] > 0, run
    # The floor makes exactly the requests ours makes, and logs out too.
    floor = {run["action"]: run for run in runs if run["agent"] == "floor"}
    for run in ours:
        assert floor[run["action"]]["requests"] == run["requests"], (run, floor)
        assert floor[run["action"]]["sessions_left"] == 0
    # "ours" is the meson-installed launcher running its byte-compiled module.
    installed = data["info"]["ours (installed)"]
    assert "meson install" in installed and "byte-compiled module in" in installed, installed
    distro = {run["action"]: run for run in runs if run["agent"] == "distro"}
    # The distro agent reads every VM record for list and monitor, and never logs out.
    assert distro["list"]["requests"] > SIZE
    assert distro["monitor"]["requests"] > SIZE
    assert all(run["sessions_left"] == 1 for run in distro.values())

    report = output.read_text()
    rows = table_rows(report, "## 0 ms per XAPI call")
    assert set(rows) == set(ACTIONS), rows
    for action, cells in rows.items():
        ours_run = next(run for run in ours if run["action"] == action)
        assert cells[1] == str(SIZE)
        assert cells[2] == f"{ours_run['requests']} / {distro[action]['requests']}"
        assert cells[3] == "0 / 1"
        # floor, ours (installed), ours (checkout), distro; then RSS and the two ratios
        assert all(re.fullmatch(TIME_CELL, cell) for cell in cells[4:8]), cells
        assert re.fullmatch(r"[\d.]+ MB / [\d.]+ MB / [\d.]+ MB", cells[8]), cells
        assert all(re.fullmatch(r"\d+\.\d+( \(1/\d+\))?", cell) for cell in cells[9:11]), cells
    assert "## Targets\n" in report
    targets = {target["name"]: target for target in data["targets"]}
    assert targets["0 sessions left open by ours after any run"]["verdict"] == "met"
    for action in ACTIONS:  # each action measured against its floor, met or explained
        target = next(target for name, target in targets.items()
                      if name.startswith(f"{action}: ours (installed) within"))
        assert target["verdict"] in ("met", "missed"), target
        assert target["verdict"] == "met" or "over" in target["why"], target
    # where the time goes: the installed agent's start-up beside the checkout's compile
    assert "loading our byte-compiled module alone" in report
    assert "compiling our script" in report
    assert "The same runs' CPU time" in report
