"""Failures, each ending the way Pacemaker needs: exit 1, exactly one line on stderr (no
traceback), never "Success", no session left open, and within the agent's own timeouts.
Also the failures the agent must ride out: a pool member that is not the master, a dead first
URL, a forgotten session, a power on that fails once."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
import xmlrpc.client
from typing import Any, Callable

import pytest

from tests.hostile import (
    PASSWORD as HOSTILE_PASSWORD,
)
from tests.hostile import (
    USERNAME as HOSTILE_USERNAME,
)
from tests.hostile import (
    Call,
    Conn,
    CraftedPool,
    HostileServer,
    http_response,
    success,
    vm_record,
)
from tests.support import (
    LOGIN_TIMEOUT,
    MARGIN,
    POWER_TIMEOUT,
    STYLES,
    assert_failed,
    assert_one_error,
    assert_succeeded,
    invoke,
    run_agent,
    start_agent,
    wait_for,
)
from tests.xapisim import Pki, SimHandle

LOGIN_BOUND = LOGIN_TIMEOUT + MARGIN
POWER_BOUND = POWER_TIMEOUT + MARGIN
SHORT = {"login_timeout": str(LOGIN_TIMEOUT), "power_timeout": str(POWER_TIMEOUT),
         "shell_timeout": str(LOGIN_TIMEOUT)}
INJECTED = ["INTERNAL_ERROR", "injected by the test"]


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fail_power_on_once(handle: SimHandle) -> None:
    """The next VM.start fails, whichever form (sync or Async) the agent uses."""
    for method in ("VM.start", "Async.VM.start"):
        handle.faults.fail_next[method] = [list(INJECTED)]


# ---------------------------------------------------------------------------------------------
# Cannot log in
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_wrong_password(sim: SimHandle, style: str) -> None:
    run = invoke(sim, style, "off", plug="vm-running", password="not-the-password", **SHORT)
    line = assert_failed(sim, run, "SESSION_AUTHENTICATION_FAILED (Authentication failure)",
                         within=LOGIN_BOUND)  # XAPI's reason, its second parameter
    assert f":{sim.server.port}" in line, line  # which pool host refused
    assert "'root' refused" in line or "as 'root'" in line, line
    assert sim.power_state("vm-running") == "Running"


def test_a_refused_long_username_is_shown_in_80_characters(sim: SimHandle) -> None:
    """The refused user is named, bounded: the first 80 characters of a long username."""
    run = invoke(sim, "stdin", "status", plug="vm-running", username="u" * 100, **SHORT)
    line = assert_failed(sim, run, "login as '" + "u" * 80 + "…' refused", within=LOGIN_BOUND)
    assert "u" * 81 not in line, line


def test_refusal_without_a_reason_is_one_line(sim: SimHandle) -> None:
    """XAPI sends the user and a reason; a pool that sends only the user still gets a clean
    line (no empty parentheses, no internal error)."""
    sim.faults.fail_next["session.login_with_password"] = [
        ["SESSION_AUTHENTICATION_FAILED", "root"]]
    run = invoke(sim, "stdin", "status", plug="vm-running", **SHORT)
    line = assert_failed(sim, run, "SESSION_AUTHENTICATION_FAILED", within=LOGIN_BOUND)
    assert line.endswith("SESSION_AUTHENTICATION_FAILED"), line


def test_login_failure_that_names_no_master_is_not_followed(sim: SimHandle) -> None:
    """Only HOST_IS_SLAVE names a host to go to: an INTERNAL_ERROR (a host restarting) with a
    parameter is this host's failure, reported as the one problem, not an address."""
    sim.faults.fail_next["session.login_with_password"] = [["INTERNAL_ERROR", "127.0.0.9"]]
    run = invoke(sim, "stdin", "status", plug="vm-running", **SHORT)
    line = assert_failed(sim, run, "INTERNAL_ERROR", within=LOGIN_BOUND)
    assert line.startswith(f"ERROR: cannot log in: {sim.url}"), line  # one host, one problem
    assert "127.0.0.9:" not in line, line
    assert sim.requests().get("session.login_with_password") == 1, sim.requests()


@pytest.mark.parametrize("style", STYLES)
def test_closed_port(sim: SimHandle, style: str) -> None:
    url = f"http://127.0.0.1:{closed_port()}/"
    run = invoke(sim, style, "off", plug="vm-running", session_url=url, **SHORT)
    assert_failed(sim, run, within=LOGIN_BOUND)
    assert sim.total_requests() == 0


@pytest.mark.parametrize("fault", ["hang", "reset", "bad_xml"])
def test_server_faults(sim: SimHandle, fault: str) -> None:
    """A pool that never answers, drops the connection, or answers garbage."""
    setattr(sim.faults, fault, True)
    run = invoke(sim, "stdin", "off", plug="vm-running", **SHORT)
    assert_failed(sim, run, within=LOGIN_BOUND)
    setattr(sim.faults, fault, False)
    assert sim.power_state("vm-running") == "Running"


# ---------------------------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_untrusted_certificate_fails(sim_https: SimHandle, style: str) -> None:
    """Verification is on by default, against the system CAs, which never signed the pool's:
    the failure names the certificate (not any failure will do), and no request got through."""
    run = invoke(sim_https, style, "status", plug="vm-running", **SHORT)
    line = assert_failed(sim_https, run, within=LOGIN_BOUND)
    assert "certificate" in line.lower(), run
    assert sim_https.requests() == {}


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("how", ["ca_file", "fingerprint", "fingerprint-bare-lowercase",
                                 "insecure"])
