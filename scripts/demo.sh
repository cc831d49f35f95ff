#!/bin/bash
# Demo: start the bundled XAPI simulator (a stand-in XenServer pool on 127.0.0.1, over HTTPS
# with its own CA) and fence a VM with the agent the way Pacemaker runs it: parameters on stdin.
set -euo pipefail
cd "$(dirname "$0")/.."

# The agent needs only the distro's python3 and python3-lxml; the simulator needs openssl.
need=()
for pkg in python3 python3-lxml openssl; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

work=$(mktemp -d)
/usr/bin/python3 tests/xapisim.py --standard-pool --tls-self-signed "$work/tls" \
    --url-file "$work/url" >"$work/simulator.log" 2>&1 &
sim=$!
trap 'kill "$sim" 2>/dev/null; wait "$sim" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -s "$work/url" ] && break; sleep 0.1; done
[ -s "$work/url" ] || { cat "$work/simulator.log"; echo "simulator did not start" >&2; exit 1; }
url=$(cat "$work/url")

agent() {  # $1 = action, $2 = plug; the rest of the parameters as Pacemaker would send them
    printf 'action=%s\nsession_url=%s\nusername=root\npassword=secret\nssl_ca_file=%s\nport=%s\n' \
        "$1" "$url" "$work/tls/ca.pem" "${2:-}" | ./fence_xenapi.py
}
power_state() {
    /usr/bin/python3 -c 'import sys; sys.path.insert(0, "tests"); from xapisim import SimClient
print(SimClient(sys.argv[1]).vm(sys.argv[2])["power_state"])' "$url" "$1"
}

echo "### simulated pool at $url"
echo "### list: the real VMs (templates, snapshots and control domains are left out)"
agent list
echo "### status of node2"
agent status node2 || true
echo "### reboot node2 (the simulator's node2 is $(power_state node2))"
agent reboot node2
echo "### node2 is $(power_state node2) again; what the pool saw:"
/usr/bin/python3 -c 'import sys; sys.path.insert(0, "tests"); from xapisim import SimClient
c = SimClient(sys.argv[1]).counters()
print("  requests:", c["total"], dict(sorted(c["requests"].items())))
print("  sessions left open:", c["sessions_open"])
for uuid, op in SimClient(sys.argv[1]).power_log():
    print("  power operation:", op, "on", uuid)' "$url"
echo "### a name shared by two VMs is refused, nothing is touched:"
agent off vm-dup || echo "(exit status $?)"
