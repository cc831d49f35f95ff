"""pytest fixtures: the XAPI simulator in-process (HTTP and HTTPS) and its test PKI.
The simulator's logic lives in tests/xapisim.py; this file only wires it into pytest."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from tests.xapisim import (
    Faults,
    Pki,
    SimServer,
    Simulator,
    make_pki,
    server_tls_context,
)


class SimHandle:
    """A running simulated pool, as the tests see it."""

    def __init__(self, sim: Simulator, server: SimServer,
                 tls_files: Optional[tuple[Path, Path]] = None) -> None:
        self.sim = sim
        self.server = server
        self.url = server.url
        self._tls_files = tls_files
        self._extra: list[SimServer] = []

    @property
    def faults(self) -> Faults:
        return self.sim.faults

    def params(self, **overrides: Optional[str]) -> dict[str, str]:
        values: dict[str, Optional[str]] = {
            "session_url": self.url, "username": "root", "password": "secret"}
        values.update(overrides)
        return {key: value for key, value in values.items() if value is not None}

    def cli(self, **overrides: Optional[str]) -> list[str]:
        """The same parameters as command-line options (booleans as flags when true)."""
        args: list[str] = []
        for key, value in self.params(**overrides).items():
            option = "--" + key.replace("_", "-")
            if key in ("ssl_insecure", "allow_power_state_reset", "verbose", "quiet"):
                if value.lower() in ("1", "yes", "on", "true"):
                    args.append(option)
            else:
                args.append(f"{option}={value}")
        return args

    def _record(self, ident: str) -> dict[str, Any]:
        with self.sim.lock:
            matches = [rec for rec in self.sim.vms.values()
                       if rec["uuid"] == ident.lower() or rec["name_label"] == ident]
            if len(matches) > 1:
                matches = [rec for rec in matches
                           if not (rec["is_a_template"] or rec["is_control_domain"])]
            if len(matches) != 1:
                raise KeyError(f"{len(matches)} VMs match {ident!r}")
            return matches[0]

    def vm(self, ident: str) -> dict[str, Any]:
        with self.sim.lock:
            return dict(self._record(ident))

    def uuid(self, name: str) -> str:
        return str(self._record(name)["uuid"])

    def power_state(self, ident: str) -> str:
        return str(self._record(ident)["power_state"])

    def set_power_state(self, ident: str, state: str) -> None:
        self.sim.set_power_state(self.uuid(ident), state)

    def requests(self) -> dict[str, int]:
        return dict(self.sim.counters()["requests"])

    def total_requests(self) -> int:
        return int(self.sim.counters()["total"])

    def reset_counters(self) -> None:
        self.sim.reset_counters()

    def sessions_open(self) -> int:
        return self.sim.sessions_open()

    def issued_sessions(self) -> list[str]:
        with self.sim.lock:
            return list(self.sim.issued_sessions)

    def power_log(self) -> list[tuple[str, str]]:
        with self.sim.lock:
            return list(self.sim.power_log)

    def add_host_server(self, address: str) -> str:
        tls = server_tls_context(*self._tls_files) if self._tls_files else None
        server = SimServer(self.sim, address, self.server.port, tls, is_master=False).start()
        self._extra.append(server)
        return server.url

    def stop(self) -> None:
        for server in (*self._extra, self.server):
            server.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _serve(tls_files: Optional[tuple[Path, Path]] = None) -> Iterator[SimHandle]:
    sim = Simulator()
    sim.populate_standard()
    tls = server_tls_context(*tls_files) if tls_files else None
    handle = SimHandle(sim, SimServer(sim, "127.0.0.1", 0, tls).start(), tls_files)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def sim() -> Iterator[SimHandle]:
    """A fresh standard pool over HTTP on 127.0.0.1."""
    yield from _serve()


@pytest.fixture
def sim_https(pki: Pki) -> Iterator[SimHandle]:
    """The same pool over HTTPS, with a certificate signed by pki.ca_cert."""
    yield from _serve((pki.server_cert, pki.server_key))
