"""Every action of the agent against the simulator's standard pool, through stdin and through
the command line, naming VMs by name, UUID and upper-case UUID: exit codes, output, the VM's
resulting power state, the power operations the pool saw, the request budget, and that no
session is left open."""

from __future__ import annotations

from typing import Iterator, Optional

import pytest

from tests.support import (
    DISTRO_AGENT,
    IDENTS,
    STYLES,
    AgentRun,
    assert_failed,
    assert_succeeded,
    invoke,
    meson_version,
    real_vms,
    require_path,
    run_agent,
    vm_id,
)
from tests.xapisim import SimHandle, Simulator

# The standard pool's VM in each power state.
VM_IN_STATE = {
    "Running": "vm-running",
    "Halted": "vm-halted",
    "Paused": "vm-paused",
    "Suspended": "vm-suspended",
}
STATES = tuple(VM_IN_STATE)
# Every (state, identification) pair once, the input style alternating so that every (state,
# style) and (identification, style) pair occurs too: full coverage of pairs at half the runs.
CASES = [
    pytest.param(state, ident, STYLES[(i + j) % 2], id=f"{state}-{ident}-{STYLES[(i + j) % 2]}")
    for i, state in enumerate(STATES)
    for j, ident in enumerate(IDENTS)
]

# HACKING.md's request budgets, login and logout included.
BUDGET = {"status": 3, "monitor": 3, "list": 3, "list-status": 3, "on": 5, "off": 5,
          "reboot": 7}

POWERING_ON = {"Halted": "start", "Suspended": "resume", "Paused": "unpause"}


def operations(handle: SimHandle, vm_uuid: str) -> list[str]:
    """The power operations the pool performed on one VM, in order."""
    return [operation for uuid, operation in handle.power_log() if uuid == vm_uuid]


# ---------------------------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state,ident,style", CASES)
def test_status(sim: SimHandle, style: str, ident: str, state: str) -> None:
    """Only Halted is OFF (exit 2); Paused and Suspended VMs still have a domain: ON."""
    name = VM_IN_STATE[state]
    run = invoke(sim, style, "status", plug=vm_id(sim, name, ident))
    if state == "Halted":
        assert_succeeded(sim, run, "Status: OFF", budget=BUDGET["status"], returncode=2)
    else:
        assert_succeeded(sim, run, "Status: ON", budget=BUDGET["status"])
    assert sim.power_log() == []
    assert sim.power_state(name) == state


# ---------------------------------------------------------------------------------------------
# off, on, reboot from every power state
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state,ident,style", CASES)
def test_off(sim: SimHandle, style: str, ident: str, state: str) -> None:
    """Anything but Halted is hard-shut-down (Paused and Suspended too) and ends Halted."""
    name = VM_IN_STATE[state]
    run = invoke(sim, style, "off", plug=vm_id(sim, name, ident))
    already = state == "Halted"
    expected = "Success: Already OFF" if already else "Success: Powered OFF"
    assert_succeeded(sim, run, expected, budget=BUDGET["off"])
    assert sim.power_state(name) == "Halted"
    assert operations(sim, sim.uuid(name)) == ([] if already else ["hard_shutdown"])
    assert len(sim.power_log()) == len(operations(sim, sim.uuid(name)))


@pytest.mark.parametrize("state,ident,style", CASES)
def test_on(sim: SimHandle, style: str, ident: str, state: str) -> None:
    """start, resume or unpause as the state needs; ends Running."""
    name = VM_IN_STATE[state]
    run = invoke(sim, style, "on", plug=vm_id(sim, name, ident))
    already = state == "Running"
    expected = "Success: Already ON" if already else "Success: Powered ON"
    assert_succeeded(sim, run, expected, budget=BUDGET["on"])
    assert sim.power_state(name) == "Running"
    assert operations(sim, sim.uuid(name)) == ([] if already else [POWERING_ON[state]])
    assert len(sim.power_log()) == len(operations(sim, sim.uuid(name)))


@pytest.mark.parametrize("action,name,expected", [
    ("on", "vm-halted", ["start"]), ("reboot", "vm-running", ["hard_shutdown", "start"])])
