#!/usr/bin/env python3
"""A XenServer/XCP-ng pool simulator speaking XAPI's XML-RPC and JSON-RPC, for fence_xenapi's
tests, benchmark and demo (stdlib only, Python >= 3.9).

`Simulator` holds the pool (users, hosts, VMs with realistic records, sessions, tasks,
counters, injected faults) and answers XAPI calls; `SimServer` serves one pool host over
HTTP/1.1 keep-alive or HTTPS; `SimHandle` is what the pytest fixtures hand to tests
(`SimHandle.standard()`, or `SimHandle.pool()`: one server and certificate per host);
`SimClient` drives a simulator in another process through the `sim.*` control methods;
`make_pki`/`make_host_cert` make TLS material.

Real XAPI is the contract: each behaviour names the xen-api file (under ocaml/) and function
it imitates; what the source does not settle is marked "assumption". Behaviours of a degraded
pool: emergency mode (set_emergency), stale or looping redirects (set_master_address), hosts
that refuse or hang (host_down) and the liveness window, HA (set_ha, Settings), master failover
(promote, fail_master), slow external logins (add_user login_delay, Settings), shutdown_delay
and start_delay, real operation durations (set_power_duration), blocked operations, the
power_state_reset rules and RBAC roles, unescaped struct member names, the query language's
precedence. HACKING.md has the contract.

Layout, in reading order:
  1. Wire encoding           XAPI's XML-RPC and JSON-RPC bytes (ocaml-rpc xmlrpc.ml,
                             jsonrpc.ml), POST paths (http_svr.ml)
  2. Pool model              PoolModel: records, hosts' states, users, counters, in-process API
  3. XAPI classes            Simulator(PoolModel): dispatch, session, VM (queries, power),
                             event, task
  4. Faults and settings     injected misbehaviour; XAPI's own timings
  5. Server, control plane   SimServer (one pool host), sim.* methods
  6. Client                  SimClient (control plane from another process)
  7. TLS material            Pki, make_pki, make_host_cert
  8. SimHandle               what the pytest fixtures hand to tests
  9. Script mode             `python3 tests/xapisim.py --help`; prints XAPISIM_URL=<url> when
                             ready and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import http.server
import json
import math
import os
import random
import re
import secrets
import signal
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid as uuidlib
import xmlrpc.client
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

NULL_REF = "OpaqueRef:NULL"
POWER_STATES = ("Halted", "Paused", "Running", "Suspended")
# xapi_globs.ml max_sessions_per_originator / max_sessions_per_user_name: beyond this many
# sessions in a group, XAPI destroys the least recently used (db_gc_util.ml).
SESSION_LIMIT_PER_ORIGINATOR = 500
HOOK_TIMEOUT = 15.0
EPOCH = xmlrpc.client.DateTime("19700101T00:00:00Z")
LOGIN = "session.login_with_password"
DEFAULT_USERS = (("root", "secret", "pool-admin"), ("ro", "ropass", "read-only"))
LOCAL_SUPERUSER = "root"
# xapi_globs.ml max_sessions (= 2 * max_tasks): root sessions without an originator share it.
ANONYMOUS_SESSION_LIMIT = 400
# datamodel_roles.ml: the roles, weakest first (XAPI lists them strongest first).
ROLES = ("read-only", "vm-operator", "vm-admin", "vm-power-admin", "pool-operator",
         "pool-admin")
# datamodel_vm.ml allowed_roles: VM power calls are _R_VM_OP, power_state_reset _R_POOL_OP;
# every other call the simulator serves is _R_READ_ONLY (task.cancel/destroy: own tasks).
VM_OPERATOR_OPS = ("start", "resume", "unpause", "pause", "suspend", "hard_shutdown",
                   "clean_shutdown", "hard_reboot", "clean_reboot")
# datamodel.ml emergency_calls: what a host in emergency mode still answers.
EMERGENCY_CALLS = ("pool.slave_reset_master", "pool.transition_to_master", "pool.ping_slave",
                   "session.slave_local_login", "session.slave_local_login_with_password",
                   "session.local_logout", "host.local_assert_healthy",
                   "host.is_in_emergency_mode", "host.emergency_ha_disable")
THUMBPRINT_REQUEST = "x-xenapi-request-host-certificate-thumbprint"  # xapi_globs.ml
THUMBPRINT_RESPONSE = "x-xenapi-response-host-certificate-thumbprint"
THUMBPRINT_HASHES = {"sha-256:master": "sha256", "sha-1:master": "sha1"}

PathLike = Union[str, "os.PathLike[str]"]
Record = Dict[str, Any]
# A VM's power state after each operation (start/resume may leave it Paused: see _target).
POWER_OPS: Dict[str, Tuple[Tuple[str, ...], str]] = {
    "hard_shutdown": (("Running", "Paused", "Suspended"), "Halted"),
    "clean_shutdown": (("Running",), "Halted"),
    "hard_reboot": (("Running", "Paused"), "Running"),
    "clean_reboot": (("Running",), "Running"),
    "start": (("Halted",), "Running"),
    "resume": (("Suspended",), "Running"),
    "unpause": (("Paused",), "Running"),
    "pause": (("Running",), "Paused"),
    "suspend": (("Running",), "Suspended"),
    "power_state_reset": (POWER_STATES, "Halted"),
}
# datamodel.ml expose_get_all_messages_for: the classes with public get_all/get_all_records
# (session is not one: its get_all is database-internal, datamodel_utils.ml).
GET_ALL_EXPOSED = ("VM", "host", "host_metrics", "pool", "task")
# XAPI's parameter count of each power operation, the session included.
POWER_OP_ARGS = {"start": 4, "resume": 4}
# xapi_vm_lifecycle.ml allowed_power_states, in XAPI's order (VM_BAD_POWER_STATE lists them).
ALLOWED_POWER_STATES: Dict[str, Tuple[str, ...]] = {
    "hard_shutdown": ("Paused", "Suspended", "Running"), "clean_shutdown": ("Running",),
    "hard_reboot": ("Paused", "Running"), "clean_reboot": ("Running",), "start": ("Halted",),
    "resume": ("Suspended",), "unpause": ("Paused",), "pause": ("Running",),
    "suspend": ("Running",), "power_state_reset": ("Halted", "Paused", "Suspended", "Running"),
}
# message_forwarding.ml hard_shutdown and hard_reboot cancel these operations in progress.
CANCELLED_BY: Dict[str, Tuple[str, ...]] = {
    "hard_shutdown": ("clean_shutdown", "clean_reboot", "hard_reboot", "pool_migrate",
                      "call_plugin", "shutdown", "suspend"),
    "hard_reboot": ("clean_shutdown", "clean_reboot", "pool_migrate", "call_plugin", "suspend"),
}


@dataclass(frozen=True)
class RetryPolicy:
    """helpers.ml Repeat_with_uniform_backoff: retry (retry_with_global_lock) catches
    OTHER_OPERATION_IN_PROGRESS and, unless max_total_wait has been waited already, sleeps a
    uniformly random minimum_delay..maximum_delay seconds (Policy.wait; Early_wakeup.wait,
    cut short when an operation ends) and checks again; past max_total_wait the caller gets
    the error. The time counted is the time really slept, and the bound is checked before
    each sleep, so the last sleep may overshoot it."""

    minimum_delay: float
    maximum_delay: float
    max_total_wait: float


# helpers.ml Repeat_with_uniform_backoff's three policies.
POLICY_STANDARD = RetryPolicy(1.0, 20.0, 3600.0 * 2.0)
POLICY_FAIL_QUICKLY = RetryPolicy(2.0, 2.0, 120.0)
POLICY_FAIL_IMMEDIATELY = RetryPolicy(0.0, 3.0, sys.float_info.min)  # one retry, after 0-3 s
# message_forwarding.ml: every VM power call runs in with_vm_operation without ~policy, so
# with Policy.standard (start, start_on, clean/hard shutdown, clean/hard reboot, suspend,
# resume, resume_on, pause, unpause); power_state_reset uses no with_vm_operation (no
# operation check, nothing to wait for). fail_immediately is VM.call_plugin's and
# VM.sysprep's, fail_quickly with_vbds_marked's: calls the simulator does not serve.
POWER_RETRY_POLICY: Dict[str, RetryPolicy] = {
    op: POLICY_STANDARD for op in ALLOWED_POWER_STATES if op != "power_state_reset"}
HALTING_OPS = ("hard_shutdown", "clean_shutdown", "power_state_reset")
REBOOTING_OPS = ("hard_reboot", "clean_reboot")
STARTING_OPS = ("start", "resume")

ALLOWED_OPERATIONS = {
    "Running": ["pause", "clean_shutdown", "clean_reboot", "hard_shutdown", "hard_reboot",
                "suspend", "snapshot", "checkpoint", "pool_migrate", "migrate_send",
                "changing_dynamic_range", "changing_VCPUs_live", "snapshot_with_quiesce"],
    "Halted": ["start", "start_on", "clone", "copy", "export", "snapshot", "destroy",
               "make_into_template", "provision", "changing_memory_limits",
               "changing_static_range", "changing_VCPUs", "changing_shadow_memory"],
    "Paused": ["unpause", "hard_shutdown", "hard_reboot", "snapshot", "checkpoint"],
    "Suspended": ["resume", "resume_on", "hard_shutdown", "snapshot", "clone", "copy",
                  "export", "destroy"],
    "template": ["clone", "copy", "export", "provision", "destroy", "changing_memory_limits"],
    "control_domain": ["changing_dynamic_range", "changing_memory_limits"],
}
TEMPLATE_NAMES = (
    "Debian Bookworm 12", "Debian Bullseye 11", "Ubuntu Jammy Jellyfish 22.04",
    "Ubuntu Noble Numbat 24.04", "CentOS Stream 9", "Rocky Linux 9", "AlmaLinux 9",
    "Red Hat Enterprise Linux 9", "Oracle Linux 9", "SUSE Linux Enterprise Server 15 (64-bit)",
    "Windows Server 2022 (64-bit)", "Windows Server 2019 (64-bit)", "Windows 10 (64-bit)",
    "Windows 11", "Other install media", "Generic Linux UEFI", "Generic Linux BIOS",
)
RECOMMENDATIONS = (
    '<restrictions><restriction field="memory-static-max" max="1649267441664"/>'
    '<restriction field="vcpus-max" max="32"/><restriction field="has-vendor-device" '
    'value="false"/><restriction property="number-of-vbds" max="255"/>'
    '<restriction property="number-of-vifs" max="7"/></restrictions>'
)


# ---------------------------------------------------------------------------------------------
# 1. Wire encoding
# XAPI's XML-RPC dialect as ocaml-rpc's xmlrpc.ml writes it: strings as plain
# <value>text</value>, struct member names NOT escaped, every answer a Status struct.
# ---------------------------------------------------------------------------------------------


class XapiError(Exception):
    """An XAPI failure: answered as {"Status": "Failure", "ErrorDescription": description}."""

    def __init__(self, code: str, *params: object) -> None:
        super().__init__(code, *params)
        self.description = [code, *(str(param) for param in params)]


def new_ref() -> str:
    return f"OpaqueRef:{uuidlib.uuid4()}"


def new_uuid() -> str:
    return str(uuidlib.uuid4())


def now() -> xmlrpc.client.DateTime:
    return xmlrpc.client.DateTime(time.strftime("%Y%m%dT%H:%M:%SZ", time.gmtime()))


# ocaml-rpc xmlrpc.ml encode: &, <, >, " become entities; control characters other than
# tab, LF and CR are dropped.
_XML_TEXT = {**{code: None for code in range(32) if code not in (9, 10, 13)},
             ord("&"): "&amp;", ord("<"): "&lt;", ord(">"): "&gt;", ord('"'): "&quot;"}
_XML_SPECIAL = re.compile('[&<>"\x00-\x08\x0b\x0c\x0e-\x1f]')


def xml_value(value: Any) -> str:
    """One XML-RPC <value> as ocaml-rpc's xmlrpc.ml add_value writes it; bytes are an already
    serialized <value> fragment (cached)."""
    if isinstance(value, Int32):
        return f"<value><i4>{int(value)}</i4></value>"
    if isinstance(value, bool):
        return f"<value><boolean>{int(value)}</boolean></value>"
    if isinstance(value, str):
        text = value.translate(_XML_TEXT) if _XML_SPECIAL.search(value) else value
        return f"<value>{text}</value>"
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, int):
        return f"<value>{value}</value>"  # Rpc.Int: untyped, a client reads a string
    if isinstance(value, float):
        # ocaml-rpc xmlrpc.ml add_value: Printf.bprintf buf "%.16g" d
        return f"<value><double>{value:.16g}</double></value>"
    if isinstance(value, dict):
        # Member names go out unescaped, as ocaml-rpc's xmlrpc.ml add_value writes them: a map
        # key holding & or < makes the document malformed for a strict parser (real XAPI).
        members = "".join(f"<member><name>{key}</name>{xml_value(item)}</member>"
                          for key, item in value.items())
        return f"<value><struct>{members}</struct></value>"
    if isinstance(value, (list, tuple)):
        items = "".join(xml_value(item) for item in value)
        return f"<value><array><data>{items}</data></array></value>"
    if isinstance(value, xmlrpc.client.DateTime):
        return f"<value><dateTime.iso8601>{value.value}</dateTime.iso8601></value>"
    raise TypeError(f"cannot serialize {type(value).__name__} for XAPI")


# ocaml-rpc xmlrpc.ml add_response: `<?xml version="1.0"?><methodResponse>...`, double quotes,
# no newline or indentation anywhere (a client that takes a newline for the document breaks).
_RESPONSE_HEAD = b'<?xml version="1.0"?><methodResponse><params><param>'

_RESPONSE_TAIL = b"</param></params></methodResponse>"
_SUCCESS_HEAD = (_RESPONSE_HEAD + b"<value><struct><member><name>Status</name><value>Success"
                 b"</value></member><member><name>Value</name>")

_SUCCESS_TAIL = b"</member></struct></value>" + _RESPONSE_TAIL


def _encode_answer(method: str, json_call: Optional[Tuple[str, Any]], success: bool,
                   contents: Any) -> Tuple[bytes, str]:
    """The body and content type of an answer, as api_server.ml writes it."""
    if json_call is not None:
        version, call_id = json_call
        return (json_response(version, call_id, success or method == "system.listMethods",
                              contents), "application/json")
    if success and method == "system.listMethods":
        # api_server.ml callback: the bare array, no Status/Value struct
        return _RESPONSE_HEAD + xml_value(contents).encode() + _RESPONSE_TAIL, "text/xml"
    return (success_body(contents) if success else failure_body(contents)), "text/xml"


def success_body(value: Any) -> bytes:
    encoded = value if isinstance(value, bytes) else xml_value(value).encode()
    return b"".join((_SUCCESS_HEAD, encoded, _SUCCESS_TAIL))


def failure_body(description: Sequence[str]) -> bytes:
    failure = {"Status": "Failure", "ErrorDescription": [str(item) for item in description]}
    return _RESPONSE_HEAD + xml_value(failure).encode() + _RESPONSE_TAIL


class Int32(int):
    """An Rpc.Int32: XML-RPC `<i4>` (ocaml-rpc xmlrpc.ml add_value); a plain int is Rpc.Int,
    written untyped."""


def _json_float(number: float) -> str:
    """Yojson's write_float (what jsonrpc.ml's Y.to_string uses): %.16g, %.17g when that
    does not read back, ".0" after a number that would read as an integer."""
    if not math.isfinite(number):
        return "NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")
    text = f"{number:.16g}"
    if float(text) != number:
        text = f"{number:.17g}"
    return text + ".0" if text.lstrip("-").isdigit() else text


def json_text(value: Any) -> str:
    """One value as ocaml-rpc's jsonrpc.ml rpc_to_json and Yojson.Safe.to_string write it:
    compact, members in order, DateTime as its string, UTF-8 as is, DEL escaped too."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return _json_float(value)
    if isinstance(value, xmlrpc.client.DateTime):
        return json_text(value.value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json_text(str(key))}:{json_text(item)}"
                              for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(json_text(item) for item in value) + "]"
    raise TypeError(f"cannot serialize {type(value).__name__} for XAPI")


# http_svr.ml response_internal_error's body.
INTERNAL_ERROR_HTML = ("<html><body><h1>HTTP 500 internal server error</h1>An unexpected error "
                       "occurred; please wait a while and try again. If the problem persists, "
                       "please contact your support representative.</body></html>")


