"""The inputs tests/test_differential.py gives both agents (see tests/differential.py for the
placeholders). Each case names, in `differs`, the rows of the README's table "Differences
from fence-agents' fence_xenapi" that explain how the two agents' results differ; a case
that names none must come out the same."""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Dict, List, Tuple

from tests.differential import Case

AUTH = "session_url={url}\nlogin=root\npasswd=secret\n"
AUTH_ARGS = ("-s", "{url}", "-l", "root", "-p", "secret")
# Quick failure of a power operation that never completes: one status poll, then give up.
QUICK = "power_timeout=1\nstonith_status_sleep=1\n"
INJECTED = [["INTERNAL_ERROR", "injected by the test"]]

CASES: List[Case] = []


def stdin(case_id: str, body: str, *differs: str, auth: str = AUTH, **extra: object) -> None:
    CASES.append(Case(id=f"stdin/{case_id}", stdin=auth + body, differs=differs,
                      **extra))  # type: ignore[arg-type]


def cli(case_id: str, args: Tuple[str, ...], *differs: str, auth: Tuple[str, ...] = AUTH_ARGS,
        **extra: object) -> None:
    CASES.append(Case(id=f"cli/{case_id}", argv=(*auth, *args), differs=differs,
                      **extra))  # type: ignore[arg-type]


# --- every power action on every VM state, as the fencer sends it and by hand ----------------

STATES = {"running": "vm-running", "halted": "vm-halted", "paused": "vm-paused",
          "suspended": "vm-suspended"}
for action in ("status", "on", "off", "reboot"):
    for state, vm in STATES.items():
        stdin(f"{action}-{state}", f"action={action}\nport={vm}\n")
        cli(f"{action}-{state}", ("-o", action, "-n", vm))

# --- actions without a VM, and the ones that never reach the pool ----------------------------

stdin("list", "action=list\n")
cli("list", ("-o", "list"))
stdin("list-status", "action=list-status\n")
cli("list-status", ("--action=list-status",))
stdin("list-separator", "action=list\nseparator=;\n")
cli("list-separator", ("-o", "list", "-C", "|"))
cli("list-separator-long", ("-o", "list", "--separator=::"))
stdin("monitor", "action=monitor\n")
cli("monitor", ("-o", "monitor"))
stdin("monitor-with-halted-plug", "action=monitor\nport=vm-halted\n")
stdin("monitor-with-unknown-plug", "action=monitor\nport=nope\n")
stdin("metadata", "action=metadata\n", auth="")
cli("metadata", ("-o", "metadata"), auth=())
stdin("meta-data", "action=meta-data\n", auth="")
stdin("manpage", "action=manpage\n", auth="")
stdin("validate-all", "action=validate-all\nport=vm-running\n")
stdin("validate-all-no-plug", "action=validate-all\n")
stdin("validate-all-no-login", "action=validate-all\nport=vm-running\n",
      auth="session_url={url}\npasswd=secret\n")
stdin("validate-all-no-url", "action=validate-all\nport=vm-running\n",
      auth="login=root\npasswd=secret\n")
stdin("validate-all-no-password", "action=validate-all\nport=vm-running\n",
      auth="session_url={url}\nlogin=root\n")
cli("validate-all", ("-o", "validate-all", "-n", "vm-running"))
cli("help-short", ("-h",), auth=())
cli("help-long", ("--help",), auth=())
cli("version-short", ("-V",), auth=())
cli("version-long", ("--version",), auth=())
stdin("help", "help=1\n", auth="")
stdin("version", "version=yes\n", auth="")
stdin("default-action-reboot", "port=vm-running\n")
cli("default-action-reboot", ("-n", "vm-running"))
stdin("action-uppercase", "action=STATUS\nport=vm-running\n")
stdin("action-unknown", "action=explode\nport=vm-running\n")
cli("action-unknown", ("-o", "explode", "-n", "vm-running"))
stdin("action-empty", "action=\nport=vm-running\n")

# --- which VM: names, UUIDs, several, refused ------------------------------------------------

