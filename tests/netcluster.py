"""Three Corosync + Pacemaker nodes on one machine, for the level 2 Pacemaker suite (the cluster
decides to fence, nobody asks it to).

Each node lives in its own network namespace (`fx-node1`...: address 10.213.0.1N/24 on a
veth pair into the private bridge `fxbr0`) and, per boot, in its own mount and UTS namespace.
The bridge lives in a namespace of its own, `fx-switch`, and the root namespace joins it with
one more veth pair, `fxh-pool` = 10.213.0.1, where the XAPI simulator listens. (With the
bridge in the root namespace, node-to-node frames would cross the root namespace's iptables
FORWARD chain whenever br_netfilter is loaded, as it is on hosts running Docker, whose
FORWARD policy is DROP; the switch namespace has no rules, so the cluster's traffic does not
depend on the host's firewall.)

A node boots by running the generated `node.sh` as

    ip netns exec fx-nodeN unshare --mount --uts --propagation private sh node.sh ...

which mounts the node's own state (bind mounts of directories under the work dir over
/etc/corosync, /var/lib/corosync, /var/lib/pacemaker, /var/log/pacemaker,
/var/log/corosync; fresh tmpfs over /run and /dev/shm) and the checkout's agent over
/usr/sbin/fence_xenapi, then starts `corosync -f` and `pacemakerd` in the foreground and
waits. Nothing is mounted in the root namespace: a node's mounts vanish with its last
process. libqb's IPC uses abstract unix sockets (per network namespace) and /dev/shm (per
node tmpfs), so the three stacks never see each other except over the bridge, nor the
root namespace's own cluster, if any.

The simulated VMs node1..node3 have real power states: the simulator's `on_halt` hook
(`halt.sh`) SIGKILLs every process in that node's network namespace and waits until they are
gone; `on_start` (`boot.sh`) boots the node again. `halt.sh` and `boot.sh` append
`halted|booted NODE EPOCH` lines to `events.log` so a test can time them.

`NetCluster` owns all of it and `stop()` removes everything it made (processes by PID,
namespaces, veths, bridge), also after a failure; `start()` first removes what a run killed
before its teardown left behind (the names are reserved for this harness). Run as a script
it starts a cluster and waits for Ctrl-C, for poking at it by hand:
`python3 tests/netcluster.py --help`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar

if __package__ in (None, ""):  # run as a script: make `tests.xapisim` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.xapisim import SimClient

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "fence_xenapi.py"
SIMULATOR = ROOT / "tests" / "xapisim.py"
PYTHON = "/usr/bin/python3"  # the distro interpreter, as for the agent

BRIDGE = "fxbr0"
SWITCH_NETNS = "fx-switch"
HOST_VETH, HOST_VETH_PEER = "fxh-pool", "fxs-pool"  # root namespace <-> switch
SUBNET = "10.213.0"
HOST_ADDRESS = f"{SUBNET}.1"
NETNS_PREFIX = "fx-"
STONITH_ID = "fence-xenapi"
# A started VM's node boots this long after the start: a real VM takes longer than that to
# boot. Booting at once, a rebooted node rejoined Pacemaker 3's fencer before the fencer had
# announced its fencing, and its controller stopped ("We were allegedly just fenced").
VM_BOOT_SECONDS = 5
# The second fencing level (NetCluster(second_level=True)): what powers off the host the VM
# runs on (its BMC, fence_ipmilan or fence_redfish) or SBD in a real cluster; here
# fence_dummy stands in (tests/README.md says why), recording "off" in a file.
SECOND_LEVEL_ID = "fence-host-bmc"
SECOND_LEVEL_AGENT = "fence_dummy"
USERNAME, PASSWORD = "root", "secret"  # the simulator's standard pool admin
# Tools the harness runs (util-linux: unshare, nsenter, setpriv; iproute2: ip).
TOOLS = ("ip", "unshare", "nsenter", "setpriv", "corosync", "corosync-cfgtool",
         "corosync-quorumtool", "pacemakerd", "crm_mon", "cibadmin", "crm_attribute",
         "stonith_admin")

T = TypeVar("T")


class ClusterError(RuntimeError):
    """The cluster could not be built or did not reach the state asked for."""


def run(args: Sequence[str], *, check: bool = True, timeout: float = 30,
        input_text: Optional[str] = None,
        env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output; a failure names the command and its stderr. A
    command that outlives `timeout` is killed and counts as exit status 124."""
    try:
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                              input=input_text, env=env, check=False)
    except subprocess.TimeoutExpired as expired:
        proc = subprocess.CompletedProcess(list(args), 124, _text(expired.stdout),
                                           _text(expired.stderr) + f"timed out after {timeout:g} s")
    if check and proc.returncode != 0:
        raise ClusterError(f"{shlex.join(args)} exited {proc.returncode}: "
                           f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def _text(output: object) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output if isinstance(output, str) else ""


def wait_for(what: str, probe: Callable[[], Optional[T]], timeout: float,
             interval: float = 0.2) -> T:
    """Poll `probe` until it returns something other than None (or False)."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            raise ClusterError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _signal(pids: Sequence[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def netns_pids(netns: str) -> List[int]:
    """Every live process in a network namespace (`ip netns pids`; zombies are not listed)."""
    proc = run(["ip", "netns", "pids", netns], check=False)
    return [int(word) for word in proc.stdout.split() if word.isdigit()]


def kill_netns(netns: str, timeout: float = 10) -> None:
    """SIGCONT then SIGKILL every process in the namespace until none is left."""
    deadline = time.monotonic() + timeout
    while True:
        pids = netns_pids(netns)
        if not pids:
            return
        _signal(pids, signal.SIGCONT)
        _signal(pids, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise ClusterError(f"processes {pids} in {netns} survive SIGKILL")
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# Generated scripts
# ---------------------------------------------------------------------------------------------

# Runs inside the node's fresh mount + UTS namespace. $1 node, $2 its state dir, $3 the agent,
# $4 the hold file (pacemakerd waits while it exists: the first boot starts Pacemaker only
# once Corosync sees every node, as `pcs cluster start --all` would).
NODE_SH = r"""#!/bin/sh
set -eu
node=$1 dir=$2 agent=$3 hold=$4
echo $$ > "$dir/launcher.pid"
hostname "$node"
mount -t tmpfs -o mode=0755 fx-run /run
install -d -o hacluster -g haclient -m 0750 /run/crm
install -d -m 0755 /run/lock
mount -t tmpfs -o mode=1777 fx-shm /dev/shm
mount --bind "$dir/etc-corosync" /etc/corosync
mount --bind "$dir/lib-corosync" /var/lib/corosync
mount --bind "$dir/lib-pacemaker" /var/lib/pacemaker
mount --bind "$dir/log-pacemaker" /var/log/pacemaker
mount --bind "$dir/log-corosync" /var/log/corosync
if [ -e /usr/sbin/fence_xenapi ]; then
    mount --bind "$agent" /usr/sbin/fence_xenapi
else  # no agent to cover (fence-agents not installed): overlay /usr/sbin with a copy
    rm -rf "$dir/sbin-upper" "$dir/sbin-work"
    mkdir -p "$dir/sbin-upper" "$dir/sbin-work"
    cp "$agent" "$dir/sbin-upper/fence_xenapi"
    mount -t overlay fx-sbin \
        -o "lowerdir=/usr/sbin,upperdir=$dir/sbin-upper,workdir=$dir/sbin-work" /usr/sbin
fi
export PCMK_logfile=/var/log/pacemaker/pacemaker.log PCMK_logfacility=none PCMK_blackbox=no
corosync -f &
echo $! > "$dir/corosync.pid"
i=0
until corosync-cfgtool -s >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 300 ] || { echo "corosync did not start" >&2; exit 1; }
    sleep 0.1
