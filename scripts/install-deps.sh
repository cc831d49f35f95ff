#!/bin/bash
# Install what the demo and the test suite need on a Debian 12 machine (run as root):
# the Debian packages listed in scripts/apt-packages.txt and a virtualenv .venv (built on the
# distro's /usr/bin/python3, so it sees python3-lxml) holding scripts/requirements-test.txt.
# Idempotent: a second run installs nothing and takes a second or two.
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t wanted < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' scripts/apt-packages.txt | grep -v '^$')
missing=()
for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# NodeSource's nodejs package bundles npm and conflicts with Debian's npm: where npm is
# already on PATH, that is the npm to use.
if command -v npm >/dev/null 2>&1; then
    kept=()
    for pkg in "${missing[@]}"; do [ "$pkg" = npm ] || kept+=("$pkg"); done
    missing=("${kept[@]}")
fi
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-deps: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    echo "install-deps: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Packages such as corosync and pacemaker start their services on install where there is
    # an init system; the tests start their own clusters, so forbid that for this install
    # (policy-rc.d exit 101: "action forbidden"), unless the machine has a policy of its own.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# tests/test_differential.py runs a pristine copy of fence-agents' fence_xenapi, extracted from
# the .deb of the installed version (other tests divert /usr/sbin/fence_xenapi): keep that .deb
# where the test looks, unless apt's own cache still has it.
deb_cache=${FX_DISTRO_CACHE:-/var/cache/fence-xenapi-tests}
if fa=$(dpkg-query -W -f='${Version} ${Architecture}' fence-agents 2>/dev/null); then
    deb="fence-agents_${fa%% *}_${fa##* }.deb"
    deb="${deb/_*:/_}"  # no epoch in file names
    if [ ! -f "/var/cache/apt/archives/$deb" ] && [ ! -f "$deb_cache/$deb" ]; then
        mkdir -p "$deb_cache"
        echo "install-deps: apt-get download fence-agents=${fa%% *} into $deb_cache"
        (cd "$deb_cache" && apt-get download -qq "fence-agents=${fa%% *}")
    fi
fi

# tests/test_xapisim.py drives the simulator with Xen Orchestra's connector (npm xen-api,
# pinned with its dependencies by tests/xo-connector/package-lock.json), installed outside the
# checkout where the test looks (FX_XO_CONNECTOR, default below).
xo_dir=${FX_XO_CONNECTOR:-$deb_cache/xo-connector}
if [ ! -f "$xo_dir/.installed" ] || [ tests/xo-connector/package-lock.json -nt "$xo_dir/.installed" ]; then
    mkdir -p "$xo_dir"
    cp tests/xo-connector/package.json tests/xo-connector/package-lock.json "$xo_dir/"
    echo "install-deps: npm ci (Xen Orchestra's xen-api connector) in $xo_dir"
    (cd "$xo_dir" && npm ci --omit=dev --no-audit --no-fund --loglevel=error >/dev/null)
    touch "$xo_dir/.installed"
fi

if [ ! -x .venv/bin/python ] || [ scripts/requirements-test.txt -nt .venv/.installed ]; then
    /usr/bin/python3 -m venv --system-site-packages .venv
    .venv/bin/python -m pip install -q --disable-pip-version-check -r scripts/requirements-test.txt
    touch .venv/.installed
fi