def test_start_is_forced_past_pre_boot_checks(sim: SimHandle, action: str, name: str,
                                             expected: list[str]) -> None:
    """VM.start(vm, start_paused=false, force=true), as fence-agents calls it: XAPI then
    skips the memory constraint check that refuses a nested-virt VM with ballooning
    (MEMORY_CONSTRAINT_VIOLATION_MAXPIN, xapi_vm.ml start). A fence that powered a node off
    must not be left unable to power it on."""
    sim.set_vm(name, platform={"nested-virt": "true"}, memory_dynamic_min="2147483648")
    run = invoke(sim, "stdin", action, plug=name)
    assert_succeeded(sim, run, "Success: Powered ON" if action == "on" else "Success: Rebooted",
                     budget=BUDGET[action])
    assert sim.power_state(name) == "Running"
    assert operations(sim, sim.uuid(name)) == expected


@pytest.mark.parametrize("state,ident,style", CASES)
def test_reboot(sim: SimHandle, style: str, ident: str, state: str) -> None:
    """A fencing reboot is a verified hard shutdown then a start, never a guest reboot."""
    name = VM_IN_STATE[state]
    run = invoke(sim, style, "reboot", plug=vm_id(sim, name, ident))
    assert_succeeded(sim, run, "Success: Rebooted", budget=BUDGET["reboot"])
    assert sim.power_state(name) == "Running"
    expected = ["start"] if state == "Halted" else ["hard_shutdown", "start"]
    assert operations(sim, sim.uuid(name)) == expected
    assert len(sim.power_log()) == len(expected)


def test_reboot_is_the_default_action(sim: SimHandle) -> None:
    run = run_agent(stdin=sim.params(plug="vm-running"))
    assert_succeeded(sim, run, "Success: Rebooted", budget=BUDGET["reboot"])
    assert operations(sim, sim.uuid("vm-running")) == ["hard_shutdown", "start"]


# ---------------------------------------------------------------------------------------------
# list, list-status
# ---------------------------------------------------------------------------------------------


def listing(run: AgentRun, separator: str, columns: int) -> list[list[str]]:
    rows = [line.split(separator) for line in run.stdout.splitlines()]
    assert all(len(row) == columns for row in rows), run
    return rows


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("separator", [None, ";", "|"])
def test_list(sim: SimHandle, style: str, separator: Optional[str]) -> None:
    """Exactly the real VMs, `uuid<sep>name` each: no template, snapshot or control domain."""
    run = invoke(sim, style, "list", separator=separator)
    assert run.returncode == 0, run
    rows = listing(run, separator or ",", 2)
    expected = real_vms(sim)
    assert sorted(rows) == sorted([uuid, name] for uuid, (name, _) in expected.items())
    names = {name for _, name in rows}
    assert {"vm-running", "vm-halted", "vm-paused", "vm-suspended", "vm-on-dead-host",
            "node1", "node2", "node3", "vm-shared-name", 'vm "quoted"'} <= names
    assert not {"tmpl-debian", "vm-running-snap"} & names
    assert not any(name.startswith("Control domain") for name in names)
    assert [name for _, name in rows].count("vm-dup") == 2
    assert [name for _, name in rows].count("vm-shared-name") == 1
    assert sim.total_requests() <= BUDGET["list"]
    assert sim.sessions_open() == 0


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("separator", [None, ";"])
def test_list_status(sim: SimHandle, style: str, separator: Optional[str]) -> None:
    """`uuid<sep>name<sep>ON|OFF`: only Halted is OFF."""
    run = invoke(sim, style, "list-status", separator=separator)
    assert run.returncode == 0, run
    rows = listing(run, separator or ",", 3)
    expected = sorted([uuid, name, "OFF" if state == "Halted" else "ON"]
                      for uuid, (name, state) in real_vms(sim).items())
    assert sorted(rows) == expected
    assert {row[2] for row in rows} == {"ON", "OFF"}
    assert sim.total_requests() <= BUDGET["list-status"]
    assert sim.sessions_open() == 0


# ---------------------------------------------------------------------------------------------
# monitor
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("plug", [None, "vm-halted"], ids=["no-plug", "halted-plug"])
def test_monitor_checks_the_device_without_listing_the_pool(
        sim: SimHandle, style: str, plug: Optional[str]) -> None:
    """Pacemaker's device check: exit 0, no output; a halted plug must not fail the device."""
    run = invoke(sim, style, "monitor", plug=plug)
    assert run.returncode == 0, run
    assert run.stdout == ""
    assert sim.total_requests() <= BUDGET["monitor"], sim.requests()
    listing_calls = [method for method in sim.requests()
                     if method.split(".")[-1].startswith(("get_all", "get_all_records"))
                     and "VM." in method]
    assert listing_calls == [], sim.requests()
    assert sim.requests().get("session.login_with_password") == 1
    assert sim.sessions_open() == 0


