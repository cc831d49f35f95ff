"""The benchmark's launcher: runs one program per request and reports its wall time, exit
status and peak RSS (stdlib only, Python >= 3.9, Linux).

Why a separate process: on Linux a child's `ru_maxrss` is at least the RSS of the process that
spawned it (fork and vfork hand the parent's memory map to the child until exec, and exec
keeps that map's high-water mark). bench/run.py holds a whole simulated pool in memory
(hundreds of MB at 5000 VMs), so agents spawned from it would all report its size. This
launcher is started first, stays small, and spawns every agent; its own high-water mark
(`floor_kb`, from /proc/self/status VmHWM) is the lowest peak RSS a child can report.

Protocol: one JSON object per line on stdin
  {"argv": [...], "stdin": path, "stdout": path, "stderr": path, "timeout": seconds}
and one JSON object per line on stdout
  {"exit": int, "signal": int, "seconds": float, "cpu_seconds": float, "maxrss_kb": int,
   "timed_out": bool, "floor_kb": int}   or   {"error": "..."}.
(cpu_seconds: the child's user + system CPU time, from wait4, like maxrss_kb.)
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time
from typing import Any, Dict, Tuple


def high_water_kb() -> int:
    """This process's own peak RSS (its memory map's, not inherited from its parent)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def wait_exit(pid: int, timeout: float) -> Tuple[float, bool]:
    """Wait until `pid` exits (without reaping it) or `timeout` passes; then the monotonic
    time it was seen to end and whether it timed out. Not reaping first keeps the pid ours,
    so a kill on timeout can never hit another process."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = -1
    if pidfd >= 0:
        try:
            ready = select.select([pidfd], [], [], timeout)[0]
        finally:
            os.close(pidfd)
        return time.perf_counter(), not ready
    deadline = time.perf_counter() + timeout
    while True:  # no pidfd (kernel < 5.3): poll, 0.5 ms resolution
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return time.perf_counter(), False
        if time.perf_counter() > deadline:
            return time.perf_counter(), True
        time.sleep(0.0005)


def run(request: Dict[str, Any]) -> Dict[str, Any]:
    argv = [str(arg) for arg in request["argv"]]
    write = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fds = [os.open(request["stdin"], os.O_RDONLY), os.open(request["stdout"], write, 0o600),
           os.open(request["stderr"], write, 0o600)]
    actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(fds)]
    try:
        started = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, dict(os.environ), file_actions=actions)
    finally:
        for fd in fds:
            os.close(fd)
    ended, timed_out = wait_exit(pid, float(request.get("timeout", 600)))
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    return {
        "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0,
        "seconds": ended - started,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "maxrss_kb": int(usage.ru_maxrss),
        "timed_out": timed_out,
        "floor_kb": high_water_kb(),
    }


def main() -> int:
    for line in sys.stdin:
        try:
            reply = run(json.loads(line))
        except Exception as error:
            reply = {"error": f"{type(error).__name__}: {error}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
