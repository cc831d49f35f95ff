"""Each action imports only what it needs: start-up is most of a fencing run, so
`-V`, `-h`, `metadata` and `validate-all` load no network code, no action loads the logging or
dataclasses modules (the agent has small stand-ins for both), and a stdin run loads neither
getopt nor lxml. The agent runs as Pacemaker runs it, under `python3 -X importtime`, and the
modules it loaded are read from what that prints: which modules, not how long they took
(times belong in bench/)."""

from __future__ import annotations

import re
import subprocess
from typing import Mapping, Optional, Sequence, Set

import pytest

from tests.support import AGENT, stdin_text
from tests.xapisim import SimHandle

PYTHON = "/usr/bin/python3"  # the agent's shebang
NETWORK = {"socket", "ssl", "http.client", "xmlrpc.client", "urllib.parse", "email.parser",
           "xml.etree.ElementTree", "hashlib", "hmac", "selectors"}
NEVER = {"logging", "dataclasses", "argparse", "typing"}
_IMPORT = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| +(\S+)$", re.M)


def loaded(argv: Sequence[str] = (), stdin: Optional[Mapping[str, object]] = None) -> Set[str]:
    """The modules the agent imported beyond what the interpreter's start-up imports."""
    baseline = subprocess.run([PYTHON, "-X", "importtime", "-c", "pass"], capture_output=True,
                              text=True, timeout=60, check=True).stderr
    done = subprocess.run([PYTHON, "-X", "importtime", str(AGENT), *argv],
                          input=stdin_text(stdin or {}), capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode in (0, 2), done.stderr[-2000:]
    return set(_IMPORT.findall(done.stderr)) - set(_IMPORT.findall(baseline))


@pytest.mark.parametrize("argv", [["-V"], ["-h"], ["-o", "metadata"]], ids=" ".join)
def test_options_and_metadata_load_no_network_code(argv: Sequence[str]) -> None:
    modules = loaded(argv)
    assert not modules & NETWORK, sorted(modules & NETWORK)
    assert not modules & NEVER, sorted(modules & NEVER)
    assert ("lxml.etree" in modules) == ("metadata" in argv)


def test_metadata_from_stdin_loads_no_network_code_nor_getopt() -> None:
    modules = loaded(stdin={"action": "metadata"})
    assert "lxml.etree" in modules
    assert not modules & (NETWORK | NEVER | {"getopt"}), sorted(modules & (NETWORK | NEVER))


def test_validate_all_contacts_nothing_and_loads_no_network_stack(sim: SimHandle) -> None:
    modules = loaded(stdin=sim.params(action="validate-all", plug="vm-running"))
    assert not modules & (NETWORK - {"urllib.parse"} | NEVER), sorted(modules & NETWORK)


@pytest.mark.parametrize("action", ["status", "off"])
def test_pool_actions_load_neither_lxml_nor_logging(sim: SimHandle, action: str) -> None:
    modules = loaded(stdin=sim.params(action=action, plug="vm-running"))
    assert "lxml.etree" not in modules and "getopt" not in modules, sorted(modules)
    assert not modules & NEVER, sorted(modules & NEVER)
    assert not modules & {"textwrap", "subprocess"}, sorted(modules)  # -h, password_script
    assert sim.sessions_open() == 0
