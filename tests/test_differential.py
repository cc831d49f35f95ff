"""Side by side with Debian's fence_xenapi: every case of
tests/differential_cases.py runs through both agents against the same simulated pool, and
every difference in exit status, stdout, power operations or sessions left must be one the
README's table "Differences from fence-agents' fence_xenapi" lists for that case. The table
cannot drift: a row no case needs fails too. The distro agent is a pristine copy extracted
from fence-agents' .deb (tests/differential.py), never the possibly diverted
/usr/sbin/fence_xenapi.

`python3 -m tests.differential` prints every case side by side."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict

import pytest

from tests.differential import (
    LOGOUT_ROW,
    DistroMissing,
    Result,
    Row,
    describe,
    distro_agent,
    find_deb,
    problems,
    read_differences_table,
    run_cases,
)
from tests.differential_cases import CASES, UNUSED_PATTERNS
from tests.support import IN_CI, _missing, require_tools

BUDGET = 120.0  # seconds for the whole side-by-side run: under 2 minutes in CI
_RUN: Dict[str, object] = {}


@pytest.fixture(scope="module")
def distro() -> Path:
    require_tools("dpkg-deb", "dpkg-query")
    try:
        return distro_agent()
    except DistroMissing as error:
        _missing(str(error))
        raise


@pytest.fixture(scope="module")
def results(distro: Path) -> Dict[str, Result]:
    started = time.monotonic()
    found = run_cases(CASES, distro, workers=4)
    _RUN["seconds"] = time.monotonic() - started
    return found


@pytest.fixture(scope="module")
def rows() -> Dict[str, Row]:
    return read_differences_table()


@pytest.mark.parametrize("case_id", [case.id for case in CASES])
def test_case(case_id: str, results: Dict[str, Result], rows: Dict[str, Row]) -> None:
    result = results[case_id]
    found = problems(result, rows)
    assert not found, describe(result) + "\n" + "\n".join(found)


def test_enough_cases_every_area() -> None:
    assert len(CASES) >= 200
    assert len({case.id for case in CASES}) == len(CASES)
    areas = {"stdin/", "cli/"}
    assert all(any(case.id.startswith(area) for case in CASES) for area in areas)
    # every VM state, every action
    for word in ("running", "halted", "paused", "suspended", "list-status", "monitor",
                 "metadata", "manpage", "validate-all", "reboot", "-v", "hung-pool",
                 "http-500", "redirect", "unreachable", "duplicate", "wrong-password"):
        assert any(word in case.id for case in CASES), word


def test_every_row_is_needed(results: Dict[str, Result], rows: Dict[str, Row]) -> None:
    """A row no case needs is stale: the table must say what is true, nothing else."""
    needed = {key for result in results.values() for key in result.case.differs}
    if any(r.distro.sessions > 0 == r.ours.sessions for r in results.values()):
        needed.add(LOGOUT_ROW)
    assert sorted(set(rows) - needed) == []
    assert UNUSED_PATTERNS == []


def test_rows_where_ours_fails_give_a_safety_reason(results: Dict[str, Result],
                                                    rows: Dict[str, Row]) -> None:
    """Beyond each case's check: list the rows that cover ours failing where fence-agents
    succeeds, so that the README's promise is visible in the test output."""
    failing = {key for r in results.values() if r.distro.succeeded and not r.ours.succeeded
               for key in r.case.differs}
    covering = {key for key in failing if key in rows and "exit" in rows[key].aspects}
    assert covering and all(rows[key].safety for key in covering), failing


def test_run_time(results: Dict[str, Result]) -> None:
    """Under 2 minutes in CI (2 cores to itself); a busy developer machine only reports it."""
    seconds = float(str(_RUN["seconds"]))
    print(f"{len(results)} cases side by side in {seconds:.1f} s")
    if IN_CI:
        assert seconds < BUDGET


def test_readme_table_parses() -> None:
    sample = ("## Differences from fence-agents' fence_xenapi\n\ntext\n\n"
              "| key | differs in | input | theirs | ours | why |\n"
              "| --- | --- | --- | --- | --- | --- |\n"
              "| `a-b` | exit, stdout | x | y | z | **Safety**: w |\n"
              "| `c` | power | x | y | z | w |\n\n## Next\n| `d` | exit | x | y | z | w |\n")
    table = read_differences_table(sample)
    assert sorted(table) == ["a-b", "c"]
    assert table["a-b"].aspects == {"exit", "stdout"} and table["a-b"].safety
    assert not table["c"].safety
    with pytest.raises(ValueError, match="bad row"):
        read_differences_table(sample.replace("| power |", "| colour |"))


def test_distro_copy_comes_from_the_package(distro: Path) -> None:
    assert distro.read_bytes().startswith(b"#!/usr/bin/python3")
    assert b"fence_cxs" in distro.read_bytes()
    assert find_deb().is_file()
