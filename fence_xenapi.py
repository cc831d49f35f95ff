#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
#
# fence_xenapi - fence agent for XenServer, XCP-ng and Citrix Hypervisor VMs over XenAPI
# Copyright (C) 2026 The fence_xenapi developers
#
# This program is free software; you can redistribute it and/or modify it under the terms of
# the GNU General Public License as published by the Free Software Foundation; either version 2
# of the License, or (at your option) any later version. It is distributed WITHOUT ANY WARRANTY;
# see the GNU General Public License (COPYING) for more details.

"""Fence (STONITH) agent that powers XenServer / XCP-ng / Citrix Hypervisor VMs off, on and
through a reboot over XenAPI, for Pacemaker clusters whose nodes are such VMs.

It is a drop-in replacement for fence-agents' fence_xenapi: same stdin and command-line
interface, parameter names, metadata and exit codes. It differs where fencing safety needs it:
only the named VM is ever touched (templates, snapshots, control domains and ambiguous names
are refused), "off" is reported only once XAPI reads the VM Halted, every call has a timeout,
every session is logged out, and secrets never reach any output.

The module reads top to bottom in sections, each using only the names defined in itself and
the ones above it (tests/test_quality.py holds this):
  1. Errors and exit status
  2. Logging: stderr, syslog, debug_file; secrets scrubbed from every record
  3. Pool addresses, TLS policy, XML text
  4. Parameters and options
  5. Deadlines
  6. XML-RPC: requests and answers, within bounds
  7. HTTP/1.1 over TCP or TLS: one keep-alive connection to one pool host
  8. XAPI session: login through the pool's hosts, calls, logout
  9. VM resolution and power control
  10. Actions
  11. Metadata, help, version
  12. Command line
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import signal
import sys
import time

# Only what every action needs is imported here; the network stack (socket, and ssl for https;
# HTTP and XML-RPC are the agent's own) and lxml are imported where they are used, so that
# `metadata` (run by pacemaker-controld for every resource) and `-h`/`-V` start fast.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    import ssl
    import threading
    from typing import Any, Callable, Final, Mapping, NoReturn, Optional, Sequence


class Value:
    """Base of the module's small immutable records (Endpoint, Options, Vm, ...): each lists
    its attributes in __slots__ and sets them once in an explicit __init__ (Final: mypy
    refuses any other assignment); instances compare, hash and show by those attributes.
    What dataclass(frozen=True) would give, without importing dataclasses (with inspect, ast
    and dis, about 7 ms of every run: `metadata` runs for every resource)."""

    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Value)  # noqa: S101 - the same class
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{self.__class__.__qualname__}({shown})"


__version__ = "@VERSION@"

AGENT_NAME = "fence_xenapi"
# XAPI keeps a separate session pool per originator, so another client's session leak cannot
# evict ours (xen-api PR 2253).
XAPI_ORIGINATOR = "fence_xenapi"
XAPI_API_VERSION = "1.0"
LOGOUT_TIMEOUT = 2.0


def agent_version() -> str:
    """The version meson substituted at build time; from a checkout, meson.build's."""
    if not __version__.startswith("@"):
        return __version__
    meson_build = os.path.join(os.path.dirname(os.path.realpath(__file__)), "meson.build")
    try:
        with open(meson_build, encoding="utf-8") as build_file:
            match = re.search(r"version\s*:\s*'([^']+)'", build_file.read())
    except OSError:
        match = None
    return f"{match.group(1)}+checkout" if match else "unknown"


# ---------------------------------------------------------------------------------------------
# Errors and exit status
# ---------------------------------------------------------------------------------------------


class ExitStatus(enum.IntEnum):
    """Exit codes of fence-agents' FenceAgentAPI. Every failure is 1: Pacemaker reads 2 from
    `status` as "the target is off", so no error may ever use it."""

    SUCCESS = 0
    FAILURE = 1
    OFF = 2


class FenceError(Exception):
    """A failure reported to the user as one line on stderr, exit status 1."""


class UsageError(FenceError):
    """Bad parameters or command line."""


class ConnectionFailure(FenceError):
    """The pool could not be reached, or did not answer as XAPI does. `request_sent` is False
    when the connection itself failed, so XAPI cannot have seen the request."""

    def __init__(self, message: str, request_sent: bool = True) -> None:
        super().__init__(message)
        self.request_sent = request_sent


class LoginRefused(FenceError):
    """XAPI refused the credentials: the same on every pool host, so never retried."""


class TimedOut(FenceError):
    """An operation did not finish in its time. Never a success."""


class Terminated(FenceError):
    """A signal (SIGTERM from the fencer's timeout, SIGINT) stopped the agent."""


class XapiFailure(FenceError):
    """XAPI answered `{"Status": "Failure", "ErrorDescription": [code, params...]}`."""

    def __init__(self, method: str, description: Sequence[object]) -> None:
        self.method = method
        self.code = str(description[0]) if description else "UNKNOWN_ERROR"
        self.params = [str(item) for item in description[1:]]
        super().__init__(self.describe())

    def describe(self) -> str:
        if self.code == "RBAC_PERMISSION_DENIED" and self.params:
            # [permission, "No permission in user session. (Roles with this permission: …)"]
            # (xapi/rbac.ml): name what the XAPI user lacks and which roles grant it.
            found = re.search(r"Roles with this permission: ([^)]*)", " ".join(self.params))
            roles = f"; XAPI grants it to the roles: {printable(found.group(1))}" if found else ""
            return (f"{self.method} failed: RBAC_PERMISSION_DENIED: the XAPI user lacks the "
                    f"permission {printable(self.params[0], 80)}{roles} (see the README, Roles)")
        # Text from the pool: one line, bounded, whatever it holds.
        shown = [printable(param) for param in self.params[:16]]
        if len(self.params) > 16:
            shown.append("…")
        detail = f": {', '.join(shown)}" if shown else ""
        return f"{self.method} failed: {printable(self.code, 80)}{detail}"


def printable(text: str, limit: int = 200) -> str:
    """Text from the pool, safe for one log line: control characters escaped, length bounded."""
    shown = text if len(text) <= limit else text[:limit] + "…"
    if shown.isprintable():
        return shown
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown)


# ---------------------------------------------------------------------------------------------
# Logging: stderr, syslog, debug_file; secrets scrubbed from every record
# ---------------------------------------------------------------------------------------------


class SecretScrubber:
    """Replaces every registered secret (password, session refs) in a record's final text.
    Defence in depth: the code never logs them on purpose, but XAPI error descriptions
    (SESSION_INVALID [ref]) or a library message could carry them."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def add(self, secret: Optional[str]) -> None:
        if secret:
            self._secrets.add(secret)

    def scrub(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "****")
        return text


SCRUBBER = SecretScrubber()

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
LEVEL_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARNING: "WARNING", ERROR: "ERROR"}
SYSLOG_PRIORITIES = {DEBUG: 7, INFO: 6, WARNING: 4, ERROR: 3}  # syslog(3)'s LOG_DEBUG etc.


class AgentLog:
    """The agent's log, with the logging module's calls (`log.info("%s is off", vm)`): each
    record goes, scrubbed, to every output whose level it reaches. Not the logging module
    itself: importing that (threading, traceback, weakref, string) takes ~10 ms of every run
    (see bench/), and the agent needs three plain outputs, set up by setup_logging."""

    def __init__(self) -> None:
        self._outputs: list[tuple[int, Callable[[int, str], None]]] = []

    def add_output(self, level: int, write: Callable[[int, str], None]) -> None:
        self._outputs.append((level, write))

    def close(self) -> None:
        self._outputs.clear()

    def log(self, level: int, message: str, *args: object) -> None:
        outputs = [write for threshold, write in self._outputs if level >= threshold]
        if not outputs:
            return
        text = SCRUBBER.scrub(message % args if args else message)
        for write in outputs:
            with contextlib.suppress(OSError, ValueError):  # a log output never fails a run
                write(level, text)

    def debug(self, message: str, *args: object) -> None:
        self.log(DEBUG, message, *args)

    def info(self, message: str, *args: object) -> None:
        self.log(INFO, message, *args)

    def warning(self, message: str, *args: object) -> None:
        self.log(WARNING, message, *args)

    def error(self, message: str, *args: object) -> None:
        self.log(ERROR, message, *args)


log = AgentLog()


def _silence(fd: int) -> None:
    """After a write to stdout/stderr failed (closed, broken pipe, full disk), point the
    descriptor at /dev/null, so that nothing (Python's own flush at exit included) fails again
    and prints a traceback."""
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)


def _write(stream_name: str, fd: int, text: str) -> Optional[str]:
    """Write `text` to stdout or stderr in the stream's encoding (UTF-8 under Pacemaker:
    Python takes a C locale as UTF-8) and flush; the reason it failed, or None. A character
    the encoding cannot show (a VM name under PYTHONIOENCODING=ascii or a Latin-1 locale) is
    written escaped (\xfc, \u2713), never a UnicodeEncodeError."""
    stream = getattr(sys, stream_name)
    if stream is None:  # closed when the agent started (fd now on /dev/null)
        return "it is closed"
    try:
        stream.flush()
        binary = getattr(stream, "buffer", None)
        if binary is not None:
            encoding = getattr(stream, "encoding", None) or "utf-8"
            binary.write(text.encode(encoding, "backslashreplace"))
            binary.flush()
        else:
            stream.write(text)
            stream.flush()
    except (OSError, ValueError) as error:
        _silence(fd)
        return getattr(error, "strerror", None) or str(error) or type(error).__name__
    return None


def write_output(text: str) -> None:
    """The result on stdout. If it cannot be written, the run failed: FenceError."""
    problem = _write("stdout", 1, text)
    if problem:
        raise FenceError(f"cannot write the result to standard output: {problem}")


def write_stderr(text: str) -> None:
    """A line on stderr; if stderr is gone there is no one left to tell."""
    _write("stderr", 2, text)


def _write_stderr(level: int, text: str) -> None:
    write_stderr(f"{LEVEL_NAMES[level]}: {text}\n")


def _syslog_writer() -> Callable[[int, str], None]:
    """Writes to syslog(3) directly: needs no /dev/log at start-up and never fails a run."""
    import syslog

    syslog.openlog(AGENT_NAME, syslog.LOG_PID, syslog.LOG_DAEMON)
    return lambda level, text: syslog.syslog(SYSLOG_PRIORITIES[level], text)


def _file_writer(path: str) -> Callable[[int, str], None]:
    """debug_file: the first write that fails (a full disk, /dev/full) closes it, with one
    warning on stderr; the run goes on."""
    try:
        handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the whole run
    except OSError as error:
        raise UsageError(f"debug_file={path}: {error.strerror}") from None
    still_open = [handle]

    def write(level: int, text: str) -> None:
        if not still_open:
            return
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        try:
            handle.write(f"{stamp},{int(now % 1 * 1000):03d} {LEVEL_NAMES[level]}: {text}\n")
            handle.flush()
        except (OSError, ValueError) as error:
            still_open.clear()
            with contextlib.suppress(OSError, ValueError):
                handle.close()
            reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
            _write_stderr(WARNING, f"debug_file={path}: cannot write ({reason}); debug "
                                   "logging stopped")

    return write


def setup_logging(opts: Options) -> None:
    """stderr shows warnings and errors (everything with verbose); syslog records what the
    agent did to a VM; debug_file gets everything."""
    log.close()
    if not opts.quiet:
        log.add_output(DEBUG if opts.verbose_level else WARNING, _write_stderr)
    log.add_output(DEBUG if opts.verbose_level else INFO, _syslog_writer())
    if opts.debug_file:
        log.add_output(DEBUG, _file_writer(opts.debug_file))


# ---------------------------------------------------------------------------------------------
# Pool addresses, TLS policy, XML text
# ---------------------------------------------------------------------------------------------


_URL = re.compile(r"(?:([A-Za-z][A-Za-z0-9+.-]*)://)?([^/?#]*)([^?#]*)([?#].*)?", re.S)
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)", re.ASCII)


def wire_host(host: str) -> str:
    """`host` as it goes on the wire: an IP address as it is, a name in ASCII (IDNA for an
    internationalised one). ValueError, with the reason, for what no resolver can look up:
    an empty or over-long label, characters IDNA refuses (invisible or bidirectional marks),
    bytes that were not UTF-8. The one place a host name is checked and encoded."""
    if ":" in host:
        import socket

        try:
            socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
        except (OSError, ValueError):
            raise ValueError("not a valid IPv6 address") from None
        if not host.isascii() or not host.isprintable():
            raise ValueError("not a valid IPv6 address")
        return host
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as error:
            reason = str(error).rpartition("(")[2].rstrip(")") or "invalid"
            raise ValueError(f"not a host name IDNA can encode ({reason})") from None
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError("not a valid host name (labels of 1-63 letters, digits or '-')")
    return host


class Endpoint(Value):
    """Where a pool host's XAPI answers."""

    __slots__ = ("scheme", "host", "port", "path")

    def __init__(self, scheme: str, host: str, port: int, path: str = "/") -> None:
        self.scheme: Final = scheme
        self.host: Final = host
        self.port: Final = port
        self.path: Final = path

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """`http[s]://HOST[:PORT][/PATH]` or a bare HOST (https). Parsed here rather than by
        urllib.parse (9 ms of imports on every run for three fields)."""
        match = _URL.fullmatch(text.strip())
        if match is None:
            raise UsageError(f"session_url {text}: expected http://HOST or https://HOST")
        scheme, authority, path, query = match.groups()
        scheme = (scheme or "https").lower()
        if scheme not in ("http", "https"):
            raise UsageError(f"session_url {text}: expected http://HOST or https://HOST")
        if "@" in authority:
            raise UsageError("session_url must not hold credentials: use username/password")
        bracketed = re.fullmatch(r"\[([^\]]*)\](?::(.*))?", authority, re.S)
        if bracketed:
            hostname, port_text = bracketed.group(1), bracketed.group(2)
        elif authority.count(":") > 1:
            raise UsageError(f"session_url {text}: write an IPv6 address in brackets, "
                             "e.g. https://[::1]/")
        else:
            hostname, _, port_text = authority.partition(":")
            port_text = port_text if ":" in authority else None
            hostname = hostname.lower()
        if not hostname:
            raise UsageError(f"session_url {text}: expected http://HOST or https://HOST")
        port = 443 if scheme == "https" else 80
        if port_text:
            if not re.fullmatch(r"[0-9]{1,5}", port_text, re.ASCII) or \
                    not 0 < int(port_text) < 65536:
                raise UsageError(f"session_url {text}: the port must be 1-65535")
            port = int(port_text)
        path = path or "/"
        if not re.fullmatch(r"/[!-~]*", path):
            raise UsageError(f"session_url {text}: the path must be plain ASCII, e.g. /")
        # A query is sent with the path: XAPI serves every path under / (http_svr.ml, the
        # longest registered prefix: / is XML-RPC) and reads the query as the request's
        # arguments apart from the path (Uri.query). A fragment is the client's own
        # and never sent (RFC 3986 section 3.5).
        query = (query or "").partition("#")[0]
        if not re.fullmatch(r"(\?[!-~]*)?", query):
            raise UsageError(f"session_url {text}: the query must be plain ASCII")
        try:
            host = wire_host(hostname)
        except ValueError as error:
            raise UsageError(f"session_url {text}: {error}") from None
        return cls(scheme, host, port, path + query)

    def with_host(self, host: str) -> Endpoint:
        """The pool master named by HOST_IS_SLAVE: same scheme and port (as XAPI clients do).
        An address that is no host name is a ConnectionFailure (the pool sent it)."""
        try:
            return Endpoint(self.scheme, wire_host(host.strip().strip("[]")), self.port,
                            self.path)
        except ValueError as error:
            raise ConnectionFailure(f"{self} named the pool master {printable(host, 80)!r}: "
                                    f"{error}") from None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"


class TlsPolicy(Value):
    """How the pool's certificate is checked: system CAs (default), a CA file, SHA-256 pins
    (one per pool host), or not at all (explicit opt-in)."""

    __slots__ = ("insecure", "ca_file", "fingerprints", "pins_from")

    def __init__(self, insecure: bool = False, ca_file: Optional[str] = None,
                 fingerprints: tuple[bytes, ...] = (), pins_from: str = "ssl_fingerprint") -> None:
        self.insecure: Final = insecure
        self.ca_file: Final = ca_file
        self.fingerprints: Final = fingerprints
        self.pins_from: Final = pins_from  # where the pins came from, for error messages

    @property
    def verifies(self) -> bool:
        """Whether a host reached under this policy proved its identity (CA or pin): only such
        a host's word (the master's thumbprint with HOST_IS_SLAVE) can extend trust."""
        return not self.insecure

    def pinned_to(self, fingerprint: bytes, source: str) -> TlsPolicy:
        """Trust on redirect: exactly the certificate a verified pool member named."""
        return TlsPolicy(fingerprints=(fingerprint,), pins_from=source)

    def context(self) -> ssl.SSLContext:
        import ssl

        if self.insecure or self.fingerprints:
            # A pin replaces CA and name checks: the certificate itself is what is trusted.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            try:
                context = ssl.create_default_context(cafile=self.ca_file)
            except (ssl.SSLError, OSError, ValueError) as error:
                reason = getattr(error, "reason", None) or getattr(error, "strerror", None) \
                    or str(error)
                raise UsageError(f"ssl_ca_file={self.ca_file}: not a readable file of PEM CA "
                                 f"certificates ({reason})") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def check_pin(self, der: Optional[bytes], endpoint: Endpoint) -> None:
        """With pins (ssl_fingerprint, or a thumbprint a verified member named), refuse any
        other certificate (before a byte is sent)."""
        if not self.fingerprints:
            return
        import hashlib
        import hmac

        seen = hashlib.sha256(der or b"").digest()
        if not any(hmac.compare_digest(seen, pin) for pin in self.fingerprints):
            raise ConnectionFailure(
                f"TLS certificate of {endpoint.host}:{endpoint.port} does not match "
                f"{self.pins_from} (its SHA-256 is {seen.hex(':').upper()})", request_sent=False)


_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_XML_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})


def xml_text_problem(text: str) -> Optional[str]:
    """Why `text` cannot travel in an XML document (XML 1.0 has no way to write NUL, most
    control characters or lone surrogates), or None. The one check for every string sent."""
    bad = _NOT_XML_CHAR.search(text)
    if bad is None:
        return None
    code = ord(bad.group())
    if 0xD800 <= code <= 0xDFFF:
        return "holds bytes that are not UTF-8"
    return f"holds the character U+{code:04X}, which XML-RPC cannot carry"