def test_monitor_fails_with_bad_credentials(sim: SimHandle) -> None:
    run = run_agent(stdin=sim.params(action="monitor", password="wrong"))
    assert_failed(sim, run, "SESSION_AUTHENTICATION_FAILED")


# The permissions a fencing device needs (xen-api datamodel_vm.ml allowed_roles), as XAPI
# names them in session.rbac_permissions (rbac.ml permission_of_action: lower-cased calls).
FENCING = ["vm.hard_shutdown", "vm.start", "vm.resume", "vm.unpause"]
RESET = ["vm.power_state_reset"]


def missing_permissions(line: str) -> list[str]:
    """The permissions the monitor's error line names, in its order."""
    listed = line.split("lacks the permission", 1)[1].split(";", 1)[0]
    listed = listed.split(" (allow_power_state_reset=1)")[0].lstrip("s ")
    return [name.strip() for name in listed.split(",")]


@pytest.mark.parametrize("role,reset,missing,least", [
    pytest.param("read-only", "0", FENCING, "vm-operator", id="read-only"),
    pytest.param("read-only", "1", FENCING + RESET, "pool-operator", id="read-only-reset"),
    pytest.param("vm-admin", "1", RESET, "pool-operator", id="vm-admin-reset"),
])
def test_monitor_refuses_a_user_that_cannot_fence(sim: SimHandle, role: str, reset: str,
                                                  missing: list[str], least: str) -> None:
    """A directory (external) user whose role may log in and read but not do what the device
    will be asked (vm.start among others): the monitor fails with one line naming exactly
    the missing permissions and the least role that holds them, in 3 requests."""
    sim.add_user("ad-fencer", "adpass", role)
    run = run_agent(stdin=sim.params(action="monitor", username="ad-fencer", password="adpass",
                                     allow_power_state_reset=reset))
    line = assert_failed(sim, run, "ad-fencer", "cannot fence", f"least role that has them is "
                         f"{least}")
    assert missing_permissions(line) == missing, line
    # One permission or several, and the option that asks for the reset when it is missing.
    why = " (allow_power_state_reset=1)" if set(missing) & set(RESET) else ""
    assert f"permission{'s' if len(missing) > 1 else ''} {', '.join(missing)}{why}; " in line
    assert sim.requests().get("session.get_record") == 1, sim.requests()
    assert sim.total_requests() <= BUDGET["monitor"], sim.requests()


def test_monitor_reads_the_new_session_after_a_relogin(sim: SimHandle) -> None:
    """XAPI forgets the session just as the monitor reads its record: the agent logs in
    again and repeats the read, which names the old session (HANDLE_INVALID); the record it
    wants is the new session's, read once more, and the monitor passes."""
    sim.faults.fail_next["session.get_record"] = [["SESSION_INVALID"]]
    run = run_agent(stdin=sim.params(action="monitor"))
    assert run.returncode == 0 and run.stderr == "", run
    assert sim.requests().get("session.get_record") == 3, sim.requests()
    assert sim.requests().get("session.login_with_password") == 2, sim.requests()
    assert sim.sessions_open() == 0


def test_monitor_fails_on_another_error_after_a_relogin(sim: SimHandle) -> None:
    """As above, but the repeated read fails for another reason: that error is the
    monitor's answer (only HANDLE_INVALID means the old session's name was read)."""
    sim.faults.fail_next["session.get_record"] = [["SESSION_INVALID"],
                                                  ["INTERNAL_ERROR", "injected"]]
    run = run_agent(stdin=sim.params(action="monitor"))
    assert_failed(sim, run, "INTERNAL_ERROR")
    assert sim.requests().get("session.get_record") == 2, sim.requests()


def test_monitor_refuses_the_read_only_user(sim: SimHandle) -> None:
    """The standard pool's read-only external user `ro`, on the command line too."""
    run = run_agent(sim.cli(action="monitor", username="ro", password="ropass"))
    line = assert_failed(sim, run, "'ro' cannot fence", "vm-operator")
    assert missing_permissions(line) == FENCING, line
    assert sim.total_requests() <= BUDGET["monitor"], sim.requests()