# xapi.ml registers the POST handlers at the paths datamodel.ml gives them ("post_root" /,
# "post_RPC2" /RPC2, "post_json" /json: Api_server.callback, XML-RPC; "post_jsonrpc" /jsonrpc:
# Api_server.jsoncallback); http_svr.ml handle_one picks the handler whose path is the longest
# prefix of the request's path (Radix_tree.longest_prefix, query and fragment not part of the
# path): /xmlrpc, /RPC2/x or /anything are XML-RPC, /jsonrpc... is JSON-RPC.
POST_HANDLERS = {"/": "xml", "/RPC2": "xml", "/json": "xml", "/jsonrpc": "json"}


def post_handler(target: str) -> Optional[str]:
    """"xml" or "json" for a POST to `target` (None: no handler, http_svr.ml answers 403)."""
    path = urllib.parse.urlsplit(target).path
    prefixes = [prefix for prefix in POST_HANDLERS if path.startswith(prefix)]
    return POST_HANDLERS[max(prefixes, key=len)] if prefixes else None


def json_response(version: str, call_id: Any, success: bool, contents: Any) -> bytes:
    """ocaml-rpc jsonrpc.ml json_of_response: V1 carries result and error (one of them null),
    V2 "jsonrpc":"2.0" and one of them; a failure is the error list (V1) or, translated by
    api_server.ml callback1 (V2, every method but system.listMethods), an error object with
    code error_code_lit (1, api_server_common.ml), message the error code and data its
    parameters."""
    if not success and version == "2.0":
        code, *data = contents
        contents = {"code": 1, "message": code, "data": data}
    if version == "2.0":
        body = {"jsonrpc": "2.0", ("result" if success else "error"): contents, "id": call_id}
    else:
        body = {"result": contents if success else None,
                "error": None if success else contents, "id": call_id}
    return json_text(body).encode()


def pp_hash(digest: bytes) -> str:
    """certificates.ml pp_hash: uppercase hex, a colon between octets (AB:CD:...)."""
    return ":".join(f"{octet:02X}" for octet in digest)


# ---------------------------------------------------------------------------------------------
# 2. Pool model
# The database of one pool (records by class, cached XML) and what the database does not
# hold (which hosts answer, emergency mode, users, counters), with the in-process API that
# tests use to build and degrade a pool. XAPI's behaviour on top of it is section 3.
# ---------------------------------------------------------------------------------------------


class _EventLog:
    """The database's generation counter for event.from/event.inject (db_cache_types.ml: every
    write takes the next generation; each row keeps the generation it was created and last
    modified in, a deleted row the one it was deleted in): one per pool, shared by its
    tables. Waiters (event.from) sleep on `changed`."""

    DELETED_KEPT = 100_000  # assumption: XAPI keeps deleted rows until db_gc, bounded here

    def __init__(self) -> None:
        self.changed = threading.Condition(threading.Lock())
        self.generation = 0
        self.deleted: List[Tuple[int, int, str, str]] = []  # (deleted, created, class, ref)

    def next(self) -> int:
        with self.changed:
            self.generation += 1
            self.changed.notify_all()
            return self.generation


