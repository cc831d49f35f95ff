"""Property-based fuzzing of the agent's parsers, with Hypothesis: stdin, command
line, numbers, URLs and host names, the XML-RPC request encoder, the answer decoder and the
streaming record-map scanner. Each property says what may come out: a value that is right,
or the one error type the caller turns into one line; never anything else.

Seeded and reproducible: the seed is FUZZ_SEED if set, 0 under CI=true, else random; it is
printed with every failure (rerun with FUZZ_SEED=<seed>). FUZZ_EXAMPLES scales the effort.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import random
import re
import string
import sys
import time
import xmlrpc.client
from types import ModuleType
from typing import Any, Dict, Iterator, List

import pytest
from hypothesis import HealthCheck, given, note, seed, settings
from hypothesis import strategies as st

from tests.hostile import xapi_value
from tests.support import AGENT, IN_CI


def _load_agent() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fence_xenapi_fuzzed", AGENT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fx = _load_agent()
SEED = int(os.environ.get("FUZZ_SEED") or (0 if IN_CI else random.SystemRandom().randrange(2**32)))
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(autouse=True)
def _show_seed() -> Iterator[None]:
    print(f"FUZZ_SEED={SEED} (rerun with FUZZ_SEED={SEED})")
    yield


# XML 1.0 can carry these; the rest (NUL, most control characters, surrogates) it cannot.
any_text = st.text()
markup = st.sampled_from(["<", ">", "&", "</name>", "<name>", "<value>", "</value>", "<struct>",
                          "</struct>", "<array>", "</array>", "&#x110000;", "&#0;", "&amp;",
                          "]]>", "<!--", "<!DOCTYPE x>", "\x00", "\udcff"])
nasty_text = st.lists(any_text | markup, max_size=6).map("".join)


# ---------------------------------------------------------------------------------------------
# stdin, command line, numbers
# ---------------------------------------------------------------------------------------------

STDIN_KEYS = [*sorted(fx.STDIN_NAMES), "", "frob", "action ", " plug", "#x", "a-b"]


@st.composite
def stdin_documents(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.booleans()):
            key = draw(st.sampled_from(STDIN_KEYS))
            lines.append(f"{key}={draw(nasty_text)}")
        else:
            lines.append(draw(nasty_text))
    return draw(st.sampled_from(["\n", "\r\n", "\n\n"])).join(lines)


@FUZZ
@seed(SEED)
@given(stdin_documents())
def test_stdin_gives_options_or_one_usage_error(text: str) -> None:
    values, warnings = fx.parse_stdin(text)
    assert all("\n" not in warning for warning in warnings)
    try:
        opts = fx.Options.from_values(values)
        opts.check()
    except fx.FenceError as error:
        assert str(error)
        return
    assert opts.action in fx.ACTIONS
    for name in ("delay", "login_timeout", "power_timeout", "shell_timeout", "power_wait"):
        assert 0 <= getattr(opts, name) <= fx.MAX_SECONDS


@FUZZ
@seed(SEED)
@given(st.binary(max_size=300) | stdin_documents().map(lambda t: t.encode("utf-8",
                                                                          "surrogateescape")))
def test_stdin_bytes_decode_or_are_refused_by_line(data: bytes) -> None:
    try:
        text = fx.decode_stdin(data)
    except fx.UsageError as error:
        assert "not valid UTF-8" in str(error)
        with pytest.raises(UnicodeDecodeError):
            data.decode("utf-8")
        return
    assert text == data.decode("utf-8")


ARGV_WORDS = ["-o", "-l", "-p", "-n", "-s", "-v", "-vvv", "-q", "--plug", "--action=list",
              "--login-timeout", "--ssl-insecure", "--", "-", "--frob", "-Z"]


@FUZZ
@seed(SEED)
@given(st.lists(st.sampled_from(ARGV_WORDS) | nasty_text, max_size=10))
def test_command_line_gives_options_or_one_usage_error(argv: List[str]) -> None:
    try:
        values, _ = fx.parse_argv(fx.decode_argv(argv))
        fx.Options.from_values(values).check()
    except fx.FenceError:
        return


@FUZZ
@seed(SEED)
@given(any_text | st.floats().map(repr) | st.integers().map(str) |
       st.from_regex(r"\A[-+]?[0-9]{0,30}(\.[0-9]{0,30})?([eE][-+]?[0-9]{0,4})?\Z"))
def test_numbers_are_bounded_where_parsed(text: str) -> None:
    for kind, most in ((float, fx.MAX_SECONDS), (int, fx.MAX_COUNT)):
        try:
            value = fx.parse_number("x", text, kind)
        except fx.UsageError as error:
            assert str(error).startswith("x=")
            continue
        assert isinstance(value, kind) and 0 <= value <= most and math.isfinite(value)


# ---------------------------------------------------------------------------------------------
# URLs and host names
# ---------------------------------------------------------------------------------------------

host_parts = st.sampled_from(["xen1", "a" * 63, "a" * 64, "", "bücher", "xen\u200f1",
                              "xen\u200b", "127.0.0.1", "[::1]", "[fe80::1%eth0]", "[::1",
                              "x y", "%41", "xn--bcher-kva", "-a", "a-", "ünï", "\udcff"])


@FUZZ
@seed(SEED)
@given(st.sampled_from(["", "http://", "https://", "ftp://", "http:///"]),
       st.lists(host_parts | nasty_text, min_size=1, max_size=4).map(".".join),
       st.sampled_from(["", ":443", ":0", ":99999", ":x", "/", "/RPC2", "/a b", "?q", "#f"]))
def test_urls_give_an_endpoint_or_one_usage_error(scheme: str, host: str, tail: str) -> None:
    try:
        endpoint = fx.Endpoint.parse(scheme + host + tail)
    except fx.UsageError:
        return
    assert endpoint.host.isascii() and endpoint.host.isprintable()
    assert fx.Endpoint.parse(str(endpoint)) == endpoint


@FUZZ
@seed(SEED)
@given(st.lists(host_parts | nasty_text, min_size=1, max_size=4).map(".".join))
def test_a_master_address_gives_an_endpoint_or_a_connection_failure(address: str) -> None:
    base = fx.Endpoint.parse("https://127.0.0.1:4443/")
    try:
        master = base.with_host(address)
    except fx.ConnectionFailure as error:
        assert "\n" not in str(error)
        return
    assert master.host.isascii() and (master.scheme, master.port) == ("https", 4443)


# ---------------------------------------------------------------------------------------------
# The request
# ---------------------------------------------------------------------------------------------


@FUZZ
@seed(SEED)
@given(st.lists(any_text | st.booleans() | st.lists(any_text, max_size=3), max_size=5))
def test_requests_carry_text_exactly_or_refuse_it(params: List[Any]) -> None:
    try:
        body = fx.encode_call("VM.get_by_name_label", params)
    except fx.FenceError as error:  # the message names the problem, never the text
        assert re.fullmatch(r"cannot send VM\.get_by_name_label: a parameter holds (bytes that "
                            r"are not UTF-8|the character U\+[0-9A-F]{4,6}, which XML-RPC "
                            r"cannot carry)", str(error)), str(error)
        return
    decoded, method = xmlrpc.client.loads(body)
    assert method == "VM.get_by_name_label" and list(decoded) == params


# ---------------------------------------------------------------------------------------------
# Answers, decoded whole
# ---------------------------------------------------------------------------------------------

plain_text = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r"))
# Member names without &, < or >: a server that escapes them (as xmlrpc.client does) and
# XAPI, which does not (ocaml-rpc xmlrpc.ml), write those differently; XAPI is the contract.
plain_names = plain_text.filter(lambda name: not set(name) & set("&<>"))
xmlrpc_values = st.recursive(
    plain_text | st.booleans() | st.integers(-(2**31), 2**31 - 1),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(plain_names, inner, max_size=4),
    max_leaves=12)


def _read_answer(body: bytes, method: str, fields: Any) -> Any:
    """What XapiChannel does with an answer's body: fed as it arrives, then finished."""
    answer = fx._Answer(method, fields)
    for start in range(0, len(body), fx.RECV_SIZE):
        answer.feed(body[start:start + fx.RECV_SIZE])
    return answer.finish()


