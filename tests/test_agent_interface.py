"""The agent's interface as Pacemaker and a shell user drive it: stdin `key=value` lines and
getopt options, booleans, aliases, usage errors and the `delay` parameter.

The helpers the agent suite shares (running the agent on a simulated pool in either input
style, the checks every run ends with) are in tests/support.py."""

from __future__ import annotations

import re
import subprocess
from typing import Optional

import pytest

from tests.support import (
    AGENT,
    MARGIN,
    STYLES,
    assert_failed,
    assert_one_error,
    assert_succeeded,
    invoke,
    run_agent,
)
from tests.xapisim import SimHandle

# ---------------------------------------------------------------------------------------------
# Booleans
# ---------------------------------------------------------------------------------------------

TRUE_WORDS = ("1", "yes", "on", "true")
FALSE_WORDS = ("0", "no", "off", "false")


@pytest.mark.parametrize("word", TRUE_WORDS + FALSE_WORDS)
def test_quiet_boolean_words(sim: SimHandle, word: str) -> None:
    """quiet=<true> silences stderr; quiet=<false> (quiet=0 included) does not."""
    run = run_agent(stdin=sim.params(action="status", plug="no-such-vm", quiet=word))
    assert run.returncode == 1, run
    if word in TRUE_WORDS:
        assert run.stderr == "", run
    else:
        assert_one_error(run, "no-such-vm")
    assert sim.sessions_open() == 0


@pytest.mark.parametrize("word", TRUE_WORDS + FALSE_WORDS)
def test_verbose_boolean_words(sim: SimHandle, word: str) -> None:
    """verbose=<true> logs each XAPI call on stderr; verbose=<false> (verbose=off) is silent."""
    run = run_agent(stdin=sim.params(action="status", plug="vm-running", verbose=word))
    assert run.returncode == 0, run
    assert run.stdout == "Status: ON\n", run
    if word in TRUE_WORDS:
        assert any(line.startswith("DEBUG: ") for line in run.stderr_lines), run
    else:
        assert run.stderr == "", run
    assert sim.sessions_open() == 0


@pytest.mark.parametrize("style", STYLES)
def test_verbose_shows_each_xapi_call_and_its_duration(sim: SimHandle, style: str) -> None:
    run = invoke(sim, style, "off", plug="vm-running", verbose="1")
    assert run.returncode == 0, run
    debug = [line for line in run.stderr_lines if line.startswith("DEBUG: ")]
    for method in sim.requests():
        assert any(method in line and re.search(r"\d", line) for line in debug), (method, run)
    assert sim.sessions_open() == 0


@pytest.mark.parametrize("level", ["1", "2"])
def test_verbose_level_2_shows_the_arguments_never_the_session(sim: SimHandle,
                                                               level: str) -> None:
    """-v names each call; -vv (verbose_level=2) also shows its arguments after the session,
    which is never shown; the login line says how long the login took."""
    ref = sim.sim.vm_ref("vm-running")
    run = run_agent(stdin=sim.params(action="off", plug="vm-running", verbose="1",
                                     verbose_level=level))
    assert run.returncode == 0, run
    shown = f"'{ref}'" if level == "2" else "…"
    calls = [re.fullmatch(rf"DEBUG: XAPI VM\.hard_shutdown\({re.escape(shown)}\): Success "
                          r"in (\d+\.\d{3}) s", line) for line in run.stderr_lines]
    took_call = [float(match.group(1)) for match in calls if match]
    assert len(took_call) == 1 and took_call[0] < 60, run
    login = [line for line in run.stderr_lines if "session.login_with_password(" in line]
    assert len(login) == 1, run
    took = re.search(r": (\d+\.\d{3}) s$", login[0])
    assert took is not None and float(took.group(1)) < 60, run
    assert sim.sessions_open() == 0


# ---------------------------------------------------------------------------------------------
# stdin format
# ---------------------------------------------------------------------------------------------


