"""Shared helpers for the test suite: where things are, how to run the agent as Pacemaker
does (a subprocess fed on stdin, or with command-line options), against a simulated pool in
either input style, the checks every run ends with (exit code, one-line errors, no session
left open), the one time `MARGIN`, and tool checks that skip locally but fail under CI=true."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, Sequence, Union

import pytest

if TYPE_CHECKING:
    from tests.xapisim import SimHandle

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "fence_xenapi.py"
DISTRO_AGENT = Path("/usr/sbin/fence_xenapi")
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _missing(what: str, remedy: str = "scripts/install-deps.sh installs it") -> None:
    """Skip a test whose prerequisite is absent, except in CI where that is a failure."""
    message = f"{what} ({remedy})"
    if IN_CI:
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


def require(present: bool, what: str,
            remedy: str = "scripts/install-deps.sh installs it") -> None:
    """Skip unless `present` (`what` names the missing prerequisite, `remedy` how to get it);
    under CI=true, fail."""
    if not present:
        _missing(what, remedy)


def require_tools(*names: str) -> None:
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        _missing("missing tools: " + ", ".join(missing))


def require_root() -> None:
    if os.geteuid() != 0:
        _missing("this test needs root")


def require_path(path: Union[str, Path]) -> None:
    if not Path(path).exists():
        _missing(f"missing {path}")


def meson_version() -> str:
    """The project's version, read from meson.build (what `-V` shows, installed)."""
    found = re.search(r"version\s*:\s*'([^']+)'", (ROOT / "meson.build").read_text())
    assert found, "meson.build names no version"
    return found.group(1)


@dataclass
class AgentRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def stdin_text(params: Mapping[str, object]) -> str:
    """Render parameters the way Pacemaker's fencer writes them: one key=value per line."""
    return "".join(f"{key}={value}\n" for key, value in params.items())