done
i=0
while [ -e "$hold" ]; do
    i=$((i + 1)); [ $i -lt 1200 ] || { echo "still held by $hold" >&2; exit 1; }
    sleep 0.1
done
pacemakerd &
echo $! > "$dir/pacemakerd.pid"
echo "$node up: launcher $$ corosync $(cat "$dir/corosync.pid") pacemakerd $!"
wait
"""

# The VM's hard power off: every process of the node dies, then the call answers.
HALT_SH = r"""#!/bin/sh
node=$1 work=$2
ns=fx-$node
i=0
while pids=$(ip netns pids "$ns") && [ -n "$pids" ]; do
    kill -CONT $pids 2>/dev/null
    kill -KILL $pids 2>/dev/null
    i=$((i + 1)); [ $i -lt 200 ] || exit 1
    sleep 0.05
done
rm -f "$work/$node/launcher.pid" "$work/$node/corosync.pid" "$work/$node/pacemakerd.pid"
echo "halted $node $(date +%s.%N)" >> "$work/events.log"
"""

# The VM's power on: a fresh boot of the node (detached; its output in the node's dir), after
# $4 seconds (VM_BOOT_SECONDS when the simulator starts the VM).
BOOT_SH = r"""#!/bin/sh
node=$1 work=$2 agent=$3 delay=${4:-0}
echo $$ >> "$work/boot.pids"
sleep "$delay"
echo "booted $node $(date +%s.%N)" >> "$work/events.log"
exec ip netns exec "fx-$node" unshare --mount --uts --propagation private \
    /bin/sh "$work/node.sh" "$node" "$work/$node" "$agent" "$work/hold" \
    >> "$work/$node/launcher.log" 2>&1 < /dev/null
