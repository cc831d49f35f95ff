"""Unit tests of the agent's layers, each alone: parameter parsing, options, URLs, the XML-RPC
response decoder, VM resolution rules and metadata. The subprocess tests (test_agent_*.py)
prove the same behaviour end to end; these pin the rules down where they are made."""

from __future__ import annotations

import importlib.util
import sys
import threading
import xmlrpc.client
from types import ModuleType
from typing import Any

import pytest

from tests.support import AGENT, meson_version


def _load_agent() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fence_xenapi_under_test", AGENT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


fx = _load_agent()


# --- stdin and command line ------------------------------------------------------------------


def test_stdin_last_value_wins_comments_and_aliases() -> None:
    values, warnings = fx.parse_stdin(
        "# a comment\n\naction=status\nport=vm one\nlogin=root\nsession-url=http://h/\n"
        "passwd=a=b c \nport=vm two\noption=off\n")
    assert values["plug"] == "vm two"  # last value wins, spaces kept
    assert values["username"] == "root"
    # everything after the first '=', but right-stripped: fence-agents strips each line, so a
    # trailing blank never belongs to a value (fence-agents strips each stdin line)
    assert values["password"] == "a=b c"
    assert values["session_url"] == "http://h/"
    assert values["action"] == "off"  # `option` is the old name of action
    assert warnings == []


@pytest.mark.parametrize("line,value", [
    ('plug="vm one"', "vm one"), ('plug=""', ""), ('plug="', '"'), ('plug=a"b"', 'a"b"'),
    ('plug=""quoted""', '"quoted"')])
def test_stdin_strips_one_pair_of_surrounding_double_quotes(line: str, value: str) -> None:
    values, _ = fx.parse_stdin(line + "\n")
    assert values["plug"] == value


def test_stdin_warnings_name_what_was_ignored() -> None:
    """As in fence-agents, a line without '=' is a parameter with the empty value: a known
    name is set to "", an unknown one warned about like any unknown parameter."""
    values, warnings = fx.parse_stdin("frobnicate=1\njustaword\nseparator\n")
    assert values == {"separator": ""}
    assert len(warnings) == 2
    assert "unknown parameter" in warnings[0] and "frobnicate" in warnings[0]
    assert "unknown parameter" in warnings[1] and "justaword" in warnings[1]


def test_stdin_unknown_keys_and_bad_booleans_warn_and_are_ignored() -> None:
    values, warnings = fx.parse_stdin(
        "frobnicate=1\nquiet=perhaps\nverbose=yes\nssl_insecure=off\n")
    assert "frobnicate" not in values and "quiet" not in values
    assert values["verbose"] == "1" and values["verbose_level"] == "1"
    assert values["ssl_insecure"] == "0"
    assert len(warnings) == 2
    assert "frobnicate" in warnings[0] and "quiet" in warnings[1]


@pytest.mark.parametrize("word,expected", [
    ("1", "1"), ("yes", "1"), ("on", "1"), ("TRUE", "1"),
    ("0", "0"), ("no", "0"), ("off", "0"), ("False", "0"),
])
def test_stdin_booleans(word: str, expected: str) -> None:
    values, _ = fx.parse_stdin(f"quiet={word}\n")
    assert values["quiet"] == expected


def test_argv_short_long_and_stacked_verbose() -> None:
    values, warnings = fx.parse_argv(
        ["-o", "status", "-l", "root", "--password=x", "-n", "vm1", "-s", "http://h/", "-vvv",
         "--ssl-insecure", "stray"])
    assert values == {"action": "status", "username": "root", "password": "x", "plug": "vm1",
                      "session_url": "http://h/", "verbose": "1", "verbose_level": "3",
                      "ssl_insecure": "1"}
    assert warnings and "stray" in warnings[0]


def test_argv_unknown_option_is_a_usage_error() -> None:
    with pytest.raises(fx.UsageError, match="--frob"):
        fx.parse_argv(["--frob"])


