"""meson builds and installs the agent (a launcher in sbindir, the byte-compiled module in
datadir/fence-xenapi, DESTDIR honoured) and its man page, and the man page is generated from
the agent's metadata: every parameter (deprecated aliases included) and every action the
metadata lists is documented, groff finds nothing to warn about, and man renders it."""

from __future__ import annotations

import marshal
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest
from lxml import etree

from tests.support import (
    ROOT,
    agent_code_origin,
    bytecode_of,
    launcher_for,
    meson_version,
    require_tools,
    run_agent,
)

pytestmark = pytest.mark.packaging

SECTIONS = ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "STDIN PARAMETERS", "ACTIONS",
            "EXIT STATUS", "EXAMPLES", "SECURITY", "DEGRADED POOLS", "FENCING TOPOLOGY",
            "NODE NAMES AND VM NAMES", "SEE ALSO")


def run(command: Sequence[str], cwd: Path = ROOT, timeout: float = 180,
        env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(command), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False,
                          env=None if env is None else {**os.environ, **env})
    assert proc.returncode == 0, f"{' '.join(command)}: {proc.stdout[-2000:]}{proc.stderr}"
    return proc


MODULE_DIR = Path("/usr/share/fence-xenapi")  # where the launcher looks, prefix /usr


@dataclass
class Installed:
    build: Path
    destdir: Path
    agent: Path  # the launcher
    module: Path
    man: Path


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    require_tools("meson", "ninja")
    work = tmp_path_factory.mktemp("meson")
    build, destdir = work / "build", work / "destdir"
    run(["meson", "setup", str(build), "-Dpython=/usr/bin/python3"])
    run(["meson", "compile", "-C", str(build)])
    run(["meson", "install", "-C", str(build), "--destdir", str(destdir)])
    return Installed(build, destdir, destdir / "usr" / "sbin" / "fence_xenapi",
                     destdir / MODULE_DIR.relative_to("/") / "fence_xenapi.py",
                     destdir / "usr" / "share" / "man" / "man8" / "fence_xenapi.8")


def metadata() -> etree._Element:
    proc = run_agent(["-o", "metadata"])
    assert proc.returncode == 0, proc.stderr
    return etree.fromstring(proc.stdout.encode())


def man_text(page: Path) -> str:
    """The page as man shows it, plain text, wide enough that option names stay whole."""
    rendered = run(["man", "-l", str(page)], env={"MANWIDTH": "200", "MAN_KEEP_FORMATTING": "",
                                                  "MANPAGER": "cat", "PAGER": "cat"})
    return re.sub(r".\x08", "", rendered.stdout)


def test_installs_launcher_and_module_with_shebang_mode_and_version(
        installed: Installed, tmp_path: Path) -> None:
    launcher = installed.agent.read_text()
    assert launcher.splitlines()[0] == "#!/usr/bin/python3"
    assert installed.agent.stat().st_mode & 0o777 == 0o755
    assert f'sys.path.insert(0, "{MODULE_DIR}")' in launcher
    lines = installed.module.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/python3"
    assert installed.module.stat().st_mode & 0o777 == 0o755
    assert "@VERSION@" not in installed.module.read_text()
    # the installed module is the checkout's script otherwise unchanged
    source = (ROOT / "fence_xenapi.py").read_text().splitlines()
    assert [line for line in lines[1:] if meson_version() not in line] == \
        [line for line in source[1:] if "@VERSION@" not in line]
    # the launcher, run against the DESTDIR's module, prints the version
    agent = launcher_for(installed.agent, installed.module.parent, tmp_path)
    version = run_agent(["-V"], agent=agent)
    assert (version.returncode, version.stdout.strip()) == (0, meson_version())


def test_install_byte_compiles_the_module_for_its_final_place(
        installed: Installed, tmp_path: Path) -> None:
    bytecode = bytecode_of(installed.module)
    assert sorted(path.name for path in installed.module.parent.rglob("*")) == sorted(
        ["fence_xenapi.py", "__pycache__", bytecode.name])
    # current for the installed source (the launcher loads it rather than compiling)...
    agent = launcher_for(installed.agent, installed.module.parent, tmp_path)
    assert agent_code_origin(agent) == str(bytecode)
    # ...and compiled for where the package puts it, not for the DESTDIR
    code = marshal.loads(bytecode.read_bytes()[16:])  # noqa: S302 - this build's own
    assert code.co_filename == str(MODULE_DIR / "fence_xenapi.py")


def test_man_page_has_every_section(installed: Installed) -> None:
    source = installed.man.read_text()
    headings = re.findall(r'^\.SH\s+"?([^"\n]+)"?$', source, re.M)
    assert tuple(headings) == SECTIONS
    assert f'"fence_xenapi {meson_version()}"' in source.splitlines()[
        next(i for i, line in enumerate(source.splitlines()) if line.startswith(".TH"))]


def test_man_page_documents_every_parameter_and_action(installed: Installed) -> None:
    text = man_text(installed.man)
    stdin_part = text.split("STDIN PARAMETERS", 1)[1].split("\nACTIONS", 1)[0]
    options_part = text.split("\nOPTIONS", 1)[1].split("STDIN PARAMETERS", 1)[0]
    actions_part = text.split("\nACTIONS", 1)[1].split("EXIT STATUS", 1)[0]
    meta = metadata()
    for parameter in meta.iterfind("parameters/parameter"):
        name = parameter.get("name", "")
        assert re.search(rf"\b{re.escape(name)}\b", stdin_part), name
        getopt = parameter.find("getopt")
        mixed = getopt.get("mixed", "") if getopt is not None else ""
        assert mixed, name
        for option in re.findall(r"--?[\w-]+", mixed):
            assert option in options_part, (name, option)
        if parameter.get("deprecated") == "1":
            assert re.search(rf"{re.escape(name)}.*deprecated", stdin_part, re.I | re.S), name
    for action in meta.iterfind("actions/action"):
        assert re.search(rf"^\s+{re.escape(action.get('name', ''))}\b", actions_part, re.M), action


def test_groff_has_no_warnings(installed: Installed) -> None:
    require_tools("groff")
    proc = subprocess.run(["groff", "-man", "-ww", "-z", str(installed.man)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert (proc.returncode, proc.stderr) == (0, "")


def test_man_renders_examples_and_security(installed: Installed) -> None:
    require_tools("man")
    text = man_text(installed.man)
    assert "pcs stonith create" in text and "crm configure primitive" in text
    assert "ssl_fingerprint" in text.split("SECURITY", 1)[1]
    assert "password_script" in text.split("SECURITY", 1)[1]


def test_meson_test_runs_the_smoke_suite(installed: Installed) -> None:
    proc = run(["meson", "test", "-C", str(installed.build), "--suite", "smoke"])
    assert re.search(r"Ok:\s+2\b", proc.stdout), proc.stdout
    listed: List[str] = run(["meson", "test", "-C", str(installed.build), "--list"]).stdout.split()
    assert any(name.endswith("pytest") for name in listed), listed
