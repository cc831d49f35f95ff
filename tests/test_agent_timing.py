"""The timing parameters do what HACKING.md says, observed from outside the agent: `delay` is
waited before the power-off of off and reboot (and by no other action), `power_wait` after the
power operation, `shell_timeout` bounds each query after login (and leaves the logout its own
time), and `login_timeout` bounds the whole login (all pool hosts together).

Each test watches the pool while the agent runs (polling, never a fixed sleep) and compares
durations that differ by several seconds between a right and a wrong agent, so a loaded
machine cannot turn one into the other."""

from __future__ import annotations

import socket
import time
from typing import Callable, Iterator, Mapping, Optional

import pytest

from tests.support import (
    AgentRun,
    assert_one_error,
    assert_succeeded,
    invoke,
    run_agent,
    start_agent,
)
from tests.xapisim import SimHandle

# How late the test may notice a power operation after the pool performed it: polling every
# 20 ms, plus a loaded machine's scheduling.
NOTICE_SLACK = 0.5
# Generous bound on any single run here (a hang fails the test, it does not stall it).
RUN_BOUND = 60.0


def watch(params: Mapping[str, object], seen: Callable[[], bool]) -> tuple[float, AgentRun]:
    """Run the agent in the background; return how long after its start `seen` first held
    (infinity if it never did) and the finished run."""
    started = time.monotonic()
    agent = start_agent(params)
    noticed = float("inf")
    try:
        while time.monotonic() - started < RUN_BOUND:
            if seen():
                noticed = time.monotonic() - started
                break
            if agent.poll() is not None:
                break
            time.sleep(0.02)
        stdout, stderr = agent.communicate(timeout=RUN_BOUND)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    return noticed, AgentRun(agent.returncode, stdout, stderr, time.monotonic() - started)


# ---------------------------------------------------------------------------------------------
# delay: before the power-off, for off and reboot
# ---------------------------------------------------------------------------------------------

DELAY = 3.0


@pytest.mark.parametrize("action,stdout", [("off", "Success: Powered OFF"),
                                           ("reboot", "Success: Rebooted")])
def test_delay_is_waited_before_the_power_off(sim: SimHandle, action: str, stdout: str) -> None:
    """The VM is still running `delay` seconds after the agent started: the wait comes first
    (fence-agents' meaning: the node to fence gets a head start in a fence race)."""
    noticed, run = watch(sim.params(action=action, plug="vm-running", delay=str(DELAY)),
                         lambda: bool(sim.power_log()))
    assert_succeeded(sim, run, stdout, budget=7)
    assert noticed != float("inf"), run
    assert noticed >= DELAY, f"powered off {noticed:.2f} s after start, before delay={DELAY}"
    assert sim.power_log()[0] == (sim.uuid("vm-running"), "hard_shutdown")


LONG_DELAY = 10.0


@pytest.mark.parametrize("action,name,stdout", [
    ("status", "vm-running", "Status: ON"), ("monitor", None, None),
    ("on", "vm-halted", "Success: Powered ON")])
def test_delay_is_for_off_and_reboot_only(sim: SimHandle, action: str, name: Optional[str],
                                          stdout: Optional[str]) -> None:
    """As in fence-agents (fencing.py run_delay): a device configured with a delay still
    answers status and monitor at once, and `on` is no fencing race."""
    run = invoke(sim, "stdin", action, plug=name, delay=str(LONG_DELAY))
    assert run.returncode == 0, run
    assert run.stdout == ("" if stdout is None else stdout + "\n"), run
    assert run.seconds < LONG_DELAY, run


# ---------------------------------------------------------------------------------------------
# power_wait: after issuing on/off
# ---------------------------------------------------------------------------------------------

POWER_WAIT = 3.0


@pytest.mark.parametrize("action,name,stdout", [
    ("off", "vm-running", "Success: Powered OFF"),
    ("on", "vm-halted", "Success: Powered ON"),
])
def test_power_wait_is_waited_after_the_power_operation(sim: SimHandle, action: str, name: str,
                                                         stdout: str) -> None:
    noticed, run = watch(sim.params(action=action, plug=name, power_wait=str(POWER_WAIT)),
                         lambda: bool(sim.power_log()))
    assert_succeeded(sim, run, stdout, budget=5)
    assert noticed != float("inf"), run
    waited = run.seconds - noticed
    assert waited >= POWER_WAIT - NOTICE_SLACK, (
        f"the agent exited {waited:.2f} s after the power operation; power_wait={POWER_WAIT}")