@pytest.mark.parametrize("user,role,reset", [
    pytest.param("root", None, "0", id="root"),
    pytest.param("root", None, "1", id="root-reset"),
    pytest.param("ad-fencer", "vm-operator", "0", id="vm-operator"),
    pytest.param("ad-fencer", "pool-operator", "1", id="pool-operator-reset"),
])
def test_monitor_passes_a_user_that_can_fence(sim: SimHandle, user: str, role: Optional[str],
                                              reset: str) -> None:
    """root (the local superuser: no permissions listed, all allowed) and a directory user
    with the least role for what the device may do pass, in 3 requests; and the user does
    fence: the same parameters power the VM off."""
    password = "secret"
    if role is not None:
        password = "adpass"
        sim.add_user(user, password, role)
    params = {"username": user, "password": password, "allow_power_state_reset": reset}
    run = run_agent(stdin=sim.params(action="monitor", **params))
    assert (run.returncode, run.stdout, run.stderr) == (0, "", ""), run
    assert sim.requests().get("session.get_record") == 1, sim.requests()
    assert sim.total_requests() <= BUDGET["monitor"], sim.requests()
    assert sim.sessions_open() == 0
    fenced = run_agent(stdin=sim.params(action="off", plug="vm-running", **params))
    assert fenced.returncode == 0, fenced
    assert sim.power_state("vm-running") == "Halted"


def test_monitor_on_a_pool_older_than_rbac_passes_and_says_why(sim: SimHandle) -> None:
    """A XAPI whose session records have no rbac_permissions (before XenServer 5.6) has no
    roles to check: not a failure; at verbose level the agent says it did not check."""
    sim.sim.settings.session_rbac_fields = False
    run = run_agent(stdin=sim.params(action="monitor", username="ro", password="ropass",
                                     verbose="1"))
    assert run.returncode == 0 and run.stdout == "", run
    assert "ERROR" not in run.stderr and "WARNING" not in run.stderr, run
    assert "rbac_permissions" in run.stderr and "not checked" in run.stderr, run
    assert sim.total_requests() <= BUDGET["monitor"], sim.requests()
    assert sim.sessions_open() == 0


# ---------------------------------------------------------------------------------------------
# The request budget does not grow with the pool
# ---------------------------------------------------------------------------------------------

POOL_SIZES = (10, 5000)
SCALED_VM = "vm-00007"  # a VM of Simulator.populate()'s pools


@pytest.fixture(scope="module")
def sized_pools() -> Iterator[dict[int, SimHandle]]:
    """A small and a large pool (plus populate()'s templates, snapshots and hosts)."""
    pools: dict[int, SimHandle] = {}
    try:
        for size in POOL_SIZES:
            pool = Simulator()
            pool.populate(vms=size)
            pools[size] = SimHandle(pool)
        yield pools
    finally:
        for handle in pools.values():
            handle.stop()


@pytest.mark.parametrize("action,state,stdout", [
    ("status", "Running", "Status: ON"),
    ("off", "Running", "Success: Powered OFF"),
    ("on", "Halted", "Success: Powered ON"),
    ("reboot", "Running", "Success: Rebooted"),
    ("list", None, None),
    ("monitor", None, None),
])
def test_requests_do_not_grow_with_the_pool(sized_pools: dict[int, SimHandle], action: str,
                                            state: Optional[str],
                                            stdout: Optional[str]) -> None:
    """The same calls, as many of each, at 10 and at 5000 VMs, within the budget."""
    calls: dict[int, dict[str, int]] = {}
    for size, handle in sized_pools.items():
        if state is not None:
            handle.set_power_state(SCALED_VM, state)
        handle.reset_counters()
        run = invoke(handle, "stdin", action, plug=SCALED_VM if stdout else None)
        assert run.returncode == 0, run
        if stdout is not None:
            assert run.stdout == stdout + "\n", run
        if action == "list":
            assert len(run.stdout.splitlines()) == size, run.stdout[-500:]
        assert handle.total_requests() <= BUDGET[action], (size, handle.requests())
        assert handle.sessions_open() == 0
        calls[size] = handle.requests()
    assert calls[POOL_SIZES[1]] == calls[POOL_SIZES[0]]


# ---------------------------------------------------------------------------------------------
# metadata, manpage, validate-all, help, version
# ---------------------------------------------------------------------------------------------

METADATA_SCHEMA = "/usr/share/cluster/relaxng/metadata.rng"
# Parameters the original agent (the 2012 article) and this one add to fence-agents' list.
OWN_PARAMETERS = {"uuid", "ssl_insecure", "ssl_ca_file", "ssl_fingerprint",
                  "allow_power_state_reset", "allow_power_state_reset_without_ha"}
