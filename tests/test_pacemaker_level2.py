"""Level 2 Pacemaker suite: the cluster decides.

Three Corosync + Pacemaker nodes, each in its own network and mount namespace
(tests/netcluster.py), are VMs node1..node3 of the simulated XenServer pool. One node's
Corosync is frozen (SIGSTOP): a node that is not the DC, or (second case) the DC itself, so
that the survivors must elect a new DC before deciding. Nothing else is done by hand. The
surviving partition must fence the frozen node through fence_xenapi: the simulator records
the hard_shutdown of its VM, the node's processes die (the simulator's on_halt hook), the
cluster reports the node fenced, and, the action being reboot, the VM starts again and the
node boots and rejoins. The times from freeze to each of these are printed (`pytest -rP`
shows them), written to `level2-timing.json` in the test's tmp dir, and recorded as
properties (junit XML).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from tests.netcluster import (
    SECOND_LEVEL_AGENT,
    SECOND_LEVEL_ID,
    STONITH_ID,
    TOOLS,
    ClusterError,
    FenceEvent,
    NetCluster,
    Node,
    alive,
    wait_for,
)
from tests.support import require_root, require_tools

pytestmark = [pytest.mark.pacemaker, pytest.mark.slow, pytest.mark.timeout(300)]

START_TIMEOUT = 120  # three cold nodes: ~5-10 s here
FENCE_TIMEOUT = 90  # token 3.65 s + consensus 4.38 s + scheduling + the agent: ~9 s here
REJOIN_TIMEOUT = 90


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NetCluster]:
    require_root()
    require_tools(*TOOLS)
    net = NetCluster(tmp_path / "cluster")
    try:
        try:
            net.start(START_TIMEOUT)
        except BaseException:
            print(net.diagnostics())
            raise
        yield net
    finally:
        net.stop()


def _power_states(net: NetCluster) -> Dict[str, str]:
    assert net.sim is not None
    return {vm["uuid"]: vm["power_state"] for vm in net.sim.vms()}


def _successful_fences(net: NetCluster, observer: Node, target: str) -> List[FenceEvent]:
    return [event for event in net.fence_history(observer, target)
            if event.status == "success" and event.target == target]


def _knows_one_fencing(net: NetCluster, observer: Node, target: str) -> bool:
    return len(_successful_fences(net, observer, target)) == 1


def _wait_no_sessions(net: NetCluster) -> int:
    """Sessions of a monitor operation running right now close within a second."""
    assert net.sim is not None
    sim = net.sim
    with contextlib.suppress(ClusterError):
        wait_for("no XAPI session left open", lambda: sim.sessions_open() == 0, 10)
    return sim.sessions_open()


@pytest.mark.parametrize("freeze_dc", [False, True], ids=["node", "dc"])
def test_cluster_fences_a_frozen_node_through_fence_xenapi(
        cluster: NetCluster, tmp_path: Path, freeze_dc: bool,
        record_property: Callable[[str, object], None]) -> None:
    try:
        timing = _frozen_node_is_fenced_and_rejoins(cluster, freeze_dc)
    except BaseException:
        print(cluster.diagnostics())
        raise
    (tmp_path / "level2-timing.json").write_text(json.dumps(timing, indent=2) + "\n")
    print("level 2 timing: " + json.dumps(timing))
    for name, value in timing.items():
        record_property(name, value)


def _frozen_node_is_fenced_and_rejoins(net: NetCluster, freeze_dc: bool) -> Dict[str, object]:
    assert net.sim is not None
    sim = net.sim
    names = [node.name for node in net.nodes]
    status = net.wait_online(names, 30)
    assert status.dc is not None
    assert sim.power_log() == [], "a node was fenced while the cluster started"
    # The victim: the DC itself (the survivors must first elect a new one), or else the
    # highest-numbered node that is not the DC.
    victim = next(node for node in reversed(net.nodes)
                  if (node.name == status.dc) == freeze_dc)
    survivors = [node for node in net.nodes if node is not victim]
    observer = next((node for node in survivors if node.name == status.dc), survivors[0])
    victim_uuid = sim.uuid(victim.name)
    states_before = _power_states(net)
    corosync = victim.pid("corosync")
    pacemakerd = victim.pid("pacemakerd")
    launcher = victim.pid("launcher")
    assert corosync and pacemakerd and launcher

    frozen_at = time.time()
    os.kill(corosync, signal.SIGSTOP)

    # From here on the test only watches (no stonith_admin --reboot, no crm command), first
    # the survivor's fencing history, polled every 0.1 s to time the confirmation.
    def confirmed() -> Optional[Tuple[float, FenceEvent]]:
        events = _successful_fences(net, observer, victim.name)
        return (time.time(), events[0]) if events else None

    fenced_at, event = wait_for(f"{observer.name} to report {victim.name} fenced", confirmed,
                                FENCE_TIMEOUT, interval=0.1)
    assert event.action == "reboot"
    assert event.delegate in {node.name for node in survivors}
    assert (victim_uuid, "hard_shutdown") in sim.power_log()
    halted = wait_for(f"{victim.name}'s processes killed by the on_halt hook",
                      lambda: next((stamp for kind, name, stamp in net.events()
                                    if kind == "halted" and name == victim.name
                                    and stamp > frozen_at), None), 20)
    assert halted < fenced_at, "the cluster confirmed the fencing before the VM was off"
    for pid in (corosync, pacemakerd, launcher):
        assert not alive(pid), (
            f"{victim.name}'s process {pid} survived the VM's hard_shutdown")

    wait_for(f"{victim.name}'s VM started again (the reboot's second half)",
             lambda: sim.power_log() == [(victim_uuid, "hard_shutdown"),
                                         (victim_uuid, "start")], 30)
    booted = wait_for(f"{victim.name} booted again",
                      lambda: next((stamp for kind, name, stamp in net.events()
                                    if kind == "booted" and name == victim.name
                                    and stamp > halted), None), 30)
    net.wait_online(names, REJOIN_TIMEOUT)
    rejoined_at = time.time()
    assert victim.pid("corosync") not in (None, corosync)

    # Exactly one fencing, of exactly that VM; every other VM as it was; no session leaked.
    assert sim.power_log() == [(victim_uuid, "hard_shutdown"), (victim_uuid, "start")]
    assert _power_states(net) == states_before
    # Every node, the rebooted one too (fenced syncs its history to a joining peer), knows
    # of that one fencing and of no other.
    for node in net.nodes:
        wait_for(f"{node.name} to know of the fencing",
                 functools.partial(_knows_one_fencing, net, node, victim.name), 30)
        assert not any(_successful_fences(net, node, other.name) for other in survivors)
    assert _wait_no_sessions(net) == 0

    assert fenced_at - frozen_at < 60  # stonith-timeout
    return {
        "frozen": victim.name,
        "dc_at_freeze": status.dc,
        "fence_run_by": event.delegate,
        "freeze_to_hard_shutdown_s": round(halted - frozen_at, 2),
        "freeze_to_fence_confirmed_s": round(fenced_at - frozen_at, 2),
        "freeze_to_boot_s": round(booted - frozen_at, 2),
        "freeze_to_rejoined_s": round(rejoined_at - frozen_at, 2),
    }



# ---------------------------------------------------------------------------------------------
# A second fencing level: the pool cannot act, another device fences
# ---------------------------------------------------------------------------------------------

POOL_HOSTS = ("host1", "host2", "host3")  # the standard pool's hosts


@pytest.fixture
def two_level_cluster(tmp_path: Path) -> Iterator[NetCluster]:
    """fence_xenapi at level 1 and the stand-in for a host's BMC (fence_dummy) at level 2
    for every node. The recurring monitors are hourly so that none runs between the pool's
    failure and the fencing (a failed monitor would stop the device and the fencer would
    skip level 1 instead of trying it)."""
    require_root()
    require_tools(*TOOLS, SECOND_LEVEL_AGENT)
    net = NetCluster(tmp_path / "cluster", second_level=True, monitor_interval="3600s")
    try:
        try:
            net.start(START_TIMEOUT)
            wait_for("the level 2 device started",
                     lambda: _started(net, net.nodes[0], SECOND_LEVEL_ID), START_TIMEOUT)
        except BaseException:
            print(net.diagnostics())
            raise
        yield net
    finally:
        net.stop()


def _started(net: NetCluster, observer: Node, resource: str) -> bool:
    proc = observer.run(["crm_mon", "--one-shot", "--output-as=xml"], check=False, timeout=15)
    return proc.returncode == 0 and any(
        element.get("role") == "Started"
        for element in ET.fromstring(proc.stdout).iter("resource")  # noqa: S314
        if element.get("id") == resource)


def _fencer_lines(net: NetCluster, victim: str) -> List[str]:
    """What the fencers logged about running a device against `victim` (each node's
    pacemaker.log: fenced's "Operation 'reboot' [PID] targeting NODE using DEVICE returned
    RC" lines, in Pacemaker 2.1 and 3)."""
    lines = []
    for node in net.nodes:
        path = node.directory / "log-pacemaker" / "pacemaker.log"
        if path.exists():
            lines += [line for line in path.read_text(errors="replace").splitlines()
                      if f"targeting {victim} using" in line and "returned" in line]
    return lines


def test_second_level_fences_when_the_pool_cannot(two_level_cluster: NetCluster,
                                                  tmp_path: Path) -> None:
    """Every pool host in emergency mode (the master lost without HA): no XAPI call can
    fence. A node freezes; the fencer tries level 1, fence_xenapi, which fails at once (every
    login answered HOST_STILL_BOOTING), then level 2, which fences the node. No VM was
    touched, the level 2 device ran "off", both devices' runs are in the fencer's log, and
    the history shows the fencing done."""
    net = two_level_cluster
    try:
        _level_two_fences(net)
    except BaseException:
        print(net.diagnostics())
        raise


def _level_two_fences(net: NetCluster) -> None:
    assert net.sim is not None
    sim = net.sim
    names = [node.name for node in net.nodes]
    status = net.wait_online(names, 30)
    victim = next(node for node in reversed(net.nodes) if node.name != status.dc)
    survivors = [node for node in net.nodes if node is not victim]
    observer = next((node for node in survivors if node.name == status.dc), survivors[0])
    assert net.second_level_status.read_text() == "on"
    states_before = _power_states(net)
    for host in POOL_HOSTS:
        sim.set_emergency(host, ["HOST_STILL_BOOTING"])
    sim.reset_counters()
    corosync = victim.pid("corosync")
    assert corosync

    frozen_at = time.time()
    os.kill(corosync, signal.SIGSTOP)

    def confirmed() -> Optional[Tuple[float, FenceEvent]]:
        events = _successful_fences(net, observer, victim.name)
        return (time.time(), events[0]) if events else None

    fenced_at, event = wait_for(f"{observer.name} to report {victim.name} fenced", confirmed,
                                FENCE_TIMEOUT, interval=0.1)
    assert event.delegate in {node.name for node in survivors}
    # Level 1 was tried: fence_xenapi logged in (answered HOST_STILL_BOOTING) ...
    assert sim.requests().get("session.login_with_password", 0) >= 1, sim.requests()
    # ... and touched no VM; level 2 powered the "host" off.
    assert sim.power_log() == []
    assert _power_states(net) == states_before
    assert net.second_level_status.read_text() == "off"
    runs = _fencer_lines(net, victim.name)
    level1 = [line for line in runs if f"using {STONITH_ID} returned" in line]
    level2 = [line for line in runs if f"using {SECOND_LEVEL_ID} returned" in line]
    assert level1 and all("returned 0" not in line for line in level1), runs
    assert len(level2) == 1 and "returned 0" in level2[0], runs
    assert runs.index(level1[-1]) < runs.index(level2[0]), runs
    # ... and level 1 was this agent, failing as it should: one line naming the pool's answer.
    said = _agent_errors(net)
    assert said and all("cannot log in" in line and "HOST_STILL_BOOTING" in line
                        for line in said), said
    # The history (stonith_admin --history) shows the one fencing operation, done.
    shown = victim_history(net, observer, victim.name)
    assert re.search(rf"reboot of {victim.name} .*successful", shown), shown
    assert fenced_at - frozen_at < 60  # stonith-timeout: level 1 failed well within it
    print(f"level 2 fencing: confirmed {fenced_at - frozen_at:.1f} s after the freeze; "
          f"fencer log: {runs}; history: {shown}")


def _agent_errors(net: NetCluster) -> List[str]:
    """The agent's stderr lines the fencers logged (`fence_xenapi[PID] stderr: [ ... ]`)."""
    found = []
    for node in net.nodes:
        path = node.directory / "log-pacemaker" / "pacemaker.log"
        if path.exists():
            found += [line.split("stderr: [", 1)[1] for line in
                      path.read_text(errors="replace").splitlines()
                      if "fence_xenapi[" in line and "stderr: [" in line and "ERROR:" in line]
    return found


def victim_history(net: NetCluster, observer: Node, target: str) -> str:
    return observer.run(["stonith_admin", "--history", target, "--verbose"], check=False,
                        timeout=15).stdout