# --- options ---------------------------------------------------------------------------------


def _options(**values: str) -> Any:
    base = {"session_url": "http://127.0.0.1/", "username": "root", "password": "pw"}
    base.update(values)
    return fx.Options.from_values(base)


def test_defaults_come_from_the_parameter_table() -> None:
    opts = _options()
    assert opts.action == "reboot"
    assert (opts.login_timeout, opts.shell_timeout, opts.power_timeout) == (10, 3, 20)
    assert opts.retry_on == 1 and opts.separator == ","
    assert "pw" not in repr(opts)


@pytest.mark.parametrize("values,level", [
    ({}, 0), ({"verbose": "1"}, 1), ({"verbose": "0"}, 0), ({"verbose_level": "3"}, 3),
    ({"verbose": "1", "verbose_level": "2"}, 2), ({"verbose": "1", "verbose_level": "0"}, 0)])
def test_verbose_level(values: dict[str, str], level: int) -> None:
    """verbose=1 alone means level 1 (fence-agents); an explicit verbose_level wins."""
    assert _options(**values).verbose_level == level


def test_targets_uuid_then_plug_then_nodename() -> None:
    uuid = "0A1B2C3D-0000-4000-8000-00000000000A"
    assert _options(nodename="n1").targets() == [fx.Target("n1")]
    assert _options(nodename="n1", plug="vm1,vm2").targets() == [fx.Target("vm1"),
                                                                   fx.Target("vm2")]
    opts = _options(nodename="n1", plug="vm1", uuid=uuid)
    assert opts.targets() == [fx.Target(uuid.lower(), uuid_only=True)]
    assert opts.cross_checks() == [fx.Target("vm1")]


@pytest.mark.parametrize("values,message", [
    ({"login_timeout": "abc"}, "login_timeout=abc"),
    ({"power_timeout": "-1"}, "zero or more"),
    ({"retry_on": "1.5"}, "whole number"),
    ({"uuid": "not-a-uuid"}, "not a UUID"),
    ({"action": "explode"}, "unknown action"),
    ({"ssl_fingerprint": "12:34"}, "SHA-256"),
])
def test_bad_values_are_usage_errors(values: dict[str, str], message: str) -> None:
    with pytest.raises(fx.UsageError, match=message):
        _options(**values)


@pytest.mark.parametrize("values,message", [
    ({"session_url": ""}, "session_url is required"),
    ({"username": ""}, "username is required"),
    ({"action": "off"}, "needs plug"),
    ({"action": "list", "session_url": "ftp://h/"}, "expected http"),
    ({"action": "list", "ssl_insecure": "1", "ssl_ca_file": "/etc/hostname"}, "contradicts"),
    ({"action": "list", "ssl_ca_file": "/nonexistent/ca.pem"}, "cannot read"),
    # read at option time, not at the first connection (mutation survivors)
    ({"action": "list", "ssl_ca_file": "/etc/hostname"}, "not a readable file of PEM"),
    ({"action": "list", "password": "pw\x01"}, "^password holds the character U[+]0001"),
    ({"action": "list", "username": "ro\x1fot"}, "^username holds the character U[+]001F"),
    ({"action": "off", "plug": "vm\x00"}, "^plug holds the character U[+]0000"),
])
def test_check_refuses_unusable_runs(values: dict[str, str], message: str) -> None:
    with pytest.raises(fx.UsageError, match=message):
        _options(**values).check()


def test_an_unusable_ca_file_is_named_with_openssls_reason_only() -> None:
    """The line gives OpenSSL's reason (e.g. NO_CERTIFICATE_OR_CRL_FOUND), not its whole
    text with library and source positions."""
    with pytest.raises(fx.UsageError) as refused:
        _options(action="list", ssl_ca_file="/etc/hostname").check()
    message = str(refused.value)
    assert message.startswith("ssl_ca_file=/etc/hostname: not a readable file of PEM CA "
                              "certificates (") and message.endswith(")"), message
    assert "_ssl.c" not in message and "[" not in message, message