def _answer(value: Any) -> bytes:
    return xmlrpc.client.dumps(({"Status": "Success", "Value": value},),
                               methodresponse=True).encode()


@FUZZ
@seed(SEED)
@given(xmlrpc_values)
def test_the_decoder_reads_what_xmlrpc_client_writes(value: Any) -> None:
    assert _read_answer(_answer(value), "m", None) == value


xapi_values = st.recursive(
    plain_text | st.booleans(),
    lambda inner: st.lists(inner, max_size=4) |
    st.dictionaries(plain_text.filter(lambda k: "</name>" not in k), inner, max_size=4),
    max_leaves=12)


@FUZZ
@seed(SEED)
@given(xapi_values)
def test_the_decoder_reads_xapis_unescaped_member_names(value: Any) -> None:
    """XAPI writes struct member names raw (ocaml-rpc xmlrpc.ml), and they are read raw;
    only a name holding `</name>` itself cannot be told apart (and is not generated)."""
    body = (b"<?xml version='1.0'?><methodResponse><params><param>" +
            xapi_value({"Status": "Success", "Value": value}).encode() +
            b"</param></params></methodResponse>")
    assert _read_answer(body, "m", None) == value


@st.composite
def mutated(draw: st.DrawFn, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["cut", "insert", "flip", "truncate", "repeat"]))
        if action == "cut":
            del data[where:where + draw(st.integers(1, 40))]
        elif action == "insert":
            data[where:where] = draw(st.binary(max_size=20) | markup.map(
                lambda m: m.encode("utf-8", "surrogateescape")))
        elif action == "flip" and where < len(data):
            data[where] = draw(st.integers(0, 255))
        elif action == "truncate":
            del data[where:]
        elif action == "repeat":
            data[where:where] = data[where:where + draw(st.integers(1, 200))] * 50
    return bytes(data)


