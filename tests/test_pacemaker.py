"""Level 1: a real Pacemaker fencer drives the agent. A one-node Corosync + Pacemaker cluster
(tests/cluster.py) runs on loopback with this tree's agent installed at /usr/sbin/fence_xenapi;
stonith devices are created with `pcs stonith create` exactly as a user would (password as an
instance attribute, which the fencer hands the agent on stdin), pointing at the simulator; the
fencing commands go through stonith_admin and the fencer, never to the agent directly."""

from __future__ import annotations

import re
import subprocess
import time
from typing import Dict, Iterator, List, Sequence, Tuple

import pytest
from lxml import etree

from tests.cluster import TOOLS, OneNodeCluster, one_node_cluster
from tests.support import require_root, require_tools, run_agent
from tests.xapisim import SimHandle

pytestmark = [pytest.mark.pacemaker, pytest.mark.slow]

# Cluster node names and the VMs that stand for them: node2 and node3 run as VMs whose names
# differ from the node names (fenced through pcmk_host_map); the standard pool's VMs named
# node1..node3 serve the dynamic-list case, where no map is needed.
HOST_MAP = {"node2": "web-02", "node3": "web-03"}
MAP_TEXT = ";".join(f"{node}:{vm}" for node, vm in HOST_MAP.items())
FENCE_TIMEOUT = "60"
# A VM whose name Pacemaker's dynamic-list parser cuts into the targets "vm" and "web"
# (lib/fencing/st_client.c parse_list_line: names end at whitespace, ',' or ';', and at the
# first character outside [A-Za-z0-9_.-]); no VM is named "web" or "vm".
SPACED_VM = "vm web"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OneNodeCluster]:
    require_root()
    require_tools(*TOOLS, "corosync-quorumtool", "pcs")
    with one_node_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.fixture(scope="module")
def pool() -> Iterator[SimHandle]:
    """The standard pool plus the two host-mapped VMs, served for the whole module."""
    with SimHandle.standard() as handle:
        for vm in (*HOST_MAP.values(), SPACED_VM):
            handle.sim.add_vm(vm, "Running", host="host2")
        yield handle


@pytest.fixture
def fresh_pool(pool: SimHandle) -> SimHandle:
    for vm in (*HOST_MAP.values(), "node2", "node3", SPACED_VM):
        pool.set_power_state(vm, "Running")
    wait_for(lambda: pool.sessions_open() == 0, 30, "a session left open before the test")
    pool.reset_counters()
    return pool