def test_fingerprints_one_per_host() -> None:
    first, second = bytes(range(32)), bytes(range(1, 33))
    text = (f"sha256 Fingerprint={first.hex(':').upper()}, {second.hex()} "
            f"{first.hex()}")
    assert fx.parse_fingerprints(text) == (first, second)
    assert fx.parse_fingerprints(None) == ()
    with pytest.raises(fx.UsageError, match="SHA-256"):
        fx.parse_fingerprints(f"{first.hex()},12:34")
    with pytest.raises(fx.UsageError, match="SHA-256"):
        fx.parse_fingerprints(" , ")
    # openssl's label with a blank after its "=", as pasted from a terminal: the label alone
    # is no fingerprint, the digits after it are.
    assert fx.parse_fingerprints(f"SHA256 Fingerprint= {first.hex(':')}") == (first,)


@pytest.mark.parametrize(("parse", "text"), [
    ("parse_fingerprint", "g" * 100), ("parse_fingerprint", "sha256 Fingerprint=" + "g" * 100),
    ("parse_fingerprints", "g" * 100), ("parse_fingerprints", "sha256 " * 20)])
def test_a_bad_fingerprint_is_shown_in_80_characters(parse: str, text: str) -> None:
    """The value in the refusal is bounded: its first 80 characters."""
    with pytest.raises(fx.UsageError) as refused:
        getattr(fx, parse)(text)
    assert str(refused.value).startswith(f"ssl_fingerprint={text[:80]}…: not a SHA-256"), \
        refused.value


def test_fingerprint_accepts_openssl_output() -> None:
    digest = bytes(range(32))
    shown = "sha256 Fingerprint=" + digest.hex(":").upper()
    assert fx.parse_fingerprint(shown) == digest
    assert fx.parse_fingerprint(digest.hex()) == digest


# The longest host name DNS allows: 253 characters (four labels of 63, dots between).
NAME_253 = ".".join(["a" * 63] * 3 + ["a" * 61])


@pytest.mark.parametrize("text,expected", [
    ("xen1", "https://xen1:443/"),
    ("http://xen1", "http://xen1:80/"),
    ("https://10.0.0.1:8443/", "https://10.0.0.1:8443/"),
    ("https://[::1]:4443", "https://[::1]:4443/"),
    ("HTTPS://XEN1:8443/RPC2", "https://xen1:8443/RPC2"),
    ("bücher.example", "https://xn--bcher-kva.example:443/"),
    # XAPI serves any path under / (http_svr.ml longest prefix) and reads a query apart; a
    # fragment is never sent (RFC 3986).
    ("https://host/path?x=1#f", "https://host:443/path?x=1"),
    ("http://xen1/#top", "http://xen1:80/"), ("http://xen1?a=b", "http://xen1:80/?a=b"),
    ("https://xen1:1/", "https://xen1:1/"), ("https://xen1:65535/", "https://xen1:65535/"),
    ("xen1.a.", "https://xen1.a.:443/"),
    ("https://[fe80::1%eth0]:4443/", "https://[fe80::1%eth0]:4443/"),
    (NAME_253, f"https://{NAME_253}:443/"),
])
def test_endpoints(text: str, expected: str) -> None:
    assert str(fx.Endpoint.parse(text)) == expected


def test_host_is_slave_keeps_scheme_and_port() -> None:
    master = fx.Endpoint.parse("https://127.0.0.2:4443/").with_host("127.0.0.1")
    assert str(master) == "https://127.0.0.1:4443/"


