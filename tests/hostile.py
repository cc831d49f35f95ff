"""A hostile XAPI server for fence_xenapi's tests (stdlib only, Python >= 3.9).

`HostileServer` listens on 127.0.0.1 and speaks just enough XAPI to be a pool: logins get a
session, logouts end it (each is recorded, so a test can prove no session was left open), or,
as a proxy (`upstream=`), passes logins and logouts to the XAPI simulator,
and the other calls go to a `behaviour`: a function that answers them however a broken or
malicious pool host might (a byte at a time, without end, oversized, nested, malformed, a
reset at some stage of the exchange) or, for crafted but valid answers, like XAPI itself.
Every behaviour runs on its connection's own thread; `stop()` ends them all.

`run_measured()` runs the agent as a subprocess through a small launcher, so the peak RSS
it reports (wait4's ru_maxrss) is the agent's and not inherited from pytest's memory map.

Crafted answers follow XAPI's wire format (ocaml-rpc xmlrpc.ml): strings are untyped
`<value>text</value>`, booleans `<boolean>0|1</boolean>`, and struct member names are not
XML-escaped (see `xapi_value`).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Set, Union

from tests.xapisim import xml_value

LOGIN = "session.login_with_password"
LOGOUT = "session.logout"
PASSWORD = "hostile-secret-Pw9"
USERNAME = "root"
RESPONSE_HEAD = b"<?xml version='1.0'?>\n<methodResponse><params><param><value>"
RESPONSE_TAIL = b"</value></param></params></methodResponse>\n"


# ---------------------------------------------------------------------------------------------
# XAPI's encoding
# ---------------------------------------------------------------------------------------------


# One XML-RPC value as XAPI writes it (ocaml-rpc xmlrpc.ml: untyped strings, struct member
# names NOT escaped): the simulator's encoder, the project's one copy of that format.
xapi_value = xml_value


_SUCCESS = "<struct><member><name>Status</name><value>Success</value></member>" \
    "<member><name>Value</name>"


def success(value: object) -> bytes:
    return RESPONSE_HEAD + (_SUCCESS + xapi_value(value) + "</member></struct>").encode() + \
        RESPONSE_TAIL


def failure(*description: str) -> bytes:
    value = xapi_value({"Status": "Failure", "ErrorDescription": list(description)})
    return RESPONSE_HEAD + value[len("<value>"):-len("</value>")].encode() + RESPONSE_TAIL


def http_response(body: bytes, status: str = "200 OK", headers: Sequence[str] = ()) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Content-Type: text/xml", f"Content-Length: {len(body)}",
             *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def vm_record(uuid: str, name: str, power_state: str = "Running", *,
              other_config: Optional[Mapping[str, str]] = None,
              padding: int = 0) -> Dict[str, object]:
    """A VM record with the fields the agent reads, a few realistic maps and sets, and
    `padding` more bytes of other fields."""
    record: Dict[str, object] = {
        "uuid": uuid, "allowed_operations": ["hard_shutdown", "hard_reboot"],
        "current_operations": {}, "name_label": name, "name_description": "",
        "power_state": power_state, "is_a_template": False, "is_a_snapshot": False,
        "is_control_domain": False, "resident_on": "OpaqueRef:host-1",
        "other_config": dict(other_config or {}), "tags": [], "VCPUs_max": "2",
        "platform": {"acpi": "1", "apic": "true"}, "blocked_operations": {},
    }
    if padding:
        record["last_booted_record"] = "x" * padding
    return record


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


@dataclass
class Call:
    method: str
    params: List[str]
    body: bytes
    number: int  # the how-many-th non-login call of the run


class Conn:
    """One accepted connection, handed to a behaviour."""

    def __init__(self, sock: socket.socket, stop: threading.Event) -> None:
        self.sock = sock
        self.stop = stop
        self.buffer = b""

    def send(self, data: bytes) -> bool:
        """Send all of `data`; False once the agent has gone (or the server stops)."""
        if self.stop.is_set():
            return False
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def trickle(self, data: bytes, delay: float = 0.05) -> bool:
        """One byte at a time, `delay` apart."""
        for index in range(len(data)):
            if not self.send(data[index:index + 1]) or self.stop.wait(delay):
                return False
        return True

    def forever(self, piece: bytes, delay: float = 0.0) -> None:
        """Send `piece` again and again until the agent goes away or the server stops."""
        while self.send(piece):
            if delay and self.stop.wait(delay):
                return

    def reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0), not a clean close."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def read_request(self) -> Optional[bytes]:
        """The next request's body, or None when the agent closed the connection."""
        try:
            while b"\r\n\r\n" not in self.buffer:
                data = self.sock.recv(65536)
                if not data:
                    return None
                self.buffer += data
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            match = re.search(rb"(?i)content-length:\s*([0-9]+)", head)
            length = int(match.group(1)) if match else 0
            while len(rest) < length:
                data = self.sock.recv(65536)
                if not data:
                    return None
                rest += data
            self.buffer = rest[length:]
            return rest[:length]
        except OSError:
            return None