class _Table:
    """The records of one XAPI class by ref, each record's XML-RPC value cached: serializing
    thousands of VM records for every listing would otherwise dominate the server's cost.
    Change records only through update() so the cache stays right (and events are seen)."""

    def __init__(self, name: str, log: Optional[_EventLog] = None) -> None:
        self.name = name
        self.records: Dict[str, Record] = {}
        self.by_uuid: Dict[str, str] = {}
        self.fields: set[str] = set()
        self._encoded: Dict[str, bytes] = {}
        self.log = log or _EventLog()
        self.stats: Dict[str, List[int]] = {}  # ref -> [created, modified] generations

    def add(self, ref: str, record: Record) -> None:
        self.records[ref] = record
        self.by_uuid[record["uuid"]] = ref
        self.fields.update(record)
        generation = self.log.next()
        self.stats[ref] = [generation, generation]

    def remove(self, ref: str) -> None:
        record = self.records.pop(ref)
        self.by_uuid.pop(record["uuid"], None)
        self._encoded.pop(ref, None)
        created = self.stats.pop(ref, [0, 0])[0]
        deleted = self.log.deleted
        deleted.append((self.log.next(), created, self.name, ref))
        if len(deleted) > _EventLog.DELETED_KEPT:
            del deleted[:len(deleted) // 2]

    def touch(self, ref: str) -> None:
        """db_cache_impl.ml touch_row: a modification that changes no field (event.inject)."""
        self.stats.setdefault(ref, [0, 0])[1] = self.log.next()

    def get(self, ref: Any) -> Record:
        record = self.records.get(ref) if isinstance(ref, str) else None
        if record is None:
            raise XapiError("HANDLE_INVALID", self.name, ref)
        return record

    def update(self, ref: str, **changes: Any) -> None:
        self.records[ref].update(changes)
        self._encoded.pop(ref, None)
        self.touch(ref)

    def _member(self, ref: str) -> bytes:
        """`<member><name>ref</name><value>record</value></member>`, cached (one copy of
        each record's XML: a 5000-VM pool holds about 50 MB of it)."""
        member = self._encoded.get(ref)
        if member is None:
            member = self._encoded[ref] = b"".join((
                b"<member><name>", ref.encode(), b"</name>",
                xml_value(self.records[ref]).encode(), b"</member>"))
        return member

    def encoded(self, ref: str) -> bytes:
        """The record as an XML-RPC <value>."""
        member = self._member(ref)
        return member[member.index(b"</name>") + len(b"</name>"):-len(b"</member>")]

    def encoded_map(self, refs: Iterator[str]) -> bytes:
        """ref -> record for `refs`, as an XML-RPC <value><struct>."""
        members = [self._member(ref) for ref in refs]
        return b"".join((b"<value><struct>", *members, b"</struct></value>"))

    def prime(self) -> None:
        for ref in self.records:
            self._member(ref)


@dataclass
class _HostState:
    """What the database does not hold about a host: whether it answers, its emergency-mode
    error, and which address it believes is the master."""

    emergency: Optional[List[str]] = None
    master_address: Optional[str] = None
    down: Optional[str] = None  # None (answers), "refuse" or "hang"
    heartbeat_lost: Optional[float] = None  # monotonic time its heartbeat stopped
    up: threading.Event = field(default_factory=threading.Event)
    certificate: Optional[bytes] = None  # DER of the certificate its server presents


@dataclass
class _User:
    password: str
    role: str
    login_delay: Optional[float]


PowerCallback = Callable[[str, str, str], None]


@dataclass
class _SessionInfo:
    user: str
    role: str
    originator: str


class PoolModel:
    """The state of one simulated pool, shared by every host server; thread-safe (one lock).

    In-process users (tests) read it through the query methods below (vm, power_state,
    requests, ...); mutate it only through its methods so cached records stay right."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.faults = Faults()
        self.settings = Settings()
        self.session_limit = SESSION_LIMIT_PER_ORIGINATOR
        self.anonymous_session_limit = ANONYMOUS_SESSION_LIMIT
        self.events = _EventLog()
        self.tables = {name: _Table(name, self.events)
                       for name in ("VM", "host", "host_metrics", "pool", "task", "session")}
        self.users: Dict[str, _User] = {}
        self.host_states: Dict[str, _HostState] = {}
        self._power_durations: Dict[Tuple[str, str], Tuple[float, bool]] = {}
        self._on_power: Optional[PowerCallback] = None
        self._servers: List[SimServer] = []
        self.pool_ref = new_ref()
        self.master_ref = NULL_REF
        self._sessions: Dict[str, _SessionInfo] = {}
        self._issued_sessions: List[str] = []
        self._requests: Dict[str, int] = {}
        self._total = 0
        self._logins = 0
        self._logouts = 0
        self._power_log: List[Tuple[str, str]] = []
        self._hooks: Dict[str, Dict[str, str]] = {}
        self._op_cancels: Dict[str, threading.Event] = {}
        # helpers.ml Early_wakeup: a VM operation's end wakes the calls waiting to retry.
        self._op_ended = threading.Condition()
        self._op_ends = 0
        self._closing = threading.Event()
        self._next_domid = 1
        self.tables["pool"].add(self.pool_ref, self._pool_record())

    # -- building pools -----------------------------------------------------------------------

    def add_user(self, name: str, password: str, role: str = "pool-admin", *,
                 login_delay: Optional[float] = None) -> None:
        """`root` is the local superuser (XAPI checks no role for it); any other name is an
        external (AD) subject with `role`, whose accepted logins take `login_delay` seconds
        (default settings.external_login_delay)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        with self.lock:
            self.users[name] = _User(password, role, login_delay)

    def add_host(self, name: str, address: str, live: bool = True,
                 master: bool = False) -> str:
        """A pool host with its metrics and its control domain; the first host is master."""
        with self.lock:
            ref, metrics_ref = new_ref(), new_ref()
            self.tables["host_metrics"].add(metrics_ref, {
                "uuid": new_uuid(), "memory_total": "274877906944", "memory_free": "137438953472",
                "live": live, "last_updated": now(), "other_config": {}})
            self.tables["host"].add(ref, self._host_record(name, address, metrics_ref))
            self.host_states[ref] = _HostState()
            self.host_states[ref].up.set()
            if master or self.master_ref == NULL_REF:
                self.master_ref = ref
                self.tables["pool"].update(self.pool_ref, master=ref)
            self.add_vm(f"Control domain on host: {name}", "Running", host=ref,
                        control_domain=True)
            return ref

    def add_vm(self, name: str, power_state: str = "Running", *, host: Optional[str] = None,
               template: bool = False, snapshot_of: Optional[str] = None,
               control_domain: bool = False, vm_uuid: Optional[str] = None,
               **fields: Any) -> str:
        """A VM (or template, snapshot, control domain); `host` is a host name or ref and
        defaults to the master for a VM that runs; `fields` set record fields as set_vm does
        (other_config={"a&b": "x"}, shutdown_delay="25", ...). Returns its ref."""
        if power_state not in POWER_STATES:
            raise ValueError(f"bad power state {power_state!r}")
        with self.lock:
            ref = new_ref()
            record = self._vm_record(vm_uuid or new_uuid(), name, template=template,
                                     snapshot_of=snapshot_of, control_domain=control_domain)
            unknown = set(fields) - set(record)
            if unknown:
                raise KeyError(f"VM records have no field {sorted(unknown)}")
            record.update(fields)
            self.tables["VM"].add(ref, record)
            if snapshot_of is not None:
                parent = self.tables["VM"].get(snapshot_of)
                self.tables["VM"].update(snapshot_of, snapshots=[*parent["snapshots"], ref])
            self._place(ref, power_state, self._host_ref(host) if host else None)
            return ref

    def add_vm_record(self, ref: str, record: Mapping[str, Any]) -> str:
        """A VM record exactly as given, in XAPI's wire types (one captured on a real host:
        tests/realrecords.py), its fields neither added nor dropped: a record of an older
        datamodel keeps lacking what that datamodel lacked, and the power path reads such a
        field as its datamodel default. Host references name hosts of another pool: a VM
        that runs is taken to run on this pool's master, the others point at no host."""
        with self.lock:
            vm = dict(record)
            hosts = self.tables["host"]
            for name in ("resident_on", "affinity", "scheduled_to_be_resident_on"):
                if name in vm and vm[name] not in hosts.records:
                    vm[name] = NULL_REF
            if vm["power_state"] in ("Running", "Paused"):
                vm["resident_on"] = self.master_ref
                hosts.update(self.master_ref, resident_VMs=[
                    *hosts.records[self.master_ref]["resident_VMs"], ref])
            self.tables["VM"].add(ref, vm)
            return ref

    def populate_standard(self, dead_host3: bool = True) -> None:
        """THE STANDARD POOL the tests rely on (see the simulator's contract). host3 is dead
        (down, refusing connections, marked not live) unless dead_host3 is False."""
        with self.lock:
            self._ensure_users()
            host1 = self.add_host("host1", "127.0.0.1", master=True)
            host2 = self.add_host("host2", "127.0.0.2")
            host3 = self.add_host("host3", "127.0.0.3", live=not dead_host3)
            if dead_host3:
                self.host_down(host3, "refuse")
            vm_running = self.add_vm("vm-running", "Running", host=host1)
            self.add_vm("vm-halted", "Halted")
            self.add_vm("vm-paused", "Paused", host=host1)
            self.add_vm("vm-suspended", "Suspended")
            self.add_vm("vm-dup", "Running", host=host1)
            self.add_vm("vm-dup", "Running", host=host2)
            self.add_vm("vm-on-dead-host", "Running", host=host3)
            for number, host in ((1, host1), (2, host2), (3, host1)):
                self.add_vm(f"node{number}", "Running", host=host)
            self.add_vm("vm-shared-name", "Running", host=host2)
            self.add_vm('vm "quoted"', "Running", host=host1)
            for name in ("tmpl-debian", "vm-shared-name", *TEMPLATE_NAMES[:4]):
                self.add_vm(name, "Halted", template=True)
            self.add_vm("vm-running-snap", "Halted", template=True, snapshot_of=vm_running)

    def populate(self, vms: int, templates: int = 100, snapshots: int = 3,
                 hosts: int = 2) -> None:
        """A large pool for the benchmark: hosts host1..hostN (127.0.0.N), VMs vm-00001...
        (one in ten Halted), templates, snapshots of the first VMs; adds to what exists."""
        with self.lock:
            self._ensure_users()
            existing = {record["name_label"] for record in self.tables["host"].records.values()}
            for number in range(1, hosts + 1):
                if f"host{number}" not in existing:
                    self.add_host(f"host{number}", f"127.0.0.{number}")
            host_refs = list(self.tables["host"].records)
            refs = []
            for number in range(1, vms + 1):
                state = "Halted" if number % 10 == 0 else "Running"
                refs.append(self.add_vm(f"vm-{number:05d}", state,
                                        host=host_refs[number % len(host_refs)]))
            for number in range(templates):
                name = (TEMPLATE_NAMES[number] if number < len(TEMPLATE_NAMES)
                        else f"Template {number:03d}")
                self.add_vm(name, "Halted", template=True)
            for ref in refs[:snapshots]:
                name = self.tables["VM"].records[ref]["name_label"]
                self.add_vm(f"{name}-snap", "Halted", template=True, snapshot_of=ref)
            self.tables["VM"].prime()

    def set_hooks(self, hooks: Mapping[str, Mapping[str, str]]) -> None:
        """{vm name: {"on_halt": command, "on_start": command}}: on_halt runs (sh -c,
        synchronously, 15 s at most) when the VM halts, before the call answers; on_start runs
        detached when it starts."""
        with self.lock:
            self._hooks = {name: dict(commands) for name, commands in hooks.items()}

    def remove_host(self, host: str) -> None:
        """Take a host out of the pool with its control domain (its other VMs must not be
        resident there: they are halted first)."""
        with self.lock:
            ref = self._host_ref(host)
            if ref == self.master_ref:
                raise ValueError("cannot remove the master")
            for vm_ref in list(self.tables["host"].records[ref]["resident_VMs"]):
                if self.tables["VM"].records[vm_ref]["is_control_domain"]:
                    self.tables["VM"].remove(vm_ref)
                else:
                    self._place(vm_ref, "Halted")
            record = self.tables["host"].records[ref]
            self.tables["host_metrics"].remove(record["metrics"])
            self.tables["host"].remove(ref)
            del self.host_states[ref]

    def _ensure_users(self) -> None:
        for name, password, role in DEFAULT_USERS:
            self.users.setdefault(name, _User(password, role, None))

    # -- records as XAPI has them -------------------------------------------------------------

    def _pool_record(self) -> Record:
        return {
            "uuid": new_uuid(), "name_label": "simulated pool", "name_description": "",
            "master": NULL_REF, "default_SR": NULL_REF, "suspend_image_SR": NULL_REF,
            "crash_dump_SR": NULL_REF, "other_config": {}, "ha_enabled": False,
            "ha_configuration": {}, "ha_statefiles": [], "ha_host_failures_to_tolerate": "0",
            "ha_plan_exists_for": "0", "ha_allow_overcommit": False, "ha_overcommitted": False,
            "blobs": {}, "tags": [], "gui_config": {}, "health_check_config": {},
            "wlb_url": "", "wlb_username": "", "wlb_enabled": False, "wlb_verify_cert": False,
            "redo_log_enabled": False, "redo_log_vdi": NULL_REF, "vswitch_controller": "",
            "restrictions": {}, "metadata_VDIs": [], "ha_cluster_stack": "xhad",
            "allowed_operations": [], "current_operations": {}, "guest_agent_config": {},
            "cpu_info": {}, "policy_no_vendor_device": False, "live_patching_disabled": False,
            "igmp_snooping_enabled": False, "uefi_certificates": "", "is_psr_pending": False,
            "tls_verification_enabled": False, "repositories": [],
            "client_certificate_auth_enabled": False, "client_certificate_auth_name": "",
        }

    def _host_record(self, name: str, address: str, metrics_ref: str) -> Record:
        return {
            "uuid": new_uuid(), "name_label": name, "name_description": "Default install",
            "memory_overhead": "0", "allowed_operations": ["provision", "evacuate"],
            "current_operations": {}, "API_version_major": "2", "API_version_minor": "21",
            "API_version_vendor": "XenSource", "API_version_vendor_implementation": {},
            "enabled": True, "software_version": {
                "product_version": "8.3.0", "product_brand": "XCP-ng", "xapi": "24.19",
                "xen": "4.17.5", "hostname": name, "platform_name": "XCP"},
            "other_config": {"agent_start_time": "1700000000."}, "capabilities": [],
            "cpu_configuration": {}, "sched_policy": "credit",
            "supported_bootloaders": ["pygrub", "eliloader"], "resident_VMs": [],
            "logging": {}, "PIFs": [], "suspend_image_sr": NULL_REF, "crash_dump_sr": NULL_REF,
            "crashdumps": [], "patches": [], "updates": [], "PBDs": [], "host_CPUs": [],
            "cpu_info": {"cpu_count": "16", "vendor": "GenuineIntel"}, "hostname": name,
            "address": address, "metrics": metrics_ref, "license_params": {},
            "ha_statefiles": [], "ha_network_peers": [], "blobs": {}, "tags": [],
            "external_auth_type": "", "external_auth_service_name": "",
            "external_auth_configuration": {}, "edition": "xcp-ng", "license_server": {},
            "bios_strings": {}, "power_on_mode": "", "power_on_config": {},
            "local_cache_sr": NULL_REF, "chipset_info": {}, "PCIs": [], "PGPUs": [],
            "PUSBs": [], "ssl_legacy": False, "guest_VCPUs_params": {}, "display": "enabled",
            "virtual_hardware_platform_versions": ["0", "1", "2"],
            "control_domain": NULL_REF, "updates_requiring_reboot": [], "features": [],
            "iscsi_iqn": "", "multipathing": False, "uefi_certificates": "",
            "certificates": [], "editions": ["xcp-ng"], "pending_guidances": [],
            "tls_verification_enabled": False, "last_software_update": EPOCH,
            "https_only": False,
        }

    def _vm_record(self, vm_uuid: str, name: str, *, template: bool,
                   snapshot_of: Optional[str], control_domain: bool) -> Record:
        """A VM record with every field a real one has (about 3 KB serialized)."""
        kind = "control_domain" if control_domain else "template" if template else ""
        memory = "4294967296" if not control_domain else "8589934592"
        return {
            "uuid": vm_uuid, "allowed_operations": list(ALLOWED_OPERATIONS.get(kind, [])),
            "current_operations": {}, "name_label": name,
            "name_description": "" if not template else "Template installed by the simulator",
            "power_state": "Halted", "user_version": "1", "is_a_template": template,
            "is_default_template": template and snapshot_of is None,
            "suspend_VDI": NULL_REF, "resident_on": NULL_REF,
            "scheduled_to_be_resident_on": NULL_REF, "affinity": NULL_REF,
            "memory_overhead": "41943040", "memory_target": "0",
            "memory_static_max": memory, "memory_dynamic_max": memory,
            "memory_dynamic_min": memory, "memory_static_min": "1073741824",
            "VCPUs_params": {}, "VCPUs_max": "2", "VCPUs_at_startup": "2",
            "actions_after_softreboot": "soft_reboot", "actions_after_shutdown": "destroy",
            "actions_after_reboot": "restart", "actions_after_crash": "restart",
            "consoles": [] if template else [new_ref()],
            "VIFs": [] if template else [new_ref()],
            "VBDs": [new_ref(), new_ref()] if not control_domain else [],
            "VUSBs": [], "crash_dumps": [], "VTPMs": [],
            "PV_bootloader": "", "PV_kernel": "", "PV_ramdisk": "", "PV_args": "",
            "PV_bootloader_args": "", "PV_legacy_args": "",
            "HVM_boot_policy": "" if control_domain else "BIOS order",
            "HVM_boot_params": {} if control_domain else {"order": "cdn", "firmware": "bios"},
            "HVM_shadow_multiplier": 1.0,
            "platform": {} if control_domain else {
                "timeoffset": "0", "device-model": "qemu-upstream-compat", "videoram": "8",
                "hpet": "true", "secureboot": "false", "vga": "std", "apic": "true",
                "viridian": "false", "nx": "true", "pae": "true", "cores-per-socket": "1",
                "acpi": "1"},
            "PCI_bus": "", "other_config": {} if control_domain else {
                "base_template_name": "Debian Bookworm 12", "import_task": NULL_REF,
                "mac_seed": new_uuid(), "install-methods": "cdrom,nfs,http,ftp",
                "linux_template": "true"},
            "domid": "-1", "domarch": "", "last_boot_CPU_flags": {} if template else {
                "vendor": "GenuineIntel",
                "features": "1fcbfbff-f7fa3223-2d93fbff-00000023-00000001-000007ab-00000000"},
            "is_control_domain": control_domain, "metrics": new_ref(),
            "guest_metrics": NULL_REF if template else new_ref(), "last_booted_record": "",
            "recommendations": "" if control_domain else RECOMMENDATIONS,
            "xenstore_data": {} if control_domain else {
                "vm-data": "", "vm-data/mmio-hole-size": "268435456"},
            "ha_always_run": False, "ha_restart_priority": "",
            "is_a_snapshot": snapshot_of is not None,
            "snapshot_of": snapshot_of or NULL_REF, "snapshots": [],
            "snapshot_time": now() if snapshot_of else EPOCH,
            "transportable_snapshot_id": "", "blobs": {}, "tags": [],
            "blocked_operations": {}, "snapshot_info": {}, "snapshot_metadata": "",
            "parent": NULL_REF, "children": [], "bios_strings": {} if template else {
                "bios-vendor": "Xen", "bios-version": "", "system-manufacturer": "Xen",
                "system-product-name": "HVM domU", "system-version": "",
                "system-serial-number": "", "baseboard-manufacturer": "",
                "hp-rombios": "", "oem-1": "Xen",
                "oem-2": "MS_VM_CERT/SHA1/bdbeb6e0a816d43fa6d3fe8aaef04c2bad9d3e3d"},
            "protection_policy": NULL_REF, "is_snapshot_from_vmpp": False,
            "snapshot_schedule": NULL_REF, "is_vmss_snapshot": False, "appliance": NULL_REF,
            "start_delay": "0", "shutdown_delay": "0", "order": "0", "VGPUs": [],
            "attached_PCIs": [], "suspend_SR": NULL_REF, "version": "0",
            "generation_id": "0:0", "hardware_platform_version": "0",
            "has_vendor_device": False, "requires_reboot": False, "reference_label": "",
            "domain_type": "pv" if control_domain else "hvm", "NVRAM": {},
            "pending_guidances": [], "pending_guidances_recommended": [],
            "pending_guidances_full": [],
        }

    def _host_ref(self, host: str) -> str:
        if host in self.tables["host"].records:
            return host
        for ref, record in self.tables["host"].records.items():
            if host in (record["name_label"], record["address"]):
                return ref
        raise LookupError(f"no host {host!r}")

    def _place(self, ref: str, state: str, host: Optional[str] = None) -> None:
        """Set a VM's power state and where it resides (a domain exists only when Running or
        Paused), keeping the hosts' resident_VMs lists in step."""
        vm = self.tables["VM"].records[ref]
        old_host = vm["resident_on"]
        if state in ("Running", "Paused"):
            new_host = host or (old_host if old_host != NULL_REF else self._start_host(vm))
        else:
            new_host = NULL_REF
        hosts = self.tables["host"]
        if old_host != new_host:
            if old_host in hosts.records:
                hosts.update(old_host, resident_VMs=[
                    r for r in hosts.records[old_host]["resident_VMs"] if r != ref])
            if new_host in hosts.records:
                hosts.update(new_host, resident_VMs=[*hosts.records[new_host]["resident_VMs"],
                                                     ref])
        domid = vm["domid"]
        if new_host == NULL_REF:
            domid = "-1"
        elif vm["is_control_domain"]:
            domid = "0"
        elif domid == "-1":
            domid = str(self._next_domid)
            self._next_domid += 1
        kind = ("control_domain" if vm["is_control_domain"]
                else "template" if vm["is_a_template"] else state)
        self.tables["VM"].update(ref, power_state=state, resident_on=new_host, domid=domid,
                                 allowed_operations=list(ALLOWED_OPERATIONS[kind]))

    def _start_host(self, vm: Record) -> str:
        affinity = vm["affinity"]
        if affinity in self.tables["host"].records and self._host_live(affinity):
            return affinity
        return self.master_ref

    def _host_live(self, host_ref: str) -> bool:
        metrics = self.tables["host"].records[host_ref]["metrics"]
        return bool(self.tables["host_metrics"].records[metrics]["live"])

    def _set_live(self, ref: str, live: bool) -> None:
        metrics = self.tables["host"].records[ref]["metrics"]
        self.tables["host_metrics"].update(metrics, live=live)

    # -- in-process queries and counters (tests, SimHandle, the control plane) ----------------

    @property
    def vms(self) -> Dict[str, Record]:
        """The VM records by ref, live: read under `lock`, never change them in place."""
        return self.tables["VM"].records

    def vm_ref(self, name_or_uuid: str) -> str:
        """The VM with this UUID or name; among several with a name, the only real VM (a
        template can share a real VM's name). LookupError if none or ambiguous."""
        with self.lock:
            table = self.tables["VM"]
            if name_or_uuid in table.by_uuid:
                return table.by_uuid[name_or_uuid]
            named = [ref for ref, vm in table.records.items() if vm["name_label"] == name_or_uuid]
            if len(named) > 1:
                named = [ref for ref in named if not _is_special(table.records[ref])]
            if len(named) != 1:
                raise LookupError(f"{len(named)} VMs named {name_or_uuid!r}")
            return named[0]

    @property
    def sessions(self) -> Dict[str, _SessionInfo]:
        """The open sessions by ref, live: read under `lock`."""
        return self._sessions

    def vm(self, name_or_uuid: str) -> Record:
        """A copy of the VM's current record."""
        with self.lock:
            self._refresh_liveness()
            return _copy_record(self.tables["VM"].records[self.vm_ref(name_or_uuid)])

    def vm_records(self) -> List[Record]:
        """Copies of every VM record (templates, snapshots and control domains included)."""
        with self.lock:
            self._refresh_liveness()
            return [_copy_record(vm) for vm in self.tables["VM"].records.values()]

    def uuid(self, name: str) -> str:
        return str(self.vm(name)["uuid"])

    def power_state(self, name_or_uuid: str) -> str:
        return str(self.vm(name_or_uuid)["power_state"])

    def set_power_state(self, name_or_uuid: str, state: str) -> None:
        """Force a power state (no power log, no hooks), as if changed behind XAPI's back."""
        if state not in POWER_STATES:
            raise ValueError(f"bad power state {state!r}")
        with self.lock:
            self._place(self.vm_ref(name_or_uuid), state)

    def set_vm(self, name_or_uuid: str, **changes: Any) -> None:
        """Set record fields with XAPI's wire types: shutdown_delay="25", start_delay="3",
        blocked_operations={"hard_shutdown": "reason"}, other_config={"a&b": "x"}, ..."""
        with self.lock:
            ref = self.vm_ref(name_or_uuid)
            record = self.tables["VM"].records[ref]
            unknown = set(changes) - set(record)
            if unknown:
                raise KeyError(f"VM records have no field {sorted(unknown)}")
            self.tables["VM"].update(ref, **changes)

    def set_power_duration(self, name_or_uuid: str, op: str, seconds: float,
                           cancellable: bool = True) -> None:
        """The operation `op` on this VM really takes `seconds`: the VM keeps its state that
        long before it changes. task.cancel stops it unless cancellable is False
        (xapi_xenops.ml sync_with_task passes the cancel to xenopsd, which honours it only at
        its cancel points: a domain stuck in destruction ignores it)."""
        if op not in POWER_OPS:
            raise ValueError(f"unknown power operation {op!r}")
        with self.lock:
            self._power_durations[(self.vm_ref(name_or_uuid), op)] = (float(seconds),
                                                                     bool(cancellable))

    def on_power(self, callback: Optional[PowerCallback]) -> None:
        """callback(vm name, op, phase) runs in the serving thread, outside the lock, with
        phase "before" (checks passed, nothing changed) and "after" (state changed and
        logged, before the call answers). None removes it."""
        with self.lock:
            self._on_power = callback

    def set_ha(self, enabled: bool) -> None:
        """pool.ha_enabled (pool.get_ha_enabled)."""
        with self.lock:
            self.tables["pool"].update(self.pool_ref, ha_enabled=bool(enabled))

    def count(self, method: str) -> None:
        """Count one XAPI request (the server calls this for every request it reads)."""
        with self.lock:
            self._total += 1
            self._requests[method] = self._requests.get(method, 0) + 1

    def requests(self) -> Dict[str, int]:
        with self.lock:
            return dict(self._requests)

    def total_requests(self) -> int:
        with self.lock:
            return self._total

    def counters(self) -> Dict[str, Any]:
        with self.lock:
            return {"requests": dict(self._requests), "total": self._total,
                    "sessions_open": len(self._sessions), "logins": self._logins,
                    "logouts": self._logouts, "tasks_open": len(self.tables["task"].records)}

    def reset_counters(self) -> None:
        """Zero the request counters, logins, logouts and the power log."""
        with self.lock:
            self._requests.clear()
            self._total = self._logins = self._logouts = 0
            self._power_log.clear()

    def sessions_open(self) -> int:
        with self.lock:
            return len(self._sessions)

    def issued_sessions(self) -> List[str]:
        """Every session ref ever handed out, logged out or not."""
        with self.lock:
            return list(self._issued_sessions)

    def expire_sessions(self) -> None:
        """Forget every session, as a pool does after a restart."""
        with self.lock:
            for ref in list(self._sessions):
                self._destroy_session(ref)

    def _destroy_session(self, ref: str) -> None:
        if self._sessions.pop(ref, None) is not None:
            self.tables["session"].remove(ref)

    def tasks_open(self) -> int:
        with self.lock:
            return len(self.tables["task"].records)

    def power_log(self) -> List[Tuple[str, str]]:
        with self.lock:
            self._refresh_liveness()
            return list(self._power_log)

    def certificate_of(self, address: str) -> Optional[bytes]:
        """The DER certificate of the host at `address` (None: no such host, or HTTP)."""
        with self.lock:
            for ref, record in self.tables["host"].records.items():
                if record["address"] == address:
                    return self.host_states[ref].certificate
            return None

    def register_server(self, server: SimServer) -> None:
        with self.lock:
            self._servers.append(server)

    def _broadcast_op_end(self) -> None:
        """helpers.ml Early_wakeup.broadcast: every call waiting to retry checks again."""
        with self._op_ended:
            self._op_ends += 1
            self._op_ended.notify_all()

    def close(self) -> None:
        """Release power operations waiting out an injected delay (the servers are going)."""
        self._closing.set()
        self._broadcast_op_end()
        with self.lock:
            for event in self._op_cancels.values():
                event.set()
            for state in self.host_states.values():
                state.up.set()

    # -- degraded pools: hosts that fail, liveness, master failover ---------------------------

    def set_host_live(self, name: str, live: bool) -> None:
        """Force a host's live flag. live=True also brings the host up (host_up); live=False
        leaves it answering: a network split marks a host dead while it runs its VMs."""
        with self.lock:
            ref = self._host_ref(name)
            if live:
                self.host_up(ref)
            self._set_live(ref, bool(live))

    def set_emergency(self, host: str, error: Optional[Sequence[str]]) -> None:
        """The host is in emergency mode (it restarted while the master was unreachable):
        every call but the emergency calls answers `error`, e.g. ["HOST_STILL_BOOTING"] or
        ["HOST_HAS_NO_MANAGEMENT_IP"] (xapi.ml set_emergency_mode_error; api_server.ml
        callback1 raises it before dispatch, logins included). None ends it."""
        with self.lock:
            state = self.host_states[self._host_ref(host)]
            state.emergency = [str(item) for item in error] if error is not None else None

    def set_master_address(self, host: str, address: Optional[str]) -> None:
        """The address this member answers in HOST_IS_SLAVE (Pool_role.get_master_address:
        its own idea of the master); None: the pool master's. Chains and loops of redirects."""
        with self.lock:
            self.host_states[self._host_ref(host)].master_address = address

    def host_down(self, host: str, mode: str = "refuse") -> None:
        """The host stops answering: its servers refuse connections ("refuse") or accept them
        and never answer ("hang"); calls forwarded to it fail with CANNOT_CONTACT_HOST or hang
        (message_forwarding.ml do_op_on_common); its heartbeat stops, so the live flag turns
        false after the liveness window (see Settings)."""
        if mode not in ("refuse", "hang"):
            raise ValueError(f"bad mode {mode!r}: refuse or hang")
        with self.lock:
            ref = self._host_ref(host)
            state = self.host_states[ref]
            state.down = mode
            state.up.clear()
            if state.heartbeat_lost is None:
                state.heartbeat_lost = time.monotonic()
            servers = [server for server in self._servers if server.host_ref == ref]
        for server in servers:
            server.go_down(mode)

    def host_up(self, host: str) -> None:
        """The host answers again; its heartbeat resumes and it is live again
        (db_gc.ml check_host_liveness sets live back when the heartbeat returns)."""
        with self.lock:
            ref = self._host_ref(host)
            state = self.host_states[ref]
            was_down = state.down is not None or state.heartbeat_lost is not None
            state.down = None
            state.heartbeat_lost = None
            state.up.set()
            if was_down:
                self._set_live(ref, True)
            servers = [server for server in self._servers if server.host_ref == ref]
        for server in servers:
            server.come_up()

    def promote(self, host: str) -> None:
        """`host` becomes the master (pool.designate_new_master or
        emergency_transition_to_master). Members redirect to it (explicit
        set_master_address overrides are cleared). Sessions and tasks are forgotten: the
        session and task classes are PersistNothing in datamodel.ml, so the new master's
        database holds none and old refs answer SESSION_INVALID / HANDLE_INVALID."""
        with self.lock:
            ref = self._host_ref(host)
            self.master_ref = ref
            self.tables["pool"].update(self.pool_ref, master=ref)
            for state in self.host_states.values():
                state.master_address = None
            for session in list(self._sessions):
                self._destroy_session(session)
            for task in list(self.tables["task"].records):
                self.tables["task"].remove(task)

    def fail_master(self, new_master: Optional[str] = None, mode: str = "refuse") -> None:
        """The master goes away (host_down), then `new_master` (if given) is promoted."""
        with self.lock:
            old = self.master_ref
        self.host_down(old, mode)
        if new_master is not None:
            self.promote(new_master)

    def master_address(self) -> str:
        with self.lock:
            self._refresh_liveness()
            return str(self.tables["host"].records[self.master_ref]["address"])

    def _refresh_liveness(self) -> None:
        """Mark hosts whose heartbeat stopped long enough ago not live (db_gc.ml
        check_host_liveness without HA; with HA the host has fenced itself and XAPI resets
        its running VMs: xapi_ha_vm_failover.ml)."""
        ha = bool(self.tables["pool"].records[self.pool_ref]["ha_enabled"])
        window = self.settings.ha_liveness_window if ha else self.settings.liveness_window
        moment = time.monotonic()
        master = self.host_states.get(self.master_ref)
        if (ha and self.settings.ha_promotes and master is not None
                and master.heartbeat_lost is not None
                and moment - master.heartbeat_lost >= window):
            # xapi_ha.ml on_master_failure: the members left in the live set propose
            # themselves (ha_propose_master); one wins and becomes master. Assumption: the
            # first live, answering member by name wins.
            candidates = sorted(
                (record["name_label"], ref) for ref, record in self.tables["host"].records.items()
                if ref != self.master_ref and self._host_live(ref)
                and self.host_states[ref].down is None
                and self.host_states[ref].emergency is None)
            if candidates:
                self.promote(candidates[0][1])
        for ref, state in self.host_states.items():
            if (state.heartbeat_lost is None or moment - state.heartbeat_lost < window
                    or ref == self.master_ref or not self._host_live(ref)):
                continue
            self._set_live(ref, False)
            if ha and self.settings.ha_resets_vms:
                for vm_ref in list(self.tables["host"].records[ref]["resident_VMs"]):
                    vm = self.tables["VM"].records[vm_ref]
                    if not vm["is_control_domain"] and vm["power_state"] in ("Running",
                                                                              "Paused"):
                        self._place(vm_ref, "Halted")
                        self._power_log.append((vm["uuid"], "ha_reset"))


def _is_special(record: Record) -> bool:
    return bool(record["is_a_template"] or record["is_a_snapshot"]
                or record["is_control_domain"])


def _copy_record(record: Record) -> Record:
    return {key: (value.copy() if isinstance(value, (dict, list)) else value)
            for key, value in record.items()}


# ---------------------------------------------------------------------------------------------
# 3. XAPI classes
# What XAPI does with a call: dispatch (api_server.ml, rbac.ml), session (xapi_session.ml),
# VM queries (db_filter*.ml) and power (message_forwarding.ml, xapi_vm.ml,
# xapi_vm_lifecycle.ml), task; host, host_metrics and pool are served by the generic
# getters (get_record, get_all, get_<field>, ...).
# ---------------------------------------------------------------------------------------------


Predicate = Callable[[Record], bool]


# Fields whose database column has a namespace (name.label -> name__label); others keep their name.
_NAMESPACED_PREFIXES = ("name_", "memory_static", "memory_dynamic", "VCPUs_", "HVM_", "PV_",
                        "actions_after_")


def field_column(key: str) -> str:
    """The database column XAPI's query language knows a record field by."""
    for prefix in _NAMESPACED_PREFIXES:
        if key.startswith(prefix):
            return prefix.rstrip("_") + "__" + key[len(prefix):].lstrip("_")
    return key


def field_text(value: Any) -> str:
    """A field as the database stores it: what `field "x"="..."` compares against."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _QueryParser:
    """XAPI's query language as its yacc grammar has it (ocaml/database/db_filter_parse.mly,
    db_filter_lex.mll): `value = value`, `true`, `false`, parentheses, `and` and `or` with
    EQUAL precedence, left-associative (`a or b and c` is `(a or b) and c`), and `not` binding
    loosest (`not a and b` is `not (a and b)`). A value is `field "column"` or a "literal"
    (no escapes). A syntax error is INVALID_VALUE [expr, exception] (exnHelper.ml
    Expression_error); a field the record lacks is INTERNAL_ERROR ["missing field", column, ""]
    when evaluated (db_cache_types.ml), and evaluation short-circuits (db_filter.ml)."""

    KEYWORDS = ("true", "false", "field", "and", "or", "not")

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: List[Tuple[str, str]] = []
        position = 0
        while position < len(text):
            char = text[position]
            if char in " \t\n":  # db_filter_lex.mll skips only these
                position += 1
            elif char in "=()":
                self.tokens.append(("punct", char))
                position += 1
            elif char == '"':
                end = text.find('"', position + 1)
                if end < 0:
                    raise self.lexing_error()
                self.tokens.append(("string", text[position + 1:end]))
                position = end + 1
            else:
                keyword = next((word for word in self.KEYWORDS
                                if text.startswith(word, position)), None)
                if keyword is None:
                    raise self.lexing_error()
                self.tokens.append(("word", keyword))
                position += len(keyword)
        self.position = 0

    def lexing_error(self) -> XapiError:
        return XapiError("INVALID_VALUE", self.text, 'Failure("lexing: empty token")')

    def error(self) -> XapiError:
        # assumption: OCaml >= 4.07 prints Parsing.Parse_error with its Stdlib prefix
        return XapiError("INVALID_VALUE", self.text, "Stdlib.Parsing.Parse_error")

    def peek(self) -> Tuple[str, str]:
        return self.tokens[self.position] if self.position < len(self.tokens) else ("end", "")

    def take(self, kind: str, text: Optional[str] = None) -> str:
        token_kind, token_text = self.peek()
        if token_kind != kind or (text is not None and token_text != text):
            raise self.error()
        self.position += 1
        return token_text

    def parse(self) -> Predicate:
        predicate = self.expression()
        self.take("end")
        return predicate

    def expression(self) -> Predicate:
        """`not` takes everything to its right (lowest precedence); otherwise a chain of
        and/or, folded left to right."""
        if self.peek() == ("word", "not"):
            self.position += 1
            inner = self.expression()
            return lambda record: not inner(record)
        left = self.atom()
        while self.peek() in (("word", "and"), ("word", "or")):
            operator = self.take("word")
            right = self.expression() if self.peek() == ("word", "not") else self.atom()
            left = _combine(operator, left, right)
        return left

    def atom(self) -> Predicate:
        token = self.peek()
        if token in (("word", "true"), ("word", "false")):
            self.position += 1
            constant = token[1] == "true"
            return lambda record: constant
        if token == ("punct", "("):
            self.position += 1
            inner = self.expression()
            self.take("punct", ")")
            return inner
        left = self.operand()
        self.take("punct", "=")
        right = self.operand()
        return lambda record: left(record) == right(record)

    def operand(self) -> Callable[[Record], str]:
        if self.peek() == ("word", "field"):
            self.position += 1
            column = self.take("string")
            key = column.replace("__", "_")

            def get(record: Record) -> str:
                if key not in record or field_column(key) != column:
                    raise XapiError("INTERNAL_ERROR", "missing field", column, "")
                return field_text(record[key])

            return get
        literal = self.take("string")
        return lambda record: literal


def _combine(operator: str, left: Predicate, right: Predicate) -> Predicate:
    if operator == "and":
        return lambda record: left(record) and right(record)
    return lambda record: left(record) or right(record)


@functools.lru_cache(maxsize=256)
def compile_query(text: str) -> Predicate:
    """A predicate over records for one expression of XAPI's query language."""
    return _QueryParser(text).parse()