def test_a_master_address_that_is_no_host_name_is_shown_in_80_characters() -> None:
    """What a member sent as the master's address is the pool's text: the line shows at
    most 80 characters of it."""
    with pytest.raises(fx.ConnectionFailure) as refused:
        fx.Endpoint.parse("https://127.0.0.2:4443/").with_host("a" * 200)
    message = str(refused.value)
    assert "'" + "a" * 80 + "…'" in message and "a" * 81 not in message, message


@pytest.mark.parametrize("text,message", [
    ("https://xen1:0/", "port"), ("https://xen1:65536/", "port"), ("https://xen1:x/", "port"),
    ("https://::1/", "brackets"), ("https://[::1/", "IPv6"), ("https:///", "expected"),
    ("https://xen1/a b", "path"), ("https://xen1/?q=\u00fc", "query"),
    ("https://xen1/p\u00fc?q=1", "path"), ("gopher://xen1/", "expected"),
    ("https://" + "a" * 64 + "/", "host name"), ("https://a..b/", "host name"),
    ("https://xen\u200f1/", r"IDNA can encode \((?!invalid\))[^(]"),  # a reason
    ("https://[::1%\x1b]/", "IPv6"), ("https://[::1%\u00e9]/", "IPv6"),
    ("https://a..b./", "host name"), ("https://" + NAME_253 + "a/", "host name"),
])
def test_endpoint_refuses_what_cannot_be_reached(text: str, message: str) -> None:
    with pytest.raises(fx.UsageError, match=message):
        fx.Endpoint.parse(text)


def test_endpoint_refuses_credentials_in_url() -> None:
    with pytest.raises(fx.UsageError, match="credentials"):
        fx.Endpoint.parse("https://root:pw@xen1/")


# --- XML-RPC decoding ------------------------------------------------------------------------


def _response(value: Any) -> bytes:
    return xmlrpc.client.dumps((value,), methodresponse=True).encode()


def _read_answer(body: bytes, method: str, fields: frozenset[str] | None,
                 deadline: Any = None) -> Any:
    """What XapiChannel does with an answer's body: fed as it arrives, then finished."""
    answer = fx._Answer(method, fields, deadline)
    for start in range(0, len(body), 1000):
        answer.feed(body[start:start + 1000])
    return answer.finish()


def test_decoder_matches_xmlrpc_client_on_every_type() -> None:
    value = {"Status": "Success", "Value": {
        "s": "text", "i": 42, "b": True, "f": 1.5, "l": ["a", 1, False], "nested": {"x": ""}}}
    assert _read_answer(_response(value), "m", None) == value["Value"]


def test_decoder_projection_keeps_only_wanted_fields() -> None:
    records = {"OpaqueRef:1": {"uuid": "u1", "name_label": "a", "VCPUs_max": "4"},
               "OpaqueRef:2": {"uuid": "u2", "name_label": "b", "other_config": {"k": "v"}}}
    body = _response({"Status": "Success", "Value": records})
    assert _read_answer(body, "m", frozenset({"uuid"})) == {
        "OpaqueRef:1": {"uuid": "u1"}, "OpaqueRef:2": {"uuid": "u2"}}


def test_decoder_raises_xapi_failures_with_code_and_params() -> None:
    description = ["VM_BAD_POWER_STATE", "OpaqueRef:1", "running", "halted"]
    body = _response({"Status": "Failure", "ErrorDescription": description})
    with pytest.raises(fx.XapiFailure) as caught:
        _read_answer(body, "VM.hard_shutdown", None)
    assert caught.value.code == "VM_BAD_POWER_STATE"
    assert str(caught.value) == ("VM.hard_shutdown failed: VM_BAD_POWER_STATE: OpaqueRef:1, "
                                 "running, halted")


@pytest.mark.parametrize("body", [
    b"<html>not xml-rpc</html>",
    b"garbage <<<",
    xmlrpc.client.dumps(xmlrpc.client.Fault(1, "boom"), methodresponse=True).encode(),
    _response("a bare string"),
    _response({"Status": "Weird"}),
])
def test_decoder_refuses_what_is_no_xapi_answer(body: bytes) -> None:
    with pytest.raises(fx.AnswerError):
        _read_answer(body, "VM.get_all", None)