# ---------------------------------------------------------------------------------------------
# Parameters and options
# ---------------------------------------------------------------------------------------------

TRUE_WORDS = frozenset({"1", "yes", "on", "true"})
FALSE_WORDS = frozenset({"0", "no", "off", "false"})
ACTIONS = ("on", "off", "reboot", "status", "list", "list-status", "monitor", "metadata",
           "manpage", "validate-all")
ACTIONS_WITH_TARGET = frozenset({"on", "off", "reboot", "status"})
UUID_RE = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$", re.IGNORECASE)


class Param(Value):
    """One agent parameter: its stdin name, command-line form and metadata description.

    `getopt` is fence-agents' metadata `mixed` string ("-l, --username=[name]"); the short and
    long command-line options are read from it, so the two can never disagree."""

    __slots__ = ("name", "kind", "getopt", "shortdesc", "group", "default", "required",
                 "deprecated_names", "hidden_names", "in_metadata")

    def __init__(self, name: str, kind: str, getopt: str, shortdesc: str, group: int,
                 default: Optional[str] = None, required: bool = False,
                 deprecated_names: tuple[str, ...] = (), hidden_names: tuple[str, ...] = (),
                 in_metadata: bool = True) -> None:
        self.name: Final = name
        self.kind: Final = kind  # metadata content type: string, boolean, integer or second
        self.getopt: Final = getopt
        self.shortdesc: Final = shortdesc
        self.group: Final = group  # metadata order: by group, then by name, as fence-agents sorts
        self.default: Final = default
        self.required: Final = required
        self.deprecated_names: Final = deprecated_names  # accepted, listed as deprecated
        self.hidden_names: Final = hidden_names  # accepted on stdin, not listed in the metadata
        self.in_metadata: Final = in_metadata

    @property
    def takes_value(self) -> bool:
        return self.kind != "boolean"

    @property
    def short_option(self) -> Optional[str]:
        match = re.match(r"-([A-Za-z]),", self.getopt)
        return match.group(1) if match else None

    @property
    def long_option(self) -> Optional[str]:
        match = re.search(r"--([a-z-]+)", self.getopt)
        return match.group(1) if match else None


PARAMS: tuple[Param, ...] = (
    Param("action", "string", "-o, --action=[action]", "Fencing action", 1, default="reboot",
          required=True, hidden_names=("option",)),
    Param("username", "string", "-l, --username=[name]", "Login name", 1,
          deprecated_names=("login",)),
    Param("password", "string", "-p, --password=[password]", "Login password or passphrase", 1,
          deprecated_names=("passwd",)),
    Param("password_script", "string", "-S, --password-script=[script]",
          "Script to run to retrieve password", 1, deprecated_names=("passwd_script",)),
    Param("plug", "string", "-n, --plug=[id]",
          "Physical plug number on device, UUID or identification of machine", 1, required=True,
          deprecated_names=("port",)),
    Param("uuid", "string", "-U, --uuid=[uuid]",
          "UUID of the VM to fence (takes precedence over plug)", 1),
    Param("session_url", "string", "-s, --session-url", "URL to connect to XenServer on", 1,
          required=True),
    Param("ssl_insecure", "boolean", "--ssl-insecure",
          "Do not verify the pool's TLS certificate (not recommended)", 1),
    Param("ssl_ca_file", "string", "--ssl-ca-file=[file]",
          "Verify the pool's TLS certificate against the CA certificates in this file", 1),
    Param("ssl_fingerprint", "string", "--ssl-fingerprint=[sha256]",
          "Accept only TLS certificates with these SHA-256 fingerprints (one per pool host, "
          "comma separated)", 1),
    Param("nodename", "string", "", "Name of the cluster node to fence", 1, in_metadata=False),
    Param("quiet", "boolean", "-q, --quiet",
          "Disable logging to stderr. Does not affect --verbose or --debug-file or logging to "
          "syslog.", 2),
    Param("verbose", "boolean", "-v, --verbose",
          "Verbose mode. Multiple -v flags can be stacked on the command line (e.g., -vvv) to "
          "increase verbosity.", 3),
    Param("verbose_level", "integer", "--verbose-level",
          "Level of debugging detail in output. Defaults to the number of --verbose flags "
          "specified on the command line, or to 1 if verbose=1 in a stonith device "
          "configuration (i.e., on stdin).", 4),
    Param("debug_file", "string", "-D, --debug-file=[debugfile]",
          "Write debug information to given file", 5, deprecated_names=("debug",)),
    Param("version", "boolean", "-V, --version", "Display version information and exit", 6),
    Param("help", "boolean", "-h, --help", "Display help and exit", 7),
    Param("plug_separator", "string", "--plug-separator=[char]",
          "Separator for plug parameter when specifying more than 1 plug", 8, default=","),
    Param("separator", "string", "-C, --separator=[char]",
          "Separator for CSV created by 'list' operation", 8, default=","),
    Param("delay", "second", "--delay=[seconds]", "Wait X seconds before fencing is started", 9,
          default="0"),
    Param("disable_timeout", "string", "--disable-timeout=[true/false]",
          "Accepted for compatibility; fence_xenapi always keeps its timeouts", 9),
    Param("login_timeout", "second", "--login-timeout=[seconds]",
          "Wait X seconds for the login (all pool hosts together)", 9,
          default="10"),
    Param("power_timeout", "second", "--power-timeout=[seconds]",
          "Test X seconds for status change after ON/OFF", 9, default="20"),
    Param("power_wait", "second", "--power-wait=[seconds]",
          "Wait X seconds after issuing ON/OFF", 9, default="0"),
    Param("shell_timeout", "second", "--shell-timeout=[seconds]",
          "Wait X seconds for each XenAPI call to answer (a power call is then followed by "
          "reading the VM's power state)", 9, default="3"),
    Param("stonith_status_sleep", "second", "--stonith-status-sleep=[seconds]",
          "Sleep X seconds between status calls during a STONITH action", 9, default="1"),
    Param("retry_on", "integer", "--retry-on=[attempts]", "Count of attempts to retry power on",
          10, default="1"),
    Param("allow_power_state_reset", "boolean", "--allow-power-state-reset",
          "If XAPI marks the VM's host not live and pool HA is enabled, mark the VM halted "
          "(VM.power_state_reset; needs the pool-operator role)", 11),
    Param("allow_power_state_reset_without_ha", "boolean",
          "--allow-power-state-reset-without-ha",
          "With allow_power_state_reset, also reset when pool HA is disabled. Only safe if a "
          "host XAPI marks not live is always really powered off", 11),
)
PARAMS_BY_NAME = {param.name: param for param in PARAMS}
# Every name accepted on stdin, old and hidden ones included, mapped to its parameter.
STDIN_NAMES = {
    alias: param
    for param in PARAMS
    for alias in (param.name, *param.deprecated_names, *param.hidden_names)
}


def shown_value(text: str, limit: int = 40) -> str:
    """A parameter's value as an error or warning quotes it: its first line only, bounded.
    A stdin value can hold what other programs take for a line end (a bare \\r, \\x85,
    U+2028: fence-agents splits at \\n only): the next "line" of a file written with such
    line ends may be the password."""
    lines = text.splitlines()
    first = lines[0] if lines else ""
    if first != text and len(first) <= limit:
        first += "…"
    return printable(first, limit)


def parse_stdin(text: str) -> tuple[dict[str, str], list[str]]:
    """Read fence-agents' stdin format: `key=value` lines, `#` comments, last value wins.

    Returns the values by parameter name and the warnings to log once logging is set up.
    As in fence-agents, each line is stripped of surrounding whitespace (so a value keeps
    inner and leading blanks after the '=', never trailing ones), one pair of surrounding
    double quotes is removed, a line without '=' sets its parameter to the empty value, and a
    name is matched as written (with '-' and '_' interchangeable in the current names only)."""
    values: dict[str, str] = {}
    warnings: list[str] = []
    # Lines end at \n only, as Python's stdin ends them for fence-agents: CPython opens
    # sys.stdin with newline="\n" on POSIX (pylifecycle.c create_stdio; universal newlines
    # only on Windows), so a bare \r stays in the line (and a \r before \n goes with the
    # strip); str.splitlines() would also split a value at \r, \x0c, \x85, U+2028...
    for raw_line in text.split("\n"):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
            value = value[1:-1]
        param = STDIN_NAMES.get(key) or PARAMS_BY_NAME.get(key.replace("-", "_"))
        if param is None:
            warnings.append(f"ignoring unknown parameter '{shown_value(key)}'")
            continue
        if param.kind == "boolean":
            word = value.strip().lower()
            if word in TRUE_WORDS:
                value = "1"
            elif word in FALSE_WORDS:
                value = "0"
            else:
                warnings.append(f"ignoring {key}={shown_value(value)}: not a boolean (use "
                                "1/0, yes/no, on/off, true/false)")
                continue
        values[param.name] = value
    if "verbose_level" not in values and values.get("verbose") == "1":
        values["verbose_level"] = "1"
    return values, warnings


def parse_argv(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Read fence-agents' command-line options (getopt, short and long forms)."""
    import getopt

    shorts = ""
    longs: list[str] = []
    by_option: dict[str, Param] = {}
    for param in PARAMS:
        suffix = ":" if param.takes_value else ""
        if param.short_option:
            shorts += param.short_option + suffix
            by_option["-" + param.short_option] = param
        if param.long_option:
            longs.append(param.long_option + ("=" if param.takes_value else ""))
            by_option["--" + param.long_option] = param
    try:
        found, leftover = getopt.gnu_getopt(_expand_long_prefixes(argv), shorts, longs)
    except getopt.GetoptError as error:
        raise UsageError(f"{error.msg} (see '{AGENT_NAME} --help')") from None
    values: dict[str, str] = {}
    verbose_count = 0
    for option, value in found:
        param = by_option[option]
        if param.name == "verbose":
            verbose_count += 1
        values[param.name] = value if param.takes_value else "1"
    if verbose_count and "verbose_level" not in values:
        values["verbose_level"] = str(verbose_count)
    warnings = [f"ignoring extra arguments: {' '.join(leftover)}"] if leftover else []
    return values, warnings


# The options of fence-agents' fence_xenapi (4.12: fencing.py's defaults and its device_opt);
# every other parameter is one this agent adds.
FENCE_AGENTS_OPTIONS = frozenset({
    "action", "username", "password", "password_script", "plug", "session_url", "quiet",
    "verbose", "verbose_level", "debug_file", "version", "help", "plug_separator", "separator",
    "delay", "disable_timeout", "login_timeout", "power_timeout", "power_wait", "shell_timeout",
    "stonith_status_sleep", "retry_on"})


def _expand_long_prefixes(argv: Sequence[str]) -> list[str]:
    """Spell out abbreviated long options so that a prefix means what it means to fence-agents'
    fence_xenapi (`--u` is --username there), even where it also begins one of our added
    options (--uuid); a prefix of added options only is resolved against all of them.
    Values are left alone: the argument after an option that takes one is never rewritten."""
    longs = {p.long_option: p for p in PARAMS if p.long_option}
    theirs = [name for name, p in longs.items() if p.name in FENCE_AGENTS_OPTIONS]
    value_shorts = {p.short_option for p in PARAMS if p.short_option and p.takes_value}

    def resolve(name: str) -> Optional[str]:
        if name in longs:
            return name
        for pool in (theirs, list(longs)):
            matches = [option for option in pool if option.startswith(name)]
            if len(matches) == 1:
                return matches[0]
        return None  # unknown or ambiguous: getopt says so

    expanded: list[str] = []
    expect_value = False
    for index, given in enumerate(argv):
        arg = given
        if expect_value:
            expect_value = False
        elif arg == "--":
            expanded.extend(argv[index:])
            break
        elif arg.startswith("--"):
            name, equals, value = arg[2:].partition("=")
            full = resolve(name) if name else None
            if full is not None:
                arg = f"--{full}{equals}{value}"
                expect_value = not equals and longs[full].takes_value
        elif arg.startswith("-") and len(arg) > 1:
            for position, letter in enumerate(arg[1:], 1):
                if letter in value_shorts:
                    expect_value = position == len(arg) - 1
                    break
        expanded.append(arg)
    return expanded


class Target(Value):
    """A VM the user named: by name label or UUID (`plug`/`port`/`nodename`), or by UUID only
    (`uuid`)."""

    __slots__ = ("text", "uuid_only")

    def __init__(self, text: str, uuid_only: bool = False) -> None:
        self.text: Final = text
        self.uuid_only: Final = uuid_only

    def describe(self) -> str:
        text = shown_value(self.text, 100)
        return f"uuid '{text}'" if self.uuid_only else f"'{text}'"


class Options(Value):
    """Validated, typed parameters of one run. Defaults live in PARAMS only."""

    __slots__ = ("action", "username", "password", "password_script", "plugs", "uuid", "nodename",
                 "session_urls", "ssl_insecure", "ssl_ca_file", "ssl_fingerprints",
                 "allow_power_state_reset", "allow_power_state_reset_without_ha", "quiet",
                 "verbose_level", "debug_file", "show_version", "show_help", "separator", "delay",
                 "login_timeout", "power_timeout", "power_wait", "shell_timeout",
                 "stonith_status_sleep", "retry_on")

    def __init__(self, action: str, username: Optional[str], password: Optional[str],
                 password_script: Optional[str], plugs: tuple[str, ...], uuid: Optional[str],
                 nodename: Optional[str], session_urls: tuple[str, ...], ssl_insecure: bool,
                 ssl_ca_file: Optional[str], ssl_fingerprints: tuple[bytes, ...],
                 allow_power_state_reset: bool, allow_power_state_reset_without_ha: bool,
                 quiet: bool, verbose_level: int, debug_file: Optional[str], show_version: bool,
                 show_help: bool, separator: str, delay: float, login_timeout: float,
                 power_timeout: float, power_wait: float, shell_timeout: float,
                 stonith_status_sleep: float, retry_on: int) -> None:
        self.action: Final = action
        self.username: Final = username
        self.password: Final = password
        self.password_script: Final = password_script
        self.plugs: Final = plugs
        self.uuid: Final = uuid
        self.nodename: Final = nodename
        self.session_urls: Final = session_urls
        self.ssl_insecure: Final = ssl_insecure
        self.ssl_ca_file: Final = ssl_ca_file
        self.ssl_fingerprints: Final = ssl_fingerprints
        self.allow_power_state_reset: Final = allow_power_state_reset
        self.allow_power_state_reset_without_ha: Final = allow_power_state_reset_without_ha
        self.quiet: Final = quiet
        self.verbose_level: Final = verbose_level
        self.debug_file: Final = debug_file
        self.show_version: Final = show_version
        self.show_help: Final = show_help
        self.separator: Final = separator
        self.delay: Final = delay
        self.login_timeout: Final = login_timeout
        self.power_timeout: Final = power_timeout
        self.power_wait: Final = power_wait
        self.shell_timeout: Final = shell_timeout
        self.stonith_status_sleep: Final = stonith_status_sleep
        self.retry_on: Final = retry_on

    def __repr__(self) -> str:  # never show the password, even in a debugger or a traceback
        return f"Options(action={self.action!r}, targets={self.targets()!r})"

    @classmethod
    def from_values(cls, given: Mapping[str, str]) -> Options:
        values = {p.name: p.default for p in PARAMS if p.default is not None}
        values.update(given)

        def text(name: str) -> Optional[str]:
            value = values.get(name)
            return value if value else None

        def flag(name: str) -> bool:
            return values.get(name) == "1"

        def number(name: str, kind: type[float] | type[int]) -> Any:
            return parse_number(name, values.get(name, ""), kind)

        action = values["action"].strip().lower()
        if action == "meta-data":  # OCF spelling
            action = "metadata"
        if action not in ACTIONS:
            raise UsageError(f"unknown action '{shown_value(values['action'])}' "
                             f"(one of: {', '.join(ACTIONS)})")
        plug_separator = values["plug_separator"] or ","
        plug_text = values.get("plug") or ""
        plugs = tuple(p for p in plug_text.split(plug_separator) if p.strip())
        urls = tuple(u for u in re.split(r"[\s,]+", values.get("session_url") or "") if u)
        verbose_level = number("verbose_level", int) if "verbose_level" in values else 0
        if flag("verbose") and verbose_level == 0 and "verbose_level" not in given:
            verbose_level = 1
        uuid = text("uuid")
        if uuid is not None and not UUID_RE.match(uuid.strip()):
            raise UsageError(f"uuid={shown_value(uuid)}: not a UUID")
        return cls(
            action=action,
            username=text("username"),
            password=values.get("password"),
            password_script=text("password_script"),
            plugs=plugs,
            uuid=uuid.strip().lower() if uuid else None,
            nodename=text("nodename"),
            session_urls=urls,
            ssl_insecure=flag("ssl_insecure"),
            ssl_ca_file=text("ssl_ca_file"),
            ssl_fingerprints=parse_fingerprints(text("ssl_fingerprint")),
            allow_power_state_reset=flag("allow_power_state_reset"),
            allow_power_state_reset_without_ha=flag("allow_power_state_reset_without_ha"),
            quiet=flag("quiet"),
            verbose_level=verbose_level,
            debug_file=text("debug_file"),
            show_version=flag("version"),
            show_help=flag("help"),
            separator=values["separator"],
            delay=number("delay", float),
            login_timeout=number("login_timeout", float),
            power_timeout=number("power_timeout", float),
            power_wait=number("power_wait", float),
            shell_timeout=number("shell_timeout", float),
            stonith_status_sleep=number("stonith_status_sleep", float),
            retry_on=number("retry_on", int),
        )

    def targets(self) -> list[Target]:
        """The VMs to act on. `uuid` (the original agent's parameter) wins over plug/port,
        which wins over nodename, as in fence-agents."""
        if self.uuid:
            return [Target(self.uuid, uuid_only=True)]
        if self.plugs:
            return [Target(plug) for plug in self.plugs]
        if self.nodename:
            return [Target(self.nodename)]
        return []

    def cross_checks(self) -> list[Target]:
        """Plugs that must not contradict `uuid`: when both are given, a plug naming another
        real VM is a conflict, never silently overridden."""
        return [Target(plug) for plug in self.plugs] if self.uuid else []

    def check(self) -> None:
        """Refuse a run that cannot work, before anything is contacted."""
        if self.action in ("metadata", "manpage"):
            return
        if not self.session_urls:
            raise UsageError("session_url is required (the URL of a pool host, "
                             "e.g. https://xenserver1)")
        for url in self.session_urls:
            Endpoint.parse(url)
        if not self.username:
            raise UsageError("username is required")
        if self.password is None and not self.password_script:
            raise UsageError("password or password_script is required")
        if self.action in ACTIONS_WITH_TARGET and not self.targets():
            raise UsageError(f"action '{self.action}' needs plug (or port, uuid or nodename)")
        if self.ssl_ca_file and not os.access(self.ssl_ca_file, os.R_OK):
            raise UsageError(f"ssl_ca_file={self.ssl_ca_file}: cannot read that file")
        if self.ssl_ca_file and not self.ssl_insecure and not self.ssl_fingerprints:
            TlsPolicy(ca_file=self.ssl_ca_file).context()  # a file that is not PEM: one line
        for name in ("username", "password"):
            text_problem(name, getattr(self, name))
        for target in [*self.targets(), *self.cross_checks()]:
            text_problem("plug" if not target.uuid_only else "uuid", target.text)
        if self.ssl_insecure and (self.ssl_ca_file or self.ssl_fingerprints):
            raise UsageError("ssl_insecure contradicts ssl_ca_file/ssl_fingerprint: choose one")
        if self.allow_power_state_reset_without_ha and not self.allow_power_state_reset:
            raise UsageError("allow_power_state_reset_without_ha needs allow_power_state_reset=1")

    def read_password(self) -> str:
        """The password: what password_script prints if one is given (it wins over password,
        as in fence-agents), else password. The script runs through the shell; as in
        fence-agents its whole output, right-stripped, is the password and its exit status
        only earns a warning (the login then decides). Its output never reaches any log."""
        if not self.password_script:
            assert self.password is not None  # noqa: S101 - check() guarantees it
            return self.password
        import subprocess

        try:
            done = subprocess.run(
                ["/bin/sh", "-c", self.password_script], stdin=subprocess.DEVNULL,
                capture_output=True, timeout=max(self.login_timeout, 5.0), check=False)
        except subprocess.TimeoutExpired:
            raise TimedOut("password_script did not finish in time") from None
        except OSError as error:
            raise FenceError(f"password_script could not run: {error.strerror}") from None
        if done.returncode != 0:
            log.warning("password_script exited with status %d; using what it printed",
                        done.returncode)
        try:
            password = done.stdout.decode("utf-8").rstrip()
        except UnicodeDecodeError:
            raise FenceError("password_script printed bytes that are not UTF-8") from None
        text_problem("the password from password_script", password)
        return password


# Bounds where numbers are parsed, so that no later sleep, socket timeout or loop overflows or
# runs for ever: nothing in fencing waits a day, or tries a thousand times.
MAX_SECONDS = 86400.0
MAX_COUNT = 1000
_SECONDS_RE = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?", re.ASCII)
_COUNT_RE = re.compile(r"[-+]?[0-9]+", re.ASCII)


def parse_number(name: str, raw: str, kind: type[float] | type[int]) -> Any:
    """A number of seconds (float) or a count (int) from a parameter's text, bounded: plain
    decimal notation only (no inf/nan, '_' or non-ASCII digits), 0 to MAX_SECONDS/MAX_COUNT."""
    text = raw.strip()
    pattern, noun, most = ((_COUNT_RE, "whole number", MAX_COUNT) if kind is int
                           else (_SECONDS_RE, "number of seconds", MAX_SECONDS))
    shown = shown_value(raw)
    if len(text) > 40 or not pattern.fullmatch(text):
        raise UsageError(f"{name}={shown}: not a {noun}")
    value = kind(text)
    if value < 0:
        raise UsageError(f"{name}={shown}: must be zero or more")
    if not value <= most:
        unit = "" if kind is int else " seconds"
        raise UsageError(f"{name}={shown}: must be at most {most:g}{unit}")
    return value


def text_problem(name: str, value: Optional[str]) -> None:
    """Refuse a text parameter that cannot reach XAPI (see xml_text_problem)."""
    problem = xml_text_problem(value) if value else None
    if problem:
        raise UsageError(f"{name} {problem}")


def parse_fingerprints(text: Optional[str]) -> tuple[bytes, ...]:
    """One SHA-256 fingerprint per pool host (each host has its own certificate), separated by
    commas, semicolons or spaces; openssl's `sha256 Fingerprint=AB:CD:…` form is accepted."""
    if text is None:
        return ()
    found: list[bytes] = []
    for token in re.split(r"[,;\s]+", text):
        value = token.split("=", 1)[-1]
        if not value or token.lower() in ("sha256", "sha-256"):
            continue  # openssl's label, or an empty item
        fingerprint = parse_fingerprint(value)
        if fingerprint is not None and fingerprint not in found:
            found.append(fingerprint)
    if not found:
        raise UsageError(f"ssl_fingerprint={shown_value(text, 80)}: not a SHA-256 "
                         "fingerprint (64 hex digits, colons allowed)")
    return tuple(found)


def parse_fingerprint(text: Optional[str]) -> Optional[bytes]:
    if text is None:
        return None
    digits = re.sub(r"[\s:]", "", text.split("=", 1)[-1])
    if not re.fullmatch(r"[0-9A-Fa-f]{64}", digits):
        raise UsageError(f"ssl_fingerprint={shown_value(text, 80)}: not a SHA-256 "
                         "fingerprint (64 hex digits, colons allowed)")
    return bytes.fromhex(digits)


# ---------------------------------------------------------------------------------------------
# Deadlines
# ---------------------------------------------------------------------------------------------


def seconds_text(seconds: float) -> str:
    """A duration for a message: "10", "7.98", "0.05" (what is left of a budget, not 7.98321)."""
    return f"{seconds:.2f}".rstrip("0").rstrip(".")


class Deadline:
    """The point in time an operation must finish by: the one way the agent counts time.
    Every wait (name lookup, connect, TLS handshake, send, read, parse, sleep) takes its
    bound from one, and running out of it is always TimedOut. `clock` is time.monotonic
    (a test passes its own: a node up for days, a clock that jumps)."""

    def __init__(self, seconds: float, what: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.what = what
        self.clock = clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        return self._end - self.clock()

    def expired(self) -> TimedOut:
        """The error to raise when this deadline has passed."""
        return TimedOut(f"{self.what} did not finish within {seconds_text(self.seconds)} s")

    def timeout(self, cap: Optional[float] = None) -> float:
        """What is left (at most `cap`), for a socket timeout; TimedOut if nothing is."""
        left = self.remaining()
        if left <= 0:
            raise self.expired()
        return left if cap is None else min(left, cap)

    def check(self) -> None:
        """TimedOut if the deadline has passed (between steps of a long computation)."""
        self.timeout()

    def capped(self, cap: float) -> Deadline:
        """A deadline that ends `cap` seconds from now or at this one, whichever is first."""
        return self if self.remaining() <= cap else Deadline(cap, self.what, self.clock)

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, min(seconds, self.remaining())))


