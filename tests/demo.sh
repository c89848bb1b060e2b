#!/usr/bin/env bash
# Main job on the embedded defaults: build, initialise a SQLite data directory,
# serve the API with three simulated hosts, and deploy an instance with PyPI's cs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATA="${ORRERY_DATA_DIR:-/var/lib/orrery}"
PORT="${ORRERY_PORT:-8080}"
python3 -m venv .venv >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq python3-venv && python3 -m venv .venv; }
.venv/bin/pip install --quiet -r tests/requirements.txt
cargo build --release -p orrery-coordinator
BIN=target/release/orrery-coordinator
if [ ! -f "$DATA/orrery.db" ]; then
    mkdir -p "$DATA"
    "$BIN" init --data-dir "$DATA" > "$DATA/admin-keys.json"
    chmod 600 "$DATA/admin-keys.json"
fi
"$BIN" serve --data-dir "$DATA" --api-listen "127.0.0.1:$PORT" --simulated-hosts 3 > "$DATA/coordinator.log" 2>&1 &
trap 'kill $!' EXIT
export CLOUDSTACK_ENDPOINT="http://127.0.0.1:$PORT/client/api"
export CLOUDSTACK_KEY="$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["apikey"])' "$DATA/admin-keys.json")"
export CLOUDSTACK_SECRET="$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["secretkey"])' "$DATA/admin-keys.json")"
for _ in $(seq 50); do .venv/bin/cs listZones >/dev/null 2>&1 && break; sleep 0.2; done
CS=.venv/bin/cs
get() { python3 -c "import json,sys;d=json.load(sys.stdin);print(eval(sys.argv[1]))" "$1"; }
ZONE=$($CS listZones | get 'd["zone"][0]["id"]')
SO=$($CS listServiceOfferings name=demo-small | get 'd.get("serviceoffering",[{}])[0].get("id","")')
[ -n "$SO" ] || SO=$($CS createServiceOffering name=demo-small displaytext="1 vCPU, 512 MB" cpunumber=1 cpuspeed=1000 memory=512 | get 'd["serviceoffering"]["id"]')
IMG="$DATA/demo.qcow2"
[ -f "$IMG" ] || qemu-img create -f qcow2 "$IMG" 1G >/dev/null
OS=$($CS listOsTypes description="Other Linux (64-bit)" | get 'd["ostype"][0]["id"]')
TMPL=$($CS registerTemplate name=demo displaytext=demo url="$IMG" format=QCOW2 hypervisor=Simulator ostypeid="$OS" zoneid="$ZONE" | get 'd["template"][0]["id"]')
for _ in $(seq 50); do [ "$($CS listTemplates templatefilter=all id="$TMPL" | get 'd["template"][0]["isready"]')" = True ] && break; sleep 0.2; done
$CS deployVirtualMachine zoneid="$ZONE" serviceofferingid="$SO" templateid="$TMPL" name="demo-$RANDOM"
$CS listVirtualMachines | get '[(v["name"], v["state"], v["nic"][0]["ipaddress"]) for v in d["virtualmachine"]]'