for action in ("status", "off"):
    stdin(f"{action}-unknown-name", f"action={action}\nport=nope\n")
    stdin(f"{action}-unknown-uuid",
          f"action={action}\nport=00000000-0000-4000-8000-0000000000ff\n")
    stdin(f"{action}-by-uuid", f"action={action}\nport={{uuid:vm-running}}\n")
    stdin(f"{action}-by-uuid-uppercase",
          f"action={action}\nport=00000000-0000-4000-8000-00000000000F\n")
    stdin(f"{action}-duplicate-name", f"action={action}\nport=vm-dup\n")
    stdin(f"{action}-name-shared-with-template", f"action={action}\nport=vm-shared-name\n")
    stdin(f"{action}-template", f"action={action}\nport=tmpl-debian\n")
    stdin(f"{action}-template-by-uuid", f"action={action}\nport={{uuid:tmpl-debian}}\n")
    stdin(f"{action}-snapshot", f"action={action}\nport=vm-running-snap\n")
    stdin(f"{action}-control-domain", f"action={action}\nport=Control domain on host: host1\n")
    stdin(f"{action}-quoted-name", f"action={action}\nport=vm \"quoted\"\n")
    stdin(f"{action}-name-with-spaces", f"action={action}\nport=vm with spaces\n")
    stdin(f"{action}-non-ascii-name", f"action={action}\nport=vm-\u00fcn\u00ef\u2713\n")
    stdin(f"{action}-two-plugs", f"action={action}\nport=vm-running,vm-halted\n")
    stdin(f"{action}-uuid-param", f"action={action}\nuuid={{uuid:vm-running}}\n")
    stdin(f"{action}-nodename-only", f"action={action}\nnodename=node1\n")
    stdin(f"{action}-nodename-and-port", f"action={action}\nnodename=node2\nport=node1\n")
    stdin(f"{action}-empty-port", f"action={action}\nport=\n")
    stdin(f"{action}-no-plug", f"action={action}\n")
    stdin(f"{action}-vm-on-dead-host", f"action={action}\nport=vm-on-dead-host\n{QUICK}")
stdin("on-two-plugs-one-running", "action=on\nport=vm-running,vm-halted\n")
stdin("status-two-plugs-one-unknown", "action=status\nport=vm-halted,nope\n")
stdin("on-two-plugs-halted", "action=on\nport=vm-halted,node2\n")
stdin("reboot-two-plugs", "action=reboot\nport=vm-running,node1\n")
stdin("off-plug-separator", "action=off\nport=vm-running:node1\nplug_separator=:\n")
stdin("status-plug-separator-empty", "action=status\nport=vm-running\nplug_separator=\n")
cli("status-uuid-option", ("-o", "status", "-U", "{uuid:vm-running}"))
cli("status-uuid-long", ("-o", "status", "--uuid={uuid:vm-halted}"))
cli("status-by-uuid", ("-o", "status", "-n", "{uuid:vm-halted}"))

# --- stdin syntax ----------------------------------------------------------------------------

stdin("comments-and-blanks",
      "# a comment\n\n   \naction=status\n#port=vm-halted\nport=vm-running\n")
stdin("crlf", "action=status\r\nport=vm-halted\r\n",
      auth=AUTH.replace("\n", "\r\n"))
stdin("cr-only", "action=status\rport=vm-halted\r")
stdin("no-final-newline", "action=status\nport=vm-halted")
stdin("leading-whitespace", "   action=status\n\tport=vm-halted\n")
stdin("trailing-whitespace", "action=status \nport=vm-halted\t \n")
stdin("password-trailing-blank", "action=status\nport=vm-running\n",
      auth="session_url={url}\nlogin=root\npasswd=secret \n")
stdin("blank-after-equals", "action=status\nport= vm-running\n")
stdin("blank-before-equals", "action=status\nport =vm-running\n")
stdin("quoted-value", "action=\"status\"\nport=\"vm-running\"\n")
stdin("quoted-value-with-blanks", "action=status\nport=\"vm with spaces\"\n")
stdin("single-quotes", "action=status\nport='vm-running'\n")
stdin("one-quote", "action=status\nport=\"vm-running\n")
stdin("line-without-equals", "action=status\nport=vm-running\nport\n")
stdin("equals-in-value", "action=status\nport=vm-running\n",
      auth="session_url={url}\nlogin=eq\npasswd=pass=word\n")
stdin("unknown-keys", "action=status\nport=vm-running\nfrobnicate=1\nipaddr=10.0.0.1\n"
      "agent=fence_xenapi\n")