# --- resolution rules ------------------------------------------------------------------------


def _vm(ref: str, name: str, uuid: str, *, template: bool = False, snapshot: bool = False,
        dom0: bool = False, state: str = "Running") -> Any:
    return fx.Vm(ref, uuid, name, state, template or snapshot, snapshot, dom0, "OpaqueRef:NULL")


U1 = "11111111-1111-4111-8111-111111111111"
U2 = "22222222-2222-4222-8222-222222222222"
U3 = "33333333-3333-4333-8333-333333333333"


def test_pick_prefers_the_real_vm_over_a_template_of_the_same_name() -> None:
    real, template = _vm("r1", "web", U1), _vm("r2", "web", U2, template=True)
    assert fx._pick(fx.Target("web"), [template, real]) is real


def test_pick_refuses_ambiguous_names_listing_uuids() -> None:
    with pytest.raises(fx.FenceError, match=f"ambiguous.*{U1}.*{U2}"):
        fx._pick(fx.Target("web"), [_vm("r1", "web", U1), _vm("r2", "web", U2)])


@pytest.mark.parametrize("kind,flags", [
    ("template", {"template": True}), ("snapshot", {"snapshot": True}),
    ("control domain", {"dom0": True})])
def test_pick_refuses_what_is_not_a_vm(kind: str, flags: dict[str, bool]) -> None:
    thing = _vm("r1", "x", U1, template=flags.get("template", False),
                snapshot=flags.get("snapshot", False), dom0=flags.get("dom0", False))
    with pytest.raises(fx.FenceError, match=kind):
        fx._pick(fx.Target("x"), [thing])
    with pytest.raises(fx.FenceError, match=kind):
        fx._pick(fx.Target(U1.upper()), [thing])


def test_pick_by_uuid_any_case_and_uuid_only_ignores_names() -> None:
    vm = _vm("r1", "web", U1)
    assert fx._pick(fx.Target(U1.upper()), [vm]) is vm
    named_like_uuid = _vm("r2", U3, U2)
    assert fx._pick(fx.Target(U3, uuid_only=True), [named_like_uuid]) is None


