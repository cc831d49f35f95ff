"""Secrets stay secret: the password and every session reference the pool issued appear in no
output, no debug file and no error message, however verbose; a password given on stdin or by
a password_script never shows in the process list."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support import (
    MARGIN,
    STYLES,
    AgentRun,
    assert_failed,
    assert_succeeded,
    invoke,
    run_agent,
    start_agent,
    wait_for,
)
from tests.test_agent_failures import lookup_method
from tests.xapisim import SimHandle

# A password no other text contains (the standard pool's "secret" is an ordinary word).
USERNAME, PASSWORD = "fencer", "Pw-7f3c9e1d-4b2a"


@pytest.fixture(autouse=True)
def fencer_account(sim: SimHandle) -> None:
    """The pool gets a pool-admin account with that password; every run here logs in as it."""
    sim.sim.add_user(USERNAME, PASSWORD, "pool-admin")


def issued_session_refs(handle: SimHandle) -> set[str]:
    """Every session reference the simulator handed out, logged out or not."""
    return set(handle.issued_sessions())


def verbose_run(handle: SimHandle, style: str, debug_file: Path, action: str,
                **params: str) -> AgentRun:
    """The most talkative run there is: -vvv (verbose on stdin) and a debug file."""
    params = {"username": USERNAME, "password": PASSWORD, **params}
    if style == "stdin":
        return run_agent(stdin=handle.params(action=action, verbose="1", verbose_level="3",
                                             debug_file=str(debug_file), **params))
    return run_agent([*handle.cli(action=action, **params), "-vvv", "-D", str(debug_file)])


def assert_no_secret(handle: SimHandle, run: AgentRun, debug_file: Path,
                     password: str = PASSWORD) -> None:
    secrets = {password, *issued_session_refs(handle)}
    assert len(secrets) > 1, "the simulator issued no session: nothing was checked"
    debug_text = debug_file.read_text(encoding="utf-8")
    assert "DEBUG" in debug_text and "DEBUG" in run.stderr, "verbose logging did not happen"
    for where, text in (("stdout", run.stdout), ("stderr", run.stderr),
                        ("debug file", debug_text)):
        for secret in secrets:
            assert secret not in text, f"{secret!r} in {where}"


@pytest.mark.parametrize("style", STYLES)
def test_verbose_fence_leaks_nothing(sim: SimHandle, tmp_path: Path, style: str) -> None:
    debug_file = tmp_path / "debug.log"
    run = verbose_run(sim, style, debug_file, "reboot", plug="vm-running")
    assert run.returncode == 0, run
    assert "Success: Rebooted" in run.stdout
    assert sim.sessions_open() == 0
    assert_no_secret(sim, run, debug_file)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("times,returncode", [(1, 0), (2, 1)], ids=["once", "twice"])
def test_session_invalid_leaks_nothing(sim: SimHandle, tmp_path: Path, style: str, times: int,
                                       returncode: int) -> None:
    """SESSION_INVALID carries the session ref in its error description (the simulator adds
    the refused session's ref to the injected code, as XAPI does): once, the agent logs in
    again (and says so when verbose); twice, it fails with that error, the ref scrubbed."""
    sim.faults.fail_next[lookup_method(sim)] = [["SESSION_INVALID"]] * times
    debug_file = tmp_path / "debug.log"
    run = verbose_run(sim, style, debug_file, "status", plug="vm-running")
    assert run.returncode == returncode, run
    assert "SESSION_INVALID" in run.stderr
    assert sim.sessions_open() == 0
    assert_no_secret(sim, run, debug_file)


@pytest.mark.parametrize("style", STYLES)
def test_failed_login_leaks_nothing(sim: SimHandle, tmp_path: Path, style: str) -> None:
    wrong = "Wr0ng-pa55word"
    debug_file = tmp_path / "debug.log"
    run = verbose_run(sim, style, debug_file, "status", plug="vm-running", password=wrong)
    assert run.returncode == 1, run
    assert sim.sessions_open() == 0
    for text in (run.stdout, run.stderr, debug_file.read_text(encoding="utf-8")):
        assert wrong not in text
        assert PASSWORD not in text


# ---------------------------------------------------------------------------------------------
# password_script, and the process list
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def password_script(tmp_path: Path) -> str:
    """A command printing the password (from a file: the password is not in the command)."""
    secret_file = tmp_path / "password"
    secret_file.write_text(PASSWORD + "\n", encoding="utf-8")
    secret_file.chmod(0o600)
    return f"cat {secret_file}"


@pytest.mark.parametrize("style", STYLES)
def test_password_script_output_is_the_password(sim: SimHandle, password_script: str,
                                                style: str) -> None:
    run = invoke(sim, style, "status", plug="vm-running", username=USERNAME, password=None,
                 password_script=password_script)
    assert_succeeded(sim, run, "Status: ON", budget=3)


def test_password_script_with_the_wrong_password_fails(sim: SimHandle, tmp_path: Path) -> None:
    run = invoke(sim, "stdin", "status", plug="vm-running", username=USERNAME, password=None,
                 password_script="echo not-the-password")
    assert_failed(sim, run, "SESSION_AUTHENTICATION_FAILED")


def test_password_script_that_hangs_is_one_line(sim: SimHandle) -> None:
    """A hanging password_script ends the run with one clear line, never a traceback or a
    hang (it is given max(login_timeout, 5 s))."""
    run = invoke(sim, "stdin", "status", plug="vm-running", username=USERNAME, password=None,
                 password_script="exec sleep 60", login_timeout="1")
    assert_failed(sim, run, "password_script", within=5 + 2 * MARGIN)
    assert run.seconds >= 5, run  # max(login_timeout, 5 s): never less than 5 s
    assert sim.power_log() == []


def test_password_script_gets_five_seconds_not_more(sim: SimHandle,
                                                    password_script: str) -> None:
    """With login_timeout=1 a script that prints the right password after 5.6 s is too late:
    the bound is max(login_timeout, 5 s), not more (the run's length is the cluster's)."""
    run = invoke(sim, "stdin", "status", plug="vm-running", username=USERNAME, password=None,
                 password_script=f"sleep 5.6; {password_script}", login_timeout="1")
    assert_failed(sim, run, "password_script", within=5 + 2 * MARGIN)
    assert sim.requests() == {}, sim.requests()  # never got as far as the pool


def test_password_script_printing_other_than_utf8_is_one_line(sim: SimHandle) -> None:
    run = invoke(sim, "stdin", "status", plug="vm-running", username=USERNAME, password=None,
                 password_script="printf 'caf\\351'")
    assert_failed(sim, run, "password_script", "UTF-8")
    assert sim.requests() == {}, sim.requests()


def test_password_script_that_fails_warns_and_its_output_is_used(sim: SimHandle) -> None:
    """As in fence-agents, a failing password_script's exit status does not stop the run: its
    output (here nothing) is the password, with one warning naming the status; the pool then
    refuses the login in one ERROR line."""
    run = invoke(sim, "stdin", "status", plug="vm-running", username=USERNAME, password=None,
                 password_script="exit 3")
    assert run.returncode == 1, run
    assert "Traceback" not in run.stderr, run
    warning, error = run.stderr_lines
    assert warning.startswith("WARNING: ") and "status 3" in warning, run
    assert error.startswith("ERROR: ") and "SESSION_AUTHENTICATION_FAILED" in error, run
    assert "Success" not in run.stdout and sim.sessions_open() == 0
    assert sim.power_log() == []


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def command_lines(pids: list[int]) -> list[str]:
    lines = []
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        lines.append(raw.replace(b"\0", b" ").decode(errors="replace"))
    return lines


@pytest.mark.parametrize("source", ["stdin", "password_script"])
def test_password_never_in_the_process_list(sim: SimHandle, password_script: str,
                                            source: str) -> None:
    sim.faults.power_op_delay = 1.0
    given = {"password": PASSWORD} if source == "stdin" else {
        "password": None, "password_script": password_script}
    agent = start_agent(sim.params(action="off", plug="vm-running", username=USERNAME, **given))
    try:
        wait_for(lambda: any("hard_shutdown" in m for m in sim.requests()), 10,
                 "the agent to call hard_shutdown")
        seen = command_lines(process_tree(agent.pid))
        stdout, stderr = agent.communicate(timeout=30)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    assert seen and any("fence_xenapi" in line for line in seen), seen
    assert not [line for line in seen if PASSWORD in line], seen
    assert agent.returncode == 0, (stdout, stderr)
    assert sim.power_state("vm-running") == "Halted"
    assert sim.sessions_open() == 0


def test_process_tree_helper_sees_a_child() -> None:
    """The process-list check above is only as good as its helper: prove it sees processes."""
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        assert any("sleep 30" in line for line in command_lines(process_tree(os.getpid())))
    finally:
        sleeper.kill()
        sleeper.wait()


# --- stdin written with other line ends ---------------------------------------------------
# fence-agents reads stdin as CPython gives it on POSIX: lines end at \n only (sys.stdin has
# newline="\n"), so a file written with bare \r (or \x85, U+2028, a form feed) is one long
# line to both agents: its first value goes on with the lines after it, the password among
# them. Whatever quotes that value must not show them.

HIDDEN = "Cr-0nly-9b1e5d"  # the password of the lines a value swallowed


@pytest.mark.parametrize("separator", ["\r", "\x85", "\u2028", "\x0c"],
                         ids=["cr", "nel", "ls", "ff"])
@pytest.mark.parametrize("first", [
    "action=status", "action=explode", "port=vm-running", "login=fencer", "delay=soon",
    "quiet=maybe", "uuid=nope", "retry_on=many", "ssl_fingerprint=zz", "verbose_level=x",
    "session_url={url}"])
def test_a_value_holding_other_lines_never_shows_the_password(
        sim: SimHandle, tmp_path: Path, separator: str, first: str) -> None:
    debug_file = tmp_path / "debug.log"
    tail = separator.join([first.format(url=sim.url), f"passwd={HIDDEN}", "action=off",
                           "port=vm-running"])
    head = {"session_url": sim.url, "login": USERNAME, "passwd": PASSWORD, "action": "off",
            "port": "vm-halted", "verbose": "1", "verbose_level": "3",
            "debug_file": str(debug_file)}
    run = run_agent(stdin="".join(f"{k}={v}\n" for k, v in head.items()) + tail + "\n")
    debug_text = debug_file.read_text(encoding="utf-8") if debug_file.exists() else ""
    for where, text in (("stdout", run.stdout), ("stderr", run.stderr),
                        ("debug file", debug_text)):
        assert HIDDEN not in text, f"the password in {where}: {run}"
    assert "Traceback" not in run.stderr, run
    assert "vm-running" not in {uuid_name for _, uuid_name in sim.power_log()}
    assert sim.power_state("vm-running") == "Running"
    assert sim.sessions_open() == 0


@pytest.mark.parametrize("separator", ["\r", "\x85"], ids=["cr", "nel"])
@pytest.mark.parametrize("order", ["action-first", "url-first"])
def test_a_file_written_with_bare_cr_is_one_line_that_shows_no_password(
        sim: SimHandle, separator: str, order: str) -> None:
    """Every parameter in one line, as both agents read it: the first takes the others
    along. One error line, and the password not in it."""
    lines = [f"session_url={sim.url}", f"login={USERNAME}", f"passwd={HIDDEN}",
             "port=vm-running"]
    lines.insert(0 if order == "action-first" else len(lines), "action=status")
    run = run_agent(stdin=separator.join(lines) + separator)
    assert run.returncode == 1, run
    assert len(run.stderr_lines) == 1 and run.stderr_lines[0].startswith("ERROR: "), run
    assert HIDDEN not in run.stdout + run.stderr, run
    assert sim.sessions_open() == 0


@pytest.mark.parametrize("where", ["uuid", "delay", "action"])
def test_the_password_pasted_into_another_parameter_is_not_shown(sim: SimHandle,
                                                                 where: str) -> None:
    """The password is known as a secret before any other value is checked: an error about
    a parameter that holds it (a paste into the wrong field) does not show it."""
    params = {**sim.params(username=USERNAME, password=PASSWORD, action="status"),
              "plug": "vm-running", where: PASSWORD}
    run = run_agent(stdin=params)
    assert run.returncode == 1 and run.stderr.startswith("ERROR: "), run
    assert PASSWORD not in run.stdout + run.stderr, run
    assert sim.sessions_open() == 0
