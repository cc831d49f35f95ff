"""Line tracing for the mutation campaign's map of which test runs which line of the agent.

tests/mutation/campaign.py puts this directory on PYTHONPATH for one run of the suite, so every
Python process it starts imports this module: pytest itself (test_units imports the agent)
and every agent subprocess. Each process records the lines of fence_xenapi.py it executes,
per test (pytest names the running test in $PYTEST_CURRENT_TEST, which subprocesses inherit),
and writes them to $FX_TRACE_DIR when it exits. Nothing happens without $FX_TRACE_DIR.

Threads are traced too (threading.settrace): the login race runs each host's login, and the
name lookup runs, in threads of their own; sys.settrace alone sees only the main thread, and
every line run only in a thread would select no test, so each of its mutants would "survive"
untested."""

from __future__ import annotations

import atexit
import json
import os
import sys
from typing import Any, Optional

_OUT = os.environ.get("FX_TRACE_DIR")
_AGENT = os.environ.get("FX_TRACE_AGENT", "")
_seen: dict[str, set[int]] = {}


def _test() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]


def _global(frame: Any, event: str, arg: Any) -> Optional[Any]:
    if frame.f_code.co_filename != _AGENT:
        return None
    lines = _seen.setdefault(_test(), set())
    lines.add(frame.f_lineno)

    def local(frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            lines.add(frame.f_lineno)
        return local

    return local


def _write() -> None:
    sys.settrace(None)
    data = {test: sorted(lines) for test, lines in _seen.items() if test and lines}
    if data and _OUT:
        path = os.path.join(_OUT, f"{os.getpid()}-{id(data)}.json")
        with open(path, "w", encoding="utf-8") as out:
            json.dump(data, out)


if _OUT and _AGENT:
    import threading

    threading.settrace(_global)
    sys.settrace(_global)
    atexit.register(_write)
