#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A XAPI (XenAPI) simulator for testing fence agents on loopback.

It speaks XAPI's wire protocol: XML-RPC over HTTP/1.1 keep-alive or HTTPS, every call
answering a struct `{"Status": "Success", "Value": v}` or `{"Status": "Failure",
"ErrorDescription": [code, params...]}`. It holds a pool (hosts, VMs in every power state,
templates, snapshots, control domains, users with roles, sessions, tasks), injects faults
(latency, hangs, resets, bad XML, slow or failing operations, HOST_IS_SLAVE, SESSION_INVALID)
and counts every request. Stdlib only; importable (tests, benchmark) and runnable as a script.

Control plane: XML-RPC methods `sim.*` on the same endpoint, taking no session and not
counted. `SimClient` wraps them for other processes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid as uuidlib
import xmlrpc.client
from collections import Counter
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional, Union

NULL_REF = "OpaqueRef:NULL"
POWER_STATES = ("Halted", "Paused", "Running", "Suspended")
SESSIONS_PER_ORIGINATOR = 500
READ_ONLY_ROLE = "read-only"
HOOK_TIMEOUT = 15.0


def new_ref() -> str:
    return f"OpaqueRef:{uuidlib.uuid4()}"


class XapiError(Exception):
    """Answered as `{"Status": "Failure", "ErrorDescription": description}`."""

    def __init__(self, *description: object) -> None:
        super().__init__(*description)
        self.description = [str(item) for item in description]


@dataclass
class Faults:
    """What goes wrong on the next requests; every field defaults to "nothing"."""

    latency: float = 0.0
    login_delay: float = 0.0
    hang: bool = False
    reset: bool = False
    bad_xml: bool = False
    power_op_delay: float = 0.0
    ignore_hard_shutdown: bool = False
    fail_next: dict[str, list[list[str]]] = field(default_factory=dict)


@dataclass
class Host:
    ref: str
    uuid: str
    name: str
    address: str
    live: bool
    metrics_ref: str

    def record(self, control_domain: str, resident_vms: list[str]) -> dict[str, Any]:
        return {
            "uuid": self.uuid, "name_label": self.name, "name_description": "",
            "address": self.address, "hostname": self.name, "enabled": self.live,
            "metrics": self.metrics_ref, "control_domain": control_domain,
            "resident_VMs": resident_vms, "API_version_major": "2", "API_version_minor": "21",
            "API_version_vendor": "XenSource", "software_version": {"product_version": "8.2.1"},
            "other_config": {}, "tags": [], "allowed_operations": [], "current_operations": {},
        }


@dataclass
class Session:
    ref: str
    user: str
    originator: str
    created: float


@dataclass
class Task:
    ref: str
    uuid: str
    name: str
    status: str = "pending"
    result: str = ""
    error_info: list[str] = field(default_factory=list)
    progress: float = 0.0
    created: float = field(default_factory=time.time)

    def record(self) -> dict[str, Any]:
        return {"uuid": self.uuid, "name_label": self.name, "name_description": "",
                "status": self.status, "result": self.result, "error_info": self.error_info,
                "progress": self.progress, "created": time.strftime(
                    "%Y%m%dT%H:%M:%SZ", time.gmtime(self.created)),
                "finished": "", "allowed_operations": [], "current_operations": {},
                "resident_on": NULL_REF, "other_config": {}}


def vm_record(name: str, uuid: str, power_state: str, *, template: bool, snapshot: bool,
              control_domain: bool, resident_on: str, snapshot_of: str) -> dict[str, Any]:
    """A VM record with the fields a real XAPI record has (about 3 KB as XML-RPC); int64
    values are strings, as XAPI sends them."""
    memory = str(2 * 1024**3)
    return {
        "uuid": uuid, "name_label": name, "name_description": f"{name} (simulated)",
        "power_state": power_state, "user_version": "1", "is_a_template": template,
        "is_default_template": False, "is_a_snapshot": snapshot, "snapshot_of": snapshot_of,
        "snapshots": [], "snapshot_time": "19700101T00:00:00Z", "transportable_snapshot_id": "",
        "suspend_VDI": NULL_REF, "resident_on": resident_on,
        "scheduled_to_be_resident_on": NULL_REF,
        "affinity": NULL_REF, "memory_overhead": "20971520", "memory_target": memory,
        "memory_static_max": memory, "memory_dynamic_max": memory, "memory_dynamic_min": memory,
        "memory_static_min": str(512 * 1024**2), "VCPUs_params": {}, "VCPUs_max": "2",
        "VCPUs_at_startup": "2", "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart", "actions_after_crash": "restart", "consoles": [],
        "VIFs": [new_ref()], "VBDs": [new_ref(), new_ref()], "VUSBs": [], "crash_dumps": [],
        "VTPMs": [], "PV_bootloader": "", "PV_kernel": "", "PV_ramdisk": "", "PV_args": "",
        "PV_bootloader_args": "", "PV_legacy_args": "", "HVM_boot_policy": "BIOS order",
        "HVM_boot_params": {"order": "cdn"}, "HVM_shadow_multiplier": 1.0,
        "platform": {"timeoffset": "0", "device-model": "qemu-upstream-compat", "viridian": "false",
                     "nx": "true", "acpi": "1", "apic": "true", "pae": "true", "hpet": "true",
                     "secureboot": "false", "cores-per-socket": "2", "vga": "std"},
        "PCI_bus": "", "other_config": {"base_template_name": "Debian Bookworm 12",
                                        "import_task": NULL_REF, "mac_seed": str(uuidlib.uuid4()),
                                        "install-methods": "cdrom,nfs,http,ftp"},
        "domid": "-1" if power_state == "Halted" else "7", "domarch": "",
        "last_boot_CPU_flags": {"vendor": "GenuineIntel", "features": "1fcbfbff-f7fa3223-2d93fbff"},
        "is_control_domain": control_domain, "metrics": new_ref(), "guest_metrics": new_ref(),
        "last_booted_record": "", "recommendations": "<restrictions><restriction field=\"memory-"
        "static-max\" max=\"1649267441664\"/><restriction field=\"vcpus-max\" max=\"32\"/>"
        "</restrictions>", "xenstore_data": {"vm-data": ""}, "ha_always_run": False,
        "ha_restart_priority": "", "is_snapshot_from_vmpp": False, "snapshot_schedule": NULL_REF,
        "is_vmss_snapshot": False, "appliance": NULL_REF, "start_delay": "0",
        "shutdown_delay": "0", "order": "0", "VGPUs": [], "attached_PCIs": [],
        "suspend_SR": NULL_REF, "version": "0", "generation_id": "",
        "hardware_platform_version": "0",
        "has_vendor_device": False, "requires_reboot": False, "reference_label": "",
        "domain_type": "hvm", "NVRAM": {}, "pending_guidances": [], "blocked_operations": {},
        "allowed_operations": ["changing_dynamic_range", "hard_reboot", "hard_shutdown",
                               "pause", "snapshot", "suspend", "start"],
        "current_operations": {}, "bios_strings": {"bios-vendor": "Xen", "system-manufacturer":
                                                   "Xen", "system-product-name": "HVM domU"},
        "tags": [], "parent": NULL_REF, "children": [], "protection_policy": NULL_REF,
        "blobs": {},
    }