def test_tls_trust_options(sim_https: SimHandle, pki: Pki, style: str, how: str) -> None:
    trust = {
        "ca_file": {"ssl_ca_file": str(pki.ca_cert)},
        "fingerprint": {"ssl_fingerprint": pki.fingerprint},
        "fingerprint-bare-lowercase": {"ssl_fingerprint": pki.fingerprint.replace(":", "")
                                       .lower()},
        "insecure": {"ssl_insecure": "1"},
    }[how]
    run = invoke(sim_https, style, "status", plug="vm-running", **trust)
    assert_succeeded(sim_https, run, "Status: ON", budget=3)


@pytest.mark.parametrize("style", STYLES)
def test_wrong_fingerprint_fails(sim_https: SimHandle, style: str) -> None:
    wrong = ":".join(["AB"] * 32)
    run = invoke(sim_https, style, "status", plug="vm-running", ssl_fingerprint=wrong, **SHORT)
    assert_failed(sim_https, run, within=LOGIN_BOUND)
    assert sim_https.requests() == {}


# ---------------------------------------------------------------------------------------------
# Pool hosts: HOST_IS_SLAVE, several URLs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("action,stdout,state", [
    ("status", "Status: ON", "Running"), ("off", "Success: Powered OFF", "Halted")])
def test_host_is_slave_is_followed_to_the_master(sim: SimHandle, action: str, stdout: str,
                                                 state: str) -> None:
    slave_url = sim.add_host_server("127.0.0.2")
    run = invoke(sim, "stdin", action, plug="vm-running", session_url=slave_url)
    # One more request than the budget: the refused login on the slave.
    assert_succeeded(sim, run, stdout, budget=6)
    assert sim.power_state("vm-running") == state
    assert sim.requests().get("session.logout") == 1


@pytest.mark.parametrize("separator", [",", " "], ids=["comma", "space"])
def test_dead_first_url_is_skipped(sim: SimHandle, separator: str) -> None:
    urls = separator.join([f"http://127.0.0.1:{closed_port()}/", sim.url])
    run = invoke(sim, "stdin", "off", plug="vm-running", session_url=urls, **SHORT)
    assert_succeeded(sim, run, "Success: Powered OFF", budget=5)
    assert sim.power_state("vm-running") == "Halted"


def test_every_url_that_failed_is_named(sim: SimHandle) -> None:
    """When no pool host lets the agent in, the one error line says what happened at each."""
    ports: set[int] = set()
    while len(ports) < 2:
        ports.add(closed_port())
    urls = [f"http://127.0.0.1:{port}/" for port in sorted(ports)]
    run = invoke(sim, "stdin", "status", plug="vm-running", session_url=",".join(urls), **SHORT)
    line = assert_failed(sim, run, within=LOGIN_BOUND)
    for port in ports:
        assert f":{port}" in line, (port, line)


@pytest.mark.parametrize("scheme,said", [("http", "Connection refused while connecting"),
                                          ("https", "TLS error with https://")])
def test_connection_failures_are_said_plainly(sim: SimHandle, scheme: str, said: str) -> None:
    """A refused connection, and TLS spoken to a server that does not speak it: the line says
    so in words (the OS's message, OpenSSL's reason), without errno numbers or OpenSSL's
    source positions."""
    url = sim.url if scheme == "https" else f"http://127.0.0.1:{closed_port()}/"
    run = invoke(sim, "stdin", "status", plug="vm-running", ssl_insecure="1",
                 session_url=url.replace("http://", f"{scheme}://"), **SHORT)
    line = assert_failed(sim, run, said, within=LOGIN_BOUND)
    assert "[Errno" not in line and "_ssl.c" not in line and "[SSL" not in line, line
    assert sim.requests() == {}


def test_a_refusal_with_under_a_second_left_is_not_called_a_timeout(sim: SimHandle) -> None:
    """With login_timeout 1, a host that refuses the connection fails the login at once,
    with most of that second left: the line names the refusal, and no timeout."""
    url = f"http://127.0.0.1:{closed_port()}/"
    run = invoke(sim, "stdin", "status", plug="vm-running", session_url=url,
                 **{**SHORT, "login_timeout": "1"})
    line = assert_failed(sim, run, "Connection refused", within=LOGIN_BOUND)
    assert line.startswith(f"ERROR: cannot log in: {url}"), line
    assert "did not finish" not in line, line


# A pool host that answers like XAPI except where a test says otherwise (tests/hostile.py).
HOSTILE_VM = vm_record("11111111-1111-4111-8111-111111111111", "vm1")


def hostile_params(server: HostileServer, action: str = "status") -> dict[str, object]:
    return {"action": action, "plug": "vm1", "session_url": server.url,
            "username": HOSTILE_USERNAME, "password": HOSTILE_PASSWORD, **SHORT}


@pytest.mark.parametrize("session", ["", True, ["OpaqueRef:a"]])
def test_login_answer_without_a_session_is_one_line(session: object) -> None:
    """A login that succeeds without a session ref (an empty string, a boolean, a list) is
    not a login: one line, and nothing else is called."""
    def login(conn: Conn, call: Call) -> bool:
        return conn.send(http_response(success(session)))

    with HostileServer(CraftedPool({"OpaqueRef:vm1": dict(HOSTILE_VM)}),
                       login_behaviour=login) as server:
        run = run_agent(stdin=hostile_params(server), timeout=60)
        assert_one_error(run, "returned no session")
        assert server.calls == ["session.login_with_password"], server.calls


@pytest.mark.parametrize("status", ["503 Service Unavailable", "302 Found"])
def test_a_login_answer_that_is_not_http_200_is_refused(status: str) -> None:
    """A host (a proxy in front of the pool, say) answers the login with a status other than
    200 and a body that is a valid session: the answer is not taken, and the one line names
    the HTTP status."""
    def login(conn: Conn, call: Call) -> bool:
        return conn.send(http_response(success("OpaqueRef:from-a-proxy"), status))

    with HostileServer(CraftedPool({"OpaqueRef:vm1": dict(HOSTILE_VM)}),
                       login_behaviour=login) as server:
        run = run_agent(stdin=hostile_params(server), timeout=60)
        assert_one_error(run, f"HTTP {status}")
        assert server.calls == ["session.login_with_password"], server.calls


