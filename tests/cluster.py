"""A real one-node Corosync + Pacemaker cluster on loopback, started without systemd, for the
Level 1 Pacemaker tests (tests/test_pacemaker.py).

`OneNodeCluster` installs the agent where pacemaker-fenced looks for it (a meson install of
this tree: its launcher put at /usr/sbin/fence_xenapi over Debian's copy with a local
dpkg-divert, its byte-compiled module in /usr/share/fence-xenapi), seeds
the CIB so that the node comes online in seconds, starts corosync and pacemakerd in sessions
of their own, waits until the node is online, and on `stop()` kills exactly what it started
(by PID and process group) and puts back every file it moved: corosync.conf, the CIB
directory, the distro agent and whatever was in /usr/share/fence-xenapi.

Run it by hand (as root) to poke at a cluster: `python3 -m tests.cluster` starts one and
keeps it until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parent.parent
NODE = "node1"
AGENT_PATH = Path("/usr/sbin/fence_xenapi")
# A local diversion of our own, distinct from the one our .deb makes (fence_xenapi.distrib).
AGENT_DIVERTED = Path("/usr/sbin/fence_xenapi.pacemaker-tests")
MODULE_DIR = Path("/usr/share/fence-xenapi")  # the launcher imports the agent from here
COROSYNC_CONF = Path("/etc/corosync/corosync.conf")
CIB_DIR = Path("/var/lib/pacemaker/cib")
TOOLS = ("corosync", "pacemakerd", "cibadmin", "crm_attribute", "crm_mon", "stonith_admin",
         "dpkg-divert", "meson", "ninja")

COROSYNC_CONF_TEXT = """\
# Written by fence_xenapi's tests/cluster.py for a one-node test cluster; the file that was
# here before is put back when the test ends.
totem {
    version: 2
    cluster_name: fence-xenapi-test
    transport: knet
    crypto_cipher: none
    crypto_hash: none
}
nodelist {
    node {
        ring0_addr: 127.0.0.1
        name: %(node)s
        nodeid: 1
    }
}
quorum {
    provider: corosync_votequorum
}
logging {
    to_logfile: yes
    logfile: %(log)s
    to_stderr: no
    to_syslog: no
    timestamp: on
}
"""


class ClusterError(RuntimeError):
    """The cluster could not be set up or did not come online."""


def run(command: Sequence[str], *, env: Optional[Mapping[str, str]] = None,
        timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout,
                          env=None if env is None else {**os.environ, **env}, check=False)
    if check and proc.returncode != 0:
        raise ClusterError(f"{' '.join(command)} exited {proc.returncode}: "
                           f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc


def meson_install(destdir: Path, builddir: Path) -> Path:
    """Build and install this tree with meson into destdir; the installed agent's path."""
    run(["meson", "setup", str(builddir), str(ROOT),
         "-Dpython=/usr/bin/python3"], timeout=120)
    run(["meson", "install", "-C", str(builddir), "--destdir", str(destdir), "--quiet"],
        timeout=120)
    return destdir / "usr" / "sbin" / "fence_xenapi"


def seeded_cib(path: Path) -> None:
    """An empty CIB with the settings that bring one node online in seconds and let it fence:
    short dc-deadtime (a blank CIB waits 20 s), stonith on, quorum ignored (one node)."""
    with path.open("w") as handle:
        subprocess.run(["cibadmin", "--empty"], stdout=handle, check=True, timeout=30)
    for name, value in (("dc-deadtime", "2s"), ("stonith-enabled", "true"),
                        ("no-quorum-policy", "ignore"), ("stonith-timeout", "60s")):
        run(["crm_attribute", "--type", "crm_config", "--name", name, "--update", value],
            env={"CIB_file": str(path)})


