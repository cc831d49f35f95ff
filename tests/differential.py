"""Side by side with fence-agents' fence_xenapi: the machinery of
tests/test_differential.py.

- `distro_agent()`: a pristine copy of Debian's fence_xenapi and its fencing library, extracted
  from the fence-agents .deb into a cache directory (other tests divert /usr/sbin/fence_xenapi
  at any moment, so the installed file is never used).
- `Bench`: simulated pools (one per worker, each with a master and a pool member that answers
  HOST_IS_SLAVE), reset between cases; a small HTTP server that answers 500 or redirects.
- `Case` / `Outcome`: one input, run through both agents against the same pool state; what each
  did (exit status, stdout, which VMs changed and how, sessions left).
- `read_differences_table()`: the README's table of deliberate differences, by key.

`python3 -m tests.differential [--only SUBSTRING]` prints every case side by side.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import http.server
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from tests.support import AGENT, ROOT
from tests.xapisim import SimHandle, Simulator

DEB_CACHE = Path(os.environ.get("FX_DISTRO_CACHE") or (
    "/var/cache/fence-xenapi-tests" if os.geteuid() == 0
    else os.path.expanduser("~/.cache/fence-xenapi-tests")))
APT_ARCHIVES = Path("/var/cache/apt/archives")
README = ROOT / "README.md"
TABLE_HEADING = "## Differences from fence-agents' fence_xenapi"
ASPECTS = ("exit", "stdout", "power", "sessions")
# The row explaining the sessions the distro agent leaves open: applied to every case where
# it does, so the cases need not name it.
LOGOUT_ROW = "logout"
KILLED = -9  # exit status recorded for a run killed at its kill timeout


class DistroMissing(Exception):
    """fence-agents' .deb is not at hand (scripts/install-deps.sh fetches it)."""


# ---------------------------------------------------------------------------------------------
# The distro agent, pristine
# ---------------------------------------------------------------------------------------------


def _installed_version() -> Tuple[str, str]:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Status}|${Version}|${Architecture}",
                           "fence-agents"], capture_output=True, text=True, check=False)
    status, _, rest = done.stdout.partition("|")
    version, _, arch = rest.partition("|")
    if done.returncode != 0 or status != "install ok installed" or not version or not arch:
        raise DistroMissing("fence-agents is not installed")
    return version, arch


def find_deb() -> Path:
    """fence-agents' .deb of the installed version: apt's archive cache or the copy
    scripts/install-deps.sh keeps in DEB_CACHE. While the package is not installed (a
    packaging test may be replacing it), the one .deb kept in DEB_CACHE."""
    try:
        version, arch = _installed_version()
    except DistroMissing:
        kept = sorted(DEB_CACHE.glob("fence-agents_*.deb"))
        if len(kept) == 1:
            return kept[0]
        raise
    name = f"fence-agents_{version.split(':')[-1]}_{arch}.deb"
    for directory in (DEB_CACHE, APT_ARCHIVES):
        if (directory / name).is_file():
            return directory / name
    raise DistroMissing(f"{name} is in neither {DEB_CACHE} nor {APT_ARCHIVES}")


def _verify(tree: Path, deb: Path) -> None:
    """Every file we run matches the package's own md5sums."""
    sums = subprocess.run(["dpkg-deb", "-I", str(deb), "md5sums"], capture_output=True,
                          text=True, check=True).stdout
    wanted = {path: digest for digest, path in (line.split(None, 1) for line in
                                                sums.splitlines() if line.strip())}
    for path in ("usr/sbin/fence_xenapi", "usr/share/fence/fencing.py",
                 "usr/share/fence/XenAPI.py"):
        digest = hashlib.md5((tree / path).read_bytes(), usedforsecurity=False).hexdigest()
        if wanted.get(path) != digest:
            raise DistroMissing(f"{tree / path} does not match {deb.name}'s md5sums")


