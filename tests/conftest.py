"""pytest fixtures: the XAPI simulator in-process (HTTP and HTTPS; the standard pool, or a
pool with one server and certificate per host) and its test PKI, as HACKING.md describes
them. The logic lives in tests/xapisim.py."""

from __future__ import annotations

from pathlib import Path
from typing import Generator, Iterator

import pytest

from tests.support import IN_CI, SUITE_LINES, environment_line, require_tools
from tests.xapisim import Faults, Pki, SimHandle, make_pki

__all__ = ["Faults", "Pki", "SimHandle"]


def pytest_report_header(config: pytest.Config) -> str:
    """The system, Python and package versions this run tests with (Debian 12 on the host,
    Debian 13 inside tests/test_trixie.py's root)."""
    return f"versions: {environment_line()}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    """Which suite ran with what: this run's versions, and one line per Debian 13 suite."""
    lines = config.stash.get(SUITE_LINES, [])
    if lines:
        terminalreporter.section("suites and versions")
        terminalreporter.line(f"this run: {environment_line()}")
        for line in lines:
            terminalreporter.line(line)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A test CA, a server certificate it signed, and a self-signed impostor."""
    require_tools("openssl")
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def sim() -> Iterator[SimHandle]:
    """A fresh standard pool over HTTP on 127.0.0.1."""
    with SimHandle.standard() as handle:
        yield handle


@pytest.fixture
def sim_https(pki: Pki) -> Iterator[SimHandle]:
    """The standard pool over HTTPS, with a certificate signed by pki.ca_cert."""
    with SimHandle.standard(tls=(pki.server_cert, pki.server_key)) as handle:
        yield handle


@pytest.fixture
def sim_pool() -> Iterator[SimHandle]:
    """The standard pool with three live hosts, each served on its own address (127.0.0.1-3,
    one port) over HTTP; master host1."""
    with SimHandle.pool(hosts=3) as handle:
        yield handle


@pytest.fixture
def sim_pool_tls(tmp_path: Path) -> Iterator[SimHandle]:
    """As sim_pool, over HTTPS with each host's own self-signed certificate
    (handle.fingerprint(host), handle.cert(host))."""
    require_tools("openssl")
    with SimHandle.pool(hosts=3, tls="self-signed", tls_dir=tmp_path / "hosts") as handle:
        yield handle


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under CI=true nothing skips, whoever calls pytest.skip(): a skip is a failure there."""
    report = yield
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"CI=true, and the test skipped: {report.longrepr}"
    return report
