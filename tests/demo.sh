#!/usr/bin/env bash
# The main job on the embedded defaults, on one Debian 12 machine as root:
# install what is missing, start libvirt, build, initialise a coordinator with
# SQLite, enrol a local agent, register the lab's tiny guest image as a
# template and deploy an instance that really boots. The coordinator and the
# agent keep running afterwards; the script ends by saying how to reach them.
#
# ORRERY_LAB_HOSTS=N runs the same job on N lab hosts (tests/lab/hosts.sh:
# namespace hosts with their own libvirtd and an enrolled agent each) instead
# of the local agent, with one instance on each host.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

LAB_HOSTS="${ORRERY_LAB_HOSTS:-0}"
if [ "$LAB_HOSTS" -gt 0 ] 2>/dev/null; then
    ROOT="${ORRERY_HOME:-/var/lib/orrery-demo-lab}"
else
    LAB_HOSTS=0
    # Not /var/lib/orrery: that is where the Debian packages keep their data.
    ROOT="${ORRERY_HOME:-/var/lib/orrery-demo}"
fi
DATA="$ROOT/coordinator"
AGENT_STATE="$ROOT/agent"
PORT="${ORRERY_PORT:-8080}"
AGENT_PORT="${ORRERY_AGENT_PORT:-8250}"
# Software emulation boots everywhere; on a host where KVM works, run with
# ORRERY_DOMAIN_TYPE=kvm (or leave it empty to let the agent pick).
DOMAIN_TYPE="${ORRERY_DOMAIN_TYPE-qemu}"

say() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "demo.sh: run as root (it installs packages and starts libvirt)" >&2
    exit 1
fi

say "packages, libvirt, guest image"
bash tests/lab/install-deps.sh
bash tests/lab/start-libvirt.sh
[ -f tests/lab/out/guest.qcow2 ] || bash tests/lab/build-guest.sh
if ! python3 -m venv .venv >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3-venv && python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt

say "building (release)"
cargo build --release -p orrery-coordinator -p orrery-agent
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$PWD/$TARGET_DIR" ;; esac
COORD="$TARGET_DIR/release/orrery-coordinator"
AGENT="$TARGET_DIR/release/orrery-agent"

mkdir -p "$ROOT"
chmod 755 "$ROOT"
if [ ! -f "$DATA/orrery.db" ]; then
    say "initialising $DATA"
    mkdir -p "$DATA"
    "$COORD" init --data-dir "$DATA" > "$ROOT/admin-keys.json"
    chmod 600 "$ROOT/admin-keys.json"
fi

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Lab hosts reach the coordinator over the lab bridge, not loopback.
AGENT_LISTEN="127.0.0.1"
[ "$LAB_HOSTS" -eq 0 ] || AGENT_LISTEN="0.0.0.0"
if ! running "$ROOT/coordinator.pid"; then
    say "starting the coordinator (API 127.0.0.1:$PORT, agents $AGENT_LISTEN:$AGENT_PORT)"
    setsid "$COORD" serve --data-dir "$DATA" --api-listen "127.0.0.1:$PORT" \
        --agent-listen "$AGENT_LISTEN:$AGENT_PORT" >> "$ROOT/coordinator.log" 2>&1 < /dev/null &
    echo $! > "$ROOT/coordinator.pid"
fi

export CLOUDSTACK_ENDPOINT="http://127.0.0.1:$PORT/client/api"
CLOUDSTACK_KEY="$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["apikey"])' "$ROOT/admin-keys.json")"
CLOUDSTACK_SECRET="$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["secretkey"])' "$ROOT/admin-keys.json")"
export CLOUDSTACK_KEY CLOUDSTACK_SECRET
CS=.venv/bin/cs
# cs prints nothing at all for an empty list.
get() { python3 -c "import json,sys;t=sys.stdin.read();d=json.loads(t) if t.strip() else {};print(eval(sys.argv[1]))" "$1"; }
for _ in $(seq 100); do $CS listZones >/dev/null 2>&1 && break; sleep 0.2; done

wait_up() {
    for _ in $(seq 200); do
        [ "$($CS listHosts id="$1" | get 'd["host"][0]["state"]')" = Up ] && return 0
        sleep 0.3
    done
}
HOST_IDS=()
if [ "$LAB_HOSTS" -gt 0 ]; then
    say "starting $LAB_HOSTS lab hosts"
    HOSTS_JSON=$(ORRERY_COORDINATOR_BIN="$COORD" ORRERY_AGENT_BIN="$AGENT" \
        bash tests/lab/hosts.sh up "$LAB_HOSTS" --data-dir "$DATA" --agent-port "$AGENT_PORT")
    while read -r line; do
        [ -n "$line" ] && HOST_IDS+=("$(echo "$line" | get 'd["host_id"]')")
    done <<<"$HOSTS_JSON"