def distro_agent() -> Path:
    """The extracted, verified fence_xenapi of the installed fence-agents version (run it with
    `distro_command()`, which points it at its own fencing library)."""
    deb = find_deb()
    DEB_CACHE.mkdir(parents=True, exist_ok=True)
    if deb.parent != DEB_CACHE and not (DEB_CACHE / deb.name).is_file():
        shutil.copy2(deb, DEB_CACHE / f".{deb.name}")  # kept, should apt clean its cache
        (DEB_CACHE / f".{deb.name}").rename(DEB_CACHE / deb.name)
    tree = DEB_CACHE / deb.stem
    if not (tree / "usr/sbin/fence_xenapi").is_file():
        scratch = Path(tempfile.mkdtemp(dir=DEB_CACHE, prefix=".extract-"))
        try:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(scratch)], check=True)
            _verify(scratch, deb)
            with contextlib.suppress(OSError):  # another run may have won the race
                scratch.rename(tree)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    _verify(tree, deb)
    return tree / "usr/sbin/fence_xenapi"


def distro_command(agent: Path) -> Tuple[List[str], Dict[str, str]]:
    """argv prefix and extra environment running the pristine distro agent with the distro's
    python3 and the fencing library from the same package (PYTHONPATH comes before the
    /usr/share/fence it appends to sys.path)."""
    library = agent.parent.parent / "share" / "fence"
    return ["/usr/bin/python3", str(agent)], {"PYTHONPATH": str(library)}


# ---------------------------------------------------------------------------------------------
# The pool
# ---------------------------------------------------------------------------------------------

# name -> (power state, host, kind); UUIDs are fixed so that inputs can name them
VMS: Tuple[Tuple[str, str, str, str], ...] = (
    ("vm-running", "Running", "host1", "vm"),
    ("vm-halted", "Halted", "", "vm"),
    ("vm-paused", "Paused", "host1", "vm"),
    ("vm-suspended", "Suspended", "", "vm"),
    ("vm-dup", "Running", "host1", "vm"),
    ("vm-dup", "Running", "host2", "vm"),
    ("vm-on-dead-host", "Running", "host3", "vm"),
    ("vm-shared-name", "Running", "host2", "vm"),
    ("vm-shared-name", "Halted", "", "template"),
    ("tmpl-debian", "Halted", "", "template"),
    ("vm-running-snap", "Halted", "", "snapshot"),
    ('vm "quoted"', "Running", "host1", "vm"),
    ("vm with spaces", "Running", "host2", "vm"),
    ("vm-\u00fcn\u00ef\u2713", "Running", "host1", "vm"),
    ("node1", "Running", "host1", "vm"),
    ("node2", "Halted", "", "vm"),
    ("web", "Running", "host1", "vm"),
    ("web ", "Running", "host2", "vm"),
    (" db", "Running", "host1", "vm"),
)
USERS = (("root", "secret", "pool-admin"), ("ro", "ropass", "read-only"),
         ("multi", "first\nsecond", "pool-admin"), ("eq", "pass=word", "pool-admin"))


def vm_uuid(index: int) -> str:
    return f"00000000-0000-4000-8000-{index + 1:012x}"


def build_pool() -> Simulator:
    sim = Simulator()
    for name, password, role in USERS:
        sim.add_user(name, password, role)
    sim.add_host("host1", "127.0.0.1", master=True)
    sim.add_host("host2", "127.0.0.2")
    sim.add_host("host3", "127.0.0.3", live=False)
    refs: Dict[str, str] = {}
    for index, (name, state, host, kind) in enumerate(VMS):
        ref = sim.add_vm(name, state, host=host or None, template=kind != "vm",
                         vm_uuid=vm_uuid(index),
                         snapshot_of=refs["vm-running"] if kind == "snapshot" else None)
        refs.setdefault(name, ref)
    return sim


def uuid_of(name: str) -> str:
    """The UUID of the first real VM (else first object) of that name."""
    matches = [index for index, vm in enumerate(VMS) if vm[0] == name]
    real = [index for index in matches if VMS[index][3] == "vm"] or matches
    return vm_uuid(real[0])


