#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Build fence_xenapi(8) from the agent's own metadata and the hand-written man/fence_xenapi.8.in.

The template's lines @HEADER@, @NAME@, @DESCRIPTION@, @OPTIONS@, @STDIN_PARAMETERS@ and
@ACTIONS@ are replaced with roff generated from `fence_xenapi -o metadata`, so every parameter,
option, default and action in the page is the one the code has."""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional

from lxml import etree

# What each action does, for the ACTIONS section (the metadata lists names only). An action the
# agent gains later still appears in the page, with the fallback text, until described here.
ACTION_TEXT: Dict[str, str] = {
    "on": "Power the VM on (start it, or resume or unpause it) and wait until it runs.",
    "off": "Power the VM off hard and succeed only once XenAPI reads it Halted.",
    "reboot": "Power the VM off, then on again (the default action).",
    "status": "Print \\fBStatus: ON\\fR or \\fBStatus: OFF\\fR; exit 2 when the VM is off.",
    "list": "Print one \\fIuuid\\fB,\\fIname\\fR line for each real VM of the pool "
    "(no templates, snapshots or control domains).",
    "list-status": "Like \\fBlist\\fR, with \\fBON\\fR or \\fBOFF\\fR appended to each line.",
    "monitor": "Check that the pool answers, the credentials work and the user may fence "
               "(see Least privilege); no VM is needed.",
    "metadata": "Print the agent's metadata (XML) for Pacemaker.",
    "manpage": "Print the same XML as \\fBmetadata\\fR (fence\\-agents compatibility).",
    "validate-all": "Check the parameters without contacting the pool.",
}
FALLBACK_ACTION_TEXT = "See the agent's metadata."


@dataclass
class Parameter:
    name: str
    getopt: str
    content_type: str
    default: Optional[str]
    shortdesc: str
    required: bool
    deprecated: bool
    obsoletes: Optional[str]


@dataclass
class Metadata:
    name: str
    shortdesc: str
    longdesc: str
    parameters: List[Parameter]
    actions: List[str]


def parse_metadata(xml: bytes) -> Metadata:
    root = etree.fromstring(xml)
    parameters = []
    for node in root.iterfind("parameters/parameter"):
        content = node.find("content")
        getopt = node.find("getopt")
        parameters.append(
            Parameter(
                name=node.get("name", ""),
                getopt=getopt.get("mixed", "") if getopt is not None else "",
                content_type=content.get("type", "string") if content is not None else "string",
                default=content.get("default") if content is not None else None,
                shortdesc=(node.findtext("shortdesc") or "").strip(),
                required=node.get("required") == "1",
                deprecated=node.get("deprecated") == "1",
                obsoletes=node.get("obsoletes"),
            )
        )
    return Metadata(
        name=root.get("name", "fence_xenapi"),
        shortdesc=root.get("shortdesc", ""),
        longdesc=" ".join((root.findtext("longdesc") or "").split()),
        parameters=parameters,
        actions=[action.get("name", "") for action in root.iterfind("actions/action")],
    )


def text(value: str) -> str:
    """Escape prose for roff: backslashes, and a leading control character on a line."""
    escaped = value.replace("\\", "\\e")
    return "\\&" + escaped if escaped.startswith((".", "'")) else escaped


def literal(value: str) -> str:
    """Escape code (option names, values): every '-' is a minus sign, not a hyphen."""
    return text(value).replace("-", "\\-")


def bold_option(getopt: str) -> str:
    """'-l, --username=[name]' -> bold option names with the argument in italics."""
    option, _, argument = getopt.partition("=")
    result = "\\fB" + literal(option) + "\\fR"
    if argument:
        result += "=\\fI" + literal(argument.strip("[]")) + "\\fR"
    return result


def sentence(value: str) -> str:
    value = text(value.strip())
    return value if value.endswith((".", "!", "?")) else value + "."


def default_note(param: Parameter) -> List[str]:
    return [f"Default: \\fB{literal(param.default)}\\fR"] if param.default else []


def options_section(meta: Metadata) -> str:
    """One entry per command-line option; stdin aliases that share it are not repeated."""
    lines: List[str] = []
    for param in meta.parameters:
        if param.deprecated or not param.getopt:
            continue
        lines += [
            ".TP",
            bold_option(param.getopt),
            sentence(param.shortdesc),
            *(note + "." for note in default_note(param)),
            f"(stdin: \\fB{literal(param.name)}\\fR)",
        ]
    return "\n".join(lines)


def stdin_section(meta: Metadata) -> str:
    """Every parameter by its stdin name, deprecated aliases beside the name that replaces them."""
    replaced_by = {p.obsoletes: p.name for p in meta.parameters if p.obsoletes}
    lines = [
        "Parameters Pacemaker writes on the agent's standard input, one "
        "\\fIname\\fB=\\fIvalue\\fR per line.",
    ]
    for param in meta.parameters:
        if param.deprecated and param.name in replaced_by:
            continue
        lines += [".TP", f"\\fB{literal(param.name)}\\fR (\\fI{literal(param.content_type)}\\fR)"]
        lines.append(sentence(param.shortdesc))
        lines += [note + "." for note in default_note(param)]
        if param.required:
            lines.append("Required.")
        if param.deprecated:
            lines.append("Deprecated.")
        if param.obsoletes:
            lines.append(f"Deprecated alias: \\fB{literal(param.obsoletes)}\\fR.")
        if param.getopt:
            lines.append(f"Command line: {bold_option(param.getopt)}")
    return "\n".join(lines)


def actions_section(meta: Metadata) -> str:
    lines: List[str] = []
    for action in meta.actions:
        description = ACTION_TEXT.get(action, FALLBACK_ACTION_TEXT)
        lines += [".TP", f"\\fB{literal(action)}\\fR", description]
    return "\n".join(lines)


def build_date() -> str:
    """The page's date: SOURCE_DATE_EPOCH's (reproducible package builds), else today."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (
        datetime.datetime.fromtimestamp(int(epoch), tz=datetime.timezone.utc)
        if epoch
        else datetime.datetime.now(tz=datetime.timezone.utc)
    )
    return when.strftime("%Y-%m-%d")


def render(template: str, meta: Metadata, version: str) -> str:
    generated = {
        "@HEADER@": f'.TH {meta.name.upper()} 8 "{build_date()}" "{meta.name} {version}" '
        '"System Administration"',
        "@NAME@": f"{literal(meta.name)} \\- {text(meta.shortdesc)}",
        "@DESCRIPTION@": text(meta.longdesc),
        "@OPTIONS@": options_section(meta),
        "@STDIN_PARAMETERS@": stdin_section(meta),
        "@ACTIONS@": actions_section(meta),
    }
    output = []
    for line in template.splitlines():
        if line.startswith('.\\"'):
            continue  # the template's own comments are about the template
        output.append(generated.get(line.strip(), line))
    return "\n".join(output) + "\n"


def agent_metadata(python: str, agent: str) -> bytes:
    return subprocess.run(
        [python, agent, "-o", "metadata"], check=True, capture_output=True, timeout=60
    ).stdout


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agent", required=True, help="the agent script to ask for metadata")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the agent")
    parser.add_argument("--template", required=True, help="man/fence_xenapi.8.in")
    parser.add_argument("--version", required=True, help="version for the page footer")
    parser.add_argument("--output", required=True, help="where to write the page")
    args = parser.parse_args(argv)
    meta = parse_metadata(agent_metadata(args.python, args.agent))
    with open(args.template, encoding="utf-8") as handle:
        page = render(handle.read(), meta, args.version)
    with open(args.output, "w", encoding="utf-8") as handle:
        handle.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
