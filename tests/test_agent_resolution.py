"""Which VM the agent acts on. A fence agent that powers off the wrong machine is worse than
one that fails: it resolves exactly one real VM by name or UUID, and refuses templates,
snapshots, control domains, ambiguous and unknown names with one clear line and no power
operation at all."""

from __future__ import annotations

import uuid as uuidlib
from typing import Optional

import pytest

from tests.support import (
    STYLES,
    assert_failed,
    assert_succeeded,
    invoke,
    real_vms,
    run_agent,
)
from tests.xapisim import SimHandle


def only_operation_on(handle: SimHandle, vm_uuid: str, operation: str) -> None:
    assert handle.power_log() == [(vm_uuid, operation)]


# ---------------------------------------------------------------------------------------------
# How the target is given
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("upper", [False, True], ids=["lower", "upper"])
def test_uuid_parameter(sim: SimHandle, style: str, upper: bool) -> None:
    """`uuid` (the original agent's parameter) names the VM without any plug."""
    uuid = sim.uuid("vm-running")
    run = invoke(sim, style, "off", uuid=uuid.upper() if upper else uuid)
    assert_succeeded(sim, run, "Success: Powered OFF", budget=5)
    only_operation_on(sim, uuid, "hard_shutdown")


@pytest.mark.parametrize("style", STYLES)
def test_uuid_parameter_matches_uuids_only(sim: SimHandle, style: str) -> None:
    """A VM may be *named* like a UUID: `uuid=` that text must not fence it (no VM has that
    UUID), while `plug=` the same text names it. The value is a well-formed UUID, so the rule
    under test is reached (a malformed one is refused earlier, by option parsing)."""
    name = str(uuidlib.uuid4())
    sim.sim.add_vm(name, "Running")
    run = invoke(sim, style, "off", uuid=name)
    assert_failed(sim, run, f"uuid '{name}'")  # said to be a uuid, not a name
    assert sim.power_log() == []
    assert sim.power_state(name) == "Running"
    sim.reset_counters()
    by_plug = invoke(sim, style, "off", plug=name)
    assert_succeeded(sim, by_plug, "Success: Powered OFF", budget=5)
    only_operation_on(sim, sim.uuid(name), "hard_shutdown")


@pytest.mark.parametrize("style", STYLES)
def test_malformed_uuid_parameter_is_a_usage_error(sim: SimHandle, style: str) -> None:
    run = invoke(sim, style, "off", uuid="vm-running")
    assert_failed(sim, run, "vm-running")
    assert sim.total_requests() == 0


@pytest.mark.parametrize("style", STYLES)
def test_uuid_and_a_plug_naming_another_vm_are_refused(sim: SimHandle, style: str) -> None:
    """Both given and they disagree: which VM is meant is unknown, so nothing is fenced."""
    run = invoke(sim, style, "off", uuid=sim.uuid("node1"), plug="node2")
    assert_failed(sim, run, "node2")
    assert sim.power_log() == []
    assert sim.power_state("node1") == sim.power_state("node2") == "Running"


@pytest.mark.parametrize("plug", ["name", "uuid"])
def test_uuid_and_a_plug_naming_the_same_vm_agree(sim: SimHandle, plug: str) -> None:
    uuid = sim.uuid("node1")
    run = invoke(sim, "stdin", "off", uuid=uuid, plug="node1" if plug == "name" else uuid)
    assert_succeeded(sim, run, "Success: Powered OFF", budget=5)
    only_operation_on(sim, uuid, "hard_shutdown")


def test_nodename_is_the_plug_when_none_is_given(sim: SimHandle) -> None:
    """Pacemaker without a host map: `nodename=node2` and nothing else names the VM."""
    run = run_agent(stdin=sim.params(action="off", nodename="node2"))
    assert_succeeded(sim, run, "Success: Powered OFF", budget=5)
    only_operation_on(sim, sim.uuid("node2"), "hard_shutdown")
    assert sim.power_state("node1") == "Running"