stdin("uppercase-key", "ACTION=off\nport=vm-running\n")
stdin("last-value-wins", "action=off\naction=status\nport=vm-halted\nport=vm-running\n")
stdin("aliases-new-names", "action=status\nplug=vm-running\n",
      auth="session_url={url}\nusername=root\npassword=secret\n")
stdin("option-alias", "option=status\nport=vm-running\n")
stdin("dash-names", "action=status\nport=vm-halted\npower-timeout=5\nretry-on=1\n",
      auth="session-url={url}\nlogin=root\npasswd=secret\n")
stdin("passwd-script-dash", "action=status\nport=vm-running\n",
      auth="session_url={url}\nlogin=root\npasswd-script=echo secret\n")
stdin("debug-alias", "action=status\nport=vm-running\ndebug=/dev/null\n")
stdin("debug-file", "action=status\nport=vm-running\ndebug_file=/dev/null\n")
stdin("verbose-yes", "action=status\nport=vm-running\nverbose=yes\n")
stdin("verbose-on", "action=list\nverbose=on\n")
stdin("verbose-0", "action=status\nport=vm-running\nverbose=0\n")
stdin("verbose-level-2", "action=status\nport=vm-halted\nverbose_level=2\n")
stdin("quiet-true", "action=status\nport=nope\nquiet=true\n")
stdin("quiet-false", "action=status\nport=vm-running\nquiet=false\n")
stdin("boolean-bad-word", "action=status\nport=vm-running\nquiet=perhaps\n")
stdin("boolean-empty", "action=status\nport=vm-running\nverbose=\n")
stdin("ssl-insecure-http", "action=status\nport=vm-running\nssl_insecure=1\n")
stdin("disable-timeout", "action=status\nport=vm-running\ndisable_timeout=true\n")
stdin("timeouts", "action=off\nport=vm-running\nlogin_timeout=4\nshell_timeout=2\n"
      "power_timeout=9\npower_wait=0\nstonith_status_sleep=1\n")
stdin("delay-off", "action=off\nport=vm-running\ndelay=1\n", kill_after=15.0)
stdin("delay-status", "action=status\nport=vm-running\ndelay=1\n")
stdin("empty-input", "", auth="")
stdin("only-comments", "# nothing\n\n", auth="")

# --- the command line: every option, short, long and '=' forms -------------------------------

cli("short-options", ("-o", "status", "-n", "vm-running"))
cli("long-options", ("--action", "status", "--plug", "vm-running"),
    auth=("--session-url", "{url}", "--username", "root", "--password", "secret"))
cli("equals-options", ("--action=status", "--plug=vm-halted"),
    auth=("--session-url={url}", "--username=root", "--password=secret"))
cli("attached-short-values", ("-ostatus", "-nvm-halted"),
    auth=("-s{url}", "-lroot", "-psecret"))
cli("short-with-equals", ("-o=status", "-n", "vm-running"))
cli("prefix-act", ("--act=status", "--pl", "vm-running"))
cli("prefix-u", ("--u=root", "--act", "status", "-n", "vm-running"),
    auth=("-s", "{url}", "-p", "secret"))
cli("prefix-sess", ("--sess={url}", "-o", "status", "-n", "vm-running"),
    auth=("-l", "root", "-p", "secret"))
cli("prefix-ambiguous", ("--pass=secret", "-o", "status", "-n", "vm-running"))
cli("verbose-v", ("-v", "-o", "status", "-n", "vm-running"))
cli("verbose-vv", ("-vv", "-o", "status", "-n", "vm-halted"))
cli("verbose-vvv-list", ("-vvv", "-o", "list"))
cli("verbose-long", ("--verbose", "--verbose", "-o", "status", "-n", "vm-running"))
cli("verbose-level", ("--verbose-level=2", "-o", "status", "-n", "vm-running"))
cli("verbose-level-0-with-v", ("--verbose-level", "0", "-v", "-o", "status", "-n",
                               "vm-running"))