def _value_xml(value: Any) -> str:
    """One XML-RPC <value> element."""
    text = xmlrpc.client.dumps((value,), allow_none=False)
    start, end = text.index("<value>"), text.rindex("</value>") + len("</value>")
    return text[start:end]


class RecordMap:
    """A ref → record map answered from cached XML fragments (big pools answer fast)."""

    def __init__(self, fragments: list[tuple[str, str]]) -> None:
        self.fragments = fragments


@dataclass(frozen=True)
class MethodSpec:
    handler: Callable[..., Any]
    arity: Union[int, tuple[int, int]]  # arguments after the session
    needs_session: bool = True
    power_op: bool = False


_METHODS: dict[str, MethodSpec] = {}


def xapi(name: str, arity: Union[int, tuple[int, int]], *, needs_session: bool = True,
         power_op: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(handler: Callable[..., Any]) -> Callable[..., Any]:
        _METHODS[name] = MethodSpec(handler, arity, needs_session, power_op)
        return handler
    return register


class Simulator:
    """The pool's state. Thread-safe: one lock guards everything; slow operations sleep
    without holding it."""

    def __init__(self, users: Optional[dict[str, tuple[str, str]]] = None) -> None:
        self.lock = threading.RLock()
        self.users: dict[str, tuple[str, str]] = dict(users or {"root": ("secret", "pool-admin")})
        self.hosts: dict[str, Host] = {}
        self.vms: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, Session] = {}
        self.tasks: dict[str, Task] = {}
        self.pool_ref = new_ref()
        self.pool_uuid = str(uuidlib.uuid4())
        self.master_ref = NULL_REF
        self.faults = Faults()
        self.hooks: dict[str, dict[str, str]] = {}
        self.counts: Counter[str] = Counter()
        self.total = 0
        self.logins = 0
        self.logouts = 0
        self.power_log: list[tuple[str, str]] = []
        self.issued_sessions: list[str] = []
        self.stopping = threading.Event()
        self._xml_cache: dict[str, str] = {}
        self._busy: dict[str, str] = {}  # vm ref -> operation in progress

    # --- building the pool ------------------------------------------------------------------

    def add_host(self, name: str, address: str = "127.0.0.1", live: bool = True) -> str:
        with self.lock:
            ref = new_ref()
            self.hosts[ref] = Host(ref, str(uuidlib.uuid4()), name, address, live, new_ref())
            if self.master_ref == NULL_REF:
                self.master_ref = ref
            self.add_vm(f"Control domain on host: {name}", "Running", host=ref,
                        control_domain=True)
            return ref

    def host_ref(self, name: str) -> str:
        for ref, host in self.hosts.items():
            if host.name == name:
                return ref
        raise KeyError(name)

    def add_vm(self, name: str, power_state: str = "Running", *, host: Optional[str] = None,
               template: bool = False, snapshot: bool = False, control_domain: bool = False,
               snapshot_of: str = NULL_REF, uuid: Optional[str] = None) -> str:
        if power_state not in POWER_STATES:
            raise ValueError(power_state)
        with self.lock:
            ref = new_ref()
            resident = NULL_REF
            if power_state != "Halted" and not template:
                resident = host or self.master_ref
            self.vms[ref] = vm_record(name, uuid or str(uuidlib.uuid4()), power_state,
                                      template=template or snapshot, snapshot=snapshot,
                                      control_domain=control_domain, resident_on=resident,
                                      snapshot_of=snapshot_of)
            return ref

    def populate_standard(self) -> None:
        """THE STANDARD POOL the tests rely on (see HACKING.md / tests/conftest.py)."""
        self.users["ro"] = ("ropass", READ_ONLY_ROLE)
        host1 = self.add_host("host1", "127.0.0.1")
        self.add_host("host2", "127.0.0.2")
        host3 = self.add_host("host3", "127.0.0.3", live=False)
        running = self.add_vm("vm-running", "Running", host=host1)
        self.add_vm("vm-halted", "Halted")
        self.add_vm("vm-paused", "Paused", host=host1)
        self.add_vm("vm-suspended", "Suspended")
        self.add_vm("vm-dup", "Running")
        self.add_vm("vm-dup", "Running")
        self.add_vm("vm-on-dead-host", "Running", host=host3)
        for node in ("node1", "node2", "node3"):
            self.add_vm(node, "Running")
        self.add_vm("vm-shared-name", "Running")
        self.add_vm('vm "quoted"', "Running")
        for template in ("tmpl-debian", "vm-shared-name", "Other install media",
                         "Windows Server 2022 (64-bit)"):
            self.add_vm(template, "Halted", template=True)
        self.add_vm("vm-running-snap", "Halted", snapshot=True, snapshot_of=running)

    def populate(self, vms: int, templates: int = 100, snapshots: int = 3,
                 hosts: int = 2) -> None:
        """A large pool for benchmarks: `vms` real VMs named vm-00001…, most Running."""
        host_refs = [self.add_host(f"host{i}", f"127.0.0.{i}") for i in range(1, hosts + 1)]
        refs = [self.add_vm(f"vm-{i:05d}", "Halted" if i % 10 == 0 else "Running",
                            host=host_refs[i % hosts]) for i in range(1, vms + 1)]
        for i in range(1, templates + 1):
            self.add_vm(f"Template {i:03d}", "Halted", template=True)
        for i in range(min(snapshots, len(refs))):
            name = self.vms[refs[i]]["name_label"]
            self.add_vm(f"{name}-snap", "Halted", snapshot=True, snapshot_of=refs[i])

    def set_hooks(self, hooks: dict[str, dict[str, str]]) -> None:
        with self.lock:
            self.hooks = {name: dict(spec) for name, spec in hooks.items()}

    # --- reading and changing the pool ------------------------------------------------------

    def find(self, ident: str) -> str:
        """The ref of the VM with this ref, UUID or (unique) name."""
        with self.lock:
            if ident in self.vms:
                return ident
            matches = [ref for ref, rec in self.vms.items()
                       if rec["uuid"] == ident.lower() or rec["name_label"] == ident]
            if len(matches) != 1:
                raise KeyError(f"{len(matches)} VMs match {ident!r}")
            return matches[0]

    def record(self, ident: str) -> dict[str, Any]:
        with self.lock:
            return dict(self.vms[self.find(ident)])

    def set_power_state(self, ident: str, state: str) -> None:
        with self.lock:
            ref = self.find(ident)
            self._set_state(ref, state)

    def _set_state(self, ref: str, state: str, host: Optional[str] = None) -> None:
        if state not in POWER_STATES:
            raise ValueError(state)
        rec = self.vms[ref]
        rec["power_state"] = state
        rec["resident_on"] = NULL_REF if state in ("Halted", "Suspended") else (
            host or (rec["resident_on"] if rec["resident_on"] != NULL_REF else self.master_ref))
        rec["domid"] = "-1" if state == "Halted" else "7"
        self._xml_cache.pop(ref, None)

    def _set_state_locked(self, ref: str, state: str) -> None:
        with self.lock:
            self._set_state(ref, state)

    def sessions_open(self) -> int:
        with self.lock:
            return len(self.sessions)

    def counters(self) -> dict[str, Any]:
        with self.lock:
            return {"requests": dict(self.counts), "total": self.total,
                    "sessions_open": len(self.sessions), "logins": self.logins,
                    "logouts": self.logouts}

    def reset_counters(self) -> None:
        with self.lock:
            self.counts.clear()
            self.total = 0
            self.logins = self.logouts = 0
            self.power_log.clear()

    def set_host_live(self, name: str, live: bool) -> None:
        with self.lock:
            self.hosts[self.host_ref(name)].live = live

    # --- the XAPI front door ----------------------------------------------------------------

    def handle(self, method: str, params: tuple[Any, ...], master: bool = True) -> Any:
        """Run one counted XAPI call; returns the Value or raises XapiError."""
        with self.lock:
            self.counts[method] += 1
            self.total += 1
            queue = self.faults.fail_next.get(method)
            injected = queue.pop(0) if queue else None
        latency = self.faults.latency
        if latency:
            time.sleep(latency)
        spec = _METHODS.get(method)
        if spec is None:
            raise XapiError("MESSAGE_METHOD_UNKNOWN", method)
        args = list(params)
        session: Optional[Session] = None
        if spec.needs_session:
            if not args:
                raise XapiError("MESSAGE_PARAMETER_COUNT_MISMATCH", method, _arity_text(spec), 0)
            session_ref = str(args.pop(0))
            with self.lock:
                session = self.sessions.get(session_ref)
            if session is None:
                raise XapiError("SESSION_INVALID", session_ref)
        low, high = spec.arity if isinstance(spec.arity, tuple) else (spec.arity, spec.arity)
        if not low <= len(args) <= high:
            raise XapiError("MESSAGE_PARAMETER_COUNT_MISMATCH", method, _arity_text(spec),
                            len(args))
        if injected is not None:
            if injected[:1] == ["SESSION_INVALID"] and session is not None:
                with self.lock:
                    self.sessions.pop(session.ref, None)
                raise XapiError("SESSION_INVALID", session.ref)
            raise XapiError(*injected)
        if spec.power_op and session is not None:
            role = self.users.get(session.user, ("", ""))[1]
            if role == READ_ONLY_ROLE:
                raise XapiError("RBAC_PERMISSION_DENIED", method,
                                "No permission in the user's role to perform this operation")
        if method == "session.login_with_password" and not master:
            raise XapiError("HOST_IS_SLAVE", self.hosts[self.master_ref].address)
        return spec.handler(self, session, *args)

    # --- power operations -------------------------------------------------------------------

    def _vm_ref(self, ref: object) -> str:
        ref = str(ref)
        if ref not in self.vms:
            raise XapiError("HANDLE_INVALID", "VM", ref)
        return ref

    def _power(self, ref: str, op: str, allowed_from: tuple[str, ...],
               change: Callable[[str], None], *, needs_live_host: bool = True) -> None:
        """Check, mark busy, wait power_op_delay without the lock, then apply `change`."""
        with self.lock:
            ref = self._vm_ref(ref)
            rec = self.vms[ref]
            if rec["is_a_template"] or rec["is_control_domain"]:
                raise XapiError("OPERATION_NOT_ALLOWED",
                                f"{op} is not allowed on a template or control domain")
            if ref in self._busy:
                raise XapiError("OTHER_OPERATION_IN_PROGRESS", "VM", ref, self._busy[ref])
            state = rec["power_state"]
            if state not in allowed_from:
                raise XapiError("VM_BAD_POWER_STATE", ref, allowed_from[0].lower(), state.lower())
            host = rec["resident_on"]
            if needs_live_host and host in self.hosts and not self.hosts[host].live:
                raise XapiError("HOST_OFFLINE", host)
            self._busy[ref] = op
            delay = self.faults.power_op_delay
        try:
            if delay:
                self.stopping.wait(delay)
            with self.lock:
                self.power_log.append((rec["uuid"], op))
            change(ref)
        finally:
            with self.lock:
                self._busy.pop(ref, None)

    def _halt(self, ref: str, hard: bool = True) -> None:
        with self.lock:
            if hard and self.faults.ignore_hard_shutdown:
                return
            self._set_state(ref, "Halted")
            hook = self.hooks.get(self.vms[ref]["name_label"], {}).get("on_halt")
        if hook:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                subprocess.run(["/bin/sh", "-c", hook], timeout=HOOK_TIMEOUT, check=False,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)

    def _run(self, ref: str, state: str = "Running") -> None:
        with self.lock:
            self._set_state(ref, state, host=self.master_ref)
            hook = self.hooks.get(self.vms[ref]["name_label"], {}).get("on_start")
        if hook and state == "Running":
            with contextlib.suppress(OSError):
                subprocess.Popen(["/bin/sh", "-c", hook], start_new_session=True,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)

    def _reboot(self, ref: str) -> None:
        self._halt(ref)
        self._run(ref)

    def run_async(self, name: str, work: Callable[[], Any]) -> str:
        task = Task(new_ref(), str(uuidlib.uuid4()), name)
        with self.lock:
            self.tasks[task.ref] = task

        def body() -> None:
            try:
                value = work()
                with self.lock:
                    task.result = "" if value is None else str(value)
                    task.status, task.progress = "success", 1.0
            except XapiError as error:
                with self.lock:
                    task.error_info = error.description
                    task.status, task.progress = "failure", 1.0

        threading.Thread(target=body, daemon=True).start()
        return task.ref