@dataclass
class OneNodeCluster:
    """One node, `node1`, on 127.0.0.1; see the module docstring."""

    workdir: Path
    processes: Dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _undo: List[str] = field(default_factory=list)

    @property
    def corosync_log(self) -> Path:
        return self.workdir / "corosync.log"

    @property
    def pacemaker_log(self) -> Path:
        return self.workdir / "pacemaker.log"

    # --- setting up -------------------------------------------------------------------------

    def install_agent(self) -> Path:
        """meson-install this tree and put its launcher at /usr/sbin/fence_xenapi, Debian's
        copy diverted aside for the duration, and its module (with its bytecode, mtimes kept so
        that it stays current) in /usr/share/fence-xenapi, anything there moved aside."""
        destdir = self.workdir / "destdir"
        installed = meson_install(destdir, self.workdir / "build")
        if str(AGENT_DIVERTED) not in run(["dpkg-divert", "--list", str(AGENT_PATH)]).stdout:
            run(["dpkg-divert", "--local", "--rename", "--divert", str(AGENT_DIVERTED),
                 "--add", str(AGENT_PATH)])
        self._undo.append("agent")
        shutil.copy2(installed, AGENT_PATH)
        AGENT_PATH.chmod(0o755)
        if MODULE_DIR.exists():
            shutil.move(str(MODULE_DIR), str(self.workdir / "saved-module"))
        self._undo.append("module")
        shutil.copytree(destdir / MODULE_DIR.relative_to("/"), MODULE_DIR)
        return AGENT_PATH

    def _restore_agent(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            AGENT_PATH.unlink()
        run(["dpkg-divert", "--local", "--rename", "--remove", str(AGENT_PATH)], check=False)

    def _restore_module(self) -> None:
        shutil.rmtree(MODULE_DIR, ignore_errors=True)
        if (self.workdir / "saved-module").exists():
            shutil.move(str(self.workdir / "saved-module"), str(MODULE_DIR))

    def write_config(self) -> None:
        backup = self.workdir / "saved"
        backup.mkdir(exist_ok=True)
        if COROSYNC_CONF.exists():
            shutil.copy2(COROSYNC_CONF, backup / "corosync.conf")
        self._undo.append("corosync.conf")
        COROSYNC_CONF.write_text(COROSYNC_CONF_TEXT % {"node": NODE, "log": self.corosync_log})

        if CIB_DIR.exists():
            shutil.copytree(CIB_DIR, backup / "cib", symlinks=True)
        self._undo.append("cib")
        self._empty_cib_dir()
        cib = CIB_DIR / "cib.xml"
        seeded_cib(cib)
        shutil.chown(cib, "hacluster", "haclient")
        cib.chmod(0o600)

    @staticmethod
    def _empty_cib_dir() -> None:
        CIB_DIR.mkdir(parents=True, exist_ok=True)
        shutil.chown(CIB_DIR, "hacluster", "haclient")
        for entry in CIB_DIR.iterdir():
            entry.unlink()

    def _restore_config(self) -> None:
        backup = self.workdir / "saved"
        if (backup / "corosync.conf").exists():
            shutil.copy2(backup / "corosync.conf", COROSYNC_CONF)
        else:
            COROSYNC_CONF.unlink(missing_ok=True)

    def _restore_cib(self) -> None:
        self._empty_cib_dir()
        saved = self.workdir / "saved" / "cib"
        if saved.exists():
            for entry in saved.iterdir():
                shutil.copy2(entry, CIB_DIR / entry.name)
                shutil.chown(CIB_DIR / entry.name, "hacluster", "haclient")

    # --- running ----------------------------------------------------------------------------

    def _spawn(self, name: str, command: Sequence[str]) -> None:
        log = (self.workdir / f"{name}.out").open("wb")
        env = {**os.environ, "PCMK_logfile": str(self.pacemaker_log), "PCMK_debug": "no"}
        # A session of its own: its process group is everything it starts, so stop() can
        # kill what is left of it, and nothing of ours gets its signals.
        self.processes[name] = subprocess.Popen(
            list(command), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env=env)
        log.close()

    def start(self, timeout: float = 90) -> None:
        """Set up and start; raises ClusterError (after stopping) if the node is not online
        with a DC within `timeout` seconds."""
        try:
            self.install_agent()
            self.write_config()
            self._spawn("corosync", ["corosync", "-f"])
            self._wait(lambda: run(["corosync-quorumtool", "-s"], check=False).returncode == 0,
                       30, "corosync did not form its membership")
            self._spawn("pacemakerd", ["pacemakerd"])
            self._wait(self.online, timeout, f"{NODE} did not come online")
        except BaseException:
            self.stop()
            raise

    def _wait(self, ready: object, timeout: float, what: str) -> None:
        assert callable(ready)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise ClusterError(f"{name} exited {process.returncode}; "
                                       f"{self.tail(self.workdir / f'{name}.out')}")
            if ready():
                return
            time.sleep(0.5)
        raise ClusterError(f"{what} within {timeout:.0f} s; {self.tail(self.pacemaker_log)}")

    @staticmethod
    def tail(path: Path, lines: int = 15) -> str:
        if not path.exists():
            return f"{path}: none"
        return f"last lines of {path}:\n" + "\n".join(
            path.read_text(errors="replace").splitlines()[-lines:])

    def status_xml(self) -> Optional[ElementTree.Element]:
        proc = run(["crm_mon", "-1", "--output-as=xml"], check=False, timeout=30)
        if proc.returncode != 0:
            return None
        try:
            return ElementTree.fromstring(proc.stdout)  # noqa: S314 (crm_mon's own output)
        except ElementTree.ParseError:
            return None

    def online(self) -> bool:
        status = self.status_xml()
        if status is None:
            return False
        dc = status.find("summary/current_dc")
        node = status.find(f"nodes/node[@name='{NODE}']")
        return (dc is not None and dc.get("present") == "true" and node is not None
                and node.get("online") == "true")

    def stop(self) -> None:
        """Stop what was started (pacemakerd first: it stops its children), then undo every
        change, in reverse order. Safe to call twice and after a failed start."""
        for name in ("pacemakerd", "corosync"):
            process = self.processes.pop(name, None)
            if process is None:
                continue
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
            # whatever of its session survived (children of a killed pacemakerd)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        undo = {"agent": self._restore_agent, "module": self._restore_module,
                "corosync.conf": self._restore_config, "cib": self._restore_cib}
        while self._undo:
            undo[self._undo.pop()]()

    # --- using it ---------------------------------------------------------------------------

    def create_stonith(self, device: str, params: Mapping[str, str]) -> None:
        """A stonith resource of type fence_xenapi, as `pcs stonith create` makes it."""
        run(["pcs", "stonith", "create", device, "fence_xenapi",
             *(f"{key}={value}" for key, value in params.items())], timeout=60)
        self._wait(lambda: device in self.registered(), 60,
                   f"the fencer did not register {device}")

    def delete_stonith(self, device: str) -> None:
        run(["pcs", "stonith", "delete", device], timeout=60)
        self._wait(lambda: device not in self.registered(), 60,
                   f"the fencer kept {device}")

    def registered(self) -> List[str]:
        proc = run(["stonith_admin", "--list-registered"], check=False, timeout=30)
        return [line.strip() for line in proc.stdout.splitlines()
                if line.strip() and not line.strip().endswith("devices found")]


@contextlib.contextmanager
def one_node_cluster(workdir: Optional[Path] = None) -> Iterator[OneNodeCluster]:
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fx-cl-")))
        cluster = OneNodeCluster(workdir)
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()


def main() -> int:
    with one_node_cluster() as cluster:
        print(f"{NODE} online; logs in {cluster.workdir}; Ctrl-C stops it", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
