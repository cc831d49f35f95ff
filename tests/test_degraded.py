"""Fencing through a degraded pool, the way real XAPI behaves when hosts fail.

Every test runs the agent as a subprocess (as Pacemaker does) against a simulated pool whose
hosts fail the way xen-api's source says they do (tests/xapisim.py cites the files), and ends
with no session and no task left on the pool and the power log showing only the target VM.
fence_xenapi(8), DEGRADED POOLS, says what the agent does in each case."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import pytest

from tests.hostile import Call, Conn, HostileServer, http_response
from tests.realrecords import dump_named, pool_of
from tests.support import (
    AGENT,
    MARGIN,
    AgentRun,
    assert_one_error,
    invoke,
    run_agent,
    start_agent,
    stdin_text,
    wait_for,
)
from tests.test_units import fx as agent_module
from tests.xapisim import Pki, SimHandle

LOGIN_TIMEOUT = 2
POWER_TIMEOUT = 4
SHORT = {"login_timeout": str(LOGIN_TIMEOUT), "power_timeout": str(POWER_TIMEOUT),
         "shell_timeout": "2", "stonith_status_sleep": "0.5"}
HOSTS = ("host1", "host2", "host3")
TARGET = "vm-running"
# A run that gets through the login race: hung hosts before the master cost a stagger (250 ms)
# each, a late answer may take 1 s; generous for a loaded machine, and far below the
# login_timeout (10 s) each hung host cost when the hosts were tried one after another.
RACE_BOUND = 5.0


def urls(handle: SimHandle, *hosts: str) -> str:
    return ",".join(handle.url_of(host) for host in hosts)


def run(handle: SimHandle, action: str, hosts: Sequence[str] = HOSTS,
        **params: Optional[str]) -> AgentRun:
    """The agent on stdin (Pacemaker's way), with `hosts` as its session_url list."""
    values = {"plug": TARGET, "session_url": urls(handle, *hosts), **params}
    return run_agent(stdin=handle.params(action=action, **values))


def assert_clean(handle: SimHandle, *targets: str, within: float = 5.0) -> None:
    """No session and no task left on the pool (a synchronous call the agent stopped waiting
    for may still be finishing: polled for `within` seconds), and the power log names only
    the target VMs."""
    wait_for(lambda: handle.sessions_open() == 0 and handle.sim.tasks_open() == 0, within,
             f"no session and no task left (sessions {handle.sessions_open()}, "
             f"tasks {handle.sim.tasks_open()})")
    wanted = {handle.uuid(name) for name in targets}
    assert all(uuid in wanted for uuid, _ in handle.power_log()), handle.power_log()


def ops(handle: SimHandle, name: str = TARGET) -> list[str]:
    uuid = handle.uuid(name)
    return [op for vm, op in handle.power_log() if vm == uuid]


def succeeded(agent: AgentRun, stdout: str) -> None:
    assert agent.returncode == 0, agent
    assert agent.stdout.splitlines() == [stdout], agent
    assert "Traceback" not in agent.stderr, agent


def logins(handle: SimHandle) -> int:
    return handle.requests().get("session.login_with_password", 0)


# ---------------------------------------------------------------------------------------------
# The master goes away in the middle of an action
# ---------------------------------------------------------------------------------------------


def forward_to(handle: SimHandle, call: Call) -> bytes:
    """The simulator's answer to a call a proxy in front of it received."""
    upstream = http.client.HTTPConnection("127.0.0.1", int(handle.url.rsplit(":", 1)[1]
                                                         .strip("/")), timeout=30)
    try:
        upstream.request("POST", "/", call.body, {"Content-Type": "text/xml"})
        return upstream.getresponse().read()
    finally:
        upstream.close()


def kill_master_after(handle: SimHandle, op: str, new_master: str, mode: str,
                      phase: str = "after") -> None:
    """The master fails right after `op` changed the VM's state, before answering it (or, with
    phase "before", once XAPI accepted the call, before anything changed). Mode "designate":
    it does not fail, another host is made master (pool.designate_new_master) and sessions
    are forgotten."""
    fired: list[bool] = []

    def hook(vm_name: str, operation: str, when: str) -> None:
        if vm_name == TARGET and operation == op and when == phase and not fired:
            fired.append(True)
            if mode == "designate":
                handle.sim.promote(new_master)
            else:
                handle.sim.fail_master(new_master, mode)

    handle.sim.on_power(hook)


@pytest.mark.parametrize("mode", ["refuse", "hang", "designate"])
def test_master_dies_in_the_middle_of_a_reboot(sim_pool: SimHandle, mode: str) -> None:
    """host1 fails after the hard shutdown (or simply hands over); host2 becomes master; the
    agent logs in again through the URL list (host1 dead or redirecting, host2 the master)
    and finishes the reboot there."""
    kill_master_after(sim_pool, "hard_shutdown", "host2", mode)
    agent = run(sim_pool, "reboot", power_timeout="15", login_timeout="2", shell_timeout="2",
                stonith_status_sleep="0.5")
    succeeded(agent, "Success: Rebooted")
    assert sim_pool.power_state(TARGET) == "Running"
    assert ops(sim_pool) == ["hard_shutdown", "start"]
    assert agent.seconds < 15 + MARGIN, agent
    assert_clean(sim_pool, TARGET)


def test_the_new_login_after_the_master_hangs_races_past_it(sim_pool: SimHandle) -> None:
    """The master (host1, listed first) hangs right after the hard shutdown; the new login
    asks it first, but host2 (the new master) is asked 250 ms later while it goes on, so the
    reboot ends in seconds, not after login_timeout (10 s) spent on the hung old master."""
    kill_master_after(sim_pool, "hard_shutdown", "host2", "hang")
    agent = run(sim_pool, "reboot", shell_timeout="1", stonith_status_sleep="0.5")
    succeeded(agent, "Success: Rebooted")
    assert ops(sim_pool) == ["hard_shutdown", "start"]
    assert agent.seconds <= 1 + RACE_BOUND, agent
    sim_pool.sim.host_up("host1")
    assert_clean(sim_pool, TARGET)


def test_master_hangs_while_the_agent_polls(sim_pool: SimHandle) -> None:
    """A hard shutdown that takes 3 s outlasts its call's wait (shell_timeout=1); the master
    hangs while the agent polls: the poll that hangs leads to a new login within
    power_timeout, not a failure after that poll's own slice."""
    sim_pool.sim.set_power_duration(TARGET, "hard_shutdown", 3)
    kill_master_after(sim_pool, "hard_shutdown", "host2", "hang")
    agent = run(sim_pool, "off", power_timeout="15", login_timeout="2", shell_timeout="1",
                stonith_status_sleep="0.5")
    succeeded(agent, "Success: Powered OFF")
    assert ops(sim_pool) == ["hard_shutdown"]
    assert_clean(sim_pool, TARGET)


def test_master_hangs_while_polling_and_the_next_host_answers_at_once(
        sim_pool: SimHandle) -> None:
    """As above, but the new master is the first session_url host, so the login after the
    hung poll takes milliseconds: the poll's own slice is over by then, and the read is made
    again with what is left of power_timeout (not failed on the spent slice)."""
    sim_pool.sim.set_power_duration(TARGET, "hard_shutdown", 3)
    kill_master_after(sim_pool, "hard_shutdown", "host2", "hang")
    agent = run(sim_pool, "off", hosts=("host2", "host1", "host3"), power_timeout="15",
                login_timeout="2", shell_timeout="1", stonith_status_sleep="0.5")
    succeeded(agent, "Success: Powered OFF")
    assert ops(sim_pool) == ["hard_shutdown"]
    assert_clean(sim_pool, TARGET)


def test_master_hangs_while_polling_and_no_listed_host_answers(sim_pool: SimHandle) -> None:
    """Only the old master is listed, and it hangs once the shutdown is done: the agent tries
    to log in again until power_timeout, then fails (the VM may well be Halted, but nothing
    verified it), saying that power_timeout ran out during the new login."""
    sim_pool.sim.set_power_duration(TARGET, "hard_shutdown", 3)
    kill_master_after(sim_pool, "hard_shutdown", "host2", "hang")
    agent = run(sim_pool, "off", hosts=("host1",), power_timeout="5", login_timeout="2",
                shell_timeout="1", stonith_status_sleep="0.5")
    assert_one_error(agent, "lost the pool master", "cannot log in",
                     f"powering off VM '{TARGET}'", "did not finish within 5 s")
    assert "Success" not in agent.stdout
    assert agent.seconds <= 5 + MARGIN, agent
    sim_pool.sim.host_up("host1")
    assert_clean(sim_pool, TARGET)


def test_master_hangs_on_the_last_read_fails_on_that_read(sim_pool: SimHandle) -> None:
    """The master hangs in the last seconds of power_timeout, on a read whose slice is all
    that is left: the run fails on that read, at power_timeout, without a login attempt
    that could no longer finish."""
    sim_pool.sim.set_power_duration(TARGET, "hard_shutdown", 3.6)
    kill_master_after(sim_pool, "hard_shutdown", "host2", "hang")
    agent = run(sim_pool, "off", power_timeout="5", login_timeout="2", shell_timeout="2",
                stonith_status_sleep="0.5")
    # The logout goes to the hung master too: a warning, after at most 2 s more.
    warnings = [line for line in agent.stderr_lines if line.startswith("WARNING: ")]
    assert all("logout failed" in line for line in warnings), agent
    errors = [line for line in agent.stderr_lines if not line.startswith("WARNING: ")]
    assert len(errors) == 1 and errors[0].startswith("ERROR: "), agent
    assert "did not answer VM.get_power_state" in errors[0], agent
    assert "cannot log in" not in errors[0], agent
    assert agent.returncode == 1 and "Success" not in agent.stdout, agent
    assert agent.seconds <= 5 + 2 + MARGIN, agent
    assert logins(sim_pool) == 1
    sim_pool.sim.host_up("host1")
    assert_clean(sim_pool, TARGET)


def test_the_new_login_races_until_power_timeout_ends(sim_pool: SimHandle) -> None:
    """As above with host3 listed too (and hanging): the new login asks host1, and host3 a
    moment later while host1 goes on; neither answers, and the run fails at power_timeout
    naming both, not later (the login's own bound is cut to what is left)."""
    sim_pool.sim.set_power_duration(TARGET, "hard_shutdown", 3)
    kill_master_after(sim_pool, "hard_shutdown", "host2", "hang")
    sim_pool.sim.host_down("host3", "hang")
    agent = run(sim_pool, "off", hosts=("host1", "host3"), power_timeout="5",
                login_timeout="2", shell_timeout="1", stonith_status_sleep="0.5")
    line = assert_one_error(agent, "cannot log in", "did not finish within 5 s")
    assert sim_pool.url_of("host1") in line and sim_pool.url_of("host3") in line, line
    assert agent.seconds <= 5 + MARGIN, agent
    sim_pool.sim.host_up("host1")
    sim_pool.sim.host_up("host3")
    assert_clean(sim_pool, TARGET)


def test_a_start_the_pool_never_received_is_sent_again(sim: SimHandle) -> None:
    """The first pool host stops taking connections after the agent found the VM, before
    the start is sent: the connection is refused, so XAPI never saw the start; after a
    login through the next host the start is sent, once (unlike a start a master took and
    then lost, which is never repeated)."""
    def forward(conn: Conn, call: Call) -> bool:
        body = forward_to(sim, call)
        if call.method != "VM.get_all_records_where":
            return conn.send(http_response(body))
        proxy.refuse_connections()
        conn.send(http_response(body, headers=["Connection: close"]))
        return False

    with HostileServer(forward, upstream=sim.url) as proxy:
        agent = run_agent(stdin=sim.params(action="on", plug="vm-halted",
                                           session_url=f"{proxy.url},{sim.url}", **SHORT))
        succeeded(agent, "Success: Powered ON")
        assert "VM.start" not in proxy.calls, proxy.calls
    assert ops(sim, "vm-halted") == ["start"]
    assert_clean(sim, "vm-halted")


def test_master_dies_after_the_start_was_sent_is_not_repeated(sim_pool: SimHandle) -> None:
    """The master accepts a start that takes 2 s, then fails; the start goes on. The agent
    logs in on the new master and reads Halted for a while, but never sends the start again
    (two starts could run the VM twice): the reads decide, and the VM comes up."""
    sim_pool.set_power_state(TARGET, "Halted")
    sim_pool.sim.set_power_duration(TARGET, "start", 2)
    kill_master_after(sim_pool, "start", "host2", "refuse", phase="before")
    agent = run(sim_pool, "on", power_timeout="10", login_timeout="2", shell_timeout="1",
                stonith_status_sleep="0.5")
    succeeded(agent, "Success: Powered ON")
    assert ops(sim_pool) == ["start"]
    assert sim_pool.requests().get("VM.start") == 1
    assert_clean(sim_pool, TARGET)


def test_start_lost_with_the_master_is_not_retried(sim_pool: SimHandle) -> None:
    """The master takes a start that needs longer than power_timeout and goes away: even with
    retry_on=2 the agent does not start the VM again; it fails, saying why."""
    sim_pool.set_power_state(TARGET, "Halted")
    sim_pool.sim.set_power_duration(TARGET, "start", 8)
    kill_master_after(sim_pool, "start", "host2", "refuse", phase="before")
    agent = run(sim_pool, "on", retry_on="2", power_timeout="3", login_timeout="2",
                shell_timeout="1", stonith_status_sleep="0.5")
    assert_one_error(agent, "not trying again", "check the VM")
    assert sim_pool.requests().get("VM.start") == 1
    wait_for(lambda: sim_pool.power_state(TARGET) == "Running", 15, "the first start to end")
    assert ops(sim_pool) == ["start"]
    assert_clean(sim_pool, TARGET)


# ---------------------------------------------------------------------------------------------
# Logging in across a sick pool
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [["HOST_STILL_BOOTING"], ["HOST_HAS_NO_MANAGEMENT_IP"],
                                   ["INTERNAL_ERROR", "emergency mode"]],
                         ids=lambda error: error[0])