def _arity_text(spec: MethodSpec) -> str:
    low = spec.arity if isinstance(spec.arity, int) else spec.arity[0]
    return str(low + (1 if spec.needs_session else 0))


# --- XAPI methods ------------------------------------------------------------------------------


@xapi("session.login_with_password", (2, 4), needs_session=False)
def _login(sim: Simulator, _s: None, uname: str, pwd: str, version: str = "1.0",
           originator: str = "") -> str:
    delay = sim.faults.login_delay
    if delay:
        sim.stopping.wait(delay)
    with sim.lock:
        known = sim.users.get(uname)
        if known is None or known[0] != pwd:
            raise XapiError("SESSION_AUTHENTICATION_FAILED", uname,
                            "Authentication failure")
        mine = sorted((s for s in sim.sessions.values() if s.originator == originator),
                      key=lambda s: s.created)
        for old in mine[:max(0, len(mine) - SESSIONS_PER_ORIGINATOR + 1)]:
            del sim.sessions[old.ref]
        session = Session(new_ref(), uname, originator, time.monotonic())
        sim.sessions[session.ref] = session
        sim.issued_sessions.append(session.ref)
        sim.logins += 1
        return session.ref


@xapi("session.logout", 0)
def _logout(sim: Simulator, session: Session) -> str:
    with sim.lock:
        sim.sessions.pop(session.ref, None)
        sim.logouts += 1
    return ""