parse_expression = compile_query


@dataclass
class _Call:
    """What a method handler knows about the call it serves."""

    method: str
    session: str
    role: str
    host: str
    wire: str = "xml"  # "json": the answer goes out as JSON-RPC (records as values, not XML)


Handler = Callable[..., Any]


class Simulator(PoolModel):
    """A pool that answers XAPI calls: `call(method, params, host_ref)` serves one call as
    the pool host `host_ref` would (SimServer calls it for every request)."""

    def __init__(self) -> None:
        super().__init__()
        self._methods = self._method_table()

    # -- dispatch (api_server.ml callback1, rbac.ml) ------------------------------------------

    def call(self, method: str, params: Sequence[Any], host_ref: str,
             wire: str = "xml") -> Any:
        """Serve one XAPI call on host `host_ref`: returns its Value (bytes: an already
        serialized <value>) or raises XapiError. `wire` "json": values instead of XML."""
        with self.lock:
            state = self.host_states.get(host_ref)
            if state is not None and state.emergency is not None and (
                    method not in EMERGENCY_CALLS):
                raise XapiError(*state.emergency)  # api_server.ml callback1
            self._refresh_liveness()
        if method == "system.listMethods":  # gen_server.ml dispatch_call: no session
            return self.list_methods()
        name = self._wire_name(method)
        entry = self._methods.get(name) or self._generic_method(name)
        if entry is None:
            raise XapiError("MESSAGE_METHOD_UNKNOWN", method)
        handler, (fewest, most), needs_session = entry
        if not fewest <= len(params) <= most:
            # gen_server.ml: Server_helpers.parameter_count_mismatch_failure with the count of
            # the message's parameters without default values, and the count received, both
            # without the session, under the name as sent (Async. taken off), as strings.
            skip = 1 if needs_session else 0
            raise XapiError("MESSAGE_PARAMETER_COUNT_MISMATCH", method[len("Async."):]
                            if method.startswith("Async.") else method,
                            str(fewest - skip), str(len(params) - skip))
        with self.lock:
            if needs_session:
                info = self._sessions.get(params[0]) if isinstance(params[0], str) else None
                if info is None:
                    raise XapiError("SESSION_INVALID", params[0])
                session, role = params[0], info.role
                args = params[1:]
            else:
                session, role, args = NULL_REF, "", params
            queue = self.faults.fail_next.get(name)
            if queue:
                description = queue.pop(0)
                if description and description[0] == "SESSION_INVALID" and needs_session:
                    self._destroy_session(session)
                    if len(description) == 1:  # XAPI names the session it refused
                        # (ocaml/xapi/session_check.ml: session_invalid, [session_id])
                        description = [*description, session]
                raise XapiError(*description)
            if needs_session:
                self._check_role(name, role)
        return handler(_Call(name, session, role, host_ref, wire), *args)

    def _wire_name(self, method: str) -> str:
        """gen_server.ml matches each message under its wire name and its alternative one
        (datamodel_utils.ml alternative_wire_name: `VM_get_all` for `VM.get_all`), after
        server_helpers.ml sync_ty_and_maybe_remove_prefix took "Async." off (so
        `Async.VM_start` works, `Async_VM_start` does not)."""
        prefix = "Async." if method.startswith("Async.") else ""
        name = method[len(prefix):]
        if "." in name:
            return method
        for class_name in sorted(self._classes(), key=len, reverse=True):
            if name.startswith(class_name + "_"):
                dotted = f"{prefix}{class_name}.{name[len(class_name) + 1:]}"
                if dotted in self._methods or self._generic_method(dotted) is not None:
                    return dotted
        return method

    def _classes(self) -> List[str]:
        return [*self.tables, "event"]

    def list_methods(self) -> List[str]:
        """gen_server.ml "system.listMethods": every message's synchronous wire name (the
        simulator's: only the messages it serves; assumption that a client wants no more)."""
        names = [name for name in self._methods if not name.startswith("Async.")]
        with self.lock:
            for class_name, table in self.tables.items():
                generic = ["get_record", "get_by_uuid"]
                if class_name in GET_ALL_EXPOSED:
                    generic += ["get_all", "get_all_records"]
                if "name_label" in table.fields:
                    generic.append("get_by_name_label")
                generic += [f"get_{key}" for key in sorted(table.fields)]
                names += [f"{class_name}.{name}" for name in generic]
        return names

    @staticmethod
    def _needed_role(name: str) -> str:
        """The least role allowed to call `name` (a synchronous call's name): datamodel_vm.ml
        allowed_roles (_R_VM_OP, _R_POOL_OP); everything else the simulator serves is
        _R_READ_ONLY (datamodel_common.ml: implicit getters default to _R_ALL)."""
        class_name, _, op = name.partition(".")
        if class_name != "VM":
            return "read-only"
        return ("pool-operator" if op == "power_state_reset"
                else "vm-operator" if op in VM_OPERATOR_OPS else "read-only")

    def role_permissions(self, role: str) -> List[str]:
        """A directory user's session.rbac_permissions as XAPI computes them at login
        (xapi_session.ml get_permissions: for each of the subject's roles its name_label and
        its permissions, Xapi_role.get_permissions_name_label): the permission of a call is
        its name in lower case (rbac.ml permission_of_action, gen_rbac.ml writer_permission).
        Here: every call the simulator serves that `role` may make (Async. calls share their
        synchronous call's permission)."""
        names = {name for name in self._methods
                 if name != LOGIN and not name.startswith("Async.")}
        for class_name, table in self.tables.items():
            getters = ["get_all", "get_all_records", "get_record", "get_by_uuid",
                       *(f"get_{field_name}" for field_name in table.fields)]
            if "name_label" in table.fields:
                getters.append("get_by_name_label")
            names.update(f"{class_name}.{getter}" for getter in getters)
        rank = ROLES.index(role)
        return [role, *sorted(name.lower() for name in names
                              if ROLES.index(self._needed_role(name)) <= rank)]

    @classmethod
    def _check_role(cls, method: str, role: str) -> None:
        """RBAC for external users (rbac.ml check, disallowed_permission_exn): the permission
        is the synchronous call's name in lowercase; the message lists the roles that hold it,
        strongest first (datamodel_roles.ml roles_gte; assumption: the role table is read in
        that order). The local superuser has role "" and passes."""
        name = method[len("Async."):] if method.startswith("Async.") else method
        if not role:
            return
        needed = cls._needed_role(name)
        if ROLES.index(role) < ROLES.index(needed):
            holders = ", ".join(reversed(ROLES[ROLES.index(needed):]))
            raise XapiError("RBAC_PERMISSION_DENIED", name.lower(),
                            f"No permission in user session. (Roles with this permission: "
                            f"{holders})")

    def _method_table(self) -> Dict[str, Tuple[Handler, Tuple[int, int], bool]]:
        table: Dict[str, Tuple[Handler, Tuple[int, int], bool]] = {
            LOGIN: (self._login, (2, 4), False),
            "session.logout": (self._logout, (1, 1), True),
            "VM.get_all_records_where": (self._vm_records_where, (2, 2), True),
            "task.cancel": (self._task_cancel, (2, 2), True),
            "task.destroy": (self._task_destroy, (2, 2), True),
            "event.from": (self._event_from, (4, 4), True),
            "event.inject": (self._event_inject, (3, 3), True),
        }
        for op in POWER_OPS:
            count = POWER_OP_ARGS.get(op, 2)
            table[f"VM.{op}"] = (functools.partial(self._power_sync, op), (count, count), True)
            table[f"Async.VM.{op}"] = (functools.partial(self._power_async, op),
                                       (count, count), True)
        return table

    def _generic_method(self, method: str) -> Optional[Tuple[Handler, Tuple[int, int], bool]]:
        """get_all, get_all_records, get_record, get_by_uuid, get_by_name_label and one
        getter per field, for every class."""
        class_name, _, name = method.partition(".")
        table = self.tables.get(class_name)
        if table is None:
            return None
        generic: Dict[str, Tuple[Handler, int]] = {
            "get_record": (lambda call, ref: self._encoded_record(table, ref, call.wire), 2),
            "get_by_uuid": (lambda call, value: self._by_uuid(table, value), 2),
        }
        if class_name in GET_ALL_EXPOSED:
            generic["get_all"] = (lambda call: list(table.records), 1)
            generic["get_all_records"] = (
                lambda call: _records_map(call, table, list(table.records)), 1)
        if "name_label" in table.fields:
            generic["get_by_name_label"] = (
                lambda call, label: [ref for ref, record in table.records.items()
                                     if record["name_label"] == label], 2)
        if name in generic:
            handler, count = generic[name]
            return self._locked(handler), (count, count), True
        key = name[len("get_"):]
        if name.startswith("get_") and key in table.fields:
            return self._locked(lambda call, ref: table.get(ref)[key]), (2, 2), True
        return None

    def _locked(self, handler: Handler) -> Handler:
        def run(*args: Any) -> Any:
            with self.lock:
                return handler(*args)
        return run

    @staticmethod
    def _encoded_record(table: _Table, ref: Any, wire: str = "xml") -> Any:
        record = table.get(ref)
        return _json_record(table.name, record) if wire == "json" else table.encoded(ref)

    @staticmethod
    def _by_uuid(table: _Table, value: Any) -> str:
        ref = table.by_uuid.get(value) if isinstance(value, str) else None
        if ref is None:
            raise XapiError("UUID_INVALID", table.name, value)
        return ref

    # -- session (xapi_session.ml, db_gc_util.ml) ---------------------------------------------

    def _login(self, call: _Call, user: Any, password: Any, version: Any = "1.0",
               originator: Any = "") -> str:
        """xapi_session.ml login_with_password: a member answers HOST_IS_SLAVE [the master
        address it believes in] before looking at the credentials; a refusal answers only
        after thread_delay_and_raise_error's pause (settings.auth_failure_delay); an external
        user's accepted login takes its directory round trip."""
        with self.lock:
            if call.host != self.master_ref:
                state = self.host_states.get(call.host)
                address = (state.master_address if state and state.master_address
                           else self.tables["host"].records[self.master_ref]["address"])
                raise XapiError("HOST_IS_SLAVE", address)
            known = self.users.get(user) if isinstance(user, str) else None
            accepted = known is not None and known.password == password
            delay = (self.settings.auth_failure_delay if not accepted
                     else 0.0 if user == LOCAL_SUPERUSER
                     else known.login_delay if known is not None and known.login_delay is not None
                     else self.settings.external_login_delay)
        if delay > 0 and self._closing.wait(delay):
            raise XapiError("INTERNAL_ERROR", "xapi is shutting down")
        if not accepted or known is None:
            raise XapiError("SESSION_AUTHENTICATION_FAILED", user, "Authentication failure")
        with self.lock:
            superuser = user == LOCAL_SUPERUSER
            originator = str(originator)
            self._trim_sessions(str(user), superuser, originator)
            ref = new_ref()
            self._sessions[ref] = _SessionInfo(user, "" if superuser else known.role,
                                               originator)
            self._issued_sessions.append(ref)
            self._logins += 1
            # xapi_session.ml: root's session is the local superuser's with no permissions
            # listed (rbac.ml lets it do everything); a directory user's lists its role's.
            record = {
                "uuid": new_uuid(), "this_host": call.host, "this_user": NULL_REF,
                "last_active": now(), "pool": False, "other_config": {},
                "is_local_superuser": superuser, "subject": NULL_REF,
                "validation_time": now(), "auth_user_sid": "" if superuser else f"S-1-5-{user}",
                "auth_user_name": user,
                "rbac_permissions": [] if superuser else self.role_permissions(known.role),
                "tasks": [], "parent": NULL_REF,
                "originator": originator, "client_certificate": False}
            if not self.settings.session_rbac_fields:
                del record["is_local_superuser"], record["rbac_permissions"]
            self.tables["session"].add(ref, record)
            return ref

    def _trim_sessions(self, user: str, superuser: bool, originator: str) -> None:
        """db_gc_util.ml timeout_sessions: root's sessions are grouped by originator (those
        without one share the "anonymous" group, limit max_sessions); any other user's are
        grouped by user name whatever the originator. Beyond the limit the least recently
        used go (XAPI trims every ~30 s; the simulator at login: assumption)."""
        def group(info: _SessionInfo) -> Tuple[str, str]:
            if info.user in ("", LOCAL_SUPERUSER):
                return ("originator", info.originator) if info.originator else ("anon", "")
            return ("user", info.user)

        mine = group(_SessionInfo(user, "", originator))
        limit = self.anonymous_session_limit if mine[0] == "anon" else self.session_limit
        same = [ref for ref, info in self._sessions.items() if group(info) == mine]
        for ref in same[:max(0, len(same) - limit + 1)]:
            self._destroy_session(ref)

    def _logout(self, call: _Call) -> str:
        with self.lock:
            self._destroy_session(call.session)
            self._logouts += 1
            return ""

    # -- VM: queries --------------------------------------------------------------------------

    def _vm_records_where(self, call: _Call, expression: Any) -> bytes:
        predicate = compile_query(str(expression))
        with self.lock:
            table = self.tables["VM"]
            return _records_map(call, table, [ref for ref, vm in table.records.items()
                                              if predicate(vm)])

    # -- VM: power (message_forwarding.ml, xapi_vm.ml, xapi_vm_lifecycle.ml) ------------------

    def _power_sync(self, op: str, call: _Call, vm_ref: Any, *args: Any) -> str:
        """A synchronous call leaves no task behind (its internal task is destroyed when it
        ends: server_helpers.ml) and runs to completion even if the client hangs up (XAPI
        does not watch the connection)."""
        return self._power(op, call, vm_ref, args, new_ref())

    def _power_async(self, op: str, call: _Call, vm_ref: Any, *args: Any) -> str:
        with self.lock:
            task_ref = new_ref()
            self.tables["task"].add(task_ref, {
                "uuid": new_uuid(), "name_label": call.method, "name_description": "",
                "allowed_operations": ["cancel"], "current_operations": {}, "created": now(),
                "finished": EPOCH, "status": "pending", "resident_on": call.host,
                "progress": 0.0, "type": "<none/>", "result": "", "error_info": [],
                "other_config": {}, "subtask_of": NULL_REF, "subtasks": [],
                "backtrace": "()", "forwarded": False, "forwarded_to": NULL_REF})
            self._op_cancels[task_ref] = threading.Event()
        threading.Thread(target=self._run_task, args=(task_ref, op, call, vm_ref, args),
                         name=f"xapisim {call.method}", daemon=True).start()
        return task_ref

    def _check_operation(self, op: str, vm_ref: str, vm: Record) -> None:
        """xapi_vm_lifecycle.ml check_operation_error, in its order: blocked_operations,
        power state, operations in progress, template, snapshot, control domain."""
        blocked = vm.get("blocked_operations", {}).get(op)  # older datamodels: none
        if blocked is not None:
            raise XapiError("OPERATION_BLOCKED", vm_ref, blocked)
        allowed = ALLOWED_POWER_STATES[op]
        if vm["power_state"] not in allowed:
            raise XapiError("VM_BAD_POWER_STATE", vm_ref,
                            ", ".join(state.lower() for state in allowed),
                            vm["power_state"].lower())
        current = vm["current_operations"]
        if current and not _allowed_concurrently(op, list(current.values())):
            if len(current) == 1:
                ((op_ref, other),) = current.items()
                raise XapiError("OTHER_OPERATION_IN_PROGRESS", "VM", vm_ref, other, op_ref)
            raise XapiError("OTHER_OPERATION_IN_PROGRESS", "VM", vm_ref,
                            "{" + ",".join(current.values()) + "}",
                            "{" + ",".join(current) + "}")
        if vm["is_a_template"] and not vm.get("is_a_snapshot"):
            raise XapiError("VM_IS_TEMPLATE", vm_ref, op)
        if vm.get("is_a_snapshot") and op != "hard_shutdown":
            raise XapiError("VM_IS_SNAPSHOT", vm_ref, op)
        if vm["is_control_domain"] and op != "start":
            raise XapiError("OPERATION_NOT_ALLOWED",
                            "This operation is not allowed on a control domain")

    def _forward(self, local: str, host: str, task_ref: str = NULL_REF) -> None:
        """message_forwarding.ml do_op_on: an operation on a VM resident on another host is
        refused with HOST_OFFLINE when that host is not live (check_live), else forwarded
        (set_forwarding_on_task marks its task forwarded_to the host): a host that refuses
        connections gives CANNOT_CONTACT_HOST (do_op_on_common), one that hangs keeps the
        call waiting until it answers again."""
        with self.lock:
            if host == local or host not in self.tables["host"].records:
                return
            if not self._host_live(host):
                raise XapiError("HOST_OFFLINE", host)
            if task_ref in self.tables["task"].records:
                self.tables["task"].update(task_ref, forwarded=True, forwarded_to=host)
            state = self.host_states[host]
            mode = state.down
            if mode is None and state.emergency is not None:
                # call_slave_with_session logs in on the member, which answers its
                # emergency-mode error (api_server.ml callback1): the caller gets it.
                raise XapiError(*state.emergency)
        if mode == "hang":
            state.up.wait()
            with self.lock:
                mode = state.down or ("refuse" if self._closing.is_set() else None)
        if mode is not None:
            raise XapiError("CANNOT_CONTACT_HOST", host)

    def _power(self, op: str, call: _Call, vm_ref: Any, args: Sequence[Any],
               op_ref: str) -> str:
        """xapi_vm_helpers.ml with_vm_operation runs its check in helpers.ml
        retry_with_global_lock: refused with OTHER_OPERATION_IN_PROGRESS, the call waits
        (Policy.wait under queue_thread) and checks again, and the caller sees the error only
        after the policy's max_total_wait (POWER_RETRY_POLICY: 2 h for every power call).
        Before each check a cancelled task ends with TASK_CANCELLED (retry: is_cancelling).
        A wait ends early when any VM operation ends (with_vm_operation's finally calls
        Early_wakeup.broadcast, which signals every waiter whatever its key); unlike XAPI,
        whose waiter registers only after its check failed, no wake-up is lost in between.
        settings.operation_retry_window scales the policy's times (7200: XAPI's);
        faults.refuse_busy_at_once answers the error at once."""
        if op == "power_state_reset":
            return self._power_state_reset(call, vm_ref)
        policy = POWER_RETRY_POLICY[op]
        scale = self.settings.operation_retry_window / POLICY_STANDARD.max_total_wait
        waited = 0.0
        while True:
            cancel = self._op_cancels.get(op_ref)
            if cancel is not None and cancel.is_set() and not self._closing.is_set():
                raise XapiError("TASK_CANCELLED", op_ref)
            with self._op_ended:
                ends = self._op_ends
            try:
                return self._power_once(op, call, vm_ref, args, op_ref)
            except XapiError as error:
                # Only the check raises it, before anything is marked or changed.
                if error.description[0] != "OTHER_OPERATION_IN_PROGRESS" or \
                        self.faults.refuse_busy_at_once or self._closing.is_set() or \
                        waited >= policy.max_total_wait * scale:
                    raise
            step = scale * random.uniform(policy.minimum_delay, policy.maximum_delay)
            started = time.monotonic()
            with self._op_ended:
                self._op_ended.wait_for(functools.partial(self._woken, ends), step)
            waited += time.monotonic() - started

    def _woken(self, ends: int) -> bool:
        """Early_wakeup: an operation ended since the check (or the pool is closing)."""
        return self._op_ends != ends or self._closing.is_set()

    def _power_once(self, op: str, call: _Call, vm_ref: Any, args: Sequence[Any],
                    op_ref: str) -> str:
        """message_forwarding.ml with_vm_operation + xapi_vm.ml: check, mark the operation
        in progress, cancel what hard_shutdown overrides, forward, wait out the operation's
        duration (cancellable), change the state, then sleep shutdown_delay/start_delay
        (xapi_vm_helpers.ml) before answering."""
        table = self.tables["VM"]
        with self.lock:
            vm = table.get(vm_ref)
            self._check_operation(op, vm_ref, vm)
            if op == "start" and not (len(args) > 1 and args[1] is True):
                _assert_memory_constraints(vm)
            current = {**vm["current_operations"], op_ref: op}
            table.update(vm_ref, current_operations=current)
            cancel = self._op_cancels.setdefault(op_ref, threading.Event())
            overridden = [ref for ref, other in current.items()
                          if ref != op_ref and other in CANCELLED_BY.get(op, ())]
            for ref in overridden:
                self._op_cancels.get(ref, threading.Event()).set()
            duration, cancellable = self._power_durations.get((vm_ref, op), (0.0, True))
            delay = self.faults.power_op_delay + duration
            if not cancellable:
                cancel = self._closing  # task.cancel cannot stop it; closing the pool can
            ignored = op == "hard_shutdown" and self.faults.ignore_hard_shutdown
            name = str(vm["name_label"])
            callback = self._on_power
            host = vm["resident_on"] if vm["power_state"] in ("Running", "Paused") else NULL_REF
        try:
            self._wait_for_operations(vm_ref, overridden)
            self._forward(call.host, host, op_ref)
            if callback is not None:
                callback(name, op, "before")
            if delay > 0 and cancel.wait(delay):
                raise XapiError("TASK_CANCELLED", op_ref)
            with self.lock:
                vm = table.get(vm_ref)
                was = vm["power_state"]
                if not ignored:
                    self._place(vm_ref, _target(op, args))
                    self._power_log.append((vm["uuid"], op))
                hooks = dict(self._hooks.get(vm["name_label"], {}))
                pause = _pause_after(op, was, table.records[vm_ref])
            if not ignored:
                self._run_hooks(op, was, hooks)
            if callback is not None:
                callback(name, op, "after")
            if pause > 0:
                self._closing.wait(pause)
        finally:
            self._end_operation(vm_ref, op_ref)
        return ""

    def _end_operation(self, vm_ref: str, op_ref: str) -> None:
        """xapi_vm_helpers.ml with_vm_operation's finally: remove the operation from the VM's
        current_operations, then Early_wakeup.broadcast."""
        table = self.tables["VM"]
        with self.lock:
            self._op_cancels.pop(op_ref, None)
            if vm_ref in table.records:
                remaining = dict(table.records[vm_ref]["current_operations"])
                remaining.pop(op_ref, None)
                table.update(vm_ref, current_operations=remaining)
        self._broadcast_op_end()

    def _wait_for_operations(self, vm_ref: str, op_refs: Sequence[str]) -> None:
        """message_forwarding.ml cancel: wait_for_tasks until the cancelled operations end."""
        while op_refs and not self._closing.is_set():
            with self.lock:
                current = self.tables["VM"].records[vm_ref]["current_operations"]
                if not any(ref in current for ref in op_refs):
                    return
            time.sleep(0.01)

    def _power_state_reset(self, call: _Call, vm_ref: Any) -> str:
        """xapi_vm.ml power_state_reset, which message_forwarding.ml never forwards:
        CANNOT_RESET_CONTROL_DOMAIN for a dom0; for a Running/Paused VM, DOMAIN_EXISTS when
        it resides on this host (xenopsd reports the domain running: the simulated domain
        always runs), else Xapi_host.is_host_alive: a host marked not live is dead; one
        marked live is asked, and counts as dead when it cannot be reached (HOST_IS_LIVE when
        it answers; a hanging host keeps the call waiting). Then the VM is Halted."""
        table = self.tables["VM"]
        with self.lock:
            vm = table.get(vm_ref)
            if vm["is_control_domain"]:
                raise XapiError("CANNOT_RESET_CONTROL_DOMAIN", vm_ref)
            host = vm["resident_on"]
            running = vm["power_state"] in ("Running", "Paused")
            if running and host == call.host:
                raise XapiError("DOMAIN_EXISTS", vm_ref)
            state = self.host_states.get(host)
            asks = running and state is not None and self._host_live(host)
            mode = state.down if state is not None else None
            if mode is None and state is not None and state.emergency is not None:
                # ask_host_if_it_is_a_slave calls pool.is_slave, which a member in
                # emergency mode refuses: is_host_alive takes any failure for death.
                mode = "refuse"
        if asks and state is not None:
            if mode == "hang":
                state.up.wait()
                with self.lock:
                    mode = state.down or ("refuse" if self._closing.is_set() else None)
            if mode is None:
                raise XapiError("HOST_IS_LIVE", host)
        with self.lock:
            vm = table.get(vm_ref)
            was = vm["power_state"]
            self._place(vm_ref, "Halted")
            self._power_log.append((vm["uuid"], "power_state_reset"))
            hooks = dict(self._hooks.get(vm["name_label"], {}))
        self._run_hooks("power_state_reset", was, hooks)
        return ""

    @staticmethod
    def _run_hooks(op: str, was: str, hooks: Mapping[str, str]) -> None:
        halts = op in REBOOTING_OPS or (op in HALTING_OPS and was != "Halted")
        if halts and hooks.get("on_halt"):
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(["/bin/sh", "-c", hooks["on_halt"]], timeout=HOOK_TIMEOUT,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, check=False)
        if (op in REBOOTING_OPS or op in STARTING_OPS) and hooks.get("on_start"):
            process = subprocess.Popen(["/bin/sh", "-c", hooks["on_start"]],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)
            threading.Thread(target=process.wait, daemon=True).start()  # reap it

    # -- task (Async.* calls) -----------------------------------------------------------------

    def _run_task(self, task_ref: str, op: str, call: _Call, vm_ref: Any,
                  args: Sequence[Any]) -> None:
        try:
            self._power(op, call, vm_ref, args, task_ref)
            # gen_server.ml: a void message's result marshaller is Rpc.String "", which
            # taskHelper.ml set_result_on_task stores as Xmlrpc.to_string: <value></value>.
            outcome: Dict[str, Any] = {"status": "success", "result": "<value></value>"}
        except XapiError as error:
            status = "cancelled" if error.description[0] == "TASK_CANCELLED" else "failure"
            outcome = {"status": status, "error_info": error.description}
        with self.lock:
            if task_ref in self.tables["task"].records:
                self.tables["task"].update(task_ref, progress=1.0, finished=now(),
                                           allowed_operations=[], **outcome)

    # -- event (xapi_event.ml from, inject) ----------------------------------------------------

    def _event_inject(self, call: _Call, class_name: Any, ref: Any) -> str:
        """xapi_event.ml inject: the row must be in the table named exactly `class_name`
        (else HANDLE_INVALID [class; ref]); it is touched, and the token returned is the
        generation before that, so event.from from it sees the row."""
        with self.lock:
            table = self.tables.get(class_name) if isinstance(class_name, str) else None
            if table is None or not isinstance(ref, str) or ref not in table.records:
                raise XapiError("HANDLE_INVALID", class_name, ref)
            table.touch(ref)
            return _event_token(table.stats[ref][1] - 1)

    def _event_from(self, call: _Call, classes: Any, token: Any, timeout: Any) -> Dict[str, Any]:
        """xapi_event.ml from: `classes` are subscriptions ("*", a class, "class/ref", class
        names in any case); the token is "" or "<generation>,<message generation>" (else
        EVENT_FROM_TOKEN_PARSE_FAILURE [token]). Blocks until a subscribed row was created,
        modified or deleted after the token's generation, or `timeout` seconds passed, or
        the session ends (SESSION_INVALID [session]). Answers {events, valid_ref_counts
        (every table, lower-case name, i4 count), token}; an event is {id, timestamp "0.0",
        class (lower-case), operation add/mod/del, ref, snapshot (the record; none on
        del)}; a row created and deleted within the window is not reported
        (collect_events); the new token is the highest generation among subscribed rows."""
        subs = _subscriptions(classes)
        since = _parse_event_token(token)
        try:
            seconds = float(timeout)
        except (TypeError, ValueError):
            raise XapiError("FIELD_TYPE_ERROR", "timeout") from None
        deadline = time.monotonic() + max(0.0, seconds)
        log = self.events
        while True:
            with log.changed:
                generation = log.generation
            with self.lock:
                if call.session not in self._sessions:
                    raise XapiError("SESSION_INVALID", call.session)
                result = self._collect_events(call, subs, since)
            remaining = deadline - time.monotonic()
            if result["events"] or remaining <= 0:
                return result
            with log.changed:
                if log.generation == generation:
                    log.changed.wait(min(remaining, 0.5))
            if self._closing.is_set():
                raise XapiError("INTERNAL_ERROR", "xapi is shutting down")

    def _collect_events(self, call: _Call, subs: List[Tuple[str, Optional[str]]],
                        since: int) -> Dict[str, Any]:
        events: List[Dict[str, Any]] = []
        last = since
        for name, table in self.tables.items():
            lower = name.lower()
            if not any(cls in ("*", lower) for cls, _ in subs):
                continue
            for ref, (created, modified) in table.stats.items():
                if not _subscribed(subs, lower, ref):
                    continue
                last = max(last, modified)
                if modified > since:
                    events.append({
                        "id": str(modified), "timestamp": "0.0", "class": lower,
                        "operation": "add" if created > since else "mod", "ref": ref,
                        "snapshot": self._encoded_record(table, ref, call.wire)})
        for deleted, created, name, ref in self.events.deleted:
            lower = name.lower()
            if deleted > since and _subscribed(subs, lower, ref):
                last = max(last, deleted)
                if created <= since:
                    events.append({"id": str(deleted), "timestamp": "0.0", "class": lower,
                                   "operation": "del", "ref": ref})
        events.sort(key=lambda event: int(event["id"]))
        counts = {name.lower(): Int32(len(table.records)) for name, table in self.tables.items()}
        return {"events": events, "valid_ref_counts": counts, "token": _event_token(last)}

    def _task_cancel(self, call: _Call, task_ref: Any) -> str:
        """message_forwarding.ml Task.cancel: a task forwarded to another host is cancelled
        there (do_op_on: HOST_OFFLINE, CANNOT_CONTACT_HOST, or a hang while that host
        hangs); task.destroy is never forwarded."""
        with self.lock:
            forwarded_to = self.tables["task"].get(task_ref)["forwarded_to"]
        self._forward(call.host, forwarded_to)
        with self.lock:
            task = self.tables["task"].get(task_ref)
            event = self._op_cancels.get(task_ref)
            if task["status"] == "pending" and event is not None:
                self.tables["task"].update(task_ref, status="cancelling")
                event.set()
            return ""

    def _task_destroy(self, call: _Call, task_ref: Any) -> str:
        with self.lock:
            self.tables["task"].get(task_ref)
            self.tables["task"].remove(task_ref)
            return ""