def test_list_shows_real_vms_only_whatever_the_pool_filters() -> None:
    """The pool's filter is not trusted: a pool that also answers a snapshot not marked as a
    template, a template and a control domain gets only its real VM listed."""
    records = {
        "OpaqueRef:vm1": dict(HOSTILE_VM),
        "OpaqueRef:snap": {**vm_record("22222222-2222-4222-8222-222222222222", "vm1-snap",
                                       "Halted"), "is_a_snapshot": True},
        "OpaqueRef:tmpl": {**vm_record("33333333-3333-4333-8333-333333333333", "tmpl",
                                       "Halted"), "is_a_template": True},
        "OpaqueRef:dom0": {**vm_record("44444444-4444-4444-8444-444444444444", "dom0"),
                           "is_control_domain": True},
    }
    with HostileServer(CraftedPool(records)) as server:
        run = run_agent(stdin={**hostile_params(server, "list-status"), "plug": ""},
                        timeout=60)
    assert run.returncode == 0, run
    assert run.stdout == f"{HOSTILE_VM['uuid']},vm1,ON\n", run


def _raw(data: bytes) -> Callable[[Conn, Call], bool]:
    def behave(conn: Conn, call: Call) -> bool:
        conn.send(data)
        return False
    return behave


NINE_MIB = 9 << 20
OVER_A_BOUND = {
    "headers": (b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 101 + b"\r\n",
                "more than 100 headers"),
    "header-bytes": (b"HTTP/1.1 200 OK\r\n" + b"X-A: " + b"b" * 8000 + b"\r\n"
                     + (b"X-B: " + b"b" * 8000 + b"\r\n") * 8 + b"\r\n",
                     "64 KiB of them"),
    "line": (b"HTTP/1.1 200 " + b"O" * 9000 + b"\r\n\r\n", "a line over 8192 bytes"),
    "content-length": (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % NINE_MIB,
                       f"Content-Length {NINE_MIB} is over the 8 MiB"),
    "chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % NINE_MIB,
                "an answer over 8 MiB"),
    "until-close": (b"HTTP/1.0 200 OK\r\n\r\n" + b" " * NINE_MIB, "an answer over 8 MiB"),
    "interim": (b"HTTP/1.1 100 Continue\r\n\r\n" * 9, "more than 8 interim (1xx) responses"),
    "chunked-by-one": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n"
                       % ((8 << 20) + 1), "an answer over 8 MiB"),
    "line-by-one": (b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * (8192 - 5) + b"\r\n\r\n",
                    "a line over 8192 bytes"),
    "chunk-size-line-by-one": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x="
                               + b"e" * (1024 - 4) + b"\r\n", "a line over 1024 bytes"),
    "chunk-longer-than-its-size": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                   b"5\r\n<?xmlX\r\n0\r\n\r\n",
                                   "a chunk longer than its size"),
    "header-without-colon": (b"HTTP/1.1 200 OK\r\nContent-Length 5\r\n\r\n",
                             "malformed header line 'Content-Length 5'"),
    "header-name-with-space": (b"HTTP/1.1 200 OK\r\nContent Length: 5\r\n\r\n",
                               "malformed header line 'Content Length: 5'"),
}


def _headers_of(total: int) -> bytes:
    """Header lines holding `total` bytes in all (line ends not counted, as the agent counts)."""
    lines = [b"X-%d: " % n + b"h" * 7993 for n in range(8)]  # 8000 bytes each
    last = total - sum(len(line) for line in lines)
    return b"".join(line + b"\r\n" for line in [*lines, b"X-L: " + b"h" * (last - 5)])


OVER_A_BOUND["header-bytes-by-one"] = (b"HTTP/1.1 200 OK\r\n" + _headers_of((64 << 10) + 1)
                                       + b"\r\n", "64 KiB of them")


@pytest.mark.parametrize("case", sorted(OVER_A_BOUND))
def test_an_answer_over_a_bound_is_refused_for_that_bound(case: str) -> None:
    """The login's answer breaks one of HACKING's bounds by a little (101 headers, 64 KiB of
    headers, a line over 8 KiB, 9 MiB of body, 9 interim answers): refused for that reason,
    in one line, before anything else is called."""
    data, reason = OVER_A_BOUND[case]
    with HostileServer(CraftedPool({"OpaqueRef:vm1": dict(HOSTILE_VM)}),
                       login_behaviour=_raw(data)) as server:
        run = run_agent(stdin=hostile_params(server), timeout=60)
        assert_one_error(run, reason)
        assert server.calls == ["session.login_with_password"], server.calls


def test_an_unknown_transfer_encoding_is_shown_in_40_characters() -> None:
    """What the pool sent is shown bounded: a Transfer-Encoding the agent cannot read is
    named by its first 40 characters."""
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + b"g" * 60 + b"\r\n\r\n"
    with HostileServer(CraftedPool({"OpaqueRef:vm1": dict(HOSTILE_VM)}),
                       login_behaviour=_raw(data)) as server:
        run = run_agent(stdin=hostile_params(server), timeout=60)
        line = assert_one_error(run, "Transfer-Encoding '" + "g" * 40 + "…'")
        assert "g" * 41 not in line, line


