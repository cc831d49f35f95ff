"""The DEB and the RPM: built once per session from a clean copy of the tree (outside the
checkout), checked with lintian and rpmlint, and the DEB installed beside Debian's fence-agents
in both orders, used, removed and purged. Every install test leaves the machine as it found it:
our package gone, fence-agents' /usr/sbin/fence_xenapi in place."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import pytest
from lxml import etree

from tests.support import (
    ROOT,
    agent_code_origin,
    bytecode_of,
    launcher_for,
    require_path,
    require_root,
    require_tools,
    run_agent,
)
from tests.xapisim import SimHandle

pytestmark = pytest.mark.packaging


def project_version() -> str:
    """meson.build's project version: what the packages must be and `-V` must print."""
    found = re.search(r"version\s*:\s*'([^']+)'", (ROOT / "meson.build").read_text())
    assert found, "no version in meson.build's project()"
    return found.group(1)


VERSION = project_version()
PYC_TAG = sys.implementation.cache_tag  # this venv's is Debian's python3's: cpython-311
INSTALLED_AGENT = Path("/usr/sbin/fence_xenapi")
INSTALLED_MAN = Path("/usr/share/man/man8/fence_xenapi.8.gz")
# The agent itself: a module beside the launcher at /usr/sbin/fence_xenapi, byte-compiled.
MODULE_DIR = Path("/usr/share/fence-xenapi")
INSTALLED_MODULE = MODULE_DIR / "fence_xenapi.py"
DIVERTED_AGENT = Path("/usr/sbin/fence_xenapi.distrib")
DIVERTED_MAN = Path("/usr/share/man/man8/fence_xenapi.distrib.8.gz")
METADATA_RNG = Path("/usr/share/cluster/relaxng/metadata.rng")
DEB_NAME = "fence-xenapi"


def distro_package() -> str:
    """The Debian package that ships /usr/sbin/fence_xenapi: fence-agents up to Debian 12;
    from Debian 13 on fence-agents is split and the agent is in fence-agents-xenapi."""
    if shutil.which("apt-cache") is not None:
        known = subprocess.run(["apt-cache", "show", "--no-all-versions", "fence-agents-xenapi"],
                               capture_output=True, text=True, check=False, timeout=60)
        if known.returncode == 0 and known.stdout.strip():
            return "fence-agents-xenapi"
    return "fence-agents"


DISTRO_PACKAGE = distro_package()
# The header of fence-agents' fence_xenapi (4.12 in Debian 12, 4.16 in Debian 13, whose
# description no longer says fence_cxs); ours has none of it.
DISTRO_MARKER = "This file is part of fence-xenserver"

# Fedora macros Debian's rpm lacks or defines otherwise, set for this machine's build only:
# the same commands as Fedora's macros.meson, macros.python3 and macros.pybytecompile (less the
# compiler flags a noarch package never uses; the stdlib's compileall, which has everything
# Fedora's compileall2 backport adds since Python 3.9), Fedora's unversioned doc and license
# directories, and the man page compression Fedora's build root policy does. Debian's
# brp-compress says #!/bin/sh but uses bash's `read -d`, so under dash it compresses nothing:
# run it with bash (Fedora's /bin/sh). The strip steps Debian's list adds do nothing to a
# noarch package.
RPM_MACROS = """\
%_docdir_fmt %%{NAME}
%__os_install_post /bin/bash /usr/lib/rpm/brp-compress %{_prefix}
%python3 /usr/bin/python3
%__meson /usr/bin/meson
%_vpath_srcdir .
%_vpath_builddir redhat-linux-build
%meson %{__meson} setup --buildtype=plain --prefix=%{_prefix} --sbindir=%{_sbindir} \
--mandir=%{_mandir} --wrap-mode=nodownload %{_vpath_srcdir} %{_vpath_builddir}
%meson_build %{__meson} compile -C %{_vpath_builddir} -j %{_smp_build_ncpus}
%meson_install DESTDIR=%{buildroot} %{__meson} install -C %{_vpath_builddir} --no-rebuild
%meson_test %{__meson} test -C %{_vpath_builddir} --num-processes %{_smp_build_ncpus} \
--print-errorlogs
%py_byte_compile() PYTHONHASHSEED=0 %1 -s -B -m compileall -q -o 0 -o 1 -s $RPM_BUILD_ROOT \
-p / --hardlink-dupes --invalidation-mode=timestamp %2
"""


