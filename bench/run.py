#!/usr/bin/env python3
"""Side-by-side benchmark of fence_xenapi (installed the way its packages install it, and
this checkout's script) and Debian's fence_xenapi (package fence-agents) on the bundled XAPI
simulator, beside the floor (bench/floor.py: the least any Python client needs for the same
requests); writes bench/RESULTS.md. See bench/README.md.

    python3 bench/run.py            # sizes 10, 100, 1000, 5000 VMs; 0 and 20 ms per call
    python3 bench/run.py --quick    # sizes 10 and 1000, 3 runs, 20 ms only at 10 VMs
    python3 bench/run.py --sick-pool  # only the sick-pool case (bench/sick.py), spliced into
                                      # the report; the charts redrawn (bench/charts.py)

Stdlib only (Python >= 3.9); traffic only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import json
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import charts, sick  # noqa: E402
from tests.xapisim import SimServer, Simulator  # noqa: E402

BENCH = ROOT / "bench"
CHECKOUT = ROOT / "fence_xenapi.py"
FLOOR = BENCH / "floor.py"
DISTRO_LINK = Path("/usr/sbin/fence_xenapi")
FENCING_LIB = Path("/usr/share/fence/fencing.py")
# fence-agents' agent says fence_cxs in its description and imports its fencing library; this
# project's agent (which may sit at /usr/sbin/fence_xenapi while packaging tests run) does not.
DISTRO_MARKERS = (b"fence_cxs", b"from fencing import")

# ours: the agent installed as its packages install it (a launcher and the byte-compiled module);
# checkout: this checkout's script run directly; floor: bench/floor.py (metadata: importing
# lxml), the least any Python client needs. Tables show them in this order.
AGENTS = ("floor", "ours", "checkout", "distro")
AGENT_LABELS = {"floor": "floor", "ours": "ours (installed)", "checkout": "ours (checkout)",
                "distro": "distro"}
ACTIONS = ("metadata", "status", "monitor", "list", "list-status", "off", "on", "reboot")
SIZES = (10, 100, 1000, 5000)
LATENCIES_MS = (0.0, 20.0)
# HACKING.md's request budget of our agent (login and logout included).
BUDGET = {"status": 3, "monitor": 3, "list": 3, "list-status": 3, "on": 5, "off": 5,
          "reboot": 7, "metadata": 0}
CONSTANT_ACTIONS = ("status", "monitor", "on", "off", "reboot")
USERNAME, PASSWORD = "root", "secret"
PLUG = "vm-00001"  # Running in every pool populate() builds
# The VM's power state before each run, so that off, on and reboot do real work.
STATE_BEFORE = {"on": "Halted"}
TEMPLATES, SNAPSHOTS = 100, 3
DASH = "\u2013"  # en dash, for ranges


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------


def _numbers(text: str, kind: Callable[[str], Any]) -> List[Any]:
    try:
        return [kind(item) for item in re.split(r"[,\s]+", text.strip()) if item]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark fence_xenapi against Debian's fence_xenapi on the XAPI "
                    "simulator and write a Markdown report.")
    parser.add_argument("--sizes", type=lambda text: _numbers(text, int), default=None,
                        help="pool sizes in VMs, comma separated (default 10,100,1000,5000)")
    parser.add_argument("--runs", type=int, default=None,
                        help="runs per agent and case, alternating ours/distro (default 5)")
    parser.add_argument("--latency", type=lambda text: _numbers(text, float), default=None,
                        help="added latency per XAPI call in ms, comma separated (default 0,20)")
    parser.add_argument("--latency-max-size", type=int, default=None, metavar="VMS",
                        help="apply non-zero latencies only to pools up to this size")
    parser.add_argument("--actions", type=lambda text: _numbers(text, str), default=None,
                        help="actions, comma separated (default: " + ",".join(ACTIONS) + ")")
    parser.add_argument("--quick", action="store_true",
                        help="fast check: sizes 10,1000; 3 runs; 20 ms only at 10 VMs")
    parser.add_argument("--output", type=Path, default=BENCH / "RESULTS.md",
                        help="the Markdown report (default bench/RESULTS.md)")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write every run and the targets as JSON here")
    parser.add_argument("--timeout", type=float, default=180.0,
                        help="seconds before one run is killed (default 180)")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="an agent's runs of one case stop once they took this many "
                             "seconds together (at least one run; default 60)")
    parser.add_argument("--hosts", type=int, default=2, help="pool hosts (default 2)")
    parser.add_argument("--ours", type=Path, default=None,
                        help="our installed agent, a launcher such as /usr/sbin/fence_xenapi "
                             "(default: this checkout, meson-installed into a temporary prefix)")
    parser.add_argument("--checkout", type=Path, default=CHECKOUT,
                        help="our agent as a script (default: this checkout's fence_xenapi.py)")
    parser.add_argument("--distro", type=Path, default=None,
                        help="the distro agent (default: dpkg-divert --truename "
                             "/usr/sbin/fence_xenapi)")
    parser.add_argument("--distro-wait", type=float, default=600.0,
                        help="seconds to wait for a missing distro agent to come back "
                             "(default 600)")
    parser.add_argument("--sick-pool", action="store_true",
                        help="run only the sick-pool case (bench/sick.py: reboot through hung, "
                             "refusing and unnamed hosts), ours (the checkout, or --ours) "
                             "beside the distro agent; its section replaces the one in "
                             "--output, the rest of the report is kept")
    parser.add_argument("--no-sick-pool", action="store_true",
                        help="leave the sick-pool case out of a full run")
    parser.add_argument("--sick-timeout", type=float, default=20.0,
                        help="seconds before a sick-pool run is killed (default 20)")
    args = parser.parse_args(argv)
    quick = args.quick
    if args.sizes is None:
        args.sizes = [10, 1000] if quick else list(SIZES)
    if args.runs is None:
        args.runs = 3 if quick else 5
    if args.latency is None:
        args.latency = list(LATENCIES_MS)
    if args.latency_max_size is None and quick:
        args.latency_max_size = 100
    if args.actions is None:
        args.actions = list(ACTIONS)
    unknown = [action for action in args.actions if action not in ACTIONS]
    if unknown:
        parser.error(f"unknown actions: {', '.join(unknown)}")
    if args.runs < 1 or any(size < 1 for size in args.sizes):
        parser.error("--runs and --sizes must be positive")
    args.actions = [action for action in ACTIONS if action in args.actions]
    return args


# ---------------------------------------------------------------------------------------------
# Running programs (through bench/spawn.py: see there why)
# ---------------------------------------------------------------------------------------------


@dataclass
class Spawned:
    exit: int
    signal: int
    seconds: float
    cpu_seconds: float
    maxrss_kb: int
    timed_out: bool
    floor_kb: int
    stdout: str
    stderr: str


class Launcher:
    """The small process that spawns every program the benchmark measures."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-S", str(BENCH / "spawn.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self._count = 0
        self.floor_kb = 0

    def run(self, argv: Sequence[str], stdin: str = "", timeout: float = 600) -> Spawned:
        self._count += 1
        paths = {name: self.workdir / f"{self._count}.{name}"
                 for name in ("stdin", "stdout", "stderr")}
        paths["stdin"].write_text(stdin)
        request = {"argv": list(argv), "timeout": timeout,
                   **{name: str(path) for name, path in paths.items()}}
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("bench/spawn.py ended")
        reply = json.loads(line)
        if "error" in reply:
            raise OSError(f"cannot run {argv[0]}: {reply['error']}")
        texts = {name: paths[name].read_text(errors="replace")
                 for name in ("stdout", "stderr")}
        for path in paths.values():
            path.unlink()
        self.floor_kb = max(self.floor_kb, int(reply["floor_kb"]))
        return Spawned(int(reply["exit"]), int(reply["signal"]), float(reply["seconds"]),
                       float(reply["cpu_seconds"]), int(reply["maxrss_kb"]),
                       bool(reply["timed_out"]), int(reply["floor_kb"]), texts["stdout"],
                       texts["stderr"])

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(10)
        if self._process.stdout is not None:
            self._process.stdout.close()


def command_output(argv: Sequence[str]) -> str:
    """A short command's stdout, stripped; "" if it cannot run."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


# ---------------------------------------------------------------------------------------------
# The distro agent (other work on this machine may divert, replace or remove it for a while)
# ---------------------------------------------------------------------------------------------


def is_distro_agent(path: Path) -> bool:
    try:
        text = path.read_bytes()
    except OSError:
        return False
    return any(marker in text for marker in DISTRO_MARKERS) and FENCING_LIB.exists()


def resolve_distro(override: Optional[Path] = None) -> Optional[Path]:
    """fence-agents' fence_xenapi where it really is now (dpkg-divert moves it aside when this
    project's package is installed), or None if it is not there."""
    if override is not None:
        return override if is_distro_agent(override) else None
    truename = command_output(["dpkg-divert", "--truename", str(DISTRO_LINK)])
    path = Path(truename) if truename else DISTRO_LINK
    return path if is_distro_agent(path) else None


def wait_for_distro(override: Optional[Path], wait: float, log: Callable[[str], None]) -> Path:
    deadline = time.monotonic() + wait
    said = False
    while True:
        path = resolve_distro(override)
        if path is not None:
            if said:
                log(f"distro agent back at {path}")
            return path
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: fence-agents' fence_xenapi not found (looked at "
                             f"{override or DISTRO_LINK} and its diversion for {wait:.0f} s; "
                             "apt-get install fence-agents)")
        if not said:
            log("distro agent missing (package being reinstalled?): waiting")
            said = True
        time.sleep(5)


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    agent: str
    action: str
    size: int
    latency_ms: float
    seconds: float
    requests: int
    sessions_left: int
    maxrss_kb: int
    exit: int
    timed_out: bool
    problem: str = ""
    note: str = ""
    detail: str = ""  # the floor's list: {"fetch_seconds": ..., "bytes": ...}
    cpu_seconds: float = 0.0  # the run's own user + system CPU time