"""


# ---------------------------------------------------------------------------------------------
# The cluster
# ---------------------------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    number: int
    directory: Path

    @property
    def netns(self) -> str:
        return f"{NETNS_PREFIX}{self.name}"

    @property
    def address(self) -> str:
        return f"{SUBNET}.{10 + self.number}"

    @property
    def veth_switch(self) -> str:
        return f"fxs-{self.name}"

    @property
    def veth_node(self) -> str:
        return f"fxn-{self.name}"

    def pid(self, what: str) -> Optional[int]:
        """The PID `node.sh` recorded for launcher, corosync or pacemakerd, if alive."""
        try:
            pid = int((self.directory / f"{what}.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if alive(pid) else None

    def run(self, args: Sequence[str], *, check: bool = True,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command inside the node (its network, mount and UTS namespaces)."""
        launcher = self.pid("launcher")
        if launcher is None:
            raise ClusterError(f"{self.name} is not running")
        # --root/--wd: the target's root directory, which entering its mount namespace alone
        # would reset to the namespace's (the host's / when the cluster runs in a chroot, as
        # in the Debian 13 root of tests/trixie.py).
        return run(["nsenter", f"--target={launcher}", "--net", "--mount", "--uts", "--root",
                    "--wd", *args], check=check, timeout=timeout)

    def log_tail(self, lines: int = 40) -> str:
        parts = []
        for name in ("launcher.log", "log-corosync/corosync.log",
                     "log-pacemaker/pacemaker.log"):
            path = self.directory / name
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {self.name} {name} (last {len(text)} lines)\n"
                             + "\n".join(text))
        return "\n".join(parts)


@dataclass
class FenceEvent:
    action: str
    target: str
    status: str
    delegate: str
    origin: str
    completed: str


@dataclass
class Status:
    """What `crm_mon --output-as=xml` says, reduced to what the tests look at."""

    dc: Optional[str]
    online: List[str]
    offline: List[str]
    unclean: List[str]
    stonith_running_on: List[str]