# ---------------------------------------------------------------------------------------------
# XML-RPC: requests and answers, within bounds
# ---------------------------------------------------------------------------------------------


# Bounds on what a pool host may send. A VM record is about 10 KB, so a 100,000-VM pool's
# VM.get_all_records_where answer is about 1 GB: the record-map cap is four times that, and the
# scanner that reads it keeps only the wanted fields, so memory does not grow with the answer.
# Every other answer (a login, one record, a failure) is decoded whole: XAPI sends those in
# kilobytes, and their cap keeps the decoded objects far below what hurts a cluster node.
MAX_RECORD_MAP_BYTES = 4 << 30
# Records kept: ~560 bytes each at 7 fields, so 100,000 (above the 64 hosts x 1,000 VMs a pool
# is certified for) stay near 60 MB, and `list` with its VM objects well under 150 MB.
MAX_RECORDS = 100_000
MAX_ANSWER_BYTES = 8 << 20
MAX_MEMBER_BYTES = 16 << 20  # one struct member of a record (a long string), read as one piece
MAX_DEPTH = 64  # XML-RPC values nested deeper than this are refused (XAPI's records: ~5)
MAX_HEADER_LINE = 8 << 10
MAX_HEADERS = 100
MAX_HEADER_BYTES = 64 << 10
MAX_INTERIM_RESPONSES = 8  # `100 Continue` and friends before the real status line
RECV_SIZE = 256 << 10


class AnswerError(ValueError):
    """An answer that is not a XAPI response, or breaks one of the bounds above."""


# --- XML-RPC: the request ----------------------------------------------------------------------

def _encode_value(value: object, out: list[str], depth: int = 0) -> None:
    if depth > 8:
        raise ValueError("request parameters nested too deeply")
    if isinstance(value, bool):
        out.append(f"<value><boolean>{int(value)}</boolean></value>")
    elif isinstance(value, int):
        if not -(2**31) <= value < 2**31:
            raise ValueError(f"integer {value} does not fit XML-RPC's <int>")
        out.append(f"<value><int>{value}</int></value>")
    elif isinstance(value, float):
        out.append(f"<value><double>{value!r}</double></value>")
    elif isinstance(value, str):
        problem = xml_text_problem(value)
        if problem:
            raise ValueError(f"a parameter {problem}")
        out.append(f"<value><string>{value.translate(_XML_ESCAPES)}</string></value>")
    elif isinstance(value, (list, tuple)):
        out.append("<value><array><data>")
        for item in value:
            _encode_value(item, out, depth + 1)
        out.append("</data></array></value>")
    elif isinstance(value, dict):
        out.append("<value><struct>")
        for key, item in value.items():
            problem = xml_text_problem(str(key))
            if problem:
                raise ValueError(f"a struct key {problem}")
            out.append(f"<member><name>{str(key).translate(_XML_ESCAPES)}</name>")
            _encode_value(item, out, depth + 1)
            out.append("</member>")
        out.append("</struct></value>")
    else:
        raise ValueError(f"cannot send a {type(value).__name__} over XML-RPC")


def encode_call(method: str, params: Sequence[object]) -> bytes:
    """The XML-RPC methodCall for `method(*params)`, UTF-8. Raises FenceError for a value XML
    cannot carry (the message never holds the value: it may be a password)."""
    out = ["<?xml version='1.0'?>\n<methodCall>\n<methodName>", method.translate(_XML_ESCAPES),
           "</methodName>\n<params>\n"]
    try:
        for param in params:
            out.append("<param>")
            _encode_value(param, out)
            out.append("</param>\n")
    except ValueError as error:
        raise FenceError(f"cannot send {method}: {error}") from None
    out.append("</params>\n</methodCall>\n")
    return "".join(out).encode("utf-8")


# --- XML-RPC: an answer's values, and whole answers (small ones) read by expat ------------------

_ENTITY = re.compile(r"&(#x[0-9A-Fa-f]{1,8}|#[0-9]{1,10}|lt|gt|amp|quot|apos);")
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}


def _unescape(text: str) -> str:
    """Text with XML's entity and character references replaced; a reference to something
    that is not a character XML allows (`&#x110000;`, `&#0;`, a surrogate) is an AnswerError."""
    if "&" not in text:
        return text

    def one(match: re.Match[str]) -> str:
        ref = match.group(1)
        if not ref.startswith("#"):
            return _NAMED_ENTITIES[ref]
        code = int(ref[2:], 16) if ref.startswith("#x") else int(ref[1:])
        if code > 0x10FFFF or _NOT_XML_CHAR.match(chr(code)):
            raise AnswerError(f"&{ref}; is not a character XML allows")
        return chr(code)

    return _ENTITY.sub(one, text)


def _utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise AnswerError(f"{what} is not valid UTF-8 (byte {error.start})") from None


def _scalar(tag: str, text: str) -> Any:
    """The Python value of an XML-RPC scalar element's (unescaped) text."""
    if tag in ("string", "value", "dateTime.iso8601"):
        return text
    stripped = text.strip()
    if tag in ("int", "i4", "i8"):
        if not re.fullmatch(r"[-+]?[0-9]{1,20}", stripped):
            raise AnswerError(f"<{tag}> holds {stripped[:40]!r}")
        return int(stripped)
    if tag == "boolean":
        if stripped not in ("0", "1"):
            raise AnswerError(f"<boolean> holds {stripped[:40]!r}")
        return stripped == "1"
    if tag == "double":
        try:
            return float(stripped)
        except ValueError:
            raise AnswerError(f"<double> holds {stripped[:40]!r}") from None
    if tag == "base64":
        import base64
        import binascii

        try:
            return base64.b64decode(stripped)
        except (binascii.Error, ValueError):
            raise AnswerError("<base64> holds invalid data") from None
    raise AnswerError(f"unknown XML-RPC type <{tag}>")


_SCALAR_TAGS = frozenset({"string", "int", "i4", "i8", "boolean", "double", "dateTime.iso8601",
                          "base64"})
# Where each element of an XML-RPC answer may stand: the elements it may be inside ("" is the
# document itself). Anything else is refused.
_PARENTS: dict[str, tuple[str, ...]] = {
    "methodResponse": ("",), "params": ("methodResponse",), "fault": ("methodResponse",),
    "param": ("params",), "value": ("param", "fault", "member", "data"), "member": ("struct",),
    "name": ("member",), "data": ("array",), "struct": ("value",), "array": ("value",),
    "nil": ("value",), **{tag: ("value",) for tag in _SCALAR_TAGS}}
_TEXT_TAGS = frozenset({"value", "name", *_SCALAR_TAGS})  # elements that may hold text
# In a struct member's name, what XML cannot hold as it is: escaped, so that the name reads
# as the raw text XAPI sent (XML 1.0 cannot carry most control characters at all).
_NAME_SPECIAL = re.compile(rb"[&<>\r\x00-\x08\x0b\x0c\x0e-\x1f]")
_NAME_ESCAPES = {b"&": b"&amp;", b"<": b"&lt;", b">": b"&gt;", b"\r": b"&#13;"}


def _escape_member_names(body: bytes, deadline: Optional[Deadline]) -> bytes:
    """`body` with each struct member name escaped: XAPI writes names raw (ocaml-rpc
    xmlrpc.ml), so a map key holding `&` or `<` makes its answer malformed XML. A name is the
    raw text from <name> to the next </name>; one linear pass (a name that never ends is an
    AnswerError at once). A control character in a name, which XML cannot carry even as a
    reference, becomes U+FFFD (names are map keys; the agent reads none that holds one)."""
    parts: list[bytes] = []
    position = copied = names = 0
    while True:
        start = body.find(b"<name>", position)
        if start < 0:
            break
        start += len(b"<name>")
        end = body.find(b"</name>", start)
        if end < 0:
            raise AnswerError("a struct member's <name> never ends")
        names += 1
        if not names & 0xFFF and deadline is not None:
            deadline.check()
        if _NAME_SPECIAL.search(body, start, end):
            parts += (body[copied:start], _NAME_SPECIAL.sub(
                lambda m: _NAME_ESCAPES.get(m.group(), "\ufffd".encode()), body[start:end]))
            copied = end
        position = end + len(b"</name>")
    return b"".join((*parts, body[copied:])) if parts else body


class _Frame:
    """An element of an answer being read: what it holds so far."""

    __slots__ = ("items", "name", "tag", "text")

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.items: list[Any] = []  # the values (or members) inside it
        self.text: list[str] = []
        self.name: Optional[str] = None  # a member's name


class _WholeAnswer:
    """Builds the value of a whole XML-RPC methodResponse from expat's events, element by
    element (an explicit stack: no recursion), refusing what is not XML-RPC."""

    def __init__(self, deadline: Optional[Deadline]) -> None:
        self.stack = [_Frame("")]
        self.deadline = deadline
        self.elements = 0

    def start(self, tag: str, attributes: dict[str, str]) -> None:
        self.elements += 1
        if not self.elements & 0xFFF and self.deadline is not None:
            self.deadline.check()
        parent = self.stack[-1].tag
        if parent not in _PARENTS.get(tag, (parent,)):
            raise AnswerError(f"<{tag}> inside <{parent}>" if parent else f"<{tag}> as the root")
        if tag not in _PARENTS:
            raise AnswerError(f"unknown element <{tag}>")
        if attributes:
            raise AnswerError(f"<{tag}> with attributes")
        if len(self.stack) > 4 * MAX_DEPTH:
            raise AnswerError(f"values nested deeper than {MAX_DEPTH} levels")
        self.stack.append(_Frame(tag))

    def text(self, data: str) -> None:
        top = self.stack[-1]
        if top.tag in _TEXT_TAGS:
            top.text.append(data)
        elif not data.isspace():
            raise AnswerError(f"text inside <{top.tag}>")

    def end(self, tag: str) -> None:
        frame = self.stack.pop()
        parent = self.stack[-1]
        if tag == "name":
            if parent.name is not None:
                raise AnswerError("a struct member with two names")
            parent.name = "".join(frame.text)
            return
        parent.items.append(_CLOSE[tag](frame) if tag in _CLOSE else _scalar(
            tag, "".join(frame.text)))

    def result(self) -> tuple[bool, Any]:
        items = self.stack[0].items
        if not items:
            raise AnswerError("no result")
        result: tuple[bool, Any] = items[0]
        return result


def _one(frame: _Frame) -> Any:
    """The single value inside a param or fault (with the fault flag) or params."""
    if len(frame.items) != 1:
        raise AnswerError(f"<{frame.tag}> holds {len(frame.items) or 'no'} values")
    item = frame.items[0]
    return (frame.tag == "fault", item) if frame.tag in ("param", "fault") else item


def _close_value(frame: _Frame) -> Any:
    if not frame.items:
        return "".join(frame.text)  # an untyped value is a string
    if len(frame.items) > 1:
        raise AnswerError("<value> holds two values")
    if any(not part.isspace() for part in frame.text):
        raise AnswerError("text beside a typed value")
    return frame.items[0]


def _close_member(frame: _Frame) -> tuple[str, Any]:
    if frame.name is None or len(frame.items) != 1:
        raise AnswerError("struct member without a name or one value")
    return frame.name, frame.items[0]


def _close_struct(frame: _Frame) -> dict[str, Any]:
    struct = dict(frame.items)
    if len(struct) != len(frame.items):
        twice = next(name for name in struct if sum(n == name for n, _ in frame.items) > 1)
        raise AnswerError(f"struct member {printable(twice, 40)!r} twice")
    return struct