@dataclass
class Pool:
    sim: Simulator
    server: SimServer
    size: int
    plug_uuid: str
    composition: str


def build_pool(size: int, hosts: int) -> Pool:
    sim = Simulator()
    sim.populate(size, TEMPLATES, SNAPSHOTS, hosts)
    with sim.lock:
        records = list(sim.vms.values())
    control = sum(1 for vm in records if vm["is_control_domain"])
    snapshots = sum(1 for vm in records if vm["is_a_snapshot"])
    templates = sum(1 for vm in records if vm["is_a_template"] and not vm["is_a_snapshot"])
    real = len(records) - control - snapshots - templates
    if (real, control, templates, snapshots) != (size, hosts, TEMPLATES, min(SNAPSHOTS, size)):
        raise SystemExit(f"bench: the simulator built {real} VMs, {control} control domains, "
                         f"{templates} templates, {snapshots} snapshots for a {size}-VM pool "
                         f"with {hosts} hosts")
    del records
    gc.collect()
    gc.freeze()  # the pool lives until the next size: keep the collector off its records
    server = SimServer(sim, "127.0.0.1").start()
    composition = (f"{size} VMs (one in ten Halted), {templates} templates, {snapshots} "
                   f"snapshots, {control} control domains")
    return Pool(sim, server, size, sim.uuid(PLUG), composition)


def close_pool(pool: Pool) -> None:
    pool.sim.close()
    pool.server.stop()
    gc.unfreeze()
    gc.collect()


def agent_stdin(action: str, url: str) -> str:
    """What Pacemaker's fencer writes: metadata alone; monitor and list without a plug."""
    params = {"action": action}
    if action != "metadata":
        params.update(session_url=url, username=USERNAME, password=PASSWORD)
    if action in ("status", "off", "on", "reboot"):
        params["port"] = PLUG
    return "".join(f"{key}={value}\n" for key, value in params.items())


def check_outcome(run: Spawned, action: str, pool: Pool, agent: str = "ours") -> Tuple[str, str]:
    """(problem, note): a problem means the run did not do its job; a note is a flaw in its
    output that does not stop the job (e.g. a wrong status column)."""
    if run.timed_out:
        return "timed out", ""
    if run.exit != 0:
        first = (run.stderr.strip() or run.stdout.strip() or "no output").splitlines()[0]
        return f"exit {run.exit}: {first[:120]}", ""
    out = run.stdout
    if agent == "floor" and action in ("metadata", "list", "list-status"):
        return ("" if action == "metadata" or '"bytes"' in out else "no answer read"), ""
    if action == "metadata":
        return ("" if "<resource-agent" in out else "no metadata XML"), ""
    if action == "status":
        return ("" if out.strip() == "Status: ON" else f"printed {out.strip()[:60]!r}"), ""
    if action == "monitor":
        return "", ""
    if action in ("list", "list-status"):
        lines = out.splitlines()
        if len(lines) != pool.size or pool.plug_uuid not in out:
            return f"{len(lines)} lines for {pool.size} VMs", ""
        if action == "list-status":
            bad = [line for line in lines if line.rsplit(",", 1)[-1] not in ("ON", "OFF")]
            if bad:
                return "", (f"prints {bad[0].rsplit(',', 1)[-1]} instead of ON/OFF on "
                            f"{len(bad)} of {len(lines)} lines")
        return "", ""
    state = pool.sim.power_state(PLUG)
    wanted = "Halted" if action == "off" else "Running"
    if state != wanted:
        return f"VM {state} after {action}", ""
    if not any(uuid == pool.plug_uuid for uuid, _ in pool.sim.power_log()):
        return f"no power operation for {action}", ""
    return "", ""


