"""The floor under `list`: the least any XAPI client needs for it on this machine (stdlib only,
Python >= 3.9). Logs in, sends the same VM.get_all_records_where as fence_xenapi's `list`,
reads the answer's bytes without parsing them, logs out, and prints one JSON line:
{"fetch_seconds": ..., "bytes": ...}. bench/run.py runs it like an agent (its wall time is
start-up + three requests + the transfer) to tell how much of `list` is the pool's answer and
how much is the agent's own parsing.

Usage: python3 bench/probe.py URL USERNAME PASSWORD
"""

from __future__ import annotations

import http.client
import json
import sys
import time
import urllib.parse
import xmlrpc.client
from typing import Any

LIST_QUERY = 'field "is_a_template"="false" and field "is_control_domain"="false"'


def post(connection: http.client.HTTPConnection, method: str, *params: Any) -> bytes:
    body = xmlrpc.client.dumps(params, method).encode()
    connection.request("POST", "/", body, {"Content-Type": "text/xml"})
    return connection.getresponse().read()


def main(argv: list[str]) -> int:
    url, username, password = argv
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise SystemExit("probe: an http:// URL only")
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=600)
    answer: Any = xmlrpc.client.loads(post(connection, "session.login_with_password", username,
                                      password, "1.0", "bench-probe"))[0][0]
    if answer.get("Status") != "Success":
        raise SystemExit(f"probe: login failed: {answer.get('ErrorDescription')}")
    session = answer["Value"]
    started = time.perf_counter()
    body = post(connection, "VM.get_all_records_where", session, LIST_QUERY)
    fetch = time.perf_counter() - started
    post(connection, "session.logout", session)
    connection.close()
    if b"<name>Status</name><value>Success</value>" not in body[:300]:
        raise SystemExit("probe: the listing failed")
    print(json.dumps({"fetch_seconds": fetch, "bytes": len(body)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