NAMES_BY_UUID = {vm_uuid(index): vm[0] for index, vm in enumerate(VMS)}


class _FaultyHttp(http.server.BaseHTTPRequestHandler):
    """/500: HTTP 500; /redirect/PORT: 302 to the simulator at PORT; anything else: 404."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        match = re.fullmatch(r"/redirect/(\d+)/?", self.path)
        if self.path.startswith("/500"):
            self._answer(500, {}, b"internal error\n")
        elif match:
            self._answer(302, {"Location": f"http://127.0.0.1:{match.group(1)}/"}, b"")
        else:
            self._answer(404, {}, b"not found\n")

    def _answer(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Worker:
    """One pool served at a master URL and a member URL (HOST_IS_SLAVE), reset per case."""

    def __init__(self) -> None:
        self.sim = build_pool()
        self.handle = SimHandle(self.sim)
        self.url = self.handle.url
        self.member_url = self.handle.add_host_server("127.0.0.2")
        self.port = self.handle.server.port
        self.initial = {record["uuid"]: record["power_state"]
                        for record in self.sim.vm_records()}

    def reset(self) -> None:
        with self.sim.lock:
            self.sim.faults.clear()
            self.sim.expire_sessions()
            for uuid, state in self.initial.items():
                if self.sim.power_state(uuid) != state:
                    self.sim.set_power_state(uuid, state)
            self.sim.reset_counters()

    def close(self) -> None:
        self.handle.close()


# ---------------------------------------------------------------------------------------------
# Cases and outcomes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One input for both agents. argv None: the parameters come on stdin (Pacemaker's way).
    In argv and stdin, {url} is the pool master, {member} a pool member, {closed} a port
    nobody listens on, {http} the faulty HTTP server, {port} the master's port,
    {uuid:NAME} a VM's UUID. `differs` names the README rows that explain every difference."""

    id: str
    stdin: str = ""
    argv: Optional[Tuple[str, ...]] = None
    differs: Tuple[str, ...] = ()
    states: Mapping[str, str] = field(default_factory=dict)
    faults: Mapping[str, object] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    kill_after: float = 20.0


@dataclass(frozen=True)
class Outcome:
    exit: int
    stdout: Tuple[str, ...]  # normalized lines, sorted: XAPI returns records in no set order
    power: Tuple[Tuple[str, str], ...]  # (VM name, operation) in order
    sessions: int  # left open on the pool
    stderr: str = field(compare=False)
    seconds: float = field(compare=False)

    def aspect(self, name: str) -> object:
        return {"exit": self.exit, "stdout": self.stdout, "power": self.power,
                "sessions": self.sessions}[name]

    @property
    def succeeded(self) -> bool:
        return self.exit in (0, 2)


@dataclass(frozen=True)
class Result:
    case: Case
    distro: Outcome
    ours: Outcome

    def differing(self) -> List[str]:
        return [name for name in ASPECTS if self.distro.aspect(name) != self.ours.aspect(name)]


@dataclass(frozen=True)
class Places:
    url: str
    member: str
    closed: str
    http: str
    port: int

    def fill(self, text: str) -> str:
        text = re.sub(r"\{uuid:([^}]+)\}", lambda match: uuid_of(match.group(1)), text)
        for name in ("url", "member", "closed", "http", "port"):
            text = text.replace("{" + name + "}", str(getattr(self, name)))
        return text


def _normalize(text: str, places: Places) -> Tuple[str, ...]:
    for value, shown in ((places.url, "{url}"), (places.member, "{member}"),
                         (places.closed, "{closed}"), (places.http, "{http}")):
        text = text.replace(value, shown).replace(value.rstrip("/"), shown)
    text = text.replace(f":{places.port}", ":{port}")
    text = re.sub(r"OpaqueRef:[0-9a-fA-F-]+", "OpaqueRef:*", text)
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ", "", text)  # timestamps
    return tuple(sorted(text.splitlines()))