cli("quiet-short", ("-q", "-o", "status", "-n", "nope"))
cli("quiet-long", ("--quiet", "-o", "status", "-n", "vm-running"))
cli("stacked-flags", ("-qv", "-o", "status", "-n", "vm-running"))
cli("debug-file-short", ("-D", "/dev/null", "-o", "status", "-n", "vm-running"))
cli("debug-file-long", ("--debug-file=/dev/null", "-o", "status", "-n", "vm-running"))
cli("password-script-short", ("-S", "echo secret", "-o", "status", "-n", "vm-running"),
    auth=("-s", "{url}", "-l", "root"))
cli("password-script-long", ("--password-script=printf 'secret \\n'", "-o", "status", "-n",
                             "vm-running"), auth=("-s", "{url}", "-l", "root"))
cli("plug-separator", ("--plug-separator=+", "-o", "status", "-n", "vm-halted+node2"))
cli("delay-zero", ("--delay=0", "-o", "off", "-n", "vm-running"))
cli("login-timeout", ("--login-timeout=3", "-o", "status", "-n", "vm-running"))
cli("shell-timeout", ("--shell-timeout", "3", "-o", "status", "-n", "vm-running"))
cli("power-timeout", ("--power-timeout=5", "-o", "off", "-n", "vm-running"))
cli("power-wait", ("--power-wait=0", "-o", "on", "-n", "vm-halted"))
cli("stonith-status-sleep", ("--stonith-status-sleep=1", "-o", "reboot", "-n", "vm-running"))
cli("retry-on", ("--retry-on=2", "-o", "on", "-n", "vm-halted"))
cli("disable-timeout", ("--disable-timeout=true", "-o", "status", "-n", "vm-running"))
cli("ssl-insecure", ("--ssl-insecure", "-o", "status", "-n", "vm-running"))
cli("ssl-ca-file", ("--ssl-ca-file=/etc/ssl/certs/ca-certificates.crt", "-o", "status", "-n",
                    "vm-running"))
cli("ssl-fingerprint", ("--ssl-fingerprint", "ab" * 32, "-o", "status", "-n", "vm-running"))
cli("allow-power-state-reset", ("--allow-power-state-reset", "-o", "status", "-n",
                                "vm-running"))
cli("allow-power-state-reset-without-ha", ("--allow-power-state-reset",
                                           "--allow-power-state-reset-without-ha", "-o",
                                           "status", "-n", "vm-running"))
cli("unknown-option", ("--frobnicate", "-o", "status", "-n", "vm-running"))
cli("unknown-short-option", ("-Z", "-o", "status", "-n", "vm-running"))
cli("missing-value", ("-o", "status", "-n"))
cli("extra-arguments", ("-o", "status", "-n", "vm-running", "stray"))
cli("double-dash", ("-o", "status", "--", "-n", "vm-running"))
cli("last-option-wins", ("-o", "off", "-o", "status", "-n", "vm-running"))
cli("mixed-order", ("-n", "vm-halted", "status-is-not-an-option", "-o", "status"))

# --- missing and bad parameters --------------------------------------------------------------

for action in ("status", "off", "list"):
    plug = "" if action == "list" else "port=vm-running\n"
    stdin(f"{action}-no-url", f"action={action}\n{plug}", auth="login=root\npasswd=secret\n")
    stdin(f"{action}-no-login", f"action={action}\n{plug}",
          auth="session_url={url}\npasswd=secret\n")
    stdin(f"{action}-no-password", f"action={action}\n{plug}",
          auth="session_url={url}\nlogin=root\n")
stdin("empty-password", "action=status\nport=vm-running\n",
      auth="session_url={url}\nlogin=root\npasswd=\n")
for name, value in (("power_timeout", "abc"), ("login_timeout", "1.5"), ("retry_on", "x"),
                    ("delay", "soon"), ("verbose_level", "lots"), ("verbose_level", "-1"),
                    ("shell_timeout", "-1"), ("retry_on", "-1"), ("delay", "-1"),
                    ("login_timeout", "100000"), ("retry_on", "5000"), ("power_timeout", "2e1"),
                    ("verbose_level", "5000")):
    stdin(f"bad-{name}-{value}", f"action=status\nport=vm-running\n{name}={value}\n")
for action, vm in (("on", "vm-halted"), ("reboot", "vm-running"), ("status", "vm-running"),
                   ("monitor", "")):
    port = f"port={vm}\n" if vm else ""
    stdin(f"retry-on-0-{action}", f"action={action}\n{port}retry_on=0\n")
