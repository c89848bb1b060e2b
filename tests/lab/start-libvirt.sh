#!/usr/bin/env bash
# Start libvirt's daemons by hand (the lab machines have no systemd) and
# wait until qemu:///system answers. Safe to call any number of times: a
# daemon whose pid file names a live process is left alone.
#
#   tests/lab/start-libvirt.sh        (env LIBVIRT_START_TIMEOUT, default 30 s)
set -euo pipefail

TIMEOUT=${LIBVIRT_START_TIMEOUT:-30}
URI=qemu:///system

die() { echo "start-libvirt.sh: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
for tool in virtlogd libvirtd virsh; do
    command -v "$tool" >/dev/null 2>&1 || die "missing $tool (run tests/lab/install-deps.sh)"
done

# True when PIDFILE names a running process called NAME. Checked through the
# pid file rather than by process name, because lab "hosts" in their own
# mount namespaces run further libvirtd/virtlogd processes that are not ours.
running() {
    local pidfile=$1 name=$2 pid
    [ -r "$pidfile" ] || return 1
    pid=$(cat "$pidfile" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
    [ "$(cat "/proc/$pid/comm")" = "$name" ]
}

mkdir -p /run/libvirt

# virtlogd first: every domain start needs /run/libvirt/virtlogd-sock.
if running /run/virtlogd.pid virtlogd; then
    echo "start-libvirt.sh: virtlogd already running"
else
    echo "start-libvirt.sh: starting virtlogd"
    virtlogd -d
fi

if running /run/libvirtd.pid libvirtd; then
    echo "start-libvirt.sh: libvirtd already running"
else
    echo "start-libvirt.sh: starting libvirtd"
    libvirtd -d
fi

deadline=$((SECONDS + TIMEOUT))
until [ -S /run/libvirt/virtlogd-sock ] && virsh -c "$URI" version >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
        [ -S /run/libvirt/virtlogd-sock ] ||
            echo "start-libvirt.sh: no /run/libvirt/virtlogd-sock" >&2
        virsh -c "$URI" version >&2 || true
        die "libvirt not ready on $URI within ${TIMEOUT}s"
    fi
    sleep 0.5
done
echo "start-libvirt.sh: $URI ready ($(virsh -c "$URI" version | sed -n 's/^Running hypervisor: //p'))"
