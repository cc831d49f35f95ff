"""Where the option, command-line and output layers follow fence-agents' fence_xenapi:
stdin lines stripped as fencing.py strips them, password_script's whole output
right-stripped whatever its exit status, retry_on as fence-agents counts it (0 included),
long options abbreviated to a prefix that is unique among fence-agents' options, and output in
any stdout encoding. tests/test_differential.py proves the same side by side with the distro
agent; these pin each rule down, and each failed against the agent before it followed
fence-agents there."""

from __future__ import annotations

import subprocess

import pytest

from tests.support import AGENT, run_agent, stdin_text
from tests.test_units import fx
from tests.xapisim import SimHandle

# --- stdin -----------------------------------------------------------------------------------


def test_stdin_lines_are_stripped_like_fence_agents() -> None:
    values, warnings = fx.parse_stdin(
        "  action=status \t\r\nport=vm-running  \npasswd= lead\nlogin=\"root\" \n")
    assert values["action"] == "status"
    assert values["plug"] == "vm-running"  # the trailing blank is not part of the name
    assert values["password"] == " lead"  # blanks after '=' are kept, as fence-agents keeps them
    assert values["username"] == "root"  # quotes come off after the strip
    assert warnings == []


def test_stdin_name_is_taken_as_written() -> None:
    # fence-agents matches "port " (blank before '=') to nothing and ignores the line.
    values, warnings = fx.parse_stdin("port =vm-running\n")
    assert "plug" not in values
    assert len(warnings) == 1 and "'port '" in warnings[0]


def test_stdin_dashes_only_in_current_names() -> None:
    values, warnings = fx.parse_stdin("session-url=http://h/\nverbose-level=2\n"
                                      "passwd-script=echo x\n")
    assert values["session_url"] == "http://h/" and values["verbose_level"] == "2"
    assert "password_script" not in values  # fence-agents knows passwd_script only so
    assert len(warnings) == 1


def test_stdin_line_without_equals_sets_an_empty_value() -> None:
    values, warnings = fx.parse_stdin("port=vm-running\nport\n")
    assert values["plug"] == "" and warnings == []


def test_stdin_lines_end_only_at_newline() -> None:
    # fence-agents reads stdin as Python gives it: lines end at \n, a \r before it is stripped
    values, _ = fx.parse_stdin("port=vm\x85one\x0ctwo\u2028\r\naction=status\rlogin=root\n")
    assert values["plug"] == "vm\x85one\x0ctwo"  # inner ones stay; strip() takes the end
    assert values["action"] == "status\rlogin=root"


# (verbose_level is the one number fence-agents never refuses, so it is not among
# tests/test_hostile.py's refused numbers)
@pytest.mark.parametrize("level", ["lots", "-1", "1.5", "", "1_000", "9" * 30])
def test_bad_verbose_level_only_warns(level: str) -> None:
    class Stdin:
        @staticmethod
        def isatty() -> bool:
            return False

        @staticmethod
        def read(size: int = -1) -> str:
            return f"action=status\nverbose=1\nverbose_level={level}\n"

    opts, warnings = fx.read_options([], Stdin())
    assert opts.verbose_level == 0
    assert any("verbose_level" in warning for warning in warnings)


# --- command line ----------------------------------------------------------------------------


def test_prefixes_unique_among_fence_agents_options_keep_their_meaning() -> None:
    # --u is --username to fence-agents although it also begins our --uuid; --act is --action
    assert fx._expand_long_prefixes(["--u=root", "--act", "status"]) == [
        "--username=root", "--action", "status"]
    values, _ = fx.parse_argv(["--u", "root", "--sess=http://h/", "--ssl-i"])
    assert values == {"username": "root", "session_url": "http://h/", "ssl_insecure": "1"}
    # every option fence-agents' agent has is one of ours too
    assert {p.name for p in fx.PARAMS if p.long_option} >= fx.FENCE_AGENTS_OPTIONS


def test_prefix_expansion_never_touches_values() -> None:
    argv = ["-p", "--u", "-lroot", "--password", "--act", "-S--u", "--", "--u"]
    assert fx._expand_long_prefixes(argv) == argv