@xapi("session.get_this_host", 1)
def _this_host(sim: Simulator, _s: Session, _session_ref: str) -> str:
    return sim.master_ref


@xapi("VM.get_all", 0)
def _vm_get_all(sim: Simulator, _s: Session) -> list[str]:
    with sim.lock:
        return list(sim.vms)


def _record_map(sim: Simulator, refs: list[str]) -> RecordMap:
    with sim.lock:
        fragments = []
        for ref in refs:
            xml = sim._xml_cache.get(ref)
            if xml is None:
                xml = sim._xml_cache[ref] = _value_xml(sim.vms[ref])
            fragments.append((ref, xml))
        return RecordMap(fragments)


@xapi("VM.get_all_records", 0)
def _vm_get_all_records(sim: Simulator, _s: Session) -> RecordMap:
    return _record_map(sim, list(sim.vms))


@xapi("VM.get_all_records_where", 1)
def _vm_get_all_records_where(sim: Simulator, _s: Session, expression: str) -> RecordMap:
    predicate = parse_expression(expression)
    with sim.lock:
        refs = [ref for ref, rec in sim.vms.items() if predicate(rec)]
    return _record_map(sim, refs)


@xapi("VM.get_record", 1)
def _vm_get_record(sim: Simulator, _s: Session, ref: str) -> dict[str, Any]:
    with sim.lock:
        return dict(sim.vms[sim._vm_ref(ref)])