@pytest.mark.parametrize(("data", "shown", "too_much"), [
    (b"HTTP/1.1 2000 " + b"s" * 100 + b"\r\n\r\n",
     "not an HTTP status line: 'HTTP/1.1 2000 " + "s" * 66 + "…'", "s" * 67),
    (b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 60 + b"\r\n\r\n",
     "Content-Length '" + "9" * 40 + "…'", "9" * 41),
], ids=["status-line", "content-length"])
def test_a_malformed_status_line_or_length_is_shown_bounded(data: bytes, shown: str,
                                                            too_much: str) -> None:
    """A status line the agent cannot read is named by its first 80 characters, a
    Content-Length it cannot read by its first 40: enough to recognise, never the whole."""
    with HostileServer(CraftedPool({"OpaqueRef:vm1": dict(HOSTILE_VM)}),
                       login_behaviour=_raw(data)) as server:
        run = run_agent(stdin=hostile_params(server), timeout=60)
        line = assert_one_error(run, shown)
        assert too_much not in line, line


def test_a_199_answer_is_interim() -> None:
    """Every 1xx status is interim (RFC 9110, 15.2), 199 included: the real answer after it
    is read."""
    def login(conn: Conn, call: Call) -> bool:
        return conn.send(b"HTTP/1.1 199 Unassigned\r\n\r\n" + http_response(success("OpaqueRef:s")))

    with HostileServer(CraftedPool({"OpaqueRef:vm1": dict(HOSTILE_VM)}),
                       login_behaviour=login) as server:
        run = run_agent(stdin=hostile_params(server), timeout=60)
    assert run.returncode == 0 and run.stdout == "Status: ON\n", run


@pytest.mark.parametrize("framing", ["content-length", "until-close"])
def test_an_answer_of_exactly_8_mib_is_read(framing: str) -> None:
    """The bound is 8 MiB: a login answer of exactly that size is read (padded with the
    blanks XML allows after the document), whether its length is given or it ends at the
    connection's close."""
    body = success("OpaqueRef:s")
    body += b" " * ((8 << 20) - len(body))

    def login(conn: Conn, call: Call) -> bool:
        if framing == "content-length":
            return conn.send(http_response(body))
        conn.send(b"HTTP/1.0 200 OK\r\n\r\n" + body)
        return False

    with HostileServer(CraftedPool({"OpaqueRef:vm1": dict(HOSTILE_VM)}),
                       login_behaviour=login) as server:
        run = run_agent(stdin=hostile_params(server), timeout=60)
    assert run.returncode == 0 and run.stdout == "Status: ON\n", run


def test_an_answer_with_100_headers_is_read() -> None:
    """The bound is 100 header lines: an answer with exactly 100 is read."""
    def login(conn: Conn, call: Call) -> bool:
        answer = http_response(success("OpaqueRef:s"), headers=[f"X-{n}: x" for n in range(98)])
        assert answer.split(b"\r\n\r\n", 1)[0].count(b"\r\n") == 100
        return conn.send(answer)

    with HostileServer(CraftedPool({"OpaqueRef:vm1": dict(HOSTILE_VM)}),
                       login_behaviour=login) as server:
        run = run_agent(stdin=hostile_params(server), timeout=60)
    assert run.returncode == 0 and run.stdout == "Status: ON\n", run


def test_an_answer_after_8_interim_answers_is_read() -> None:
    """The bound is 8 interim (1xx) answers before the real one: 8 are read past."""
    def login(conn: Conn, call: Call) -> bool:
        return conn.send(b"HTTP/1.1 100 Continue\r\n\r\n" * 8
                         + http_response(success("OpaqueRef:s")))

    with HostileServer(CraftedPool({"OpaqueRef:vm1": dict(HOSTILE_VM)}),
                       login_behaviour=login) as server:
        run = run_agent(stdin=hostile_params(server), timeout=60)
    assert run.returncode == 0 and run.stdout == "Status: ON\n", run


def test_a_connection_the_host_closed_while_idle_is_replaced_unused() -> None:
    """The host closes each connection after answering, without saying so: the agent sees
    the idle connection closed and sends the next call on a new one (no call fails, no
    second login)."""
    pool = CraftedPool({"OpaqueRef:vm1": dict(HOSTILE_VM)})

    def answer_and_close(conn: Conn, call: Call) -> bool:
        pool(conn, call)
        return False

    def login(conn: Conn, call: Call) -> bool:
        conn.send(http_response(success("OpaqueRef:s")))
        return False

    with HostileServer(answer_and_close, login_behaviour=login) as server:
        run = run_agent(stdin=hostile_params(server), timeout=60)
    assert run.returncode == 0 and run.stdout == "Status: ON\n", run
    assert server.calls == ["session.login_with_password", "VM.get_all_records_where",
                            "session.logout"], server.calls


# A header line whose line end is at the line cap (8 KiB: MAX_HEADER_LINE): its "\r" is the
# 8192nd byte, its "\n" the 8193rd.
LINE_AT_THE_CAP = b"X-A: " + b"a" * (8192 - 6) + b"\r"


@pytest.mark.parametrize("framing", ["chunked", "headers", "header-line",
                                     "header-line-ended-later", "chunk-size-line"])
