#!/usr/bin/env bash
# Fixture check for the lab guest image, with plain virsh (no Orrery code):
# boot it under libvirt on a private virtual network with a fixed DHCP
# reservation, check the markers it prints on its serial console, press the
# ACPI power button with "virsh shutdown", and check that it powers off.
#
#   tests/lab/smoke.sh [IMAGE.qcow2]    (default tests/lab/out/guest.qcow2,
#                                        built first when missing)
#
# Environment:
#   SMOKE_SUBNET        first three octets of the network's /24 (192.168.251)
#   SMOKE_NET_MODE      isolated (default) or nat: the forward mode of the
#                       network. Isolated is enough for DHCP and keeps the
#                       host's forwarding/NAT settings untouched.
#   SMOKE_BOOT_TIMEOUT  seconds from start to the IP marker (90)
#   SMOKE_STOP_TIMEOUT  seconds from "virsh shutdown" to shut off (60)
#   SMOKE_KEEP_LOG      if set, a path the guest's serial log is copied to
#
# Everything it creates (domain, network, temp dir) is removed on exit,
# whether the checks passed or not. Exit 0 only when every check passed.
set -euo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
IMAGE=${1:-$LAB_DIR/out/guest.qcow2}

URI=qemu:///system
NET=orrery-smoke
BRIDGE=virbr-orsmoke               # at most 15 characters
DOM=orrery-smoke
GUEST_NAME=smoke-guest
MAC=52:54:00:0f:5e:01
SUBNET=${SMOKE_SUBNET:-192.168.251}
GUEST_IP=$SUBNET.10
NET_MODE=${SMOKE_NET_MODE:-isolated}
BOOT_TIMEOUT=${SMOKE_BOOT_TIMEOUT:-90}
STOP_TIMEOUT=${SMOKE_STOP_TIMEOUT:-60}

virsh() { command virsh -q -c "$URI" "$@"; }
log() { echo "smoke.sh: $*"; }
die() { echo "smoke.sh: FAIL: $*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
case "$NET_MODE" in
    isolated) forward_xml= ;;
    nat) forward_xml="<forward mode='nat'/>" ;;
    *) die "SMOKE_NET_MODE must be isolated or nat, not '$NET_MODE'" ;;
esac

# The names above are fixed, so two runs at once would trample each other.
exec 9>/run/orrery-smoke.lock
flock -n 9 || die "another smoke.sh is running"

"$LAB_DIR/start-libvirt.sh"

if [ ! -f "$IMAGE" ]; then
    log "$IMAGE missing, building it"
    "$LAB_DIR/build-guest.sh" "$IMAGE"
fi

# Remove what a previous, killed run may have left behind.
remove_domain() {
    if virsh dominfo "$DOM" >/dev/null 2>&1; then
        virsh destroy "$DOM" >/dev/null 2>&1 || true
        virsh undefine "$DOM" >/dev/null 2>&1 || true
    fi
}
remove_network() {
    if virsh net-info "$NET" >/dev/null 2>&1; then
        virsh net-destroy "$NET" >/dev/null 2>&1 || true
        virsh net-undefine "$NET" >/dev/null 2>&1 || true
    fi
}
remove_domain
remove_network
# Holding the lock, any work dir left is from a run that was killed.
rm -rf "${TMPDIR:-/tmp}"/orrery-smoke.*

WORK=$(mktemp -d "${TMPDIR:-/tmp}/orrery-smoke.XXXXXX")
SERIAL_LOG=$WORK/serial.log
passed=0