@xapi("VM.get_by_uuid", 1)
def _vm_get_by_uuid(sim: Simulator, _s: Session, uuid: str) -> str:
    with sim.lock:
        for ref, rec in sim.vms.items():
            if rec["uuid"] == uuid:
                return ref
    raise XapiError("UUID_INVALID", "VM", uuid)


@xapi("VM.get_by_name_label", 1)
def _vm_get_by_name_label(sim: Simulator, _s: Session, label: str) -> list[str]:
    with sim.lock:
        return [ref for ref, rec in sim.vms.items() if rec["name_label"] == label]


def _field_getter(field_name: str) -> Callable[[Simulator, Session, str], Any]:
    def getter(sim: Simulator, _s: Session, ref: str) -> Any:
        with sim.lock:
            return sim.vms[sim._vm_ref(ref)][field_name]
    return getter


for _field in ("uuid", "name_label", "power_state", "is_a_template", "is_control_domain",
               "is_a_snapshot", "resident_on", "allowed_operations", "other_config", "tags"):
    xapi(f"VM.get_{_field}", 1)(_field_getter(_field))


def _power_methods() -> None:
    """VM power operations, each also as Async.VM.<op> returning a task."""

    def hard_shutdown(sim: Simulator, ref: str) -> None:
        sim._power(ref, "hard_shutdown", ("Running", "Paused", "Suspended"), sim._halt)

    def clean_shutdown(sim: Simulator, ref: str) -> None:
        sim._power(ref, "clean_shutdown", ("Running",), lambda r: sim._halt(r, hard=False))

    def hard_reboot(sim: Simulator, ref: str) -> None:
        sim._power(ref, "hard_reboot", ("Running", "Paused"), sim._reboot)

    def clean_reboot(sim: Simulator, ref: str) -> None:
        sim._power(ref, "clean_reboot", ("Running",), sim._reboot)

    def start(sim: Simulator, ref: str, start_paused: bool = False, _force: bool = False) -> None:
        sim._power(ref, "start", ("Halted",),
                   lambda r: sim._run(r, "Paused" if start_paused else "Running"),
                   needs_live_host=False)

    def resume(sim: Simulator, ref: str, start_paused: bool = False, _force: bool = False) -> None:
        sim._power(ref, "resume", ("Suspended",),
                   lambda r: sim._run(r, "Paused" if start_paused else "Running"),
                   needs_live_host=False)

    def unpause(sim: Simulator, ref: str) -> None:
        sim._power(ref, "unpause", ("Paused",), sim._run)

    def pause(sim: Simulator, ref: str) -> None:
        sim._power(ref, "pause", ("Running",), lambda r: sim._set_state_locked(r, "Paused"))

    def suspend(sim: Simulator, ref: str) -> None:
        sim._power(ref, "suspend", ("Running",),
                   lambda r: sim._set_state_locked(r, "Suspended"))

    def power_state_reset(sim: Simulator, ref: str) -> None:
        with sim.lock:
            ref = sim._vm_ref(ref)
            host = sim.vms[ref]["resident_on"]
            if host in sim.hosts and sim.hosts[host].live:
                raise XapiError("HOST_IS_LIVE", host)
            sim.power_log.append((sim.vms[ref]["uuid"], "power_state_reset"))
        sim._halt(ref, hard=False)

    operations: dict[str, tuple[Callable[..., None], Union[int, tuple[int, int]]]] = {
        "hard_shutdown": (hard_shutdown, 1), "clean_shutdown": (clean_shutdown, 1),
        "hard_reboot": (hard_reboot, 1), "clean_reboot": (clean_reboot, 1),
        "start": (start, 3), "resume": (resume, 3), "unpause": (unpause, 1),
        "pause": (pause, 1), "suspend": (suspend, 1), "power_state_reset": (power_state_reset, 1),
    }
    for op, (body, arity) in operations.items():
        def sync(sim: Simulator, _s: Session, *args: Any, _body: Callable[..., None] = body) -> str:
            _body(sim, *args)
            return ""

        def asynchronous(sim: Simulator, _s: Session, *args: Any, _op: str = op,
                         _body: Callable[..., None] = body) -> str:
            return sim.run_async(f"Async.VM.{_op}", lambda: _body(sim, *args))

        xapi(f"VM.{op}", arity, power_op=True)(sync)
        xapi(f"Async.VM.{op}", arity, power_op=True)(asynchronous)