# ---------------------------------------------------------------------------------------------
# shell_timeout: each query after login
# ---------------------------------------------------------------------------------------------

LATENCY = 1.0  # every answer of the pool comes this late


def test_shell_timeout_bounds_each_query_after_login(sim: SimHandle) -> None:
    """A pool answering every call in 1 s: the login (login_timeout 10) gets through, the
    query that follows does not fit shell_timeout=0.3, so `status` fails."""
    sim.faults.latency = LATENCY
    run = invoke(sim, "stdin", "status", plug="vm-running", login_timeout="10",
                 shell_timeout="0.3")
    # The logout, as slow, may add a warning: the session will expire on the pool.
    assert run.returncode == 1, run
    assert "Traceback" not in run.stderr, run
    assert len([line for line in run.stderr_lines if line.startswith("ERROR: ")]) == 1, run
    assert all(line.startswith(("ERROR: ", "WARNING: ")) for line in run.stderr_lines), run
    assert "Status:" not in run.stdout, run
    # (The agent may log in again once, taking the silent pool for a lost master.)
    assert run.seconds < 10, run  # no wait for login_timeout after login


def test_shell_timeout_zero_still_logs_out(sim: SimHandle) -> None:
    """No time for any query (the pool answers in 0.2 s): the run fails, and the session is
    logged out all the same (the logout gets a small time of its own)."""
    sim.faults.latency = 0.2
    run = invoke(sim, "stdin", "status", plug="vm-running", shell_timeout="0")
    assert_one_error(run)
    assert sim.requests().get("session.logout") == sim.requests().get(
        "session.login_with_password"), sim.requests()
    assert sim.sessions_open() == 0


def test_shell_timeout_long_enough_lets_the_same_pool_answer(sim: SimHandle) -> None:
    """The control for the test above: the latency alone is no failure."""
    sim.faults.latency = LATENCY
    run = invoke(sim, "stdin", "status", plug="vm-running", login_timeout="10",
                 shell_timeout="5")
    assert_succeeded(sim, run, "Status: ON", budget=3)


# ---------------------------------------------------------------------------------------------
# login_timeout: all URLs together
# ---------------------------------------------------------------------------------------------

LOGIN_TIMEOUT = 2.0


def test_a_short_login_timeout_the_pool_meets_is_enough(sim: SimHandle) -> None:
    """login_timeout=1 against a pool that answers in milliseconds: the whole second is
    available (a deadline that ends early would refuse it at once)."""
    run = invoke(sim, "stdin", "status", plug="vm-running", login_timeout="1")
    assert_succeeded(sim, run, "Status: ON", budget=3)


@pytest.fixture
def silent_urls() -> Iterator[list[str]]:
    """Three loopback listeners that accept connections (the kernel's backlog does) and never
    answer: each login there hangs until the agent gives up."""
    listeners = []
    try:
        for _ in range(3):
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen(16)
            listeners.append(listener)
        yield [f"http://127.0.0.1:{lst.getsockname()[1]}/" for lst in listeners]
    finally:
        for listener in listeners:
            listener.close()


def test_login_timeout_bounds_the_whole_login(silent_urls: list[str]) -> None:
    """Three hanging pool hosts, asked one after another while the others go on (the login
    race): the run fails after login_timeout, naming each, not sooner (the first host, maybe
    the master answering slowly, gets all of it) and not after each host had its own
    login_timeout (HACKING.md: "the whole login")."""
    run = run_agent(stdin={"action": "status", "plug": "vm-running", "username": "root",
                           "password": "secret", "session_url": ",".join(silent_urls),
                           "login_timeout": LOGIN_TIMEOUT}, timeout=RUN_BOUND)
    line = assert_one_error(run)
    assert run.stdout == "", run
    for url in silent_urls:
        assert url.rstrip("/") in line, (url, line)
    assert LOGIN_TIMEOUT <= run.seconds < 2 * LOGIN_TIMEOUT, run


def test_silent_urls_really_hang() -> None:
    """The listeners above are only a test if a client there waits for an answer."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with socket.create_connection(listener.getsockname(), timeout=0.5) as client:
            client.sendall(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
            with pytest.raises(socket.timeout):
                client.recv(1)