dump_diagnostics() {
    echo "----- guest serial console ($SERIAL_LOG) -----" >&2
    tail -n 40 "$SERIAL_LOG" >&2 2>/dev/null || true
    echo "----- libvirt's QEMU log -----" >&2
    tail -n 20 "/var/log/libvirt/qemu/$DOM.log" >&2 2>/dev/null || true
}
cleanup() {
    local rc=$?
    [ $rc -ne 0 ] && [ $passed -eq 0 ] && dump_diagnostics
    [ -n "${SMOKE_KEEP_LOG:-}" ] && cp "$SERIAL_LOG" "$SMOKE_KEEP_LOG" 2>/dev/null
    remove_domain
    remove_network
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# QEMU runs as libvirt-qemu (Debian's default, left unchanged), so
# everything it opens must be reachable by that user: the work dir is made
# traversable, and the base image is copied into it so the checkout's own
# directory permissions never matter. libvirt chowns the disk and log files
# to libvirt-qemu while the domain runs (dynamic_ownership).
chmod 0755 "$WORK"
cp "$IMAGE" "$WORK/base.qcow2"
qemu-img create -q -f qcow2 -F qcow2 -b "$WORK/base.qcow2" "$WORK/disk.qcow2"
: >"$SERIAL_LOG"

cat >"$WORK/network.xml" <<EOF
<network>
  <name>$NET</name>
  $forward_xml
  <bridge name='$BRIDGE' stp='off'/>
  <ip address='$SUBNET.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='$SUBNET.100' end='$SUBNET.200'/>
      <host mac='$MAC' name='$GUEST_NAME' ip='$GUEST_IP'/>
    </dhcp>
  </ip>
</network>
EOF

# type='qemu': software emulation. KVM is present on the lab machines but
# guests hang under it. <acpi/> is what lets "virsh shutdown" press the
# power button (without it libvirt starts QEMU with -no-acpi).
cat >"$WORK/domain.xml" <<EOF
<domain type='qemu'>
  <name>$DOM</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$WORK/disk.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <mac address='$MAC'/>
      <source network='$NET'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='$SERIAL_LOG'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='$SERIAL_LOG'/>
      <target type='serial' port='0'/>
    </console>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
EOF

log "network $NET ($NET_MODE, $SUBNET.0/24), guest $GUEST_NAME at $GUEST_IP"
virsh net-define "$WORK/network.xml" >/dev/null
virsh net-start "$NET" >/dev/null
virsh define "$WORK/domain.xml" >/dev/null

# The serial log can pick up kernel messages mid-line, so markers are
# matched anywhere in a line rather than anchored.
marker_value() { # NAME -> value of the last "NAME=value" on the console
    grep -a -o "$1=[^[:space:]]*" "$SERIAL_LOG" 2>/dev/null | tail -n1 | cut -d= -f2-
}
has_marker() { grep -a -q "$1" "$SERIAL_LOG" 2>/dev/null; }
domstate() { virsh domstate "$DOM" 2>/dev/null | head -n1; }

t_start=$(now)
virsh start "$DOM" >/dev/null
log "domain started, waiting up to ${BOOT_TIMEOUT}s for the guest"

t_booted='' t_ip=''
deadline=$((SECONDS + BOOT_TIMEOUT))
while :; do
    if [ -z "$t_booted" ] && has_marker ORRERY-GUEST-BOOTED; then t_booted=$(now); fi
    if [ -n "$t_booted" ] && has_marker ORRERY-GUEST-IP=; then t_ip=$(now); break; fi
    [ "$(domstate)" = running ] || die "domain is '$(domstate)' before the guest reported its IP"
    [ $SECONDS -lt $deadline ] || die "no ORRERY-GUEST-${t_booted:+IP=}${t_booted:-BOOTED} marker within ${BOOT_TIMEOUT}s"
    sleep 0.2
done

got_host=$(marker_value ORRERY-GUEST-HOSTNAME)
got_ip=$(marker_value ORRERY-GUEST-IP)
[ "$got_host" = "$GUEST_NAME" ] || die "guest hostname '$got_host', expected '$GUEST_NAME'"
[ "$got_ip" = "$GUEST_IP" ] || die "guest IP '$got_ip', expected '$GUEST_IP'"
log "guest booted, hostname $got_host, IP $got_ip"

t_stop=$(now)
virsh shutdown --mode acpi "$DOM" >/dev/null
deadline=$((SECONDS + STOP_TIMEOUT))
while [ "$(domstate)" != "shut off" ]; do
    [ $SECONDS -lt $deadline ] || die "domain still '$(domstate)' ${STOP_TIMEOUT}s after virsh shutdown"
    sleep 0.2
done
t_off=$(now)
has_marker ORRERY-GUEST-POWERBUTTON || die "domain shut off without the ORRERY-GUEST-POWERBUTTON marker"

passed=1
log "PASS"
log "boot-to-marker: $(elapsed "$t_start" "$t_booted") s (ORRERY-GUEST-BOOTED after virsh start)"
log "boot-to-ip:     $(elapsed "$t_start" "$t_ip") s (ORRERY-GUEST-IP after virsh start)"
log "shutdown:       $(elapsed "$t_stop" "$t_off") s (virsh shutdown to shut off)"