class _QueryRecorder:
    """A session that records the queries VM resolution sends and finds nothing."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        assert method == "VM.get_all_records_where", method
        self.queries.append(args[0])
        return {}


def test_only_a_name_reads_every_vm() -> None:
    """A name is compared with surrounding whitespace ignored, which XAPI's `=`-only query
    language cannot ask for: it reads every VM that is not a template. A UUID plug names
    one VM whatever the names: it asks for that UUID and for names equal to it, one small
    answer at any pool size."""
    session = _QueryRecorder()
    fx._query_matches(session, [fx.Target(U1.upper())])
    fx._query_matches(session, [fx.Target(U1, uuid_only=True)])
    fx._query_matches(session, [fx.Target(" web ")])
    by_uuid, uuid_only, by_name = session.queries
    assert by_uuid == (f'field "uuid"="{U1}" or field "name__label"="{U1.upper()}"')
    assert uuid_only == f'field "uuid"="{U1}"'
    assert by_name == ('field "name__label"=" web " or field "name__label"="web" or '
                       'field "is_a_template"="false"')


def test_pick_refuses_a_uuid_that_is_also_another_vms_name() -> None:
    by_uuid, by_name = _vm("r1", "web", U1), _vm("r2", U1, U2)
    with pytest.raises(fx.FenceError, match="ambiguous"):
        fx._pick(fx.Target(U1), [by_uuid, by_name])


def test_pick_by_uuid_ignores_templates_and_itself_named_like_the_uuid() -> None:
    """Only another real VM named like the UUID makes it ambiguous: not a template of that
    name, nor the VM itself if it is named after its own UUID."""
    vm, template = _vm("r1", U1, U1), _vm("r2", U1, U2, template=True)
    assert fx._pick(fx.Target(U1), [vm, template]) is vm


def test_pick_returns_none_for_nothing() -> None:
    assert fx._pick(fx.Target("ghost"), [_vm("r1", "web", U1)]) is None


def test_whole_answers_refuse_dtds_and_entities() -> None:
    """An answer with a DTD (entity declarations: the billion laughs) is refused before any
    entity is declared or expanded; only XML's own references are read."""
    laughs = (b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaaaaaaaa">'
              b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>' + _response("&b;"))
    with pytest.raises(fx.AnswerError, match="DOCTYPE"):
        fx.decode_xmlrpc_response(laughs.replace(b"&amp;b;", b"&b;"))
    assert fx.decode_xmlrpc_response(_response("<&>\"'")) == (False, "<&>\"'")


# --- metadata --------------------------------------------------------------------------------


def test_metadata_order_and_marks_follow_fence_agents() -> None:
    entries = [(name, extra) for name, _, extra in fx.metadata_entries()]
    names = [name for name, _ in entries]
    # fence-agents' own order for the parameters both agents have
    distro_order = ["action", "login", "passwd", "passwd_script", "password", "password_script",
                    "plug", "port", "session_url", "username", "quiet", "verbose",
                    "verbose_level", "debug", "debug_file", "version", "help", "plug_separator",
                    "separator", "delay", "disable_timeout", "login_timeout", "power_timeout",
                    "power_wait", "shell_timeout", "stonith_status_sleep", "retry_on"]
    assert [n for n in names if n in distro_order] == distro_order
    marks = dict(entries)
    assert marks["port"] == {"deprecated": "1"} and marks["plug"] == {"obsoletes": "port"}
    assert marks["login"] == {"deprecated": "1"} and marks["username"] == {"obsoletes": "login"}
    assert "nodename" not in names


def test_version_from_meson_build_in_a_checkout() -> None:
    assert fx.agent_version() == meson_version() + "+checkout"


# --- the fast record-map scanner -------------------------------------------------------------

FIELDS = frozenset({"uuid", "name_label", "power_state", "is_a_template"})


def _records_body(records: dict[str, Any]) -> bytes:
    return _response({"Status": "Success", "Value": records})


def _scan(body: bytes, fields: frozenset[str]) -> Any:
    """The record map as the agent reads it, after checking that it took the scanner's way
    (not the whole-answer parse that failures take)."""
    scanner = fx.RecordMapScanner(fields)
    scanner.feed(body)
    assert scanner.is_record_map()
    return _read_answer(body, "VM.get_all_records_where", fields)


def _parse_whole(body: bytes, fields: frozenset[str]) -> Any:
    return fx._project(fx._xapi_result(fx.decode_xmlrpc_response(body), "m")[1], fields)


def test_scanner_agrees_with_the_full_parse() -> None:
    records = {
        f"OpaqueRef:{i}": {"uuid": f"u{i}", "name_label": f"vm <{i}> & \"co\" é",
                           "power_state": "Running", "is_a_template": i % 2 == 0,
                           "other_config": {"k": "v"}, "VBDs": ["OpaqueRef:x"],
                           "current_operations": {"OpaqueRef:t": "pause"}}
        for i in range(20)}
    body = _records_body(records)
    scanned = _scan(body, FIELDS)
    assert scanned == {ref: {k: v for k, v in rec.items() if k in FIELDS}
                       for ref, rec in records.items()}
    assert _parse_whole(body, FIELDS) == scanned
    # XAPI itself sends strings untyped and no whitespace: read that form too
    compact = body.replace(b"\n", b"").replace(b"<string>", b"").replace(b"</string>", b"")
    assert _scan(compact, FIELDS) == scanned


def test_scanner_reads_the_record_not_a_nested_key_named_like_a_field() -> None:
    """A VM owner may put `name_label` into other_config: the scanner must not be fooled, and
    it must not give up either (a fallback to a full parse is what made 50 MB cost 500 MB)."""
    records = {"OpaqueRef:1": {"uuid": "u1", "other_config": {"name_label": "forged",
                                                              "power_state": "Running"},
                               "name_label": "real", "power_state": "Halted",
                               "is_a_template": False,
                               "blobs": {"uuid": {"uuid": ["u9"]}}}}
    body = _records_body(records)
    assert _scan(body, FIELDS) == {"OpaqueRef:1": {
        "uuid": "u1", "name_label": "real", "power_state": "Halted", "is_a_template": False}}
    assert _parse_whole(body, FIELDS)["OpaqueRef:1"]["name_label"] == "real"


def test_scanner_leaves_failures_to_the_parser_and_refuses_what_it_cannot_read() -> None:
    failure = _response({"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", "x"]})
    scanner = fx.RecordMapScanner(FIELDS)
    scanner.feed(failure)
    assert not scanner.is_record_map()
    with pytest.raises(fx.XapiFailure, match="SESSION_INVALID"):
        _read_answer(failure, "VM.get_all_records_where", FIELDS)
    assert _scan(_records_body({}), FIELDS) == {}
    missing = _records_body({"OpaqueRef:1": {"uuid": "u1"}})
    with pytest.raises(fx.AnswerError, match="has no"):
        _scan(missing, FIELDS)