def _event_token(generation: int, message_generation: int = 0) -> str:
    """xapi_event.ml Token.to_string: "%020Ld,%020Ld" (compares as a string)."""
    return f"{generation:020d},{message_generation:020d}"


def _parse_event_token(token: Any) -> int:
    """xapi_event.ml Token.of_string: "" is the beginning; else two integers."""
    parts = token.split(",") if isinstance(token, str) else []
    try:
        if parts == [""]:
            return 0
        if len(parts) == 2:
            int(parts[1])
            return int(parts[0])
    except ValueError:
        pass
    raise XapiError("EVENT_FROM_TOKEN_PARSE_FAILURE", token)


def _subscriptions(classes: Any) -> List[Tuple[str, Optional[str]]]:
    """xapi_event.ml Subscription.of_string: "*", "class" or "class/ref", class lower-cased."""
    if not isinstance(classes, (list, tuple)):
        raise XapiError("FIELD_TYPE_ERROR", "classes")
    subs: List[Tuple[str, Optional[str]]] = []
    for text in classes:
        if text == "*":
            subs.append(("*", None))
            continue
        cls, slash, ref = str(text).partition("/")
        subs.append((cls.lower(), ref if slash else None))
    return subs


def _subscribed(subs: List[Tuple[str, Optional[str]]], cls: str, ref: str) -> bool:
    """xapi_event.ml Subscription.object_matches."""
    return any(sub == "*" or (sub == cls and (only is None or only == ref))
               for sub, only in subs)


