#!/usr/bin/env bash
# Installs what groundstation needs on a Debian machine with Python 3.11+: the real
# Mosquitto and InfluxDB 1.x from Debian (and, for the tests, RabbitMQ: the cluster
# profile's broker), and a virtualenv in .venv with the project, its dependencies pinned by
# constraints.txt (scripts/update-constraints.sh).
# Sourced by .ci/run and ./run (set -euo pipefail, REPO, step and die come from them).
# GS_EXTRAS picks the pip extras (default: test,export, so the Parquet tests run; the demo
# takes embedded, the Python broker it falls back on without Mosquitto).
# GS_SERVERS: "required" (default: the tests need the real servers, so without apt-get
# this fails) or "optional" (the demo: without root or passwordless sudo it says so and
# goes on with what the machine has, the embedded broker and no database at worst).

export DEBIAN_FRONTEND=noninteractive PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1

SUDO=()
CAN_APT=1
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        CAN_APT=""
    fi
fi

POLICY_RC=/usr/sbin/policy-rc.d
OWN_POLICY_RC=""
remove_own_policy() {
    if [ -n "$OWN_POLICY_RC" ]; then
        "${SUDO[@]}" rm -f "$POLICY_RC"
        OWN_POLICY_RC=""
    fi
}
trap remove_own_policy EXIT

# The demo needs no RabbitMQ (GS_SERVERS=optional): only the tests install it.
if [ "${GS_SERVERS:-required}" = optional ]; then
    RABBITMQ=()
else
    RABBITMQ=(rabbitmq-server)
fi

install_servers() {
    # ---------------------------------------------------------------------------------------
    step "Installing mosquitto, mosquitto-clients, influxdb ${RABBITMQ[*]:+and ${RABBITMQ[*]} }from Debian"
    # Without a policy, on a machine running systemd the packages' postinst scripts start
    # system-wide daemons on 1883 and 8086 that would outlive this run. Exit code 101 from
    # policy-rc.d tells invoke-rc.d "not allowed", and the install carries on. (In a
    # container without an init system nothing would start anyway; an existing policy,
    # as Docker images ship, is left alone.)
    if [ ! -e "$POLICY_RC" ]; then
        printf '#!/bin/sh\n# temporary, from .ci/run\nexit 101\n' | "${SUDO[@]}" tee "$POLICY_RC" >/dev/null
        "${SUDO[@]}" chmod 755 "$POLICY_RC"
        OWN_POLICY_RC=1
    fi
    if [ -z "${CI:-}" ] && [ -x /usr/sbin/mosquitto ] && [ -x /usr/bin/influxd ] \
        && [ -x /usr/bin/mosquitto_sub ] \
        && { [ "${#RABBITMQ[@]}" -eq 0 ] || [ -x /usr/sbin/rabbitmq-server ]; }; then
        # Outside CI, a second `./run demo` need not refresh the package lists.
        echo "already installed"
    else
        "${SUDO[@]}" apt-get update -q
        # mosquitto-clients: mosquitto_sub, which the compose file's broker health check
        # runs (tested against the real broker).
        # rabbitmq-server: the cluster profile's broker (tests/integration/test_rabbitmq_*:
        # three nodes on loopback, each started by the tests; the policy above keeps the
        # package's own node from starting).
        "${SUDO[@]}" apt-get install -y -q --no-install-recommends mosquitto mosquitto-clients \
            influxdb "${RABBITMQ[@]}"
    fi
    if [ -n "$OWN_POLICY_RC" ]; then
        "${SUDO[@]}" rm -f "$POLICY_RC"
        OWN_POLICY_RC=""
    fi
    # mosquitto lives in /usr/sbin, which a non-root PATH may lack; servers.py looks there.
    for bin in /usr/sbin/mosquitto /usr/bin/influxd ${RABBITMQ[@]:+/usr/sbin/rabbitmq-server}; do
        [ -x "$bin" ] || die "$bin is missing after apt-get install"
    done
    echo "mosquitto: $(/usr/sbin/mosquitto -h 2>/dev/null | head -n 1 || true)"
    echo "influxd:   $(/usr/bin/influxd version 2>/dev/null || true)"
    for port in 1883 8086; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "note: something (a system mosquitto or influxd?) listens on port $port;" \
                "harmless, the tests start their own servers on ephemeral ports"
        fi
    done
}

if [ -n "$CAN_APT" ]; then
    install_servers
elif [ "${GS_SERVERS:-required}" = optional ]; then
    step "Not installing mosquitto and influxdb: apt-get needs root or passwordless sudo"
    have=()
    for bin in /usr/sbin/mosquitto /usr/bin/influxd; do
        [ -x "$bin" ] && have+=("$bin")
    done
    echo "going on with what this machine has: ${have[*]:-neither}"
    echo "(without Mosquitto the demo runs its embedded broker, without influxd no database)"
else
    die "apt-get needs root: run as root, or as a user with passwordless sudo (the tests need the real mosquitto and influxdb from Debian)"
fi

# ---------------------------------------------------------------------------------------
PYTHON="${PYTHON:-python3}"
step "Checking Python ($PYTHON)"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found; Python 3.11 or newer is required"
"$PYTHON" - <<'EOF' || die "Python 3.11 or newer is required (set PYTHON=...)"
import sys
print(sys.version)
sys.exit(0 if sys.version_info >= (3, 11) else 1)
EOF
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    # Debian splits venv/ensurepip out of the interpreter package.
    [ -n "$CAN_APT" ] || die "$PYTHON cannot create virtualenvs and apt-get needs root: install python3-venv (as root), or set PYTHON to one that can"
    step "Installing python3-venv (this Python cannot create virtualenvs)"
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends python3-venv
    "$PYTHON" -c 'import ensurepip, venv' || die "$PYTHON still cannot create a virtualenv"
fi

step "Creating virtualenv .venv and installing groundstation[${GS_EXTRAS:-test,export}]"
if ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    "$PYTHON" -m venv --clear .venv
fi
.venv/bin/python -m pip install -q -c constraints.txt -e ".[${GS_EXTRAS:-test,export}]"