RECORD_FIELDS = fx.RECORD_FIELDS


def _record(index: int, extra: Dict[str, Any]) -> Dict[str, Any]:
    record: Dict[str, Any] = {
        "uuid": f"{index:08x}-0000-4000-8000-{index:012x}", "name_label": f"vm{index}",
        "power_state": "Running", "is_a_template": False, "is_a_snapshot": False,
        "is_control_domain": False, "resident_on": "OpaqueRef:host"}
    record.update(extra)
    return record


SAMPLE = xapi_value({"OpaqueRef:1": _record(1, {"other_config": {"a": "b"}}),
                     "OpaqueRef:2": _record(2, {"tags": ["x"]})})
SAMPLE_BODY = (b"<?xml version='1.0'?><methodResponse><params><param><value><struct><member>"
               b"<name>Status</name><value>Success</value></member><member><name>Value</name>" +
               SAMPLE.encode() + b"</member></struct></value></param></params>"
               b"</methodResponse>")
FAILURE_BODY = xmlrpc.client.dumps(({"Status": "Failure", "ErrorDescription":
                                     ["HOST_IS_SLAVE", "10.0.0.1"]},), methodresponse=True).encode()


@FUZZ
@seed(SEED)
@given(st.sampled_from([SAMPLE_BODY, FAILURE_BODY, _answer(["a", {"b": [1, True]}])])
       .flatmap(mutated), st.booleans())
def test_broken_answers_give_one_error_type(body: bytes, as_records: bool) -> None:
    """Whatever the bytes: a value, a XapiFailure or an AnswerError (which the agent reports
    as "not a XAPI response"), nothing else."""
    try:
        _read_answer(body, "m", RECORD_FIELDS if as_records else None)
    except (fx.AnswerError, fx.XapiFailure) as error:
        assert "\n" not in str(error)


@FUZZ
@seed(SEED)
@given(st.binary(max_size=2000), st.booleans())
def test_random_bytes_give_one_error_type(body: bytes, as_records: bool) -> None:
    with pytest.raises((fx.AnswerError, fx.XapiFailure)):
        _read_answer(body, "m", RECORD_FIELDS if as_records else None)


# ---------------------------------------------------------------------------------------------
# The record-map scanner
# ---------------------------------------------------------------------------------------------

FIELD_NAMES = sorted(RECORD_FIELDS)
keys = (st.sampled_from([*FIELD_NAMES, "OpaqueRef:x", "a&b", "x<y", "<name>", "<name>uuid",
                         "&amp;", "]]>", "&", "<", "<struct>", "</array>"]) |
        plain_text.filter(lambda k: "</name>" not in k))
flat_maps = st.dictionaries(keys, plain_text, max_size=5)
plain_keys = plain_text.filter(lambda k: "<" not in k) | st.sampled_from(FIELD_NAMES)
nested = st.recursive(plain_text | st.booleans() | flat_maps,
                      lambda inner: st.lists(inner, max_size=3) |
                      st.dictionaries(plain_keys, inner, max_size=3), max_leaves=6)