class _Clock:
    """A monotonic clock a test sets: a node up for days reads days."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_deadline_counts_on_its_clock_and_caps_on_the_same_one() -> None:
    clock = _Clock(1000.0)
    deadline = fx.Deadline(10, "powering off 'vm'", clock=clock)
    assert (deadline.timeout(), deadline.timeout(cap=3)) == (10, 3)
    short = deadline.capped(4)
    assert (short.remaining(), short.what) == (4, deadline.what)
    assert deadline.capped(20) is deadline
    clock.now += 4
    with pytest.raises(fx.TimedOut, match="powering off 'vm' did not finish within 4 s"):
        short.check()
    assert deadline.remaining() == 6
    clock.now += 6
    with pytest.raises(fx.TimedOut, match="within 10 s"):
        deadline.timeout()


def _record_with_a_key_holding_lt() -> bytes:
    """One VM record whose other_config key is `a<b` (XAPI does not escape map keys), then
    thousands of tokens the precise way reads after that name."""
    record = {"uuid": "u1", "other_config": {"a_lt_b": "v"}, "name_label": "vm",
              "power_state": "Halted", "is_a_template": False,
              "blobs": {f"k{i}": {"x": {"y": "z"}} for i in range(2000)}}
    return _records_body({"OpaqueRef:1": record}).replace(b"a_lt_b", b"a<b")


def test_scanner_keeps_its_deadline_after_a_member_name_holding_lt() -> None:
    """After a member name holding '<' the scanner reads on and still measures time against
    the deadline (not against a buffer offset): on a node up for days, with an hour left, the
    answer is read; once the clock passes the deadline, reading stops with TimedOut."""
    body = _record_with_a_key_holding_lt()
    clock = _Clock(3 * 86400.0)
    deadline = fx.Deadline(3600, "reading", clock=clock)
    assert _read_answer(body, "VM.get_all_records_where", FIELDS, deadline) == {
        "OpaqueRef:1": {"uuid": "u1", "name_label": "vm", "power_state": "Halted",
                        "is_a_template": False}}
    answer = fx._Answer("VM.get_all_records_where", FIELDS, deadline)
    answer.feed(body)
    clock.now += 3601
    with pytest.raises(fx.TimedOut, match="reading did not finish within 3600 s"):
        answer.finish()


@pytest.mark.parametrize(("seconds", "text"), [
    (10, "10"), (2.0, "2"), (7.98321, "7.98"), (0.05, "0.05"), (0.1, "0.1"), (86400, "86400")])
def test_durations_in_messages_are_short_and_never_round_to_zero(seconds: float,
                                                                 text: str) -> None:
    """A budget of 0.05 s is reported as 0.05 s, not 0.1 or 0.0; what is left of a budget
    (7.98321) as 7.98."""
    assert fx.seconds_text(seconds) == text


@pytest.mark.parametrize("value,shown", [
    ("status", "status"), ("status\rpasswd=x", "status…"), ("a\x85b", "a…"),
    ("a\u2028b", "a…"), ("\rpasswd=x", "…"), ("x" * 50, "x" * 40 + "…"),
    ("x" * 40 + "\nsecret", "x" * 40 + "…")])  # a first line of exactly 40: more follows
def test_shown_value_is_the_first_line_only(value: str, shown: str) -> None:
    assert fx.shown_value(value) == shown


def test_no_password_leaves_once_the_login_race_is_decided() -> None:
    """The race's own rule, checked where it is kept (an attempt that finished connecting
    just as another host won slips past the abort of its socket only here): once decided,
    no attempt may send the password; before that, each address gets it once."""
    endpoint = fx.Endpoint.parse("https://127.0.0.2:4443/")
    tls = fx.TlsPolicy(insecure=True)
    race = fx.LoginRace([endpoint], tls, "root", "secret", fx.Deadline(5.0, "login"))
    first, second, late = (fx._Attempt(race, endpoint, tls, ()) for _ in range(3))
    assert race.may_send(first, ("127.0.0.2", 4443))
    assert not race.may_send(second, ("127.0.0.2", 4443))  # the same address: never twice
    race._decide()
    assert not race.may_send(late, ("127.0.0.3", 4443))
    assert (first.sent, second.sent, late.sent) == (True, False, False)


def test_a_session_queued_when_the_login_race_closes_is_logged_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two addresses of the master can both answer before the race takes the first answer
    in: the second session waits in the queue. close() must log it out (no subprocess test
    can make two answers arrive within the same microseconds)."""
    endpoint = fx.Endpoint.parse("https://127.0.0.2:4443/")
    tls = fx.TlsPolicy(insecure=True)
    race = fx.LoginRace([endpoint], tls, "root", "secret", fx.Deadline(5.0, "login"))
    attempt = fx._Attempt(race, endpoint, tls, ())
    logged_out: list[object] = []
    monkeypatch.setattr(attempt, "log_out", logged_out.append)
    attempt.thread = threading.Thread(target=lambda: None)
    attempt.thread.start()
    race._attempts[("https", "127.0.0.2", 4443)] = attempt
    session = fx._Session("OpaqueRef:queued")
    race.report(attempt, session)
    race.close(fx.Deadline(1.0, "late logins"))
    assert logged_out == [session]


@pytest.mark.parametrize(("url", "host"), [
    ("https://127.0.0.2:4443/", b"Host: 127.0.0.2:4443\r\n"),
    ("https://pool.example:443/", b"Host: pool.example:443\r\n"),
    ("https://[::1]:443/", b"Host: [::1]:443\r\n"),
])
def test_the_host_header_brackets_an_ipv6_address_only(url: str, host: bytes) -> None:
    """RFC 9112's Host: a name or IPv4 address as it is, an IPv6 address in brackets (a
    reverse proxy in front of the pool routes on it)."""
    channel = fx.XapiChannel(fx.Endpoint.parse(url), fx.TlsPolicy(insecure=True))
    assert host in channel._head(0, None)


def test_a_target_is_described_in_100_characters() -> None:
    """A plug or uuid quoted in a refusal: its first 100 characters, then a mark."""
    assert fx.Target("p" * 150).describe() == "'" + "p" * 100 + "…'"
    assert fx.Target("u" * 150, uuid_only=True).describe() == "uuid '" + "u" * 100 + "…'"