def _run(command: Sequence[str], stdin: str, env: Mapping[str, str],
         kill_after: float) -> Tuple[int, bytes, bytes, float]:
    started = time.monotonic()
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(env), start_new_session=True)
    try:
        out, err = proc.communicate(stdin.encode("utf-8", "surrogateescape"),
                                    timeout=kill_after)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        code = KILLED
    return code, out, err, time.monotonic() - started


def _wait_quiet(sim: Simulator) -> None:
    """Let the pool finish a request a killed agent left in flight (a few ms)."""
    deadline = time.monotonic() + 0.5
    last = -1
    while time.monotonic() < deadline:
        total = sim.total_requests()
        if total == last:
            return
        last = total
        time.sleep(0.02)


def run_one(case: Case, worker: Worker, places: Places, command: Sequence[str],
            extra_env: Mapping[str, str]) -> Outcome:
    worker.reset()
    for name, state in case.states.items():
        worker.sim.set_power_state(uuid_of(name), state)
    if case.faults:
        with worker.sim.lock:
            worker.sim.faults.merge(dict(case.faults))
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", **extra_env, **case.env}
    argv = [places.fill(arg) for arg in case.argv] if case.argv is not None else []
    code, out, err, seconds = _run([*command, *argv], places.fill(case.stdin), env,
                                   case.kill_after)
    if code == KILLED:
        _wait_quiet(worker.sim)
    encoding = case.env.get("PYTHONIOENCODING", "utf-8").split(":")[0]
    text = out.decode(encoding, "replace")
    power = tuple((NAMES_BY_UUID.get(uuid, uuid), op) for uuid, op in worker.sim.power_log())
    return Outcome(code, _normalize(text, places), power, worker.sim.sessions_open(),
                   err.decode("utf-8", "replace"), seconds)