stdin("retry-on-0-on-start-fails", f"action=on\nport=vm-halted\nretry_on=0\n{QUICK}",
      faults={"fail_next": {"VM.start": INJECTED}})
stdin("retry-on-1-on-start-fails-once", f"action=on\nport=vm-halted\nretry_on=1\n{QUICK}",
      faults={"fail_next": {"VM.start": INJECTED}})
stdin("on-start-fails-twice", f"action=on\nport=vm-halted\n{QUICK}",
      faults={"fail_next": {"VM.start": INJECTED * 2}})
stdin("reboot-start-fails", f"action=reboot\nport=vm-running\n{QUICK}",
      faults={"fail_next": {"VM.start": INJECTED}})
stdin("reboot-retry-on-2-start-fails-once",
      f"action=reboot\nport=vm-running\nretry_on=2\n{QUICK}",
      faults={"fail_next": {"VM.start": INJECTED}})

# --- password_script -------------------------------------------------------------------------

for case_id, script in (("echo", "echo secret"), ("trailing-blanks", "printf 'secret  \\n\\n'"),
                        ("exit-status", "echo secret; exit 3"), ("empty", "true"),
                        ("wrong", "echo nope"), ("stderr", "echo noise >&2; echo secret")):
    stdin(f"password-script-{case_id}", "action=status\nport=vm-running\n",
          auth=f"session_url={{url}}\nlogin=root\npasswd_script={script}\n")
stdin("password-script-new-name", "action=status\nport=vm-running\n",
      auth="session_url={url}\nusername=root\npassword_script=echo secret\n")
stdin("password-script-wins", "action=status\nport=vm-running\n",
      auth="session_url={url}\nlogin=root\npasswd=nope\npasswd_script=echo secret\n")
stdin("password-script-multiline", "action=status\nport=vm-running\n",
      auth="session_url={url}\nlogin=multi\npasswd_script=printf 'first\\nsecond\\n'\n")

# --- the pool fails --------------------------------------------------------------------------

for action, vm in (("status", "vm-running"), ("off", "vm-running"), ("list", ""),
                   ("monitor", "")):
    port = f"port={vm}\n" if vm else ""
    stdin(f"{action}-wrong-password", f"action={action}\n{port}",
          auth="session_url={url}\nlogin=root\npasswd=wrong\n")
    stdin(f"{action}-unknown-user", f"action={action}\n{port}",
          auth="session_url={url}\nlogin=nobody\npasswd=secret\n")
    stdin(f"{action}-unreachable", f"action={action}\n{port}",
          auth="session_url={closed}\nlogin=root\npasswd=secret\n")
    stdin(f"{action}-http-500", f"action={action}\n{port}",
          auth="session_url={http}/500\nlogin=root\npasswd=secret\n")
    stdin(f"{action}-redirect", f"action={action}\n{port}",
          auth="session_url={http}/redirect/{port}\nlogin=root\npasswd=secret\n")
    stdin(f"{action}-pool-member", f"action={action}\n{port}",
          auth="session_url={member}\nlogin=root\npasswd=secret\n")
    stdin(f"{action}-garbage-answer", f"action={action}\n{port}", faults={"bad_xml": True})
    stdin(f"{action}-connection-reset", f"action={action}\n{port}", faults={"reset": True})
for action in ("status", "off"):
    stdin(f"{action}-hung-pool", f"action={action}\nport=vm-running\nlogin_timeout=1\n"
          "shell_timeout=1\n", faults={"hang": True}, kill_after=4.0)
stdin("status-session-expires", "action=status\nport=vm-running\n",
      faults={"fail_next": {"VM.get_all_records_where": [["SESSION_INVALID", "x"]],
                            "VM.get_by_name_label": [["SESSION_INVALID", "x"]]}})
stdin("off-read-only-user", f"action=off\nport=vm-running\n{QUICK}",
      auth="session_url={url}\nlogin=ro\npasswd=ropass\n")
stdin("monitor-read-only-user", "action=monitor\n",
      auth="session_url={url}\nlogin=ro\npasswd=ropass\n")
stdin("off-hard-shutdown-fails", f"action=off\nport=vm-running\n{QUICK}",
      faults={"fail_next": {"VM.hard_shutdown": INJECTED}})
