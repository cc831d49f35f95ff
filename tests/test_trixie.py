"""The suites again on Debian 13 (trixie), Debian's stable release: its Python 3.13, lxml,
pytest, debhelper, lintian, fence-agents and Pacemaker 3, in a root that tests/trixie.py builds
with debootstrap and keeps between runs.

Each suite runs inside the root, in network, mount and PID namespaces of its own, on a clean
copy of this tree: the agent against the simulator, meson install and the man page, the DEB
(built with trixie's debhelper, lintian clean, installed beside trixie's fence-agents-xenapi
and removed again, its debian/tests run by trixie's autopkgtest), and the Level 1 and Level 2
Pacemaker suites. The same test files as on the host, not copies: what differs between the
releases is handled by the product and those tests.

The report's closing summary names the versions each suite ran with."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import pytest

from tests import trixie
from tests.support import IN_CI, ROOT, SUITE_LINES, require_root, require_tools
from tests.test_packaging import copy_clean_tree

# The first test also builds the root when there is none kept (about 4-10 minutes, by the
# machine's load and the mirror), which pytest-timeout counts as its time: the suite-wide 600 s
# is too short for that, not for a hang.
pytestmark = [pytest.mark.trixie, pytest.mark.slow, pytest.mark.timeout(2400)]

# The suites, as pytest arguments relative to the tree. (tests/test_xapisim.py proves the
# simulator against the XenAPI SDK from PyPI, which Debian does not package: it runs on the
# host only; the simulator serves every suite below.)
SUITES: Dict[str, List[str]] = {
    "agent": ["tests/test_units.py",
              *sorted(f"tests/{p.name}" for p in (ROOT / "tests").glob("test_agent_*.py")),
              "tests/test_degraded.py", "tests/test_imports.py"],
    "meson": ["tests/test_meson.py"],
    "packaging": ["tests/test_packaging.py", "-k", "deb"],
    "pacemaker": ["tests/test_pacemaker.py"],
    # the Level 2 cluster (three namespaced nodes; the cluster decides, and a second fencing
    # level fences when the pool cannot act), with Pacemaker 3's own fencer
    "pacemaker-level2": ["tests/test_pacemaker_level2.py"],
}
SOURCE = "/src/fence-xenapi"
# Python 3.13 deprecations are errors in the agent's suite: in test_units (the agent imported)
# and in every agent the suite runs. (Not in the other suites, where pcs, meson and
# debhelper, Debian's Python programs, would inherit it too.)
STRICT = {"agent": {"PYTHONWARNINGS": "error::DeprecationWarning,error::PendingDeprecationWarning"}}
# Tests a suite must report PASSED by name, not only within its counts: Debian's own harness
# (autopkgtest -- null inside the root) running debian/tests on the DEB the suite built.
REQUIRED = {"packaging": ["tests/test_packaging.py::test_deb_autopkgtest_passes"]}


@dataclass
class Root:
    path: Path
    versions: Dict[str, str]


def summary(config: pytest.Config, line: str) -> None:
    """A line for the report's closing summary (tests/conftest.py prints them)."""
    config.stash.setdefault(SUITE_LINES, []).append(line)


