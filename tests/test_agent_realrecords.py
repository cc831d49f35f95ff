"""Every real VM of XenCenter's test databases (tests/realrecords.py: VM records captured on
XenServer 5.5-6.1 hosts, loaded into the simulator field for field) goes through what a
cluster does to it: list, list-status, status by UUID and by name, off, on, reboot, off,
reboot. Only that VM is touched, each step ends in the right state, and templates, snapshots
and control domains of the same database are refused."""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterator

import pytest

from tests.realrecords import Dump, load_dumps, pool_of
from tests.support import AgentRun, assert_one_error, invoke
from tests.xapisim import SimHandle

DUMPS = load_dumps()
BY_FILE = {dump.file: dump for dump in DUMPS}
REAL = [(dump.file, vm["uuid"]) for dump in DUMPS for _, vm in dump.real_vms()]
# Fast but not instant power calls; the agent polls every 0.1 s and gives a call 1 s.
FAST = {"stonith_status_sleep": "0.1", "shell_timeout": "1", "login_timeout": "5",
        "power_timeout": "20"}
POWER_SECONDS = 0.05
SHORT_START_DELAY = "3"  # Database server's start_delay is 15: test_degraded.py keeps it


def test_the_corpus_is_what_xenadmin_had() -> None:
    """17 databases, 57 real VMs; the records of older datamodels lack start_delay."""
    assert len(DUMPS) == 17 and len(REAL) == 57
    assert {dump.schema for dump in DUMPS} >= {(5, 55), (5, 57), (5, 63), (5, 66)}
    database_server = [vm for _, vm in BY_FILE["small_vms.xml"].real_vms()
                       if vm["name_label"] == "Database server"]
    assert [vm["start_delay"] for vm in database_server] == ["15"]
    assert any("start_delay" not in vm for dump in DUMPS for _, vm in dump.real_vms())


@pytest.fixture
def handle_of() -> Iterator[Any]:
    handles: list[SimHandle] = []

    def make(dump: Dump) -> SimHandle:
        handles.append(pool_of(dump))
        return handles[-1]

    yield make
    for handle in handles:
        handle.close()


def lines(run: AgentRun) -> list[str]:
    assert run.returncode == 0 and "Traceback" not in run.stderr, run
    return run.stdout.splitlines()


@pytest.mark.parametrize("file,uuid", REAL, ids=[f"{f}:{u[:8]}" for f, u in REAL])
def test_real_vm_through_a_cluster_life(handle_of: Any, file: str, uuid: str) -> None:
    dump = BY_FILE[file]
    handle = handle_of(dump)
    vm = handle.vm(uuid)
    name = vm["name_label"]
    if float(vm.get("start_delay", "0")) > float(SHORT_START_DELAY):
        handle.sim.set_vm(uuid, start_delay=SHORT_START_DELAY)
    for op in ("start", "hard_shutdown"):
        handle.sim.set_power_duration(uuid, op, POWER_SECONDS)
    real = {record["uuid"]: record for _, record in dump.real_vms()}
    on = vm["power_state"] != "Halted"

    listed = lines(invoke(handle, "stdin", "list", **FAST))
    assert sorted(listed) == sorted(f"{u},{r['name_label']}" for u, r in real.items())
    status_lines = lines(invoke(handle, "stdin", "list-status", **FAST))
    assert f"{uuid},{name},{'ON' if on else 'OFF'}" in status_lines

    expected = ("Status: ON\n", 0) if on else ("Status: OFF\n", 2)
    by_uuid = invoke(handle, "stdin", "status", plug=uuid, **FAST)
    assert (by_uuid.stdout, by_uuid.returncode) == expected, by_uuid
    assert Counter(r["name_label"] for r in real.values())[name] == 1, name
    by_name = invoke(handle, "cli", "status", plug=name, **FAST)
    assert (by_name.stdout, by_name.returncode) == expected, by_name

    for action, state in (("off", "Halted"), ("on", "Running"), ("reboot", "Running"),
                          ("off", "Halted"), ("reboot", "Running")):
        run = invoke(handle, "stdin", action, plug=uuid if action != "on" else name, **FAST)
        assert run.returncode == 0, (action, run)
        assert run.stdout.startswith("Success: "), (action, run)
        assert "WARNING" not in run.stderr, (action, run)
        assert handle.power_state(uuid) == state, (action, run)
    touched = {u for u, _ in handle.power_log()}
    assert touched == {uuid}, handle.power_log()
    assert handle.sessions_open() == 0


REFUSED = {"a template": lambda vm: vm["is_a_template"] and not vm.get("is_a_snapshot"),
           "a snapshot": lambda vm: bool(vm.get("is_a_snapshot")),
           "a control domain": lambda vm: vm["is_control_domain"]}


@pytest.mark.parametrize("file", sorted(BY_FILE))
def test_templates_snapshots_and_control_domains_are_refused(handle_of: Any,
                                                             file: str) -> None:
    """By UUID, and by name when no real VM has it: one refusal line, nothing touched. A
    name that a real VM shares with a template names the real VM."""
    dump = BY_FILE[file]
    handle = handle_of(dump)
    real_names = {vm["name_label"] for _, vm in dump.real_vms()}
    checked = 0
    for kind, matches in REFUSED.items():
        chosen = [vm for _, vm in dump.vms if matches(vm)][:2]
        for vm in chosen:
            run = invoke(handle, "stdin", "off", plug=vm["uuid"], **FAST)
            assert_one_error(run, "refusing", kind)
            if vm["name_label"] not in real_names:
                run = invoke(handle, "cli", "off", plug=vm["name_label"], **FAST)
                assert_one_error(run, "refusing", kind)
            checked += 1
    assert checked >= 3
    for name in real_names:
        shared = [vm for _, vm in dump.vms if vm["name_label"] == name]
        if len(shared) > 1:
            (real,) = [vm for vm in shared if not any(m(vm) for m in REFUSED.values())]
            run = invoke(handle, "stdin", "status", plug=name, **FAST)
            assert run.returncode in (0, 2) and run.stdout.startswith("Status: "), run
            run = invoke(handle, "stdin", "off", plug=name, **FAST)
            assert run.returncode == 0, run
            assert handle.power_log() in ([], [(real["uuid"], "hard_shutdown")])
    assert [op for _, op in handle.power_log()] in ([], ["hard_shutdown"])
    assert handle.sessions_open() == 0


def test_a_real_vm_shares_its_name_with_a_template() -> None:
    """The corpus holds the case the refusal test relies on (single-host-krakout.xml)."""
    shared = [(dump.file, vm["name_label"]) for dump in DUMPS for _, vm in dump.real_vms()
              if sum(other["name_label"] == vm["name_label"] for _, other in dump.vms) > 1]
    assert ("single-host-krakout.xml", "Windows Server 2008") in shared