def _records_map(call: _Call, table: _Table, refs: List[str]) -> Any:
    """ref -> record: cached XML for XML-RPC, copies of the records for JSON-RPC."""
    if call.wire == "json":
        return {ref: _json_record(table.name, table.records[ref]) for ref in refs}
    return table.encoded_map(iter(refs))


# The fields of type Int in the datamodel (datamodel_vm.ml, datamodel_host.ml, datamodel.ml
# host_metrics, datamodel_pool.ml) among those the simulator holds: the records keep them as
# XML-RPC writes an Rpc.Int (an untyped <value>, a string to the client); JSON-RPC writes the
# number (jsonrpc.ml rpc_to_json: Int -> `Intlit).
INT_FIELDS = {
    "VM": frozenset({"user_version", "memory_overhead", "memory_target", "memory_static_max",
                     "memory_dynamic_max", "memory_dynamic_min", "memory_static_min",
                     "VCPUs_max", "VCPUs_at_startup", "domid", "start_delay",
                     "shutdown_delay", "order", "version", "hardware_platform_version"}),
    "host": frozenset({"memory_overhead", "API_version_major", "API_version_minor"}),
    "host_metrics": frozenset({"memory_total", "memory_free"}),
    "pool": frozenset({"ha_host_failures_to_tolerate", "ha_plan_exists_for"}),
}


def _json_record(class_name: str, record: Record) -> Record:
    """A copy of the record with its Int fields as numbers, for JSON-RPC."""
    ints = INT_FIELDS.get(class_name, frozenset())
    copy = dict(record)
    for key in ints & copy.keys():
        with contextlib.suppress(TypeError, ValueError):
            copy[key] = int(copy[key])
    return copy


def _allowed_concurrently(op: str, current: Sequence[str]) -> bool:
    """xapi_vm_lifecycle.ml is_allowed_concurrently, for the power operations: hard_shutdown
    is refused only by another hard_shutdown, hard_reboot by hard_shutdown or hard_reboot;
    clean_shutdown/clean_reboot may run beside migrate_send; nothing else runs beside
    anything."""
    if op == "hard_shutdown":
        return "hard_shutdown" not in current
    if op == "hard_reboot":
        return not any(other in ("hard_shutdown", "hard_reboot") for other in current)
    return list(current) == ["migrate_send"] and op in ("clean_shutdown", "clean_reboot")


def _assert_memory_constraints(vm: Record) -> None:
    """xapi_vm.ml start: `if not force then assert_memory_constraints`, which for a VM with
    platform:nested-virt=true requires its memory pinned at static_max
    (xapi_vm_memory_constraints.ml assert_valid_and_pinned_at_static_max: dynamic_min =
    dynamic_max = static_max), else MEMORY_CONSTRAINT_VIOLATION_MAXPIN. VM.start(force=true)
    skips the check: fence-agents' agent and ours both pass force=true."""
    if str(vm["platform"].get("nested-virt", "")).lower() not in ("true", "1"):
        return
    if not (vm["memory_dynamic_min"] == vm["memory_dynamic_max"] == vm["memory_static_max"]):
        raise XapiError("MEMORY_CONSTRAINT_VIOLATION_MAXPIN", "nested virt")


def _pause_after(op: str, was: str, vm: Record) -> float:
    """xapi_vm.ml: hard_shutdown (of a Running/Paused VM) and clean_shutdown sleep the VM's
    shutdown_delay once it is Halted; start sleeps start_delay once it runs
    (xapi_vm_helpers.ml shutdown_delay, start_delay)."""
    # A record of an older datamodel has no such field (start_delay and shutdown_delay came
    # with XenServer 6.0's schema 5.63): XAPI's database upgrade gives it the datamodel's
    # default, 0 (datamodel_vm.ml ~default_value:(Some (VInt 0L))).
    if (op == "hard_shutdown" and was in ("Running", "Paused")) or op == "clean_shutdown":
        return float(vm.get("shutdown_delay", "0"))
    if op == "start":
        return float(vm.get("start_delay", "0"))
    return 0.0


def _target(op: str, args: Sequence[Any]) -> str:
    """start/resume(vm, start_paused, force) leave the VM Paused when asked to."""
    if op in STARTING_OPS and args and args[0] is True:
        return "Paused"
    return POWER_OPS[op][1]


# ---------------------------------------------------------------------------------------------
# 4. Faults and settings
# Faults: injected misbehaviour (not XAPI). Settings: XAPI's own timings and tunables.
# ---------------------------------------------------------------------------------------------