Behaviour = Callable[[Conn, Call], bool]
"""Answers one call; returns True to keep the connection for the next request."""


class HostileServer:
    """A pool host that answers logins and logouts like XAPI and every other call through
    `behaviour`. `login_behaviour`, if given, answers logins instead (hostile from the start)."""

    def __init__(self, behaviour: Behaviour, login_behaviour: Optional[Behaviour] = None,
                 on_accept: Optional[Callable[[Conn], bool]] = None,
                 upstream: Optional[str] = None,
                 logout_behaviour: Optional[Behaviour] = None) -> None:
        self.behaviour = behaviour
        self.upstream = upstream  # a proxy: logins and logouts go to this (simulated) pool
        self.login_behaviour = login_behaviour
        self.logout_behaviour = logout_behaviour  # answers logouts instead (the session stays)
        self.on_accept = on_accept
        self.sessions: Set[str] = set()
        self.logged_out: List[str] = []
        self.calls: List[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._threads: List[threading.Thread] = []
        self._count = 0
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/"

    @property
    def sessions_open(self) -> Set[str]:
        with self._lock:
            return set(self.sessions)

    def __enter__(self) -> HostileServer:
        self._acceptor.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def refuse_connections(self) -> None:
        """From now on, connections are refused (as by a host that went down); connections
        already open are served on. (shutdown, not only close: the acceptor thread, blocked
        in accept(), would keep the socket listening.)"""
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(30)
        conn = Conn(sock, self._stop)
        try:
            if self.on_accept is not None and not self.on_accept(conn):
                return
            while not self._stop.is_set():
                body = conn.read_request()
                if body is None:
                    return
                call = self._parse(body)
                if not self._answer(conn, call):
                    return
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def _parse(self, body: bytes) -> Call:
        method = re.search(rb"<methodName>([^<]*)</methodName>", body)
        params = re.findall(rb"<param>\s*<value>\s*(?:<string>)?([^<]*)", body)
        name = method.group(1).decode() if method else ""
        with self._lock:
            self.calls.append(name)
            if name not in (LOGIN, LOGOUT):
                self._count += 1
            number = self._count
        return Call(name, [p.decode("utf-8", "replace") for p in params], body, number)

    def _forward(self, conn: Conn, call: Call) -> bool:
        """Pass the call to the upstream pool and its answer back (a fresh connection each)."""
        assert self.upstream is not None
        parts = urllib.parse.urlsplit(self.upstream)
        upstream = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        try:
            upstream.request("POST", parts.path or "/", call.body, {"Content-Type": "text/xml"})
            reply = upstream.getresponse()
            body = reply.read()
        finally:
            upstream.close()
        return conn.send(http_response(body, f"{reply.status} {reply.reason}"))

    def _answer(self, conn: Conn, call: Call) -> bool:
        if self.upstream is not None and call.method in (LOGIN, LOGOUT):
            return self._forward(conn, call)
        if call.method == LOGIN:
            if self.login_behaviour is not None:
                return self.login_behaviour(conn, call)
            if call.params[:2] != [USERNAME, PASSWORD]:
                return conn.send(http_response(failure("SESSION_AUTHENTICATION_FAILED",
                                                       USERNAME, "bad password")))
            with self._lock:
                ref = f"OpaqueRef:hostile-session-{len(self.sessions) + len(self.logged_out)}"
                self.sessions.add(ref)
            return conn.send(http_response(success(ref)))
        if call.method == LOGOUT and self.logout_behaviour is not None:
            return self.logout_behaviour(conn, call)
        if call.method == LOGOUT:
            ref = call.params[0] if call.params else ""
            with self._lock:
                if ref not in self.sessions:
                    return conn.send(http_response(failure("SESSION_INVALID", ref)))
                self.sessions.discard(ref)
                self.logged_out.append(ref)
            return conn.send(http_response(success("")))
        return self.behaviour(conn, call)


# ---------------------------------------------------------------------------------------------
# A small pool of crafted records (valid XAPI answers with whatever records a test needs)
# ---------------------------------------------------------------------------------------------


@dataclass
class CraftedPool:
    """Answers the calls status, off, on, list and monitor make, from `records` (ref ->
    record) serialized the way XAPI does; power operations change `power_state`."""

    records: Dict[str, Dict[str, object]]
    power_log: List[str] = field(default_factory=list)

    def __call__(self, conn: Conn, call: Call) -> bool:
        method, args = call.method, call.params[1:]
        if method == "VM.get_all_records_where":
            return conn.send(http_response(success(self.records)))
        if method == "VM.get_by_name_label":
            refs = [ref for ref, rec in self.records.items() if rec["name_label"] == args[0]]
            return conn.send(http_response(success(refs)))
        if method == "VM.get_record":
            return conn.send(http_response(success(self.records[args[0]])))
        if method == "VM.get_power_state":
            return conn.send(http_response(success(self.records[args[0]]["power_state"])))
        if method in ("VM.hard_shutdown", "VM.start"):
            self.power_log.append(f"{method} {args[0]}")
            self.records[args[0]]["power_state"] = "Halted" if method.endswith("shutdown") \
                else "Running"
            return conn.send(http_response(success("")))
        if method == "pool.get_all":
            return conn.send(http_response(success(["OpaqueRef:pool"])))
        return conn.send(http_response(failure("MESSAGE_METHOD_UNKNOWN", method)))


def big_record_map(vms: int, padding: int = 9000, nested_decoys: bool = True) -> bytes:
    """A successful VM.get_all_records_where answer of `vms` records of ~`padding` + 1 KB each
    (50 MB for 5000 VMs), built by string repetition so tests can afford it. With
    `nested_decoys`, every record's other_config holds keys named like the fields the agent
    reads, and keys XAPI does not escape (`&`, `<`)."""
    decoys = {"name_label": "DECOY", "uuid": "DECOY", "power_state": "Halted",
              "is_a_template": "true", "a&b": "1", "x<y": "2", "<name>": "3"} \
        if nested_decoys else {}
    template = xapi_value(vm_record("@UUID@", "@NAME@", other_config=decoys, padding=padding))
    parts = []
    for index in range(vms):
        uuid = f"{index:08x}-0000-4000-8000-{index:012x}"
        parts.append(f"<member><name>OpaqueRef:vm-{index}</name>" +
                     template.replace("@UUID@", uuid).replace("@NAME@", f"vm-{index:05d}") +
                     "</member>")
    head = RESPONSE_HEAD + (_SUCCESS + "<value><struct>").encode()
    tail = b"</struct></value></member></struct>" + RESPONSE_TAIL
    return head + "".join(parts).encode() + tail


# ---------------------------------------------------------------------------------------------
# Running the agent, measured
# ---------------------------------------------------------------------------------------------

_LAUNCHER = r"""
import json, resource, subprocess, sys, time
request = json.loads(sys.argv[1])
started = time.monotonic()
timed_out = False
try:
    done = subprocess.run(request["argv"],
                          input=request["stdin"].encode("utf-8", "surrogateescape"),
                          capture_output=True, timeout=request["timeout"], check=False)
    code, out, err = done.returncode, done.stdout, done.stderr
except subprocess.TimeoutExpired as expired:
    timed_out, code, out, err = True, -9, expired.stdout or b"", expired.stderr or b""
seconds = time.monotonic() - started
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"code": code, "stdout": out.decode("utf-8", "backslashreplace"),
                  "stderr": err.decode("utf-8", "backslashreplace"), "seconds": seconds,
                  "maxrss_kb": usage.ru_maxrss, "timed_out": timed_out}))
"""


@dataclass
class MeasuredRun:
    code: int
    stdout: str
    stderr: str
    seconds: float
    maxrss_kb: int
    timed_out: bool

    @property
    def stderr_lines(self) -> List[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_measured(agent: str, stdin: Union[str, Mapping[str, object]], args: Sequence[str] = (),
                 timeout: float = 60) -> MeasuredRun:
    """Run the agent from a fresh, small launcher process and return its exit, output, wall
    time and peak RSS. The launcher (not pytest) spawns it, so ru_maxrss is the agent's own."""
    text = stdin if isinstance(stdin, str) else \
        "".join(f"{key}={value}\n" for key, value in stdin.items())
    request = {"argv": [agent, *args], "stdin": text, "timeout": timeout}
    done = subprocess.run([sys.executable, "-I", "-c", _LAUNCHER, json.dumps(request)],
                          capture_output=True, text=True, timeout=timeout + 30, check=True)
    return MeasuredRun(**json.loads(done.stdout))


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll `condition` until it holds or `timeout` passes (server threads finish
    asynchronously after the agent exits)."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True