def test_an_answer_at_a_bound_is_read(framing: str) -> None:
    """At the bound, not over it: a chunked answer of exactly 8 MiB, headers of exactly
    64 KiB, a header line of exactly 8 KiB (also when its line end comes in a later packet),
    a chunk-size line of exactly 1 KiB (its extension is allowed and ignored)."""
    body = success("OpaqueRef:s")

    def login(conn: Conn, call: Call) -> bool:
        if framing == "chunked":
            padded = body + b" " * ((8 << 20) - len(body))
            return conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             + b"%x\r\n" % len(padded) + padded + b"\r\n0\r\n\r\n")
        if framing.startswith("header-line"):
            conn.send(b"HTTP/1.1 200 OK\r\n" + LINE_AT_THE_CAP)
            if framing == "header-line-ended-later":
                time.sleep(0.3)
            return conn.send(b"\n" + http_response(body)[len(b"HTTP/1.1 200 OK\r\n"):])
        if framing == "chunk-size-line":
            size = b"%x;x=" % len(body)
            size += b"e" * (1024 - 1 - len(size)) + b"\r"  # its "\n" is the 1025th byte
            return conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             + size + b"\n" + body + b"\r\n0\r\n\r\n")
        head = b"Content-Length: %d" % len(body)
        return conn.send(b"HTTP/1.1 200 OK\r\n" + head + b"\r\n"
                         + _headers_of((64 << 10) - len(head)) + b"\r\n" + body)

    with HostileServer(CraftedPool({"OpaqueRef:vm1": dict(HOSTILE_VM)}),
                       login_behaviour=login) as server:
        run = run_agent(stdin=hostile_params(server), timeout=60)
    assert run.returncode == 0 and run.stdout == "Status: ON\n", run


def test_bytes_after_a_body_of_given_length_are_not_read_into_it() -> None:
    """A login answer's body arrives in two packets, its last byte alone in the second,
    followed by bytes that belong to no answer: the body is exactly Content-Length bytes
    (that last byte read, nothing past it), and the connection holding the stray bytes is
    not used again. The body ends in its closing tag's ">", no blank after it."""
    body = success("OpaqueRef:s").rstrip()

    def login(conn: Conn, call: Call) -> bool:
        answer = http_response(body)
        conn.send(answer[:-1])
        time.sleep(0.3)
        conn.send(answer[-1:] + b"HTTP/1.1 200 OK stray")
        return False

    with HostileServer(CraftedPool({"OpaqueRef:vm1": dict(HOSTILE_VM)}),
                       login_behaviour=login) as server:
        run = run_agent(stdin=hostile_params(server), timeout=60)
    assert run.returncode == 0 and run.stdout == "Status: ON\n", run


def test_connection_close_is_honoured() -> None:
    """A login answered with `Connection: close` on a connection the host keeps open (and
    would go on serving): the next call goes on a new connection, as HTTP/1.1 says, and the
    logout after it on that same one (kept alive): two connections in all."""
    accepted: list[Conn] = []
    served: list[tuple[int, str]] = []  # (which connection, call)
    pool = CraftedPool({"OpaqueRef:vm1": dict(HOSTILE_VM)})

    def count(conn: Conn) -> bool:
        accepted.append(conn)
        return True

    def login(conn: Conn, call: Call) -> bool:
        served.append((accepted.index(conn), call.method))
        return conn.send(http_response(success("OpaqueRef:s"), headers=["Connection: close"]))

    def answer(conn: Conn, call: Call) -> bool:
        served.append((accepted.index(conn), call.method))
        return pool(conn, call)

    with HostileServer(answer, login_behaviour=login, on_accept=count) as server:
        run = run_agent(stdin=hostile_params(server), timeout=60)
    assert run.returncode == 0 and run.stdout == "Status: ON\n", run
    assert served == [(0, "session.login_with_password"), (1, "VM.get_all_records_where")], \
        served
    assert len(accepted) == 2, accepted


@pytest.mark.parametrize("levels,refused", [(10, False), (100, True)])
def test_a_record_nested_deeper_than_64_levels_is_refused(levels: int, refused: bool) -> None:
    """The VM records are read as they arrive, keeping only the wanted fields; a field the
    agent does not keep is still bounded: nested 100 deep it is refused (values nest at
    most 64 deep), 10 deep (XAPI's records nest about 5) it is read past."""
    deep = "<array><data><value>" * levels + "x" + "</value></data></array>" * levels
    records = {"OpaqueRef:vm1": {**dict(HOSTILE_VM), "deep": "@DEEP@"}}
    body = success(records).replace(b"<value>@DEEP@</value>", f"<value>{deep}</value>".encode())

    def answer(conn: Conn, call: Call) -> bool:
        return conn.send(http_response(body))

    with HostileServer(answer) as server:
        run = run_agent(stdin=hostile_params(server), timeout=60)
        if refused:
            assert_one_error(run, "nested deeper than 64 levels")
        else:
            assert run.returncode == 0 and run.stdout == "Status: ON\n", run
        assert not server.sessions_open


def test_logout_that_hangs_after_a_verified_fence_is_a_warning() -> None:
    """The VM is verified Halted, then the logout hangs: the fence stands (exit 0, Success),
    the unfinished logout is one warning, within the logout's own bound."""
    def hang(conn: Conn, call: Call) -> bool:
        conn.stop.wait(30)
        return False

    pool = CraftedPool({"OpaqueRef:vm1": dict(HOSTILE_VM)})
    with HostileServer(pool, logout_behaviour=hang) as server:
        # shell_timeout well over the logout's own 2 s: the logout still waits 2 s at most
        run = run_agent(stdin={**hostile_params(server, "off"), "shell_timeout": "10"},
                        timeout=60)
    assert run.returncode == 0, run
    assert run.stdout == "Success: Powered OFF\n", run
    assert len(run.stderr_lines) == 1, run
    assert run.stderr_lines[0].startswith("WARNING: logout failed"), run
    assert run.seconds < 2 + MARGIN, run  # the logout waits 2 s at most
    assert pool.power_log == ["VM.hard_shutdown OpaqueRef:vm1"]


# ---------------------------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------------------------


def lookup_method(handle: SimHandle) -> str:
    """The one query `status` makes besides login and logout (its budget leaves room for one
    only), learnt from a clean run so the test does not assume which call the agent uses."""
    run = invoke(handle, "stdin", "status", plug="vm-running")
    assert run.returncode == 0, run
    queries = [m for m in handle.requests() if not m.startswith("session.")]
    assert len(queries) == 1, handle.requests()
    handle.reset_counters()
    return queries[0]