@dataclass
class Faults:
    """Injected misbehaviour; every field defaults to "no fault". Takes effect on the next
    request (the server reads it per request)."""

    latency: float = 0.0
    login_delay: float = 0.0
    hang: bool = False
    reset: bool = False
    bad_xml: bool = False
    power_op_delay: float = 0.0
    ignore_hard_shutdown: bool = False
    # Sent as the master's thumbprint with HOST_IS_SLAVE instead of the real one (when one
    # would be sent): a malformed or wrong header from a member.
    thumbprint: str = ""
    # A pool that answers OTHER_OPERATION_IN_PROGRESS at once instead of waiting the VM out
    # (helpers.ml retry): a misbehaving pool, or one whose operation check runs outside the
    # retry; the agent must still cope with it.
    refuse_busy_at_once: bool = False
    fail_next: Dict[str, List[List[str]]] = field(default_factory=dict)

    def merge(self, changes: Mapping[str, Any]) -> None:
        """Set the given faults; fail_next entries replace that method's queue."""
        known = {f.name: f for f in fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault {name!r}")
            if name == "fail_next":
                for method, queue in dict(value).items():
                    self.fail_next[method] = [[str(item) for item in desc] for desc in queue]
            elif known[name].type == "bool":
                setattr(self, name, bool(value))
            elif known[name].type == "str":
                setattr(self, name, str(value))
            else:
                setattr(self, name, float(value))

    def clear(self) -> None:
        """Back to no fault, in place (handles keep a reference to this object)."""
        for item in fields(self):
            setattr(self, item.name, {} if item.name == "fail_next" else type(getattr(
                Faults(), item.name))())

    def as_dict(self) -> Dict[str, Any]:
        return {item.name: getattr(self, item.name) for item in fields(self)}


@dataclass
class Settings:
    """How the pool behaves where XAPI has a tunable or a timing (not faults: real behaviour).
    Change the fields directly; they take effect on the next request."""

    # xapi_globs.ml host_assumed_dead_interval: without HA, a host whose heartbeat stopped is
    # marked not live this long after (db_gc.ml check_host_liveness).
    liveness_window: float = 600.0
    # xapi_globs.ml ha_default_timeout_base: with HA, a host that lost its heartbeat has fenced
    # itself and is declared dead after this long.
    ha_liveness_window: float = 60.0
    # xapi_ha_vm_failover.ml: when HA declares a host dead, XAPI resets its running VMs to Halted.
    ha_resets_vms: bool = True
    # xapi_ha.ml on_master_failure: with HA, a surviving member becomes master by itself.
    ha_promotes: bool = True
    # xapi_session.ml thread_delay_and_raise_error: XAPI answers every refused login after 5 s;
    # the simulator defaults to 0 so that the suite stays fast (set 5.0 to be faithful).
    auth_failure_delay: float = 0.0
    # How long an accepted external (AD) login takes (the directory round trip).
    external_login_delay: float = 0.0
    # api_server.ml create_thumbprint_header came with CP-46806 (xen-api commit 8b33741d5c,
    # December 2023): older XAPI (XCP-ng 8.2, Citrix Hypervisor 8.2) sends no thumbprint.
    thumbprint_header: bool = True
    # helpers.ml retry (Policy.standard: max_total_wait 2 h, 1-20 s between checks), around
    # the check of every VM power operation (xapi_vm_helpers.ml with_vm_operation): XAPI
    # answers OTHER_OPERATION_IN_PROGRESS only after waiting that long for the VM to be free.
    # Every policy's times are scaled by operation_retry_window / 7200, so a short window
    # keeps the policy's shape (0: no wait at all).
    operation_retry_window: float = POLICY_STANDARD.max_total_wait
    # datamodel.ml class session: is_local_superuser came with rel_george (XenServer 5.5),
    # rbac_permissions with rel_midnight_ride (5.6, RBAC): False is a pool older than both.
    session_rbac_fields: bool = True

    def merge(self, changes: Mapping[str, Any]) -> None:
        known = {f.name: f for f in fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown setting {name!r}")
            setattr(self, name, bool(value) if known[name].type == "bool" else float(value))

    def as_dict(self) -> Dict[str, Any]:
        return {item.name: getattr(self, item.name) for item in fields(self)}


# ---------------------------------------------------------------------------------------------
# 5. Server and control plane
# SimServer serves one pool host over HTTP/1.1 keep-alive or HTTPS; sim.* methods on the same
# endpoint drive the simulator from another process (no session, not counted).
# ---------------------------------------------------------------------------------------------


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 64

    def __init__(self, owner: SimServer, address: str, port: int,
                 tls: Optional[ssl.SSLContext]) -> None:
        self.address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.owner = owner
        self.tls = tls
        super().__init__((address, port), _RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the address's FQDN: a DNS lookup per server.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def get_request(self) -> Tuple[socket.socket, Any]:
        connection, address = self.socket.accept()
        # Without TCP_NODELAY, Nagle's algorithm adds ~40 ms to every call on a keep-alive
        # connection and hides the client's real cost.
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            # The handshake happens on the handler thread's first read, not in accept().
            connection = self.tls.wrap_socket(connection, server_side=True,
                                              do_handshake_on_connect=False)
        return connection, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that vanish or reject our certificate are test scenarios, not bugs


class _RequestHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        self.server.owner.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner.track(self.connection, False)

    def handle(self) -> None:
        if self.server.owner.hanging():
            # A host that hangs: the TCP connection is accepted, nothing ever answers (not
            # even the TLS handshake, which would happen on the first read below).
            self.server.owner.wait_while_hanging()
            self.close_connection = True
            return
        super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        wire = post_handler(self.path)
        if wire is None:  # a path not under /
            self.do_GET()
            return
        self.server.owner.serve(self, body, wire)

    def do_GET(self) -> None:
        """http_svr.ml: no GET or PUT handler of the simulator's has a prefix of the path
        (XAPI's serve downloads and uploads; / only with its web directory): default_callback
        answers 403."""
        self.send_error_html(403, "Forbidden", "<html><body><h1>HTTP 403 forbidden</h1>Access"
                             " to the requested resource is forbidden.</body></html>")

    do_PUT = do_GET

    def do_HEAD(self) -> None:
        """http_svr.ml: no handler for the method: response_method_not_implemented."""
        self.send_error_html(501, "Method not implemented", "<html><body><h1>HTTP 501 Method"
                             f" Not Implemented</h1><p>{self.command} not supported.<br /></p>"
                             "</body></html>")

    do_DELETE = do_HEAD

    def send_error_html(self, status: int, reason: str, body: str) -> None:
        """http_svr.ml response_error_html: content-type, then connection: close, then
        cache-control (after content-length); the connection closes."""
        self.close_connection = True
        version = "1.0" if self.request_version == "HTTP/1.0" else "1.1"
        data = body.encode()
        self.wfile.write((f"HTTP/{version} {status} {reason}\r\ncontent-length: {len(data)}\r\n"
                          "content-type: text/html\r\nconnection: close\r\n"
                          "cache-control: no-cache, no-store\r\n\r\n").encode() + data)

    def send_internal_error(self) -> None:
        """http_svr.ml response_internal_error: what a handler's exception other than a
        Server_error (a request that does not parse) gets."""
        self.send_error_html(500, "Internal Error", INTERNAL_ERROR_HTML)

    def do_OPTIONS(self) -> None:
        """xapi.ml post_root_options, post_json_options, post_jsonrpc_options (paths /, /json,
        /jsonrpc: every path under /): http_svr.ml respond_to_options, a CORS preflight
        answer with no body and no content-type."""
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        asked = self.headers.get("Access-Control-Request-Headers")
        self.send_body(200, b"", None, headers=[
            ("Access-Control-Allow-Origin", "*"),
            ("Access-Control-Allow-Headers",
             f"{asked}, X-Requested-With" if asked is not None else "X-Requested-With"),
            ("Access-Control-Allow-Methods", "PUT")])

    def send_body(self, status: int, body: bytes, content_type: Optional[str] = "text/xml",
                  headers: Sequence[Tuple[str, str]] = ()) -> None:
        """The whole response in one write (headers and body in one segment), headed as
        XAPI heads it (http.ml Response.to_header_list, http_svr.ml response_of_request):
        the request's version (1.0 stays 1.0), then content-length, connection,
        cache-control, all lower-case, then the handler's own headers (content-type first)."""
        if self.headers.get("Connection", "").lower() == "close":
            self.close_connection = True
        version = "1.0" if self.request_version == "HTTP/1.0" else "1.1"
        lines = [f"HTTP/{version} {status} {self.responses[status][0]}",
                 f"content-length: {len(body)}",
                 f"connection: {'close' if self.close_connection else 'keep-alive'}",
                 "cache-control: no-cache, no-store",
                 *([f"content-type: {content_type}"] if content_type is not None else []),
                 *(f"{name}: {value}" for name, value in headers), "", ""]
        self.wfile.write("\r\n".join(lines).encode() + body)

    def drop(self) -> None:
        """Close the connection without an answer (RST)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))


TlsConfig = Union[None, ssl.SSLContext, Tuple[PathLike, PathLike]]


def server_tls_context(cert: PathLike, key: PathLike) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    return context


class SimServer:
    """One pool host served over HTTP/1.1 keep-alive (or HTTPS with tls=(cert, key) or an
    SSLContext) at `address` (IPv4 or IPv6). `host` (name or ref) defaults to the master; the
    host's address becomes `address`. A non-master host answers logins with HOST_IS_SLAVE.
    Simulator.host_down/host_up make it refuse connections or hang, and answer again."""

    def __init__(self, sim: Simulator, address: str = "127.0.0.1", port: int = 0,
                 tls: TlsConfig = None, host: Optional[str] = None) -> None:
        self.sim = sim
        self._context = server_tls_context(*tls) if isinstance(tls, tuple) else tls
        with sim.lock:
            # None: whichever host is master when a request comes (the pool may be built later)
            self._host = sim._host_ref(host) if host else None
            served = self._host or sim.master_ref
            if served in sim.tables["host"].records:
                sim.tables["host"].update(served, address=address)
                if isinstance(tls, tuple):
                    sim.host_states[served].certificate = ssl.PEM_cert_to_DER_cert(
                        Path(tls[0]).read_text())
        self._address = address
        self._stopped = threading.Event()
        self._down: Optional[str] = None
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self.wires: Dict[str, int] = {"xml": 0, "json": 0}  # API requests by protocol
        self._http = _HttpServer(self, address, port, self._context)
        self.port = int(self._http.server_address[1])
        scheme = "https" if self._context is not None else "http"
        shown = f"[{address}]" if ":" in address else address
        self.url = f"{scheme}://{shown}:{self.port}/"
        self._thread = self._serving_thread()
        sim.register_server(self)

    def _serving_thread(self) -> threading.Thread:
        return threading.Thread(target=self._http.serve_forever, args=(0.05,),
                                name=f"xapisim {self.url}", daemon=True)

    @property
    def host_ref(self) -> str:
        """The pool host this server is."""
        return self._host or self.sim.master_ref

    def start(self) -> SimServer:
        """Serve; a server of a host that is down starts down too."""
        self._thread.start()
        with self.sim.lock:
            state = self.sim.host_states.get(self.host_ref)
            mode = state.down if state is not None else None
        if mode is not None:
            self.go_down(mode)
        return self

    def stop(self) -> None:
        """Stop serving; hung requests and idle keep-alive connections end at once."""
        self._stopped.set()
        self._http.shutdown()
        self._http.server_close()
        self._close_connections()
        self._thread.join(5)

    def _close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def present_certificate(self, cert: PathLike, key: PathLike) -> None:
        """From the next connection on, answer TLS with another certificate (an impostor at
        this host's address) while the pool still records the real one: the thumbprint
        header and host.get_server_certificate keep naming the real certificate."""
        self._http.tls = server_tls_context(cert, key)

    def go_down(self, mode: str) -> None:
        """"refuse": stop listening (connections are refused) and cut open connections;
        "hang": accept connections and never answer."""
        if self._down == "refuse" or self._stopped.is_set():
            self._down = mode if mode == "refuse" else self._down
            return
        self._down = mode
        if mode == "refuse":
            self._http.shutdown()
            self._http.server_close()
            self._close_connections()
            self._thread.join(5)

    def come_up(self) -> None:
        """Answer again, on the same address and port."""
        was, self._down = self._down, None
        if was == "refuse" and not self._stopped.is_set():
            self._http = _HttpServer(self, self._address, self.port, self._context)
            self._thread = self._serving_thread()
            self._thread.start()

    def hanging(self) -> bool:
        return self._down == "hang" and not self._stopped.is_set()

    def wait_while_hanging(self) -> None:
        while self.hanging():
            self._stopped.wait(0.05)

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def track(self, connection: socket.socket, is_open: bool) -> None:
        with self._connections_lock:
            if is_open:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def serve(self, handler: _RequestHandler, body: bytes, wire: str = "xml") -> None:
        """One API request: XML-RPC (api_server.ml callback) or JSON-RPC (jsoncallback)."""
        call = self._parse_call(handler, body, wire)
        if call is None:
            return
        method, params, json_call = call
        if self._went_away(handler):
            return
        self.sim.count(method)
        self.wires[wire] += 1
        if self._faulted(handler, method):
            return
        # api_server.ml callback/jsoncallback: content-type, then the CORS pair, then the
        # thumbprint header (create_thumbprint_header).
        headers: List[Tuple[str, str]] = [("Access-Control-Allow-Origin", "*"),
                                          ("Access-Control-Allow-Headers", "X-Requested-With")]
        try:
            value = self.sim.call(method, list(params), self.host_ref, wire)
            success, contents = True, value
        except XapiError as error:
            success, contents = False, [str(item) for item in error.description]
            thumbprint = self._thumbprint_header(handler, error.description)
            if thumbprint is not None:
                headers.append((THUMBPRINT_RESPONSE, thumbprint))
        response, content_type = _encode_answer(method, json_call, success, contents)
        if self._went_away(handler):
            return  # the host died while serving the call: its answer never leaves
        handler.send_body(200, response, content_type, headers=headers)

    def _parse_call(self, handler: _RequestHandler, body: bytes, wire: str
                    ) -> Optional[Tuple[str, Sequence[Any], Optional[Tuple[str, Any]]]]:
        """The method, its parameters and (JSON-RPC) the version and id; None once answered
        (a request that does not parse, or a control-plane `sim.*` call)."""
        if wire == "json":
            parsed = _json_call(body)
            if parsed is None:
                # jsonrpc.ml version_id_and_call_of_string raises Malformed_method_request,
                # not a Server_error: http_svr.ml answers 500 and closes.
                self.sim.count("<unparsable request>")
                handler.send_internal_error()
                return None
            return parsed[0], parsed[1], (parsed[2], parsed[3])
        try:
            params, xml_method = xmlrpc.client.loads(body)
        except Exception:
            xml_method = None
        if xml_method is None:
            # xmlrpc.ml call_of_string raises Parse_error, not a Server_error:
            # api_server.ml callback re-raises it, http_svr.ml answers 500 and closes.
            self.sim.count("<unparsable request>")
            handler.send_internal_error()
            return None
        if xml_method.startswith("sim."):
            handler.send_body(200, control_call(self.sim, xml_method, params))
            return None
        return xml_method, params, None

    def _faulted(self, handler: _RequestHandler, method: str) -> bool:
        """Carry out an injected fault; True when it took the place of the answer."""
        faults = self.sim.faults
        if faults.reset:
            handler.drop()
            return True
        if faults.hang:
            self._stopped.wait()
            handler.close_connection = True
            return True
        if faults.bad_xml:
            handler.send_body(200, b"<html><body>502 Bad Gateway: not XML-RPC</body></html>\n")
            return True
        delay = faults.latency + (faults.login_delay if method == LOGIN else 0.0)
        if delay > 0 and self._stopped.wait(delay):
            handler.drop()
            return True
        return False

    def _went_away(self, handler: _RequestHandler) -> bool:
        """True (after hanging, or cutting the connection) when this host is down."""
        if self.hanging():
            self.wait_while_hanging()
            handler.close_connection = True
            return True
        if self._down == "refuse":
            handler.drop()
            return True
        return False

    def _thumbprint_header(self, handler: _RequestHandler,
                           description: Sequence[str]) -> Optional[str]:
        """api_server.ml create_thumbprint_header: with a HOST_IS_SLAVE answer, when the
        request asked with `x-xenapi-request-host-certificate-thumbprint: sha-256:master`
        (or sha-1), the master's certificate fingerprint as the host's database has it
        (helpers.ml external_certificate_thumbprint_of_master): the host this member
        redirects to; none if that host has no certificate (plain HTTP)."""
        algorithm = THUMBPRINT_HASHES.get(handler.headers.get(THUMBPRINT_REQUEST, ""))
        if not self.sim.settings.thumbprint_header:
            return None
        if algorithm is None or len(description) != 2 or description[0] != "HOST_IS_SLAVE":
            return None
        with self.sim.lock:
            state = self.sim.host_states.get(self.sim.master_ref)
            der = state.certificate if state is not None else None
        if der is None:
            return None
        return self.sim.faults.thumbprint or pp_hash(hashlib.new(algorithm, der).digest())


def _json_call(body: bytes) -> Optional[Tuple[str, List[Any], str, Any]]:
    """jsonrpc.ml version_id_and_call_of_string: an object with a string "method"; "jsonrpc"
    absent (1.0: "params" a list) or "2.0" ("params" absent, null, a list, or an object
    taken as the one parameter); "id" an integer or a string (null or absent: refused).
    None when malformed."""
    try:
        request = json.loads(body)
    except ValueError:
        return None
    if not isinstance(request, dict) or not isinstance(request.get("method"), str):
        return None
    version = request.get("jsonrpc")
    params = request.get("params")
    if version is None and isinstance(params, list):
        version = "1.0"
    elif version == "2.0" and (params is None or isinstance(params, (list, dict))):
        params = [] if params is None else [params] if isinstance(params, dict) else params
    else:
        return None
    call_id = request.get("id")
    if isinstance(call_id, bool) or not isinstance(call_id, (int, str)):
        return None
    return request["method"], params, version, call_id


def _control_methods(sim: Simulator) -> Dict[str, Callable[..., Any]]:
    def vms() -> List[Dict[str, Any]]:
        keys = ("uuid", "name_label", "power_state", "is_a_template", "is_a_snapshot",
                "is_control_domain")
        return [{key: record[key] for key in keys} for record in sim.vm_records()]

    def set_faults(changes: Mapping[str, Any]) -> bool:
        with sim.lock:
            sim.faults.merge(changes)
        return True

    def done(action: Callable[..., Any]) -> Callable[..., bool]:
        def run(*args: Any) -> bool:
            action(*args)
            return True
        return run

    return {
        "sim.counters": sim.counters,
        "sim.reset_counters": done(sim.reset_counters),
        "sim.vm": sim.vm,
        "sim.vms": vms,
        "sim.power_log": lambda: [list(entry) for entry in sim.power_log()],
        "sim.set_power_state": done(sim.set_power_state),
        "sim.set_faults": set_faults,
        "sim.clear_faults": done(sim.faults.clear),
        "sim.faults": sim.faults.as_dict,
        "sim.set_host_live": done(sim.set_host_live),
        "sim.set_hooks": done(sim.set_hooks),
        "sim.sessions": sim.issued_sessions,
        "sim.set_emergency": done(sim.set_emergency),
        "sim.set_master_address": done(sim.set_master_address),
        "sim.host_down": done(sim.host_down),
        "sim.host_up": done(sim.host_up),
        "sim.set_ha": done(sim.set_ha),
        "sim.promote": done(sim.promote),
        "sim.fail_master": done(sim.fail_master),
        "sim.set_settings": done(sim.settings.merge),
        "sim.settings": sim.settings.as_dict,
        "sim.set_vm": done(lambda vm, changes: sim.set_vm(vm, **changes)),
        "sim.set_power_duration": done(sim.set_power_duration),
        "sim.add_user": done(sim.add_user),
        "sim.tasks_open": sim.tasks_open,
    }


def control_call(sim: Simulator, method: str, params: Sequence[Any]) -> bytes:
    function = _control_methods(sim).get(method)
    try:
        if function is None:
            raise LookupError(f"unknown control method {method}")
        response: Any = (function(*params),)
    except Exception as error:
        response = xmlrpc.client.Fault(1, f"{type(error).__name__}: {error}")
    return xmlrpc.client.dumps(response, methodresponse=True, allow_none=True).encode()


# ---------------------------------------------------------------------------------------------
# 6. Client for the control plane
# ---------------------------------------------------------------------------------------------


class SimClient:
    """Drives a simulator in another process through its sim.* control methods (certificate
    verification off: this is the test's own control channel, never the agent's)."""

    def __init__(self, url: str) -> None:
        context = ssl._create_unverified_context() if url.startswith("https") else None
        self._proxy = xmlrpc.client.ServerProxy(url, allow_none=True, context=context)
        self._lock = threading.Lock()

    def _call(self, method: str, *args: Any) -> Any:
        with self._lock:
            return getattr(self._proxy, method)(*args)

    def counters(self) -> Dict[str, Any]:
        return dict(self._call("sim.counters"))

    def requests(self) -> Dict[str, int]:
        return dict(self.counters()["requests"])

    def total_requests(self) -> int:
        return int(self.counters()["total"])

    def sessions_open(self) -> int:
        return int(self.counters()["sessions_open"])

    def reset_counters(self) -> None:
        self._call("sim.reset_counters")

    def vm(self, name_or_uuid: str) -> Dict[str, Any]:
        return dict(self._call("sim.vm", name_or_uuid))

    def vms(self) -> List[Dict[str, Any]]:
        return list(self._call("sim.vms"))

    def uuid(self, name: str) -> str:
        return str(self.vm(name)["uuid"])

    def power_state(self, name_or_uuid: str) -> str:
        return str(self.vm(name_or_uuid)["power_state"])

    def power_log(self) -> List[Tuple[str, str]]:
        return [(str(uuid), str(op)) for uuid, op in self._call("sim.power_log")]

    def set_power_state(self, name_or_uuid: str, state: str) -> None:
        self._call("sim.set_power_state", name_or_uuid, state)

    def set_faults(self, **faults: Any) -> None:
        self._call("sim.set_faults", faults)

    def clear_faults(self) -> None:
        self._call("sim.clear_faults")

    def set_host_live(self, name: str, live: bool) -> None:
        self._call("sim.set_host_live", name, live)

    def set_hooks(self, hooks: Mapping[str, Mapping[str, str]]) -> None:
        self._call("sim.set_hooks", dict(hooks))

    def sessions(self) -> List[str]:
        """Every session ref the pool handed out, logged out or not."""
        return list(self._call("sim.sessions"))

    def tasks_open(self) -> int:
        return int(self._call("sim.tasks_open"))

    def set_emergency(self, host: str, error: Optional[Sequence[str]]) -> None:
        self._call("sim.set_emergency", host, None if error is None else list(error))

    def set_master_address(self, host: str, address: Optional[str]) -> None:
        self._call("sim.set_master_address", host, address)

    def host_down(self, host: str, mode: str = "refuse") -> None:
        self._call("sim.host_down", host, mode)

    def host_up(self, host: str) -> None:
        self._call("sim.host_up", host)

    def set_ha(self, enabled: bool) -> None:
        self._call("sim.set_ha", enabled)

    def promote(self, host: str) -> None:
        self._call("sim.promote", host)

    def fail_master(self, new_master: Optional[str] = None, mode: str = "refuse") -> None:
        self._call("sim.fail_master", new_master, mode)

    def set_settings(self, **settings: Any) -> None:
        self._call("sim.set_settings", settings)

    def set_vm(self, name_or_uuid: str, **changes: Any) -> None:
        self._call("sim.set_vm", name_or_uuid, changes)

    def set_power_duration(self, name_or_uuid: str, op: str, seconds: float,
                           cancellable: bool = True) -> None:
        self._call("sim.set_power_duration", name_or_uuid, op, seconds, cancellable)

    def add_user(self, name: str, password: str, role: str = "pool-admin") -> None:
        self._call("sim.add_user", name, password, role)

    def close(self) -> None:
        self._proxy("close")()


# ---------------------------------------------------------------------------------------------
# 7. TLS material
# ---------------------------------------------------------------------------------------------


SERVER_NAMES = "IP:127.0.0.1,IP:127.0.0.2,IP:127.0.0.3,IP:::1,DNS:localhost"


@dataclass
class Pki:
    """A test CA, a server certificate it signed (for SERVER_NAMES), the server cert's
    SHA-256 fingerprint (uppercase hex with colons), and a self-signed impostor."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    fingerprint: str
    other_cert: Path
    other_key: Path


def cert_fingerprint(cert: PathLike) -> str:
    """SHA-256 of the certificate's DER, as `openssl x509 -fingerprint -sha256` shows it."""
    der = ssl.PEM_cert_to_DER_cert(Path(cert).read_text())
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def make_pki(directory: PathLike) -> Pki:
    """Make the TLS material with the openssl CLI (EC P-256 keys: fast)."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    pki = Pki(folder / "ca.pem", folder / "ca.key", folder / "server.pem",
              folder / "server.key", "", folder / "other.pem", folder / "other.key")
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", *newkey, "-keyout", str(pki.ca_key), "-out", str(pki.ca_cert),
            "-days", "3650", "-subj", "/CN=xapisim test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    csr = folder / "server.csr"
    openssl("req", "-new", *newkey, "-keyout", str(pki.server_key), "-out", str(csr),
            "-subj", "/CN=localhost")
    extensions = folder / "server.ext"
    extensions.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName={SERVER_NAMES}\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(pki.ca_cert), "-CAkey", str(pki.ca_key),
            "-set_serial", str(secrets.randbits(63)), "-days", "3650",
            "-extfile", str(extensions), "-out", str(pki.server_cert))
    openssl("req", "-x509", *newkey, "-keyout", str(pki.other_key), "-out", str(pki.other_cert),
            "-days", "3650", "-subj", "/CN=localhost", "-addext",
            f"subjectAltName={SERVER_NAMES}")
    pki.fingerprint = cert_fingerprint(pki.server_cert)
    return pki


def make_host_cert(directory: PathLike, name: str, address: str,
                   ca: Optional[Pki] = None) -> Tuple[Path, Path]:
    """A pool host's own certificate (EC P-256, CN=name, SAN IP:address and DNS:name):
    self-signed as XCP-ng/XenServer install it, or signed by `ca`. Returns (cert, key)."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    names = f"subjectAltName=IP:{address},DNS:{name}"
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    if ca is None:
        openssl("req", "-x509", *newkey, "-keyout", str(key), "-out", str(cert), "-days",
                "3650", "-subj", f"/CN={name}", "-addext", names)
        return cert, key
    csr, extensions = folder / f"{name}.csr", folder / f"{name}.ext"
    openssl("req", "-new", *newkey, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
    extensions.write_text("basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n"
                          f"{names}\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.ca_cert), "-CAkey", str(ca.ca_key),
            "-set_serial", str(secrets.randbits(63)), "-days", "3650",
            "-extfile", str(extensions), "-out", str(cert))
    return cert, key


# ---------------------------------------------------------------------------------------------
# 8. SimHandle: what the pytest fixtures hand to tests
# ---------------------------------------------------------------------------------------------


# Command-line options that take no value: given for a true value, left out for a false one.
FLAG_OPTIONS = {"ssl_insecure", "allow_power_state_reset", "quiet", "verbose",
                "disable_timeout", "help", "version"}


# stdin aliases -> the option's primary name (the command line knows the primary names).
OPTION_ALIASES = {"port": "plug", "login": "username", "passwd": "password",
                  "passwd_script": "password_script", "option": "action",
                  "debug": "debug_file"}

TRUE_WORDS = ("1", "yes", "on", "true")


class SimHandle:
    """A running simulator (the standard pool unless given another) and its servers."""

    def __init__(self, sim: Simulator, tls: TlsConfig = None,
                 address: str = "127.0.0.1", host: Optional[str] = None) -> None:
        self.sim = sim
        self.faults = sim.faults
        self.settings = sim.settings
        self._tls = tls
        self._materials: Dict[str, Tuple[Path, Path]] = {}
        self.server = SimServer(sim, address, tls=tls, host=host).start()
        self._servers = [self.server]
        self.url = self.server.url

    @classmethod
    def standard(cls, tls: TlsConfig = None) -> SimHandle:
        sim = Simulator()
        sim.populate_standard()
        return cls(sim, tls)

    @classmethod
    def pool(cls, hosts: int = 3, tls: Optional[str] = None,
             tls_dir: Optional[PathLike] = None, pki: Optional[Pki] = None) -> SimHandle:
        """The standard pool with every host live and served by its own SimServer on its
        own address (127.0.0.N), all on one port (HOST_IS_SLAVE names only an address).
        tls: None (HTTP), "self-signed" (each host its own certificate, as installed) or
        "ca" (each host its own certificate signed by pki.ca_cert); certificates go to
        tls_dir. Master host1; url is its URL."""
        if not 1 <= hosts <= 9:
            raise ValueError("1 to 9 hosts")
        if tls is not None and (tls_dir is None or tls not in ("self-signed", "ca")
                                or (tls == "ca" and pki is None)):
            raise ValueError('tls="self-signed" needs tls_dir; tls="ca" needs tls_dir and pki')
        sim = Simulator()
        sim.populate_standard(dead_host3=False)
        for number in range(4, hosts + 1):
            sim.add_host(f"host{number}", f"127.0.0.{number}")
        for name in [f"host{number}" for number in range(hosts + 1, 4)]:
            sim.remove_host(name)
        materials: Dict[str, Tuple[Path, Path]] = {}
        if tls is not None and tls_dir is not None:
            for number in range(1, hosts + 1):
                materials[f"host{number}"] = make_host_cert(
                    tls_dir, f"host{number}", f"127.0.0.{number}",
                    pki if tls == "ca" else None)
        handle = cls(sim, materials.get("host1"), host="host1")
        for number in range(2, hosts + 1):
            handle._add_server(f"127.0.0.{number}", f"host{number}", materials.get(
                f"host{number}"))
        handle._materials = materials
        return handle

    def close(self) -> None:
        self.sim.close()
        for server in self._servers:
            server.stop()

    stop = close

    def __enter__(self) -> SimHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def params(self, **overrides: Optional[str]) -> Dict[str, str]:
        values: Dict[str, Optional[str]] = {"session_url": self.url, "username": "root",
                                            "password": "secret", **overrides}
        return {key: value for key, value in values.items() if value is not None}

    def cli(self, **overrides: Optional[str]) -> List[str]:
        values: Dict[str, Optional[str]] = {"session_url": self.url, "username": "root",
                                            "password": "secret"}
        for name, value in overrides.items():
            values[OPTION_ALIASES.get(name, name)] = value
        args: List[str] = []
        for name, value in values.items():
            option = "--" + name.replace("_", "-")
            if value is None:
                continue
            if name in FLAG_OPTIONS:
                if str(value).strip().lower() in TRUE_WORDS:
                    args.append(option)
            else:
                args += [option, str(value)]
        return args

    def vm(self, name_or_uuid: str) -> Dict[str, Any]:
        return self.sim.vm(name_or_uuid)

    def uuid(self, name: str) -> str:
        return self.sim.uuid(name)

    def power_state(self, name_or_uuid: str) -> str:
        return self.sim.power_state(name_or_uuid)

    def set_power_state(self, name_or_uuid: str, state: str) -> None:
        self.sim.set_power_state(name_or_uuid, state)

    def requests(self) -> Dict[str, int]:
        return self.sim.requests()

    def total_requests(self) -> int:
        return self.sim.total_requests()

    def reset_counters(self) -> None:
        self.sim.reset_counters()

    def sessions_open(self) -> int:
        return self.sim.sessions_open()

    def power_log(self) -> List[Tuple[str, str]]:
        return self.sim.power_log()

    def issued_sessions(self) -> List[str]:
        return self.sim.issued_sessions()

    def add_host_server(self, address: str) -> str:
        """Serve the pool host at `address` (added if the pool has none there), on this
        handle's port; it is not the master, so its logins answer HOST_IS_SLAVE."""
        with self.sim.lock:
            try:
                host = self.sim._host_ref(address)
            except LookupError:
                host = self.sim.add_host(f"host-{address}", address)
        return self._add_server(address, host, self._tls).url

    def _add_server(self, address: str, host: str, tls: TlsConfig) -> SimServer:
        server = SimServer(self.sim, address, self.server.port, tls, host).start()
        self._servers.append(server)
        return server

    # -- per-host servers and certificates (SimHandle.pool) --------------------------------

    def server_of(self, host: str) -> SimServer:
        ref = self.sim._host_ref(host)
        for server in self._servers:
            if server.host_ref == ref:
                return server
        raise LookupError(f"no server for host {host!r}")

    def url_of(self, host: str) -> str:
        return self.server_of(host).url

    def cert(self, host: str) -> Path:
        return self._materials[self._host_name(host)][0]

    def key(self, host: str) -> Path:
        return self._materials[self._host_name(host)][1]

    def fingerprint(self, host: str) -> str:
        """The host's certificate SHA-256 as XAPI writes it (AB:CD:..., certificates.ml)."""
        return cert_fingerprint(self.cert(host))

    def _host_name(self, host: str) -> str:
        with self.sim.lock:
            return str(self.sim.tables["host"].records[self.sim._host_ref(host)]["name_label"])

    # -- degraded pools (see Simulator) ------------------------------------------------------

    def set_emergency(self, host: str, error: Optional[Sequence[str]]) -> None:
        self.sim.set_emergency(host, error)

    def set_master_address(self, host: str, address: Optional[str]) -> None:
        self.sim.set_master_address(host, address)

    def host_down(self, host: str, mode: str = "refuse") -> None:
        self.sim.host_down(host, mode)

    def host_up(self, host: str) -> None:
        self.sim.host_up(host)

    def set_host_live(self, host: str, live: bool) -> None:
        self.sim.set_host_live(host, live)

    def set_ha(self, enabled: bool) -> None:
        self.sim.set_ha(enabled)

    def promote(self, host: str) -> None:
        self.sim.promote(host)

    def fail_master(self, new_master: Optional[str] = None, mode: str = "refuse") -> None:
        self.sim.fail_master(new_master, mode)

    def set_vm(self, name_or_uuid: str, **changes: Any) -> None:
        self.sim.set_vm(name_or_uuid, **changes)

    def set_power_duration(self, name_or_uuid: str, op: str, seconds: float,
                           cancellable: bool = True) -> None:
        self.sim.set_power_duration(name_or_uuid, op, seconds, cancellable)

    def on_power(self, callback: Optional[PowerCallback]) -> None:
        self.sim.on_power(callback)

    def add_user(self, name: str, password: str, role: str = "pool-admin", *,
                 login_delay: Optional[float] = None) -> None:
        self.sim.add_user(name, password, role, login_delay=login_delay)

    def tasks_open(self) -> int:
        return self.sim.tasks_open()


# ---------------------------------------------------------------------------------------------
# 9. Script mode
# ---------------------------------------------------------------------------------------------


def _arguments(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Serve a simulated XAPI pool until SIGTERM; prints XAPISIM_URL=<url>.")
    parser.add_argument("--address", default="127.0.0.1", help="IPv4 or IPv6 address")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--tls-cert", type=Path)
    parser.add_argument("--tls-key", type=Path)
    parser.add_argument("--tls-self-signed", type=Path, metavar="DIR",
                        help="make a test CA and server certificate in DIR and serve HTTPS")
    parser.add_argument("--standard-pool", action="store_true",
                        help="the tests' standard pool (the default without --vms)")
    parser.add_argument("--vms", type=int, default=0, help="add N VMs vm-00001...")
    parser.add_argument("--templates", type=int, default=100)
    parser.add_argument("--snapshots", type=int, default=3)
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--vm", action="append", default=[], metavar="NAME[:STATE]",
                        help="add a VM (state Running unless given)")
    parser.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD",
                        help="add a pool-admin user")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--hooks", type=Path, metavar="FILE.json",
                        help='{"vm": {"on_halt": "cmd", "on_start": "cmd"}}')
    parser.add_argument("--url-file", type=Path, help="also write the URL to this file")
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _arguments(argv)
    sim = Simulator()
    if args.standard_pool or not args.vms:
        sim.populate_standard()
    if args.vms:
        sim.populate(args.vms, args.templates, args.snapshots, args.hosts)
    for spec in args.vm:
        name, _, state = spec.partition(":")
        sim.add_vm(name, state or "Running")
    for spec in args.user:
        name, _, password = spec.partition(":")
        sim.add_user(name, password)
    if args.hooks:
        sim.set_hooks(json.loads(args.hooks.read_text()))
    sim.faults.latency = args.latency_ms / 1000
    tls: TlsConfig = None
    if args.tls_self_signed:
        pki = make_pki(args.tls_self_signed)
        tls = (pki.server_cert, pki.server_key)
        print(f"XAPISIM_CA={pki.ca_cert}\nXAPISIM_FINGERPRINT={pki.fingerprint}")
    elif args.tls_cert:
        tls = (args.tls_cert, args.tls_key)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = SimServer(sim, args.address, args.port, tls).start()
    if args.url_file:
        args.url_file.write_text(server.url + "\n")
    print(f"XAPISIM_URL={server.url}", flush=True)
    while not stop.wait(1):
        pass
    sim.close()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