@pytest.mark.parametrize("prefix", ["--pass=x", "--allow"])
def test_ambiguous_prefix_is_still_refused(prefix: str) -> None:
    # --password or --password-script; two of our own --allow-power-state-reset... options
    with pytest.raises(fx.UsageError, match="not a unique prefix"):
        fx.parse_argv([prefix])


# --- retry_on --------------------------------------------------------------------------------

INJECTED = ["INTERNAL_ERROR", "injected by the test"]
SHORT = {"login_timeout": "2", "power_timeout": "3", "shell_timeout": "2"}


def test_retry_on_zero_is_a_valid_setting(sim: SimHandle) -> None:
    for action in ("validate-all", "monitor"):
        run = run_agent(stdin=sim.params(action=action, retry_on="0"))
        assert run.returncode == 0, run


def test_on_makes_one_attempt_more_than_retry_on(sim: SimHandle) -> None:
    sim.faults.fail_next["VM.start"] = [list(INJECTED), list(INJECTED)]
    run = run_agent(stdin=sim.params(action="on", plug="vm-halted", retry_on="2", **SHORT))
    assert run.returncode == 0, run
    assert run.stdout == "Success: Powered ON\n"
    assert sim.power_state("vm-halted") == "Running"


def test_reboot_with_retry_on_zero_leaves_the_vm_off(sim: SimHandle) -> None:
    uuid = sim.uuid("vm-running")
    run = run_agent(stdin=sim.params(action="reboot", plug="vm-running", retry_on="0"))
    assert run.returncode == 0, run
    assert run.stdout == "Success: Rebooted\n"
    assert run.stderr == "", run  # left off on purpose: no "did not power on again" warning
    assert sim.power_state("vm-running") == "Halted"
    assert sim.power_log() == [(uuid, "hard_shutdown")]
    assert sim.sessions_open() == 0


# --- password_script -------------------------------------------------------------------------


@pytest.mark.parametrize("script", [
    "printf 'secret  \\n\\n'",  # the whole output, right-stripped
    "echo secret; exit 3",  # the exit status does not matter
    "echo not-this",  # with password given too: the script wins
], ids=["trailing-blanks", "exit-status", "script-wins"])
def test_password_script_as_fence_agents_reads_it(sim: SimHandle, script: str) -> None:
    params = sim.params(action="status", plug="vm-running", password=None,
                        password_script=script)
    if script == "echo not-this":
        params.update(password="not-this", password_script="echo secret")
    run = run_agent(stdin=params)
    assert run.returncode == 0, run
    assert run.stdout == "Status: ON\n"
    assert sim.sessions_open() == 0


def test_password_script_output_is_not_cut_at_the_first_line(sim: SimHandle) -> None:
    sim.sim.add_user("multi", "first\nsecond")
    run = run_agent(stdin=sim.params(action="status", plug="vm-running", username="multi",
                                     password=None,
                                     password_script="printf 'first\\nsecond\\n'"))
    assert run.returncode == 0, run


# --- output encoding -------------------------------------------------------------------------

NAME = "vm-\u00fc\u2713"


@pytest.mark.parametrize("encoding,shown", [
    ("ascii", "vm-\\xfc\\u2713"), ("latin-1", "vm-\u00fc\\u2713"), ("utf-8", NAME)])
def test_list_in_any_stdout_encoding(sim: SimHandle, encoding: str, shown: str) -> None:
    sim.sim.add_vm(NAME, "Running")
    for action in ("list", "list-status"):
        done = subprocess.run(
            [str(AGENT)], input=stdin_text(sim.params(action=action)).encode(),
            capture_output=True, timeout=60, check=False,
            env={"PATH": "/usr/bin:/bin", "PYTHONIOENCODING": encoding})
        assert done.returncode == 0, done
        assert b"Traceback" not in done.stderr
        names = [line.split(",")[1] for line in done.stdout.decode(encoding).splitlines()]
        assert "vm-running" in names and shown in names, names