class Bench:
    def __init__(self, args: argparse.Namespace, launcher: Launcher) -> None:
        self.args = args
        self.launcher = launcher
        self.runs: List[Run] = []
        self.distro: Optional[Path] = None
        self.composition = ""

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def ensure_distro(self) -> Path:
        """The distro agent, checked (path and marker) before each size and each run."""
        if self.distro is None or not is_distro_agent(self.distro):
            self.distro = wait_for_distro(self.args.distro, self.args.distro_wait, self.log)
        return self.distro

    def agent_argv(self, agent: str, action: str) -> List[str]:
        """The command that runs `agent` for `action` (parameters go on its stdin)."""
        if agent == "floor":
            python = agent_python(self.args.checkout)
            if action == "metadata":
                return [python, "-c", "import lxml.etree"]
            return [python, str(FLOOR)]
        if agent == "distro":
            return [str(self.ensure_distro())]
        return [str(self.args.ours if agent == "ours" else self.args.checkout)]

    def run_once(self, agent: str, action: str, pool: Pool, latency_ms: float) -> Run:
        sim = pool.sim
        for attempt in range(3):
            sim.set_power_state(PLUG, STATE_BEFORE.get(action, "Running"))
            sim.expire_sessions()
            sim.reset_counters()
            argv = self.agent_argv(agent, action)
            spawned = self.launcher.run(argv, agent_stdin(action, pool.server.url),
                                        self.args.timeout)
            requests, sessions = sim.total_requests(), sim.sessions_open()
            problem, note = check_outcome(spawned, action, pool, agent)
            if problem and agent == "distro" and attempt < 2 \
                    and not is_distro_agent(Path(argv[0])):
                self.log(f"distro agent changed under run ({problem}): run again")
                continue  # fence-agents was being removed or replaced: not the agent's fault
            break
        detail = spawned.stdout.strip() if agent == "floor" and action.startswith("list") \
            else ""
        return Run(agent, action, pool.size, latency_ms, spawned.seconds, requests, sessions,
                   spawned.maxrss_kb, spawned.exit, spawned.timed_out, problem, note, detail,
                   spawned.cpu_seconds)

    def run_case(self, action: str, pool: Pool, latency_ms: float) -> List[Run]:
        """`runs` runs per agent, interleaved (each round starts with the next agent, so that
        no agent always runs right after the same one); an agent stops early once its runs
        took `budget` seconds or one timed out."""
        spent = dict.fromkeys(AGENTS, 0.0)
        stopped = dict.fromkeys(AGENTS, False)
        done: List[Run] = []
        for round_number in range(self.args.runs):
            shift = round_number % len(AGENTS)
            order = AGENTS[shift:] + AGENTS[:shift]
            for agent in order:
                if stopped[agent]:
                    continue
                run = self.run_once(agent, action, pool, latency_ms)
                done.append(run)
                spent[agent] += run.seconds
                stopped[agent] = run.timed_out or spent[agent] >= self.args.budget
        self.runs.extend(done)
        return done

    def run_all(self) -> None:
        args = self.args
        for size in args.sizes:
            self.ensure_distro()
            self.log(f"building a pool of {size} VMs")
            pool = build_pool(size, args.hosts)
            self.composition = pool.composition
            try:
                for latency in args.latency:
                    if latency and args.latency_max_size is not None \
                            and size > args.latency_max_size:
                        continue
                    pool.sim.faults.latency = latency / 1000
                    for agent in AGENTS:  # warm-up, not counted: page cache, first connection
                        self.run_once(agent, "status", pool, latency)
                    for action in args.actions:
                        runs = self.run_case(action, pool, latency)
                        self.log(f"{latency:g} ms {size} VMs {action}: " + "; ".join(
                            f"{agent} {_median_text(runs, agent)}" for agent in AGENTS))
            finally:
                close_pool(pool)