def test_emergency_member_first_then_the_master(sim_pool: SimHandle, error: list[str]) -> None:
    sim_pool.sim.set_emergency("host2", error)
    agent = run(sim_pool, "off", hosts=("host2", "host1"))
    succeeded(agent, "Success: Powered OFF")
    assert sim_pool.power_state(TARGET) == "Halted"
    # The off budget (5) and the member's refused login.
    assert sim_pool.total_requests() <= 6, sim_pool.requests()
    assert_clean(sim_pool, TARGET)


def test_one_hosts_tls_failure_moves_on(sim_pool_tls: SimHandle) -> None:
    """host2's certificate is not pinned: that host fails, the next one is the master."""
    pins = sim_pool_tls.fingerprint("host1")
    agent = run(sim_pool_tls, "status", hosts=("host2", "host1"), ssl_fingerprint=pins)
    succeeded(agent, "Status: ON")
    assert_clean(sim_pool_tls)


def test_redirect_chain_of_two(sim_pool: SimHandle) -> None:
    sim_pool.sim.promote("host3")
    sim_pool.sim.set_master_address("host1", "127.0.0.2")  # host1 -> host2 -> host3
    agent = run(sim_pool, "off", hosts=("host1",))
    succeeded(agent, "Success: Powered OFF")
    assert logins(sim_pool) == 3
    assert_clean(sim_pool, TARGET)


def test_redirect_chain_of_three_back_to_a_tried_host() -> None:
    """Four hosts; the master (host3) is down and listed first; host1 names host2, host2
    names host4, host4 names host3: the line names host4, the last of the chain."""
    with SimHandle.pool(hosts=4) as pool:
        pool.sim.promote("host3")
        pool.sim.set_master_address("host1", "127.0.0.2")
        pool.sim.set_master_address("host2", "127.0.0.4")
        pool.sim.host_down("host3", "refuse")
        agent = run(pool, "off", hosts=("host3", "host1"), **SHORT)
        host4, host3 = (pool.url_of(host) for host in ("host4", "host3"))
        assert_one_error(agent, f"{host4} redirects to {host3}, already tried")
        assert logins(pool) == 3
        pool.sim.host_up("host3")
        assert_clean(pool)


def test_redirect_to_a_host_already_tried_is_named(sim_pool: SimHandle) -> None:
    """The master (host3) is down and listed first; host1 still names host2 as master, which
    names host3: the chain ends there (tried once per login), and the line says which host
    of the chain led back to it."""
    sim_pool.sim.promote("host3")
    sim_pool.sim.set_master_address("host1", "127.0.0.2")  # host1 -> host2 -> host3
    sim_pool.sim.host_down("host3", "refuse")
    agent = run(sim_pool, "off", hosts=("host3", "host1"), **SHORT)
    host2, host3 = (sim_pool.url_of(host) for host in ("host2", "host3"))
    assert_one_error(agent, f"{host2} redirects to {host3}, already tried")
    assert logins(sim_pool) == 2  # host1 and host2; host3 refused the connection
    assert sim_pool.power_state(TARGET) == "Running"
    sim_pool.sim.host_up("host3")
    assert_clean(sim_pool)