def test_stdin_last_value_wins_and_comments_are_ignored(sim: SimHandle) -> None:
    params = sim.params()
    text = "".join(f"{key}={value}\n" for key, value in params.items())
    text += (
        "# action=off: a comment, never an instruction\n"
        "\n"
        "   \n"
        "action=off\n"
        "plug=no-such-vm\n"
        "#plug=vm-halted\n"
        "plug=vm-running\n"
        "action=status\n"
    )
    run = run_agent(stdin=text)
    assert_succeeded(sim, run, "Status: ON", budget=3)
    assert sim.power_log() == []
    assert sim.power_state("vm-running") == "Running"


def test_unknown_stdin_keys_are_ignored_with_a_warning(sim: SimHandle) -> None:
    run = run_agent(stdin=sim.params(action="status", plug="vm-running",
                                     frobnicate="1", pcmk_extra="x"))
    assert run.returncode == 0, run
    assert run.stdout == "Status: ON\n"
    warnings = [line for line in run.stderr_lines if line.startswith("WARNING: ")]
    assert any("frobnicate" in line for line in warnings), run
    assert any("pcmk_extra" in line for line in warnings), run
    assert sim.sessions_open() == 0


def test_values_with_spaces_are_kept(sim: SimHandle) -> None:
    """A value holding spaces reaches the agent whole (here, in its refusal of a dom0)."""
    name = "Control domain on host: host1"
    run = run_agent(stdin=sim.params(action="off", plug=name))
    assert_failed(sim, run, f"'{name}'")
    assert sim.power_log() == []


def test_option_is_an_alias_of_action(sim: SimHandle) -> None:
    params = sim.params(plug="vm-halted")
    params["option"] = "status"
    run = run_agent(stdin=params)
    assert_succeeded(sim, run, "Status: OFF", budget=3, returncode=2)


# ---------------------------------------------------------------------------------------------
# Usage errors: exit 1, one line, nothing contacted
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("params,mention", [
    ({"login_timeout": "abc"}, "login_timeout"),
    ({"power_timeout": "-1"}, "power_timeout"),
    ({"retry_on": "two"}, "retry_on"),
    ({"action": "explode"}, "explode"),
    ({"session_url": None}, "session_url"),
], ids=["login_timeout=abc", "power_timeout=-1", "retry_on=two", "unknown-action",
        "no-session_url"])
def test_bad_parameters_fail_in_one_line(sim: SimHandle, style: str,
                                         params: dict[str, Optional[str]], mention: str) -> None:
    overrides: dict[str, Optional[str]] = {"plug": "vm-running", **params}
    action = overrides.pop("action", None) or "off"
    run = invoke(sim, style, action, **overrides)
    assert_failed(sim, run, mention)
    assert sim.total_requests() == 0
    assert sim.power_state("vm-running") == "Running"


@pytest.mark.parametrize("argv,mention", [
    (["--frobnicate"], "frobnicate"),
    (["-o"], "-o"),
    (["--login-timeout"], "login-timeout"),
], ids=["unknown-option", "missing-argument-short", "missing-argument-long"])
def test_command_line_usage_errors(argv: list[str], mention: str) -> None:
    run = run_agent(argv)
    assert_one_error(run, mention)
    assert run.stdout == ""


# ---------------------------------------------------------------------------------------------
# delay
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_delay_is_waited_before_fencing(sim: SimHandle, style: str) -> None:
    baseline = invoke(sim, style, "status", plug="vm-running")
    assert baseline.returncode == 0, baseline
    sim.reset_counters()
    run = invoke(sim, style, "off", plug="vm-running", delay="2")
    assert_succeeded(sim, run, "Success: Powered OFF", budget=5)
    assert run.seconds >= 2.0, run
    assert run.seconds < 2.0 + baseline.seconds + MARGIN + 2, run
    assert sim.power_state("vm-running") == "Halted"


def test_metadata_without_lxml_is_one_clear_line() -> None:
    # `python3 -S` hides the distribution's site-packages, so lxml cannot be imported: the
    # agent says what is missing instead of a traceback.
    proc = subprocess.run(["/usr/bin/python3", "-S", str(AGENT), "-o", "metadata"],
                          capture_output=True, text=True, timeout=60, check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1
    assert len(lines) == 1 and "python3-lxml" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