def _close_array(frame: _Frame) -> list[Any]:
    if len(frame.items) > 1:
        raise AnswerError("<array> holds two <data>")
    return frame.items[0] if frame.items else []


_CLOSE: dict[str, Callable[[_Frame], Any]] = {
    "methodResponse": _one, "params": _one, "param": _one, "fault": _one,
    "value": _close_value, "member": _close_member, "struct": _close_struct,
    "array": _close_array, "data": lambda frame: frame.items, "nil": lambda frame: None}


def decode_xmlrpc_response(body: bytes, deadline: Optional[Deadline] = None) -> tuple[bool, Any]:
    """(is_fault, value) of a whole XML-RPC methodResponse, read by the stdlib's expat after
    XAPI's raw member names are escaped. No DTD, entity beyond XML's own, comment,
    processing instruction or CDATA section; nesting up to MAX_DEPTH values; past `deadline`
    it stops with TimedOut (8 MiB of tiny values take seconds)."""
    from xml.parsers import expat

    _utf8(body, "the answer")  # UTF-8 whatever the answer declares, and said so when not
    builder = _WholeAnswer(deadline)

    def refuse(what: str) -> Callable[..., None]:
        def handler(*_: object) -> None:
            raise AnswerError(f"{what} (not XML-RPC)")
        return handler

    parser = expat.ParserCreate("UTF-8")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.buffer_text = True
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.text
    parser.StartDoctypeDeclHandler = refuse("a DOCTYPE")
    parser.EntityDeclHandler = refuse("an entity declaration")
    parser.CommentHandler = refuse("a comment")
    parser.ProcessingInstructionHandler = refuse("a processing instruction")
    parser.StartCdataSectionHandler = refuse("a CDATA section")
    try:
        parser.Parse(_escape_member_names(body, deadline), True)
    except expat.ExpatError as error:
        raise AnswerError(f"not XML: {expat.ErrorString(error.code)} at line {error.lineno}, "
                          f"column {error.offset}") from None
    return builder.result()


def _xapi_result(decoded: tuple[bool, Any], method: str) -> tuple[str, Any]:
    """("Success", Value) of a decoded XAPI answer; raises XapiFailure for a failure."""
    is_fault, answer = decoded
    if is_fault:
        details = answer if isinstance(answer, dict) else {}
        raise AnswerError(f"XML-RPC fault {details.get('faultCode')}: "
                          f"{printable(str(details.get('faultString')))}")
    if not isinstance(answer, dict):
        raise AnswerError("no result struct")
    status = answer.get("Status")
    if status == "Success" and "Value" in answer:
        return "Success", answer["Value"]
    if status == "Failure":
        description = answer.get("ErrorDescription", [])
        raise XapiFailure(method, description if isinstance(description, list) else [])
    raise AnswerError(f"Status {printable(str(status))!r}")


def _project(value: Any, fields: frozenset[str]) -> dict[str, dict[str, Any]]:
    """The wanted fields of each record of a decoded record map; every field must be there."""
    if not isinstance(value, dict):
        raise AnswerError("expected a map of records")
    records: dict[str, dict[str, Any]] = {}
    for ref, record in value.items():
        if not isinstance(record, dict):
            raise AnswerError(f"record {printable(ref)} is not a struct")
        missing = fields.difference(record)
        if missing:
            raise AnswerError(f"record {printable(ref)} has no {min(missing)}")
        records[ref] = {name: record[name] for name in fields}
    return records


# --- XML-RPC: a record map, read while it arrives ------------------------------------------------

# A successful answer whose Value is a map of records (VM.get_all_records_where): XAPI sends
# Status first, then each record as <member><name>OpaqueRef:…</name><value><struct>…
_SUCCESS_HEAD = re.compile(rb"\s*(?:<\?xml[^>]*>\s*)?<methodResponse>\s*<params>\s*<param>\s*"
                           rb"<value>\s*<struct>\s*<member>\s*<name>Status</name>\s*<value>\s*"
                           rb"(?:<string>)?Success(?:</string>)?\s*</value>\s*</member>\s*"
                           rb"<member>\s*<name>Value</name>\s*<value>\s*<struct>")
_SUCCESS_TAIL = re.compile(rb"\s*</value>\s*</member>\s*</struct>\s*</value>\s*</param>\s*"
                           rb"</params>\s*</methodResponse>\s*")
_HEAD_PEEK = 4096
# Tokens the scanner stops at; everything between them is skipped by the regex engine in C.
# No two parts of a pattern may match the same text (such as [^<]* then \s*): on a hostile
# answer, that costs time quadratic in its length inside one regex call, past any deadline.
#   1: a record's ref, opening its struct    2-5: a wanted scalar member (name, type, text)
#   a <name> with '<' inside (a map key XAPI did not escape; no group)
#   6: a whole flat struct or array (scalars only: most maps and sets of a record), skipped
#      as one token: its member names are map keys, never record fields
#   7-8: a struct or array opening or closing (to know how deep each <name> is)
_SCALAR = rb"(?:<string>[^<]*</string>|[^<]*)"
_FLAT = (rb"struct>(?:\s*<member>\s*<name>[^<]*</name>\s*<value>" + _SCALAR +
         rb"</value>\s*</member>)*\s*</struct>"
         rb"|array>\s*<data>(?:\s*<value>" + _SCALAR + rb"</value>)*\s*</data>\s*</array>")
_MAP_TOKEN = (rb"<(?:name>(?:(OpaqueRef:[^<]*)</name>\s*<value>\s*<struct>"
              rb"|(%s)</name>\s*<value>(?:\s*<(string|boolean)>([^<]*)</\3>\s*|([^<]*))</value>"
              rb"|(?![^<]*</name>))"
              rb"|(" + _FLAT.replace(b"%", b"%%") + rb")"
              rb"|(/?)(struct|array)>)")
_NAME_TOKEN = (rb"<name>(?:(OpaqueRef:[^<]*)</name>\s*<value>\s*<struct>"
               rb"|(%s)</name>\s*<value>(?:\s*<(string|boolean)>([^<]*)</\3>\s*|([^<]*))</value>"
               rb"|(?![^<]*</name>))")
_RECORD_END = re.compile(rb"</struct>\s*</value>\s*</member>\s*<member>\s*\Z")
# What may stand between two records (depth 2), for the first record and for the others.
_FIRST_GAP = re.compile(rb"\s*<member>\s*")
_NEXT_GAP = re.compile(rb"\s*</value>\s*</member>\s*<member>\s*")
_LAST_GAP = re.compile(rb"\s*</value>\s*</member>\s*")