# rpmlint as Fedora configures it (its fedora.toml and the SPDX list of
# rpmlint-fedora-license-data), which Debian's rpmlint lacks: unsigned local builds, Packager
# and Group left to the build system, SPDX license names. Only the settings this package meets.
RPMLINT_FEDORA_POLICY = """\
CompressExtension = "gz"
MaxLineLength = 80
ValidLicenses = ["GPL-2.0-or-later"]
Filters = [' no-signature', ' no-packager-tag', '.*no-group-tag.*']
"""


def run(command: Sequence[str], cwd: Optional[Path] = None, timeout: float = 180,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(command), cwd=cwd, capture_output=True, text=True, check=False,
                          timeout=timeout)
    if check:
        assert proc.returncode == 0, (
            f"{' '.join(command)} exited {proc.returncode}\n{proc.stdout[-3000:]}"
            f"\n{proc.stderr[-3000:]}"
        )
    return proc


def copy_clean_tree(target: Path) -> Path:
    """The files git tracks (or would: not ignored), as they are in the work tree."""
    require_tools("git")
    listing = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                  cwd=ROOT).stdout
    for name in filter(None, listing.split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the work tree is not shipped
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@dataclass
class DebBuild:
    deb: Path
    changes: Path


@dataclass
class RpmBuild:
    rpm: Path
    spec: Path


@pytest.fixture(scope="session")
def deb_build(tmp_path_factory: pytest.TempPathFactory) -> DebBuild:
    require_tools("dpkg-buildpackage", "dh", "dh_python3", "meson", "ninja")
    work = tmp_path_factory.mktemp("deb")
    tree = copy_clean_tree(work / f"{DEB_NAME}-{VERSION}")
    shutil.copytree(tree / "packaging" / "debian", tree / "debian")
    run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=tree, timeout=300)
    return DebBuild(deb=work / f"{DEB_NAME}_{VERSION}-1_all.deb",
                    changes=next(work.glob(f"{DEB_NAME}_{VERSION}-1_*.changes")))


@pytest.fixture(scope="session")
def rpm_build(tmp_path_factory: pytest.TempPathFactory) -> RpmBuild:
    require_tools("rpmbuild", "meson", "ninja")
    work = tmp_path_factory.mktemp("rpm")
    tree = copy_clean_tree(work / "tree" / f"fence_xenapi-{VERSION}")
    (work / "SOURCES").mkdir()
    with tarfile.open(work / "SOURCES" / f"fence_xenapi-{VERSION}.tar.gz", "w:gz") as tar:
        tar.add(tree, arcname=tree.name)
    macros = work / "fedora.macros"
    macros.write_text(RPM_MACROS)
    spec = tree / "fence_xenapi.spec"
    # --nodeps: this machine's rpm database is empty; Debian's packages provide what the
    # BuildRequires name (meson, python3, lxml).
    run(["rpmbuild", "-bb", "--nodeps", "--load", str(macros),
         "--define", f"_topdir {work}", str(spec)], timeout=300)
    return RpmBuild(rpm=work / "RPMS" / "noarch" / f"fence_xenapi-{VERSION}-1.noarch.rpm",
                    spec=spec)


def launcher_lines(text: str) -> list[str]:
    """The launcher's code lines (comments and blank lines left out)."""
    return [line for line in text.splitlines()[1:] if line and not line.startswith("#")]


LAUNCHER_CODE = ["import sys", f'sys.path.insert(0, "{MODULE_DIR}")',
                 "from fence_xenapi import main", "sys.exit(main())"]