def run_agent(
    args: Sequence[str] = (),
    stdin: Union[str, Mapping[str, object], None] = None,
    *,
    agent: Union[str, Path] = AGENT,
    timeout: float = 120,
    env: Optional[Mapping[str, str]] = None,
) -> AgentRun:
    """Run the agent as its own executable (shebang and all), like pacemaker-fenced does."""
    text = stdin_text(stdin) if isinstance(stdin, Mapping) else (stdin or "")
    started = time.monotonic()
    proc = subprocess.run(
        [str(agent), *args],
        input=text,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(env) if env is not None else None,
        check=False,
    )
    return AgentRun(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


# --- running the agent on a simulated pool, and the checks every run ends with ---------------

# Pacemaker writes parameters on stdin; people and scripts use getopt options.
STYLES = ("stdin", "cli")
# A VM is named by its name label, its UUID, or its UUID in upper case (XAPI's are lower).
IDENTS = ("name", "uuid", "UUID")
# Short timeouts keep failure tests fast; every bound in the agent suite is derived from them.
LOGIN_TIMEOUT = 2
POWER_TIMEOUT = 3
# The one slack every time bound of the suite adds to the agent's own timeouts: start-up of a
# Python process on a loaded 2-core machine. A bound catches a hang or a missed deadline
# (seconds apart from the right answer), never speed.
MARGIN = 2.0


def vm_id(handle: SimHandle, name: str, ident: str) -> str:
    """How the test names VM `name`: "name", "uuid" or "UUID" (upper case)."""
    if ident == "name":
        return name
    uuid = handle.uuid(name)
    return uuid.upper() if ident == "UUID" else uuid


def real_vms(handle: SimHandle) -> dict[str, tuple[str, str]]:
    """uuid -> (name, power state) of every real VM in the pool, from the simulator itself."""
    return {
        record["uuid"]: (record["name_label"], record["power_state"])
        for record in handle.sim.vm_records()
        if not (record["is_a_template"] or record["is_a_snapshot"]
                or record["is_control_domain"])
    }


def invoke(handle: SimHandle, style: str, action: str, **params: Optional[str]) -> AgentRun:
    """Run the agent on `handle`'s pool with `action` and `params` (stdin names; None drops a
    default), through stdin or through the command line."""
    overrides: dict[str, Optional[str]] = {"action": action, **params}
    if style == "stdin":
        return run_agent(stdin=handle.params(**overrides))
    return run_agent(handle.cli(**overrides))


def start_agent(params: Mapping[str, object]) -> subprocess.Popen[str]:
    """Start the agent in the background with `params` on stdin, for tests that act on it while
    it runs (signals, the process list). The caller waits for it or kills it."""
    with tempfile.TemporaryFile("w+") as stdin:
        stdin.write(stdin_text(params))
        stdin.seek(0)
        return subprocess.Popen([str(AGENT)], stdin=stdin, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll `condition` until it holds; fail the test after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.02)


def assert_one_error(run: AgentRun, *mentions: str) -> str:
    """Exit 1 with exactly one `ERROR: ` line on stderr (no traceback) holding `mentions`."""
    assert run.returncode == 1, run
    assert "Traceback" not in run.stderr, run
    assert len(run.stderr_lines) == 1, run
    line = run.stderr_lines[0]
    assert line.startswith("ERROR: ") and len(line) > len("ERROR: "), run
    for text in mentions:
        assert text in line, (text, run)
    return line


def assert_failed(handle: SimHandle, run: AgentRun, *mentions: str,
                  within: Optional[float] = None) -> str:
    """A failed run: one-line error, no success claimed, no session left open, in time."""
    line = assert_one_error(run, *mentions)
    assert "Success" not in run.stdout, run
    assert handle.sessions_open() == 0
    if within is not None:
        assert run.seconds <= within, run
    return line


def assert_succeeded(handle: SimHandle, run: AgentRun, stdout: str, *, budget: int,
                     returncode: int = 0) -> None:
    """A run that printed exactly `stdout` (one line), stayed within its request budget and
    logged out."""
    assert run.returncode == returncode, run
    assert run.stdout.splitlines() == [stdout], run
    assert "Traceback" not in run.stderr, run
    assert handle.total_requests() <= budget, handle.requests()
    assert handle.sessions_open() == 0



def agent_code_origin(launcher: Union[str, Path], python: str = "/usr/bin/python3") -> str:
    """Where an installed launcher's agent module was loaded from, as `python -v` reports it:
    its bytecode cache (.../__pycache__/fence_xenapi.cpython-3XY.pyc) when that is there and
    current, else the source (.../fence_xenapi.py), compiled on this very run."""
    done = subprocess.run([python, "-v", str(launcher), "-V"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.findall(r"^# code object from '?([^'\n]*fence_xenapi[^'\n]*?)'?$", done.stderr,
                       re.M)
    assert found, f"{launcher} did not import the module fence_xenapi"
    return found[-1]


def bytecode_of(module: Path) -> Path:
    """The bytecode cache the agent's interpreter (Debian's python3, that of this test run's
    venv) uses for `module`."""
    return module.parent / "__pycache__" / f"{module.stem}.{sys.implementation.cache_tag}.pyc"


def launcher_for(launcher: Path, module_dir: Path, workdir: Path) -> Path:
    """A copy of an installed launcher that imports the agent module from `module_dir` (an
    unpacked package, a DESTDIR) instead of the directory it names, to run it there."""
    text = launcher.read_text()
    named = re.findall(r'^sys\.path\.insert\(0, "([^"]+)"\)$', text, re.M)
    assert len(named) == 1, text
    copy = workdir / launcher.name
    copy.write_text(text.replace(f'"{named[0]}"', f'"{module_dir}"'))
    copy.chmod(0o755)
    return copy


# --- what a suite ran with (the report header and the Debian 13 suites' summary lines) -------

# The Debian packages whose versions decide what a suite proves: the cluster stack, the peer
# agent and the package tools.
# Debian 13 ships fence_xenapi in a package of its own, fence-agents-xenapi.
REPORTED_PACKAGES = ("pacemaker", "corosync", "pcs", "fence-agents", "fence-agents-xenapi",
                     "python3-lxml", "debhelper", "lintian")
SUITE_LINES = pytest.StashKey[List[str]]()


def os_release() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.partition("=")[2].strip().strip('"')
    return "unknown system"


def package_versions(names: Sequence[str] = REPORTED_PACKAGES) -> Dict[str, str]:
    """{package: version} for those of `names` that dpkg knows as installed."""
    if shutil.which("dpkg-query") is None:
        return {}
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Status} ${Version}\\n",
                           *names], capture_output=True, text=True, check=False, timeout=60)
    found = {}
    for line in proc.stdout.splitlines():
        name, status, version = [*line.split(" ", 2), "", ""][:3]
        if status == "installed":
            found[name] = version
    return found


def environment_line() -> str:
    """One line naming the system, the Python running the suite and the packages it tests
    with, e.g. `Debian GNU/Linux 12 (bookworm): Python 3.11.2, pacemaker 2.1.5-1+deb12u1, ...`."""
    parts = [f"Python {platform.python_version()}"]
    parts += [f"{name} {version}" for name, version in package_versions().items()]
    return f"{os_release()}: " + ", ".join(parts)
