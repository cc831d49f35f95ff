"""The sick-pool case of bench/run.py: time to `reboot` through a pool whose first listed
hosts are sick, ours (the session_url list, raced) beside the distro agent (one URL: the
first listed host, as fence-agents' fence_xenapi takes only one).

Four hosts on 127.0.0.1-4 (tests/xapisim.py SimHandle.pool), host1 the master; the VM runs
there. The sick hosts (host2..) are listed first, as by someone who did not know which host
would be master on the day the pool broke, then the master:

- healthy: only the master listed (the distro agent gets the same URL);
- N hung: N hosts that accept the connection and never answer (a wedged xapi, a black-holed
  route), then the master;
- 3 refusing: three hosts that refuse connections, then the master;
- dead name server: the first URL names the pool by DNS and the name server never answers
  (glibc waits timeout:5 x attempts:2), then the master's address. The agent runs in a mount
  namespace of its own whose /etc/resolv.conf names a silent server on 127.0.0.154 (root and
  unshare(1) needed; otherwise the case is left out).

Stdlib only; traffic only to 127.0.0.0/8.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Tuple

from tests.xapisim import SimHandle

PLUG = "vm-running"  # resident on host1, the master
USERNAME, PASSWORD = "root", "secret"
# tests/test_degraded.py's silent name server is on 127.0.0.153: the bench takes the first
# free one of these, so that both can run at once.
SILENT_DNS = tuple(f"127.0.0.{number}" for number in range(154, 164))
SICK_AGENTS = ("ours", "distro")


@dataclass(frozen=True)
class SickCase:
    name: str
    hung: int = 0
    refusing: int = 0
    dead_dns: bool = False

    @property
    def sick_hosts(self) -> List[str]:
        return [f"host{number}" for number in range(2, self.hung + self.refusing + 2)]


CASES = (SickCase("healthy"), SickCase("1 hung", hung=1), SickCase("2 hung", hung=2),
         SickCase("3 hung", hung=3), SickCase("3 refusing", refusing=3),
         SickCase("dead name server", dead_dns=True))


class Outcome(Protocol):
    """What bench/run.py's Launcher.run returns (the fields used here)."""

    exit: int
    seconds: float
    timed_out: bool
    stdout: str
    stderr: str


Runner = Callable[[List[str], str, float], Outcome]


@dataclass
class SickRun:
    case: str
    agent: str
    seconds: float
    exit: int
    timed_out: bool
    requests: int
    sessions_left: int
    fenced: bool
    problem: str = ""


def session_urls(pool: SimHandle, case: SickCase) -> List[str]:
    """The session_url hosts in the order listed: the sick ones, then the master."""
    urls = [pool.url_of(host) for host in case.sick_hosts]
    if case.dead_dns:
        master = pool.url_of("host1")
        urls.append(master.replace("127.0.0.1", "pool.fx-bench.invalid", 1))
    return [*urls, pool.url_of("host1")]


def stdin_for(urls: Sequence[str]) -> str:
    params = {"action": "reboot", "port": PLUG, "username": USERNAME, "password": PASSWORD,
              "session_url": ",".join(urls)}
    return "".join(f"{key}={value}\n" for key, value in params.items())


def in_namespace(argv: Sequence[str], resolv: Path) -> List[str]:
    """argv in a mount namespace of its own that sees `resolv` as /etc/resolv.conf."""
    return [shutil.which("unshare") or "unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"', "sh", str(resolv),
            *argv]


def set_sick(pool: SimHandle, case: SickCase, sick: bool) -> None:
    for number, host in enumerate(case.sick_hosts):
        if sick:
            pool.sim.host_down(host, "hang" if number < case.hung else "refuse")
        else:
            pool.sim.host_up(host)