def test_session_invalid_once_logs_in_again(sim: SimHandle) -> None:
    sim.faults.fail_next[lookup_method(sim)] = [["SESSION_INVALID"]]
    run = invoke(sim, "stdin", "status", plug="vm-running")
    assert run.returncode == 0, run
    assert run.stdout == "Status: ON\n"
    assert "Traceback" not in run.stderr
    assert sim.requests().get("session.login_with_password") == 2
    assert sim.sessions_open() == 0


def test_session_invalid_twice_fails(sim: SimHandle) -> None:
    """Only one new login: a pool that keeps forgetting sessions is a failure, not a loop."""
    sim.faults.fail_next[lookup_method(sim)] = [["SESSION_INVALID"], ["SESSION_INVALID"]]
    run = invoke(sim, "stdin", "status", plug="vm-running")
    assert_failed(sim, run, "SESSION_INVALID")
    assert sim.requests().get("session.login_with_password") == 2


# ---------------------------------------------------------------------------------------------
# Power operations that fail or lie
# ---------------------------------------------------------------------------------------------


def test_power_op_slower_than_power_timeout(sim: SimHandle) -> None:
    sim.faults.power_op_delay = POWER_TIMEOUT + 3
    run = invoke(sim, "stdin", "off", plug="vm-running", **SHORT)
    assert_failed(sim, run, within=POWER_BOUND)


def test_hard_shutdown_that_does_nothing_is_not_success(sim: SimHandle) -> None:
    sim.faults.ignore_hard_shutdown = True
    run = invoke(sim, "stdin", "off", plug="vm-running", stonith_status_sleep="0.5", **SHORT)
    assert_failed(sim, run, within=POWER_BOUND)
    assert sim.power_state("vm-running") == "Running"


def test_vm_that_halts_after_the_call_returned_is_awaited(sim: SimHandle) -> None:
    """XAPI answered the hard shutdown, yet the VM still reads Running, and Halted a moment
    later: the agent polls the state until power_timeout instead of failing at the first
    read."""
    sim.faults.ignore_hard_shutdown = True
    agent = start_agent(sim.params(action="off", plug="vm-running", power_timeout="30",
                                   stonith_status_sleep="0.5"))
    try:
        wait_for(lambda: sim.requests().get("VM.get_power_state", 0) >= 1
                 or agent.poll() is not None, 30, "the agent to read the state back")
        sim.set_power_state("vm-running", "Halted")
        stdout, stderr = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    assert agent.returncode == 0, (agent.returncode, stdout, stderr)
    assert stdout == "Success: Powered OFF\n"
    assert sim.requests().get("VM.get_power_state", 0) >= 2, sim.requests()
    assert sim.sessions_open() == 0


@pytest.mark.parametrize("style", STYLES)
def test_read_only_user(sim: SimHandle, style: str) -> None:
    creds = {"username": "ro", "password": "ropass"}
    status = invoke(sim, style, "status", plug="vm-running", **creds)
    assert_succeeded(sim, status, "Status: ON", budget=3)
    run = invoke(sim, style, "off", plug="vm-running", **creds, **SHORT)
    assert_failed(sim, run, "RBAC_PERMISSION_DENIED")
    assert sim.power_state("vm-running") == "Running"


@pytest.mark.parametrize("style", STYLES)
def test_vm_on_dead_host_fails_by_default(sim: SimHandle, style: str) -> None:
    run = invoke(sim, style, "off", plug="vm-on-dead-host", **SHORT)
    assert_failed(sim, run, "HOST_OFFLINE", "allow_power_state_reset", within=POWER_BOUND)
    assert sim.power_state("vm-on-dead-host") == "Running"
    assert all(op != "power_state_reset" for _, op in sim.power_log())


@pytest.mark.parametrize("style", STYLES)
def test_vm_on_dead_host_is_reset_on_request(sim: SimHandle, style: str) -> None:
    """The standard pool runs without HA: the reset needs both opt-ins (tests/test_degraded.py
    covers the rule itself)."""
    run = invoke(sim, style, "off", plug="vm-on-dead-host", allow_power_state_reset="1",
                 allow_power_state_reset_without_ha="1", **SHORT)
    # Four requests over the off budget, inherent to the path: the refused hard shutdown is
    # what reports HOST_OFFLINE; the agent reads the host's record and live flag and the
    # pool's HA flag itself before the reset, and the reset is verified by a read.
    assert_succeeded(sim, run, "Success: Powered OFF", budget=9)
    assert sim.power_state("vm-on-dead-host") == "Halted"
    assert (sim.uuid("vm-on-dead-host"), "power_state_reset") in sim.power_log()


@pytest.mark.parametrize("style", STYLES)
def test_retry_on_one_rides_out_one_failed_start(sim: SimHandle, style: str) -> None:
    # As in fence-agents, `on` makes 1 + retry_on attempts.
    fail_power_on_once(sim)
    run = invoke(sim, style, "on", plug="vm-halted", retry_on="1", **SHORT)
    assert run.returncode == 0, run
    assert run.stdout == "Success: Powered ON\n"
    assert sim.power_state("vm-halted") == "Running"
    assert sim.sessions_open() == 0


def test_retry_on_reads_the_state_again_before_starting_again(sim: SimHandle) -> None:
    """The start worked but reading the state back failed: the next attempt reads the VM
    Running and does not start it a second time (XAPI would refuse: VM_BAD_POWER_STATE)."""
    sim.faults.fail_next["VM.get_power_state"] = [list(INJECTED)]
    run = invoke(sim, "stdin", "on", plug="vm-halted", retry_on="2", **SHORT)
    assert run.returncode == 0, run
    assert run.stdout == "Success: Powered ON\n", run
    assert [op for _, op in sim.power_log()] == ["start"]
    assert sim.requests().get("VM.start") == 1, sim.requests()  # not even a refused second
    assert sim.power_state("vm-halted") == "Running"
    assert sim.sessions_open() == 0