def test_deb_has_agent_man_page_and_depends(deb_build: DebBuild, tmp_path: Path) -> None:
    listing = run(["dpkg-deb", "-c", str(deb_build.deb)]).stdout
    assert re.search(r"^-rwxr-xr-x root/root .* \./usr/sbin/fence_xenapi$", listing, re.M)
    assert re.search(rf"^-rwxr-xr-x root/root .* \.{INSTALLED_MODULE}$", listing, re.M)
    assert "./usr/share/man/man8/fence_xenapi.8.gz" in listing
    # No bytecode in the package: dh_python3's postinst compiles it for the Python installed
    # (py3compile), its prerm removes it (py3clean), so removing the package leaves none.
    assert "__pycache__" not in listing and ".pyc" not in listing
    run(["dpkg-deb", "-e", str(deb_build.deb), str(tmp_path / "control")])
    postinst = (tmp_path / "control" / "postinst").read_text()
    prerm = (tmp_path / "control" / "prerm").read_text()
    assert f"py3compile -p {DEB_NAME} {MODULE_DIR}" in postinst, postinst
    assert f"py3clean -p {DEB_NAME}" in prerm, prerm
    run(["dpkg-deb", "-x", str(deb_build.deb), str(tmp_path / "root")])
    launcher = (tmp_path / "root" / "usr" / "sbin" / "fence_xenapi").read_text()
    assert launcher.splitlines()[0] == "#!/usr/bin/python3"
    assert launcher_lines(launcher) == LAUNCHER_CODE
    fields = run(["dpkg-deb", "-f", str(deb_build.deb), "Depends", "Architecture",
                  "Section", "Version"]).stdout
    assert "python3-lxml" in fields
    assert "python3" in fields.replace("python3-lxml", "")
    assert "Architecture: all" in fields
    assert "Section: admin" in fields
    assert f"Version: {VERSION}-1" in fields


def test_deb_lintian_clean(deb_build: DebBuild) -> None:
    require_tools("lintian")
    result = run(["lintian", "--fail-on", "error,warning", str(deb_build.changes)],
                 check=False)
    tags = [line for line in result.stdout.splitlines() if re.match(r"^[EW]: ", line)]
    assert result.returncode == 0 and not tags, result.stdout + result.stderr


def test_rpm_lists_exactly_agent_man_page_and_docs(rpm_build: RpmBuild) -> None:
    files = run(["rpm", "-qlp", str(rpm_build.rpm)]).stdout.split()
    assert sorted(files) == [
        "/usr/sbin/fence_xenapi",
        "/usr/share/doc/fence_xenapi",
        "/usr/share/doc/fence_xenapi/README.md",
        str(MODULE_DIR),
        f"{MODULE_DIR}/__pycache__",
        f"{MODULE_DIR}/__pycache__/fence_xenapi.{PYC_TAG}.opt-1.pyc",
        f"{MODULE_DIR}/__pycache__/fence_xenapi.{PYC_TAG}.pyc",
        str(INSTALLED_MODULE),
        "/usr/share/licenses/fence_xenapi",
        "/usr/share/licenses/fence_xenapi/COPYING",
        "/usr/share/man/man8/fence_xenapi.8.gz",
    ]
    info = run(["rpm", "-qp", "--requires", "--provides", "--obsoletes",
                str(rpm_build.rpm)]).stdout
    assert "python3-lxml" in info
    assert "fence-agents-xenapi < 5" in info
    assert "fence-agents-xenapi = 5" in info
    arch = run(["rpm", "-qp", "--qf", "%{ARCH} %{LICENSE} %{VERSION}", str(rpm_build.rpm)])
    assert arch.stdout == f"noarch GPL-2.0-or-later {VERSION}"


def test_rpm_agent_has_distro_shebang_and_version(rpm_build: RpmBuild, tmp_path: Path) -> None:
    require_tools("rpm2cpio", "cpio")
    archive = subprocess.run(["rpm2cpio", str(rpm_build.rpm)], capture_output=True,
                             check=True, timeout=60).stdout
    subprocess.run(["cpio", "-idm", "--quiet"], input=archive, cwd=tmp_path, check=True,
                   timeout=60)
    agent = tmp_path / "usr" / "sbin" / "fence_xenapi"
    assert agent.read_text().splitlines()[0] == "#!/usr/bin/python3"
    assert agent.stat().st_mode & 0o777 == 0o755
    assert launcher_lines(agent.read_text()) == LAUNCHER_CODE
    # The same launcher, pointed at the unpacked module: it runs the byte-compiled module
    # (%py_byte_compile's bytecode, current for the packaged source) and prints the version.
    module_dir = tmp_path / MODULE_DIR.relative_to("/")
    unpacked = launcher_for(agent, module_dir, tmp_path)
    assert run([str(unpacked), "-V"]).stdout.strip() == VERSION
    module = module_dir / "fence_xenapi.py"
    assert module.stat().st_mode & 0o777 == 0o755
    assert agent_code_origin(unpacked) == str(bytecode_of(module))