# Defaults that differ from the distro agent's on purpose (fence_xenapi(8), login_timeout):
# XAPI answers every refused login only after 5 s (xapi/xapi_session.ml), so fence-agents' 5 s
# would report a wrong password as a timeout; the distro agent never applies login_timeout.
OWN_DEFAULTS = {"login_timeout": "10"}
ALL_ACTIONS = ["on", "off", "reboot", "status", "list", "list-status", "monitor", "metadata",
               "manpage", "validate-all"]

# The parameter list, pinned: (name, getopt, type, default, required, deprecated, obsoletes).
# A change here is a change of the agent's interface: update it on purpose, never to follow.
PARAMETER_SNAPSHOT = [
    ("action", "-o, --action=[action]", "string", "reboot", "1", None, None),
    ("login", "-l, --username=[name]", "string", None, "0", "1", None),
    ("passwd", "-p, --password=[password]", "string", None, "0", "1", None),
    ("passwd_script", "-S, --password-script=[script]", "string", None, "0", "1", None),
    ("password", "-p, --password=[password]", "string", None, "0", None, "passwd"),
    ("password_script", "-S, --password-script=[script]", "string", None, "0", None,
     "passwd_script"),
    ("plug", "-n, --plug=[id]", "string", None, "1", None, "port"),
    ("port", "-n, --plug=[id]", "string", None, "1", "1", None),
    ("session_url", "-s, --session-url", "string", None, "1", None, None),
    ("ssl_ca_file", "--ssl-ca-file=[file]", "string", None, "0", None, None),
    ("ssl_fingerprint", "--ssl-fingerprint=[sha256]", "string", None, "0", None, None),
    ("ssl_insecure", "--ssl-insecure", "boolean", None, "0", None, None),
    ("username", "-l, --username=[name]", "string", None, "0", None, "login"),
    ("uuid", "-U, --uuid=[uuid]", "string", None, "0", None, None),
    ("quiet", "-q, --quiet", "boolean", None, "0", None, None),
    ("verbose", "-v, --verbose", "boolean", None, "0", None, None),
    ("verbose_level", "--verbose-level", "integer", None, "0", None, None),
    ("debug", "-D, --debug-file=[debugfile]", "string", None, "0", "1", None),
    ("debug_file", "-D, --debug-file=[debugfile]", "string", None, "0", None, "debug"),
    ("version", "-V, --version", "boolean", None, "0", None, None),
    ("help", "-h, --help", "boolean", None, "0", None, None),
    ("plug_separator", "--plug-separator=[char]", "string", ",", "0", None, None),
    ("separator", "-C, --separator=[char]", "string", ",", "0", None, None),
    ("delay", "--delay=[seconds]", "second", "0", "0", None, None),
    ("disable_timeout", "--disable-timeout=[true/false]", "string", None, "0", None, None),
    ("login_timeout", "--login-timeout=[seconds]", "second", "10", "0", None, None),
    ("power_timeout", "--power-timeout=[seconds]", "second", "20", "0", None, None),
    ("power_wait", "--power-wait=[seconds]", "second", "0", "0", None, None),
    ("shell_timeout", "--shell-timeout=[seconds]", "second", "3", "0", None, None),
    ("stonith_status_sleep", "--stonith-status-sleep=[seconds]", "second", "1", "0", None,
     None),
    ("retry_on", "--retry-on=[attempts]", "integer", "1", "0", None, None),
    ("allow_power_state_reset", "--allow-power-state-reset", "boolean", None, "0", None, None),
    ("allow_power_state_reset_without_ha", "--allow-power-state-reset-without-ha", "boolean",
     None, "0", None, None),
]

ParameterRow = tuple[str, Optional[str], Optional[str], Optional[str], Optional[str],
                     Optional[str], Optional[str]]


def parameter_rows(xml: str) -> list[ParameterRow]:
    from lxml import etree

    root = etree.fromstring(xml.encode("utf-8"))
    rows: list[ParameterRow] = []
    for parameter in root.iter("parameter"):
        getopt, content = parameter.find("getopt"), parameter.find("content")
        assert getopt is not None and content is not None
        rows.append((str(parameter.get("name")), getopt.get("mixed"), content.get("type"),
                     content.get("default"), parameter.get("required"),
                     parameter.get("deprecated"), parameter.get("obsoletes")))
    return rows


def metadata_of(args: list[str], stdin: Optional[str] = None) -> str:
    run = run_agent(args, stdin=stdin)
    assert run.returncode == 0, run
    assert run.stderr == "", run
    return run.stdout


