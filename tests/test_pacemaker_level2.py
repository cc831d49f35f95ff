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
import signal
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from tests.netcluster import TOOLS, ClusterError, FenceEvent, NetCluster, Node, alive, wait_for
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