stdin("off-vm-ignores-shutdown", f"action=off\nport=vm-running\n{QUICK}",
      faults={"ignore_hard_shutdown": True})
stdin("slow-pool", "action=status\nport=vm-running\n", faults={"latency": 0.05})
stdin("several-urls", "action=status\nport=vm-running\n",
      auth="session_url={closed},{url}\nlogin=root\npasswd=secret\n")
stdin("bare-host-url", "action=status\nport=vm-running\n",
      auth="session_url=127.0.0.1:{port}\nlogin=root\npasswd=secret\n")
stdin("url-with-path", "action=status\nport=vm-running\n",
      auth="session_url=http://127.0.0.1:{port}/RPC2\nlogin=root\npasswd=secret\n")
stdin("url-with-blanks", "action=status\nport=vm-running\n",
      auth="session_url=  {url}  \nlogin=root\npasswd=secret\n")
stdin("url-without-slash", "action=status\nport=vm-running\n",
      auth="session_url=http://127.0.0.1:{port}\nlogin=root\npasswd=secret\n")

# --- output in any locale and stdout encoding ------------------------------------------------

for encoding in ("ascii", "latin-1", "utf-8"):
    for action in ("list", "list-status"):
        stdin(f"{action}-stdout-{encoding}", f"action={action}\n",
              env={"PYTHONIOENCODING": encoding})
stdin("status-non-ascii-name-ascii-stdio", "action=status\nport=vm-\u00fcn\u00ef\u2713\n",
      env={"PYTHONIOENCODING": "ascii"})
stdin("status-non-ascii-name-latin-1-stdio", "action=status\nport=vm-\u00fcn\u00ef\u2713\n",
      env={"PYTHONIOENCODING": "latin-1"})
cli("status-non-ascii-name-ascii-stdout", ("-o", "status", "-n", "vm-\u00fcn\u00ef\u2713"),
    env={"PYTHONIOENCODING": "ascii"})
cli("off-unknown-non-ascii-name-ascii-stdout", ("-o", "off", "-n", "vm-\u00fc-nope"),
    env={"PYTHONIOENCODING": "ascii"})
stdin("list-locale-c", "action=list\n", env={"LANG": "C", "LC_ALL": "C"})

# --- VM names with surrounding whitespace: `web` and `web `, ` db` alone ---------------------
stdin("off-name-whitespace-twins", "action=off\nport=web\n")
stdin("off-name-whitespace-twins-trailing", "action=off\nport=web \n")
cli("off-name-whitespace-twins-trailing", ("-o", "off", "-n", "web "))
stdin("off-name-whitespace-alone", "action=off\nport=db\n")
cli("off-name-whitespace-alone", ("-o", "off", "-n", "db"))
cli("off-name-whitespace-alone-exact", ("-o", "off", "-n", " db"))
# A bare \r ends no line for either agent (CPython's sys.stdin has newline="\n" on POSIX):
# the file is one line, so port is part of the action's value and login's holds the password.
stdin("cr-only-lines", "action=status\rport=vm-running\n")
stdin("cr-only-lines-login", "action=status\nport=vm-running\n",
      auth="session_url={url}\nlogin=root\rpasswd=secret\n")
stdin("nel-inside-a-line", "action=status\nport=vm-running\x85\n")

# --- which README rows explain each case's differences ---------------------------------------
# (case id pattern, rows); a case gets the rows of every pattern it matches. The `logout` row
# applies by itself wherever the distro agent leaves its session open.