@pytest.fixture(scope="module")
def metadata() -> str:
    return metadata_of(["-o", "metadata"])


def test_metadata_is_the_same_through_stdin_and_command_line(metadata: str) -> None:
    assert metadata_of([], "action=metadata\n") == metadata
    assert metadata_of(["--action=metadata"]) == metadata


def test_metadata_validates_against_the_fence_agents_schema(metadata: str) -> None:
    from lxml import etree

    require_path(METADATA_SCHEMA)
    schema = etree.RelaxNG(etree.parse(METADATA_SCHEMA))
    document = etree.fromstring(metadata.encode("utf-8"))
    assert schema.validate(document), schema.error_log
    assert document.get("name") == "fence_xenapi"
    assert [action.get("name") for action in document.iter("action")] == ALL_ACTIONS


def test_metadata_keeps_every_parameter_of_the_distro_agent(metadata: str) -> None:
    """A drop-in replacement: same names, getopt strings, defaults, deprecated/obsoletes."""
    require_path(DISTRO_AGENT)
    theirs = metadata_of_distro()
    ours = {row[0]: row for row in parameter_rows(metadata)}
    for name, getopt, _type, default, _required, deprecated, obsoletes in theirs:
        assert name in ours, name
        assert ours[name][1] == getopt, (name, ours[name], getopt)
        assert ours[name][3] == OWN_DEFAULTS.get(name, default), (name, ours[name], default)
        assert (ours[name][5], ours[name][6]) == (deprecated, obsoletes), (name, ours[name])
    assert set(ours) - {row[0] for row in theirs} == OWN_PARAMETERS


def metadata_of_distro() -> list[ParameterRow]:
    run = run_agent(["-o", "metadata"], agent=DISTRO_AGENT)
    assert run.returncode == 0, run
    return parameter_rows(run.stdout)


def test_metadata_parameter_list_is_stable(metadata: str) -> None:
    assert parameter_rows(metadata) == PARAMETER_SNAPSHOT


@pytest.mark.parametrize("args,stdin", [
    (["-o", "manpage"], None), ([], "action=manpage\n")], ids=["cli", "stdin"])
def test_manpage_prints_the_metadata(metadata: str, args: list[str],
                                     stdin: Optional[str]) -> None:
    assert metadata_of(args, stdin) == metadata


@pytest.mark.parametrize("style", STYLES)
def test_validate_all_accepts_good_parameters(sim: SimHandle, style: str) -> None:
    run = invoke(sim, style, "validate-all", plug="vm-running")
    assert run.returncode == 0, run
    assert "Traceback" not in run.stderr
    assert sim.power_log() == []
    assert sim.sessions_open() == 0


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("params,mention", [
    ({"login_timeout": "abc"}, "login_timeout"),
    ({"session_url": None}, "session_url"),
    ({"username": None}, "username"),
    ({"session_url": "ftp://127.0.0.1/"}, "ftp://127.0.0.1/"),
], ids=["login_timeout=abc", "no-session_url", "no-username", "ftp-url"])
def test_validate_all_rejects_bad_parameters(sim: SimHandle, style: str,
                                             params: dict[str, Optional[str]],
                                             mention: str) -> None:
    run = invoke(sim, style, "validate-all", plug="vm-running", **params)
    assert_failed(sim, run, mention)
    assert sim.total_requests() == 0


@pytest.mark.parametrize("args,stdin", [
    (["-h"], None), (["--help"], None), ([], "help=1\n")], ids=["-h", "--help", "help=1"])
def test_help(args: list[str], stdin: Optional[str]) -> None:
    run = run_agent(args, stdin=stdin)
    assert run.returncode == 0, run
    assert run.stderr == ""
    for option in ("--action", "--username", "--password", "--plug", "--session-url",
                   "--uuid", "--ssl-ca-file", "--ssl-fingerprint", "--ssl-insecure",
                   "--allow-power-state-reset", "--login-timeout", "--power-timeout"):
        assert option in run.stdout, option


@pytest.mark.parametrize("args,stdin", [
    (["-V"], None), (["--version"], None), ([], "version=1\n")], ids=["-V", "--version",
                                                                     "version=1"])
def test_version(args: list[str], stdin: Optional[str]) -> None:
    """From a checkout, meson.build's version marked as such (installed: the plain version,
    tests/test_meson.py)."""
    run = run_agent(args, stdin=stdin)
    assert run.returncode == 0, run
    assert run.stderr == ""
    assert run.stdout == meson_version() + "+checkout\n", run