@contextlib.contextmanager
def faulty_http() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FaultyHttp)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def closed_url() -> Iterator[str]:
    """A loopback URL that refuses connections: the port stays bound (not listening) while
    the cases run, so no simulator started meanwhile can get it."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{probe.getsockname()[1]}/"


def run_cases(cases: Sequence[Case], distro: Path, workers: int = 3) -> Dict[str, Result]:
    """Every case through both agents, `workers` pools in parallel; hung cases get a pool
    of their own each (a hung request holds its server until the server stops)."""
    distro_argv, distro_env = distro_command(distro)
    ours_argv: List[str] = [str(AGENT)]
    results: Dict[str, Result] = {}
    pool: queue.Queue[Worker] = queue.Queue()
    made: List[Worker] = []
    lock = threading.Lock()

    def take() -> Worker:
        try:
            return pool.get_nowait()
        except queue.Empty:
            worker = Worker()
            with lock:
                made.append(worker)
            return worker

    with faulty_http() as http_base, closed_url() as closed:
        def run(case: Case) -> None:
            worker = take()
            try:
                places = Places(worker.url, worker.member_url, closed, http_base,
                                worker.port)
                distro_out = run_one(case, worker, places, distro_argv, distro_env)
                ours_out = run_one(case, worker, places, ours_argv, {})
                results[case.id] = Result(case, distro_out, ours_out)
            finally:
                if case.faults.get("hang"):
                    worker.close()  # releases the hung request threads
                else:
                    pool.put(worker)

        try:
            with concurrent.futures.ThreadPoolExecutor(workers) as executor:
                # slowest first, so that they do not end up alone at the end
                ordered = sorted(cases, key=lambda case: -case.kill_after)
                for future in [executor.submit(run, case) for case in ordered]:
                    future.result()
        finally:
            for worker in made:
                worker.close()
    return results


# ---------------------------------------------------------------------------------------------
# The README's table
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    key: str
    aspects: frozenset[str]
    cells: Tuple[str, ...]

    @property
    def safety(self) -> bool:
        """The row gives a safety reason (required where ours fails and the distro's does
        not): its last cell, the why, begins with **Safety**."""
        return self.cells[-1].startswith("**Safety**")


def read_differences_table(text: Optional[str] = None) -> Dict[str, Row]:
    text = README.read_text(encoding="utf-8") if text is None else text
    start = text.index(TABLE_HEADING)
    rows: Dict[str, Row] = {}
    in_table = False
    for line in text[start:].splitlines()[1:]:
        if line.startswith("## "):
            break
        if not line.startswith("|"):
            if in_table:
                break
            continue
        in_table = True
        cells = tuple(cell.strip() for cell in line.strip().strip("|").split(" | "))
        match = re.fullmatch(r"`([a-z0-9-]+)`", cells[0])
        if match is None:
            continue  # the header and its rule
        aspects = frozenset(re.findall(r"[a-z]+", cells[1]))
        if match.group(1) in rows or not aspects <= set(ASPECTS) or len(cells) != 6:
            raise ValueError(f"README differences table: bad row {line!r}")
        rows[match.group(1)] = Row(match.group(1), aspects, cells)
    return rows


def problems(result: Result, rows: Mapping[str, Row]) -> List[str]:
    """What is wrong with one case: a difference no row of the table explains, a row named
    for nothing, ours failing where fence-agents succeeds without a safety reason, or ours
    breaking a rule that holds whatever fence-agents does."""
    case, found = result.case, []
    differing = result.differing()
    keys = list(case.differs)
    if result.distro.sessions > 0 == result.ours.sessions:
        keys.append(LOGOUT_ROW)  # the distro agent never logs out: true of every case
    named = [rows[key] for key in keys if key in rows]
    found += [f"differs={key!r} is not a row of the README table"
              for key in keys if key not in rows]
    for aspect in differing:
        if not any(aspect in row.aspects for row in named):
            found.append(f"{aspect} differs and no row named by the case covers {aspect}")
    for row in named:
        if not row.aspects & set(differing):
            found.append(f"row {row.key!r} covers {sorted(row.aspects)}, which do not differ")
    if result.distro.succeeded and not result.ours.succeeded and not any(
            row.safety and "exit" in row.aspects for row in named):
        found.append("ours fails where fence-agents succeeds, and no named row gives a "
                     "safety reason")
    ours = result.ours
    if ours.exit == KILLED:
        found.append("ours was killed at the kill timeout: it hung")
    if ours.sessions:
        found.append(f"ours left {ours.sessions} session(s) open")
    if "Traceback" in ours.stderr:
        found.append("ours printed a traceback")
    return found


def describe(result: Result) -> str:
    lines = [f"case {result.case.id}: differs in {result.differing() or 'nothing'}; "
             f"named rows {list(result.case.differs)}"]
    for name, outcome in (("fence-agents", result.distro), ("ours", result.ours)):
        lines.append(f"  {name}: exit {outcome.exit}, {outcome.seconds:.2f} s, power "
                     f"{list(outcome.power)}, sessions left {outcome.sessions}")
        lines.extend(f"    stdout| {line}" for line in outcome.stdout)
        lines.extend(f"    stderr| {line}" for line in outcome.stderr.splitlines()[-4:])
    return "\n".join(lines)


def main() -> int:
    import argparse

    from tests.differential_cases import CASES

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="", help="run only cases whose id contains this")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--problems", action="store_true", help="show only failing cases")
    args = parser.parse_args()
    rows = read_differences_table()
    chosen = [case for case in CASES if args.only in case.id]
    started = time.monotonic()
    results = run_cases(chosen, distro_agent(), args.workers)
    bad = 0
    for case in chosen:
        found = problems(results[case.id], rows)
        bad += bool(found)
        if found or not args.problems:
            print(describe(results[case.id]))
            for problem in found:
                print(f"  PROBLEM: {problem}")
    print(f"{len(chosen)} cases, {bad} with problems, {time.monotonic() - started:.1f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