def test_rpmlint_clean(rpm_build: RpmBuild, tmp_path: Path) -> None:
    require_tools("rpmlint")
    policy = tmp_path / "fedora.toml"
    policy.write_text(RPMLINT_FEDORA_POLICY)
    for target in (rpm_build.rpm, rpm_build.spec):
        result = run(["rpmlint", "--config", str(policy), str(target)], check=False)
        assert " 0 errors" in result.stdout, result.stdout
        assert not re.search(r"^\S+: E: ", result.stdout, re.M), result.stdout


# --- installing the DEB beside fence-agents ---------------------------------------------------


def installed(package: str) -> bool:
    status = run(["dpkg-query", "-W", "-f=${Status}", package], check=False).stdout
    return status.endswith(" installed")


def diversions() -> str:
    return run(["dpkg-divert", "--list", "*fence_xenapi*"]).stdout


@pytest.fixture(scope="session")
def distro_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fence-agents' own .deb, to put it back after removing it (apt's cache, else apt)."""
    require_root()
    require_tools("dpkg", "apt-get", "dpkg-divert")
    require_path(METADATA_RNG)
    cached = sorted(Path("/var/cache/apt/archives").glob(f"{DISTRO_PACKAGE}_*.deb"))
    if cached:
        return cached[-1]
    work = tmp_path_factory.mktemp("distro")
    work.chmod(0o755)  # apt downloads as _apt
    run(["apt-get", "download", DISTRO_PACKAGE], cwd=work)
    return next(work.glob(f"{DISTRO_PACKAGE}_*.deb"))


def restore_machine(distro_deb: Path) -> None:
    """Our package purged, leftover diversions undone, fence-agents installed."""
    if run(["dpkg-query", "-W", DEB_NAME], check=False).returncode == 0:
        run(["dpkg", "--purge", DEB_NAME], check=False)
    for path, diverted in ((INSTALLED_AGENT, DIVERTED_AGENT), (INSTALLED_MAN, DIVERTED_MAN)):
        if f"to {diverted} by {DEB_NAME}" in diversions():
            run(["dpkg-divert", "--package", DEB_NAME, "--remove", "--rename", "--divert",
                 str(diverted), str(path)], check=False)
    if not installed(DISTRO_PACKAGE):
        run(["dpkg", "-i", str(distro_deb)])


@pytest.fixture
def machine(distro_deb: Path) -> Iterator[Path]:
    """fence-agents installed and ours not, before and after the test, whatever happens."""
    restore_machine(distro_deb)
    assert installed(DISTRO_PACKAGE)
    try:
        yield distro_deb
    finally:
        restore_machine(distro_deb)


def assert_ours_in_place() -> None:
    metadata = run_agent(["-o", "metadata"], agent=INSTALLED_AGENT)
    assert metadata.returncode == 0, metadata.stderr
    schema = etree.RelaxNG(etree.parse(str(METADATA_RNG)))
    document = etree.fromstring(metadata.stdout.encode())
    assert schema.validate(document), schema.error_log
    assert metadata.stdout == run_agent(["-o", "metadata"]).stdout  # this tree's metadata
    assert run_agent(["-V"], agent=INSTALLED_AGENT).stdout.strip() == VERSION
    # the launcher runs the module byte-compiled by the postinst, not compiling it every time
    assert agent_code_origin(INSTALLED_AGENT) == str(bytecode_of(INSTALLED_MODULE))
    listed = diversions()
    assert f"{INSTALLED_AGENT} to {DIVERTED_AGENT} by {DEB_NAME}" in listed
    assert f"{INSTALLED_MAN} to {DIVERTED_MAN} by {DEB_NAME}" in listed
    # fence-agents' copies moved aside, still theirs
    assert DISTRO_MARKER in DIVERTED_AGENT.read_text()
    assert DIVERTED_MAN.exists()
    assert run(["dpkg", "-S", str(INSTALLED_AGENT)]).stdout.count(DEB_NAME) >= 1


def assert_distro_back() -> None:
    assert f"by {DEB_NAME}" not in diversions()
    assert not DIVERTED_AGENT.exists()
    assert not DIVERTED_MAN.exists()
    assert DISTRO_MARKER in INSTALLED_AGENT.read_text()
    assert INSTALLED_MAN.exists()
    owner = run(["dpkg", "-S", str(INSTALLED_AGENT)]).stdout
    assert owner.startswith(f"{DISTRO_PACKAGE}:"), owner


def assert_purged() -> None:
    assert run(["dpkg-query", "-W", DEB_NAME], check=False).returncode != 0
    assert not Path(f"/usr/share/doc/{DEB_NAME}").exists()
    assert not list(Path("/var/lib/dpkg/info").glob(f"{DEB_NAME}.*"))
    assert_module_gone()


def assert_module_gone() -> None:
    """Removing the package removes the module and the bytecode its postinst wrote."""
    leftover = sorted(str(path) for path in MODULE_DIR.rglob("*")) if MODULE_DIR.exists() \
        else []
    assert not MODULE_DIR.exists(), leftover


def test_deb_installs_over_fence_agents_and_gives_it_back(
    deb_build: DebBuild, machine: Path, sim: SimHandle
) -> None:
    # (No --no-download: with it, apt 2.6 refuses a local .deb, "Pathname to install is not
    # absolute". Its dependencies are installed already, so nothing is fetched.)
    run(["apt-get", "install", "-y", str(deb_build.deb)], timeout=300)
    assert_ours_in_place()
    status = run_agent(["-o", "status", "-n", "vm-running", *sim.cli()], agent=INSTALLED_AGENT)
    assert (status.returncode, status.stdout.strip()) == (0, "Status: ON"), status.stderr
    # Pacemaker's way: no arguments, parameters on stdin.
    halted = run_agent(stdin=sim.params(action="status", plug="vm-halted"),
                       agent=INSTALLED_AGENT)
    assert (halted.returncode, halted.stdout.strip()) == (2, "Status: OFF"), halted.stderr
    assert sim.sessions_open() == 0

    run(["apt-get", "remove", "-y", DEB_NAME], timeout=300)
    assert_distro_back()
    assert_module_gone()
    run(["dpkg", "--purge", DEB_NAME])
    assert_purged()
    assert_distro_back()


def test_deb_installed_before_fence_agents(deb_build: DebBuild, machine: Path) -> None:
    run(["dpkg", "-r", DISTRO_PACKAGE])
    assert not INSTALLED_AGENT.exists()
    run(["dpkg", "-i", str(deb_build.deb)])
    assert DISTRO_MARKER not in INSTALLED_AGENT.read_text()
    run(["dpkg", "-i", str(machine)])  # fence-agents arrives second: its copy goes aside
    assert_ours_in_place()

    run(["dpkg", "--purge", DEB_NAME])
    assert_purged()
    assert_distro_back()



# --- Debian's own test harness: autopkgtest (DEP-8) -------------------------------------------


def test_deb_source_lintian_clean(tmp_path: Path) -> None:
    """The source package (what carries debian/tests: the binary package has none of it) is
    lintian clean, and dpkg-source announced its tests in the .dsc (Testsuite: autopkgtest,
    Testsuite-Triggers from the tests' Depends), so Debian's CI finds them."""
    require_tools("dpkg-source", "lintian")
    tree = copy_clean_tree(tmp_path / f"{DEB_NAME}-{VERSION}")
    with tarfile.open(tmp_path / f"{DEB_NAME}_{VERSION}.orig.tar.gz", "w:gz") as tar:
        tar.add(tree, arcname=tree.name)
    shutil.copytree(tree / "packaging" / "debian", tree / "debian")
    run(["dpkg-source", "-b", tree.name], cwd=tmp_path)
    dsc = tmp_path / f"{DEB_NAME}_{VERSION}-1.dsc"
    fields = dsc.read_text()
    assert re.search(r"^Testsuite: autopkgtest$", fields, re.M), fields
    assert re.search(r"^Testsuite-Triggers: .*\blibxml2-utils\b", fields, re.M), fields
    result = run(["lintian", "--fail-on", "error,warning", str(dsc)], check=False)
    tags = [line for line in result.stdout.splitlines() if re.match(r"^[EW]: ", line)]
    assert result.returncode == 0 and not tags, result.stdout + result.stderr


# debian/tests/control's tests, and what each must report having checked (its stdout).
AUTOPKGTESTS = {
    "installed-agent": [f"{INSTALLED_AGENT} is {DEB_NAME} {VERSION}-1",
                        f"metadata valid against {METADATA_RNG}", "list:", "status:",
                        "reboot: node2 hard shut down then started, no other VM touched",
                        "wrong password: exit 1, one line:", "0 sessions left open",
                        "the source tree is as it was given"],
    "pacemaker-metadata": ["stonith_admin --metadata shows the agent's"],
}


# installed-agent declares isolation-container (DEP-8: a test that opens a TCP port; the
# simulator's, on 127.0.0.1; it needs no init system). autopkgtest's null virt server up to 5.47
# (Debian 12: 5.28) advertised isolation-machine, which covers it; from 5.48 (Debian 13) it
# advertises no isolation, since it cannot know what it runs on, and its --fake-capability
# breaks on an assertion in 5.49 (downtmp_mktemp). Whoever runs it knows: this machine is a
# root CI machine (the testbed), or the Debian 13 root with a network namespace of its own
# (tests/trixie.py). So the restriction is waived the way autopkgtest(1) documents for null.
# No test declares needs-root: they run as an ordinary user (nobody), which proves it.
AUTOPKGTEST_NULL_OPTIONS = ["--ignore-restrictions=isolation-container", "--user=nobody"]


def test_deb_autopkgtest_passes(deb_build: DebBuild, machine: Path, tmp_path: Path) -> None:
    """autopkgtest, Debian's own runner, installs the DEB on this machine (virt server null: a
    root CI machine is the testbed) and runs debian/tests/control from an unbuilt copy of the
    source tree, as an ordinary user: every test PASS, none skipped (exit 0), each having
    checked all it should.
    The machine fixture then purges the package and gives fence-agents its agent back."""
    require_tools("autopkgtest")
    tree = copy_clean_tree(tmp_path / f"{DEB_NAME}-{VERSION}")
    shutil.copytree(tree / "packaging" / "debian", tree / "debian")
    out = tmp_path / "autopkgtest"
    apt_config = sorted(Path("/etc/apt").rglob("*"))
    result = run(["autopkgtest", *AUTOPKGTEST_NULL_OPTIONS, "--output-dir", str(out),
                  str(deb_build.deb), f"{tree}/", "--", "null"], timeout=900, check=False)
    summary = (out / "summary").read_text() if (out / "summary").exists() else ""
    verdicts = dict(line.split()[:2] for line in summary.splitlines() if line.strip())
    assert (result.returncode, verdicts) == (0, {name: "PASS" for name in AUTOPKGTESTS}), (
        f"autopkgtest exited {result.returncode}\n{summary}\n{result.stderr[-6000:]}")
    for name, reports in AUTOPKGTESTS.items():
        stdout = (out / f"{name}-stdout").read_text()
        for report in reports:
            assert f"ok: {report}" in stdout, stdout
    # What the tests ran was this DEB, installed over fence-agents' agent.
    assert_ours_in_place()
    # autopkgtest took back what it set up on the testbed: its apt source and pinning for
    # the DEB, its dependency package, its scratch directory.
    assert sorted(Path("/etc/apt").rglob("*")) == apt_config
    assert not installed("autopkgtest-satdep")
    assert not list(Path("/tmp").glob("autopkgtest.*"))
