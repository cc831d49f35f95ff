"""Real VM records: the VM tables of XenCenter's test databases (xenserver/xenadmin,
XenAdminTests/TestResources at 454092350cc6, the parent of bb369ed62 which removed them;
BSD-2-Clause, tests/data/xenadmin/LICENSE), XAPI database dumps from XenServer 5.5-6.1 hosts.

A dump holds each field as XAPI's database stores it: a string, with sets and maps as
S-expressions (ocaml/libs/sexpr/sExpr.ml) and namespaced names joined by `__`
(`memory__static_max`). `wire_record` turns a row into what XAPI sends for VM.get_record,
field by field, from the field's type in xen-api's datamodel (ocaml/idl/datamodel_vm.ml,
datamodel_common.ml): Bool -> boolean, Float -> double, DateTime -> dateTime.iso8601,
Set -> array, Map -> struct, and Int, String, Ref and enums -> string (XAPI sends int64 as a
string: ocaml/idl/ocaml_backend/gen_rpc.ml via rpc's Int64 -> string)."""

from __future__ import annotations

import lzma
import xml.etree.ElementTree as ET
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple, Union

from tests.xapisim import SimHandle, Simulator

DATA = Path(__file__).resolve().parent / "data" / "xenadmin" / "vm-tables.xml.xz"

# datamodel_vm.ml (and datamodel_common.ml for allowed/current_operations): the VM fields of
# these types; every other field is a string on the wire.
BOOL_FIELDS = frozenset({"is_a_template", "is_a_snapshot", "is_control_domain", "ha_always_run",
                         "is_snapshot_from_vmpp", "is_vmss_snapshot", "has_vendor_device",
                         "requires_reboot", "is_default_template"})
FLOAT_FIELDS = frozenset({"HVM_shadow_multiplier"})
DATETIME_FIELDS = frozenset({"snapshot_time"})
SET_FIELDS = frozenset({"VBDs", "VIFs", "VTPMs", "VGPUs", "VUSBs", "consoles", "crash_dumps",
                        "snapshots", "children", "attached_PCIs", "allowed_operations", "tags",
                        "pending_guidances", "pending_guidances_recommended",
                        "pending_guidances_full"})
MAP_FIELDS = frozenset({"VCPUs_params", "HVM_boot_params", "bios_strings", "blobs",
                        "blocked_operations", "current_operations", "last_boot_CPU_flags",
                        "other_config", "platform", "snapshot_info", "xenstore_data", "NVRAM"})
# Int fields (datamodel_vm.ml ~ty:Int): strings on the wire, kept as the database has them.
INT_FIELDS = frozenset({"memory_overhead", "memory_target", "memory_static_max",
                        "memory_dynamic_max", "memory_dynamic_min", "memory_static_min",
                        "VCPUs_max", "VCPUs_at_startup", "domid", "user_version", "order",
                        "start_delay", "shutdown_delay", "version", "hardware_platform_version"})
# Columns of the database that are not fields of the record (db_xml.ml bookkeeping).
NOT_FIELDS = frozenset({"ref", "_ref", "__ctime", "__mtime"})

SExpr = Union[str, List["SExpr"]]


def parse_sexpr(text: str, truncated: bool = False) -> SExpr:
    """One S-expression as XAPI's database writes it: `(...)` lists of `'...'` strings in
    which a backslash escapes the next character (sExpr.ml escape_buf/unescape); schema 5.55
    (state.db) quotes with `"`. With `truncated`, lists left open at the end are closed."""
    stack: List[List[SExpr]] = [[]]
    index = 0
    while index < len(text):
        char = text[index]
        if char == "(":
            stack.append([])
        elif char == ")":
            done = stack.pop()
            stack[-1].append(done)
        elif char in "'\"":
            chars = []
            index += 1
            while text[index] != char:
                if text[index] == "\\":
                    index += 1
                chars.append(text[index])
                index += 1
            stack[-1].append("".join(chars))
        elif not char.isspace():
            raise ValueError(f"unexpected {char!r} at {index} in {text[:80]!r}")
        index += 1
    while truncated and len(stack) > 1:
        done = stack.pop()
        stack[-1].append(done)
    if len(stack) != 1 or len(stack[0]) != 1:
        raise ValueError(f"not one S-expression: {text[:80]!r}")
    return stack[0][0]


def _strings(value: SExpr) -> List[str]:
    assert isinstance(value, list), value
    return [str(item) for item in value]


def wire_value(name: str, raw: str) -> Any:
    """The field `name` (wire name) with the database string `raw`, as XAPI sends it."""
    if name in BOOL_FIELDS:
        if raw not in ("true", "false"):
            raise ValueError(f"{name}: not a boolean: {raw!r}")
        return raw == "true"
    if name in FLOAT_FIELDS:
        return float(raw)
    if name in DATETIME_FIELDS:
        return xmlrpc.client.DateTime(raw)
    if name in SET_FIELDS:
        # single-host-krakout.xml's snapshots have allowed_operations cut short (the file
        # holds "('destroy' 'export' 'revert' "): an advisory field (datamodel_common.ml),
        # recomputed by XAPI (xapi_vm_lifecycle.ml update_allowed_operations).
        return _strings(parse_sexpr(raw, truncated=name == "allowed_operations"))
    if name in MAP_FIELDS:
        pairs = parse_sexpr(raw)
        assert isinstance(pairs, list), raw
        result: Dict[str, str] = {}
        for pair in pairs:
            key, value = _strings(pair)
            result[key] = value
        return result
    if name in INT_FIELDS:
        int(raw)  # a database Int is a decimal int64
    return raw


def wire_record(row: Dict[str, str]) -> Dict[str, Any]:
    """A database row of the VM table as VM.get_record answers it."""
    return {column.replace("__", "_"): wire_value(column.replace("__", "_"), raw)
            for column, raw in row.items() if column not in NOT_FIELDS}


@dataclass(frozen=True)
class Dump:
    file: str  # its name in XenAdminTests/TestResources
    schema: Tuple[int, int]  # the database schema version (major, minor)
    vms: Tuple[Tuple[str, Dict[str, Any]], ...]  # (ref, wire record) of every VM row

    def real_vms(self) -> Iterator[Tuple[str, Dict[str, Any]]]:
        for ref, vm in self.vms:
            if not (vm["is_a_template"] or vm.get("is_a_snapshot") or vm["is_control_domain"]):
                yield ref, vm


def load_dumps() -> List[Dump]:
    root = ET.fromstring(lzma.decompress(DATA.read_bytes()))  # noqa: S314 (our own file)
    dumps = []
    for database in root.iter("database"):
        manifest = {pair.get("key"): pair.get("value") for pair in database.iter("pair")}
        rows = [dict(row.attrib) for table in database.iter("table")
                if table.get("name") == "VM" for row in table]
        dumps.append(Dump(str(database.get("file")),
                          (int(manifest["schema_major_vsn"] or 0),
                           int(manifest["schema_minor_vsn"] or 0)),
                          tuple((row["ref"], wire_record(row)) for row in rows)))
    return dumps


def pool_of(dump: Dump) -> SimHandle:
    """A one-host pool (host1, 127.0.0.1, user root/secret) holding every VM record of
    `dump`, its own control domains too, served until closed."""
    sim = Simulator()
    sim.add_user("root", "secret", "pool-admin")
    sim.add_host("host1", "127.0.0.1", master=True)
    for ref, record in dump.vms:
        sim.add_vm_record(ref, record)
    return SimHandle(sim)


def dump_named(file: str) -> Dump:
    (dump,) = [dump for dump in load_dumps() if dump.file == file]
    return dump