_power_methods()


def _task(sim: Simulator, ref: str) -> Task:
    task = sim.tasks.get(str(ref))
    if task is None:
        raise XapiError("HANDLE_INVALID", "task", ref)
    return task


def _task_getter(attribute: str) -> Callable[[Simulator, Session, str], Any]:
    def getter(sim: Simulator, _s: Session, ref: str) -> Any:
        with sim.lock:
            return getattr(_task(sim, ref), attribute)
    return getter


for _name, _attr in (("status", "status"), ("result", "result"), ("error_info", "error_info"),
                     ("progress", "progress"), ("uuid", "uuid"), ("name_label", "name")):
    xapi(f"task.get_{_name}", 1)(_task_getter(_attr))


@xapi("task.get_record", 1)
def _task_record(sim: Simulator, _s: Session, ref: str) -> dict[str, Any]:
    with sim.lock:
        return _task(sim, ref).record()


@xapi("task.cancel", 1)
def _task_cancel(sim: Simulator, _s: Session, ref: str) -> str:
    with sim.lock:
        task = _task(sim, ref)
        if task.status == "pending":
            task.status = "cancelling"
    return ""


@xapi("task.destroy", 1)
def _task_destroy(sim: Simulator, _s: Session, ref: str) -> str:
    with sim.lock:
        _task(sim, ref)
        del sim.tasks[str(ref)]
    return ""


def _host(sim: Simulator, ref: str) -> Host:
    host = sim.hosts.get(str(ref))
    if host is None:
        raise XapiError("HANDLE_INVALID", "host", ref)
    return host


@xapi("host.get_all", 0)
def _host_get_all(sim: Simulator, _s: Session) -> list[str]:
    with sim.lock:
        return list(sim.hosts)


@xapi("host.get_record", 1)
def _host_get_record(sim: Simulator, _s: Session, ref: str) -> dict[str, Any]:
    with sim.lock:
        host = _host(sim, ref)
        dom0 = next((r for r, v in sim.vms.items()
                     if v["is_control_domain"] and v["resident_on"] == host.ref), NULL_REF)
        resident = [r for r, v in sim.vms.items() if v["resident_on"] == host.ref]
        return host.record(dom0, resident)


@xapi("host.get_address", 1)
def _host_get_address(sim: Simulator, _s: Session, ref: str) -> str:
    with sim.lock:
        return _host(sim, ref).address


@xapi("host.get_name_label", 1)
def _host_get_name_label(sim: Simulator, _s: Session, ref: str) -> str:
    with sim.lock:
        return _host(sim, ref).name


@xapi("host.get_metrics", 1)
def _host_get_metrics(sim: Simulator, _s: Session, ref: str) -> str:
    with sim.lock:
        return _host(sim, ref).metrics_ref


@xapi("host_metrics.get_live", 1)
def _host_metrics_live(sim: Simulator, _s: Session, ref: str) -> bool:
    with sim.lock:
        for host in sim.hosts.values():
            if host.metrics_ref == ref:
                return host.live
    raise XapiError("HANDLE_INVALID", "host_metrics", ref)


@xapi("pool.get_all", 0)
def _pool_get_all(sim: Simulator, _s: Session) -> list[str]:
    return [sim.pool_ref]


@xapi("pool.get_master", 1)
def _pool_get_master(sim: Simulator, _s: Session, ref: str) -> str:
    if ref != sim.pool_ref:
        raise XapiError("HANDLE_INVALID", "pool", ref)
    return sim.master_ref


@xapi("pool.get_record", 1)
def _pool_get_record(sim: Simulator, _s: Session, ref: str) -> dict[str, Any]:
    if ref != sim.pool_ref:
        raise XapiError("HANDLE_INVALID", "pool", ref)
    return {"uuid": sim.pool_uuid, "name_label": "simulated pool", "name_description": "",
            "master": sim.master_ref, "default_SR": NULL_REF, "other_config": {},
            "ha_enabled": False, "tags": []}


# --- XAPI's query language (VM.get_all_records_where) -----------------------------------------