def install_ours(workdir: Path, checkout: Path, python: str,
                 log: Callable[[str], None]) -> Path:
    """This checkout installed the way its packages install it (meson: the launcher, the
    module and its bytecode) into a temporary prefix; the launcher's path."""
    for tool in ("meson", "ninja"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} not found, needed to install ours (or give --ours)")
    build, prefix = workdir / "meson-build", workdir / "prefix"
    log(f"meson install of {checkout.parent} into {prefix}")
    for command in (["meson", "setup", str(build), str(checkout.parent), f"--prefix={prefix}",
                     f"-Dpython={python}"],
                    ["meson", "install", "-C", str(build), "--quiet"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                              check=False)
        if done.returncode != 0:
            raise SystemExit(f"bench: {' '.join(command)} failed:\n{done.stdout[-2000:]}"
                             f"{done.stderr[-2000:]}")
    launcher = prefix / "sbin" / "fence_xenapi"
    if not launcher.exists():
        raise SystemExit(f"bench: meson install made no {launcher}")
    return launcher


def module_dir_of(launcher: Path) -> Optional[Path]:
    """The directory a launcher imports the agent module from; None for a script."""
    found = re.search(r'^sys\.path\.insert\(0, "([^"]+)"\)$',
                      launcher.read_text(errors="replace"), re.M)
    return Path(found.group(1)) if found else None


def _median_text(runs: Sequence[Run], agent: str) -> str:
    mine = [run for run in runs if run.agent == agent]
    if not mine:
        return "-"
    median = statistics.median(run.seconds for run in mine)
    return (f"{fmt_seconds(median)} x{len(mine)}, {mine[-1].requests} req"
            + (f", PROBLEM {mine[-1].problem}" if mine[-1].problem else ""))


# ---------------------------------------------------------------------------------------------
# The why: start-up costs and imports, measured alone
# ---------------------------------------------------------------------------------------------


@dataclass
class Probe:
    label: str
    seconds: List[float] = field(default_factory=list)
    detail: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")


def agent_python(agent: Path) -> str:
    """The interpreter the agent's shebang names."""
    with open(agent, "rb") as script:
        first = script.readline().decode(errors="replace")
    words = first[2:].split() if first.startswith("#!") else []
    return words[0] if words else sys.executable


_IMPORT_LINE = re.compile(r"import time:\s*(\d+) \|\s*(\d+) \| ( *)(\S+)")


def _imports(stderr: str) -> Tuple[Dict[str, float], Dict[str, float]]:
    """From `-X importtime` output: the top-level imports with their cumulative seconds, and
    every module imported with its own (self) seconds."""
    top: Dict[str, float] = {}
    every: Dict[str, float] = {}
    for line in stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match is not None:
            every[match.group(4)] = int(match.group(1)) / 1e6
            if not match.group(3):
                top[match.group(4)] = int(match.group(2)) / 1e6
    return top, every


Imports = List[Tuple[str, float]]  # module, seconds; slowest first
ImportProbe = Dict[str, Dict[str, Imports]]  # by action, then agent


def _medians(samples: Dict[str, List[float]]) -> Imports:
    medians = [(name, statistics.median(values)) for name, values in samples.items()]
    return sorted(medians, key=lambda item: -item[1])


def probe_imports(bench: Bench, pool: Pool, runs: int) -> Tuple[ImportProbe, ImportProbe]:
    """What each agent imports for each action beyond the interpreter's own start-up (median
    of `runs` runs of `python -X importtime`, VM put where the action has work to do): the
    top-level imports with their cumulative time, and every module with its own time."""
    python = agent_python(bench.args.checkout)
    baseline_top, baseline = _imports(subprocess.run(
        [python, "-X", "importtime", "-c", "pass"], capture_output=True, text=True,
        timeout=60, check=False).stderr)
    tops: ImportProbe = {}
    modules: ImportProbe = {}
    for action in bench.args.actions:
        for agent in ("floor", "ours", "distro"):
            argv = bench.agent_argv(agent, action)
            if argv[0] != python:  # run the agent by its interpreter to pass -X importtime
                argv = [agent_python(Path(argv[0])), *argv]
            top_samples: Dict[str, List[float]] = {}
            samples: Dict[str, List[float]] = {}
            for _ in range(runs):
                pool.sim.set_power_state(PLUG, STATE_BEFORE.get(action, "Running"))
                done = subprocess.run([argv[0], "-X", "importtime", *argv[1:]],
                                      input=agent_stdin(action, pool.server.url),
                                      capture_output=True, text=True, timeout=120, check=False)
                top, every = _imports(done.stderr)
                for name, seconds in top.items():
                    if name not in baseline_top:
                        top_samples.setdefault(name, []).append(seconds)
                for name, seconds in every.items():
                    if name not in baseline:
                        samples.setdefault(name, []).append(seconds)
            tops.setdefault(action, {})[agent] = _medians(top_samples)
            modules.setdefault(action, {})[agent] = _medians(samples)
    return tops, modules


def probe_startup(bench: Bench) -> Dict[str, Probe]:
    """Start-up costs, each program alone, all interleaved so that they share conditions."""
    python = agent_python(bench.args.checkout)
    distro_dir = str(FENCING_LIB.parent)
    ours, checkout = str(bench.args.ours), str(bench.args.checkout)
    metadata = "action=metadata\n"
    commands: Dict[str, Tuple[str, List[str], str]] = {
        "python": (f"`{python} -c pass` (interpreter start-up)", [python, "-c", "pass"], ""),
        "lxml": (f"`{python} -c 'import lxml.etree'` (lxml alone: the metadata floor)",
                 [python, "-c", "import lxml.etree"], ""),
        "floor_imports": ("`import http.client, xmlrpc.client` (the floor client's imports)",
                          [python, "-c", "import http.client, xmlrpc.client"], ""),
        "distro_imports": ("`import fencing, XenAPI` (the distro agent's imports)",
                           [python, "-c", f"import sys; sys.path.append({distro_dir!r}); "
                                          "import fencing, XenAPI"], ""),
        "distro_metadata": ("distro `action=metadata`", [str(bench.ensure_distro())],
                            metadata),
        "ours_version": ("ours (installed) `-V` (start-up, loading the byte-compiled module, "
                         "reading the options)", [ours, "-V"], ""),
        "checkout_version": ("ours (checkout) `-V` (the same, compiling the script instead)",
                             [checkout, "-V"], ""),
        "ours_metadata": ("ours (installed) `action=metadata`", [ours], metadata),
        "checkout_metadata": ("ours (checkout) `action=metadata`", [checkout], metadata),
    }
    module_dir = module_dir_of(bench.args.ours)
    if module_dir is not None:
        commands["ours_module"] = (
            "loading our byte-compiled module alone (its imports and top-level code)",
            [python, "-c", f"import sys; sys.path.insert(0, {str(module_dir)!r}); "
                           "import fence_xenapi"], "")
    # Timed inside the interpreter: compile() of the script, as running it does every time.
    compile_code = ("import sys, time; source = open(sys.argv[1], 'rb').read(); "
                    "started = time.perf_counter(); compile(source, sys.argv[1], 'exec'); "
                    "print(time.perf_counter() - started)")
    commands["ours_compile"] = ("compiling our script (`compile()` timed in-process; what "
                                "the checkout pays on every run and the install does not)",
                                [python, "-c", compile_code, checkout], "")
    probes = {key: Probe(label) for key, (label, _, _) in commands.items()}
    for _ in range(max(bench.args.runs, 5)):
        for key, (_, argv, stdin) in commands.items():
            spawned = bench.launcher.run(argv, stdin)
            if spawned.exit != 0 or (key.endswith("_metadata")
                                     and "<resource-agent" not in spawned.stdout):
                continue
            probes[key].seconds.append(float(spawned.stdout) if key == "ours_compile"
                                       else spawned.seconds)
    return probes


# ---------------------------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------------------------


@dataclass
class Summary:
    runs: List[Run]

    @property
    def count(self) -> int:
        return len(self.runs)

    @property
    def median(self) -> float:
        return statistics.median(run.seconds for run in self.runs)

    @property
    def cpu(self) -> float:
        return statistics.median(run.cpu_seconds for run in self.runs)

    @property
    def low(self) -> float:
        return min(run.seconds for run in self.runs)

    @property
    def high(self) -> float:
        return max(run.seconds for run in self.runs)

    @property
    def requests(self) -> Tuple[int, int]:
        counts = [run.requests for run in self.runs if not run.timed_out] or \
            [run.requests for run in self.runs]
        return min(counts), max(counts)

    @property
    def sessions_left(self) -> int:
        return max(run.sessions_left for run in self.runs)

    @property
    def maxrss_kb(self) -> int:
        return max(run.maxrss_kb for run in self.runs)

    @property
    def timed_out(self) -> bool:
        return any(run.timed_out for run in self.runs)

    @property
    def problems(self) -> List[str]:
        return [run.problem for run in self.runs if run.problem]

    @property
    def notes(self) -> List[str]:
        return [run.note for run in self.runs if run.note]


Key = Tuple[float, str, int]  # latency ms, action, size


def summaries(runs: Sequence[Run]) -> Dict[Key, Dict[str, Summary]]:
    table: Dict[Key, Dict[str, List[Run]]] = {}
    for run in runs:
        table.setdefault((run.latency_ms, run.action, run.size), {}).setdefault(
            run.agent, []).append(run)
    return {key: {agent: Summary(items) for agent, items in by_agent.items()}
            for key, by_agent in table.items()}


def ratio(ours: Summary, other: Summary) -> float:
    return ours.median / other.median


def fmt_seconds(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    if abs(seconds) < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 100:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s"


def fmt_range(low: float, high: float) -> str:
    """min-max in one unit: ms below a second, else s."""
    if high < 1:
        return f"{low * 1000:.0f}{DASH}{high * 1000:.0f} ms"
    digits = 2 if high < 10 else 1 if high < 100 else 0
    return f"{low:.{digits}f}{DASH}{high:.{digits}f} s"


def fmt_ratio(value: float) -> str:
    if math.isnan(value):
        return "-"
    if value >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3f} (1/{1 / value:.0f})"


def time_cell(summary: Summary, runs_wanted: int, timeout: float) -> str:
    if summary.timed_out and summary.count == 1:
        text = f"> {timeout:.0f} s (timeout)"
    else:
        text = f"{fmt_seconds(summary.median)} ({fmt_range(summary.low, summary.high)})"
        if summary.timed_out:
            text += ", timeouts"
    if summary.count < runs_wanted:
        text += f", {summary.count} run" + ("s" if summary.count > 1 else "")
    if summary.problems:
        text = f"**FAILED {len(summary.problems)}/{summary.count}** " + text
    return text


def requests_text(summary: Summary) -> str:
    low, high = summary.requests
    text = str(low) if low == high else f"{low}{DASH}{high}"
    return ("≥ " + text + " (killed)") if summary.timed_out and summary.count == 1 else text


def floor_fetch(summary: Summary) -> Tuple[float, float]:
    """The floor's list runs: median seconds the pool took to send the answer, its MB."""
    answers = [json.loads(run.detail) for run in summary.runs if run.detail.startswith("{")]
    if not answers:
        return float("nan"), float("nan")
    return (statistics.median(answer["fetch_seconds"] for answer in answers),
            answers[0]["bytes"] / 1e6)


# ---------------------------------------------------------------------------------------------
# Targets: start-up and list time against the floor and the distro, the request budget and
# sessions left
# ---------------------------------------------------------------------------------------------

FLOOR_FACTOR = 1.2
# ours (installed) / distro, medians: (action, latency ms or None for every latency, limit).
DISTRO_TARGETS: Tuple[Tuple[str, Optional[float], float], ...] = (
    ("metadata", None, 0.65),
    ("status", 0.0, 0.85), ("off", 0.0, 0.85), ("on", 0.0, 0.85), ("reboot", 0.0, 0.85),
    ("status", 20.0, 0.9), ("off", 20.0, 0.7), ("reboot", 20.0, 0.6),
)
LIST_SIZE, LIST_RATIO = 5000, 0.1


@dataclass
class Target:
    name: str
    verdict: str  # met, missed, not measured
    measured: str
    why: str = ""


@dataclass
class Evidence:
    """What the report measured alone, to explain a missed target with numbers."""

    startup: Dict[str, Probe]
    imports: ImportProbe  # top-level imports, cumulative
    modules: ImportProbe  # every module, its own time

    def median(self, key: str) -> float:
        probe = self.startup.get(key)
        return probe.median if probe is not None and probe.seconds else float("nan")

    def import_gap(self, action: str) -> str:
        """The modules ours loads for `action` that the floor does not, and the reverse,
        with their own import times."""
        by_agent = self.modules.get(action, {})
        ours, floor = by_agent.get("ours", []), by_agent.get("floor", [])
        if not ours or not floor:
            return ""
        floor_names, ours_names = {name for name, _ in floor}, {name for name, _ in ours}
        extra = [(name, seconds) for name, seconds in ours if name not in floor_names]
        missing = [(name, seconds) for name, seconds in floor if name not in ours_names]
        text = (f"`-X importtime`: ours loads {len(extra)} modules the floor does not, "
                f"{fmt_seconds(sum(seconds for _, seconds in extra))} in all "
                f"({fmt_imports(extra)})")
        if missing:
            text += (f", the floor {len(missing)} that ours does not, "
                     f"{fmt_seconds(sum(seconds for _, seconds in missing))} "
                     f"({fmt_imports(missing)})")
        return text + " (each module's own time, inflated by the measurement)"

    def startup_split(self) -> str:
        parts = [("interpreter start-up", self.median("python")),
                 ("loading our byte-compiled module", self.median("ours_module")
                  - self.median("python")),
                 ("`-V` in all", self.median("ours_version"))]
        return ", ".join(f"{label} {fmt_seconds(value)}" for label, value in parts
                         if not math.isnan(value))


def fmt_imports(items: Sequence[Tuple[str, float]], limit: int = 6) -> str:
    if not items:
        return "nothing"
    shown = ", ".join(f"{name} {fmt_seconds(seconds)}" for name, seconds in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _cases(table: Dict[Key, Dict[str, Summary]], action: str,
           latency: Optional[float] = None) -> List[Tuple[Key, Dict[str, Summary]]]:
    return sorted(((key, value) for key, value in table.items()
                   if key[1] == action and (latency is None or key[0] == latency)),
                  key=lambda item: (item[0][0], item[0][2]))


def _have(value: Dict[str, Summary], *agents: str) -> bool:
    return all(agent in value for agent in agents)


def _groups(table: Dict[Key, Dict[str, Summary]], action: str,
            latency: Optional[float] = None) -> List[Tuple[str, Dict[str, Summary]]]:
    """What a target judges, labelled: for list and list-status, whose work grows with the
    pool, each latency and pool size apart; for the other actions, whose requests and answers
    do not, each latency with its runs pooled over every pool size (more runs per verdict:
    one busy moment on the machine moves it less)."""
    cases = _cases(table, action, latency)
    if action in ("list", "list-status"):
        return [(f"{key[0]:g} ms/{key[2]} VMs", value) for key, value in cases]
    groups = []
    for each in sorted({key[0] for key, _ in cases}):
        sizes = sorted({key[2] for key, _ in cases if key[0] == each})
        label = f"{each:g} ms/" + (f"{sizes[0]} VMs" if len(sizes) == 1
                                    else f"{len(sizes)} pool sizes")
        groups.append((label, pooled(table, each, action)))
    return groups


def target_constant(table: Dict[Key, Dict[str, Summary]]) -> Target:
    name = "status, monitor, on, off, reboot: a constant number of requests at every pool " \
           "size; monitor at most 3"
    parts: List[str] = []
    bad: List[str] = []
    sizes: set[int] = set()
    for action in CONSTANT_ACTIONS:
        counts: Dict[int, set[int]] = {}
        for key, value in _cases(table, action):
            if "ours" in value:
                low, high = value["ours"].requests
                counts.setdefault(key[2], set()).update({low, high})
        if not counts:
            continue
        sizes.update(counts)
        every = set().union(*counts.values())
        parts.append(f"{action} {'/'.join(map(str, sorted(every)))}")
        if len(every) != 1:
            bad.append(f"{action} varies: " + ", ".join(
                f"{'/'.join(map(str, sorted(c)))} at {size}" for size, c in sorted(counts.items())))
        if action == "monitor" and max(every) > 3:
            bad.append(f"monitor makes {max(every)} > 3")
    if not parts or len(sizes) < 2:
        return Target(name, "not measured", "needs at least two pool sizes")
    measured = "; ".join(parts) + f" requests at {', '.join(map(str, sorted(sizes)))} VMs"
    if bad:
        return Target(name, "missed", measured, "; ".join(bad))
    return Target(name, "met", measured)


def _ratios_against(rows: List[Tuple[str, Dict[str, Summary]]], other: str, limit: float
                    ) -> Tuple[str, List[Tuple[float, str, Dict[str, Summary]]]]:
    """Ours against `other` in each row: the measured ratios as text, and the rows whose ratio
    is over `limit` as (ratio, label, row)."""
    cells, missed = [], []
    for label, value in rows:
        value_ratio = ratio(value["ours"], value[other])
        cells.append(f"{fmt_ratio(value_ratio)} at {label}")
        if value_ratio > limit:
            missed.append((value_ratio, label, value))
    return "ratio " + ", ".join(cells), missed


def target_floor(table: Dict[Key, Dict[str, Summary]], action: str,
                 evidence: Evidence) -> Target:
    what = "`import lxml.etree`" if action == "metadata" else "the same requests by bench/floor.py"
    name = f"{action}: ours (installed) within {FLOOR_FACTOR}x of its floor ({what})"
    rows = [(label, value) for label, value in _groups(table, action)
            if _have(value, "ours", "floor")]
    if not rows:
        return Target(name, "not measured", f"no {action} runs")
    measured, missed = _ratios_against(rows, "floor", FLOOR_FACTOR)
    if not missed:
        return Target(name, "met", measured)
    _, label, value = max(missed, key=lambda item: item[0])
    ours, floor = value["ours"], value["floor"]
    allowed = FLOOR_FACTOR * floor.median
    why = (f"{len(missed)} of {len(rows)} cases miss it; worst at {label}: "
           f"ours {fmt_seconds(ours.median)} against the floor's {fmt_seconds(floor.median)} "
           f"({FLOOR_FACTOR}x is {fmt_seconds(allowed)}): {fmt_seconds(ours.median - allowed)} "
           "over")
    if action in ("list", "list-status"):
        fetch, size_mb = floor_fetch(floor)
        why += (f". The floor reads the {size_mb:.1f} MB answer without parsing it (the pool "
                f"takes {fmt_seconds(fetch)} to send it); ours reads it into VM records, "
                f"{fmt_seconds(ours.median - floor.median)} more: that reading is the gap "
                "(both start the same interpreter and make the same requests)")
    else:
        gap = evidence.import_gap(action)
        floor_imports = evidence.median("floor_imports") - evidence.median("python")
        why += f". Measured alone: {evidence.startup_split()}; " + (
            f"the floor's imports (http.client, xmlrpc.client) {fmt_seconds(floor_imports)}"
            if action != "metadata" else
            f"`import lxml.etree` {fmt_seconds(evidence.median('lxml'))} with start-up")
        if gap:
            why += f"; {gap}"
    return Target(name, "missed", measured, why)


def target_distro(table: Dict[Key, Dict[str, Summary]], action: str,
                  latency: Optional[float], limit: float) -> Target:
    when = "every latency" if latency is None else f"{latency:g} ms per call"
    name = f"{action}, {when}: ours (installed) at most {limit} of the distro's wall time"
    rows = [(label, value) for label, value in _groups(table, action, latency)
            if _have(value, "ours", "distro")]
    if not rows:
        return Target(name, "not measured", f"no {action} runs at {when}")
    measured, missed = _ratios_against(rows, "distro", limit)
    if not missed:
        return Target(name, "met", measured)
    worst_ratio, label, value = max(missed, key=lambda item: item[0])
    ours, distro = value["ours"], value["distro"]
    wanted = limit * distro.median
    why = (f"{len(missed)} of {len(rows)} cases miss it; worst at {label}: "
           f"ours {fmt_seconds(ours.median)} against the distro's {fmt_seconds(distro.median)} "
           f"(ratio {fmt_ratio(worst_ratio)}); the target needs {fmt_seconds(wanted)}, "
           f"{fmt_seconds(ours.median - wanted)} less")
    if "floor" in value:
        floor = value["floor"]
        floor_ratio = ratio(floor, distro)
        why += f". The floor takes {fmt_seconds(floor.median)} (ratio {fmt_ratio(floor_ratio)})"
        if floor_ratio > limit:
            why += (": on this machine not even the floor reaches the target, so no Python "
                    "agent making these requests can")
        else:
            why += (f": ours is {fmt_seconds(ours.median - floor.median)} above the floor "
                    f"(see the {action} floor target for where that goes)")
    return Target(name, "missed", measured, why)


def target_list(table: Dict[Key, Dict[str, Summary]], action: str) -> List[Target]:
    targets = []
    for key, value in _cases(table, action):
        latency, _, size = key
        if size != LIST_SIZE or not _have(value, "ours", "distro"):
            continue
        ours, distro = value["ours"], value["distro"]
        name = (f"{action} at {size} VMs, {latency:g} ms: at most 1/10 of the distro's wall "
                "time, peak RSS no higher than the distro's")
        value_ratio = ratio(ours, distro)
        bound = " (the distro run was killed: its real time is longer)" if distro.timed_out \
            else ""
        measured = (f"{fmt_seconds(ours.median)} vs {fmt_seconds(distro.median)}{bound}: "
                    f"ratio {fmt_ratio(value_ratio)}; peak RSS {ours.maxrss_kb / 1024:.1f} MB "
                    f"vs {distro.maxrss_kb / 1024:.1f} MB")
        why = []
        if value_ratio > LIST_RATIO:
            why.append(f"time: 1/10 of the distro's is {fmt_seconds(distro.median * LIST_RATIO)}"
                       f", ours takes {fmt_seconds(ours.median - distro.median * LIST_RATIO)} "
                       "more")
        if ours.maxrss_kb > distro.maxrss_kb:
            text = (f"memory: ours peaks {(ours.maxrss_kb - distro.maxrss_kb) / 1024:.1f} MB "
                    "above the distro")
            if "floor" in value:
                _, size_mb = floor_fetch(value["floor"])
                floor_mb = value["floor"].maxrss_kb / 1024
                text += (f"; the floor client, which holds the {size_mb:.1f} MB answer as one "
                         f"bytes object and parses nothing, peaks at {floor_mb:.1f} MB: ours "
                         + (f"holds {ours.maxrss_kb / 1024 - floor_mb:.1f} MB more than the "
                            "whole answer (the answer and what it parses it into)"
                            if ours.maxrss_kb / 1024 > floor_mb else
                            "stays below that, so it does not hold the whole answer; the rest "
                            "is the interpreter and what it imports and keeps"))
            why.append(text)
        targets.append(Target(name, "missed" if why else "met", measured, "; ".join(why)))
    if not targets:
        targets.append(Target(f"{action} at {LIST_SIZE} VMs: at most 1/10 of the distro's "
                              "wall time, peak RSS no higher", "not measured",
                              f"no {LIST_SIZE}-VM pool in this run"))
    return targets


def target_sessions(runs: Sequence[Run]) -> Target:
    name = "0 sessions left open by ours after any run"
    ours = [run for run in runs if run.agent in ("ours", "checkout")
            and run.action != "metadata"]
    if not ours:
        return Target(name, "not measured", "no runs")
    leaks = [run for run in ours if run.sessions_left]
    distro = [run for run in runs if run.agent == "distro" and run.action != "metadata"]
    measured = (f"ours left {sum(run.sessions_left for run in ours)} in {len(ours)} runs "
                f"(installed and checkout); the distro left "
                f"{sum(run.sessions_left for run in distro)} in {len(distro)} runs")
    if leaks:
        return Target(name, "missed", measured, "left open by: " + ", ".join(
            f"{run.agent} {run.action} at {run.size} VMs" for run in leaks[:5]))
    return Target(name, "met", measured)


def target_budget(runs: Sequence[Run]) -> Target:
    name = "(HACKING.md) request budget: status/monitor/list ≤ 3, on/off ≤ 5, reboot ≤ 7"
    ours = [run for run in runs if run.agent in ("ours", "checkout") and not run.timed_out]
    over = [run for run in ours if run.requests > BUDGET[run.action]]
    if not ours:
        return Target(name, "not measured", "no runs")
    worst = {action: max((run.requests for run in ours if run.action == action), default=0)
             for action in ACTIONS if action != "metadata"}
    measured = ", ".join(f"{action} {count}" for action, count in worst.items() if count)
    if over:
        return Target(name, "missed", measured, ", ".join(
            f"{run.agent} {run.action} {run.requests} at {run.size} VMs" for run in over[:5]))
    return Target(name, "met", measured + " (most in any run)")


def evaluate(runs: Sequence[Run], evidence: Evidence) -> List[Target]:
    table = summaries(runs)
    actions = [action for action in ACTIONS if any(key[1] == action for key in table)]
    targets = [target_floor(table, action, evidence) for action in actions]
    targets += [target_distro(table, action, latency, limit)
                for action, latency, limit in DISTRO_TARGETS if action in actions]
    for action in ("list", "list-status"):
        if action in actions:
            targets += target_list(table, action)
    return [*targets, target_constant(table), target_sessions(runs), target_budget(runs)]


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def machine_info(args: argparse.Namespace, distro: Optional[Path]) -> Dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    python = agent_python(args.checkout)
    commit = command_output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = command_output(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                            str(args.checkout)])
    git = f", git {commit}{' + local changes' if dirty else ''}" if commit else ""
    module_dir = module_dir_of(args.ours)
    installed = (f"launcher {args.ours}, byte-compiled module in {module_dir}" if module_dir
                 else str(args.ours))
    if args.installed_here:
        installed = f"meson install of this checkout into a temporary prefix: {installed}"
    return {
        "CPU": f"{cpu}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable)",
        "kernel": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "Python (agents)": f"{python}: {command_output([python, '--version'])}",
        "Python (harness, simulator)": f"{sys.executable}: {platform.python_version()}",
        "fence-agents": (command_output(["dpkg-query", "-W", "-f=${Version}", "fence-agents"])
                         or "not installed") + (f" ({distro})" if distro else ""),
        "ours (installed)": (command_output([str(args.ours), "-V"]) or "?")
        + f" ({installed}{git})",
        "ours (checkout)": (command_output([str(args.checkout), "-V"]) or "?")
        + f" ({args.checkout}{git})",
        "floor": f"bench/floor.py (http.client + xmlrpc.client, the same requests as ours); "
                 f"metadata: `{python} -c 'import lxml.etree'`",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def command_line(argv: Sequence[str]) -> str:
    return " ".join(["python3", "bench/run.py", *(shlex.quote(arg) for arg in argv)])


def write_report(out: IO[str], args: argparse.Namespace, argv: Sequence[str],
                 info: Dict[str, str], runs: Sequence[Run], targets: Sequence[Target],
                 evidence: Evidence, extra: Dict[str, str], composition: str) -> None:
    table = summaries(runs)
    w = out.write
    w("# Benchmark: fence_xenapi against Debian's fence_xenapi\n\n")
    w(f"Written by `{command_line(argv)}` (bench/run.py; see bench/README.md for how to read "
      "it). Rerun rather than edit.\n\n")
    w("| | |\n| --- | --- |\n")
    for label, text in {**info, **extra}.items():
        w(f"| {label} | {text} |\n")
    w(f"| pool | the simulator (tests/xapisim.py) in the harness process, plain HTTP on "
      f"127.0.0.1; per size: {composition} (largest shown) |\n")
    w(f"| runs | {args.runs} per agent and case, interleaved; an agent's runs of a case stop "
      f"after {args.budget:g} s in total (at least one run), and a run is killed after "
      f"{args.timeout:g} s |\n\n")
    latencies = sorted({key[0] for key in table})
    notes: List[str] = []
    for latency in latencies:
        w(f"## {latency:g} ms per XAPI call\n\n")
        w("| action | VMs | requests ours / distro | sessions left ours / distro | "
          + " | ".join(f"{AGENT_LABELS[agent]}: median (min{DASH}max)" for agent in AGENTS)
          + " | peak RSS floor / ours / distro | ours / floor | ours / distro |\n")
        w("| --- | ---: | ---: | ---: |" + " ---: |" * (len(AGENTS) + 3) + "\n")
        for action in ACTIONS:
            for key, value in _cases(table, action, latency):
                by_agent = {agent: value.get(agent) for agent in AGENTS}
                ours, distro = value.get("ours"), value.get("distro")
                cells = [action, str(key[2])]
                pair = [ours, distro]
                cells.append(" / ".join(requests_text(s) if s else "-" for s in pair))
                cells.append(" / ".join(str(s.sessions_left) if s else "-" for s in pair))
                for agent, summary in by_agent.items():
                    cell = time_cell(summary, args.runs, args.timeout) if summary else "-"
                    if summary and (summary.notes or summary.problems):
                        notes.append(f"{latency:g} ms, {action}, {key[2]} VMs, "
                                     f"{AGENT_LABELS[agent]}: "
                                     + (summary.problems or summary.notes)[0])
                        cell += f" [{len(notes)}]"
                    cells.append(cell)
                cells.append(" / ".join(f"{s.maxrss_kb / 1024:.1f} MB" if s else "-"
                                        for s in (value.get("floor"), ours, distro)))
                floor = value.get("floor")
                cells.append(fmt_ratio(ratio(ours, floor)) if ours and floor else "-")
                bound = "< " if distro is not None and distro.timed_out else ""
                cells.append(bound + fmt_ratio(ratio(ours, distro)) if ours and distro
                             else "-")
                w("| " + " | ".join(cells) + " |\n")
        w("\n")
    if notes:
        w("Notes:\n\n")
        for number, note in enumerate(notes, 1):
            w(f"{number}. {note}\n")
        w("\n")
    w("## Where the time goes\n\n")
    w(f"| measured alone | median (min{DASH}max) |\n| --- | ---: |\n")
    for probe in evidence.startup.values():
        if probe.seconds:
            detail = f"; {probe.detail}" if probe.detail else ""
            w(f"| {probe.label}{detail} | {fmt_seconds(probe.median)} "
              f"({fmt_range(min(probe.seconds), max(probe.seconds))}) |\n")
    if evidence.imports:
        w("\nWhat each imports beyond the interpreter's start-up, per action: the sum of its "
          "top-level imports, then the slowest (cumulative; `python3 -X importtime`, median "
          "of the runs, inflated by the measurement; ours is the installed launcher, whose "
          "import of the module fence_xenapi includes the module's top-level code).\n\n")
        w("| action | floor | ours (installed) | distro |\n| --- | --- | --- | --- |\n")
        for action, per_agent in evidence.imports.items():
            cells = [action]
            for agent in ("floor", "ours", "distro"):
                found = per_agent.get(agent, [])
                total = sum(seconds for _, seconds in found)
                cells.append(f"{fmt_seconds(total)}: {fmt_imports(found, 5)}")
            w("| " + " | ".join(cells) + " |\n")
    w("\n## Targets\n\n")
    w("| target | result | measured |\n| --- | --- | --- |\n")
    for target in targets:
        mark = {"met": "met", "missed": "**missed**"}.get(target.verdict, target.verdict)
        w(f"| {target.name} | {mark} | {target.measured} |\n")
    missed = [target for target in targets if target.why]
    if missed:
        w("\nWhy the missed ones are missed, measured:\n\n")
        for target in missed:
            w(f"- **{target.name}**: {target.why}.\n")
    w("\n## Summary\n\n")
    write_summary(out, table)


def pooled(table: Dict[Key, Dict[str, Summary]], latency: float,
           action: str) -> Dict[str, Summary]:
    """One Summary per agent over every size's runs of this action at this latency."""
    runs: Dict[str, List[Run]] = {}
    for key, value in table.items():
        if key[0] == latency and key[1] == action:
            for agent, summary in value.items():
                runs.setdefault(agent, []).extend(summary.runs)
    return {agent: Summary(items) for agent, items in runs.items()}


def write_summary(out: IO[str], table: Dict[Key, Dict[str, Summary]]) -> None:
    """The compact table bench/README.md shows: each latency at the largest pool measured
    with it."""
    latencies = sorted({key[0] for key in table})
    if not latencies:
        return
    largest = {latency: max(key[2] for key in table if key[0] == latency)
               for latency in latencies}
    out.write("Medians; ours = installed (launcher and byte-compiled module); ratios are ours "
              "over the floor and over the distro; requests per run at the largest pool "
              "(login and logout included); metadata pooled over every pool size.\n\n")
    head = ["action", "requests ours / distro"]
    for latency in latencies:
        head += [f"{latency:g} ms, {largest[latency]} VMs: floor / ours / checkout / distro",
                 "ours / floor", "ours / distro"]
    out.write("| " + " | ".join(head) + " |\n|" + " --- |" + " ---: |" * (len(head) - 1)
              + "\n")
    for action in ACTIONS:
        cells: List[str] = []
        requests = ""
        for latency in latencies:
            value = table.get((latency, action, largest[latency]), {})
            if action == "metadata":  # the same at every size: pool the sizes' runs
                value = pooled(table, latency, action)
            if not _have(value, "ours", "distro"):
                cells += ["-", "-", "-"]
                continue
            ours, distro = value["ours"], value["distro"]
            if not requests or largest[latency] == max(largest.values()):
                requests = f"{requests_text(ours)} / {requests_text(distro)}"
            times = [fmt_seconds(value[agent].median) if agent in value else "-"
                     for agent in AGENTS]
            if distro.timed_out:
                times[-1] = "> " + times[-1]
            floor = value.get("floor")
            cells += [" / ".join(times), fmt_ratio(ratio(ours, floor)) if floor else "-",
                      ("< " if distro.timed_out else "") + fmt_ratio(ratio(ours, distro))]
        if requests:
            out.write("| " + " | ".join([action, requests, *cells]) + " |\n")
    out.write("\nThe same runs' CPU time (user + system, from wait4), medians: what each "
              "program itself spends, without waiting for the pool; it moves far less than "
              "wall time when the machine is busy.\n\n")
    head = ["action"]
    for latency in latencies:
        head += [f"{latency:g} ms, {largest[latency]} VMs: floor / ours / checkout / distro",
                 "ours / floor", "ours / distro"]
    out.write("| " + " | ".join(head) + " |\n|" + " --- |" + " ---: |" * (len(head) - 1)
              + "\n")
    for action in ACTIONS:
        cells = []
        for latency in latencies:
            value = table.get((latency, action, largest[latency]), {})
            if action == "metadata":
                value = pooled(table, latency, action)
            if not _have(value, "ours", "distro", "floor"):
                cells += ["-", "-", "-"]
                continue
            cpu = {agent: value[agent].cpu for agent in AGENTS if agent in value}
            cells += [" / ".join(fmt_seconds(cpu[agent]) if agent in cpu else "-"
                                 for agent in AGENTS),
                      fmt_ratio(cpu["ours"] / cpu["floor"]) if cpu["floor"] else "-",
                      fmt_ratio(cpu["ours"] / cpu["distro"]) if cpu["distro"] else "-"]
        if any(cell != "-" for cell in cells):
            out.write("| " + " | ".join([action, *cells]) + " |\n")


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def run_sick(bench: Bench, ours: Path, runs: int) -> List[sick.SickRun]:
    """The sick-pool case with `ours` beside the distro agent (bench/sick.py)."""
    def argv_of(agent: str) -> List[str]:
        return [str(bench.ensure_distro())] if agent == "distro" else [str(ours)]

    return sick.run_sick_pool(bench.launcher.run, argv_of, runs, bench.args.sick_timeout,
                              bench.log)


def write_sick(args: argparse.Namespace, argv: Sequence[str], results: List[sick.SickRun],
               load: str) -> None:
    """Splice the sick-pool section into the report and redraw the charts beside it."""
    report = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
    section = sick.section(results, args.sick_timeout, load,
                           command_line(argv))
    args.output.write_text(sick.splice(report, section), encoding="utf-8")
    for path in charts.draw(args.output):
        print(f"drew {path}", file=sys.stderr)


def main_sick(args: argparse.Namespace, argv: Sequence[str]) -> int:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="fence-bench-") as workdir:
        launcher = Launcher(Path(workdir))
        try:
            bench = Bench(args, launcher)
            bench.ensure_distro()
            results = run_sick(bench, args.ours or args.checkout, args.runs)
        finally:
            launcher.close()
    load = f"{load_before:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
    write_sick(args, argv, results, load)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.sick_pool:
        return main_sick(args, argv)
    started = time.monotonic()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="fence-bench-") as workdir:
        launcher = Launcher(Path(workdir))  # first, while this process is still small
        try:
            bench = Bench(args, launcher)
            args.installed_here = args.ours is None
            if args.ours is None:
                args.ours = install_ours(Path(workdir), args.checkout,
                                         agent_python(args.checkout), bench.log)
            bench.ensure_distro()
            info = machine_info(args, bench.distro)
            checkout_digest = file_digest(args.checkout)
            bench.log(f"ours {args.ours}, checkout {args.checkout}, distro {bench.distro}; "
                      f"sizes {args.sizes}, latencies {args.latency} ms, {args.runs} runs")
            bench.run_all()
            bench.log("start-up probes")
            startup = probe_startup(bench)
            bench.log("import probes")
            pool = build_pool(10, args.hosts)
            try:
                imports, modules = probe_imports(bench, pool, 3 if args.quick else 5)
            finally:
                close_pool(pool)
            sick_runs = []
            if not args.no_sick_pool:
                bench.log("sick pool")
                sick_runs = run_sick(bench, args.ours, args.runs)
            floor_kb = launcher.floor_kb
        finally:
            launcher.close()
    evidence = Evidence(startup, imports, modules)
    targets = evaluate(bench.runs, evidence)
    if file_digest(args.checkout) != checkout_digest:
        info["ours (checkout)"] += " **changed during the run: rerun**"
    minutes = (time.monotonic() - started) / 60
    extra = {
        "load average": f"{load_before[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the "
                        f"end; the whole run took {minutes:.1f} min",
        "peak RSS floor": f"{floor_kb / 1024:.1f} MB (the launcher's own; a child cannot "
                          "report less, see bench/spawn.py)",
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as out:
        write_report(out, args, argv, info, bench.runs, targets, evidence, extra,
                     bench.composition)
    if args.json is not None:
        args.json.write_text(json.dumps({
            "info": {**info, **extra}, "argv": argv,
            "runs": [asdict(run) for run in bench.runs],
            "targets": [asdict(target) for target in targets],
            "startup": {key: asdict(probe) for key, probe in startup.items()},
            "imports": imports,
            "modules": modules,
            "floor_kb": floor_kb,
            "sick_pool": [asdict(run) for run in sick_runs],
        }, indent=1) + "\n")
    if sick_runs:
        write_sick(args, argv, sick_runs, extra["load average"])
    bench.log(f"wrote {args.output} ({minutes:.1f} min)")
    for target in targets:
        print(f"{target.verdict:>12}: {target.name}: {target.measured}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