@pytest.mark.parametrize("style", STYLES)
def test_retry_on_zero_fails_on_a_failed_start(sim: SimHandle, style: str) -> None:
    fail_power_on_once(sim)
    run = invoke(sim, style, "on", plug="vm-halted", retry_on="0", **SHORT)
    assert_failed(sim, run, INJECTED[0])
    assert sim.power_state("vm-halted") == "Halted"


def test_reboot_whose_start_fails_is_still_fenced(sim: SimHandle) -> None:
    """The off half was verified: the node is fenced (exit 0), and stderr says it stayed off."""
    fail_power_on_once(sim)
    run = invoke(sim, "stdin", "reboot", plug="vm-running", **SHORT)
    assert run.returncode == 0, run
    assert run.stdout == "Success: Rebooted\n", run
    assert "Traceback" not in run.stderr
    assert any(INJECTED[0] in line for line in run.stderr_lines), run
    assert sim.power_state("vm-running") == "Halted"
    assert sim.sessions_open() == 0


@pytest.mark.parametrize("fault", ["ignored", "slow"])
def test_reboot_whose_power_off_fails_is_not_fenced(sim: SimHandle, fault: str) -> None:
    """The worst fencing bug: "Success: Rebooted" for a VM that never went off. A hard
    shutdown that does nothing, or that outlasts power_timeout, fails the reboot (exit 1), and
    the agent never starts the VM it could not stop."""
    if fault == "ignored":
        sim.faults.ignore_hard_shutdown = True
    else:
        sim.faults.power_op_delay = POWER_TIMEOUT + 5
    run = invoke(sim, "stdin", "reboot", plug="vm-running", stonith_status_sleep="0.5",
                 **SHORT)
    assert_failed(sim, run, within=POWER_BOUND + POWER_TIMEOUT)
    assert run.stdout == "", run
    assert not [op for _, op in sim.power_log() if op != "hard_shutdown"], sim.power_log()
    if fault == "ignored":
        assert sim.power_state("vm-running") == "Running"


BUSY = ["OTHER_OPERATION_IN_PROGRESS", "VM", "OpaqueRef:busy", "OpaqueRef:task"]


@pytest.mark.parametrize("action,stdout", [("off", "Success: Powered OFF"),
                                           ("reboot", "Success: Rebooted")])
def test_busy_vm_is_retried_until_it_powers_off(sim: SimHandle, action: str,
                                                stdout: str) -> None:
    """XAPI refuses a power operation while another runs on the VM (OTHER_OPERATION_IN_PROGRESS,
    xapi_vm_lifecycle.ml): the agent waits and tries again within power_timeout."""
    for method in ("VM.hard_shutdown", "Async.VM.hard_shutdown"):
        sim.faults.fail_next[method] = [list(BUSY), list(BUSY)]
    run = invoke(sim, "stdin", action, plug="vm-running", stonith_status_sleep="0.2",
                 power_timeout="20")
    assert run.returncode == 0, run
    assert run.stdout == stdout + "\n", run
    assert "Traceback" not in run.stderr, run
    shutdowns = sum(count for method, count in sim.requests().items()
                    if method.endswith("VM.hard_shutdown"))
    assert shutdowns == 3, sim.requests()
    assert [op for _, op in sim.power_log()][:1] == ["hard_shutdown"]
    assert sim.power_state("vm-running") == ("Halted" if action == "off" else "Running")
    assert sim.sessions_open() == 0


def test_busy_vm_that_stays_busy_fails_within_power_timeout(sim: SimHandle) -> None:
    for method in ("VM.hard_shutdown", "Async.VM.hard_shutdown"):
        sim.faults.fail_next[method] = [list(BUSY)] * 100
    run = invoke(sim, "stdin", "off", plug="vm-running", stonith_status_sleep="0.2", **SHORT)
    assert_failed(sim, run, within=POWER_BOUND)
    assert sim.power_state("vm-running") == "Running"


def busy_start(handle: SimHandle, times: int) -> None:
    """The next `times` VM.start calls are refused: another operation is in progress."""
    for method in ("VM.start", "Async.VM.start"):
        handle.faults.fail_next[method] = [list(BUSY)] * times


@pytest.mark.parametrize("action,stdout", [("on", "Success: Powered ON"),
                                           ("reboot", "Success: Rebooted")])
def test_busy_vm_is_started_once_it_is_free(sim: SimHandle, action: str, stdout: str) -> None:
    """VM.start refused with OTHER_OPERATION_IN_PROGRESS (XAPI refused before doing anything,
    xapi_vm_helpers.ml with_vm_operation): the agent reads the state every
    stonith_status_sleep and starts again, within power_timeout; one start runs."""
    if action == "on":
        sim.set_power_state("vm-running", "Halted")
    busy_start(sim, 2)
    run = invoke(sim, "stdin", action, plug="vm-running", stonith_status_sleep="0.2",
                 power_timeout="20")
    assert run.returncode == 0, run
    assert run.stdout == stdout + "\n", run
    assert "WARNING" not in run.stderr and "Traceback" not in run.stderr, run
    assert sim.requests().get("VM.start") == 3, sim.requests()
    assert [op for _, op in sim.power_log() if op == "start"] == ["start"], sim.power_log()
    assert sim.power_state("vm-running") == "Running"
    assert sim.sessions_open() == 0