def parse_expression(text: str) -> Callable[[dict[str, Any]], bool]:
    """`field "name__label"="x" and not (field "is_a_template"="true" or false)`; field names
    use `__` for `_`, values compare as strings (booleans as "true"/"false"); strings have no
    escapes."""
    tokens: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif char in "()=":
            tokens.append(char)
            i += 1
        elif char == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise XapiError("INVALID_VALUE", "expression", text)
            tokens.append(text[i:end + 1])
            i = end + 1
        else:
            j = i
            while j < len(text) and (text[j].isalnum() or text[j] == "_"):
                j += 1
            if j == i:
                raise XapiError("INVALID_VALUE", "expression", text)
            tokens.append(text[i:j])
            i = j
    position = 0

    def peek() -> Optional[str]:
        return tokens[position] if position < len(tokens) else None

    def take(expected: Optional[str] = None) -> str:
        nonlocal position
        token = peek()
        if token is None or (expected is not None and token != expected):
            raise XapiError("INVALID_VALUE", "expression", text)
        position += 1
        return token

    Pred = Callable[[dict[str, Any]], bool]

    def as_text(value: Any) -> str:
        return ("true" if value else "false") if isinstance(value, bool) else str(value)

    def atom() -> Pred:
        token = take()
        if token == "not":
            inner = atom()
            return lambda rec: not inner(rec)
        if token == "(":
            inner = disjunction()
            take(")")
            return inner
        if token in ("true", "false"):
            constant = token == "true"
            return lambda rec: constant
        if token == "field":
            name = take().strip('"').replace("__", "_")
            take("=")
            value = take()
            if not value.startswith('"'):
                raise XapiError("INVALID_VALUE", "expression", text)
            wanted = value[1:-1]
            return lambda rec: as_text(rec.get(name, "")) == wanted
        raise XapiError("INVALID_VALUE", "expression", text)

    def conjunction() -> Pred:
        parts = [atom()]
        while peek() == "and":
            take()
            parts.append(atom())
        return lambda rec: all(p(rec) for p in parts)

    def disjunction() -> Pred:
        parts = [conjunction()]
        while peek() == "or":
            take()
            parts.append(conjunction())
        return lambda rec: any(p(rec) for p in parts)

    result = disjunction()
    if peek() is not None:
        raise XapiError("INVALID_VALUE", "expression", text)
    return result


# --- control plane -------------------------------------------------------------------------


def _control(sim: Simulator, method: str, params: tuple[Any, ...]) -> Any:
    if method == "sim.counters":
        return sim.counters()
    if method == "sim.reset_counters":
        sim.reset_counters()
        return True
    if method == "sim.vm":
        return sim.record(str(params[0]))
    if method == "sim.vms":
        keys = ("uuid", "name_label", "power_state", "is_a_template", "is_a_snapshot",
                "is_control_domain")
        with sim.lock:
            return [{k: rec[k] for k in keys} for rec in sim.vms.values()]
    if method == "sim.power_log":
        with sim.lock:
            return [list(entry) for entry in sim.power_log]
    if method == "sim.set_power_state":
        sim.set_power_state(str(params[0]), str(params[1]))
        return True
    if method == "sim.set_faults":
        names = {f.name for f in fields(Faults)}
        with sim.lock:
            for key, value in dict(params[0]).items():
                if key not in names:
                    raise KeyError(key)
                setattr(sim.faults, key, value)
        return True
    if method == "sim.clear_faults":
        sim.faults = Faults()
        return True
    if method == "sim.set_host_live":
        sim.set_host_live(str(params[0]), bool(params[1]))
        return True
    if method == "sim.sessions":
        with sim.lock:
            return list(sim.issued_sessions)
    raise KeyError(method)


# --- HTTP(S) front end ---------------------------------------------------------------------


def _struct_response(members_xml: str) -> bytes:
    return ("<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n<value><struct>"
            f"{members_xml}</struct></value>\n</param>\n</params>\n</methodResponse>\n"
            ).encode()


def encode_success(value: Any) -> bytes:
    status = "<member><name>Status</name><value><string>Success</string></value></member>"
    if isinstance(value, RecordMap):
        inner = "".join(f"<member><name>{ref}</name>{xml}</member>"
                        for ref, xml in value.fragments)
        body = f"<value><struct>{inner}</struct></value>"
    else:
        body = _value_xml(value)
    return _struct_response(f"{status}<member><name>Value</name>{body}</member>")