@st.composite
def record_maps(draw: st.DrawFn) -> Dict[str, Dict[str, Any]]:
    records = {}
    for index in range(draw(st.integers(0, 4))):
        extra_names = draw(st.lists(plain_text.filter(
            lambda k: k not in RECORD_FIELDS and "<" not in k), max_size=3, unique=True))
        extra = {name: draw(nested) for name in extra_names}
        values = {"name_label": draw(plain_text), "power_state": draw(st.sampled_from(
            ["Running", "Halted", "Paused", "Suspended"])), "is_a_template": draw(st.booleans())}
        record = _record(index, {**extra, **values})
        order = draw(st.permutations(list(record)))
        records[f"OpaqueRef:{index}-{draw(plain_names)}"] = \
            {key: record[key] for key in order}
    return records


def _xapi_body(records: Dict[str, Any]) -> bytes:
    return (b"<?xml version='1.0'?><methodResponse><params><param>" +
            xapi_value({"Status": "Success", "Value": records}).encode() +
            b"</param></params></methodResponse>")


def _feed(body: bytes, cuts: List[int]) -> Dict[str, Dict[str, Any]]:
    scanner = fx.RecordMapScanner(RECORD_FIELDS)
    start = 0
    for cut in sorted(set(cuts)):
        scanner.feed(body[start:cut])
        start = cut
    scanner.feed(body[start:])
    result: Dict[str, Dict[str, Any]] = scanner.finish("m")
    return result


@FUZZ
@seed(SEED)
@given(record_maps(), st.lists(st.integers(0, 10**6), max_size=8), st.booleans())
def test_the_scanner_reads_exactly_each_records_own_fields(
        records: Dict[str, Dict[str, Any]], cuts: List[int], xapi_style: bool) -> None:
    """Nested keys named like fields, keys XAPI leaves unescaped, fields in any order, the
    answer cut anywhere: the scanner returns exactly each record's own fields."""
    expected = {ref: {name: rec[name] for name in RECORD_FIELDS} for ref, rec in records.items()}
    body = _xapi_body(records) if xapi_style else xmlrpc.client.dumps(
        ({"Status": "Success", "Value": records},), methodresponse=True).encode()
    note(body.decode(errors="replace")[:3000])
    cuts = [cut % (len(body) + 1) for cut in cuts]
    assert _feed(body, cuts) == expected


@FUZZ
@seed(SEED)
@given(record_maps().map(_xapi_body).flatmap(mutated))
def test_the_scanner_fails_safe_on_broken_record_maps(body: bytes) -> None:
    """A broken record map gives an AnswerError or records; never another exception, and
    never a record whose fields are not all there."""
    try:
        result = _feed(body, [len(body) // 3, len(body) // 2])
    except (fx.AnswerError, fx.XapiFailure):
        return
    for record in result.values():
        assert set(record) == set(RECORD_FIELDS)


@pytest.mark.parametrize("where", ["head", "value", "between", "record", "tail"])
def test_long_runs_cost_linear_time(where: str) -> None:
    """2 MB of whitespace or text anywhere: an answer or an error in well under a second
    per MB. (A pattern where two parts can match the same text costs quadratic time inside
    one regex call, which no deadline interrupts.)"""
    body = _xapi_body({"OpaqueRef:1": _record(1, {}), "OpaqueRef:2": _record(2, {})})
    run = b" " * (2 << 20)
    marks = {"head": b"<methodResponse>", "value": b"<value>vm1",
             "between": b"</member><member><name>OpaqueRef:2",
             "record": b"<member><name>uuid", "tail": b"</methodResponse>"}
    place = body.index(marks[where])
    for filler in (run, b"x" * len(run)):
        broken = body[:place] + filler + body[place:]
        started = time.monotonic()
        for fields in (RECORD_FIELDS, None):
            with contextlib.suppress(fx.AnswerError):
                _read_answer(broken, "m", fields)
        assert time.monotonic() - started < 20, where


def test_seeded_strategies_are_reproducible() -> None:
    """The same seed draws the same examples (what makes a printed seed worth printing)."""

    def draw_with_seed() -> List[str]:
        found: List[str] = []

        @settings(max_examples=5, database=None, deadline=None)
        @seed(SEED)
        @given(st.text(string.ascii_letters, min_size=1))
        def collect(text: str) -> None:
            found.append(text)

        collect()
        return found

    assert draw_with_seed() == draw_with_seed()