def test_busy_vm_that_stays_busy_fails_to_start_within_power_timeout(sim: SimHandle) -> None:
    """A VM busy all along: `on` fails at power_timeout, saying what kept it busy."""
    sim.set_power_state("vm-running", "Halted")
    busy_start(sim, 1000)
    run = invoke(sim, "stdin", "on", plug="vm-running", stonith_status_sleep="0.2",
                 retry_on="0", **SHORT)
    line = assert_failed(sim, run, "OTHER_OPERATION_IN_PROGRESS", "power_timeout",
                         within=POWER_BOUND)
    assert run.seconds >= POWER_TIMEOUT - 0.5, run
    assert sim.requests().get("VM.start", 0) >= 3, sim.requests()
    assert "Halted" in line, line
    assert sim.power_state("vm-running") == "Halted"
    assert sim.power_log() == []


@pytest.mark.parametrize("pool", ["xapi-waits", "refused-at-once"])
def test_vm_started_by_someone_else_meanwhile_is_on(sim: SimHandle, pool: str) -> None:
    """Another client's start (taking 1.5 s) holds the VM: XAPI makes the agent's VM.start
    wait until it ends, then refuses it (VM_BAD_POWER_STATE: Running); a pool that refuses a
    busy VM at once answers OTHER_OPERATION_IN_PROGRESS. Either way the VM then reads
    Running, which is on: no second start."""
    sim.faults.refuse_busy_at_once = pool == "refused-at-once"
    sim.set_power_state("vm-halted", "Halted")
    sim.sim.set_power_duration("vm-halted", "start", 1.5)
    proxy: Any = xmlrpc.client.ServerProxy(sim.url)  # XAPI answers are dynamic structs
    session = proxy.session.login_with_password("root", "secret", "1.0", "other")["Value"]
    vm_ref = proxy.VM.get_by_uuid(session, sim.uuid("vm-halted"))["Value"]
    assert proxy.Async.VM.start(session, vm_ref, False, True)["Status"] == "Success"
    proxy.session.logout(session)
    wait_for(lambda: sim.vm("vm-halted")["current_operations"] != {}, 5, "the start to begin")
    run = invoke(sim, "stdin", "on", plug="vm-halted", stonith_status_sleep="0.2",
                 power_timeout="20")
    assert run.returncode == 0, run
    assert run.stdout == "Success: Powered ON\n", run
    assert sim.requests().get("VM.start", 0) >= 1, sim.requests()
    assert sim.power_log() == [(sim.uuid("vm-halted"), "start")]
    assert sim.power_state("vm-halted") == "Running"
    assert sim.sessions_open() == 0


def test_session_url_with_a_query_and_a_fragment(sim: SimHandle) -> None:
    """XAPI serves every path under / (http_svr.ml, longest prefix) and reads a query apart
    from it, so a session_url with one is taken: the query goes with the path, the fragment
    (never sent, RFC 3986) is dropped. The fragment alone reaches the simulator's /."""
    run = invoke(sim, "stdin", "status", plug="vm-running", session_url=f"{sim.url}#pool-a")
    assert (run.returncode, run.stdout) == (0, "Status: ON\n"), run
    heads: list[bytes] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]

        def take_one() -> None:
            conn, _ = listener.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    piece = conn.recv(4096)
                    if not piece:
                        break
                    data += piece
                heads.append(data)

        thread = threading.Thread(target=take_one, daemon=True)
        thread.start()
        run = invoke(sim, "stdin", "status", plug="vm-running",
                     session_url=f"http://127.0.0.1:{port}/pool/path?x=1&y=%20#frag", **SHORT)
        thread.join(10)
    assert heads and heads[0].startswith(b"POST /pool/path?x=1&y=%20 HTTP/1.1\r\n"), heads
    line = assert_one_error(run)
    # The true reason: that host hung up, named with its path and query.
    assert f"127.0.0.1:{port}/pool/path?x=1&y=%20 closed the connection" in line, line


# ---------------------------------------------------------------------------------------------
# SIGTERM (the fencer's timeout)
# ---------------------------------------------------------------------------------------------


def test_sigterm_during_a_slow_power_op_logs_out(sim: SimHandle) -> None:
    sim.faults.power_op_delay = 20
    agent = start_agent(sim.params(action="off", plug="vm-running", power_timeout="30"))
    try:
        wait_for(lambda: any("hard_shutdown" in m for m in sim.requests()), 10,
                 "the agent to call hard_shutdown")
        agent.send_signal(signal.SIGTERM)
        stdout, stderr = agent.communicate(timeout=LOGIN_TIMEOUT + MARGIN)
    except subprocess.TimeoutExpired:
        pytest.fail("the agent did not exit promptly after SIGTERM")
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    assert agent.returncode == 1, (agent.returncode, stderr)
    assert "Success" not in stdout
    assert "Traceback" not in stderr
    assert len([line for line in stderr.splitlines() if line.strip()]) == 1, stderr
    assert sim.sessions_open() == 0


@pytest.mark.parametrize("size,refused", [((1 << 20) - 200, False), ((1 << 20) + 1, True)],
                         ids=["under-1-MiB", "over-1-MiB"])
def test_stdin_is_read_up_to_1_mib(sim: SimHandle, size: int, refused: bool) -> None:
    """Parameters on stdin are read up to 1 MiB: a comment that takes it over is refused in
    one line before anything is contacted; just under the bound the run goes on."""
    params = "".join(f"{key}={value}\n" for key, value in
                     sim.params(action="status", plug="vm-running").items())
    comment = "#" + "x" * (size - len(params) - 2) + "\n"
    run = run_agent(stdin=comment + params)
    if refused:
        assert_one_error(run, "more than 1024 KiB of parameters on stdin")
        assert sim.requests() == {}
    else:
        assert_succeeded(sim, run, "Status: ON", budget=3)


def test_no_traceback_when_the_agent_cannot_read_stdin() -> None:
    """No options and nothing on stdin: a usage error, not a hang or a crash."""
    run = run_agent(stdin="")
    assert_one_error(run)