def encode_failure(description: list[str]) -> bytes:
    return xmlrpc.client.dumps(({"Status": "Failure", "ErrorDescription": description},),
                               methodresponse=True).encode("utf-8")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, body: bytes, status: str = "200 OK") -> None:
        head = (f"HTTP/1.1 {status}\r\nContent-Type: text/xml\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode("ascii")
        self.wfile.write(head + body)  # one write: no Nagle delay on the client

    def do_POST(self) -> None:
        sim = self.server.sim
        length = int(self.headers.get("Content-Length") or 0)
        try:
            params, method = xmlrpc.client.loads(self.rfile.read(length))
        except Exception:
            self._send(b"bad request", "400 Bad Request")
            return
        method = method or ""
        if method.startswith("sim."):
            try:
                answer = xmlrpc.client.dumps((_control(sim, method, params),),
                                             methodresponse=True, allow_none=True)
            except (KeyError, ValueError, IndexError, TypeError) as error:
                answer = xmlrpc.client.dumps(xmlrpc.client.Fault(1, repr(error)),
                                             methodresponse=True)
            self._send(answer.encode("utf-8"))
            return
        faults = sim.faults
        if faults.hang:
            with sim.lock:
                sim.counts[method] += 1
                sim.total += 1
            sim.stopping.wait()
            self.close_connection = True
            return
        if faults.reset:
            with sim.lock:
                sim.counts[method] += 1
                sim.total += 1
            with contextlib.suppress(OSError):
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.close_connection = True
            return
        try:
            value = sim.handle(method, params, master=self.server.is_master)
            body = encode_success(value)
        except XapiError as error:
            body = encode_failure(error.description)
        if faults.bad_xml:
            body = b"<html><body>502 Bad Gateway: this is not XML-RPC</body>"
        self._send(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sim: Simulator
    is_master: bool
    tls: Optional[ssl.SSLContext]

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        if self.tls is not None:
            # The handshake runs in the request's thread, so a silent client cannot block
            # the accept loop.
            connection = self.tls.wrap_socket(connection, server_side=True,
                                              do_handshake_on_connect=False)
        return connection, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up or fails the TLS handshake is not a server error


class SimServer:
    """Serves one pool host of `sim` on address:port (port 0: any free port)."""

    def __init__(self, sim: Simulator, address: str = "127.0.0.1", port: int = 0,
                 tls: Optional[ssl.SSLContext] = None, is_master: bool = True) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET

        class Server(_Server):
            address_family = family

        self.sim = sim
        self._server = Server((address, port), _Handler, bind_and_activate=True)
        self._server.sim = sim
        self._server.is_master = is_master
        self._server.tls = tls
        self.address = address
        self.port = self._server.server_address[1]
        self.scheme = "https" if tls else "http"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{host}:{self.port}/"

    def start(self) -> SimServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.sim.stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def server_tls_context(cert: Union[str, Path], key: Union[str, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    return context


# --- test PKI --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    fingerprint: str
    other_cert: Path
    other_key: Path


SAN = "subjectAltName=IP:127.0.0.1,IP:127.0.0.2,IP:127.0.0.3,IP:::1,DNS:localhost"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def cert_fingerprint(cert: Path) -> str:
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    return ":".join(f"{byte:02X}" for byte in hashlib.sha256(der).digest())


def make_pki(directory: Union[str, Path]) -> Pki:
    """A CA, a server certificate it signs (for 127.0.0.1-3, ::1, localhost) and a
    self-signed certificate for the same names that the CA did not sign."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"),
             "-days", "3650", "-subj", "/CN=xapisim test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", *ec, "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"),
             "-subj", "/CN=localhost")
    (d / "server.ext").write_text(SAN.replace("=", " = ", 1) + "\n"
                                  "basicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n")
    _openssl("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"),
             "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-out", str(d / "server.pem"),
             "-days", "3650", "-extfile", str(d / "server.ext"))
    _openssl("req", "-x509", *ec, "-keyout", str(d / "other.key"), "-out", str(d / "other.pem"),
             "-days", "3650", "-subj", "/CN=localhost", "-addext", SAN)
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key",
               cert_fingerprint(d / "server.pem"), d / "other.pem", d / "other.key")


# --- out-of-process client of the control plane -----------------------------------------------


class SimClient:
    """The `sim.*` control plane of a running simulator (benchmark, Pacemaker tests, demo)."""

    def __init__(self, url: str) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the control channel is the test's own
        self._proxy = xmlrpc.client.ServerProxy(url, allow_none=True, context=context)

    def _call(self, name: str, *args: Any) -> Any:
        return getattr(self._proxy, f"sim.{name}")(*args)

    def counters(self) -> dict[str, Any]:
        return self._call("counters")

    def reset_counters(self) -> None:
        self._call("reset_counters")

    def vm(self, ident: str) -> dict[str, Any]:
        return self._call("vm", ident)

    def vms(self) -> list[dict[str, Any]]:
        return self._call("vms")

    def power_log(self) -> list[tuple[str, str]]:
        return [(u, op) for u, op in self._call("power_log")]

    def set_power_state(self, ident: str, state: str) -> None:
        self._call("set_power_state", ident, state)

    def set_faults(self, **faults: Any) -> None:
        self._call("set_faults", faults)

    def clear_faults(self) -> None:
        self._call("clear_faults")

    def set_host_live(self, name: str, live: bool) -> None:
        self._call("set_host_live", name, live)

    def sessions(self) -> list[str]:
        return self._call("sessions")


# --- script mode -----------------------------------------------------------------------------


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls-cert", type=Path)
    parser.add_argument("--tls-key", type=Path)
    parser.add_argument("--tls-self-signed", type=Path, metavar="DIR",
                        help="make a test CA and server certificate in DIR (ca.pem, server.pem)")
    parser.add_argument("--standard-pool", action="store_true",
                        help="the test suite's standard pool (HACKING.md)")
    parser.add_argument("--vms", type=int, default=0, help="a large pool of this many VMs")
    parser.add_argument("--templates", type=int, default=100)
    parser.add_argument("--snapshots", type=int, default=3)
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--vm", action="append", default=[], metavar="NAME[:STATE]")
    parser.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--hooks", type=Path, help='JSON {"vm": {"on_halt": cmd, "on_start": cmd}}')
    parser.add_argument("--url-file", type=Path, help="write the URL here once serving")
    args = parser.parse_args(argv)

    sim = Simulator()
    for user in args.user:
        name, _, password = user.partition(":")
        sim.users[name] = (password, "pool-admin")
    if args.standard_pool:
        sim.populate_standard()
    if args.vms or not sim.hosts:
        sim.populate(args.vms, args.templates if args.vms else 0,
                     args.snapshots if args.vms else 0, args.hosts)
    for spec in args.vm:
        name, _, state = spec.partition(":")
        sim.add_vm(name, state or "Running")
    if args.hooks:
        sim.set_hooks(json.loads(args.hooks.read_text()))
    sim.faults.latency = args.latency_ms / 1000.0
    tls = None
    if args.tls_self_signed:
        pki = make_pki(args.tls_self_signed)
        tls = server_tls_context(pki.server_cert, pki.server_key)
    elif args.tls_cert:
        tls = server_tls_context(args.tls_cert, args.tls_key or args.tls_cert)
    server = SimServer(sim, args.address, args.port, tls).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.url_file:
        args.url_file.write_text(server.url + "\n")
    print(f"XAPISIM_URL={server.url}", flush=True)
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