def test_a_stale_redirect_to_a_tried_host_moves_on_to_the_next_listed(
        sim_pool: SimHandle) -> None:
    """A master change half seen: the old master (host3) is down and listed first, host2
    still names it, and the new master (host1) is listed last. The redirect back to a host
    already tried is a dead end, not the end of the login: host1 is asked and fences."""
    sim_pool.sim.promote("host1")
    sim_pool.sim.set_master_address("host2", "127.0.0.3")  # host2 -> host3, the old master
    sim_pool.sim.host_down("host3", "refuse")
    agent = run(sim_pool, "off", hosts=("host3", "host2", "host1"), **SHORT)
    succeeded(agent, "Success: Powered OFF")
    assert logins(sim_pool) == 2  # host2's HOST_IS_SLAVE and host1's session
    sim_pool.sim.host_up("host3")
    assert_clean(sim_pool, TARGET)


def test_a_host_listed_twice_is_asked_once(sim_pool: SimHandle) -> None:
    """session_url names the old master (down) twice, then the new master: the second
    mention is passed over without a word, and the login goes on to the master."""
    sim_pool.sim.host_down("host3", "refuse")
    agent = run(sim_pool, "status", hosts=("host3", "host3", "host1"), **SHORT)
    succeeded(agent, "Status: ON")
    assert logins(sim_pool) == 1
    sim_pool.sim.host_up("host3")
    assert_clean(sim_pool)


def test_redirect_loop_fails_clearly_within_login_timeout(sim_pool: SimHandle) -> None:
    sim_pool.sim.promote("host3")
    sim_pool.sim.set_master_address("host1", "127.0.0.2")
    sim_pool.sim.set_master_address("host2", "127.0.0.1")
    agent = run(sim_pool, "off", hosts=("host1",), login_timeout=str(LOGIN_TIMEOUT))
    assert_one_error(agent, "redirect loop")
    assert agent.seconds <= LOGIN_TIMEOUT + MARGIN, agent
    assert logins(sim_pool) == 2
    assert sim_pool.power_state(TARGET) == "Running"
    assert_clean(sim_pool)


def test_hanging_first_host_costs_a_stagger_not_login_timeout(sim_pool: SimHandle) -> None:
    """A host that accepts and never answers is joined by the next one after a moment (the
    login race's stagger, 250 ms), not after login_timeout (10 s by default)."""
    sim_pool.sim.promote("host2")
    sim_pool.sim.host_down("host1", "hang")
    agent = run(sim_pool, "status", hosts=("host1", "host2"))
    succeeded(agent, "Status: ON")
    assert agent.seconds <= RACE_BOUND, agent
    assert_clean(sim_pool)


def sick_pool(hung: int, refusing: int = 0, tls_dir: Optional[Path] = None) -> SimHandle:
    """Four hosts, host1 the master (the target VM runs there); of the members host2.. the
    first `hung` accept connections and never answer, the next `refusing` refuse them. With
    `tls_dir`, over https (self-signed certificates)."""
    pool = SimHandle.pool(hosts=4, tls="self-signed" if tls_dir else None, tls_dir=tls_dir)
    for number in range(2, hung + refusing + 2):
        pool.sim.host_down(f"host{number}", "hang" if number < hung + 2 else "refuse")
    return pool


def sick_hosts(hung: int, refusing: int = 0) -> tuple[str, ...]:
    """session_url for sick_pool: the sick hosts first, as listed by someone who did not know
    which host would be master on the day, then the master."""
    return (*(f"host{number}" for number in range(2, hung + refusing + 2)), "host1")


@pytest.mark.parametrize("hung", [1, 2, 3])
def test_reboot_through_hung_hosts_listed_before_the_master(hung: int) -> None:
    """Hosts that accept the connection and never answer (a wedged xapi, a black-holed route)
    are listed before the master: each costs the race's stagger, not login_timeout (10 s
    each when tried one after another: 30 s for three), and nothing is left behind."""
    with sick_pool(hung) as pool:
        agent = run(pool, "reboot", hosts=sick_hosts(hung))
        succeeded(agent, "Success: Rebooted")
        assert agent.seconds <= RACE_BOUND, agent
        assert ops(pool) == ["hard_shutdown", "start"]
        assert pool.power_state(TARGET) == "Running"
        assert logins(pool) == 1  # only the master read a login: the hung hosts read nothing
        assert_clean(pool, TARGET)


def test_reboot_through_hung_and_refusing_hosts(sim: SimHandle) -> None:
    """One host hangs and two refuse connections before the master: a refusal makes way for
    the next host at once, the hang after the stagger."""
    with sick_pool(1, refusing=2) as pool:
        agent = run(pool, "reboot", hosts=sick_hosts(1, refusing=2))
        succeeded(agent, "Success: Rebooted")
        assert agent.seconds <= RACE_BOUND, agent
        assert ops(pool) == ["hard_shutdown", "start"]
        assert_clean(pool, TARGET)


@pytest.mark.parametrize(("scheme", "said"), [("http", "no answer to the login"),
                                               ("https", "no answer")])
def test_a_silent_host_is_named_with_whether_it_got_the_password(scheme: str, said: str,
                                                                  tmp_path: Path) -> None:
    """login_timeout ends with the one host silent: the line says whether the password went
    to it (over http it took the request and never answered) or never left (over https its
    TLS handshake never ended, so the password was never sent)."""
    with sick_pool(1, tls_dir=tmp_path if scheme == "https" else None) as pool:
        agent = run(pool, "status", hosts=("host2",), **SHORT)
        line = assert_one_error(agent, f"{pool.url_of('host2')}: {said}")
        assert line.endswith(f"{said}; login did not finish within {LOGIN_TIMEOUT} s"), line
        assert_clean(pool)


def test_wrong_password_with_hung_members_ahead_is_one_refused_login() -> None:
    """The password is wrong, XAPI takes 5 s to say so (xapi_session.ml), and a hung member
    is listed first, another member after the master, and the master again under another
    name: the race asks them all, but the master gets the password once (a member answers
    HOST_IS_SLAVE before it looks at the password; the second name reaches an address
    already asked). One refused login, one line, well before the hung host's login_timeout
    would even have ended."""
    with SimHandle.pool(hosts=3) as pool:
        pool.sim.add_user("fencer", "right-password", "vm-operator")
        pool.sim.settings.auth_failure_delay = 5.0
        pool.sim.host_down("host2", "hang")
        master_by_name = named(pool, "host1", "localhost")
        session_url = ",".join([pool.url_of("host2"), pool.url_of("host1"),
                                pool.url_of("host3"), master_by_name])
        agent = run_agent(stdin=pool.params(action="reboot", plug=TARGET,
                                            session_url=session_url, username="fencer",
                                            password="wrong-password"))
        assert_one_error(agent, "refused", "SESSION_AUTHENTICATION_FAILED", "fencer")
        assert 5.0 <= agent.seconds <= 5.0 + RACE_BOUND, agent
        assert logins(pool) == 2, pool.requests()  # host1's refusal, host3's HOST_IS_SLAVE
        assert pool.power_state(TARGET) == "Running"
        assert_clean(pool)


def test_late_session_from_a_second_address_of_the_master_is_logged_out() -> None:
    """The master answers on two addresses, both listed, and takes 0.6 s to accept a
    directory login: the first address wins, the second was asked after the stagger and
    brings a session too, late; that session is logged out (none left on the pool)."""
    with SimHandle.pool(hosts=3) as pool:
        pool.sim.add_user("fencer", "right-password", "vm-operator", login_delay=0.6)
        pool._add_server("127.0.0.9", "host1", None)
        second = pool.url_of("host1").replace("127.0.0.1", "127.0.0.9")
        agent = run_agent(stdin=pool.params(
            action="status", plug=TARGET, session_url=f"{pool.url_of('host1')},{second}",
            username="fencer", password="right-password"))
        succeeded(agent, "Status: ON")
        # The winner and the late one.
        assert pool.sim.counters()["logins"] == 2, pool.sim.counters()
        assert pool.sessions_open() == 0, pool.sim.counters()


def test_late_session_whose_logout_fails_is_a_warning() -> None:
    """As above, and the pool fails both logouts (the winner's and the late session's): the
    status stands, each failed logout is one warning, and nothing else is said."""
    with SimHandle.pool(hosts=3) as pool:
        pool.sim.add_user("fencer", "right-password", "vm-operator", login_delay=0.6)
        pool._add_server("127.0.0.9", "host1", None)
        second = pool.url_of("host1").replace("127.0.0.1", "127.0.0.9")
        pool.sim.faults.fail_next["session.logout"] = [["INTERNAL_ERROR", "logout"]] * 2
        agent = run_agent(stdin=pool.params(
            action="status", plug=TARGET, session_url=f"{pool.url_of('host1')},{second}",
            username="fencer", password="right-password"))
        succeeded(agent, "Status: ON")
        assert pool.sim.counters()["logins"] == 2, pool.sim.counters()
        assert len(agent.stderr_lines) == 2, agent
        assert all(line.startswith("WARNING: logout failed") for line in agent.stderr_lines), \
            agent
        assert pool.sessions_open() == 2  # left to expire on the pool