def test_port_is_an_alias_of_plug(sim: SimHandle) -> None:
    run = run_agent(stdin=sim.params(action="off", port="node3", nodename="node1"))
    assert_succeeded(sim, run, "Success: Powered OFF", budget=5)
    only_operation_on(sim, sim.uuid("node3"), "hard_shutdown")
    assert sim.power_state("node1") == "Running"


def test_plug_wins_over_nodename(sim: SimHandle) -> None:
    """With a host map Pacemaker sends both: the mapped plug is the VM, not the node name."""
    run = run_agent(stdin=sim.params(action="off", plug="node2", nodename="node1"))
    assert_succeeded(sim, run, "Success: Powered OFF", budget=5)
    only_operation_on(sim, sim.uuid("node2"), "hard_shutdown")
    assert sim.power_state("node1") == "Running"


@pytest.mark.parametrize("separator", [None, ";"], ids=["default", "semicolon"])
def test_several_plugs(sim: SimHandle, separator: Optional[str]) -> None:
    """`plug` may name several VMs, joined by plug_separator: each is fenced."""
    joined = (separator or ",").join(["node1", "node2"])
    run = run_agent(stdin=sim.params(action="off", plug=joined, plug_separator=separator))
    assert run.returncode == 0, run
    assert run.stdout == "Success: Powered OFF\n"
    assert sorted(sim.power_log()) == sorted(
        [(sim.uuid("node1"), "hard_shutdown"), (sim.uuid("node2"), "hard_shutdown")])
    assert sim.power_state("node3") == "Running"
    assert sim.sessions_open() == 0


def test_several_plugs_one_already_off_are_powered_off(sim: SimHandle) -> None:
    """One of two plugs is already off: the other was powered off, so the line is "Powered
    OFF" ("Already OFF" only when every one already was)."""
    run = run_agent(stdin=sim.params(action="off", plug="vm-halted,vm-running"))
    assert_succeeded(sim, run, "Success: Powered OFF", budget=5)
    assert sim.power_log() == [(sim.uuid("vm-running"), "hard_shutdown")]


@pytest.mark.parametrize("plugs,stdout,returncode", [
    (["vm-halted", "vm-running"], "Status: ON", 0),
    (["vm-running", "vm-halted"], "Status: ON", 0),
    (["vm-halted", "vm-suspended"], "Status: ON", 0),
    (["vm-halted"], "Status: OFF", 2),
], ids=["halted-first", "running-first", "suspended", "all-halted"])
def test_status_of_several_plugs_is_on_while_one_runs(sim: SimHandle, plugs: list[str],
                                                      stdout: str, returncode: int) -> None:
    """`status` of several VMs answers OFF (exit 2) only when every one is off: a node with
    one VM still running is not fenced, whichever order the plugs come in."""
    run = run_agent(stdin=sim.params(action="status", plug=",".join(plugs)))
    assert_succeeded(sim, run, stdout, budget=3, returncode=returncode)
    assert sim.power_log() == []


def test_name_shared_with_a_template_resolves_to_the_real_vm(sim: SimHandle) -> None:
    run = run_agent(stdin=sim.params(action="off", plug="vm-shared-name"))
    assert_succeeded(sim, run, "Success: Powered OFF", budget=5)
    [(uuid, operation)] = sim.power_log()
    assert operation == "hard_shutdown"
    record = sim.vm(uuid)
    assert record["name_label"] == "vm-shared-name"
    assert not record["is_a_template"]
    assert record["power_state"] == "Halted"


@pytest.mark.parametrize("style", STYLES)
def test_name_with_double_quotes(sim: SimHandle, style: str) -> None:
    name = 'vm "quoted"'
    run = invoke(sim, style, "off", plug=name)
    # One request over the off budget: XAPI's query language has no quote escape, so such a
    # name takes a name lookup and a record read (still independent of the pool's size).
    assert_succeeded(sim, run, "Success: Powered OFF", budget=6)
    only_operation_on(sim, sim.uuid(name), "hard_shutdown")
    assert sim.power_state(name) == "Halted"