def wait_for(condition: object, timeout: float, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def stonith_admin(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["stonith_admin", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def device_params(pool: SimHandle, **extra: str) -> Dict[str, str]:
    return {"session_url": pool.url, "username": "root", "password": "secret", **extra}


@pytest.fixture
def device(cluster: OneNodeCluster, fresh_pool: SimHandle,
           request: pytest.FixtureRequest) -> Iterator[str]:
    """A fence_xenapi device named and configured by the test's `device_config` marker."""
    marker = request.node.get_closest_marker("device_config")
    assert marker is not None, "a test using `device` says which with @device_config"
    name = marker.args[0]
    extra: Dict[str, str] = dict(marker.kwargs)
    cluster.create_stonith(name, device_params(fresh_pool, **extra))
    try:
        yield name
    finally:
        cluster.delete_stonith(name)


def states(pool: SimHandle) -> Dict[str, str]:
    return {record["uuid"]: record["power_state"] for record in pool.sim.vm_records()}


def power_ops(pool: SimHandle) -> List[Tuple[str, str]]:
    names = {record["uuid"]: record["name_label"] for record in pool.sim.vm_records()}
    return [(names[uuid], op) for uuid, op in pool.power_log()]


def assert_only(pool: SimHandle, before: Dict[str, str], vm: str, state: str) -> None:
    """`vm` is in `state`, and every other VM, template and snapshot is as it was."""
    after = states(pool)
    target = pool.uuid(vm)
    assert after[target] == state
    assert {u: s for u, s in after.items() if u != target} == {
        u: s for u, s in before.items() if u != target}


def assert_sessions_closed(pool: SimHandle) -> None:
    # The fencer may be running the device's recurring monitor: give it a moment to finish.
    wait_for(lambda: pool.sessions_open() == 0, 30, "the agent left a session open")


def fence(pool: SimHandle, before: Dict[str, str], option: str, node: str, vm: str,
          ops: Sequence[str], state: str) -> None:
    """`stonith_admin OPTION NODE` succeeds, having done `ops` to `vm` alone (and nothing else
    since the counters were last reset), which ends in `state`; no session is left open."""
    result = stonith_admin(option, node, "--timeout", FENCE_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert power_ops(pool) == [(vm, op) for op in ops]
    assert_only(pool, before, vm, state)
    assert_sessions_closed(pool)


def history(target: str) -> str:
    return stonith_admin("--history", target, "--verbose").stdout


# --- what the cluster tools see ---------------------------------------------------------------


def test_fencer_shows_our_metadata(cluster: OneNodeCluster) -> None:
    shown = stonith_admin("--metadata", "--agent", "fence_xenapi")
    assert shown.returncode == 0, shown.stderr
    ours = run_agent(["-o", "metadata"])
    assert ours.returncode == 0
    parser = etree.XMLParser(remove_blank_text=True)
    fencer = etree.fromstring(shown.stdout.encode(), parser)
    # The fencer adds the start and stop actions every stonith resource has; the rest is ours,
    # unchanged.
    actions = fencer.find("actions")
    assert actions is not None
    added = [action for action in actions if action.get("name") in ("start", "stop")]
    assert sorted(action.get("name", "") for action in added) == ["start", "stop"]
    for action in added:
        actions.remove(action)
    # ... and marks optional the parameters it fills in itself (the action and the target).
    expected = etree.fromstring(ours.stdout.encode(), parser)
    for parameter in expected.iterfind("parameters/parameter"):
        if parameter.get("name") in ("action", "plug", "port"):
            parameter.set("required", "0")
    assert c14n_text_stripped(fencer) == c14n_text_stripped(expected)


def c14n_text_stripped(element: etree._Element) -> bytes:
    """Canonical XML with the white space around each text trimmed: Pacemaker 3's fencer
    re-indents the metadata it shows (a text on lines of its own), Pacemaker 2 passes it on."""
    for node in element.iter():
        node.text = node.text.strip() if node.text and node.text.strip() else None
        node.tail = None
    return etree.tostring(element, method="c14n")


def described_parameters(text: str) -> Dict[str, str]:
    """{parameter: flags} from `pcs stonith describe`: pcs 0.11 prints `  name (required):
    description` per parameter, pcs 0.12 `  name (required)` with the description below."""
    return {found.group(1): found.group(2).strip() for found in
            re.finditer(r"^  ([a-z_]+)((?: \([^)]*\))*)(?::.*)?$", text, re.M)}


def test_pcs_describes_our_parameters(cluster: OneNodeCluster) -> None:
    described = subprocess.run(["pcs", "stonith", "describe", "fence_xenapi"],
                               capture_output=True, text=True, timeout=60, check=False)
    assert described.returncode == 0, described.stderr
    shown = described_parameters(described.stdout)
    assert shown.get("session_url") == "(required)", described.stdout
    for parameter in ("uuid", "ssl_fingerprint", "ssl_ca_file", "ssl_insecure",
                      "allow_power_state_reset", "password_script", "username", "password"):
        assert shown.get(parameter) == "", described.stdout


# --- fencing through the fencer ----------------------------------------------------------------


@pytest.mark.device_config("xen-map", pcmk_host_map=MAP_TEXT)
def test_reboot_off_on_with_host_map(device: str, fresh_pool: SimHandle) -> None:
    pool = fresh_pool
    before = states(pool)
    # Halted then Running again, and only web-02 (node2's VM through the map) was touched.
    fence(pool, before, "--reboot", "node2", "web-02", ["hard_shutdown", "start"], "Running")
    assert re.search(r"reboot of node2 .*successful", history("node2")), history("node2")
    pool.reset_counters()
    fence(pool, before, "--fence", "node3", "web-03", ["hard_shutdown"], "Halted")
    fence(pool, before, "--unfence", "node3", "web-03", ["hard_shutdown", "start"], "Running")


@pytest.mark.device_config("xen-map", pcmk_host_map=MAP_TEXT)
def test_list_and_query_with_host_map(device: str, fresh_pool: SimHandle) -> None:
    pool = fresh_pool
    # --list-targets runs the agent's `list`: every real VM, by UUID and name.
    targets = stonith_admin("--list-targets", device, "--timeout", FENCE_TIMEOUT)
    assert targets.returncode == 0, targets.stderr
    for vm in ("web-02", "web-03", "vm-halted"):
        assert vm in targets.stdout and pool.uuid(vm) in targets.stdout
    assert "tmpl-debian" not in targets.stdout and "vm-running-snap" not in targets.stdout
    # --query runs the device's monitor: the pool answers and the login works.
    queried = stonith_admin("--query", device, "--timeout", FENCE_TIMEOUT)
    assert queried.returncode == 0, queried.stdout + queried.stderr
    # --list HOST: the fencer knows this device can fence node2 (through the map).
    capable = stonith_admin("--list", "node2", "--timeout", FENCE_TIMEOUT)
    assert capable.returncode == 0 and device in capable.stdout, capable.stdout
    assert pool.power_log() == []
    assert_sessions_closed(pool)


@pytest.mark.device_config("xen-dynamic", pcmk_host_check="dynamic-list")
def test_dynamic_list_fences_vm_named_like_the_node(device: str, fresh_pool: SimHandle) -> None:
    pool = fresh_pool
    before = states(pool)
    capable = stonith_admin("--list", "node3", "--timeout", FENCE_TIMEOUT)
    assert capable.returncode == 0 and device in capable.stdout, capable.stdout
    # A node whose name no VM carries is not claimed by this device.
    unclaimed = stonith_admin("--reboot", "node9", "--timeout", "20")
    assert unclaimed.returncode != 0
    pool.reset_counters()

    fence(pool, before, "--reboot", "node3", "node3", ["hard_shutdown", "start"], "Running")
    pool.reset_counters()
    fence(pool, before, "--fence", "node2", "node2", ["hard_shutdown"], "Halted")


@pytest.mark.device_config("xen-dynamic", pcmk_host_check="dynamic-list")
def test_dynamic_list_never_fences_a_spaced_vm_name_for_one_word(
        device: str, fresh_pool: SimHandle) -> None:
    """The agent's list prints `UUID,vm web`; the fencer cuts that into the targets UUID,
    "vm" and "web", so with dynamic-list the device claims nodes called web and vm (as the
    README says). Fencing either fails: the agent looks the plug up by exact name or UUID,
    so the VM "vm web" is never touched for a node called web, nor is any other VM."""
    pool = fresh_pool
    before = states(pool)
    capable = stonith_admin("--list", "web", "--timeout", FENCE_TIMEOUT)
    assert capable.returncode == 0 and device in capable.stdout, capable.stdout
    for node in ("web", "vm"):
        result = stonith_admin("--reboot", node, "--timeout", "20")
        assert result.returncode != 0, result.stdout + result.stderr
        assert re.search(rf"reboot of {node} .*failed", history(node)), history(node)
    assert pool.power_log() == []
    assert states(pool) == before
    assert_sessions_closed(pool)


def test_host_map_by_uuid_fences_a_spaced_vm_name(cluster: OneNodeCluster,
                                                  fresh_pool: SimHandle) -> None:
    """What the README advises for such a name: map the node to the VM's UUID (a space, `;`
    or tab ends a pcmk_host_map entry, and Pacemaker 3.0.2 no longer reads `\\ ` escapes)."""
    pool = fresh_pool
    before = states(pool)
    cluster.create_stonith("xen-uuid-map", device_params(
        pool, pcmk_host_map=f"web:{pool.uuid(SPACED_VM)}"))
    try:
        fence(pool, before, "--reboot", "web", SPACED_VM, ["hard_shutdown", "start"], "Running")
    finally:
        cluster.delete_stonith("xen-uuid-map")


# --- a failing device fails the operation -------------------------------------------------------


def failed_fencing(cluster: OneNodeCluster, pool: SimHandle, name: str,
                   params: Dict[str, str], target: str) -> Tuple[str, Sequence[str]]:
    """Create a device, fence `target` through it, delete it; the history and operations."""
    cluster.create_stonith(name, params)
    try:
        pool.reset_counters()
        result = stonith_admin("--reboot", target, "--timeout", FENCE_TIMEOUT)
        assert result.returncode != 0, result.stdout + result.stderr
        return history(target), [op for _, op in pool.power_log()]
    finally:
        cluster.delete_stonith(name)


def test_wrong_password_fails_visibly(cluster: OneNodeCluster, fresh_pool: SimHandle) -> None:
    params = device_params(fresh_pool, password="not-the-password",
                           pcmk_host_map="node2:web-02")
    shown, ops = failed_fencing(cluster, fresh_pool, "xen-badpass", params, "node2")
    assert re.search(r"reboot of node2 .*failed", shown), shown
    assert not re.search(r"reboot of node2 .*successful", shown.split("failed")[0]), shown
    assert ops == [] and fresh_pool.power_state("web-02") == "Running"
    assert_sessions_closed(fresh_pool)


def test_unreachable_pool_fails_visibly(cluster: OneNodeCluster, fresh_pool: SimHandle) -> None:
    # A port nothing listens on: the connection is refused at once.
    with SimHandle.standard() as gone:
        dead_url = gone.url
    params = device_params(fresh_pool, session_url=dead_url, pcmk_host_map="node3:web-03",
                           login_timeout="5")
    shown, ops = failed_fencing(cluster, fresh_pool, "xen-nopool", params, "node3")
    assert re.search(r"reboot of node3 .*failed", shown), shown
    assert ops == [] and fresh_pool.power_state("web-03") == "Running"


def test_node_is_online_throughout(cluster: OneNodeCluster) -> None:
    # Fencing other nodes never cost the local node its membership.
    assert cluster.online()
