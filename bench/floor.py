"""The floor under each action: the least a Python XAPI client needs for it on this machine
(stdlib only, Python >= 3.9). bench/run.py runs it like an agent, as Pacemaker's fencer would,
parameters on stdin (action, session_url, username, password, port), and puts its time beside
the agents' as the floor no Python agent can beat: the interpreter's start-up, importing
http.client and xmlrpc.client, and exactly the XAPI calls fence_xenapi makes for the action
(the same number of round trips, the same answers to read), with nothing else: no option
checks, no VM checks, no timeouts, no error handling, no logging.

- status: login, the VM's record by name (VM.get_all_records_where), logout; prints
  `Status: ON|OFF` read from the unparsed answer.
- monitor: login, pool.get_all, logout.
- list, list-status: login, every VM record (VM.get_all_records_where), logout; the answer is
  read but not parsed, and one JSON line is printed instead of the list:
  {"fetch_seconds": ..., "bytes": ...} (how long the pool took to send it, and its size).
- off, on: login, find the VM, VM.hard_shutdown or VM.start, VM.get_power_state, logout.
- reboot: login, find, hard_shutdown, get_power_state, start, get_power_state, logout.

The metadata floor is not here: it is `python3 -c 'import lxml.etree'` (bench/run.py).
"""

from __future__ import annotations

import http.client
import re
import sys
import time
import urllib.parse
import xmlrpc.client

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing at run time: the floor imports nothing it does not need
    from typing import Any, Dict

LIST_QUERY = 'field "is_a_template"="false" and field "is_control_domain"="false"'
BY_NAME = 'field "name__label"="{0}"'  # as fence_xenapi looks a VM up


class Client:
    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise SystemExit("floor: an http:// URL only")
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port or 80,
                                                     timeout=600)
        self.session = ""

    def raw(self, method: str, *params: Any) -> bytes:
        body = xmlrpc.client.dumps(params, method).encode()
        self.connection.request("POST", "/", body, {"Content-Type": "text/xml"})
        return self.connection.getresponse().read()

    def call(self, method: str, *params: Any) -> Any:
        answer: Any = xmlrpc.client.loads(self.raw(method, *params))[0][0]
        if answer.get("Status") != "Success":
            raise SystemExit(f"floor: {method} failed: {answer.get('ErrorDescription')}")
        return answer["Value"]

    def login(self, username: str, password: str) -> None:
        self.session = self.call("session.login_with_password", username, password, "1.0",
                                 "bench-floor")

    def logout(self) -> None:
        self.call("session.logout", self.session)
        self.connection.close()


def vm_record(client: Client, name: str) -> bytes:
    """The VM's record by name, unparsed (the answer holds that one record)."""
    return client.raw("VM.get_all_records_where", client.session, BY_NAME.format(name))


def main() -> int:
    params: Dict[str, str] = {}
    for line in sys.stdin:
        key, _, value = line.strip().partition("=")
        params[key] = value
    action = params.get("action", "reboot")
    client = Client(params["session_url"])
    client.login(params["username"], params["password"])
    if action == "monitor":
        client.call("pool.get_all", client.session)
    elif action in ("list", "list-status"):
        started = time.perf_counter()
        body = client.raw("VM.get_all_records_where", client.session, LIST_QUERY)
        fetch = time.perf_counter() - started
        if b"<name>Status</name><value>Success</value>" not in body[:300]:
            raise SystemExit("floor: the listing failed")
        print(f'{{"fetch_seconds": {fetch}, "bytes": {len(body)}}}')
    else:
        body = vm_record(client, params["port"])
        ref_match = re.search(rb"<name>(OpaqueRef:[^<]+)</name>", body)
        if ref_match is None:
            raise SystemExit(f"floor: no VM {params['port']}")
        ref = ref_match.group(1).decode()
        if action == "status":
            state = re.search(rb"<name>power_state</name><value>(?:<string>)?(\w+)", body)
            on = state is not None and state.group(1) != b"Halted"
            print("Status: ON" if on else "Status: OFF")
        steps = {"off": ["VM.hard_shutdown"], "on": ["VM.start"],
                 "reboot": ["VM.hard_shutdown", "VM.start"]}.get(action, [])
        for method in steps:
            if method == "VM.start":
                client.call(method, client.session, ref, False, False)
            else:
                client.call(method, client.session, ref)
            client.call("VM.get_power_state", client.session, ref)
    client.logout()
    return 0


if __name__ == "__main__":
    sys.exit(main())