class NetCluster:
    """Three (or more) namespaced nodes, the bridge, and the simulator standing in for the
    XenServer pool whose VMs they are."""

    def __init__(self, workdir: Path, nodes: int = 3, agent: Path = AGENT, *,
                 second_level: bool = False, monitor_interval: str = "60s") -> None:
        self.workdir = Path(workdir).resolve()
        self.agent = Path(agent).resolve()
        self.second_level = second_level
        self.monitor_interval = monitor_interval
        self.nodes = [Node(f"node{n}", n, self.workdir / f"node{n}")
                      for n in range(1, nodes + 1)]
        self.url = ""
        self.sim: Optional[SimClient] = None
        self._sim_proc: Optional[subprocess.Popen[bytes]] = None
        self._boots: List[subprocess.Popen[bytes]] = []

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> NetCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def start(self, timeout: float = 120) -> None:
        """Network, simulator, configuration, then every node; returns once all are online
        and the stonith device runs."""
        self.remove_leftovers()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_scripts()
        self._make_network()
        self._start_simulator()
        self._write_node_state()
        hold = self.workdir / "hold"
        hold.touch()
        for node in self.nodes:
            self.boot(node)
        first = self.nodes[0]
        wait_for("every node up in Corosync", lambda: self._corosync_members(first)
                 == len(self.nodes), timeout)
        hold.unlink()
        self.wait_online([node.name for node in self.nodes], timeout)

    def boot(self, node: Node) -> None:
        """Power the node on from the test (the simulator's on_start hook does the same)."""
        self._boots.append(subprocess.Popen(
            ["/bin/sh", str(self.workdir / "boot.sh"), node.name, str(self.workdir),
             str(self.agent)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True))

    def stop(self) -> None:
        """Remove everything start() made, whatever state it is in. Safe to call twice."""
        errors: List[str] = []
        if self._sim_proc is not None:  # first: no hook may boot a node while we tear down
            self._sim_proc.terminate()
            try:
                self._sim_proc.wait(10)
            except subprocess.TimeoutExpired:
                self._sim_proc.kill()
                self._sim_proc.wait(10)
            self._sim_proc = None
        self._kill_boots()
        for node in self.nodes:
            try:
                kill_netns(node.netns)
            except ClusterError as error:
                errors.append(str(error))
        self._kill_boots()  # a boot.sh that was about to enter its namespace
        self._delete_network()
        for boot in self._boots:
            boot.poll()
        if errors:
            raise ClusterError("; ".join(errors))

    def _kill_boots(self) -> None:
        """Any boot.sh still alive, by the PID it recorded (and only if it is still ours)."""
        path = self.workdir / "boot.pids"
        if not path.exists():
            return
        for word in path.read_text().split():
            pid = int(word)
            if alive(pid) and str(self.workdir) in _cmdline(pid):
                _signal([pid], signal.SIGKILL)

    def remove_leftovers(self) -> None:
        """A previous run killed before its teardown: its namespaces, veths and bridge carry
        our reserved names, and its processes live in those namespaces."""
        existing = run(["ip", "netns", "list"], check=False).stdout.split()
        for node in self.nodes:
            if node.netns in existing:
                kill_netns(node.netns)
        self._delete_network()

    def _delete_network(self) -> None:
        """Deleting a namespace nobody uses any more destroys its interfaces, and a veth
        takes its peer with it; the root namespace's end is deleted by name all the same."""
        for netns in [node.netns for node in self.nodes] + [SWITCH_NETNS]:
            run(["ip", "netns", "delete", netns], check=False)
        if run(["ip", "link", "show", HOST_VETH], check=False).returncode == 0:
            run(["ip", "link", "delete", HOST_VETH], check=False)

    # -- building -------------------------------------------------------------------------------

    def _write_scripts(self) -> None:
        for name, text in (("node.sh", NODE_SH), ("halt.sh", HALT_SH), ("boot.sh", BOOT_SH)):
            path = self.workdir / name
            path.write_text(text)
            path.chmod(0o755)
        (self.workdir / "events.log").write_text("")
        (self.workdir / "boot.pids").write_text("")

    def _make_network(self) -> None:
        switch = ["ip", "-netns", SWITCH_NETNS]
        run(["ip", "netns", "add", SWITCH_NETNS])
        run([*switch, "link", "add", BRIDGE, "type", "bridge"])
        run([*switch, "link", "set", BRIDGE, "up"])
        run(["ip", "link", "add", HOST_VETH, "type", "veth", "peer", "name", HOST_VETH_PEER,
             "netns", SWITCH_NETNS])
        run([*switch, "link", "set", HOST_VETH_PEER, "master", BRIDGE, "up"])
        run(["ip", "addr", "add", f"{HOST_ADDRESS}/24", "dev", HOST_VETH])
        run(["ip", "link", "set", HOST_VETH, "up"])
        for node in self.nodes:
            run(["ip", "netns", "add", node.netns])
            run(["ip", "-netns", node.netns, "link", "add", node.veth_node, "type", "veth",
                 "peer", "name", node.veth_switch, "netns", SWITCH_NETNS])
            run([*switch, "link", "set", node.veth_switch, "master", BRIDGE, "up"])
            inside = ["ip", "-netns", node.netns]
            run([*inside, "addr", "add", f"{node.address}/24", "dev", node.veth_node])
            run([*inside, "link", "set", node.veth_node, "up"])
            run([*inside, "link", "set", "lo", "up"])

    def _start_simulator(self) -> None:
        hooks = {node.name: {
            "on_halt": shlex.join(["/bin/sh", str(self.workdir / "halt.sh"), node.name,
                                   str(self.workdir)]),
            "on_start": shlex.join(["/bin/sh", str(self.workdir / "boot.sh"), node.name,
                                    str(self.workdir), str(self.agent),
                                    str(VM_BOOT_SECONDS)]),
        } for node in self.nodes}
        hooks_file = self.workdir / "hooks.json"
        hooks_file.write_text(json.dumps(hooks, indent=2))
        url_file = self.workdir / "xapisim.url"
        url_file.unlink(missing_ok=True)
        # The standard pool already holds Running VMs node1..node3 and a dozen others.
        # setpriv --pdeathsig: a test killed outright leaves no simulator behind (what it
        # leaves in the namespaces, the next start() removes).
        args = ["setpriv", "--pdeathsig", "TERM", "--",
                PYTHON, str(SIMULATOR), "--address", HOST_ADDRESS, "--standard-pool",
                "--hooks", str(hooks_file), "--url-file", str(url_file)]
        standard = {"node1", "node2", "node3"}
        for node in self.nodes:
            if node.name not in standard:
                args += ["--vm", f"{node.name}:Running"]
        with (self.workdir / "xapisim.log").open("wb") as log:
            self._sim_proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT)

        def ready() -> Optional[str]:
            if self._sim_proc is not None and self._sim_proc.poll() is not None:
                raise ClusterError("the simulator exited: "
                                   + (self.workdir / "xapisim.log").read_text())
            text = url_file.read_text().strip() if url_file.exists() else ""
            return text or None

        self.url = wait_for("the simulator's URL", ready, 30)
        self.sim = SimClient(self.url)

    def corosync_conf(self) -> str:
        nodes = "".join(
            f"    node {{\n        name: {node.name}\n        nodeid: {node.number}\n"
            f"        ring0_addr: {node.address}\n    }}\n" for node in self.nodes)
        return (
            "# written by tests/netcluster.py\n"
            "totem {\n    version: 2\n    cluster_name: fxlevel2\n    transport: knet\n"
            "    crypto_cipher: none\n    crypto_hash: none\n}\n"
            "logging {\n    to_logfile: yes\n    logfile: /var/log/corosync/corosync.log\n"
            "    to_syslog: no\n    to_stderr: no\n    timestamp: hires\n}\n"
            "quorum {\n    provider: corosync_votequorum\n"
            f"    expected_votes: {len(self.nodes)}\n    two_node: 0\n}}\n"
            f"nodelist {{\n{nodes}}}\n")

    def stonith_primitive(self) -> str:
        """The fence device as a user would configure it: the pool's URL and credentials
        (the password as an instance attribute: Pacemaker hands it over on stdin), VM names
        equal to node names, listed statically."""
        attributes = {
            "session_url": self.url,
            "username": USERNAME,
            "password": PASSWORD,
            "pcmk_host_check": "static-list",
            "pcmk_host_list": " ".join(node.name for node in self.nodes),
            "pcmk_reboot_action": "reboot",
        }
        pairs = "".join(f'<nvpair id="{STONITH_ID}-{name}" name="{name}" value="{value}"/>'
                        for name, value in attributes.items())
        return (f'<primitive id="{STONITH_ID}" class="stonith" type="fence_xenapi">'
                f'<instance_attributes id="{STONITH_ID}-params">{pairs}</instance_attributes>'
                f'<operations><op id="{STONITH_ID}-monitor" name="monitor" '
                f'interval="{self.monitor_interval}"/></operations></primitive>')

    @property
    def second_level_status(self) -> Path:
        """The stand-in's power state: fence_dummy writes the action it ran ("off")."""
        return self.workdir / "host-bmc.status"

    def second_level_primitive(self) -> str:
        """The level 2 device: fence_dummy, mapped to every node, whose reboot is an "off"
        (a host's BMC powering it off, as the README advises for the second level)."""
        attributes = {
            "type": "file",
            "status_file": str(self.second_level_status),
            "pcmk_host_check": "static-list",
            "pcmk_host_list": " ".join(node.name for node in self.nodes),
            "pcmk_reboot_action": "off",
        }
        pairs = "".join(f'<nvpair id="{SECOND_LEVEL_ID}-{name}" name="{name}" value="{value}"/>'
                        for name, value in attributes.items())
        return (f'<primitive id="{SECOND_LEVEL_ID}" class="stonith" '
                f'type="{SECOND_LEVEL_AGENT}"><instance_attributes '
                f'id="{SECOND_LEVEL_ID}-params">{pairs}</instance_attributes>'
                f'<operations><op id="{SECOND_LEVEL_ID}-monitor" name="monitor" '
                f'interval="{self.monitor_interval}"/></operations></primitive>')

    def fencing_topology(self) -> str:
        """Level 1 fence_xenapi, level 2 the stand-in, for every node (what `pcs stonith
        level add 1 NODE fence-xenapi` and `... add 2 NODE fence-host-bmc` write)."""
        levels = "".join(
            f'<fencing-level id="fl-{node.name}-{index}" target="{node.name}" '
            f'index="{index}" devices="{device}"/>'
            for node in self.nodes
            for index, device in ((1, STONITH_ID), (2, SECOND_LEVEL_ID)))
        return f"<fencing-topology>{levels}</fencing-topology>"

    def seed_cib(self, path: Path) -> None:
        """A CIB written offline, as pacemaker-facts.md describes: properties and the device
        are there before the first start, so no node waits out a blank CIB."""
        path.write_text(run(["cibadmin", "--empty"]).stdout)
        env = {**os.environ, "CIB_file": str(path)}
        properties = {
            "stonith-enabled": "true",
            "stonith-action": "reboot",
            "stonith-timeout": "60s",
            "no-quorum-policy": "stop",  # three votes: a lone node must not act
            "dc-deadtime": "5s",
            "cluster-recheck-interval": "1min",
        }
        for name, value in properties.items():
            run(["crm_attribute", "--type", "crm_config", "--name", name, "--update", value],
                env=env)
        run(["cibadmin", "--create", "--scope", "resources", "--xml-text",
             self.stonith_primitive()], env=env)
        if self.second_level:
            self.second_level_status.write_text("on")
            run(["cibadmin", "--create", "--scope", "resources", "--xml-text",
                 self.second_level_primitive()], env=env)
            run(["cibadmin", "--create", "--scope", "configuration", "--xml-text",
                 self.fencing_topology()], env=env)

    def _write_node_state(self) -> None:
        """Per node: its /etc/corosync, /var/lib/corosync, /var/lib/pacemaker (seeded CIB,
        owned hacluster:haclient), /var/log/pacemaker and /var/log/corosync."""
        seed = self.workdir / "cib-seed.xml"
        self.seed_cib(seed)
        config = self.corosync_conf()
        for node in self.nodes:
            if node.directory.exists():
                shutil.rmtree(node.directory)
            directory = node.directory
            (directory / "etc-corosync" / "uidgid.d").mkdir(parents=True)
            (directory / "etc-corosync" / "corosync.conf").write_text(config)
            (directory / "lib-corosync").mkdir()
            (directory / "log-corosync").mkdir()
            for sub in ("lib-pacemaker", "lib-pacemaker/cib", "lib-pacemaker/pengine",
                        "lib-pacemaker/blackbox", "lib-pacemaker/cores", "log-pacemaker",
                        "log-pacemaker/bundles"):
                (directory / sub).mkdir()
                shutil.chown(directory / sub, "hacluster", "haclient")
                (directory / sub).chmod(0o770 if sub.startswith("log") else 0o750)
            (directory / "lib-pacemaker").chmod(0o755)
            cib = directory / "lib-pacemaker" / "cib" / "cib.xml"
            shutil.copyfile(seed, cib)
            shutil.chown(cib, "hacluster", "haclient")
            cib.chmod(0o600)

    # -- looking at it --------------------------------------------------------------------------

    def _corosync_members(self, node: Node) -> int:
        if node.pid("corosync") is None:
            return 0
        proc = node.run(["corosync-quorumtool", "-s"], check=False)
        for line in proc.stdout.splitlines():
            if line.strip().startswith("Total votes:"):
                return int(line.split(":")[1])
        return 0

    def status(self, observer: Node) -> Optional[Status]:
        """crm_mon's view from one node, or None if it cannot answer yet."""
        proc = observer.run(["crm_mon", "--one-shot", "--output-as=xml"], check=False,
                            timeout=15)
        if proc.returncode != 0:
            return None
        root = ET.fromstring(proc.stdout)  # noqa: S314 (Pacemaker's own output)
        dc = root.find("./summary/current_dc")
        nodes = root.findall("./nodes/node")
        return Status(
            dc=dc.get("name") if dc is not None and dc.get("present") == "true" else None,
            online=[n.get("name", "") for n in nodes if n.get("online") == "true"],
            offline=[n.get("name", "") for n in nodes if n.get("online") != "true"],
            unclean=[n.get("name", "") for n in nodes if n.get("unclean") == "true"],
            stonith_running_on=[
                n.get("name", "")
                for r in root.findall(f".//resource[@id='{STONITH_ID}']")
                if r.get("role") == "Started" for n in r.findall("node")],
        )

    def wait_online(self, names: Sequence[str], timeout: float,
                    observers: Optional[Sequence[Node]] = None) -> Status:
        """Until every observer (default: the named nodes) sees exactly `names` online, a DC
        and the stonith device started."""
        watchers = list(observers) if observers else [self.node(name) for name in names]

        def settled() -> Optional[Status]:
            last: Optional[Status] = None
            for observer in watchers:
                if observer.pid("pacemakerd") is None:
                    return None
                status = self.status(observer)
                if (status is None or status.dc is None or sorted(status.online)
                        != sorted(names) or not status.stonith_running_on):
                    return None
                last = status
            return last

        return wait_for(f"{', '.join(names)} online with a DC and the fence device started",
                        settled, timeout, interval=0.5)

    def fence_history(self, observer: Node, target: str) -> List[FenceEvent]:
        proc = observer.run(["stonith_admin", "--history", target, "--output-as=xml"],
                            check=False, timeout=15)
        if proc.returncode != 0 or not proc.stdout.strip():
            return []
        root = ET.fromstring(proc.stdout)  # noqa: S314 (Pacemaker's own output)
        return [FenceEvent(e.get("action", ""), e.get("target", ""), e.get("status", ""),
                           e.get("delegate", ""), e.get("origin", ""), e.get("completed", ""))
                for e in root.iter("fence_event")]

    def events(self) -> List[Tuple[str, str, float]]:
        """(halted|booted, node, epoch seconds) lines from the hooks, oldest first."""
        result = []
        for line in (self.workdir / "events.log").read_text().splitlines():
            kind, node, stamp = line.split()
            result.append((kind, node, float(stamp)))
        return result

    def diagnostics(self) -> str:
        """Logs and views worth reading when something went wrong."""
        parts = [f"work dir: {self.workdir}"]
        for node in self.nodes:
            if node.pid("launcher") is not None:
                proc = node.run(["crm_mon", "--one-shot"], check=False, timeout=15)
                parts.append(f"--- crm_mon on {node.name}\n{proc.stdout}{proc.stderr}")
            parts.append(node.log_tail())
        if self.sim is not None:
            with contextlib.suppress(Exception):
                parts.append(f"--- power log {self.sim.power_log()}")
        return "\n".join(parts)


@contextlib.contextmanager
def running_cluster(workdir: Path, timeout: float = 120) -> Iterator[NetCluster]:
    cluster = NetCluster(workdir)
    try:
        cluster.start(timeout)
        yield cluster
    finally:
        cluster.stop()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Start the three-node namespaced cluster "
                                     "with the XAPI simulator; tear it down on Ctrl-C.")
    parser.add_argument("workdir", type=Path)
    args = parser.parse_args(argv)
    with running_cluster(args.workdir) as cluster:
        print(f"cluster up; simulator {cluster.url}; nodes: "
              + ", ".join(f"{n.name} (launcher {n.pid('launcher')})" for n in cluster.nodes)
              + "\nrun commands inside a node with: nsenter --target=<launcher> --net "
              "--mount --uts crm_mon -1", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