def one_run(run: Runner, pool: SimHandle, case: SickCase, agent: str,
            argv: List[str], timeout: float, resolv: Path) -> SickRun:
    """One reboot; the pool is reset before, its counters read after."""
    pool.sim.set_power_state(PLUG, "Running")
    pool.sim.expire_sessions()
    pool.sim.reset_counters()
    urls = session_urls(pool, case)
    if agent == "distro":
        urls = urls[:1]  # fence-agents' fence_xenapi takes one URL
    if case.dead_dns:
        argv = in_namespace(argv, resolv)
    spawned = run(argv, stdin_for(urls), timeout)
    ops = [op for vm, op in pool.sim.power_log() if vm == pool.uuid(PLUG)]
    fenced = spawned.exit == 0 and ops == ["hard_shutdown", "start"]
    problem = ""
    if spawned.timed_out:
        problem = f"killed after {timeout:g} s"
    elif not fenced:
        text = (spawned.stderr.strip() or spawned.stdout.strip() or "no output").splitlines()[-1]
        problem = f"exit {spawned.exit}: {text[:100]}"
    return SickRun(case.name, agent, spawned.seconds, spawned.exit, spawned.timed_out,
                   pool.sim.total_requests(), pool.sim.sessions_open(), fenced, problem)


class SilentNameServer:
    """A UDP socket on port 53 of a free SILENT_DNS address, reading and answering nothing."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for address in SILENT_DNS:
            try:
                self.sock.bind((address, 53))
                break
            except OSError:
                continue
        else:
            self.sock.close()
            raise SystemExit("bench: no free address for the silent name server")
        self.address = address

    def close(self) -> None:
        self.sock.close()


def can_use_namespaces() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None


def run_sick_pool(run: Runner, argv_of: Callable[[str], List[str]], runs: int,
                  timeout: float, log: Callable[[str], None]) -> List[SickRun]:
    """Every case, `runs` runs per agent interleaved; an agent's runs of a case stop after one
    that was killed (a hang is a hang)."""
    results: List[SickRun] = []
    cases = [case for case in CASES if not case.dead_dns or can_use_namespaces()]
    dns: Optional[SilentNameServer] = SilentNameServer() \
        if any(case.dead_dns for case in cases) else None
    with tempfile.TemporaryDirectory(prefix="fence-bench-sick-") as workdir, \
            SimHandle.pool(hosts=4) as pool:
        resolv = Path(workdir) / "resolv.conf"
        server = dns.address if dns is not None else SILENT_DNS[0]
        resolv.write_text(f"nameserver {server}\noptions timeout:5 attempts:2\n")
        try:
            for case in cases:
                set_sick(pool, case, True)
                try:
                    results += run_case(run, argv_of, pool, case, runs, timeout, resolv)
                finally:
                    set_sick(pool, case, False)
                log("sick pool, " + case.name + ": " + "; ".join(
                    f"{agent} {median_text(results, case.name, agent)}"
                    for agent in SICK_AGENTS))
        finally:
            if dns is not None:
                dns.close()
    return results


def run_case(run: Runner, argv_of: Callable[[str], List[str]],
             pool: SimHandle, case: SickCase, runs: int, timeout: float,
             resolv: Path) -> List[SickRun]:
    done: List[SickRun] = []
    stopped = dict.fromkeys(SICK_AGENTS, False)
    for round_number in range(runs):
        order = SICK_AGENTS if round_number % 2 == 0 else SICK_AGENTS[::-1]
        for agent in order:
            if stopped[agent]:
                continue
            result = one_run(run, pool, case, agent, argv_of(agent), timeout, resolv)
            done.append(result)
            stopped[agent] = result.timed_out
    return done


def median_text(results: Sequence[SickRun], case: str, agent: str) -> str:
    mine = [r for r in results if r.case == case and r.agent == agent]
    if not mine:
        return "-"
    return f"{statistics.median(r.seconds for r in mine):.2f} s x{len(mine)}" + (
        f" ({mine[-1].problem})" if mine[-1].problem else "")


# ---------------------------------------------------------------------------------------------
# The report's section
# ---------------------------------------------------------------------------------------------

SECTION = "## Sick pool"
NOTE = ("Ours through N hung hosts: N \u00d7 250 ms (the login race's stagger), plus up to "
        "1 s in which a hung host that took the password may still answer (its session would "
        "be logged out); that wait overlaps the action, which takes 0.1 s here and seconds on "
        "a real pool. Before the race each hung host cost login_timeout (10 s), the dashed "
        "line. The distro agent takes one URL and sets no timeout: a hung first host holds "
        "it until it is killed, a refusing one or a dead name server fails it.")


def _cell(mine: Sequence[SickRun]) -> str:
    if not mine:
        return "-"
    seconds = sorted(r.seconds for r in mine)
    text = (f"{statistics.median(seconds):.2f} s ({seconds[0]:.2f}\u2013{seconds[-1]:.2f} s)"
            if len(seconds) > 1 else f"{seconds[0]:.2f} s")
    failed = [r for r in mine if not r.fenced]
    if failed:
        text += f" **not fenced**: {failed[-1].problem}"
    return text.replace("|", "\\|")


def section(results: Sequence[SickRun], timeout: float, load: str, command: str) -> str:
    """The Markdown section, with a machine-readable table the charts read."""
    lines = [SECTION, "",
             f"Written by `{command}` (bench/sick.py): `reboot` of one VM through a pool of "
             "four hosts whose first listed hosts are sick, at the default settings "
             "(login_timeout 10 s). Ours gets the session_url list (the sick hosts, then the "
             "master); the distro agent takes one URL, so it gets the first one listed (the "
             f"master alone when healthy). A run is killed after {timeout:g} s (the distro "
             "agent sets no timeout on a hung host). Medians (min\u2013max) of the runs; "
             "requests and sessions left on the pool are the last run's.", "",
             f"The machine was shared with other work while this ran (load: {load}): "
             "absolute times are noisy, the differences are not.", "",
             "| case | hung listed first | ours: time | distro: time | requests ours / distro "
             "| sessions left ours / distro |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for case in CASES:
        ours = [r for r in results if r.case == case.name and r.agent == "ours"]
        distro = [r for r in results if r.case == case.name and r.agent == "distro"]
        if not ours and not distro:
            continue
        requests = " / ".join(str(m[-1].requests) if m else "-" for m in (ours, distro))
        sessions = " / ".join(str(m[-1].sessions_left) if m else "-" for m in (ours, distro))
        hung = "-" if case.refusing or case.dead_dns else str(case.hung)
        lines.append(f"| {case.name} | {hung} | "
                     f"{_cell(ours)} | {_cell(distro)} | {requests} | {sessions} |")
    lines += ["", NOTE, "", "![Time to reboot against hung hosts listed before the master]"
              "(sick-pool.svg)", "", "On a healthy pool, against pool size (the 0 ms table "
              "above):", "", "![Time against pool size](pool-size-time.svg)",
              "![Requests against pool size](pool-size-requests.svg)", ""]
    return "\n".join(lines) + "\n"


def splice(report: str, new_section: str) -> str:
    """`report` with its sick-pool section replaced by `new_section` (or appended)."""
    start = report.find(SECTION + "\n")
    if start < 0:
        return report.rstrip("\n") + "\n\n" + new_section
    end = report.find("\n## ", start + len(SECTION))
    tail = report[end + 1:] if end >= 0 else ""
    return report[:start] + new_section + ("\n" + tail if tail else "")


def medians(results: Sequence[SickRun]) -> Dict[Tuple[str, str], Tuple[float, bool]]:
    """(case, agent) -> (median seconds, every run fenced)."""
    table: Dict[Tuple[str, str], Tuple[float, bool]] = {}
    for case in CASES:
        for agent in SICK_AGENTS:
            mine = [r for r in results if r.case == case.name and r.agent == agent]
            if mine:
                table[(case.name, agent)] = (statistics.median(r.seconds for r in mine),
                                             all(r.fenced for r in mine))
    return table