def test_sigterm_while_the_master_answers_slowly_leaves_no_session() -> None:
    """SIGTERM (the fencer's timeout) arrives while a hung host and the master (a directory
    login taking 1 s) are both being asked: the agent stops with one line, but first waits
    (bounded) for the login it sent the master and logs that session out."""
    with SimHandle.pool(hosts=3) as pool:
        pool.sim.add_user("fencer", "right-password", "vm-operator", login_delay=1.0)
        pool.sim.host_down("host2", "hang")
        agent = start_agent(pool.params(
            action="reboot", plug=TARGET, username="fencer", password="right-password",
            session_url=urls(pool, "host2", "host1")))
        try:
            wait_for(lambda: logins(pool) >= 1, 10, "the master to get the login")
            agent.send_signal(signal.SIGTERM)
            stdout, stderr = agent.communicate(timeout=RACE_BOUND)
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.communicate()
        assert agent.returncode == 1, (stdout, stderr)
        assert stdout == "" and "Traceback" not in stderr, stderr
        assert [line for line in stderr.splitlines() if line.strip()] == \
            ["ERROR: stopped by SIGTERM"], stderr
        wait_for(lambda: pool.sim.counters()["logins"] >= 1, 5, "the master's login to end")
        assert pool.sessions_open() == 0, pool.sim.counters()
        assert pool.power_log() == []


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_login_race_leaves_no_thread_behind(scheme: str, tmp_path: Path) -> None:
    """In-process, the session's login racing three hung hosts before the master (over http
    they got the password and never answer; over https their handshake never ends): once
    the session is closed, no attempt's thread is left (none could send anything later), and
    no session is open."""
    fx = agent_module
    with sick_pool(3, tls_dir=tmp_path if scheme == "https" else None) as pool:
        endpoints = [pool.url_of(host) for host in sick_hosts(3)]
        session = fx.XapiSession(endpoints, fx.TlsPolicy(insecure=scheme == "https"), "root",
                                 "secret", fx.Timeouts(login=10.0, query=3.0))
        started = time.monotonic()
        with session:
            ref = session.call("VM.get_by_uuid", pool.uuid(TARGET))
            assert session.call("VM.get_power_state", ref) == "Running"
            racing = [t for t in threading.enumerate() if t.name.startswith("login at ")]
            # Over http the hung hosts took the password: their answer is awaited until the
            # session closes (over https nothing was sent: they were cut off when the master
            # answered, and may be ending just now).
            assert racing or scheme == "https", "the hung hosts' attempts ended too early"
        left = [t.name for t in threading.enumerate() if t.name.startswith("login at ")]
        assert left == [], left
        assert time.monotonic() - started <= RACE_BOUND
        assert pool.sessions_open() == 0, pool.sim.counters()