else
    if [ ! -f "$AGENT_STATE/agent.json" ]; then
        say "enrolling this host"
        TOKEN="$("$COORD" token create --data-dir "$DATA")"
        "$AGENT" enroll --coordinator "127.0.0.1:$AGENT_PORT" --token "$TOKEN" --state-dir "$AGENT_STATE"
    fi
    if [ -n "$DOMAIN_TYPE" ]; then
        printf 'domain_type = "%s"\n' "$DOMAIN_TYPE" > "$ROOT/agent.toml"
    else
        : > "$ROOT/agent.toml"
    fi
    if ! running "$ROOT/agent.pid"; then
        say "starting the agent"
        setsid "$AGENT" --config "$ROOT/agent.toml" --state-dir "$AGENT_STATE" --primary-dir "$ROOT/primary" run \
            >> "$ROOT/agent.log" 2>&1 < /dev/null &
        echo $! > "$ROOT/agent.pid"
    fi
    HOST_IDS+=("$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["host_id"])' "$AGENT_STATE/agent.json")")
fi
for h in "${HOST_IDS[@]}"; do wait_up "$h"; done

say "catalog: offering and template"
ZONE=$($CS listZones | get 'd["zone"][0]["id"]')
SO=$($CS listServiceOfferings name=demo-tiny | get 'd.get("serviceoffering",[{}])[0].get("id","")')
[ -n "$SO" ] || SO=$($CS createServiceOffering name=demo-tiny displaytext="1 vCPU, 256 MB" \
    cpunumber=1 cpuspeed=500 memory=256 | get 'd["serviceoffering"]["id"]')
TMPL=$($CS listTemplates templatefilter=self name=demo-guest | get 'd.get("template",[{}])[0].get("id","")')
if [ -z "$TMPL" ]; then
    OS=$($CS listOsTypes description="Other Linux (64-bit)" | get 'd["ostype"][0]["id"]')
    TMPL=$($CS registerTemplate name=demo-guest displaytext="Lab guest" \
        url="file://$PWD/tests/lab/out/guest.qcow2" format=QCOW2 hypervisor=KVM ostypeid="$OS" \
        zoneid="$ZONE" | get 'd["template"][0]["id"]')
fi
for _ in $(seq 100); do
    [ "$($CS listTemplates templatefilter=self id="$TMPL" | get 'd["template"][0]["isready"]')" = True ] && break
    sleep 0.2
done

console_of() {
    if [ "$LAB_HOSTS" -gt 0 ]; then
        echo "${ORRERY_LAB_DIR:-/var/lib/orrery-lab}/hosts/$1/orrery/agent/consoles/$2.log"
    else
        echo "$AGENT_STATE/consoles/$2.log"
    fi
}
i=0
for h in "${HOST_IDS[@]}"; do
    i=$((i + 1))
    NAME="demo-$RANDOM"
    PIN=""
    [ "$LAB_HOSTS" -eq 0 ] || PIN="hostid=$h"
    say "deploying $NAME"
    VM_JSON=$($CS deployVirtualMachine zoneid="$ZONE" serviceofferingid="$SO" templateid="$TMPL" name="$NAME" $PIN)
    INSTANCE=$(echo "$VM_JSON" | get 'd["virtualmachine"]["instancename"]')
    IP=$(echo "$VM_JSON" | get 'd["virtualmachine"]["nic"][0]["ipaddress"]')
    STATE=$(echo "$VM_JSON" | get 'd["virtualmachine"]["state"]')
    HOSTNAME=$(echo "$VM_JSON" | get 'd["virtualmachine"]["hostname"]')
    LOG=$(console_of "h$i" "$INSTANCE")
    for _ in $(seq 240); do grep -qa "ORRERY-GUEST-IP=" "$LOG" 2>/dev/null && break; sleep 0.5; done
    echo "instance $NAME ($INSTANCE) on $HOSTNAME is $STATE with address $IP; its console says:"
    grep -a "ORRERY-GUEST" "$LOG" | grep -v TICK || true
done

cat <<EOF

The coordinator and the agent keep running (logs in $ROOT). Talk to it with cs:

    export CLOUDSTACK_ENDPOINT=$CLOUDSTACK_ENDPOINT
    export CLOUDSTACK_KEY=$CLOUDSTACK_KEY
    export CLOUDSTACK_SECRET=$CLOUDSTACK_SECRET
    $PWD/.venv/bin/cs listVirtualMachines
    $PWD/.venv/bin/cs stopVirtualMachine id=<id>

Stop them with: kill \$(cat $ROOT/coordinator.pid) \$(cat $ROOT/agent.pid 2>/dev/null)
(lab hosts: bash tests/lab/hosts.sh down)
EOF