# ---------------------------------------------------------------------------------------------
# Refusals: exit 1, one line, no power operation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["off", "reboot"])
@pytest.mark.parametrize("style", STYLES)
def test_ambiguous_name_is_refused_listing_the_uuids(sim: SimHandle, style: str,
                                                     action: str) -> None:
    dups = [uuid for uuid, (name, _) in real_vms(sim).items() if name == "vm-dup"]
    assert len(dups) == 2
    run = invoke(sim, style, action, plug="vm-dup")
    assert_failed(sim, run, "vm-dup", *dups)
    assert sim.power_log() == []


@pytest.mark.parametrize("plug", ["web", "web ", " web"])
@pytest.mark.parametrize("style", STYLES)
def test_names_differing_by_surrounding_whitespace_are_ambiguous(sim: SimHandle, style: str,
                                                                 plug: str) -> None:
    """`web` and `web ` in one pool: names compare with surrounding whitespace ignored on
    both sides (stdin strips every line, so `port=web ` arrives as `web`): refused, naming
    both with their UUIDs; nothing touched."""
    sim.sim.add_vm("web", "Running")
    sim.sim.add_vm("web ", "Running")
    uuids = [sim.uuid("web"), sim.uuid("web ")]
    run = invoke(sim, style, "off", plug=plug)
    line = assert_failed(sim, run, "ambiguous", "'web' (", "'web ' (", *uuids)
    assert "Success" not in run.stdout, line
    assert sim.power_log() == []


def test_a_name_beside_a_uuid_plug_is_still_compared_with_whitespace_ignored(
        sim: SimHandle) -> None:
    """Two plugs, a UUID and the name `web`, with `web` and `web ` in the pool: the UUID
    plug does not make the name's lookup exact; the name is ambiguous, nothing touched."""
    sim.sim.add_vm("web", "Running")
    sim.sim.add_vm("web ", "Running")
    run = run_agent(stdin=sim.params(action="off", plug=f"{sim.uuid('vm-running')},web"))
    assert_failed(sim, run, "ambiguous", "'web' (", "'web ' (")
    assert sim.power_log() == []


def test_a_template_named_with_a_quote_is_refused_as_a_template(sim: SimHandle) -> None:
    """A name holding a double quote cannot go into XAPI's query (no escapes): it is looked
    up by name, templates included, so a template of that name is refused as a template,
    not reported missing."""
    sim.sim.add_vm('tmpl "q"', "Halted", template=True)
    run = run_agent(stdin=sim.params(action="off", plug='tmpl "q"'))
    assert_failed(sim, run, "refusing to fence", "template")
    assert sim.power_log() == []


@pytest.mark.parametrize("plug", ["db", " db", "db  "])
@pytest.mark.parametrize("style", STYLES)
def test_name_with_surrounding_whitespace_alone_is_fenced(sim: SimHandle, style: str,
                                                          plug: str) -> None:
    """` db` alone in the pool is the VM that `db` names (and ` db`, and `db  `)."""
    sim.sim.add_vm(" db", "Running")
    run = invoke(sim, style, "off", plug=plug)
    assert run.returncode == 0, run
    assert run.stdout == "Success: Powered OFF\n", run
    assert sim.power_log() == [(sim.uuid(" db"), "hard_shutdown")]
    assert sim.sessions_open() == 0


@pytest.mark.parametrize("action,style", [("off", "stdin"), ("reboot", "cli")])
@pytest.mark.parametrize("target", [
    "tmpl-debian",
    "vm-running-snap",
    "Control domain on host: host1",
    "control-domain-uuid",
    "no-such-vm",
])
def test_refused_targets(sim: SimHandle, style: str, action: str, target: str) -> None:
    """Templates, snapshots and control domains are never fenced; an unknown name is an
    error, not a success (the VM might exist under another name)."""
    plug = control_domain_uuid(sim) if target == "control-domain-uuid" else target
    run = invoke(sim, style, action, plug=plug)
    assert_failed(sim, run, plug)
    assert sim.power_log() == []


def control_domain_uuid(handle: SimHandle) -> str:
    return str(handle.vm("Control domain on host: host1")["uuid"])