class RecordMapScanner:
    """Reads a successful record-map answer (`VM.get_all_records_where`) chunk by chunk and
    keeps only the scalar `fields` of each record, so memory does not grow with the answer.

    Two ways, both C regexes that skip everything but a few tokens:
    - fast: tokens start with <name> (which the regex engine finds like a literal string):
      record refs, wanted scalar members, and names holding '<'. A record is taken this way
      only when each wanted field occurs exactly once between its ref and the next record's,
      that span ends as a record does, and no name in it holds '<' (a key XAPI did not
      escape could hide markup). XAPI always sends every field at the record's level, so a
      field seen once is the record's own.
    - precise, for any other record (a nested map key named like a field, keys with '<' or
      '&') and for the last one: it also stops at every struct/array tag (flat maps and sets
      skipped whole), so the depth of each wanted member is known and a nested
      other_config:name_label is never taken for the record's name.
    What neither can read is an AnswerError, never a guess: a record without a field or with
    it twice at its own level, a wanted field that is not a scalar, anything but records at
    the map's level, tags that do not pair up, nesting beyond MAX_DEPTH, a record over
    MAX_MEMBER_BYTES. An answer that does not start as a successful record map (a failure)
    is collected instead and decoded whole, under MAX_ANSWER_BYTES."""

    def __init__(self, fields: frozenset[str], deadline: Optional[Deadline] = None) -> None:
        names = b"|".join(re.escape(name.encode()) for name in sorted(fields))
        self._deadline = deadline  # past it, reading stops (TimedOut)
        self._name_token = re.compile(_NAME_TOKEN % names)
        self._names = names  # the precise way's regex is compiled when first needed (~ms)
        self._precise_token: Optional[re.Pattern[bytes]] = None
        self._fields = fields
        self._keys = {name.encode(): name for name in fields}
        self._buffer = bytearray()
        self._state = "head"  # head -> map -> tail; or whole (not a record map)
        self._records: dict[str, dict[str, Any]] = {}
        self._intern: dict[bytes, str] = {}
        # fast way: the record whose span starts the buffer, what was found in it so far
        self._current: Optional[bytes] = None
        self._body = 0
        self._found: dict[bytes, tuple[Optional[bytes], bytes]] = {}
        self._dirty = False
        self._search_from = 0
        # precise way
        self._stack: list[bytes] = []  # open containers below the map; [0] is a record
        self._record: Optional[dict[str, Any]] = None
        self._ref = ""
        self._gap = bytearray()  # text between records, checked when the next token comes
        self._gap_checked = False

    def feed(self, data: bytes) -> None:
        self._buffer += data
        if self._state == "head":
            if len(self._buffer) < _HEAD_PEEK:
                return
            self._start()
        if self._state == "whole":
            if len(self._buffer) > MAX_ANSWER_BYTES:
                raise AnswerError(f"an answer over {MAX_ANSWER_BYTES >> 20} MiB that is not "
                                  "a record map")
            return
        # A token never holds a <name> (values have no '<'), so everything before the last
        # <name> can be read now.
        cut = self._buffer.rfind(b"<name>")
        if cut > self._search_from:
            self._fast(cut)
        if len(self._buffer) > MAX_MEMBER_BYTES:
            raise AnswerError(f"a record over {MAX_MEMBER_BYTES >> 20} MiB")

    def finish(self, method: str) -> dict[str, dict[str, Any]]:
        if not self.is_record_map():
            _, value = _xapi_result(
                decode_xmlrpc_response(bytes(self._buffer), self._deadline), method)
            return _project(value, self._fields)
        self._fast(len(self._buffer))
        # The last record, the map's end and the answer's: the precise way.
        self._gap_checked = self._current is not None
        position = self._scan(0, len(self._buffer), final=True)
        if self._state != "tail":
            raise AnswerError("the answer ends inside the record map")
        if not _SUCCESS_TAIL.fullmatch(self._buffer, position):
            raise AnswerError("unexpected data after the record map")
        return self._records

    def is_record_map(self) -> bool:
        """Whether the answer is a successful record map (once its start has been read)."""
        if self._state == "head":
            self._start()
        return self._state != "whole"

    def _start(self) -> None:
        head = _SUCCESS_HEAD.match(self._buffer, 0, _HEAD_PEEK)
        if head is None:
            self._state = "whole"
            return
        del self._buffer[:head.end()]
        self._state = "map"

    def _fast(self, cut: int) -> None:
        """The fast way over the <name> tokens before `cut`; each record span that ends there
        is taken, or read again the precise way. The buffer then starts at the current
        record's ref (nothing is dropped while a regex iterates over it)."""
        buffer, position, record_start = self._buffer, self._search_from, 0
        for match in self._name_token.finditer(buffer, position, cut):
            position = match.end()
            kind = match.lastindex
            if kind == 1:  # the next record: the one before it ends here
                start = match.start()
                if self._current is not None:
                    self._end_span(record_start, start)
                elif not _FIRST_GAP.fullmatch(buffer, 0, start):
                    raise AnswerError("unexpected data before the first record")
                record_start = start
                self._current, self._body = match.group(1), position
                self._found, self._dirty = {}, False
            elif self._current is None:
                raise AnswerError("a member that is not a record in the record map")
            elif kind is None:
                self._dirty = True  # a name holding '<': the precise way decides
            else:
                name = match.group(2)
                if name in self._found:
                    self._dirty = True  # a nested key named like the field
                else:
                    self._found[name] = (match.group(3), match.group(kind))
        if record_start:
            del buffer[:record_start]
            self._body -= record_start
        self._search_from = position - record_start

    def _end_span(self, start: int, end: int) -> None:
        """The current record's span is the buffer from `start` (its ref) up to `end` (the
        next record's ref)."""
        assert self._current is not None  # noqa: S101 - called with a record open
        buffer = self._buffer
        if not self._dirty and len(self._found) == len(self._fields) and \
                _RECORD_END.search(buffer, max(self._body, end - 256), end):
            self._begin_record(self._current)
            keys, value = self._keys, self._value
            self._records[self._ref] = {keys[name]: value(keys[name], kind, raw)
                                        for name, (kind, raw) in self._found.items()}
            self._record = None
            return
        self._stack, self._gap_checked = [], True
        self._gap.clear()
        if self._scan(start, end, final=True) != end or self._stack or \
                self._state != "map" or not _NEXT_GAP.fullmatch(self._gap):
            raise AnswerError(f"record {printable(self._current.decode('utf-8', 'replace'))} "
                              "does not end where the next one starts")
        self._gap.clear()

    def _scan(self, start: int, cut: int, final: bool) -> int:
        """The precise way: every token from `start` to `cut`, depth tracked; returns the
        position up to which the buffer was read."""
        buffer, position, stack = self._buffer, start, self._stack
        restart, tokens, deadline = True, 0, self._deadline
        while restart and self._state == "map":
            restart = False
            for match in self._token().finditer(buffer, position, cut):
                tokens += 1
                if not tokens & 0xFFF and deadline is not None:
                    deadline.check()
                if not stack:  # at the map's level: only records, nothing between them
                    self._check_gap(bytes(buffer[position:match.start()]), match)
                position = match.end()
                if match.lastindex is not None:
                    self._take(match)
                    if self._state == "tail":
                        break
                    continue
                # A <name> holding '<': read on past its </name> (if it has all arrived).
                after = self._past_name(position, final)
                if after is None:
                    position = match.start()
                    break
                position = after
                restart = True
                break
        if self._state == "map" and not stack and position < cut:
            self._gap += buffer[position:cut]
            if len(self._gap) > _HEAD_PEEK:
                raise AnswerError("unexpected data between records")
            position = cut
        return position

    def _take(self, match: re.Match[bytes]) -> None:
        """One token of the precise way (a ref, a wanted member, a container's tag)."""
        stack, kind = self._stack, match.lastindex
        if kind == 8:  # <struct>, <array>, </struct>, </array>
            self._container(bool(match.group(7)), match.group(8))
        elif kind == 6:  # a flat struct or array: nothing in it is a record field
            if not stack:
                raise AnswerError("a value that is not a record in the record map")
        elif kind == 1:
            self._open(b"struct")
            if len(stack) == 1:
                self._begin_record(match.group(1))
        elif len(stack) == 1:  # a wanted member of the record itself
            assert kind is not None  # noqa: S101 - a wanted member has groups 2 to 5
            self._set_field(match.group(2), match.group(3), match.group(kind))
        elif not stack:
            raise AnswerError("a member that is not a record in the record map")

    def _container(self, closing: bool, kind: bytes) -> None:
        stack = self._stack
        if not closing:
            if not stack:
                raise AnswerError("a value that is not a record in the record map")
            self._open(kind)
        elif len(stack) > 1:
            if stack.pop() != kind:
                raise AnswerError("a closing tag that does not match")
        elif stack:
            self._close(kind)
        elif kind != b"struct":
            raise AnswerError("</array> closes the record map")
        else:
            self._state = "tail"

    def _past_name(self, position: int, final: bool) -> Optional[int]:
        """Where a member name holding '<' (only a map key inside a record may) ends: past
        its </name>, or None while the rest of it has not arrived."""
        if len(self._stack) < 2:
            raise AnswerError("a record or field name holding '<'")
        close = self._buffer.find(b"</name>", position)
        if close < 0:
            if final:
                raise AnswerError("a struct member's <name> never ends")
            return None
        return close + len(b"</name>")

    def _token(self) -> re.Pattern[bytes]:
        if self._precise_token is None:
            self._precise_token = re.compile(_MAP_TOKEN % self._names)
        return self._precise_token

    def _check_gap(self, text: bytes, match: re.Match[bytes]) -> None:
        gap = bytes(self._gap) + text
        self._gap.clear()
        if self._gap_checked:  # the fast way checked what came before this record
            self._gap_checked = False
            if gap.strip():
                raise AnswerError("unexpected data between records")
            return
        if match.lastindex == 1:
            pattern = _NEXT_GAP if self._records else _FIRST_GAP
        elif match.lastindex == 8 and match.group(8) == b"struct" and match.group(7):
            if not self._records:
                if gap.strip():
                    raise AnswerError("unexpected data in an empty record map")
                return
            pattern = _LAST_GAP
        else:
            return  # an error the caller reports
        if not pattern.fullmatch(gap):
            raise AnswerError("unexpected data between records")

    def _open(self, kind: bytes) -> None:
        if len(self._stack) >= MAX_DEPTH:
            raise AnswerError(f"values nested deeper than {MAX_DEPTH} levels")
        self._stack.append(kind)

    def _close(self, kind: bytes) -> None:
        if self._stack.pop() != kind:
            raise AnswerError(f"</{kind.decode()}> closes another element")
        if not self._stack:
            self._end_record()

    def _begin_record(self, ref: bytes) -> None:
        text = _utf8(ref, "a record ref")
        if text in self._records:
            raise AnswerError(f"record {printable(text)} twice")
        if len(self._records) >= MAX_RECORDS:
            raise AnswerError(f"more than {MAX_RECORDS} records")
        self._ref = text
        self._record = {}

    def _set_field(self, name: bytes, kind: Optional[bytes], raw: bytes) -> None:
        record = self._record
        assert record is not None  # noqa: S101 - depth 1 is inside a record
        key = self._keys[name]
        if key in record:
            raise AnswerError(f"record {printable(self._ref)} has {key} twice")
        record[key] = self._value(key, kind, raw)

    def _value(self, key: str, kind: Optional[bytes], raw: bytes) -> Any:
        if kind == b"boolean":
            digit = raw.strip()
            if digit in (b"0", b"1"):
                return digit == b"1"
            raise AnswerError(f"{key} of record {printable(self._ref)} is not a boolean")
        # Short values (power states, host refs) repeat across records: share one string.
        value = self._intern.get(raw)
        if value is None:
            try:
                value = _unescape(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise AnswerError(f"{key} of record {printable(self._ref)} is not valid "
                                  "UTF-8") from None
            if len(raw) <= 64 and len(self._intern) < 4096:
                self._intern[bytes(raw)] = value
        return value

    def _end_record(self) -> None:
        record = self._record
        assert record is not None  # noqa: S101 - a record was open
        if len(record) != len(self._fields):
            missing = min(self._fields.difference(record))
            raise AnswerError(f"record {printable(self._ref)} has no {missing} "
                              "(or not as a plain value)")
        self._records[self._ref] = record
        self._record = None


class _Answer:
    """Where an answer's body goes while it arrives: a record-map scanner, or a buffer decoded
    whole at the end."""

    def __init__(self, method: str, record_fields: Optional[frozenset[str]],
                 deadline: Optional[Deadline] = None) -> None:
        self.method = method
        self.limit = MAX_ANSWER_BYTES if record_fields is None else MAX_RECORD_MAP_BYTES
        self._deadline = deadline
        self._scanner = RecordMapScanner(record_fields, deadline) \
            if record_fields is not None else None
        self._parts: list[bytes] = []

    def feed(self, data: bytes) -> None:
        if self._scanner is not None:
            self._scanner.feed(data)
        else:
            self._parts.append(data)

    def finish(self) -> Any:
        if self._scanner is not None:
            return self._scanner.finish(self.method)
        return _xapi_result(decode_xmlrpc_response(b"".join(self._parts), self._deadline),
                            self.method)[1]


# ---------------------------------------------------------------------------------------------
# HTTP/1.1 over TCP or TLS: one keep-alive connection to one pool host
# ---------------------------------------------------------------------------------------------


class _Closed(Exception):
    """The server closed the connection; the message says at which stage."""


class _Exchange:
    """One request and its answer on one socket, every wait bounded by a single deadline
    (connect, TLS handshake, send, status line, headers, body): a server that trickles
    bytes or never ends gets no more time than the deadline, and no more memory than the
    caps."""

    def __init__(self, sock: socket.socket, deadline: Deadline, buffer: bytearray) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = buffer  # bytes received and not yet used (kept across keep-alive)
        self.stage = "sending the request"

    def send(self, data: bytes) -> None:
        # One send at a time, each under what is left: SSLSocket.sendall restarts the
        # timeout on every chunk, so a server that reads slowly could stretch it.
        view = memoryview(data)
        while view:
            self.sock.settimeout(self.deadline.timeout())
            sent = self.sock.send(view[:RECV_SIZE])
            view = view[sent:]

    def _receive(self) -> None:
        self.sock.settimeout(self.deadline.timeout())
        data = self.sock.recv(RECV_SIZE)
        if not data:
            raise _Closed(self.stage)
        self.buffer += data

    def line(self, limit: int) -> bytes:
        searched = 0
        while True:
            end = self.buffer.find(b"\n", searched)
            if end >= 0:
                if end > limit:
                    break
                line = bytes(self.buffer[:end + 1])
                del self.buffer[:end + 1]
                return line.rstrip(b"\r\n")
            if len(self.buffer) > limit:
                break
            searched = len(self.buffer)
            self._receive()
        raise AnswerError(f"a line over {limit} bytes while {self.stage}")

    def headers(self, into: dict[str, str]) -> None:
        total = count = 0
        while True:
            line = self.line(MAX_HEADER_LINE)
            if not line:
                return
            total, count = total + len(line), count + 1
            if count > MAX_HEADERS or total > MAX_HEADER_BYTES:
                raise AnswerError(f"more than {MAX_HEADERS} headers or "
                                  f"{MAX_HEADER_BYTES >> 10} KiB of them")
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                raise AnswerError(f"malformed header line {printable(line.decode('latin-1'))!r}")
            key, value = name.lower(), value.strip()
            into[key] = f"{into[key]}, {value}" if key in into else value

    def body(self, answer: _Answer, length: Optional[int], chunked: bool) -> None:
        self.stage = "reading the answer"
        total = 0
        if chunked:
            while True:
                size_line = self.line(1024).split(b";", 1)[0].strip()
                if not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", size_line):
                    raise AnswerError(f"bad chunk size {printable(size_line.decode('latin-1'))!r}")
                size = int(size_line, 16)
                if size == 0:
                    self.headers({})  # trailers, bounded like headers
                    return
                total += size
                if total > answer.limit:
                    raise AnswerError(f"an answer over {answer.limit >> 20} MiB")
                self._copy(answer, size)
                if self.line(2):
                    raise AnswerError("a chunk longer than its size")
        elif length is not None:
            if length > answer.limit:
                raise AnswerError(f"Content-Length {length} is over the {answer.limit >> 20} MiB "
                                  "an answer may have")
            self._copy(answer, length)
        else:  # HTTP/1.0 style: the body ends when the connection does
            while True:
                if self.buffer:
                    total += len(self.buffer)
                    if total > answer.limit:
                        raise AnswerError(f"an answer over {answer.limit >> 20} MiB")
                    answer.feed(bytes(self.buffer))
                    self.buffer.clear()
                self.sock.settimeout(self.deadline.timeout())
                data = self.sock.recv(RECV_SIZE)
                if not data:
                    return
                self.buffer += data

    def _copy(self, answer: _Answer, size: int) -> None:
        """Exactly `size` bytes of body into `answer`: what is buffered, then straight from
        the socket (never past the body, so a kept-alive connection stays in step)."""
        if self.buffer:
            take = min(size, len(self.buffer))
            answer.feed(bytes(self.buffer[:take]))
            del self.buffer[:take]
            size -= take
        while size > 0:
            self.sock.settimeout(self.deadline.timeout())
            data = self.sock.recv(min(size, RECV_SIZE))
            if not data:
                raise _Closed(self.stage)
            size -= len(data)
            answer.feed(data)


class XapiChannel:
    """One keep-alive HTTP/1.1 connection to one pool host, spoken directly over socket/ssl.

    Every request runs under one deadline for the whole exchange, which http.client cannot
    give (it bounds each read, not the answer), and under the size caps above. A request that
    fails for any reason drops the connection, so the next one (a logout) starts clean.
    After each request, `last_response_headers` holds the answer's headers (names lower-case),
    for XAPI's thumbprint header (trust on redirect)."""

    def __init__(self, endpoint: Endpoint, tls: TlsPolicy) -> None:
        self.endpoint = endpoint
        self.tls = tls
        self._sock: Optional[socket.socket] = None
        self._context: Optional[ssl.SSLContext] = None
        self._buffer = bytearray()
        self.last_response_headers: dict[str, str] = {}
        # For abort() from another thread (the login race): the socket being opened, a flag
        # _open checks, and an event that ends the wait for a name lookup.
        self._opening: Optional[socket.socket] = None
        self._aborted = False
        self._wake: Optional[threading.Event] = None

    @property
    def verified(self) -> bool:
        """The host proved its identity: https with a CA-checked or pinned certificate."""
        return self.endpoint.scheme == "https" and self.tls.verifies

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
        self._buffer.clear()

    def connect(self, deadline: Deadline, method: str) -> tuple[Any, ...]:
        """Open the connection (name lookup, TCP, TLS and the pin check) by `deadline`
        without sending a byte; the peer's (address, port). Makes the channel abortable."""
        if self._wake is None:
            import threading

            self._wake = threading.Event()
            if self._aborted:
                self._wake.set()
        if self._sock is None:
            self._sock = self._connect(deadline, method, deadline.timeout())
        return tuple(self._sock.getpeername()[:2])

    def _lookup_wake(self) -> Optional[threading.Event]:
        """For an abortable channel, a fresh event for this name lookup (the last one's is
        set: its lookup ended), set already if abort() came first."""
        if self._wake is None:
            return None
        import threading

        wake = self._wake = threading.Event()
        if self._aborted:
            wake.set()
        return wake

    def abort(self) -> None:
        """From another thread: end whatever this channel is waiting for (a name lookup, a
        connection, a handshake, an answer) at once; that wait fails as a ConnectionFailure."""
        import socket

        self._aborted = True
        if self._wake is not None:
            self._wake.set()
        for sock in (self._opening, self._sock):
            if sock is not None:
                with contextlib.suppress(OSError):
                    # socket's own shutdown, also for a TLS socket: SSLSocket.shutdown would
                    # drop the TLS state under the thread that is using it.
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def request(self, method: str, params: Sequence[object], deadline: Deadline,
                record_fields: Optional[frozenset[str]] = None,
                headers: Optional[Mapping[str, str]] = None) -> Any:
        """`method`'s answer: connect if needed, send, read and decode, all by `deadline`."""
        timeout = deadline.timeout()  # what this request has (for its messages), taken first
        import socket

        body = encode_call(method, params)
        self.last_response_headers = {}
        answer = _Answer(method, record_fields, deadline)
        stage = "connecting"
        if self._sock is not None and self._closed_while_idle():
            self.close()
        if self._sock is None:
            self._sock = self._connect(deadline, method, timeout)
        try:
            exchange = _Exchange(self._sock, deadline, self._buffer)
            stage = "sending the request"
            exchange.send(self._head(len(body), headers) + body)
            status, reason, keep_alive = self._answer(exchange, answer)
            stage = exchange.stage
            if not keep_alive or exchange.buffer:
                self.close()
        except (TimedOut, socket.timeout, TimeoutError):
            self.close()
            raise TimedOut(f"{self.endpoint} did not answer {method} within "
                           f"{seconds_text(timeout)} s") from None
        except AnswerError as error:
            self.close()
            raise ConnectionFailure(f"the answer to {method} from {self.endpoint} is not a XAPI "
                                    f"response ({error})") from None
        except _Closed as closed:
            self.close()
            raise ConnectionFailure(f"{self.endpoint} closed the connection while {closed}") \
                from None
        except OSError as error:
            self.close()
            raise ConnectionFailure(self._os_error(error, stage)) from None
        except BaseException:
            # A signal (Terminated) can land mid-request: the connection is then in an unknown
            # state, and the logout that follows must start on a fresh one.
            self.close()
            raise
        if status != 200:
            raise ConnectionFailure(
                f"{self.endpoint} answered {method} with HTTP {status} {printable(reason)}")
        try:
            return answer.finish()
        except TimedOut:
            raise TimedOut(f"{self.endpoint} did not answer {method} within "
                           f"{seconds_text(timeout)} s (reading its answer took too long)") \
                from None
        except AnswerError as error:
            raise ConnectionFailure(f"the answer to {method} from {self.endpoint} is not a XAPI "
                                    f"response ({error})") from None

    def _closed_while_idle(self) -> bool:
        """A kept-alive connection the host closed (or wrote to) while idle, as a restarted
        or failed-over master does: replaced before anything is sent on it, so that a failure
        to connect always means XAPI never saw the request."""
        import select

        assert self._sock is not None  # noqa: S101 - called with a connection
        pending = getattr(self._sock, "pending", None)  # bytes TLS decrypted, unread
        if pending is not None and pending():
            return True
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable) or bool(self._buffer)

    def _connect(self, deadline: Deadline, method: str, timeout: float) -> socket.socket:
        """_open, its failures as ConnectionFailure(request_sent=False)."""
        import socket

        try:
            return self._open(deadline)
        except ConnectionFailure as failure:
            raise ConnectionFailure(str(failure), request_sent=False) from None
        except (TimedOut, socket.timeout, TimeoutError):
            raise ConnectionFailure(f"{self.endpoint}: no connection within "
                                    f"{seconds_text(timeout)} s "
                                    f"(for {method})", request_sent=False) from None
        except OSError as error:
            raise ConnectionFailure(self._os_error(error, "connecting"),
                                    request_sent=False) from None

    def _os_error(self, error: OSError, stage: str) -> str:
        ssl = sys.modules.get("ssl")
        if ssl is not None and isinstance(error, ssl.SSLCertVerificationError):
            return (f"TLS certificate of {self.endpoint} is not trusted "
                    f"({error.verify_message}); use ssl_ca_file or ssl_fingerprint "
                    "(or ssl_insecure)")
        if ssl is not None and isinstance(error, ssl.SSLError):
            return f"TLS error with {self.endpoint}: {error.reason or error}"
        reason = error.strerror or str(error) or type(error).__name__
        return f"{self.endpoint}: {reason} while {stage}"

    def _head(self, length: int, headers: Optional[Mapping[str, str]]) -> bytes:
        host = f"[{self.endpoint.host}]" if ":" in self.endpoint.host else self.endpoint.host
        lines = [f"POST {self.endpoint.path} HTTP/1.1", f"Host: {host}:{self.endpoint.port}",
                 "Content-Type: text/xml", f"Content-Length: {length}",
                 f"User-Agent: {AGENT_NAME}/{agent_version()}"]
        for name, value in (headers or {}).items():
            if not re.fullmatch(r"[A-Za-z0-9-]+", name) or not value.isprintable():
                raise FenceError(f"invalid request header {name!r}")
            lines.append(f"{name}: {value}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _open(self, deadline: Deadline) -> socket.socket:
        """Connect (to each address the name resolves to, in turn, within the deadline), then
        for https the TLS handshake and the certificate pin check, before any byte is sent."""
        import socket

        host, port = self.endpoint.host, self.endpoint.port
        try:
            addresses = _resolve(host, port, deadline, self._lookup_wake())
        except socket.gaierror as error:
            raise ConnectionFailure(f"{self.endpoint}: cannot resolve {host} "
                                    f"({error.strerror})") from None
        sock: Optional[socket.socket] = None
        try:
            for number, (family, kind, proto, _, address) in enumerate(addresses, 1):
                sock = self._opening = socket.socket(family, kind, proto)
                if self._aborted:
                    raise ConnectionFailure(f"{self.endpoint}: given up (another host answered)")
                try:
                    sock.settimeout(deadline.timeout())
                    sock.connect(address)
                    break
                except (socket.timeout, TimeoutError):
                    raise
                except OSError:
                    sock.close()
                    sock = None
                    if number == len(addresses):
                        raise
            assert sock is not None  # noqa: S101 - getaddrinfo returns at least one address
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.endpoint.scheme == "https":
                if self._context is None:
                    self._context = self.tls.context()
                sock = self._opening = self._context.wrap_socket(
                    sock, server_hostname=host, do_handshake_on_connect=False)
                sock.settimeout(deadline.timeout())
                sock.do_handshake()  # one deadline for the whole handshake (CPython's loop)
                der = sock.getpeercert(binary_form=True)
                self.tls.check_pin(der, self.endpoint)
            return sock
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        finally:
            self._opening = None

    def _answer(self, exchange: _Exchange, answer: _Answer) -> tuple[int, str, bool]:
        """Read the status line (after at most MAX_INTERIM_RESPONSES `1xx` ones), the headers
        and the body into `answer`; (status, reason, whether the connection stays open)."""
        for _ in range(MAX_INTERIM_RESPONSES + 1):
            exchange.stage = "waiting for the status line"
            line = exchange.line(MAX_HEADER_LINE)
            match = re.fullmatch(rb"HTTP/1\.([01]) ([0-9]{3})(?: (.*))?", line)
            if match is None:
                raise AnswerError(f"not an HTTP status line: "
                                  f"{printable(line.decode('latin-1'), 80)!r}")
            status = int(match.group(2))
            exchange.stage = "reading the headers"
            headers: dict[str, str] = {}
            exchange.headers(headers)
            if status >= 200:
                break
        else:
            raise AnswerError(f"more than {MAX_INTERIM_RESPONSES} interim (1xx) responses")
        self.last_response_headers = headers
        reason = (match.group(3) or b"").decode("latin-1")
        keep_alive = match.group(1) == b"1" and \
            "close" not in headers.get("connection", "").lower()
        if status != 200:
            return status, reason, False
        encoding = headers.get("transfer-encoding", "").strip().lower()
        length: Optional[int] = None
        if encoding:
            if encoding != "chunked":
                raise AnswerError(f"Transfer-Encoding {printable(encoding, 40)!r}")
        elif "content-length" in headers:
            text = headers["content-length"]
            values = {value.strip() for value in text.split(",")}
            if len(values) != 1 or not re.fullmatch(r"[0-9]{1,19}", next(iter(values))):
                raise AnswerError(f"Content-Length {printable(text, 40)!r}")
            length = int(values.pop())
        else:
            keep_alive = False
        exchange.body(answer, length, encoding == "chunked")
        return status, reason, keep_alive


if TYPE_CHECKING:
    AddressInfo = list[tuple[Any, Any, int, str, Any]]  # what socket.getaddrinfo returns


def _resolve(host: str, port: int, deadline: Deadline,
             wake: Optional[threading.Event] = None) -> AddressInfo:
    """socket.getaddrinfo within the exchange's deadline. A name is looked up by glibc, which
    waits `timeout:5` s per name server and `attempts:2` times (resolv.conf(5)): a dead DNS
    server, common when the network that broke is the one a fence is needed for, would hold
    the agent far past login_timeout. A literal address needs no lookup; a name is looked up
    in a daemon thread that the deadline (or `wake`, set by XapiChannel.abort) abandons: it
    only looks a name up, and the process exits without waiting for it."""
    import socket

    name = host.encode("ascii")
    try:
        return socket.getaddrinfo(name, port, type=socket.SOCK_STREAM,
                                  flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        pass  # a name, not an address
    import threading

    outcome: list[AddressInfo | OSError] = []
    done = wake or threading.Event()

    def look_up() -> None:
        try:
            outcome.append(socket.getaddrinfo(name, port, type=socket.SOCK_STREAM))
        except OSError as error:  # gaierror, or a resolver that cannot run at all
            outcome.append(error)
        done.set()

    lookup = threading.Thread(target=look_up, name=f"resolve {host}", daemon=True)
    lookup.start()
    done.wait(deadline.timeout())
    if not outcome:
        raise deadline.expired()
    if isinstance(outcome[0], OSError):
        raise outcome[0]
    return outcome[0]


# ---------------------------------------------------------------------------------------------
# XAPI session: login through the pool's hosts, calls, logout
# ---------------------------------------------------------------------------------------------


class Timeouts(Value):
    __slots__ = ("login", "query")

    def __init__(self, login: float, query: float) -> None:
        self.login: Final = login  # the whole login, all pool hosts together (LoginRace)
        self.query: Final = query


# Trust on redirect (xapi/api_server.ml create_thumbprint_header, xapi/xapi_globs.ml): a member
# answering HOST_IS_SLAVE to a request carrying this header names its master's certificate.
THUMBPRINT_REQUEST = {"x-xenapi-request-host-certificate-thumbprint": "sha-256:master"}
THUMBPRINT_ANSWER = "x-xenapi-response-host-certificate-thumbprint"
# Hosts one login may try, redirects included: bounds a pool whose members redirect in circles
# or to ever new addresses during a master change.
MAX_LOGIN_HOSTS = 8
# XAPI's refusals of the credentials themselves (xapi/xapi_session.ml): every host of a pool
# checks them the same way, each refusal costs 5 s, and retrying them could lock the account.
CREDENTIAL_REFUSALS = frozenset({"SESSION_AUTHENTICATION_FAILED",
                                 "SESSION_AUTHORIZATION_FAILED"})


# --- The login race: hosts asked as RFC 8305 ("Happy Eyeballs") asks addresses -----------------

# A host that has not answered the login within this long is joined by the next one (RFC 8305's
# recommended Connection Attempt Delay): a healthy host answers in milliseconds, so the first
# listed host is asked alone; a hung one costs this, not login_timeout. Eight hosts (the cap)
# all hung before the master cost 1.75 s.
LOGIN_STAGGER = 0.25
# Once the race is decided (a session, or the credentials refused), how long an attempt that
# already sent the password may still answer: only the master opens sessions, and a second
# address of the master answers about as fast as the first did.
LATE_ANSWER_WAIT = 1.0


class _Session:
    """A login's session: this host is the master."""

    def __init__(self, ref: str) -> None:
        self.ref = ref


class _Redirect:
    """A member's HOST_IS_SLAVE answer: the master to try, and how to check it."""

    def __init__(self, endpoint: Endpoint, tls: TlsPolicy) -> None:
        self.endpoint = endpoint
        self.tls = tls


def _master_policy(member: XapiChannel, tls: TlsPolicy) -> TlsPolicy:
    """How to check the master a member redirected to: by the thumbprint the member sent,
    if the member itself was verified (CA or pin); otherwise as any session_url host."""
    thumbprint = member.last_response_headers.get(THUMBPRINT_ANSWER)
    if not thumbprint or not member.verified:
        return tls
    try:
        pin = parse_fingerprint(thumbprint)
    except UsageError:
        log.warning("%s sent a malformed master thumbprint (%r); checking the master as any "
                    "other host", member.endpoint, thumbprint)
        return tls
    assert pin is not None  # noqa: S101 - thumbprint is not empty
    return tls.pinned_to(pin, f"the master thumbprint that {member.endpoint} sent")


class _Attempt:
    """One host's login, in a thread of its own: connect (name lookup, TCP, TLS and its
    checks), then, if the race still wants it, send the password and read the answer."""

    def __init__(self, race: LoginRace, endpoint: Endpoint, tls: TlsPolicy,
                 chain: tuple[Endpoint, ...]) -> None:
        import threading

        self.race = race
        self.endpoint = endpoint
        self.tls = tls
        self.chain = chain  # the members whose HOST_IS_SLAVE led here
        self.channel = XapiChannel(endpoint, tls)
        self.sent = False  # the password went out (under the race's lock)
        self.answered = False  # the outcome is in (under the race's lock)
        self.thread = threading.Thread(target=self._run, name=f"login at {endpoint}",
                                       daemon=True)

    def _run(self) -> None:
        outcome: object
        try:
            outcome = self._log_in()
        except (ConnectionFailure, TimedOut) as error:  # these name the host
            outcome = str(error)
        except XapiFailure as failure:  # the host's own answer: say which host
            outcome = f"{self.endpoint}: {failure}"
        except Exception as error:  # LoginRefused, UsageError, a bug: the run ends with it
            outcome = error
        self.race.report(self, outcome)

    def _log_in(self) -> object:
        race = self.race
        address = self.channel.connect(race.deadline, "session.login_with_password")
        if not race.may_send(self, address):
            return None
        started = time.monotonic()
        try:
            session = self.channel.request(
                "session.login_with_password",
                (race.username, race.password, XAPI_API_VERSION, XAPI_ORIGINATOR),
                race.deadline, headers=THUMBPRINT_REQUEST)
        except XapiFailure as failure:
            return self._refusal(failure)
        finally:
            log.debug("XAPI session.login_with_password(%s) at %s: %.3f s", race.username,
                      self.endpoint, time.monotonic() - started)
        if not isinstance(session, str) or not session:
            raise ConnectionFailure(f"{self.endpoint} returned no session from login")
        SCRUBBER.add(session)
        return _Session(session)

    def _refusal(self, failure: XapiFailure) -> object:
        if failure.code in CREDENTIAL_REFUSALS:
            reason = f" ({failure.params[1]})" if len(failure.params) > 1 else ""
            raise LoginRefused(f"login as '{shown_value(self.race.username, 80)}' refused by "
                               f"{self.endpoint}: {failure.code}{reason}")
        if failure.code == "HOST_IS_SLAVE" and failure.params:
            master = self.endpoint.with_host(failure.params[0])
            log.info("%s is not the pool master; logging in on %s", self.endpoint, master)
            return _Redirect(master, _master_policy(self.channel, self.tls))
        raise failure

    def log_out(self, session: _Session) -> None:
        """A session that came too late (another host won): logged out at once, on its own
        connection, bounded like any logout."""
        log.info("%s answered the login late; logging that session out", self.endpoint)
        try:
            self.channel.request("session.logout", (session.ref,),
                                 Deadline(LOGOUT_TIMEOUT, "session.logout"))
        except FenceError as error:
            log.warning("logout failed, the session will expire on the pool: %s", error)
        finally:
            self.channel.close()


class LoginRace:
    """Log in on the pool master through the session_url hosts, RFC 8305 style. The first
    listed host is asked first; when it has not answered within LOGIN_STAGGER, the next one
    joins while it goes on, and so on; a failed host (refused connection, TLS, an error answer)
    makes way at once, and a member's HOST_IS_SLAVE puts the master it names next in line.
    The first session wins; a credential refusal ends the race (only the master checks the
    password: xapi_session.ml login_with_password answers HOST_IS_SLAVE first). Each host is
    tried once (by name and by address: two names of one host get one password), at most
    MAX_LOGIN_HOSTS of them, all within `deadline`. The password is sent only after the host's
    TLS checks passed, and never once the race is decided. close() ends every attempt: those
    that sent the password get LATE_ANSWER_WAIT to answer, and a session they bring is logged
    out; no thread outlives it."""

    def __init__(self, endpoints: Sequence[Endpoint], tls: TlsPolicy, username: str,
                 password: str, deadline: Deadline) -> None:
        import threading

        self.username = username
        self.password = password
        self.deadline = deadline
        self._lock = threading.Condition()
        self._waiting: list[tuple[Endpoint, TlsPolicy, tuple[Endpoint, ...]]] = \
            [(endpoint, tls, ()) for endpoint in endpoints]
        self._attempts: dict[tuple[str, str, int], _Attempt] = {}
        self._addresses: set[tuple[Any, ...]] = set()
        self._outcomes: list[tuple[_Attempt, object]] = []
        self._problems: list[str] = []
        self._capped = False  # a host was left untried: MAX_LOGIN_HOSTS reached
        self._decided: Optional[Deadline] = None  # set when decided: LATE_ANSWER_WAIT from then
        self._closed = False
        self.session: Optional[str] = None  # the winner's

    # -- the attempts' side (their threads) ---------------------------------------------------

    def may_send(self, attempt: _Attempt, address: tuple[Any, ...]) -> bool:
        """Whether `attempt` may send the password: the race is still open and no other
        attempt went to this address (a host listed by name and by address, or named so by a
        member). Decided under the lock, so no password leaves once the race is decided."""
        with self._lock:
            if self._decided is not None or self._closed or address in self._addresses:
                return False
            self._addresses.add(address)
            attempt.sent = True
            return True

    def report(self, attempt: _Attempt, outcome: object) -> None:
        with self._lock:
            attempt.answered = True
            late = self._decided is not None or self._closed
            if not late:
                self._outcomes.append((attempt, outcome))
            self._lock.notify_all()
        if late:
            self._discard(attempt, outcome)

    @staticmethod
    def _discard(attempt: _Attempt, outcome: object) -> None:
        if isinstance(outcome, _Session):
            attempt.log_out(outcome)
        else:
            attempt.channel.close()

    # -- the caller's side --------------------------------------------------------------------

    def run(self) -> XapiChannel:
        """The winner's channel, its session in `session`; LoginRefused or ConnectionFailure
        otherwise. Call close() afterwards, on every path."""
        self._start_next()
        stagger = Deadline(LOGIN_STAGGER, "login stagger")
        while True:
            item = self._next_outcome(stagger)
            if item is not None:
                if self._settle(*item):
                    return item[0].channel
                self._start_next()
                stagger = Deadline(LOGIN_STAGGER, "login stagger")
            elif self.deadline.remaining() <= 0 or not self._running():
                raise self._failure()
            elif self._start_next():
                stagger = Deadline(LOGIN_STAGGER, "login stagger")
            else:
                stagger = self.deadline

    def _next_outcome(self, stagger: Deadline) -> Optional[tuple[_Attempt, object]]:
        """The next outcome, or None when the stagger or the deadline ran out first, or no
        attempt is left running."""
        with self._lock:
            while not self._outcomes:
                left = min(stagger.remaining(), self.deadline.remaining())
                if left <= 0 or not self._running_locked():
                    return None
                self._lock.wait(left)
            return self._outcomes.pop(0)

    def _running(self) -> bool:
        with self._lock:
            return self._running_locked()

    def _running_locked(self) -> bool:
        return any(not attempt.answered for attempt in self._attempts.values())

    def _settle(self, attempt: _Attempt, outcome: object) -> bool:
        """Take one outcome in; True if it won the race."""
        if isinstance(outcome, _Session):
            self.session = outcome.ref
            self._decide()
            return True
        attempt.channel.close()
        if isinstance(outcome, BaseException):  # a credential refusal, a usage error
            self._decide()
            raise outcome
        if isinstance(outcome, _Redirect):
            self._waiting.insert(0, (outcome.endpoint, outcome.tls,
                                     (*attempt.chain, attempt.endpoint)))
        elif isinstance(outcome, str):
            log.info("cannot log in at %s: %s", attempt.endpoint, outcome)
            self._problems.append(outcome)
        return False

    def _decide(self) -> None:
        """The race is decided: no password leaves any more, and the attempts that have not
        sent it are cut off now (they can only cost time)."""
        with self._lock:
            self._decided = Deadline(LATE_ANSWER_WAIT, "late logins")
            unsent = [a for a in self._attempts.values() if not a.sent and not a.answered]
        for attempt in unsent:
            attempt.channel.abort()

    def _start_next(self) -> bool:
        """Start the next host in line (a redirect's master first); False if none is left."""
        while self._waiting and self.deadline.remaining() > 0:
            endpoint, tls, chain = self._waiting.pop(0)
            key = (endpoint.scheme, endpoint.host.lower(), endpoint.port)
            if key in self._attempts:  # each host once per login
                self._note_repeat(endpoint, chain, self._attempts[key])
                continue
            if len(self._attempts) >= MAX_LOGIN_HOSTS:
                self._capped = True
                return False
            attempt = _Attempt(self, endpoint, tls, chain)
            with self._lock:
                self._attempts[key] = attempt
            attempt.thread.start()
            return True
        return False

    def _note_repeat(self, endpoint: Endpoint, chain: tuple[Endpoint, ...],
                     earlier: _Attempt) -> None:
        """A redirect to a host already tried: a loop, or a dead end once that host failed
        (one still running decides on its own)."""
        if endpoint in chain:
            route = " -> ".join(str(e) for e in (*chain, endpoint))
            self._problems.append(f"redirect loop ({route})")
        elif chain and earlier.answered:
            self._problems.append(f"{chain[-1]} redirects to {endpoint}, already tried")

    def _failure(self) -> ConnectionFailure:
        problems = list(self._problems)
        with self._lock:
            outcomes, self._outcomes = self._outcomes, []
        problems += [outcome for _, outcome in outcomes if isinstance(outcome, str)]
        running = [a for a in self._attempts.values() if not a.answered]
        problems += [f"{a.endpoint}: no answer" + (" to the login" if a.sent else "")
                     for a in running]
        if self._capped:
            problems.append(f"gave up after trying {MAX_LOGIN_HOSTS} hosts")
        if self.deadline.remaining() <= 0:
            problems.append(str(self.deadline.expired()))
        if len(problems) == 1:
            return ConnectionFailure(f"cannot log in: {problems[0]}")
        return ConnectionFailure("cannot log in to any pool host: " + "; ".join(problems))

    def close(self, logout_bound: Deadline) -> None:
        """End every attempt, on every path (Terminated included): those that sent the
        password may answer until LATE_ANSWER_WAIT after the decision (or until `logout_bound`
        if nothing was decided: one of them may be the master), and a session one
        brings is logged out; the others are cut off now. Returns once every thread ended."""
        with self._lock:
            self._closed = True
            queued, self._outcomes = self._outcomes, []
            wait = self._decided or logout_bound
        try:
            for attempt, outcome in queued:
                self._discard(attempt, outcome)
            self._await_answers(wait)
        finally:
            for attempt in self._attempts.values():
                if not attempt.answered:
                    attempt.channel.abort()
            for attempt in self._attempts.values():
                attempt.thread.join(LOGOUT_TIMEOUT + 1.0)

    def _await_answers(self, wait: Deadline) -> None:
        with self._lock:
            while any(a.sent and not a.answered for a in self._attempts.values()):
                left = min(wait.remaining(), self.deadline.remaining())
                if left <= 0:
                    return
                self._lock.wait(left)


class XapiSession:
    """A XAPI session on the pool master. Logs in through the session_url hosts (a LoginRace),
    following HOST_IS_SLAVE to the master (trusting its certificate on the word of a verified
    member), passing hosts that are down, in emergency mode or otherwise unusable; logs in
    again when XAPI forgets the session or the master stops answering (a master change); and
    always logs out every session it opened (use it as a context manager)."""

    def __init__(self, urls: Sequence[str], tls: TlsPolicy, username: str, password: str,
                 timeouts: Timeouts, verbose_level: int = 0) -> None:
        self._endpoints = [Endpoint.parse(url) for url in urls]
        self.tls = tls
        self._username = username
        self._password = password
        self._timeouts = timeouts
        self._verbose_level = verbose_level
        self._channel: Optional[XapiChannel] = None
        self._session: Optional[str] = None
        self._abandoned: list[str] = []  # sessions of a master that stopped answering
        self._race: Optional[LoginRace] = None  # the last login's, until its attempts end
        self.logins = 0  # how many times this run logged in (the power logic watches it)
        SCRUBBER.add(password)

    def __enter__(self) -> XapiSession:
        self.login()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.logout()

    def login(self, deadline: Optional[Deadline] = None) -> None:
        """Log in on the master: a LoginRace over the session_url hosts, all of them together
        within login_timeout (and within `deadline`, if that ends sooner)."""
        self._close_race()
        bound = Deadline(self._timeouts.login, "login")
        if deadline is not None and deadline.remaining() < bound.remaining():
            bound = deadline
        race = LoginRace(self._endpoints, self.tls, self._username, self._password, bound)
        self._race = race
        try:
            self._channel = race.run()
        except BaseException:
            self._close_race()
            raise
        self._session = race.session
        self.logins += 1

    def reconnect(self, deadline: Optional[Deadline] = None) -> None:
        """The master stopped answering: log in again through the session_url hosts (a member
        redirects to the new master). The old session is logged out at the end, if the pool
        still knows it."""
        if self._session is not None:
            self._abandoned.append(self._session)
        if self._channel is not None:
            self._channel.close()
        self._session = self._channel = None
        try:
            self.login(deadline)
        except ConnectionFailure as error:
            raise ConnectionFailure(f"lost the pool master; {error}") from None

    @property
    def ref(self) -> Optional[str]:
        """The session's own ref (a secret: never shown)."""
        return self._session

    def _logout_bound(self) -> float:
        return min(LOGOUT_TIMEOUT, max(self._timeouts.query, 0.5))

    def _close_race(self) -> None:
        """End the last login race's attempts (logging out any late session they bring)."""
        race, self._race = self._race, None
        if race is not None:
            race.close(Deadline(self._logout_bound(), "late logins"))

    def logout(self) -> None:
        """Best effort, bounded: a session left open degrades the pool, but a logout must not
        turn a verified fence into a failure or keep the fencer waiting."""
        try:
            self._logout()
        finally:
            self._close_race()

    def _logout(self) -> None:
        session, channel = self._session, self._channel
        abandoned, self._abandoned = self._abandoned, []
        self._session = None
        self._channel = None
        if session is None or channel is None:
            return
        timeout = self._logout_bound()
        try:
            for old in [*abandoned, session]:
                try:
                    self._timed_request(channel, "session.logout", (old,),
                                        Deadline(timeout, "session.logout"))
                except XapiFailure as failure:
                    if failure.code != "SESSION_INVALID":  # already gone: nothing left open
                        log.warning("logout failed, the session will expire on the pool: %s",
                                    failure)
                except FenceError as error:
                    log.warning("logout failed, the session will expire on the pool: %s", error)
        finally:
            channel.close()

    def call(self, method: str, *args: object, deadline: Optional[Deadline] = None,
             record_fields: Optional[frozenset[str]] = None, reconnect: bool = True,
             relogin_deadline: Optional[Deadline] = None) -> Any:
        """Call `method` with the session as first argument. Without a deadline the call gets
        shell_timeout; with one, whatever is left of it. If XAPI forgot the session, or (with
        `reconnect`) the master does not answer, logs in again once (by `relogin_deadline`,
        default `deadline`) and repeats the call with what is left of `deadline`."""
        relogin = relogin_deadline or deadline
        try:
            return self._call_once(method, args, deadline, record_fields)
        except XapiFailure as failure:
            if failure.code != "SESSION_INVALID":
                raise
            log.info("XAPI forgot the session (%s); logging in again", failure.code)
            if self._channel is not None:
                self._channel.close()
            self._session = self._channel = None
            self.login(relogin)
        except (ConnectionFailure, TimedOut) as error:
            if not reconnect or (relogin is not None and relogin.remaining() <= 0):
                raise
            log.info("%s; logging in again through the pool's hosts", error)
            self.reconnect(relogin)
        if deadline is not None and deadline is not relogin and deadline.remaining() <= 0:
            deadline = relogin.capped(self._timeouts.query) if relogin else None
        return self._call_once(method, args, deadline, record_fields)

    def _call_once(self, method: str, args: Sequence[object], deadline: Optional[Deadline],
                   record_fields: Optional[frozenset[str]]) -> Any:
        if self._session is None or self._channel is None:
            raise FenceError(f"{method}: not logged in")
        if deadline is None:
            deadline = Deadline(self._timeouts.query, method)
        return self._timed_request(self._channel, method, (self._session, *args), deadline,
                                   record_fields)

    def _timed_request(self, channel: XapiChannel, method: str, params: Sequence[object],
                       deadline: Deadline, record_fields: Optional[frozenset[str]] = None) -> Any:
        started = time.monotonic()
        outcome = "Success"
        try:
            return channel.request(method, params, deadline, record_fields)
        except XapiFailure as failure:
            outcome = failure.code
            raise
        except FenceError as error:
            outcome = type(error).__name__
            raise
        finally:
            shown = ", ".join(repr(p) for p in params[1:]) if self._verbose_level >= 2 else "…"
            log.debug("XAPI %s(%s): %s in %.3f s", method, shown, outcome,
                      time.monotonic() - started)


# ---------------------------------------------------------------------------------------------
# VM resolution and power control
# ---------------------------------------------------------------------------------------------

RECORD_FIELDS = frozenset({"uuid", "name_label", "power_state", "is_a_template", "is_a_snapshot",
                           "is_control_domain", "resident_on"})


class Vm(Value):
    __slots__ = ("ref", "uuid", "name", "power_state", "is_a_template", "is_a_snapshot",
                 "is_control_domain", "resident_on")

    def __init__(self, ref: str, uuid: str, name: str, power_state: str, is_a_template: bool,
                 is_a_snapshot: bool, is_control_domain: bool, resident_on: str) -> None:
        self.ref: Final = ref
        self.uuid: Final = uuid
        self.name: Final = name
        self.power_state: Final = power_state
        self.is_a_template: Final = is_a_template
        self.is_a_snapshot: Final = is_a_snapshot
        self.is_control_domain: Final = is_control_domain
        self.resident_on: Final = resident_on

    @classmethod
    def from_record(cls, ref: str, record: Mapping[str, Any]) -> Vm:
        return cls(ref, str(record.get("uuid", "")), str(record.get("name_label", "")),
                   str(record.get("power_state", "")), bool(record.get("is_a_template")),
                   bool(record.get("is_a_snapshot")), bool(record.get("is_control_domain")),
                   str(record.get("resident_on", "OpaqueRef:NULL")))

    @property
    def forbidden_kind(self) -> Optional[str]:
        """Why this object may never be fenced, or None for a real VM."""
        if self.is_control_domain:
            return "a control domain (a host's dom0)"
        if self.is_a_snapshot:
            return "a snapshot"
        if self.is_a_template:
            return "a template"
        return None

    @property
    def is_on(self) -> bool:
        # Only Halted means no domain exists; Paused and Suspended VMs can come back.
        return self.power_state != "Halted"

    def __str__(self) -> str:
        return f"VM '{self.name}' ({self.uuid})"


def _xapi_string(text: str) -> str:
    return '"' + text + '"'


def same_name(given: str, name: str) -> bool:
    """VM names compare with surrounding whitespace ignored on both sides: fence-agents strips
    every stdin line, so `port=web ` arrives as `web`, and a name can end in a space (a typo
    in XenCenter is enough). Two VMs that differ only so are ambiguous, never a guess."""
    return given.strip() == name.strip()


def _query_matches(session: XapiSession, targets: Sequence[Target]) -> list[Vm]:
    """Every VM, template, snapshot or control domain whose UUID equals a target or whose
    name equals it (same_name), in one request, filtered server-side."""
    clauses: list[str] = []
    fallback: list[str] = []
    for target in targets:
        text = target.text
        if UUID_RE.match(text):
            clauses.append(f'field "uuid"={_xapi_string(text.lower())}')
        if not target.uuid_only:
            for name in sorted({text, text.strip()}):
                # XAPI's query language has no escapes: a name holding a quote or backslash
                # is looked up by name instead.
                if '"' in name or "\\" in name:
                    fallback.append(name)
                else:
                    clauses.append(f'field "name__label"={_xapi_string(name)}')
    if any(not target.uuid_only and not UUID_RE.match(target.text) for target in targets):
        # XAPI's query language compares with `=` only (db_filter_types.ml), so names with
        # other surrounding whitespace cannot be asked for: every VM that is not a template
        # comes too (snapshots are templates to XAPI); templates and snapshots by exact name.
        # That read grows with the pool; a UUID plug names one VM whatever the names, so it
        # is checked against names as given and stripped only, and stays one small answer.
        clauses.append('field "is_a_template"="false"')
    records: dict[str, Any] = {}
    if clauses:
        records.update(session.call("VM.get_all_records_where", " or ".join(clauses),
                                    record_fields=RECORD_FIELDS))
    for name in fallback:
        for ref in session.call("VM.get_by_name_label", name):
            if ref not in records:
                records[ref] = session.call("VM.get_record", ref)
    return [Vm.from_record(ref, record) for ref, record in records.items()]


def _pick(target: Target, candidates: Sequence[Vm]) -> Optional[Vm]:
    """The one real VM `target` names, None if it names nothing; refuses anything else."""
    by_uuid = [vm for vm in candidates if target.text.lower() == vm.uuid.lower()]
    by_name = ([] if target.uuid_only
               else [vm for vm in candidates if same_name(target.text, vm.name)])
    if by_uuid:
        chosen = by_uuid[0]
        if chosen.forbidden_kind:
            raise FenceError(f"refusing to fence {chosen}: it is {chosen.forbidden_kind}")
        others = [vm for vm in by_name if vm.forbidden_kind is None and vm.ref != chosen.ref]
        if others:
            raise FenceError(f"{target.describe()} is ambiguous: it is the UUID of {chosen} and "
                             f"the name of {', '.join(vm.uuid for vm in others)}")
        return chosen
    real = [vm for vm in by_name if vm.forbidden_kind is None]
    if len(real) > 1:
        named = ", ".join(f"'{vm.name}' ({vm.uuid})"
                          for vm in sorted(real, key=lambda vm: (vm.name, vm.uuid)))
        raise FenceError(f"{target.describe()} is ambiguous: {len(real)} VMs have that name, "
                         f"surrounding whitespace ignored: {named}; use the UUID")
    if real:
        return real[0]
    if by_name:
        kinds = sorted({vm.forbidden_kind or "" for vm in by_name})
        raise FenceError(f"refusing to fence {target.describe()}: it is {' and '.join(kinds)}, "
                         "not a VM")
    return None


def resolve_vms(session: XapiSession, targets: Sequence[Target],
                cross_checks: Sequence[Target] = ()) -> list[Vm]:
    """Exactly the real VMs the targets name, each once; any doubt is an error."""
    candidates = _query_matches(session, [*targets, *cross_checks])
    chosen: list[Vm] = []
    for target in targets:
        vm = _pick(target, candidates)
        if vm is None:
            raise FenceError(f"no VM with the name or UUID {target.describe()}")
        if vm.ref not in {c.ref for c in chosen}:
            chosen.append(vm)
    for check in cross_checks:
        other = _pick(check, candidates)
        if other is not None and other.ref not in {c.ref for c in chosen}:
            raise FenceError(f"uuid names {chosen[0]} but plug/port '{check.text}' names {other}; "
                             "refusing to guess")
    return chosen


class Outcome(enum.Enum):
    """What one power call (PowerController._issue) came to: the reads that follow decide the
    verdict."""

    DONE = "done"  # XAPI answered Success
    PENDING = "pending"  # no answer in time: XAPI carries on, the reads will see the result
    AGAIN = "again"  # refused for now (busy, host not reachable, state moved): issue it again
    LOST = "lost"  # the master went away with the request: XAPI may or may not have run it
    UNSENT = "unsent"  # the master could not be reached: XAPI never saw it


# Short names for the power logic below (spelled out: unpacking the Enum would depend on the
# order its members are written in).
DONE, PENDING, AGAIN = Outcome.DONE, Outcome.PENDING, Outcome.AGAIN
LOST, UNSENT = Outcome.LOST, Outcome.UNSENT


class HostFacts(Value):
    """What XAPI says about a VM's host, for error messages and the power_state_reset rule."""

    __slots__ = ("ref", "name", "address", "live")

    def __init__(self, ref: str, name: str, address: str, live: Optional[bool]) -> None:
        self.ref: Final = ref
        self.name: Final = name
        self.address: Final = address
        self.live: Final = live  # host_metrics.live; None if it could not be read

    def __str__(self) -> str:
        return f"'{self.name}' ({self.address})" if self.name else self.ref


class PowerController:
    """Changes a VM's power state and verifies the result by reading it back from XAPI.

    A power call is synchronous but never waits past shell_timeout (nor power_timeout): XAPI
    runs a synchronous call to its end whether or not the client still listens, and destroys
    the call's task afterwards (xapi/server_helpers.ml do_dispatch, context.ml
    finally_destroy_context), so giving up on the answer leaves nothing behind. The verdict
    always comes from VM.get_power_state: a VM that reads Halted is off even while XAPI's
    hard_shutdown still sleeps the VM's shutdown_delay (xapi/xapi_vm.ml). When the call
    completes at once this costs what it always did: the call and one read."""

    def __init__(self, session: XapiSession, opts: Options) -> None:
        self._session = session
        self._opts = opts
        self._unreachable: Optional[str] = None  # host ref from CANNOT_CONTACT_HOST
        # A start, resume or unpause went to a master that then went away: it may still run.
        self._start_in_doubt = False
        self._busy: Optional[str] = None  # the last OTHER_OPERATION_IN_PROGRESS refusal

    def read_state(self, vm: Vm, deadline: Optional[Deadline] = None) -> str:
        return str(self._session.call("VM.get_power_state", vm.ref, deadline=deadline))

    def power_off(self, vm: Vm) -> bool:
        """Hard shutdown unless Halted; True if the VM was already off. Returns only once XAPI
        reads Halted; anything else within power_timeout is an error."""
        if vm.power_state == "Halted":
            return True
        deadline = Deadline(self._opts.power_timeout, f"powering off {vm}")
        self._drive(vm, "Halted", vm.power_state, deadline)
        return False

    def power_on(self, vm: Vm, known_state: Optional[str] = None,
                 attempts: Optional[int] = None) -> bool:
        """Start, resume or unpause as the state needs, verify Running. True if the VM was
        already on. `attempts` defaults to fence-agents' count for `on`: 1 + retry_on."""
        state = known_state or vm.power_state
        if attempts is None:
            attempts = 1 + self._opts.retry_on
        last_error: Optional[FenceError] = None
        for attempt in range(1, attempts + 1):
            deadline = Deadline(self._opts.power_timeout, f"powering on {vm}")
            try:
                if attempt > 1:
                    state = self.read_state(vm)
                if state == "Running":
                    return attempt == 1
                self._drive(vm, "Running", state, deadline)
                return False
            except (XapiFailure, TimedOut, ConnectionFailure) as error:
                last_error = error
                if self._start_in_doubt:
                    raise FenceError(
                        f"could not power on {vm}: {error}; the pool master that took the "
                        "power on went away meanwhile, so it may still happen: not trying "
                        "again (two starts could run the VM twice); check the VM") from None
                if attempt < attempts:
                    log.warning("power on attempt %d of %d failed: %s", attempt,
                                attempts, error)
        raise FenceError(f"could not power on {vm} in {attempts} attempt(s): "
                         f"{last_error}")

    def _drive(self, vm: Vm, wanted: str, state: str, deadline: Deadline) -> None:
        """Issue the call that takes `state` to `wanted`, then read the state until it is
        `wanted` or power_timeout has passed; issue it again when that is safe and needed."""
        outcome = self._issue(vm, wanted, state, deadline)
        issued_at = self._session.logins
        if self._opts.power_wait:
            deadline.sleep(self._opts.power_wait)
        first = True
        while True:
            # The first read gets a full query timeout even if the power call used up the
            # deadline: a call that returned deserves one verification, never a guess.
            poll = None if first else deadline.capped(self._opts.shell_timeout)
            first = False
            # If the master stopped answering or forgot the session, the read logs in again
            # within power_timeout (not just this read's slice) and is made once more.
            state = str(self._session.call("VM.get_power_state", vm.ref, deadline=poll,
                                           relogin_deadline=deadline))
            if state == wanted:
                return
            if self._session.logins != issued_at and outcome in (DONE, PENDING):
                # The master changed while we waited: what it had running may be gone.
                outcome = LOST
            if outcome == LOST and wanted == "Running":
                self._start_in_doubt = True
            if deadline.remaining() <= self._opts.stonith_status_sleep:
                raise TimedOut(self._stuck(vm, state, wanted, deadline))
            deadline.sleep(self._opts.stonith_status_sleep)
            # A hard shutdown can always be repeated; a start only when XAPI cannot have
            # received the first one: two starts could run the VM on two hosts at once.
            if outcome in (AGAIN, UNSENT) or (outcome == LOST and wanted == "Halted"):
                outcome = self._issue(vm, wanted, state, deadline)
                issued_at = self._session.logins

    def _issue(self, vm: Vm, wanted: str, state: str, deadline: Deadline) -> Outcome:
        args: tuple[object, ...] = ()
        if wanted == "Halted":
            method = "VM.hard_shutdown"
        elif state == "Halted":
            method, args = "VM.start", (False, True)
        elif state == "Suspended":
            method, args = "VM.resume", (False, True)
        elif state == "Paused":
            method = "VM.unpause"
        else:
            raise FenceError(f"{vm} is in an unknown power state '{state}'")
        wait = deadline.capped(max(self._opts.shell_timeout, 1.0))
        self._busy = None
        try:
            self._session.call(method, vm.ref, *args, deadline=wait, reconnect=False)
            return DONE
        except TimedOut:
            log.info("%s has not answered within %.1f s; XAPI carries on with it, reading the "
                     "power state of %s", method, wait.seconds, vm)
            return PENDING
        except ConnectionFailure as error:
            log.info("%s: %s; logging in again through the pool's hosts", method, error)
            self._session.reconnect(deadline)
            return LOST if error.request_sent else UNSENT
        except XapiFailure as failure:
            if failure.code == "VM_BAD_POWER_STATE":
                return AGAIN  # the state moved meanwhile: the reads decide
            if failure.code == "OTHER_OPERATION_IN_PROGRESS":
                # XAPI refused before doing anything: with_vm_operation (xapi_vm_helpers.ml)
                # checks the operation (xapi_vm_lifecycle.ml check_operation_error) before
                # it marks it in progress, so calling again is safe, a start included. A
                # reboot's start meets a start still sleeping the VM's start_delay, which
                # holds `start` in current_operations (xapi_vm.ml start) while a hard
                # shutdown may run beside it (is_allowed_concurrently). XAPI itself waits
                # for a busy VM before it answers this (helpers.ml retry, up to 2 h), so
                # usually the call is just slow (PENDING); a pool that answers it at once
                # is waited out here, within power_timeout.
                self._busy = failure.describe()
                log.info("%s is busy (%s); reading its state and trying again", vm,
                         self._busy)
                return AGAIN
            if failure.code == "CANNOT_CONTACT_HOST":
                self._unreachable = failure.params[0] if failure.params else vm.resident_on
                log.info("%s: XAPI cannot contact the VM's host; trying again", method)
                return AGAIN
            if failure.code == "OPERATION_BLOCKED":
                op = method.split(".")[-1]
                reason = f" ({failure.params[1]})" if len(failure.params) > 1 else ""
                raise FenceError(
                    f"cannot {op} {vm}: an administrator blocked that operation{reason} "
                    "(OPERATION_BLOCKED); to let the cluster fence it: xe vm-param-remove "
                    f"uuid={vm.uuid} param-name=blocked-operations param-key={op}") from None
            if failure.code == "HOST_OFFLINE" and wanted == "Halted":
                host_ref = failure.params[0] if failure.params else vm.resident_on
                self._reset_on_dead_host(vm, host_ref, deadline)
                return DONE
            raise

    # -- the VM's host is dead or unreachable ----------------------------------------------

    def _host_facts(self, host_ref: str) -> HostFacts:
        """Name, address and liveness of a host, as XAPI records them (best effort: these
        reads only explain a failure or guard a reset, which needs live to read False)."""
        name = address = ""
        live: Optional[bool] = None
        try:
            record = self._session.call("host.get_record", host_ref)
            name, address = str(record.get("name_label", "")), str(record.get("address", ""))
            value = self._session.call("host_metrics.get_live", record.get("metrics", ""))
            # XAPI sends a boolean; anything else is unknown, which never allows a reset.
            live = value if isinstance(value, bool) else None
        except FenceError as error:
            log.info("cannot read host %s: %s", host_ref, error)
        return HostFacts(host_ref, name, address, live)

    def _ha_enabled(self) -> bool:
        pools = self._session.call("pool.get_all_records")
        return any(record.get("ha_enabled") is True for record in pools.values())

    def _stuck(self, vm: Vm, state: str, wanted: str, deadline: Deadline) -> str:
        """The failure line for a VM that did not reach `wanted`: names its host and what to
        do when the host is unreachable (XAPI marks it not live only after ~10 min
        without pool HA, xapi/xapi_globs.ml)."""
        message = (f"{vm} is still {state}, not {wanted}, after "
                   f"{seconds_text(deadline.seconds)} s "
                   "(power_timeout)")
        if self._busy is not None:
            message += f"; another operation is still in progress on it ({self._busy})"
        host_ref = self._unreachable or (vm.resident_on if wanted == "Halted" else None)
        if not host_ref or host_ref == "OpaqueRef:NULL":
            return message
        host = self._host_facts(host_ref)
        said = ("XAPI cannot contact it (CANNOT_CONTACT_HOST)" if self._unreachable
                else "the hard shutdown did not complete there")
        if host.live is False:
            return (f"{message}; its host {host} is marked not live and {said}; see "
                    "allow_power_state_reset")
        return (f"{message}; its host {host} is marked live but {said}. If that host is down "
                "or cut off: power it off out of band (its BMC), then either wait until XAPI "
                "marks it not live (about 10 minutes without pool HA) or declare it dead "
                "(xe host-declare-dead), and fence again with allow_power_state_reset=1")

    def _reset_on_dead_host(self, vm: Vm, host_ref: str, deadline: Deadline) -> None:
        """VM.power_state_reset, only where XAPI's "not live" can be trusted: the agent reads
        host_metrics.live False itself, and pool HA is enabled (a host that loses its
        heartbeat fences itself) or the admin accepted running without HA."""
        host = self._host_facts(host_ref)
        if not self._opts.allow_power_state_reset:
            raise FenceError(
                f"cannot power off {vm}: XAPI marks its host {host} not live (HOST_OFFLINE). "
                "If that host is really down, allow_power_state_reset=1 marks the VM halted "
                "(see the README: When the pool is degraded)")
        if host.live is not False:
            raise FenceError(
                f"cannot power off {vm}: XAPI answered HOST_OFFLINE for its host {host}, but "
                "the host's metrics do not read it not live; not resetting the power state")
        if not self._ha_enabled() and not self._opts.allow_power_state_reset_without_ha:
            raise FenceError(
                f"cannot power off {vm}: its host {host} is marked not live, but pool HA is "
                "disabled, and without HA a host cut off from the master is marked not live "
                "while it may still run the VM. Power the host off out of band; to reset "
                "anyway, set allow_power_state_reset_without_ha=1 (see the README)")
        log.info("%s: its host %s is marked not live; marking the VM halted "
                 "(VM.power_state_reset)", vm, host)
        try:
            self._session.call("VM.power_state_reset", vm.ref, deadline=deadline)
            log.warning("%s: marked halted with VM.power_state_reset (its host %s is not live)",
                        vm, host)
        except XapiFailure as failure:
            why = {
                "HOST_IS_LIVE": f"XAPI finds its host {host} live (HOST_IS_LIVE); nothing "
                                "was changed",
                "DOMAIN_EXISTS": "its domain still exists on the pool master (DOMAIN_EXISTS)",
                "CANNOT_RESET_CONTROL_DOMAIN": "it is a control domain "
                                               "(CANNOT_RESET_CONTROL_DOMAIN)",
            }.get(failure.code, failure.describe())
            raise FenceError(f"cannot reset the power state of {vm}: {why}") from None


# ---------------------------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------------------------


def list_vms(session: XapiSession) -> list[Vm]:
    """All real VMs, in one request, filtered server-side; snapshots (which XAPI also marks
    as templates) are dropped client-side in case a pool reports them otherwise."""
    records = session.call(
        "VM.get_all_records_where",
        'field "is_a_template"="false" and field "is_control_domain"="false"',
        record_fields=RECORD_FIELDS)
    vms = [Vm.from_record(ref, record) for ref, record in records.items()]
    return sorted((vm for vm in vms if vm.forbidden_kind is None),
                  key=lambda vm: (vm.name, vm.uuid))


def _one_line(text: str) -> str:
    return re.sub(r"[\r\n\t]", " ", text)


def do_list(session: XapiSession, opts: Options) -> ExitStatus:
    sep = opts.separator
    lines = []
    for vm in list_vms(session):
        fields = [vm.uuid, _one_line(vm.name)]
        if opts.action == "list-status":
            fields.append("ON" if vm.is_on else "OFF")
        lines.append(sep.join(fields) + "\n")
    write_output("".join(lines))
    return ExitStatus.SUCCESS


# What the device will be asked to do, as XAPI names the permissions: rbac.ml
# permission_of_action lower-cases the call name (gen_rbac.ml writes them so). xen-api's
# ocaml/idl/datamodel_vm.ml gives VM.hard_shutdown, VM.start, VM.resume and VM.unpause
# _R_VM_OP, VM.power_state_reset _R_POOL_OP; ocaml/idl/datamodel_roles.ml orders the roles
# (roles_gte). Each rung: the least role that holds these, weakest rung first.
FENCING_PERMISSIONS = ("vm.hard_shutdown", "vm.start", "vm.resume", "vm.unpause")
RESET_PERMISSIONS = ("vm.power_state_reset",)
PERMISSION_RUNGS = (("vm-operator", FENCING_PERMISSIONS), ("pool-operator", RESET_PERMISSIONS))


def _least_role(missing: Sequence[str]) -> str:
    held: set[str] = set()
    for role, permissions in PERMISSION_RUNGS:
        held.update(permissions)
        if held.issuperset(missing):
            return role
    return "pool-admin"  # not reached: every permission asked for is on a rung


def _own_session_record(session: XapiSession) -> Any:
    """session.get_record on the session's own ref (if a relogin replaced the session under
    the call, the old ref is gone: HANDLE_INVALID, and the new one is read once)."""
    ref = session.ref
    try:
        return session.call("session.get_record", ref)
    except XapiFailure as failure:
        if failure.code != "HANDLE_INVALID" or session.ref in (ref, None):
            raise
        return session.call("session.get_record", session.ref)


def do_monitor(session: XapiSession, opts: Options) -> ExitStatus:
    """Logging in proved the pool answers and the credentials work; the session's own record
    proves the user may fence (one small read: this runs every minute on every node, so the
    VMs are not listed). XAPI's session record (ocaml/idl/datamodel.ml, class session) says
    is_local_superuser (root: every call allowed, rbac_permissions empty, xapi_session.ml)
    and, for a directory user, rbac_permissions: the union over its roles (xapi_session.ml
    get_permissions), which rbac.ml checks every call against."""
    record = _own_session_record(session)
    if not isinstance(record, dict):
        raise FenceError("session.get_record did not return a record")
    if record.get("is_local_superuser") is True:
        log.debug("monitor: the session is the local superuser's: it may fence")
        return ExitStatus.SUCCESS
    held = record.get("rbac_permissions")
    if held is None:  # the field came with XenServer 5.6 (rel_midnight_ride), with RBAC
        log.info("monitor: the pool's session record has no rbac_permissions (a XAPI older "
                 "than RBAC): the user's permissions are not checked")
        return ExitStatus.SUCCESS
    if not isinstance(held, list):
        raise FenceError("session.get_record returned rbac_permissions that is not a list")
    have = {item.lower() for item in held if isinstance(item, str)}
    needed = FENCING_PERMISSIONS + (RESET_PERMISSIONS if opts.allow_power_state_reset else ())
    missing = [permission for permission in needed if permission not in have]
    if missing:
        reason = " (allow_power_state_reset=1)" if set(missing) & set(RESET_PERMISSIONS) else ""
        raise FenceError(
            f"the XAPI user '{opts.username}' cannot fence: its session lacks the "
            f"permission{'s' if len(missing) > 1 else ''} {', '.join(missing)}{reason}; "
            f"the least role that has them is {_least_role(missing)}")
    log.debug("monitor: the session holds %s", ", ".join(needed))
    return ExitStatus.SUCCESS


def do_status(session: XapiSession, opts: Options) -> ExitStatus:
    vms = resolve_vms(session, opts.targets(), opts.cross_checks())
    on = any(vm.is_on for vm in vms)
    for vm in vms:
        log.debug("%s is %s", vm, vm.power_state)
    write_output("Status: ON\n" if on else "Status: OFF\n")
    return ExitStatus.SUCCESS if on else ExitStatus.OFF


def _power_each(session: XapiSession, opts: Options,
                turn: Callable[[PowerController, Vm], bool], state: str) -> ExitStatus:
    """Turn every target VM OFF or ON (`turn` says whether it already was), verified."""
    power = PowerController(session, opts)
    already = [turn(power, vm) for vm in resolve_vms(session, opts.targets(),
                                                     opts.cross_checks())]
    write_output(f"Success: Already {state}\n" if all(already) else f"Success: Powered {state}\n")
    return ExitStatus.SUCCESS


def do_off(session: XapiSession, opts: Options) -> ExitStatus:
    return _power_each(session, opts, PowerController.power_off, "OFF")


def do_on(session: XapiSession, opts: Options) -> ExitStatus:
    return _power_each(session, opts, PowerController.power_on, "ON")


def do_reboot(session: XapiSession, opts: Options) -> ExitStatus:
    """Off (verified) then on. The off half decides: once it is verified the node is fenced,
    and a failure to power on again is reported but is not a fencing failure."""
    power = PowerController(session, opts)
    vms = resolve_vms(session, opts.targets(), opts.cross_checks())
    for vm in vms:
        power.power_off(vm)
        log.info("%s is off (verified Halted)", vm)
    if opts.retry_on == 0:  # fence-agents' power-on half makes retry_on attempts: none
        log.info("retry_on=0: leaving %s off", ", ".join(str(vm) for vm in vms))
        vms = []
    for vm in vms:
        try:
            power.power_on(vm, known_state="Halted", attempts=opts.retry_on)
        except FenceError as error:
            log.warning("%s was powered off but did not power on again: %s", vm, error)
    write_output("Success: Rebooted\n")
    return ExitStatus.SUCCESS


ACTION_HANDLERS: dict[str, Callable[[XapiSession, Options], ExitStatus]] = {
    "list": do_list,
    "list-status": do_list,
    "monitor": do_monitor,
    "status": do_status,
    "on": do_on,
    "off": do_off,
    "reboot": do_reboot,
}


def run_action(opts: Options) -> ExitStatus:
    """Log in, run the action, log out: on every path, a signal included."""
    if opts.action in ("off", "reboot") and opts.delay > 0:
        log.info("waiting %g s (delay) before fencing", opts.delay)
        time.sleep(opts.delay)
    password = opts.read_password()
    tls = TlsPolicy(opts.ssl_insecure, opts.ssl_ca_file, opts.ssl_fingerprints)
    timeouts = Timeouts(login=opts.login_timeout, query=opts.shell_timeout)
    assert opts.username is not None  # noqa: S101 - check() guarantees it
    with XapiSession(opts.session_urls, tls, opts.username, password, timeouts,
                     opts.verbose_level) as session:
        status = ACTION_HANDLERS[opts.action](session, opts)
    if opts.action in ("on", "off", "reboot"):
        log.info("%s of %s: done", opts.action, ", ".join(t.describe() for t in opts.targets()))
    return status


# ---------------------------------------------------------------------------------------------
# Metadata, help, version
# ---------------------------------------------------------------------------------------------

SHORTDESC = "Fence agent for Citrix XenServer over XenAPI"
LONGDESC = (
    "fence_xenapi is an I/O fencing agent for virtual machines on XenServer, XCP-ng and Citrix "
    "Hypervisor pools. It logs in to the pool master over XenAPI (XML-RPC over HTTPS) and "
    "powers the named VM off, on or through a reboot, or reports its state. It acts only on "
    "the one real VM named by UUID or unique name label (templates, snapshots and control "
    "domains are refused), reports success only once XenAPI reads the VM Halted, and logs "
    "out of every session it opens."
)
VENDOR_URL = "https://xenproject.org"


def metadata_entries() -> list[tuple[str, Param, dict[str, str]]]:
    """(name, parameter, extra attributes) in fence-agents' order: each parameter under its
    name (marked obsoletes="old" if it replaced one) and under each old name (deprecated)."""
    entries = []
    for param in PARAMS:
        if not param.in_metadata:
            continue
        extra = {"obsoletes": param.deprecated_names[0]} if param.deprecated_names else {}
        entries.append((param.name, param, extra))
        entries.extend((old, param, {"deprecated": "1"}) for old in param.deprecated_names)
    return sorted(entries, key=lambda entry: (entry[1].group, entry[0]))


def metadata_xml() -> str:
    try:
        from lxml import etree
    except ImportError as error:
        # e.g. `python3 fence_xenapi.py` with a python3 that is not the distribution's
        raise FenceError(f"metadata needs lxml, which {sys.executable} cannot import "
                         f"({error}); install python3-lxml or run the agent with the "
                         "distribution's python3") from None

    root = etree.Element("resource-agent", name=AGENT_NAME, shortdesc=SHORTDESC)
    etree.SubElement(root, "longdesc").text = LONGDESC
    etree.SubElement(root, "vendor-url").text = VENDOR_URL
    parameters = etree.SubElement(root, "parameters")
    for name, param, extra in metadata_entries():
        element = etree.SubElement(parameters, "parameter", name=name, unique="0",
                                   required="1" if param.required else "0")
        for key, value in extra.items():
            element.set(key, value)
        etree.SubElement(element, "getopt", mixed=param.getopt)
        content = etree.SubElement(element, "content", type=param.kind)
        if param.default is not None:
            content.set("default", param.default)
        etree.SubElement(element, "shortdesc", lang="en").text = param.shortdesc
    actions = etree.SubElement(root, "actions")
    etree.SubElement(actions, "action", name="on", automatic="0")
    for action in ACTIONS:
        if action != "on":
            etree.SubElement(actions, "action", name=action)
    return etree.tostring(root, pretty_print=True, xml_declaration=True,
                          encoding="UTF-8").decode("utf-8")


def usage_text() -> str:
    import textwrap

    lines = ["Usage:", f"\t{AGENT_NAME} [options]", "Options:"]
    for param in PARAMS:
        if not param.getopt:
            continue
        desc = param.shortdesc
        if param.name == "action":
            desc = "Action: " + ", ".join(a + (" (default)" if a == "reboot" else "")
                                          for a in ACTIONS)
        elif param.default:
            desc += f" (default {param.default})"
        wrapped = textwrap.wrap(desc, 60, break_on_hyphens=False) or [""]
        lines.append(f"   {param.getopt:<34} {wrapped[0]}")
        lines.extend(" " * 38 + more for more in wrapped[1:])
    lines.append("With no options, parameters are read from standard input as name=value lines.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _raise_terminated(signum: int, _frame: object) -> NoReturn:
    # Ignore further signals so the logout in progress can finish (it is bounded).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    raise Terminated(f"stopped by {signal.Signals(signum).name}")


MAX_STDIN_BYTES = 1 << 20


def decode_argv(argv: Sequence[str]) -> list[str]:
    """Command-line arguments as UTF-8 text. Python hands over bytes that are not UTF-8 as
    lone surrogates; they are refused here, once, rather than failing when a request is built."""
    decoded = []
    for number, arg in enumerate(argv, 1):
        try:
            decoded.append(arg.encode("utf-8", "surrogateescape").decode("utf-8"))
        except UnicodeError:
            option = arg.split("=", 1)[0] if arg.startswith("--") else f"number {number}"
            raise UsageError(f"command-line argument {printable(option, 40)} is not valid "
                             "UTF-8") from None
    return decoded


def decode_stdin(data: bytes) -> str:
    """stdin's parameters as UTF-8 text; a line that is not is named by its key (never its
    value, which may be a password)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        number = data.count(b"\n", 0, error.start) + 1
        line = data.split(b"\n")[number - 1]
        key = line.split(b"=", 1)[0].strip().decode("utf-8", "replace") if b"=" in line else ""
        where = f" ({printable(key, 40)}=...)" if key else ""
        raise UsageError(f"stdin line {number}{where} is not valid UTF-8") from None


def read_options(argv: Sequence[str], stdin: Any) -> tuple[Options, list[str]]:
    if argv:
        values, warnings = parse_argv(decode_argv(argv))
    else:
        if stdin is None or stdin.isatty():
            raise UsageError(f"no options and no parameters on stdin (see '{AGENT_NAME} -h')")
        raw = stdin.buffer if hasattr(stdin, "buffer") else None
        data = raw.read(MAX_STDIN_BYTES + 1) if raw is not None else \
            stdin.read(MAX_STDIN_BYTES + 1).encode("utf-8", "surrogateescape")
        if len(data) > MAX_STDIN_BYTES:
            raise UsageError(f"more than {MAX_STDIN_BYTES >> 10} KiB of parameters on stdin")
        values, warnings = parse_stdin(decode_stdin(data))
    # Known before any value is checked: no error about another parameter shows it.
    SCRUBBER.add(values.get("password"))
    for value in values.values():
        # A value that goes on past a line end other than \n (a file written with bare \r
        # line ends is one line to fence-agents too) may hold the next lines, the password
        # among them: whatever shows the value shows none of them.
        for other in value.splitlines()[1:]:
            SCRUBBER.add(other.strip())
            key, equals, secret = other.strip().partition("=")
            if equals and STDIN_NAMES.get(key) is PARAMS_BY_NAME["password"]:
                SCRUBBER.add(secret)
    level = values.get("verbose_level")
    if level is not None:
        # fence-agents only warns about a verbose_level that is no whole number >= 0 and
        # logs at level 0: a logging setting must not fail a fence device.
        try:
            parse_number("verbose_level", level, int)
        except UsageError as error:
            warnings.append(f"{error}; using 0")
            values["verbose_level"] = "0"
    return Options.from_values(values), warnings


def _report_error(message: str, logging_ready: bool) -> None:
    # One line, whatever the message quotes (a parameter's text, the pool's words).
    message = printable(message, 2000)
    if logging_ready:
        log.error("%s", message)
    else:
        write_stderr(f"ERROR: {SCRUBBER.scrub(message)}\n")


def _guard_standard_descriptors() -> None:
    """A closed stdin, stdout or stderr (`>&-`) is opened on /dev/null, so that no socket
    or file the agent opens takes its number and receives what was meant for the user (or is
    replaced by /dev/null after a failed write). Python leaves sys.stdout etc. None then."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            with contextlib.suppress(OSError):
                null = os.open(os.devnull, os.O_RDWR)
                if null != fd:
                    os.dup2(null, fd)
                    os.close(null)


def main(argv: Optional[Sequence[str]] = None) -> int:
    _guard_standard_descriptors()
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGINT, _raise_terminated)
    logging_ready = False
    try:
        opts, warnings = read_options(sys.argv[1:] if argv is None else argv, sys.stdin)
        SCRUBBER.add(opts.password)
        if opts.show_help:
            write_output(usage_text() + "\n")
            return ExitStatus.SUCCESS
        if opts.show_version:
            write_output(agent_version() + "\n")
            return ExitStatus.SUCCESS
        if opts.action in ("metadata", "manpage"):
            write_output(metadata_xml())
            return ExitStatus.SUCCESS
        setup_logging(opts)
        logging_ready = True
        for warning in warnings:
            log.warning("%s", warning)
        opts.check()
        if opts.action == "validate-all":
            return ExitStatus.SUCCESS
        return run_action(opts)
    except FenceError as error:
        _report_error(str(error), logging_ready)
        return ExitStatus.FAILURE
    except Exception as error:  # last resort: one line that names the cause, no traceback
        _report_error(f"internal error, please report it: {type(error).__name__}: "
                      f"{printable(str(error))}", logging_ready)
        return ExitStatus.FAILURE


if __name__ == "__main__":
    sys.exit(main())