def test_a_lookup_cut_off_by_the_winner_leaves_no_thread_behind(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process, the first URL names a host whose name lookup never ends (a dead name
    server, as below, staged by holding getaddrinfo) and the master is listed next by
    address: once the master won and the session closed, the attempt waiting on the lookup
    has ended (the abort wakes its wait), not waited on until login_timeout."""
    fx = agent_module
    real = socket.getaddrinfo
    release = threading.Event()

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if host in (b"dead.fx-test", "dead.fx-test"):
            if int(kwargs.get("flags", 0)) & socket.AI_NUMERICHOST:  # type: ignore[call-overload]
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            release.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with SimHandle.pool(hosts=1) as pool:
        master = pool.url_of("host1")
        dead = re.sub(r"//[^:/]+", "//dead.fx-test", master)
        session = fx.XapiSession([dead, master], fx.TlsPolicy(), "root", "secret",
                                 fx.Timeouts(login=10.0, query=3.0))
        try:
            with session:
                assert session.call("VM.get_by_uuid", pool.uuid(TARGET))
            left = [t.name for t in threading.enumerate() if t.name.startswith("login at ")]
            assert left == [], left
        finally:
            release.set()
        assert pool.sessions_open() == 0, pool.sim.counters()


# A pool named by DNS while the name server is dead: glibc waits `timeout:5` s per try and
# `attempts:2` (resolv.conf(5)), far past login_timeout. The agent runs in a mount namespace
# of its own, its /etc/resolv.conf naming a server on loopback that reads queries and never
# answers, and its /etc/hosts naming one host.
# An address of its own for each test process (two runs of the suite at once, such as the
# mutation campaign's workers, must not share port 53 of one address).
SILENT_DNS = "127.53.{}.{}".format(*(1 + byte % 254 for byte in os.urandom(2)))


@contextlib.contextmanager
def silent_name_server() -> Iterator[socket.socket]:
    """A UDP socket on SILENT_DNS:53 that never answers; the queries stay queued in it."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        server.bind((SILENT_DNS, 53))
        server.setblocking(False)
        yield server
    finally:
        server.close()


def queries(server: socket.socket) -> list[bytes]:
    received = []
    while True:
        try:
            received.append(server.recv(4096))
        except BlockingIOError:
            return received


def mount_propagation() -> str:
    """unshare's --propagation for the agent's own mount namespace. Normally `private` (the
    binds over /etc must not reach the caller's namespace). In a chroot, as the Debian 13
    suite runs these tests (tests/trixie.py), "/" is not a mount point and `private` fails;
    there the mounts are already private (trixie.py's own unshare made them so), which is
    checked, and `unchanged` is as safe."""
    mounts = Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines()
    if any(line.split()[4] == "/" for line in mounts):
        return "private"
    # Optional fields sit between the 6th field and " - ": "shared:N" would propagate.
    if any("shared:" in line.split(" - ", 1)[0] for line in mounts):
        pytest.skip("a chroot with shared mounts: binding over /etc could reach the host")
    return "unchanged"


def run_with_dns(handle: SimHandle, tmp_path: Path, action: str, session_url: str,
                 hosts_file: str = "", **params: str) -> AgentRun:
    """The agent as run_agent runs it, but seeing `hosts_file` as /etc/hosts and only the
    silent name server in /etc/resolv.conf."""
    if os.geteuid() != 0:
        pytest.skip("needs root: a mount namespace with its own /etc/resolv.conf")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {SILENT_DNS}\noptions timeout:5 attempts:2\n")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n" + hosts_file)
    stdin = stdin_text(handle.params(action=action, plug=TARGET, session_url=session_url,
                                     **params))
    started = time.monotonic()
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", mount_propagation(), "sh", "-c",
         'mount --bind "$1" /etc/resolv.conf && mount --bind "$2" /etc/hosts && exec "$3"',
         "sh", str(resolv), str(hosts), str(AGENT)],
        input=stdin, capture_output=True, text=True, timeout=120, check=False)
    return AgentRun(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def named(handle: SimHandle, host: str, name: str) -> str:
    """host's URL with `name` in place of its address."""
    url = handle.url_of(host)
    return url.replace(url.split("//", 1)[1].split(":", 1)[0], name, 1)


def test_a_pool_named_in_the_hosts_file(sim_pool: SimHandle, tmp_path: Path) -> None:
    """A name is looked up off the main thread now: a name /etc/hosts knows still works, and
    the dead name server is never asked."""
    address = sim_pool.url_of("host1").split("//", 1)[1].split(":", 1)[0]
    with silent_name_server() as dns:
        agent = run_with_dns(sim_pool, tmp_path, "off", named(sim_pool, "host1", "pool.fx-test"),
                             hosts_file=f"{address} pool.fx-test\n", **SHORT)
        succeeded(agent, "Success: Powered OFF")
        assert queries(dns) == []
    assert sim_pool.power_state(TARGET) == "Halted"
    assert_clean(sim_pool, TARGET)


def test_dead_name_server_does_not_hold_back_a_later_address(sim_pool: SimHandle,
                                                               tmp_path: Path) -> None:
    """The first URL names the old master by DNS and the name server is dead (glibc alone
    would wait 10 s); the address listed next (the master) is asked while the lookup goes on,
    and the reboot is done long before login_timeout (default 10 s) would have ended it."""
    sim_pool.sim.promote("host2")
    with silent_name_server() as dns:
        agent = run_with_dns(
            sim_pool, tmp_path, "reboot",
            f"{named(sim_pool, 'host1', 'master.fx-test')},{sim_pool.url_of('host2')}")
        succeeded(agent, "Success: Rebooted")
        assert any(b"fx-test" in query for query in queries(dns)), "no query reached the DNS"
    assert agent.seconds <= RACE_BOUND, agent
    assert ops(sim_pool) == ["hard_shutdown", "start"]
    assert_clean(sim_pool, TARGET)


def test_dead_name_server_alone_is_one_line_at_login_timeout(sim_pool: SimHandle,
                                                             tmp_path: Path) -> None:
    with silent_name_server():
        agent = run_with_dns(sim_pool, tmp_path, "off",
                             named(sim_pool, "host1", "master.fx-test"), **SHORT)
    assert_one_error(agent, "master.fx-test", "within 2 s")
    assert agent.seconds <= LOGIN_TIMEOUT + MARGIN, agent
    assert sim_pool.power_state(TARGET) == "Running"
    assert_clean(sim_pool)


def test_a_name_the_resolver_cannot_look_up_is_one_line(sim_pool: SimHandle,
                                                        tmp_path: Path) -> None:
    """The name server refuses (nothing listens at its address): the lookup fails at once,
    and the one line says the name could not be resolved (no thread's traceback, no wait
    for login_timeout)."""
    agent = run_with_dns(sim_pool, tmp_path, "status", named(sim_pool, "host1", "gone.fx-test"),
                         **SHORT)
    assert_one_error(agent, "cannot resolve gone.fx-test")
    assert agent.seconds < LOGIN_TIMEOUT + MARGIN, agent
    assert logins(sim_pool) == 0
    assert_clean(sim_pool)


def address_of(handle: SimHandle, host: str) -> str:
    return handle.url_of(host).split("//", 1)[1].split(":", 1)[0]


@pytest.mark.parametrize("order", [("host2", "host3"), ("host3", "host2")],
                         ids=["answering-first", "refusing-first"])
def test_a_name_with_two_addresses_uses_the_one_that_answers(sim_pool: SimHandle, tmp_path: Path,
                                                             order: tuple[str, str]) -> None:
    """The pool's name has two addresses (/etc/hosts, in this order), one of a host that
    refuses connections: the agent connects to each in turn and keeps the first connection
    that is made, whichever comes first."""
    sim_pool.sim.promote("host2")
    sim_pool.sim.host_down("host3", "refuse")
    hosts_file = "".join(f"{address_of(sim_pool, host)} pool.fx-test\n" for host in order)
    with silent_name_server() as dns:
        agent = run_with_dns(sim_pool, tmp_path, "status", named(sim_pool, "host2", "pool.fx-test"),
                             hosts_file=hosts_file, **SHORT)
        succeeded(agent, "Status: ON")
        assert queries(dns) == []
    assert logins(sim_pool) == 1
    sim_pool.sim.host_up("host3")
    assert_clean(sim_pool)


@pytest.mark.parametrize("listed", [8, 10])
def test_login_tries_at_most_eight_hosts(sim: SimHandle, listed: int) -> None:
    """session_url hosts that refuse connections: the login tries eight at most, names each
    it tried, and says it gave up only when a listed host was left untried."""
    ports = []
    for _ in range(listed):
        with socket.socket() as probe:  # a port nothing listens on once this closes
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    agent = run_agent(stdin=sim.params(action="status", plug=TARGET, session_url=",".join(
        f"http://127.0.0.1:{port}/" for port in ports), **SHORT))
    line = assert_one_error(agent, "cannot log in to any pool host")
    assert [port for port in ports if f":{port}/" in line] == ports[:8], line
    assert line.count("gave up after trying 8 hosts") == (1 if listed > 8 else 0), line
    assert_clean(sim)


def test_slow_external_auth_refusal_is_reported_as_refused(sim_pool: SimHandle) -> None:
    """XAPI answers every refused login after 5 s (xapi_session.ml): with the default settings
    that is a refusal, not a timeout, and it is not tried again on the other hosts."""
    sim_pool.sim.add_user("fencer", "right-password", "vm-operator")
    sim_pool.sim.settings.auth_failure_delay = 5.0
    agent = run(sim_pool, "off", username="fencer", password="wrong-password")
    line = assert_one_error(agent, "refused", "SESSION_AUTHENTICATION_FAILED", "fencer")
    assert "within" not in line and "timed out" not in line, line
    assert agent.seconds >= 5.0, agent
    # The master's refusal, and host2 and host3 asked while it took its 5 s: both answer
    # HOST_IS_SLAVE naming host1, which already has the password (a second would make 4).
    assert logins(sim_pool) == 3
    assert sim_pool.power_state(TARGET) == "Running"
    assert_clean(sim_pool)


def test_slow_external_login_that_succeeds(sim_pool: SimHandle) -> None:
    """An accepted external (AD) login may take seconds; the default login_timeout waits."""
    sim_pool.sim.add_user("fencer", "right-password", "vm-operator", login_delay=6.0)
    agent = run(sim_pool, "off", username="fencer", password="right-password")
    succeeded(agent, "Success: Powered OFF")
    assert_clean(sim_pool, TARGET)


# ---------------------------------------------------------------------------------------------
# Per-host certificates, trust on redirect
# ---------------------------------------------------------------------------------------------


def test_race_sends_the_password_only_past_the_pin_check(sim_pool_tls: SimHandle) -> None:
    """Only the master is pinned; a hung host (its TLS handshake never ends) and a member
    whose certificate is not pinned are listed first. The race asks all three, but only the
    master sees the password: the member fails its pin check before a byte is sent (it
    would otherwise have answered HOST_IS_SLAVE to a login), the hung host never gets that
    far."""
    sim_pool_tls.sim.host_down("host3", "hang")
    agent = run(sim_pool_tls, "reboot", hosts=("host3", "host2", "host1"),
                ssl_fingerprint=sim_pool_tls.fingerprint("host1"))
    succeeded(agent, "Success: Rebooted")
    assert agent.seconds <= RACE_BOUND, agent
    assert logins(sim_pool_tls) == 1, sim_pool_tls.requests()
    sim_pool_tls.sim.host_up("host3")
    assert_clean(sim_pool_tls, TARGET)


def test_pinned_member_and_thumbprint_reach_the_master(sim_pool_tls: SimHandle) -> None:
    """Only host2 (a member) is pinned; its HOST_IS_SLAVE carries the master's thumbprint,
    which the agent then requires of the master's certificate."""
    pin = sim_pool_tls.fingerprint("host2")
    agent = run(sim_pool_tls, "off", hosts=("host2",), ssl_fingerprint=pin)
    succeeded(agent, "Success: Powered OFF")
    assert logins(sim_pool_tls) == 2
    assert_clean(sim_pool_tls, TARGET)


def test_pool_without_thumbprints_checks_the_master_by_the_pins(sim_pool_tls: SimHandle) -> None:
    """XAPI before December 2023 (XCP-ng 8.2, Citrix Hypervisor 8.2) sends no thumbprint with
    HOST_IS_SLAVE: the master is then checked like any session_url host, so with its pin
    listed too the login goes through."""
    sim_pool_tls.sim.settings.thumbprint_header = False
    pins = ",".join(sim_pool_tls.fingerprint(host) for host in ("host2", "host1"))
    agent = run(sim_pool_tls, "off", hosts=("host2",), ssl_fingerprint=pins)
    succeeded(agent, "Success: Powered OFF")
    assert logins(sim_pool_tls) == 2
    assert_clean(sim_pool_tls, TARGET)


def test_pool_without_thumbprints_and_an_unpinned_master_is_refused(
        sim_pool_tls: SimHandle) -> None:
    """Only the member pinned, and no thumbprint to trust on redirect: the master's
    certificate matches no pin, one line says so, and the master never sees the password."""
    sim_pool_tls.sim.settings.thumbprint_header = False
    agent = run(sim_pool_tls, "off", hosts=("host2",),
                ssl_fingerprint=sim_pool_tls.fingerprint("host2"), **SHORT)
    assert_one_error(agent, "does not match", "127.0.0.1")
    assert logins(sim_pool_tls) == 1
    assert sim_pool_tls.power_state(TARGET) == "Running"
    assert_clean(sim_pool_tls)


def test_malformed_thumbprint_is_a_warning_and_the_pins_decide(sim_pool_tls: SimHandle) -> None:
    """A member sends a thumbprint that is no fingerprint at all: one warning, and the master
    is checked like any session_url host (here: by its own pin)."""
    sim_pool_tls.faults.thumbprint = "sha-256 of nothing"
    pins = ",".join(sim_pool_tls.fingerprint(host) for host in ("host2", "host1"))
    agent = run(sim_pool_tls, "off", hosts=("host2",), ssl_fingerprint=pins)
    assert agent.returncode == 0, agent
    assert agent.stdout == "Success: Powered OFF\n", agent
    assert len(agent.stderr_lines) == 1, agent
    assert agent.stderr_lines[0].startswith("WARNING: ") and "malformed" in agent.stderr, agent
    assert_clean(sim_pool_tls, TARGET)


def test_wrong_thumbprint_is_refused(sim_pool_tls: SimHandle, pki: Pki) -> None:
    """The member names the master's real certificate, but another one answers at the
    master's address (an impostor on the path): the agent refuses it before sending the
    password."""
    pin = sim_pool_tls.fingerprint("host2")
    # The master's server presents another certificate; the pool still records the real one,
    # which is what host2's thumbprint header carries.
    sim_pool_tls.server_of("host1").present_certificate(pki.other_cert, pki.other_key)
    agent = run(sim_pool_tls, "off", hosts=("host2",), ssl_fingerprint=pin, **SHORT)
    assert_one_error(agent, "thumbprint", "127.0.0.1")
    assert logins(sim_pool_tls) == 1  # the impostor never saw the password
    assert sim_pool_tls.power_state(TARGET) == "Running"
    assert_clean(sim_pool_tls)


def test_thumbprint_of_an_unverified_member_binds_nothing(sim_pool_tls: SimHandle,
                                                         pki: Pki) -> None:
    """With ssl_insecure the member proved nothing, so its thumbprint header is not a pin:
    the master is checked as ssl_insecure says (not at all), even when it presents another
    certificate than the one the pool records (a certificate installed on a proxy in front
    of it, say). Only a verified member's word pins the master."""
    sim_pool_tls.server_of("host1").present_certificate(pki.other_cert, pki.other_key)
    agent = run(sim_pool_tls, "status", hosts=("host2",), ssl_insecure="1", **SHORT)
    succeeded(agent, "Status: ON")
    assert logins(sim_pool_tls) == 2
    assert_clean(sim_pool_tls)


def test_thumbprint_binds_even_a_ca_signed_master(pki: Pki, tmp_path: Path) -> None:
    """CA-verified pool: the member's thumbprint decides, not the CA. Another certificate the
    same CA signed for the master's address is refused; the real one works."""
    with SimHandle.pool(hosts=3, tls="ca", tls_dir=tmp_path / "hosts", pki=pki) as pool:
        trust = {"ssl_ca_file": str(pki.ca_cert)}
        agent = run(pool, "status", hosts=("host2",), **trust)
        succeeded(agent, "Status: ON")
        assert logins(pool) == 2
        pool.server_of("host1").present_certificate(pki.server_cert, pki.server_key)
        pool.reset_counters()
        refused = run(pool, "status", hosts=("host2",), **trust, **SHORT)
        assert_one_error(refused, "thumbprint", "127.0.0.1")
        assert logins(pool) == 1
        assert_clean(pool)


def test_ca_signed_certificate_for_another_name_is_refused(pki: Pki, tmp_path: Path) -> None:
    """The pool's CA signed host1's certificate for `DNS:host1, IP:127.0.0.1`; reached as
    `localhost` (the same address), that certificate names another host: a valid chain is
    not enough, the name must match, and the refusal comes before the password is sent
    (no request reaches any host). Reached by the address it names, the same host works."""
    with SimHandle.pool(hosts=3, tls="ca", tls_dir=tmp_path / "hosts", pki=pki) as pool:
        trust = {"ssl_ca_file": str(pki.ca_cert)}
        refused = run(pool, "status", hosts=(), session_url=named(pool, "host1", "localhost"),
                      **trust, **SHORT)
        line = assert_one_error(refused, "certificate", "localhost")
        assert pool.total_requests() == 0, pool.requests()
        assert logins(pool) == 0
        agent = run(pool, "status", hosts=("host1",), **trust)
        succeeded(agent, "Status: ON")
        assert logins(pool) == 1, line
        assert_clean(pool)


@pytest.mark.parametrize("master", HOSTS)
def test_three_pinned_hosts_any_of_them_master(sim_pool_tls: SimHandle, master: str) -> None:
    pins = ",".join(sim_pool_tls.fingerprint(host) for host in HOSTS)
    if master != "host1":
        sim_pool_tls.sim.promote(master)
    for first in HOSTS:
        sim_pool_tls.reset_counters()
        agent = run(sim_pool_tls, "status", hosts=(first, *[h for h in HOSTS if h != first]),
                    ssl_fingerprint=pins)
        succeeded(agent, "Status: ON")
        assert logins(sim_pool_tls) == (1 if first == master else 2)
    assert_clean(sim_pool_tls)


# ---------------------------------------------------------------------------------------------
# The VM's state decides, not how long XAPI's call takes
# ---------------------------------------------------------------------------------------------


def test_shutdown_delay_does_not_delay_the_verdict(sim_pool: SimHandle) -> None:
    """hard_shutdown halts the VM at once and then sleeps shutdown_delay=25 before answering
    (xapi_vm.ml): the VM reads Halted, so `off` succeeds in seconds, not 25."""
    sim_pool.sim.set_vm(TARGET, shutdown_delay="25")
    agent = run(sim_pool, "off")
    succeeded(agent, "Success: Powered OFF")
    assert agent.seconds < 10, agent
    assert ops(sim_pool) == ["hard_shutdown"]
    assert_clean(sim_pool, TARGET, within=30)


@pytest.mark.parametrize("power_wait", ["0", "1"])
def test_a_call_that_used_up_power_timeout_still_gets_one_read(sim_pool: SimHandle,
                                                              power_wait: str) -> None:
    """shell_timeout 5 > power_timeout 3 and a shutdown_delay of 4 s: the hard_shutdown call
    is abandoned when power_timeout ends, with the VM already Halted. The first state read
    gets a query timeout of its own (a call that returned deserves one verification), so
    the run succeeds instead of failing on an expired deadline; power_wait, with no time
    left to wait in, is skipped."""
    sim_pool.sim.set_vm(TARGET, shutdown_delay="4")
    agent = run(sim_pool, "off", power_timeout="3", shell_timeout="5", login_timeout="2",
                power_wait=power_wait)
    succeeded(agent, "Success: Powered OFF")
    assert ops(sim_pool) == ["hard_shutdown"]
    assert_clean(sim_pool, TARGET, within=10)


def test_a_slow_shutdown_is_awaited_not_sent_again(sim_pool: SimHandle) -> None:
    """A hard shutdown that takes 3 s outlasts its call's wait (shell_timeout=1): the agent
    reads the state until Halted and never sends the shutdown again (XAPI would refuse it:
    OTHER_OPERATION_IN_PROGRESS), as long as the master that took it is still there."""
    sim_pool.sim.set_power_duration(TARGET, "hard_shutdown", 3)
    agent = run(sim_pool, "off", power_timeout="15", login_timeout="2", shell_timeout="1",
                stonith_status_sleep="0.5")
    succeeded(agent, "Success: Powered OFF")
    assert sim_pool.requests().get("VM.hard_shutdown") == 1, sim_pool.requests()
    assert sim_pool.requests().get("VM.get_power_state", 0) >= 2, sim_pool.requests()
    assert logins(sim_pool) == 1
    assert_clean(sim_pool, TARGET)


def test_a_slow_start_with_retry_on_fails_as_a_timeout(sim_pool: SimHandle) -> None:
    """A start that takes 4 s with power_timeout=2 and retry_on=1: the first attempt runs out
    of time (the master is still there: nothing is in doubt), the second finds the start
    still in progress on a pool that refuses a busy VM at once (OTHER_OPERATION_IN_PROGRESS,
    refused before anything was done; XAPI itself would wait) and tries it again until its
    own power_timeout. The run fails naming both attempts and the operation in progress;
    the first start goes on, the only one that ran."""
    sim_pool.faults.refuse_busy_at_once = True
    sim_pool.set_power_state(TARGET, "Halted")
    sim_pool.sim.set_power_duration(TARGET, "start", 4)
    agent = run(sim_pool, "on", power_timeout="2", login_timeout="2", shell_timeout="1",
                stonith_status_sleep="0.5", retry_on="1")
    warnings = [line for line in agent.stderr_lines if line.startswith("WARNING: ")]
    assert len(warnings) == 1 and "attempt 1 of 2" in warnings[0], agent
    errors = [line for line in agent.stderr_lines if line.startswith("ERROR: ")]
    assert len(errors) == 1 and "in 2 attempt(s)" in errors[0], agent
    assert "went away" not in errors[0], agent
    assert "another operation is still in progress" in errors[0], agent
    assert sim_pool.requests().get("VM.start", 0) >= 3, sim_pool.requests()
    wait_for(lambda: sim_pool.power_state(TARGET) == "Running", 10, "the start to finish")
    assert ops(sim_pool) == ["start"]
    assert_clean(sim_pool, TARGET)


def test_shutdown_that_needs_longer_than_power_timeout(sim_pool: SimHandle) -> None:
    """A hard shutdown that really takes 25 s with power_timeout=20 fails at about 20 s; XAPI
    finishes it anyway, and the next run reports the VM already off."""
    sim_pool.sim.set_power_duration(TARGET, "hard_shutdown", 25)
    agent = run(sim_pool, "off", power_timeout="20")
    line = assert_one_error(agent, "power_timeout", "Running", "marked live",
                            "hard shutdown did not complete")
    assert "CANNOT_CONTACT_HOST" not in line, line
    assert "Success" not in agent.stdout
    assert 19 <= agent.seconds <= 20 + MARGIN, agent
    wait_for(lambda: sim_pool.power_state(TARGET) == "Halted", 15, "XAPI to finish")
    again = run(sim_pool, "off")
    succeeded(again, "Success: Already OFF")
    assert ops(sim_pool) == ["hard_shutdown"]
    assert_clean(sim_pool, TARGET, within=10)


def test_start_delay_does_not_delay_the_verdict(sim_pool: SimHandle) -> None:
    sim_pool.set_power_state(TARGET, "Halted")
    sim_pool.sim.set_vm(TARGET, start_delay="25")
    agent = run(sim_pool, "on")
    succeeded(agent, "Success: Powered ON")
    assert agent.seconds < 10, agent
    assert_clean(sim_pool, TARGET, within=30)


@pytest.fixture(params=["xapi-waits", "refused-at-once"])
def database_server(request: pytest.FixtureRequest) -> Iterator[SimHandle]:
    """The real record of "Database server" (start_delay=15, Halted) from XenCenter's test
    database small_vms.xml (tests/realrecords.py), in a one-host pool. Real XAPI (the
    simulator's default) waits up to 2 h for a busy VM before it refuses (helpers.ml retry):
    the agent's call then outlasts shell_timeout and the agent reads the state; a pool that
    refuses a busy VM at once (faults.refuse_busy_at_once) makes the agent try it again."""
    with pool_of(dump_named("small_vms.xml")) as handle:
        assert handle.vm(DATABASE_SERVER)["start_delay"] == "15"
        if request.param == "refused-at-once":
            handle.faults.refuse_busy_at_once = True
        yield handle


DATABASE_SERVER = "Database server"


def test_real_database_server_rebooted_while_its_start_delay_runs(
        database_server: SimHandle) -> None:
    """XAPI's VM.start sleeps start_delay (15 s) after the VM runs, holding `start` in
    current_operations (xapi_vm.ml start, xapi_vm_helpers.ml with_vm_operation); the `on`
    sees Running and returns. A reboot then: its hard shutdown runs beside the start
    (xapi_vm_lifecycle.ml is_allowed_concurrently); its start waits inside XAPI until the
    first one ends (xapi-waits), or is refused (OTHER_OPERATION_IN_PROGRESS) and made again
    by the agent once the VM is free. Either way one more start, and the VM runs."""
    handle = database_server
    uuid = handle.uuid(DATABASE_SERVER)
    agent = invoke(handle, "stdin", "on", plug=DATABASE_SERVER, power_timeout="30")
    succeeded(agent, "Success: Powered ON")
    assert handle.vm(uuid)["current_operations"] != {}, "the start's delay is over already"
    agent = invoke(handle, "stdin", "reboot", plug=DATABASE_SERVER, power_timeout="30",
                   stonith_status_sleep="0.5")
    succeeded(agent, "Success: Rebooted")
    assert "WARNING" not in agent.stderr, agent
    assert handle.power_state(uuid) == "Running"
    assert [op for _, op in handle.power_log()] == ["start", "hard_shutdown", "start"]
    assert {u for u, _ in handle.power_log()} == {uuid}
    assert handle.sessions_open() == 0


def test_real_database_server_powered_on_while_a_start_delay_runs(
        database_server: SimHandle) -> None:
    """The same record with start_delay=3 (for time): powered on, then off (beside the
    start still sleeping), then on again: that start waits until the first one ends."""
    handle = database_server
    uuid = handle.uuid(DATABASE_SERVER)
    handle.sim.set_vm(uuid, start_delay="3")
    succeeded(invoke(handle, "stdin", "on", plug=uuid, shell_timeout="1"),
              "Success: Powered ON")
    succeeded(invoke(handle, "stdin", "off", plug=uuid), "Success: Powered OFF")
    assert handle.vm(uuid)["current_operations"] != {}, "the start's delay is over already"
    agent = invoke(handle, "stdin", "on", plug=uuid, stonith_status_sleep="0.2",
                   shell_timeout="1", retry_on="0")
    succeeded(agent, "Success: Powered ON")
    assert agent.seconds >= 0.5, agent
    assert handle.power_state(uuid) == "Running"
    assert [op for _, op in handle.power_log()] == ["start", "hard_shutdown", "start"]
    assert handle.sessions_open() == 0


@pytest.mark.parametrize("action,stdout,budget", [
    ("status", "Status: ON", 3), ("list", None, 3), ("monitor", "", 3),
    ("off", "Success: Powered OFF", 5), ("on", "Success: Already ON", 5),
    ("reboot", "Success: Rebooted", 7)])
def test_budgets_hold_on_a_pool(sim_pool_tls: SimHandle, action: str, stdout: Optional[str],
                                budget: int) -> None:
    """Thumbprint headers, pins and bounded power calls cost no request when all is well."""
    pins = ",".join(sim_pool_tls.fingerprint(host) for host in HOSTS)
    agent = run(sim_pool_tls, action, ssl_fingerprint=pins)
    assert agent.returncode == 0, agent
    if stdout is not None:
        assert agent.stdout.splitlines() == ([stdout] if stdout else []), agent
    assert sim_pool_tls.total_requests() <= budget, sim_pool_tls.requests()
    assert_clean(sim_pool_tls, TARGET)


# ---------------------------------------------------------------------------------------------
# Dead and unreachable hosts
# ---------------------------------------------------------------------------------------------

DEAD_VM = "vm-on-dead-host"


@pytest.mark.parametrize("mode", ["refuse", "hang"])
def test_unreachable_host_still_marked_live(sim_pool: SimHandle, mode: str) -> None:
    """host3 stops answering; XAPI marks it not live only ~10 minutes later: the agent fails
    within power_timeout, naming the host and what to do, and resets nothing."""
    sim_pool.sim.host_down("host3", mode)
    agent = run(sim_pool, "off", plug=DEAD_VM, allow_power_state_reset="1",
                allow_power_state_reset_without_ha="1", **SHORT)
    # A refused forward is XAPI's CANNOT_CONTACT_HOST; a hanging one never answers.
    said = "CANNOT_CONTACT_HOST" if mode == "refuse" else "hard shutdown did not complete"
    assert_one_error(agent, "host3", "127.0.0.3", "marked live", "host-declare-dead", said)
    assert agent.seconds <= POWER_TIMEOUT + MARGIN, agent
    assert sim_pool.power_state(DEAD_VM) == "Running"
    assert ops(sim_pool, DEAD_VM) == []
    sim_pool.sim.host_up("host3")  # a forwarded call hanging there ends: its task goes
    assert_clean(sim_pool)


def test_stuck_line_without_host_facts(sim_pool: SimHandle) -> None:
    """The host's record cannot be read (here XAPI fails host.get_record): the stuck line
    still says what happened and what to do, only without the host's name and address."""
    sim_pool.sim.host_down("host3", "refuse")
    sim_pool.faults.fail_next["host.get_record"] = [["INTERNAL_ERROR", "injected"]] * 3
    agent = run(sim_pool, "off", plug=DEAD_VM, **SHORT)
    line = assert_one_error(agent, "still Running", "power_timeout", "host-declare-dead")
    assert "INTERNAL_ERROR" not in line, line
    assert sim_pool.power_state(DEAD_VM) == "Running"
    sim_pool.sim.host_up("host3")
    assert_clean(sim_pool)


def test_dead_host_without_ha_is_refused_unless_accepted(sim: SimHandle) -> None:
    """Standard pool: host3 is down and marked not live, HA is off (a network split looks
    the same): allow_power_state_reset alone does not reset."""
    agent = invoke(sim, "stdin", "off", plug=DEAD_VM, allow_power_state_reset="1", **SHORT)
    assert_one_error(agent, "HA", "allow_power_state_reset_without_ha")
    assert sim.power_state(DEAD_VM) == "Running"
    assert ops(sim, DEAD_VM) == []
    assert_clean(sim)
    accepted = invoke(sim, "stdin", "off", plug=DEAD_VM, allow_power_state_reset="1",
                      allow_power_state_reset_without_ha="1", **SHORT)
    succeeded(accepted, "Success: Powered OFF")
    assert ops(sim, DEAD_VM) == ["power_state_reset"]
    assert_clean(sim, DEAD_VM)


def test_without_ha_alone_is_a_usage_error(sim: SimHandle) -> None:
    agent = invoke(sim, "stdin", "off", plug=DEAD_VM, allow_power_state_reset_without_ha="1")
    assert_one_error(agent, "allow_power_state_reset")
    assert sim.total_requests() == 0


@pytest.fixture
def ha_pool(sim: SimHandle) -> Iterator[SimHandle]:
    """The standard pool with HA enabled, host3 dead, before HA itself restarted its VMs."""
    sim.sim.settings.ha_resets_vms = False
    sim.sim.set_ha(True)
    yield sim


def test_dead_host_with_ha_is_reset_and_verified(ha_pool: SimHandle) -> None:
    agent = invoke(ha_pool, "stdin", "off", plug=DEAD_VM, allow_power_state_reset="1",
                   **SHORT)
    succeeded(agent, "Success: Powered OFF")
    assert ha_pool.power_state(DEAD_VM) == "Halted"
    assert ops(ha_pool, DEAD_VM) == ["power_state_reset"]
    assert ha_pool.requests().get("VM.get_power_state", 0) >= 1  # verified by a read
    assert_clean(ha_pool, DEAD_VM)


def test_dead_host_with_ha_still_needs_the_opt_in(ha_pool: SimHandle) -> None:
    agent = invoke(ha_pool, "stdin", "off", plug=DEAD_VM, **SHORT)
    assert_one_error(agent, "not live", "host3", "allow_power_state_reset")
    assert ops(ha_pool, DEAD_VM) == []
    assert_clean(ha_pool)


@pytest.mark.parametrize("unreadable", ["host.get_record", "host_metrics.get_live"])
def test_reset_with_liveness_unknown_is_refused(ha_pool: SimHandle, unreadable: str) -> None:
    """XAPI answers HOST_OFFLINE but the agent's own read of the host fails (liveness
    unknown): with both reset options set, nothing is reset, and the line says why."""
    ha_pool.faults.fail_next[unreadable] = [["INTERNAL_ERROR", "injected"]] * 3
    agent = invoke(ha_pool, "stdin", "off", plug=DEAD_VM, allow_power_state_reset="1",
                   allow_power_state_reset_without_ha="1", **SHORT)
    assert_one_error(agent, "HOST_OFFLINE", "do not read it not live",
                     "not resetting the power state")
    assert ha_pool.power_state(DEAD_VM) == "Running"
    assert ops(ha_pool, DEAD_VM) == []
    assert ha_pool.requests().get("VM.power_state_reset", 0) == 0
    assert_clean(ha_pool)


HA_FIELD = re.compile(rb"<member>\s*<name>ha_enabled</name>\s*<value>\s*<boolean>0</boolean>"
                      rb"\s*</value>\s*</member>")


@pytest.mark.parametrize("sent", [
    b"", b"<member><name>ha_enabled</name><value>true</value></member>"],
    ids=["missing", "string"])
def test_reset_with_ha_unknown_needs_the_without_ha_opt_in(sim: SimHandle, sent: bytes) -> None:
    """XAPI always sends pool.ha_enabled as a boolean; a pool (here a proxy in front of the
    simulator, HA off) whose record leaves it out or sends the string "true" says nothing
    about HA: only allow_power_state_reset_without_ha may then reset the VM of a dead host."""

    def rewrite(conn: Conn, call: Call) -> bool:
        body = forward_to(sim, call)
        if call.method == "pool.get_all_records":
            body, found = HA_FIELD.subn(sent, body)
            assert found == 1, body
        return conn.send(http_response(body))

    with HostileServer(rewrite, upstream=sim.url) as proxy:
        agent = invoke(sim, "stdin", "off", plug=DEAD_VM, allow_power_state_reset="1",
                       session_url=proxy.url, **SHORT)
        assert_one_error(agent, "not live", "allow_power_state_reset_without_ha")
        assert "pool.get_all_records" in proxy.calls, proxy.calls
    assert sim.power_state(DEAD_VM) == "Running"
    assert ops(sim, DEAD_VM) == []
    assert_clean(sim)


def test_reset_refused_by_rbac_names_the_role(ha_pool: SimHandle) -> None:
    """A vm-operator may shut VMs down but not reset them: XAPI names pool-operator."""
    ha_pool.sim.add_user("fencer", "fencepw", "vm-operator")
    agent = invoke(ha_pool, "stdin", "off", plug=DEAD_VM, allow_power_state_reset="1",
                   username="fencer", password="fencepw", **SHORT)
    assert_one_error(agent, "RBAC_PERMISSION_DENIED", "pool-operator")
    assert ops(ha_pool, DEAD_VM) == []
    assert_clean(ha_pool)


@pytest.mark.parametrize("error,mention", [
    (["HOST_IS_LIVE", "OpaqueRef:host3"], "HOST_IS_LIVE"),
    (["DOMAIN_EXISTS", "OpaqueRef:vm"], "DOMAIN_EXISTS"),
    (["CANNOT_RESET_CONTROL_DOMAIN", "OpaqueRef:vm"], "CANNOT_RESET_CONTROL_DOMAIN"),
], ids=lambda value: value[0] if isinstance(value, list) else None)
def test_reset_errors_are_clear_lines(ha_pool: SimHandle, error: list[str],
                                      mention: str) -> None:
    """Refusals XAPI can still give after the agent's own checks (the host came back, the
    VM moved to the master): one line naming the VM and XAPI's reason."""
    ha_pool.faults.fail_next["VM.power_state_reset"] = [error]
    agent = invoke(ha_pool, "stdin", "off", plug=DEAD_VM, allow_power_state_reset="1",
                   **SHORT)
    assert_one_error(agent, mention, DEAD_VM, "cannot reset the power state")
    assert ops(ha_pool, DEAD_VM) == []
    assert_clean(ha_pool)


def test_blocked_operation_is_a_clear_line(sim: SimHandle) -> None:
    """blocked_operations is checked first (xapi_vm_lifecycle.ml): the line says how to lift
    the block."""
    sim.sim.set_vm(TARGET, blocked_operations={"hard_shutdown": "do not touch"})
    agent = invoke(sim, "stdin", "off", plug=TARGET, **SHORT)
    assert_one_error(agent, "OPERATION_BLOCKED", "blocked-operations", "hard_shutdown",
                     sim.uuid(TARGET), "(do not touch)")
    assert sim.power_state(TARGET) == "Running"
    assert_clean(sim)


def test_blocked_operation_without_a_reason_is_a_clear_line(sim: SimHandle) -> None:
    """XAPI always sends the VM and the reason; a pool that sends only the VM still gets one
    line (no reason shown), never an internal error."""
    sim.faults.fail_next["VM.hard_shutdown"] = [["OPERATION_BLOCKED", "OpaqueRef:x"]]
    agent = invoke(sim, "stdin", "off", plug=TARGET, **SHORT)
    line = assert_one_error(agent, "OPERATION_BLOCKED", "blocked-operations")
    assert "()" not in line and "internal error" not in line, line
    assert sim.power_state(TARGET) == "Running"
    assert_clean(sim)


def test_roles_a_vm_operator_fences_and_read_only_cannot(sim: SimHandle) -> None:
    """README, Roles: vm-operator is the least role that fences; read-only is refused with
    a line naming the roles that would do."""
    sim.sim.add_user("fencer", "fencepw", "vm-operator")
    agent = invoke(sim, "stdin", "reboot", plug=TARGET, username="fencer", password="fencepw")
    succeeded(agent, "Success: Rebooted")
    refused = invoke(sim, "stdin", "off", plug=TARGET, username="ro", password="ropass",
                     **SHORT)
    assert_one_error(refused, "RBAC_PERMISSION_DENIED", "vm-operator")
    assert_clean(sim, TARGET)


# ---------------------------------------------------------------------------------------------
# Records XAPI sends with unescaped member names (ocaml-rpc xmlrpc.ml)
# ---------------------------------------------------------------------------------------------

AMPERSAND = {"a&b": "x", "<k>": "v"}


def with_ampersand_key(handle: SimHandle) -> None:
    handle.sim.set_vm(TARGET, other_config=AMPERSAND)


@pytest.mark.parametrize("action,expect", [
    ("status", lambda h, out: out == ["Status: ON"]),
    ("off", lambda h, out: out == ["Success: Powered OFF"] and h.power_state(TARGET) == "Halted"),
    ("list", lambda h, out: any(line.endswith("," + TARGET) for line in out)),
])
def test_unescaped_member_names(sim: SimHandle, action: str,
                                expect: Callable[[SimHandle, list[str]], bool]) -> None:
    with_ampersand_key(sim)
    agent = invoke(sim, "stdin", action, plug=TARGET)
    assert agent.returncode == 0, agent
    assert expect(sim, agent.stdout.splitlines()), agent
    assert_clean(sim, TARGET)



def test_a_winning_channel_named_by_dns_reconnects(sim: SimHandle) -> None:
    """The race's channel resolves its host name in a lookup that abort() can cut short;
    once it has won, a reconnection (a master closing the idle connection) looks the name
    up again and connects, rather than taking the first lookup's end for an abort."""
    fx = agent_module
    url = sim.url.replace("127.0.0.1", "localhost", 1)
    channel = fx.XapiChannel(fx.Endpoint.parse(url), fx.TlsPolicy())
    try:
        channel.connect(fx.Deadline(5.0, "login"), "session.login_with_password")
        session = channel.request("session.login_with_password", ("root", "secret"),
                                  fx.Deadline(5.0, "login"))
        channel.close()  # as when the host closed the idle connection
        assert channel.request("session.logout", (session,),
                               fx.Deadline(5.0, "logout")) == ""
    finally:
        channel.close()
    assert sim.sessions_open() == 0