ERRORS = ("error-text",)
DIFFERS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("*/on-paused", ("resume-on",)),
    ("*/on-suspended", ("resume-on",)),
    ("*/list-status", ("list-status",)),
    ("*/list-status-stdout-utf-8", ("list-status",)),
    ("*/list-status-stdout-latin-1", ("list-status", "unencodable-name")),
    ("*/list-status-stdout-ascii", ("list-status", "unencodable-name")),
    ("*/list-stdout-ascii", ("unencodable-name",)),
    ("stdin/status-non-ascii-name-*-stdio", ("stdin-utf-8",)),
    ("*/list-stdout-latin-1", ("unencodable-name",)),
    ("*/meta-data", ("metadata",)),
    ("*/metadata", ("metadata",)),
    ("*/manpage", ("metadata",)),
    ("stdin/validate-all-no-*", ("validate-all",)),
    ("cli/help-*", ("help-version",)),
    ("cli/version-*", ("help-version",)),
    ("stdin/help", ("help-version",)),
    ("stdin/version", ("help-version",)),
    ("*-unknown-name", ERRORS),
    ("*-unknown-non-ascii-name-*", ERRORS),
    ("*-unknown-uuid", ERRORS),
    ("*-duplicate-name", ERRORS),
    ("*-name-shared-with-template", ("shared-name",)),
    ("*-uuid-param", ("uuid-param",)),
    ("cli/status-uuid-*", ("uuid-param",)),
    ("*-nodename-only", ("nodename",)),
    ("*-empty-port", ERRORS),
    ("stdin/off-two-plugs", ERRORS),
    ("stdin/off-vm-on-dead-host", ERRORS),
    ("*-plug-separator-empty", ("empty-plug-separator",)),
    ("stdin/blank-after-equals", ("name-whitespace",)),
    ("stdin/single-quotes", ERRORS),
    ("stdin/one-quote", ERRORS),
    ("stdin/line-without-equals", ERRORS),
    ("stdin/option-alias", ("option-alias",)),
    ("stdin/verbose-yes", ("verbose-stdout",)),
    ("stdin/verbose-on", ("verbose-stdout",)),
    ("stdin/verbose-level-2", ("verbose-stdout",)),
    ("cli/verbose-v*", ("verbose-stdout",)),
    ("cli/verbose-long", ("verbose-stdout",)),
    ("cli/verbose-level", ("verbose-stdout",)),
    ("cli/stacked-flags", ("verbose-stdout",)),
    ("*/quiet-true", ERRORS),
    ("cli/quiet-short", ERRORS),
    ("cli/ssl-*", ("extensions",)),
    ("cli/allow-power-state-reset*", ("extensions",)),
    ("stdin/empty-password", ERRORS),
    ("stdin/bad-login_timeout-1.5", ("fractional-seconds",)),
    ("stdin/bad-power_timeout-2e1", ("fractional-seconds",)),
    ("stdin/bad-login_timeout-100000", ("huge-numbers",)),
    ("stdin/bad-retry_on-5000", ("huge-numbers",)),
    ("stdin/bad-verbose_level-5000", ("verbose-stdout",)),
    ("stdin/bad-shell_timeout--1", ("negative-numbers",)),
    ("stdin/bad-retry_on--1", ("negative-numbers",)),
    ("stdin/bad-delay--1", ("negative-numbers",)),
    ("stdin/on-two-plugs-one-running", ("on-several-plugs",)),
    ("stdin/status-two-plugs-one-unknown", ERRORS),
    ("*start-fails*", ERRORS),
    ("stdin/password-script-empty", ERRORS),
    ("stdin/password-script-wrong", ERRORS),
    ("*-wrong-password", ERRORS),
    ("*-unknown-user", ERRORS),
    ("*-unreachable", ERRORS),
    ("*-http-500", ERRORS),
    ("*-redirect", ERRORS),
    ("*-garbage-answer", ERRORS),
    ("*-connection-reset", ERRORS),
    ("*-pool-member", ("pool-member",)),
    ("*-hung-pool", ("hung-pool",)),
    ("stdin/off-read-only-user", ERRORS),
    ("stdin/off-hard-shutdown-fails", ERRORS),
    ("stdin/monitor-read-only-user", ("monitor-permissions",)),
    ("stdin/several-urls", ("several-urls",)),
    ("stdin/bare-host-url", ("bare-host", "error-text")),
    ("*/off-name-whitespace-twins*", ("name-whitespace",)),
    ("*/off-name-whitespace-alone", ("name-whitespace",)),
)


def _with_rows(case: Case) -> Case:
    rows: Dict[str, None] = dict.fromkeys(case.differs)
    for pattern, names in DIFFERS:
        if fnmatch.fnmatchcase(case.id, pattern):
            rows.update(dict.fromkeys(names))
    return dataclasses.replace(case, differs=tuple(rows))


CASES = [_with_rows(case) for case in CASES]
UNUSED_PATTERNS = [pattern for pattern, _ in DIFFERS
                   if not any(fnmatch.fnmatchcase(case.id, pattern) for case in CASES)]
