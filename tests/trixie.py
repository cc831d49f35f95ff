"""A Debian 13 (trixie) root for running this project's tests on Debian's current stable
release (tests/test_trixie.py), from a Debian 12 machine.

The root is built with debootstrap from the Debian archive this machine's apt uses (the URI of
its own sources, /etc/apt/sources.list.d/*.sources), with the packages of
scripts/trixie-packages.txt installed by trixie's apt. It is kept in a cache directory
(/var/cache/fence-xenapi-tests/trixie, or $FX_TRIXIE_CACHE/trixie) between runs: a second run
downloads nothing. When the package list or the archive changes, the next run brings the kept
root up to date (apt-get update, install the list, upgrade) instead of starting over.

`enter()` runs a command inside the root. Every run gets namespaces of its own: a mount
namespace (so /proc, /dev with a private /dev/shm and /dev/pts, /sys, /run and /tmp are mounted
for this run only and vanish with it, whatever happens: failure, timeout, Ctrl-C), a PID
namespace (every process the run started dies with it: no corosync or pacemakerd outlives it)
and, for tests, a network namespace with only `lo` up, so the root's Corosync, Pacemaker and
simulator never meet the host's on 127.0.0.1. Only building the root uses the host's network,
to reach the Debian archive.

By hand (as root): `python3 -m tests.trixie` builds or refreshes the root and prints where it
is; `python3 -m tests.trixie -- CMD...` runs CMD in it (network namespace of its own).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
SUITE = "trixie"
PACKAGES_FILE = ROOT / "scripts" / "trixie-packages.txt"
CACHE = Path(os.environ.get("FX_TRIXIE_CACHE", "/var/cache/fence-xenapi-tests"))
SOURCES_DIR = Path("/etc/apt/sources.list.d")
SOURCES_LIST = Path("/etc/apt/sources.list")
DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# Bumped when the way the root is made changes, so that kept roots are remade.
RECIPE = "2"
# A kept root is refreshed from the archive (apt-get update + upgrade) at most this often,
# so that security and point-release updates reach it; in between, runs are offline.
REFRESH_AFTER = 7 * 24 * 3600
TOOLS = ("debootstrap", "unshare", "chroot", "mount", "flock")
INNER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class RootError(RuntimeError):
    """The trixie root could not be built or entered."""


@dataclass(frozen=True)
class Archive:
    """Where apt on this machine gets Debian from."""

    uri: str
    keyring: str


def _stanzas(text: str) -> Iterator[Dict[str, str]]:
    """deb822 paragraphs (sources.list(5)) as {field: value}; continuation lines joined."""
    for paragraph in re.split(r"\n\s*\n", text):
        fields: Dict[str, str] = {}
        last = ""
        for line in paragraph.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0] in " \t" and last:
                fields[last] += " " + line.strip()
                continue
            name, _, value = line.partition(":")
            last = name.strip().lower()
            fields[last] = value.strip()
        if fields:
            yield fields


def archive(sources_dir: Path = SOURCES_DIR, sources_list: Path = SOURCES_LIST) -> Archive:
    """The Debian archive of apt's own sources: the first enabled `deb` source carrying a
    release suite (not -security, -updates, -backports) with the main component."""
    for path in sorted(sources_dir.glob("*.sources")):
        for fields in _stanzas(path.read_text()):
            if fields.get("enabled", "yes").lower() == "no":
                continue
            suites = fields.get("suites", "").split()
            if ("deb" in fields.get("types", "").split()
                    and "main" in fields.get("components", "").split()
                    and any("-" not in suite and "/" not in suite for suite in suites)):
                keyring = fields.get("signed-by", "")
                return Archive(fields["uris"].split()[0].rstrip("/"),
                               keyring if keyring.startswith("/") else DEFAULT_KEYRING)
    if sources_list.exists():
        for line in sources_list.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", " ", line.split("#")[0]).split()
            if len(words) >= 4 and words[0] == "deb" and "-" not in words[2] and "main" in words:
                return Archive(words[1].rstrip("/"), DEFAULT_KEYRING)
    raise RootError(f"no Debian archive with a release suite in {sources_dir}/*.sources "
                    f"or {sources_list}")


def wanted_packages(path: Path = PACKAGES_FILE) -> List[str]:
    names = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [name for name in names if name]


def recipe_key(source: Archive, packages: Sequence[str]) -> str:
    """What the kept root was made from; a change means it must be brought up to date."""
    text = json.dumps([RECIPE, SUITE, source.uri, sorted(packages)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class TrixieRoot:
    """The kept root under `cache`: `path` is the root directory, `stamp` says what it holds."""

    cache: Path = CACHE

    @property
    def path(self) -> Path:
        return self.cache / SUITE

    @property
    def stamp(self) -> Path:
        return self.cache / f"{SUITE}.json"

    def read_stamp(self) -> Dict[str, object]:
        try:
            data = json.loads(self.stamp.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One builder at a time (two test runs on one machine share the root)."""
        self.cache.mkdir(parents=True, exist_ok=True)
        with (self.cache / f"{SUITE}.lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def ensure(self, log: Optional[Path] = None) -> Dict[str, object]:
        """Build the root, or bring it up to date if its recipe changed or its last refresh
        is older than REFRESH_AFTER; the stamp (what it was made from, and how long that
        took) afterwards."""
        source = archive()
        packages = wanted_packages()
        key = recipe_key(source, packages)
        with self.locked():
            stamp = self.read_stamp()
            fresh = (time.time() - float(str(stamp.get("refreshed", 0)))) < REFRESH_AFTER
            if stamp.get("key") == key and fresh and self.path.is_dir():
                return {**stamp, "action": "kept"}
            started = time.monotonic()
            base = f"{RECIPE} {SUITE} {source.uri}"
            if stamp.get("base") == base and self.path.is_dir():
                action = "refreshed"
            else:
                action = "built"
                self._debootstrap(source, log)
            self.stamp.unlink(missing_ok=True)
            self._install(packages, log, upgrade=action == "refreshed")
            stamp = {"key": key, "base": base, "refreshed": time.time(),
                     "packages": packages, "seconds": round(time.monotonic() - started, 1)}
            self.stamp.write_text(json.dumps(stamp, indent=1) + "\n")
            return {**stamp, "action": action}

    def _debootstrap(self, source: Archive, log: Optional[Path]) -> None:
        new = self.cache / f"{SUITE}.new"
        shutil.rmtree(new, ignore_errors=True)
        shutil.rmtree(self.path, ignore_errors=True)
        # In mount and PID namespaces of its own, like every run in the root: whatever
        # debootstrap mounts in the new root is gone when it ends, even if it fails.
        _logged(["unshare", "--mount", "--propagation", "private", "--pid", "--fork",
                 "--kill-child", "debootstrap", "--variant=minbase", f"--keyring={source.keyring}",
                 "--components=main", SUITE, str(new), source.uri], log, timeout=1200)
        (new / "etc" / "apt" / "sources.list").write_text(
            f"deb {source.uri} {SUITE} main\ndeb {source.uri} {SUITE}-updates main\n")
        # No service is started by a package install (invoke-rc.d: 101 = action forbidden);
        # the tests start their own daemons inside a namespace.
        policy = new / "usr" / "sbin" / "policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        # Keep the downloaded .debs: the packaging tests reinstall fence-agents from apt's
        # cache, offline.
        (new / "etc" / "apt" / "apt.conf.d" / "99fence-xenapi-keep-debs").write_text(
            'Binary::apt::APT::Keep-Downloaded-Packages "true";\n'
            'APT::Keep-Downloaded-Packages "true";\n')
        # A root for tests, rebuilt at will: dpkg need not fsync every file it unpacks, and
        # man-db need not index every manual page (the tests render one with man -l).
        (new / "etc" / "dpkg" / "dpkg.cfg.d" / "fence-xenapi-unsafe-io").write_text(
            "force-unsafe-io\n")
        new.rename(self.path)

    def _install(self, packages: Sequence[str], log: Optional[Path], upgrade: bool) -> None:
        apt = "DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0"
        steps = ["echo 'man-db man-db/auto-update boolean false' | debconf-set-selections",
                 f"{apt} update"]
        if upgrade:
            steps.append(f"{apt} dist-upgrade")
        steps.append(f"{apt} install --no-install-recommends {shlex.join(packages)}")
        enter(self.path, ["sh", "-ec", " && ".join(steps)], network=True, log=log,
              timeout=1800)


def mounts_under(path: Path) -> List[str]:
    """Mount points at or under `path` in this (the host's) mount namespace."""
    prefix = str(path.resolve())
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return found


# The mounts of one run, made inside its own mount namespace: they never show on the host and
# the kernel undoes them when the namespace's last process ends. /dev is the host's (devices),
# with a /dev/shm of its own (libqb's IPC files) and a devpts instance of its own.
_SETUP = r"""
set -e
R=$1; shift
net=$1; shift
cwd=$1; shift
# The root a mount point of its own, as / is on a real system: `unshare --propagation` and
# `ip netns exec` change the propagation of /, which fails on a mere directory (EINVAL).
mount --bind "$R" "$R"
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$R/dev/pts"
mount --bind "$R/dev/pts/ptmx" "$R/dev/ptmx"
mount -t sysfs sysfs "$R/sys" 2>/dev/null || mount --rbind /sys "$R/sys"
mount -t tmpfs -o mode=755,nosuid,nodev run "$R/run"
mkdir -p "$R/run/lock" "$R/run/user"
chmod 1777 "$R/run/lock"
mount -t tmpfs -o mode=1777,nosuid,nodev tmp "$R/tmp"
while [ "$#" -gt 0 ] && [ "$1" != -- ]; do
    mkdir -p "$R$2"
    mount --bind "$1" "$R$2"
    shift 2
done
shift
if [ "$net" = isolated ]; then
    ip link set lo up
elif [ -e /etc/resolv.conf ]; then
    cp -L /etc/resolv.conf "$R/etc/resolv.conf" 2>/dev/null || true
fi
# This shell stays PID 1 of the namespace (it reaps the orphans a daemon leaves; the command
# is an ordinary process, with default signal handling).
chroot "$R" /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "$cwd" "$@" && status=0 || status=$?
exit "$status"
"""


def enter_command(root: Path, command: Sequence[str], *, network: bool = False,
                  binds: Optional[Mapping[Path, str]] = None, cwd: str = "/",
                  env: Optional[Mapping[str, str]] = None) -> List[str]:
    """The host command that runs `command` inside `root` (see the module docstring)."""
    environment = {"PATH": INNER_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb",
                   **(env or {})}
    namespaces = ["--mount", "--pid", "--fork", "--kill-child", "--propagation", "private"]
    if not network:
        namespaces.append("--net")
    bind_args = [word for host, inner in (binds or {}).items() for word in (str(host), inner)]
    return ["unshare", *namespaces, "/bin/sh", "-c", _SETUP, "fx-trixie", str(root),
            "host" if network else "isolated", cwd, *bind_args, "--",
            "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in environment.items()), *command]


def enter(root: Path, command: Sequence[str], *, network: bool = False,
          binds: Optional[Mapping[Path, str]] = None, cwd: str = "/",
          env: Optional[Mapping[str, str]] = None, log: Optional[Path] = None,
          timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """Run `command` in `root`; RootError if it fails. Output goes to `log` when given."""
    argv = enter_command(root, command, network=network, binds=binds, cwd=cwd, env=env)
    return _logged(argv, log, timeout=timeout, what=f"in {root}: {shlex.join(command)}")


def _logged(argv: Sequence[str], log: Optional[Path], timeout: float, what: str = ""
            ) -> subprocess.CompletedProcess[str]:
    if log is None:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              check=False, stdin=subprocess.DEVNULL)
        output = proc.stdout + proc.stderr
    else:
        with log.open("a") as handle:
            handle.write(f"$ {what or shlex.join(argv)}\n")
            handle.flush()
            proc = subprocess.run(list(argv), stdout=handle, stderr=subprocess.STDOUT,
                                  text=True, timeout=timeout, check=False,
                                  stdin=subprocess.DEVNULL)
        output = log.read_text(errors="replace")
    if proc.returncode != 0:
        raise RootError(f"{what or shlex.join(argv)} exited {proc.returncode}:\n"
                        f"{output[-3000:]}")
    return proc


def versions(root: Path) -> Dict[str, str]:
    """Versions of what the suites inside the root run with (package: version)."""
    names = ("python3", "python3-lxml", "python3-pytest", "pacemaker", "corosync", "pcs",
             "fence-agents-xenapi", "debhelper", "lintian", "meson")
    proc = enter(root, ["dpkg-query", "-W", "-f=${Package} ${Version}\\n", *names],
                 timeout=60)
    found = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    python = enter(root, ["python3", "-c", "import platform; print(platform.python_version())"],
                   timeout=60).stdout.strip()
    return {"python": python, **found}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    root = TrixieRoot()
    stamp = root.ensure()
    print(f"{root.path}: {stamp['action']} ({stamp.get('seconds')} s when made)", flush=True)
    if args[:1] == ["--"]:
        argv_inner = args[1:] or ["bash"]
        return subprocess.call(enter_command(root.path, argv_inner))
    return 0


if __name__ == "__main__":
    sys.exit(main())