@pytest.fixture(scope="module")
def root(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Root:
    require_root()
    require_tools(*trixie.TOOLS, "git", "ip")
    log = tmp_path_factory.mktemp("trixie-root") / "build.log"
    started = time.monotonic()
    try:
        stamp = trixie.TrixieRoot().ensure(log=log)
    except trixie.RootError as error:
        pytest.fail(f"the Debian 13 root could not be made: {error}", pytrace=False)
    path = trixie.TrixieRoot().path
    versions = trixie.versions(path)
    summary(request.config, f"Debian 13 root {path}: {stamp['action']} in "
                            f"{time.monotonic() - started:.0f} s")
    return Root(path, versions)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean copy of the tree, a git repository of its own (the packaging tests copy the
    tree with `git ls-files`, and this copy has no link to the checkout's .git)."""
    tree = copy_clean_tree(tmp_path_factory.mktemp("trixie-src"))
    for command in (["git", "init", "-q"], ["git", "add", "-A"]):
        subprocess.run(command, cwd=tree, check=True, capture_output=True, timeout=60)
    return tree


def processes_in(root: Path) -> List[int]:
    """PIDs of this machine whose root directory is `root`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "root")) == root.resolve():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def assert_nothing_left(root: Path) -> None:
    """No mount under the root, and no process in it once the kernel has finished killing
    what its PID namespace held (SIGKILLed processes take a moment to go)."""
    assert trixie.mounts_under(root) == []
    deadline = time.monotonic() + 10
    while processes_in(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_in(root) == []


def failures_of(output: str) -> str:
    """What a failed inner run says about its failures: pytest's FAILURES and ERRORS
    sections and the FAILED/ERROR lines of its summary (with -rap the summary's PASSED
    lines would fill any tail of the output), or the tail when there are none."""
    start = min((i for i in (output.find("= FAILURES ="), output.find("= ERRORS =")) if i >= 0),
                default=-1)
    summary_lines = [line for line in output.splitlines()
                     if line.startswith(("FAILED ", "ERROR "))]
    if start < 0:
        return output[-20000:]
    end = output.find("short test summary info", start)
    return output[start:end if end > 0 else None][:20000] + "\n" + "\n".join(summary_lines)


@pytest.mark.parametrize("suite", list(SUITES))
def test_suite_passes_on_debian_13(suite: str, root: Root, source: Path,
                                   request: pytest.FixtureRequest, tmp_path: Path) -> None:
    log = tmp_path / f"{suite}.log"
    command = ["python3", "-m", "pytest", "-p", "no:cacheprovider", "-rap", *SUITES[suite]]
    started = time.monotonic()
    try:
        trixie.enter(root.path, command, binds={source: SOURCE}, cwd=SOURCE, log=log,
                     env={"CI": "true" if IN_CI else "", **STRICT.get(suite, {})},
                     timeout=1500)
        failed = ""
    except trixie.RootError as error:
        failed = str(error)
    seconds = time.monotonic() - started
    output = log.read_text(errors="replace")
    header = next((line for line in output.splitlines() if line.startswith("versions: ")),
                  "versions: (none reported)")
    closing = output.rstrip().splitlines()[-1] if output.strip() else ""
    summary(request.config, f"Debian 13 {suite} suite: {closing.strip('= ')} "
                            f"[{seconds:.0f} s]; {header}")
    assert not failed, failures_of(output)
    counts = dict((word, int(n)) for n, word in re.findall(r"(\d+) (passed|skipped|failed)",
                                                            closing))
    assert counts.get("passed", 0) > 0 and counts.get("failed", 0) == 0, closing
    if IN_CI:
        assert counts.get("skipped", 0) == 0, output[-5000:]
    for nodeid in REQUIRED.get(suite, []):
        assert f"PASSED {nodeid}" in output, output[-5000:]
    assert_nothing_left(root.path)


def test_versions_are_debian_13(root: Root) -> None:
    # What the suites above prove: Python 3.13, Pacemaker 3, pcs 0.12, fence-agents 4.16.
    assert root.versions["python"].startswith("3.13."), root.versions
    assert root.versions["pacemaker"].startswith("3."), root.versions
    assert root.versions["pcs"].startswith("0.12."), root.versions
    assert root.versions["fence-agents-xenapi"].startswith("4.16."), root.versions


def interrupt_once_running(root: Path, processes: int, seen: List[List[str]]
                           ) -> threading.Thread:
    """Ctrl-C (SIGINT to this process: KeyboardInterrupt in the main thread) once `processes`
    processes run in `root`; what the host sees mounted under `root` then goes to `seen`."""
    def watch() -> None:
        deadline = time.monotonic() + 60
        while len(processes_in(root)) < processes and time.monotonic() < deadline:
            time.sleep(0.1)
        seen.append(trixie.mounts_under(root))
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


# A daemon in a session of its own (like corosync and pacemakerd), then a long wait.
DAEMON_AND_WAIT = ["sh", "-c", "setsid sleep 600 </dev/null >/dev/null 2>&1 & sleep 600"]


def test_interrupted_run_leaves_no_mount_and_no_process(root: Root) -> None:
    """A run stopped by Ctrl-C takes its daemons and mounts with it; on the host nothing of
    its mounts is visible even while it runs."""
    seen: List[List[str]] = []
    watcher = interrupt_once_running(root.path, 3, seen)
    with pytest.raises(KeyboardInterrupt):
        trixie.enter(root.path, DAEMON_AND_WAIT, timeout=120)
    watcher.join(timeout=10)
    assert seen == [[]]
    assert_nothing_left(root.path)


def test_timed_out_run_leaves_no_mount_and_no_process(root: Root) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        trixie.enter(root.path, DAEMON_AND_WAIT, timeout=5)
    assert_nothing_left(root.path)


def test_root_is_kept_between_runs(root: Root) -> None:
    stamp = trixie.TrixieRoot().ensure()
    assert stamp["action"] == "kept"


def test_archive_is_taken_from_apts_sources(tmp_path: Path) -> None:
    (tmp_path / "debian.sources").write_text(
        "Types: deb\n# a mirror\nURIs: http://mirror.example/debian/\n"
        "Suites: bookworm-updates bookworm\nComponents: main contrib\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://security.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n")
    (tmp_path / "a-security.sources").write_text(
        "Types: deb\nURIs: http://other.example/x\nSuites: bookworm-security\n"
        "Components: main\n")
    found = trixie.archive(tmp_path, tmp_path / "sources.list")
    assert found == trixie.Archive("http://mirror.example/debian",
                                   "/usr/share/keyrings/debian-archive-keyring.gpg")
    # the one-line format, when there is no deb822 source
    (tmp_path / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text(
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64] http://one.example/debian/ bookworm main\n")
    assert trixie.archive(tmp_path, tmp_path / "sources.list").uri == "http://one.example/debian"
    (tmp_path / "sources.list").write_text("")
    with pytest.raises(trixie.RootError):
        trixie.archive(tmp_path, tmp_path / "sources.list")
